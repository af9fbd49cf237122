//! One sender at a time per account inside this process.
//!
//! Nonces come from the node's pending count on every transaction (see `client::connect`).
//! Two tasks that sign for the same account at once (two gateway requests acting for the
//! records office, two tests sharing the office key) would otherwise both read nonce N and one
//! of them fail with "nonce too low". Holding this lock from "fill" until the node has accepted
//! the transaction into its pool makes the second reader see N + 1. It is released before the
//! receipt is awaited, so mining does not serialise. [`submit`] also sends again when the
//! node counted the account's last transaction too late (see `stale_nonce`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use alloy::primitives::Address;

static LOCKS: LazyLock<Mutex<HashMap<Address, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Mutex::default);

/// Waits for the right to fill and submit a transaction from `from`.
async fn lock(from: Address) -> tokio::sync::OwnedMutexGuard<()> {
    let m = {
        let mut map = LOCKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(map.entry(from).or_default())
    };
    m.lock_owned().await
}

/// Fills and submits a transaction from `from` with `send` while holding the account's turn,
/// and fills and submits it again (a fresh nonce, up to five times, 10 to 50 ms apart) when
/// the node refused it because its nonce was taken (`stale_nonce`): a refused transaction
/// never reached the pool, so sending again sends it once.
pub(super) async fn submit<T, E, F, Fut>(from: Address, send: F) -> Result<T, E>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let _turn = lock(from).await;
    let mut tries: u64 = 0;
    loop {
        match send().await {
            Err(e) if tries < 5 && stale_nonce(&crate::kind::with_sources(&e)) => {
                tracing::info!(
                    "{from}: the transaction's nonce was taken ({e}); asking for it again"
                );
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10 * tries)).await;
            }
            sent => return sent,
        }
    }
}

/// Whether a node refused a transaction because its nonce was taken already: anvil's pending
/// count can miss a transaction it is moving from its pool into a block, and the next send
/// from the account is then filled with the same nonce. The same call sent again is then the
/// same transaction byte for byte ("transaction already imported"; geth says "already
/// known"); another one is refused as "nonce too low" or as an underpriced replacement. The
/// load bench's mixed run met the first 17 times in 1,539 denied reads, as 500s, once denials
/// of one reader were sent back to back (`chain::denials`).
fn stale_nonce(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    [
        "already imported",
        "already known",
        "nonce too low",
        "replacement transaction underpriced",
    ]
    .iter()
    .any(|m| e.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_nonce_is_told_from_other_refusals() {
        for taken in [
            "server returned an error response: error code -32003: transaction already imported",
            "server returned an error response: error code -32000: already known",
            "server returned an error response: error code -32003: Nonce too low",
            "replacement transaction underpriced",
        ] {
            assert!(stale_nonce(taken), "{taken}");
        }
        for other in [
            "server returned an error response: error code -32003: Insufficient funds for gas * price + value",
            "execution reverted: ProviderNotVerified",
            "error sending request for url",
        ] {
            assert!(!stale_nonce(other), "{other}");
        }
    }

    #[tokio::test]
    async fn the_same_account_waits_and_others_do_not() {
        let a = Address::repeat_byte(1);
        let b = Address::repeat_byte(2);
        let held = lock(a).await;
        // Another account is free.
        let _other = tokio::time::timeout(std::time::Duration::from_millis(50), lock(b))
            .await
            .expect("another account must not wait");
        // The same account waits until the guard drops.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), lock(a)).await;
        assert!(
            waiting.is_err(),
            "a second sender for one account must wait"
        );
        drop(held);
        tokio::time::timeout(std::time::Duration::from_millis(50), lock(a))
            .await
            .expect("free after the first guard drops");
    }
}

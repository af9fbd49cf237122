//! One sender at a time per account inside this process.
//!
//! Nonces come from the node's pending count on every transaction (see `client::connect`).
//! Two tasks that sign for the same account at once (two gateway requests acting for the
//! records office, two tests sharing the office key) would otherwise both read nonce N and one
//! of them fail with "nonce too low". Holding this lock from "fill" until the node has accepted
//! the transaction into its pool makes the second reader see N + 1. It is released before the
//! receipt is awaited, so mining does not serialise.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use alloy::primitives::Address;

static LOCKS: LazyLock<Mutex<HashMap<Address, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Mutex::default);

/// Waits for the right to fill and submit a transaction from `from`.
pub(super) async fn lock(from: Address) -> tokio::sync::OwnedMutexGuard<()> {
    let m = {
        let mut map = LOCKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(map.entry(from).or_default())
    };
    m.lock_owned().await
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! How old a node's view of the chain may be when it judges a request.
//!
//! A node judges every release on its own JSON-RPC endpoint's latest block. An endpoint that
//! lags (a replica behind, a stalled sync, a partition) shows a grant the patient has since
//! revoked, so a requester who finds such a node would be served on the revoked grant. With
//! `max_chain_lag` set, the node refuses to judge (503) while its endpoint's latest block is
//! older than that: what it decides is then at most the bound plus about a second old (the
//! head's time is asked again once the last answer is half a second old). The head and the
//! calls that judge are separate requests, which behind a load balancer over replicas may
//! reach different ones: so the calls that judge name the checked head's number instead of
//! "latest", and a replica that lags behind it has no such block and fails them (the node
//! refuses) rather than answering from older state. A head ahead of the node's clock counts as fresh: keep the
//! clock in time (NTP). Off by default: a chain that makes blocks only for transactions (anvil's automine,
//! `geth --dev` without a period) has an old head whenever nobody writes, so the bound fits
//! chains with a block time (a few block times).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::chain::{ChainError, EhrChain, Head};

/// How often the head's time is asked again (at most; only when a request needs it).
const RECHECK: Duration = Duration::from_millis(500);

/// The last head seen, and when it was asked.
#[derive(Debug, Default)]
pub(super) struct ChainView {
    last: Mutex<Option<(Head, Instant)>>,
}

/// Why a node will not judge now.
#[derive(Debug, thiserror::Error)]
pub(super) enum Stale {
    /// The endpoint's latest block is too old.
    #[error(
        "this share node's view of the chain is {age} s old (its latest block), more than its bound of {max} s: it judges no request until its chain endpoint catches up"
    )]
    Behind {
        /// Seconds since the head's timestamp.
        age: u64,
        /// The bound.
        max: u64,
    },
    /// The endpoint did not answer.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

impl ChainView {
    /// `chain`'s latest block, when it is at most `max` old at `now` (unix seconds), and
    /// whether it is the one remembered from an earlier request (asked again when the last
    /// answer is older than half a second, or when `again`).
    pub(super) async fn check(
        &self,
        chain: &EhrChain,
        max: Duration,
        now: u64,
        again: bool,
    ) -> Result<(Head, bool), Stale> {
        let known = *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (head, remembered) = match known {
            Some((head, at)) if !again && at.elapsed() < RECHECK => (head, true),
            _ => {
                let head = chain.head().await?;
                *self
                    .last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((head, Instant::now()));
                (head, false)
            }
        };
        fresh(head.time, now, max)?;
        Ok((head, remembered))
    }
}

/// The rule itself: a head at `head` (unix seconds) is fresh at `now` within `max`. A head
/// from the future (a clock behind the chain's) is fresh.
fn fresh(head: u64, now: u64, max: Duration) -> Result<(), Stale> {
    let age = now.saturating_sub(head);
    if age > max.as_secs() {
        return Err(Stale::Behind {
            age,
            max: max.as_secs(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_older_than_the_bound_is_stale_and_one_ahead_is_not() {
        let max = Duration::from_secs(30);
        assert!(fresh(1000, 1030, max).is_ok());
        assert!(matches!(
            fresh(1000, 1031, max),
            Err(Stale::Behind { age: 31, max: 30 })
        ));
        assert!(fresh(1040, 1030, max).is_ok(), "a clock behind the chain's");
    }
}

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
    /// One request asks for the head at a time; those that arrive meanwhile take its answer
    /// (a burst of requests after a quiet half second costs one call, not one each).
    asking: tokio::sync::Mutex<()>,
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
        self.check_with(|| chain.head_and_finalized(), RECHECK, max, now, again)
            .await
    }

    /// [`Self::check`] with the head asked by `ask`, again once the last answer is `recheck`
    /// old.
    async fn check_with<F, Fut>(
        &self,
        ask: F,
        recheck: Duration,
        max: Duration,
        now: u64,
        again: bool,
    ) -> Result<(Head, bool), Stale>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Head, ChainError>>,
    {
        let known = self.remembered();
        let (head, remembered) = match known {
            Some((head, at)) if !again && at.elapsed() < recheck => (head, true),
            _ => {
                let wanted = Instant::now();
                let _one = self.asking.lock().await;
                match self.remembered() {
                    // Asked by another request after this one wanted it: as new as needed.
                    Some((head, at)) if at >= wanted => (head, false),
                    _ => {
                        let head = ask().await?;
                        *self
                            .last
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some((head, Instant::now()));
                        (head, false)
                    }
                }
            }
        };
        fresh(head.time, now, max)?;
        Ok((head, remembered))
    }

    fn remembered(&self) -> Option<(Head, Instant)> {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Forty requests arrive together when the remembered head is stale: one asks the chain,
    /// the others wait for its answer; a request that wants the head again after that answer
    /// asks anew.
    #[tokio::test]
    async fn requests_that_arrive_together_ask_for_the_head_once() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let view = Arc::new(ChainView::default());
        let asked = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let head = Head {
            number: 7,
            time: 1000,
            finalized: None,
        };
        let check = |again: bool| {
            let (view, asked, gate) = (view.clone(), asked.clone(), gate.clone());
            tokio::spawn(async move {
                view.check_with(
                    || async move {
                        asked.fetch_add(1, Ordering::SeqCst);
                        gate.acquire().await.unwrap().forget();
                        Ok(head)
                    },
                    // Long enough that a loaded machine does not make the head stale here.
                    Duration::from_secs(600),
                    Duration::from_secs(30),
                    1010,
                    again,
                )
                .await
                .map(|(h, remembered)| (h.number, remembered))
                .map_err(|e| e.to_string())
            })
        };
        let burst: Vec<_> = (0..40).map(|_| check(false)).collect();
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(100);
        for h in burst {
            assert_eq!(h.await.unwrap(), Ok((7, false)));
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1, "one call for the burst");
        assert_eq!(check(false).await.unwrap(), Ok((7, true)), "remembered");
        assert_eq!(check(true).await.unwrap(), Ok((7, false)));
        assert_eq!(asked.load(Ordering::SeqCst), 2, "asked again when told to");
    }

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

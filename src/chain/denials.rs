//! Denied attempts of one provider on one patient's records, logged together.
//!
//! Every refused read goes on the patient's audit trail as an `access` transaction of the
//! reader's own account. Sent one by one, a burst of refusals (a client retrying after a
//! revoke, a chart of dozens of records) costs a transaction, a block on an automining chain,
//! and the base fee each: `docs/load-bench.md` measured 4.15 ms of anvil's CPU per denial.
//! The contract takes up to `MAX_ACCESS_BATCH` ids per transaction and logs an `AccessDenied`
//! event, with its own running count, for each one, duplicates included. So attempts that
//! arrive while one transaction of the same (chain, contract, account, patient) is being
//! sent wait for it and then go out together in the next: nothing waits for company, a lone
//! denial is sent at once as before.
//!
//! Each caller returns once the transaction naming its ids is in the node's pool, as before.
//! The sending runs in a task of its own, so a caller that goes away (a closed connection)
//! neither loses its attempt nor those of the callers batched with it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex};

use alloy::primitives::{Address, B256};
use tokio::sync::oneshot;

use super::errors::ChainError;
use super::types::RecordId;

/// Whose attempts may share a transaction: the chain id, the contract, the reader's account,
/// the patient key.
pub(super) type Key = (u64, Address, Address, u128);

/// What one batch's transaction came to, for each caller in it.
type Answer = Result<B256, ChainError>;

/// One caller's ids and where its answer goes.
struct Waiter {
    ids: Vec<RecordId>,
    answer: oneshot::Sender<Answer>,
}

/// The attempts of one key not sent yet, and the turn to send them.
#[derive(Default)]
struct Queue {
    waiting: Mutex<VecDeque<Waiter>>,
    turn: tokio::sync::Mutex<()>,
}

impl Queue {
    /// The oldest waiters whose ids fit one transaction of at most `max` ids (always at
    /// least the oldest).
    fn take(&self, max: usize) -> Vec<Waiter> {
        let mut waiting = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut batch: Vec<Waiter> = Vec::new();
        let mut ids = 0;
        while let Some(next) = waiting.front() {
            if !batch.is_empty() && ids + next.ids.len() > max {
                break;
            }
            ids += next.ids.len();
            batch.extend(waiting.pop_front());
        }
        batch
    }
}

/// Queues kept beyond which idle ones are dropped.
const KEPT: usize = 1024;

/// The process's queues, one per key.
#[derive(Default)]
pub(super) struct Combiner {
    queues: Mutex<HashMap<Key, Arc<Queue>>>,
}

/// The one combiner of the process (the send lock is per process too).
pub(super) static DENIALS: LazyLock<Combiner> = LazyLock::new(Combiner::default);

impl Combiner {
    fn queue(&self, key: Key) -> Arc<Queue> {
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if queues.len() >= KEPT && !queues.contains_key(&key) {
            // Only this map holds an idle queue: nobody waits in it or sends from it.
            queues.retain(|_, q| Arc::strong_count(q) > 1);
        }
        Arc::clone(queues.entry(key).or_default())
    }

    /// Logs `ids` (at most `max`) with the other attempts of `key` waiting at the same time,
    /// `send` sending one transaction for a batch of ids; answers that transaction's hash.
    ///
    /// # Errors
    /// `send`'s error, for every caller of the batch.
    pub(super) async fn submit<F, Fut>(
        &self,
        key: Key,
        ids: &[RecordId],
        max: usize,
        send: F,
    ) -> Answer
    where
        F: Fn(Vec<RecordId>) -> Fut,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        let q = self.queue(key);
        let (answer, mut mine) = oneshot::channel();
        q.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(Waiter {
                ids: ids.to_vec(),
                answer,
            });
        let _turn = q.turn.lock().await;
        loop {
            match mine.try_recv() {
                Ok(answer) => return answer,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(ChainError::Decode(
                        "the task logging this denial stopped before it was sent".into(),
                    ));
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            // Ours is still queued, so the batch is not empty; older waiters go first.
            let batch = q.take(max);
            let ids: Vec<RecordId> = batch.iter().flat_map(|w| w.ids.iter().copied()).collect();
            let sending = send(ids);
            let sent = tokio::spawn(async move {
                let r = sending.await;
                for w in batch {
                    // A caller that went away is no longer listening; its attempt is logged.
                    let _ = w.answer.send(match &r {
                        Ok(tx) => Ok(*tx),
                        Err(e) => Err(e.shared()),
                    });
                }
            });
            // Holding the turn until the batch is in the pool lets the next one gather. A
            // panic in the task dropped its answers: the loop reports it above.
            let _ = sent.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn id(n: u8) -> RecordId {
        RecordId(B256::repeat_byte(n))
    }

    fn tx_of(ids: &[RecordId]) -> B256 {
        // A stand-in hash naming the batch's first id and its size.
        let mut b = ids[0].0;
        b.0[31] = ids.len() as u8;
        b
    }

    /// The first attempt goes out alone; the seven that arrive while it is being sent go out
    /// together in the next transaction, each caller answered with the hash of the one that
    /// named its id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attempts_during_a_send_share_the_next_transaction() {
        let combiner = Arc::new(Combiner::default());
        let key = (1, Address::repeat_byte(1), Address::repeat_byte(2), 7);
        let sent: Arc<Mutex<Vec<Vec<RecordId>>>> = Arc::default();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let send = {
            let (sent, gate) = (sent.clone(), gate.clone());
            move |ids: Vec<RecordId>| {
                let (sent, gate) = (sent.clone(), gate.clone());
                async move {
                    gate.acquire().await.expect("gate").forget();
                    let tx = tx_of(&ids);
                    sent.lock().unwrap().push(ids);
                    Ok(tx)
                }
            }
        };
        let first = tokio::spawn({
            let (c, send) = (combiner.clone(), send.clone());
            async move { c.submit(key, &[id(1)], 32, send).await }
        });
        // The first holds the turn (its send waits at the gate) before the others come.
        while combiner.queue(key).turn.try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
        let others: Vec<_> = (2..=8)
            .map(|n| {
                let (c, send) = (combiner.clone(), send.clone());
                tokio::spawn(async move { c.submit(key, &[id(n)], 32, send).await })
            })
            .collect();
        let q = combiner.queue(key);
        while q.waiting.lock().unwrap().len() < 7 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap(), tx_of(&[id(1)]));
        let answers: Vec<B256> = futures::future::join_all(others)
            .await
            .into_iter()
            .map(|o| o.unwrap().unwrap())
            .collect();
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0], vec![id(1)]);
        assert!(answers.iter().all(|a| *a == tx_of(&sent[1])), "{answers:?}");
        let mut second = sent[1].clone();
        second.sort_by_key(|r| r.0);
        assert_eq!(second, (2..=8).map(id).collect::<Vec<_>>());
    }

    /// A batch holds at most `max` ids: the next waiters go in the one after.
    #[tokio::test]
    async fn a_batch_holds_at_most_max_ids() {
        let q = Queue::default();
        for n in 1..=4 {
            let (answer, _) = oneshot::channel();
            q.waiting.lock().unwrap().push_back(Waiter {
                ids: vec![id(n), id(n)],
                answer,
            });
        }
        let sizes = |b: Vec<Waiter>| b.iter().map(|w| w.ids.len()).sum::<usize>();
        assert_eq!(sizes(q.take(5)), 4, "two waiters of two ids fit five");
        assert_eq!(sizes(q.take(1)), 2, "the oldest goes even when over");
        assert_eq!(sizes(q.take(5)), 2);
        assert!(q.take(5).is_empty());
    }

    /// A failed send fails every caller of its batch, with the error's words; a caller that
    /// went away does not stop the others' answers.
    #[tokio::test]
    async fn a_failed_send_fails_its_whole_batch() {
        let combiner = Combiner::default();
        let key = (1, Address::repeat_byte(3), Address::repeat_byte(4), 9);
        let calls = Arc::new(AtomicUsize::new(0));
        let send = {
            let calls = calls.clone();
            move |_ids: Vec<RecordId>| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(ChainError::Rejected("patient 1-1 is unknown".into())) }
            }
        };
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            combiner.submit(key, &[id(1)], 32, send),
        )
        .await
        .expect("answered");
        assert_eq!(r.unwrap_err().to_string(), "patient 1-1 is unknown");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

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
//! The contract judges each attempt when its transaction is mined, so a grant given between
//! the gateway's refusal and that block logs the attempt as allowed: the race a lone denial
//! always had, over the few milliseconds a queued one waits more.
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

/// The attempts of one key not sent yet, and whether a task is sending them.
#[derive(Default)]
struct Pending {
    waiting: VecDeque<Waiter>,
    draining: bool,
}

/// One key's queue.
#[derive(Default)]
struct Queue {
    pending: Mutex<Pending>,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The oldest waiters whose ids fit one transaction of at most `max` ids (always at
    /// least the oldest); none, and the queue marked idle, when nobody waits.
    fn take(&self, max: usize) -> Vec<Waiter> {
        let mut p = self.lock();
        let mut batch: Vec<Waiter> = Vec::new();
        let mut ids = 0;
        while let Some(next) = p.waiting.front() {
            if !batch.is_empty() && ids + next.ids.len() > max {
                break;
            }
            ids += next.ids.len();
            batch.extend(p.waiting.pop_front());
        }
        if batch.is_empty() {
            p.draining = false;
        }
        batch
    }
}

/// Ends a draining task however it ends: a panic in a send or the end of its runtime drops
/// the waiters still queued (their callers get an error, not a wait for ever) and lets the
/// next caller start a new task.
struct Draining {
    queue: Arc<Queue>,
    /// Set when the task found the queue empty (and marked it idle) itself.
    finished: bool,
}

impl Draining {
    /// The task found the queue empty and marked it idle: nothing to clean up.
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        if !self.finished {
            let mut p = self.queue.lock();
            p.waiting.clear();
            p.draining = false;
        }
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
            // A queue with waiters has a task holding it; only this map holds an idle one.
            queues.retain(|_, q| Arc::strong_count(q) > 1);
        }
        Arc::clone(queues.entry(key).or_default())
    }

    /// Logs `ids` (at most `max`) with the other attempts of `key` waiting at the same time,
    /// `send` sending one transaction for a batch of ids; answers that transaction's hash.
    /// The first caller of an idle key starts a task that sends batches until nobody waits:
    /// a caller that goes away leaves its attempt queued, and it is sent all the same.
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
        F: Fn(Vec<RecordId>) -> Fut + Send + 'static,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        let q = self.queue(key);
        let (answer, mine) = oneshot::channel();
        let start = {
            let mut p = q.lock();
            p.waiting.push_back(Waiter {
                ids: ids.to_vec(),
                answer,
            });
            !std::mem::replace(&mut p.draining, true)
        };
        if start {
            let mut guard = Draining {
                queue: q,
                finished: false,
            };
            tokio::spawn(async move {
                loop {
                    let batch = guard.queue.take(max);
                    if batch.is_empty() {
                        guard.finish();
                        break;
                    }
                    let ids: Vec<RecordId> =
                        batch.iter().flat_map(|w| w.ids.iter().copied()).collect();
                    let r = send(ids).await;
                    for w in batch {
                        // A caller that went away is no longer listening; its attempt is
                        // logged.
                        let _ = w.answer.send(match &r {
                            Ok(tx) => Ok(*tx),
                            Err(e) => Err(e.shared()),
                        });
                    }
                }
            });
        }
        mine.await.unwrap_or_else(|_| {
            Err(ChainError::Rpc(
                alloy::transports::TransportErrorKind::custom_str(
                    "the task logging this denial ended before answering (a panic, or the end of its runtime); it may not have been sent",
                ),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
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

    /// Batches sent, a gate each send waits at, and whether sends fail.
    #[derive(Clone)]
    struct Fake {
        sent: Arc<Mutex<Vec<Vec<RecordId>>>>,
        gate: Arc<tokio::sync::Semaphore>,
        fail: bool,
    }

    impl Default for Fake {
        fn default() -> Self {
            Self {
                sent: Arc::default(),
                gate: Arc::new(tokio::sync::Semaphore::new(0)),
                fail: false,
            }
        }
    }

    impl Fake {
        fn sender(
            &self,
        ) -> impl Fn(Vec<RecordId>) -> futures::future::BoxFuture<'static, Answer> + Send + 'static
        {
            let f = self.clone();
            move |ids| {
                let f = f.clone();
                Box::pin(async move {
                    f.gate.acquire().await.expect("gate").forget();
                    f.sent.lock().unwrap().push(ids.clone());
                    if f.fail {
                        Err(ChainError::Rejected("patient 1-1 is unknown".into()))
                    } else {
                        Ok(tx_of(&ids))
                    }
                })
            }
        }

        fn sent(&self) -> Vec<Vec<RecordId>> {
            self.sent.lock().unwrap().clone()
        }
    }

    /// Waits (at most 10 s) until `cond` holds of the key's queue.
    async fn until(c: &Combiner, key: Key, cond: impl Fn(&Pending) -> bool) {
        let q = c.queue(key);
        tokio::time::timeout(Duration::from_secs(10), async {
            while !cond(&q.lock()) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the queue never got there");
    }

    /// A caller's answer, within 10 s.
    async fn bounded(h: tokio::task::JoinHandle<Answer>) -> Answer {
        tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("a caller was never answered")
            .expect("the caller's task")
    }

    /// One caller submits, its send held at the gate; `others` more queue behind it.
    async fn one_sending_and_queued(
        c: &Arc<Combiner>,
        key: Key,
        fake: &Fake,
        others: std::ops::RangeInclusive<u8>,
    ) -> (
        tokio::task::JoinHandle<Answer>,
        Vec<tokio::task::JoinHandle<Answer>>,
    ) {
        let first = tokio::spawn({
            let (c, send) = (c.clone(), fake.sender());
            async move { c.submit(key, &[id(1)], 32, send).await }
        });
        // The first batch is taken (its send waits at the gate) before the others come.
        until(c, key, |p| p.draining && p.waiting.is_empty()).await;
        let n = others.clone().count();
        let handles = others
            .map(|i| {
                let (c, send) = (c.clone(), fake.sender());
                tokio::spawn(async move { c.submit(key, &[id(i)], 32, send).await })
            })
            .collect();
        until(c, key, |p| p.waiting.len() == n).await;
        (first, handles)
    }

    /// The first attempt goes out alone; the seven that arrive while it is being sent go out
    /// together in the next transaction, each caller answered with the hash of the one that
    /// named its id; then the key is idle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attempts_during_a_send_share_the_next_transaction() {
        let c = Arc::new(Combiner::default());
        let key = (1, Address::repeat_byte(1), Address::repeat_byte(2), 7);
        let fake = Fake::default();
        let (first, others) = one_sending_and_queued(&c, key, &fake, 2..=8).await;
        fake.gate.add_permits(2);
        assert_eq!(bounded(first).await.unwrap(), tx_of(&[id(1)]));
        let answers: Vec<B256> = futures::future::join_all(others.into_iter().map(bounded))
            .await
            .into_iter()
            .map(|o| o.unwrap())
            .collect();
        let sent = fake.sent();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0], vec![id(1)]);
        assert!(answers.iter().all(|a| *a == tx_of(&sent[1])), "{answers:?}");
        let mut second = sent[1].clone();
        second.sort_by_key(|r| r.0);
        assert_eq!(second, (2..=8).map(id).collect::<Vec<_>>());
        until(&c, key, |p| !p.draining && p.waiting.is_empty()).await;
    }

    /// A caller that goes away while queued (its connection closed) still has its attempt
    /// sent; the others get their answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_attempt_whose_caller_went_away_is_sent_all_the_same() {
        let c = Arc::new(Combiner::default());
        let key = (1, Address::repeat_byte(5), Address::repeat_byte(6), 8);
        let fake = Fake::default();
        let (first, mut others) = one_sending_and_queued(&c, key, &fake, 2..=3).await;
        let gone = others.remove(0);
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        fake.gate.add_permits(2);
        bounded(first).await.unwrap();
        bounded(others.remove(0)).await.unwrap();
        assert_eq!(fake.sent()[1].len(), 2, "{:?}", fake.sent());
        assert!(
            fake.sent()[1].contains(&id(2)),
            "the attempt of the caller that went away"
        );
    }

    /// A failed send fails every caller of its batch, with the error's words.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_send_fails_its_whole_batch() {
        let c = Arc::new(Combiner::default());
        let key = (1, Address::repeat_byte(3), Address::repeat_byte(4), 9);
        let fake = Fake {
            fail: true,
            ..Fake::default()
        };
        let (first, others) = one_sending_and_queued(&c, key, &fake, 2..=4).await;
        fake.gate.add_permits(2);
        assert!(bounded(first).await.is_err());
        for o in others {
            let e = bounded(o).await.unwrap_err();
            assert!(e.is_rejection(), "{e:?}");
            assert_eq!(e.to_string(), "patient 1-1 is unknown");
        }
        assert_eq!(fake.sent().len(), 2);
    }

    /// A send that panics fails the callers of its batch and those queued behind it (an
    /// error, not a wait for ever), and the key works again for the next caller.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_send_fails_its_callers_and_the_key_recovers() {
        let c = Arc::new(Combiner::default());
        let key = (1, Address::repeat_byte(7), Address::repeat_byte(8), 10);
        let panicking = Fake::default();
        let send = {
            let inner = panicking.sender();
            move |ids: Vec<RecordId>| {
                let sending = inner(ids);
                Box::pin(async move {
                    let answer = sending.await;
                    if answer.is_ok() {
                        panic!("a send panicked");
                    }
                    answer
                }) as futures::future::BoxFuture<'static, Answer>
            }
        };
        let first = tokio::spawn({
            let (c, send) = (c.clone(), send);
            async move { c.submit(key, &[id(1)], 32, send).await }
        });
        until(&c, key, |p| p.draining && p.waiting.is_empty()).await;
        let queued = tokio::spawn({
            let (c, send) = (c.clone(), panicking.sender());
            async move { c.submit(key, &[id(2)], 32, send).await }
        });
        until(&c, key, |p| p.waiting.len() == 1).await;
        panicking.gate.add_permits(1);
        assert!(bounded(first).await.is_err(), "its batch's send panicked");
        assert!(bounded(queued).await.is_err(), "queued behind the panic");
        until(&c, key, |p| !p.draining && p.waiting.is_empty()).await;
        let fine = Fake::default();
        fine.gate.add_permits(1);
        let third = [id(3)];
        let again = tokio::time::timeout(
            Duration::from_secs(10),
            c.submit(key, &third, 32, fine.sender()),
        )
        .await
        .expect("answered");
        assert_eq!(again.unwrap(), tx_of(&[id(3)]));
    }

    /// A batch holds at most `max` ids: the next waiters go in the one after; an empty queue
    /// is marked idle.
    #[test]
    fn a_batch_holds_at_most_max_ids() {
        let q = Queue::default();
        q.lock().draining = true;
        for n in 1..=4 {
            let (answer, _) = oneshot::channel();
            q.lock().waiting.push_back(Waiter {
                ids: vec![id(n), id(n)],
                answer,
            });
        }
        let sizes = |b: Vec<Waiter>| b.iter().map(|w| w.ids.len()).sum::<usize>();
        assert_eq!(sizes(q.take(5)), 4, "two waiters of two ids fit five");
        assert_eq!(sizes(q.take(1)), 2, "the oldest goes even when over");
        assert_eq!(sizes(q.take(5)), 2);
        assert!(q.lock().draining);
        assert!(q.take(5).is_empty());
        assert!(!q.lock().draining, "idle once empty");
    }
}

//! Deposits and proofs to one share node, sent together: uploads that reach a node at about
//! the same time share one request (`POST /deposits`, `POST /anchors`), which the node judges
//! with one chain call per patient, uploader and root and stores in one write to disk. An
//! anchoring batch hands its uploads their proofs at the same moment, so their proofs travel
//! to each node as one request.
//!
//! Nothing waits for company: while a node has [`IN_FLIGHT`] requests of a kind open, further
//! items queue, and the next request takes all that queued (up to its batch limit). A lone
//! upload goes out at once, as before. Each item keeps its own outcome and its own deadline:
//! one that gives up (the caller's deadline passed) is left out of the next request.
//!
//! Batchers live per node and per tokio runtime, shared by every records client of the
//! process (the gateway makes one per request; all use the runtime's one share-node HTTP
//! client and the directory's deadline). An item's deadline runs from the moment it is
//! queued: behind a request a node takes the whole deadline over, it fails as that node's
//! failure (an upload needs k of n nodes), not later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::share_node::{
    ANCHORS_PER_BATCH, AnchorBatch, AnchorBody, BatchedAnchor, BatchedDeposit, DEPOSITS_PER_BATCH,
    DepositBatch, NodeClient, NodeError,
};

/// Requests of one kind a node has open at once from this process.
pub(super) const IN_FLIGHT: usize = 2;

/// Each item's outcome, or the whole batch's failure.
pub(super) type Outcomes<O, E> = Result<Vec<Result<O, E>>, E>;
/// Sends one batch.
pub(super) type Sender<I, O, E> =
    Arc<dyn Fn(Vec<I>) -> BoxFuture<'static, Outcomes<O, E>> + Send + Sync>;
type Queued<I, O, E> = (I, oneshot::Sender<Result<O, E>>);

/// What an item gets when its batch does not answer it.
pub(super) trait Unanswered: Clone + Send + 'static {
    /// The batching task stopped (its runtime is ending).
    fn stopped() -> Self;
    /// The item's deadline passed first.
    fn timed_out() -> Self;
}

impl Unanswered for NodeError {
    fn stopped() -> Self {
        NodeError::Transport("the node's batching task stopped".into())
    }

    fn timed_out() -> Self {
        NodeError::TimedOut
    }
}

/// Items of one kind to one destination, sent in batches; see the module documentation.
/// An outcome its caller no longer waits for is dropped (a guard in it sees that).
pub(super) struct Coalescer<I, O, E> {
    tx: mpsc::UnboundedSender<Queued<I, O, E>>,
    deadline: Duration,
}

impl<I: Send + 'static, O: Send + 'static, E: Unanswered> Coalescer<I, O, E> {
    /// At most `in_flight` batches of at most `max` items open at once.
    pub(super) fn spawn(
        max: usize,
        in_flight: usize,
        deadline: Duration,
        send: Sender<I, O, E>,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Queued<I, O, E>>();
        let open = Arc::new(Semaphore::new(in_flight));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = open.clone().acquire_owned().await else {
                    return;
                };
                let Some(first) = rx.recv().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < max {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                // Callers that gave up are not asked for.
                batch.retain(|(_, reply)| !reply.is_closed());
                if batch.is_empty() {
                    continue;
                }
                let send = send.clone();
                tokio::spawn(async move {
                    let (items, replies): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
                    match send(items).await {
                        Ok(outcomes) => {
                            for (reply, o) in replies.into_iter().zip(outcomes) {
                                let _ = reply.send(o);
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                    drop(permit);
                });
            }
        });
        Self { tx, deadline }
    }

    /// Sends `item` with the next batch; its outcome within the deadline.
    pub(super) async fn call(&self, item: I) -> Result<O, E> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((item, reply)).map_err(|_| E::stopped())?;
        match tokio::time::timeout(self.deadline, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(E::stopped()),
            Err(_) => Err(E::timed_out()),
        }
    }
}

/// One node's batchers.
pub(super) struct NodeBatchers {
    deposits: Coalescer<BatchedDeposit, (), NodeError>,
    anchors: Coalescer<BatchedAnchor, (), NodeError>,
}

impl NodeBatchers {
    fn new(node: NodeClient, deadline: Duration) -> Self {
        let n = node.clone();
        let deposits: Sender<BatchedDeposit, (), NodeError> = Arc::new(move |items| {
            let n = n.clone();
            Box::pin(async move {
                let batch = DepositBatch { deposits: items };
                match n.deposit_many(&batch).await {
                    Err(e) if lacks_batches(&e) => {
                        let calls = batch
                            .deposits
                            .iter()
                            .map(|d| n.deposit(d.record, &d.request));
                        Ok(futures::future::join_all(calls).await)
                    }
                    other => other,
                }
            })
        });
        let n = node;
        let anchors: Sender<BatchedAnchor, (), NodeError> = Arc::new(move |items| {
            let n = n.clone();
            Box::pin(async move {
                let batch = AnchorBatch { anchors: items };
                match n.present_many(&batch).await {
                    Err(e) if lacks_batches(&e) => {
                        let calls = batch.anchors.iter().map(|a| {
                            let body = AnchorBody {
                                root: a.root,
                                proof: a.proof.clone(),
                            };
                            let n = n.clone();
                            let id = a.record;
                            async move { n.present(id, &body).await }
                        });
                        Ok(futures::future::join_all(calls).await)
                    }
                    other => other,
                }
            })
        });
        Self {
            deposits: Coalescer::spawn(DEPOSITS_PER_BATCH, IN_FLIGHT, deadline, deposits),
            anchors: Coalescer::spawn(ANCHORS_PER_BATCH, IN_FLIGHT, deadline, anchors),
        }
    }

    /// Deposits with the node's next batch of deposits.
    pub(super) async fn deposit(&self, d: BatchedDeposit) -> Result<(), NodeError> {
        self.deposits.call(d).await
    }

    /// Presents a proof with the node's next batch of proofs.
    pub(super) async fn present(&self, a: BatchedAnchor) -> Result<(), NodeError> {
        self.anchors.call(a).await
    }
}

/// A node of an earlier version, without the batch routes, asked one item at a time: it
/// answers 404 (or 405) for the route, or 413 for a batch over its single-request body limit
/// (which it applies before routing). A node with batches answers each item's 404 or 413
/// inside its answer, never for the request.
fn lacks_batches(e: &NodeError) -> bool {
    matches!(e.status(), Some(404 | 405 | 413))
}

type Registry = Arc<Mutex<HashMap<(String, alloy::primitives::Address), Arc<NodeBatchers>>>>;

static BATCHERS: crate::per_runtime::PerRuntime<Registry> = crate::per_runtime::PerRuntime::new();

/// The batchers of `node` on this runtime, started on first use; each item bounded by
/// `deadline` from the moment it is queued.
pub(super) fn batchers(node: &NodeClient, deadline: Duration) -> Arc<NodeBatchers> {
    let registry = BATCHERS.get(Registry::default);
    let key = (node.node().url.clone(), node.node().address);
    let mut map = registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.entry(key)
        .or_insert_with(|| Arc::new(NodeBatchers::new(node.clone(), deadline)))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Lets the other tasks run until `cond` holds (a bounded number of turns: a test that
    /// goes wrong fails instead of spinning).
    async fn until(cond: impl Fn() -> bool) {
        for _ in 0..100_000 {
            if cond() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the condition never held");
    }

    /// While a node has its requests open, items queue and go out together, each with its own
    /// outcome; an item whose caller gave up is not sent.
    #[tokio::test]
    async fn items_queued_behind_open_requests_go_out_together() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (s, g) = (sizes.clone(), gate.clone());
        let send: Sender<u32, (), NodeError> = Arc::new(move |items: Vec<u32>| {
            let (s, g) = (s.clone(), g.clone());
            Box::pin(async move {
                s.lock().unwrap().push(items.clone());
                g.acquire().await.unwrap().forget();
                Ok(items
                    .into_iter()
                    .map(|i| {
                        if i % 2 == 0 {
                            Ok(())
                        } else {
                            Err(NodeError::Refused {
                                status: 403,
                                message: format!("odd {i}"),
                            })
                        }
                    })
                    .collect())
            })
        });
        let c = Arc::new(Coalescer::spawn(4, IN_FLIGHT, Duration::from_secs(5), send));
        let started = Arc::new(AtomicUsize::new(0));
        let call = |i: u32| {
            let (c, started) = (c.clone(), started.clone());
            tokio::spawn(async move {
                started.fetch_add(1, Ordering::SeqCst);
                c.call(i).await
            })
        };
        // Two requests open (one item each), then six more queue.
        let mut first = Vec::new();
        for i in 0..2 {
            first.push(call(i));
            until(|| sizes.lock().unwrap().len() > i as usize).await;
        }
        let rest: Vec<_> = (2..8).map(call).collect();
        // One caller gives up before its item is sent.
        let gave_up = tokio::spawn({
            let c = c.clone();
            async move { tokio::time::timeout(Duration::from_millis(1), c.call(99)).await }
        });
        assert!(gave_up.await.unwrap().is_err());
        until(|| started.load(Ordering::SeqCst) == 8).await;
        tokio::task::yield_now().await;
        gate.add_permits(100);
        let mut outcomes = Vec::new();
        for h in first.into_iter().chain(rest) {
            outcomes.push(h.await.unwrap().map_err(|e| e.status()));
        }
        let expect: Vec<_> = (0..8u32)
            .map(|i| if i % 2 == 0 { Ok(()) } else { Err(Some(403)) })
            .collect();
        assert_eq!(outcomes, expect, "each item its own outcome");
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(
            &sizes[..2],
            &[vec![0], vec![1]],
            "nothing waits for company"
        );
        let later: Vec<u32> = sizes[2..].iter().flatten().copied().collect();
        assert_eq!(later, (2..8).collect::<Vec<_>>(), "{sizes:?}");
        assert!(
            sizes[2..].iter().all(|b| b.len() <= 4),
            "at most 4: {sizes:?}"
        );
        assert!(
            sizes.len() <= 4,
            "queued items went out together: {sizes:?}"
        );
    }
}

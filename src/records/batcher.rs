//! Batched anchoring: uploads that arrive close together share one `anchor(root, count)`
//! transaction, each getting its leaf's proof to the root. The first upload of a batch waits at
//! most `window` for company (a lone upload is anchored after `window`, alone); a batch closes
//! early at `max` records. The gateway signs the transaction with its own account: a root
//! names no patient and opens nothing by itself, so who sends it does not matter to security.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::B256;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::client::{Anchoring, RecordError, anchor_root};
use crate::chain::EhrChain;
use crate::chain::merkle::Tree;

type Reply = oneshot::Sender<Result<(B256, Vec<B256>), RecordError>>;

/// Batches anchored at once: while one waits for its receipt and for the chain to be made
/// durable, the next collects and sends (the sender's lock orders the transactions' nonces,
/// and batches waiting for durability together share one dump).
const BATCHES_IN_FLIGHT: usize = 4;

/// How long a batch waits for its anchor's receipt (a transaction the chain lost would hold
/// its slot for ever).
const RECEIPT_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// What makes an anchored batch durable before its uploads are acknowledged, beyond the
/// transaction's receipt: on a development chain that keeps its blocks in memory, writing the
/// chain to disk (`stack::AnvilState`).
pub trait Durability: Send + Sync + std::fmt::Debug {
    /// Returns once everything the chain held at `since` is durable.
    fn settle(&self, since: std::time::Instant) -> BoxFuture<'_, Result<(), String>>;
}

/// Anchors leaves in batches; see the module documentation.
#[derive(Debug)]
pub struct Batcher {
    tx: mpsc::Sender<(B256, Reply)>,
}

/// How a batcher groups uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// How long the first upload of a batch waits for others.
    pub window: Duration,
    /// Most records under one root.
    pub max: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(50),
            max: 1000,
        }
    }
}

/// Where the batcher gets its signing chain client for each batch: `None` while the chain is
/// not reachable yet (`ehr serve` may start before it).
pub type ChainSource = Arc<dyn Fn() -> Option<EhrChain> + Send + Sync>;

impl Batcher {
    /// Starts the batching task, anchoring with `chain`'s signer.
    pub fn spawn(chain: EhrChain, settings: BatchSettings) -> Arc<Self> {
        Self::spawn_with(Arc::new(move || Some(chain.clone())), settings)
    }

    /// Starts the batching task, asking `source` for the signing client at each batch.
    pub fn spawn_with(source: ChainSource, settings: BatchSettings) -> Arc<Self> {
        Self::start(source, settings, None)
    }

    /// Starts the batching task, anchoring with `chain`'s signer, and acknowledging a batch
    /// only once `durable` says its anchor is safe.
    pub fn spawn_durable(
        chain: EhrChain,
        settings: BatchSettings,
        durable: Arc<dyn Durability>,
    ) -> Arc<Self> {
        Self::start(
            Arc::new(move || Some(chain.clone())),
            settings,
            Some(durable),
        )
    }

    fn start(
        source: ChainSource,
        settings: BatchSettings,
        durable: Option<Arc<dyn Durability>>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(settings.max.max(1) * 4);
        tokio::spawn(run(source, settings, durable, rx));
        Arc::new(Self { tx })
    }
}

impl Anchoring for Batcher {
    fn anchor(&self, leaf: B256) -> BoxFuture<'_, Result<(B256, Vec<B256>), RecordError>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            self.tx
                .send((leaf, reply))
                .await
                .map_err(|_| RecordError::NotAnchored("the anchoring batcher stopped".into()))?;
            // A batcher gone with the leaf in hand may have sent its root.
            answer
                .await
                .map_err(|_| RecordError::Anchoring("the anchoring batcher stopped".into()))?
        })
    }
}

async fn run(
    source: ChainSource,
    settings: BatchSettings,
    durable: Option<Arc<dyn Durability>>,
    mut rx: mpsc::Receiver<(B256, Reply)>,
) {
    let max = settings.max.max(1);
    let open = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        // With every slot taken, uploads queue and the next batch takes them all at once.
        let Ok(slot) = open.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + settings.window;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => batch.push(next),
                Ok(None) | Err(_) => break,
            }
        }
        let (source, durable) = (source.clone(), durable.clone());
        tokio::spawn(async move {
            anchor_batch(&source, durable.as_deref(), batch).await;
            drop(slot);
        });
    }
}

/// Anchors one batch and answers each of its uploads.
async fn anchor_batch(
    source: &ChainSource,
    durable: Option<&dyn Durability>,
    batch: Vec<(B256, Reply)>,
) {
    let leaves: Vec<B256> = batch.iter().map(|(l, _)| *l).collect();
    let tree = Tree::new(&leaves);
    let count = u32::try_from(leaves.len()).unwrap_or(u32::MAX);
    // Every upload of the batch gets the batch's outcome, typed: `NotAnchored` when the
    // root surely is not on chain (not sent, or refused), `Anchoring` when it may be.
    let chain = source();
    let mut sent = match &chain {
        Some(chain) => {
            match tokio::time::timeout(RECEIPT_WAIT, anchor_root(chain, tree.root, count)).await {
                Ok(Err(RecordError::Chain(c))) if c.is_rejection() => {
                    Err(RecordError::NotAnchored(c.to_string()))
                }
                Ok(Err(RecordError::Chain(c))) => Err(RecordError::Anchoring(c.to_string())),
                Ok(other) => other,
                Err(_) => Err(RecordError::Anchoring(format!(
                    "no receipt within {} s",
                    RECEIPT_WAIT.as_secs()
                ))),
            }
        }
        None => Err(RecordError::NotAnchored(
            "the chain is not reachable yet".into(),
        )),
    };
    if let (Ok(()), Some(d), Some(chain)) = (&sent, durable, &chain) {
        // Not acknowledged before the chain keeps it: without the proofs (sent to nobody
        // on failure) the root anchors nothing readable.
        if let Err(e) = d.settle(std::time::Instant::now()).await {
            sent = Err(RecordError::Anchoring(format!(
                "the chain did not make the anchor durable: {e}"
            )));
        } else if !matches!(chain.root(tree.root).await, Ok(Some(_))) {
            // A chain restarted from an older state between the receipt and the dump saved
            // a chain without the anchor (or cannot say): not acknowledged, the sweeper
            // settles the uploads.
            sent = Err(RecordError::Anchoring(
                "the anchor is not on the chain that was made durable (restarted meanwhile?)"
                    .into(),
            ));
        }
    }
    match &sent {
        Ok(()) => tracing::info!(records = count, root = %tree.root, "anchored a batch"),
        Err(e) => tracing::warn!(records = count, "anchoring a batch failed: {e}"),
    }
    for ((_, reply), proof) in batch.into_iter().zip(tree.proofs) {
        let _ = reply.send(match &sent {
            Ok(()) => Ok((tree.root, proof)),
            Err(RecordError::NotAnchored(m)) => Err(RecordError::NotAnchored(m.clone())),
            Err(e) => Err(RecordError::Anchoring(strip(e))),
        });
    }
}

/// An anchoring error's words without the "anchoring failed: " its display adds (it is
/// wrapped again by the reply).
fn strip(e: &RecordError) -> String {
    match e {
        RecordError::Anchoring(m) => m.clone(),
        other => other.to_string(),
    }
}

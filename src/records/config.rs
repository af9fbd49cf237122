//! Where records go: the share nodes, how many must agree, and how records get anchored. The
//! one way to make a [`RecordsClient`] or a [`Directory`].

use std::sync::Arc;

use alloy::signers::local::PrivateKeySigner;

use super::client::{Anchoring, RecordError, RecordsClient, ShareNodeRef};
use super::directory::Directory;
use super::node_health::NodeHealth;
use super::read_cache::ReadCache;
use super::sweeper::{SweepSettings, UploadSweeper};
use crate::chain::EhrChain;
use crate::crypto::Scheme;
use crate::ipfs::Replicas;

/// Where records go: the share nodes and the threshold (signed requests take their domain
/// from the chain client).
#[derive(Debug, Clone)]
pub struct RecordsConfig {
    /// The share nodes.
    pub nodes: Vec<ShareNodeRef>,
    /// Shares needed to read.
    pub threshold: u8,
    /// The gateway's batcher, when it anchors uploads in batches with its own account; `None`:
    /// each uploader anchors their record alone.
    pub anchoring: Option<Arc<dyn Anchoring>>,
    /// What readers remember between reads, shared by every client made from this
    /// configuration (and its clones).
    cache: Arc<ReadCache>,
    /// Which share nodes readers ask first, shared likewise.
    health: Arc<NodeHealth>,
    /// How new records are padded.
    padding: Scheme,
}

impl RecordsConfig {
    /// `threshold`-of-`nodes`, each uploader anchoring alone.
    pub fn new(nodes: Vec<ShareNodeRef>, threshold: u8) -> Self {
        Self {
            nodes,
            threshold,
            anchoring: None,
            cache: Arc::default(),
            health: Arc::default(),
            padding: Scheme::CURRENT,
        }
    }

    /// The same, padding new records by `padding` instead of [`Scheme::CURRENT`]: powers of
    /// two hide a record's size better (one size per doubling instead of up to 32) at up to
    /// twice the storage, and are what versions before Padmé read, for a rolling upgrade.
    #[must_use]
    pub fn with_padding(mut self, padding: Scheme) -> Self {
        self.padding = padding;
        self
    }

    /// The same, reusing a reader's access transaction for a record for `reuse` (zero: one
    /// transaction per read; at most [`super::MAX_ACCESS_REUSE`]). See [`ReadCache`].
    #[must_use]
    pub fn with_access_reuse(mut self, reuse: std::time::Duration) -> Self {
        self.cache = Arc::new(ReadCache::new(reuse));
        self
    }

    /// The same, with a fixed hedge delay: a read asks the remaining share nodes when its
    /// first k have not all answered within `hedge`, instead of within three times the median
    /// node's answer time. For nodes whose answer times vary more than a hedge should follow,
    /// and for tests that must not depend on timing.
    #[must_use]
    pub fn with_fixed_hedge(mut self, hedge: std::time::Duration) -> Self {
        self.health = Arc::new(NodeHealth::with_hedge(hedge));
        self
    }

    /// The same, anchoring through `anchoring` (the gateway's batcher).
    #[must_use]
    pub fn with_anchoring(mut self, anchoring: Arc<dyn Anchoring>) -> Self {
        self.anchoring = Some(anchoring);
        self
    }

    /// Which share nodes failed readers lately (asked last for a while).
    pub fn node_health(&self) -> &NodeHealth {
        &self.health
    }

    /// Where records sit and which a patient has, over these nodes, asking through `http`.
    pub fn directory(&self, chain: EhrChain, http: reqwest::Client) -> Directory {
        Directory::new(chain, self.nodes.clone(), self.threshold, http)
    }

    /// A records client signing as `signer` (the account of `chain`), anchoring through the
    /// batcher when there is one.
    ///
    /// # Errors
    /// [`RecordError::Config`] when the threshold exceeds the nodes.
    pub fn client(
        &self,
        chain: EhrChain,
        signer: PrivateKeySigner,
        ipfs: impl Into<Replicas>,
    ) -> Result<RecordsClient, RecordError> {
        let c = RecordsClient::new(
            chain,
            signer,
            ipfs.into(),
            self.nodes.clone(),
            self.threshold,
            self.cache.clone(),
            self.health.clone(),
        )?
        .with_padding(self.padding);
        Ok(match &self.anchoring {
            Some(a) => c.with_anchoring(a.clone()),
            None => c,
        })
    }

    /// The sweeper that finishes or collects uploads a crash interrupted, over these nodes,
    /// on each IPFS peer.
    pub fn sweeper(
        &self,
        ipfs: impl Into<Replicas>,
        http: reqwest::Client,
        settings: SweepSettings,
    ) -> UploadSweeper {
        UploadSweeper::new(ipfs.into(), self.nodes.clone(), http, settings)
    }
}

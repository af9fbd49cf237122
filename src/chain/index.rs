//! An index of the contract's events: decoded once, kept in memory oldest first, and brought up
//! to the chain head before every query (one `eth_blockNumber`, and `eth_getLogs` only for the
//! blocks that are new). Audit views then page and filter in memory instead of fetching the
//! whole log history on every request. Shared by every client cloned from one connection.
//!
//! A chain whose last indexed block changed (a reorganisation, or a reset dev chain) is
//! indexed again from the deployment block: the hash of the last indexed block is checked
//! before every catch-up.
//!
//! With an [`IndexStore`] (the gateway's database) the index survives restarts: it loads what
//! was indexed before, appends each catch-up (its events and the new position together), and
//! starts from the deployment block again only when the stored position is no longer on the
//! chain. A store that fails is logged and the index goes on in memory.

use std::sync::Arc;

use alloy::primitives::B256;
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use futures::future::BoxFuture;
use tokio::sync::Mutex;

use super::errors::ChainError;
use super::events::{self, AuditEvent, AuditPage};

/// Blocks per `eth_getLogs` call while catching up (nodes cap the range they answer).
const RANGE: u64 = 5_000;

/// An error of an [`IndexStore`], kept whole for the log.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// What an [`IndexStore`] holds for one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIndex {
    /// The events, oldest first.
    pub events: Vec<AuditEvent>,
    /// The first block not indexed yet.
    pub next_block: u64,
    /// Hash of block `next_block - 1` when it was indexed.
    pub last_hash: B256,
}

/// Where an event index keeps its events between runs, per deployment (by deployment id).
pub trait IndexStore: Send + Sync + std::fmt::Debug {
    /// What was stored for `deployment`.
    fn load(&self, deployment: B256) -> BoxFuture<'_, Result<Option<StoredIndex>, StoreError>>;
    /// Appends `events` (blocks `from_block` up to `next_block - 1`) and moves the position to
    /// `next_block` / `last_hash`, atomically, only if the stored position is `from_block`
    /// (none stored counts as the deployment block `first_block`). `Ok(false)` when another
    /// writer (a second gateway on the same database) moved it: then nothing is written.
    fn append<'a>(
        &'a self,
        deployment: B256,
        first_block: u64,
        from_block: u64,
        events: &'a [AuditEvent],
        next_block: u64,
        last_hash: B256,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Forgets everything stored for `deployment`.
    fn clear(&self, deployment: B256) -> BoxFuture<'_, Result<(), StoreError>>;
}

#[derive(Debug)]
struct State {
    events: Vec<AuditEvent>,
    next_block: u64,
    /// Hash of block `next_block - 1` when it was indexed.
    last_hash: Option<B256>,
    /// Whether the store was read (once, at the first query).
    loaded: bool,
    /// Whether the store holds every indexed block: after a failed write it is cleared and
    /// left alone for the rest of the run (a gap in it would go unnoticed at the next start).
    store_whole: bool,
}

/// The index of one deployment's events.
#[derive(Debug)]
pub(crate) struct EventIndex {
    deploy_block: u64,
    deployment_id: B256,
    store: Option<Arc<dyn IndexStore>>,
    state: Mutex<State>,
}

impl EventIndex {
    pub(crate) fn new(
        deploy_block: u64,
        deployment_id: B256,
        store: Option<Arc<dyn IndexStore>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            deploy_block,
            deployment_id,
            store,
            state: Mutex::new(State {
                events: Vec::new(),
                next_block: deploy_block,
                last_hash: None,
                loaded: false,
                store_whole: true,
            }),
        })
    }

    /// Reads the store once: what was indexed in earlier runs.
    async fn load(&self, st: &mut State) {
        if st.loaded {
            return;
        }
        st.loaded = true;
        let Some(store) = &self.store else { return };
        match store.load(self.deployment_id).await {
            Ok(Some(stored)) if stored.next_block > self.deploy_block => {
                tracing::info!(
                    events = stored.events.len(),
                    next_block = stored.next_block,
                    "event index loaded from the database"
                );
                st.events = stored.events;
                st.next_block = stored.next_block;
                st.last_hash = Some(stored.last_hash);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "event index: cannot load the stored events ({e}); indexing from the chain"
            ),
        }
    }

    /// The events `keep` selects, newest first, paged.
    pub(crate) async fn query(
        &self,
        provider: &DynProvider,
        filter: &Filter,
        keep: impl Fn(&AuditEvent) -> bool,
        offset: usize,
        limit: usize,
    ) -> Result<AuditPage, ChainError> {
        let mut st = self.state.lock().await;
        self.load(&mut st).await;
        self.catch_up(&mut st, provider, filter).await?;
        let mut total = 0;
        let mut events = Vec::new();
        for e in st.events.iter().rev().filter(|e| keep(e)) {
            if total >= offset && events.len() < limit {
                events.push(e.clone());
            }
            total += 1;
        }
        Ok(AuditPage { events, total })
    }

    /// Calls `visit` on every event, oldest first (after catching up), without copying them.
    pub(crate) async fn scan(
        &self,
        provider: &DynProvider,
        filter: &Filter,
        mut visit: impl FnMut(&AuditEvent),
    ) -> Result<(), ChainError> {
        let mut st = self.state.lock().await;
        self.load(&mut st).await;
        self.catch_up(&mut st, provider, filter).await?;
        st.events.iter().for_each(&mut visit);
        Ok(())
    }

    async fn catch_up(
        &self,
        st: &mut State,
        provider: &DynProvider,
        filter: &Filter,
    ) -> Result<(), ChainError> {
        let latest = provider.get_block_number().await?;
        if let Some(known) = st.last_hash {
            let now = provider
                .get_block_by_number((st.next_block - 1).into())
                .await?
                .map(|b| b.header.hash);
            if now != Some(known) {
                tracing::warn!(
                    "block {} changed (reorganised or reset chain); indexing the events again",
                    st.next_block - 1
                );
                st.events.clear();
                st.next_block = self.deploy_block;
                st.last_hash = None;
                if let Some(store) = self.store.as_ref().filter(|_| st.store_whole)
                    && let Err(e) = store.clear(self.deployment_id).await
                {
                    // Events of the abandoned blocks would load again at the next start.
                    tracing::warn!(
                        "event index: cannot clear the stored events ({e}); not storing more this run"
                    );
                    st.store_whole = false;
                }
            }
        }
        while st.next_block <= latest {
            let to = (st.next_block + RANGE - 1).min(latest);
            let f = filter.clone().from_block(st.next_block).to_block(to);
            let mut new: Vec<AuditEvent> = provider
                .get_logs(&f)
                .await?
                .iter()
                .filter_map(events::decode)
                .collect();
            fill_times(provider, &mut new).await?;
            super::fold::derive(&st.events, &mut new);
            let hash = provider
                .get_block_by_number(to.into())
                .await?
                .map(|b| b.header.hash);
            if let Some(store) = self.store.as_ref().filter(|_| st.store_whole) {
                let stored = match hash {
                    Some(hash) => {
                        store
                            .append(
                                self.deployment_id,
                                self.deploy_block,
                                st.next_block,
                                &new,
                                to + 1,
                                hash,
                            )
                            .await
                    }
                    None => Err(format!("block {to} not found").into()),
                };
                match stored {
                    Ok(true) => {}
                    // Another gateway keeps the stored copy; this one stays in memory.
                    Ok(false) => {
                        tracing::info!(
                            "event index: another writer keeps the stored copy; indexing in memory"
                        );
                        st.store_whole = false;
                    }
                    // An append is one transaction: the stored copy stays whole at its old
                    // position and the next start catches up from there.
                    Err(e) => {
                        tracing::warn!(
                            "event index: cannot store blocks up to {to} ({e}); indexing in memory for the rest of this run"
                        );
                        st.store_whole = false;
                    }
                }
            }
            st.events.extend(new);
            st.next_block = to + 1;
            st.last_hash = hash;
        }
        Ok(())
    }
}

/// Fills in block times the node did not include in the logs (one call per block).
pub(crate) async fn fill_times(
    provider: &DynProvider,
    out: &mut [AuditEvent],
) -> Result<(), ChainError> {
    let mut cache = std::collections::HashMap::new();
    for e in out.iter_mut() {
        if e.timestamp.is_none() {
            if let Some(t) = cache.get(&e.block) {
                e.timestamp = Some(*t);
            } else if let Some(b) = provider.get_block_by_number(e.block.into()).await? {
                cache.insert(e.block, b.header.timestamp);
                e.timestamp = Some(b.header.timestamp);
            }
        }
    }
    Ok(())
}

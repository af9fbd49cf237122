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

use std::collections::HashSet;
use std::sync::Arc;

use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use futures::future::BoxFuture;
use tokio::sync::Mutex;

use super::errors::ChainError;
use super::events::{self, AuditEvent, AuditKind, AuditPage};
use super::types::PatientAddr;

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
    /// Every (patient, provider) revoke among the indexed events: see
    /// [`EventIndex::revoked_already`].
    revokes: std::sync::RwLock<HashSet<(PatientAddr, Address)>>,
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
            revokes: Default::default(),
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
                self.note_revokes(Some(&stored.events));
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
        let st = self.caught_up(provider, filter).await?;
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

    /// Whether `patient` ever revoked `provider`, as far as indexed (no catch-up, and not
    /// behind the lock a catch-up holds across its round trips). A denied read asks it every
    /// time, and a revoke in the past stays one: a hit settles it.
    pub(crate) fn revoked_already(&self, patient: PatientAddr, provider: Address) -> bool {
        self.revokes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&(patient, provider))
    }

    /// Brings the index up to the chain head.
    pub(crate) async fn catch_up_now(
        &self,
        provider: &DynProvider,
        filter: &Filter,
    ) -> Result<(), ChainError> {
        self.caught_up(provider, filter).await.map(drop)
    }

    /// The state, loaded from the store once and brought up to the chain head; held locked.
    async fn caught_up(
        &self,
        provider: &DynProvider,
        filter: &Filter,
    ) -> Result<tokio::sync::MutexGuard<'_, State>, ChainError> {
        let mut st = self.state.lock().await;
        self.load(&mut st).await;
        self.catch_up(&mut st, provider, filter).await?;
        Ok(st)
    }

    /// Keeps [`Self::revoked_already`] in step with the events: called with every batch
    /// appended, and with `None` when the events are dropped.
    fn note_revokes(&self, appended: Option<&[AuditEvent]>) {
        let mut r = self
            .revokes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match appended {
            None => r.clear(),
            Some(events) => r.extend(events.iter().filter_map(|e| match e.kind {
                AuditKind::GrantRevoked {
                    patient: Some(patient),
                    provider,
                } => Some((patient, provider)),
                _ => None,
            })),
        }
    }

    /// Calls `visit` on every event, oldest first (after catching up), without copying them.
    pub(crate) async fn scan(
        &self,
        provider: &DynProvider,
        filter: &Filter,
        mut visit: impl FnMut(&AuditEvent),
    ) -> Result<(), ChainError> {
        let st = self.caught_up(provider, filter).await?;
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
                self.note_revokes(None);
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
            self.note_revokes(Some(&new));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(block: u64, kind: AuditKind) -> AuditEvent {
        AuditEvent {
            block,
            timestamp: Some(block),
            tx_hash: None,
            log_index: 0,
            kind,
        }
    }

    #[test]
    fn revokes_follow_the_indexed_events_and_a_reset() {
        let index = EventIndex::new(1, B256::ZERO, None);
        let (p, q): (PatientAddr, PatientAddr) = ("1-1".parse().unwrap(), "1-2".parse().unwrap());
        let (a, b) = (Address::repeat_byte(0xa), Address::repeat_byte(0xb));
        index.note_revokes(Some(&[
            ev(
                2,
                AuditKind::GrantIssued {
                    patient: Some(p),
                    provider: a,
                    expires_at: None,
                },
            ),
            ev(
                3,
                AuditKind::GrantIssued {
                    patient: Some(p),
                    provider: b,
                    expires_at: None,
                },
            ),
            ev(
                4,
                AuditKind::GrantRevoked {
                    patient: Some(p),
                    provider: a,
                },
            ),
        ]));
        assert!(index.revoked_already(p, a));
        assert!(!index.revoked_already(p, b), "granted, never revoked");
        assert!(!index.revoked_already(q, a), "another patient's");
        // A reorganised or reset chain drops the events, and their revokes with them.
        index.note_revokes(None);
        assert!(!index.revoked_already(p, a));
    }
}

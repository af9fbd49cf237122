//! An index of the contract's events: decoded once, kept in memory oldest first, and brought up
//! to the chain head before every query (one `eth_blockNumber`, and `eth_getLogs` only for the
//! blocks that are new). Audit views then page and filter in memory instead of fetching the
//! whole log history on every request. Shared by every client cloned from one connection.
//!
//! A chain whose last indexed block changed (a reorganisation, or a reset dev chain) is
//! indexed again from the deployment block: the hash of the last indexed block is checked
//! before every catch-up.

use std::sync::Arc;

use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use tokio::sync::Mutex;

use super::errors::ChainError;
use super::events::{self, AuditEvent, AuditPage};

/// Blocks per `eth_getLogs` call while catching up (nodes cap the range they answer).
const RANGE: u64 = 5_000;

#[derive(Debug)]
struct State {
    events: Vec<AuditEvent>,
    next_block: u64,
    /// Hash of block `next_block - 1` when it was indexed.
    last_hash: Option<alloy::primitives::B256>,
}

/// The index of one deployment's events.
#[derive(Debug)]
pub(crate) struct EventIndex {
    deploy_block: u64,
    state: Mutex<State>,
}

impl EventIndex {
    pub(crate) fn new(deploy_block: u64) -> Arc<Self> {
        Arc::new(Self {
            deploy_block,
            state: Mutex::new(State {
                events: Vec::new(),
                next_block: deploy_block,
                last_hash: None,
            }),
        })
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
            st.events.extend(new);
            st.next_block = to + 1;
            st.last_hash = provider
                .get_block_by_number(to.into())
                .await?
                .map(|b| b.header.hash);
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

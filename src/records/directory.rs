//! The read-only side of records: where a record sits (its proof to an anchored root, from the
//! share nodes) and which records a patient has. No signer: the gateway's views and the CLI
//! use it to list and locate, the records client to read.

use std::collections::HashMap;
use std::time::Duration;

use alloy::primitives::B256;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::client::{RecordError, ShareNodeRef, answer};
use crate::chain::{EhrChain, PatientAddr, RecordId};
use crate::share_node::AnchoredRecord;

/// Locates records and lists a patient's, asking the share nodes and checking their proofs
/// against the chain.
#[derive(Debug, Clone)]
pub struct Directory {
    chain: EhrChain,
    nodes: Vec<ShareNodeRef>,
    k: u8,
    http: reqwest::Client,
}

impl Directory {
    /// A directory over `nodes`, of which `k` must list a record for it to count.
    pub fn new(chain: EhrChain, nodes: Vec<ShareNodeRef>, k: u8) -> Self {
        Self {
            chain,
            nodes,
            k,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Where a record sits: asks the share nodes for its proof and takes the first that leads
    /// to a root the contract says is anchored.
    ///
    /// # Errors
    /// [`RecordError::NotFound`] when no node holds it under an anchored root; chain errors.
    pub async fn locate(&self, id: RecordId) -> Result<AnchoredRecord, RecordError> {
        let mut pending = FuturesUnordered::new();
        for node in &self.nodes {
            let http = self.http.clone();
            let url = format!("{}/records/{id}", node.url);
            pending.push(async move { answer::<AnchoredRecord>(http.get(url).send().await).await });
        }
        while let Some(r) = pending.next().await {
            let Ok(found) = r else { continue };
            if found.record == id
                && found.proof.record_id() == id
                && found.proof.holds()
                && self.chain.is_anchored(&found.proof).await?
            {
                return Ok(found);
            }
        }
        Err(RecordError::NotFound(id))
    }

    /// The patient's anchored records, oldest first: those that at least k share nodes list
    /// with a proof to an anchored root (fewer cannot be read).
    ///
    /// # Errors
    /// Chain errors.
    pub async fn list(&self, patient: PatientAddr) -> Result<Vec<AnchoredRecord>, RecordError> {
        let mut pending = FuturesUnordered::new();
        for node in &self.nodes {
            let http = self.http.clone();
            let base = format!("{}/patients/{patient}/records", node.url);
            pending.push(async move {
                let mut all: Vec<AnchoredRecord> = Vec::new();
                loop {
                    let url = match all.last() {
                        Some(last) => format!("{base}?after={}", last.record),
                        None => base.clone(),
                    };
                    let Ok(page) = answer::<Vec<AnchoredRecord>>(http.get(url).send().await).await
                    else {
                        break;
                    };
                    let done = page.len() < 500;
                    all.extend(page);
                    if done {
                        break;
                    }
                }
                all
            });
        }
        let mut seen: HashMap<RecordId, (AnchoredRecord, usize)> = HashMap::new();
        while let Some(records) = pending.next().await {
            for r in records {
                if r.proof.patient != patient || r.proof.record_id() != r.record || !r.proof.holds()
                {
                    continue;
                }
                seen.entry(r.record).or_insert((r, 0)).1 += 1;
            }
        }
        let needed = usize::from(self.k);
        let mut anchored_roots: HashMap<B256, bool> = HashMap::new();
        let mut out = Vec::new();
        for (_, (r, count)) in seen {
            if count < needed {
                continue;
            }
            let ok = match anchored_roots.get(&r.proof.root) {
                Some(ok) => *ok,
                None => {
                    let ok = self.chain.root(r.proof.root).await?.is_some();
                    anchored_roots.insert(r.proof.root, ok);
                    ok
                }
            };
            if ok {
                out.push(r);
            }
        }
        out.sort_by_key(|r| (r.stored_at, r.record.0));
        Ok(out)
    }
}

//! The read-only side of records: where a record sits (its proof to an anchored root, from the
//! share nodes) and which records a patient has. No signer: the gateway's views and the CLI
//! use it to list and locate, the records client to read.

use std::collections::HashMap;
use std::time::Duration;

use alloy::primitives::B256;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::client::{NodeFailure, RecordError, ShareNodeRef};
use super::coalesce::NodeBatchers;
use crate::chain::{EhrChain, PatientAddr, RecordId};
use crate::share_node::{AnchoredRecord, NodeClient, PAGE};

/// Pages of 500 read from each node when listing: 10,000 records per patient.
const MAX_PAGES: usize = 20;

/// How many more than asked for each node lists when asked for a patient's newest records.
const NEWEST_SLACK: usize = 32;

/// How long one node may take to answer one request: a hung node delays nothing beyond it.
const NODE_DEADLINE: Duration = Duration::from_secs(20);

/// Which roots the chain says are anchored, each asked once.
#[derive(Default)]
struct Roots(HashMap<B256, bool>);

impl Roots {
    async fn anchored(&mut self, chain: &EhrChain, root: B256) -> Result<bool, RecordError> {
        if let Some(ok) = self.0.get(&root) {
            return Ok(*ok);
        }
        let ok = chain.root(root).await?.is_some();
        self.0.insert(root, ok);
        Ok(ok)
    }
}

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
    /// A directory over `nodes`, of which `k` must agree on a record for it to count, asking
    /// them through `http` (the caller's client, reused; each request has its own deadline).
    pub(super) fn new(
        chain: EhrChain,
        nodes: Vec<ShareNodeRef>,
        k: u8,
        http: reqwest::Client,
    ) -> Self {
        Self {
            chain,
            nodes,
            k,
            http,
        }
    }

    /// A client for one node, each call bounded by [`NODE_DEADLINE`] (the records client's
    /// calls too).
    pub(super) fn client(&self, node: &ShareNodeRef) -> NodeClient {
        NodeClient::new(self.http.clone(), node.clone()).with_deadline(NODE_DEADLINE)
    }

    /// The batchers of one node (shared by the process's records clients), each item bounded
    /// by [`NODE_DEADLINE`] from the moment it is queued.
    pub(super) fn batchers(&self, node: &ShareNodeRef) -> std::sync::Arc<NodeBatchers> {
        super::coalesce::batchers(&self.client(node), NODE_DEADLINE)
    }

    /// Where a record sits: the leaf (so the digest) that at least k share nodes agree on,
    /// each with a proof to a root the contract says is anchored. One node alone (lying, or
    /// fed a copy of the record's id under a root someone else anchored) cannot make a
    /// record appear, or make it unreadable by answering first.
    ///
    /// # Errors
    /// [`RecordError::NotFound`] when every node that answered holds no such record;
    /// [`RecordError::NotEnoughShares`] (naming the nodes that failed) when fewer than k agree;
    /// chain errors.
    pub async fn locate(&self, id: RecordId) -> Result<AnchoredRecord, RecordError> {
        let mut pending = FuturesUnordered::new();
        for node in &self.nodes {
            let node = self.client(node);
            pending.push(async move {
                let r = node.locate(id).await;
                (node.node().url.clone(), r)
            });
        }
        let needed = usize::from(self.k);
        let mut roots = Roots::default();
        let mut votes: HashMap<B256, (AnchoredRecord, usize)> = HashMap::new();
        let mut failures = Vec::new();
        // Whether every node that failed said it holds no such record (404).
        let mut answered_all = true;
        while let Some((node, r)) = pending.next().await {
            let found = match r {
                Ok(found) => found,
                Err(e) => {
                    if e.status() != Some(404) {
                        answered_all = false;
                    }
                    failures.push(NodeFailure {
                        node,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            if found.record != id
                || found.proof.record_id() != id
                || !found.proof.holds()
                || !roots.anchored(&self.chain, found.proof.root).await?
            {
                continue;
            }
            let v = votes.entry(found.proof.leaf()).or_insert((found, 0));
            v.1 += 1;
            if v.1 >= needed {
                return Ok(v.0.clone());
            }
        }
        // Every node that answered said it holds no such record: not found. Otherwise too few
        // nodes could answer: say which, as a read does.
        if votes.is_empty() && answered_all {
            return Err(RecordError::NotFound(id));
        }
        Err(RecordError::NotEnoughShares {
            record: id,
            valid: votes.values().map(|(_, n)| *n).max().unwrap_or(0),
            needed,
            failures,
        })
    }

    /// The patient's anchored records, oldest first: those whose leaf at least k distinct share
    /// nodes list with a proof to an anchored root (fewer cannot be read, and one node cannot
    /// make a record up). At most [`MAX_PAGES`] pages are read from each node.
    ///
    /// # Errors
    /// Chain errors.
    pub async fn list(&self, patient: PatientAddr) -> Result<Vec<AnchoredRecord>, RecordError> {
        self.list_pages(patient, MAX_PAGES).await
    }

    /// [`Self::list`] from at most `pages` pages per node (of [`crate::share_node::PAGE`]
    /// records): enough to tell whether a patient has any record without reading all of them
    /// (at 10^5 records a full listing left about 22 MiB more in the gateway's heap).
    ///
    /// # Errors
    /// Chain errors.
    pub async fn list_pages(
        &self,
        patient: PatientAddr,
        pages: usize,
    ) -> Result<Vec<AnchoredRecord>, RecordError> {
        let mut pending = FuturesUnordered::new();
        for node in &self.nodes {
            let node = self.client(node);
            pending.push(async move {
                let mut all: Vec<AnchoredRecord> = Vec::new();
                for _ in 0..pages {
                    let after = all.last().map(|r| r.record);
                    let Ok(page) = node.records_page(patient, after).await else {
                        break;
                    };
                    let done = page.len() < PAGE;
                    all.extend(page);
                    if done {
                        break;
                    }
                }
                all
            });
        }
        let mut tally = Tally::new(patient);
        while let Some(records) = pending.next().await {
            tally.add(records);
        }
        let mut out = tally.agreed(&self.chain, self.k).await?;
        out.sort_by_key(|r| (r.stored_at, r.record.0));
        Ok(out)
    }

    /// The patient's newest `limit` anchored records, newest first, and about how many the
    /// patient has: each node's newest (a range of its time index, however many records it
    /// holds), of which those at least k nodes list with a proof to an anchored root. Each node
    /// orders by the time the share reached it, so the nodes' orders can differ by a few places
    /// around a second's boundary: each is asked for [`NEWEST_SLACK`] more than `limit`. The
    /// count is the k-th largest of the nodes' counts (a record fewer than k nodes hold cannot be
    /// read); 0 when fewer than k answer.
    ///
    /// # Errors
    /// Chain errors.
    pub async fn newest(
        &self,
        patient: PatientAddr,
        limit: usize,
    ) -> Result<(Vec<AnchoredRecord>, u64), RecordError> {
        let ask = (limit + NEWEST_SLACK).min(PAGE);
        let answers = futures::future::join_all(
            self.nodes
                .iter()
                .map(|node| async move { self.client(node).newest(patient, ask).await }),
        )
        .await;
        let mut totals = Vec::new();
        let mut tally = Tally::new(patient);
        for (node, a) in self.nodes.iter().zip(answers) {
            match a {
                Ok(mut a) => {
                    totals.push(a.total);
                    // More than asked for is not looked at.
                    a.records.truncate(ask);
                    tally.add(a.records);
                }
                Err(e) => tracing::warn!("share node {} did not list: {e}", node.url),
            }
        }
        totals.sort_unstable_by(|a, b| b.cmp(a));
        let total = totals
            .get(usize::from(self.k).saturating_sub(1))
            .copied()
            .unwrap_or(0);
        let mut out = tally.agreed(&self.chain, self.k).await?;
        out.sort_by_key(|r| std::cmp::Reverse((r.stored_at, r.record.0)));
        out.truncate(limit);
        Ok((out, total))
    }
}

/// The records the nodes list, counted per node list as it comes: of them, those at least k
/// nodes name with the same leaf and root, each checked (its patient, its id from its leaf,
/// its proof) and its root anchored on chain. One node cannot make a record up, nor hide one
/// by naming it first under a root of its own, and fewer than k cannot be read. A record's
/// time is the lower median of the times the nodes that name it give: with three or more,
/// one lying node cannot move it out of the honest ones' range.
struct Tally {
    patient: PatientAddr,
    seen: HashMap<(B256, B256), (AnchoredRecord, Vec<u64>)>,
}

impl Tally {
    fn new(patient: PatientAddr) -> Self {
        Self {
            patient,
            seen: HashMap::new(),
        }
    }

    /// One node's list.
    fn add(&mut self, records: Vec<AnchoredRecord>) {
        let mut mine = std::collections::HashSet::new();
        for r in records {
            if r.proof.patient != self.patient
                || r.proof.record_id() != r.record
                || !r.proof.holds()
            {
                continue;
            }
            let key = (r.proof.leaf(), r.proof.root);
            if mine.insert(key) {
                let at = r.stored_at;
                self.seen.entry(key).or_insert((r, Vec::new())).1.push(at);
            }
        }
    }

    /// The records at least `k` nodes named, under roots the chain has anchored.
    async fn agreed(self, chain: &EhrChain, k: u8) -> Result<Vec<AnchoredRecord>, RecordError> {
        let mut roots = Roots::default();
        let mut out = Vec::new();
        for (_, (mut r, mut times)) in self.seen {
            if times.len() >= usize::from(k) && roots.anchored(chain, r.proof.root).await? {
                times.sort_unstable();
                r.stored_at = times[(times.len() - 1) / 2];
                out.push(r);
            }
        }
        Ok(out)
    }
}

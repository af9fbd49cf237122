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
pub(crate) const NODE_DEADLINE: Duration = Duration::from_secs(20);

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

/// How far apart two honest nodes' times for one record may be (each stores its share when
/// the deposit reaches it; an uploader gives each node 20 s): a page by time asks each node
/// for this much more than the cursor, and keeps only what every node's answer surely covers.
const NODE_SKEW_SECS: u64 = 30;

/// Where a listing by time goes on: the time and id of the last record of the page before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    /// The record's time (the lower median of the nodes' times).
    pub time: u64,
    /// Its id (breaks ties within a second).
    pub record: RecordId,
}

impl std::fmt::Display for ListCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.time, self.record)
    }
}

impl std::str::FromStr for ListCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a listing cursor (the `next` of a page)");
        let (time, record) = s.split_once('-').ok_or_else(bad)?;
        Ok(Self {
            time: time.parse().map_err(|_| bad())?,
            record: record.parse().map_err(|_| bad())?,
        })
    }
}

impl ListCursor {
    /// The cursor just past `r`.
    pub fn of(r: &AnchoredRecord) -> Self {
        Self {
            time: r.stored_at,
            record: r.record,
        }
    }
}

/// One page of a patient's records, newest first.
#[derive(Debug, Clone)]
pub struct RecordsPage {
    /// The records, newest first.
    pub records: Vec<AnchoredRecord>,
    /// About how many the patient has (as [`Directory::newest`]).
    pub total: u64,
    /// Where the next page starts; `None` after the last.
    pub next: Option<ListCursor>,
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

    /// Whether every share node answers that it holds no proof of `id` (a 404 each, whatever
    /// this reader's view of the chain): then no node can give the proof to another, and no
    /// reader can find the record. A node that answers anything else, or not at all, makes it
    /// `false`. ([`Self::locate`] also says "not found" when a node's proof is to a root this
    /// reader's chain view does not show anchored yet.)
    pub async fn held_nowhere(&self, id: RecordId) -> bool {
        let answers = futures::future::join_all(
            self.nodes
                .iter()
                .map(|node| async move { self.client(node).locate(id).await }),
        )
        .await;
        answers
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.status() == Some(404)))
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

impl Directory {
    /// A page of the patient's anchored records, newest first, from `before` on (the `next` of
    /// the page before; `None`: the newest), at most `limit` (up to [`PAGE`]).
    ///
    /// Each node is asked for its newest records stored up to [`NODE_SKEW_SECS`] after the
    /// cursor (a range of its time index). A record counts as in [`Self::newest`] (k nodes,
    /// proof, anchored root), and is kept when it comes before the cursor and, if a node's
    /// answer was cut off by the limit, is newer than that answer's oldest record by more than
    /// the skew: then every node's answer holds it, and a record left out now comes on a later
    /// page. Pages thus never skip a record the nodes agree on, as long as honest nodes stored
    /// it within the skew of each other and the same nodes answer every page. Where more than
    /// [`PAGE`] records of one patient fall within one skew, each node is asked exactly below
    /// the cursor instead, by its own time.
    ///
    /// Known limits: a record's time is the median of the nodes that answer, so a node that
    /// fails or comes back between two pages can move a record across the cursor (listed
    /// twice, or left out of the listing); below the cursor by each node's own time, a record
    /// whose copies straddle the cursor may be left out; a lying node can make pages short
    /// (one record) by claiming times that cut its answer off. [`Self::newest`] (the web
    /// pages) is not affected.
    ///
    /// # Errors
    /// [`RecordError::NotEnoughListings`] when fewer than k nodes answer; chain errors.
    pub async fn page(
        &self,
        patient: PatientAddr,
        before: Option<ListCursor>,
        limit: usize,
    ) -> Result<RecordsPage, RecordError> {
        let limit = limit.clamp(1, PAGE);
        in_rounds(
            limit,
            |ask, sure| self.page_asking(patient, before, limit, ask, sure),
            |p: &RecordsPage| !p.records.is_empty() || p.next.is_none(),
        )
        .await
    }

    async fn page_asking(
        &self,
        patient: PatientAddr,
        before: Option<ListCursor>,
        limit: usize,
        ask: usize,
        sure: bool,
    ) -> Result<RecordsPage, RecordError> {
        // Sure: up to the skew after the cursor, so every node's copy of a record before it
        // is in reach. Not sure (a window too dense for that): exactly below the cursor on
        // each node, which always goes on.
        let until = before.map(|c| {
            if sure {
                (c.time.saturating_add(NODE_SKEW_SECS), None)
            } else {
                (c.time, Some(c.record))
            }
        });
        let answers =
            futures::future::join_all(self.nodes.iter().map(|node| async move {
                self.client(node).newest_until(patient, ask, until).await
            }))
            .await;
        let mut totals = Vec::new();
        let mut tally = Tally::new(patient);
        // The oldest time a cut-off answer reached (the newest such, over the nodes).
        let mut covered_after: Option<u64> = None;
        let bound = until.map(|(u, _)| u);
        for (node, a) in self.nodes.iter().zip(answers) {
            match a {
                // An answer beyond what was asked (more records, or later than `until`) is a
                // faulty node's: it does not count, nor does it bound what the page covers.
                Ok(a)
                    if a.records.len() > ask
                        || a.records
                            .iter()
                            .any(|r| bound.is_some_and(|u| r.stored_at > u)) =>
                {
                    tracing::warn!("share node {} listed beyond what was asked", node.url);
                }
                Ok(a) => {
                    totals.push(a.total);
                    if a.records.len() == ask {
                        let oldest = a.records.iter().map(|r| r.stored_at).min().unwrap_or(0);
                        covered_after = Some(covered_after.map_or(oldest, |c| c.max(oldest)));
                    }
                    tally.add(a.records);
                }
                Err(e) => tracing::warn!("share node {} did not list: {e}", node.url),
            }
        }
        if totals.len() < usize::from(self.k) {
            return Err(RecordError::NotEnoughListings {
                answered: totals.len(),
                needed: usize::from(self.k),
            });
        }
        totals.sort_unstable_by(|a, b| b.cmp(a));
        let total = totals
            .get(usize::from(self.k).saturating_sub(1))
            .copied()
            .unwrap_or(0);
        let agreed = tally.agreed(&self.chain, self.k).await?;
        let (out, next) = select(
            agreed,
            |r| (r.stored_at, r.record),
            before,
            covered_after,
            sure,
            limit,
        );
        Ok(RecordsPage {
            records: out,
            total,
            next,
        })
    }
}

/// A page in up to three rounds of asking the nodes (`round(ask, sure)`): for a little more
/// than `limit` each; when that surely covered nothing while more is there (`done` is false),
/// for as much as a node gives; when that did not either (more than [`PAGE`] records within
/// one skew), exactly below the cursor, which always goes on.
async fn in_rounds<P, E, F, Fut>(
    limit: usize,
    mut round: F,
    done: impl Fn(&P) -> bool,
) -> Result<P, E>
where
    F: FnMut(usize, bool) -> Fut,
    Fut: std::future::Future<Output = Result<P, E>>,
{
    let first = (limit + NEWEST_SLACK * 2).min(PAGE);
    let page = round(first, true).await?;
    if done(&page) {
        return Ok(page);
    }
    if first < PAGE {
        let page = round(PAGE, true).await?;
        if done(&page) {
            return Ok(page);
        }
    }
    tracing::warn!("listing: more than {PAGE} records within {NODE_SKEW_SECS} s");
    round(PAGE, false).await
}

/// A page from the records the nodes agree on (`agreed`, each keyed by its time and id):
/// those before `before`, newest first, at most `limit`; when some node's answer was cut off
/// at `covered_after` (its oldest time) and `sure`, only those newer than that by more than
/// the skew. Also where the next page starts: `None` when no node had more and nothing was
/// left out; `Some` with nothing on the page when nothing was surely covered (the caller then
/// asks for more).
fn select<T>(
    agreed: Vec<T>,
    key: impl Fn(&T) -> (u64, RecordId),
    before: Option<ListCursor>,
    covered_after: Option<u64>,
    sure: bool,
    limit: usize,
) -> (Vec<T>, Option<ListCursor>) {
    let order = |r: &T| {
        let (t, id) = key(r);
        (t, id.0)
    };
    let mut out: Vec<T> = agreed
        .into_iter()
        .filter(|r| before.is_none_or(|c| order(r) < (c.time, c.record.0)))
        .collect();
    let found = out.len();
    if let (Some(after), true) = (covered_after, sure) {
        out.retain(|r| key(r).0 > after.saturating_add(NODE_SKEW_SECS));
    }
    // Some node had more than it gave, or more than `limit` are left: older records follow.
    let more = covered_after.is_some() || out.len() > limit;
    out.sort_by_key(|r| std::cmp::Reverse(order(r)));
    out.truncate(limit);
    // An empty page goes on only while a round may still ask for more (`sure`); after the last
    // round it ends the listing, whatever a node claims to hold.
    let next = if more && (found > 0 || sure) {
        Some(out.last().map_or_else(
            || {
                before.unwrap_or(ListCursor {
                    time: u64::MAX,
                    record: RecordId(B256::repeat_byte(0xff)),
                })
            },
            |r| {
                let (time, record) = key(r);
                ListCursor { time, record }
            },
        ))
    } else {
        None
    };
    (out, next)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let c = ListCursor {
            time: 1_795_785_116,
            record: RecordId(B256::repeat_byte(0xab)),
        };
        assert_eq!(c.to_string().parse::<ListCursor>(), Ok(c));
        assert!("12".parse::<ListCursor>().is_err());
        assert!("x-0xab".parse::<ListCursor>().is_err());
        assert!("12-0xzz".parse::<ListCursor>().is_err());
    }

    /// Nodes as lists of (time stored there, record): what `newest_until` answers, and the
    /// pages `in_rounds` and `select` make of the answers (a record counts when `k` nodes
    /// list it, at the lower median of their times).
    struct Nodes {
        held: Vec<Vec<(u64, RecordId)>>,
        k: usize,
    }

    type Page = (Vec<(u64, RecordId)>, Option<ListCursor>);

    impl Nodes {
        fn answer(
            &self,
            node: usize,
            ask: usize,
            until: Option<(u64, Option<RecordId>)>,
        ) -> Vec<(u64, RecordId)> {
            let mut v: Vec<(u64, RecordId)> = self.held[node]
                .iter()
                .copied()
                .filter(|(t, id)| match until {
                    None => true,
                    Some((u, None)) => *t <= u,
                    Some((u, Some(b))) => (*t, id.0) < (u, b.0),
                })
                .collect();
            v.sort_by_key(|(t, id)| Reverse((*t, id.0)));
            v.truncate(ask);
            v
        }

        fn round(&self, before: Option<ListCursor>, limit: usize, ask: usize, sure: bool) -> Page {
            let until = before.map(|c| {
                if sure {
                    (c.time + NODE_SKEW_SECS, None)
                } else {
                    (c.time, Some(c.record))
                }
            });
            let mut seen: HashMap<RecordId, Vec<u64>> = HashMap::new();
            let mut covered_after: Option<u64> = None;
            for node in 0..self.held.len() {
                let a = self.answer(node, ask, until);
                if a.len() == ask {
                    let oldest = a.iter().map(|r| r.0).min().unwrap_or(0);
                    covered_after = Some(covered_after.map_or(oldest, |c| c.max(oldest)));
                }
                for (t, id) in a {
                    seen.entry(id).or_default().push(t);
                }
            }
            let agreed = seen
                .into_iter()
                .filter(|(_, ts)| ts.len() >= self.k)
                .map(|(id, mut ts)| {
                    ts.sort_unstable();
                    (ts[(ts.len() - 1) / 2], id)
                })
                .collect();
            select(agreed, |r| *r, before, covered_after, sure, limit)
        }

        /// Every page from the newest on: the records in the order listed.
        fn list(&self, limit: usize) -> Vec<(u64, RecordId)> {
            let mut out = Vec::new();
            let mut before = None;
            for _ in 0..10_000 {
                let page: Page = futures::executor::block_on(in_rounds(
                    limit,
                    |ask, sure| async move {
                        Ok::<_, std::convert::Infallible>(self.round(before, limit, ask, sure))
                    },
                    |p: &Page| !p.0.is_empty() || p.1.is_none(),
                ))
                .unwrap();
                assert!(page.0.len() <= limit);
                out.extend(page.0);
                match page.1 {
                    Some(next) => before = Some(next),
                    None => return out,
                }
            }
            panic!("the listing never ended");
        }
    }

    fn id(i: u64) -> RecordId {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
        RecordId(B256::from(b))
    }

    /// `count` records, `per_second` a second, each stored by three nodes up to `2 * jitter`
    /// seconds apart (one node missed every tenth record); every record listed once, newest
    /// first, at each page size of `limits`.
    fn lists_each_record_once(count: u64, per_second: u64, jitter: u64, limits: &[usize]) {
        let mut held = vec![Vec::new(); 3];
        let mut expect = Vec::new();
        for i in 0..count {
            let base = 1_000_000 + i / per_second;
            let mut times = Vec::new();
            for (node, list) in held.iter_mut().enumerate() {
                if node == 2 && i % 10 == 0 {
                    continue;
                }
                let spread = (i * 7 + node as u64 * 13) % (2 * jitter + 1);
                let t = base + spread - jitter;
                times.push(t);
                list.push((t, id(i)));
            }
            times.sort_unstable();
            expect.push((times[(times.len() - 1) / 2], id(i)));
        }
        expect.sort_by_key(|(t, id)| Reverse((*t, id.0)));
        let nodes = Nodes { held, k: 2 };
        for &limit in limits {
            assert_eq!(
                nodes.list(limit),
                expect,
                "{count} records, {per_second}/s, page of {limit}"
            );
        }
    }

    #[test]
    fn pages_by_time_list_each_record_once_newest_first() {
        lists_each_record_once(1_200, 2, 12, &[7, 50, 200, 500]);
        lists_each_record_once(300, 1, 12, &[1, 3]);
    }

    /// More than a node's page within one skew (1,100 records in 11 s): each node is asked
    /// exactly below the cursor, and the listing still ends with every record once.
    #[test]
    fn a_window_denser_than_a_page_still_lists_every_record() {
        lists_each_record_once(1_100, 100, 0, &[20, 500]);
    }
}

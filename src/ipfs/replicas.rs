//! Each record's ciphertext on `r` of a deployment's Kubo peers, read from any of them.
//!
//! IPFS Cluster would do this, but it cannot be built here; Kubo's own networking does the
//! copying instead. The peers form a private network (a swarm key, no public bootstrap,
//! `Peering` between them), an upload is added on one peer and pinned by CID on `r - 1`
//! others, which fetch the blocks from it over bitswap. So the uploader streams the ciphertext
//! once, whatever `r` is.
//!
//! Pins carry names, and the names are how the rest of the system finds its records
//! (`ehr-record:<id>` for a ciphertext, a marker named `ehr-upload:...` for uploads not
//! finished; see [`super::markers`] and `records::sweeper`). Every peer that holds a replica
//! also holds the upload's marker, so each peer's own sweep can finish or collect what an
//! interrupted upload left on it.
//!
//! [`Replicas::repair`] brings records back to `r` copies after a peer was lost or replaced.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use futures::future::join_all;

use super::markers::{Marker, pending_on};
use super::{IpfsError, KuboClient};

/// How long a peer may take to fetch and pin a replica over bitswap.
const PIN_WAIT: Duration = Duration::from_secs(600);
/// How long a read waits for a peer to find content it does not hold locally.
const PEER_READ_WAIT: Duration = Duration::from_secs(30);

/// Prefix of the pin of a record's ciphertext (see `records::sweeper`).
const STORED: &str = "ehr-record:";

/// Where a record's copies start among the peers: its id's first 8 bytes (ids are hashes, so
/// records spread evenly). Uploads place copies, and repairs restore them, from there.
pub fn spread(record: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    let n = record.len().min(8);
    first[..n].copy_from_slice(&record[..n]);
    u64::from_be_bytes(first)
}

/// The spread of the record named by a ciphertext pin (`ehr-record:0x<id>`), if it parses.
fn spread_of_pin(name: &str) -> u64 {
    let id = name.strip_prefix(STORED).unwrap_or_default();
    hex::decode(id.trim_start_matches("0x")).map_or(0, |b| spread(&b))
}

/// The Kubo peers a deployment stores ciphertext on, and on how many each record is pinned.
#[derive(Debug, Clone)]
pub struct Replicas {
    peers: Vec<KuboClient>,
    replication: usize,
    /// When each peer last failed to take a marker: such a peer is tried last for a while, so
    /// a host that went away costs one connect timeout, not one per upload.
    failed_at: std::sync::Arc<std::sync::Mutex<Vec<Option<std::time::Instant>>>>,
}

/// How long a peer that failed is tried after the others.
const AVOID_FOR: Duration = Duration::from_secs(30);

impl From<KuboClient> for Replicas {
    /// One peer, one copy: the single-node setup of `ehr dev`.
    fn from(node: KuboClient) -> Self {
        Self {
            peers: vec![node],
            replication: 1,
            failed_at: std::sync::Arc::new(std::sync::Mutex::new(vec![None])),
        }
    }
}

/// Where an upload's marker (and so its ciphertext) went: indices into the peers.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// The marker's CID (the same on every peer: same bytes, same settings).
    pub marker: String,
    /// Peers holding the marker, the first being where the ciphertext is added.
    pub peers: Vec<usize>,
}

/// What [`Replicas::repair`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepairReport {
    /// Peers that answered.
    pub peers_up: usize,
    /// API URLs of the peers that did not.
    pub peers_down: Vec<String>,
    /// Distinct record ciphertexts found pinned.
    pub records: usize,
    /// Of those, with fewer than `r` copies on the peers that answered.
    pub under_replicated: usize,
    /// New copies pinned.
    pub pinned: usize,
    /// Copies that could not be made (each with its peer and reason in the log).
    pub failed: usize,
    /// Records skipped because their upload is not finished (the sweeper owns them).
    pub pending: usize,
}

impl Replicas {
    /// `peers`, each record pinned on `replication` of them.
    ///
    /// # Errors
    /// [`IpfsError::Replication`] when `replication` is 0 or more than the peers.
    pub fn new(peers: Vec<KuboClient>, replication: usize) -> Result<Self, IpfsError> {
        if replication == 0 || replication > peers.len() {
            return Err(IpfsError::Replication {
                replication,
                peers: peers.len(),
            });
        }
        Ok(Self {
            failed_at: std::sync::Arc::new(std::sync::Mutex::new(vec![None; peers.len()])),
            peers,
            replication,
        })
    }

    /// The peers, in configured order (`ipfs.api_url` first).
    pub fn peers(&self) -> &[KuboClient] {
        &self.peers
    }

    /// Copies kept of each record.
    pub fn replication(&self) -> usize {
        self.replication
    }

    /// Each peer's version, or why it does not answer, in the peers' order.
    pub async fn versions(&self) -> Vec<Result<super::KuboVersion, IpfsError>> {
        join_all(self.peers.iter().map(KuboClient::version)).await
    }

    /// Pins an upload's `marker` on `r` peers, trying them in turn from peer `spread mod n` on
    /// (a record id's bits, so copies spread evenly over the peers); those peers will hold the
    /// ciphertext.
    ///
    /// # Errors
    /// [`IpfsError::NotEnoughPeers`] when fewer than `r` took it (the markers that were pinned
    /// are left for the sweeper, which collects them), or the only peer's own error.
    pub async fn place(&self, marker: &Marker, spread: u64) -> Result<Placement, IpfsError> {
        let mut placed = Placement::default();
        let mut last = None;
        // The record's turn order, peers that failed lately moved to the end.
        let mut order: Vec<usize> = self.turns(spread).collect();
        let avoided = self.lately_failed();
        order.sort_by_key(|i| avoided.contains(i));
        for i in order {
            if placed.peers.len() == self.replication {
                break;
            }
            match self.add_marker(i, marker).await {
                Ok(cid) => {
                    placed.marker = cid;
                    placed.peers.push(i);
                }
                Err(e) => {
                    tracing::warn!(
                        "IPFS peer {} refused a marker: {e}",
                        self.peers[i].base_url()
                    );
                    last = Some(e);
                }
            }
        }
        if placed.peers.len() == self.replication {
            return Ok(placed);
        }
        match last {
            Some(e) if self.peers.len() == 1 => Err(e),
            _ => Err(IpfsError::NotEnoughPeers {
                needed: self.replication,
                reached: placed.peers.len(),
            }),
        }
    }

    /// The peer a record of this `spread` starts its copies at: uploads with the same start
    /// go to the same peers (while none fails), so they can share a marker.
    pub fn start_of(&self, spread: u64) -> usize {
        // `n` is at least 1 (`new` and `From` make sure), and fits in u64.
        usize::try_from(spread % self.peers.len() as u64).unwrap_or(0)
    }

    /// Every peer once, from `spread mod n` on.
    fn turns(&self, spread: u64) -> impl Iterator<Item = usize> + use<> {
        let n = self.peers.len();
        let start = self.start_of(spread);
        (0..n).map(move |j| (start + j) % n)
    }

    async fn add_marker(&self, peer: usize, marker: &Marker) -> Result<String, IpfsError> {
        let r = self.peers[peer]
            .add_bytes_named(marker.content.clone(), &marker.name)
            .await;
        if let Ok(mut failed) = self.failed_at.lock() {
            failed[peer] = r.is_err().then(std::time::Instant::now);
        }
        r
    }

    /// Peers that failed to take a marker within [`AVOID_FOR`].
    fn lately_failed(&self) -> Vec<usize> {
        self.failed_at.lock().map_or_else(
            |_| Vec::new(),
            |failed| {
                failed
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.is_some_and(|t| t.elapsed() < AVOID_FOR))
                    .map(|(i, _)| i)
                    .collect()
            },
        )
    }

    /// Adds `body` on the placement's first peer under the pin name `name`, then pins it by
    /// CID on the others (which fetch it over bitswap). A peer that fails is replaced by one
    /// outside the placement, which gets the placement's `marker` first.
    ///
    /// # Errors
    /// The first peer's error, or [`IpfsError::NotEnoughPeers`] when fewer than `r` peers pin
    /// it; then the copies made are unpinned (markers stay for the sweeper).
    pub async fn add_replicated<S>(
        &self,
        placed: &mut Placement,
        body: S,
        name: &str,
        marker: &Marker,
    ) -> Result<String, IpfsError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let first = *placed.peers.first().ok_or(IpfsError::NotEnoughPeers {
            needed: self.replication,
            reached: 0,
        })?;
        let cid = self.peers[first].add_stream_named(body, name).await?;
        let others: Vec<usize> = placed.peers[1..].to_vec();
        let pinned = join_all(
            others
                .iter()
                .map(|&i| self.peers[i].pin_add(&cid, name, PIN_WAIT)),
        )
        .await;
        let mut holders = vec![first];
        for (&i, r) in others.iter().zip(pinned) {
            match r {
                Ok(()) => holders.push(i),
                Err(e) => tracing::warn!(
                    "IPFS peer {} could not pin {cid}: {e}",
                    self.peers[i].base_url()
                ),
            }
        }
        // Stand-ins for the peers that failed, from those not tried yet.
        let tried = placed.peers.clone();
        for i in self.turns(first as u64) {
            if holders.len() == self.replication {
                break;
            }
            if tried.contains(&i) {
                continue;
            }
            let copied = match self.add_marker(i, marker).await {
                Ok(_) => {
                    // Only a peer holding the marker joins the placement (whose markers the
                    // upload unpins at the end).
                    placed.peers.push(i);
                    self.peers[i].pin_add(&cid, name, PIN_WAIT).await
                }
                Err(e) => Err(e),
            };
            match copied {
                Ok(()) => holders.push(i),
                Err(e) => tracing::warn!(
                    "IPFS peer {} could not stand in for {cid}: {e}",
                    self.peers[i].base_url()
                ),
            }
        }
        if holders.len() < self.replication {
            self.unpin_on(&cid, &holders).await;
            return Err(IpfsError::NotEnoughPeers {
                needed: self.replication,
                reached: holders.len(),
            });
        }
        Ok(cid)
    }

    /// Unpins `cid` on the peers `on`; `Err` with the first failure (the others are still
    /// tried).
    ///
    /// # Errors
    /// When a peer cannot unpin.
    pub async fn unpin(&self, cid: &str, on: &[usize]) -> Result<(), IpfsError> {
        let results = join_all(on.iter().map(|&i| self.peers[i].unpin(cid))).await;
        results.into_iter().collect()
    }

    async fn unpin_on(&self, cid: &str, on: &[usize]) {
        if let Err(e) = self.unpin(cid, on).await {
            tracing::warn!("could not unpin {cid} everywhere ({e}): the sweeper will");
        }
    }

    /// Streams `cid` from the first peer that pins it (a recursive pin means every block is
    /// there: a peer holding only some blocks, from a copy cut short, would fail mid-stream);
    /// failing that, from the first that holds it; when every peer that answers lacks it,
    /// the first of them asks the private network for it (bitswap). That last read must end
    /// within 30 s (Kubo's `timeout` bounds the whole command).
    ///
    /// # Errors
    /// [`IpfsError::NotFound`] when no peer has it, or the last peer's error when none
    /// answers.
    pub async fn cat_stream(
        &self,
        cid: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, IpfsError>> + use<>, IpfsError> {
        // One peer: nobody else to choose, or to fetch from; no question before the read.
        if let [only] = self.peers.as_slice() {
            return only
                .cat_stream(cid)
                .await
                .map(|s| futures::future::Either::Left(futures::future::Either::Right(s)));
        }
        // Asked all at once; the first peer that pins it serves the read, without waiting for
        // a peer whose host is gone.
        let mut asks: futures::stream::FuturesUnordered<_> = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| async move { (i, p.is_pinned(cid).await) })
            .collect();
        let mut pinned: Vec<Result<bool, ()>> = vec![Err(()); self.peers.len()];
        while let Some((i, answer)) = futures::StreamExt::next(&mut asks).await {
            if matches!(answer, Ok(true))
                && let Ok(s) = self.peers[i].cat_stream(cid).await
            {
                return Ok(futures::future::Either::Left(
                    futures::future::Either::Left(s),
                ));
            }
            pinned[i] = answer.map_err(|_| ());
        }
        let mut reachable = None;
        let mut last = None;
        for (i, peer) in self.peers.iter().enumerate() {
            if pinned[i].is_err() {
                // Down: do not wait on it twice.
                continue;
            }
            match peer.cat_stream(cid).await {
                Ok(s) => {
                    return Ok(futures::future::Either::Left(
                        futures::future::Either::Right(s),
                    ));
                }
                Err(e @ IpfsError::NotFound { .. }) => {
                    reachable.get_or_insert(i);
                    last = Some(e);
                }
                Err(e) => {
                    tracing::warn!("IPFS peer {} failed a read: {e}", peer.base_url());
                    last = Some(e);
                }
            }
        }
        match (reachable, last) {
            // One peer only: it already said it has no such content, and has no one to ask.
            (Some(i), _) if self.peers.len() > 1 => self.peers[i]
                .cat_stream_from_peers(cid, PEER_READ_WAIT)
                .await
                .map(futures::future::Either::Right),
            (_, Some(e)) => Err(e),
            (_, None) => Err(IpfsError::NotFound {
                cid: cid.to_owned(),
            }),
        }
    }

    /// Brings every record with fewer than `r` copies on the peers that answer back to `r`,
    /// pinning it on peers that lack it (they fetch it from a holder over bitswap). Records
    /// whose upload is still pending are left to the sweeper.
    ///
    /// # Errors
    /// [`IpfsError::NotEnoughPeers`] when fewer than `r` peers answer: nothing can be
    /// repaired then.
    pub async fn repair(&self) -> Result<RepairReport, IpfsError> {
        let mut report = RepairReport::default();
        let mut up = Vec::new();
        // cid -> (pin name, peers holding it)
        let mut copies: BTreeMap<String, (String, Vec<usize>)> = BTreeMap::new();
        let mut pending: Vec<String> = Vec::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let listed = match peer.pins_named(STORED).await {
                Ok(stored) => match pending_on(peer).await {
                    Ok(markers) => Ok((stored, markers)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match listed {
                Ok((stored, markers)) => {
                    up.push(i);
                    for (cid, name) in stored.into_iter().filter(|(_, n)| n.starts_with(STORED)) {
                        copies.entry(cid).or_insert((name, Vec::new())).1.push(i);
                    }
                    pending.extend(markers.into_iter().flat_map(|m| m.records));
                }
                Err(e) => {
                    tracing::warn!("IPFS peer {} is down: {e}", peer.base_url());
                    report.peers_down.push(peer.base_url().to_owned());
                }
            }
        }
        // Markers listed again after the copies: an upload that failed (or was collected)
        // between the two listings must not be revived as a record without a marker.
        for &i in &up {
            if let Ok(markers) = pending_on(&self.peers[i]).await {
                pending.extend(markers.into_iter().flat_map(|m| m.records));
            }
        }
        report.peers_up = up.len();
        report.records = copies.len();
        if up.len() < self.replication {
            return Err(IpfsError::NotEnoughPeers {
                needed: self.replication,
                reached: up.len(),
            });
        }
        for (cid, (name, holders)) in &copies {
            if holders.len() >= self.replication {
                continue;
            }
            report.under_replicated += 1;
            let record = name.strip_prefix(STORED).unwrap_or_default();
            if pending.iter().any(|p| p == record) {
                report.pending += 1;
                continue;
            }
            // The record's own peers first (where its upload put the copies), so a replaced
            // peer gets back what it held.
            let wanted = self.replication - holders.len();
            let targets: Vec<usize> = self
                .turns(spread_of_pin(name))
                .filter(|i| up.contains(i) && !holders.contains(i))
                .take(wanted)
                .collect();
            for r in join_all(
                targets
                    .iter()
                    .map(|&i| self.peers[i].pin_add(cid, name, PIN_WAIT)),
            )
            .await
            {
                match r {
                    Ok(()) => report.pinned += 1,
                    Err(e) => {
                        tracing::warn!("repair: could not copy {cid} ({name}): {e}");
                        report.failed += 1;
                    }
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_must_fit_the_peers() {
        let peers = || vec![KuboClient::new("http://127.0.0.1:9"); 3];
        assert!(Replicas::new(peers(), 3).is_ok());
        assert!(matches!(
            Replicas::new(peers(), 4),
            Err(IpfsError::Replication {
                replication: 4,
                peers: 3
            })
        ));
        assert!(Replicas::new(peers(), 0).is_err());
        let one: Replicas = KuboClient::new("http://127.0.0.1:9").into();
        assert_eq!((one.peers().len(), one.replication()), (1, 1));
    }
}

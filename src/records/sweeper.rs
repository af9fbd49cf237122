//! Finishing or collecting the uploads a crash interrupted.
//!
//! An upload first pins a marker (shared with the uploads that start with it: see
//! `markers.rs` and [`crate::ipfs::markers`]), then its ciphertext under the name
//! `ehr-record:<record>`; the marker is unpinned once every upload it names is over and every
//! share node holds each one's proof. The ciphertext's pin is never renamed: Kubo renames a pin
//! by removing it and pinning again, and a Kubo stopped between the two steps loses the pin
//! (the crash harness found 5 of 990 records so). A gateway killed mid-upload (or a share node
//! down while the proof went round) leaves a marker, which this sweeper settles record by
//! record:
//!
//! - a node already holds the proof (the record was anchored): the proof is public, so it is
//!   given to every node still waiting for it; the record is then as readable, and as widely
//!   shared, as if nothing had happened;
//! - every node answers that it holds no anchored record of that id, and the marker is older
//!   than the orphan TTL, which is longer than the nodes' own TTL for unanchored deposits: they
//!   have deleted the shares, nobody can ever read the record, so its ciphertext is unpinned;
//! - otherwise (a node does not answer, or the upload may still be running) it waits.
//!
//! The marker is unpinned once each of its records is settled one way or the other; while
//! some wait, it is replaced by one naming only those (so one upload cut off does not keep
//! its finished neighbours counted as pending).
//!
//! A minority of lying nodes cannot make it drop a record: unpinning needs all of them to say
//! the record is not anchored, and a record acknowledged to its uploader is anchored at k.

use std::time::Duration;

use futures::future::join_all;

use super::client::ShareNodeRef;
use crate::chain::RecordId;
use crate::ipfs::markers::{Marker, pending_on};
use crate::ipfs::{IpfsError, KuboClient, Replicas};
use crate::share_node::{AnchorBody, NodeClient};

/// Prefix of the pin of a record's ciphertext.
const STORED: &str = "ehr-record:";

/// The pin name of a record's ciphertext.
pub(super) fn stored_name(id: RecordId) -> String {
    format!("{STORED}{id}")
}

/// How often the sweeper runs and when an unfinished upload counts as abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepSettings {
    /// How old a pending upload nobody anchored must be before its ciphertext is unpinned.
    /// Above the share nodes' TTL for unanchored deposits: by then they have deleted the
    /// shares, so an upload still running late (a slow anchor) finds no node to take its
    /// proof and can never make the record readable without the ciphertext.
    pub orphan_ttl: Duration,
    /// Time between sweeps.
    pub every: Duration,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self::for_ttl(Duration::from_secs(4200))
    }
}

impl SweepSettings {
    /// Sweeps often enough that an orphan lives at most about 1.3 times `orphan_ttl`.
    pub fn for_ttl(orphan_ttl: Duration) -> Self {
        Self {
            orphan_ttl,
            every: (orphan_ttl / 3).clamp(Duration::from_secs(2), Duration::from_secs(60)),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Uploads whose proof now sits at every node (no marker names them any more).
    pub finished: usize,
    /// Abandoned uploads whose ciphertext was unpinned.
    pub collected: usize,
    /// Uploads left for a later sweep.
    pub waiting: usize,
}

/// Settles interrupted uploads; see the module documentation.
#[derive(Debug, Clone)]
pub struct UploadSweeper {
    ipfs: Replicas,
    nodes: Vec<ShareNodeRef>,
    http: reqwest::Client,
    settings: SweepSettings,
}

enum Settled {
    /// Every node holds the proof.
    Finished,
    /// Some node holds it; not every other one took it yet.
    Spreading,
    /// No node holds it; `all_answered`: every node said so.
    NotAnchored { all_answered: bool },
}

impl UploadSweeper {
    /// A sweeper of the pending pins on each of `ipfs`'s peers, over `nodes`.
    pub fn new(
        ipfs: Replicas,
        nodes: Vec<ShareNodeRef>,
        http: reqwest::Client,
        settings: SweepSettings,
    ) -> Self {
        Self {
            ipfs,
            nodes,
            http,
            settings,
        }
    }

    /// Runs a sweep every `settings.every` until the runtime stops.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.settings.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.sweep().await {
                    Ok(r) if r.finished + r.collected > 0 => tracing::info!(
                        finished = r.finished,
                        collected = r.collected,
                        waiting = r.waiting,
                        "interrupted uploads settled"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("upload sweeper: {e}"),
                }
            }
        })
    }

    /// One pass over the markers of unfinished uploads, on every IPFS peer. Each peer holds
    /// the markers of the uploads it holds a copy of, so each is settled on its own; a peer
    /// that is down is skipped until the next pass.
    ///
    /// # Errors
    /// When no peer could be swept (the last peer's error).
    pub async fn sweep(&self) -> Result<SweepReport, IpfsError> {
        let mut report = SweepReport::default();
        let mut last = None;
        let mut swept = 0;
        for peer in self.ipfs.peers() {
            match self.sweep_peer(peer, &mut report).await {
                Ok(()) => swept += 1,
                Err(e) => {
                    tracing::warn!("upload sweeper: IPFS peer {}: {e}", peer.base_url());
                    last = Some(e);
                }
            }
        }
        match last {
            Some(e) if swept == 0 => Err(e),
            _ => Ok(report),
        }
    }

    async fn sweep_peer(
        &self,
        ipfs: &KuboClient,
        report: &mut SweepReport,
    ) -> Result<(), IpfsError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for marker in pending_on(ipfs).await? {
            let old = now.saturating_sub(marker.created) >= self.settings.orphan_ttl.as_secs();
            let (mut finished, mut collected) = (0, 0);
            let mut waiting = Vec::new();
            for record in &marker.records {
                let Ok(id) = record.parse::<RecordId>() else {
                    tracing::warn!("marker {} names {record:?}, not a record id", marker.cid);
                    continue;
                };
                match self.settle(id).await {
                    Settled::Finished => finished += 1,
                    Settled::NotAnchored { all_answered: true } if old => {
                        // The ciphertext before the marker: a crash in between leaves the
                        // marker, and the next pass finds nothing more to unpin.
                        let stored = stored_name(id);
                        for (cid, n) in ipfs.pins_named(&stored).await? {
                            if n == stored {
                                ipfs.unpin(&cid).await?;
                            }
                        }
                        collected += 1;
                    }
                    _ => waiting.push(record.clone()),
                }
            }
            if waiting.is_empty() {
                ipfs.unpin(&marker.cid).await?;
            } else if finished + collected > 0 {
                // A marker naming only the records still waiting, then this one unpinned: the
                // settled ones stop counting as pending (the replica repair copies them again)
                // and are not asked about on every pass. A crash in between leaves both,
                // and the next pass settles the same records again.
                let rest = Marker::group(&waiting, marker.created);
                ipfs.add_bytes_named(rest.content, &rest.name).await?;
                ipfs.unpin(&marker.cid).await?;
            }
            report.finished += finished;
            report.collected += collected;
            report.waiting += waiting.len();
        }
        Ok(())
    }

    async fn settle(&self, id: RecordId) -> Settled {
        let clients: Vec<NodeClient> = self
            .nodes
            .iter()
            .map(|n| NodeClient::new(self.http.clone(), n.clone()))
            .collect();
        let located = join_all(clients.iter().map(|c| c.locate(id))).await;
        let Some(found) = located.iter().find_map(|r| r.as_ref().ok()) else {
            let all_answered = located
                .iter()
                .all(|r| r.as_ref().is_err_and(|e| e.status() == Some(404)));
            return Settled::NotAnchored { all_answered };
        };
        // The proof is public and each node checks it against its own deposit and the chain,
        // so a proof from a lying node is refused, never stored.
        let body = AnchorBody {
            root: found.proof.root,
            proof: found.proof.proof.clone(),
        };
        let missing = clients
            .iter()
            .zip(&located)
            .filter(|(_, r)| r.is_err())
            .map(|(c, _)| c.present(id, &body));
        let mut finished = true;
        for r in join_all(missing).await {
            // 404: that node never got a share (it was down during the upload).
            if r.is_err_and(|e| e.status() != Some(404)) {
                finished = false;
            }
        }
        if finished {
            Settled::Finished
        } else {
            Settled::Spreading
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_often_enough_for_the_ttl() {
        assert_eq!(
            SweepSettings::for_ttl(Duration::from_secs(30)).every,
            Duration::from_secs(10)
        );
        assert_eq!(SweepSettings::default().every, Duration::from_secs(60));
        assert_eq!(
            SweepSettings::for_ttl(Duration::from_secs(1)).every,
            Duration::from_secs(2)
        );
    }
}

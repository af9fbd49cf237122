//! One marker for the uploads that start together (why: [`crate::ipfs::markers`]).
//!
//! Uploads whose copies go to the same peers form a lane. While a lane has a marker being
//! pinned, further uploads queue, and the next marker names them all (at most
//! [`PER_MARKER`]); a lone upload gets its marker at once, as before. Each upload holds a
//! [`Member`] of its group: the last one to finish unpins the marker. An upload that ends in a
//! state the sweeper must settle, or whose caller gave up (the member is dropped unsettled),
//! keeps the marker pinned; the sweeper then settles every record it names, the finished ones
//! included (for them it only sees that every node holds the proof).
//!
//! Lanes live per tokio runtime, like the share-node batchers (`coalesce.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::coalesce::{Coalescer, Sender, Unanswered};
use crate::chain::RecordId;
use crate::ipfs::markers::Marker;
use crate::ipfs::{IpfsError, Placement, Replicas};

/// Records one marker names at most.
const PER_MARKER: usize = 64;
/// Markers of one lane being pinned at once: while one is, the uploads that arrive queue for
/// the next (Kubo pins one at a time anyway).
const IN_FLIGHT: usize = 1;
/// How long an upload waits for its marker, from the moment it queues.
const MARKER_DEADLINE: Duration = Duration::from_secs(60);

impl Unanswered for IpfsError {
    fn stopped() -> Self {
        IpfsError::Api {
            call: "add",
            message: "the upload markers' task stopped".into(),
        }
    }

    fn timed_out() -> Self {
        IpfsError::Api {
            call: "add",
            message: format!("no upload marker pinned within {MARKER_DEADLINE:?}"),
        }
    }
}

/// A pinned marker and the uploads it stands for.
struct Group {
    ipfs: Replicas,
    marker: Marker,
    cid: String,
    state: Mutex<GroupState>,
}

struct GroupState {
    /// Members that have not finished.
    open: usize,
    /// A member left its record to the sweeper: the marker stays.
    keep: bool,
    /// Every peer the marker was pinned on (stand-ins included).
    peers: Vec<usize>,
}

/// One upload's share of a marker; see the module documentation.
pub(super) struct Member {
    group: Arc<Group>,
    placement: Placement,
    settled: bool,
}

impl Member {
    /// Where the upload's copies go, and the marker a stand-in peer gets.
    pub(super) fn parts(&mut self) -> (&mut Placement, &Marker) {
        (&mut self.placement, &self.group.marker)
    }

    /// The peers this upload's copies went to.
    pub(super) fn peers(&self) -> &[usize] {
        &self.placement.peers
    }

    /// The upload is over and left nothing to settle: the last member of the group to say so
    /// unpins the marker (unless one kept it).
    ///
    /// # Errors
    /// When the marker could not be unpinned (the sweeper will).
    pub(super) async fn finish(mut self) -> Result<(), IpfsError> {
        self.settled = true;
        let unpin = self.leave(false);
        match unpin {
            Some(peers) => self.group.ipfs.unpin(&self.group.cid, &peers).await,
            None => Ok(()),
        }
    }

    /// The upload leaves its record to the sweeper: the marker stays.
    pub(super) fn keep(mut self) {
        self.settled = true;
        self.leave(true);
    }

    /// Leaves the group; the peers to unpin the marker on when this was the last member and
    /// nobody kept it.
    fn leave(&self, keep: bool) -> Option<Vec<usize>> {
        let mut s = self
            .group
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in &self.placement.peers {
            if !s.peers.contains(p) {
                s.peers.push(*p);
            }
        }
        s.keep |= keep;
        s.open = s.open.saturating_sub(1);
        (s.open == 0 && !s.keep).then(|| s.peers.clone())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if !self.settled {
            self.leave(true);
        }
    }
}

type Lanes = Arc<Mutex<HashMap<String, Arc<Coalescer<RecordId, Member, IpfsError>>>>>;

static LANES: crate::per_runtime::PerRuntime<Lanes> = crate::per_runtime::PerRuntime::new();

/// Places the upload of `id`: a share of the marker of the uploads queued with it, pinned on
/// the peers its copies go to.
///
/// # Errors
/// As [`Replicas::place`], or when no marker was pinned within [`MARKER_DEADLINE`].
pub(super) async fn join(ipfs: &Replicas, id: RecordId) -> Result<Member, IpfsError> {
    let start = ipfs.start_of(crate::ipfs::spread(id.0.as_slice()));
    let lane = {
        let lanes = LANES.get(Lanes::default);
        let key = format!(
            "{}|{}|{start}",
            ipfs.peers()
                .iter()
                .map(crate::ipfs::KuboClient::base_url)
                .collect::<Vec<_>>()
                .join(","),
            ipfs.replication()
        );
        let mut map = lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(key)
            .or_insert_with(|| Arc::new(lane(ipfs.clone(), start)))
            .clone()
    };
    lane.call(id).await
}

/// The uploads whose copies start at peer `start`.
fn lane(ipfs: Replicas, start: usize) -> Coalescer<RecordId, Member, IpfsError> {
    let send: Sender<RecordId, Member, IpfsError> = Arc::new(move |ids: Vec<RecordId>| {
        let ipfs = ipfs.clone();
        Box::pin(async move {
            let names: Vec<String> = ids.iter().map(ToString::to_string).collect();
            let marker = Marker::group(&names, crate::clock::unix_now());
            let placement = ipfs.place(&marker, start as u64).await?;
            tracing::debug!(records = ids.len(), "upload marker pinned");
            let group = Arc::new(Group {
                ipfs,
                cid: placement.marker.clone(),
                marker,
                state: Mutex::new(GroupState {
                    open: ids.len(),
                    keep: false,
                    peers: placement.peers.clone(),
                }),
            });
            Ok(ids
                .iter()
                .map(|_| {
                    Ok(Member {
                        group: group.clone(),
                        placement: placement.clone(),
                        settled: false,
                    })
                })
                .collect())
        })
    });
    Coalescer::spawn(PER_MARKER, IN_FLIGHT, MARKER_DEADLINE, send)
}

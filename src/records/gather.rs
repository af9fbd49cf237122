//! Gathering a record's secret from the share nodes: ask k of them (healthy ones first, see
//! [`NodeHealth`]), and one more for each that fails, refuses or disagrees, and all the rest
//! when the first ones are slow (a hedge); group answers by (commitments, sealed block) since
//! honest nodes agree on both, stop at k shares of one group that recombine to the secret
//! their Feldman commitments commit to (verifying shares one by one only when they do not, to
//! name the bad ones), and name every node asked that failed or disagreed (waiting a short
//! grace for the slower ones, never for a hung one).
//!
//! Asking k rather than all n spares the nodes and the chain (each node asks `canRead`) two
//! fifths of the work of a 3-of-5 read; the hedge keeps a slow or hung node from costing more
//! than a few answer times.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::client::{NodeFailure, RecordError};
use super::node_health::{NodeHealth, Outcome};
use crate::chain::RecordId;
use crate::crypto::Recipient;
use crate::shamir::{Commitments, Secret, Share, combine};
use crate::share_node::{NodeClient, NodeError, ReleaseBody, ReleasedShare};

/// What a gathering yields.
pub(super) struct Gathered {
    /// The recombined secret.
    pub(super) secret: Secret,
    /// The sealed block the agreeing nodes hold.
    pub(super) sealed: Vec<u8>,
    /// Nodes that were unreachable, refused, or returned a bad or disagreeing share.
    pub(super) failures: Vec<NodeFailure>,
}

/// A node's share in a group, and whether it was verified alone against the commitments.
struct Member {
    node: String,
    share: Share,
    verified: bool,
}

/// Answers grouped by (commitments hex, sealed block hex): the commitments' bytes and each
/// node's share.
type Groups = HashMap<(String, String), (Vec<u8>, Vec<Member>)>;

/// The threshold of commitments given as bytes (33 per point; [`parsed`] checks the length).
fn threshold_of(commitments: &[u8]) -> usize {
    commitments.len() / 33
}

/// Whether the first of `commitments` (compressed points) is `secret·G`.
///
/// Shares that all verify against the commitments recombine to the committed secret, so k
/// shares that do not are not all of the committed polynomial: only then is each share
/// verified alone, to name the bad ones. Shares that do recombine to it may still hold errors
/// that cancel out, but they give the committed secret all the same, which is all a reader
/// needs of them. Making errors cancel takes two or more nodes in collusion that also know
/// which other nodes the reader asked (the recombination's weights depend on every index in
/// the quorum); the reader orders its healthy nodes at random, so colluders who guess wrong
/// fail the check and are both named. One blinded generator multiplication through
/// libsecp256k1, where verifying k shares with k256 took a decompression per commitment and a
/// generator multiplication per share (a seventh of a gateway's CPU per 100 KB read). False
/// for malformed commitments and for a zero secret (no point to compare; its first commitment
/// would be the identity, which a group's point check refuses).
fn commits_to(commitments: &[u8], secret: &Secret) -> bool {
    let Some(first) = commitments.get(..33) else {
        return false;
    };
    let bytes = zeroize::Zeroizing::new(secret.to_bytes());
    crate::crypto::public_compressed(&bytes).is_some_and(|p| p[..] == *first)
}

/// Opens the share a node sealed to this requester for this request; the rest of the answer is
/// public (proof, commitments) or sealed under the shared secret (the block).
fn open_share(
    mut released: ReleasedShare,
    body: &ReleaseBody,
    key: &Recipient,
) -> Result<ReleasedShare, String> {
    let r = &body.request;
    let aad = crate::share_node::share_aad(r.recordId, r.shareNode, r.nonce);
    let sealed =
        crate::strict_hex::decode(&released.share).map_err(|_| "share is not hex".to_owned())?;
    let plain = key
        .open(&aad, &sealed)
        .map_err(|e| format!("share not sealed to this requester and request: {e}"))?;
    released.share = crate::strict_hex::encode(plain);
    Ok(released)
}

/// The shortest and longest grace after the quorum.
const GRACE: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(250));

/// How a node that gave no share said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declined {
    /// A fault: unreachable, a server error, a share that does not open or verify.
    Fault,
    /// A refusal (4xx): the node judged the request.
    No,
    /// Too many requests (429): the node works, and is busy.
    Busy,
}

/// One node's answer: its URL, how long it took, and the share or why not.
struct Answer {
    node: String,
    took: Duration,
    share: Result<ReleasedShare, (String, Declined)>,
}

/// Asks one node.
async fn ask(id: RecordId, node: NodeClient, body: ReleaseBody, key: &Recipient) -> Answer {
    let t = Instant::now();
    let share = match node.release(id, &body).await {
        Ok(released) => open_share(released, &body, key).map_err(|e| (e, Declined::Fault)),
        Err(e) => {
            let how = match &e {
                NodeError::Refused { status: 429, .. } => Declined::Busy,
                NodeError::Refused { status, .. }
                    if (400..500).contains(status) && *status != 408 =>
                {
                    Declined::No
                }
                _ => Declined::Fault,
            };
            Err((e.to_string(), how))
        }
    };
    Answer {
        node: node.node().url.clone(),
        took: t.elapsed(),
        share,
    }
}

/// Parses a released share and its commitments' bytes: a whole number of 33-byte points.
/// Whether they are points is checked for a group's first answer, and whether the share is
/// one of theirs when k shares of the group are in ([`commits_to`]).
fn parsed(released: &ReleasedShare) -> Result<(Vec<u8>, Share), String> {
    let commitments = crate::strict_hex::decode(&released.commitments)
        .ok()
        .filter(|b| !b.is_empty() && b.len().is_multiple_of(33));
    let share = crate::strict_hex::decode(&released.share)
        .ok()
        .and_then(|b| Share::from_bytes(&b).ok());
    commitments
        .zip(share)
        .ok_or_else(|| "malformed share or commitments".to_owned())
}

/// Asks the nodes in `order` (first k, then as needed; `sign` makes each node's signed request
/// when it is asked) and returns the secret once `needed` shares of one group recombine to
/// the secret their commitments commit to ([`commits_to`]). Every
/// node asked is noted in `health`; a refusal counts against a node when the read succeeded
/// and `blame_refusals` (the access transaction is not so fresh that a node's chain view may
/// not hold it yet).
///
/// # Errors
/// [`RecordError::NotEnoughShares`] naming every node that failed, when no group can reach
/// `needed`; [`RecordError::Decrypt`] when verified shares do not recombine; `sign`'s errors.
pub(super) async fn gather(
    id: RecordId,
    order: Vec<NodeClient>,
    sign: impl Fn(&NodeClient) -> Result<ReleaseBody, RecordError>,
    needed: usize,
    key: &k256::SecretKey,
    health: &NodeHealth,
    blame_refusals: bool,
) -> Result<Gathered, RecordError> {
    let started = Instant::now();
    let key = &Recipient::new(key);
    let mut waiting = order.into_iter();
    let mut pending = FuturesUnordered::new();
    let mut asked: Vec<(String, Instant)> = Vec::new();
    let mut launch = |n: usize, pending: &mut FuturesUnordered<_>| -> Result<(), RecordError> {
        for node in waiting.by_ref().take(n) {
            let body = sign(&node)?;
            asked.push((node.node().url.clone(), Instant::now()));
            pending.push(ask(id, node, body, key));
        }
        Ok(())
    };
    launch(needed, &mut pending)?;
    let hedge = tokio::time::sleep(health.hedge_after());
    tokio::pin!(hedge);
    let mut hedged = false;
    let mut failures = Vec::new();
    let mut groups: Groups = HashMap::new();
    let mut answered: Vec<(String, Duration)> = Vec::new();
    let mut declined: Vec<(String, Declined)> = Vec::new();
    loop {
        // Ask more whenever the nodes asked and still out cannot make a group of k (of a
        // polynomial of the threshold asked for: no other can ever count).
        let best = largest(&groups, needed);
        if best + pending.len() < needed {
            launch(needed - best - pending.len(), &mut pending)?;
        }
        let a = tokio::select! {
            next = pending.next() => match next {
                Some(a) => a,
                None => break,
            },
            () = &mut hedge, if !hedged => {
                hedged = true;
                launch(usize::MAX, &mut pending)?;
                continue;
            }
        };
        let released = match a
            .share
            .and_then(|r| parsed(&r).map(|p| (r, p)).map_err(|e| (e, Declined::Fault)))
        {
            Ok(x) => x,
            Err((reason, how)) => {
                declined.push((a.node.clone(), how));
                failures.push(NodeFailure {
                    node: a.node,
                    reason,
                });
                continue;
            }
        };
        let (released, (commitments, share)) = released;
        let key = (released.commitments, released.sealed_block);
        // A group's first answer has its commitments checked as points (libsecp256k1, as a
        // node checks a deposit's); the group's other answers repeat the same bytes.
        if !groups.contains_key(&key) && Commitments::check_bytes(&commitments).is_err() {
            declined.push((a.node.clone(), Declined::Fault));
            failures.push(NodeFailure {
                node: a.node,
                reason: "malformed share or commitments".into(),
            });
            continue;
        }
        answered.push((a.node.clone(), a.took));
        let entry = groups
            .entry(key.clone())
            .or_insert_with(|| (commitments, Vec::new()));
        entry.1.push(Member {
            node: a.node,
            share,
            verified: false,
        });
        if entry.1.len() < needed || threshold_of(&entry.0) != needed {
            continue;
        }
        let shares: Vec<Share> = entry.1.iter().map(|m| m.share.clone()).collect();
        let secret = match combine(&shares, needed) {
            // The usual case: one multiplication vouches for all k.
            Ok(secret) if commits_to(&entry.0, &secret) => secret,
            _ => {
                // An index given twice, or not all of them shares of the committed
                // polynomial: verify each alone, keep one share per index, name the rest,
                // and ask on.
                entry.1 = sift(
                    id,
                    std::mem::take(&mut entry.1),
                    &entry.0,
                    &mut answered,
                    &mut declined,
                    &mut failures,
                );
                if entry.1.len() < needed {
                    continue;
                }
                // k shares that verify alone, each index once, recombine to the committed
                // secret, so this is not reached while groups' commitments are checked as
                // points (only a zero secret, whose commitment is the identity, would be).
                // Kept so that the per-share way stands on its own.
                let shares: Vec<Share> = entry.1.iter().map(|m| m.share.clone()).collect();
                combine(&shares, needed).map_err(|e| RecordError::Decrypt(id, e.to_string()))?
            }
        };
        let sealed = crate::strict_hex::decode(&key.1)
            .map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
        // Nodes in other groups disagree with k verified shares: name them.
        for (k2, (_, members)) in &groups {
            if *k2 != key {
                for Member { node: n, .. } in members {
                    tracing::error!(record = %id, node = %n, "share node returned commitments that disagree with the majority");
                    failures.push(NodeFailure {
                        node: n.clone(),
                        reason: "commitments disagree with the majority".into(),
                    });
                }
            }
        }
        // Give the nodes still out a moment, so a bad node is named even when it is a little
        // slower than the rest: half the time the quorum took (2 to 250 ms). A hung or dead
        // node then costs a read at most half again its quorum time (`benches/degraded.rs`)
        // rather than a fixed wait; one that answers later is not named.
        let quorum = started.elapsed();
        let grace = tokio::time::sleep((quorum / 2).clamp(GRACE.0, GRACE.1));
        tokio::pin!(grace);
        // Late shares are verified alone (parsing the commitments only when some are out).
        let agreed = if pending.is_empty() {
            None
        } else {
            Commitments::from_bytes(&groups[&key].0).ok()
        };
        while !pending.is_empty() {
            tokio::select! {
                () = &mut grace => break,
                Some(a) = pending.next() => match a.share {
                    Err((reason, how)) => {
                        declined.push((a.node.clone(), how));
                        failures.push(NodeFailure { node: a.node, reason });
                    }
                    Ok(r) => {
                        let ok = r.commitments == key.0
                            && crate::strict_hex::decode(&r.share)
                                .ok()
                                .and_then(|b| Share::from_bytes(&b).ok())
                                .is_some_and(|sh| agreed.as_ref().is_some_and(|c| c.verify(&sh)));
                        if ok {
                            answered.push((a.node, a.took));
                        } else {
                            tracing::error!(record = %id, node = %a.node, "share failed verification against the commitments");
                            failures.push(NodeFailure { node: a.node, reason: "share failed verification".into() });
                        }
                    }
                }
            }
        }
        let read = Read {
            asked: &asked,
            answered: &answered,
            declined: &declined,
            failures: &failures,
        };
        read.note(health, Some(quorum), blame_refusals);
        return Ok(Gathered {
            secret,
            sealed,
            failures,
        });
    }
    // No quorum: the shares that came are verified alone, to count the good ones and name
    // the bad.
    for (commitments, members) in groups.values_mut() {
        *members = sift(
            id,
            std::mem::take(members),
            commitments,
            &mut answered,
            &mut declined,
            &mut failures,
        );
    }
    let read = Read {
        asked: &asked,
        answered: &answered,
        declined: &declined,
        failures: &failures,
    };
    read.note(health, None, blame_refusals);
    let valid = largest(&groups, needed);
    Err(RecordError::NotEnoughShares {
        record: id,
        valid,
        needed,
        failures,
    })
}

/// The members whose shares verify alone against `commitments`, one per index (the first to
/// come). A share that does not verify names its node as a fault. A second valid share of an
/// index is dropped without naming either node: one of the two replayed the other's share,
/// and the reader cannot tell which (the faster one may be the copy), so it asks on instead
/// of failing the read or blaming a node that may be honest.
fn sift(
    id: RecordId,
    members: Vec<Member>,
    commitments: &[u8],
    answered: &mut Vec<(String, Duration)>,
    declined: &mut Vec<(String, Declined)>,
    failures: &mut Vec<NodeFailure>,
) -> Vec<Member> {
    let agreed = Commitments::from_bytes(commitments).ok();
    let mut kept: Vec<Member> = Vec::with_capacity(members.len());
    for m in members {
        let reason = if !m.verified && !agreed.as_ref().is_some_and(|c| c.verify(&m.share)) {
            tracing::error!(record = %id, node = %m.node, "share failed verification against the commitments");
            format!("share {} failed verification", m.share.index)
        } else if let Some(first) = kept.iter().find(|k| k.share.index == m.share.index) {
            tracing::error!(record = %id, node = %m.node, other = %first.node, index = m.share.index, "two share nodes gave the same share; one of them replayed the other's");
            continue;
        } else {
            kept.push(Member {
                verified: true,
                ..m
            });
            continue;
        };
        answered.retain(|(n, _)| *n != m.node);
        declined.push((m.node.clone(), Declined::Fault));
        failures.push(NodeFailure {
            node: m.node,
            reason,
        });
    }
    kept
}

/// The most shares any group of threshold `needed` holds (no other group can count): shares
/// not yet verified alone count until their group's recombination fails.
fn largest(groups: &Groups, needed: usize) -> usize {
    groups
        .values()
        .filter(|(c, _)| threshold_of(c) == needed)
        .map(|(_, m)| m.len())
        .max()
        .unwrap_or(0)
}

/// What one read saw of the nodes it asked.
struct Read<'a> {
    /// Each node asked and when.
    asked: &'a [(String, Instant)],
    /// Nodes whose share counted (or agreed), and how long each took.
    answered: &'a [(String, Duration)],
    /// Nodes that gave no share, and how they said so.
    declined: &'a [(String, Declined)],
    /// Every node named as failing (faults, refusals, disagreeing shares).
    failures: &'a [NodeFailure],
}

impl Read<'_> {
    /// Notes every node asked, once the read is over (`quorum`: when it had k shares, if it
    /// did):
    /// - a refusal is a fault when k other nodes released for the same request and
    ///   `blame_refusals` (the node's view of the chain lags, or it withholds), and otherwise
    ///   only a judgment (the grant is gone, or the access transaction is too fresh to blame);
    ///   a node that is busy (429) is noted neither way;
    /// - unreachable, a server error, a bad or disagreeing share: a fault;
    /// - a share that counted: its answer time;
    /// - still out: a fault only when out longer than [`NodeHealth::late_after`] (taken
    ///   after this read's answer times) and a fifth longer than the quorum took: a hung node
    ///   is, a node asked by the hedge a moment before the quorum or one slow answer is not.
    fn note(&self, health: &NodeHealth, quorum: Option<Duration>, blame_refusals: bool) {
        for (url, took) in self.answered {
            if !self.failures.iter().any(|f| &f.node == url) {
                health.note(url, Outcome::Answered(*took));
            }
        }
        let late = health
            .late_after()
            .max(quorum.map_or(Duration::ZERO, |q| q + q / 5));
        for (url, at) in self.asked {
            let outcome = match self.declined.iter().find(|(u, _)| u == url) {
                Some((_, Declined::Busy)) => continue,
                Some((_, Declined::No)) if quorum.is_some() && blame_refusals => Outcome::Faulty,
                Some((_, Declined::No)) => Outcome::Refused,
                Some((_, Declined::Fault)) => Outcome::Faulty,
                None if self.failures.iter().any(|f| &f.node == url) => Outcome::Faulty,
                None if self.answered.iter().any(|(u, _)| u == url) => continue,
                None if at.elapsed() > late => Outcome::Faulty,
                None => continue,
            };
            health.note(url, outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against in-process share nodes that answer releases as told: honest, lying (other
    //! commitments and block), corrupting their share, refusing, or never answering.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use alloy::primitives::{Address, B256};
    use alloy::signers::local::PrivateKeySigner;
    use axum::Json;
    use axum::routing::post;

    use super::*;
    use crate::chain::merkle::RecordProof;
    use crate::shamir::{Threshold, split};
    use crate::share_node::{ReleasedShare, ShareNodeRef, ShareRelease, domain, sign};

    /// How a test node answers.
    #[derive(Clone)]
    enum Behaviour {
        Honest,
        /// Its own polynomial and block: verifies alone, disagrees with the rest.
        Liar,
        /// A share that fails verification.
        Corrupt,
        /// Its own share's value under the first node's index: fails verification.
        Misindexed,
        /// A replay of the first node's share (its index, its value): verifies, but the
        /// index is given twice.
        Copycat,
        /// Its own share, with commitments whose second point is no curve point.
        Unpointed,
        /// 403.
        Refuse,
        /// 429.
        Busy,
        /// Accepts and never answers.
        Hang,
    }

    async fn node(
        answer: Option<ReleasedShare>,
        b: Behaviour,
        i: u8,
        hits: Arc<AtomicUsize>,
    ) -> ShareNodeRef {
        let answer = Arc::new(answer.map(|a| serde_json::to_value(a).unwrap()));
        let app = axum::Router::new().route(
            "/shares/{id}/release",
            post(move || {
                let answer = answer.clone();
                let b = b.clone();
                hits.fetch_add(1, Ordering::SeqCst);
                async move {
                    match b {
                        Behaviour::Refuse => Err((
                            axum::http::StatusCode::FORBIDDEN,
                            Json(serde_json::json!({ "error": "not allowed" })),
                        )),
                        Behaviour::Busy => Err((
                            axum::http::StatusCode::TOO_MANY_REQUESTS,
                            Json(serde_json::json!({ "error": "slow down" })),
                        )),
                        Behaviour::Hang => {
                            std::future::pending::<()>().await;
                            unreachable!()
                        }
                        _ => Ok(Json(answer.as_ref().clone().unwrap())),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        ShareNodeRef {
            url,
            address: Address::repeat_byte(i + 1),
        }
    }

    fn proof() -> RecordProof {
        RecordProof {
            patient: "1-1001".parse().unwrap(),
            author: Address::ZERO,
            salt: B256::ZERO,
            digest: B256::ZERO,
            root: B256::ZERO,
            proof: Vec::new(),
        }
    }

    /// What a run yields: the secret's bytes, the gathering's outcome, and how many requests
    /// each node received.
    struct Run {
        want: [u8; 32],
        got: Result<Gathered, RecordError>,
        hits: Vec<usize>,
    }

    /// Five nodes behaving as `bs`, asked in that order, for a 3-of-5 secret.
    async fn run(bs: [Behaviour; 5], health: &NodeHealth) -> Run {
        run_blaming(bs, health, true).await
    }

    /// The same, telling the gathering whether refusals may be blamed.
    async fn run_blaming(bs: [Behaviour; 5], health: &NodeHealth, blame: bool) -> Run {
        let t = Threshold::new(3, 5).unwrap();
        let secret = Secret::random();
        let (shares, commitments) = split(&secret, t);
        let (lie_shares, lie_commitments) = split(&Secret::random(), t);
        let signer = PrivateKeySigner::random();
        let dom = domain(1, Address::ZERO, B256::ZERO);
        let id = RecordId(B256::repeat_byte(7));
        let mut order = Vec::new();
        let mut hits = Vec::new();
        for (i, b) in bs.into_iter().enumerate() {
            let (share, commitments, block) = match b {
                Behaviour::Liar => (lie_shares[i].clone(), &lie_commitments, "bb"),
                Behaviour::Copycat => (shares[0].clone(), &commitments, "aa"),
                _ => (shares[i].clone(), &commitments, "aa"),
            };
            let mut bytes = share.to_bytes();
            if matches!(b, Behaviour::Misindexed) {
                bytes[0] = shares[0].index;
            }
            let mut share = crate::strict_hex::encode(bytes);
            if matches!(b, Behaviour::Corrupt) {
                let last = if share.ends_with('0') { "1" } else { "0" };
                share.replace_range(share.len() - 1.., last);
            }
            // Sealed to the requester for this request, as a node seals it.
            let requester = k256::SecretKey::from_slice(signer.to_bytes().as_slice())
                .unwrap()
                .public_key();
            let aad = crate::share_node::share_aad(
                id.0,
                Address::repeat_byte(i as u8 + 1),
                alloy::primitives::U256::ZERO,
            );
            let share = crate::strict_hex::encode(crate::crypto::seal_to(
                &requester,
                &aad,
                &crate::strict_hex::decode(share).unwrap(),
            ));
            let mut commitments = commitments.to_bytes();
            if matches!(b, Behaviour::Unpointed) {
                // An x at or above the field's prime.
                commitments[34..66].fill(0xff);
            }
            let answer = ReleasedShare {
                proof: proof(),
                share,
                commitments: crate::strict_hex::encode(commitments),
                sealed_block: block.into(),
            };
            let count = Arc::new(AtomicUsize::new(0));
            let node = node(Some(answer), b, i as u8, count.clone()).await;
            hits.push(count);
            order.push(NodeClient::new(reqwest::Client::new(), node));
        }
        let sign_for = |node: &NodeClient| {
            let request = ShareRelease {
                recordId: id.0,
                requester: signer.address(),
                accessTx: B256::ZERO,
                shareNode: node.node().address,
                nonce: alloy::primitives::U256::ZERO,
                deadline: 0,
            };
            let signature = sign(&signer, &request, &dom).unwrap();
            Ok(ReleaseBody { request, signature })
        };
        let key = k256::SecretKey::from_slice(signer.to_bytes().as_slice()).unwrap();
        let got = gather(id, order, sign_for, 3, &key, health, blame).await;
        Run {
            want: secret.to_bytes(),
            got,
            hits: hits.iter().map(|h| h.load(Ordering::SeqCst)).collect(),
        }
    }

    use Behaviour::{Busy, Copycat, Corrupt, Hang, Honest, Liar, Misindexed, Refuse, Unpointed};

    /// A hedge that never fires within a test: the counts below must not depend on timing.
    fn no_hedge() -> NodeHealth {
        NodeHealth::with_hedge(Duration::from_secs(60))
    }

    #[tokio::test]
    async fn three_honest_nodes_are_enough_and_the_others_asked_are_named() {
        for (bs, asked) in [
            ([Honest, Honest, Honest, Honest, Honest], 3),
            // The two liars agree with each other: two more honest nodes settle it.
            ([Liar, Honest, Liar, Honest, Honest], 5),
            ([Honest, Corrupt, Honest, Corrupt, Honest], 5),
            // Another node's index, with its own value or the other's: one more node either
            // way; the first is named, the replay is not (either of the two may be the copy).
            ([Honest, Misindexed, Honest, Honest, Honest], 4),
            ([Honest, Copycat, Honest, Honest, Honest], 4),
            // Commitments that are no points are malformed, not a disagreeing group.
            ([Unpointed, Honest, Honest, Honest, Honest], 4),
            // The refusal brings in the fourth; so does a busy node.
            ([Refuse, Honest, Honest, Honest, Honest], 4),
            ([Honest, Busy, Honest, Honest, Honest], 4),
        ] {
            let health = no_hedge();
            let r = run(bs.clone(), &health).await;
            let g = r.got.unwrap();
            assert_eq!(g.secret.to_bytes(), r.want);
            assert_eq!(g.sealed, vec![0xaa]);
            assert_eq!(r.hits.iter().sum::<usize>(), asked, "{:?}", r.hits);
            let named = |reason: &str| {
                g.failures
                    .iter()
                    .filter(|f| f.reason.contains(reason))
                    .count()
            };
            let count = |b: fn(&Behaviour) -> bool| bs.iter().filter(|x| b(x)).count();
            assert_eq!(
                named("disagree"),
                count(|b| matches!(b, Liar)),
                "liars named"
            );
            assert_eq!(
                named("failed verification"),
                count(|b| matches!(b, Corrupt | Misindexed)),
                "corrupt shares named"
            );
            assert_eq!(
                named("malformed"),
                count(|b| matches!(b, Unpointed)),
                "malformed commitments named"
            );
            assert_eq!(
                named("HTTP 403"),
                count(|b| matches!(b, Refuse)),
                "refusals named"
            );
            // Liars, corrupt nodes and a node refusing what k others released are suspects;
            // honest and busy ones are not.
            let faulty = bs
                .iter()
                .filter(|b| matches!(b, Liar | Corrupt | Misindexed | Unpointed | Refuse))
                .count();
            assert_eq!(health.suspects().len(), faulty, "{:?}", health.suspects());
        }
    }

    #[tokio::test]
    async fn a_refusal_of_a_fresh_access_is_not_blamed() {
        let health = no_hedge();
        let r = run_blaming([Refuse, Honest, Honest, Honest, Honest], &health, false).await;
        assert_eq!(r.got.unwrap().secret.to_bytes(), r.want);
        assert!(health.suspects().is_empty(), "{:?}", health.suspects());
    }

    #[tokio::test]
    async fn fewer_than_k_good_shares_name_every_failure_and_a_refusal_is_no_fault() {
        // The corrupt share completes a group of three in the first case; in the second its
        // group never has three, so it is found only by verifying what came when the
        // gathering gives up.
        for (bs, valid_shares, refusals) in [
            ([Honest, Honest, Refuse, Corrupt, Liar], 2, 1),
            ([Corrupt, Honest, Refuse, Refuse, Liar], 1, 2),
        ] {
            let health = no_hedge();
            let r = run(bs, &health).await;
            match r.got {
                Err(RecordError::NotEnoughShares {
                    valid,
                    needed,
                    failures,
                    ..
                }) => {
                    assert_eq!((valid, needed), (valid_shares, 3));
                    assert_eq!(
                        failures.len(),
                        refusals + 1,
                        "the refusals and the corrupt share: {failures:?}"
                    );
                    assert_eq!(
                        failures
                            .iter()
                            .filter(|f| f.reason.contains("failed verification"))
                            .count(),
                        1,
                        "{failures:?}"
                    );
                }
                Err(e) => panic!("wrong error: {e}"),
                Ok(_) => panic!("recombined from too few honest shares"),
            }
            assert_eq!(r.hits, [1, 1, 1, 1, 1]);
            // The read failed: the refusal may be the grant's end, not the node's fault.
            assert_eq!(health.suspects().len(), 1, "only the corrupt node");
        }
    }

    /// The quorum's check: k shares of a split recombine to the secret its first commitment
    /// commits to; one changed share, other commitments, a zero secret or malformed
    /// commitments do not pass.
    #[test]
    fn k_shares_pass_the_commitment_check_only_as_they_were_split() {
        let t = Threshold::new(3, 5).unwrap();
        for _ in 0..20 {
            let secret = Secret::random();
            let (shares, commitments) = split(&secret, t);
            let bytes = commitments.to_bytes();
            for pick in [[0, 1, 2], [4, 2, 0], [1, 3, 4]] {
                let mut some: Vec<Share> = pick.iter().map(|&i| shares[i].clone()).collect();
                let got = combine(&some, 3).unwrap();
                assert!(commits_to(&bytes, &got));
                let (_, others) = split(&Secret::random(), t);
                assert!(!commits_to(&others.to_bytes(), &got));
                // Another value at the same index (the last byte's low bit flipped).
                let mut b = some[1].to_bytes();
                *b.last_mut().unwrap() ^= 1;
                some[1] = Share::from_bytes(&b).unwrap();
                let got = combine(&some, 3).unwrap();
                assert!(!commits_to(&bytes, &got));
                assert!(!commitments.verify(&some[1]));
            }
            assert!(!commits_to(&bytes[..32], &secret));
            assert!(!commits_to(&[], &secret));
            let mut garbled = bytes.clone();
            garbled[0] = 0x05;
            assert!(!commits_to(&garbled, &secret));
        }
        // Shares whose values are all zero recombine to zero.
        let zeros: Vec<Share> = (1..=3u8)
            .map(|i| {
                let mut b = [0u8; 33];
                b[0] = i;
                Share::from_bytes(&b).unwrap()
            })
            .collect();
        let zero = combine(&zeros, 3).unwrap();
        assert_eq!(zero.to_bytes(), [0; 32]);
        let (_, commitments) = split(&Secret::random(), t);
        assert!(!commits_to(&commitments.to_bytes(), &zero));
    }

    #[tokio::test]
    async fn hung_nodes_cost_a_hedge_and_become_suspects() {
        for (bs, suspects) in [
            ([Hang, Honest, Hang, Honest, Honest], 2),
            ([Refuse, Honest, Hang, Honest, Honest], 2),
        ] {
            let health = NodeHealth::with_hedge(Duration::from_millis(250));
            let t = Instant::now();
            let r = run(bs, &health).await;
            assert_eq!(r.got.unwrap().secret.to_bytes(), r.want);
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "waited for hung nodes"
            );
            assert_eq!(r.hits, [1, 1, 1, 1, 1], "the hedge asked every node");
            assert_eq!(health.suspects().len(), suspects, "{:?}", health.suspects());
        }
    }
}

//! Gathering a record's secret from the share nodes: ask k of them (healthy ones first, see
//! [`NodeHealth`]), and one more for each that fails, refuses or disagrees, and all the rest
//! when the first ones are slow (a hedge); verify each share against its Feldman commitments,
//! group answers by (commitments, sealed block) since honest nodes agree on both, stop at k
//! verified shares of one group, and name every node asked that failed or disagreed (waiting
//! a short grace for the slower ones, never for a hung one).
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

/// Answers grouped by (commitments hex, sealed block hex): the commitments and each node's share.
type Groups = HashMap<(String, String), (Commitments, Vec<(String, Share)>)>;

/// Opens the share a node sealed to this requester for this request; the rest of the answer is
/// public (proof, commitments) or sealed under the shared secret (the block).
fn open_share(
    mut released: ReleasedShare,
    body: &ReleaseBody,
    key: &k256::SecretKey,
) -> Result<ReleasedShare, String> {
    let r = &body.request;
    let aad = crate::share_node::share_aad(r.recordId, r.shareNode, r.nonce);
    let sealed =
        crate::strict_hex::decode(&released.share).map_err(|_| "share is not hex".to_owned())?;
    let plain = crate::crypto::open_with(key, &aad, &sealed)
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
async fn ask(id: RecordId, node: NodeClient, body: ReleaseBody, key: &k256::SecretKey) -> Answer {
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

/// Parses and verifies a share against its own commitments.
fn verified(released: &ReleasedShare) -> Result<(Commitments, Share), String> {
    let parsed = crate::strict_hex::decode(&released.commitments)
        .ok()
        .and_then(|b| Commitments::from_bytes(&b).ok())
        .zip(
            crate::strict_hex::decode(&released.share)
                .ok()
                .and_then(|b| Share::from_bytes(&b).ok()),
        );
    let Some((commitments, share)) = parsed else {
        return Err("malformed share or commitments".into());
    };
    if !commitments.verify(&share) {
        return Err(format!("share {} failed verification", share.index));
    }
    Ok((commitments, share))
}

/// Asks the nodes in `order` (first k, then as needed; `sign` makes each node's signed request
/// when it is asked) and returns the secret once `needed` shares of one group verify. Every
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
        let released = match a.share.and_then(|r| {
            verified(&r)
                .map(|v| (r, v))
                .map_err(|e| (e, Declined::Fault))
        }) {
            Ok(x) => x,
            Err((reason, how)) => {
                if reason.contains("failed verification") {
                    tracing::error!(record = %id, node = %a.node, "share failed verification against the commitments");
                }
                declined.push((a.node.clone(), how));
                failures.push(NodeFailure {
                    node: a.node,
                    reason,
                });
                continue;
            }
        };
        let (released, (commitments, share)) = released;
        answered.push((a.node.clone(), a.took));
        let key = (released.commitments, released.sealed_block);
        let entry = groups
            .entry(key.clone())
            .or_insert_with(|| (commitments, Vec::new()));
        entry.1.push((a.node, share));
        if entry.1.len() < needed || entry.0.k() != needed {
            continue;
        }
        let shares: Vec<Share> = entry.1.iter().map(|(_, s)| s.clone()).collect();
        let secret =
            combine(&shares, needed).map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
        let sealed = crate::strict_hex::decode(&key.1)
            .map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
        // Nodes in other groups disagree with k verified shares: name them.
        for (k2, (_, members)) in &groups {
            if *k2 != key {
                for (n, _) in members {
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
        let agreed = &groups[&key].0;
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
                                .is_some_and(|sh| agreed.verify(&sh));
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

/// The most verified shares any group of threshold `needed` holds (no other group can count).
fn largest(groups: &Groups, needed: usize) -> usize {
    groups
        .values()
        .filter(|(c, _)| c.k() == needed)
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
                _ => (shares[i].clone(), &commitments, "aa"),
            };
            let mut share = crate::strict_hex::encode(share.to_bytes());
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
            let answer = ReleasedShare {
                proof: proof(),
                share,
                commitments: crate::strict_hex::encode(commitments.to_bytes()),
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

    use Behaviour::{Busy, Corrupt, Hang, Honest, Liar, Refuse};

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
                count(|b| matches!(b, Corrupt)),
                "corrupt shares named"
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
                .filter(|b| matches!(b, Liar | Corrupt | Refuse))
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
        let health = no_hedge();
        let r = run([Honest, Honest, Refuse, Corrupt, Liar], &health).await;
        match r.got {
            Err(RecordError::NotEnoughShares {
                valid,
                needed,
                failures,
                ..
            }) => {
                assert_eq!((valid, needed), (2, 3));
                assert_eq!(
                    failures.len(),
                    2,
                    "the refusal and the corrupt share: {failures:?}"
                );
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("recombined from two honest shares"),
        }
        assert_eq!(r.hits, [1, 1, 1, 1, 1]);
        // The read failed: the refusal may be the grant's end, not the node's fault.
        assert_eq!(health.suspects().len(), 1, "only the corrupt node");
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

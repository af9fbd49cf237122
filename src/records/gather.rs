//! Gathering a record's secret from the share nodes: ask all at once, verify each share against
//! its Feldman commitments, group answers by (commitments, sealed block) since honest nodes
//! agree on both, stop at k verified shares of one group, and name every node that failed or
//! disagreed (waiting a short grace for the slower ones, never for a hung one).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::client::{NodeFailure, RecordError};
use crate::chain::RecordId;
use crate::shamir::{Commitments, Secret, Share, combine};
use crate::share_node::{NodeClient, ReleaseBody, ReleasedShare};

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
    let sealed = hex::decode(&released.share).map_err(|_| "share is not hex".to_owned())?;
    let plain = crate::crypto::open_with(key, &aad, &sealed)
        .map_err(|e| format!("share not sealed to this requester and request: {e}"))?;
    released.share = hex::encode(plain);
    Ok(released)
}

/// The shortest and longest grace after the quorum.
const GRACE: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(250));

/// Asks each node with its own signed request and returns the secret once `needed` shares of
/// one group verify.
///
/// # Errors
/// [`RecordError::NotEnoughShares`] naming every node that failed, when no group reaches
/// `needed`; [`RecordError::Decrypt`] when verified shares do not recombine.
pub(super) async fn gather(
    id: RecordId,
    requests: Vec<(NodeClient, ReleaseBody)>,
    needed: usize,
    key: &k256::SecretKey,
) -> Result<Gathered, RecordError> {
    let started = Instant::now();
    let mut pending: FuturesUnordered<_> = requests
        .into_iter()
        .map(|(node, body)| async move {
            let r = node
                .release(id, &body)
                .await
                .map_err(|e| e.to_string())
                .and_then(|released| open_share(released, &body, key));
            (node.node().url.clone(), r)
        })
        .collect();
    let mut failures = Vec::new();
    let mut groups: Groups = HashMap::new();
    while let Some((node, r)) = pending.next().await {
        let released = match r {
            Ok(x) => x,
            Err(reason) => {
                failures.push(NodeFailure { node, reason });
                continue;
            }
        };
        let parsed = hex::decode(&released.commitments)
            .ok()
            .and_then(|b| Commitments::from_bytes(&b).ok())
            .zip(
                hex::decode(&released.share)
                    .ok()
                    .and_then(|b| Share::from_bytes(&b).ok()),
            );
        let Some((commitments, share)) = parsed else {
            failures.push(NodeFailure {
                node,
                reason: "malformed share or commitments".into(),
            });
            continue;
        };
        if !commitments.verify(&share) {
            tracing::error!(record = %id, node = %node, "share failed verification against the commitments");
            failures.push(NodeFailure {
                node,
                reason: format!("share {} failed verification", share.index),
            });
            continue;
        }
        let key = (released.commitments, released.sealed_block);
        let entry = groups
            .entry(key.clone())
            .or_insert_with(|| (commitments, Vec::new()));
        entry.1.push((node, share));
        if entry.1.len() < needed || entry.0.k() != needed {
            continue;
        }
        let shares: Vec<Share> = entry.1.iter().map(|(_, s)| s.clone()).collect();
        let secret =
            combine(&shares, needed).map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
        let sealed = hex::decode(&key.1).map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
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
        // Give the remaining nodes a moment, so a bad node is named even when it is a little
        // slower than the rest: half the time the quorum took (2 to 250 ms). A hung or dead
        // node then costs a read at most half again its quorum time (`benches/degraded.rs`)
        // rather than a fixed wait; one that answers later is not named.
        let grace = tokio::time::sleep((started.elapsed() / 2).clamp(GRACE.0, GRACE.1));
        tokio::pin!(grace);
        let agreed = &groups[&key].0;
        loop {
            tokio::select! {
                _ = &mut grace => break,
                next = pending.next() => match next {
                    None => break,
                    Some((node, Err(reason))) => failures.push(NodeFailure { node, reason }),
                    Some((node, Ok(r))) => {
                        let ok = r.commitments == key.0
                            && hex::decode(&r.share)
                                .ok()
                                .and_then(|b| Share::from_bytes(&b).ok())
                                .is_some_and(|sh| agreed.verify(&sh));
                        if !ok {
                            tracing::error!(record = %id, node = %node, "share failed verification against the commitments");
                            failures.push(NodeFailure { node, reason: "share failed verification".into() });
                        }
                    }
                }
            }
        }
        return Ok(Gathered {
            secret,
            sealed,
            failures,
        });
    }
    let valid = groups.values().map(|(_, m)| m.len()).max().unwrap_or(0);
    Err(RecordError::NotEnoughShares {
        record: id,
        valid,
        needed,
        failures,
    })
}

#[cfg(test)]
mod tests {
    //! Against in-process share nodes that answer releases as told: honest, lying (other
    //! commitments and block), corrupting their share, refusing, or never answering.

    use std::sync::Arc;

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
        /// Accepts and never answers.
        Hang,
    }

    async fn node(answer: Option<ReleasedShare>, b: Behaviour, i: u8) -> ShareNodeRef {
        let answer = Arc::new(answer.map(|a| serde_json::to_value(a).unwrap()));
        let app = axum::Router::new().route(
            "/shares/{id}/release",
            post(move || {
                let answer = answer.clone();
                let b = b.clone();
                async move {
                    match b {
                        Behaviour::Refuse => Err((
                            axum::http::StatusCode::FORBIDDEN,
                            Json(serde_json::json!({ "error": "not allowed" })),
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

    /// Five nodes behaving as `bs`, for a 3-of-5 secret; returns the secret's bytes and the
    /// gathering's outcome.
    async fn run(bs: [Behaviour; 5]) -> ([u8; 32], Result<Gathered, RecordError>) {
        let t = Threshold::new(3, 5).unwrap();
        let secret = Secret::random();
        let (shares, commitments) = split(&secret, t);
        let (lie_shares, lie_commitments) = split(&Secret::random(), t);
        let signer = PrivateKeySigner::random();
        let dom = domain(1, Address::ZERO, B256::ZERO);
        let id = RecordId(B256::repeat_byte(7));
        let mut requests = Vec::new();
        for (i, b) in bs.into_iter().enumerate() {
            let (share, commitments, block) = match b {
                Behaviour::Liar => (lie_shares[i].clone(), &lie_commitments, "bb"),
                _ => (shares[i].clone(), &commitments, "aa"),
            };
            let mut share = hex::encode(share.to_bytes());
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
            let share = hex::encode(crate::crypto::seal_to(
                &requester,
                &aad,
                &hex::decode(share).unwrap(),
            ));
            let answer = ReleasedShare {
                proof: proof(),
                share,
                commitments: hex::encode(commitments.to_bytes()),
                sealed_block: block.into(),
            };
            let node = node(Some(answer), b, i as u8).await;
            let request = ShareRelease {
                recordId: id.0,
                requester: signer.address(),
                accessTx: B256::ZERO,
                shareNode: node.address,
                nonce: alloy::primitives::U256::ZERO,
                deadline: 0,
            };
            let signature = sign(&signer, &request, &dom).unwrap();
            requests.push((
                NodeClient::new(reqwest::Client::new(), node),
                ReleaseBody { request, signature },
            ));
        }
        let key = k256::SecretKey::from_slice(signer.to_bytes().as_slice()).unwrap();
        (secret.to_bytes(), gather(id, requests, 3, &key).await)
    }

    use Behaviour::{Corrupt, Hang, Honest, Liar, Refuse};

    #[tokio::test]
    async fn three_honest_nodes_are_enough_and_the_others_are_named() {
        for bs in [
            [Honest, Honest, Honest, Honest, Honest],
            [Liar, Honest, Liar, Honest, Honest],
            [Honest, Corrupt, Honest, Corrupt, Honest],
            [Refuse, Honest, Hang, Honest, Honest],
        ] {
            let (want, got) = run(bs.clone()).await;
            let g = got.unwrap();
            assert_eq!(g.secret.to_bytes(), want);
            assert_eq!(g.sealed, vec![0xaa]);
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
        }
    }

    #[tokio::test]
    async fn fewer_than_k_good_shares_name_every_failure() {
        let (_, got) = run([Honest, Honest, Refuse, Corrupt, Liar]).await;
        match got {
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
    }

    #[tokio::test]
    async fn hung_nodes_delay_a_read_by_the_grace_only() {
        let t = Instant::now();
        let (want, got) = run([Hang, Honest, Hang, Honest, Honest]).await;
        assert_eq!(got.unwrap().secret.to_bytes(), want);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "waited for hung nodes"
        );
    }
}

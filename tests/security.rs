//! Security properties attacked the way an outsider would, on real anvil, Kubo and `ehr
//! share-node` processes (issue #8). Each test names the property it covers; the record theft
//! through a copied mempool transaction lives in `security_mempool.rs` (it stops automining).

mod common;

use std::time::Duration;

use alloy::primitives::{B256, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use bytes::Bytes;
use common::nodes::{self, NodeProc};
use ehr_share::chain::{DenyReason, EhrChain, EmergencyReason, PatientAddr, RecordId, random_b256};
use ehr_share::gateway::Keyring;
use ehr_share::records::{FHIR_JSON, ShareNodeRef};
use ehr_share::shamir::{Secret, Threshold, split};
use ehr_share::share_node::{DepositBody, ShareDeposit, domain, sign};
use rand_core::RngCore;
use sha2::{Digest, Sha256};

const MARKER: &str = "AT-REST-MARKER-8d2f41";

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A deposit of a fresh (never anchored) record for `addr`, signed by `uploader`, valid for
/// `valid_secs`; returns the record id and the body.
fn deposit(
    chain: &EhrChain,
    node: &ShareNodeRef,
    uploader: &PrivateKeySigner,
    addr: PatientAddr,
    valid_secs: u64,
) -> (RecordId, DepositBody) {
    let salt = random_b256();
    let id = RecordId::derive(uploader.address(), addr, salt);
    let (shares, commitments) = split(&Secret::random(), Threshold::new(1, 1).unwrap());
    let share = hex::encode(shares[0].to_bytes());
    let commitments = hex::encode(commitments.to_bytes());
    let sealed = hex::encode([7u8; 64]);
    let d = ShareDeposit {
        recordId: id.0,
        patient: addr.key(),
        uploader: uploader.address(),
        salt,
        digest: B256::repeat_byte(9),
        shareNode: node.address,
        contentHash: DepositBody::content_hash(&share, &commitments, &sealed),
        nonce: U256::from(rand_core::OsRng.next_u64()),
        deadline: nodes::now() + valid_secs,
    };
    let dom = domain(chain.chain_id(), chain.address(), chain.deployment_id());
    let signature = sign(uploader, &d, &dom).unwrap();
    (
        id,
        DepositBody {
            deposit: d,
            signature,
            share,
            commitments,
            sealed_block: sealed,
        },
    )
}

async fn put(node: &ShareNodeRef, id: RecordId, body: &DepositBody) -> reqwest::Response {
    reqwest::Client::new()
        .put(format!("{}/shares/{id}", node.url))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Sends a batch to a node (`POST /deposits` or `POST /anchors`); returns the status of the
/// request and the status of each item.
async fn batch(node: &ShareNodeRef, path: &str, items: &[String]) -> (u16, Vec<u16>) {
    // Built as text: a patient key is a u128, which `serde_json::Value` cannot hold.
    let r = reqwest::Client::new()
        .post(format!("{}/{path}", node.url))
        .header("content-type", "application/json")
        .body(format!(r#"{{"{path}":[{}]}}"#, items.join(",")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let answer: serde_json::Value = r.json().await.unwrap_or_default();
    let items = answer["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["status"].as_u64().unwrap() as u16)
                .collect()
        })
        .unwrap_or_default();
    (status, items)
}

/// A deposit spelled in capital hex is the same content as in small letters: an uploader that
/// retries one (a new nonce, the same record and content) gets 200, not a conflict, and what
/// the node releases is the content it was given.
#[tokio::test]
async fn a_retried_deposit_in_capital_hex_is_the_same_content() {
    let office = common::office().await;
    let node = nodes::start(office.address(), &[]).await;
    let r = nodes::refs(std::slice::from_ref(&node)).await.remove(0);
    let (patient, addr) = common::new_patient(&office).await;
    let dom = domain(office.chain_id(), office.address(), office.deployment_id());
    let (id, mut body) = deposit(&office, &r, &patient, addr, 60);
    for text in [
        &mut body.share,
        &mut body.commitments,
        &mut body.sealed_block,
    ] {
        text.make_ascii_uppercase();
    }
    // A copy through JSON text (the body is no Clone; a patient key is a u128).
    let copy = |b: &DepositBody| {
        serde_json::from_str::<DepositBody>(&serde_json::to_string(b).unwrap()).unwrap()
    };
    let signed = |mut b: DepositBody| {
        b.deposit.nonce = U256::from(rand_core::OsRng.next_u64());
        b.deposit.contentHash =
            DepositBody::content_hash(&b.share, &b.commitments, &b.sealed_block);
        b.signature = sign(&patient, &b.deposit, &dom).unwrap();
        b
    };
    let first = put(&r, id, &signed(copy(&body))).await;
    assert_eq!(first.status(), 200, "{}", first.text().await.unwrap());
    let again = put(&r, id, &signed(copy(&body))).await;
    assert_eq!(
        again.status(),
        200,
        "the same content retried: {}",
        again.text().await.unwrap()
    );
    // Different content under the record stays a conflict.
    let mut other = copy(&body);
    other.sealed_block = hex::encode([8u8; 64]);
    let conflict = put(&r, id, &signed(other)).await;
    assert_eq!(conflict.status(), 409);
}

/// A node judges a batch of deposits from one batch of chain calls for all its (patient,
/// uploader) pairs: each item must get its own pair's answer. One doctor deposits for a
/// patient who granted them, one who revoked the grant and one who never gave one, in one
/// request and then in the opposite order: only the first is kept each time, and the
/// refusals say why (a revoke told apart from no grant).
#[tokio::test]
async fn a_batch_for_several_patients_is_judged_per_patient() {
    let office = common::office().await;
    let node = nodes::start(office.address(), &[]).await;
    let r = nodes::refs(std::slice::from_ref(&node)).await.remove(0);
    let doctor = common::verified_doctor(&office).await;
    let (granted, granted_addr) = common::new_patient(&office).await;
    let (revoked, revoked_addr) = common::new_patient(&office).await;
    let (_never, never_addr) = common::new_patient(&office).await;
    common::as_(&office, &granted)
        .grant(doctor.address(), None)
        .await
        .unwrap();
    let p = common::as_(&office, &revoked);
    p.grant(doctor.address(), None).await.unwrap();
    p.revoke(doctor.address()).await.unwrap();
    let item = |id: RecordId, body: &DepositBody| {
        format!(
            r#"{{"record":"{id}","request":{}}}"#,
            serde_json::to_string(body).unwrap()
        )
    };
    for reversed in [false, true] {
        let mut items = [
            (granted_addr, 200, ""),
            (revoked_addr, 403, "revoked"),
            (never_addr, 403, "no grant"),
        ]
        .map(|(addr, status, says)| {
            let (id, body) = deposit(&office, &r, &doctor, addr, 60);
            (id, body, status, says)
        });
        if reversed {
            items.reverse();
        }
        let bodies: Vec<_> = items.iter().map(|(id, b, _, _)| item(*id, b)).collect();
        let answer = reqwest::Client::new()
            .post(format!("{}/deposits", r.url))
            .header("content-type", "application/json")
            .body(format!(r#"{{"deposits":[{}]}}"#, bodies.join(",")))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let answer: serde_json::Value = answer.json().await.unwrap();
        for (i, (id, _, status, says)) in items.iter().enumerate() {
            let got = &answer["results"][i];
            assert_eq!(
                got["status"], *status,
                "item {i} (reversed: {reversed}): {got}"
            );
            let words = got["error"].to_string().to_lowercase();
            assert!(words.contains(says), "item {i}: {got}");
            assert_eq!(
                nodes::present(&r, *id, B256::ZERO, &[]).await.status() != 404,
                *status == 200,
                "record {id} kept only when granted"
            );
        }
    }

    // More patients than one batch of chain calls holds (25 pairs): the answers of every
    // chunk stay with their items.
    let mut others = Vec::new();
    for _ in 0..27 {
        others.push(common::new_patient(&office).await.1);
    }
    let mut items: Vec<_> = others
        .iter()
        .map(|a| (deposit(&office, &r, &doctor, *a, 60), 403))
        .collect();
    items.insert(13, (deposit(&office, &r, &doctor, granted_addr, 60), 200));
    let bodies: Vec<_> = items.iter().map(|((id, b), _)| item(*id, b)).collect();
    let (status, got) = batch(&r, "deposits", &bodies).await;
    assert_eq!(status, 200);
    let want: Vec<_> = items.iter().map(|(_, s)| *s).collect();
    assert_eq!(got, want);
}

/// #12: deposits and proofs sent many to a request (`POST /deposits`, `POST /anchors`, what
/// the records client sends under load) are no way around a single request's checks. An
/// outsider mixes good items with a forged signature, a record id stolen from another
/// uploader, a write without a grant, a replayed nonce, a proof that does not lead to the
/// record, a root nobody anchored and a record the node never saw: each is refused with the
/// status it gets alone, only the good ones are kept, and an oversized batch is refused whole.
#[tokio::test]
async fn a_batch_of_deposits_or_proofs_is_judged_item_by_item() {
    let office = common::office().await;
    let node = nodes::start(office.address(), &[]).await;
    let r = nodes::refs(std::slice::from_ref(&node)).await.remove(0);
    let (patient, addr) = common::new_patient(&office).await;
    let stranger = PrivateKeySigner::random();
    let dom = domain(office.chain_id(), office.address(), office.deployment_id());
    let item = |id: RecordId, body: &DepositBody| {
        format!(
            r#"{{"record":"{id}","request":{}}}"#,
            serde_json::to_string(body).unwrap()
        )
    };

    let (good, good_body) = deposit(&office, &r, &patient, addr, 60);
    let (second, second_body) = deposit(&office, &r, &patient, addr, 60);
    let (forged, mut forged_body) = deposit(&office, &r, &patient, addr, 60);
    forged_body.signature = sign(&stranger, &forged_body.deposit, &dom).unwrap();
    // The stranger's own deposit under the id of the patient's record.
    let (stolen, _) = deposit(&office, &r, &patient, addr, 60);
    let (_, mut theft) = deposit(&office, &r, &stranger, addr, 60);
    theft.deposit.recordId = stolen.0;
    theft.signature = sign(&stranger, &theft.deposit, &dom).unwrap();
    let (unallowed, unallowed_body) = deposit(&office, &r, &stranger, addr, 60);
    let (status, items) = batch(
        &r,
        "deposits",
        &[
            item(good, &good_body),
            item(forged, &forged_body),
            item(stolen, &theft),
            item(unallowed, &unallowed_body),
            item(good, &good_body),
            item(second, &second_body),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        items,
        [200, 403, 400, 403, 403, 200],
        "good, forged, stolen id, no grant, replayed, good"
    );
    for (id, kept) in [
        (good, true),
        (second, true),
        (forged, false),
        (stolen, false),
        (unallowed, false),
    ] {
        assert_eq!(
            nodes::present(&r, id, B256::ZERO, &[]).await.status() != 404,
            kept,
            "record {id} kept: {kept}"
        );
    }

    // The patient anchors the good record alone; the second record's root is never anchored.
    let leaf = ehr_share::chain::merkle::leaf(good, addr, patient.address(), B256::repeat_byte(9));
    let other =
        ehr_share::chain::merkle::leaf(second, addr, patient.address(), B256::repeat_byte(9));
    common::as_(&office, &patient)
        .anchor_root(leaf, 1)
        .await
        .unwrap();
    let proof = |id: RecordId, root: B256, proof: Vec<B256>| {
        serde_json::json!({ "record": id, "root": root, "proof": proof }).to_string()
    };
    let (status, items) = batch(
        &r,
        "anchors",
        &[
            proof(second, leaf, vec![]),
            proof(second, other, vec![]),
            proof(forged, leaf, vec![]),
            proof(good, leaf, vec![]),
            proof(good, leaf, vec![]),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        items,
        [400, 409, 404, 200, 200],
        "proof not from its leaf, root not anchored, unknown record, good, good again"
    );
    assert_eq!(
        nodes::release(&office, &r, &patient, good).await.status(),
        200
    );
    assert_eq!(
        nodes::release(&office, &r, &patient, second).await.status(),
        403,
        "the record whose root is not anchored stays unreadable"
    );

    let many: Vec<_> = (0..=256).map(|_| proof(good, leaf, vec![])).collect();
    let (status, items) = batch(&r, "anchors", &many).await;
    assert_eq!(
        (status, items.len()),
        (400, 0),
        "an oversized batch is refused whole"
    );
    let many: Vec<_> = (0..33).map(|_| item(good, &good_body)).collect();
    assert_eq!(batch(&r, "deposits", &many).await.0, 400);
    // An empty batch would cost the node a write to disk and no rate limit.
    assert_eq!(batch(&r, "deposits", &[]).await.0, 400);
    assert_eq!(batch(&r, "anchors", &[]).await.0, 400);
    // A deposit over the content limit whose body still fits a single request's limit:
    // refused by both routes alike.
    let (big, mut big_body) = deposit(&office, &r, &patient, addr, 60);
    big_body.sealed_block = "00".repeat(30_800);
    big_body.deposit.contentHash = DepositBody::content_hash(
        &big_body.share,
        &big_body.commitments,
        &big_body.sealed_block,
    );
    big_body.signature = sign(&patient, &big_body.deposit, &dom).unwrap();
    assert_eq!(put(&r, big, &big_body).await.status(), 413);
    assert_eq!(
        batch(&r, "deposits", &[item(big, &big_body)]).await,
        (200, vec![413])
    );
}

/// #3: what a share node keeps on disk is private (0600 in 0700) and encrypted under the node's
/// key: the store file holds no share, no sealed block, and a copy of it served by a node with
/// another key releases nothing.
#[tokio::test]
async fn shares_on_disk_decrypt_nothing_without_the_node_key() {
    let office = common::office().await;
    let procs = nodes::start_many(office.address(), 3, &[]).await;
    let refs = nodes::refs(&procs).await;
    let (patient, addr) = common::new_patient(&office).await;
    let body = format!(
        r#"{{"resourceType":"Observation","status":"final","code":{{"text":"{MARKER}"}}}}"#
    );
    let id = nodes::client(&office, &patient, &refs)
        .put(addr, Bytes::from(body), FHIR_JSON, None)
        .await
        .unwrap();
    let n0: &NodeProc = &procs[0];
    assert_eq!(mode(&n0.dir), 0o700);
    assert_eq!(mode(&n0.dir.join("node.key")), 0o600);
    let store = n0.dir.join("shares.redb");
    assert_eq!(mode(&store), 0o600);

    // What the node releases to the patient is nowhere in its file.
    let (status, opened) = nodes::release_opened(&office, &refs[0], &patient, id).await;
    assert_eq!(status, 200);
    let (released, share) = opened.unwrap();
    let share_hex = hex::encode(share);
    let sealed_hex = released["sealed_block"].as_str().unwrap().to_owned();
    let raw = std::fs::read(&store).unwrap();
    assert!(
        !contains(&raw, share_hex.as_bytes()),
        "share in clear (hex)"
    );
    assert!(
        !contains(&raw, &hex::decode(&share_hex).unwrap()[1..]),
        "share in clear (bytes)"
    );
    assert!(
        !contains(&raw, &sealed_hex.as_bytes()[..64]),
        "sealed block in clear"
    );
    assert!(!contains(&raw, MARKER.as_bytes()));

    // A thief copies the store file and serves it with a key of their own: nothing comes out.
    let thief = tempfile::tempdir().unwrap();
    let thief_dir = thief.path().join("node");
    std::fs::create_dir_all(&thief_dir).unwrap();
    std::fs::copy(&store, thief_dir.join("shares.redb")).unwrap();
    let (mut child, port) = nodes::start_in(&thief_dir, office.address(), &[]).await;
    let thief_ref = ShareNodeRef::discover(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    assert_ne!(thief_ref.address, refs[0].address, "another node key");
    let r = nodes::release(&office, &thief_ref, &patient, id).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 500, "{text}");
    assert!(!text.contains(&share_hex));
    child.stop(Duration::from_secs(5)).await;
}

/// #5: to a requester who may not read, "no such record" and "not allowed" are one answer, and
/// their requests write nothing (no nonce is remembered for them).
#[tokio::test]
async fn a_requester_who_may_not_read_learns_nothing_and_writes_nothing() {
    let office = common::office().await;
    let procs = nodes::start_many(office.address(), 3, &[]).await;
    let refs = nodes::refs(&procs).await;
    let (patient, addr) = common::new_patient(&office).await;
    let id = nodes::client(&office, &patient, &refs)
        .put(addr, Bytes::from_static(b"lab report"), "text/plain", None)
        .await
        .unwrap();
    let nonces_before = nodes::health(&refs[0].url).await["nonces"]
        .as_u64()
        .unwrap();
    let stranger = PrivateKeySigner::random();
    let unknown = RecordId::random();
    let a = nodes::release(&office, &refs[0], &stranger, id).await;
    let b = nodes::release(&office, &refs[0], &stranger, unknown).await;
    assert_eq!(
        (a.status(), b.status()),
        (403.try_into().unwrap(), 403.try_into().unwrap())
    );
    let a = a.text().await.unwrap().replace(&id.to_string(), "ID");
    let b = b.text().await.unwrap().replace(&unknown.to_string(), "ID");
    assert_eq!(a, b, "the same answer for a real and an unknown record");
    assert_eq!(
        nodes::health(&refs[0].url).await["nonces"]
            .as_u64()
            .unwrap(),
        nonces_before,
        "refused requests leave no trace in the store"
    );
}

/// #5: per-requester rate limits (429 + Retry-After), a quota of unanchored deposits per
/// uploader, deposits never anchored are collected, and spent nonces are pruned.
#[tokio::test]
async fn share_nodes_limit_requests_and_collect_what_is_never_anchored() {
    let office = common::office().await;
    let node = nodes::start(
        office.address(),
        &[
            "--burst",
            "3",
            "--per-minute",
            "6",
            "--deposit-quota",
            "2",
            "--unanchored-ttl-secs",
            "1",
            "--sweep-secs",
            "1",
        ],
    )
    .await;
    let r = nodes::refs(std::slice::from_ref(&node)).await.remove(0);
    // A burst of requests from one requester: three answered, then 429 with Retry-After.
    let flooder = PrivateKeySigner::random();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let resp = nodes::release(&office, &r, &flooder, RecordId::random()).await;
        if resp.status() == 429 {
            retry_after = resp.headers().get("retry-after").cloned();
        }
        statuses.push(resp.status().as_u16());
    }
    // Three answered (refused: the flooder may read nothing), then throttled.
    assert_eq!(statuses[..3], [403, 403, 403], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    let secs: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&secs), "{secs}");

    // Two unanchored deposits per uploader, then 429 naming the quota.
    let (patient, addr) = common::new_patient(&office).await;
    for expected in [200u16, 200, 429] {
        let (id, body) = deposit(&office, &r, &patient, addr, 2);
        let resp = put(&r, id, &body).await;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, expected, "{text}");
        if expected == 429 {
            assert!(text.contains("quota 2"), "{text}");
        }
    }
    // Never anchored: collected after the deadline; the nonces go once their deadline passed.
    let h = nodes::health(&r.url).await;
    assert_eq!(
        (h["shares"].as_u64(), h["unanchored"].as_u64()),
        (Some(2), Some(2))
    );
    let url = r.url.clone();
    let collected = nodes::wait_until(Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let h = nodes::health(&url).await;
            h["shares"] == 0 && h["unanchored"] == 0 && h["nonces"] == 0
        }
    })
    .await;
    assert!(collected, "{}", nodes::health(&r.url).await);
}

/// #8: the chain confirms no guesses: the anchored digest of a low-entropy FHIR value matches
/// no candidate's sha256 (it is keyed by a secret inside the sealed block), while the reader
/// still checks the content against it.
#[tokio::test]
async fn the_anchor_confirms_no_guesses() {
    let office = common::office().await;
    let procs = nodes::start_many(office.address(), 3, &[]).await;
    let refs = nodes::refs(&procs).await;
    let (patient, addr) = common::new_patient(&office).await;
    let doc = |v: u32| {
        format!(
            r#"{{"resourceType":"Observation","status":"final","code":{{"text":"HbA1c"}},"valueQuantity":{{"value":{v},"unit":"mmol/mol"}}}}"#
        )
    };
    let c = nodes::client(&office, &patient, &refs);
    let id = c
        .put(addr, Bytes::from(doc(57)), FHIR_JSON, None)
        .await
        .unwrap();
    let anchor = c.directory().locate(id).await.unwrap().proof;
    let guesses: Vec<u32> = (0..=300)
        .filter(|v| {
            B256::from(<[u8; 32]>::from(Sha256::digest(doc(*v).as_bytes()))) == anchor.digest
        })
        .collect();
    assert!(guesses.is_empty(), "the anchor confirms {guesses:?}");
    let got = c.get(id).await.unwrap();
    assert_eq!(got.data, doc(57).as_bytes());
    assert_eq!(got.block.digest_of(&got.data).unwrap(), anchor.digest);
}

/// #2: a share node serves one deployment: its folder refuses another contract, requests signed
/// for another deployment are refused, and when the contract at its address is replaced (a
/// reset chain with a redeployment at the same address) it stops serving at once and refuses
/// to start again on that folder.
#[tokio::test]
async fn share_nodes_serve_one_deployment() {
    let office = common::office().await;
    // A deployment of this test's own, so its code can be replaced without touching the others.
    let deployer = common::funded().await;
    let (b, _) = EhrChain::deploy(&common::rpc(), deployer.clone(), deployer.address())
        .await
        .unwrap();
    let node = nodes::start(b.address(), &["--sweep-secs", "1"]).await;
    let r = nodes::refs(std::slice::from_ref(&node)).await.remove(0);
    let patient = common::funded().await;
    let addr = common::unique_patient();
    b.issue_patient(addr, patient.address()).await.unwrap();
    let (id, body) = deposit(&b, &r, &patient, addr, 60);
    assert_eq!(put(&r, id, &body).await.status(), 200);
    let as_patient = b.with_signer(&common::rpc(), patient.clone()).unwrap();
    let leaf = ehr_share::chain::merkle::leaf(id, addr, patient.address(), B256::repeat_byte(9));
    assert_eq!(
        nodes::present(&r, id, leaf, &[]).await.status(),
        409,
        "a root that is not anchored is refused"
    );
    as_patient.anchor_root(leaf, 1).await.unwrap();
    assert_eq!(nodes::present(&r, id, leaf, &[]).await.status(), 200);
    assert_eq!(nodes::release(&b, &r, &patient, id).await.status(), 200);

    // Signed for the shared deployment (another contract): refused.
    let wrong = nodes::release_body(&office, &r, &patient, id, 60);
    let resp = reqwest::Client::new()
        .post(format!("{}/shares/{id}/release", r.url))
        .json(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // The contract at the address is replaced by another deployment's code (same storage, so
    // the patient and the anchor are still "there"): the node stops serving.
    let other_deployer = common::funded().await;
    let (c, _) = EhrChain::deploy(
        &common::rpc(),
        other_deployer.clone(),
        other_deployer.address(),
    )
    .await
    .unwrap();
    let p = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
    let code = p.get_code_at(c.address()).await.unwrap();
    p.anvil_set_code(b.address(), code).await.unwrap();
    let url = r.url.clone();
    let halted = nodes::wait_until(Duration::from_secs(20), || {
        let url = url.clone();
        async move { nodes::health(&url).await["serving"] == false }
    })
    .await;
    assert!(halted);
    assert_eq!(nodes::release(&b, &r, &patient, id).await.status(), 503);

    // Restarted on its folder, it refuses: the folder belongs to the old deployment.
    let dir = node.dir.clone();
    let mut node = node;
    node.child.stop(Duration::from_secs(5)).await;
    let err = nodes::refusal_to_start(&dir, b.address()).await;
    assert!(err.contains("belongs to"), "{err}");
    // And a folder of one deployment never serves another contract.
    let shared = nodes::start(office.address(), &[]).await;
    let shared_dir = shared.dir.clone();
    let mut shared = shared;
    shared.child.stop(Duration::from_secs(5)).await;
    let err = nodes::refusal_to_start(&shared_dir, c.address()).await;
    assert!(err.contains("belongs to"), "{err}");
}

/// #9: whatever an uploader claims a record is, the REST API never lets a browser render it in
/// the gateway's origin; FHIR stays inline JSON, everything else is a download.
#[tokio::test]
async fn downloads_never_render_in_the_gateway_origin() {
    let office = common::office().await;
    let procs = nodes::start_many(office.address(), 3, &[]).await;
    let refs = nodes::refs(&procs).await;
    let (patient, addr) = common::new_patient(&office).await;
    let mut keyring = Keyring::default();
    keyring.insert("tok-p", patient.clone());
    let url = nodes::gateway_with_records(&office, keyring, refs).await;
    let http = reqwest::Client::new();
    for (media, body, attachment) in [
        ("text/html", "<script>alert(document.cookie)</script>", true),
        (
            FHIR_JSON,
            r#"{"resourceType":"Observation","status":"final","code":{"text":"x"}}"#,
            false,
        ),
    ] {
        let r: serde_json::Value = http
            .post(format!("{url}/records?patient={addr}"))
            .bearer_auth("tok-p")
            .header("content-type", media)
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["record"].as_str().unwrap();
        let resp = http
            .get(format!("{url}/records/{id}"))
            .bearer_auth("tok-p")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("sandbox")
        );
        assert_eq!(
            h.get("content-disposition")
                .is_some_and(|v| v.to_str().unwrap().starts_with("attachment")),
            attachment,
            "{media}"
        );
    }
}

/// #9: the dev chain answers no cross-origin browser calls (a page the developer visits cannot
/// use anvil's admin RPC).
#[tokio::test]
async fn the_dev_chain_refuses_cross_origin_calls() {
    let http = reqwest::Client::new();
    let rpc = common::rpc();
    let r = http
        .post(&rpc)
        .header("origin", "http://evil.example")
        .json(&serde_json::json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = http
        .request(reqwest::Method::OPTIONS, &rpc)
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

// ------------------------------------------------------------------ web limits (#5)

use common::web::{Web, browser, form_token, login};

async fn web(upload_slots: usize) -> Web {
    Web::start(None, upload_slots).await
}

/// #5: logins need the form's token, back off per account (a lockout even for the right
/// password) and per client address, and cost an unknown name as much as a known one.
#[tokio::test]
async fn logins_are_guarded() {
    let w = web(4).await;
    let (alice, _) = w
        .accounts
        .create(
            "alice",
            "alice's long password",
            ehr_share::web::Role::Provider,
            None,
            None,
        )
        .await
        .unwrap();
    // #3: the web app's keys are in a private database file, under a strong password KDF.
    let root = w.dir.path().join("web");
    assert_eq!((mode(&root), mode(&root.join("ehr.db"))), (0o700, 0o600));
    let row = w.accounts.db().account("alice").await.unwrap().unwrap();
    assert_eq!(row.address, alice.address.to_checksum(None));
    let ks: serde_json::Value = serde_json::from_str(&row.keystore).unwrap();
    assert_eq!(ks["crypto"]["kdfparams"]["n"], 1 << 17);
    let c = browser();
    // No token, or a token of another browser: refused before any password check.
    let other = browser();
    let foreign = form_token(&other, &w.url, "/").await;
    let r = login(&c, &w.url, &foreign, "alice", "alice's long password").await;
    assert_eq!(r.status(), 403);
    let token = form_token(&c, &w.url, "/").await;
    // An unknown name runs the password KDF like a known one (no user-name oracle).
    let runs = w.accounts.kdf_runs();
    let r = login(&c, &w.url, &token, "nobody-here", "whatever password").await;
    assert_eq!(r.status(), 401);
    let unknown_text = r.text().await.unwrap();
    assert_eq!(w.accounts.kdf_runs(), runs + 1);
    let r = login(&c, &w.url, &token, "alice", "wrong password!").await;
    assert_eq!(r.status(), 401);
    assert_eq!(w.accounts.kdf_runs(), runs + 2);
    assert!(unknown_text.contains("unknown user or wrong password"));
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("unknown user or wrong password")
    );
    // Four more wrong tries exhaust the account's five; then even the right password waits.
    for _ in 0..4 {
        assert_eq!(
            login(&c, &w.url, &token, "alice", "wrong again!!")
                .await
                .status(),
            401
        );
    }
    let r = login(&c, &w.url, &token, "alice", "alice's long password").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert!(r.text().await.unwrap().contains("too many attempts"));
    // Failures from one client do not lock the account for others: from another address
    // (127.0.0.2), the owner still gets in.
    let owner = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let owner_token = form_token(&owner, &w.url, "/").await;
    let r = login(
        &owner,
        &w.url,
        &owner_token,
        "alice",
        "alice's long password",
    )
    .await;
    assert_eq!(
        r.status(),
        303,
        "the owner is not locked out by someone else's failures"
    );
    // From one client address, names rotate but the address runs out (30 at once).
    let mut last = 0;
    for i in 0..40 {
        last = login(&c, &w.url, &token, &format!("user{i}"), "some password")
            .await
            .status()
            .as_u16();
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429, "the client address is limited");
}

/// #5: sign-ups are limited per client address, form bodies are capped to what a form needs,
/// and cookies are `Secure` behind HTTPS.
#[tokio::test]
async fn sign_ups_and_forms_are_bounded() {
    let w = web(4).await;
    let c = browser();
    let token = form_token(&c, &w.url, "/signup").await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let pid = (rand_core::OsRng.next_u64() >> 2).to_string();
        let r = c
            .post(format!("{}/signup", w.url))
            .header("x-forwarded-proto", "https")
            .form(&[
                ("form_token", token.as_str()),
                ("username", &format!("sign{i}-{}", &pid[..6])),
                ("password", "a long enough password"),
                ("role", "patient"),
                ("aid", "77"),
                ("pid", &pid),
            ])
            .send()
            .await
            .unwrap();
        if r.status() == 303 {
            let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
            assert!(cookie.contains("Secure"), "{cookie}");
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, vec![303, 303, 303, 303, 303, 429]);
    // A login form of 100 KiB is refused before anything reads it.
    let big = "x".repeat(100 * 1024);
    let r = c
        .post(format!("{}/login", w.url))
        .form(&[
            ("form_token", token.as_str()),
            ("username", "a"),
            ("password", &big),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

/// A sign-up the browser sends again (its answer was lost) finds its name taken, and the page
/// says the account was made and to log in, rather than only that the name is taken.
#[tokio::test]
async fn a_sign_up_sent_again_points_to_the_login() {
    let w = web(4).await;
    let c = browser();
    let token = form_token(&c, &w.url, "/signup").await;
    let pid = (rand_core::OsRng.next_u64() >> 2).to_string();
    let user = format!("again-{}", &pid[..6]);
    let form = [
        ("form_token", token.as_str()),
        ("username", user.as_str()),
        ("password", "a long enough password"),
        ("role", "patient"),
        ("aid", "78"),
        ("pid", pid.as_str()),
    ];
    let first = c
        .post(format!("{}/signup", w.url))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 303);
    let again = c
        .post(format!("{}/signup", w.url))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let page = again.text().await.unwrap();
    assert!(page.contains("your account was made: log in"), "{page}");
}

/// #5: uploads in flight are capped by a memory budget (of declared sizes; an upload that
/// declares none is charged the full limit); one more gets 503 with Retry-After instead of more
/// memory.
#[tokio::test]
async fn uploads_in_flight_are_capped() {
    let w = web(1).await;
    // An upload that holds the whole budget: it declares no size (chunked), and its body
    // never finishes until we say so.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    tx.send(Ok(vec![b'x'; 1024])).await.unwrap();
    let url = w.url.clone();
    let slow = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{url}/records?patient=1-1"))
            .bearer_auth("tok-uploader")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
    });
    let http = reqwest::Client::new();
    let refused = nodes::wait_until(Duration::from_secs(10), || {
        let http = http.clone();
        let url = w.url.clone();
        async move {
            let r = http
                .post(format!("{url}/records?patient=1-1"))
                .body("tiny")
                .send()
                .await
                .unwrap();
            r.status() == 503
                && r.headers().get("retry-after").is_some()
                && r.text().await.unwrap().contains("too many uploads")
        }
    })
    .await;
    assert!(
        refused,
        "a second upload is refused while the first holds the only slot"
    );
    // The web form shares the same slots.
    let r = http
        .post(format!("{}/patient/upload", w.url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    tx.send(Ok(vec![b'x'; 1024])).await.unwrap();
    drop(tx);
    let first = slow.await.unwrap().unwrap();
    // It went on to the handler (this gateway has no share nodes, so that is its answer).
    let text = first.text().await.unwrap();
    assert!(text.contains("no share nodes configured"), "{text}");

    // Small uploads that declare their size are charged only that (at least 256 KiB): three
    // held open at once all reach the handler, where one slot refused two of them.
    let mut held = Vec::new();
    for _ in 0..3 {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
        tx.send(Ok(vec![b'x'; 1024])).await.unwrap();
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let url = w.url.clone();
        let task = tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/records?patient=1-1"))
                .bearer_auth("tok-uploader")
                .header("content-length", "2048")
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await
        });
        held.push((tx, task));
    }
    // Once they hold their charge, an upload of undeclared size no longer fits; a small one
    // still does.
    let full_refused = nodes::wait_until(Duration::from_secs(10), || {
        let http = http.clone();
        let url = w.url.clone();
        async move {
            let chunked = futures::stream::once(async { Ok::<_, std::io::Error>(b"x".to_vec()) });
            let r = http
                .post(format!("{url}/records?patient=1-1"))
                .body(reqwest::Body::wrap_stream(chunked))
                .send()
                .await
                .unwrap();
            r.status() == 503
        }
    })
    .await;
    assert!(full_refused, "the held uploads take part of the budget");
    let r = http
        .post(format!("{}/records?patient=1-1", w.url))
        .bearer_auth("tok-uploader")
        .body("tiny")
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("no share nodes configured"), "{text}");
    for (tx, task) in held {
        tx.send(Ok(vec![b'x'; 1024])).await.unwrap();
        drop(tx);
        let r = task.await.unwrap().unwrap();
        let text = r.text().await.unwrap();
        assert!(text.contains("no share nodes configured"), "{text}");
    }
}

/// #9: personal API tokens: created in the web app (shown once), accepted by the REST API as
/// the user, refused once revoked.
#[tokio::test]
async fn personal_api_tokens_work_until_revoked() {
    let w = web(4).await;
    let (tina, _) = w
        .accounts
        .create(
            "tina",
            "tina's long password",
            ehr_share::web::Role::Provider,
            None,
            None,
        )
        .await
        .unwrap();
    let c = browser();
    let token = form_token(&c, &w.url, "/").await;
    assert_eq!(
        login(&c, &w.url, &token, "tina", "tina's long password")
            .await
            .status(),
        303
    );
    let csrf = common::web::csrf(&c, &w.url, "/tokens").await;
    // The password is asked again: a stolen session alone makes no token.
    let r = common::web::post_token(&c, &w.url, &csrf, "x", "not it").await;
    assert_eq!(r.status(), 403);
    let api_token =
        common::web::create_token(&c, &w.url, &csrf, "nightly export", "tina's long password")
            .await;
    assert!(api_token.starts_with("ehr_"), "{api_token}");
    let me = |t: String| {
        let url = w.url.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{url}/api/me"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
        }
    };
    let r = me(api_token.clone()).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["account"].as_str().unwrap().to_lowercase(),
        tina.address.to_string().to_lowercase()
    );
    // Shown once: the list shows only its id.
    let list = c
        .get(format!("{}/tokens", w.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains("nightly export") && !list.contains(&api_token));
    let id = &api_token[4..12];
    let r = c
        .post(format!("{}/tokens/revoke", w.url))
        .form(&[("csrf", csrf.as_str()), ("id", id)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(me(api_token).await.status(), 401);
}

/// Contract issue, migration: a deployment of another contract version is refused by the
/// client (so by the gateway) and by a share node, with a message naming both versions. The
/// contract here answers 3 (the previous version) to every call.
#[tokio::test]
async fn a_deployment_of_another_contract_version_is_refused() {
    let office = common::office().await;
    let p = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
    let old = alloy::primitives::Address::repeat_byte(0x3e);
    // PUSH1 3 PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN: every call returns the word 3.
    let code = alloy::primitives::Bytes::from_static(&[
        0x60, 0x03, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3,
    ]);
    p.anvil_set_code(old, code).await.unwrap();
    let mut d = office.deployment();
    d.address = old;
    d.deployment_id = B256::ZERO;
    let e = EhrChain::connect(&common::rpc(), None, &d)
        .await
        .unwrap_err();
    let words = e.to_string();
    assert!(
        words.contains("version 3")
            && words.contains(&format!(
                "needs version {}",
                ehr_share::chain::CONTRACT_VERSION
            )),
        "{words}"
    );
    let dir = tempfile::tempdir().unwrap();
    let said = nodes::refusal_to_start(dir.path(), old).await;
    assert!(said.contains("version 3"), "{said}");
    // An address without code is said to be no contract (the client asks its four questions
    // at once; the first still decides), and a deployment on another chain id is refused.
    let mut empty = office.deployment();
    empty.address = alloy::primitives::Address::repeat_byte(0x3f);
    let e = EhrChain::connect(&common::rpc(), None, &empty)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ehr_share::chain::ChainError::NoContract(a) if a == empty.address),
        "{e}"
    );
    let mut elsewhere = office.deployment();
    elsewhere.chain_id = 5;
    let e = EhrChain::connect(&common::rpc(), None, &elsewhere)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ehr_share::chain::ChainError::WrongDeployment(ref m) if m.contains("chain id")),
        "{e}"
    );
}

/// Break-glass opens a chart for reading only: a provider who broke the glass (after the
/// patient revoked them, or never granted) cannot add a record to it; every share node
/// refuses the deposit, nothing is listed, and with a grant the same provider can.
#[tokio::test]
async fn break_glass_never_lets_a_provider_write_into_a_chart() {
    let office = common::office().await;
    let procs = nodes::start_many(office.address(), 3, &[]).await;
    let refs = nodes::refs(&procs).await;
    let (patient, addr) = common::new_patient(&office).await;
    let doctor = common::funded().await;
    let d = common::as_(&office, &doctor);
    d.register_provider().await.unwrap();
    office.verify_provider(doctor.address()).await.unwrap();
    d.break_glass(addr, EmergencyReason::Etreat).await.unwrap();
    let (reason, emergency) = office.check_access(addr, doctor.address()).await.unwrap();
    assert_eq!((reason, emergency), (DenyReason::None, true));
    let err = nodes::client(&office, &doctor, &refs)
        .put(
            addr,
            Bytes::from_static(b"planted note"),
            "text/plain",
            None,
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("break-glass access opens reading only"),
        "every node refuses the write: {text}"
    );
    let own = nodes::client(&office, &patient, &refs);
    let dir = own.directory();
    assert!(
        dir.list(addr).await.unwrap().is_empty(),
        "nothing was added to the chart"
    );
    // Under a grant the same provider may add a record.
    common::as_(&office, &patient)
        .grant(doctor.address(), None)
        .await
        .unwrap();
    nodes::client(&office, &doctor, &refs)
        .put(addr, Bytes::from_static(b"visit note"), "text/plain", None)
        .await
        .unwrap();
    assert_eq!(dir.list(addr).await.unwrap().len(), 1);
}

/// (Scale-out issue, "shares never travel in clear") A sniffer between a reader and a share
/// node, or a proxy that terminates TLS, sees the released share only sealed to the
/// requester's key (ECIES to the key recovered from the signed request, bound to the record,
/// the node and the request's nonce): the patient's read through it works, the share is
/// nowhere in the captured bytes, and the sealed share opens for no other key.
#[tokio::test]
async fn a_released_share_opens_only_for_its_requester_and_a_sniffer_sees_ciphertext() {
    let office = common::office().await;
    let procs = nodes::start_many(office.address(), 3, &[]).await;
    let mut refs = nodes::refs(&procs).await;
    let (patient, addr) = common::new_patient(&office).await;
    let id = nodes::client(&office, &patient, &refs)
        .put(
            addr,
            Bytes::from_static(b"sniffed record"),
            "text/plain",
            None,
        )
        .await
        .unwrap();
    let (proxy, seen) =
        nodes::sniffing_proxy(refs[0].url.trim_start_matches("http://").to_owned()).await;
    refs[0].url = format!("http://{proxy}");
    // The patient reads through the proxy.
    let got = nodes::client(&office, &patient, &refs)
        .get(id)
        .await
        .unwrap();
    assert_eq!(got.data, b"sniffed record");
    // A raw release through the proxy: the share opens for the patient only.
    let (status, opened) = nodes::release_opened(&office, &refs[0], &patient, id).await;
    assert_eq!(status, 200);
    let (released, share) = opened.unwrap();
    let captured = seen.lock().unwrap().clone();
    assert!(captured.len() > 1000, "the proxy saw the traffic");
    assert!(
        !contains(&captured, hex::encode(&share).as_bytes()),
        "the share travels in clear (hex)"
    );
    assert!(
        !contains(&captured, &share[1..]),
        "the share travels in clear (bytes)"
    );
    let sealed = hex::decode(released["share"].as_str().unwrap()).unwrap();
    let stranger = k256::SecretKey::random(&mut rand_core::OsRng);
    for nonce in [U256::ZERO, U256::from(1)] {
        let aad = ehr_share::share_node::share_aad(id.0, refs[0].address, nonce);
        assert!(ehr_share::crypto::open_with(&stranger, &aad, &sealed).is_err());
    }
}

/// An upload (3 of 3 nodes) where one node has a chain-lag bound of 2 s: it takes a deposit
/// and a proof only on a head at most that old, and on a busy machine the chain may have been
/// idle that long, so a fresh block comes first, and a refused upload is tried again.
async fn upload_on_a_fresh_head(
    office: &EhrChain,
    patient: &PrivateKeySigner,
    addr: PatientAddr,
    refs: &[ShareNodeRef],
) -> RecordId {
    for _ in 0..5 {
        common::mine_block().await;
        match nodes::client(office, patient, refs)
            .put(
                addr,
                Bytes::from_static(b"a bounded view"),
                "text/plain",
                None,
            )
            .await
        {
            Ok(id) => return id,
            Err(e) => eprintln!("upload refused ({e}); again"),
        }
    }
    panic!("no upload found the bounded node's view fresh in 5 tries");
}

/// A share node whose chain endpoint refuses JSON-RPC batch requests (some hosted endpoints
/// and proxies do) asks the same calls one at a time: it takes the deposits and proofs of an
/// upload (3 of 3 nodes, two of them on that endpoint, one with a lag bound, which asks for
/// the head and the finalized block together), releases to a granted doctor, and refuses a
/// stranger. Before, such a node answered 503 to every deposit and release it judged in a
/// batch.
#[tokio::test]
async fn a_node_on_an_endpoint_that_refuses_batches_judges_call_by_call() {
    let office = common::office().await;
    let (rpc, refused) = nodes::unbatched_rpc(common::rpc()).await;
    let procs = [
        nodes::start_on(&rpc, office.address(), &["--max-chain-lag-secs", "60"]).await,
        nodes::start_on(&rpc, office.address(), &[]).await,
        nodes::start(office.address(), &[]).await,
    ];
    let refs = nodes::refs(&procs).await;
    let (patient, addr) = common::new_patient(&office).await;
    let id = upload_on_a_fresh_head(&office, &patient, addr, &refs).await;
    let doctor = common::verified_doctor(&office).await;
    common::as_(&office, &patient)
        .grant(doctor.address(), None)
        .await
        .unwrap();
    let access = common::as_(&office, &doctor)
        .access(addr, &[id])
        .await
        .unwrap();
    let stranger = common::verified_doctor(&office).await;
    for node in &refs[..2] {
        let r = nodes::release_under(&office, node, &doctor, id, access.tx.tx_hash).await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        let r = nodes::release_under(&office, node, &stranger, id, access.tx.tx_hash).await;
        assert_eq!(r.status(), 403, "{:?}", r.text().await);
    }
    assert!(
        refused.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the nodes tried a batch"
    );
}

/// A share node whose chain endpoint lags (a replica stuck at a block) would judge on a grant
/// the patient has since revoked. The attack: the doctor keeps asking for the share after the
/// revoke. A node on the stuck endpoint without a bound serves it; a node with
/// `--max-chain-lag-secs 2` on the same endpoint refuses (503) once its view is older than
/// 2 s, and when the endpoint catches up it refuses as revoked (403).
#[tokio::test]
async fn a_node_on_a_lagging_chain_endpoint_stops_judging_within_its_bound() {
    let office = common::office().await;
    let (rpc, frozen) = nodes::lagging_rpc(common::rpc(), nodes::Stuck::All).await;
    let bounded = nodes::start_on(&rpc, office.address(), &["--max-chain-lag-secs", "2"]).await;
    let unbounded = nodes::start_on(&rpc, office.address(), &[]).await;
    let direct = nodes::start(office.address(), &[]).await;
    let procs = [bounded, unbounded, direct];
    let refs = nodes::refs(&procs).await;
    let (patient, addr) = common::new_patient(&office).await;
    let id = upload_on_a_fresh_head(&office, &patient, addr, &refs).await;
    let doctor = common::verified_doctor(&office).await;
    let d = common::as_(&office, &doctor);
    let p = common::as_(&office, &patient);
    p.grant(doctor.address(), None).await.unwrap();
    let access = d.access(addr, &[id]).await.unwrap();
    assert_eq!(access.allowed, vec![id]);
    let release = |node: usize| {
        let (office, node, doctor) = (office.clone(), refs[node].clone(), doctor.clone());
        let tx = access.tx.tx_hash;
        async move {
            let r = nodes::release_under(&office, &node, &doctor, id, tx).await;
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    // The bounded node judges only on a head at most 2 s old: a busy machine can take that
    // long between blocks here, so a fresh one is made until it judges.
    let judged = |node: usize| {
        let release = &release;
        async move {
            for _ in 0..20 {
                let (status, text) = release(node).await;
                if status != 503 {
                    return (status, text);
                }
                common::mine_block().await;
                // The node asks for the head's time at most every 500 ms.
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            panic!("node {node} never judged on a fresh view");
        }
    };
    for node in 0..3 {
        assert_eq!(judged(node).await.0, 200, "granted: node {node} releases");
    }

    // The endpoint sticks at the current block; the patient revokes on the real chain.
    let head = office.provider().get_block_number().await.unwrap();
    *frozen.lock().unwrap() = Some(head);
    let head_time = office
        .provider()
        .get_block_by_number(head.into())
        .await
        .unwrap()
        .unwrap()
        .header
        .timestamp;
    let frozen_at = nodes::now();
    p.revoke(doctor.address()).await.unwrap();
    assert_eq!(
        release(2).await.0,
        403,
        "the up-to-date node refuses at once"
    );
    assert_eq!(
        release(1).await.0,
        200,
        "the stuck view still shows the grant: the hazard this bound closes"
    );
    // Within 2 s of the stuck head's time (and the half second the node keeps it) the
    // bounded node may still judge on it; after that it must refuse to judge at all.
    loop {
        let (status, text) = release(0).await;
        if status == 503 && text.contains("view of the chain") {
            break;
        }
        // A head ahead of the wall clock (geth under load) stays fresh until the clock
        // passes it; 5 s of slack for a busy machine.
        assert!(
            nodes::now() <= head_time.max(frozen_at) + 2 + 5,
            "the bounded node kept judging ({status}) on a view stuck at {head_time}, now {}",
            nodes::now()
        );
        if status != 503 {
            assert_eq!(status, 200, "{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(release(1).await.0, 200, "the unbounded node still serves");

    // The endpoint catches up: the bounded node judges again, on the revoke.
    *frozen.lock().unwrap() = None;
    let (status, text) = judged(0).await;
    assert_eq!(status, 403, "{text}");
}

/// Attack 22 behind a load balancer over chain replicas: the share node's head check reaches an
/// up-to-date replica, and its judging calls one stuck before the patient's revoke. The node
/// judges at the head it checked (by number), which the stuck replica does not have: after the
/// revoke it refuses (the call fails) instead of releasing on the stuck state. Judged at
/// "latest", the stuck replica would answer with the grant in force, and the node released.
#[tokio::test]
async fn a_node_whose_head_check_and_calls_reach_different_replicas_judges_at_the_checked_head() {
    let office = common::office().await;
    let (rpc, frozen) = nodes::lagging_rpc(common::rpc(), nodes::Stuck::AllButHead).await;
    let bounded = nodes::start_on(&rpc, office.address(), &["--max-chain-lag-secs", "2"]).await;
    let procs = [
        bounded,
        nodes::start(office.address(), &[]).await,
        nodes::start(office.address(), &[]).await,
    ];
    let refs = nodes::refs(&procs).await;
    let (patient, addr) = common::new_patient(&office).await;
    let id = upload_on_a_fresh_head(&office, &patient, addr, &refs).await;
    let doctor = common::verified_doctor(&office).await;
    let d = common::as_(&office, &doctor);
    let p = common::as_(&office, &patient);
    p.grant(doctor.address(), None).await.unwrap();
    let access = d.access(addr, &[id]).await.unwrap();
    let release = || async {
        let r = nodes::release_under(&office, &refs[0], &doctor, id, access.tx.tx_hash).await;
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    };
    // Granted, on a fresh head: released (a fresh block until the 2 s bound is met).
    let mut granted = false;
    for _ in 0..20 {
        let (status, text) = release().await;
        if status == 200 {
            granted = true;
            break;
        }
        assert_eq!(status, 503, "{text}");
        common::mine_block().await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert!(granted, "the bounded node never released on a fresh view");

    // One replica sticks at the current block; the revoke lands on the others.
    let head = office.provider().get_block_number().await.unwrap();
    *frozen.lock().unwrap() = Some(head);
    p.revoke(doctor.address()).await.unwrap();
    // The node may judge on the head it checked before the revoke for the half second it
    // keeps it; then it sees the new head, and the stuck replica cannot answer at it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut refused = Vec::new();
    while refused.len() < 10 {
        let (status, text) = release().await;
        if status == 200 {
            assert!(
                refused.is_empty() && std::time::Instant::now() < deadline,
                "released after the revoke on the stuck replica's state (after {} refusals)",
                refused.len()
            );
        } else {
            refused.push((status, text));
        }
        // Keep the head fresh, so that the refusal is not the bound's.
        common::mine_block().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Refused because the stuck replica cannot answer at the checked head (503: the chain
    // is unavailable), not by the bound (the head stays fresh) and not judged.
    assert!(
        refused.iter().all(|(s, t)| *s == 503
            && t.contains("not available")
            && !t.contains("view of the chain")),
        "refused as the stuck replica failed, not judged: {refused:?}"
    );
    // Deposits are judged the same way: the stuck replica still shows the doctor's grant,
    // which would let them add to the chart.
    for _ in 0..3 {
        let (did, body) = deposit(&office, &refs[0], &doctor, addr, 60);
        let r = put(&refs[0], did, &body).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(
            status == 503 && text.contains("not available"),
            "deposit after the revoke: {status} {text}"
        );
        common::mine_block().await;
    }

    // The replica catches up: the node judges again, on the revoke.
    *frozen.lock().unwrap() = None;
    let mut last = (0, String::new());
    for _ in 0..20 {
        last = release().await;
        if last.0 == 403 {
            break;
        }
        common::mine_block().await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(last.0, 403, "{}", last.1);
    let (did, body) = deposit(&office, &refs[0], &doctor, addr, 60);
    assert_eq!(put(&refs[0], did, &body).await.status().as_u16(), 403);
}

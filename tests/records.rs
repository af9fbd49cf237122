//! Records end to end on real anvil, real Kubo and five real `ehr share-node` processes.

mod common;

use std::time::Duration;

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use bytes::Bytes;
use ehr_share::chain::{DenyReason, EhrChain, RecordId};
use ehr_share::ipfs::KuboClient;
use ehr_share::records::{RecordError, RecordsClient, ShareNodeRef};
use ehr_share::share_node::{ReleaseBody, ShareRelease, domain, sign};
use ehr_share::stack::{ManagedChild, free_port};
use rand_core::RngCore;

const MARKER: &str = "PLAINTEXT-MARKER-5c1e7a";

struct Node {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<ManagedChild>,
}

async fn start_node(
    port: u16,
    dir: &std::path::Path,
    contract: &str,
    corrupt: bool,
) -> ManagedChild {
    let mut cmd = tokio::process::Command::new(common::ehr_bin());
    cmd.args([
        "share-node",
        "--port",
        &port.to_string(),
        "--rpc-url",
        &common::rpc(),
        "--contract",
        contract,
    ])
    .arg("--data-dir")
    .arg(dir);
    if corrupt {
        cmd.arg("--danger-corrupt-shares");
    }
    common::nodes::spawn_healthy(cmd, port).await
}

async fn client(office: &EhrChain, signer: &PrivateKeySigner, nodes: &[Node]) -> RecordsClient {
    client_hedged(office, signer, nodes, None).await
}

/// [`client`], with a fixed hedge delay when given.
async fn client_hedged(
    office: &EhrChain,
    signer: &PrivateKeySigner,
    nodes: &[Node],
    hedge: Option<Duration>,
) -> RecordsClient {
    let chain = common::as_(office, signer);
    let mut refs = Vec::new();
    for n in nodes {
        let url = format!("http://127.0.0.1:{}", n.port);
        refs.push(ShareNodeRef::discover(&url).await.unwrap_or(ShareNodeRef {
            url,
            address: alloy::primitives::Address::ZERO,
        }));
    }
    let cfg = ehr_share::records::RecordsConfig::new(refs, 3);
    let cfg = match hedge {
        Some(h) => cfg.with_fixed_hedge(h),
        None => cfg,
    };
    cfg.client(
        chain,
        signer.clone(),
        KuboClient::new(&common::stack().kubo.api_url),
    )
    .unwrap()
}

/// Asks every node directly for `id` as `who`; returns the HTTP statuses.
async fn ask_every_node(
    office: &EhrChain,
    who: &PrivateKeySigner,
    id: RecordId,
    nodes: &[ShareNodeRef],
) -> Vec<u16> {
    let dom = domain(common::chain_id(), office.address(), office.deployment_id());
    let mut out = Vec::new();
    for n in nodes {
        let request = ShareRelease {
            recordId: id.0,
            requester: who.address(),
            accessTx: alloy::primitives::B256::ZERO,
            shareNode: n.address,
            nonce: U256::from(rand_core::OsRng.next_u64()),
            deadline: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 60,
        };
        let signature = sign(who, &request, &dom).unwrap();
        let r = reqwest::Client::new()
            .post(format!("{}/shares/{id}/release", n.url))
            .json(&ReleaseBody { request, signature })
            .send()
            .await
            .unwrap();
        out.push(r.status().as_u16());
    }
    out
}

/// Five share nodes, a patient with a FHIR Bundle on them, and four verified doctors: one
/// granted, one never granted, one revoked, one whose grant expires 2 s after it was given.
struct Cast {
    office: EhrChain,
    contract: String,
    nodes: Vec<Node>,
    patient: PrivateKeySigner,
    addr: ehr_share::chain::PatientAddr,
    granted: PrivateKeySigner,
    never: PrivateKeySigner,
    revoked: PrivateKeySigner,
    expiring: PrivateKeySigner,
    bundle: String,
    fhir_id: RecordId,
}

async fn cast() -> Cast {
    let office = common::office().await;
    let contract = office.address().to_string();
    let mut nodes = Vec::new();
    for _ in 0..5 {
        let port = free_port().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let child = start_node(port, dir.path(), &contract, false).await;
        nodes.push(Node {
            port,
            dir,
            child: Some(child),
        });
    }
    let patient = common::funded().await;
    let addr = common::unique_patient();
    office.issue_patient(addr, patient.address()).await.unwrap();
    let mut doctors = Vec::new();
    for _ in 0..4 {
        let d = common::funded().await;
        common::as_(&office, &d).register_provider().await.unwrap();
        office.verify_provider(d.address()).await.unwrap();
        doctors.push(d);
    }
    let expiring = doctors.pop().unwrap();
    let revoked = doctors.pop().unwrap();
    let never = doctors.pop().unwrap();
    let granted = doctors.pop().unwrap();
    let p = common::as_(&office, &patient);
    p.grant(granted.address(), None).await.unwrap();
    p.grant(revoked.address(), None).await.unwrap();
    p.revoke(revoked.address()).await.unwrap();
    let now = office.chain_time().await.unwrap();
    // geth's dev blocks run ahead of the wall clock when several come in one second (each a
    // second after its parent), so other tests' blocks between here and the grant's block can
    // pass a 2 s expiry: a longer one there.
    let short = if common::on_geth() { 20 } else { 2 };
    p.grant(expiring.address(), Some(now + short))
        .await
        .unwrap();
    let bundle = format!(
        r#"{{"resourceType":"Bundle","type":"collection","entry":[{{"resource":{{"resourceType":"Observation","status":"final","note":[{{"text":"{MARKER}"}}]}}}}]}}"#
    );
    let fhir_id = client(&office, &patient, &nodes)
        .await
        .put(
            addr,
            Bytes::from(bundle.clone()),
            "application/fhir+json",
            None,
        )
        .await
        .unwrap();
    Cast {
        office,
        contract,
        nodes,
        patient,
        addr,
        granted,
        never,
        revoked,
        expiring,
        bundle,
        fhir_id,
    }
}

impl Cast {
    async fn refs(&self) -> Vec<ShareNodeRef> {
        let mut v = Vec::new();
        for n in &self.nodes {
            v.push(
                ShareNodeRef::discover(&format!("http://127.0.0.1:{}", n.port))
                    .await
                    .unwrap(),
            );
        }
        v
    }

    async fn client(&self, who: &PrivateKeySigner) -> RecordsClient {
        client(&self.office, who, &self.nodes).await
    }
}

/// A FHIR Bundle and a 20 MiB file read back byte-identical for a granted doctor; invalid FHIR
/// is refused before anything is stored; Kubo holds only ciphertext.
#[tokio::test]
async fn records_read_back_byte_identical_and_ipfs_holds_only_ciphertext() {
    let c = cast().await;
    let pc = c.client(&c.patient).await;
    let mut big = vec![0u8; 20 << 20];
    rand_core::OsRng.fill_bytes(&mut big);
    big[1000..1000 + MARKER.len()].copy_from_slice(MARKER.as_bytes());
    let file_id = pc
        .put(
            c.addr,
            Bytes::from(big.clone()),
            "application/octet-stream",
            Some("scan.bin".into()),
        )
        .await
        .unwrap();
    let invalid = pc
        .put(
            c.addr,
            Bytes::from_static(br#"{"resourceType":"Nope"}"#),
            "application/fhir+json",
            None,
        )
        .await;
    assert!(matches!(invalid, Err(RecordError::InvalidFhir(_))));

    let gc = c.client(&c.granted).await;
    let r = gc.get(c.fhir_id).await.unwrap();
    assert_eq!(r.data, c.bundle.as_bytes());
    let r = gc.get(file_id).await.unwrap();
    assert!(r.data == big, "20 MiB file differs");
    assert_eq!(r.block.file_name.as_deref(), Some("scan.bin"));

    // The raw ciphertext on Kubo, read by the real daemon's CLI, has no plaintext in it.
    let raw = std::process::Command::new(common::root().join(".tools/bin/ipfs"))
        .env("IPFS_PATH", &common::stack().kubo.repo)
        .args(["cat", &r.block.cid])
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert!(raw.stdout.len() >= 20 << 20);
    assert!(
        !raw.stdout
            .windows(MARKER.len())
            .any(|w| w == MARKER.as_bytes()),
        "plaintext marker found in IPFS content"
    );
}

/// Not granted, revoked, expired: denied by the contract, and by every share node directly.
#[tokio::test]
async fn denied_requesters_are_refused_by_the_contract_and_every_node() {
    let c = cast().await;
    // The expiring grant lapses by the chain's clock: wait for that, not for a fixed time
    // (other tests of this binary may move the clock too).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while c
        .office
        .check_access(c.addr, c.expiring.address())
        .await
        .unwrap()
        .0
        != DenyReason::Expired
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the 2 s grant never expired"
        );
        // A block at the wall clock's time (automine makes blocks only for transactions).
        common::mine_block().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refs = c.refs().await;
    for (who, why) in [
        (&c.never, DenyReason::NoGrant),
        (&c.revoked, DenyReason::Revoked),
        (&c.expiring, DenyReason::Expired),
    ] {
        // Twice: the second time a revoke is told apart from what the index holds already
        // (no catch-up), and a grant never given must still not read as revoked.
        for _ in 0..2 {
            match c.client(who).await.get(c.fhir_id).await {
                Err(RecordError::Denied(id, reason)) => {
                    assert_eq!((id, reason), (c.fhir_id, why))
                }
                other => panic!("expected denial {why:?}, got {other:?}"),
            }
        }
        assert_eq!(
            ask_every_node(&c.office, who, c.fhir_id, &refs).await,
            vec![403; 5],
            "{why:?}"
        );
    }
}

/// Denied reads of one doctor that arrive together are each on the patient's trail with a
/// running count of their own, however many transactions carried them (the gateway sends
/// the attempts that wait behind one denial's transaction together in the next).
#[tokio::test]
async fn denials_that_arrive_together_are_each_on_the_trail() {
    const READS: usize = 12;
    let c = cast().await;
    let me = c.never.address();
    let reader = c.client(&c.never).await;
    let reads = futures::future::join_all((0..READS).map(|_| reader.get(c.fhir_id))).await;
    for r in reads {
        match r {
            Err(RecordError::Denied(id, why)) => {
                assert_eq!((id, why), (c.fhir_id, DenyReason::NoGrant))
            }
            other => panic!("expected a denial, got {other:?}"),
        }
    }
    // Each read returned once its attempt was in the node's pool; mined shortly after.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let denied: Vec<(u32, Option<alloy::primitives::B256>)> = c
            .office
            .audit_for_patient(c.addr, 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.kind {
                ehr_share::chain::AuditKind::AccessDenied {
                    provider,
                    record,
                    denied_count,
                    ..
                } if provider == me => {
                    assert_eq!(record, c.fhir_id);
                    Some((denied_count, e.tx_hash))
                }
                _ => None,
            })
            .collect();
        assert!(
            denied.len() <= READS,
            "more denials than attempts: {denied:?}"
        );
        if denied.len() == READS {
            let mut counts: Vec<u32> = denied.iter().map(|(n, _)| *n).collect();
            counts.sort_unstable();
            assert_eq!(counts, (1..=READS as u32).collect::<Vec<_>>());
            let txs: std::collections::HashSet<_> = denied.iter().map(|(_, tx)| *tx).collect();
            eprintln!("{READS} denials in {} transactions", txs.len());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {READS} denials on the trail",
            denied.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The doctor's access transaction for a record, reused for re-reads, stops opening it the
/// moment the grant ends: the nodes judge it against the grant of now. The read after the
/// revoke is denied (not a share failure) and the attempt is on the patient's trail; given
/// again, the grant opens the record with a new transaction.
#[tokio::test]
async fn a_reused_access_ends_with_the_grant() {
    let c = cast().await;
    let gc = c.client(&c.granted).await;
    let me = c.granted.address();
    let trail = |allowed: bool| {
        let office = c.office.clone();
        let addr = c.addr;
        async move {
            office
                .audit_for_patient(addr, 0, 1000)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| match e.kind {
                    ehr_share::chain::AuditKind::AccessAllowed { provider, .. } => {
                        allowed && provider == me
                    }
                    ehr_share::chain::AuditKind::AccessDenied { provider, .. } => {
                        !allowed && provider == me
                    }
                    _ => false,
                })
                .count()
        }
    };
    assert_eq!(gc.get(c.fhir_id).await.unwrap().data, c.bundle.as_bytes());
    assert_eq!(gc.get(c.fhir_id).await.unwrap().data, c.bundle.as_bytes());
    assert_eq!(
        trail(true).await,
        1,
        "the second read reused the first's access"
    );

    let p = common::as_(&c.office, &c.patient);
    p.revoke(me).await.unwrap();
    match gc.get(c.fhir_id).await {
        Err(RecordError::Denied(id, why)) => {
            assert_eq!((id, why), (c.fhir_id, DenyReason::Revoked))
        }
        other => panic!("expected a denial after the revoke, got {other:?}"),
    }
    // The denial's transaction is in the node's pool when the read returns; it is mined
    // shortly after.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while trail(false).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the denial never reached the trail"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(trail(false).await, 1);

    p.grant(me, None).await.unwrap();
    assert_eq!(gc.get(c.fhir_id).await.unwrap().data, c.bundle.as_bytes());
    assert_eq!(trail(true).await, 2, "a new grant needs a new access");
}

/// Forged, mis-addressed, access-less, borrowed and replayed release requests are refused;
/// the granted doctor's own, with its fresh access transaction, works once.
#[tokio::test]
async fn forged_misaddressed_borrowed_and_replayed_requests_are_refused() {
    let c = cast().await;
    let refs = c.refs().await;
    let (granted, never, fhir_id) = (&c.granted, &c.never, c.fhir_id);
    let stranger = PrivateKeySigner::random();
    let dom = domain(
        common::chain_id(),
        c.office.address(),
        c.office.deployment_id(),
    );
    let mut req = ShareRelease {
        recordId: fhir_id.0,
        requester: granted.address(),
        accessTx: alloy::primitives::B256::ZERO,
        shareNode: refs[0].address,
        nonce: U256::from(1),
        deadline: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60,
    };
    let http = reqwest::Client::new();
    let send = |request: &ShareRelease, who: &PrivateKeySigner, node: usize| {
        let body = ReleaseBody {
            request: request.clone(),
            signature: sign(who, request, &dom).unwrap(),
        };
        http.post(format!("{}/shares/{fhir_id}/release", refs[node].url))
            .json(&body)
            .send()
    };
    // Signed by someone else than the requester it names.
    assert_eq!(send(&req, &stranger, 0).await.unwrap().status(), 403);
    // Addressed to node 0, sent to node 1.
    assert_eq!(
        send(&req, granted, 1).await.unwrap().status(),
        403,
        "a request for node 0 must not open node 1"
    );
    // A provider needs its access transaction.
    assert_eq!(
        send(&req, granted, 0).await.unwrap().status(),
        403,
        "a provider needs its access transaction"
    );
    let o = common::as_(&c.office, granted)
        .access(c.addr, &[fhir_id])
        .await
        .unwrap();
    req.accessTx = o.tx.tx_hash;
    // Another provider cannot ride on it.
    let mut theirs = req.clone();
    theirs.requester = never.address();
    assert_eq!(
        send(&theirs, never, 0).await.unwrap().status(),
        403,
        "someone else's access transaction opened shares"
    );
    // With it, once; its replay is refused.
    req.nonce = U256::from(2);
    assert_eq!(send(&req, granted, 0).await.unwrap().status(), 200);
    assert_eq!(send(&req, granted, 0).await.unwrap().status(), 403);
}

/// Two of five nodes down: reads still succeed and name them; a node releasing corrupted shares
/// is named; three down: a clear error naming the missing nodes, and an upload is rolled back
/// with nothing anchored.
#[tokio::test]
async fn reads_survive_two_nodes_down_and_three_down_fail_clearly() {
    let Cast {
        office,
        contract,
        mut nodes,
        patient,
        addr,
        granted,
        bundle,
        fhir_id,
        ..
    } = cast().await;
    // No hedge (no node here hangs): which nodes a read asks depends on the nodes' health
    // alone, not on how fast this machine answers.
    let gc = client_hedged(&office, &granted, &nodes, Some(Duration::from_secs(60))).await;
    let pc = client(&office, &patient, &nodes).await;
    for n in &mut nodes[3..] {
        n.child.as_mut().unwrap().stop(Duration::from_secs(5)).await;
    }
    // A read asks three nodes, and one more for each that fails: the nodes it named are the
    // stopped ones, as unreachable. Within a few reads both have been asked.
    let down: Vec<String> = nodes[3..]
        .iter()
        .map(|n| format!("http://127.0.0.1:{}", n.port))
        .collect();
    let mut named = std::collections::HashSet::new();
    for _ in 0..20 {
        let r = gc.get(fhir_id).await.unwrap();
        assert_eq!(r.data, bundle.as_bytes());
        for f in &r.failures {
            assert!(
                down.contains(&f.node) && f.reason.contains("unreachable"),
                "{:?}",
                r.failures
            );
            named.insert(f.node.clone());
        }
        if named.len() == 2 {
            break;
        }
    }
    assert_eq!(named.len(), 2, "both stopped nodes named: {named:?}");
    // Both are suspects now, asked after the three that work: the next reads meet neither
    // (asked in a random order instead, 9 reads in 10 would meet at least one).
    let mut want = down.clone();
    want.sort();
    assert_eq!(gc.node_health().suspects(), want);
    for _ in 0..10 {
        let r = gc.get(fhir_id).await.unwrap();
        assert!(r.failures.is_empty(), "{:?}", r.failures);
    }

    // Back up, with node 0 releasing corrupted shares: reads succeed and name node 0.
    nodes[0]
        .child
        .as_mut()
        .unwrap()
        .stop(Duration::from_secs(5))
        .await;
    nodes[0].child = Some(start_node(nodes[0].port, nodes[0].dir.path(), &contract, true).await);
    for n in &mut nodes[3..] {
        n.child = Some(start_node(n.port, n.dir.path(), &contract, false).await);
    }
    // Every read succeeds; the liar is named by a read it answers in time for (it is not
    // waited for: a read returns soon after k verified shares).
    let bad = format!("http://127.0.0.1:{}", nodes[0].port);
    let mut named = false;
    for _ in 0..20 {
        let r = gc.get(fhir_id).await.unwrap();
        assert_eq!(r.data, bundle.as_bytes());
        if r.failures
            .iter()
            .any(|f| f.node == bad && f.reason.contains("failed verification"))
        {
            named = true;
            break;
        }
    }
    assert!(named, "the node releasing corrupted shares was never named");

    // Three of five down: a clear error naming the missing nodes.
    for n in &mut nodes[2..] {
        n.child.as_mut().unwrap().stop(Duration::from_secs(5)).await;
    }
    nodes[0]
        .child
        .as_mut()
        .unwrap()
        .stop(Duration::from_secs(5))
        .await;
    nodes[0].child = Some(start_node(nodes[0].port, nodes[0].dir.path(), &contract, false).await);
    match gc.get(fhir_id).await {
        Err(RecordError::NotEnoughShares {
            valid,
            needed,
            failures,
            ..
        }) => {
            assert_eq!((valid, needed), (2, 3));
            let named: Vec<_> = failures.iter().map(|f| f.node.clone()).collect();
            for n in &nodes[2..] {
                assert!(
                    named.contains(&format!("http://127.0.0.1:{}", n.port)),
                    "{failures:?}"
                );
            }
            let msg = RecordError::NotEnoughShares {
                record: fhir_id,
                valid,
                needed,
                failures,
            }
            .to_string();
            assert!(msg.contains("unreachable"), "{msg}");
        }
        other => panic!("expected NotEnoughShares, got {other:?}"),
    }

    // With fewer than k nodes to store on, an upload is rolled back and nothing is anchored.
    let anchors_by = |who: alloy::primitives::Address| {
        let office = office.clone();
        async move {
            office
                .audit_all(0, usize::MAX)
                .await
                .unwrap()
                .iter()
                .filter(|e| matches!(e.kind, ehr_share::chain::AuditKind::Anchored { anchorer, .. } if anchorer == who))
                .count()
        }
    };
    let before = anchors_by(patient.address()).await;
    let e = pc
        .put(addr, Bytes::from_static(b"x"), "text/plain", None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            RecordError::NotEnoughAcks {
                stored: 2,
                needed: 3,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        anchors_by(patient.address()).await,
        before,
        "nothing anchored"
    );
}

/// Contract issue: uploads that arrive close together share one anchoring transaction (a
/// Merkle root), records of several patients and authors alike; each record keeps its proof
/// with its shares and reads back for its patient and a granted doctor, and a lone upload is
/// anchored alone once the window has passed.
#[tokio::test]
async fn uploads_close_together_share_one_anchor() {
    let office = common::office().await;
    let procs = common::nodes::start_many(office.address(), 3, &[]).await;
    let refs = common::nodes::refs(&procs).await;
    let gateway = common::funded().await;
    let batcher = ehr_share::records::Batcher::spawn(
        common::as_(&office, &gateway),
        ehr_share::records::BatchSettings {
            window: std::time::Duration::from_millis(1500),
            max: 1000,
        },
    );
    // The patients first: their transactions would spread the uploads over seconds.
    let mut patients = Vec::new();
    for _ in 0..8 {
        patients.push(common::new_patient(&office).await);
    }
    let mut uploads = Vec::new();
    for (i, (patient, addr)) in patients.iter().enumerate() {
        let addr = *addr;
        let c = common::nodes::client(&office, patient, &refs).with_anchoring(batcher.clone());
        let body = format!("reading {i}");
        uploads.push(tokio::spawn(async move {
            let id = c
                .put(addr, Bytes::from(body.clone()), "text/plain", None)
                .await
                .unwrap();
            (id, body)
        }));
    }
    let mut stored = Vec::new();
    for u in uploads {
        stored.push(u.await.unwrap());
    }
    // One (or, on a slow machine, two) anchoring transactions for eight records, all sent by
    // the gateway's account.
    let mut roots = std::collections::BTreeSet::new();
    for ((id, body), (patient, addr)) in stored.iter().zip(&patients) {
        let c = common::nodes::client(&office, patient, &refs);
        let found = c.directory().locate(*id).await.unwrap();
        assert_eq!(
            (found.proof.patient, found.proof.author),
            (*addr, patient.address())
        );
        roots.insert(found.proof.root);
        assert_eq!(c.get(*id).await.unwrap().data, body.as_bytes());
        let listed = c.directory().list(*addr).await.unwrap();
        assert_eq!(
            listed.iter().map(|r| r.record).collect::<Vec<_>>(),
            vec![*id]
        );
    }
    // A patient's newest, newest first, with their count: three more records of the first
    // patient, a second apart (the nodes order by the second a share arrived).
    let (patient, addr) = &patients[0];
    let c = common::nodes::client(&office, patient, &refs);
    let mut mine = vec![stored[0].0];
    for i in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        mine.push(
            c.put(*addr, Bytes::from(format!("later {i}")), "text/plain", None)
                .await
                .unwrap(),
        );
    }
    let (newest, total) = c.directory().newest(*addr, 3).await.unwrap();
    assert_eq!(total, 4);
    assert_eq!(
        newest.iter().map(|r| r.record).collect::<Vec<_>>(),
        mine.iter().rev().take(3).copied().collect::<Vec<_>>()
    );
    // The same by pages of one, each going on from the `next` of the page before.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = c.directory().page(*addr, before, 1).await.unwrap();
        assert_eq!(page.total, 4);
        paged.extend(page.records.iter().map(|r| r.record));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
        assert!(paged.len() <= 4, "the listing goes on: {paged:?}");
    }
    assert_eq!(paged, mine.iter().rev().copied().collect::<Vec<_>>());
    // With one of the three nodes gone, fewer than k answer: an error, not an empty list.
    let mut gone = refs.clone();
    gone[2].url = format!("http://127.0.0.1:{}", common::quiet_port());
    let err = common::nodes::client(&office, patient, &gone)
        .directory()
        .page(*addr, None, 10)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RecordError::NotEnoughListings {
                answered: ..=2,
                needed: 3
            }
        ),
        "{err}"
    );
    assert!(roots.len() <= 2, "{} roots for 8 uploads", roots.len());
    let anchors: Vec<_> = office
        .audit_all(0, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            ehr_share::chain::AuditKind::Anchored {
                root,
                anchorer,
                count,
            } if anchorer == gateway.address() => Some((root, count)),
            _ => None,
        })
        .collect();
    assert_eq!(anchors.len(), roots.len());
    assert_eq!(anchors.iter().map(|(_, n)| *n).sum::<u32>(), 8);
    // A granted doctor reads a batched record through an access transaction.
    let doctor = common::funded().await;
    let d = common::as_(&office, &doctor);
    d.register_provider().await.unwrap();
    office.verify_provider(doctor.address()).await.unwrap();
    common::as_(&office, &patients[3].0)
        .grant(doctor.address(), None)
        .await
        .unwrap();
    let got = common::nodes::client(&office, &doctor, &refs)
        .get(stored[3].0)
        .await
        .unwrap();
    assert_eq!(got.data, stored[3].1.as_bytes());
    // A lone upload is anchored alone after the window.
    let (patient, addr) = &patients[0];
    let c = common::nodes::client(&office, patient, &refs).with_anchoring(batcher.clone());
    let started = std::time::Instant::now();
    let id = c
        .put(*addr, Bytes::from_static(b"alone"), "text/plain", None)
        .await
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    let found = c.directory().locate(id).await.unwrap();
    assert!(found.proof.proof.is_empty(), "a batch of one is its leaf");
    assert_eq!(found.proof.root, found.proof.leaf());
}

/// Review finding: one lying share node must not be able to put a record in a patient's list
/// (anyone may anchor a root, so a made-up leaf can be "anchored"), nor make a real record
/// unreadable by answering a locate first with a copy of its id under another digest. The
/// client counts a leaf only when k distinct nodes agree on it.
#[tokio::test]
async fn one_lying_node_cannot_add_or_hide_a_record() {
    use ehr_share::chain::merkle::{self, RecordProof};
    use ehr_share::share_node::AnchoredRecord;
    let office = common::office().await;
    let procs = common::nodes::start_many(office.address(), 3, &[]).await;
    let mut refs = common::nodes::refs(&procs).await;
    let (patient, addr) = common::new_patient(&office).await;
    let real = common::nodes::client(&office, &patient, &refs)
        .put(
            addr,
            Bytes::from_static(b"the real one"),
            "text/plain",
            None,
        )
        .await
        .unwrap();
    let real_proof = common::nodes::client(&office, &patient, &refs)
        .directory()
        .locate(real)
        .await
        .unwrap()
        .proof;
    // The liar anchors two made-up leaves: a record "by the patient" that never was, and a copy
    // of the real record's id with another digest.
    let liar_key = common::funded().await;
    let liar_chain = common::as_(&office, &liar_key);
    let made_up = RecordProof {
        salt: alloy::primitives::B256::repeat_byte(0x66),
        digest: alloy::primitives::B256::repeat_byte(0x77),
        ..real_proof.clone()
    };
    let copy = RecordProof {
        digest: alloy::primitives::B256::repeat_byte(0x88),
        ..real_proof.clone()
    };
    let mut fakes = Vec::new();
    for p in [made_up, copy] {
        let leaf = p.leaf();
        liar_chain.anchor_root(leaf, 1).await.unwrap();
        let p = RecordProof {
            root: leaf,
            proof: Vec::new(),
            ..p
        };
        assert!(merkle::verify(p.leaf(), &p.proof, p.root));
        fakes.push(AnchoredRecord {
            record: p.record_id(),
            proof: p,
            stored_at: 1,
        });
    }
    // A node that lists the made-up record three times, and first the real record's leaf
    // under a root of its own (never anchored: counted with the honest nodes' votes, it would
    // hide the real record), and answers every locate with the copy.
    let forged = merkle::Tree::new(&[
        real_proof.leaf(),
        alloy::primitives::B256::repeat_byte(0x99),
    ]);
    let rerooted = AnchoredRecord {
        record: real,
        proof: RecordProof {
            root: forged.root,
            proof: forged.proofs[0].clone(),
            ..real_proof.clone()
        },
        stored_at: 5,
    };
    assert!(rerooted.proof.holds());
    let listing = serde_json::to_string(&[
        rerooted.clone(),
        fakes[0].clone(),
        fakes[0].clone(),
        fakes[0].clone(),
    ])
    .unwrap();
    let copy_answer = serde_json::to_string(&fakes[1]).unwrap();
    // Its newest: the made-up record on top, the real one dated 1970 (to push it out of the
    // newest), and a count of a million.
    let backdated = AnchoredRecord {
        record: real,
        proof: real_proof.clone(),
        stored_at: 0,
    };
    let newest = serde_json::to_string(&serde_json::json!({
        "records": [rerooted, fakes[0].clone(), backdated], "total": 1_000_000,
    }))
    .unwrap();
    let app = axum::Router::new()
        .route(
            "/patients/{p}/records",
            axum::routing::get(move || {
                let l = listing.clone();
                async move { ([("content-type", "application/json")], l) }
            }),
        )
        .route(
            "/patients/{p}/records/newest",
            axum::routing::get(move || {
                let n = newest.clone();
                async move { ([("content-type", "application/json")], n) }
            }),
        )
        .route(
            "/records/{id}",
            axum::routing::get(move || {
                let c = copy_answer.clone();
                async move { ([("content-type", "application/json")], c) }
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let liar_url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    refs.insert(
        0,
        ehr_share::records::ShareNodeRef {
            url: liar_url,
            address: liar_key.address(),
        },
    );
    let c = common::nodes::client(&office, &patient, &refs);
    let listed: Vec<_> = c
        .directory()
        .list(addr)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record)
        .collect();
    assert_eq!(listed, vec![real], "a record one node made up was listed");
    let (newest, total) = c.directory().newest(addr, 10).await.unwrap();
    assert_eq!(
        newest.iter().map(|r| r.record).collect::<Vec<_>>(),
        vec![real],
        "a record one node made up was among the newest"
    );
    assert_eq!(total, 1, "the count is the k-th largest, not the liar's");
    assert!(
        newest[0].stored_at > 1_000_000_000,
        "the liar's date was taken: {}",
        newest[0].stored_at
    );
    // Paged by time: the liar's made-up and backdated records change nothing, and the page
    // after the only record is empty and the last.
    let page = c.directory().page(addr, None, 10).await.unwrap();
    assert_eq!(
        page.records.iter().map(|r| r.record).collect::<Vec<_>>(),
        vec![real]
    );
    assert!(page.next.is_none(), "{:?}", page.next);
    let after = c
        .directory()
        .page(
            addr,
            Some(ehr_share::records::ListCursor::of(&page.records[0])),
            10,
        )
        .await
        .unwrap();
    assert!(
        after.records.is_empty() && after.next.is_none(),
        "{after:?}"
    );
    let found = c.directory().locate(real).await.unwrap();
    assert_eq!(found.proof.digest, real_proof.digest, "the liar's copy won");
    assert_eq!(c.get(real).await.unwrap().data, b"the real one");
}

/// What a proxy answers itself, by path.
type Refuse = fn(&str) -> Option<u16>;

/// A proxy in front of a share node: answers `refuse(path)`'s status itself when it names one
/// (with an empty body, as a router or a proxy would), passes everything else on.
async fn proxy(target: String, refuse: Refuse) -> String {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{Method, StatusCode};
    async fn forward(
        State((target, http, refuse)): State<(String, reqwest::Client, Refuse)>,
        method: Method,
        UrlPath(path): UrlPath<String>,
        body: axum::body::Bytes,
    ) -> (StatusCode, String) {
        if let Some(status) = refuse(&path) {
            return (StatusCode::from_u16(status).unwrap(), String::new());
        }
        let r = http
            .request(method, format!("{target}/{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match r {
            Ok(r) => (
                StatusCode::from_u16(r.status().as_u16()).unwrap(),
                r.text().await.unwrap_or_default(),
            ),
            Err(_) => (StatusCode::BAD_GATEWAY, String::new()),
        }
    }
    let l = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/{*path}", axum::routing::any(forward))
        .with_state((target, reqwest::Client::new(), refuse));
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

/// A proxy in front of a share node that drops the proofs of anchored records (alone or in a
/// batch), as when the gateway dies, or the node is down, while the proof goes round.
async fn drops_proofs(target: String) -> String {
    proxy(target, |path| {
        (path.ends_with("/anchor") || path == "anchors").then_some(502)
    })
    .await
}

/// Performance issue: share nodes of an earlier version, without the batch routes (404 for
/// them, or 413 for a batch over their single-request body limit), still take an upload's
/// deposits and proofs, one request each.
#[tokio::test]
async fn nodes_without_batches_are_asked_one_item_at_a_time() {
    let office = common::office().await;
    let procs = common::nodes::start_many(office.address(), 3, &[]).await;
    let mut refs = common::nodes::refs(&procs).await;
    for (i, r) in refs.iter_mut().enumerate() {
        r.url = if i == 0 {
            proxy(r.url.clone(), |p| {
                (p == "deposits" || p == "anchors").then_some(413)
            })
            .await
        } else {
            proxy(r.url.clone(), |p| {
                (p == "deposits" || p == "anchors").then_some(404)
            })
            .await
        };
    }
    let (patient, addr) = common::new_patient(&office).await;
    let c = common::nodes::client(&office, &patient, &refs);
    let data = Bytes::from_static(b"kept by nodes of an earlier version");
    let id = c.put(addr, data.clone(), "text/plain", None).await.unwrap();
    assert_eq!(c.get(id).await.unwrap().data, data);
    for p in &procs {
        let held = reqwest::get(format!("http://127.0.0.1:{}/records/{id}", p.port))
            .await
            .unwrap();
        assert_eq!(held.status(), 200, "every node holds the anchored record");
    }
}

/// How many upload markers on `ipfs` name `record`.
async fn marked(ipfs: &KuboClient, record: RecordId) -> usize {
    let record = record.to_string();
    ehr_share::ipfs::markers::pending_on(ipfs)
        .await
        .unwrap()
        .iter()
        .filter(|m| m.records.contains(&record))
        .count()
}

/// Performance and reliability issue, crash consistency: an upload anchored on chain whose
/// proof reached fewer than k share nodes keeps its ciphertext (it used to be unpinned,
/// leaving a record two nodes list and nobody can read), and the sweeper gives the proof to
/// every node, after which it reads back; the pinned ciphertext of an upload cut off before
/// its anchor is unpinned once older than the TTL, and a recent one is left alone.
#[tokio::test]
async fn uploads_cut_off_by_a_crash_are_finished_or_collected() {
    use ehr_share::records::{RecordsConfig, SweepSettings};
    let office = common::office().await;
    let procs = common::nodes::start_many(office.address(), 5, &[]).await;
    let real = common::nodes::refs(&procs).await;
    let (patient, addr) = common::new_patient(&office).await;
    let ipfs = KuboClient::new(&common::stack().kubo.api_url);

    // Three of five nodes take the deposit but never see the proof: k = 3 is not reached.
    let mut cut = real.clone();
    for r in cut.iter_mut().take(3) {
        r.url = drops_proofs(r.url.clone()).await;
    }
    let data = Bytes::from(format!("cut off after the anchor {MARKER}"));
    let err = common::nodes::client(&office, &patient, &cut)
        .put(addr, data.clone(), "text/plain", None)
        .await
        .unwrap_err();
    let RecordError::NotEnoughProofs {
        record, accepted, ..
    } = err
    else {
        panic!("expected NotEnoughProofs, got {err}");
    };
    assert_eq!(accepted, 2);
    let pinned = |name: String| {
        let ipfs = ipfs.clone();
        async move {
            ipfs.pins_named(&name)
                .await
                .unwrap()
                .into_iter()
                .map(|(cid, _)| cid)
                .collect::<Vec<String>>()
        }
    };
    let ciphertext = pinned(format!("ehr-record:{record}")).await;
    assert_eq!(
        ciphertext.len(),
        1,
        "the anchored record's ciphertext stays pinned"
    );
    assert_eq!(
        marked(&ipfs, record).await,
        1,
        "with the marker of an unfinished upload"
    );

    // Three orphans: ciphertext and marker pinned by uploads that died before their anchor,
    // two of them two hours ago (one with the one-upload marker of earlier versions, one with
    // a group's) and one just now.
    let now = common::nodes::now();
    let mut orphans = Vec::new();
    for (created, group) in [(now - 7200, false), (now - 7200, true), (now, true)] {
        let id = RecordId(ehr_share::chain::random_b256());
        let mut cids = Vec::new();
        let marker = if group {
            let m = ehr_share::ipfs::markers::Marker::group(&[id.to_string()], created);
            (String::from_utf8(m.content.to_vec()).unwrap(), m.name)
        } else {
            (
                format!("ehr-upload:{id}:{created}"),
                format!("ehr-upload:{id}:{created}"),
            )
        };
        for (body, name) in [(format!("orphan {id}"), format!("ehr-record:{id}")), marker] {
            let cid = ipfs
                .add_stream_named(
                    futures::stream::once(async move { Ok(Bytes::from(body)) }),
                    &name,
                )
                .await
                .unwrap();
            cids.push(cid);
        }
        orphans.push(cids);
    }

    // The TTL is an hour: no marker of another test in this binary is that old.
    let sweeper = RecordsConfig::new(real.clone(), 3).sweeper(
        ipfs.clone(),
        reqwest::Client::new(),
        SweepSettings::for_ttl(Duration::from_secs(3600)),
    );
    // A record is collected only when every node answers 404 in the same pass: a node slow to
    // answer once (the passes also go through every other test's markers) leaves it for the
    // next pass, so up to three.
    let mut report = ehr_share::records::SweepReport::default();
    for _ in 0..3 {
        let r = sweeper.sweep().await.unwrap();
        report.finished += r.finished;
        report.collected += r.collected;
        let left: Vec<String> = ipfs
            .pins_named("ehr-")
            .await
            .unwrap()
            .into_iter()
            .map(|(cid, _)| cid)
            .collect();
        if report.finished >= 1 && orphans[..2].iter().flatten().all(|c| !left.contains(c)) {
            break;
        }
    }
    assert!(report.finished >= 1 && report.collected >= 1, "{report:?}");
    assert_eq!(
        pinned(format!("ehr-record:{record}")).await,
        ciphertext,
        "the finished record's ciphertext keeps its pin (never renamed)"
    );
    assert_eq!(marked(&ipfs, record).await, 0, "its marker is gone");
    let all: Vec<String> = ipfs
        .pins_named("ehr-")
        .await
        .unwrap()
        .into_iter()
        .map(|(cid, _)| cid)
        .collect();
    for old in &orphans[..2] {
        assert!(
            !old.iter().any(|c| all.contains(c)),
            "a two-hour-old orphan's ciphertext and marker are unpinned"
        );
    }
    assert!(
        orphans[2].iter().all(|c| all.contains(c)),
        "the recent one is left: its upload may still be running"
    );

    // Every node now holds the proof, and the record reads back.
    let http = reqwest::Client::new();
    for n in &real {
        let r = http
            .get(format!("{}/records/{record}", n.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "node {} holds the proof", n.url);
    }
    let got = common::nodes::client(&office, &patient, &real)
        .get(record)
        .await
        .unwrap();
    assert_eq!(got.data, data);
    assert!(got.failures.is_empty(), "{:?}", got.failures);
}

/// Performance issue, uploads: uploads that start together pin one marker between them, not
/// one each (Kubo's pinner serves pins one at a time: two per upload halved the upload rate).
/// The marker names every one of them and stays while any is unsettled: here a node misses
/// every proof, so each upload is readable (k = 3 of 5) but not finished. The sweeper then
/// gives that node the proofs and unpins the marker.
#[tokio::test]
async fn uploads_that_start_together_share_one_marker() {
    use ehr_share::ipfs::markers::pending_on;
    use ehr_share::records::{RecordsConfig, SweepSettings};
    let office = common::office().await;
    let procs = common::nodes::start_many(office.address(), 5, &[]).await;
    let real = common::nodes::refs(&procs).await;
    let (patient, addr) = common::new_patient(&office).await;
    let ipfs = KuboClient::new(&common::stack().kubo.api_url);
    let mut cut = real.clone();
    cut[0].url = drops_proofs(cut[0].url.clone()).await;
    let client = common::nodes::client(&office, &patient, &cut);
    let data: Vec<Bytes> = (0..8)
        .map(|i| Bytes::from(format!("together {i} {MARKER}")))
        .collect();
    let ids: Vec<RecordId> = futures::future::join_all(
        data.iter()
            .map(|d| client.put(addr, d.clone(), "text/plain", None)),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let mut ours: Vec<String> = ids.iter().map(ToString::to_string).collect();
    ours.sort();
    let naming_ours = || {
        let (ipfs, ours) = (ipfs.clone(), ours.clone());
        async move {
            pending_on(&ipfs)
                .await
                .unwrap()
                .into_iter()
                .filter(|m| m.records.iter().any(|r| ours.contains(r)))
                .collect::<Vec<_>>()
        }
    };
    let markers = naming_ours().await;
    assert_eq!(markers.len(), 1, "one marker for the eight: {markers:?}");
    let mut named = markers[0].records.clone();
    named.sort();
    assert_eq!(named, ours, "it names each of them");

    // Another marker names one of them beside an upload still running (a record no node
    // knows, begun just now): the record it shares the marker with must not stay pending.
    let running = RecordId(ehr_share::chain::random_b256()).to_string();
    let shared = ehr_share::ipfs::markers::Marker::group(
        &[ours[0].clone(), running.clone()],
        common::nodes::now(),
    );
    ipfs.add_bytes_named(shared.content.clone(), &shared.name)
        .await
        .unwrap();

    // The TTL is ten years: nothing is collected, not even the two-hour-old orphans another
    // test of this binary pins for its own sweeper to collect (and counts on doing so).
    let sweeper = RecordsConfig::new(real.clone(), 3).sweeper(
        ipfs.clone(),
        reqwest::Client::new(),
        SweepSettings::for_ttl(Duration::from_secs(10 * 365 * 86_400)),
    );
    let report = sweeper.sweep().await.unwrap();
    assert!(report.finished >= 8, "{report:?}");
    assert_eq!(report.collected, 0, "{report:?}");
    assert!(naming_ours().await.is_empty(), "no marker names them");
    let left: Vec<_> = pending_on(&ipfs)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.records.contains(&running))
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].records, vec![running], "only the running upload");
    ipfs.unpin(&left[0].cid).await.unwrap();
    let reader = common::nodes::client(&office, &patient, &real);
    for (id, d) in ids.iter().zip(&data) {
        let r = reqwest::get(format!("{}/records/{id}", real[0].url))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the node that missed the proof holds it");
        assert_eq!(&reader.get(*id).await.unwrap().data, d);
    }
}

/// The uploader's anchor went out and landed, but its client never learned it (the RPC failed
/// after the transaction was sent): an anchor whose outcome is unknown. The upload fails, yet
/// the root is on chain, and whoever presents the leaf's proof (here the leaf alone: an empty
/// proof anyone can build) makes every node list the record. Its ciphertext and marker must
/// stay pinned (it used to be unpinned, leaving a listed record nobody could read), and it
/// reads back. (The sweeper settles its marker as for any upload a crash cut off, tested in
/// `uploads_cut_off_by_a_crash_are_finished_or_collected`; it is not run here, where it would
/// settle that test's records too.)
#[tokio::test]
async fn an_anchor_of_unknown_outcome_keeps_the_ciphertext() {
    use ehr_share::records::Anchoring;
    use ehr_share::share_node::{AnchorBody, NodeClient};

    /// Anchors the leaf alone, then answers as if the connection dropped before the receipt.
    #[derive(Debug)]
    struct LandsUnseen(EhrChain, std::sync::Mutex<Option<alloy::primitives::B256>>);
    impl Anchoring for LandsUnseen {
        fn anchor(
            &self,
            leaf: alloy::primitives::B256,
        ) -> futures::future::BoxFuture<
            '_,
            Result<(alloy::primitives::B256, Vec<alloy::primitives::B256>), RecordError>,
        > {
            Box::pin(async move {
                ehr_share::records::anchor_root(&self.0, leaf, 1).await?;
                *self.1.lock().unwrap() = Some(leaf);
                Err(RecordError::Anchoring(
                    "connection reset after the transaction was sent".into(),
                ))
            })
        }
    }

    let office = common::office().await;
    let procs = common::nodes::start_many(office.address(), 5, &[]).await;
    let refs = common::nodes::refs(&procs).await;
    let (patient, addr) = common::new_patient(&office).await;
    let ipfs = KuboClient::new(&common::stack().kubo.api_url);
    let anchoring = std::sync::Arc::new(LandsUnseen(
        common::as_(&office, &patient),
        std::sync::Mutex::new(None),
    ));
    let markers = || {
        let ipfs = ipfs.clone();
        async move {
            ehr_share::ipfs::markers::pending_on(&ipfs)
                .await
                .unwrap()
                .into_iter()
                .flat_map(|m| m.records)
                .filter_map(|r| r.parse::<RecordId>().ok())
                .collect::<std::collections::HashSet<RecordId>>()
        }
    };
    let before = markers().await;
    let data = Bytes::from(format!("anchored unseen {MARKER}"));
    let err = common::nodes::client(&office, &patient, &refs)
        .with_anchoring(anchoring.clone())
        .put(addr, data.clone(), "text/plain", None)
        .await
        .unwrap_err();
    assert!(matches!(err, RecordError::Anchoring(_)), "{err}");
    let leaf = anchoring.1.lock().unwrap().expect("the anchor was sent");
    assert!(
        office.root(leaf).await.unwrap().is_some(),
        "the root is on chain"
    );

    // Anyone who knows the record's id (it is in its marker) and the root can present
    // the proof: for a record anchored alone, the empty one. Of the markers pinned since the
    // upload began (other tests upload beside this one), the record is the one whose proof a
    // node takes.
    let http = reqwest::Client::new();
    let proof = AnchorBody {
        root: leaf,
        proof: Vec::new(),
    };
    let mut record = None;
    for id in markers().await.difference(&before) {
        let first = NodeClient::new(http.clone(), refs[0].clone());
        if first.present(*id, &proof).await.is_ok() {
            record = Some(*id);
            break;
        }
    }
    let record = record.expect("the failed upload's marker is still pinned");
    assert_eq!(
        ipfs.pins_named(&format!("ehr-record:{record}"))
            .await
            .unwrap()
            .len(),
        1,
        "the ciphertext of a record whose anchor may have landed stays pinned"
    );

    // Every node takes it: the record is listed, and must read back.
    for r in &refs {
        NodeClient::new(http.clone(), r.clone())
            .present(record, &proof)
            .await
            .unwrap();
    }
    let got = common::nodes::client(&office, &patient, &refs)
        .get(record)
        .await
        .unwrap();
    assert_eq!(got.data, data);
}

/// A patient, three share nodes and a database of `Idempotency-Key`s, for gateways that
/// take named uploads (gateways on one database stand for replicas, or for one gateway
/// restarted). `tok-p` is the patient's token on each.
struct Keyed {
    office: EhrChain,
    _nodes: Vec<common::nodes::NodeProc>,
    refs: Vec<ShareNodeRef>,
    patient: PrivateKeySigner,
    addr: ehr_share::chain::PatientAddr,
    _dir: tempfile::TempDir,
    db: String,
}

impl Keyed {
    async fn new() -> Self {
        let office = common::office().await;
        let nodes = common::nodes::start_many(office.address(), 3, &[]).await;
        let refs = common::nodes::refs(&nodes).await;
        let (patient, addr) = common::new_patient(&office).await;
        let dir = tempfile::tempdir().unwrap();
        let db = ehr_share::db::sqlite_in(dir.path());
        Self {
            office,
            _nodes: nodes,
            refs,
            patient,
            addr,
            _dir: dir,
            db,
        }
    }

    /// Anchoring that waits for the test's go-ahead (its permits) before each anchor, the
    /// patient's account sending it; `entered` is told when an upload reaches it.
    fn gated(
        &self,
    ) -> (
        TestAnchor,
        std::sync::Arc<tokio::sync::Notify>,
        std::sync::Arc<tokio::sync::Semaphore>,
    ) {
        let entered = std::sync::Arc::new(tokio::sync::Notify::new());
        let go = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        let anchoring = TestAnchor::Gated {
            chain: Box::new(common::as_(&self.office, &self.patient)),
            entered: entered.clone(),
            go: go.clone(),
        };
        (anchoring, entered, go)
    }

    /// A gateway whose records are anchored by `anchoring` (each uploader alone when `None`),
    /// with an upload budget of `slots` full-size uploads.
    async fn gateway(&self, anchoring: Option<TestAnchor>, slots: usize) -> String {
        self.gateway_on(&common::rpc(), anchoring, slots).await
    }

    /// [`Self::gateway`] on the chain endpoint `rpc`.
    async fn gateway_on(&self, rpc: &str, anchoring: Option<TestAnchor>, slots: usize) -> String {
        let mut keyring = ehr_share::gateway::Keyring::default();
        keyring.insert("tok-p", self.patient.clone());
        let mut records = ehr_share::records::RecordsConfig::new(self.refs.clone(), 3);
        if let Some(a) = anchoring {
            records = records.with_anchoring(std::sync::Arc::new(a));
        }
        let db = ehr_share::db::Database::open(&self.db).await.unwrap();
        let state = ehr_share::gateway::AppState::new(
            rpc,
            Some(
                EhrChain::connect(rpc, None, &self.office.deployment())
                    .await
                    .unwrap(),
            ),
            KuboClient::new(&common::stack().kubo.api_url),
            keyring,
        )
        .unwrap()
        .with_upload_slots(slots)
        .with_records(records)
        .with_database(db);
        common::serve_gateway(state).await
    }

    /// A gateway with the web app (anchoring as [`Self::gateway`]'s), and the web account
    /// `user` (password `PASSWORD`) of the patient; the web app's accounts.
    async fn web(
        &self,
        anchoring: Option<TestAnchor>,
        user: &str,
    ) -> (String, ehr_share::web::AccountStore) {
        let mut records = ehr_share::records::RecordsConfig::new(self.refs.clone(), 3);
        if let Some(a) = anchoring {
            records = records.with_anchoring(std::sync::Arc::new(a));
        }
        let db = ehr_share::db::Database::open(&self.db).await.unwrap();
        let accounts = ehr_share::web::AccountStore::new(db.clone()).await.unwrap();
        accounts
            .create(
                user,
                PASSWORD,
                ehr_share::web::Role::Patient,
                Some(self.addr),
                Some(self.patient.clone()),
            )
            .await
            .unwrap();
        let rpc = common::rpc();
        let app = ehr_share::gateway::AppState::new(
            &rpc,
            Some(
                EhrChain::connect(&rpc, None, &self.office.deployment())
                    .await
                    .unwrap(),
            ),
            KuboClient::new(&common::stack().kubo.api_url),
            ehr_share::gateway::Keyring::default(),
        )
        .unwrap()
        .with_upload_slots(4)
        .with_records(records)
        .with_database(db);
        let web = ehr_share::web::WebState::new(app.clone(), accounts.clone());
        let router = ehr_share::gateway::router(app).merge(ehr_share::web::router(web));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
            .unwrap();
        });
        (url, accounts)
    }
}

/// The web account's password in [`Keyed::web`].
const PASSWORD: &str = "a patient's long password";

/// `POST /records` of `body` for `addr` with the key `key`, as `tok-p`.
fn upload_keyed(
    url: &str,
    addr: ehr_share::chain::PatientAddr,
    key: &str,
    body: &'static str,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + use<> {
    reqwest::Client::new()
        .post(format!("{url}/records?patient={addr}"))
        .bearer_auth("tok-p")
        .header("content-type", "text/plain")
        .header("Idempotency-Key", key)
        .body(body)
        .send()
}

/// An upload's status, whether it was a replay, and its record (if any).
async fn uploaded(r: reqwest::Response) -> (u16, bool, Option<String>, serde_json::Value) {
    let status = r.status().as_u16();
    let replayed = r.headers().contains_key("idempotent-replayed");
    let v: serde_json::Value = r.json().await.unwrap();
    let record = v["record"].as_str().map(str::to_owned);
    (status, replayed, record, v)
}

/// How many records the gateway lists for `addr`.
async fn listed(url: &str, addr: ehr_share::chain::PatientAddr) -> usize {
    let v: serde_json::Value = reqwest::get(format!("{url}/api/patients/{addr}/records?limit=50"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["records"].as_array().expect("a listing").len()
}

/// Anchors as a test says: refusing before anything is sent, losing the answer of an anchor
/// never sent ("outcome unknown"), or waiting for the test's go-ahead before anchoring for
/// real.
#[derive(Debug)]
enum TestAnchor {
    Refused,
    Unknown,
    Gated {
        chain: Box<EhrChain>,
        entered: std::sync::Arc<tokio::sync::Notify>,
        go: std::sync::Arc<tokio::sync::Semaphore>,
    },
}

impl ehr_share::records::Anchoring for TestAnchor {
    fn anchor(
        &self,
        leaf: alloy::primitives::B256,
    ) -> futures::future::BoxFuture<
        '_,
        Result<(alloy::primitives::B256, Vec<alloy::primitives::B256>), RecordError>,
    > {
        Box::pin(async move {
            match self {
                Self::Refused => Err(RecordError::NotAnchored("refused before sending".into())),
                Self::Unknown => Err(RecordError::Anchoring(
                    "connection reset after the transaction was sent".into(),
                )),
                Self::Gated { chain, entered, go } => {
                    entered.notify_one();
                    let _permit = go.acquire().await.unwrap();
                    ehr_share::records::anchor_root(chain, leaf, 1).await?;
                    // One leaf: the root is the leaf, the proof empty.
                    Ok((leaf, Vec::new()))
                }
            }
        })
    }
}

/// A client that lost the answer to an upload sends it again with its `Idempotency-Key`: it is
/// answered by the record the first try stored (marked a replay), and the patient has one
/// record, not two; two tries at once are one record too; the key with another body is
/// refused (422).
#[tokio::test]
async fn an_upload_retried_with_its_idempotency_key_stores_one_record() {
    let k = Keyed::new().await;
    let addr = k.addr;
    let url = k.gateway(None, 4).await;

    let (status, replayed, first, v) = uploaded(
        upload_keyed(&url, addr, "up-1", "a lab result")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, replayed), (200, false), "{v}");
    let (status, replayed, again, v) = uploaded(
        upload_keyed(&url, addr, "up-1", "a lab result")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, replayed), (200, true), "{v}");
    assert_eq!(again, first, "the retry is answered by the first record");
    let (a, b) = tokio::join!(
        upload_keyed(&url, addr, "up-2", "another"),
        upload_keyed(&url, addr, "up-2", "another")
    );
    let (a, b) = (uploaded(a.unwrap()).await, uploaded(b.unwrap()).await);
    assert_eq!((a.0, b.0), (200, 200), "{} {}", a.3, b.3);
    assert_eq!(a.2, b.2, "two tries at once store one record");
    let r = upload_keyed(&url, addr, "up-1", "something else")
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(listed(&url, addr).await, 2, "one record per key");
}

/// The client gives up while its upload is still being anchored (its timeout, a dropped
/// connection) and asks again with the key: the upload was not cut short with the connection,
/// and the retry is answered by its record once it is stored. Before, the retry found an
/// upload cut off mid-way (or stored a second record).
#[tokio::test]
async fn an_upload_whose_client_gave_up_is_finished_and_answers_the_retry() {
    let k = Keyed::new().await;
    let addr = k.addr;
    let (anchoring, entered, go) = k.gated();
    // A budget of one full-size upload, which an upload of undeclared size takes whole.
    let url = k.gateway(Some(anchoring), 1).await;
    let chunked = reqwest::Client::new()
        .post(format!("{url}/records?patient={addr}"))
        .bearer_auth("tok-p")
        .header("content-type", "text/plain")
        .header("Idempotency-Key", "up-cut")
        .body(reqwest::Body::wrap_stream(futures::stream::once(async {
            Ok::<_, std::io::Error>(Bytes::from_static(b"a scan"))
        })))
        .send();

    let first = tokio::spawn(chunked);
    tokio::time::timeout(Duration::from_secs(30), entered.notified())
        .await
        .expect("the upload reaches its anchor");
    // The client goes away.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    // Its upload still holds its share of the budget: another upload is refused, also once
    // the server has seen the client go (an upload let in would wait at the anchor: it counts
    // as let in after 5 s).
    let got_in = || {
        let url = url.clone();
        async move {
            let other = reqwest::Client::new()
                .post(format!("{url}/records?patient={addr}"))
                .bearer_auth("tok-p")
                .header("content-type", "text/plain")
                .body("another")
                .send();
            match tokio::time::timeout(Duration::from_secs(5), other).await {
                Ok(r) => r.unwrap().status() != 503,
                Err(_) => true,
            }
        }
    };
    assert!(
        !common::nodes::wait_until(Duration::from_secs(2), got_in).await,
        "the budget stays taken while the upload runs"
    );
    // The upload goes on; the retry is answered once the budget lets it in.
    go.add_permits(8);
    let answer = std::sync::Arc::new(std::sync::Mutex::new(None));
    assert!(
        common::nodes::wait_until(Duration::from_secs(60), || {
            let (answer, url) = (answer.clone(), url.clone());
            async move {
                let r = upload_keyed(&url, addr, "up-cut", "a scan").await.unwrap();
                if r.status() == 503 && r.headers().contains_key("retry-after") {
                    return false;
                }
                *answer.lock().unwrap() = Some(uploaded(r).await);
                true
            }
        })
        .await,
        "the budget frees once the upload is over"
    );
    let (status, replayed, record, v) = answer.lock().unwrap().take().unwrap();
    assert_eq!((status, replayed), (200, true), "{v}");
    assert!(record.is_some());
    assert_eq!(listed(&url, addr).await, 1, "one record");
}

/// An upload whose anchor was refused before anything was sent stored nothing: its key is
/// free, and the retry stores the record (on another gateway of the same database, as after a
/// restart). One whose anchor's outcome is unknown keeps its key: a retry is answered 409 with
/// `Retry-After` while that try may still give its record's proof to a node, and runs anew
/// (a new record) once it surely cannot (its bound passed: the row's clock is set back here).
#[tokio::test]
async fn a_retried_upload_whose_first_try_failed_runs_once_it_is_safe() {
    let k = Keyed::new().await;
    let (addr, db) = (k.addr, k.db.clone());
    let refusing = k.gateway(Some(TestAnchor::Refused), 4).await;
    let unknown = k.gateway(Some(TestAnchor::Unknown), 4).await;
    let working = k.gateway(None, 4).await;
    let upload = |url: &str, key: &str, body: &'static str| {
        let r = upload_keyed(url, addr, key, body);
        async move { uploaded(r.await.unwrap()).await }
    };

    let (status, _, _, v) = upload(&refusing, "up-a", "a letter").await;
    assert_eq!(status, 503, "{v}");
    let (status, replayed, _, v) = upload(&working, "up-a", "a letter").await;
    assert_eq!((status, replayed), (200, false), "the key was freed: {v}");

    let (status, _, _, v) = upload(&unknown, "up-b", "a report").await;
    assert_eq!(status, 503, "{v}");
    let r = upload_keyed(&working, addr, "up-b", "a report")
        .await
        .unwrap();
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (60..=220).contains(&wait),
        "asked again once the first try's bound passed: {wait} s"
    );
    let (status, _, _, v) = uploaded(r).await;
    assert_eq!(
        status, 409,
        "the first try's record may still be anchored: {v}"
    );
    // The clock moves past the bound (the row's, set back an hour).
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    sqlx::query("UPDATE idempotency_keys SET created_at = created_at - 3600")
        .execute(&pool)
        .await
        .unwrap();
    let (status, replayed, taken, v) = upload(&working, "up-b", "a report").await;
    assert_eq!((status, replayed), (200, false), "run anew: {v}");
    let (status, replayed, record, v) = upload(&working, "up-b", "a report").await;
    assert_eq!((status, replayed), (200, true), "{v}");
    assert_eq!(record, taken);
    assert_eq!(listed(&working, addr).await, 2, "one record per key");
}

/// A retry reaches a gateway whose chain view is behind the share nodes' (a replica of its
/// endpoint that lags): every node holds the record's proof, but to a root this gateway does
/// not see anchored yet, so it does not find the record. Past the first try's bound it must
/// not take the key over (the record is readable; a second would be stored): it answers 409
/// until its view catches up. Taken over on the code before, which read "not found" as "no
/// node holds it".
#[tokio::test]
async fn a_retry_seen_from_a_lagging_chain_view_does_not_store_a_second_record() {
    use alloy::providers::Provider;
    let k = Keyed::new().await;
    let addr = k.addr;
    let (rpc, frozen) = common::nodes::lagging_rpc(common::rpc(), common::nodes::Stuck::All).await;
    let head = alloy::providers::ProviderBuilder::new()
        .connect_http(common::rpc().parse().unwrap())
        .get_block_number()
        .await
        .unwrap();
    let lagging = k.gateway_on(&rpc, None, 4).await;
    *frozen.lock().unwrap() = Some(head);
    let working = k.gateway(None, 4).await;

    let (status, _, first, v) = uploaded(
        upload_keyed(&working, addr, "up-c", "a result")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Past the first try's bound (the row's clock set back an hour).
    let pool = sqlx::SqlitePool::connect(&k.db).await.unwrap();
    sqlx::query("UPDATE idempotency_keys SET created_at = created_at - 3600")
        .execute(&pool)
        .await
        .unwrap();
    let r = upload_keyed(&lagging, addr, "up-c", "a result")
        .await
        .unwrap();
    let retry_after = r.headers().get("retry-after").cloned();
    let (status, _, _, v) = uploaded(r).await;
    assert_eq!(status, 409, "not taken over: {v}");
    assert_eq!(retry_after.unwrap(), "60");
    // Caught up: the retry is answered by the record.
    *frozen.lock().unwrap() = None;
    let (status, replayed, record, v) = uploaded(
        upload_keyed(&lagging, addr, "up-c", "a result")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, replayed), (200, true), "{v}");
    assert_eq!(record, first);
    assert_eq!(listed(&working, addr).await, 1, "one record");
}

/// The patient's upload form, as the page `html` has it: its CSRF token and its key.
fn upload_form(html: &str) -> (String, String) {
    let value = |name: &str| {
        let marker = format!(r#"name="{name}" value=""#);
        let at = html
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} field: {html}"))
            + marker.len();
        html[at..].split('"').next().unwrap().to_owned()
    };
    (value("csrf"), value("idempotency_key"))
}

/// Posts the upload form (`csrf`, `key`) with the file `file`, as the browser `c`.
fn post_form(
    c: &reqwest::Client,
    url: &str,
    (csrf, key): &(String, String),
    file: &'static [u8],
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + use<> {
    let form = reqwest::multipart::Form::new()
        .text("csrf", csrf.clone())
        .text("idempotency_key", key.clone())
        .part(
            "file",
            reqwest::multipart::Part::bytes(file)
                .file_name("lab.txt")
                .mime_str("text/plain")
                .unwrap(),
        );
    c.post(format!("{url}/patient/upload"))
        .multipart(form)
        .send()
}

/// The file the upload tests send.
const LAB: &[u8] = b"a lab result";

/// Where a form's answer sends the browser, decoded, and the record it names (if any).
fn sent_to(r: &reqwest::Response) -> (String, Option<String>) {
    assert_eq!(r.status(), 303, "{r:?}");
    let to = percent_encoding::percent_decode_str(r.headers()["location"].to_str().unwrap())
        .decode_utf8()
        .unwrap()
        .into_owned();
    let record = to
        .find("as record 0x")
        .map(|at| to[at + 10..at + 76].to_owned());
    (to, record)
}

/// The web app's upload form sent again stores one record: a browser that posts the form a
/// second time while the first send is still being stored (the user reloads a page whose
/// answer is slow; the browser drops the first connection) and once more later (the answer
/// was lost) is answered by the first send's record each time. The upload was not cut short
/// with the dropped connection. A form from a fresh page is a new upload. Before, each send
/// stored a record of its own.
#[tokio::test]
async fn an_upload_form_sent_again_stores_one_record() {
    let k = Keyed::new().await;
    let addr = k.addr;
    let (anchoring, entered, go) = k.gated();
    let user = format!("pat{}", rand_core::OsRng.next_u32());
    let (url, _) = k.web(Some(anchoring), &user).await;
    let c = common::web::browser();
    let token = common::web::form_token(&c, &url, "/").await;
    let r = common::web::login(&c, &url, &token, &user, PASSWORD).await;
    assert_eq!(r.status(), 303);
    let page = |c: reqwest::Client, url: String| async move {
        c.get(format!("{url}/patient"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let form = upload_form(&page(c.clone(), url.clone()).await);

    let first = tokio::spawn(post_form(&c, &url, &form, LAB));
    tokio::time::timeout(Duration::from_secs(30), entered.notified())
        .await
        .expect("the first send reaches its anchor");
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let again = tokio::spawn(post_form(&c, &url, &form, LAB));
    go.add_permits(8);
    let (to, record) = sent_to(&again.await.unwrap().unwrap());
    let record = record.unwrap_or_else(|| panic!("no record named: {to}"));
    assert!(to.starts_with("/patient?ok="), "{to}");

    let (to, later) = sent_to(&post_form(&c, &url, &form, LAB).await.unwrap());
    assert_eq!(later.as_deref(), Some(record.as_str()), "{to}");
    assert!(to.contains("by an earlier send of this form"), "{to}");
    // The same form (a page from the browser's history) with another file: refused in words.
    let (to, none) = sent_to(&post_form(&c, &url, &form, b"another file").await.unwrap());
    assert!(
        none.is_none() && to.contains("err=this form was sent before"),
        "{to}"
    );
    assert_eq!(listed(&url, addr).await, 1, "one record for one form");
    let read = ehr_share::records::RecordsConfig::new(k.refs.clone(), 3)
        .client(
            common::as_(&k.office, &k.patient),
            k.patient.clone(),
            KuboClient::new(&common::stack().kubo.api_url),
        )
        .unwrap()
        .get(record.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(read.data, b"a lab result");

    // A fresh page's form is a new upload.
    let fresh = upload_form(&page(c.clone(), url.clone()).await);
    assert_ne!(
        fresh.1, form.1,
        "each rendering of the form has its own key"
    );
    let (to, other) = sent_to(&post_form(&c, &url, &fresh, LAB).await.unwrap());
    assert!(other.is_some_and(|o| o != record), "{to}");
    assert_eq!(listed(&url, addr).await, 2);
}

/// The doctor's forms that send a transaction, sent again (the answer was slow and the user
/// reloaded, or it was lost), are answered by the first send's transaction: the break-glass
/// opens the emergency once (one opening on the patient's trail, counted once against the
/// doctor's three a day), and the access request is "sent", not refused as pending already.
/// Before, each break-glass send opened it anew, and the second request was refused.
#[tokio::test]
async fn a_doctors_forms_sent_again_act_once() {
    let k = Keyed::new().await;
    let addr = k.addr;
    let n = rand_core::OsRng.next_u32();
    let (url, accounts) = k.web(None, &format!("pat{n}")).await;
    let doctor = common::verified_doctor(&k.office).await;
    let user = format!("doc{n}");
    accounts
        .create(
            &user,
            PASSWORD,
            ehr_share::web::Role::Provider,
            None,
            Some(doctor.clone()),
        )
        .await
        .unwrap();
    let c = common::web::browser();
    let token = common::web::form_token(&c, &url, "/").await;
    assert_eq!(
        common::web::login(&c, &url, &token, &user, PASSWORD)
            .await
            .status(),
        303
    );
    let page = c
        .get(format!("{url}/doctor/patient?addr={addr}"))
        .send()
        .await
        .unwrap();
    // Not kept by the browser: Back fetches the page anew, with new keys.
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    let form = |action: &str| {
        upload_form(
            &html[html
                .find(&format!(r#"action="{action}""#))
                .unwrap_or_else(|| panic!("no {action} form: {html}"))..],
        )
    };
    let (csrf, key) = form("/doctor/request");
    // A form refused for its CSRF token leaves its key free: sent next with the token, it is
    // a fresh request, not a 422 (another body).
    let r = c
        .post(format!("{url}/doctor/request"))
        .form(&[
            ("csrf", "not the token"),
            ("idempotency_key", key.as_str()),
            ("addr", &addr.to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for again in [false, true] {
        let r = c
            .post(format!("{url}/doctor/request"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("idempotency_key", key.as_str()),
                ("addr", &addr.to_string()),
            ])
            .send()
            .await
            .unwrap();
        let (to, _) = sent_to(&r);
        assert!(to.contains("&ok=request sent"), "{to}");
        assert_eq!(to.contains("done by an earlier send"), again, "{to}");
    }
    let (csrf, key) = form("/doctor/break-glass");
    let send = || {
        c.post(format!("{url}/doctor/break-glass"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("idempotency_key", key.as_str()),
                ("addr", &addr.to_string()),
                ("reason", "ETREAT"),
            ])
            .send()
    };
    for again in [false, true] {
        let (to, _) = sent_to(&send().await.unwrap());
        assert!(
            to.contains("?addr=") && to.contains("&ok=emergency access open"),
            "{to}"
        );
        assert_eq!(to.contains("done by an earlier send"), again, "{to}");
    }
    let opened = k
        .office
        .audit_page_for_patient(addr, ehr_share::chain::AuditFilter::Emergency, 0, 50)
        .await
        .unwrap()
        .events
        .iter()
        .filter(|e| {
            matches!(e.kind, ehr_share::chain::AuditKind::BreakGlassOpened { provider, .. } if provider == doctor.address())
        })
        .count();
    assert_eq!(opened, 1, "the form sent twice opened the emergency once");
}

//! Memory and disk of the gateway and the five share nodes of `ehr dev` (release build) at
//! 10^5 records, against the same processes at a few hundred records in the same run
//! (performance and reliability issue: gateway + 5 share nodes <= 200 MiB at 10^5 records).
//!
//! 1. `ehr dev` starts; 300 records of 10 KB are uploaded through the gateway and each is read
//!    once by a granted doctor: the memory of the small stack.
//! 2. 10^5 more records of the same patient are anchored on chain (100 roots of 1,000 leaves,
//!    each leaf the record's own, as the gateway's batcher anchors them), `ehr dev` stops, and
//!    each share node's store gets its share of every record, sealed at rest as a deposit is
//!    ([`ShareStore::import_anchored`]: one transaction per 1,000 records; uploading 10^5
//!    records through the gateway would take about half an hour of both cores). The records
//!    are real: a share of a fresh secret per record, a sealed record block per record; their
//!    blocks name one ciphertext on Kubo (the same 10 KB payload).
//! 3. `ehr dev` starts again on the same state; the doctor reads 2,000 of the new records
//!    chosen at random (each its access transaction, shares from three nodes, Kubo,
//!    decryption, digest check), then memory is taken again.
//!
//! `cargo bench --bench memory` prints the tables and writes `docs/memory-bench.md`.
//! `MEMORY_RECORDS` changes the number of records added in step 2 (default 100,000).

#[path = "support/dev.rs"]
mod dev;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use ehr_share::chain::merkle::{Tree, leaf};
use ehr_share::chain::{Deployment, EhrChain, PatientAddr, RecordId, random_b256};
use ehr_share::crypto::{AeadKey, Scheme, derive_key, seal_segments};
use ehr_share::ipfs::KuboClient;
use ehr_share::records::{RecordBlock, keyed_digest};
use ehr_share::shamir::{Secret, Threshold, split};
use ehr_share::share_node::{Anchor, Binding, ShareStore, StoredShare};
use rand_core::{OsRng, RngCore};

use dev::{Ports, pct_ms, random, read, upload};

const SMALL: usize = 300;
const READS: usize = 2000;
const READERS: usize = 8;
const BATCH: usize = 1000;
const PAYLOAD: usize = 10_000;

/// Reads `ids` with `READERS` readers as the doctor; every read must return `PAYLOAD` bytes.
async fn read_all(
    http: &reqwest::Client,
    gw: &str,
    ids: Vec<String>,
) -> anyhow::Result<Vec<Duration>> {
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..READERS {
        let (http, gw, ids, next) = (http.clone(), gw.to_owned(), ids.clone(), next.clone());
        tasks.spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                let t = Instant::now();
                let (status, n) = read(&http, &gw, "demo-doctor1", id).await;
                anyhow::ensure!(
                    status == 200 && n == PAYLOAD,
                    "read of {id}: {status}, {n} bytes"
                );
                times.push(t.elapsed());
            }
            Ok(times)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// The added records: each one's id parts and its anchor, before any share exists.
struct Planned {
    salt: B256,
    anchor: Anchor,
}

/// One record's row for each of the five nodes, as a deposit followed by its proof stores it.
fn rows_for(
    p: &Planned,
    patient: PatientAddr,
    author: Address,
    common: &RecordBlock,
) -> ([u8; 32], Vec<StoredShare>) {
    let id = RecordId::derive(author, patient, p.salt);
    let block = RecordBlock {
        record_id: id,
        ..common.clone()
    };
    let secret = Secret::random();
    let sealed = hex::encode(block.seal(&secret));
    let (shares, commitments) = split(&secret, Threshold::new(3, 5).expect("3 of 5"));
    let commitments = hex::encode(commitments.to_bytes());
    let now = ehr_share::clock::unix_now();
    let rows = shares
        .iter()
        .map(|s| StoredShare {
            patient: patient.key(),
            uploader: author,
            salt: p.salt,
            digest: common.digest,
            anchor: Some(p.anchor.clone()),
            share: hex::encode(s.to_bytes()),
            commitments: commitments.clone(),
            sealed_block: sealed.clone(),
            stored_at: now,
        })
        .collect();
    (id.0.0, rows)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let added: usize = std::env::var("MEMORY_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir()?;
    let state = tmp.path().join("state");
    let ports = Ports::free();
    let gw = ports.gateway_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    // Three demo doctors make every read of a deployment here: their per-requester limits are
    // raised, as in the load bench.
    let env = [
        ("EHR_SHARE_NODE_PER_MINUTE", "10000000".to_owned()),
        ("EHR_SHARE_NODE_BURST", "100000".to_owned()),
        // The added records are split 3 of 5.
        ("EHR_THRESHOLD", "3".to_owned()),
    ];
    println!("memory: starting ehr dev (release build)");
    let mut child = dev::start(&state, ports, &env).await?;
    // The tether shell's child is `ehr dev` itself: the gateway and the parent of the rest.
    let tether = child.pid().unwrap_or(0);
    let root = dev::pid_of(tether, &["ehr", " dev"]).unwrap_or(tether);

    // 1. The small stack.
    println!("memory: {SMALL} uploads and reads through the gateway");
    let mut small = Vec::new();
    for _ in 0..SMALL {
        small.push(
            upload(&http, &gw, "demo-patient1", "1-1001", random(PAYLOAD))
                .await
                .map_err(|e| anyhow::anyhow!("upload: {e:?}"))?,
        );
    }
    let small_reads = read_all(&http, &gw, small).await?;
    let small_records = dev::shares_on_node_1(&http, ports).await?;
    let small_mem = dev::stack_memory(root);
    let small_disk = std::fs::metadata(state.join("share-node-1/shares.redb"))?.len();

    // 2. Plan and anchor the added records while the chain runs.
    let patient: PatientAddr = "1-1001".parse()?;
    let deployment = Deployment::load(&state.join("deployment.json"))?;
    let reader = EhrChain::connect(&ports.rpc_url(), None, &deployment).await?;
    let author = reader
        .patient_account(patient)
        .await?
        .ok_or_else(|| anyhow::anyhow!("patient 1-1001 has no account"))?;
    let binding = Binding {
        chain_id: reader.chain_id(),
        contract: reader.address(),
        deployment_id: reader.deployment_id(),
        code_hash: reader.code_hash().await?,
    };
    let payer = dev::funded(&reader, &ports, &deployment).await?;
    // One ciphertext for every added record: what differs per record is on the share nodes.
    let payload = random(PAYLOAD);
    let key = AeadKey::random();
    let mut ciphertext = Vec::new();
    seal_segments(&key, Scheme::CURRENT, &payload, |seg| {
        ciphertext.extend_from_slice(&seg)
    });
    let cid = KuboClient::new(ports.kubo_url())
        .add_bytes(ciphertext.into())
        .await?;
    let digest_key = random_b256();
    let common = RecordBlock {
        record_id: RecordId(B256::ZERO),
        patient,
        cid,
        key: hex::encode(key.as_bytes()),
        scheme: Scheme::CURRENT.name().into(),
        digest: keyed_digest(&digest_key.0, &payload),
        digest_key: hex::encode(digest_key),
        size: PAYLOAD as u64,
        media_type: "application/octet-stream".into(),
        file_name: None,
        author,
        created_at: ehr_share::clock::unix_now(),
    };
    println!("memory: anchoring {added} records in roots of {BATCH}");
    let t = Instant::now();
    let mut planned = Vec::with_capacity(added);
    let salts: Vec<B256> = (0..added).map(|_| random_b256()).collect();
    for chunk in salts.chunks(BATCH) {
        let leaves: Vec<B256> = chunk
            .iter()
            .map(|salt| {
                leaf(
                    RecordId::derive(author, patient, *salt),
                    patient,
                    author,
                    common.digest,
                )
            })
            .collect();
        let tree = Tree::new(&leaves);
        payer
            .anchor_root(tree.root, u32::try_from(leaves.len())?)
            .await?;
        for (salt, proof) in chunk.iter().zip(tree.proofs) {
            planned.push(Planned {
                salt: *salt,
                anchor: Anchor {
                    root: tree.root,
                    proof,
                },
            });
        }
    }
    let anchoring = t.elapsed();
    // The chain's state file must hold the roots before ehr dev stops (its saver writes
    // within about a second of a change; stopping writes it once more).
    child.stop(Duration::from_secs(30)).await;

    println!("memory: filling the five share stores");
    let t = Instant::now();
    let mut stores = Vec::new();
    for i in 1..=5 {
        let dir = state.join(format!("share-node-{i}"));
        let hex_key = std::fs::read_to_string(dir.join("node.key"))?;
        let identity: PrivateKeySigner = hex_key.trim().parse()?;
        let key = derive_key(identity.to_bytes().as_slice(), "share-store");
        stores.push(ShareStore::open(&dir.join("shares.redb"), key, &binding)?);
    }
    let mut ids = Vec::with_capacity(added);
    for chunk in planned.chunks(BATCH) {
        let mut per_node: Vec<Vec<([u8; 32], StoredShare)>> = vec![Vec::new(); 5];
        for p in chunk {
            let (id, rows) = rows_for(p, patient, author, &common);
            ids.push(RecordId(B256::from(id)).to_string());
            for (node, row) in per_node.iter_mut().zip(rows) {
                node.push((id, row));
            }
        }
        for (store, rows) in stores.iter().zip(&per_node) {
            store.import_anchored(rows)?;
        }
    }
    drop(stores);
    let filling = t.elapsed();

    // 3. The big stack.
    println!("memory: starting ehr dev again on the filled stores");
    let mut child = dev::start(&state, ports, &env).await?;
    // The tether shell's child is `ehr dev` itself: the gateway and the parent of the rest.
    let tether = child.pid().unwrap_or(0);
    let root = dev::pid_of(tether, &["ehr", " dev"]).unwrap_or(tether);
    anyhow::ensure!(
        dev::all_up(&http, &gw, Duration::from_secs(60)).await,
        "the stack did not come back"
    );
    let start_mem = dev::stack_memory(root);
    let mut picked = Vec::with_capacity(READS);
    for _ in 0..READS.min(ids.len()) {
        let i = (OsRng.next_u64() % ids.len() as u64) as usize;
        picked.push(ids[i].clone());
    }
    println!("memory: {} reads of random added records", picked.len());
    let big_reads = read_all(&http, &gw, picked).await?;
    let big_records = dev::shares_on_node_1(&http, ports).await?;
    let big_mem = dev::stack_memory(root);
    let big_disk = std::fs::metadata(state.join("share-node-1/shares.redb"))?.len();
    child.stop(Duration::from_secs(30)).await;

    let total = |rows: &[(String, dev::Memory)]| rows.last().map(|(_, m)| *m).unwrap_or_default();
    let mut md = String::from("# Memory and disk at 10^5 records\n\n");
    md.push_str(&format!(
        "Measured by `cargo bench --bench memory` against `ehr dev` (release build: anvil, Kubo, five share nodes 3-of-5, the gateway). First {SMALL} records of 10 KB are uploaded through the gateway and each read once by a granted doctor; then {added} more records of the same patient are anchored on chain ({} roots of {BATCH}, {:.0} s) and stored in each share node's store as a deposit and its proof store them, sealed at rest, in one transaction per {BATCH} records ({:.0} s for the five stores; uploading them through the gateway would take about half an hour of both cores). Each added record has its own secret, shares, Feldman commitments and sealed record block; their blocks name one 10 KB ciphertext on Kubo. `ehr dev` starts again on the same state, and the doctor reads {} of the added records chosen at random, {READERS} at a time (each read: its access transaction, mined; shares from three nodes; Kubo; decryption; digest check).\n\n",
        added.div_ceil(BATCH),
        anchoring.as_secs_f64(),
        filling.as_secs_f64(),
        big_reads.len(),
    ));
    md.push_str(dev::MEMORY_NOTE);
    md.push_str(&format!(
        "### {small_records} records on each node, after {} reads\n\n",
        small_reads.len()
    ));
    md.push_str(&dev::memory_table(&small_mem));
    md.push_str(&format!("\n### {big_records} records, just started\n\n"));
    md.push_str(&dev::memory_table(&start_mem));
    md.push_str(&format!(
        "\n### {big_records} records, after {} reads of random ones\n\n",
        big_reads.len()
    ));
    md.push_str(&dev::memory_table(&big_mem));
    let (s, b) = (total(&small_mem), total(&big_mem));
    md.push_str(&format!(
        "\n| | {small_records} records | {big_records} records | target |\n|---|---:|---:|---:|\n\
         | gateway + 5 share nodes, resident | {:.0} MiB | {:.0} MiB | 200 MiB |\n\
         | the same, proportional | {:.0} MiB | {:.0} MiB | |\n\
         | share node 1's store on disk | {:.1} MiB | {:.1} MiB | |\n\
         | per record | {:.0} bytes | {:.0} bytes | |\n\
         | read p50 / p95 / p99 | {:.1} / {:.1} / {:.1} ms | {:.1} / {:.1} / {:.1} ms | |\n",
        s.rss,
        b.rss,
        s.pss,
        b.pss,
        small_disk as f64 / (1 << 20) as f64,
        big_disk as f64 / (1 << 20) as f64,
        small_disk as f64 / small_records.max(1) as f64,
        big_disk as f64 / big_records.max(1) as f64,
        pct_ms(&small_reads, 0.5),
        pct_ms(&small_reads, 0.95),
        pct_ms(&small_reads, 0.99),
        pct_ms(&big_reads, 0.5),
        pct_ms(&big_reads, 0.95),
        pct_ms(&big_reads, 0.99),
    ));
    md.push_str("\nMachine: 2 cores (bench, gateway, anvil, Kubo and five share nodes all on them); profile: bench (optimised).\n");
    println!("{md}");
    std::fs::write(dev::root().join("docs/memory-bench.md"), &md)?;
    Ok(())
}

//! Reads, uploads and a mixed load through the gateway of `ehr dev` (release build; anvil,
//! Kubo, five share nodes 3-of-5), each figure next to its floor measured in the same run
//! (performance and reliability issue):
//!
//! 1. a granted doctor's read of a 100 KB record through the REST API, against the floor of
//!    the same work without ehr-share (Kubo `cat` of a 100 KB object and one `eth_call`);
//! 2. a denied read (a revoked doctor);
//! 3. 1 MiB reads by 32 concurrent readers;
//! 4. 10 KB uploads by 64 concurrent clients, with the CPU time of each process per record;
//! 5. 10,000 mixed requests (reads, uploads, grants, denied reads) at 64 concurrency;
//! 6. memory of the gateway and the share nodes, and share-node disk per record.
//!
//! The share nodes' per-requester limits are raised (`EHR_SHARE_NODE_PER_MINUTE`): three demo
//! doctors make all the reads here, where a deployment has thousands of requesters.
//!
//! `cargo bench --bench load` prints the tables and writes `docs/load-bench.md`.
//! `LOAD_MIXED` changes the number of mixed requests (default 10,000).

#[path = "support/dev.rs"]
mod dev;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ehr_share::chain::{Deployment, EhrChain, PatientAddr};
use ehr_share::ipfs::KuboClient;
use rand_core::{OsRng, RngCore};
use tokio::sync::Mutex;

use dev::{Ports, account, cpu_secs, pct_ms, pids_of, random, read, upload};

const ROUNDS: usize = 200;
/// The demo chain's mnemonic (anvil.toml): demo doctor 1 is its account 1.
const MNEMONIC: &str = "test test test test test test test test test test test junk";
/// 100 KB records, each read once first (its access transaction), then again and again.
const FIRST_READS: usize = 40;
const UPLOADS: usize = 2000;
const UPLOAD_CLIENTS: usize = 64;
const BIG_READERS: usize = 32;
const BIG_READS: usize = 320;

/// Uploads, asking again while the gateway's upload budget is taken (503 with Retry-After).
async fn upload_patiently(
    http: &reqwest::Client,
    gw: &str,
    token: &str,
    patient: &str,
    data: &[u8],
) -> (Result<String, (u16, String)>, usize) {
    let mut busy = 0;
    loop {
        match upload(http, gw, token, patient, data.to_vec()).await {
            Err((503, m)) if m.contains("too many uploads") => {
                busy += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return (other, busy),
        }
    }
}

fn row(name: &str, v: &[Duration]) -> String {
    format!(
        "| {name} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
        v.len(),
        pct_ms(v, 0.5),
        pct_ms(v, 0.95),
        pct_ms(v, 0.99)
    )
}

/// One read of section 1's floor, timed: Kubo `cat` of the 100 KB floor object and the
/// `checkAccess` of `(patient, reader)`, then a transfer mined from `payer` when given (the
/// floor of a first read).
async fn floor_read(
    kubo: &KuboClient,
    chain: &EhrChain,
    cid: &str,
    (patient, reader): (PatientAddr, alloy::primitives::Address),
    payer: Option<&EhrChain>,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let bytes = kubo.cat(cid).await?;
    chain.check_access(patient, reader).await?;
    if let Some(payer) = payer {
        payer
            .send_value(
                alloy::primitives::Address::ZERO,
                alloy::primitives::U256::ZERO,
            )
            .await?;
    }
    let took = t.elapsed();
    anyhow::ensure!(bytes.len() == 100_000);
    Ok(took)
}

/// `ours` over `floor` at percentile `p`.
fn ratio(ours: &[Duration], floor: &[Duration], p: f64) -> f64 {
    pct_ms(ours, p) / pct_ms(floor, p)
}

/// A table of latency percentiles, a row per path.
fn table(rows: &[(&str, &[Duration])]) -> String {
    let mut md = String::from("| path | reads | p50 | p95 | p99 |\n|---|---:|---:|---:|---:|\n");
    for (name, v) in rows {
        md.push_str(&row(name, v));
        md.push('\n');
    }
    md
}

/// CPU seconds per part of the stack, and of this process (the load generator).
fn cpu_split(root: u32) -> BTreeMap<&'static str, f64> {
    let mut m = BTreeMap::new();
    m.insert("ehr dev (gateway)", cpu_secs(root));
    m.insert(
        "share nodes (5)",
        pids_of(root, &["share-node"])
            .into_iter()
            .map(cpu_secs)
            .sum(),
    );
    m.insert(
        "anvil",
        pids_of(root, &["anvil"]).into_iter().map(cpu_secs).sum(),
    );
    m.insert(
        "Kubo",
        pids_of(root, &["ipfs", "daemon"])
            .into_iter()
            .map(cpu_secs)
            .sum(),
    );
    m.insert("load generator", cpu_secs(std::process::id()));
    m
}

/// A table of CPU milliseconds per `unit` by process between two [`cpu_split`]s, with the
/// rate the two cores allow at that cost.
fn cpu_table(
    before: &BTreeMap<&'static str, f64>,
    after: &BTreeMap<&'static str, f64>,
    count: usize,
    unit: &str,
) -> String {
    let count = count.max(1) as f64;
    let mut md = format!("| process | CPU ms per {unit} |\n|---|---:|\n");
    let mut total = 0.0;
    for (k, a) in after {
        let d = a - before.get(k).copied().unwrap_or(0.0);
        total += d;
        md.push_str(&format!("| {k} | {:.2} |\n", d * 1000.0 / count));
    }
    md.push_str(&format!(
        "| all | {:.2} (2 cores: at most {:.0} per second at this cost) |\n\n",
        total * 1000.0 / count,
        2.0 * count / total.max(1e-9)
    ));
    md
}

/// Reads by the command, each against the command-line floor.
const COMMAND_READS: usize = 40;

/// Section 1's client-side half: demo doctor 1 reads `ids` (100 KB records of patient 1) the
/// way `ehr record get` does, talking to the share nodes, Kubo and the chain itself (no
/// gateway). In process, with one access transaction per read (the command's way) and with
/// access reuse (a client that keeps running), against the same floors as the gateway; and
/// as the command itself, a process per read, against a baseline of the same work done by the
/// command-line tools a reader would use without ehr-share (Kubo's `ipfs cat`, Foundry's
/// `cast`).
async fn client_side(
    ports: &Ports,
    state: &std::path::Path,
    ids: &[String],
    floor_cid: &str,
    patient: PatientAddr,
    chain: &EhrChain,
) -> anyhow::Result<String> {
    use ehr_share::records::{RecordsConfig, ShareNodeRef};

    let deployment = Deployment::load(&state.join("deployment.json"))?;
    let doctor = ehr_share::cli::keys::dev_signer(MNEMONIC, 1)?;
    let doctor_chain =
        EhrChain::connect(&ports.rpc_url(), Some(doctor.clone()), &deployment).await?;
    let urls: Vec<String> = (0..5)
        .map(|i| format!("http://127.0.0.1:{}", ports.share_base + i))
        .collect();
    let mut nodes = Vec::new();
    for url in &urls {
        nodes.push(ShareNodeRef::discover(url).await?);
    }
    let replicas = || ehr_share::ipfs::Replicas::new(vec![KuboClient::new(ports.kubo_url())], 1);
    let each = RecordsConfig::new(nodes.clone(), 3).client(
        doctor_chain.clone(),
        doctor.clone(),
        replicas()?,
    )?;
    let reusing = RecordsConfig::new(nodes, 3)
        .with_access_reuse(Duration::from_secs(600))
        .client(doctor_chain, doctor.clone(), replicas()?)?;
    let kubo = KuboClient::new(ports.kubo_url());
    let payer_key = dev::funded_key(chain).await?;
    let payer = EhrChain::connect(&ports.rpc_url(), Some(payer_key.clone()), &deployment).await?;
    let doctor_addr = doctor.address();
    let floor = |mined: bool| {
        floor_read(
            &kubo,
            chain,
            floor_cid,
            (patient, doctor_addr),
            mined.then_some(&payer),
        )
    };
    let timed_get = |client: &ehr_share::records::RecordsClient, id: &str| {
        let (client, id) = (client.clone(), id.to_owned());
        async move {
            let t = Instant::now();
            let got = client.get(id.parse()?).await?;
            anyhow::ensure!(got.data.len() == 100_000);
            anyhow::Ok(t.elapsed())
        }
    };

    // In process: a transaction per read, then reuse.
    let (mut floor_tx, mut once) = (Vec::new(), Vec::new());
    for id in ids {
        floor_tx.push(floor(true).await?);
        once.push(timed_get(&each, id).await?);
    }
    for id in ids {
        timed_get(&reusing, id).await?;
    }
    let (mut floor_plain, mut again) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        floor_plain.push(floor(false).await?);
        again.push(timed_get(&reusing, &ids[i % ids.len()]).await?);
    }

    // The command, a process per read, against the command-line tools.
    let out_dir = tempfile::tempdir()?;
    let out = out_dir.path().join("record.bin");
    let ehr = || {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_ehr"));
        c.env("EHR_SHARE_NODES", urls.join(","))
            .env("EHR_THRESHOLD", "3")
            .env("EHR_IPFS_API", ports.kubo_url())
            .env("EHR_RPC_URL", ports.rpc_url())
            .env("EHR_DEPLOYMENT", state.join("deployment.json"))
            .env("EHR_DEV_ACCOUNT", "1")
            .env("EHR_ANVIL_CONFIG", dev::root().join("anvil.toml"))
            .env("RUST_LOG", "warn");
        c
    };
    let ipfs = dev::root().join(".tools/bin/ipfs");
    let cast = dev::root().join("tools/node/node_modules/@foundry-rs/cast-linux-amd64/bin/cast");
    let api = format!("/ip4/127.0.0.1/tcp/{}", ports.kubo_api);
    let contract = deployment.address.to_string();
    let payer_hex = format!("0x{}", alloy::hex::encode(payer_key.to_bytes()));
    let ipfs_repo = tempfile::tempdir()?;
    let run = |mut c: tokio::process::Command| async move {
        let t = Instant::now();
        let o = c.stdin(std::process::Stdio::null()).output().await?;
        let took = t.elapsed();
        anyhow::ensure!(
            o.status.success(),
            "{:?}: {}",
            c.as_std().get_program(),
            String::from_utf8_lossy(&o.stderr)
        );
        anyhow::Ok((took, o.stdout))
    };
    let (mut cmd_floor, mut cmd) = (Vec::new(), Vec::new());
    for id in ids.iter().cycle().take(COMMAND_READS) {
        let mut cat = tokio::process::Command::new(&ipfs);
        cat.env("IPFS_PATH", ipfs_repo.path())
            .args(["--api", &api, "cat", floor_cid]);
        let mut call = tokio::process::Command::new(&cast);
        call.args([
            "call",
            "--rpc-url",
            &ports.rpc_url(),
            &contract,
            "checkAccess(uint128,address)(uint8,bool)",
            &patient.key().to_string(),
            &doctor_addr.to_string(),
        ]);
        let mut send = tokio::process::Command::new(&cast);
        send.args([
            "send",
            "--rpc-url",
            &ports.rpc_url(),
            "--private-key",
            &payer_hex,
            "0x0000000000000000000000000000000000000000",
            "--value",
            "0",
        ]);
        let (a, bytes) = run(cat).await?;
        anyhow::ensure!(
            bytes.len() == 100_000,
            "ipfs cat gave {} bytes",
            bytes.len()
        );
        let (b, _) = run(call).await?;
        let (c, _) = run(send).await?;
        cmd_floor.push(a + b + c);
        let mut get = ehr();
        get.args(["record", "get", id, "--out"]).arg(&out);
        cmd.push(run(get).await?.0);
        anyhow::ensure!(std::fs::metadata(&out)?.len() == 100_000);
    }

    let mut md = format!(
        "### Client-side reads: what `ehr record get` does\n\nDemo doctor 1 reads the same records on their own machine: the access transaction, shares from three of the five nodes, Kubo, decryption, digest check, with no gateway in between. In process ({} reads, each with its own access transaction, as the command sends; then {ROUNDS} reads by a client that reuses its access transactions, as a program that keeps running can), against the gateway's floors, alternating with them; and as the command itself, a process per read ({COMMAND_READS} reads: start, key, connections, the read, the file written), against a command-line baseline: the same work done by the tools a reader would use without ehr-share, `ipfs cat` of a 100 KB object (Kubo's command against the same daemon), `cast call` of `checkAccess` and `cast send` of a transfer (Foundry's), one after another (three process starts, and `cast send` waits for its receipt at its own pace: a peer, not a lower bound).\n\n",
        ids.len()
    );
    md.push_str(&table(&[
        (
            "floor: Kubo cat + eth_call + a mined transaction",
            &floor_tx,
        ),
        ("client-side read, its own access transaction", &once),
        ("floor: Kubo cat + eth_call", &floor_plain),
        ("client-side re-read, access reused", &again),
        (
            "command-line baseline: `ipfs cat` + `cast call` + `cast send`",
            &cmd_floor,
        ),
        ("`ehr record get`", &cmd),
    ]));
    md.push_str(&format!(
        "\nRatio, in process: p50 {:.1}x, p95 {:.1}x the floor with a transaction; re-reads p50 {:.1}x, p95 {:.1}x theirs. The command: p50 {:.2}x, p95 {:.2}x the command-line baseline.\n\n",
        ratio(&once, &floor_tx, 0.5),
        ratio(&once, &floor_tx, 0.95),
        ratio(&again, &floor_plain, 0.5),
        ratio(&again, &floor_plain, 0.95),
        ratio(&cmd, &cmd_floor, 0.5),
        ratio(&cmd, &cmd_floor, 0.95),
    ));
    Ok(md)
}

#[derive(Default)]
struct Kind {
    times: Vec<Duration>,
    ok: usize,
    server_errors: usize,
    other: BTreeMap<u16, usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mixed_total: usize = std::env::var("LOAD_MIXED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    rest_after_last_run().await;
    let tmp = tempfile::tempdir()?;
    let state = tmp.path().join("state");
    let ports = Ports::free();
    let gw = ports.gateway_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(256)
        .build()?;
    println!("load: starting ehr dev (release build)");
    let mut child = dev::start(
        &state,
        ports,
        &[
            ("EHR_SHARE_NODE_PER_MINUTE", "10000000".into()),
            ("EHR_SHARE_NODE_BURST", "100000".into()),
        ],
    )
    .await?;
    // The tether shell's child is `ehr dev` itself: the gateway and the parent of the rest.
    let tether = child.pid().unwrap_or(0);
    let root = dev::pid_of(tether, &["ehr", " dev"]).unwrap_or(tether);
    let mut md = String::from("# Gateway load: reads, uploads, a mixed load, memory\n\n");
    md.push_str("Measured by `cargo bench --bench load` against `ehr dev` (release build: anvil with a block per transaction, Kubo, five share nodes 3-of-5, the gateway with batched anchoring), driven over loopback HTTP by the REST API with the demo tokens. A read is what a doctor's `GET /records/{id}` does: the access transaction (an audited on-chain transaction, mined), shares from three of the five nodes (one more for each that fails, all when the first are slow), Kubo, decryption, digest check. The share nodes' per-requester limits are raised for the run (three demo doctors make every read).\n\n");

    // The cast: doctor 1 is granted on patient 1 and revoked on patient 2; doctor 2 is
    // granted on patients 1 and 3.
    let doctor2 = account(&http, &gw, "demo-doctor2").await?;
    let doctor1 = account(&http, &gw, "demo-doctor1").await?;
    let p1: PatientAddr = "1-1001".parse()?;

    // Seed: 100 KB, 1 MiB and 10 KB records.
    println!("load: seeding records");
    let mut big = Vec::new();
    for _ in 0..FIRST_READS {
        big.push(
            upload(&http, &gw, "demo-patient1", "1-1001", random(100_000))
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        );
    }
    let mut huge = Vec::new();
    for _ in 0..4 {
        huge.push(
            upload(&http, &gw, "demo-patient1", "1-1001", random(1 << 20))
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        );
    }
    let mut small1 = Vec::new();
    let mut small3 = Vec::new();
    for _ in 0..20 {
        small1.push(
            upload(&http, &gw, "demo-patient1", "1-1001", random(10_000))
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        );
        small3.push(
            upload(&http, &gw, "demo-patient3", "2-2001", random(10_000))
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        );
    }
    let denied_id = upload(&http, &gw, "demo-patient2", "1-1002", random(10_000))
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;

    // 1. Read 100 KB against the floor, alternating: first each record's first read (the
    // doctor's access transaction, mined), then re-reads (its access reused).
    println!("load: 100 KB reads against the floor");
    let kubo = KuboClient::new(ports.kubo_url());
    let floor_cid = kubo.add_bytes(random(100_000).into()).await?;
    let deployment = Deployment::load(&state.join("deployment.json"))?;
    let chain = EhrChain::connect(&ports.rpc_url(), None, &deployment).await?;
    // A funded account of the bench's own for the floor's mined transaction.
    let payer = dev::funded(&chain, &ports, &deployment).await?;
    let doctor1_addr = doctor1.parse()?;
    let (mut floor_tx, mut first) = (Vec::new(), Vec::new());
    for id in &big {
        floor_tx
            .push(floor_read(&kubo, &chain, &floor_cid, (p1, doctor1_addr), Some(&payer)).await?);
        let t = Instant::now();
        let (status, n) = read(&http, &gw, "demo-doctor1", id).await;
        first.push(t.elapsed());
        anyhow::ensure!(status == 200 && n == 100_000, "read {status}");
    }
    let (mut floor, mut gateway) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        floor.push(floor_read(&kubo, &chain, &floor_cid, (p1, doctor1_addr), None).await?);
        let t = Instant::now();
        let (status, n) = read(&http, &gw, "demo-doctor1", &big[i % big.len()]).await;
        gateway.push(t.elapsed());
        anyhow::ensure!(status == 200 && n == 100_000, "read {status}");
    }
    md.push_str("## 1. A granted read of 100 KB against its floor\n\n");
    md.push_str(&format!("A doctor reads {FIRST_READS} records of 100 KB once each, then {ROUNDS} times more in turn; each read alternates with its floor. A first read sends the doctor's access transaction (on the patient's audit trail, mined before any share is released); the gateway reuses it for re-reads of that record for `records.access_reuse_secs` (600 s here; the share nodes honour it for 30 minutes and check the grant on every read, so a revoke ends it at once). Floors: Kubo `cat` of a 100 KB object plus one `eth_call` (`checkAccess`), what a reader needs at least without ehr-share; for a first read, that plus one mined transaction (a transfer from the bench's own account). Targets: p50 <= 1.5x and p95 <= 3x the floor.\n\n"));
    md.push_str(&table(&[
        (
            "floor: Kubo cat + eth_call + a mined transaction",
            &floor_tx,
        ),
        ("gateway `GET /records/{id}`, first read", &first),
        ("floor: Kubo cat + eth_call", &floor),
        ("gateway `GET /records/{id}`, re-read", &gateway),
    ]));
    md.push_str(&format!(
        "\nRatio, first reads: p50 {:.1}x, p95 {:.1}x their floor. Re-reads: p50 {:.1}x, p95 {:.1}x theirs.\n\n",
        ratio(&first, &floor_tx, 0.5),
        ratio(&first, &floor_tx, 0.95),
        ratio(&gateway, &floor, 0.5),
        ratio(&gateway, &floor, 0.95)
    ));
    // Where a re-read's time goes: CPU by process over re-reads alone (no floor between them).
    let cpu_before = cpu_split(root);
    for i in 0..ROUNDS {
        let (status, n) = read(&http, &gw, "demo-doctor1", &big[i % big.len()]).await;
        anyhow::ensure!(status == 200 && n == 100_000, "read {status}");
    }
    md.push_str(&format!("CPU per re-read, by process ({ROUNDS} more re-reads one after another, user + system time divided by the reads):\n\n"));
    md.push_str(&cpu_table(&cpu_before, &cpu_split(root), ROUNDS, "read"));

    // The same reads client-side come here in the report; they run after the denied reads,
    // which come before them as in runs before they were measured.
    let client_side_at = md.len();

    // 2. Denied reads.
    println!("load: denied reads");
    let p2: PatientAddr = "1-1002".parse()?;
    // The transaction of each denial of doctor 1 on the patient's trail, oldest first.
    let denial_txs = || {
        let chain = chain.clone();
        async move {
            anyhow::Ok(
                chain
                    .audit_for_patient(p2, 0, usize::MAX)
                    .await?
                    .into_iter()
                    .filter(|e| matches!(e.kind, ehr_share::chain::AuditKind::AccessDenied { provider, .. } if provider == doctor1_addr))
                    .map(|e| e.tx_hash)
                    .collect::<Vec<_>>(),
            )
        }
    };
    let denials_on_trail = || async { anyhow::Ok(denial_txs().await?.len()) };
    let trail_before = denials_on_trail().await?;
    let (mut denied, mut denied_floor) = (Vec::new(), Vec::new());
    let mut denied_ok = 0;
    for _ in 0..ROUNDS {
        // The floor: the one question that settles a refusal, `checkAccess` as an eth_call.
        let t = Instant::now();
        chain.check_access_raw(p2, doctor1_addr).await?;
        denied_floor.push(t.elapsed());
        let t = Instant::now();
        let (status, _) = read(&http, &gw, "demo-doctor1", &denied_id).await;
        denied.push(t.elapsed());
        if status == 403 {
            denied_ok += 1;
        }
    }
    // Each denial's transaction is in the node's pool when the 403 goes out; wait for all
    // of them to be mined.
    let waited = Instant::now();
    let mut on_trail = denials_on_trail().await? - trail_before;
    while on_trail < ROUNDS && waited.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        on_trail = denials_on_trail().await? - trail_before;
    }
    md.push_str("## 2. A denied read\n\nA doctor whose grant the patient revoked; target p50 <= 5 ms. The gateway asks `checkAccess` (an `eth_call`), and on a refusal hands the doctor's `access` transaction to the node (the denial goes on the patient's trail) and answers 403 without waiting for it to be mined.\n\n| path | reads | p50 | p95 | p99 |\n|---|---:|---:|---:|---:|\n");
    md.push_str(&format!(
        "{}\n{}\n\n{denied_ok} of {ROUNDS} answered 403; {on_trail} of {ROUNDS} denials on the patient's audit trail afterwards. Ratio: p50 {:.1}x the floor.\n\n",
        row("floor: `checkAccess` eth_call", &denied_floor),
        row("denied `GET /records/{id}`", &denied),
        ratio(&denied, &denied_floor, 0.5),
    ));
    let cpu_before = cpu_split(root);
    for _ in 0..ROUNDS {
        let (status, _) = read(&http, &gw, "demo-doctor1", &denied_id).await;
        anyhow::ensure!(status == 403, "denied read answered {status}");
    }
    md.push_str(&format!(
        "CPU per denied read, by process ({ROUNDS} more, one after another):\n\n"
    ));
    md.push_str(&cpu_table(
        &cpu_before,
        &cpu_split(root),
        ROUNDS,
        "denied read",
    ));

    // The same reads client-side, on the doctor's own machine: what `ehr record get` does.
    // They sign as doctor 1 from this process and from the command's: the gateway's denials
    // for doctor 1 above are mined first, so no send meets a nonce taken meanwhile.
    println!("load: client-side reads");
    {
        use alloy::providers::Provider as _;
        let p = chain.provider();
        let waited = Instant::now();
        while p.get_transaction_count(doctor1_addr).pending().await?
            != p.get_transaction_count(doctor1_addr).latest().await?
        {
            anyhow::ensure!(
                waited.elapsed() < Duration::from_secs(60),
                "doctor 1's transactions were not mined within a minute"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let text = client_side(&ports, &state, &big, &floor_cid, p1, &chain).await?;
    md.insert_str(client_side_at, &text);

    // 3. 1 MiB reads, 32 at once; first their floor, as many at once: Kubo cat of a 1 MiB
    // object and one eth_call each.
    println!("load: 1 MiB reads by {BIG_READERS} readers");
    let floor_big = kubo.add_bytes(random(1 << 20).into()).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let floor_times = Arc::new(Mutex::new(Vec::new()));
    let floor_cpu_before = cpu_split(root);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..BIG_READERS {
        let (next, times, kubo, chain, cid) = (
            next.clone(),
            floor_times.clone(),
            kubo.clone(),
            chain.clone(),
            floor_big.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < BIG_READS {
                let t = Instant::now();
                let bytes = kubo.cat(&cid).await?;
                chain.check_access(p1, doctor1_addr).await?;
                anyhow::ensure!(bytes.len() == 1 << 20);
                times.lock().await.push(t.elapsed());
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let floor_secs = t0.elapsed().as_secs_f64();
    let floor_cpu_after = cpu_split(root);
    let floor_big_times = std::mem::take(&mut *floor_times.lock().await);
    let next = Arc::new(AtomicUsize::new(0));
    let times = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let big_cpu_before = cpu_split(root);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..BIG_READERS {
        let (next, times, failed, http, gw, huge) = (
            next.clone(),
            times.clone(),
            failed.clone(),
            http.clone(),
            gw.clone(),
            huge.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let token = if r % 2 == 0 {
                "demo-doctor1"
            } else {
                "demo-doctor2"
            };
            while next.fetch_add(1, Ordering::SeqCst) < BIG_READS {
                let id = &huge[(OsRng.next_u32() as usize) % huge.len()];
                let t = Instant::now();
                let (status, n) = read(&http, &gw, token, id).await;
                times.lock().await.push(t.elapsed());
                if status != 200 || n != 1 << 20 {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let big_secs = t0.elapsed().as_secs_f64();
    let big_cpu_after = cpu_split(root);
    let big_times = std::mem::take(&mut *times.lock().await);
    md.push_str(&format!("## 3. 1 MiB reads, {BIG_READERS} readers at once\n\nTwo granted doctors, {BIG_READS} reads of four 1 MiB records (after the first read of each, their access transactions are reused). Floor, measured just before with as many readers at once: Kubo `cat` of a 1 MiB object plus one `eth_call`. Targets: p50 <= 30 ms, p99 <= 100 ms.\n\n| path | reads | p50 | p95 | p99 |\n|---|---:|---:|---:|---:|\n"));
    md.push_str(&format!(
        "{}\n{}\n\n{} failed; {:.0} reads per second ({:.1} MiB/s); the floor ran {:.0} per second. Ratio: p50 {:.1}x, p99 {:.1}x the floor.\n\n",
        row("floor: Kubo cat (1 MiB) + eth_call", &floor_big_times),
        row("1 MiB `GET /records/{id}`", &big_times),
        failed.load(Ordering::SeqCst),
        BIG_READS as f64 / big_secs,
        BIG_READS as f64 / big_secs,
        BIG_READS as f64 / floor_secs,
        ratio(&big_times, &floor_big_times, 0.5),
        ratio(&big_times, &floor_big_times, 0.99)
    ));
    md.push_str("CPU per 1 MiB read, by process (user + system time over those reads), and of the floor's reads (Kubo and anvil serve them; the load generator receives):\n\n");
    md.push_str(&cpu_table(
        &big_cpu_before,
        &big_cpu_after,
        BIG_READS,
        "read",
    ));
    md.push_str(&cpu_table(
        &floor_cpu_before,
        &floor_cpu_after,
        BIG_READS,
        "floor read",
    ));

    // 4. Uploads, 64 clients.
    println!("load: {UPLOADS} uploads of 10 KB by {UPLOAD_CLIENTS} clients");
    let cpu_before = cpu_split(root);
    let next = Arc::new(AtomicUsize::new(0));
    let times = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let busy = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..UPLOAD_CLIENTS {
        let (next, times, errors, busy, http, gw) = (
            next.clone(),
            times.clone(),
            errors.clone(),
            busy.clone(),
            http.clone(),
            gw.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (token, patient) = [
                ("demo-patient1", "1-1001"),
                ("demo-patient2", "1-1002"),
                ("demo-patient3", "2-2001"),
            ][c % 3];
            while next.fetch_add(1, Ordering::SeqCst) < UPLOADS {
                let data = random(10_000);
                let t = Instant::now();
                let (r, b) = upload_patiently(&http, &gw, token, patient, &data).await;
                busy.fetch_add(b, Ordering::SeqCst);
                match r {
                    Ok(_) => times.lock().await.push(t.elapsed()),
                    Err((s, m)) => *errors.lock().await.entry(format!("{s} {m}")).or_default() += 1,
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let up_secs = t0.elapsed().as_secs_f64();
    let cpu_after = cpu_split(root);
    let up_times = std::mem::take(&mut *times.lock().await);
    let up_errors = std::mem::take(&mut *errors.lock().await);
    md.push_str(&format!("## 4. Uploads of 10 KB, {UPLOAD_CLIENTS} clients at once\n\nThree demo patients, {UPLOADS} uploads; each encrypted, added to Kubo, shared to five nodes, anchored in a batch (one transaction for the uploads that arrive within 50 ms), its proof given to every node, and its anchor's transaction in the chain's journal on disk before the acknowledgement. Target: >= 500 records per second, 0 errors.\n\n| path | uploads | p50 | p95 | p99 |\n|---|---:|---:|---:|---:|\n"));
    md.push_str(&format!(
        "{}\n\n**{:.0} records per second**; {} errors; the gateway's upload budget said \"busy\" {} times (asked again after 20 ms).\n\n",
        row("`POST /records`", &up_times),
        up_times.len() as f64 / up_secs,
        up_errors.values().sum::<usize>(),
        busy.load(Ordering::SeqCst)
    ));
    for (e, n) in &up_errors {
        md.push_str(&format!("- {n} x {e}\n"));
    }
    md.push_str("\nCPU per record, by process (user + system time over the upload phase, divided by the records stored):\n\n");
    md.push_str(&cpu_table(
        &cpu_before,
        &cpu_after,
        up_times.len(),
        "record",
    ));

    // 5. Mixed load.
    println!("load: {mixed_total} mixed requests at 64 concurrency");
    let mixed_trail_before = denials_on_trail().await?;
    let kinds: Arc<Mutex<BTreeMap<&'static str, Kind>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (kinds, next, http, gw) = (kinds.clone(), next.clone(), http.clone(), gw.clone());
        let (small1, small3, denied_id, doctor2) = (
            small1.clone(),
            small3.clone(),
            denied_id.clone(),
            doctor2.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < mixed_total {
                let pick = OsRng.next_u32() % 100;
                let t = Instant::now();
                let (kind, status): (&'static str, u16) = if pick < 50 {
                    let (token, id) = match OsRng.next_u32() % 3 {
                        0 => (
                            "demo-doctor1",
                            &small1[OsRng.next_u32() as usize % small1.len()],
                        ),
                        1 => (
                            "demo-doctor2",
                            &small1[OsRng.next_u32() as usize % small1.len()],
                        ),
                        _ => (
                            "demo-doctor2",
                            &small3[OsRng.next_u32() as usize % small3.len()],
                        ),
                    };
                    ("read (granted)", read(&http, &gw, token, id).await.0)
                } else if pick < 75 {
                    let (token, patient) =
                        [("demo-patient1", "1-1001"), ("demo-patient3", "2-2001")]
                            [(pick % 2) as usize];
                    let (r, _) =
                        upload_patiently(&http, &gw, token, patient, &random(10_000)).await;
                    ("upload 10 KB", r.map_or_else(|(s, _)| s, |_| 200))
                } else if pick < 85 {
                    let expires = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                        + 86_400;
                    let r = http
                        .post(format!("{gw}/api/grants"))
                        .bearer_auth("demo-patient2")
                        .json(&serde_json::json!({"provider": doctor2, "expires_at": expires}))
                        .send()
                        .await;
                    ("grant", r.map_or(0, |r| r.status().as_u16()))
                } else {
                    (
                        "read (denied)",
                        read(&http, &gw, "demo-doctor1", &denied_id).await.0,
                    )
                };
                let elapsed = t.elapsed();
                let mut k = kinds.lock().await;
                let e = k.entry(kind).or_default();
                e.times.push(elapsed);
                let expected = if kind == "read (denied)" { 403 } else { 200 };
                if status == expected {
                    e.ok += 1;
                } else if status >= 500 || status == 0 {
                    e.server_errors += 1;
                    *e.other.entry(status).or_default() += 1;
                } else {
                    *e.other.entry(status).or_default() += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let mixed_secs = t0.elapsed().as_secs_f64();
    let kinds = std::mem::take(&mut *kinds.lock().await);
    md.push_str(&format!("## 5. {mixed_total} mixed requests at 64 concurrency\n\nHalf granted reads of 10 KB (two doctors, two patients), a quarter uploads of 10 KB, a tenth grants (a patient's transaction), the rest denied reads. Target: 0 server errors.\n\n| kind | requests | as expected | server errors | other answers | p50 | p95 | p99 |\n|---|---:|---:|---:|---|---:|---:|---:|\n"));
    let mut server_errors = 0;
    for (name, k) in &kinds {
        server_errors += k.server_errors;
        let other: Vec<String> = k.other.iter().map(|(s, n)| format!("{n} x {s}")).collect();
        md.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms |\n",
            k.times.len(),
            k.ok,
            k.server_errors,
            if other.is_empty() {
                "-".into()
            } else {
                other.join(", ")
            },
            pct_ms(&k.times, 0.5),
            pct_ms(&k.times, 0.95),
            pct_ms(&k.times, 0.99)
        ));
    }
    md.push_str(&format!(
        "\n{mixed_total} requests in {mixed_secs:.1} s ({:.0} per second); **{server_errors} server errors**.\n\n",
        mixed_total as f64 / mixed_secs
    ));
    // Every refused attempt is on the trail, and those that came together shared
    // transactions (`chain::denials`).
    let refused = kinds.get("read (denied)").map_or(0, |k| k.ok);
    let waited = Instant::now();
    let mut txs = denial_txs().await?;
    while txs.len() < mixed_trail_before + refused && waited.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        txs = denial_txs().await?;
    }
    let new = &txs[mixed_trail_before.min(txs.len())..];
    let distinct: std::collections::HashSet<_> = new.iter().collect();
    md.push_str(&format!(
        "Denied reads: {refused} answered 403, {} denials on the patient's audit trail afterwards, in {} transactions ({:.1} attempts each).\n\n",
        new.len(),
        distinct.len(),
        new.len() as f64 / distinct.len().max(1) as f64
    ));
    if server_errors > 0 {
        eprintln!(
            "load: the last lines of ehr dev's log:\n{}",
            child.last_log()
        );
    }

    // 6. Memory and disk.
    let records = dev::shares_on_node_1(&http, ports).await?;
    let node_disk: u64 = dev::disk_bytes(&state.join("share-node-1"));
    md.push_str("## 6. Memory and disk after the run\n\n");
    md.push_str(dev::MEMORY_NOTE);
    md.push_str(&dev::memory_table(&dev::stack_memory(root)));
    md.push_str(&format!(
        "\nTarget: gateway + 5 share nodes <= 200 MiB at 10^5 records; here {records} records \
         on share node 1.\n\n| | value |\n|---|---:|\n"
    ));
    md.push_str(&format!(
        "| share node 1 folder on disk | {:.1} MiB, {:.0} bytes per record |\n",
        node_disk as f64 / (1 << 20) as f64,
        node_disk as f64 / records.max(1) as f64
    ));
    md.push_str("\nMachine: 2 cores (load generator, gateway, anvil, Kubo and five share nodes all on them); profile: bench (optimised).\n");
    println!("{md}");
    std::fs::write(dev::root().join("docs/load-bench.md"), &md)?;
    child.stop(Duration::from_secs(10)).await;
    drop(tmp);
    let _ = std::fs::write(ended_stamp(), b"");
    Ok(())
}

/// Where the end of the last run is noted: its state (tens of thousands of Kubo block files)
/// was deleted then.
fn ended_stamp() -> std::path::PathBuf {
    std::env::temp_dir().join("ehr-load-bench.ended")
}

/// How long ext4 passes over freed inodes: one freed within the last 60 s (300 s while its
/// inode table block is dirty) is not reused, so for minutes after the last run's files are
/// deleted every file Kubo creates costs a longer search. That made Kubo's CPU per 10 KB add
/// 1.0 ms in some runs and 3.0 to 4.2 ms in others of the same code (`docs/reliability.md`,
/// "Why Kubo is sometimes slow").
const REST: Duration = Duration::from_secs(300);

/// Waits until the filesystem has come to rest after the last run (`LOAD_REST=0`: does not).
async fn rest_after_last_run() {
    if std::env::var("LOAD_REST").is_ok_and(|v| v == "0") {
        return;
    }
    let Some(since) = std::fs::metadata(ended_stamp())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
    else {
        return;
    };
    if let Some(left) = REST.checked_sub(since) {
        println!(
            "load: waiting {} s for the filesystem to come to rest after the last run (LOAD_REST=0 does not)",
            left.as_secs()
        );
        tokio::time::sleep(left).await;
    }
}

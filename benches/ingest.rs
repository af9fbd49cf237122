//! Device readings end to end through `ehr dev` (release build; anvil, Kubo, five share nodes
//! 3-of-5, the gateway's ingestion service with batched anchoring), written to
//! `docs/ingest-bench.md` (wearables issue):
//!
//! 1. readings per second taken at 64 simulated devices (16 patients with 4 devices each),
//!    each device streaming signed envelopes down `POST /ingest/stream` as fast as the gateway
//!    acknowledges them (at most 32 unanswered per device), with one reading per envelope and with ten (a Bundle), and the CPU
//!    time of each process per reading;
//! 2. gas per reading: the gas of every anchoring transaction sent while the readings above
//!    were sealed, over the readings sealed (the one-off gas of registering a device beside);
//! 3. time from a reading's acknowledgement until a granted doctor has read it back (the
//!    doctor polls the patient's records and reads every new window), with the window set.
//!
//! `cargo bench --bench ingest`. `INGEST_SECS` changes the length of each throughput run
//! (default 15 s); `INGEST_WINDOW_SECS` the sealing window (default 5 s).

#[path = "support/dev.rs"]
mod dev;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::ext::AnvilApi;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use ehr_share::chain::{Deployment, DeviceKind, EhrChain, PatientAddr};
use ehr_share::ingest::device::Device;
use ehr_share::ingest::simulate::{Sensor, now_secs_f64};
use ehr_share::ingest::{Vital, ingest_domain, read_sealed};
use ehr_share::ipfs::KuboClient;
use ehr_share::records::{RecordsConfig, ShareNodeRef};
use futures::StreamExt;

use dev::{Ports, cpu_secs, pct_ms, pids_of};

const PATIENTS: usize = 16;
/// Envelopes a device keeps unanswered at most.
const IN_FLIGHT: usize = 32;
const DEVICES_PER_PATIENT: usize = 4;
/// The gateway's demo anchoring account (`ehr dev`'s account 7).
const ANCHORER: u32 = 7;

fn mnemonic_key(index: u32) -> anyhow::Result<PrivateKeySigner> {
    let settings = ehr_share::config::AnvilSettings::load(&dev::root().join("anvil.toml"))?;
    ehr_share::cli::demo_signer(&settings, index)
}

/// One throughput run: every device streams for `secs`; returns (readings acknowledged,
/// envelopes refused, elapsed).
async fn throughput(
    http: &reqwest::Client,
    gw: &str,
    devices: &[(Arc<Device>, Vital)],
    per_envelope: usize,
    secs: u64,
) -> (u64, u64, Duration) {
    let stored = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let stop = start + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (d, vital)) in devices.iter().enumerate() {
        let (d, vital) = (d.clone(), *vital);
        let (http, gw) = (http.clone(), gw.to_owned());
        let (stored, refused) = (stored.clone(), refused.clone());
        tasks.spawn(async move {
            let mut sensor = Sensor::new(vital, i as u64 + 1, 0.002);
            let d2 = d.clone();
            // At most IN_FLIGHT envelopes unanswered per device: a steady state, not a dump
            // into the sockets' buffers.
            let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
            let p2 = permits.clone();
            let envelopes = futures::stream::iter(0u64..)
                .then(move |_| {
                    let p = p2.clone();
                    async move { p.acquire_owned().await.expect("open").forget() }
                })
                .take_while(move |()| std::future::ready(Instant::now() < stop))
                .map(move |()| {
                    #[allow(clippy::cast_possible_truncation)]
                    let now = now_secs_f64() as i64;
                    let obs: Vec<_> = (0..per_envelope)
                        .map(|k| sensor.observation(now - (per_envelope - 1 - k) as i64, 1))
                        .collect();
                    let resource = if per_envelope == 1 {
                        obs[0].to_string()
                    } else {
                        serde_json::json!({ "resourceType": "Bundle", "type": "collection",
                            "entry": obs.into_iter().map(|o| serde_json::json!({ "resource": o })).collect::<Vec<_>>() })
                        .to_string()
                    };
                    d2.sign(resource).expect("JSON")
                });
            let answers = Device::stream(&http, &gw, envelopes).await.expect("stream");
            futures::pin_mut!(answers);
            while let Some(a) = answers.next().await {
                permits.add_permits(1);
                if a["ok"] == true {
                    stored.fetch_add(a["accepted"]["observations"].as_u64().unwrap_or(0), Ordering::Relaxed);
                } else {
                    refused.fetch_add(1, Ordering::Relaxed);
                    eprintln!("ingest: refused: {a}");
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    (
        stored.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        start.elapsed(),
    )
}

/// The floor of the same work per reading without the gateway: parse the envelope, check its
/// signature, validate the vital sign, seal it at rest and commit it in groups of 512, in this
/// process on one core, with no HTTP and no `eth_call`. Readings per second.
async fn floor_rate(
    devices: &[(Arc<Device>, Vital)],
    domain: &alloy::sol_types::Eip712Domain,
) -> anyhow::Result<f64> {
    const N: usize = 20_000;
    let mut lines = Vec::with_capacity(N);
    for i in 0..N {
        let (d, vital) = &devices[i % devices.len()];
        let mut sensor = Sensor::new(*vital, i as u64, 0.002);
        #[allow(clippy::cast_possible_truncation)]
        let o = sensor.observation(now_secs_f64() as i64, 1);
        lines.push(serde_json::to_vec(
            &d.sign(o.to_string()).map_err(anyhow::Error::msg)?,
        )?);
    }
    let dir = tempfile::tempdir()?;
    let db = ehr_share::db::Database::open(&ehr_share::db::sqlite_in(dir.path())).await?;
    let key = ehr_share::ingest::at_rest_key(b"floor");
    let start = Instant::now();
    for chunk in lines.chunks(512) {
        let mut rows = Vec::with_capacity(chunk.len());
        for line in chunk {
            let env: ehr_share::ingest::Envelope<'_> = serde_json::from_slice(line)?;
            env.verify(domain)?;
            let rs = ehr_share::ingest::vitals::readings(env.resource.get().as_bytes())?;
            rows.push(ehr_share::db::NewReading {
                device: format!("{:#x}", env.device),
                nonce: env.nonce,
                signed_at: env.time,
                patient_aid: env.patient.aid(),
                patient_pid: env.patient.pid(),
                received_at: 0,
                observations: u32::try_from(rs.len())?,
                observed: (rs[0].at, rs[0].at),
                envelope: ehr_share::crypto::seal_at_rest(&key, &env.nonce.to_be_bytes(), line),
            });
        }
        for r in db.insert_readings(&rows).await? {
            r?;
        }
    }
    #[allow(clippy::cast_precision_loss)]
    Ok(N as f64 / start.elapsed().as_secs_f64())
}

/// CPU seconds of the processes of the stack, by name.
fn cpu_by_process(root: u32) -> BTreeMap<&'static str, f64> {
    let mut m = BTreeMap::new();
    m.insert("ehr dev (gateway, ingestion, sealer)", cpu_secs(root));
    m.insert(
        "share nodes (5)",
        pids_of(root, &["share-node"])
            .iter()
            .map(|p| cpu_secs(*p))
            .sum(),
    );
    m.insert(
        "anvil",
        pids_of(root, &["anvil"]).iter().map(|p| cpu_secs(*p)).sum(),
    );
    m.insert(
        "Kubo",
        pids_of(root, &["ipfs", "daemon"])
            .iter()
            .map(|p| cpu_secs(*p))
            .sum(),
    );
    m.insert(
        "load generator (signing devices)",
        cpu_secs(std::process::id()),
    );
    m
}

#[allow(clippy::too_many_lines)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("INGEST_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let window: u64 = std::env::var("INGEST_WINDOW_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let tmp = tempfile::tempdir()?;
    let state = tmp.path().join("state");
    let ports = Ports::free();
    let gw = ports.gateway_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    println!("ingest: starting ehr dev (release build), window {window} s");
    let mut child = dev::start(
        &state,
        ports,
        &[
            ("EHR_DEV_INGEST_WINDOW_SECS", window.to_string()),
            ("EHR_DEV_INGEST_MAX_OBSERVATIONS", "20000".into()),
            ("EHR_SHARE_NODE_PER_MINUTE", "10000000".into()),
            ("EHR_SHARE_NODE_BURST", "100000".into()),
        ],
    )
    .await?;
    let tether = child.pid().unwrap_or(0);
    let root = dev::pid_of(tether, &["ehr", " dev"]).unwrap_or(tether);
    let rpc = ports.rpc_url();
    let deployment = Deployment::load(&state.join("deployment.json"))?;
    let office = EhrChain::connect(&rpc, Some(mnemonic_key(0)?), &deployment).await?;
    let anvil = ProviderBuilder::new().connect_http(rpc.parse()?);
    let domain = ingest_domain(office.chain_id(), office.address(), office.deployment_id());

    // The cast: 16 fresh patients with four devices each; demo doctor 1 granted by the first.
    println!("ingest: registering {PATIENTS} patients with {DEVICES_PER_PATIENT} devices each");
    let vitals = [
        Vital::HeartRate,
        Vital::Spo2,
        Vital::BloodPressure,
        Vital::BodyTemperature,
    ];
    let mut devices = Vec::new();
    let mut patients = Vec::new();
    let mut device_gas = Vec::new();
    for p in 0..PATIENTS {
        let key = PrivateKeySigner::random();
        anvil
            .anvil_set_balance(key.address(), U256::from(10u128.pow(20)))
            .await?;
        let addr = PatientAddr::new(40, 1 + p as u64)?;
        office.issue_patient(addr, key.address()).await?;
        let as_patient = office.with_signer(&rpc, key.clone())?;
        for (k, vital) in vitals.iter().enumerate().take(DEVICES_PER_PATIENT) {
            let dk = PrivateKeySigner::random();
            let o = as_patient
                .add_device(dk.address(), DeviceKind::Watch, &format!("bench {k}"))
                .await?;
            device_gas.push(o.gas_used);
            devices.push((Arc::new(Device::new(dk, addr, domain.clone())), *vital));
        }
        patients.push((addr, as_patient));
    }
    let doctor = mnemonic_key(1)?;
    patients[0].1.grant(doctor.address(), None).await?;
    let db = ehr_share::db::Database::open(&ehr_share::db::sqlite_in(&state.join("web"))).await?;

    let mut md =
        String::from("# Device readings: ingestion rate, gas per reading, time to a doctor\n\n");
    md.push_str(&format!("Measured by `cargo bench --bench ingest` against `ehr dev` (release build: anvil with a block per transaction, Kubo, five share nodes 3-of-5, the gateway taking readings with a sealing window of {window} s and anchoring in batches), on this machine's 2 cores shared by everything, the load generator included. {} devices ({PATIENTS} patients, {DEVICES_PER_PATIENT} each) stream signed envelopes down `POST /ingest/stream`; each envelope is checked (clock, EIP-712 signature, FHIR vital sign, the device active on chain: one `eth_call`), committed to SQLite encrypted at rest (group commit), and only then acknowledged.\n\n", devices.len()));

    // 1. Throughput.
    let start_block = anvil.get_block_number().await?;
    let mut rows = Vec::new();
    let mut total_stored = 0;
    for per in [1usize, 10] {
        println!(
            "ingest: {} devices streaming for {secs} s, {per} reading(s) per envelope",
            devices.len()
        );
        let before = cpu_by_process(root);
        let (stored, refused, took) = throughput(&http, &gw, &devices, per, secs).await;
        let after = cpu_by_process(root);
        total_stored += stored;
        #[allow(clippy::cast_precision_loss)]
        let rate = stored as f64 / took.as_secs_f64();
        println!(
            "ingest:   {stored} readings in {:.1} s: {rate:.0}/s, {refused} refused",
            took.as_secs_f64()
        );
        let cpu: Vec<(String, f64)> = after
            .iter()
            .map(|(k, v)| {
                #[allow(clippy::cast_precision_loss)]
                let per_reading = (v - before[k]) / stored.max(1) as f64 * 1e6;
                ((*k).to_owned(), per_reading)
            })
            .collect();
        rows.push((per, stored, refused, took, rate, cpu));
    }
    md.push_str("## Readings taken per second (target: >= 2,000/s at 64 devices on 2 cores)\n\n| readings per envelope | readings acknowledged | refused | seconds | readings/s | target met |\n|---|---|---|---|---|---|\n");
    for (per, stored, refused, took, rate, _) in &rows {
        md.push_str(&format!(
            "| {per} | {stored} | {refused} | {:.1} | {rate:.0} | {} |\n",
            took.as_secs_f64(),
            if *rate >= 2000.0 { "yes" } else { "no" }
        ));
    }
    println!(
        "ingest: floor: the same checks and commit in this process, one core, no HTTP, no eth_call"
    );
    let floor = floor_rate(&devices, &domain).await?;
    println!("ingest:   floor {floor:.0} readings/s");
    md.push_str(&format!("\nThe floor, in the same run: the same work per reading (parse the envelope, check the signature, validate the vital sign, seal it at rest, commit in groups of 512) in the bench's own process on one core, with no HTTP and no `eth_call`: **{floor:.0} readings/s** with one reading per envelope. Through the gateway, one reading per envelope runs at {:.2}x that floor (the gateway has the same two cores, shared with anvil, which answers an `eth_call` per envelope, and with the load generator).\n", rows[0].4 / floor));
    md.push_str("\nCPU time per reading, microseconds, by process (same runs; the share nodes and Kubo work once per sealed window, a record of thousands of readings):\n\n| process | 1 per envelope | 10 per envelope |\n|---|---|---|\n");
    for (i, (name, v)) in rows[0].5.iter().enumerate() {
        md.push_str(&format!("| {name} | {v:.1} | {:.1} |\n", rows[1].5[i].1));
    }

    // 2. Gas per reading: wait until everything is sealed, then add up the anchors.
    println!("ingest: waiting for every window to be sealed");
    let t = Instant::now();
    loop {
        let s = db.ingest_stats(0).await?;
        if s.waiting_envelopes == 0 && s.pending_seals == 0 && s.sealed_observations >= total_stored
        {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "not sealed in 600 s: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let sealed = db.ingest_stats(0).await?;
    let end_block = anvil.get_block_number().await?;
    let anchorer = mnemonic_key(ANCHORER)?.address();
    let (mut anchor_gas, mut anchors) = (0u64, 0u64);
    for b in start_block + 1..=end_block {
        let Some(block) = anvil.get_block_by_number(b.into()).full().await? else {
            continue;
        };
        for tx in block.transactions.txns() {
            if alloy::consensus::Transaction::to(tx) == Some(office.address())
                && tx.inner.signer() == anchorer
                && let Some(r) = anvil.get_transaction_receipt(*tx.inner.tx_hash()).await?
            {
                anchor_gas += r.gas_used;
                anchors += 1;
            }
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let gas_per_reading = anchor_gas as f64 / sealed.sealed_observations.max(1) as f64;
    #[allow(clippy::cast_precision_loss)]
    let device_gas_mean = device_gas.iter().sum::<u64>() as f64 / device_gas.len().max(1) as f64;
    println!(
        "ingest: {} readings sealed into {} records under {anchors} anchors: {anchor_gas} gas, {gas_per_reading:.2} gas per reading",
        sealed.sealed_observations, sealed.sealed_records
    );
    md.push_str(&format!("\n## Gas per reading (target: <= 50)\n\n| readings sealed | records (windows) | anchoring transactions | their gas | gas per reading | target met |\n|---|---|---|---|---|---|\n| {} | {} | {anchors} | {anchor_gas} | {gas_per_reading:.2} | {} |\n\nA reading costs no transaction of its own: a patient's window becomes one record, and the gateway anchors the records of many windows under one Merkle root. Registering a device is a one-off transaction by the patient: {device_gas_mean:.0} gas on average over {} devices.\n", sealed.sealed_observations, sealed.sealed_records, if gas_per_reading <= 50.0 { "yes" } else { "no" }, device_gas.len()));

    // 3. Time from acknowledgement to a granted doctor's read.
    println!("ingest: time from acknowledgement to a granted doctor's read (30 s, 2 readings/s)");
    let (p0, _) = &patients[0];
    let (dev0, vital0) = devices[0].clone();
    let acked: Arc<std::sync::Mutex<HashMap<u64, Instant>>> = Arc::default();
    let sender = {
        let (acked, http, gw, dev0) = (acked.clone(), http.clone(), gw.clone(), dev0.clone());
        tokio::spawn(async move {
            let mut sensor = Sensor::new(vital0, 99, 0.0);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            for _ in 0..60 {
                tick.tick().await;
                #[allow(clippy::cast_possible_truncation)]
                let env = dev0
                    .sign(sensor.observation(now_secs_f64() as i64, 1).to_string())
                    .expect("JSON");
                let nonce = env.nonce;
                if Device::send(&http, &gw, &env).await.is_ok() {
                    acked.lock().expect("lock").insert(nonce, Instant::now());
                }
            }
        })
    };
    let mut refs = Vec::new();
    for i in 0..5u16 {
        refs.push(
            ShareNodeRef::discover(&format!("http://127.0.0.1:{}", ports.share_base + i)).await?,
        );
    }
    let as_doctor = RecordsConfig::new(refs, 3).client(
        office.with_signer(&rpc, doctor.clone())?,
        doctor.clone(),
        KuboClient::new(ports.kubo_url()),
    )?;
    let before: HashSet<_> = as_doctor
        .directory()
        .list(*p0)
        .await?
        .into_iter()
        .map(|r| r.record)
        .collect();
    let mut read: HashSet<_> = before.clone();
    let mut latencies = Vec::new();
    let mut seen = HashSet::new();
    let t = Instant::now();
    while latencies.len() < 60 && t.elapsed() < Duration::from_secs(30 + 4 * window) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let fresh: Vec<_> = as_doctor
            .directory()
            .list(*p0)
            .await?
            .into_iter()
            .map(|r| r.record)
            .filter(|r| !read.contains(r))
            .collect();
        if fresh.is_empty() {
            continue;
        }
        for got in as_doctor.get_many(*p0, &fresh).await {
            let got = got?;
            let mut rs = Vec::new();
            read_sealed(&got.data, &domain, *p0, &mut seen, &mut rs);
        }
        read.extend(fresh);
        let now = Instant::now();
        let acked = acked.lock().expect("lock");
        for (dev, nonce) in &seen {
            if *dev == dev0.address()
                && let Some(at) = acked.get(nonce)
                && latencies.len() < 60
            {
                latencies.push(now.duration_since(*at));
            }
        }
        seen.retain(|(d, _)| *d != dev0.address());
    }
    sender.await?;
    latencies.sort();
    let (p50, p95, max) = (
        pct_ms(&latencies, 0.5),
        pct_ms(&latencies, 0.95),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    );
    println!(
        "ingest:   {} readings: p50 {p50:.0} ms, p95 {p95:.0} ms, max {max:.0} ms (window {window} s)",
        latencies.len()
    );
    #[allow(clippy::cast_precision_loss)]
    let target = (window as f64 + 1.0) * 1000.0;
    md.push_str(&format!("\n## From acknowledgement to a granted doctor's read (target: p50 <= window + 1 s = {:.0} ms)\n\nOne device sends a reading every 0.5 s for 30 s, one request each; a granted doctor (demo doctor 1) lists the patient's records every 0.2 s and reads each new window (one access transaction per 32 windows, shares, Kubo, decryption, every envelope's signature checked). The time runs from the acknowledgement to the end of the read that returned the reading; a reading waits for its window to close (0 to {window} s, depending on where in the window it fell), then the sealer's tick (1 s), the upload and the anchor batch.\n\n| readings | p50 | p95 | max | target met |\n|---|---|---|---|---|\n| {} | {p50:.0} ms | {p95:.0} ms | {max:.0} ms | {} |\n", target, latencies.len(), if p50 <= target { "yes" } else { "no" }));

    std::fs::write(dev::root().join("docs/ingest-bench.md"), md)?;
    println!("ingest: wrote docs/ingest-bench.md");
    child.stop(Duration::from_secs(10)).await;
    Ok(())
}

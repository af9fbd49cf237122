//! Records benchmark: put and get through the whole path (encryption, Kubo add + pin, shares to
//! five share nodes, anchor; access transaction, share gathering, Kubo cat, decryption, digest
//! check) on real anvil and Kubo, for several payload sizes: time, throughput and the process's
//! peak memory above its resting size.
//!
//! `cargo bench --bench records` prints the table and writes `docs/records-bench.md`.

use std::path::Path;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::ProviderBuilder;
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::PrivateKeySigner;
use bytes::Bytes;
use ehr_share::chain::{EhrChain, PatientAddr};
use ehr_share::config::{AnvilSettings, Tools};
use ehr_share::ipfs::KuboClient;
use ehr_share::records::{RecordsConfig, ShareNodeRef};
use ehr_share::share_node::{NodeConfig, NodeLimits, open_store};
use ehr_share::stack::{KuboOptions, free_port, start_anvil, start_kubo};
use rand_core::RngCore;

const SIZES: [usize; 4] = [64 << 10, 1 << 20, 8 << 20, 32 << 20];
const RUNS: usize = 3;

/// Counts heap bytes: current and peak, resettable, so each operation's peak is its own.
#[global_allocator]
static HEAP: peak_alloc::PeakAlloc = peak_alloc::PeakAlloc;

/// Runs `op` and returns its result with the heap's peak above the level before it.
async fn peak_of<T>(op: impl std::future::Future<Output = T>) -> (T, usize) {
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let out = op.await;
    (out, HEAP.peak_usage().saturating_sub(before))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mib(n: usize) -> f64 {
    n as f64 / f64::from(1u32 << 20)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tools = Tools::in_project(root);
    let mut settings = AnvilSettings::load(&root.join("anvil.toml"))?;
    settings.port = free_port()?;
    settings.state_file.clear();
    let anvil = start_anvil(&tools.anvil, &settings, false).await?;
    let dir = tempfile::tempdir()?;
    let kubo = start_kubo(
        &KuboOptions {
            bin: tools.ipfs.clone(),
            repo: dir.path().join("kubo"),
            api_port: free_port()?,
            gateway_port: free_port()?,
            network: None,
        },
        false,
    )
    .await?;
    let rpc = anvil.rpc_url.clone();
    let http = ProviderBuilder::new().connect_http(rpc.parse()?);
    let funded = || async {
        let s = PrivateKeySigner::random();
        http.anvil_set_balance(s.address(), U256::from(10u128.pow(20)))
            .await?;
        anyhow::Ok(s)
    };
    let office_key = funded().await?;
    let (office, d) = EhrChain::deploy(&rpc, office_key.clone(), office_key.address()).await?;
    let patient_key = funded().await?;
    let doctor_key = funded().await?;
    let addr = PatientAddr::new(4, 4242)?;
    let patient = office.with_signer(&rpc, patient_key.clone())?;
    let doctor = office.with_signer(&rpc, doctor_key.clone())?;
    office.issue_patient(addr, patient_key.address()).await?;
    doctor.register_provider().await?;
    office.verify_provider(doctor_key.address()).await?;
    patient.grant(doctor_key.address(), None).await?;

    // Five share nodes in this process, each with its own key and redb store.
    let (stop, rx) = tokio::sync::watch::channel(false);
    let mut nodes = Vec::new();
    for i in 0..5 {
        let identity = PrivateKeySigner::random();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        nodes.push(ShareNodeRef {
            url,
            address: identity.address(),
        });
        let chain = EhrChain::connect(&rpc, None, &d).await?;
        let store = open_store(&dir.path().join(format!("node-{i}")), &identity, &chain).await?;
        let cfg = NodeConfig {
            identity,
            store,
            chain,
            limits: NodeLimits::default(),
            danger_corrupt_shares: false,
        };
        let mut rx = rx.clone();
        tokio::spawn(ehr_share::share_node::serve(
            listener,
            cfg,
            None,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ));
    }
    let ipfs = KuboClient::new(&kubo.api_url);
    let client = |chain: EhrChain, key: PrivateKeySigner| {
        RecordsConfig::new(nodes.clone(), 3).client(chain, key, ipfs.clone())
    };
    let up = client(patient, patient_key)?;
    let down = client(doctor, doctor_key)?;

    let mut rows = Vec::new();
    for size in SIZES {
        let mut payload = vec![0u8; size];
        rand_core::OsRng.fill_bytes(&mut payload);
        let payload = Bytes::from(payload);
        let (mut puts, mut gets) = (Vec::new(), Vec::new());
        let (mut put_peak, mut get_peak) = (0usize, 0usize);
        for _ in 0..RUNS {
            let t = Instant::now();
            let (id, peak) =
                peak_of(up.put(addr, payload.clone(), "application/octet-stream", None)).await;
            let id = id?;
            puts.push(t.elapsed());
            put_peak = put_peak.max(peak);

            let t = Instant::now();
            let (r, peak) = peak_of(down.get(id)).await;
            let r = r?;
            gets.push(t.elapsed());
            get_peak = get_peak.max(peak);
            anyhow::ensure!(r.data == payload, "read back differs");
            drop(r);
        }
        rows.push((size, median(puts), median(gets), put_peak, get_peak));
    }
    let _ = stop.send(true);

    let mut md = String::from(
        "# Records: put and get\n\nMeasured by `cargo bench --bench records` on real anvil and Kubo with five \
         share nodes (3-of-5), random payloads, median of 3 runs. A put encrypts, adds and pins on Kubo, \
         deposits shares on all five nodes and anchors on chain; a get runs the access transaction, \
         gathers three verified shares, cats from Kubo, decrypts and checks the digest. Peak memory is \
         the heap's peak above its level before the operation, counted by a global allocator wrapper \
         (the whole process: client, share nodes, HTTP); the payload the bench already holds is not \
         counted, the record a get returns is (so 1x is the floor for a get).\n\n\
         | payload | put | put MiB/s | get | get MiB/s | peak memory put | peak memory get |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (size, put, get, pp, gp) in &rows {
        md.push_str(&format!(
            "| {:.2} MiB | {} ms | {:.1} | {} ms | {:.1} | {:.1} MiB ({:.1}x) | {:.1} MiB ({:.1}x) |\n",
            mib(*size),
            put.as_millis(),
            mib(*size) / put.as_secs_f64(),
            get.as_millis(),
            mib(*size) / get.as_secs_f64(),
            *pp as f64 / f64::from(1u32 << 20),
            *pp as f64 / *size as f64,
            *gp as f64 / f64::from(1u32 << 20),
            *gp as f64 / *size as f64,
        ));
    }
    md.push_str(&format!(
        "\nMachine: {} cores; profile: bench (optimised).\n",
        std::thread::available_parallelism().map_or(0, usize::from)
    ));
    print!("{md}");
    std::fs::write(root.join("docs/records-bench.md"), md)?;
    drop(kubo);
    drop(anvil);
    Ok(())
}

//! Reads with degraded share nodes (performance issue): 3-of-5, with two of the five nodes
//! killed (connection refused), hung (accepting connections and never answering) or lying
//! (releasing a corrupted share), against all five healthy, on real anvil and Kubo. Every read
//! must succeed, a liar must be named, and p99 must stay within 1.5x the healthy p99: a read
//! asks k nodes (healthy ones first), one more for each that fails, and the rest when the first
//! are slower than a few usual answer times (a hedge); a node that failed is asked last for a
//! while.
//!
//! `cargo bench --bench degraded` prints the table and writes `docs/degraded-bench.md`.

use std::path::Path;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::ProviderBuilder;
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::PrivateKeySigner;
use axum::body::Bytes as Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{Method, StatusCode};
use bytes::Bytes;
use ehr_share::chain::{EhrChain, PatientAddr, RecordId};
use ehr_share::config::{AnvilSettings, Tools};
use ehr_share::ipfs::KuboClient;
use ehr_share::records::{RecordsClient, RecordsConfig, ShareNodeRef};
use ehr_share::share_node::{NodeConfig, NodeLimits, open_store};
use ehr_share::stack::{KuboOptions, free_port, start_anvil, start_kubo};

const RECORDS: usize = 10;
const READS: usize = 200;

/// A listener that accepts connections and never answers.
async fn tarpit() -> anyhow::Result<String> {
    let l = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}", l.local_addr()?);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    Ok(url)
}

/// A port nothing listens on.
async fn dead() -> anyhow::Result<String> {
    let l = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    Ok(format!("http://{}", l.local_addr()?))
}

/// A proxy in front of a real node that flips the last digit of every released share.
async fn liar(target: String) -> anyhow::Result<String> {
    async fn forward(
        State((target, http)): State<(String, reqwest::Client)>,
        method: Method,
        UrlPath(path): UrlPath<String>,
        body: Body,
    ) -> (StatusCode, String) {
        let r = http
            .request(method, format!("{target}/{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let Ok(r) = r else {
            return (StatusCode::BAD_GATEWAY, String::new());
        };
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let text = r.text().await.unwrap_or_default();
        if path.ends_with("/release")
            && status.is_success()
            && let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            if let Some(share) = v["share"].as_str() {
                let mut s = share.to_owned();
                let last = s.pop().unwrap_or('0');
                s.push(if last == '0' { '1' } else { '0' });
                v["share"] = s.into();
            }
            return (status, v.to_string());
        }
        (status, text)
    }
    let l = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}", l.local_addr()?);
    let app = axum::Router::new()
        .route("/{*path}", axum::routing::any(forward))
        .with_state((target, reqwest::Client::new()));
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok(url)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Outcome {
    name: &'static str,
    /// Reads that succeeded: first reads, re-reads.
    ok_first: usize,
    ok: usize,
    /// Reads that named a liar.
    naming: usize,
    /// The liars named so far, and the read that had named them all.
    named: std::collections::HashSet<String>,
    all_named_by: Option<usize>,
    /// The first read of each record (its access transaction; the first contact with the bad
    /// nodes), then the re-reads.
    first: Vec<Duration>,
    times: Vec<Duration>,
}

impl Outcome {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            ok_first: 0,
            ok: 0,
            naming: 0,
            named: std::collections::HashSet::new(),
            all_named_by: None,
            first: Vec::new(),
            times: Vec::new(),
        }
    }
}

async fn read_once(
    client: &RecordsClient,
    id: RecordId,
    liars: &[String],
    o: &mut Outcome,
    first: bool,
) {
    let t = Instant::now();
    let r = client.get(id).await;
    if first {
        o.first.push(t.elapsed());
    } else {
        o.times.push(t.elapsed());
    }
    if let Ok(r) = r {
        if first {
            o.ok_first += 1;
        } else {
            o.ok += 1;
        }
        let before = o.named.len();
        for f in &r.failures {
            // The proxy spoils the sealed share: it no longer opens for the requester.
            if liars.contains(&f.node) {
                o.named.insert(f.node.clone());
            }
        }
        if r.failures.iter().any(|f| liars.contains(&f.node)) {
            o.naming += 1;
        }
        if !liars.is_empty() && before < liars.len() && o.named.len() == liars.len() {
            o.all_named_by = Some(o.first.len() + o.times.len());
        }
    }
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
    let addr = PatientAddr::new(4, 4243)?;
    let patient = office.with_signer(&rpc, patient_key.clone())?;
    let doctor = office.with_signer(&rpc, doctor_key.clone())?;
    office.issue_patient(addr, patient_key.address()).await?;
    doctor.register_provider().await?;
    office.verify_provider(doctor_key.address()).await?;
    patient.grant(doctor_key.address(), None).await?;

    let mut nodes = Vec::new();
    for i in 0..5 {
        let identity = PrivateKeySigner::random();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        nodes.push(ShareNodeRef {
            url: format!("http://{}", listener.local_addr()?),
            address: identity.address(),
        });
        let chain = EhrChain::connect(&rpc, None, &d).await?;
        let store = open_store(&dir.path().join(format!("node-{i}")), &identity, &chain).await?;
        let cfg = NodeConfig {
            identity,
            store,
            chain,
            // The bench measures latency, not the per-requester limits (one doctor reads
            // hundreds of times in a few seconds).
            limits: NodeLimits {
                burst: 100_000,
                per_minute: 1_000_000,
                ..NodeLimits::default()
            },
            danger_corrupt_shares: false,
        };
        tokio::spawn(ehr_share::share_node::serve(
            listener,
            cfg,
            None,
            std::future::pending(),
        ));
    }
    let ipfs = KuboClient::new(&kubo.api_url);
    let up = RecordsConfig::new(nodes.clone(), 3).client(patient, patient_key, ipfs.clone())?;
    let mut ids = Vec::new();
    for i in 0..RECORDS {
        ids.push(
            up.put(
                addr,
                Bytes::from(format!("reading {i}: {}", "x".repeat(10_000))),
                "text/plain",
                None,
            )
            .await?,
        );
    }
    let with_config = |urls: [String; 2]| {
        let mut v = nodes.clone();
        v[3].url = urls[0].clone();
        v[4].url = urls[1].clone();
        RecordsConfig::new(v, 3)
    };
    let with = |urls: [String; 2]| {
        with_config(urls).client(doctor.clone(), doctor_key.clone(), ipfs.clone())
    };
    let healthy = RecordsConfig::new(nodes.clone(), 3).client(
        doctor.clone(),
        doctor_key.clone(),
        ipfs.clone(),
    )?;
    let killed = with([dead().await?, dead().await?])?;
    let hung = with([tarpit().await?, tarpit().await?])?;
    let liars = [
        liar(nodes[3].url.clone()).await?,
        liar(nodes[4].url.clone()).await?,
    ];
    let lying_config = with_config(liars.clone());
    let lying = lying_config.client(doctor.clone(), doctor_key.clone(), ipfs.clone())?;
    // The four cases take turns read by read, so that all see the same machine state: first
    // each record once, then the re-reads.
    let cases: [(&'static str, &RecordsClient, &[String]); 4] = [
        ("all five healthy", &healthy, &[]),
        ("two killed", &killed, &[]),
        ("two hung", &hung, &[]),
        ("two lying", &lying, &liars),
    ];
    let mut outcomes: Vec<Outcome> = cases
        .iter()
        .map(|(name, _, _)| Outcome::new(name))
        .collect();
    let order = ids.iter().chain((0..READS).map(|i| &ids[i % RECORDS]));
    for (n, id) in order.enumerate() {
        for ((_, client, liars), o) in cases.iter().zip(outcomes.iter_mut()) {
            read_once(client, *id, liars, o, n < RECORDS).await;
        }
    }
    // A denied read: a verified provider the patient never granted. The client's read stops at
    // `checkAccess` (its access transaction logs the denial); the same provider asking each
    // node directly, naming an access transaction of its own, is refused by all five.
    let stranger_key = funded().await?;
    let stranger = office.with_signer(&rpc, stranger_key.clone())?;
    stranger.register_provider().await?;
    office.verify_provider(stranger_key.address()).await?;
    let denied_client = RecordsConfig::new(nodes.clone(), 3).client(
        stranger.clone(),
        stranger_key.clone(),
        ipfs.clone(),
    )?;
    let mut denied_times = Vec::new();
    for i in 0..READS {
        let t = Instant::now();
        let r = denied_client.get(ids[i % ids.len()]).await;
        denied_times.push(t.elapsed());
        anyhow::ensure!(
            matches!(r, Err(ehr_share::records::RecordError::Denied(..))),
            "a read without a grant was not denied: {r:?}"
        );
    }
    let o = stranger.access(addr, &ids[..1]).await?;
    let dom =
        ehr_share::share_node::domain(office.chain_id(), office.address(), office.deployment_id());
    let mut refused = 0;
    for n in &nodes {
        let request = ehr_share::share_node::ShareRelease {
            recordId: ids[0].0,
            requester: stranger_key.address(),
            accessTx: o.tx.tx_hash,
            shareNode: n.address,
            nonce: U256::from(7u64),
            deadline: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs()
                + 60,
        };
        let signature = ehr_share::share_node::sign(&stranger_key, &request, &dom)?;
        let r = reqwest::Client::new()
            .post(format!("{}/shares/{}/release", n.url, ids[0]))
            .json(&ehr_share::share_node::ReleaseBody { request, signature })
            .send()
            .await?;
        if r.status() == reqwest::StatusCode::FORBIDDEN {
            refused += 1;
        }
    }
    let base = pct(&outcomes[0].times, 0.99);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut md = format!(
        "# Reads with degraded share nodes\n\n\
         Measured by `cargo bench --bench degraded` on real anvil and Kubo, in-process share \
         nodes, 3-of-5, {READS} reads of {RECORDS} records of 10 KB by a granted doctor per \
         case, the cases taking turns read by read (each read: the doctor's access transaction \
         for the record, sent by its first read and reused after; shares from three nodes, \
         healthy ones first, one more for each that fails, and the rest when the first are \
         slower than three usual answer times; each node checking `canRead`; Kubo, \
         decryption, digest check). A node that failed a read is asked last for 30 s, so a \
         broken node costs one read, not every read. Two of the five nodes are killed \
         (connection refused), hung (a listener that accepts and never answers) or lying (a \
         proxy flipping a digit of each released share). Each case is its own gateway (its own \
         view of the nodes' health). Target: every read succeeds, liars are named, p99 within \
         1.5x the healthy p99 of the same run.\n\n\
         | case | reads ok | p50 | p95 | p99 | p99 / healthy p99 | liars named |\n\
         |---|---:|---:|---:|---:|---:|---:|\n"
    );
    for o in &outcomes {
        let p99 = pct(&o.times, 0.99);
        let line = format!(
            "| {} | {}/{READS} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2}x | {} |\n",
            o.name,
            o.ok,
            ms(pct(&o.times, 0.5)),
            ms(pct(&o.times, 0.95)),
            ms(p99),
            p99.as_secs_f64() / base.as_secs_f64(),
            if o.name == "two lying" {
                let suspects = lying_config.node_health().suspects();
                format!(
                    "{} of 2{}; reads that named one: {}; {} suspected at the end",
                    o.named.len(),
                    o.all_named_by
                        .map(|r| format!(", both by read {r}"))
                        .unwrap_or_default(),
                    o.naming,
                    liars.iter().filter(|l| suspects.contains(l)).count()
                )
            } else {
                "-".into()
            }
        );
        print!("{line}");
        md.push_str(&line);
    }
    let first_base = pct(&outcomes[0].first, 1.0);
    md.push_str(&format!(
        "\nThe first read of each of the {RECORDS} records, before the re-reads above (each sends \
         the doctor's access transaction and waits for its block; the degraded cases meet their \
         bad nodes here, and each read that asks one names it):\n\n\
         | case | reads ok | p50 | max | max / healthy max |\n|---|---:|---:|---:|---:|\n"
    ));
    for o in &outcomes {
        let max = pct(&o.first, 1.0);
        let line = format!(
            "| {} | {}/{RECORDS} | {:.1} ms | {:.1} ms | {:.2}x |\n",
            o.name,
            o.ok_first,
            ms(pct(&o.first, 0.5)),
            ms(max),
            max.as_secs_f64() / first_base.as_secs_f64(),
        );
        print!("{line}");
        md.push_str(&line);
    }
    let denied_line = format!(
        "\nA denied read (a verified provider the patient never granted; target p50 <= 5 ms): \
         {READS}/{READS} denied, p50 {:.1} ms, p95 {:.1} ms (locating the record at the nodes, \
         `checkAccess`, then the doctor's `access` transaction logging the denial, handed to the node); asked directly with that transaction, {refused} of \
         {} share nodes refused.\n",
        ms(pct(&denied_times, 0.5)),
        ms(pct(&denied_times, 0.95)),
        nodes.len()
    );
    print!("{denied_line}");
    md.push_str(&denied_line);
    md.push_str(&format!(
        "\nMachine: {} cores; profile: bench (optimised).\n",
        std::thread::available_parallelism().map_or(0, usize::from)
    ));
    std::fs::write(root.join("docs/degraded-bench.md"), md)?;
    println!("wrote docs/degraded-bench.md");
    drop(kubo);
    drop(anvil);
    Ok(())
}

//! Crash consistency (performance and reliability issue): `ehr dev` (release build) takes 1,000
//! uploads from 8 concurrent clients while a killer sends SIGKILL, at random moments, to a
//! random part: a share node, Kubo, anvil, or `ehr dev` itself (the gateway, which takes its
//! children down with it). The supervisor restarts a killed child; this harness restarts a
//! killed `ehr dev` on the same folder. Afterwards, with every part up again:
//!
//! - every acknowledged upload must read back byte-identical;
//! - every record a patient's list names (anchored, with a proof) must be readable;
//! - what unacknowledged uploads left (shares waiting for an anchor, pinned ciphertext) must be
//!   collected.
//!
//! anvil keeps its chain in memory and writes it to disk every second: a SIGKILL of anvil
//! loses up to a second of blocks. `ehr dev` therefore acknowledges an upload only once its
//! anchor is in the chain's journal on disk, which it replays before anvil starts again
//! (`stack::AnvilState`); an acknowledged upload lost within 1.5 s before an anvil kill is
//! still counted apart, to show which defence failed.
//!
//! `cargo bench --bench crash` prints the counts and writes `docs/crash-bench.md`.
//! `CRASH_UPLOADS` changes the number of uploads (default 1,000). The share nodes'
//! per-requester rate limits are raised, as in the load bench.

#[path = "support/dev.rs"]
mod dev;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ehr_share::stack::ManagedChild;
use rand_core::{OsRng, RngCore};
use serde_json::Value;
use tokio::sync::Mutex;

use dev::{Ports, all_up, kill9, pid_of, root};

/// Seconds a share node keeps a deposit that was never anchored (the product's default is an
/// hour; short here so the harness sees the collection).
const UNANCHORED_TTL: u64 = 30;
/// Seconds before the gateway unpins ciphertext whose record was never anchored: above the
/// share nodes' TTL, as in a deployment.
const ORPHAN_TTL: u64 = 45;
const CLIENTS: usize = 8;
const PATIENTS: [(&str, &str); 3] = [
    ("demo-patient1", "1-1001"),
    ("demo-patient2", "1-1002"),
    ("demo-patient3", "2-2001"),
];

async fn start_dev(state: &std::path::Path, p: Ports) -> anyhow::Result<ManagedChild> {
    dev::start(
        state,
        p,
        &[
            ("EHR_SHARE_NODE_UNANCHORED_TTL", UNANCHORED_TTL.to_string()),
            ("EHR_SHARE_NODE_SWEEP_SECS", "2".into()),
            ("EHR_DEV_ORPHAN_TTL_SECS", ORPHAN_TTL.to_string()),
            // Three demo patients read back thousands of records: at the product's
            // per-requester limits (burst 120, 1,200 a minute) a 3,000-upload run is refused
            // for rate, not for a lost share, which this harness is not measuring.
            ("EHR_SHARE_NODE_PER_MINUTE", "10000000".into()),
            ("EHR_SHARE_NODE_BURST", "100000".into()),
        ],
    )
    .await
}

struct Upload {
    token: &'static str,
    data: Vec<u8>,
    /// The record id and when the acknowledgement arrived.
    acked: Option<(String, Instant)>,
    error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Victim {
    ShareNode(u16),
    Kubo,
    Anvil,
    EhrDev,
}

impl Victim {
    fn name(self) -> String {
        match self {
            Victim::ShareNode(i) => format!("share node {}", i + 1),
            Victim::Kubo => "Kubo".into(),
            Victim::Anvil => "anvil".into(),
            Victim::EhrDev => "ehr dev (gateway)".into(),
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Victim::ShareNode(_) => "a share node",
            Victim::Kubo => "Kubo",
            Victim::Anvil => "anvil",
            Victim::EhrDev => "ehr dev (gateway and, with it, every child)",
        }
    }
}

struct Stack {
    child: ManagedChild,
    state: PathBuf,
    ports: Ports,
}

impl Stack {
    fn root(&self) -> u32 {
        self.child.pid().unwrap_or(0)
    }
    fn words(&self, v: Victim) -> Vec<String> {
        match v {
            Victim::ShareNode(i) => vec![
                "share-node".into(),
                format!("--port {}", self.ports.share_base + i),
            ],
            Victim::Kubo => vec!["ipfs".into(), "daemon".into()],
            Victim::Anvil => vec!["anvil".into(), format!("--port {}", self.ports.anvil)],
            Victim::EhrDev => vec!["ehr".into(), " dev".into()],
        }
    }
    /// Kills `v` and waits until the stack is whole again.
    async fn kill(&mut self, v: Victim, http: &reqwest::Client, gw: &str) -> anyhow::Result<()> {
        let words = self.words(v);
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        let Some(pid) = pid_of(self.root(), &w) else {
            anyhow::bail!("{} is not running", v.name());
        };
        kill9(pid);
        if v == Victim::EhrDev {
            let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait_exit()).await;
            // The children go down with it (their tether); wait for their ports to close.
            let anvil = format!("127.0.0.1:{}", self.ports.anvil);
            let t = Instant::now();
            while std::net::TcpStream::connect(&anvil).is_ok() && t.elapsed().as_secs() < 30 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.child = start_dev(&self.state, self.ports).await?;
        } else {
            let t = Instant::now();
            loop {
                let now = pid_of(self.root(), &w);
                if now.is_some_and(|p| p != pid) {
                    break;
                }
                anyhow::ensure!(t.elapsed().as_secs() < 60, "{} was not restarted", v.name());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        anyhow::ensure!(
            all_up(http, gw, Duration::from_secs(120)).await,
            "the stack did not come back after killing {}",
            v.name()
        );
        Ok(())
    }
}

fn payload() -> Vec<u8> {
    let len = 1024 + (OsRng.next_u32() % (31 * 1024)) as usize;
    let mut v = vec![0u8; len];
    OsRng.fill_bytes(&mut v);
    v
}

async fn upload(
    http: &reqwest::Client,
    gw: &str,
    token: &str,
    patient: &str,
    data: &[u8],
) -> Result<String, String> {
    let r = http
        .post(format!("{gw}/records?patient={patient}"))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or_default();
    match v["record"].as_str() {
        Some(id) if status.is_success() => Ok(id.to_owned()),
        _ => Err(format!("{status}: {}", v["error"].as_str().unwrap_or("?"))),
    }
}

async fn read(http: &reqwest::Client, gw: &str, token: &str, id: &str) -> Result<Vec<u8>, String> {
    let r = http
        .get(format!("{gw}/records/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = r.status();
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body.to_vec())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}

async fn listed(http: &reqwest::Client, gw: &str, patient: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut url = format!("{gw}/api/patients/{patient}/records?limit=200");
        if let Some(n) = &next {
            url.push_str(&format!("&before={n}"));
        }
        let v: Value = http.get(url).send().await?.json().await?;
        out.extend(
            v["records"]
                .as_array()
                .ok_or_else(|| anyhow::anyhow!("no records list: {v}"))?
                .iter()
                .filter_map(|r| r["id"].as_str().map(str::to_owned)),
        );
        match v["next"].as_str() {
            Some(n) => next = Some(n.to_owned()),
            None => return Ok(out),
        }
    }
}

/// Recursive pins: all, pending uploads, finished records.
async fn named_pins(http: &reqwest::Client, kubo: &str) -> anyhow::Result<(usize, usize, usize)> {
    let v: Value = http
        .post(format!("{kubo}/api/v0/pin/ls?type=recursive&names=true"))
        .send()
        .await?
        .json()
        .await?;
    let keys = v["Keys"].as_object().cloned().unwrap_or_default();
    let named = |prefix: &str| {
        keys.values()
            .filter(|k| k["Name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .count()
    };
    Ok((keys.len(), named("ehr-upload:"), named("ehr-record:")))
}

/// The records whose ciphertext is pinned, lowercase ids.
async fn pinned_records(http: &reqwest::Client, kubo: &str) -> anyhow::Result<HashSet<String>> {
    let v: Value = http
        .post(format!("{kubo}/api/v0/pin/ls?type=recursive&names=true"))
        .send()
        .await?
        .json()
        .await?;
    Ok(v["Keys"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|k| k["Name"].as_str())
        .filter_map(|n| n.strip_prefix("ehr-record:").map(str::to_lowercase))
        .collect())
}

async fn node_counts(http: &reqwest::Client, base: u16) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for i in 0..5 {
        let v: Value = match http
            .get(format!("http://127.0.0.1:{}/health", base + i))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        out.push((
            v["shares"].as_u64().unwrap_or(u64::MAX),
            v["unanchored"].as_u64().unwrap_or(u64::MAX),
        ));
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: usize = std::env::var("CRASH_UPLOADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let tmp = tempfile::tempdir()?;
    let state = tmp.path().join("state");
    let ports = Ports::free();
    let gw = ports.gateway_url();
    let kubo = ports.kubo_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    println!(
        "crash: starting ehr dev (release build) in {}",
        state.display()
    );
    let child = start_dev(&state, ports).await?;
    let stack = Arc::new(Mutex::new(Stack {
        child,
        state: state.clone(),
        ports,
    }));
    let uploads: Arc<Mutex<Vec<Upload>>> = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    // The killer: every 0.5 to 2.5 s, SIGKILL one part; each kind of part equally often.
    let kills: Arc<Mutex<Vec<(Victim, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let killer = {
        let (stack, done, kills, http, gw) = (
            stack.clone(),
            done.clone(),
            kills.clone(),
            http.clone(),
            gw.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let wait = 500 + u64::from(OsRng.next_u32() % 2000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let v = match OsRng.next_u32() % 4 {
                    0 => Victim::ShareNode((OsRng.next_u32() % 5) as u16),
                    1 => Victim::Kubo,
                    2 => Victim::Anvil,
                    _ => Victim::EhrDev,
                };
                kills.lock().await.push((v, Instant::now()));
                let mut d = stack.lock().await;
                d.kill(v, &http, &gw).await?;
            }
            anyhow::Ok(())
        })
    };

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (uploads, next, http, gw) = (uploads.clone(), next.clone(), http.clone(), gw.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    break;
                }
                // Wait until every part is up (one may be restarting), as a client retrying
                // a 503 would; the kills then land in the middle of uploads.
                all_up(&http, &gw, Duration::from_secs(180)).await;
                let (token, patient) = PATIENTS[(i + c) % PATIENTS.len()];
                let data = payload();
                // A busy gateway (all upload slots taken) is asked again, as a client would.
                let r = loop {
                    match upload(&http, &gw, token, patient, &data).await {
                        Err(e) if e.contains("too many uploads in progress") => {
                            let ms = 20 + u64::from(OsRng.next_u32() % 60);
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        other => break other,
                    }
                };
                let (acked, error) = match r {
                    Ok(id) => (Some((id, Instant::now())), None),
                    Err(e) => (None, Some(e)),
                };
                uploads.lock().await.push(Upload {
                    token,
                    data,
                    acked,
                    error,
                });
                if (i + 1) % 100 == 0 {
                    println!("crash: {} uploads sent ({:.0?})", i + 1, started.elapsed());
                }
            }
        }));
    }
    for c in clients {
        c.await?;
    }
    done.store(true, Ordering::SeqCst);
    killer.await??;
    let upload_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        all_up(&http, &gw, Duration::from_secs(120)).await,
        "the stack is not whole after the run"
    );
    println!("crash: uploads done in {upload_secs:.0} s; checking");

    let uploads = std::mem::take(&mut *uploads.lock().await);
    let kills = std::mem::take(&mut *kills.lock().await);
    let mut kill_counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (v, _) in &kills {
        *kill_counts.entry(v.kind()).or_default() += 1;
    }
    // Acknowledged uploads read back; a loss within 1.5 s before an anvil kill is the chain's.
    let anvil_kills: Vec<Instant> = kills
        .iter()
        .filter(|(v, _)| *v == Victim::Anvil)
        .map(|(_, t)| *t)
        .collect();
    let (mut acked, mut identical, mut lost_to_chain) = (0, 0, 0);
    let mut lost = Vec::new();
    for u in &uploads {
        let Some((id, at)) = &u.acked else { continue };
        acked += 1;
        match read(&http, &gw, u.token, id).await {
            Ok(b) if b == u.data => identical += 1,
            other => {
                let chain = anvil_kills
                    .iter()
                    .any(|k| *k >= *at && k.duration_since(*at) < Duration::from_millis(1500));
                if chain {
                    lost_to_chain += 1;
                } else {
                    lost.push(format!(
                        "{id}: {}",
                        other.err().unwrap_or_else(|| "different bytes".into())
                    ));
                }
            }
        }
    }
    // Every record a list names is readable; count those nobody was told about.
    let acked_ids: HashSet<&str> = uploads
        .iter()
        .filter_map(|u| u.acked.as_ref().map(|(id, _)| id.as_str()))
        .collect();
    let (mut anchored, mut unacked_anchored, mut unreadable) = (0, 0, Vec::new());
    let mut anchored_ids = Vec::new();
    for (token, patient) in PATIENTS {
        for id in listed(&http, &gw, patient).await? {
            anchored += 1;
            anchored_ids.push(id.clone());
            if acked_ids.contains(id.as_str()) {
                continue;
            }
            unacked_anchored += 1;
            if let Err(e) = read(&http, &gw, token, &id).await {
                unreadable.push(format!("{id}: {e}"));
            }
        }
    }
    let failed = uploads.iter().filter(|u| u.acked.is_none()).count();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for e in uploads.iter().filter_map(|u| u.error.as_ref()) {
        let key: String = e.chars().take(90).collect();
        *errors.entry(key).or_default() += 1;
    }

    // Collection: wait for the share nodes' and the gateway's collectors to run past the TTLs.
    let before_nodes = node_counts(&http, ports.share_base).await;
    let before_pins = named_pins(&http, &kubo).await?;
    let t = Instant::now();
    let wait = Duration::from_secs(UNANCHORED_TTL.max(ORPHAN_TTL) + 60);
    let (mut after_nodes, mut after_pins);
    loop {
        after_nodes = node_counts(&http, ports.share_base).await;
        after_pins = named_pins(&http, &kubo).await?;
        let clean = after_nodes.iter().all(|(_, u)| *u == 0) && after_pins.1 == 0;
        if clean || t.elapsed() > wait {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let collected_in = t.elapsed().as_secs_f64();
    // Every anchored record's ciphertext is still pinned (readable now is not enough: Kubo's
    // garbage collector deletes what is not pinned).
    let pinned = pinned_records(&http, &kubo).await?;
    let unpinned: Vec<String> = anchored_ids
        .iter()
        .filter(|id| !pinned.contains(id.to_lowercase().as_str()))
        .map(|id| {
            let acked = if acked_ids.contains(id.as_str()) {
                "acknowledged"
            } else {
                "never acknowledged"
            };
            format!("{id}: anchored ({acked}), ciphertext not pinned")
        })
        .collect();

    // The report.
    let mut md = String::from("# Crash consistency\n\n");
    md.push_str(&format!(
        "Measured by `cargo bench --bench crash`: `ehr dev` (release build; anvil, Kubo, five share nodes 3-of-5, the gateway) took {total} uploads of 1 to 32 KiB from {CLIENTS} concurrent REST clients (three demo patients; before each upload a client waits until the gateway's health says every part is up, and a client refused because every upload slot was taken asks again after 20 to 80 ms) while a killer sent SIGKILL every 0.5 to 2.5 s to a random part, each kind equally often. The supervisor in `ehr dev` restarted a killed child; the harness restarted a killed `ehr dev` on the same folder and waited for the whole stack before the next kill. Then, with every part up, it read every acknowledged upload back, read every record the patients' lists name, and waited for the collectors (share nodes: deposits never anchored, after {UNANCHORED_TTL} s; the gateway's upload sweeper: spreading the proof of records anchored while a node was down, unpinning the ciphertext of uploads never anchored after {ORPHAN_TTL} s).\n\n"
    ));
    md.push_str("## Kills\n\n| part | kills |\n|---|---:|\n");
    for (k, n) in &kill_counts {
        md.push_str(&format!("| {k} | {n} |\n"));
    }
    md.push_str(&format!(
        "| all | {} in {upload_secs:.0} s |\n\n",
        kills.len()
    ));
    md.push_str("## Uploads\n\n| outcome | count |\n|---|---:|\n");
    md.push_str(&format!("| acknowledged | {acked} |\n"));
    md.push_str(&format!(
        "| acknowledged, read back byte-identical | {identical} |\n"
    ));
    md.push_str(&format!(
        "| acknowledged, lost with anvil's last second (anvil killed within 1.5 s after the acknowledgement) | {lost_to_chain} |\n"
    ));
    md.push_str(&format!(
        "| **acknowledged, lost otherwise** | **{}** |\n",
        lost.len()
    ));
    md.push_str(&format!(
        "| refused or cut off (not acknowledged) | {failed} |\n"
    ));
    md.push_str(&format!(
        "| records the patients' lists name (anchored with a proof) | {anchored} |\n"
    ));
    md.push_str(&format!(
        "| of them never acknowledged (the client was cut off after the anchor), readable | {} |\n",
        unacked_anchored - unreadable.len()
    ));
    md.push_str(&format!(
        "| **named by a list but unreadable** | **{}** |\n",
        unreadable.len()
    ));
    md.push_str(&format!(
        "| **named by a list, ciphertext not pinned (after the collectors)** | **{}** |\n\n",
        unpinned.len()
    ));
    md.push_str("Why uploads were not acknowledged (first 90 characters of the error):\n\n| error | count |\n|---|---:|\n");
    for (e, n) in &errors {
        md.push_str(&format!("| {} | {n} |\n", e.replace('|', "\\|")));
    }
    md.push_str(
        "\n## Collection\n\n| | right after the run | after the collectors |\n|---|---:|---:|\n",
    );
    for i in 0..5 {
        md.push_str(&format!(
            "| share node {} shares (waiting for an anchor) | {} ({}) | {} ({}) |\n",
            i + 1,
            before_nodes[i].0,
            before_nodes[i].1,
            after_nodes[i].0,
            after_nodes[i].1
        ));
    }
    md.push_str(&format!(
        "| Kubo: pins of record ciphertext | {} | {} |\n",
        before_pins.2, after_pins.2
    ));
    md.push_str(&format!(
        "| Kubo: markers of unfinished uploads | {} | {} |\n",
        before_pins.1, after_pins.1
    ));
    md.push_str(&format!(
        "| Kubo: all recursive pins | {} | {} |\n\n",
        before_pins.0, after_pins.0
    ));
    md.push_str(&format!(
        "Collected within {collected_in:.0} s of the check. The anchored records include the demo record `ehr dev` stores at its first start. A share node that was down during an upload holds no share of that record (the others do, at least k of them), so its count can stay below the number of records.\n"
    ));
    for l in lost.iter().chain(&unreadable).chain(&unpinned).take(20) {
        md.push_str(&format!("\n- {l}"));
    }
    md.push_str("\n\nMachine: 2 cores; profile: bench (optimised).\n");
    println!("{md}");
    std::fs::write(root().join("docs/crash-bench.md"), &md)?;
    stack.lock().await.child.stop(Duration::from_secs(10)).await;
    anyhow::ensure!(
        lost.is_empty() && lost_to_chain == 0 && unreadable.is_empty() && unpinned.is_empty(),
        "{} acknowledged uploads lost ({lost_to_chain} with anvil's last second), {} listed records unreadable, {} not pinned",
        lost.len() + lost_to_chain,
        unreadable.len(),
        unpinned.len()
    );
    Ok(())
}

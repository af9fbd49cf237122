//! `ehr dev` (the release build) as the benches that drive the whole stack start it: free
//! ports, a fresh state folder, extra settings through the environment, and the processes it
//! runs (to kill them, or to read their CPU time and memory from `/proc`).

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ehr_share::stack::ManagedChild;
use rand_core::{OsRng, RngCore};

#[path = "../../tests/common/ports.rs"]
mod ports;
use serde_json::Value;

/// The ports of one `ehr dev`.
#[derive(Clone, Copy)]
pub struct Ports {
    pub gateway: u16,
    pub anvil: u16,
    pub kubo_api: u16,
    pub kubo_gateway: u16,
    pub share_base: u16,
}

impl Ports {
    /// Nine free ports in one block (see `ports`), the last five for the share nodes.
    pub fn free() -> Self {
        let base = ports::quiet_ports(9);
        Self {
            gateway: base,
            anvil: base + 1,
            kubo_api: base + 2,
            kubo_gateway: base + 3,
            share_base: base + 4,
        }
    }

    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway)
    }

    pub fn kubo_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.kubo_api)
    }

    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.anvil)
    }
}

/// The project folder.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts `ehr dev` on `state` and `p` with `env` added, and waits for its health.
pub async fn start(state: &Path, p: Ports, env: &[(&str, String)]) -> anyhow::Result<ManagedChild> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ehr"));
    cmd.arg("dev")
        .env("EHR_STATE_DIR", state)
        .env("EHR_PROJECT_DIR", root())
        .env("EHR_ANVIL_CONFIG", root().join("anvil.toml"))
        .env("EHR_ANVIL_PORT", p.anvil.to_string())
        .env("EHR_GATEWAY_PORT", p.gateway.to_string())
        .env("EHR_KUBO_API_PORT", p.kubo_api.to_string())
        .env("EHR_KUBO_GATEWAY_PORT", p.kubo_gateway.to_string())
        .env("EHR_SHARE_NODE_BASE_PORT", p.share_base.to_string())
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = ManagedChild::spawn("ehr dev", cmd, false)?;
    let url = format!("{}/health", p.gateway_url());
    child
        .wait_healthy(Duration::from_secs(180), || {
            let url = url.clone();
            async move { matches!(reqwest::get(url).await, Ok(r) if r.status().is_success()) }
        })
        .await?;
    Ok(child)
}

/// Every process below `root`, with its command line.
pub fn descendants(root: u32) -> Vec<(u32, String)> {
    let mut all = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        all.push((pid, ppid, cmd));
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid, cmd) in &all {
            if *ppid == p {
                out.push((*pid, cmd.clone()));
                frontier.push(*pid);
            }
        }
    }
    out
}

/// The processes below `root` whose command line has every one of `words` (wrapper shells
/// excluded).
pub fn pids_of(root: u32, words: &[&str]) -> Vec<u32> {
    descendants(root)
        .into_iter()
        .filter(|(_, cmd)| {
            !cmd.starts_with("bash")
                && !cmd.starts_with("sh ")
                && words.iter().all(|w| cmd.contains(w))
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// The first of [`pids_of`].
pub fn pid_of(root: u32, words: &[&str]) -> Option<u32> {
    pids_of(root, words).into_iter().next()
}

pub fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, whole line).
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / 100.0
}

/// A `kB` field of `/proc/{pid}/{file}` in MiB (0 when absent).
pub fn proc_mib(pid: u32, file: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A process's memory: resident (anonymous: its heap and stacks; file-backed: the pages of
/// its binary and libraries it touched, shared with every process running the same binary)
/// and proportional (each shared page divided among the processes that map it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: f64,
    pub anon: f64,
    pub file: f64,
    pub pss: f64,
}

pub fn memory(pid: u32) -> Memory {
    Memory {
        rss: proc_mib(pid, "status", "VmRSS:"),
        anon: proc_mib(pid, "status", "RssAnon:"),
        file: proc_mib(pid, "status", "RssFile:"),
        pss: proc_mib(pid, "smaps_rollup", "Pss:"),
    }
}

pub async fn health(http: &reqwest::Client, gw: &str) -> Option<Value> {
    let r = http.get(format!("{gw}/health")).send().await.ok()?;
    r.json().await.ok()
}

/// Waits until every part answers (status "ok", not just "degraded").
pub async fn all_up(http: &reqwest::Client, gw: &str, within: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if health(http, gw).await.is_some_and(|h| h["status"] == "ok") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Percentile `p` (0 to 1) of `v`, in milliseconds.
pub fn pct_ms(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// A read; returns the status and the body length.
pub async fn read(http: &reqwest::Client, gw: &str, token: &str, id: &str) -> (u16, usize) {
    match http
        .get(format!("{gw}/records/{id}"))
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let n = r.bytes().await.map_or(0, |b| b.len());
            (status, n)
        }
        Err(_) => (0, 0),
    }
}

/// The account behind a bearer token (`GET /api/me`).
pub async fn account(http: &reqwest::Client, gw: &str, token: &str) -> anyhow::Result<String> {
    let v: Value = http
        .get(format!("{gw}/api/me"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    v["account"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no account in {v}"))
}

/// Bytes of the files below `dir`.
pub fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// What the memory tables' columns mean.
pub const MEMORY_NOTE: &str = "Resident memory is the process's heap and stacks (anonymous) \
     plus the pages of the `ehr` binary and its libraries it touched (file-backed: the six \
     processes run one binary and share them, so the sum of their resident sizes counts those \
     pages six times); the proportional size divides each shared page among the processes that \
     map it, so the sum of those is the memory the six take.\n\n";

/// The memory of `ehr dev`'s gateway (`root`) and of each share node below it, and their sum
/// (last).
pub fn stack_memory(root: u32) -> Vec<(String, Memory)> {
    let mut rows = vec![("`ehr dev` (gateway)".to_owned(), memory(root))];
    for (i, pid) in pids_of(root, &["share-node"]).into_iter().enumerate() {
        rows.push((format!("share node {}", i + 1), memory(pid)));
    }
    let total = rows.iter().fold(Memory::default(), |a, (_, m)| Memory {
        rss: a.rss + m.rss,
        anon: a.anon + m.anon,
        file: a.file + m.file,
        pss: a.pss + m.pss,
    });
    rows.push(("gateway + 5 share nodes".to_owned(), total));
    rows
}

/// [`stack_memory`] as a Markdown table.
pub fn memory_table(rows: &[(String, Memory)]) -> String {
    let mut md = String::from(
        "| | resident | anonymous | file-backed | proportional |\n|---|---:|---:|---:|---:|\n",
    );
    for (name, m) in rows {
        md.push_str(&format!(
            "| {name} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB |\n",
            m.rss, m.anon, m.file, m.pss
        ));
    }
    md
}

/// `len` random bytes (a record nobody can compress or deduplicate).
pub fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    OsRng.fill_bytes(&mut v);
    v
}

/// Uploads `data` as `token` for `patient` through the REST API; the record id, or the status
/// and the error the gateway gave.
pub async fn upload(
    http: &reqwest::Client,
    gw: &str,
    token: &str,
    patient: &str,
    data: Vec<u8>,
) -> Result<String, (u16, String)> {
    let r = http
        .post(format!("{gw}/records?patient={patient}"))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .map_err(|e| (0, e.to_string()))?;
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or_default();
    match v["record"].as_str() {
        Some(id) if status == 200 => Ok(id.to_owned()),
        _ => Err((status, v["error"].as_str().unwrap_or("?").to_owned())),
    }
}

/// Records on share node 1, by its health answer.
pub async fn shares_on_node_1(http: &reqwest::Client, ports: Ports) -> anyhow::Result<u64> {
    let v: Value = http
        .get(format!("http://127.0.0.1:{}/health", ports.share_base))
        .send()
        .await?
        .json()
        .await?;
    Ok(v["shares"].as_u64().unwrap_or(0))
}

/// A chain client signing with a fresh account of the bench's own, given 100 ETH on anvil.
pub async fn funded(
    chain: &ehr_share::chain::EhrChain,
    ports: &Ports,
    deployment: &ehr_share::chain::Deployment,
) -> anyhow::Result<ehr_share::chain::EhrChain> {
    let key = funded_key(chain).await?;
    Ok(ehr_share::chain::EhrChain::connect(&ports.rpc_url(), Some(key), deployment).await?)
}

/// A fresh key of the bench's own, given 100 ether.
pub async fn funded_key(
    chain: &ehr_share::chain::EhrChain,
) -> anyhow::Result<alloy::signers::local::PrivateKeySigner> {
    use alloy::providers::Provider as _;
    let key = alloy::signers::local::PrivateKeySigner::random();
    chain
        .provider()
        .raw_request::<_, ()>(
            "anvil_setBalance".into(),
            (key.address(), "0x56BC75E2D63100000"),
        )
        .await?;
    Ok(key)
}

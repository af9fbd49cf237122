//! What an upload waits for on the development chain before it is acknowledged: a dump of the
//! whole chain into its state file (`AnvilState::saved_after`, what `ehr dev` did after every
//! anchored batch) against an append of the new blocks' transactions to the chain's journal
//! (`AnvilState::journaled_after`, what it does now), measured in the same run on one anvil
//! as its chain grows, alternating the two after each new transaction.
//!
//! `cargo bench --bench durability` prints the table and writes `docs/durability-bench.md`.

use std::path::Path;
use std::time::{Duration, Instant};

use ehr_share::config::{AnvilSettings, Tools};
use ehr_share::stack::{AnvilState, free_port, journal_path, start_anvil};

/// Chain lengths (blocks, each with one transfer) at which both are measured.
const SIZES: [u64; 3] = [500, 1_000, 2_000];
/// Settles of each kind per chain length.
const ROUNDS: usize = 20;

/// CPU seconds (user + system) of a process.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / 100.0
}

/// The pid of the anvil listening on `port` (not the shell that tethers it).
fn anvil_pid(port: u16) -> Option<String> {
    let want = format!("--port\0{port}\0");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.to_owned();
        pid.parse::<u32>().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        let program = cmd.split('\0').next()?;
        (program.ends_with("/bin/anvil") && cmd.contains(&want)).then_some(pid)
    })
}

async fn rpc(
    http: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    Ok(http.post(url).json(&body).send().await?.json().await?)
}

/// Mines value transfers (one per block: anvil mines each as it arrives) until the chain
/// holds `blocks` blocks.
async fn grow(
    http: &reqwest::Client,
    url: &str,
    from: &[String],
    blocks: u64,
) -> anyhow::Result<()> {
    loop {
        let head = rpc(
            http,
            url,
            serde_json::json!({"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}),
        )
        .await?;
        let head = u64::from_str_radix(
            head["result"]
                .as_str()
                .unwrap_or("0x0")
                .trim_start_matches("0x"),
            16,
        )?;
        if head >= blocks {
            return Ok(());
        }
        // One at a time: anvil answers once the block is mined (a JSON-RPC batch of many
        // transfers stalled it).
        for i in 0..blocks - head {
            rpc(
                http,
                url,
                serde_json::json!({"jsonrpc":"2.0","id":1,"method":"eth_sendTransaction","params":[{
                    "from": from[i as usize % from.len()],
                    "to": "0x0000000000000000000000000000000000000007",
                    "value": "0x1"
                }]}),
            )
            .await?;
        }
    }
}

fn ms(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir()?;
    let mut settings = AnvilSettings::load(&root.join("anvil.toml"))?;
    settings.port = free_port()?;
    settings.block_time_secs = 0;
    settings.state_interval_secs = 0;
    let file = dir.path().join("anvil-state.json");
    settings.state_file = file.display().to_string();
    let bin = Tools::in_project(root).anvil;
    let state = AnvilState::new(settings.rpc_url(), &file);
    state.recover(&bin, &settings).await?;
    let mut anvil = start_anvil(&bin, &settings, false).await?;
    let url = settings.rpc_url();
    let pid = anvil_pid(settings.port).ok_or_else(|| anyhow::anyhow!("no anvil process"))?;
    let http = reqwest::Client::new();
    let accounts = rpc(
        &http,
        &url,
        serde_json::json!({"jsonrpc":"2.0","id":1,"method":"eth_accounts","params":[]}),
    )
    .await?;
    let from: Vec<String> = accounts["result"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();

    let mut rows = Vec::new();
    for blocks in SIZES {
        println!("durability: growing the chain to {blocks} blocks");
        grow(&http, &url, &from, blocks).await?;
        // Both start from a settled chain.
        state
            .saved_after(Instant::now())
            .await
            .map_err(anyhow::Error::msg)?;
        state
            .journaled_after(Instant::now())
            .await
            .map_err(anyhow::Error::msg)?;
        let mut taken: [(Vec<f64>, f64, f64); 2] = Default::default();
        for round in 0..2 * ROUNDS {
            let way = round % 2;
            grow(&http, &url, &from, blocks + 1 + round as u64).await?;
            let (anvil_before, own_before) = (cpu_secs(&pid), cpu_secs("self"));
            let t = Instant::now();
            if way == 0 {
                state.saved_after(Instant::now()).await
            } else {
                state.journaled_after(Instant::now()).await
            }
            .map_err(anyhow::Error::msg)?;
            let wall = t.elapsed().as_secs_f64() * 1e3;
            taken[way].0.push(wall);
            taken[way].1 += cpu_secs(&pid) - anvil_before;
            taken[way].2 += cpu_secs("self") - own_before;
        }
        let size = std::fs::metadata(&file).map_or(0, |m| m.len());
        for (way, (mut walls, anvil_cpu, own_cpu)) in taken.into_iter().enumerate() {
            walls.sort_by(f64::total_cmp);
            rows.push(format!(
                "| {blocks} | {:.1} MB | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                size as f64 / 1e6,
                ["dump of the whole chain (before)", "journal append (now)"][way],
                ms(&walls, 0.5),
                ms(&walls, 0.95),
                anvil_cpu * 1e3 / ROUNDS as f64,
                own_cpu * 1e3 / ROUNDS as f64,
            ));
        }
        // The journal restarts from each size, as `ehr dev`'s copy aside does.
        state.back_up().await.map_err(anyhow::Error::msg)?;
    }
    let journal = std::fs::metadata(journal_path(&file)).map_or(0, |m| m.len());
    anvil.child.stop(Duration::from_secs(10)).await;
    let report = format!(
        "# Making an upload durable on the development chain\n\n\
         `cargo bench --bench durability` (release build): one anvil (automine, a state file), \
         its chain grown by value transfers, one block each. At each length, {ROUNDS} times \
         each, alternating: a transfer is mined, then the chain is made durable either by \
         `anvil_dumpState` of the whole chain written to the state file (gzip JSON decoded, \
         written, `fsync`, renamed: what `ehr dev` did after every anchored upload batch) or by \
         appending the new block's transaction to the journal (`fsync`: what it does now, \
         `stack::AnvilState::journaled_after`). Wall time per settle, and CPU per settle of \
         anvil and of the process settling (the gateway, in `ehr dev`); 1 ms of CPU per settle \
         is 1 ms per upload batch.\n\n\
         | chain blocks | state file | way | p50 ms | p95 ms | anvil CPU ms | settling CPU ms |\n\
         |---:|---:|---|---:|---:|---:|---:|\n{}\n\n\
         The journal after the last length: {journal} bytes (its entries since the last copy \
         of the state file set aside).\n\n\
         Machine: 2 cores; profile: bench (optimised).\n",
        rows.join("\n")
    );
    println!("{report}");
    std::fs::write(root.join("docs/durability-bench.md"), report)?;
    Ok(())
}

//! Making the development chain durable before an upload is acknowledged.
//!
//! anvil keeps its chain in memory and writes it to its state file only when told to, so a
//! SIGKILL loses the blocks since the last dump, and with them the anchors of uploads the
//! gateway had already acknowledged (the crash harness, `benches/crash.rs`, lost 56 of 352
//! that way with anvil's own dumps every second).
//!
//! `ehr dev` therefore has the batcher wait, after each anchor, until every transaction the
//! chain has mined is in a journal on disk (`anvil_journal`): the signed bytes of each new
//! block's transactions, fetched from anvil and appended with `fsync`. Uploads waiting at the
//! same time share one append. Before anvil starts (first, and after every crash), the journal
//! is replayed: a private anvil loads the state file, takes the journaled transactions in
//! their order (those the file holds already are refused as used nonces), and its state
//! replaces the file; then the real anvil loads it. A contract creation is never left to a
//! replay: its address is the same, but `EhrAccess` derives its deployment id from its block,
//! so the chain is dumped whole when the journal meets one.
//!
//! The state file itself is still written whole (`anvil_dumpState`, gzip JSON, through a
//! temporary file, `fsync` and a rename) every `state_interval_secs` by
//! [`AnvilState::spawn_saver`], and copied aside as `<file>.good` by [`AnvilState::back_up`],
//! which drops the journal's entries that copy holds. A dump per batch, as before, cost a
//! whole serialisation of the chain per upload batch, growing with the chain: at 641 blocks
//! 32 ms of anvil's CPU and 3.3 MB written per dump.
//!
//! What the journal cannot bring back: changes made by anvil's admin calls
//! (`anvil_setBalance`, `evm_increaseTime`, ...) since the last dump, which are no
//! transactions; a replayed transaction mines in a new block, at a new time.
//!
//! A real chain needs none of this: there, durability is the confirmations the client waits
//! for.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::StackError;
use super::anvil_journal::{self as journal, Entry};
use crate::config::AnvilSettings;
use crate::records::Durability;

/// Blocks, or transactions, asked for in one JSON-RPC batch while journaling.
const PER_BATCH: usize = 256;
/// How often the periodic saver writes the whole chain into the state file (it journals the
/// new blocks in between).
const DUMP_EVERY: Duration = Duration::from_secs(30);
/// How long a replay waits for its transactions to be mined.
const REPLAY_WAIT: Duration = Duration::from_secs(30);

/// Writes anvil's state to its state file on request; see the module documentation.
#[derive(Debug)]
pub struct AnvilState {
    rpc_url: String,
    file: PathBuf,
    http: reqwest::Client,
    /// The last completed dump; `None` once stopped.
    last: tokio::sync::Mutex<Option<Saved>>,
    /// `<file>.journal`: the transactions since the state file's copy aside.
    journal_file: PathBuf,
    /// What the journal holds; `None` once stopped.
    journaled: tokio::sync::Mutex<Option<Journaled>>,
}

/// What a replay did.
struct Replayed {
    /// The replayed chain's head block.
    head: u64,
    /// Journaled transactions the state file did not hold.
    new: usize,
    /// Journaled transactions not mined on the replayed chain.
    missing: Vec<alloy::primitives::B256>,
}

/// How far the journal reaches.
#[derive(Debug, Clone, Default)]
struct Journaled {
    /// The last block whose transactions are in the journal or the state file; `None` until
    /// [`AnvilState::recover`] has said where the state file ends (settling then dumps the
    /// whole chain, as it always may).
    head: Option<u64>,
    /// When the last append began (before it asked for the head).
    began: Option<Instant>,
}

/// A completed dump: when it began, and the chain's head block just before.
#[derive(Debug, Clone, Default)]
struct Saved {
    began: Option<Instant>,
    head: Option<String>,
}

impl AnvilState {
    /// Dumps the chain at `rpc_url` into `file` (the file anvil loads at start).
    pub fn new(rpc_url: impl Into<String>, file: impl Into<PathBuf>) -> Self {
        let file = file.into();
        Self {
            rpc_url: rpc_url.into(),
            journal_file: journal_path(&file),
            file,
            http: crate::tls::client(),
            last: tokio::sync::Mutex::new(Some(Saved::default())),
            journaled: tokio::sync::Mutex::new(Some(Journaled::default())),
        }
    }

    /// Returns once every transaction the chain had mined at `since` is in the journal, on
    /// disk (or, before [`Self::recover`], in a dump begun after `since`).
    ///
    /// # Errors
    /// When anvil does not answer, its head is behind the journal (restarted without a
    /// replay), the journal cannot be written, or [`Self::stop`] was called.
    pub async fn journaled_after(&self, since: Instant) -> Result<(), String> {
        let mut guard = self.journaled.lock().await;
        let Some(j) = guard.as_mut() else {
            return Err("ehr dev is stopping".into());
        };
        if j.began.is_some_and(|t| t >= since) {
            return Ok(());
        }
        let Some(from) = j.head else {
            drop(guard);
            return self.saved_after(since).await;
        };
        let began = Instant::now();
        let head = block_number(&self.http, &self.rpc_url).await?;
        if head < from {
            return Err(format!(
                "the chain's head block {head} is behind its journal (block {from}): restarted without a replay?"
            ));
        }
        let (entries, creates) = self.transactions(from + 1, head).await?;
        let path = self.journal_file.clone();
        tokio::task::spawn_blocking(move || journal::append(&path, &entries))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("appending to {}: {e}", self.journal_file.display()))?;
        if creates {
            // A contract's creation depends on its block (`EhrAccess` derives its deployment
            // id from the block's number, time and parent hash): replayed, it would be
            // another deployment. The whole chain goes to the state file instead, in a dump
            // begun after the creation was seen mined.
            self.saved_after(Instant::now()).await?;
        }
        j.head = Some(head);
        j.began = Some(began);
        Ok(())
    }

    /// The signed transactions of blocks `from..=to`, in the order they were mined, and
    /// whether one of them created a contract.
    async fn transactions(&self, from: u64, to: u64) -> Result<(Vec<Entry>, bool), String> {
        let mut creates = false;
        let mut hashes = Vec::new();
        let numbers: Vec<u64> = (from..=to).collect();
        for chunk in numbers.chunks(PER_BATCH) {
            let calls = chunk
                .iter()
                .map(|n| {
                    (
                        "eth_getBlockByNumber",
                        serde_json::json!([format!("{n:#x}"), true]),
                    )
                })
                .collect::<Vec<_>>();
            for (n, block) in chunk
                .iter()
                .zip(rpc_batch(&self.http, &self.rpc_url, &calls).await?)
            {
                let txs = block["transactions"].as_array().ok_or_else(|| {
                    format!("block {n} is missing from the chain (restarted meanwhile?)")
                })?;
                for tx in txs {
                    let h = tx["hash"]
                        .as_str()
                        .ok_or_else(|| format!("block {n}: a transaction without a hash: {tx}"))?;
                    // A contract creation has no recipient.
                    creates |= tx["to"].is_null();
                    hashes.push((*n, h.to_owned()));
                }
            }
        }
        let mut entries = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(PER_BATCH) {
            let calls = chunk
                .iter()
                .map(|(_, h)| ("eth_getRawTransactionByHash", serde_json::json!([h])))
                .collect::<Vec<_>>();
            for ((block, h), raw) in chunk
                .iter()
                .zip(rpc_batch(&self.http, &self.rpc_url, &calls).await?)
            {
                let raw = raw
                    .as_str()
                    .and_then(|r| alloy::hex::decode(r).ok())
                    .ok_or_else(|| format!("transaction {h}: no signed bytes ({raw})"))?;
                entries.push(Entry { block: *block, raw });
            }
        }
        Ok((entries, creates))
    }

    /// Before anvil starts: replays the journal onto the state file (on a private anvil, whose
    /// state then replaces the file), and learns where the file's chain ends, so that
    /// [`Self::journaled_after`] journals from there. Also brings back the last good copy of a
    /// damaged state file, and waits for an anvil of an earlier run to let go of the port.
    /// Returns how many journaled transactions the state file did not hold.
    ///
    /// # Errors
    /// When the state file cannot be restored, the port stays taken, the private anvil does
    /// not start or answer: the journal is kept, and anvil must not start (it would give the
    /// journal's nonces to new transactions). Journaled transactions that do not mine on the
    /// replayed chain are logged as an error and their journal kept aside as
    /// `<journal>.unreplayed-<time>`; the others are kept.
    pub async fn recover(&self, bin: &Path, settings: &AnvilSettings) -> Result<usize, StackError> {
        let mut guard = self.journaled.lock().await;
        let Some(j) = guard.as_mut() else {
            return Err(StackError::Replay("ehr dev is stopping".into()));
        };
        j.head = None;
        j.began = None;
        // An anvil of an earlier run may still be writing the state file as it exits.
        port_free(&settings.host, settings.port, Duration::from_secs(30)).await?;
        // No periodic dump while the file is rebuilt.
        let mut saved = self.last.lock().await;
        super::anvil::keep_state_loadable(&self.file)?;
        let io = |context: String| move |source| StackError::Io { context, source };
        // A record cut by a crash mid-append would hide every one appended after it.
        let cut = journal::repair(&self.journal_file)
            .map_err(io(format!("repairing {}", self.journal_file.display())))?;
        if cut > 0 {
            tracing::warn!(
                "cut {cut} bytes of an unfinished record off {}",
                self.journal_file.display()
            );
        }
        let entries = journal::read(&self.journal_file)
            .map_err(io(format!("reading {}", self.journal_file.display())))?;
        if entries.is_empty() {
            // No file: a new chain, from its genesis block. A file that does not parse
            // (anvil will refuse it too): where it ends is unknown, and settling dumps.
            j.head = if self.file.exists() {
                state_head(&self.file)
            } else {
                Some(0)
            };
            return Ok(0);
        }
        tracing::info!(
            transactions = entries.len(),
            "replaying the chain's journal {} onto {}",
            self.journal_file.display(),
            self.file.display()
        );
        let Replayed { head, new, missing } = self.replay(bin, settings, &entries).await?;
        // The journal stays until a copy of the state file holds its blocks (`back_up`): an
        // anvil of the crashed run still dumping as it exits could yet replace the file with
        // one that is then cut, and `.good` would be older than the replay.
        if !missing.is_empty() {
            // Not mined on the replayed chain (a nonce gap, a damaged entry): kept for a human,
            // out of the way of the next replay.
            let aside = self.journal_file.with_extension(format!(
                "journal.unreplayed-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            ));
            std::fs::rename(&self.journal_file, &aside)
                .map_err(io(format!("moving {} aside", self.journal_file.display())))?;
            tracing::error!(
                "{} of {} journaled transactions could not be replayed (the first: {}); the journal is kept as {}",
                missing.len(),
                entries.len(),
                missing[0],
                aside.display()
            );
        }
        j.head = Some(head);
        if let Some(s) = saved.as_mut() {
            *s = Saved::default();
        }
        Ok(new)
    }

    /// Loads the state file into a private anvil, sends it `entries` in order, checks that
    /// each is mined, and writes its state to the file; returns its head block.
    async fn replay(
        &self,
        bin: &Path,
        settings: &AnvilSettings,
        entries: &[Entry],
    ) -> Result<Replayed, StackError> {
        let replay_error = |m: String| StackError::Replay(m);
        let port = super::free_port().map_err(|e| replay_error(format!("no free port: {e}")))?;
        let private = AnvilSettings {
            host: "127.0.0.1".into(),
            port,
            block_time_secs: 0,
            state_interval_secs: 0,
            state_file: self.file.display().to_string(),
            ..settings.clone()
        };
        let mut node = super::anvil::start_anvil_loading(bin, &private).await?;
        let url = private.rpc_url();
        let outcome = async {
            let mut refused = 0;
            for e in entries {
                // The fee market of the replayed blocks is not the original's: a transaction
                // signed when the base fee was low must not be refused for its fee cap.
                let _ = rpc_at(
                    &self.http,
                    &url,
                    "anvil_setNextBlockBaseFeePerGas",
                    serde_json::json!(["0x0"]),
                    10,
                )
                .await;
                let raw = format!("0x{}", alloy::hex::encode(&e.raw));
                let v = rpc_at(
                    &self.http,
                    &url,
                    "eth_sendRawTransaction",
                    serde_json::json!([raw]),
                    10,
                )
                .await
                .map_err(replay_error)?;
                if let Some(err) = v.get("error") {
                    // Mostly "nonce too low": the state file holds it already.
                    tracing::debug!("replaying a journaled transaction: {err}");
                    refused += 1;
                }
            }
            let (mut missing, mut reverted) = (Vec::new(), 0usize);
            let deadline = tokio::time::Instant::now() + REPLAY_WAIT;
            for e in entries {
                let hash = alloy::primitives::keccak256(&e.raw);
                loop {
                    let v = rpc_at(
                        &self.http,
                        &url,
                        "eth_getTransactionReceipt",
                        serde_json::json!([hash]),
                        10,
                    )
                    .await
                    .map_err(replay_error)?;
                    if !v["result"].is_null() {
                        // Mined, but failed this time (it depends on the time, say).
                        reverted += usize::from(v["result"]["status"] == "0x0");
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        missing.push(hash);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            // What replayed is kept even when some did not: each is an acknowledged upload.
            let head = block_number(&self.http, &url).await.map_err(replay_error)?;
            self.dump_at(&url).await.map_err(replay_error)?;
            if reverted > 0 {
                tracing::warn!(reverted, "journaled transactions failed when replayed");
            }
            tracing::info!(
                replayed = entries.len() - refused,
                held_already = refused,
                head,
                "replayed the chain's journal"
            );
            Ok(Replayed {
                head,
                new: entries.len() - refused,
                missing,
            })
        }
        .await;
        node.child.stop(Duration::from_secs(5)).await;
        outcome
    }

    /// Copies the state file aside as `<file>.good` when it parses (`ehr dev` calls this
    /// every few seconds, so the good copy is recent), and drops the journal's entries that
    /// copy holds.
    ///
    /// # Errors
    /// When the copy or the journal cannot be written.
    pub async fn back_up(&self) -> Result<(), String> {
        let file = self.file.clone();
        let head = tokio::task::spawn_blocking(move || super::anvil::back_up_state_head(&file))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let Some(head) = head else {
            return Ok(());
        };
        // Not while an append or a replay is under way, nor while the journal was not
        // replayed (its blocks are not this chain's).
        let guard = self.journaled.lock().await;
        if guard.as_ref().is_none_or(|j| j.head.is_none()) {
            return Ok(());
        }
        let path = self.journal_file.clone();
        let dropped = tokio::task::spawn_blocking(move || journal::retain_after(&path, head))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("pruning {}: {e}", self.journal_file.display()))?;
        drop(guard);
        if dropped > 0 {
            tracing::debug!(
                dropped,
                head,
                "the state file's copy holds the journal up to its head"
            );
        }
        Ok(())
    }

    /// Returns once a dump begun at or after `since` is on disk.
    ///
    /// # Errors
    /// When anvil does not answer, the file cannot be written, or [`Self::stop`] was called.
    pub async fn saved_after(&self, since: Instant) -> Result<(), String> {
        let mut last = self.last.lock().await;
        let Some(saved) = last.as_mut() else {
            return Err("ehr dev is stopping".into());
        };
        if saved.began.is_some_and(|t| t >= since) {
            return Ok(());
        }
        let began = Instant::now();
        let head = self.head().await.ok();
        self.dump().await?;
        *saved = Saved {
            began: Some(began),
            head,
        };
        Ok(())
    }

    /// Dumps the chain unless a dump began at or after `since` or the chain's head has not
    /// moved since the last dump (an idle chain is not dumped again).
    async fn save_if_changed(&self, since: Instant) -> Result<(), String> {
        let mut last = self.last.lock().await;
        let Some(saved) = last.as_mut() else {
            return Err("ehr dev is stopping".into());
        };
        if saved.began.is_some_and(|t| t >= since) {
            return Ok(());
        }
        let head = self.head().await?;
        if saved.head.as_ref() == Some(&head) {
            return Ok(());
        }
        let began = Instant::now();
        self.dump().await?;
        *saved = Saved {
            began: Some(began),
            head: Some(head),
        };
        Ok(())
    }

    /// Ends the saving: waits for a dump in flight, and refuses every later one, so nothing
    /// written after this replaces the dump anvil makes when it exits.
    pub async fn stop(&self) {
        *self.last.lock().await = None;
        *self.journaled.lock().await = None;
    }

    /// Keeps the chain durable at most `every` after it changed: every half `every` it
    /// journals the blocks mined since the last append (cheap: only new blocks are read), and
    /// at most every [`DUMP_EVERY`] (or `every`, when longer) it dumps the whole chain into
    /// the state file, unless the head block is the one of the last dump, so that the journal
    /// and a replay stay short. `ehr dev`'s periodic save, in place of anvil's own
    /// `--state-interval`: the state file then has one writer while anvil runs, and every save
    /// replaces it whole (anvil's own dumps wrote it in place, and a kill mid-write left a
    /// file that does not parse).
    pub fn spawn_saver(self: std::sync::Arc<Self>, every: std::time::Duration) {
        let half = every / 2;
        let dump_every = every.max(DUMP_EVERY);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(half);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut dumped: Option<Instant> = None;
            loop {
                tick.tick().await;
                let now = Instant::now();
                let since = now.checked_sub(half).unwrap_or(now);
                let mut saved = self.journaled_after(since).await;
                if saved.is_ok() && dumped.is_none_or(|t| t.elapsed() >= dump_every) {
                    saved = self.save_if_changed(since).await;
                    dumped = Some(now);
                }
                match saved {
                    Ok(()) => {}
                    Err(e) if self.last.lock().await.is_none() => {
                        tracing::debug!("chain saver stopped: {e}");
                        return;
                    }
                    // anvil restarting: the next tick tries again.
                    Err(e) => tracing::warn!("saving the chain state: {e}"),
                }
            }
        });
    }

    /// The hash of the chain's head block.
    async fn head(&self) -> Result<String, String> {
        let v = self
            .rpc(
                "eth_getBlockByNumber",
                serde_json::json!(["latest", false]),
                5,
            )
            .await?;
        v["result"]["hash"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("eth_getBlockByNumber answered {v}"))
    }

    /// One JSON-RPC call to anvil, its whole answer.
    async fn rpc(
        &self,
        method: &str,
        params: serde_json::Value,
        timeout_secs: u64,
    ) -> Result<serde_json::Value, String> {
        rpc_at(&self.http, &self.rpc_url, method, params, timeout_secs).await
    }

    async fn dump(&self) -> Result<(), String> {
        self.dump_at(&self.rpc_url).await
    }

    /// Dumps the chain of the anvil at `url` into the state file.
    async fn dump_at(&self, url: &str) -> Result<(), String> {
        let v = rpc_at(
            &self.http,
            url,
            "anvil_dumpState",
            serde_json::json!([]),
            30,
        )
        .await?;
        let hex = v["result"]
            .as_str()
            .ok_or_else(|| format!("anvil_dumpState answered {v}"))?
            .trim_start_matches("0x")
            .to_owned();
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || write_state(&hex, &file))
            .await
            .map_err(|e| e.to_string())?
    }
}

/// Decodes a dump (hex of gzip JSON) and replaces `file` with it, whole or not at all.
fn write_state(hex: &str, file: &std::path::Path) -> Result<(), String> {
    // const-hex (alloy's): the dump is megabytes of hex, and `hex`'s decoder was a tenth of
    // the gateway's CPU during uploads.
    let gz = alloy::hex::decode(hex).map_err(|e| format!("anvil_dumpState: not hex: {e}"))?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut json)
        .map_err(|e| format!("anvil_dumpState: not gzip: {e}"))?;
    let tmp = file.with_extension("json.dump");
    let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", tmp.display());
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
    f.write_all(&json).map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("syncing", e))?;
    std::fs::rename(&tmp, file).map_err(|e| format!("replacing {}: {e}", file.display()))?;
    if let Some(dir) = file.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

impl Durability for AnvilState {
    fn settle(&self, since: Instant) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.journaled_after(since))
    }
}

/// Where the journal of the chain kept in `state_file` lives: beside it, named after it
/// (`anvil-state.json.journal`, which `ehr dev --reset` moves aside with the file).
pub fn journal_path(state_file: &Path) -> PathBuf {
    let mut name = state_file.file_name().unwrap_or_default().to_owned();
    name.push(".journal");
    state_file.with_file_name(name)
}

/// The last block of the chain kept in `state_file` on disk: the file's head, or the last
/// journaled block beside it if later (what a replay brings back); `None` when neither has
/// one.
pub fn durable_head(state_file: &Path) -> Option<u64> {
    let journaled = journal::read(&journal_path(state_file))
        .ok()
        .and_then(|e| e.iter().map(|e| e.block).max());
    state_head(state_file).max(journaled)
}

/// The last block of the chain in a state file; `None` when there is none or it does not
/// parse.
fn state_head(file: &Path) -> Option<u64> {
    super::anvil::back_up_state_head_of(file)
}

/// One JSON-RPC call, its whole answer.
async fn rpc_at(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    params: serde_json::Value,
    timeout_secs: u64,
) -> Result<serde_json::Value, String> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    http.post(url)
        .json(&body)
        .timeout(Duration::from_secs(timeout_secs))
        .send()
        .await
        .map_err(|e| format!("{method}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{method}: {e}"))
}

/// Calls in one JSON-RPC batch; their results in the order asked (an error answer fails all).
async fn rpc_batch(
    http: &reqwest::Client,
    url: &str,
    calls: &[(&str, serde_json::Value)],
) -> Result<Vec<serde_json::Value>, String> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let body: Vec<serde_json::Value> = calls
        .iter()
        .enumerate()
        .map(|(id, (method, params))| {
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        })
        .collect();
    let answers: Vec<serde_json::Value> = http
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("{}: {e}", calls[0].0))?
        .json()
        .await
        .map_err(|e| format!("{}: {e}", calls[0].0))?;
    let mut results = vec![None; calls.len()];
    for a in answers {
        let id = a["id"].as_u64().and_then(|i| usize::try_from(i).ok());
        let Some(slot) = id.and_then(|i| results.get_mut(i)) else {
            return Err(format!("{}: an answer with an unknown id: {a}", calls[0].0));
        };
        if let Some(e) = a.get("error") {
            return Err(format!("{}: {e}", calls[0].0));
        }
        *slot = Some(a["result"].clone());
    }
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.ok_or_else(|| format!("{}: no answer to call {i}", calls[i].0)))
        .collect()
}

/// Waits until nothing listens on `host:port` any more (an anvil of an earlier run exiting).
async fn port_free(host: &str, port: u16, wait: Duration) -> Result<(), StackError> {
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::net::TcpStream::connect((host, port)).await.is_ok() {
        if tokio::time::Instant::now() >= deadline {
            return Err(StackError::Replay(format!(
                "something still listens on {host}:{port} after {wait:?} (an anvil of an earlier run?); the journal is kept"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The chain's head block number.
async fn block_number(http: &reqwest::Client, url: &str) -> Result<u64, String> {
    let v = rpc_at(http, url, "eth_blockNumber", serde_json::json!([]), 5).await?;
    v["result"]
        .as_str()
        .and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| format!("eth_blockNumber answered {v}"))
}

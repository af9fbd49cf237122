//! Making the development chain durable before an upload is acknowledged.
//!
//! anvil keeps its chain in memory and writes it to its state file only when told to, so a
//! SIGKILL loses the blocks since the last dump, and with them the anchors of uploads the
//! gateway had already acknowledged (the crash harness, `benches/crash.rs`, lost 56 of 352
//! that way with anvil's own dumps every second). `ehr dev` therefore has the batcher wait,
//! after each anchor, until a state dump begun after the anchor's receipt is on disk: it asks
//! anvil for its state (`anvil_dumpState`, gzip JSON), and writes it to the state file
//! through a temporary file, `fsync` and a rename, so the file is always whole. Uploads
//! waiting at the same time share one dump. The same writer saves the chain every
//! `state_interval_secs` besides ([`AnvilState::spawn_saver`]); anvil itself dumps only on
//! exit.
//!
//! A real chain needs none of this: there, durability is the confirmations the client waits
//! for.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use futures::future::BoxFuture;

use crate::records::Durability;

/// Writes anvil's state to its state file on request; see the module documentation.
#[derive(Debug)]
pub struct AnvilState {
    rpc_url: String,
    file: PathBuf,
    http: reqwest::Client,
    /// The last completed dump; `None` once stopped.
    last: tokio::sync::Mutex<Option<Saved>>,
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
        Self {
            rpc_url: rpc_url.into(),
            file: file.into(),
            http: reqwest::Client::new(),
            last: tokio::sync::Mutex::new(Some(Saved::default())),
        }
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
    }

    /// Saves the chain at most `every` after it changed: every half `every` it dumps, unless
    /// a dump began within that half (one after an anchored batch, or its own) or the head
    /// block is the one of the last dump. `ehr dev`'s periodic save, in place of anvil's own
    /// `--state-interval`: the state file then has one writer while anvil runs, and every save
    /// replaces it whole (anvil's own dumps wrote it in place, and a kill mid-write left a
    /// file that does not parse).
    pub fn spawn_saver(self: std::sync::Arc<Self>, every: std::time::Duration) {
        let half = every / 2;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(half);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = Instant::now();
                let since = now.checked_sub(half).unwrap_or(now);
                match self.save_if_changed(since).await {
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
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        self.http
            .post(&self.rpc_url)
            .json(&body)
            .timeout(std::time::Duration::from_secs(timeout_secs))
            .send()
            .await
            .map_err(|e| format!("{method}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{method}: {e}"))
    }

    async fn dump(&self) -> Result<(), String> {
        let v = self
            .rpc("anvil_dumpState", serde_json::json!([]), 30)
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
        Box::pin(self.saved_after(since))
    }
}

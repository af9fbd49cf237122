//! Starts anvil (Foundry's local EVM node) with the settings of `anvil.toml`.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use super::{ManagedChild, StackError};
use crate::config::AnvilSettings;

/// A running anvil node.
#[derive(Debug)]
pub struct AnvilNode {
    /// The supervised process.
    pub child: ManagedChild,
    /// Its HTTP JSON-RPC endpoint.
    pub rpc_url: String,
    /// The settings it was started with.
    pub settings: AnvilSettings,
}

/// Starts anvil from `bin` and waits until it answers `eth_chainId` with the configured id.
///
/// # Errors
/// When anvil cannot be spawned, exits, or does not answer within 30 s.
pub async fn start_anvil(
    bin: &Path,
    settings: &AnvilSettings,
    echo: bool,
) -> Result<AnvilNode, StackError> {
    let mut cmd = command(bin, settings);
    if !settings.state_file.is_empty() {
        // --state loads the file if present and dumps to it on exit (SIGTERM); the interval
        // dumps it while running too, so even a kill -9 loses at most that many seconds
        // (`ehr dev` passes 0 and saves it itself: `stack::AnvilState`).
        keep_state_loadable(Path::new(&settings.state_file))?;
        cmd.arg("--state").arg(&settings.state_file);
        if settings.state_interval_secs > 0 {
            cmd.arg("--state-interval")
                .arg(settings.state_interval_secs.to_string());
        }
    }
    spawn_healthy("anvil", cmd, settings, echo).await
}

/// Starts anvil from the state file, if there is one, without ever writing it (no dump on
/// exit): a private chain to replay journaled transactions on (`stack::AnvilState::recover`).
pub(super) async fn start_anvil_loading(
    bin: &Path,
    settings: &AnvilSettings,
) -> Result<AnvilNode, StackError> {
    let mut cmd = command(bin, settings);
    if !settings.state_file.is_empty() && Path::new(&settings.state_file).exists() {
        cmd.arg("--load-state").arg(&settings.state_file);
    }
    spawn_healthy("anvil (replaying its journal)", cmd, settings, false).await
}

/// The command line every anvil here shares: address, chain, accounts, mining.
fn command(bin: &Path, settings: &AnvilSettings) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--host")
        .arg(&settings.host)
        .arg("--port")
        .arg(settings.port.to_string())
        .arg("--chain-id")
        .arg(settings.chain_id.to_string())
        .arg("--mnemonic")
        .arg(&settings.mnemonic)
        .arg("--accounts")
        .arg(settings.accounts.to_string())
        .arg("--balance")
        .arg(settings.balance_eth.to_string())
        // No CORS: a web page the developer visits must not be able to call the node's admin
        // RPC (anvil_setBalance, anvil_setCode, ...) from the browser.
        .arg("--no-cors");
    if settings.block_time_secs > 0 {
        cmd.arg("--block-time")
            .arg(settings.block_time_secs.to_string());
    }
    cmd
}

async fn spawn_healthy(
    name: &str,
    cmd: Command,
    settings: &AnvilSettings,
    echo: bool,
) -> Result<AnvilNode, StackError> {
    let mut child = ManagedChild::spawn(name, cmd, echo)?;
    let rpc_url = settings.rpc_url();
    let http = crate::tls::client();
    let expected = settings.chain_id;
    child
        .wait_healthy(Duration::from_secs(30), || {
            let http = http.clone();
            let url = rpc_url.clone();
            async move { chain_id(&http, &url).await == Some(expected) }
        })
        .await?;
    Ok(AnvilNode {
        child,
        rpc_url,
        settings: settings.clone(),
    })
}

/// Before anvil loads its state file: a file that parses is kept as `<file>.good`; one that
/// does not (anvil was killed while writing it) is replaced by the last good copy, so a crash at
/// the wrong moment costs seconds of chain, not the chain.
pub(super) fn keep_state_loadable(file: &Path) -> Result<(), StackError> {
    if !file.exists() {
        return Ok(());
    }
    if back_up_state(file)? {
        return Ok(());
    }
    let good = file.with_extension("json.good");
    if good.exists() {
        tracing::warn!(
            "anvil state {} is damaged (killed while writing?); restoring the last good copy",
            file.display()
        );
        copy_atomically(&good, file)?;
    }
    Ok(())
}

/// Copies the state file to `<file>.good` when it parses (`ehr dev` calls this every few
/// seconds, so the good copy is recent); returns whether it parsed.
///
/// # Errors
/// When the copy cannot be written.
pub fn back_up_state(file: &Path) -> Result<bool, StackError> {
    back_up_state_head(file).map(|h| h.is_some())
}

/// [`back_up_state`], returning the last block of the chain copied (`None`: the file is
/// missing or does not parse, and nothing was copied). The copy is made first and the copy is
/// parsed, so the head returned is the one of the bytes kept, whatever writes the file
/// meanwhile.
///
/// # Errors
/// When the copy cannot be written.
pub(super) fn back_up_state_head(file: &Path) -> Result<Option<u64>, StackError> {
    let io = |context: String| move |source| StackError::Io { context, source };
    if !file.exists() {
        return Ok(None);
    }
    let good = file.with_extension("json.good");
    let tmp = private_tmp(&good);
    std::fs::copy(file, &tmp).map_err(io(format!("copying {}", file.display())))?;
    let Some(head) = back_up_state_head_of(&tmp) else {
        let _ = std::fs::remove_file(&tmp);
        return Ok(None);
    };
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("syncing {}", tmp.display())))?;
    std::fs::rename(&tmp, &good).map_err(io(format!("replacing {}", good.display())))?;
    Ok(Some(head))
}

/// A temporary name beside `to` that no other copy uses at the same time.
fn private_tmp(to: &Path) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = to.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}-{n}.tmp", std::process::id()));
    to.with_file_name(name)
}

/// The last block of the chain in an anvil state file, read through the whole file (so a
/// file that does not parse to its end gives `None`).
pub(super) fn back_up_state_head_of(file: &Path) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Block {
        number: Option<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct Head {
        best_block_number: Option<serde_json::Value>,
        /// What anvil falls back on when the file has no `best_block_number`.
        block: Option<Block>,
    }
    let head: Head = std::fs::File::open(file)
        .map(std::io::BufReader::new)
        .ok()
        .and_then(|r| serde_json::from_reader(r).ok())?;
    let number = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(h) => u64::from_str_radix(h.trim_start_matches("0x"), 16).ok(),
        _ => None,
    };
    head.best_block_number
        .as_ref()
        .and_then(number)
        .or_else(|| head.block.as_ref()?.number.as_ref().and_then(number))
        .or(Some(0))
}

/// `from` to `to` through a temporary file and a rename: `to` is always whole.
fn copy_atomically(from: &Path, to: &Path) -> Result<(), StackError> {
    let io = |context: String| move |source| StackError::Io { context, source };
    let tmp = private_tmp(to);
    std::fs::copy(from, &tmp).map_err(io(format!("copying {}", from.display())))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("syncing {}", tmp.display())))?;
    std::fs::rename(&tmp, to).map_err(io(format!("replacing {}", to.display())))?;
    Ok(())
}

/// `eth_chainId` over plain JSON-RPC, so the health check does not depend on the chain client.
async fn chain_id(http: &reqwest::Client, url: &str) -> Option<u64> {
    let body =
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []});
    let resp: serde_json::Value = http
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let hex = resp.get("result")?.as_str()?.trim_start_matches("0x");
    u64::from_str_radix(hex, 16).ok()
}

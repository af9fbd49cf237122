//! Starts geth in `--dev` mode: a second EVM client, so that the product is tested on more than
//! anvil. geth is built from its Go module by `scripts/setup` (`tools/geth`), like Kubo.
//!
//! What differs from anvil, and how it is handled: geth's dev chain (id 1337) mines a block
//! when a transaction arrives (`--dev.period 0`), with the block's time from the wall clock;
//! it has no `anvil_setBalance`: accounts are funded by transfers from its developer account,
//! which the node holds unlocked ([`GethNode::fund`]); everything else (receipts, gas
//! estimation, `eth_call` at `latest`) is standard JSON-RPC that the client already speaks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, ProviderBuilder};
use tokio::process::Command;

use super::{ManagedChild, StackError};

/// The chain id of geth's dev mode.
pub const GETH_DEV_CHAIN_ID: u64 = 1337;

/// A running geth dev node.
#[derive(Debug)]
pub struct GethNode {
    /// The process.
    pub child: ManagedChild,
    /// Its HTTP JSON-RPC URL.
    pub rpc_url: String,
}

/// Where to run geth.
#[derive(Debug, Clone)]
pub struct GethOptions {
    /// The geth binary.
    pub bin: PathBuf,
    /// Its data folder; `None` keeps the dev chain in memory (tests: nothing on disk, nothing
    /// left behind).
    pub datadir: Option<PathBuf>,
    /// HTTP JSON-RPC port on 127.0.0.1.
    pub http_port: u16,
    /// The engine API port (unused in dev mode, but bound: it must not collide).
    pub authrpc_port: u16,
    /// The p2p port (no peers: `--maxpeers 0 --nodiscover`, but bound).
    pub p2p_port: u16,
}

/// Starts geth `--dev` and waits until it answers with its chain id.
///
/// # Errors
/// When it cannot be spawned or does not answer within 60 s (with its last log lines).
pub async fn start_geth(o: &GethOptions, echo: bool) -> Result<GethNode, StackError> {
    let mut cmd = Command::new(&o.bin);
    cmd.arg("--dev")
        .args(["--dev.period", "0"])
        .args(["--dev.gaslimit", "60000000"])
        // geth stops itself when the disk is nearly full (1 GiB by default): a test machine's
        // disk is not the chain's to guard.
        .args(["--datadir.minfreedisk", "0"])
        .args(["--http", "--http.addr", "127.0.0.1"])
        .args(["--http.port", &o.http_port.to_string()])
        .args(["--http.api", "eth,net,web3,txpool"])
        .args(["--authrpc.port", &o.authrpc_port.to_string()])
        .args(["--port", &o.p2p_port.to_string()])
        .args(["--nodiscover", "--maxpeers", "0", "--ipcdisable"])
        .args(["--verbosity", "2"]);
    if let Some(dir) = &o.datadir {
        cmd.arg("--datadir").arg(dir);
    }
    let mut child = ManagedChild::spawn("geth", cmd, echo)?;
    let rpc_url = format!("http://127.0.0.1:{}", o.http_port);
    let url = rpc_url.clone();
    child
        .wait_healthy(Duration::from_secs(60), move || {
            let url = url.clone();
            async move {
                let Ok(u) = url.parse() else { return false };
                let p = ProviderBuilder::new().connect_client(rpc(u));
                matches!(p.get_chain_id().await, Ok(GETH_DEV_CHAIN_ID))
            }
        })
        .await?;
    Ok(GethNode { child, rpc_url })
}

/// A JSON-RPC client for the dev node at `url`, through the process's one TLS configuration
/// (see `crate::tls`: a default HTTP client reads the system's roots on every build, here on
/// every health poll).
fn rpc(url: reqwest::Url) -> alloy::rpc::client::RpcClient {
    let http = alloy::transports::http::Http::with_client(crate::tls::client(), url);
    alloy::rpc::client::RpcClient::new(http, true)
}

impl GethNode {
    /// Sends `wei` from the node's developer account to `to` (geth signs; its dev account is
    /// unlocked) and waits for the receipt.
    ///
    /// # Errors
    /// Transport errors, or a failed transfer.
    pub async fn fund(&self, to: Address, wei: U256) -> Result<(), String> {
        fund(&self.rpc_url, to, wei).await
    }
}

/// [`GethNode::fund`] by URL (for fixtures that keep only the URL). One transfer at a time
/// in this process: geth numbers a node-signed transaction from the account's pending state,
/// and two sent at once can both get the same nonce ("nonce too low").
///
/// # Errors
/// Transport errors, or a failed transfer.
pub async fn fund(rpc_url: &str, to: Address, wei: U256) -> Result<(), String> {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let url: reqwest::Url = rpc_url.parse().map_err(|e| format!("{e}"))?;
    // Poll for the receipt every 10 ms (alloy's default is 250 ms; a dev block is instant).
    let client = rpc(url).with_poll_interval(Duration::from_millis(10));
    let p = ProviderBuilder::new().connect_client(client);
    let dev = *p
        .get_accounts()
        .await
        .map_err(|e| e.to_string())?
        .first()
        .ok_or("geth has no developer account (not --dev?)")?;
    let tx = alloy::rpc::types::TransactionRequest::default()
        .from(dev)
        .to(to)
        .value(wei);
    let hash = *p
        .send_transaction(tx)
        .await
        .map_err(|e| e.to_string())?
        .tx_hash();
    // Polled by hand: a fresh geth answers "transaction indexing is in progress" for a while
    // instead of the receipt, which alloy's watcher takes for a failure.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let r = loop {
        match p.get_transaction_receipt(hash).await {
            Ok(Some(r)) => break r,
            Ok(None) => {}
            Err(e) if e.to_string().contains("indexing is in progress") => {}
            Err(e) => return Err(e.to_string()),
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("no receipt for {hash} in 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    if !r.status() {
        return Err(format!("funding {to} failed in {}", r.transaction_hash));
    }
    // The receipt is not enough: geth's transaction pool checks a new transaction's balance
    // against its own copy of the state, which it moves to a new block in the background. A
    // transaction `to` sends right after the receipt can meet the copy of the block before,
    // where `to` has nothing ("insufficient funds ... balance 0"). The pool drops the
    // funding transaction in the same step (under its lock) that moves its state, so once
    // the transfer is no longer in the pool, the pool knows `to`'s balance.
    loop {
        let content: serde_json::Value = p
            .raw_request("txpool_contentFrom".into(), (dev,))
            .await
            .map_err(|e| e.to_string())?;
        if !in_pool(&content, hash) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{hash} still in geth's pool 60 s after its receipt"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `txpool_contentFrom`'s answer (`{"pending": {nonce: tx}, "queued": {nonce: tx}}`)
/// holds the transaction `hash`.
fn in_pool(content: &serde_json::Value, hash: alloy::primitives::B256) -> bool {
    let want = hash.to_string();
    ["pending", "queued"].iter().any(|part| {
        content[part].as_object().is_some_and(|txs| {
            txs.values().any(|tx| {
                tx["hash"]
                    .as_str()
                    .is_some_and(|h| h.eq_ignore_ascii_case(&want))
            })
        })
    })
}

/// The geth binary as `scripts/setup` installs it under the project folder `root`.
pub fn geth_in(root: &Path) -> PathBuf {
    root.join(".tools/bin/geth")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_is_found_in_pending_or_queued_in_any_case() {
        let h: alloy::primitives::B256 = [0xab; 32].into();
        let upper = format!("0x{}", "AB".repeat(32));
        let content = serde_json::json!({
            "pending": {"7": {"hash": upper}},
            "queued": {}
        });
        assert!(in_pool(&content, h));
        let queued = serde_json::json!({"pending": {}, "queued": {"9": {"hash": h.to_string()}}});
        assert!(in_pool(&queued, h));
        let other = serde_json::json!({"pending": {"7": {"hash": format!("0x{}", "cd".repeat(32))}}, "queued": {}});
        assert!(!in_pool(&other, h));
        assert!(!in_pool(&serde_json::json!({}), h));
    }
}

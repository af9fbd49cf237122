//! Share nodes as real `ehr share-node` processes, records clients over them, and raw signed
//! requests, for the end-to-end tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use ehr_share::chain::{EhrChain, RecordId};
use ehr_share::ipfs::KuboClient;
use ehr_share::records::{RecordsClient, ShareNodeRef};
use ehr_share::share_node::{ReleaseBody, ShareRelease, domain, sign};
use ehr_share::stack::{ManagedChild, free_port};
use rand_core::RngCore;

/// A running share-node process with its own folder.
pub struct NodeProc {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its data folder.
    pub dir: PathBuf,
    /// The process.
    pub child: ManagedChild,
    _tmp: Option<tempfile::TempDir>,
}

impl NodeProc {
    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The `ehr share-node` command for `dir` and `contract`, plus `extra` flags.
pub fn command(
    dir: &Path,
    contract: Address,
    port: u16,
    extra: &[&str],
) -> tokio::process::Command {
    command_on(&super::rpc(), dir, contract, port, extra)
}

/// [`command`] with the chain at `rpc`.
pub fn command_on(
    rpc: &str,
    dir: &Path,
    contract: Address,
    port: u16,
    extra: &[&str],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(super::ehr_bin());
    cmd.args([
        "share-node",
        "--port",
        &port.to_string(),
        "--rpc-url",
        rpc,
        "--contract",
        &contract.to_string(),
    ])
    .arg("--data-dir")
    .arg(dir)
    .args(extra);
    cmd
}

/// Starts a node on `dir` and waits until it answers `/health`.
pub async fn start_in(dir: &Path, contract: Address, extra: &[&str]) -> (ManagedChild, u16) {
    start_in_on(&super::rpc(), dir, contract, extra).await
}

/// [`start_in`] with the chain at `rpc`.
pub async fn start_in_on(
    rpc: &str,
    dir: &Path,
    contract: Address,
    extra: &[&str],
) -> (ManagedChild, u16) {
    let port = free_port().unwrap();
    let child = spawn_healthy(command_on(rpc, dir, contract, port, extra), port).await;
    (child, port)
}

/// Runs `cmd`, a share node listening on `port`, and waits (30 s at most) until it answers
/// `/health`; its output is kept (`ManagedChild::last_log`).
pub async fn spawn_healthy(cmd: tokio::process::Command, port: u16) -> ManagedChild {
    let mut child = ManagedChild::spawn("share-node", cmd, false).unwrap();
    let url = format!("http://127.0.0.1:{port}/health");
    child
        .wait_healthy(Duration::from_secs(30), || {
            let url = url.clone();
            async move { matches!(reqwest::get(url).await, Ok(r) if r.status().is_success()) }
        })
        .await
        .unwrap_or_else(|e| panic!("share node did not start: {e}"));
    child
}

/// A node in a fresh folder.
pub async fn start(contract: Address, extra: &[&str]) -> NodeProc {
    start_on(&super::rpc(), contract, extra).await
}

/// [`start`] with the chain at `rpc`.
pub async fn start_on(rpc: &str, contract: Address, extra: &[&str]) -> NodeProc {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let (child, port) = start_in_on(rpc, &dir, contract, extra).await;
    NodeProc {
        port,
        dir,
        child,
        _tmp: Some(tmp),
    }
}

/// `n` nodes in fresh folders.
pub async fn start_many(contract: Address, n: usize, extra: &[&str]) -> Vec<NodeProc> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(start(contract, extra).await);
    }
    out
}

/// The nodes as a records client sees them (identity from `/health`).
pub async fn refs(nodes: &[NodeProc]) -> Vec<ShareNodeRef> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(ShareNodeRef::discover(&n.url()).await.unwrap());
    }
    out
}

/// A records client signing as `signer`, 3 of `refs.len()`.
pub fn client(
    office: &EhrChain,
    signer: &PrivateKeySigner,
    refs: &[ShareNodeRef],
) -> RecordsClient {
    ehr_share::records::RecordsConfig::new(refs.to_vec(), 3.min(refs.len() as u8))
        .client(
            super::as_(office, signer),
            signer.clone(),
            KuboClient::new(&super::stack().kubo.api_url),
        )
        .unwrap()
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A release request for `id` signed by `who` for `node`, valid for `valid_secs`.
pub fn release_body(
    chain: &EhrChain,
    node: &ShareNodeRef,
    who: &PrivateKeySigner,
    id: RecordId,
    valid_secs: u64,
) -> ReleaseBody {
    let request = ShareRelease {
        recordId: id.0,
        requester: who.address(),
        accessTx: alloy::primitives::B256::ZERO,
        shareNode: node.address,
        nonce: U256::from(rand_core::OsRng.next_u64()),
        deadline: now() + valid_secs,
    };
    let dom = domain(chain.chain_id(), chain.address(), chain.deployment_id());
    let signature = sign(who, &request, &dom).unwrap();
    ReleaseBody { request, signature }
}

/// Presents a record's root and proof to a node (`POST /shares/{id}/anchor`).
pub async fn present(
    node: &ShareNodeRef,
    id: RecordId,
    root: alloy::primitives::B256,
    proof: &[alloy::primitives::B256],
) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/shares/{id}/anchor", node.url))
        .json(&ehr_share::share_node::AnchorBody {
            root,
            proof: proof.to_vec(),
        })
        .send()
        .await
        .unwrap()
}

/// Sends a release request; returns the response.
pub async fn release(
    chain: &EhrChain,
    node: &ShareNodeRef,
    who: &PrivateKeySigner,
    id: RecordId,
) -> reqwest::Response {
    release_under(chain, node, who, id, alloy::primitives::B256::ZERO).await
}

/// [`release`] naming the access transaction `access_tx` (a provider's).
pub async fn release_under(
    chain: &EhrChain,
    node: &ShareNodeRef,
    who: &PrivateKeySigner,
    id: RecordId,
    access_tx: alloy::primitives::B256,
) -> reqwest::Response {
    let mut body = release_body(chain, node, who, id, 60);
    if access_tx != alloy::primitives::B256::ZERO {
        body.request.accessTx = access_tx;
        let dom = domain(chain.chain_id(), chain.address(), chain.deployment_id());
        body.signature = sign(who, &body.request, &dom).unwrap();
    }
    reqwest::Client::new()
        .post(format!("{}/shares/{id}/release", node.url))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Sends a release request as `who` and, when the node answers 200, opens the share it sealed
/// to `who` for this request: the answer and the share's bytes.
pub async fn release_opened(
    chain: &EhrChain,
    node: &ShareNodeRef,
    who: &PrivateKeySigner,
    id: RecordId,
) -> (u16, Option<(serde_json::Value, Vec<u8>)>) {
    let body = release_body(chain, node, who, id, 60);
    let r = reqwest::Client::new()
        .post(format!("{}/shares/{id}/release", node.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let v: serde_json::Value = r.json().await.unwrap();
    let key = k256::SecretKey::from_slice(who.to_bytes().as_slice()).unwrap();
    let aad = ehr_share::share_node::share_aad(id.0, node.address, body.request.nonce);
    let share = ehr_share::crypto::open_with(
        &key,
        &aad,
        &hex::decode(v["share"].as_str().unwrap()).unwrap(),
    )
    .expect("the share opens for its requester");
    (status, Some((v, share)))
}

/// A node's `/health` document.
pub async fn health(url: &str) -> serde_json::Value {
    reqwest::get(format!("{url}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = std::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway (REST API) for the shared contract with `keyring`'s tokens and records on `refs`
/// (3 of them needed), serving on a free port; returns its URL.
pub async fn gateway_with_records(
    office: &EhrChain,
    keyring: ehr_share::gateway::Keyring,
    refs: Vec<ShareNodeRef>,
) -> String {
    let state = ehr_share::gateway::AppState::new(
        &super::rpc(),
        Some(
            EhrChain::connect(&super::rpc(), None, &office.deployment())
                .await
                .unwrap(),
        ),
        KuboClient::new(&super::stack().kubo.api_url),
        keyring,
    )
    .unwrap()
    .with_records(ehr_share::gateway::RecordsConfig::new(refs, 3));
    super::serve_gateway(state).await
}

/// Runs `ehr share-node` on `dir` for `contract`, expecting it to refuse to start; returns what
/// it printed on stderr.
pub async fn refusal_to_start(dir: &Path, contract: Address) -> String {
    let port = free_port().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        command(dir, contract, port, &[]).output(),
    )
    .await
    .expect("the node exits by itself")
    .unwrap();
    assert!(!out.status.success(), "the node started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A TCP proxy in front of `target` (`host:port`) that keeps every byte passing either way:
/// what a sniffer, or a TLS-terminating proxy, between hosts would see. Returns its address
/// (`host:port`) and the bytes.
pub async fn sniffing_proxy(target: String) -> (String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        kept: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            kept.lock().unwrap().extend_from_slice(&buf[..n]);
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, kept.clone()));
            tokio::spawn(pump(sr, cw, kept.clone()));
        }
    });
    (addr, seen)
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Which requests a frozen [`lagging_rpc`] answers as a replica stuck at its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuck {
    /// Every request: one endpoint that lags.
    All,
    /// All but the head (`eth_blockNumber`, `eth_getBlockByNumber`), which pass through: a
    /// load balancer that sent the head check to an up-to-date replica and the rest to one
    /// that lags.
    AllButHead,
}

/// A JSON-RPC endpoint in front of `target` that can lag: once frozen at a block, it answers
/// as a replica stuck there would (the block number is that block's; "latest" and "pending"
/// mean that block; a call at a later block number fails with geth's "header not found").
/// Calls by hash (transactions, receipts, blocks) pass through unchanged; a batch's calls are
/// each answered so, as if they came alone. Returns its URL and the switch (`Some(block)`: frozen
/// there).
pub async fn lagging_rpc(
    target: String,
    stuck: Stuck,
) -> (String, std::sync::Arc<std::sync::Mutex<Option<u64>>>) {
    use axum::extract::State;
    use serde_json::Value;
    type Shared = (
        String,
        reqwest::Client,
        std::sync::Arc<std::sync::Mutex<Option<u64>>>,
        Stuck,
    );
    fn pin(v: &mut Value, at: &str) {
        match v {
            Value::String(s) if s == "latest" || s == "pending" => *s = at.to_owned(),
            Value::Array(items) => items.iter_mut().for_each(|i| pin(i, at)),
            Value::Object(m) => m.values_mut().for_each(|i| pin(i, at)),
            _ => {}
        }
    }
    /// The block number a call names, when it names one.
    fn named_block(v: &Value) -> Option<u64> {
        let n = match v {
            Value::String(s) => s,
            Value::Object(m) => m.get("blockNumber")?.as_str()?,
            _ => return None,
        };
        u64::from_str_radix(n.strip_prefix("0x")?, 16).ok()
    }
    /// A batch is answered element by element, each as if it came alone.
    async fn forward(
        State(shared): State<Shared>,
        axum::Json(req): axum::Json<Value>,
    ) -> axum::Json<Value> {
        axum::Json(match req {
            Value::Array(items) => Value::Array(
                futures::future::join_all(items.into_iter().map(|r| one(&shared, r))).await,
            ),
            req => one(&shared, req).await,
        })
    }
    async fn one((target, http, frozen, stuck): &Shared, mut req: Value) -> Value {
        let head = matches!(
            req["method"].as_str(),
            Some("eth_blockNumber" | "eth_getBlockByNumber")
        );
        let at = (*frozen.lock().unwrap()).filter(|_| !(head && *stuck == Stuck::AllButHead));
        if let Some(block) = at {
            let later = req["params"]
                .as_array()
                .and_then(|p| p.last())
                .and_then(named_block)
                .is_some_and(|n| n > block);
            if later && req["method"] != "eth_getBlockByNumber" {
                return serde_json::json!({
                    "jsonrpc": "2.0", "id": req["id"].clone(),
                    "error": {"code": -32000, "message": "header not found"}
                });
            }
            let at = format!("{block:#x}");
            if req["method"] == "eth_blockNumber" {
                return serde_json::json!({
                    "jsonrpc": "2.0", "id": req["id"].clone(), "result": at
                });
            }
            pin(&mut req["params"], &at);
        }
        upstream(http, target, &req).await
    }
    let frozen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let app = axum::Router::new()
        .route("/", axum::routing::post(forward))
        .with_state((target, reqwest::Client::new(), frozen.clone(), stuck));
    let url = serve_local(app).await;
    (url, frozen)
}

/// A JSON-RPC endpoint in front of `target` that names block 0 as its `finalized` block, as an
/// L2 does while its L1 has not finalized its data (minutes to hours of its blocks), until
/// the switch is set: then its latest block (everything is final). All else passes through, a
/// batch's calls each as if alone. Returns its URL and the switch.
pub async fn unfinalized_rpc(
    target: String,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use axum::extract::State;
    use serde_json::Value;
    use std::sync::atomic::{AtomicBool, Ordering};
    type Shared = (String, reqwest::Client, std::sync::Arc<AtomicBool>);
    fn rewrite(mut req: Value, all_final: bool) -> Value {
        if req["method"] == "eth_getBlockByNumber" && req["params"][0] == "finalized" {
            let to = if all_final { "latest" } else { "earliest" };
            req["params"][0] = Value::String(to.into());
        }
        req
    }
    async fn forward(
        State((target, http, all_final)): State<Shared>,
        axum::Json(req): axum::Json<Value>,
    ) -> axum::Json<Value> {
        let all = all_final.load(Ordering::SeqCst);
        let req = match req {
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|r| rewrite(r, all)).collect())
            }
            one => rewrite(one, all),
        };
        axum::Json(upstream(&http, &target, &req).await)
    }
    let all_final = std::sync::Arc::new(AtomicBool::new(false));
    let app = axum::Router::new()
        .route("/", axum::routing::post(forward))
        .with_state((target, reqwest::Client::new(), all_final.clone()));
    let url = serve_local(app).await;
    (url, all_final)
}

/// A JSON-RPC endpoint in front of `target` that refuses batch requests, as some hosted
/// endpoints and proxies do: one error object (HTTP 200) where an array was asked for. Single
/// requests pass through. Returns its URL and the count of batches it refused.
pub async fn unbatched_rpc(
    target: String,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::extract::State;
    use serde_json::Value;
    use std::sync::atomic::{AtomicUsize, Ordering};
    type Shared = (String, reqwest::Client, std::sync::Arc<AtomicUsize>);
    async fn forward(
        State((target, http, refused)): State<Shared>,
        axum::Json(req): axum::Json<Value>,
    ) -> axum::Json<Value> {
        if req.is_array() {
            refused.fetch_add(1, Ordering::SeqCst);
            return axum::Json(serde_json::json!({
                "jsonrpc": "2.0", "id": null,
                "error": {"code": -32600, "message": "batch requests are not supported"}
            }));
        }
        axum::Json(upstream(&http, &target, &req).await)
    }
    let refused = std::sync::Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/", axum::routing::post(forward))
        .with_state((target, reqwest::Client::new(), refused.clone()));
    let url = serve_local(app).await;
    (url, refused)
}

/// What [`lossy_rpc`] does with `eth_sendRawTransaction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Sends {
    /// Passes it on and back.
    Pass = 0,
    /// Passes it on (the node takes it) and answers a 502 without a body, as a proxy whose
    /// upstream timed out after forwarding.
    LoseAnswer = 1,
    /// Refuses it as the node would (a JSON-RPC error), without passing it on.
    Refuse = 2,
    /// Passes it on, then answers a JSON-RPC error, as a proxy that knows JSON-RPC and whose
    /// upstream timed out.
    ErrorAfterPassing = 3,
}

/// The switch of a [`lossy_rpc`], and how many `eth_sendRawTransaction` it was asked.
#[derive(Debug, Default)]
pub struct SendSwitch {
    mode: std::sync::atomic::AtomicU8,
    asked: std::sync::atomic::AtomicUsize,
}

impl SendSwitch {
    /// From now on, sends are handled so.
    pub fn set(&self, sends: Sends) {
        self.mode
            .store(sends as u8, std::sync::atomic::Ordering::SeqCst);
    }

    /// `eth_sendRawTransaction` requests so far.
    pub fn asked(&self) -> usize {
        self.asked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A JSON-RPC endpoint in front of `target` that handles `eth_sendRawTransaction` as its switch
/// says ([`Sends`]); everything else passes through. Returns its URL and the switch.
pub async fn lossy_rpc(target: String) -> (String, std::sync::Arc<SendSwitch>) {
    use axum::extract::State;
    use serde_json::Value;
    use std::sync::atomic::Ordering;
    type Shared = (String, reqwest::Client, std::sync::Arc<SendSwitch>);
    async fn forward(
        State((target, http, switch)): State<Shared>,
        axum::Json(req): axum::Json<Value>,
    ) -> Result<axum::Json<Value>, axum::http::StatusCode> {
        let mode = if req["method"] == "eth_sendRawTransaction" {
            switch.asked.fetch_add(1, Ordering::SeqCst);
            switch.mode.load(Ordering::SeqCst)
        } else {
            Sends::Pass as u8
        };
        let error = |message: &str| {
            axum::Json(serde_json::json!({
                "jsonrpc": "2.0", "id": req["id"].clone(),
                "error": {"code": -32000, "message": message}
            }))
        };
        if mode == Sends::Refuse as u8 {
            return Ok(error("insufficient funds for gas * price + value"));
        }
        let answer = upstream(&http, &target, &req).await;
        if mode == Sends::LoseAnswer as u8 {
            return Err(axum::http::StatusCode::BAD_GATEWAY);
        }
        if mode == Sends::ErrorAfterPassing as u8 {
            return Ok(error("upstream request timed out"));
        }
        Ok(axum::Json(answer))
    }
    let switch = std::sync::Arc::new(SendSwitch::default());
    let app = axum::Router::new()
        .route("/", axum::routing::post(forward))
        .with_state((target, reqwest::Client::new(), switch.clone()));
    let url = serve_local(app).await;
    (url, switch)
}

/// `req` sent on to the JSON-RPC endpoint at `target`; its answer, or a JSON-RPC error for a
/// failure on the way (a panic in a test proxy would look like a refusal of the node's).
async fn upstream(
    http: &reqwest::Client,
    target: &str,
    req: &serde_json::Value,
) -> serde_json::Value {
    let answer = async { http.post(target).json(req).send().await?.json().await };
    match answer.await {
        Ok(v) => v,
        Err(e) => serde_json::json!({
            "jsonrpc": "2.0", "id": req["id"].clone(),
            "error": {"code": -32603, "message": e.to_string()}
        }),
    }
}

/// Serves `app` on a free loopback port for the rest of the test; its URL.
async fn serve_local(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

//! The share node's HTTP API.
//!
//! - `GET /health`: node address, chain reachability, share count (no secrets).
//! - `PUT /shares/{record}`: deposit, signed by the uploader (the patient or a granted provider).
//! - `POST /shares/{record}/release`: release, signed by the requester; allowed only when the
//!   contract's `canRead` is true at the latest block for the patient, or for a provider with
//!   the block and time of the `AccessAllowed` event found in the receipt the request names.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256, Signature};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::auth::{ShareDeposit, ShareRelease, domain, signer_of};
use super::store::{Binding, ShareStore, StoreError, StoredShare};
use crate::chain::{DenyReason, EhrChain, PatientAddr, RecordAnchor, RecordId};
use crate::limits::{RateLimiter, retry_after_secs};
use axum::extract::ConnectInfo;

/// Longest validity of a signed request, so captured requests expire quickly.
const MAX_DEADLINE_SECS: u64 = 600;
/// Largest deposit body (a share, commitments for k <= 255 and a sealed block of a few KiB).
const BODY_LIMIT: usize = 64 * 1024;

/// Limits a share node enforces on whoever knocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLimits {
    /// Requests one requester (or uploader) may make at once.
    pub burst: u32,
    /// Sustained requests per minute per requester.
    pub per_minute: u32,
    /// Deposits an uploader may have waiting for their anchor.
    pub deposit_quota: u64,
    /// How long a deposit may wait for its anchor before it is collected.
    pub unanchored_ttl: Duration,
    /// How often the collector runs (unanchored deposits, spent nonces, deployment check).
    pub sweep_every: Duration,
    /// Requests one client address may make at once (a gateway speaks for many users).
    pub client_burst: u32,
    /// Sustained requests per minute per client address.
    pub client_per_minute: u32,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            burst: 120,
            per_minute: 1200,
            deposit_quota: 1000,
            unanchored_ttl: Duration::from_secs(3600),
            sweep_every: Duration::from_secs(10),
            client_burst: 2000,
            client_per_minute: 60_000,
        }
    }
}

/// What a share node needs to run.
pub struct NodeConfig {
    /// The node's identity key (its address is what requests are addressed to).
    pub identity: PrivateKeySigner,
    /// Read-only client of the deployed contract (chain id and deployment id read at connect).
    pub chain: EhrChain,
    /// The durable store, opened for this deployment ([`open_store`]).
    pub store: ShareStore,
    /// Rate limits, quota and collection.
    pub limits: NodeLimits,
    /// Testing only: flip a byte of every released share, to exercise share verification.
    pub danger_corrupt_shares: bool,
}

/// Opens the node's store under `dir/shares.redb`, bound to `chain`'s deployment and encrypted
/// under a key derived from the node's identity key.
///
/// # Errors
/// [`StoreError::BoundElsewhere`] when the folder belongs to another deployment; I/O errors.
pub async fn open_store(
    dir: &std::path::Path,
    identity: &PrivateKeySigner,
    chain: &EhrChain,
) -> Result<ShareStore, StoreError> {
    let key = crate::crypto::derive_key(identity.to_bytes().as_slice(), "share-store");
    let code_hash = chain
        .code_hash()
        .await
        .map_err(|e| StoreError::Db(format!("reading the contract's code: {e}")))?;
    let binding = Binding {
        chain_id: chain.chain_id(),
        contract: chain.address(),
        deployment_id: chain.deployment_id(),
        code_hash,
    };
    ShareStore::open(&dir.join("shares.redb"), key, &binding)
}

struct Node {
    cfg: NodeConfig,
    domain: Eip712Domain,
    limiter: RateLimiter<Address>,
    per_client: RateLimiter<std::net::IpAddr>,

    /// Set when the contract at our address turned out to be another deployment.
    halted: AtomicBool,
}

/// Deposit request body.
#[derive(Debug, Serialize, Deserialize)]
pub struct DepositBody {
    /// The signed message.
    pub deposit: ShareDeposit,
    /// The uploader's signature over it.
    pub signature: Signature,
    /// The share, hex.
    pub share: String,
    /// Feldman commitments, hex.
    pub commitments: String,
    /// The sealed block, hex.
    pub sealed_block: String,
}

impl DepositBody {
    /// The hash the deposit signs over its payload.
    pub fn content_hash(share: &str, commitments: &str, sealed_block: &str) -> B256 {
        let mut h = Sha256::new();
        for part in [share, commitments, sealed_block] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        B256::from(<[u8; 32]>::from(h.finalize()))
    }
}

/// Release request body.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReleaseBody {
    /// The signed message.
    pub request: ShareRelease,
    /// The requester's signature over it.
    pub signature: Signature,
}

/// What a node releases.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReleasedShare {
    /// The share, hex.
    pub share: String,
    /// Feldman commitments, hex.
    pub commitments: String,
    /// The sealed block, hex.
    pub sealed_block: String,
}

/// A refusal: logged with its reason, answered with a status and a message (and a
/// `Retry-After` for 429 and 503).
struct Refusal(StatusCode, String, Option<u64>);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            tracing::error!("share node error: {}", self.1);
        } else {
            tracing::warn!(status = %self.0, "share node refused: {}", self.1);
        }
        let mut r = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if let Some(secs) = self.2 {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}

fn too_many(m: impl Into<String>, wait: Duration) -> Refusal {
    Refusal(
        StatusCode::TOO_MANY_REQUESTS,
        m.into(),
        Some(retry_after_secs(wait)),
    )
}

/// The one answer to a requester who may not read a record, whether it exists or not.
fn not_allowed(requester: Address, id: RecordId) -> Refusal {
    denied(format!(
        "{requester} may not read record {id} now: not the patient, or no granted access transaction under an active grant (or no such record)"
    ))
}

fn bad(m: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, m.into(), None)
}
fn denied(m: impl Into<String>) -> Refusal {
    Refusal(StatusCode::FORBIDDEN, m.into(), None)
}
fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The node's routes (without the background collector; see [`serve`]).
pub fn router(cfg: NodeConfig) -> Router {
    routes(node(cfg))
}

fn node(cfg: NodeConfig) -> Arc<Node> {
    let domain = domain(
        cfg.chain.chain_id(),
        cfg.chain.address(),
        cfg.chain.deployment_id(),
    );
    let limiter = RateLimiter::new(cfg.limits.burst, cfg.limits.per_minute);
    let per_client = RateLimiter::new(cfg.limits.client_burst, cfg.limits.client_per_minute);
    Arc::new(Node {
        cfg,
        domain,
        limiter,
        per_client,

        halted: AtomicBool::new(false),
    })
}

fn routes(node: Arc<Node>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/shares/{record}", put(deposit))
        .route("/shares/{record}/release", post(release))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT))
        .with_state(node)
}

/// Serves the node until `shutdown` resolves, with the collector running beside it.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let node = node(cfg);
    let collector = tokio::spawn(collect(node.clone()));
    let r = axum::serve(
        listener,
        routes(node).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    collector.abort();
    r
}

/// Every `sweep_every`: forget spent nonces, delete deposits never anchored within
/// `unanchored_ttl` (or whose anchor does not match them), and check that the contract at our
/// address is still our deployment.
async fn collect(n: Arc<Node>) {
    let mut tick = tokio::time::interval(n.cfg.limits.sweep_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&n).await {
            tracing::warn!("share node collector: {e}");
        }
    }
}

async fn sweep(n: &Node) -> Result<(), String> {
    let store = &n.cfg.store;
    let t = now();
    let pruned = store.prune_nonces(t).map_err(|e| e.to_string())?;
    // The contract must still be the one the store was opened for: same code (immutables,
    // so the deployment id, included). No code, or other code, halts the node for good.
    match n.cfg.chain.code_hash().await {
        Ok(now_hash) => {
            let first = n.cfg.store.binding().code_hash;
            if now_hash != first {
                if !n.halted.swap(true, Ordering::SeqCst) {
                    tracing::error!(
                        "the contract at {} changed (code {now_hash}, was {first}; the chain was reset or replaced): this node stops serving",
                        n.cfg.chain.address()
                    );
                }
                return Ok(());
            }
        }
        Err(e) => return Err(format!("chain unreachable: {e}")),
    }
    let cutoff = t.saturating_sub(n.cfg.limits.unanchored_ttl.as_secs());
    let mut kept = 0;
    let mut collected = 0;
    for record in store
        .pending_before(cutoff, 512)
        .map_err(|e| e.to_string())?
    {
        let id = RecordId(B256::from(record));
        let anchor = n.cfg.chain.record(id).await.map_err(|e| e.to_string())?;
        let stored = store.get(&record).map_err(|e| e.to_string())?;
        let matches = matches!((&anchor, &stored), (Some(a), Some(s)) if deposit_matches(a, s));
        if matches {
            store.mark_anchored(&record).map_err(|e| e.to_string())?;
            kept += 1;
        } else {
            store
                .remove_unanchored(&record)
                .map_err(|e| e.to_string())?;
            collected += 1;
        }
    }
    if pruned + collected + kept > 0 {
        tracing::info!(
            pruned_nonces = pruned,
            collected_deposits = collected,
            anchored = kept,
            "share node collector"
        );
    }
    Ok(())
}

/// The anchor on chain is the record this deposit was made for: same patient, same author.
fn deposit_matches(anchor: &RecordAnchor, stored: &StoredShare) -> bool {
    anchor.patient.key() == stored.patient && anchor.author == stored.uploader
}

fn halted(n: &Node) -> Result<(), Refusal> {
    if n.halted.load(Ordering::SeqCst) {
        return Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the contract is not the deployment this node was set up for; it serves nothing".into(),
            None,
        ));
    }
    Ok(())
}

fn limit(n: &Node, who: Address) -> Result<(), Refusal> {
    n.limiter
        .check(&who)
        .map_err(|wait| too_many(format!("too many requests from {who}; slow down"), wait))
}

/// Per client address, before any signature is checked: fresh keys cost nothing, addresses do.
fn limit_client(
    n: &Node,
    client: Option<&ConnectInfo<std::net::SocketAddr>>,
) -> Result<(), Refusal> {
    let Some(ConnectInfo(addr)) = client else {
        return Ok(());
    };
    let ip = addr.ip();
    n.per_client
        .check(&ip)
        .map_err(|wait| too_many(format!("too many requests from {ip}; slow down"), wait))
}

async fn health(State(n): State<Arc<Node>>) -> Json<serde_json::Value> {
    let chain_ok = n.cfg.chain.chain_time().await.is_ok();
    let halted = n.halted.load(Ordering::SeqCst);
    Json(json!({
        "status": if chain_ok && !halted { "ok" } else { "degraded" },
        "node": n.cfg.identity.address(),
        "contract": n.cfg.chain.address(),
        "chain_id": n.cfg.chain.chain_id(),
        "deployment_id": n.cfg.chain.deployment_id(),
        "chain_ok": chain_ok,
        "serving": !halted,
        "shares": n.cfg.store.count().ok(),
        "unanchored": n.cfg.store.pending_count().ok(),
        "nonces": n.cfg.store.nonce_count().ok(),
    }))
}

fn record_id(s: &str) -> Result<RecordId, Refusal> {
    s.parse()
        .map_err(|_| bad(format!("{s:?} is not a record id (0x + 64 hex digits)")))
}

fn check_deadline(deadline: u64) -> Result<(), Refusal> {
    let t = now();
    if deadline < t {
        return Err(denied(format!("request expired at {deadline} (now {t})")));
    }
    if deadline > t + MAX_DEADLINE_SECS {
        return Err(bad(format!(
            "deadline more than {MAX_DEADLINE_SECS} s ahead"
        )));
    }
    Ok(())
}

async fn deposit(
    State(n): State<Arc<Node>>,
    client: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    Path(record): Path<String>,
    Json(b): Json<DepositBody>,
) -> Result<Json<serde_json::Value>, Refusal> {
    halted(&n)?;
    limit_client(&n, client.as_deref())?;
    let id = record_id(&record)?;
    let d = &b.deposit;
    if d.recordId != id.0 {
        return Err(bad(
            "record id in the path and in the signed deposit differ",
        ));
    }
    if d.shareNode != n.cfg.identity.address() {
        return Err(denied(format!(
            "deposit is addressed to share node {}, not this one",
            d.shareNode
        )));
    }
    check_deadline(d.deadline)?;
    let signer = signer_of(&b.signature, d.eip712_signing_hash(&n.domain));
    if signer != Some(d.uploader) {
        return Err(denied(format!(
            "deposit signature is not {}'s (forged, or for another deployment)",
            d.uploader
        )));
    }
    limit(&n, d.uploader)?;
    if DepositBody::content_hash(&b.share, &b.commitments, &b.sealed_block) != d.contentHash {
        return Err(bad("content does not match the signed content hash"));
    }
    crate::shamir::Share::from_bytes(&hex::decode(&b.share).map_err(|_| bad("share is not hex"))?)
        .map_err(|e| bad(e.to_string()))?;
    crate::shamir::Commitments::from_bytes(
        &hex::decode(&b.commitments).map_err(|_| bad("commitments are not hex"))?,
    )
    .map_err(|e| bad(e.to_string()))?;
    hex::decode(&b.sealed_block).map_err(|_| bad("sealed block is not hex"))?;
    let patient =
        PatientAddr::from_key(d.patient).ok_or_else(|| bad("patient key 0 is not a patient"))?;
    // The id must be the one the contract will give this uploader's record: then nobody else
    // can ever anchor it, and the release check below ties the share to that anchor.
    if RecordId::derive(d.uploader, patient, d.salt) != id {
        return Err(bad(
            "record id is not recordIdOf(uploader, patient, salt): it must be derived from its uploader",
        ));
    }
    let chain = &n.cfg.chain;
    let account = chain.patient_account(patient).await.map_err(internal)?;
    if account != Some(d.uploader) {
        let (reason, _) = chain
            .check_access(patient, d.uploader)
            .await
            .map_err(internal)?;
        if reason != DenyReason::None {
            return Err(denied(format!(
                "{} may not add records for patient {patient}: {reason}",
                d.uploader
            )));
        }
    }
    if chain.record(id).await.map_err(internal)?.is_some() {
        return Err(Refusal(
            StatusCode::CONFLICT,
            format!("record {id} is already anchored"),
            None,
        ));
    }
    if !n
        .cfg
        .store
        .use_nonce(&d.uploader.0.0, &d.nonce.to_be_bytes(), d.deadline)
        .map_err(internal)?
    {
        return Err(denied("deposit nonce already used (replay)"));
    }
    let stored = StoredShare {
        patient: d.patient,
        uploader: d.uploader,
        salt: d.salt,
        share: b.share,
        commitments: b.commitments,
        sealed_block: b.sealed_block,
        stored_at: now(),
    };
    match n
        .cfg
        .store
        .put(&id.0.0, &stored, n.cfg.limits.deposit_quota)
    {
        Ok(()) => Ok(Json(
            json!({ "stored": id, "node": n.cfg.identity.address() }),
        )),
        Err(StoreError::Conflict(m)) => Err(Refusal(
            StatusCode::CONFLICT,
            format!("a different share is stored for {m}"),
            None,
        )),
        Err(e @ StoreError::QuotaExceeded { .. }) => {
            Err(too_many(e.to_string(), n.cfg.limits.unanchored_ttl))
        }
        Err(e) => Err(internal(e)),
    }
}

async fn release(
    State(n): State<Arc<Node>>,
    client: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    Path(record): Path<String>,
    Json(b): Json<ReleaseBody>,
) -> Result<Json<ReleasedShare>, Refusal> {
    halted(&n)?;
    limit_client(&n, client.as_deref())?;
    let id = record_id(&record)?;
    let r = &b.request;
    if r.recordId != id.0 {
        return Err(bad(
            "record id in the path and in the signed request differ",
        ));
    }
    if r.shareNode != n.cfg.identity.address() {
        return Err(denied(format!(
            "request is addressed to share node {}, not this one",
            r.shareNode
        )));
    }
    check_deadline(r.deadline)?;
    let signer: Option<Address> = signer_of(&b.signature, r.eip712_signing_hash(&n.domain));
    if signer != Some(r.requester) {
        return Err(denied(format!(
            "request signature is not {}'s (forged, or for another chain/contract/deployment)",
            r.requester
        )));
    }
    limit(&n, r.requester)?;
    // The chain decides first, so a requester who may not read learns nothing, not even
    // whether this node holds a share of that id, and costs no write.
    if !n
        .cfg
        .chain
        .can_read(
            r.requester,
            id,
            (r.accessTx != B256::ZERO).then_some(r.accessTx),
        )
        .await
        .map_err(internal)?
    {
        return Err(not_allowed(r.requester, id));
    }
    if !n
        .cfg
        .store
        .use_nonce(&r.requester.0.0, &r.nonce.to_be_bytes(), r.deadline)
        .map_err(internal)?
    {
        return Err(denied("request nonce already used (replay)"));
    }
    let Some(anchor) = n.cfg.chain.record(id).await.map_err(internal)? else {
        return Err(not_allowed(r.requester, id));
    };
    let Some(stored) = n.cfg.store.get(&id.0.0).map_err(internal)? else {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("no share stored for record {id}"),
            None,
        ));
    };
    if !deposit_matches(&anchor, &stored) {
        tracing::error!(record = %id, author = %anchor.author, uploader = %stored.uploader,
            "the anchor on chain is not the record deposited here; refusing");
        return Err(Refusal(
            StatusCode::CONFLICT,
            format!(
                "record {id} on chain was not anchored by the account that deposited this share"
            ),
            None,
        ));
    }
    if n.cfg.store.is_pending(&id.0.0).map_err(internal)? {
        n.cfg.store.mark_anchored(&id.0.0).map_err(internal)?;
    }
    let mut share = stored.share;
    if n.cfg.danger_corrupt_shares {
        // Flip the last hex digit of the value: a plausible but wrong share.
        let last = share.pop().unwrap_or('0');
        share.push(if last == '0' { '1' } else { '0' });
    }
    tracing::info!(record = %id, requester = %r.requester, "share released");
    Ok(Json(ReleasedShare {
        share,
        commitments: stored.commitments,
        sealed_block: stored.sealed_block,
    }))
}

//! The share node's HTTP API.
//!
//! - `GET /health`: node address, chain reachability, share count (no secrets).
//! - `PUT /shares/{record}`: deposit, signed by the uploader (the patient or a granted provider).
//! - `POST /shares/{record}/release`: release, signed by the requester; allowed only when the
//!   contract's `canRead(requester, record)` is true at the latest block.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

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
use super::store::{ShareStore, StoreError, StoredShare};
use crate::chain::{DenyReason, EhrChain, PatientAddr, RecordId};

/// Longest validity of a signed request, so captured requests expire quickly.
const MAX_DEADLINE_SECS: u64 = 600;
/// Largest deposit body (a share, commitments for k <= 255 and a sealed block of a few KiB).
const BODY_LIMIT: usize = 64 * 1024;

/// What a share node needs to run.
pub struct NodeConfig {
    /// The node's identity key (its address is what requests are addressed to).
    pub identity: PrivateKeySigner,
    /// Read-only client of the deployed contract.
    pub chain: EhrChain,
    /// Chain id of the deployment.
    pub chain_id: u64,
    /// The durable store.
    pub store: ShareStore,
    /// Testing only: flip a byte of every released share, to exercise share verification.
    pub danger_corrupt_shares: bool,
}

struct Node {
    cfg: NodeConfig,
    domain: Eip712Domain,
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

/// A refusal: logged with its reason, answered with a status and a message.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            tracing::error!("share node error: {}", self.1);
        } else {
            tracing::warn!(status = %self.0, "share node refused: {}", self.1);
        }
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(m: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, m.into())
}
fn denied(m: impl Into<String>) -> Refusal {
    Refusal(StatusCode::FORBIDDEN, m.into())
}
fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The node's routes.
pub fn router(cfg: NodeConfig) -> Router {
    let domain = domain(cfg.chain_id, cfg.chain.address());
    let node = Arc::new(Node { cfg, domain });
    Router::new()
        .route("/health", get(health))
        .route("/shares/{record}", put(deposit))
        .route("/shares/{record}/release", post(release))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT))
        .with_state(node)
}

/// Serves the node until `shutdown` resolves.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(cfg))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn health(State(n): State<Arc<Node>>) -> Json<serde_json::Value> {
    let chain_ok = n.cfg.chain.chain_time().await.is_ok();
    Json(json!({
        "status": if chain_ok { "ok" } else { "degraded" },
        "node": n.cfg.identity.address(),
        "contract": n.cfg.chain.address(),
        "chain_id": n.cfg.chain_id,
        "chain_ok": chain_ok,
        "shares": n.cfg.store.count().ok(),
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
    Path(record): Path<String>,
    Json(b): Json<DepositBody>,
) -> Result<Json<serde_json::Value>, Refusal> {
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
        return Err(denied(format!("deposit signature is not {}'s", d.uploader)));
    }
    if DepositBody::content_hash(&b.share, &b.commitments, &b.sealed_block) != d.contentHash {
        return Err(bad("content does not match the signed content hash"));
    }
    crate::shamir::Share::from_bytes(&hex::decode(&b.share).map_err(|_| bad("share is not hex"))?)
        .map_err(|e| bad(e.to_string()))?;
    crate::shamir::Commitments::from_bytes(
        &hex::decode(&b.commitments).map_err(|_| bad("commitments are not hex"))?,
    )
    .map_err(|e| bad(e.to_string()))?;
    let patient =
        PatientAddr::from_key(d.patient).ok_or_else(|| bad("patient key 0 is not a patient"))?;
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
        share: b.share,
        commitments: b.commitments,
        sealed_block: b.sealed_block,
        stored_at: now(),
    };
    match n.cfg.store.put(&id.0.0, &stored) {
        Ok(()) => Ok(Json(
            json!({ "stored": id, "node": n.cfg.identity.address() }),
        )),
        Err(StoreError::Conflict(m)) => Err(Refusal(
            StatusCode::CONFLICT,
            format!("a different share is stored for {m}"),
        )),
        Err(e) => Err(internal(e)),
    }
}

async fn release(
    State(n): State<Arc<Node>>,
    Path(record): Path<String>,
    Json(b): Json<ReleaseBody>,
) -> Result<Json<ReleasedShare>, Refusal> {
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
            "request signature is not {}'s (forged, or for another chain/contract)",
            r.requester
        )));
    }
    let Some(stored) = n.cfg.store.get(&id.0.0).map_err(internal)? else {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("no share stored for record {id}"),
        ));
    };
    if !n
        .cfg
        .store
        .use_nonce(&r.requester.0.0, &r.nonce.to_be_bytes(), r.deadline)
        .map_err(internal)?
    {
        return Err(denied("request nonce already used (replay)"));
    }
    if !n
        .cfg
        .chain
        .can_read(r.requester, id)
        .await
        .map_err(internal)?
    {
        return Err(denied(format!(
            "{} may not read record {id} now: not the patient, or no granted access transaction under an active grant",
            r.requester
        )));
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

//! REST endpoints for the contract's operations. Reads are open (they show what the chain
//! shows anyway); writes sign as the account behind the caller's API token.

use alloy::primitives::Address;
use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::chain::{EhrChain, EmergencyReason, PatientAddr, RecordId, TxOutcome};

/// The contract client signing as the caller (from `Authorization: Bearer <token>`).
pub(super) struct Actor(pub(super) EhrChain);

/// The caller's signer, for operations beyond the contract (records).
pub(super) struct ActorKey(
    pub(super) alloy::signers::local::PrivateKeySigner,
    pub(super) EhrChain,
);

impl FromRequestParts<AppState> for ActorKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let signer = signer_for(parts, state).await?;
        let chain = deployed(state)?.with_signer(state.rpc_url(), signer.clone())?;
        Ok(Self(signer, chain))
    }
}

async fn signer_for(
    parts: &Parts,
    state: &AppState,
) -> Result<alloy::signers::local::PrivateKeySigner, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::unauthenticated("missing Authorization: Bearer <api token>".into())
        })?;
    let token = header.strip_prefix("Bearer ").ok_or_else(|| {
        ApiError::unauthenticated("Authorization must be `Bearer <api token>`".into())
    })?;
    state
        .signer_for_token(token.trim())
        .await
        .map_err(|e| {
            tracing::error!("API token check failed: {e}");
            ApiError::unavailable("the token store is not available; try again shortly".into())
        })?
        .ok_or_else(|| ApiError::unauthenticated("unknown, expired or revoked API token".into()))
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let signer = signer_for(parts, state).await?;
        Ok(Self(deployed(state)?.with_signer(state.rpc_url(), signer)?))
    }
}

pub(super) fn deployed(state: &AppState) -> Result<&EhrChain, ApiError> {
    state
        .chain()
        .ok_or_else(|| ApiError::unavailable("no contract deployed yet (run `ehr deploy`)".into()))
}

pub(super) fn patient(s: &str) -> Result<PatientAddr, ApiError> {
    s.parse()
        .map_err(|e: crate::chain::InvalidPatientAddr| ApiError::bad_request(e.to_string()))
}

fn address(s: &str) -> Result<Address, ApiError> {
    s.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{s:?} is not an Ethereum address (0x + 40 hex digits)"
        ))
    })
}

fn tx(o: TxOutcome) -> Json<Value> {
    Json(json!({ "tx_hash": o.tx_hash, "block": o.block, "gas_used": o.gas_used }))
}

/// Paging of list endpoints.
#[derive(Deserialize)]
pub(super) struct Page {
    #[serde(default)]
    offset: u64,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_limit() -> u64 {
    50
}

impl Page {
    fn checked(&self) -> Result<(u64, u64), ApiError> {
        if self.limit == 0 || self.limit > 200 {
            return Err(ApiError::bad_request(
                "limit must be between 1 and 200".into(),
            ));
        }
        Ok((self.offset, self.limit))
    }
}

pub(super) async fn me(
    State(state): State<AppState>,
    Actor(chain): Actor,
) -> Result<Json<Value>, ApiError> {
    let me = chain.from();
    let patient = deployed(&state)?.patient_of(me).await?;
    let (status, denied) = chain.provider_status(me).await?;
    let manager = chain.manager().await? == me;
    Ok(Json(
        json!({"account": me, "patient": patient, "provider_status": status, "denied_count": denied, "records_office": manager}),
    ))
}

pub(super) async fn provider_status(
    State(state): State<AppState>,
    Path(a): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = address(&a)?;
    let (status, denied) = deployed(&state)?.provider_status(a).await?;
    Ok(Json(
        json!({"provider": a, "status": status, "denied_count": denied}),
    ))
}

pub(super) async fn grants(
    State(state): State<AppState>,
    Path(p): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let (o, l) = page.checked()?;
    let g = deployed(&state)?.grants(patient(&p)?, o, l).await?;
    Ok(Json(json!({ "grants": g })))
}

pub(super) async fn requests(
    State(state): State<AppState>,
    Path(p): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let (o, l) = page.checked()?;
    let r = deployed(&state)?
        .pending_requests(patient(&p)?, o, l)
        .await?;
    Ok(Json(json!({ "requests": r })))
}

pub(super) async fn records(
    State(state): State<AppState>,
    Path(p): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let (o, l) = page.checked()?;
    let cfg = state
        .records()
        .ok_or_else(|| ApiError::unavailable("no share nodes configured on this gateway".into()))?;
    let dir = cfg.directory(deployed(&state)?.clone(), state.http().clone());
    let all = dir.list(patient(&p)?).await?;
    let out: Vec<Value> = all
        .iter()
        .skip(usize::try_from(o).unwrap_or(usize::MAX))
        .take(usize::try_from(l).unwrap_or(usize::MAX))
        .map(|r| {
            json!({
                "id": r.record, "patient": r.proof.patient, "author": r.proof.author,
                "digest": r.proof.digest, "root": r.proof.root, "proof": r.proof.proof,
                "stored_at": r.stored_at,
            })
        })
        .collect();
    Ok(Json(json!({ "records": out, "total": all.len() })))
}

pub(super) async fn patient_audit(
    State(state): State<AppState>,
    Path(p): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let (o, l) = page.checked()?;
    let e = deployed(&state)?
        .audit_for_patient(patient(&p)?, o as usize, l as usize)
        .await?;
    Ok(Json(json!({ "events": e })))
}

pub(super) async fn all_audit(
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let (o, l) = page.checked()?;
    let e = deployed(&state)?.audit_all(o as usize, l as usize).await?;
    Ok(Json(json!({ "events": e })))
}

/// Body of `POST /api/patients`: the caller claims `addr` with the office's voucher.
#[derive(Deserialize)]
pub(super) struct RegisterPatient {
    addr: String,
    deadline: u64,
    voucher: alloy::primitives::Bytes,
}

pub(super) async fn register_patient(
    Actor(c): Actor,
    Json(b): Json<RegisterPatient>,
) -> Result<Json<Value>, ApiError> {
    Ok(tx(c
        .register_patient(patient(&b.addr)?, b.deadline, b.voucher)
        .await?))
}

/// Body of `POST /api/office/patients`: the records office issues `addr` to `account`.
#[derive(Deserialize)]
pub(super) struct IssuePatient {
    addr: String,
    account: Address,
}

pub(super) async fn issue_patient(
    Actor(c): Actor,
    Json(b): Json<IssuePatient>,
) -> Result<Json<Value>, ApiError> {
    Ok(tx(c.issue_patient(patient(&b.addr)?, b.account).await?))
}

pub(super) async fn register_provider(Actor(c): Actor) -> Result<Json<Value>, ApiError> {
    Ok(tx(c.register_provider().await?))
}

pub(super) async fn verify_provider(
    Actor(c): Actor,
    Path(a): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(tx(c.verify_provider(address(&a)?).await?))
}

pub(super) async fn suspend_provider(
    Actor(c): Actor,
    Path(a): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(tx(c.suspend_provider(address(&a)?).await?))
}

/// Body of `POST /api/grants` and of approvals.
#[derive(Deserialize)]
pub(super) struct GrantBody {
    #[serde(default)]
    provider: Option<String>,
    /// Unix seconds; absent = open-ended.
    #[serde(default)]
    expires_at: Option<u64>,
}

pub(super) async fn grant(
    Actor(c): Actor,
    Json(b): Json<GrantBody>,
) -> Result<Json<Value>, ApiError> {
    let p = b
        .provider
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("`provider` is required".into()))?;
    Ok(tx(c.grant(address(p)?, b.expires_at).await?))
}

pub(super) async fn revoke(
    Actor(c): Actor,
    Path(p): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(tx(c.revoke(address(&p)?).await?))
}

/// A body naming a patient.
#[derive(Deserialize)]
pub(super) struct AddrBody {
    addr: String,
}

pub(super) async fn request_access(
    Actor(c): Actor,
    Json(b): Json<AddrBody>,
) -> Result<Json<Value>, ApiError> {
    Ok(tx(c.request_access(patient(&b.addr)?).await?))
}

pub(super) async fn approve(
    Actor(c): Actor,
    Path(p): Path<String>,
    body: Option<Json<GrantBody>>,
) -> Result<Json<Value>, ApiError> {
    let expires = body.and_then(|Json(b)| b.expires_at);
    Ok(tx(c.approve_request(address(&p)?, expires).await?))
}

pub(super) async fn decline(
    Actor(c): Actor,
    Path(p): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(tx(c.decline_request(address(&p)?).await?))
}

/// Body of `POST /api/access`.
#[derive(Deserialize)]
pub(super) struct AccessBody {
    /// The patient whose records are read (`aid-pid`).
    patient: String,
    records: Vec<String>,
}

pub(super) async fn access(
    Actor(c): Actor,
    Json(b): Json<AccessBody>,
) -> Result<Json<Value>, ApiError> {
    let ids = b
        .records
        .iter()
        .map(|s| {
            s.parse::<RecordId>().map_err(|_| {
                ApiError::bad_request(format!("{s:?} is not a record id (0x + 64 hex digits)"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let o = c.access(patient(&b.patient)?, &ids).await?;
    Ok(Json(json!({
        "tx_hash": o.tx.tx_hash, "gas_used": o.tx.gas_used,
        "allowed": o.allowed,
        "denied": o.denied.iter().map(|(r, why)| json!({"record": r, "reason": why})).collect::<Vec<_>>(),
    })))
}

/// Body of `POST /api/break-glass`.
#[derive(Deserialize)]
pub(super) struct BreakGlassBody {
    addr: String,
    /// HL7 v3 PurposeOfUse code (ETREAT, BTG, ERTREAT, DISASTER, THREAT) or its number.
    reason: String,
}

pub(super) async fn break_glass(
    Actor(c): Actor,
    Json(b): Json<BreakGlassBody>,
) -> Result<Json<Value>, ApiError> {
    let reason: EmergencyReason = b
        .reason
        .parse()
        .map_err(|e: crate::chain::UnknownEmergencyReason| ApiError::bad_request(e.to_string()))?;
    Ok(tx(c.break_glass(patient(&b.addr)?, reason).await?))
}

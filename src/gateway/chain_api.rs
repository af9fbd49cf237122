//! REST endpoints for the contract's operations. Reads are open (they show what the chain
//! shows anyway); writes sign as the account behind the caller's API token.

use super::openapi::ErrorBody;
use alloy::primitives::Address;
use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::chain::{EhrChain, EmergencyReason, PatientAddr, RecordId, TxOutcome};
use crate::records::ListCursor;
use crate::share_node::PAGE;

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
        let chain = signing(state, &signer)?;
        Ok(Self(signer, chain))
    }
}

/// The caller's signer as a middleware resolved it already (`gateway::idempotency`).
#[derive(Clone)]
pub(super) struct Caller(pub(super) alloy::signers::local::PrivateKeySigner);

pub(super) async fn signer_for(
    parts: &Parts,
    state: &AppState,
) -> Result<alloy::signers::local::PrivateKeySigner, ApiError> {
    if let Some(Caller(s)) = parts.extensions.get::<Caller>() {
        return Ok(s.clone());
    }
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
        let chain = signing(state, &signer)?;
        // A request the caller named (`Idempotency-Key`): its write is the ticket's.
        Ok(Self(match parts.extensions.get::<crate::chain::Ticket>() {
            Some(t) => chain.with_ticket(t.clone()),
            None => chain,
        }))
    }
}

/// The deployed contract's client signing as `signer` (kept per account by the state).
fn signing(
    state: &AppState,
    signer: &alloy::signers::local::PrivateKeySigner,
) -> Result<EhrChain, ApiError> {
    state
        .chain_as(signer)?
        .map_or_else(|| deployed(state).cloned(), Ok)
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

/// A mined transaction.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct TxReceipt {
    /// Its hash.
    #[schema(value_type = String)]
    tx_hash: alloy::primitives::B256,
    /// Its block.
    block: u64,
    /// Gas it used.
    gas_used: u64,
}

/// What every contract write of the API answers (one list for the OpenAPI document).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // A description for the document, never built.
enum WriteResponses {
    #[response(status = 200, description = "mined")]
    Mined(TxReceipt),
    #[response(status = 400, description = "bad input")]
    BadInput(ErrorBody),
    #[response(status = 401, description = "no or unknown API token")]
    Unauthenticated(ErrorBody),
    #[response(status = 403, description = "not allowed")]
    Denied(ErrorBody),
    #[response(status = 409, description = "the contract refused")]
    Refused(ErrorBody),
    #[response(status = 503, description = "a backing service is unavailable")]
    Unavailable(ErrorBody),
}

fn tx(o: TxOutcome) -> Json<TxReceipt> {
    Json(TxReceipt {
        tx_hash: o.tx_hash,
        block: o.block,
        gas_used: o.gas_used,
    })
}

/// Paging of list endpoints.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Page {
    /// Events or items to skip.
    #[serde(default)]
    offset: u64,
    /// How many (1 to 200; 50 by default).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 200)]
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

#[utoipa::path(
    get,
    path = "/api/me",
    tag = "accounts",
    summary = "The caller's account and roles",
    security(("bearer" = [])),
    responses((status = 200, description = "account, patient address, provider status, records office", content_type = "application/json"), (status = 401, description = "no or unknown API token", body = ErrorBody), (status = 503, description = "a backing service is unavailable", body = ErrorBody))
)]
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

#[utoipa::path(
    get,
    path = "/api/providers/{address}",
    tag = "providers",
    summary = "A provider's status",
    params(("address" = String, Path, description = "provider account (0x + 40 hex digits)")),
    responses((status = 200, description = "status and denied attempts", content_type = "application/json"), (status = 400, description = "bad input", body = ErrorBody), (status = 503, description = "a backing service is unavailable", body = ErrorBody))
)]
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

#[utoipa::path(
    get,
    path = "/api/patients/{addr}/grants",
    tag = "patients",
    summary = "List a patient's grants",
    params(("addr" = String, Path, description = "patient address AID-PID", example = "1-1001"), Page),
    responses((status = 200, description = "grants", content_type = "application/json"), (status = 400, description = "bad input", body = ErrorBody), (status = 503, description = "a backing service is unavailable", body = ErrorBody))
)]
pub(super) async fn grants(
    State(state): State<AppState>,
    Path(p): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let (o, l) = page.checked()?;
    let g = deployed(&state)?.grants(patient(&p)?, o, l).await?;
    Ok(Json(json!({ "grants": g })))
}

#[utoipa::path(
    get,
    path = "/api/patients/{addr}/requests",
    tag = "patients",
    summary = "List a patient's pending requests",
    params(("addr" = String, Path, description = "patient address AID-PID", example = "1-1001"), Page),
    responses((status = 200, description = "pending requests", content_type = "application/json"), (status = 400, description = "bad input", body = ErrorBody), (status = 503, description = "a backing service is unavailable", body = ErrorBody))
)]
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

/// Paging of a patient's records: newest first, by cursor.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RecordsPaging {
    /// Where to go on: the `next` of the page before (absent: the newest records).
    before: Option<String>,
    /// Records to skip after `before` (at most 2,000; each skipped page is read from every
    /// share node: page with `before` instead).
    #[serde(default)]
    offset: u64,
    /// How many (1 to 200; 50 by default).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 200)]
    limit: u64,
}

/// How many records `offset` may skip (each skipped page is read from every node).
const MAX_RECORDS_OFFSET: u64 = 2_000;
/// Pages read for one answer at most (short pages, from a lying node, end it sooner).
const MAX_SKIPPED_PAGES: usize = 16;

#[utoipa::path(
    get,
    path = "/api/patients/{addr}/records",
    tag = "records",
    summary = "List a patient's anchored records, newest first (from the share nodes; each with its proof to an anchored root); page on with `before` = the answer's `next`",
    params(("addr" = String, Path, description = "patient address AID-PID", example = "1-1001"), RecordsPaging),
    responses((status = 200, description = "records, about how many there are, and the cursor of the next page (null after the last)", content_type = "application/json"), (status = 400, description = "bad input", body = ErrorBody), (status = 503, description = "a backing service is unavailable", body = ErrorBody))
)]
pub(super) async fn records(
    State(state): State<AppState>,
    Path(p): Path<String>,
    Query(q): Query<RecordsPaging>,
) -> Result<Json<Value>, ApiError> {
    let (offset, limit) = Page {
        offset: q.offset,
        limit: q.limit,
    }
    .checked()?;
    if offset > MAX_RECORDS_OFFSET {
        return Err(ApiError::bad_request(format!(
            "offset must be at most {MAX_RECORDS_OFFSET}; page with before=<next> instead"
        )));
    }
    let mut before = q
        .before
        .as_deref()
        .map(str::parse::<ListCursor>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let cfg = state
        .records()
        .ok_or_else(|| ApiError::unavailable("no share nodes configured on this gateway".into()))?;
    let dir = cfg.directory(deployed(&state)?.clone(), state.http().clone());
    let patient = patient(&p)?;
    // Whole pages skipped, then the page asked for, cut to `limit` (its `next` then the last
    // record kept).
    let mut skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let limit = usize::try_from(limit).unwrap_or(1);
    let mut pages = 0;
    let page = loop {
        let mut page = dir.page(patient, before, (skip + limit).min(PAGE)).await?;
        pages += 1;
        if skip >= page.records.len() && page.next.is_some() && !page.records.is_empty() {
            if pages >= MAX_SKIPPED_PAGES {
                return Err(ApiError::unavailable(format!(
                    "offset {offset} took more than {MAX_SKIPPED_PAGES} pages to skip; page with before=<next> instead"
                )));
            }
            skip -= page.records.len();
            before = page.next;
            continue;
        }
        page.records.drain(..skip.min(page.records.len()));
        if page.records.len() > limit {
            page.records.truncate(limit);
            page.next = page.records.last().map(ListCursor::of);
        }
        break page;
    };
    let out: Vec<Value> = page
        .records
        .iter()
        .map(|r| {
            json!({
                "id": r.record, "patient": r.proof.patient, "author": r.proof.author,
                "digest": r.proof.digest, "root": r.proof.root, "proof": r.proof.proof,
                "stored_at": r.stored_at,
            })
        })
        .collect();
    Ok(Json(json!({
        "records": out,
        "total": page.total,
        "next": page.next.map(|c| c.to_string()),
    })))
}

#[utoipa::path(
    get,
    path = "/api/patients/{addr}/audit",
    tag = "audit",
    summary = "List a patient's audit trail, newest first",
    params(("addr" = String, Path, description = "patient address AID-PID", example = "1-1001"), Page),
    responses((status = 200, description = "events", content_type = "application/json"), (status = 400, description = "bad input", body = ErrorBody), (status = 503, description = "a backing service is unavailable", body = ErrorBody))
)]
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

#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "audit",
    summary = "List every contract event, newest first",
    params(Page),
    responses((status = 200, description = "events", content_type = "application/json"), (status = 400, description = "bad input", body = ErrorBody), (status = 503, description = "a backing service is unavailable", body = ErrorBody))
)]
pub(super) async fn all_audit(
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let (o, l) = page.checked()?;
    let e = deployed(&state)?.audit_all(o as usize, l as usize).await?;
    Ok(Json(json!({ "events": e })))
}

/// Body of `POST /api/patients`: the caller claims `addr` with the office's voucher.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct RegisterPatient {
    addr: String,
    deadline: u64,
    /// The records office's EIP-712 voucher signature, 0x + 130 hex digits.
    #[schema(value_type = String, pattern = "^0x[0-9a-fA-F]{130}$")]
    voucher: alloy::primitives::Bytes,
}

#[utoipa::path(
    post,
    path = "/api/patients",
    tag = "accounts",
    summary = "Register the caller as a patient with the records office's voucher",
    request_body = RegisterPatient,
    security(("bearer" = [])),
    responses(WriteResponses)
)]
pub(super) async fn register_patient(
    Actor(c): Actor,
    Json(b): Json<RegisterPatient>,
) -> Result<Json<TxReceipt>, ApiError> {
    Ok(tx(c
        .register_patient(patient(&b.addr)?, b.deadline, b.voucher)
        .await?))
}

/// Body of `POST /api/office/patients`: the records office issues `addr` to `account`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct IssuePatient {
    addr: String,
    #[schema(value_type = String, pattern = "^0x[0-9a-fA-F]{40}$")]
    account: Address,
}

#[utoipa::path(
    post,
    path = "/api/office/patients",
    tag = "office",
    summary = "Records office: issue a patient address to an account",
    request_body = IssuePatient,
    security(("bearer" = [])),
    responses(WriteResponses)
)]
pub(super) async fn issue_patient(
    Actor(c): Actor,
    Json(b): Json<IssuePatient>,
) -> Result<Json<TxReceipt>, ApiError> {
    Ok(tx(c.issue_patient(patient(&b.addr)?, b.account).await?))
}

#[utoipa::path(
    post,
    path = "/api/providers",
    tag = "providers",
    summary = "Register the caller as a provider",
    security(("bearer" = [])),
    responses(WriteResponses)
)]
pub(super) async fn register_provider(Actor(c): Actor) -> Result<Json<TxReceipt>, ApiError> {
    Ok(tx(c.register_provider().await?))
}

#[utoipa::path(
    post,
    path = "/api/providers/{address}/verify",
    tag = "office",
    summary = "Records office: verify a provider",
    params(("address" = String, Path, description = "provider account (0x + 40 hex digits)")),
    security(("bearer" = [])),
    responses(WriteResponses)
)]
pub(super) async fn verify_provider(
    Actor(c): Actor,
    Path(a): Path<String>,
) -> Result<Json<TxReceipt>, ApiError> {
    Ok(tx(c.verify_provider(address(&a)?).await?))
}

#[utoipa::path(
    post,
    path = "/api/providers/{address}/suspend",
    tag = "office",
    summary = "Records office: suspend a provider",
    params(("address" = String, Path, description = "provider account (0x + 40 hex digits)")),
    security(("bearer" = [])),
    responses(WriteResponses)
)]
pub(super) async fn suspend_provider(
    Actor(c): Actor,
    Path(a): Path<String>,
) -> Result<Json<TxReceipt>, ApiError> {
    Ok(tx(c.suspend_provider(address(&a)?).await?))
}

/// Body of `POST /api/grants` and of approvals.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct GrantBody {
    #[serde(default)]
    provider: Option<String>,
    /// Unix seconds; absent = open-ended.
    #[serde(default)]
    expires_at: Option<u64>,
}

#[utoipa::path(
    post,
    path = "/api/grants",
    tag = "patients",
    summary = "Patient: grant a provider",
    request_body = GrantBody,
    security(("bearer" = [])),
    responses(WriteResponses)
)]
pub(super) async fn grant(
    Actor(c): Actor,
    Json(b): Json<GrantBody>,
) -> Result<Json<TxReceipt>, ApiError> {
    let p = b
        .provider
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("`provider` is required".into()))?;
    Ok(tx(c.grant(address(p)?, b.expires_at).await?))
}

#[utoipa::path(
    post,
    path = "/api/grants/{provider}/revoke",
    tag = "patients",
    summary = "Patient: revoke a provider",
    params(("provider" = String, Path, description = "provider account (0x + 40 hex digits)")),
    security(("bearer" = [])),
    responses(WriteResponses)
)]
pub(super) async fn revoke(
    Actor(c): Actor,
    Path(p): Path<String>,
) -> Result<Json<TxReceipt>, ApiError> {
    Ok(tx(c.revoke(address(&p)?).await?))
}

/// A body naming a patient.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct AddrBody {
    addr: String,
}

#[utoipa::path(
    post,
    path = "/api/requests",
    tag = "providers",
    summary = "Provider: request access to a patient",
    request_body = AddrBody,
    security(("bearer" = [])),
    responses(WriteResponses)
)]
pub(super) async fn request_access(
    Actor(c): Actor,
    Json(b): Json<AddrBody>,
) -> Result<Json<TxReceipt>, ApiError> {
    Ok(tx(c.request_access(patient(&b.addr)?).await?))
}

#[utoipa::path(
    post,
    path = "/api/requests/{provider}/approve",
    tag = "patients",
    summary = "Patient: approve a request (optionally with an expiry)",
    params(("provider" = String, Path, description = "provider account (0x + 40 hex digits)")),
    request_body = Option<GrantBody>,
    security(("bearer" = [])),
    responses(WriteResponses)
)]
pub(super) async fn approve(
    Actor(c): Actor,
    Path(p): Path<String>,
    body: Option<Json<GrantBody>>,
) -> Result<Json<TxReceipt>, ApiError> {
    let expires = body.and_then(|Json(b)| b.expires_at);
    Ok(tx(c.approve_request(address(&p)?, expires).await?))
}

#[utoipa::path(
    post,
    path = "/api/requests/{provider}/decline",
    tag = "patients",
    summary = "Patient: decline a request",
    params(("provider" = String, Path, description = "provider account (0x + 40 hex digits)")),
    security(("bearer" = [])),
    responses(WriteResponses)
)]
pub(super) async fn decline(
    Actor(c): Actor,
    Path(p): Path<String>,
) -> Result<Json<TxReceipt>, ApiError> {
    Ok(tx(c.decline_request(address(&p)?).await?))
}

/// Body of `POST /api/access`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct AccessBody {
    /// The patient whose records are read (`aid-pid`).
    patient: String,
    records: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/api/access",
    tag = "providers",
    summary = "Provider: access transaction for records of one patient (denials are logged, not errors)",
    request_body = AccessBody,
    security(("bearer" = [])),
    responses((status = 200, description = "mined: allowed and denied records", content_type = "application/json"), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or unknown API token", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 409, description = "the contract refused", body = ErrorBody), (status = 503, description = "a backing service is unavailable", body = ErrorBody))
)]
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
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct BreakGlassBody {
    addr: String,
    /// HL7 v3 PurposeOfUse code (ETREAT, BTG, ERTREAT, DISASTER, THREAT) or its number.
    reason: String,
}

#[utoipa::path(
    post,
    path = "/api/break-glass",
    tag = "providers",
    summary = "Provider: open emergency access (HL7 PurposeOfUse reason; at most 3 per patient per 24 h; reading only)",
    request_body = BreakGlassBody,
    security(("bearer" = [])),
    responses(WriteResponses)
)]
pub(super) async fn break_glass(
    Actor(c): Actor,
    Json(b): Json<BreakGlassBody>,
) -> Result<Json<TxReceipt>, ApiError> {
    let reason: EmergencyReason = b
        .reason
        .parse()
        .map_err(|e: crate::chain::UnknownEmergencyReason| ApiError::bad_request(e.to_string()))?;
    Ok(tx(c.break_glass(patient(&b.addr)?, reason).await?))
}

//! The patient's room: their records, who may see them, pending requests, open emergencies,
//! and their audit trail (on the page, and as FHIR or CSV downloads, which are recorded).

use std::collections::HashSet;

use alloy::primitives::Address;
use askama::Template;
use axum::extract::{Multipart, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::WebState;
use super::error::{Result, WebError, page};
use super::export::{Observer, csv, fhir_bundle};
use super::extract::{CsrfForm, PatientSession};
use super::listing::{RecordsView, records};
use super::upload;
use super::view::{
    AUDIT_PAGE, AuditView, Flash, Layout, Notice, ProviderName, account_addr, audit_query, back,
    time, words,
};
use super::vitals::{Span, VitalsView};
use crate::chain::{AuditFilter, AuditKind, DeviceKind, EhrChain, GrantState, PatientAddr};
use crate::db::ExportRow;
use crate::kind::ErrorKind;

/// An open emergency access, with the button that ends it.
struct Emergency {
    provider: Address,
    reason: String,
    until: String,
    overrides_revoke: bool,
}

/// A grant row.
struct GrantRow {
    provider: ProviderName,
    state: GrantState,
    expires: String,
    active: bool,
}

/// A pending request.
struct RequestRow {
    provider: ProviderName,
    asked: String,
}

/// A recorded download of an audit trail.
pub(super) struct ExportView {
    pub(super) when: String,
    pub(super) patient: String,
    pub(super) format: String,
    pub(super) events: u64,
    pub(super) by: String,
}

impl ExportView {
    pub(super) fn of(r: &ExportRow) -> Self {
        Self {
            when: time(r.exported_at),
            patient: format!("{}-{}", r.patient_aid, r.patient_pid),
            format: match r.format.as_str() {
                "fhir" => "FHIR R4 AuditEvent bundle".to_owned(),
                "csv" => "CSV".to_owned(),
                other => other.to_owned(),
            },
            events: r.events,
            by: r.username.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "patient.html")]
struct PatientPage {
    layout: Layout,
    notice: Option<Flash>,
    csrf: String,
    addr: PatientAddr,
    emergencies: Vec<Emergency>,
    records: RecordsView,
    grants: Vec<GrantRow>,
    requests: Vec<RequestRow>,
    audit: AuditView,
    exports: Vec<ExportView>,
    devices: Vec<DeviceRow>,
    kinds: Vec<&'static str>,
    vitals_span: &'static str,
    vitals: Option<VitalsView>,
}

/// A device of the patient.
struct DeviceRow {
    address: Address,
    kind: String,
    label: String,
    added: String,
    revoked: Option<String>,
}

/// `?vitals=` on the patient's page.
#[derive(Deserialize)]
pub(super) struct VitalsQuery {
    #[serde(default)]
    vitals: Option<String>,
}

#[derive(Template)]
#[template(path = "patient_waiting.html")]
struct WaitingPage {
    layout: Layout,
    notice: Option<Flash>,
    addr: PatientAddr,
}

/// `GET /patient`.
pub(super) async fn home(
    State(state): State<WebState>,
    s: PatientSession,
    Query(n): Query<Notice>,
    Query(vq): Query<VitalsQuery>,
) -> Result<Html<String>> {
    let addr = s.addr()?;
    let c = state.chain_for(&s)?;
    if c.patient_account(addr).await? != Some(s.account.address) {
        return page(&WaitingPage {
            layout: Layout::user(&s, "Patient"),
            notice: n.flash(),
            addr,
        });
    }
    let profiles = state.accounts.profiles().await?;
    let grants = c
        .grants(addr, 0, 200)
        .await?
        .into_iter()
        .map(|g| GrantRow {
            provider: ProviderName::of(&profiles, g.provider),
            state: g.state,
            expires: g.expires_at.map_or("open-ended".into(), time),
            active: g.state == GrantState::Active,
        })
        .collect();
    let requests = c
        .pending_requests(addr, 0, 200)
        .await?
        .into_iter()
        .map(|r| RequestRow {
            provider: ProviderName::of(&profiles, r.provider),
            asked: time(r.requested_at),
        })
        .collect();
    let (filter, page_no) = audit_query(&n)?;
    let trail = c
        .audit_page_for_patient(addr, filter, page_no * AUDIT_PAGE, AUDIT_PAGE)
        .await?;
    let rc = state.records_for(&s).ok();
    let records = records(
        &state.directory()?,
        addr,
        "/patient/records",
        rc.as_ref().map(|rc| (rc, &state.listing)),
    )
    .await?;
    let exports = state
        .accounts
        .db()
        .exports_of(addr.aid(), addr.pid(), 10)
        .await?
        .iter()
        .map(ExportView::of)
        .collect();
    let devices = c
        .devices_of(addr)
        .await?
        .into_iter()
        .rev()
        .map(|(d, label)| DeviceRow {
            address: d.device,
            kind: d.kind.map_or_else(|| "unknown".into(), |k| k.to_string()),
            label,
            added: time(d.added_at),
            revoked: d.revoked_at.map(time),
        })
        .collect();
    let span = vq.vitals.as_deref().and_then(Span::parse);
    let vitals = match span {
        Some(span) => Some(super::vitals::load(&state, &s, addr, span).await?),
        None => None,
    };
    page(&PatientPage {
        layout: Layout::user(&s, "Patient"),
        notice: n.flash(),
        csrf: s.csrf.clone(),
        addr,
        emergencies: open_emergencies(&c, addr).await?,
        records,
        grants,
        requests,
        audit: AuditView::new("/patient", "", filter, page_no, &trail.events, trail.total),
        exports,
        devices,
        kinds: DeviceKind::ALL.iter().map(|k| k.name()).collect(),
        vitals_span: span.map_or("", Span::name),
        vitals,
    })
}

/// Every emergency access open on the patient now (newest opening per provider).
async fn open_emergencies(c: &EhrChain, addr: PatientAddr) -> Result<Vec<Emergency>> {
    let opened = c
        .audit_page_for_patient(addr, AuditFilter::Emergency, 0, 200)
        .await?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for e in &opened.events {
        let AuditKind::BreakGlassOpened {
            provider,
            reason,
            overrides_revoke,
            ..
        } = &e.kind
        else {
            continue;
        };
        if !seen.insert(*provider) {
            continue;
        }
        if let Some(until) = c.emergency_until(addr, *provider).await? {
            out.push(Emergency {
                provider: *provider,
                reason: reason.map_or_else(|| "unknown reason".to_owned(), |r| r.to_string()),
                until: time(until),
                overrides_revoke: *overrides_revoke,
            });
        }
    }
    Ok(out)
}

/// A form naming a provider.
#[derive(Deserialize)]
pub(super) struct ProviderForm {
    provider: String,
}

/// `POST /patient/end-emergency`.
pub(super) async fn end_emergency(
    State(state): State<WebState>,
    s: PatientSession,
    CsrfForm(f): CsrfForm<ProviderForm>,
) -> Result<Redirect> {
    let p = account_addr(&f.provider)?;
    Ok(match state.chain_for(&s)?.end_emergency(p).await {
        Ok(_) => back("/patient", true, &format!("emergency access of {p} ended")),
        Err(e) => back("/patient", false, &words(&e)),
    })
}

/// `POST /patient/upload`.
pub(super) async fn upload(
    State(state): State<WebState>,
    s: PatientSession,
    charge: Option<axum::Extension<crate::gateway::Charge>>,
    mp: Multipart,
) -> Result<Redirect> {
    let addr = s.addr()?;
    let Some(u) = upload::read(&s, mp).await? else {
        return Ok(back("/patient", false, "the file is empty"));
    };
    let target = upload::Target {
        path: "/patient/upload",
        back_to: "/patient",
    };
    upload::save(
        &state,
        &s,
        addr,
        u,
        target,
        charge.as_deref(),
        |name, id| format!("stored {name} as record {id}"),
    )
    .await
}

/// Grant form.
#[derive(Deserialize)]
pub(super) struct GrantForm {
    provider: String,
    #[serde(default)]
    days: String,
}

/// `POST /patient/grant`.
pub(super) async fn grant(
    State(state): State<WebState>,
    s: PatientSession,
    CsrfForm(f): CsrfForm<GrantForm>,
) -> Result<Redirect> {
    let p = match account_addr(&f.provider) {
        Ok(p) => p,
        Err(e) => return Ok(back("/patient", false, e.message())),
    };
    let c = state.chain_for(&s)?;
    let until = match f.days.trim() {
        "" => None,
        d => match d.parse::<u64>() {
            Ok(d @ 1..=36_500) => Some(c.chain_time().await? + d * 86_400),
            _ => {
                return Ok(back(
                    "/patient",
                    false,
                    "days must be a whole number from 1 to 36500",
                ));
            }
        },
    };
    Ok(match c.grant(p, until).await {
        Ok(_) => back("/patient", true, &format!("granted {p}")),
        Err(e) => back("/patient", false, &words(&e)),
    })
}

/// `POST /patient/revoke`.
pub(super) async fn revoke(
    State(state): State<WebState>,
    s: PatientSession,
    CsrfForm(f): CsrfForm<ProviderForm>,
) -> Result<Redirect> {
    let p = account_addr(&f.provider)?;
    Ok(match state.chain_for(&s)?.revoke(p).await {
        Ok(_) => back("/patient", true, &format!("revoked {p}")),
        Err(e) => back("/patient", false, &words(&e)),
    })
}

/// The add-device form.
#[derive(Deserialize)]
pub(super) struct DeviceForm {
    device: String,
    kind: String,
    #[serde(default)]
    label: String,
}

/// `POST /patient/devices`: registers a device (its key's address, as the device shows it).
pub(super) async fn add_device(
    State(state): State<WebState>,
    s: PatientSession,
    CsrfForm(f): CsrfForm<DeviceForm>,
) -> Result<Redirect> {
    let device = account_addr(&f.device)?;
    let kind: DeviceKind = f.kind.parse().map_err(WebError::bad)?;
    Ok(
        match state
            .chain_for(&s)?
            .add_device(device, kind, f.label.trim())
            .await
        {
            Ok(_) => back("/patient", true, &format!("added {kind} {device}")),
            Err(e) => back("/patient", false, &words(&e)),
        },
    )
}

/// The revoke-device form.
#[derive(Deserialize)]
pub(super) struct DeviceRevokeForm {
    device: String,
}

/// `POST /patient/devices/revoke`.
pub(super) async fn revoke_device(
    State(state): State<WebState>,
    s: PatientSession,
    CsrfForm(f): CsrfForm<DeviceRevokeForm>,
) -> Result<Redirect> {
    let device = account_addr(&f.device)?;
    Ok(match state.chain_for(&s)?.revoke_device(device).await {
        Ok(_) => back(
            "/patient",
            true,
            &format!("revoked device {device}: its readings are refused from now on"),
        ),
        Err(e) => back("/patient", false, &words(&e)),
    })
}

/// The patient's answer to a request.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Decision {
    /// Grant the provider (open-ended).
    Approve,
    /// Refuse.
    Decline,
}

/// A decision on a request.
#[derive(Deserialize)]
pub(super) struct DecisionForm {
    provider: String,
    decision: Decision,
}

/// `POST /patient/request`.
pub(super) async fn decide(
    State(state): State<WebState>,
    s: PatientSession,
    CsrfForm(f): CsrfForm<DecisionForm>,
) -> Result<Redirect> {
    let p = account_addr(&f.provider)?;
    let c = state.chain_for(&s)?;
    let (r, done) = match f.decision {
        Decision::Approve => (c.approve_request(p, None).await, "approved"),
        Decision::Decline => (c.decline_request(p).await, "declined"),
    };
    Ok(match r {
        Ok(_) => back("/patient", true, &format!("{done} the request of {p}")),
        Err(e) => back("/patient", false, &words(&e)),
    })
}

/// Downloads of the audit trail.
#[derive(Debug, Clone, Copy)]
pub(super) enum Format {
    /// FHIR R4 `Bundle` of `AuditEvent`s.
    Fhir,
    /// CSV.
    Csv,
}

/// `GET /patient/audit.fhir.json`.
pub(super) async fn audit_fhir(state: State<WebState>, s: PatientSession) -> Result<Response> {
    export(state, s, Format::Fhir).await
}

/// `GET /patient/audit.csv`.
pub(super) async fn audit_csv(state: State<WebState>, s: PatientSession) -> Result<Response> {
    export(state, s, Format::Csv).await
}

/// The whole trail in `format`, recorded as a download before it is sent (a download that
/// cannot be recorded is not sent).
async fn export(
    State(state): State<WebState>,
    s: PatientSession,
    format: Format,
) -> Result<Response> {
    let addr = s.addr()?;
    let c = state.chain_for(&s)?;
    // Only the account the address is issued to (another account may have asked for it).
    if c.patient_account(addr).await? != Some(s.account.address) {
        return Err(WebError::new(
            ErrorKind::Denied,
            format!("patient address {addr} is not issued to this account"),
        ));
    }
    state
        .guard
        .export(&s.account.username)
        .map_err(super::login::refusal_error)?;
    let mut events = c
        .audit_page_for_patient(addr, AuditFilter::All, 0, usize::MAX)
        .await?
        .events;
    // Oldest first, as a log is read.
    events.reverse();
    let now = super::now();
    let (body, media, name, code) = match format {
        Format::Fhir => {
            let observer = Observer {
                chain_id: c.chain_id(),
                contract: c.address(),
            };
            let b = serde_json::to_vec_pretty(&fhir_bundle(&events, observer, now))
                .map_err(|e| WebError::new(ErrorKind::Internal, e.to_string()))?;
            (b, "application/fhir+json", "audit-trail.fhir.json", "fhir")
        }
        Format::Csv => (
            csv(&events).map_err(|e| WebError::new(ErrorKind::Internal, e.to_string()))?,
            "text/csv; charset=utf-8",
            "audit-trail.csv",
            "csv",
        ),
    };
    let mut id = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    state
        .accounts
        .db()
        .insert_export(&ExportRow {
            id: hex::encode(id),
            username: s.account.username.clone(),
            patient_aid: addr.aid(),
            patient_pid: addr.pid(),
            format: code.to_owned(),
            events: events.len() as u64,
            exported_at: now,
        })
        .await?;
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{addr}-{name}\""))
            .unwrap_or(HeaderValue::from_static("attachment")),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

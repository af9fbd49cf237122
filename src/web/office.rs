//! The records office's room: patients waiting for their address, providers to verify or
//! suspend, break-glass review, the health of IPFS and the share nodes, and the monitoring of
//! every transaction (a chart over time, and the events paged and filtered by kind, provider
//! and patient).

use alloy::primitives::Address;
use askama::Template;
use axum::extract::{Query, State};
use axum::response::{Html, Redirect};
use serde::Deserialize;

use super::WebState;
use super::accounts::Role;
use super::chart::Chart;
use super::error::{Result, WebError, page};
use super::extract::{CsrfForm, OfficeSession};
use super::patient::ExportView;
use super::view::{
    AUDIT_PAGE, AuditRow, AuditView, Flash, Layout, Notice, ProviderName, account_addr,
    audit_query, back, patient_addr, query_value, words,
};
use crate::chain::{AuditFilter, EhrChain, PatientAddr, ProviderStatus};
use crate::kind::ErrorKind;

/// A web patient whose address the office has not issued yet.
struct Waiting {
    username: String,
    addr: PatientAddr,
    account: Address,
    taken: bool,
}

/// A provider row.
struct ProviderRow {
    name: ProviderName,
    status: ProviderStatus,
    denied: u32,
    can_verify: bool,
    can_suspend: bool,
}

/// A share node's health.
struct NodeRow {
    url: String,
    address: Address,
    ok: bool,
}

#[derive(Template)]
#[template(path = "office.html")]
struct OfficePage {
    layout: Layout,
    notice: Option<Flash>,
    csrf: String,
    waiting: Vec<Waiting>,
    providers: Vec<ProviderRow>,
    emergencies: Vec<AuditRow>,
    emergencies_total: usize,
    ipfs: String,
    nodes: Vec<NodeRow>,
    chart: Chart,
    kind: &'static str,
    provider: String,
    patient: String,
    monitoring: AuditView,
    denied_on_page: usize,
    exports: Vec<ExportView>,
    ingest: Option<crate::db::IngestStats>,
}

/// `GET /office`.
pub(super) async fn home(
    State(state): State<WebState>,
    s: OfficeSession,
    Query(n): Query<Notice>,
) -> Result<Html<String>> {
    let c = state.chain_for(&s)?;
    let (filter, page_no) = audit_query(&n)?;
    let provider = match n.provider.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => Some(account_addr(p)?),
    };
    let patient = match n.patient.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => Some(patient_addr(p)?),
    };
    let monitoring = c
        .audit_page_where(
            |e| {
                filter.matches(&e.kind)
                    && provider.is_none_or(|p| e.kind.provider() == Some(p))
                    && patient.is_none_or(|p| e.kind.patient() == Some(p))
            },
            page_no * AUDIT_PAGE,
            AUDIT_PAGE,
        )
        .await?;
    let mut extra = String::new();
    if let Some(p) = provider {
        extra.push_str(&format!("&provider={p}"));
    }
    if let Some(p) = patient {
        extra.push_str(&format!("&patient={}", query_value(&p.to_string())));
    }
    let mut times = Vec::new();
    c.audit_scan(|e| {
        if let Some(t) = e.timestamp {
            times.push((t, e.kind.is_denial()));
        }
    })
    .await?;
    let emergencies = c
        .audit_page_all(AuditFilter::Emergency, 0, AUDIT_PAGE)
        .await?;
    let replicas = state.app.ipfs();
    let versions = replicas.versions().await;
    let up = versions.iter().filter(|v| v.is_ok()).count();
    let ipfs = match (
        versions.iter().find_map(|v| v.as_ref().ok()),
        versions.len(),
    ) {
        (Some(v), 1) => format!("Kubo {} · ok", v.version),
        (Some(v), n) => format!(
            "Kubo {} · {up} of {n} peers up · {} copies of each record",
            v.version,
            replicas.replication()
        ),
        (None, _) => match versions.into_iter().next() {
            Some(Err(e)) => format!("unavailable: {e}"),
            _ => "unavailable".to_owned(),
        },
    };
    let nodes = crate::gateway::share_node_health(&state.app)
        .await
        .into_iter()
        .map(|n| NodeRow {
            url: n.url,
            address: n.address,
            ok: n.ok,
        })
        .collect();
    let exports = state
        .accounts
        .db()
        .recent_exports(20)
        .await?
        .iter()
        .map(ExportView::of)
        .collect();
    // Device readings of the last 7 days (only on a gateway that takes them).
    let ingest = match state.app.ingest() {
        Some(_) => Some(
            state
                .accounts
                .db()
                .ingest_stats(super::now() / 86_400 - 6)
                .await?,
        ),
        None => None,
    };
    page(&OfficePage {
        ingest,
        layout: Layout::user(&s, "Records office"),
        notice: n.flash(),
        csrf: s.csrf.clone(),
        waiting: waiting_patients(&state, &c).await?,
        providers: providers(&state, &c).await?,
        emergencies: emergencies.events.iter().map(AuditRow::of).collect(),
        emergencies_total: emergencies.total,
        ipfs,
        nodes,
        chart: Chart::of(&times, super::now().max(c.chain_time().await.unwrap_or(0))),
        kind: filter.as_str(),
        provider: provider.map(|p| p.to_string()).unwrap_or_default(),
        patient: patient.map(|p| p.to_string()).unwrap_or_default(),
        denied_on_page: monitoring
            .events
            .iter()
            .filter(|e| e.kind.is_denial())
            .count(),
        monitoring: AuditView::new(
            "/office",
            &extra,
            filter,
            page_no,
            &monitoring.events,
            monitoring.total,
        ),
        exports,
    })
}

/// Every provider, those waiting for verification first (they are what the office acts on).
async fn providers(state: &WebState, c: &EhrChain) -> Result<Vec<ProviderRow>> {
    let profiles = state.accounts.profiles().await?;
    let mut rows = Vec::new();
    for provider in c.registered_providers().await? {
        let (status, denied) = c.provider_status(provider).await?;
        rows.push(ProviderRow {
            name: ProviderName::of(&profiles, provider),
            status,
            denied,
            can_verify: matches!(status, ProviderStatus::Pending | ProviderStatus::Suspended),
            can_suspend: matches!(status, ProviderStatus::Pending | ProviderStatus::Verified),
        });
    }
    rows.sort_by_key(|r| r.status != ProviderStatus::Pending);
    Ok(rows)
}

/// Web patients whose address the office has not issued yet.
async fn waiting_patients(state: &WebState, c: &EhrChain) -> Result<Vec<Waiting>> {
    let mut out = Vec::new();
    for a in state.accounts.list().await? {
        if a.role != Role::Patient {
            continue;
        }
        let Some(addr) = a.patient else { continue };
        if c.patient_of(a.address).await?.is_some() {
            continue;
        }
        out.push(Waiting {
            taken: c.patient_account(addr).await?.is_some(),
            username: a.username,
            addr,
            account: a.address,
        });
    }
    Ok(out)
}

/// The office issues a waiting web patient's address.
#[derive(Deserialize)]
pub(super) struct IssueForm {
    username: String,
}

/// `POST /office/patient`.
pub(super) async fn issue_patient(
    State(state): State<WebState>,
    s: OfficeSession,
    CsrfForm(f): CsrfForm<IssueForm>,
) -> Result<Redirect> {
    let a = state
        .accounts
        .account(&f.username)
        .await?
        .filter(|a| a.role == Role::Patient)
        .ok_or_else(|| {
            WebError::new(
                ErrorKind::NotFound,
                format!("no patient user {:?}", f.username),
            )
        })?;
    let addr = a
        .patient
        .ok_or_else(|| WebError::bad("that user asked for no patient address"))?;
    Ok(
        match state.chain_for(&s)?.issue_patient(addr, a.address).await {
            Ok(_) => back("/office", true, &format!("issued {addr} to {}", a.username)),
            Err(e) => back("/office", false, &words(&e)),
        },
    )
}

/// The office's decision on a provider.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Decision {
    /// Verify (or reinstate).
    Verify,
    /// Suspend.
    Suspend,
}

/// A decision on a provider.
#[derive(Deserialize)]
pub(super) struct ProviderForm {
    provider: String,
    decision: Decision,
}

/// `POST /office/provider`.
pub(super) async fn decide_provider(
    State(state): State<WebState>,
    s: OfficeSession,
    CsrfForm(f): CsrfForm<ProviderForm>,
) -> Result<Redirect> {
    let p = account_addr(&f.provider)?;
    let c = state.chain_for(&s)?;
    let (r, done) = match f.decision {
        Decision::Verify => (c.verify_provider(p).await, "verified"),
        Decision::Suspend => (c.suspend_provider(p).await, "suspended"),
    };
    Ok(match r {
        Ok(_) => back("/office", true, &format!("{p}: {done}")),
        Err(e) => back("/office", false, &words(&e)),
    })
}

//! The doctor's room: their verification status, the patients who granted them, a patient's
//! records (read behind an access transaction), adding a record for a granting patient,
//! requesting access, and break-glass.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Multipart, Query, State};
use axum::response::{Html, Redirect};
use serde::Deserialize;

use super::WebState;
use super::error::{Result, WebError, page};
use super::extract::{CsrfForm, DoctorSession};
use super::listing::{RecordsView, records};
use super::upload;
use super::view::{Flash, Layout, back, patient_addr, time, words};
use super::vitals::{Span, VitalsView};
use crate::chain::{AuditKind, DenyReason, EmergencyReason, PatientAddr, ProviderStatus};
use crate::kind::ErrorKind;

/// A patient who granted this doctor.
struct PatientRow {
    addr: PatientAddr,
    access: DenyReason,
    until: String,
}

#[derive(Template)]
#[template(path = "doctor.html")]
struct DoctorPage {
    layout: Layout,
    notice: Option<Flash>,
    status_note: String,
    patients: Vec<PatientRow>,
}

#[derive(Template)]
#[template(path = "doctor_patient.html")]
struct PatientPage {
    layout: Layout,
    notice: Option<Flash>,
    csrf: String,
    addr: PatientAddr,
    access: String,
    may_add: bool,
    records: RecordsView,
    reasons: Vec<(&'static str, String)>,
    vitals_base: String,
    vitals_span: &'static str,
    vitals: Option<VitalsView>,
}

/// `GET /doctor`.
pub(super) async fn home(
    State(state): State<WebState>,
    s: DoctorSession,
    Query(n): Query<super::view::Notice>,
) -> Result<Html<String>> {
    let c = state.chain_for(&s)?;
    let (status, denied) = c.provider_status(s.account.address).await?;
    let status_note = match status {
        ProviderStatus::Verified => format!("Verified provider. Denied attempts on record: {denied}."),
        ProviderStatus::Pending => "Waiting for the records office to verify you; until then you cannot request or open records.".into(),
        ProviderStatus::Suspended => "Your account is suspended by the records office.".into(),
        ProviderStatus::None => "Not registered as a provider.".into(),
    };
    // The newest grant per patient.
    let mut granted = BTreeMap::new();
    for e in c
        .audit_for_provider(s.account.address, 0, 200)
        .await?
        .into_iter()
        .rev()
    {
        if let AuditKind::GrantIssued {
            patient: Some(p),
            expires_at,
            ..
        } = e.kind
        {
            granted.insert(p.to_string(), (p, expires_at));
        }
    }
    let mut patients = Vec::with_capacity(granted.len());
    for (addr, until) in granted.into_values() {
        let (access, _) = c.check_access(addr, s.account.address).await?;
        patients.push(PatientRow {
            addr,
            access,
            until: until.map_or("open-ended".into(), time),
        });
    }
    page(&DoctorPage {
        layout: Layout::user(&s, "Doctor"),
        notice: n.flash(),
        status_note,
        patients,
    })
}

/// `?addr=` and a notice.
#[derive(Deserialize)]
pub(super) struct AddrQuery {
    addr: String,
    #[serde(default)]
    ok: Option<String>,
    #[serde(default)]
    err: Option<String>,
    /// Show the vital signs of this span (`day`, `week`, `month`).
    #[serde(default)]
    vitals: Option<String>,
}

/// `GET /doctor/patient?addr=`.
pub(super) async fn patient(
    State(state): State<WebState>,
    s: DoctorSession,
    Query(q): Query<AddrQuery>,
) -> Result<Html<String>> {
    let addr = patient_addr(&q.addr)?;
    let c = state.chain_for(&s)?;
    if c.patient_account(addr).await?.is_none() {
        return Err(WebError::new(
            ErrorKind::NotFound,
            format!("no patient is registered at {addr}"),
        ));
    }
    let (reason, emergency) = c.check_access(addr, s.account.address).await?;
    let access = if emergency {
        "BREAK-GLASS access is open (logged for the patient).".to_owned()
    } else {
        format!("Your access: {reason}.")
    };
    let span = q.vitals.as_deref().and_then(Span::parse);
    // Reading is an access transaction per 32 windows: only on the doctor's click, and only
    // with access (a denied attempt would be logged for nothing).
    let vitals = match span {
        Some(span) if reason == DenyReason::None => {
            Some(super::vitals::load(&state, &s, addr, span).await?)
        }
        _ => None,
    };
    let notice = match (q.ok, q.err) {
        (Some(m), _) => Some(Flash { ok: true, text: m }),
        (None, Some(m)) => Some(Flash::err(m)),
        _ => None,
    };
    page(&PatientPage {
        layout: Layout::user(&s, "Doctor"),
        notice,
        csrf: s.csrf.clone(),
        addr,
        access,
        // Adding needs a grant: break-glass opens reading only.
        may_add: reason == DenyReason::None && !emergency,
        records: records(&state.directory()?, addr, "/doctor/records", None).await?,
        reasons: EmergencyReason::ALL
            .iter()
            .map(|r| (r.hl7(), r.to_string()))
            .collect(),
        vitals_base: format!("{}&", patient_page(addr)),
        vitals_span: span.map_or("", Span::name),
        vitals,
    })
}

/// A form naming a patient.
#[derive(Deserialize)]
pub(super) struct PatientForm {
    addr: String,
}

fn patient_page(addr: PatientAddr) -> String {
    // An address is digits and a dash: nothing to encode.
    format!("/doctor/patient?addr={addr}")
}

/// `POST /doctor/request`.
pub(super) async fn request(
    State(state): State<WebState>,
    s: DoctorSession,
    CsrfForm(f): CsrfForm<PatientForm>,
) -> Result<Redirect> {
    let addr = patient_addr(&f.addr)?;
    let to = patient_page(addr);
    Ok(match state.chain_for(&s)?.request_access(addr).await {
        Ok(_) => back(&to, true, "request sent; the patient will see it"),
        Err(e) => back(&to, false, &words(&e)),
    })
}

/// The break-glass form.
#[derive(Deserialize)]
pub(super) struct BreakGlassForm {
    addr: String,
    reason: String,
}

/// `POST /doctor/break-glass`.
pub(super) async fn break_glass(
    State(state): State<WebState>,
    s: DoctorSession,
    CsrfForm(f): CsrfForm<BreakGlassForm>,
) -> Result<Redirect> {
    let addr = patient_addr(&f.addr)?;
    let to = patient_page(addr);
    let reason: EmergencyReason = f
        .reason
        .parse()
        .map_err(|e: crate::chain::UnknownEmergencyReason| WebError::bad(e.to_string()))?;
    // The form sent again (`form_key`) is answered by the first send's transaction: counted
    // once against the three a day, logged once for the patient.
    Ok(match state.chain_for(&s)?.break_glass(addr, reason).await {
        Ok(_) => back(
            &to,
            true,
            "emergency access open for one hour; this is logged for the patient",
        ),
        Err(e) => back(&to, false, &words(&e)),
    })
}

/// `?addr=` of the doctor's upload.
#[derive(Deserialize)]
pub(super) struct UploadQuery {
    addr: String,
}

/// `POST /doctor/upload?addr=`: a record the doctor adds for a patient who granted them. The
/// share nodes take its shares only while the grant stands, and the record names the doctor
/// as its author for good.
pub(super) async fn upload(
    State(state): State<WebState>,
    s: DoctorSession,
    Query(q): Query<UploadQuery>,
    charge: Option<axum::Extension<crate::gateway::Charge>>,
    mp: Multipart,
) -> Result<Redirect> {
    let addr = patient_addr(&q.addr)?;
    let to = patient_page(addr);
    // Checked before anything is encrypted or pinned (the share nodes check again).
    let (reason, emergency) = state.chain()?.check_access(addr, s.account.address).await?;
    if reason != DenyReason::None || emergency {
        return Err(WebError::new(
            ErrorKind::Denied,
            if emergency {
                format!(
                    "break-glass access to {addr} opens reading only; adding a record needs the patient's grant"
                )
            } else {
                format!("you may not add records for patient {addr}: {reason}")
            },
        ));
    }
    let Some(u) = upload::read(&s, mp).await? else {
        return Ok(back(&to, false, "the file is empty"));
    };
    let target = upload::Target {
        path: "/doctor/upload",
        back_to: &to,
    };
    upload::save(
        &state,
        &s,
        addr,
        u,
        target,
        charge.as_deref(),
        |name, id| format!("added {name} as record {id} for patient {addr}"),
    )
    .await
}

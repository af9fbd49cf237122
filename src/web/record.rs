//! One record, read behind one click: for a provider the access transaction, then the shares,
//! the ciphertext and the check against the anchor. FHIR is shown readable; other files
//! download, never rendered inline.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::WebState;
use super::error::{Result, WebError, page};
use super::extract::{DoctorSession, PatientSession};
use super::session::Session;
use super::view::{Layout, human_size, short, time};
use crate::chain::RecordId;
use crate::kind::ErrorKind;
use crate::records::{FHIR_JSON, Retrieved};

/// A FHIR resource in words.
struct Resource {
    resource_type: String,
    facts: Vec<String>,
}

/// A FHIR record in words, and its JSON.
struct FhirView {
    resources: Vec<Resource>,
    pretty: String,
}

#[derive(Template)]
#[template(path = "record.html")]
struct RecordPage {
    layout: Layout,
    id_short: String,
    patient: String,
    added: String,
    size: String,
    media_type: String,
    fhir: Option<FhirView>,
    download: String,
    file_name: String,
    back: String,
}

#[derive(Template)]
#[template(path = "denied.html")]
struct DeniedPage<'a> {
    layout: Layout,
    message: &'a str,
    back: &'a str,
}

/// Whose room the record is opened from.
#[derive(Clone, Copy)]
enum Room {
    Patient,
    Doctor,
}

impl Room {
    fn base(self) -> &'static str {
        match self {
            Self::Patient => "/patient",
            Self::Doctor => "/doctor",
        }
    }
}

async fn read(state: &WebState, s: &Session, id: &str) -> Result<Retrieved> {
    let id: RecordId = id
        .parse()
        .map_err(|_| WebError::bad(format!("{id:?} is not a record id")))?;
    Ok(state.records_for(s)?.get(id).await?)
}

/// `GET /patient/records/{id}`.
pub(super) async fn patient_record(
    State(state): State<WebState>,
    s: PatientSession,
    Path(id): Path<String>,
) -> Result<Response> {
    show(&state, &s, &id, Room::Patient).await
}

/// `GET /doctor/records/{id}`.
pub(super) async fn doctor_record(
    State(state): State<WebState>,
    s: DoctorSession,
    Path(id): Path<String>,
) -> Result<Response> {
    show(&state, &s, &id, Room::Doctor).await
}

async fn show(state: &WebState, s: &Session, id: &str, room: Room) -> Result<Response> {
    let r = match read(state, s, id).await {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::Denied => {
            let denied = DeniedPage {
                layout: Layout::user(s, "Access denied"),
                message: e.message(),
                back: room.base(),
            };
            return Ok((StatusCode::FORBIDDEN, page(&denied)?).into_response());
        }
        Err(e) => return Err(e),
    };
    let b = &r.block;
    let back = match room {
        Room::Doctor => format!("/doctor/patient?addr={}", b.patient),
        Room::Patient => "/patient".to_owned(),
    };
    Ok(page(&RecordPage {
        layout: Layout::user(s, "Record"),
        id_short: short(id),
        patient: b.patient.to_string(),
        added: time(b.created_at),
        size: human_size(b.size),
        media_type: b.media_type.clone(),
        fhir: (b.media_type == FHIR_JSON).then(|| fhir_view(&r.data)),
        download: format!("{}/records/{id}/download", room.base()),
        file_name: b.file_name.clone().unwrap_or_else(|| "file".into()),
        back,
    })?
    .into_response())
}

/// The facts a reader looks for first in a resource.
fn facts(r: &serde_json::Value) -> Resource {
    let mut facts = Vec::new();
    for key in [
        "status",
        "id",
        "birthDate",
        "gender",
        "effectiveDateTime",
        "onsetDateTime",
    ] {
        if let Some(x) = r[key].as_str() {
            facts.push(format!("{key}: {x}"));
        }
    }
    if let Some(t) = r["code"]["text"]
        .as_str()
        .or_else(|| r["code"]["coding"][0]["display"].as_str())
    {
        facts.push(format!("code: {t}"));
    }
    if let Some(q) = r["valueQuantity"].as_object() {
        facts.push(format!(
            "value: {} {}",
            q.get("value").map(ToString::to_string).unwrap_or_default(),
            q.get("unit").and_then(|u| u.as_str()).unwrap_or("")
        ));
    }
    if let Some(n) = r["name"][0]["family"].as_str() {
        facts.push(format!(
            "name: {} {}",
            r["name"][0]["given"][0].as_str().unwrap_or(""),
            n
        ));
    }
    for n in r["note"].as_array().into_iter().flatten() {
        if let Some(t) = n["text"].as_str() {
            facts.push(format!("note: {t}"));
        }
    }
    Resource {
        resource_type: r["resourceType"].as_str().unwrap_or("?").to_owned(),
        facts,
    }
}

fn fhir_view(data: &[u8]) -> FhirView {
    let v: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
    let resources = if v["resourceType"] == "Bundle" {
        v["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| facts(&e["resource"]))
            .collect()
    } else {
        vec![facts(&v)]
    };
    FhirView {
        resources,
        pretty: serde_json::to_string_pretty(&v).unwrap_or_default(),
    }
}

/// `GET /patient/records/{id}/download`.
pub(super) async fn patient_download(
    State(state): State<WebState>,
    s: PatientSession,
    Path(id): Path<String>,
) -> Result<Response> {
    download(&state, &s, &id).await
}

/// `GET /doctor/records/{id}/download`.
pub(super) async fn doctor_download(
    State(state): State<WebState>,
    s: DoctorSession,
    Path(id): Path<String>,
) -> Result<Response> {
    download(&state, &s, &id).await
}

async fn download(state: &WebState, s: &Session, id: &str) -> Result<Response> {
    let r = read(state, s, id).await?;
    let name = r
        .block
        .file_name
        .as_deref()
        .unwrap_or("record")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect::<String>();
    let mut resp = r.data.into_response();
    let ct = HeaderValue::from_str(&r.block.media_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    // Never rendered inline: an uploaded HTML file must not run in the gateway's origin.
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    resp.headers_mut()
        .insert(header::CONTENT_DISPOSITION, disposition);
    resp.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

//! `POST /records` and `GET /records/{id}`: records for web users. The gateway does the
//! encryption and share handling for them (the CLI's `ehr record` does it client-side instead).

use super::openapi::ErrorBody;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::chain_api::{ActorKey, patient};
use super::named_upload::{NamedUpload, Upload};
use super::{ApiError, AppState};
use crate::chain::RecordId;
use crate::records::RecordsClient;

/// Largest record accepted through the gateway.
pub(super) const UPLOAD_LIMIT: usize = 32 * 1024 * 1024;

fn client(state: &AppState, key: ActorKey) -> Result<RecordsClient, ApiError> {
    let cfg = state
        .records()
        .ok_or_else(|| ApiError::unavailable("no share nodes configured on this gateway".into()))?;
    Ok(cfg.client(key.1, key.0, state.ipfs().clone())?)
}

/// Query of `POST /records`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct UploadQuery {
    /// The patient's address, AID-PID.
    patient: String,
    /// The file's name, shown to readers.
    #[serde(default)]
    file_name: Option<String>,
}

/// Stores the body as a record of `patient`; the media type is the request's Content-Type.
#[utoipa::path(
    post,
    path = "/records",
    tag = "records",
    summary = "Store a record for a patient (body = content, Content-Type = its media type; FHIR JSON is validated; at most 32 MiB)",
    params(UploadQuery),
    request_body(content = String, description = "the record's content; its media type in Content-Type", content_type = "*/*"),
    security(("bearer" = [])),
    responses((status = 200, description = "stored and anchored", content_type = "application/json"), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or unknown API token", body = ErrorBody), (status = 403, description = "not allowed", body = ErrorBody), (status = 409, description = "the contract refused, or an earlier try of this Idempotency-Key's upload has not settled (Retry-After)", body = ErrorBody), (status = 413, description = "too large", body = ErrorBody), (status = 422, description = "the Idempotency-Key was used for another request", body = ErrorBody), (status = 503, description = "a backing service is unavailable", body = ErrorBody))
)]
pub(super) async fn upload(
    State(state): State<AppState>,
    key: ActorKey,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    charge: Option<axum::Extension<super::uploads::Charge>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let addr = patient(&q.patient)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("empty record".into()));
    }
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let account = key.0.address();
    let client = client(&state, key)?;
    let upload = Upload {
        patient: addr,
        body,
        media_type: media,
        file_name: q.file_name,
    };
    // Named with an Idempotency-Key: a retry is answered by the record the first try stored.
    let target = uri.path_and_query().map_or("", |p| p.as_str());
    if let Some(named) = NamedUpload::claim(&state, &headers, account, target, &upload).await? {
        let settled = named
            .run(client, &upload, charge.and_then(|c| c.take()))
            .await?;
        return Ok(upload.respond(settled));
    }
    let id = client
        .put(
            upload.patient,
            upload.body.clone(),
            &upload.media_type,
            upload.file_name.clone(),
        )
        .await?;
    Ok(upload.answer(id, false))
}

/// Reads a record (access transaction, shares, decryption) and returns its content.
#[utoipa::path(
    get,
    path = "/records/{id}",
    tag = "records",
    summary = "Read a record: access transaction, share gathering, decryption, digest check",
    params(("id" = String, Path, description = "record id (0x + 64 hex digits)")),
    security(("bearer" = [])),
    responses((status = 200, description = "the content, with its media type"), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or unknown API token", body = ErrorBody), (status = 403, description = "not allowed (the denial is on the audit trail)", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody), (status = 503, description = "a backing service is unavailable", body = ErrorBody))
)]
pub(super) async fn download(
    State(state): State<AppState>,
    key: ActorKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: RecordId = id.parse().map_err(|_| {
        ApiError::bad_request(format!("{id:?} is not a record id (0x + 64 hex digits)"))
    })?;
    let r = client(&state, key)?.get(id).await?;
    for f in &r.failures {
        tracing::error!(record = %id, "share node {f}");
    }
    let mut resp = r.data.into_response();
    let fhir = r.block.media_type == crate::records::FHIR_JSON;
    let media = HeaderValue::from_str(&r.block.media_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, media);
    // Whatever the uploader claimed the content is, a browser must never render it in the
    // gateway's origin: no sniffing, a sandbox, and anything but FHIR JSON as a download.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    if !fhir {
        let name = r.block.file_name.filter(|n| {
            n.chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
        });
        let v = name
            .and_then(|n| HeaderValue::from_str(&format!("attachment; filename=\"{n}\"")).ok())
            .unwrap_or(HeaderValue::from_static("attachment"));
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

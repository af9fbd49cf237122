//! `POST /ingest` and `POST /ingest/stream`: readings from patients' devices. No bearer token:
//! each envelope is signed by its device's key, which the patient registered on chain, and
//! that signature is the credential ([`crate::ingest`]).

use std::convert::Infallible;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::io::StreamReader;

use super::openapi::ErrorBody;
use super::{ApiError, AppState};
use crate::ingest::{Ingest, MAX_ENVELOPE_BYTES};
use crate::kind::Classify;

/// Lines of one stream checked at once (their answers keep the lines' order).
const STREAM_PARALLEL: usize = 32;

fn service(state: &AppState) -> Result<Ingest, ApiError> {
    state
        .ingest()
        .cloned()
        .ok_or_else(|| ApiError::unavailable("this gateway takes no device readings".into()))
}

/// Takes one signed envelope.
#[utoipa::path(
    post,
    path = "/ingest",
    tag = "devices",
    summary = "Take one device-signed envelope of readings: {device, patient, nonce, time, signature, resource} where resource is a FHIR R4 Observation or a collection Bundle of vital signs (LOINC, UCUM); acknowledged once stored durably",
    request_body(content = String, description = "the signed envelope (JSON)", content_type = "application/json"),
    responses(
        (status = 200, description = "stored; sealed into the patient's records within the window", content_type = "application/json"),
        (status = 400, description = "not an envelope, or not FHIR", body = ErrorBody),
        (status = 401, description = "unsigned, forged, or signed outside the allowed clock skew", body = ErrorBody),
        (status = 403, description = "unknown or revoked device, or another patient's device", body = ErrorBody),
        (status = 409, description = "the device used this nonce before (a replay)", body = ErrorBody),
        (status = 413, description = "larger than 256 KiB", body = ErrorBody),
        (status = 422, description = "not a vital sign taken here, a wrong unit, or an impossible value", body = ErrorBody),
        (status = 503, description = "the chain or the database is unavailable", body = ErrorBody)
    )
)]
pub(super) async fn ingest(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let a = service(&state)?.accept(&body).await?;
    Ok(Json(json!({ "accepted": a })))
}

/// Takes a stream of signed envelopes, one per line, and answers one line per envelope as
/// each is stored.
#[utoipa::path(
    post,
    path = "/ingest/stream",
    tag = "devices",
    summary = "Take newline-delimited signed envelopes for as long as the device stays connected; the answer streams one JSON line per envelope, in order: {line, ok: true, accepted} once stored, or {line, ok: false, status, error}",
    request_body(content = String, description = "signed envelopes, one JSON object per line", content_type = "application/x-ndjson"),
    responses(
        (status = 200, description = "one answer line per envelope", content_type = "application/x-ndjson"),
        (status = 503, description = "this gateway takes no readings", body = ErrorBody)
    )
)]
pub(super) async fn stream(
    State(state): State<AppState>,
    body: Body,
) -> Result<Response, ApiError> {
    let ingest = service(&state)?;
    let reader = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    let lines = FramedRead::new(reader, LinesCodec::new_with_max_length(MAX_ENVELOPE_BYTES));
    let answers = lines
        .enumerate()
        .filter(|(_, l)| std::future::ready(!matches!(l, Ok(s) if s.trim().is_empty())))
        .map(move |(i, line)| {
            let ingest = ingest.clone();
            async move {
                let n = i + 1;
                let v = match line {
                    Ok(l) => match ingest.accept(l.as_bytes()).await {
                        Ok(a) => json!({ "line": n, "ok": true, "accepted": a }),
                        Err(e) => {
                            let kind = e.kind();
                            json!({ "line": n, "ok": false, "status": kind.status().as_u16(), "error": e.public_message() })
                        }
                    },
                    Err(e) => json!({ "line": n, "ok": false, "status": 400, "error": format!("unreadable line: {e} (at most {MAX_ENVELOPE_BYTES} bytes, UTF-8)") }),
                };
                Ok::<_, Infallible>(format!("{v}\n"))
            }
        })
        .buffered(STREAM_PARALLEL);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(answers),
    )
        .into_response())
}

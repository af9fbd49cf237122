//! A cap on uploads in flight: each holds its whole body (up to the upload limit) while it is
//! encrypted and shared, so the gateway refuses more than `MAX_UPLOADS` at once with 503 and
//! `Retry-After` instead of letting memory grow with the number of clients. The slot is taken
//! before the body is read.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

/// Uploads processed at once (x 32 MiB: at most 128 MiB of upload bodies in memory).
pub const MAX_UPLOADS: usize = 4;

/// Longest an upload may take, body included: a client trickling its body cannot hold a slot
/// for longer (408 after that).
pub(super) const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The timeout layer for upload routes (inside the slot, so a timed-out upload frees it).
pub fn timeout() -> tower_http::timeout::TimeoutLayer {
    tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, UPLOAD_TIMEOUT)
}

/// Seconds a refused client is asked to wait.
const RETRY_SECS: u64 = 5;

/// The shared slots.
#[derive(Debug, Clone)]
pub struct UploadSlots(Arc<Semaphore>);

impl Default for UploadSlots {
    fn default() -> Self {
        Self::new(MAX_UPLOADS)
    }
}

impl UploadSlots {
    /// `n` slots.
    pub fn new(n: usize) -> Self {
        Self(Arc::new(Semaphore::new(n)))
    }
}

/// Middleware for JSON clients.
pub async fn gate_json(State(slots): State<UploadSlots>, req: Request, next: Next) -> Response {
    gate(slots, req, next, |m| {
        axum::Json(serde_json::json!({ "error": m })).into_response()
    })
    .await
}

/// Middleware for web pages.
pub async fn gate_html(State(slots): State<UploadSlots>, req: Request, next: Next) -> Response {
    gate(slots, req, next, |m| {
        axum::response::Html(format!(
            "<!doctype html><title>Busy</title><p>{m}</p><p><a href=\"/\">Back</a></p>"
        ))
        .into_response()
    })
    .await
}

async fn gate(
    slots: UploadSlots,
    req: Request,
    next: Next,
    body: impl FnOnce(&str) -> Response,
) -> Response {
    match slots.0.try_acquire_owned() {
        Ok(permit) => {
            let resp = next.run(req).await;
            drop(permit);
            resp
        }
        Err(_) => {
            tracing::warn!("upload refused: {MAX_UPLOADS} uploads already in progress");
            let mut r = body("too many uploads in progress; try again in a few seconds");
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut()
                .insert(header::RETRY_AFTER, RETRY_SECS.into());
            r
        }
    }
}

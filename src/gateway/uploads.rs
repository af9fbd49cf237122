//! A memory budget for uploads in flight: each holds its whole body while it is encrypted and
//! shared, so the gateway admits uploads while their declared sizes fit in the budget of
//! `MAX_UPLOADS` full-size uploads (4 x 32 MiB = 128 MiB of bodies) and refuses the rest with
//! 503 and `Retry-After`, instead of letting memory grow with the number of clients. An upload
//! that does not declare its size (chunked) is charged the full limit; a small one at least
//! `MIN_CHARGE` (its buffers, shares and connection). Many small uploads thus run at once
//! (512 of 10 KB) where a fixed count of slots would have held back all but four. The charge
//! is taken before the body is read.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

/// Full-size uploads (32 MiB each) the budget holds at once.
pub const MAX_UPLOADS: usize = 4;

/// The largest upload body, in KiB (the upload limit of the API and the web form).
const FULL_KIB: u32 = 32 * 1024;

/// The least an upload is charged, in KiB.
const MIN_CHARGE: u32 = 256;

/// Longest an upload may take, body included: a client trickling its body cannot hold a slot
/// for longer (408 after that). An upload named by an `Idempotency-Key` goes on in a task of
/// its own after its client left, for at most as long again (`named_upload`).
pub(super) const UPLOAD_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(UPLOAD_TIMEOUT_SECS);

/// [`UPLOAD_TIMEOUT`] in seconds, for pages that name it.
pub const UPLOAD_TIMEOUT_SECS: u64 = 120;

/// The timeout layer for upload routes (inside the slot, so a timed-out upload frees it; a
/// named upload's task keeps its charge until it ends).
pub fn timeout() -> tower_http::timeout::TimeoutLayer {
    tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, UPLOAD_TIMEOUT)
}

/// Seconds a refused client is asked to wait.
const RETRY_SECS: u64 = 5;

/// The shared budget, in KiB.
#[derive(Debug, Clone)]
pub struct UploadSlots(Arc<Semaphore>);

impl Default for UploadSlots {
    fn default() -> Self {
        Self::new(MAX_UPLOADS)
    }
}

impl UploadSlots {
    /// A budget of `n` full-size uploads.
    pub fn new(n: usize) -> Self {
        let kib = u32::try_from(n)
            .unwrap_or(u32::MAX)
            .saturating_mul(FULL_KIB);
        Self(Arc::new(Semaphore::new(kib as usize)))
    }
}

/// What an upload is charged, in KiB: its declared size, or the full limit when it declares
/// none.
fn charge(req: &Request) -> u32 {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(FULL_KIB, |bytes| {
            u32::try_from(bytes.div_ceil(1024))
                .unwrap_or(FULL_KIB)
                .clamp(MIN_CHARGE, FULL_KIB)
        })
}

/// An upload's share of the budget, in its request's extensions: a handler that hands the
/// upload to a task of its own (one a dropped connection does not cut short) takes it along,
/// so the budget counts the upload until it ends, not until its client leaves.
#[derive(Clone)]
pub(crate) struct Charge(Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>);

impl Charge {
    /// The permit, for the task that does the upload's work.
    pub(crate) fn take(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
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
    match slots.0.clone().try_acquire_many_owned(charge(&req)) {
        Ok(permit) => {
            let mut req = req;
            let charge = Charge(Arc::new(std::sync::Mutex::new(Some(permit))));
            req.extensions_mut().insert(charge.clone());
            let resp = next.run(req).await;
            // Freed here unless the handler took it for a task that outlives it.
            drop(charge);
            resp
        }
        Err(_) => {
            tracing::warn!("upload refused: the upload budget is taken by uploads in progress");
            let mut r = body("too many uploads in progress; try again in a few seconds");
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut()
                .insert(header::RETRY_AFTER, RETRY_SECS.into());
            r
        }
    }
}

//! How a share node says no: one [`ErrorKind`] per refusal, rendered like the gateway's and
//! the web pages' errors.

use super::*;

/// A refusal: logged with its reason, answered with the status of its [`ErrorKind`] (the
/// classification the gateway and the web pages render too) and a message (and a
/// `Retry-After` for 429 and 503).
#[derive(Clone)]
pub(super) struct Refusal {
    kind: ErrorKind,
    message: String,
    retry_after: Option<u64>,
}

impl Refusal {
    pub(super) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A "no" on the merits (not an error, a bad request or a limit).
    pub(super) fn is_denial(&self) -> bool {
        self.kind == ErrorKind::Denied
    }
}

/// A chain error while checking a request: a node that cannot reach its chain is unavailable
/// (503), a rejection is the caller's; the detail stays in the log.
impl<E: Classify + 'static> From<E> for Refusal {
    fn from(e: E) -> Self {
        let kind = e.kind();
        if kind.status().is_server_error() {
            tracing::error!(?kind, "share node: {}", crate::kind::with_sources(&e));
        }
        Self::new(kind, e.public_message())
    }
}

impl Refusal {
    fn log(&self) {
        let status = self.kind.status();
        if status.is_server_error() {
            tracing::error!("share node error: {}", self.message);
        } else {
            tracing::warn!(%status, "share node refused: {}", self.message);
        }
    }

    /// The refusal as one item's outcome in a batch's answer (logged as a response would be).
    pub(super) fn into_item(self) -> ItemAnswer {
        self.log();
        ItemAnswer {
            status: self.kind.status().as_u16(),
            error: Some(self.message),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        self.log();
        let status = self.kind.status();
        let mut r = (status, Json(json!({ "error": self.message }))).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}

/// 503 with a `Retry-After`: the node cannot judge now, and will soon.
pub(super) fn unavailable(m: impl Into<String>, wait: Duration) -> Refusal {
    Refusal {
        retry_after: Some(retry_after_secs(wait)),
        ..Refusal::new(ErrorKind::Unavailable, m)
    }
}

pub(super) fn too_many(m: impl Into<String>, wait: Duration) -> Refusal {
    Refusal {
        retry_after: Some(retry_after_secs(wait)),
        ..Refusal::new(ErrorKind::TooMany, m)
    }
}

/// The one answer to a requester who may not read a record, whether it exists or not.
pub(super) fn not_allowed(requester: Address, id: RecordId) -> Refusal {
    denied(format!(
        "{requester} may not read record {id} now: not the patient, or no granted access transaction under an active grant (or no such record)"
    ))
}

pub(super) fn bad(m: impl Into<String>) -> Refusal {
    Refusal::new(ErrorKind::BadInput, m)
}
pub(super) fn denied(m: impl Into<String>) -> Refusal {
    Refusal::new(ErrorKind::Denied, m)
}
pub(super) fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(ErrorKind::Internal, e.to_string())
}

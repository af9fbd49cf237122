//! The REST API's one error: an [`ErrorKind`] (the classification the web pages and the share
//! nodes render too) and a message for the caller. The caller's mistakes come back in words;
//! our faults and unavailable services are logged with their detail, and the caller gets the
//! error's public message (no URLs, no driver text).

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::kind::{Classify, ErrorKind};

/// An error answered by the gateway.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    kind: ErrorKind,
    message: String,
}

impl ApiError {
    /// An error of `kind` with a message for the caller.
    pub fn new(kind: ErrorKind, message: String) -> Self {
        Self { kind, message }
    }

    /// Malformed input (400).
    pub fn bad_request(message: String) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }

    /// Missing or unknown credentials (401).
    pub fn unauthenticated(message: String) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }

    /// A backing service is unavailable (503).
    pub fn unavailable(message: String) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// What kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for the caller.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: Classify + 'static> From<E> for ApiError {
    fn from(e: E) -> Self {
        let kind = e.kind();
        if kind.status().is_server_error() {
            tracing::error!(?kind, "api: {}", crate::kind::with_sources(&e));
        }
        Self {
            kind,
            message: e.public_message(),
        }
    }
}

/// The body is `{"error": message, "kind": kind}`.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = format!("{:?}", self.kind);
        (
            self.kind.status(),
            Json(json!({ "error": self.message, "kind": kind })),
        )
            .into_response()
    }
}

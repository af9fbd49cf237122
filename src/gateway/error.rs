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

    /// A request body that could not be read whole: too large (413) when it passed the
    /// limit, else malformed (400: a client that went away mid-body, a broken chunked
    /// encoding).
    pub(crate) fn unread_body(e: &axum::Error) -> Self {
        // Anywhere in the chain: a body limit layer's error comes wrapped once more.
        let too_large = std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |s| {
            s.source()
        })
        .any(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            Self::new(ErrorKind::TooLarge, "the request body is too large".into())
        } else {
            Self::bad_request(format!("the request body could not be read: {e}"))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A body over the limit is too large (413); one whose stream fails is malformed (400),
    /// not "too large" as both were before.
    #[tokio::test]
    async fn an_unread_body_is_too_large_only_past_the_limit() {
        let big = axum::body::Body::from(vec![b'x'; 64]);
        let e = axum::body::to_bytes(big, 16).await.unwrap_err();
        assert_eq!(ApiError::unread_body(&e).kind(), ErrorKind::TooLarge);
        // Behind a body limit layer (the REST API's), wrapped once more.
        let limited = axum::body::Body::new(http_body_util::Limited::new(
            axum::body::Body::from(vec![b'x'; 64]),
            16,
        ));
        let e = axum::body::to_bytes(limited, 1 << 20).await.unwrap_err();
        assert_eq!(ApiError::unread_body(&e).kind(), ErrorKind::TooLarge);
        let broken = axum::body::Body::from_stream(futures::stream::iter([
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x")),
            Err(std::io::Error::other("connection reset")),
        ]));
        let e = axum::body::to_bytes(broken, 16).await.unwrap_err();
        let read = ApiError::unread_body(&e);
        assert_eq!(read.kind(), ErrorKind::BadInput, "{}", read.message());
    }
}

//! The one HTTP error type: client mistakes are 4xx with a helpful message, everything else is
//! a plain 500 whose detail goes to the log only.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::chain::ChainError;
use crate::ipfs::IpfsError;

/// An error answered by the gateway.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or unknown credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// Unknown id (404).
    #[error("{0}")]
    NotFound(String),
    /// The contract rejected the operation (409: the request conflicts with chain state).
    #[error("{0}")]
    Rejected(String),
    /// Payload too large (413).
    #[error("{0}")]
    TooLarge(String),
    /// A backing service (chain node, IPFS, share nodes) is unavailable (503).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (500); the detail is logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ChainError> for ApiError {
    fn from(e: ChainError) -> Self {
        match e {
            ChainError::Rejected(m) => Self::Rejected(m),
            ChainError::NotPermitted(m) => Self::Forbidden(m),
            ChainError::Rpc(m) => Self::Unavailable(format!("chain node unavailable: {m}")),
            ChainError::NoContract(_) | ChainError::WrongDeployment(_) => {
                Self::Unavailable(e.to_string())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<IpfsError> for ApiError {
    fn from(e: IpfsError) -> Self {
        match e {
            IpfsError::NotFound { .. } => Self::NotFound(e.to_string()),
            IpfsError::Unreachable { .. } => Self::Unavailable(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            Self::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.clone()),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            Self::Rejected(m) => (StatusCode::CONFLICT, m.clone()),
            Self::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m.clone()),
            Self::Unavailable(m) => {
                tracing::warn!("service unavailable: {m}");
                (StatusCode::SERVICE_UNAVAILABLE, m.clone())
            }
            Self::Internal(m) => {
                tracing::error!("internal error: {m}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_owned(),
                )
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

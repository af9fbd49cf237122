//! One classification of errors for every front end.
//!
//! Each domain error says what kind of failure it is ([`Classify`]); the REST API, the web
//! pages and the share nodes turn that one kind into their status code, so the same failure
//! gets the same status everywhere. Only this file knows the mapping to HTTP.

use axum::http::StatusCode;

/// What kind of failure an error is, from the caller's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is malformed or out of range: the caller must change it (400).
    BadInput,
    /// Well-formed, but not something this service takes: a reading in the wrong unit, an
    /// impossible value (422).
    Unprocessable,
    /// No or unknown credentials (401).
    Unauthenticated,
    /// Authenticated, but not allowed (403).
    Denied,
    /// The thing named does not exist (404).
    NotFound,
    /// The request conflicts with the current state (taken name, contract rule) (409).
    Conflict,
    /// The body is larger than the limit (413).
    TooLarge,
    /// Too many requests; try later (429).
    TooMany,
    /// A backing service (chain node, IPFS, share nodes, database) is unavailable (503).
    Unavailable,
    /// A fault of ours (500): the detail is logged, never shown.
    Internal,
}

impl ErrorKind {
    /// The HTTP status of this kind.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadInput => StatusCode::BAD_REQUEST,
            Self::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Denied => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict => StatusCode::CONFLICT,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooMany => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The kind of an HTTP status (for errors that arrive as one, such as a share node's
    /// answer or a body-limit rejection).
    pub fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 | 405 | 415 => Self::BadInput,
            422 => Self::Unprocessable,
            401 => Self::Unauthenticated,
            403 => Self::Denied,
            404 => Self::NotFound,
            409 => Self::Conflict,
            413 => Self::TooLarge,
            429 => Self::TooMany,
            502..=504 => Self::Unavailable,
            s if s < 500 => Self::BadInput,
            _ => Self::Internal,
        }
    }
}

/// What a caller is told of a fault of ours (its detail goes to the log only).
pub const INTERNAL: &str = "internal error; it is logged for the operators";

/// An error that knows its [`ErrorKind`] and what may be shown to the caller.
pub trait Classify: std::error::Error {
    /// What kind of failure this is.
    fn kind(&self) -> ErrorKind;

    /// The message for the caller. By default the error's text for the caller's mistakes and
    /// for unavailable services, and a plain sentence for our own faults (whose detail goes
    /// to the log only).
    fn public_message(&self) -> String {
        match self.kind() {
            ErrorKind::Internal => INTERNAL.to_owned(),
            _ => self.to_string(),
        }
    }
}

/// An error and its sources, `: `-joined, for the log (errors that keep their source print
/// only their own line).
pub fn with_sources(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for k in [
            ErrorKind::BadInput,
            ErrorKind::Unauthenticated,
            ErrorKind::Denied,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::TooLarge,
            ErrorKind::TooMany,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
        ] {
            assert_eq!(ErrorKind::of_status(k.status()), k);
        }
    }
}

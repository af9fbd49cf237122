//! The web pages' error: one [`ErrorKind`] (shared with the API and the share nodes) rendered
//! as a page in words, the source kept for the log.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::view::Layout;
use crate::kind::{Classify, ErrorKind};

/// An error page: the caller's mistakes in words with their status, our faults as a plain
/// sentence (the detail goes to the log).
#[derive(Debug)]
pub(super) struct WebError {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl WebError {
    /// An error of `kind` with a message for the user.
    pub(super) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Malformed input (400).
    pub(super) fn bad(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }

    /// What kind of failure.
    pub(super) fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for the user.
    pub(super) fn message(&self) -> &str {
        &self.message
    }

    /// The status of this error.
    pub(super) fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// Logs a fault of ours (or of a service we need) with its source chain.
    pub(super) fn log(&self) {
        if self.kind.status().is_server_error() {
            let mut detail = String::new();
            let mut cause: Option<&(dyn std::error::Error + 'static)> = match &self.source {
                Some(s) => Some(s.as_ref()),
                None => None,
            };
            while let Some(c) = cause {
                detail.push_str(": ");
                detail.push_str(&c.to_string());
                cause = c.source();
            }
            tracing::error!(kind = ?self.kind, "web: {}{detail}", self.message);
        }
    }
}

impl<E: Classify + Send + Sync + 'static> From<E> for WebError {
    fn from(e: E) -> Self {
        Self {
            kind: e.kind(),
            message: e.public_message(),
            source: Some(Box::new(e)),
        }
    }
}

/// The API's error as a page: the caller's mistakes in the API's words, our faults as the
/// plain sentence (the API logged their detail).
impl From<crate::gateway::ApiError> for WebError {
    fn from(e: crate::gateway::ApiError) -> Self {
        let message = match e.kind() {
            ErrorKind::Internal => crate::kind::INTERNAL,
            _ => e.message(),
        };
        Self::new(e.kind(), message)
    }
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    message: &'a str,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        self.log();
        let page = ErrorPage {
            layout: Layout::anonymous("Error"),
            message: &self.message,
        };
        match page.render() {
            Ok(html) => (self.status(), Html(html)).into_response(),
            Err(e) => {
                tracing::error!("web: the error page could not be rendered: {e}");
                (self.status(), self.message).into_response()
            }
        }
    }
}

/// A page that could not be rendered is our fault.
impl Classify for askama::Error {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// The web pages' result.
pub(super) type Result<T> = std::result::Result<T, WebError>;

/// Renders a page, or an error page when the template fails.
pub(super) fn page(t: &impl Template) -> Result<Html<String>> {
    Ok(Html(t.render()?))
}

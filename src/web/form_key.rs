//! A key per rendering of a form whose send must not be done twice: the REST API's
//! `Idempotency-Key` (`gateway::idempotency`), carried in a hidden field that the forms' macro
//! `csrf_keyed` writes. A browser that posts the same form again (the user reloads a page
//! whose answer is slow or never came, and the browser sends the form once more; or goes back
//! and sends it again) is answered by what the first send did:
//! - a form that sends a transaction (a grant, a revoke, a break-glass, the office's
//!   decisions, ...): by the first send's transaction ([`name_writes`], the chain client's
//!   ticket), so a break-glass counts once against the doctor's three a day and shows once on
//!   the patient's trail, and a second "issue" or "approve" is not refused as done already;
//! - the upload form: by the first send's record (`upload`).
//!
//! A form rendered anew has a new key: a new request.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::WebState;
use super::error::WebError;
use super::extract::{Signed, check_csrf};
use crate::gateway::{ApiError, NamedWrite};
use crate::kind::ErrorKind;

/// The hidden field that carries a form's key.
pub(super) const FIELD: &str = "idempotency_key";

/// A fresh key for one rendering of a form (the templates call it).
pub(super) fn new() -> String {
    crate::chain::random_b256().to_string()
}

/// The middleware of the forms that send a transaction: a form with a key (and the session's
/// CSRF token; without it nothing is claimed and the handler refuses it) gets its key claimed
/// for the caller's account and the form (its path and fields), and its session the ticket
/// the chain client's write goes out under (`Session::ticket`). Without a database, or
/// without a key, the form passes as it is.
pub(super) async fn name_writes(
    State(state): State<WebState>,
    req: Request,
    next: Next,
) -> Response {
    #[derive(Deserialize)]
    struct Fields {
        #[serde(default)]
        csrf: String,
        #[serde(default)]
        idempotency_key: Option<String>,
    }
    if state.app.database().is_none() {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, super::FORM_LIMIT).await {
        Ok(b) => b,
        Err(e) => return WebError::from(ApiError::unread_body(&e)).into_response(),
    };
    let key = serde_urlencoded::from_bytes::<Fields>(&bytes)
        .ok()
        .and_then(|f| f.idempotency_key.map(|k| (f.csrf, k)));
    let mut named = None;
    if let Some((csrf, key)) = key
        && let Ok(signed) = Signed::from_request_parts(&mut parts, &state).await
        && check_csrf(&signed.session, &csrf).is_ok()
    {
        let fingerprint = crate::gateway::request_fingerprint(&parts, &bytes);
        match NamedWrite::claim_key(
            &state.app,
            &key,
            signed.session.account.address,
            &fingerprint,
        )
        .await
        {
            Ok(n) => {
                parts.extensions.insert(n.ticket());
                named = Some(n);
            }
            Err(e) if e.kind() == ErrorKind::Unprocessable => {
                return WebError::new(
                    ErrorKind::Unprocessable,
                    "this form was sent before with other values; reload the page and fill it in again",
                )
                .into_response();
            }
            Err(e) => return WebError::from(e).into_response(),
        }
    }
    let mut resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if let Some(n) = named
        && n.finish().await
    {
        say_replayed(&mut resp);
    }
    resp
}

/// Adds to a handler's "done" message (the `ok=` of its redirect) that an earlier send of the
/// form did it: the user sees that what is reported is that send, not one just made.
fn say_replayed(resp: &mut Response) {
    let Some(to) = resp
        .headers()
        .get(axum::http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    if !(to.contains("?ok=") || to.contains("&ok=")) {
        return;
    }
    let note = super::view::query_value(" (done by an earlier send of this form)");
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("{to}{note}")) {
        resp.headers_mut().insert(axum::http::header::LOCATION, v);
    }
}

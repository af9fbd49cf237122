//! Who is asking, checked in one place: the session of any user ([`Signed`]), of one role
//! ([`PatientSession`], [`DoctorSession`], [`OfficeSession`]), and forms that carry the
//! session's CSRF token ([`CsrfForm`]).

use std::marker::PhantomData;
use std::ops::Deref;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::WebState;
use super::accounts::Role;
use super::error::WebError;
use super::guard::{cookie, same};
use super::session::{COOKIE, Session};
use crate::chain::PatientAddr;
use crate::kind::ErrorKind;

/// A logged-in user of any role (from the session cookie); others are sent to the login page.
#[derive(Clone)]
pub(super) struct Signed {
    /// The session.
    pub(super) session: Session,
    /// The cookie's token (to end the session).
    pub(super) token: String,
}

impl FromRequestParts<WebState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Self, Self::Rejection> {
        // Looked up once per request: the role check and the CSRF form both need it.
        if let Some(s) = parts.extensions.get::<Self>() {
            return Ok(s.clone());
        }
        let Some(token) = cookie(&parts.headers, COOKIE) else {
            return Err(Redirect::to("/").into_response());
        };
        match state.sessions.get(&token).await {
            Ok(Some(session)) => {
                let s = Self { session, token };
                parts.extensions.insert(s.clone());
                Ok(s)
            }
            Ok(None) => Err(Redirect::to("/").into_response()),
            Err(e) => Err(WebError::from(e).into_response()),
        }
    }
}

/// A role a page is for.
pub(super) trait PageRole: Send + Sync {
    /// The role.
    const ROLE: Role;
}

/// Pages of patients.
pub(super) enum ForPatient {}
/// Pages of doctors and other providers.
pub(super) enum ForDoctor {}
/// Pages of the records office.
pub(super) enum ForOffice {}

impl PageRole for ForPatient {
    const ROLE: Role = Role::Patient;
}
impl PageRole for ForDoctor {
    const ROLE: Role = Role::Provider;
}
impl PageRole for ForOffice {
    const ROLE: Role = Role::Office;
}

/// The session of a user in role `R`; any other role gets 403 here, before the handler runs.
pub(super) struct InRole<R>(Session, PhantomData<R>);

/// A patient's session.
pub(super) type PatientSession = InRole<ForPatient>;
/// A doctor's (provider's) session.
pub(super) type DoctorSession = InRole<ForDoctor>;
/// The records office's session.
pub(super) type OfficeSession = InRole<ForOffice>;

impl<R> Deref for InRole<R> {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.0
    }
}

impl<R: PageRole> FromRequestParts<WebState> for InRole<R> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Self, Self::Rejection> {
        let s = Signed::from_request_parts(parts, state).await?;
        if s.session.account.role == R::ROLE {
            let mut session = s.session;
            session.ticket = parts.extensions.get::<crate::chain::Ticket>().cloned();
            Ok(Self(session, PhantomData))
        } else {
            Err(WebError::new(ErrorKind::Denied, "this page is for another role").into_response())
        }
    }
}

impl PatientSession {
    /// The patient's address (every patient account asks for one at sign-up).
    pub(super) fn addr(&self) -> Result<PatientAddr, WebError> {
        self.0
            .account
            .patient
            .ok_or_else(|| WebError::bad("account has no patient address"))
    }
}

/// Refusal of a form without the session's CSRF token.
pub(super) fn csrf_refused() -> WebError {
    WebError::new(
        ErrorKind::Denied,
        "the form expired or did not come from this site; reload the page",
    )
}

/// Checks a posted CSRF token against the session's.
pub(super) fn check_csrf(s: &Session, given: &str) -> Result<(), WebError> {
    if same(given, &s.csrf) {
        Ok(())
    } else {
        Err(csrf_refused())
    }
}

/// A URL-encoded form of a logged-in user, accepted only with the session's CSRF token in its
/// `csrf` field; `T` gets the other fields.
pub(super) struct CsrfForm<T>(pub(super) T);

impl<T: DeserializeOwned + Send> FromRequest<WebState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &WebState) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct Token {
            #[serde(default)]
            csrf: String,
        }
        let (mut parts, body) = req.into_parts();
        let signed = Signed::from_request_parts(&mut parts, state).await?;
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let token: Token = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| WebError::bad(format!("the form is not valid: {e}")).into_response())?;
        check_csrf(&signed.session, &token.csrf).map_err(IntoResponse::into_response)?;
        serde_urlencoded::from_bytes(&bytes)
            .map(Self)
            .map_err(|e| WebError::bad(format!("the form is not valid: {e}")).into_response())
    }
}

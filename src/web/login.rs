//! Before a session: the login page, sign-up, and logout. These forms carry a double-submit
//! form token (there is no session CSRF token yet) and go through the guard's rate limits.

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::WebState;
use super::accounts::{Account, AccountError, Role};
use super::error::{Result, WebError, page};
use super::extract::{CsrfForm, Signed};
use super::guard::{ClientAddr, Refused, form_token, form_token_ok, over_https};
use super::session::{clear_cookie, set_cookie};
use super::view::{Flash, Layout, Notice, back};
use crate::chain::PatientAddr;
use crate::kind::ErrorKind;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    layout: Layout,
    notice: Option<Flash>,
    username: &'a str,
    form_token: &'a str,
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage<'a> {
    layout: Layout,
    notice: Option<Flash>,
    form: &'a SignupForm,
    provider: bool,
}

fn login_page(notice: Option<Flash>, username: &str, form_token: &str) -> Result<Html<String>> {
    page(&LoginPage {
        layout: Layout::anonymous("Welcome"),
        notice,
        username,
        form_token,
    })
}

fn signup_page(notice: Option<Flash>, form: &SignupForm) -> Result<Html<String>> {
    page(&SignupPage {
        layout: Layout::anonymous("Sign up"),
        notice,
        form,
        provider: form.role == Some(Role::Provider),
    })
}

/// The page of each role.
pub(super) fn home_for(role: Role) -> &'static str {
    match role {
        Role::Patient => "/patient",
        Role::Provider => "/doctor",
        Role::Office => "/office",
    }
}

/// Adds the pre-session form cookie to a response when it was just made.
fn with_form_cookie(page: impl IntoResponse, set: Option<String>) -> Response {
    let mut resp = page.into_response();
    if let Some(v) = set.and_then(|v| HeaderValue::from_str(&v).ok()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// Whether cookies must be `Secure`: configured, or the request came over HTTPS.
fn secure(state: &WebState, headers: &HeaderMap) -> bool {
    state.secure_cookies || over_https(headers)
}

/// The refusal of a guarded form: 429 with `Retry-After`, or 503 when the KDF is saturated.
pub(super) fn refused(r: Refused) -> (StatusCode, Option<u64>, String) {
    match r {
        Refused::TooMany(wait) => {
            let secs = crate::limits::retry_after_secs(wait);
            (
                StatusCode::TOO_MANY_REQUESTS,
                Some(secs),
                format!("too many attempts; try again in {secs} s"),
            )
        }
        Refused::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(5),
            "the server is busy; try again in a few seconds".into(),
        ),
    }
}

/// A guard refusal as an error page.
pub(super) fn refusal_error(r: Refused) -> WebError {
    let (status, _, m) = refused(r);
    WebError::new(ErrorKind::of_status(status), m)
}

fn with_retry_after(mut resp: Response, secs: Option<u64>) -> Response {
    if let Some(secs) = secs {
        resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    resp
}

/// `GET /`: the login page.
pub(super) async fn home(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(n): Query<Notice>,
) -> Response {
    let (token, set) = form_token(&headers, secure(&state, &headers));
    with_form_cookie(login_page(n.flash(), "", &token), set)
}

/// Login form.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    form_token: String,
    username: String,
    password: String,
}

/// `POST /login`.
pub(super) async fn login(
    State(state): State<WebState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let (token, set) = form_token(&headers, secure(&state, &headers));
    let again = |status: StatusCode, m: &str, retry: Option<u64>| {
        with_retry_after(
            with_form_cookie(
                (status, login_page(Some(Flash::err(m)), &f.username, &token)),
                set.clone(),
            ),
            retry,
        )
    };
    if !form_token_ok(&headers, &f.form_token) {
        return again(
            StatusCode::FORBIDDEN,
            "the form expired or did not come from this site; try again",
            None,
        );
    }
    if let Err(r) = state.guard.login(&f.username, client) {
        let (status, retry, m) = refused(r);
        tracing::warn!(user = %f.username.chars().take(64).collect::<String>(), ?client, "login refused: {m}");
        return again(status, &m, retry);
    }
    let _slot = match state.guard.kdf().await {
        Ok(p) => p,
        Err(r) => {
            let (status, retry, m) = refused(r);
            return again(status, &m, retry);
        }
    };
    match state.accounts.login(&f.username, &f.password).await {
        Ok((account, signer)) => {
            state.guard.login_ok(&f.username, client);
            start_session(&state, &headers, account, signer)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
        // The form again with the message, the name kept (a redirect cannot carry a 401).
        Err(e @ AccountError::BadLogin) => {
            state.guard.login_failed(&f.username, client);
            again(StatusCode::UNAUTHORIZED, &e.to_string(), None)
        }
        Err(e) => WebError::from(e).into_response(),
    }
}

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
pub(super) struct Nothing {}

/// `POST /logout`.
pub(super) async fn logout(
    State(state): State<WebState>,
    signed: Signed,
    CsrfForm(Nothing {}): CsrfForm<Nothing>,
) -> Result<Response> {
    state.sessions.end(&signed.token).await?;
    let mut resp = back("/", true, "logged out").into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// `GET /signup`.
pub(super) async fn signup_form(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(n): Query<Notice>,
) -> Response {
    let (token, set) = form_token(&headers, secure(&state, &headers));
    let f = SignupForm {
        form_token: token,
        ..SignupForm::default()
    };
    with_form_cookie(signup_page(n.flash(), &f), set)
}

/// Sign-up form; after an error it is shown again with what was typed (but the password).
#[derive(Deserialize, Default, Clone)]
pub(super) struct SignupForm {
    #[serde(default)]
    form_token: String,
    username: String,
    password: String,
    role: Option<Role>,
    #[serde(default)]
    aid: String,
    #[serde(default)]
    pid: String,
    #[serde(default)]
    full_name: String,
    #[serde(default)]
    organisation: String,
    #[serde(default)]
    licence: String,
}

/// `POST /signup`.
pub(super) async fn signup(
    State(state): State<WebState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<SignupForm>,
) -> Response {
    let (token, set) = form_token(&headers, secure(&state, &headers));
    let typed = SignupForm {
        password: String::new(),
        form_token: token,
        ..f.clone()
    };
    let again = |status: StatusCode, m: &str, retry: Option<u64>| {
        with_retry_after(
            with_form_cookie(
                (status, signup_page(Some(Flash::err(m)), &typed)),
                set.clone(),
            ),
            retry,
        )
    };
    if !form_token_ok(&headers, &f.form_token) {
        return again(
            StatusCode::FORBIDDEN,
            "the form expired or did not come from this site; try again",
            None,
        );
    }
    if let Err(r) = state.guard.signup(client) {
        let (status, retry, m) = refused(r);
        return again(status, &m, retry);
    }
    match do_signup(&state, &headers, f).await {
        Ok(r) => r,
        Err(e) => {
            e.log();
            again(e.status(), e.message(), None)
        }
    }
}

/// A sign-up's name taken: also the answer to a sign-up the browser sent again after its
/// answer was lost, so it says where that user goes.
fn taken(username: &str) -> WebError {
    WebError::new(
        ErrorKind::Conflict,
        format!(
            "username {username:?} is taken; if you just signed up under it, your account was made: log in"
        ),
    )
}

async fn do_signup(state: &WebState, headers: &HeaderMap, f: SignupForm) -> Result<Response> {
    let role = match f.role {
        Some(r @ (Role::Patient | Role::Provider)) => r,
        _ => return Err(WebError::bad("role must be patient or provider")),
    };
    let patient = if role == Role::Patient {
        let a = format!("{}-{}", f.aid.trim(), f.pid.trim());
        Some(
            a.parse::<PatientAddr>()
                .map_err(|e| WebError::bad(e.to_string()))?,
        )
    } else {
        None
    };
    let profile = if role == Role::Provider {
        Some(
            crate::web::ProviderProfile::new(&f.full_name, &f.organisation, &f.licence)
                .map_err(|e| WebError::bad(format!("provider {e}")))?,
        )
    } else {
        None
    };
    let base = state.chain()?;
    if let Some(addr) = patient
        && base.patient_account(addr).await?.is_some()
    {
        return Err(WebError::new(
            ErrorKind::Conflict,
            format!("patient address {addr} is already registered"),
        ));
    }
    if state.accounts.exists(&f.username).await? {
        return Err(taken(&f.username));
    }
    // A KDF slot only for the keystore's encryption, not for the chain calls after it.
    let slot = state.guard.kdf().await.map_err(refusal_error)?;
    let created = state
        .accounts
        .create(&f.username, &f.password, role, patient, None)
        .await;
    drop(slot);
    // Taken between the look above and here: a sign-up sent again while the first still ran.
    let (account, signer) = created.map_err(|e| match e {
        crate::web::AccountError::Taken(name) => taken(&name),
        e => e.into(),
    })?;
    // The account exists on disk only if its chain registration landed: a failure here removes
    // it again, so no half-made user is left behind.
    let registered = async {
        if let Some(faucet) = &state.danger_dev_faucet {
            base.with_signer(state.app.rpc_url(), faucet.clone())?
                .send_value(signer.address(), U256::from(10u128.pow(18)))
                .await?;
        }
        // A patient's address is issued by the records office (it lists waiting patients);
        // a provider registers and waits for verification.
        if patient.is_none() {
            base.with_signer(state.app.rpc_url(), signer.clone())?
                .register_provider()
                .await?;
        }
        Ok::<(), crate::chain::ChainError>(())
    }
    .await;
    let registered = match (registered, profile) {
        (Ok(()), Some(p)) => state
            .accounts
            .set_profile(&account.username, p)
            .await
            .map_err(WebError::from),
        (r, _) => r.map_err(WebError::from),
    };
    if let Err(e) = registered {
        if let Err(rm) = state.accounts.remove(&account.username).await {
            tracing::error!("could not roll back account {}: {rm}", account.username);
        }
        return Err(e);
    }
    start_session(state, headers, account, signer).await
}

/// Starts a session for a user who just logged in or signed up: the cookie and a redirect to
/// their role's home page.
async fn start_session(
    state: &WebState,
    headers: &HeaderMap,
    account: Account,
    signer: PrivateKeySigner,
) -> Result<Response> {
    let to = home_for(account.role);
    let token = state.sessions.start(&account, &signer).await?;
    let mut resp = Redirect::to(to).into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(&token, secure(state, headers))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

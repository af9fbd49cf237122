//! Page handlers, one per screen or form.

use std::fmt::Write as _;

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use axum::Form;
use axum::extract::{FromRequestParts, Multipart, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::WebState;
use super::accounts::{Account, AccountError, Role};
use super::guard::{ClientAddr, Refused, cookie, form_token, form_token_ok, over_https, same};
use super::html::{esc, msg, page, short, time};
use super::session::{COOKIE, Session, clear_cookie, set_cookie};
use crate::chain::{
    AuditEvent, AuditFilter, AuditKind, EhrChain, EmergencyReason, GrantState, PatientAddr,
    ProviderStatus, RecordId,
};
use crate::records::{Directory, FHIR_JSON, RecordError, RecordsClient};

/// An error page: client mistakes in words with their status, internal ones as a plain message.
pub(super) struct WebError(StatusCode, String);

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            tracing::error!("web error: {}", self.1);
        }
        let body = format!("{}<p><a href=\"/\">Back</a></p>", msg(false, &self.1));
        (self.0, Html(page("Error", None, &body))).into_response()
    }
}

impl From<crate::chain::ChainError> for WebError {
    fn from(e: crate::chain::ChainError) -> Self {
        match e {
            crate::chain::ChainError::Rejected(m) => Self(StatusCode::CONFLICT, m),
            crate::chain::ChainError::NotPermitted(m) => Self(StatusCode::FORBIDDEN, m),
            other => Self(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the chain is not available: {other}"),
            ),
        }
    }
}

impl From<AccountError> for WebError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::BadLogin => Self(StatusCode::UNAUTHORIZED, e.to_string()),
            AccountError::Taken(_) => Self(StatusCode::CONFLICT, e.to_string()),
            AccountError::Invalid(_) => Self(StatusCode::BAD_REQUEST, e.to_string()),
            // The details go to the log; the user learns only that it is not their mistake.
            AccountError::Storage(_) => {
                tracing::error!("web: {e}");
                Self(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is not available; try again shortly".into(),
                )
            }
            AccountError::Keystore { .. } => {
                tracing::error!("web: {e}");
                Self(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "your account's key could not be opened; contact the administrator".into(),
                )
            }
        }
    }
}

impl From<RecordError> for WebError {
    fn from(e: RecordError) -> Self {
        let status = match &e {
            RecordError::NotFound(_) => StatusCode::NOT_FOUND,
            RecordError::Denied(..) => StatusCode::FORBIDDEN,
            RecordError::InvalidFhir(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self(status, e.to_string())
    }
}

type Result<T> = std::result::Result<T, WebError>;

fn bad(m: impl Into<String>) -> WebError {
    WebError(StatusCode::BAD_REQUEST, m.into())
}

/// The logged-in user (from the session cookie); others are sent to the login page.
pub(super) struct Auth(Session, String);

impl FromRequestParts<WebState> for Auth {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> std::result::Result<Self, Self::Rejection> {
        let Some(token) = cookie(&parts.headers, COOKIE) else {
            return Err(Redirect::to("/").into_response());
        };
        match state.sessions.get(&token).await {
            Ok(Some(s)) => Ok(Self(s, token)),
            Ok(None) => Err(Redirect::to("/").into_response()),
            Err(e) => Err(WebError::from(e).into_response()),
        }
    }
}

fn need(s: &Session, role: Role) -> Result<()> {
    if s.account.role == role {
        Ok(())
    } else {
        Err(WebError(
            StatusCode::FORBIDDEN,
            "this page is for another role".into(),
        ))
    }
}

fn csrf(s: &Session, given: &str) -> Result<()> {
    if same(given, &s.csrf) {
        Ok(())
    } else {
        Err(WebError(
            StatusCode::FORBIDDEN,
            "the form expired or did not come from this site; reload the page".into(),
        ))
    }
}

fn chain(state: &WebState, s: &Session) -> Result<EhrChain> {
    let c = state.app.chain().ok_or_else(|| {
        WebError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no contract deployed".into(),
        )
    })?;
    Ok(c.with_signer(state.app.rpc_url(), s.signer.clone())?)
}

fn user_page(s: &Session, title: &str, body: &str) -> Html<String> {
    let who = format!(
        "{} ({})",
        s.account.username,
        short(&s.account.address.to_string())
    );
    Html(page(title, Some((&who, &s.csrf)), body))
}

fn hidden(s: &Session) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        esc(&s.csrf)
    )
}

fn home_for(role: Role) -> &'static str {
    match role {
        Role::Patient => "/patient",
        Role::Provider => "/doctor",
        Role::Office => "/office",
    }
}

/// Notice shown after a redirect.
#[derive(Deserialize, Default)]
pub(super) struct Notice {
    #[serde(default)]
    ok: Option<String>,
    #[serde(default)]
    err: Option<String>,
    /// Audit view: which events.
    #[serde(default)]
    kind: Option<String>,
    /// Audit view: page number from 0.
    #[serde(default)]
    page: Option<usize>,
}

impl Notice {
    fn html(&self) -> String {
        self.ok
            .as_deref()
            .map(|m| msg(true, m))
            .or_else(|| self.err.as_deref().map(|m| msg(false, m)))
            .unwrap_or_default()
    }
}

fn back(to: &str, ok: bool, text: &str) -> Redirect {
    let q: String = url_encode(text);
    Redirect::to(&format!(
        "{to}{}{}={q}",
        if to.contains('?') { "&" } else { "?" },
        if ok { "ok" } else { "err" }
    ))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ------------------------------------------------------------------ login / sign-up

pub(super) async fn home(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(n): Query<Notice>,
) -> Response {
    let (token, set) = form_token(&headers, secure(&state, &headers));
    with_form_cookie(login_page(&n.html(), "", &token), set)
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

fn login_page(notice: &str, username: &str, form_token: &str) -> Html<String> {
    let body = format!(
        r#"{notice}<section><h2>Log in</h2><form method="post" action="/login" class="row">
<input type="hidden" name="form_token" value="{}">
<label>User<br><input name="username" autocomplete="username" required value="{}"></label>
<label>Password<br><input name="password" type="password" autocomplete="current-password" required></label>
<button>Log in</button></form><p>New here? <a href="/signup">Sign up</a> as a patient or a provider.</p></section>"#,
        esc(form_token),
        esc(username)
    );
    Html(page("Welcome", None, &body))
}

/// Login form.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    form_token: String,
    username: String,
    password: String,
}

/// The refusal of a guarded form: 429 with `Retry-After`, or 503 when the KDF is saturated.
fn refused(r: Refused) -> (StatusCode, Option<u64>, String) {
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

fn with_retry_after(mut resp: Response, secs: Option<u64>) -> Response {
    if let Some(secs) = secs {
        resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    resp
}

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
                (status, login_page(&msg(false, m), &f.username, &token)),
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

pub(super) async fn logout(
    State(state): State<WebState>,
    Auth(s, token): Auth,
    Form(f): Form<CsrfOnly>,
) -> Result<Response> {
    csrf(&s, &f.csrf)?;
    state.sessions.end(&token).await?;
    let mut resp = back("/", true, "logged out").into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
pub(super) struct CsrfOnly {
    csrf: String,
}

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
    with_form_cookie(signup_page(&n.html(), &f), set)
}

/// The sign-up form; after an error it is shown again with what was typed (but the password).
fn signup_page(notice: &str, f: &SignupForm) -> Html<String> {
    let selected = |r: &str| if f.role == r { " selected" } else { "" };
    let body = format!(
        r#"{notice}<section><h2>Sign up</h2><form method="post" action="/signup" data-busy>
<input type="hidden" name="form_token" value="{token}">
<p><label>User name<br><input name="username" required minlength="3" maxlength="32" pattern="[A-Za-z0-9_-]+" value="{user}"></label></p>
<p><label>Password (at least 10 characters; it unlocks your key, we never store it)<br><input name="password" type="password" minlength="10" required autocomplete="new-password"></label></p>
<p><label>I am a<br><select name="role"><option value="patient"{p}>patient</option><option value="provider"{d}>doctor / provider</option></select></label></p>
<p class="row"><label>Patient address: area id<br><input name="aid" inputmode="numeric" value="{aid}"></label><label>patient id<br><input name="pid" inputmode="numeric" value="{pid}"></label></p>
<p><small>Patients: the codes the records office gave you (no names, no social security numbers). Providers: leave empty; the records office verifies you.</small></p>
<fieldset><legend>Providers: who you are (shown to the records office and to patients)</legend>
<p class="row"><label>Full name<br><input name="full_name" maxlength="100" value="{full_name}"></label><label>Organisation<br><input name="organisation" maxlength="100" value="{organisation}"></label><label>Licence number<br><input name="licence" maxlength="100" value="{licence}"></label></p></fieldset>
<button>Create account</button> <span class="busy">Creating your account on the chain…</span></form></section>"#,
        user = esc(&f.username),
        p = selected("patient"),
        d = selected("provider"),
        aid = esc(&f.aid),
        pid = esc(&f.pid),
        token = esc(&f.form_token),
        full_name = esc(&f.full_name),
        organisation = esc(&f.organisation),
        licence = esc(&f.licence),
    );
    Html(page("Sign up", None, &body))
}

/// Sign-up form.
#[derive(Deserialize, Default, Clone)]
pub(super) struct SignupForm {
    #[serde(default)]
    form_token: String,
    username: String,
    password: String,
    role: String,
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
            with_form_cookie((status, signup_page(&msg(false, m), &typed)), set.clone()),
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
        Err(WebError(status, m)) => {
            if status.is_server_error() {
                tracing::error!("sign-up failed: {m}");
            }
            again(status, &m, None)
        }
    }
}

async fn do_signup(state: &WebState, headers: &HeaderMap, f: SignupForm) -> Result<Response> {
    let role = match f.role.as_str() {
        "patient" => Role::Patient,
        "provider" => Role::Provider,
        _ => return Err(bad("role must be patient or provider")),
    };
    let patient = if role == Role::Patient {
        let a = format!("{}-{}", f.aid.trim(), f.pid.trim());
        Some(a.parse::<PatientAddr>().map_err(|e| bad(e.to_string()))?)
    } else {
        None
    };
    let profile = if role == Role::Provider {
        Some(
            crate::web::ProviderProfile::new(&f.full_name, &f.organisation, &f.licence)
                .map_err(|e| bad(format!("provider {e}")))?,
        )
    } else {
        None
    };
    let base = state.app.chain().ok_or_else(|| {
        WebError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no contract deployed".into(),
        )
    })?;
    if let Some(addr) = patient
        && base.patient_account(addr).await?.is_some()
    {
        return Err(WebError(
            StatusCode::CONFLICT,
            format!("patient address {addr} is already registered"),
        ));
    }
    if state.accounts.exists(&f.username).await? {
        return Err(WebError(
            StatusCode::CONFLICT,
            format!("username {:?} is taken", f.username),
        ));
    }
    // A KDF slot only for the keystore's encryption, not for the chain calls after it.
    let slot = state.guard.kdf().await.map_err(|r| {
        let (status, _, m) = refused(r);
        WebError(status, m)
    })?;
    let created = state
        .accounts
        .create(&f.username, &f.password, role, patient, None)
        .await;
    drop(slot);
    let (account, signer) = created?;
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

fn patient_addr(s: &str) -> Result<PatientAddr> {
    s.parse()
        .map_err(|e: crate::chain::InvalidPatientAddr| bad(e.to_string()))
}

// ------------------------------------------------------------------ shared views

fn audit_table(events: &[AuditEvent]) -> String {
    let mut t = String::from(
        "<table><tr><th>When</th><th>Event</th><th>Who</th><th>Details</th><th>Tx</th></tr>",
    );
    for e in events {
        let (name, who, details) = describe(&e.kind);
        let cls = if e.kind.is_denial() {
            r#" class="denied""#
        } else {
            ""
        };
        let _ = write!(
            t,
            "<tr{cls}><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td><code title=\"{tx}\">{}</code></td></tr>",
            e.timestamp.map(time).unwrap_or_default(),
            esc(name),
            esc(&who),
            esc(&details),
            esc(&short(
                &e.tx_hash.map(|h| h.to_string()).unwrap_or_default()
            )),
            tx = e.tx_hash.map(|h| h.to_string()).unwrap_or_default(),
        );
    }
    t.push_str("</table>");
    if events.is_empty() {
        t.push_str("<p>No events yet.</p>");
    }
    t
}

fn describe(k: &AuditKind) -> (&'static str, String, String) {
    let p = |p: &Option<PatientAddr>| p.map(|a| a.to_string()).unwrap_or_default();
    match k {
        AuditKind::ManagerTransferred { manager } => {
            ("Records office set", manager.to_string(), String::new())
        }
        AuditKind::PatientRegistered { patient, account } => {
            ("Patient registered", account.to_string(), p(patient))
        }
        AuditKind::ProviderRegistered { provider } => {
            ("Provider registered", provider.to_string(), String::new())
        }
        AuditKind::ProviderVerified { provider } => {
            ("Provider verified", provider.to_string(), String::new())
        }
        AuditKind::ProviderSuspended { provider } => {
            ("Provider suspended", provider.to_string(), String::new())
        }
        AuditKind::AccessRequested { patient, provider } => {
            ("Access requested", provider.to_string(), p(patient))
        }
        AuditKind::RequestDeclined { patient, provider } => {
            ("Request declined", provider.to_string(), p(patient))
        }
        AuditKind::GrantIssued {
            patient,
            provider,
            expires_at,
        } => (
            "Access granted",
            provider.to_string(),
            match expires_at {
                Some(t) => format!("{} until {}", p(patient), time(*t)),
                None => format!("{}, open-ended", p(patient)),
            },
        ),
        AuditKind::GrantRevoked { patient, provider } => {
            ("Access revoked", provider.to_string(), p(patient))
        }
        AuditKind::Anchored {
            root,
            anchorer,
            count,
        } => (
            "Records anchored",
            anchorer.to_string(),
            format!(
                "{count} record{} under root {}",
                if *count == 1 { "" } else { "s" },
                short(&root.to_string())
            ),
        ),
        AuditKind::AccessAllowed {
            patient,
            provider,
            record,
            emergency,
        } => (
            if *emergency {
                "Read (BREAK-GLASS)"
            } else {
                "Read"
            },
            provider.to_string(),
            format!("{} record {}", p(patient), short(&record.to_string())),
        ),
        AuditKind::AccessDenied {
            patient,
            provider,
            record,
            reason,
            denied_count,
        } => (
            "ACCESS DENIED",
            provider.to_string(),
            format!(
                "{} record {}: {reason} (attempt {denied_count})",
                p(patient),
                short(&record.to_string())
            ),
        ),
        AuditKind::BreakGlassOpened {
            patient,
            provider,
            reason,
            until,
            overrides_revoke,
        } => (
            if *overrides_revoke {
                "BREAK-GLASS opened (overrides your revoke)"
            } else {
                "BREAK-GLASS opened"
            },
            provider.to_string(),
            format!(
                "{} reason {} until {}",
                p(patient),
                reason.map_or_else(|| "unknown".to_owned(), |r| r.to_string()),
                time(*until)
            ),
        ),
        AuditKind::BreakGlassEnded { patient, provider } => (
            "Emergency access ended by the patient",
            provider.to_string(),
            p(patient),
        ),
        AuditKind::Other { name } => ("Other", String::new(), name.clone()),
    }
}

/// What the patient's record list shows besides the chain's anchor: from the record's metadata
/// block, which only the patient's own share-node requests may open. Immutable per record, so
/// cached; holds no key, CID or content.
#[derive(Debug, Clone)]
pub(super) struct Listing {
    name: String,
    size: u64,
    media_type: String,
}

/// Listings by record id, shared by all sessions (a listing is only shown to its patient).
#[derive(Debug, Clone, Default)]
pub(super) struct ListingCache(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<RecordId, Listing>>>,
);

impl ListingCache {
    fn get(&self, id: RecordId) -> Option<Listing> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    fn put(&self, id: RecordId, l: Listing) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, l);
    }
}

/// The newest records the pages list.
const LIST_LIMIT: u64 = 50;

fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

async fn records_table(
    dir: &Directory,
    addr: PatientAddr,
    open_prefix: &str,
    listing: Option<(&RecordsClient, &ListingCache)>,
) -> Result<String> {
    let all = dir.list(addr).await?;
    let count = all.len() as u64;
    let newest = &all[all.len().saturating_sub(LIST_LIMIT as usize)..];
    let ids: Vec<RecordId> = newest.iter().map(|r| r.record).collect();
    // The patient's listing: metadata of the uncached records, gathered concurrently.
    if let Some((rc, cache)) = listing {
        let missing: Vec<RecordId> = ids
            .iter()
            .copied()
            .filter(|id| cache.get(*id).is_none())
            .collect();
        let found = futures::future::join_all(missing.iter().map(|id| rc.metadata(*id))).await;
        for (id, m) in missing.into_iter().zip(found) {
            match m {
                Ok(b) => cache.put(
                    id,
                    Listing {
                        name: b.file_name.unwrap_or_else(|| "record".into()),
                        size: b.size,
                        media_type: b.media_type,
                    },
                ),
                Err(e) => tracing::warn!("listing of record {id} unavailable: {e}"),
            }
        }
    }
    let mut t = String::from(
        "<table><tr><th>Record</th><th>File</th><th>Size</th><th>Added</th><th>Author</th><th></th></tr>",
    );
    for r in newest.iter().rev() {
        let id = &r.record;
        let author = r.proof.author;
        let (name, size) = match listing.and_then(|(_, cache)| cache.get(*id)) {
            Some(l) => (
                format!("{} <small>({})</small>", esc(&l.name), esc(&l.media_type)),
                human_size(l.size),
            ),
            None if listing.is_some() => ("<em>unavailable</em>".to_owned(), String::new()),
            None => ("<em>encrypted</em>".to_owned(), String::new()),
        };
        let _ = write!(
            t,
            r#"<tr><td><code title="{id}">{}</code></td><td>{name}</td><td>{size}</td><td>{}</td><td><code title="{author}">{}</code></td><td><a href="{open_prefix}/{id}" data-open>Open</a></td></tr>"#,
            esc(&short(&id.to_string())),
            time(r.stored_at),
            esc(&short(&author.to_string())),
        );
    }
    t.push_str("</table>");
    if ids.is_empty() {
        t.push_str("<p>No records yet.</p>");
    } else if count > LIST_LIMIT {
        let _ = write!(t, "<p>The newest {LIST_LIMIT} of {count} records.</p>");
    }
    t.push_str(OPENING_JS);
    Ok(t)
}

/// Progress feedback on "Open": a read runs an access transaction and gathers shares.
const OPENING_JS: &str = "<script>document.querySelectorAll('a[data-open]').forEach(a=>a.addEventListener('click',()=>{a.textContent='Opening… (access check, gathering shares)'}))</script>";

/// Where records sit and which a patient has (no signer needed).
fn directory(state: &WebState) -> Result<Directory> {
    let cfg = state.app.records().ok_or_else(|| {
        WebError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no share nodes configured".into(),
        )
    })?;
    let chain = state.app.chain().ok_or_else(|| {
        WebError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no contract deployed".into(),
        )
    })?;
    Ok(cfg.directory(chain.clone(), state.app.http().clone()))
}

fn records_client(state: &WebState, s: &Session) -> Result<RecordsClient> {
    let cfg = state.app.records().ok_or_else(|| {
        WebError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no share nodes configured".into(),
        )
    })?;
    Ok(cfg.client(chain(state, s)?, s.signer.clone(), state.app.ipfs().clone())?)
}

// ------------------------------------------------------------------ patient

pub(super) async fn patient(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Query(n): Query<Notice>,
) -> Result<Html<String>> {
    need(&s, Role::Patient)?;
    let addr = s
        .account
        .patient
        .ok_or_else(|| bad("account has no patient address"))?;
    let c = chain(&state, &s)?;
    if c.patient_account(addr).await? != Some(s.account.address) {
        let body = format!(
            r#"{notice}<section><h2>Waiting for the records office</h2><p>Your patient address <strong>{addr}</strong> is not issued to this account yet. The records office confirms it (they may ask you to show who you are); then this page shows your records.</p></section>"#,
            notice = n.html()
        );
        return Ok(user_page(&s, "Patient", &body));
    }
    let h = hidden(&s);
    let emergencies = open_emergencies(&c, addr, &h).await?;
    let profiles = state.accounts.profiles().await?;
    let mut grants =
        String::from("<table><tr><th>Provider</th><th>State</th><th>Expires</th><th></th></tr>");
    for g in c.grants(addr, 0, 200).await? {
        let revoke = if g.state == GrantState::Active {
            format!(
                r#"<form class="inline" method="post" action="/patient/revoke">{h}<input type="hidden" name="provider" value="{p}"><button class="danger" aria-label="Revoke {p}">Revoke</button></form>"#,
                p = g.provider
            )
        } else {
            String::new()
        };
        let _ = write!(
            grants,
            "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>{revoke}</td></tr>",
            who(&profiles, g.provider),
            g.state,
            g.expires_at.map_or("open-ended".into(), time)
        );
    }
    grants.push_str("</table>");
    let mut requests = String::new();
    for r in c.pending_requests(addr, 0, 200).await? {
        let _ = write!(
            requests,
            r#"<tr><td>{}</td><td>{}</td><td><form class="inline" method="post" action="/patient/request">{h}<input type="hidden" name="provider" value="{p}"><button name="decision" value="approve">Approve</button> <button class="secondary" name="decision" value="decline">Decline</button></form></td></tr>"#,
            who(&profiles, r.provider),
            time(r.requested_at),
            p = r.provider
        );
    }
    let requests = if requests.is_empty() {
        "<p>No pending requests.</p>".to_owned()
    } else {
        format!("<table><tr><th>Provider</th><th>Asked</th><th></th></tr>{requests}</table>")
    };
    let (filter, page_no) = audit_view(&n)?;
    let audit = c
        .audit_page_for_patient(addr, filter, page_no * AUDIT_PAGE, AUDIT_PAGE)
        .await?;
    let trail = format!(
        "{}{}{}",
        audit_filters("/patient", filter),
        audit_table(&audit.events),
        pager("/patient", filter, page_no, audit.total)
    );
    let body = format!(
        r#"{emergencies}{notice}<section><h2>My records (patient {addr})</h2>
<form method="post" action="/patient/upload" enctype="multipart/form-data" data-busy class="row">{h}
<label>File (FHIR JSON or any document)<br><input type="file" name="file" required></label>
<button>Upload</button> <span class="busy">Encrypting and storing…</span></form>{records}</section>
<section><h2>Who may see my records</h2>
<form method="post" action="/patient/grant" class="row">{h}<label>Provider account<br><input name="provider" placeholder="0x…" required size="44"></label>
<label>For days (empty = until I revoke)<br><input name="days" inputmode="numeric" size="6"></label><button>Grant access</button></form>{grants}</section>
<section><h2>Pending requests</h2>{requests}</section>
<section id="audit"><h2>My audit trail</h2>{trail}</section>"#,
        notice = n.html(),
        records = {
            let rc = records_client(&state, &s).ok();
            let listing = rc.as_ref().map(|rc| (rc, &state.listing));
            records_table(&directory(&state)?, addr, "/patient/records", listing).await?
        },
    );
    Ok(user_page(&s, "Patient", &body))
}

/// Audit rows per page.
const AUDIT_PAGE: usize = 50;

fn audit_view(n: &Notice) -> Result<(AuditFilter, usize)> {
    let filter = match n.kind.as_deref() {
        None | Some("") => AuditFilter::All,
        Some(k) => k.parse().map_err(bad)?,
    };
    Ok((filter, n.page.unwrap_or(0).min(1_000_000)))
}

/// Links to each kind of event, the current one marked.
fn audit_filters(base: &str, current: AuditFilter) -> String {
    let mut out = String::from(r#"<p class="row">"#);
    for f in AuditFilter::ALL {
        if f == current {
            let _ = write!(out, "<strong>{}</strong> ", esc(f.label()));
        } else {
            let _ = write!(
                out,
                r#"<a href="{base}?kind={}#audit">{}</a> "#,
                f.as_str(),
                esc(f.label())
            );
        }
    }
    out.push_str("</p>");
    out
}

/// Older / newer links through the whole history.
fn pager(base: &str, filter: AuditFilter, page_no: usize, total: usize) -> String {
    let pages = total.div_ceil(AUDIT_PAGE).max(1);
    let mut out = format!(
        r#"<p class="row">Page {} of {pages} ({total} events) "#,
        page_no + 1
    );
    if page_no > 0 {
        let _ = write!(
            out,
            r#"<a href="{base}?kind={}&amp;page={}#audit">Newer</a> "#,
            filter.as_str(),
            page_no - 1
        );
    }
    if page_no + 1 < pages {
        let _ = write!(
            out,
            r#"<a href="{base}?kind={}&amp;page={}#audit">Older</a>"#,
            filter.as_str(),
            page_no + 1
        );
    }
    out.push_str("</p>");
    out
}

/// A banner for every emergency access open on the patient now, each with a button that ends it.
async fn open_emergencies(c: &EhrChain, addr: PatientAddr, h: &str) -> Result<String> {
    let opened = c
        .audit_page_for_patient(addr, AuditFilter::Emergency, 0, 200)
        .await?;
    let mut seen = std::collections::HashSet::new();
    let mut out = String::new();
    for e in &opened.events {
        let AuditKind::BreakGlassOpened {
            provider,
            reason,
            overrides_revoke,
            ..
        } = &e.kind
        else {
            continue;
        };
        if !seen.insert(*provider) {
            continue;
        }
        if let Some(until) = c.emergency_until(addr, *provider).await? {
            let _ = write!(
                out,
                r#"<section class="emergency" role="alert"><h2>Emergency access is open</h2><p>Provider <code>{provider}</code> broke the glass ({}) and can read your records until {}.{}</p>
<form method="post" action="/patient/end-emergency" class="inline">{h}<input type="hidden" name="provider" value="{provider}"><button class="danger">End this emergency access now</button></form></section>"#,
                esc(&reason.map_or_else(|| "unknown reason".to_owned(), |r| r.to_string())),
                time(until),
                if *overrides_revoke {
                    " <strong>You had revoked this provider.</strong>"
                } else {
                    ""
                }
            );
        }
    }
    Ok(out)
}

pub(super) async fn patient_end_emergency(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Form(f): Form<ProviderForm>,
) -> Result<Redirect> {
    need(&s, Role::Patient)?;
    csrf(&s, &f.csrf)?;
    let p = provider_addr(&f.provider)?;
    Ok(match chain(&state, &s)?.end_emergency(p).await {
        Ok(_) => back("/patient", true, &format!("emergency access of {p} ended")),
        Err(e) => back("/patient", false, &e.to_string()),
    })
}

/// Largest file the web upload takes (the form around it gets a little more; see `web::router`).
pub(super) const UPLOAD_LIMIT: usize = 32 * 1024 * 1024;

fn upload_error_too_large() -> WebError {
    WebError(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the file is larger than the {} MiB limit; nothing was stored",
            UPLOAD_LIMIT >> 20
        ),
    )
}

fn upload_error(e: axum::extract::multipart::MultipartError) -> WebError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        upload_error_too_large()
    } else {
        WebError(e.status(), format!("upload failed: {}", e.body_text()))
    }
}

pub(super) async fn patient_upload(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    mut mp: Multipart,
) -> Result<Redirect> {
    need(&s, Role::Patient)?;
    let addr = s
        .account
        .patient
        .ok_or_else(|| bad("account has no patient address"))?;
    let mut csrf_field = String::new();
    let mut file: Option<(String, String, bytes::Bytes)> = None;
    while let Some(field) = mp.next_field().await.map_err(upload_error)? {
        match field.name() {
            Some("csrf") => csrf_field = field.text().await.map_err(|e| bad(e.to_string()))?,
            Some("file") => {
                let name = field.file_name().unwrap_or("record").to_owned();
                let ct = field
                    .content_type()
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                let data = field.bytes().await.map_err(upload_error)?;
                file = Some((name, ct, data));
            }
            _ => {}
        }
    }
    csrf(&s, &csrf_field)?;
    let (name, ct, data) = file.ok_or_else(|| bad("choose a file"))?;
    if data.is_empty() {
        return Ok(back("/patient", false, "the file is empty"));
    }
    if data.len() > UPLOAD_LIMIT {
        return Err(upload_error_too_large());
    }
    let media = if name.ends_with(".json") || ct.contains("json") {
        FHIR_JSON.to_owned()
    } else {
        ct
    };
    match records_client(&state, &s)?
        .put(addr, data, &media, Some(name.clone()))
        .await
    {
        Ok(id) => Ok(back(
            "/patient",
            true,
            &format!("stored {name} as record {id}"),
        )),
        Err(e @ RecordError::InvalidFhir(_)) => Ok(back("/patient", false, &e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Grant form.
#[derive(Deserialize)]
pub(super) struct GrantForm {
    csrf: String,
    provider: String,
    #[serde(default)]
    days: String,
}

fn provider_addr(s: &str) -> Result<Address> {
    s.trim().parse().map_err(|_| {
        bad(format!(
            "{s:?} is not an account address (0x + 40 hex digits)"
        ))
    })
}

pub(super) async fn patient_grant(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Form(f): Form<GrantForm>,
) -> Result<Redirect> {
    need(&s, Role::Patient)?;
    csrf(&s, &f.csrf)?;
    let p = match provider_addr(&f.provider) {
        Ok(p) => p,
        Err(WebError(_, m)) => return Ok(back("/patient", false, &m)),
    };
    let c = chain(&state, &s)?;
    let until = match f.days.trim() {
        "" => None,
        d => match d.parse::<u64>() {
            Ok(d) if d > 0 => Some(c.chain_time().await? + d * 86_400),
            _ => {
                return Ok(back(
                    "/patient",
                    false,
                    "days must be a positive whole number",
                ));
            }
        },
    };
    Ok(match c.grant(p, until).await {
        Ok(_) => back("/patient", true, &format!("granted {p}")),
        Err(e) => back("/patient", false, &e.to_string()),
    })
}

/// A form naming a provider.
#[derive(Deserialize)]
pub(super) struct ProviderForm {
    csrf: String,
    provider: String,
    #[serde(default)]
    decision: String,
}

pub(super) async fn patient_revoke(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Form(f): Form<ProviderForm>,
) -> Result<Redirect> {
    need(&s, Role::Patient)?;
    csrf(&s, &f.csrf)?;
    let p = provider_addr(&f.provider)?;
    Ok(match chain(&state, &s)?.revoke(p).await {
        Ok(_) => back("/patient", true, &format!("revoked {p}")),
        Err(e) => back("/patient", false, &e.to_string()),
    })
}

pub(super) async fn patient_request(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Form(f): Form<ProviderForm>,
) -> Result<Redirect> {
    need(&s, Role::Patient)?;
    csrf(&s, &f.csrf)?;
    let p = provider_addr(&f.provider)?;
    let c = chain(&state, &s)?;
    let r = if f.decision == "approve" {
        c.approve_request(p, None).await
    } else {
        c.decline_request(p).await
    };
    Ok(match r {
        Ok(_) => back(
            "/patient",
            true,
            &format!("{}d the request of {p}", f.decision),
        ),
        Err(e) => back("/patient", false, &e.to_string()),
    })
}

// ------------------------------------------------------------------ doctor

pub(super) async fn doctor(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Query(n): Query<Notice>,
) -> Result<Html<String>> {
    need(&s, Role::Provider)?;
    let c = chain(&state, &s)?;
    let (status, denied) = c.provider_status(s.account.address).await?;
    let status_note = match status {
        ProviderStatus::Verified => format!("Verified provider. Denied attempts on record: {denied}."),
        ProviderStatus::Pending => "Waiting for the records office to verify you; until then you cannot request or open records.".into(),
        ProviderStatus::Suspended => "Your account is suspended by the records office.".into(),
        ProviderStatus::None => "Not registered as a provider.".into(),
    };
    let mut patients = std::collections::BTreeMap::new();
    for e in c
        .audit_for_provider(s.account.address, 0, 200)
        .await?
        .into_iter()
        .rev()
    {
        if let AuditKind::GrantIssued {
            patient: Some(p),
            expires_at,
            ..
        } = e.kind
        {
            patients.insert(p.to_string(), (p, expires_at));
        }
    }
    let mut mine =
        String::from("<table><tr><th>Patient</th><th>Access</th><th>Until</th><th></th></tr>");
    for (p, exp) in patients.values() {
        let (reason, _) = c.check_access(*p, s.account.address).await?;
        let _ = write!(
            mine,
            r#"<tr><td>{p}</td><td>{reason}</td><td>{}</td><td><a href="/doctor/patient?addr={p}">Records</a></td></tr>"#,
            exp.map_or("open-ended".into(), time)
        );
    }
    mine.push_str("</table>");
    let body = format!(
        r#"{}<section><p>{}</p><h2>Find a patient</h2><form method="get" action="/doctor/patient" class="row">
<label>Patient address (AID-PID)<br><input name="addr" placeholder="1-1001" required></label><button>Find</button></form></section>
<section><h2>My patients</h2>{mine}</section>"#,
        n.html(),
        esc(&status_note)
    );
    Ok(user_page(&s, "Doctor", &body))
}

/// `?addr=`.
#[derive(Deserialize)]
pub(super) struct AddrQuery {
    addr: String,
    #[serde(default)]
    ok: Option<String>,
    #[serde(default)]
    err: Option<String>,
}

pub(super) async fn doctor_patient(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Query(q): Query<AddrQuery>,
) -> Result<Html<String>> {
    need(&s, Role::Provider)?;
    let addr = patient_addr(&q.addr)?;
    let c = chain(&state, &s)?;
    if c.patient_account(addr).await?.is_none() {
        return Err(WebError(
            StatusCode::NOT_FOUND,
            format!("no patient is registered at {addr}"),
        ));
    }
    let (reason, emergency) = c.check_access(addr, s.account.address).await?;
    let access = if emergency {
        "BREAK-GLASS access is open (logged for the patient).".to_owned()
    } else {
        format!("Your access: {reason}.")
    };
    let h = hidden(&s);
    let notice = Notice {
        ok: q.ok,
        err: q.err,
        ..Notice::default()
    }
    .html();
    let body = format!(
        r#"{notice}<section><h2>Patient {addr}</h2><p>{access}</p>
<form method="post" action="/doctor/request" class="inline">{h}<input type="hidden" name="addr" value="{addr}"><button>Request access</button></form></section>
<section><h2>Records</h2>{records}</section>
<section><h2>Emergency access</h2><form method="post" action="/doctor/break-glass" class="row">{h}<input type="hidden" name="addr" value="{addr}">
<label>Reason (HL7 PurposeOfUse)<br><select name="reason">{reasons}</select></label>
<button class="danger">Break the glass (1 hour, audited)</button></form></section>"#,
        records = records_table(&directory(&state)?, addr, "/doctor/records", None).await?,
        reasons = EmergencyReason::ALL
            .iter()
            .map(|r| format!(
                r#"<option value="{}">{}</option>"#,
                r.hl7(),
                esc(&r.to_string())
            ))
            .collect::<String>(),
    );
    Ok(user_page(&s, "Doctor", &body))
}

/// A form naming a patient.
#[derive(Deserialize)]
pub(super) struct PatientForm {
    csrf: String,
    addr: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn doctor_request(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Form(f): Form<PatientForm>,
) -> Result<Redirect> {
    need(&s, Role::Provider)?;
    csrf(&s, &f.csrf)?;
    let addr = patient_addr(&f.addr)?;
    let to = format!("/doctor/patient?addr={addr}");
    Ok(match chain(&state, &s)?.request_access(addr).await {
        Ok(_) => back(&to, true, "request sent; the patient will see it"),
        Err(e) => back(&to, false, &e.to_string()),
    })
}

pub(super) async fn doctor_break_glass(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Form(f): Form<PatientForm>,
) -> Result<Redirect> {
    need(&s, Role::Provider)?;
    csrf(&s, &f.csrf)?;
    let addr = patient_addr(&f.addr)?;
    let to = format!("/doctor/patient?addr={addr}");
    let reason: EmergencyReason = f
        .reason
        .parse()
        .map_err(|e: crate::chain::UnknownEmergencyReason| bad(e.to_string()))?;
    Ok(match chain(&state, &s)?.break_glass(addr, reason).await {
        Ok(_) => back(
            &to,
            true,
            "emergency access open for one hour; this is logged for the patient",
        ),
        Err(e) => back(&to, false, &e.to_string()),
    })
}

async fn read(state: &WebState, s: &Session, id: &str) -> Result<crate::records::Retrieved> {
    let id: RecordId = id
        .parse()
        .map_err(|_| bad(format!("{id:?} is not a record id")))?;
    Ok(records_client(state, s)?.get(id).await?)
}

pub(super) async fn doctor_record(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    need(&s, Role::Provider)?;
    record_page(&state, &s, &id, "/doctor").await
}

pub(super) async fn patient_record(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    need(&s, Role::Patient)?;
    record_page(&state, &s, &id, "/patient").await
}

/// One record, read behind one click: for a provider the access transaction, then the shares,
/// the ciphertext and the check against the anchor. FHIR is shown readable, other files
/// download.
async fn record_page(state: &WebState, s: &Session, id: &str, base: &str) -> Result<Response> {
    let r = match read(state, s, id).await {
        Ok(r) => r,
        Err(WebError(StatusCode::FORBIDDEN, m)) => {
            let body = format!(
                "{}<p>The attempt is recorded on chain and the patient sees it in their audit trail.</p><p><a href=\"{base}\">Back</a></p>",
                msg(false, &m)
            );
            return Ok(
                (StatusCode::FORBIDDEN, user_page(s, "Access denied", &body)).into_response(),
            );
        }
        Err(e) => return Err(e),
    };
    let b = &r.block;
    let content = if b.media_type == FHIR_JSON {
        fhir_view(&r.data)
    } else {
        format!(
            r#"<p><a href="{base}/records/{id}/download">Download {}</a></p>"#,
            esc(b.file_name.as_deref().unwrap_or("file"))
        )
    };
    let back_to = if base == "/doctor" {
        format!("/doctor/patient?addr={}", b.patient)
    } else {
        base.to_owned()
    };
    let body = format!(
        r#"<section><h2>Record {}</h2><p>Patient {} · added {} · {} · {}</p>{content}</section><p><a href="{back_to}">Back</a></p>"#,
        esc(&short(id)),
        b.patient,
        time(b.created_at),
        human_size(b.size),
        esc(&b.media_type),
    );
    Ok(user_page(s, "Record", &body).into_response())
}

fn fhir_view(data: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
    let mut out = String::new();
    let mut one = |r: &serde_json::Value| {
        let rt = r["resourceType"].as_str().unwrap_or("?");
        let mut facts = Vec::new();
        for key in [
            "status",
            "id",
            "birthDate",
            "gender",
            "effectiveDateTime",
            "onsetDateTime",
        ] {
            if let Some(x) = r[key].as_str() {
                facts.push(format!("{key}: {x}"));
            }
        }
        if let Some(t) = r["code"]["text"]
            .as_str()
            .or_else(|| r["code"]["coding"][0]["display"].as_str())
        {
            facts.push(format!("code: {t}"));
        }
        if let Some(q) = r["valueQuantity"].as_object() {
            facts.push(format!(
                "value: {} {}",
                q.get("value").map(ToString::to_string).unwrap_or_default(),
                q.get("unit").and_then(|u| u.as_str()).unwrap_or("")
            ));
        }
        if let Some(n) = r["name"][0]["family"].as_str() {
            facts.push(format!(
                "name: {} {}",
                r["name"][0]["given"][0].as_str().unwrap_or(""),
                n
            ));
        }
        if let Some(notes) = r["note"].as_array() {
            for n in notes {
                if let Some(t) = n["text"].as_str() {
                    facts.push(format!("note: {t}"));
                }
            }
        }
        let _ = write!(
            out,
            "<h3>{}</h3><ul>{}</ul>",
            esc(rt),
            facts
                .iter()
                .map(|f| format!("<li>{}</li>", esc(f)))
                .collect::<String>()
        );
    };
    if v["resourceType"] == "Bundle" {
        for e in v["entry"].as_array().into_iter().flatten() {
            one(&e["resource"]);
        }
    } else {
        one(&v);
    }
    let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
    format!(
        "{out}<details><summary>FHIR JSON</summary><pre>{}</pre></details>",
        esc(&pretty)
    )
}

pub(super) async fn doctor_download(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    need(&s, Role::Provider)?;
    download(&state, &s, &id).await
}

pub(super) async fn patient_download(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    need(&s, Role::Patient)?;
    download(&state, &s, &id).await
}

async fn download(state: &WebState, s: &Session, id: &str) -> Result<Response> {
    let r = read(state, s, id).await?;
    let name = r
        .block
        .file_name
        .as_deref()
        .unwrap_or("record")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect::<String>();
    let mut resp = r.data.into_response();
    let ct = HeaderValue::from_str(&r.block.media_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    // Never rendered inline: an uploaded HTML file must not run in the gateway's origin.
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    resp.headers_mut()
        .insert(header::CONTENT_DISPOSITION, disposition);
    resp.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

// ------------------------------------------------------------------ records office

pub(super) async fn office(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Query(n): Query<Notice>,
) -> Result<Html<String>> {
    need(&s, Role::Office)?;
    let c = chain(&state, &s)?;
    let (filter, page_no) = audit_view(&n)?;
    let monitoring = c
        .audit_page_all(filter, page_no * AUDIT_PAGE, AUDIT_PAGE)
        .await?;
    let events = &monitoring.events;
    let h = hidden(&s);
    let waiting = waiting_patients(&state, &c, &h).await?;
    let emergencies = c
        .audit_page_all(AuditFilter::Emergency, 0, AUDIT_PAGE)
        .await?;
    let mut providers =
        String::from("<table><tr><th>Provider</th><th>Status</th><th>Denied</th><th></th></tr>");
    // Waiting providers first: they are what the office acts on.
    let mut rows = Vec::new();
    for provider in c.registered_providers().await? {
        let (st, denied) = c.provider_status(provider).await?;
        rows.push((st != ProviderStatus::Pending, provider, st, denied));
    }
    rows.sort_by_key(|r| r.0);
    let profiles = state.accounts.profiles().await?;
    for (_, provider, st, denied) in rows {
        let mut actions = String::new();
        if st == ProviderStatus::Pending || st == ProviderStatus::Suspended {
            let _ = write!(
                actions,
                r#"<form class="inline" method="post" action="/office/provider">{h}<input type="hidden" name="provider" value="{provider}"><button name="decision" value="verify">Verify</button></form> "#
            );
        }
        if st == ProviderStatus::Pending || st == ProviderStatus::Verified {
            let _ = write!(
                actions,
                r#"<form class="inline" method="post" action="/office/provider">{h}<input type="hidden" name="provider" value="{provider}"><button class="danger" name="decision" value="suspend">Suspend</button></form>"#
            );
        }
        let _ = write!(
            providers,
            "<tr><td>{}</td><td>{st:?}</td><td>{denied}</td><td>{actions}</td></tr>",
            who(&profiles, provider)
        );
    }
    providers.push_str("</table>");
    let ipfs = match state.app.ipfs().version().await {
        Ok(v) => format!("Kubo {} · ok", esc(&v.version)),
        Err(e) => format!("unavailable: {}", esc(&e.to_string())),
    };
    let mut nodes = String::new();
    for node in crate::gateway::share_node_health(&state.app).await {
        let _ = write!(
            nodes,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&node.url),
            node.address,
            if node.ok {
                "ok"
            } else {
                "<strong>DOWN</strong>"
            }
        );
    }
    let denied = events.iter().filter(|e| e.kind.is_denial()).count();
    let body = format!(
        r#"{}<section><h2>Patients waiting for their address</h2>{waiting}</section>
<section><h2>Providers</h2>{providers}</section>
<section><h2>Break-glass review ({} openings, newest first)</h2>{}</section>
<section><h2>Health</h2><p>IPFS: {ipfs}</p><table><tr><th>Share node</th><th>Identity</th><th>Health</th></tr>{nodes}</table></section>
<section id="audit"><h2>Monitoring: transactions ({denied} denied attempts on this page highlighted)</h2>{}{}{}</section>"#,
        n.html(),
        emergencies.total,
        audit_table(&emergencies.events),
        audit_filters("/office", filter),
        audit_table(events),
        pager("/office", filter, page_no, monitoring.total),
    );
    Ok(user_page(&s, "Records office", &body))
}

/// Web patients whose address the office has not issued yet, each with an Issue button.
async fn waiting_patients(state: &WebState, c: &EhrChain, h: &str) -> Result<String> {
    let accounts = state.accounts.list().await?;
    let mut rows = String::new();
    for a in accounts.into_iter().filter(|a| a.role == Role::Patient) {
        let Some(addr) = a.patient else { continue };
        if c.patient_of(a.address).await?.is_some() {
            continue;
        }
        let taken = c.patient_account(addr).await?.is_some();
        let action = if taken {
            "address already issued to another account".to_owned()
        } else {
            format!(
                r#"<form class="inline" method="post" action="/office/patient">{h}<input type="hidden" name="username" value="{}"><button>Issue {addr}</button></form>"#,
                esc(&a.username)
            )
        };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{addr}</td><td><code>{}</code></td><td>{action}</td></tr>",
            esc(&a.username),
            a.address
        );
    }
    Ok(if rows.is_empty() {
        "<p>No patient is waiting.</p>".to_owned()
    } else {
        format!(
            "<table><tr><th>User</th><th>Address asked for</th><th>Account</th><th></th></tr>{rows}</table>"
        )
    })
}

/// The office issues a waiting web patient's address.
#[derive(Deserialize)]
pub(super) struct IssueForm {
    csrf: String,
    username: String,
}

pub(super) async fn office_patient(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Form(f): Form<IssueForm>,
) -> Result<Redirect> {
    need(&s, Role::Office)?;
    csrf(&s, &f.csrf)?;
    let a = state
        .accounts
        .account(&f.username)
        .await?
        .filter(|a| a.role == Role::Patient)
        .ok_or_else(|| {
            WebError(
                StatusCode::NOT_FOUND,
                format!("no patient user {:?}", f.username),
            )
        })?;
    let addr = a
        .patient
        .ok_or_else(|| bad("that user asked for no patient address"))?;
    Ok(
        match chain(&state, &s)?.issue_patient(addr, a.address).await {
            Ok(_) => back("/office", true, &format!("issued {addr} to {}", a.username)),
            Err(e) => back("/office", false, &e.to_string()),
        },
    )
}

pub(super) async fn office_provider(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Form(f): Form<ProviderForm>,
) -> Result<Redirect> {
    need(&s, Role::Office)?;
    csrf(&s, &f.csrf)?;
    let p = provider_addr(&f.provider)?;
    let c = chain(&state, &s)?;
    let r = if f.decision == "verify" {
        c.verify_provider(p).await
    } else {
        c.suspend_provider(p).await
    };
    Ok(match r {
        Ok(_) => back(
            "/office",
            true,
            &format!(
                "{p}: {}",
                if f.decision == "verify" {
                    "verified"
                } else {
                    "suspended"
                }
            ),
        ),
        Err(e) => back("/office", false, &e.to_string()),
    })
}

// ------------------------------------------------------------------ personal API tokens

fn tokens_of(state: &WebState) -> Result<&crate::web::TokenStore> {
    state.tokens.as_ref().ok_or_else(|| {
        WebError(
            StatusCode::NOT_FOUND,
            "API tokens are not enabled on this server".into(),
        )
    })
}

async fn tokens_page(
    state: &WebState,
    s: &Session,
    notice: &str,
    fresh: Option<&str>,
) -> Result<Html<String>> {
    let store = tokens_of(state)?;
    let h = hidden(s);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut rows = String::new();
    for t in store.list(&s.account.username).await? {
        let state = if t.expires_at <= now {
            "expired"
        } else {
            "active"
        };
        let _ = write!(
            rows,
            r#"<tr><td>{}</td><td><code>ehr_{}_…</code></td><td>{}</td><td>{}</td><td>{state}</td><td><form class="inline" method="post" action="/tokens/revoke">{h}<input type="hidden" name="id" value="{}"><button class="danger">Revoke</button></form></td></tr>"#,
            esc(&t.name),
            esc(&t.id),
            time(t.created_at),
            time(t.expires_at),
            esc(&t.id),
        );
    }
    let list = if rows.is_empty() {
        "<p>No tokens.</p>".to_owned()
    } else {
        format!(
            "<table><tr><th>Name</th><th>Token</th><th>Created</th><th>Expires</th><th></th><th></th></tr>{rows}</table>"
        )
    };
    let fresh = fresh.map_or_else(String::new, |t| {
        format!(
            r#"<section class="emergency"><h2>Your new token</h2><p>Copy it now: it is shown only once.</p><p><code id="new-token">{}</code></p></section>"#,
            esc(t)
        )
    });
    let body = format!(
        r#"{fresh}{notice}<section><h2>Personal API tokens</h2><p>A token lets a script use the REST API as you (<code>Authorization: Bearer …</code>), with your role, until it expires or you revoke it.</p>
<form method="post" action="/tokens" class="row">{h}<label>Name<br><input name="name" required maxlength="64"></label>
<label>Your password (again)<br><input name="password" type="password" required autocomplete="current-password"></label>
<label>Valid for days (1 to {max})<br><input name="days" inputmode="numeric" value="90" size="5"></label><button>Create token</button></form>{list}</section>"#,
        max = crate::web::MAX_DAYS,
    );
    Ok(user_page(s, "API tokens", &body))
}

pub(super) async fn tokens(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Query(n): Query<Notice>,
) -> Result<Html<String>> {
    tokens_page(&state, &s, &n.html(), None).await
}

/// Create-token form.
#[derive(Deserialize)]
pub(super) struct TokenForm {
    csrf: String,
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    days: String,
}

pub(super) async fn token_create(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Form(f): Form<TokenForm>,
) -> Result<Response> {
    csrf(&s, &f.csrf)?;
    let days: u64 = f
        .days
        .trim()
        .parse()
        .map_err(|_| bad(format!("valid for 1 to {} days", crate::web::MAX_DAYS)))?;
    // A stolen session alone must not become a long-lived key: ask for the password again.
    let slot = state.guard.kdf().await.map_err(|r| {
        let (status, _, m) = refused(r);
        WebError(status, m)
    })?;
    let checked = state.accounts.login(&s.account.username, &f.password).await;
    drop(slot);
    match checked {
        Ok(_) => {}
        Err(AccountError::BadLogin) => {
            return Ok((
                StatusCode::FORBIDDEN,
                tokens_page(&state, &s, &msg(false, "wrong password"), None).await?,
            )
                .into_response());
        }
        Err(e) => return Err(e.into()),
    }
    match tokens_of(&state)?
        .create(&s.account, &s.signer, &f.name, days)
        .await
    {
        Ok(token) => Ok(tokens_page(&state, &s, "", Some(&token))
            .await?
            .into_response()),
        Err(e @ AccountError::Invalid(_)) => Ok((
            StatusCode::BAD_REQUEST,
            tokens_page(&state, &s, &msg(false, &e.to_string()), None).await?,
        )
            .into_response()),
        Err(e) => Err(e.into()),
    }
}

/// Revoke-token form.
#[derive(Deserialize)]
pub(super) struct RevokeTokenForm {
    csrf: String,
    id: String,
}

pub(super) async fn token_revoke(
    State(state): State<WebState>,
    Auth(s, _): Auth,
    Form(f): Form<RevokeTokenForm>,
) -> Result<Redirect> {
    csrf(&s, &f.csrf)?;
    let done = tokens_of(&state)?
        .revoke(&s.account.username, &f.id)
        .await?;
    Ok(if done {
        back("/tokens", true, "token revoked")
    } else {
        back("/tokens", false, "no such token")
    })
}

/// A provider as people see them: name, organisation and licence when the web app knows them,
/// always the account (escaped HTML).
fn who(
    profiles: &std::collections::HashMap<Address, crate::web::ProviderProfile>,
    a: Address,
) -> String {
    match profiles.get(&a) {
        Some(p) => format!(
            "<strong>{}</strong>, {} (licence {})<br><code>{a}</code>",
            esc(&p.name),
            esc(&p.organisation),
            esc(&p.licence)
        ),
        None => format!("<code>{a}</code>"),
    }
}

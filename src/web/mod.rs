//! The web application: server-rendered pages for patients, doctors and the records office,
//! on top of the gateway's state (chain client, IPFS, records configuration).
//!
//! Every page checks the session's role on the server; every form carries the session's CSRF
//! token; errors are shown in words.

//! One module per room: [`login`] (before a session), [`patient`], [`doctor`], [`office`],
//! [`record`] (opening a record from either), [`api_tokens`]. Around them: [`extract`] checks
//! who asks (role extractors, CSRF forms), [`error`] renders the shared error kinds, [`view`]
//! holds what pages show alike, and `templates/` lays them out, escaping by default.

mod accounts;
mod api_tokens;
mod chart;
mod doctor;
mod error;
mod export;
mod extract;
mod form_key;
mod guard;
mod keystore;
mod legacy;
mod listing;
mod login;
mod office;
mod patient;
mod record;
mod session;
#[cfg(test)]
mod tests;
mod tokens;
mod upload;
mod view;
mod vitals;

pub use accounts::{Account, AccountError, AccountStore, ProviderProfile, Role};
pub use legacy::{ImportReport, import_web_dir};
pub use session::Sessions;
pub use tokens::{MAX_DAYS, MAX_TOKENS, TokenEntry, TokenStore};

use alloy::signers::local::PrivateKeySigner;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::chain::EhrChain;
use crate::gateway::AppState;
use crate::kind::ErrorKind;
use crate::records::{Directory, RecordsClient};
use error::WebError;
use session::Session;

/// Fuzzing: the keystore checks that run before the KDF.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_keystore(json: &str) -> bool {
    keystore::check_keystore(json).is_ok()
}

/// Fuzzing: the upload form's parsing, as a fixed patient's session.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub async fn fuzz_upload(mp: axum::extract::Multipart) -> bool {
    let signer = PrivateKeySigner::from_bytes(&[7u8; 32].into()).expect("a fixed valid key");
    let s = Session {
        account: Account {
            username: "fuzz".into(),
            role: Role::Patient,
            address: signer.address(),
            patient: None,
            profile: None,
        },
        signer,
        csrf: "0".repeat(64),
        ticket: None,
    };
    upload::read(&s, mp).await.is_ok()
}

// Unix seconds now: the clock of sessions, tokens and accounts.
use crate::clock::unix_now as now;

/// What the web pages need besides the gateway's state.
#[derive(Clone)]
pub struct WebState {
    app: AppState,
    accounts: AccountStore,
    sessions: Sessions,
    danger_dev_faucet: Option<PrivateKeySigner>,
    secure_cookies: bool,
    guard: guard::Guard,
    tokens: Option<TokenStore>,
    listing: listing::ListingCache,
}

impl WebState {
    /// The web application over the gateway's `app` state, with users in `accounts`.
    pub fn new(app: AppState, accounts: AccountStore) -> Self {
        Self {
            app,
            sessions: Sessions::new(accounts.clone()),
            accounts,
            danger_dev_faucet: None,
            secure_cookies: false,
            guard: guard::Guard::default(),
            tokens: None,
            listing: listing::ListingCache::default(),
        }
    }

    /// Development only: an account that pays each new sign-up 1 ether of gas money. Never in
    /// production, where users bring funded accounts.
    #[must_use]
    pub fn with_danger_dev_faucet(mut self, faucet: PrivateKeySigner) -> Self {
        self.danger_dev_faucet = Some(faucet);
        self
    }

    /// Lets users create personal API tokens kept in `tokens` (give the same store to the
    /// gateway's [`AppState::with_tokens`] so the REST API accepts them).
    #[must_use]
    pub fn with_tokens(mut self, tokens: TokenStore) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Marks the session cookie `Secure` (serve behind HTTPS).
    #[must_use]
    pub fn with_secure_cookies(mut self, on: bool) -> Self {
        self.secure_cookies = on;
        self
    }
}

impl WebState {
    /// The chain client without a signer (reads).
    fn chain(&self) -> Result<&EhrChain, WebError> {
        self.app
            .chain()
            .ok_or_else(|| WebError::new(ErrorKind::Unavailable, "no contract deployed"))
    }

    /// The chain client signing as the session's user (kept per account by the gateway's
    /// state, as for API tokens).
    /// A form sent with its key (`form_key`) makes its write under the key's ticket.
    fn chain_for(&self, s: &Session) -> Result<EhrChain, WebError> {
        let c = self.signing(s)?;
        Ok(match &s.ticket {
            Some(t) => c.with_ticket(t.clone()),
            None => c,
        })
    }

    /// [`Self::chain_for`] without the form's ticket.
    fn signing(&self, s: &Session) -> Result<EhrChain, WebError> {
        self.app
            .chain_as(&s.signer)?
            .map_or_else(|| self.chain().cloned(), Ok)
    }

    /// Where records sit and which a patient has (no signer needed).
    fn directory(&self) -> Result<Directory, WebError> {
        let cfg = self
            .app
            .records()
            .ok_or_else(|| WebError::new(ErrorKind::Unavailable, "no share nodes configured"))?;
        Ok(cfg.directory(self.chain()?.clone(), self.app.http().clone()))
    }

    /// The records client acting as the session's user.
    fn records_for(&self, s: &Session) -> Result<RecordsClient, WebError> {
        let cfg = self
            .app
            .records()
            .ok_or_else(|| WebError::new(ErrorKind::Unavailable, "no share nodes configured"))?;
        Ok(cfg.client(self.signing(s)?, s.signer.clone(), self.app.ipfs().clone())?)
    }
}

/// A static asset, cached by the browser for an hour.
fn asset(body: &'static str, media_type: &'static str) -> axum::response::Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

/// The web routes. Forms get a body limit that fits a form (16 KiB), the upload forms the
/// upload limit behind the shared upload slots.
pub fn router(state: WebState) -> Router {
    let uploads = Router::new()
        .route("/patient/upload", post(patient::upload))
        .route("/doctor/upload", post(doctor::upload))
        // The upload limit plus room for the multipart framing and the CSRF field.
        .layer(axum::extract::DefaultBodyLimit::max(
            upload::UPLOAD_LIMIT + 64 * 1024,
        ))
        .layer(crate::gateway::upload_timeout())
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            upload_timed_out,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.app.upload_slots().clone(),
            crate::gateway::gate_html,
        ));
    // The forms that send a transaction: sent again with their key, they are answered by the
    // first send's transaction (`form_key`).
    let writes = Router::new()
        .route("/patient/grant", post(patient::grant))
        .route("/patient/revoke", post(patient::revoke))
        .route("/patient/request", post(patient::decide))
        .route("/patient/end-emergency", post(patient::end_emergency))
        .route("/patient/devices", post(patient::add_device))
        .route("/patient/devices/revoke", post(patient::revoke_device))
        .route("/doctor/request", post(doctor::request))
        .route("/doctor/break-glass", post(doctor::break_glass))
        .route("/office/provider", post(office::decide_provider))
        .route("/office/patient", post(office::issue_patient))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            form_key::name_writes,
        ));
    Router::new()
        .route("/", get(login::home))
        .route(
            "/assets/app.css",
            get(|| async { asset(include_str!("assets/app.css"), "text/css; charset=utf-8") }),
        )
        .route(
            "/assets/app.js",
            get(|| async {
                asset(
                    include_str!("assets/app.js"),
                    "text/javascript; charset=utf-8",
                )
            }),
        )
        .route("/login", post(login::login))
        .route("/signup", get(login::signup_form).post(login::signup))
        .route("/logout", post(login::logout))
        .route("/patient", get(patient::home))
        .route("/patient/audit.fhir.json", get(patient::audit_fhir))
        .route("/patient/audit.csv", get(patient::audit_csv))
        .route("/patient/records/{id}", get(record::patient_record))
        .route(
            "/patient/records/{id}/download",
            get(record::patient_download),
        )
        .route("/doctor", get(doctor::home))
        .route("/doctor/patient", get(doctor::patient))
        .route("/doctor/records/{id}", get(record::doctor_record))
        .route(
            "/doctor/records/{id}/download",
            get(record::doctor_download),
        )
        .route("/office", get(office::home))
        .route("/tokens", get(api_tokens::list).post(api_tokens::create))
        .route("/tokens/revoke", post(api_tokens::revoke))
        .merge(writes)
        .layer(axum::extract::DefaultBodyLimit::max(FORM_LIMIT))
        .merge(uploads)
        .layer(axum::middleware::map_response(no_store))
        .with_state(state)
}

/// An upload form's answer once the upload's time ran out (the timeout layer's empty 408): a
/// page in words. A form with its key goes on storing in its own task (`upload`), so the
/// page says where the record will show and that sending the form again stores nothing twice.
async fn upload_timed_out(
    axum::extract::State(state): axum::extract::State<WebState>,
    r: axum::response::Response,
) -> axum::response::Response {
    if r.status() != axum::http::StatusCode::REQUEST_TIMEOUT {
        return r;
    }
    let secs = crate::gateway::UPLOAD_TIMEOUT_SECS;
    // Without a database the form's key is not kept: the upload was cut where it was.
    let text = if state.app.database().is_some() {
        format!(
            "the upload took longer than {secs} s. If the whole file reached the server it is still being stored: look at the records list in a minute; sending the form again (reload) does not store it twice"
        )
    } else {
        format!(
            "the upload took longer than {secs} s and was stopped; nothing of it will be shown. Try again, with a smaller file or a faster connection"
        )
    };
    let mut page = WebError::new(ErrorKind::Unavailable, text).into_response();
    *page.status_mut() = axum::http::StatusCode::REQUEST_TIMEOUT;
    page
}

/// Pages are not kept by the browser (`no-store`; static assets set their own caching): a
/// patient's data stays off a shared computer's disk, and the Back button fetches a page anew
/// instead of showing an old one whose forms (and their keys, `form_key`) were sent already.
async fn no_store(mut r: axum::response::Response) -> axum::response::Response {
    r.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

/// Largest form body outside uploads.
const FORM_LIMIT: usize = 16 * 1024;

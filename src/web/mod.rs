//! The web application: server-rendered pages for patients, doctors and the records office,
//! on top of the gateway's state (chain client, IPFS, records configuration).
//!
//! Every page checks the session's role on the server; every form carries the session's CSRF
//! token; errors are shown in words.

mod accounts;
mod guard;
mod html;
mod keystore;
mod legacy;
mod pages;
mod session;
mod tokens;

pub use accounts::{Account, AccountError, AccountStore, ProviderProfile, Role};
pub use legacy::{ImportReport, import_web_dir};
pub use session::Sessions;
pub use tokens::{MAX_DAYS, MAX_TOKENS, TokenEntry, TokenStore};

use alloy::signers::local::PrivateKeySigner;
use axum::Router;
use axum::routing::{get, post};

use crate::gateway::AppState;

/// Unix seconds now (the clock of sessions, tokens and accounts).
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

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
    listing: pages::ListingCache,
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
            listing: pages::ListingCache::default(),
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

/// The web routes. Forms get a body limit that fits a form (16 KiB), the upload form the
/// upload limit behind the shared upload slots.
pub fn router(state: WebState) -> Router {
    let upload = Router::new()
        .route("/patient/upload", post(pages::patient_upload))
        // The upload limit plus room for the multipart framing and the CSRF field.
        .layer(axum::extract::DefaultBodyLimit::max(
            pages::UPLOAD_LIMIT + 64 * 1024,
        ))
        .layer(crate::gateway::upload_timeout())
        .layer(axum::middleware::from_fn_with_state(
            state.app.upload_slots().clone(),
            crate::gateway::gate_html,
        ));
    Router::new()
        .route("/", get(pages::home))
        .route("/login", post(pages::login))
        .route("/signup", get(pages::signup_form).post(pages::signup))
        .route("/logout", post(pages::logout))
        .route("/patient", get(pages::patient))
        .route("/patient/grant", post(pages::patient_grant))
        .route("/patient/revoke", post(pages::patient_revoke))
        .route("/patient/request", post(pages::patient_request))
        .route("/patient/end-emergency", post(pages::patient_end_emergency))
        .route("/patient/records/{id}", get(pages::patient_record))
        .route(
            "/patient/records/{id}/download",
            get(pages::patient_download),
        )
        .route("/doctor", get(pages::doctor))
        .route("/doctor/patient", get(pages::doctor_patient))
        .route("/doctor/request", post(pages::doctor_request))
        .route("/doctor/break-glass", post(pages::doctor_break_glass))
        .route("/doctor/records/{id}", get(pages::doctor_record))
        .route("/doctor/records/{id}/download", get(pages::doctor_download))
        .route("/office", get(pages::office))
        .route("/office/provider", post(pages::office_provider))
        .route("/office/patient", post(pages::office_patient))
        .route("/tokens", get(pages::tokens).post(pages::token_create))
        .route("/tokens/revoke", post(pages::token_revoke))
        .layer(axum::extract::DefaultBodyLimit::max(FORM_LIMIT))
        .merge(upload)
        .with_state(state)
}

/// Largest form body outside uploads.
const FORM_LIMIT: usize = 16 * 1024;

//! The personal API tokens page: any logged-in user creates (with their password again),
//! lists and revokes the tokens that let a script use the REST API as them.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::accounts::AccountError;
use super::error::{Result, WebError, page};
use super::extract::{CsrfForm, Signed};
use super::guard::ClientAddr;
use super::login::refusal_error;
use super::session::Session;
use super::view::{Flash, Layout, Notice, back, time};
use super::{MAX_DAYS, TokenStore, WebState};
use crate::kind::ErrorKind;

/// A token as listed (never its secret).
struct TokenRow {
    id: String,
    name: String,
    created: String,
    expires: String,
    state: &'static str,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage<'a> {
    layout: Layout,
    notice: Option<Flash>,
    csrf: &'a str,
    fresh: Option<&'a str>,
    tokens: Vec<TokenRow>,
    max_days: u64,
}

fn store(state: &WebState) -> Result<&TokenStore> {
    state.tokens.as_ref().ok_or_else(|| {
        WebError::new(
            ErrorKind::NotFound,
            "API tokens are not enabled on this server",
        )
    })
}

async fn tokens_page(
    state: &WebState,
    s: &Session,
    notice: Option<Flash>,
    fresh: Option<&str>,
) -> Result<Html<String>> {
    let now = super::now();
    let tokens = store(state)?
        .list(&s.account.username)
        .await?
        .into_iter()
        .map(|t| TokenRow {
            state: if t.expires_at <= now {
                "expired"
            } else {
                "active"
            },
            created: time(t.created_at),
            expires: time(t.expires_at),
            id: t.id,
            name: t.name,
        })
        .collect();
    page(&TokensPage {
        layout: Layout::user(s, "API tokens"),
        notice,
        csrf: &s.csrf,
        fresh,
        tokens,
        max_days: MAX_DAYS,
    })
}

/// `GET /tokens`.
pub(super) async fn list(
    State(state): State<WebState>,
    s: Signed,
    Query(n): Query<Notice>,
) -> Result<Html<String>> {
    tokens_page(&state, &s.session, n.flash(), None).await
}

/// Create-token form.
#[derive(Deserialize)]
pub(super) struct TokenForm {
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    days: String,
}

/// `POST /tokens`.
pub(super) async fn create(
    State(state): State<WebState>,
    ClientAddr(client): ClientAddr,
    s: Signed,
    CsrfForm(f): CsrfForm<TokenForm>,
) -> Result<Response> {
    let s = &s.session;
    let days: u64 = f
        .days
        .trim()
        .parse()
        .map_err(|_| WebError::bad(format!("valid for 1 to {MAX_DAYS} days")))?;
    // A stolen session alone must not become a long-lived key: ask for the password again,
    // under the login guard's limits (a session must not become a password oracle).
    let user = &s.account.username;
    state.guard.login(user, client).map_err(refusal_error)?;
    let slot = state.guard.kdf().await.map_err(refusal_error)?;
    let checked = state.accounts.login(user, &f.password).await;
    drop(slot);
    match checked {
        Ok(_) => state.guard.login_ok(user, client),
        Err(AccountError::BadLogin) => {
            state.guard.login_failed(user, client);
            return Ok((
                StatusCode::FORBIDDEN,
                tokens_page(&state, s, Some(Flash::err("wrong password")), None).await?,
            )
                .into_response());
        }
        Err(e) => return Err(e.into()),
    }
    match store(&state)?
        .create(&s.account, &s.signer, &f.name, days)
        .await
    {
        Ok(token) => Ok(tokens_page(&state, s, None, Some(&token))
            .await?
            .into_response()),
        Err(e @ AccountError::Invalid(_)) => Ok((
            StatusCode::BAD_REQUEST,
            tokens_page(&state, s, Some(Flash::err(e.to_string())), None).await?,
        )
            .into_response()),
        Err(e) => Err(e.into()),
    }
}

/// Revoke-token form.
#[derive(Deserialize)]
pub(super) struct RevokeForm {
    id: String,
}

/// `POST /tokens/revoke`.
pub(super) async fn revoke(
    State(state): State<WebState>,
    s: Signed,
    CsrfForm(f): CsrfForm<RevokeForm>,
) -> Result<Redirect> {
    let done = store(&state)?
        .revoke(&s.session.account.username, &f.id)
        .await?;
    Ok(if done {
        back("/tokens", true, "token revoked")
    } else {
        back("/tokens", false, "no such token")
    })
}

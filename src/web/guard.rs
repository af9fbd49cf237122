//! What stands between a stranger and the expensive or sensitive parts of the web app: rate
//! limits per account and per client address for logins (a lockout that backs off), per client
//! address for sign-ups (and so the dev faucet), a cap on concurrent password-KDF runs (each
//! scrypt run holds 128 MiB), and the double-submit CSRF token of the login and sign-up forms
//! (they come before any session).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::limits::RateLimiter;

/// Cookie carrying the pre-session form token.
pub(super) const FORM_COOKIE: &str = "ehr_form";

/// The limits, shared by all requests.
#[derive(Debug, Clone)]
pub(super) struct Guard(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    login_per_account: RateLimiter<String>,
    login_per_client: RateLimiter<IpAddr>,
    signup_per_client: RateLimiter<IpAddr>,
    kdf: Semaphore,
}

/// How long a login or sign-up waits for a free KDF slot before it is refused with 503.
const KDF_WAIT: Duration = Duration::from_secs(10);

impl Default for Guard {
    fn default() -> Self {
        Self(Arc::new(Inner {
            // 5 tries, then one more every 12 s: a guessing attack gets 300 tries an hour.
            login_per_account: RateLimiter::with_interval(5, Duration::from_secs(12)),
            login_per_client: RateLimiter::with_interval(30, Duration::from_secs(2)),
            // 5 sign-ups, then one every 6 minutes per client address.
            signup_per_client: RateLimiter::with_interval(5, Duration::from_secs(360)),
            kdf: Semaphore::new(2),
        }))
    }
}

/// Why a guarded action may not go ahead now.
pub(super) enum Refused {
    /// Too many tries; wait this long.
    TooMany(Duration),
    /// Every KDF slot stayed busy.
    Busy,
}

impl Guard {
    /// Takes a login try for `username` from `client`.
    pub(super) fn login(&self, username: &str, client: Option<IpAddr>) -> Result<(), Refused> {
        if let Some(ip) = client {
            self.0
                .login_per_client
                .check(&ip)
                .map_err(Refused::TooMany)?;
        }
        let name: String = username.to_ascii_lowercase().chars().take(64).collect();
        self.0
            .login_per_account
            .check(&name)
            .map_err(Refused::TooMany)
    }

    /// A successful login clears the account's failures.
    pub(super) fn login_ok(&self, username: &str) {
        let name: String = username.to_ascii_lowercase().chars().take(64).collect();
        self.0.login_per_account.reset(&name);
    }

    /// Takes a sign-up from `client`.
    pub(super) fn signup(&self, client: Option<IpAddr>) -> Result<(), Refused> {
        match client {
            Some(ip) => self
                .0
                .signup_per_client
                .check(&ip)
                .map_err(Refused::TooMany),
            None => Ok(()),
        }
    }

    /// A slot for one password-KDF run.
    pub(super) async fn kdf(&self) -> Result<SemaphorePermit<'_>, Refused> {
        tokio::time::timeout(KDF_WAIT, self.0.kdf.acquire())
            .await
            .map_err(|_| Refused::Busy)?
            .map_err(|_| Refused::Busy)
    }
}

/// The client's address, when the server was started with connection info.
pub(super) struct ClientAddr(pub(super) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// A value of the request's cookie `name`.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Constant-time equality of two tokens.
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The form token of this browser: the one in its cookie, or a fresh one (with the
/// `Set-Cookie` value to send when fresh).
pub(super) fn form_token(headers: &HeaderMap, secure: bool) -> (String, Option<String>) {
    if let Some(t) = cookie(headers, FORM_COOKIE).filter(|t| t.len() == 64) {
        return (t, None);
    }
    let mut b = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    let t = hex::encode(b);
    let secure = if secure { "; Secure" } else { "" };
    let set = format!("{FORM_COOKIE}={t}; HttpOnly; SameSite=Strict; Path=/{secure}");
    (t, Some(set))
}

/// Whether the posted form token matches this browser's cookie (double submit: a page on
/// another site can make the browser post, but cannot read or set the SameSite cookie).
pub(super) fn form_token_ok(headers: &HeaderMap, posted: &str) -> bool {
    cookie(headers, FORM_COOKIE).is_some_and(|c| c.len() == 64 && same(&c, posted))
}

/// Whether the request came over HTTPS as the client sees it (directly, or through a proxy
/// that says so): then cookies get `Secure`. Only ever adds a restriction, so a spoofed header
/// cannot weaken anything.
pub(super) fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

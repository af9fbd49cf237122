//! What stands between a stranger and the expensive or sensitive parts of the web app: rate
//! limits per account and per client address for logins (a lockout that backs off), per client
//! address for sign-ups (and so the dev faucet), a cap on concurrent password-KDF runs (each
//! scrypt run holds 128 MiB), and the double-submit CSRF token of the login and sign-up forms
//! (they come before any session).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::limits::RateLimiter;

/// Cookie carrying the pre-session form token.
pub(super) const FORM_COOKIE: &str = "ehr_form";

/// The limits, shared by all requests.
#[derive(Debug, Clone)]
pub(super) struct Guard(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Failed logins per (account, client): an attacker elsewhere cannot lock a user out.
    failures_per_account_client: RateLimiter<(String, IpAddr)>,
    /// Failed logins per account from everywhere: slows a distributed guess, loosely.
    failures_per_account: RateLimiter<String>,
    login_per_client: RateLimiter<IpAddr>,
    signup_per_client: RateLimiter<IpAddr>,
    /// Audit trail downloads per user: each scans the whole trail and is recorded.
    exports_per_user: RateLimiter<String>,
    kdf: Semaphore,
}

/// How long a login or sign-up waits for a free KDF slot before it is refused with 503.
const KDF_WAIT: Duration = Duration::from_secs(10);

impl Default for Guard {
    fn default() -> Self {
        Self(Arc::new(Inner {
            // 5 failures from one client, then one more every 12 s (300 guesses an hour).
            failures_per_account_client: RateLimiter::with_interval(5, Duration::from_secs(12)),
            // 50 failures from anywhere, then one more every 30 s.
            failures_per_account: RateLimiter::with_interval(50, Duration::from_secs(30)),
            login_per_client: RateLimiter::with_interval(30, Duration::from_secs(2)),
            // 5 sign-ups, then one every 6 minutes per client address.
            signup_per_client: RateLimiter::with_interval(5, Duration::from_secs(360)),
            // 10 downloads, then one a minute per user.
            exports_per_user: RateLimiter::with_interval(10, Duration::from_secs(60)),
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
    /// Whether a login for `username` from `client` may be tried now (takes one of the
    /// client's tries; failures are counted by [`Self::login_failed`]).
    pub(super) fn login(&self, username: &str, client: Option<IpAddr>) -> Result<(), Refused> {
        let ip = client.map_or(IpAddr::from([0, 0, 0, 0]), client_key);
        if client.is_some() {
            self.0
                .login_per_client
                .check(&ip)
                .map_err(Refused::TooMany)?;
        }
        let name = account_key(username);
        self.0
            .failures_per_account_client
            .peek(&(name.clone(), ip))
            .map_err(Refused::TooMany)?;
        self.0
            .failures_per_account
            .peek(&name)
            .map_err(Refused::TooMany)
    }

    /// Counts a failed login.
    pub(super) fn login_failed(&self, username: &str, client: Option<IpAddr>) {
        let ip = client.map_or(IpAddr::from([0, 0, 0, 0]), client_key);
        let name = account_key(username);
        self.0
            .failures_per_account_client
            .consume(&(name.clone(), ip));
        self.0.failures_per_account.consume(&name);
    }

    /// A successful login clears that client's failures for the account.
    pub(super) fn login_ok(&self, username: &str, client: Option<IpAddr>) {
        let ip = client.map_or(IpAddr::from([0, 0, 0, 0]), client_key);
        self.0
            .failures_per_account_client
            .reset(&(account_key(username), ip));
    }

    /// Takes a sign-up from `client`.
    pub(super) fn signup(&self, client: Option<IpAddr>) -> Result<(), Refused> {
        match client {
            Some(ip) => self
                .0
                .signup_per_client
                .check(&client_key(ip))
                .map_err(Refused::TooMany),
            None => Ok(()),
        }
    }

    /// Takes one audit trail download of `username`.
    pub(super) fn export(&self, username: &str) -> Result<(), Refused> {
        self.0
            .exports_per_user
            .check(&account_key(username))
            .map_err(Refused::TooMany)
    }

    /// A slot for one password-KDF run.
    pub(super) async fn kdf(&self) -> Result<SemaphorePermit<'_>, Refused> {
        tokio::time::timeout(KDF_WAIT, self.0.kdf.acquire())
            .await
            .map_err(|_| Refused::Busy)?
            .map_err(|_| Refused::Busy)
    }
}

fn account_key(username: &str) -> String {
    username.to_ascii_lowercase().chars().take(64).collect()
}

/// The key a client is limited by: its IPv4 address, or its IPv6 /64 (one subscriber gets a
/// whole /64, so single IPv6 addresses would cost an attacker nothing).
pub(super) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
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

/// A value of the request's cookie `name` (parsed by the `cookie` crate through axum-extra).
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    axum_extra::extract::CookieJar::from_headers(headers)
        .get(name)
        .map(|c| c.value().to_owned())
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
    if let Some(t) = cookie(headers, FORM_COOKIE).filter(|t| well_formed(t)) {
        return (t, None);
    }
    let mut b = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    let t = hex::encode(b);
    let set = super::session::strict_cookie(FORM_COOKIE, t.clone(), None, secure);
    (t, Some(set))
}

/// Whether the posted form token matches this browser's cookie (double submit: a page on
/// another site can make the browser post, but cannot read or set the SameSite cookie).
pub(super) fn form_token_ok(headers: &HeaderMap, posted: &str) -> bool {
    cookie(headers, FORM_COOKIE).is_some_and(|c| well_formed(&c) && same(&c, posted))
}

/// A form token is 64 hex digits; anything else in the cookie (set by a sibling site, say) is
/// replaced, never echoed into a page.
fn well_formed(t: &str) -> bool {
    t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())
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

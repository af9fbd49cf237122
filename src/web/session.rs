//! Server-side sessions: a random token in an HttpOnly, SameSite=Strict cookie, an idle timeout,
//! and a CSRF token per session that every form carries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use rand_core::RngCore;

use super::accounts::Account;

/// Cookie name.
pub(super) const COOKIE: &str = "ehr_session";
/// Idle time after which a session ends.
pub(super) const IDLE: Duration = Duration::from_secs(30 * 60);

/// A logged-in user.
#[derive(Clone)]
pub struct Session {
    /// The account.
    pub account: Account,
    /// The unlocked key (held in memory only while logged in).
    pub signer: PrivateKeySigner,
    /// The CSRF token forms must echo.
    pub csrf: String,
    last_seen: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.account.username)
            .finish_non_exhaustive()
    }
}

fn token() -> String {
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// All sessions.
#[derive(Debug, Clone)]
pub struct Sessions {
    map: Arc<Mutex<HashMap<String, Session>>>,
    idle: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::with_idle(IDLE)
    }
}

impl Sessions {
    /// Sessions that end after `idle` without a request.
    pub fn with_idle(idle: Duration) -> Self {
        Self {
            map: Arc::default(),
            idle,
        }
    }

    /// Starts a session; returns its token.
    pub fn start(&self, account: Account, signer: PrivateKeySigner) -> String {
        let t = token();
        let s = Session {
            account,
            signer,
            csrf: token(),
            last_seen: Instant::now(),
        };
        self.lock().insert(t.clone(), s);
        t
    }

    /// The live session for `token`, refreshing its idle timer; expired ones are removed.
    pub fn get(&self, token: &str) -> Option<Session> {
        self.get_at(token, Instant::now())
    }

    /// `get` as seen at `now` (tests move the clock instead of sleeping).
    fn get_at(&self, token: &str, now: Instant) -> Option<Session> {
        let mut map = self.lock();
        let idle = self.idle;
        map.retain(|_, s| now.saturating_duration_since(s.last_seen) < idle);
        let s = map.get_mut(token)?;
        s.last_seen = now;
        Some(s.clone())
    }

    /// Ends a session.
    pub fn end(&self, token: &str) {
        self.lock().remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A poisoned map only means a panic elsewhere mid-insert; the data is still consistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `Set-Cookie` value for a new session.
pub(super) fn set_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        IDLE.as_secs()
    )
}

/// The `Set-Cookie` value that clears the session cookie.
pub(super) fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::Role;

    fn account() -> Account {
        Account {
            username: "u".into(),
            role: Role::Provider,
            address: alloy::primitives::Address::ZERO,
            patient: None,
            keystore: String::new(),
            profile: None,
        }
    }

    #[test]
    fn sessions_refresh_on_use_end_when_idle_and_on_logout() {
        let s = Sessions::with_idle(Duration::from_secs(60));
        let t0 = Instant::now();
        let a = s.start(account(), PrivateKeySigner::random());
        let b = s.start(account(), PrivateKeySigner::random());
        assert_ne!(a, b);
        assert_ne!(
            s.get_at(&a, t0).unwrap().csrf,
            s.get_at(&b, t0).unwrap().csrf
        );
        assert!(s.get("not-a-token").is_none());
        // Used every 40 s, `a` stays alive past the 60 s idle time; `b`, unused, ends.
        for step in 1..=3 {
            assert!(s.get_at(&a, t0 + Duration::from_secs(40 * step)).is_some());
        }
        assert!(
            s.get_at(&b, t0 + Duration::from_secs(121)).is_none(),
            "idle session must end"
        );
        s.end(&a);
        assert!(s.get(&a).is_none(), "logout ends the session");
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_expiring() {
        let c = set_cookie("t", true);
        for part in [
            "ehr_session=t",
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=1800",
            "Secure",
        ] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!set_cookie("t", false).contains("Secure"));
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}

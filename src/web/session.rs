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
#[derive(Debug, Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, Session>>>);

impl Sessions {
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
        let mut map = self.lock();
        map.retain(|_, s| s.last_seen.elapsed() < IDLE);
        let s = map.get_mut(token)?;
        s.last_seen = Instant::now();
        Some(s.clone())
    }

    /// Ends a session.
    pub fn end(&self, token: &str) {
        self.lock().remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A poisoned map only means a panic elsewhere mid-insert; the data is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
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

//! Server-side sessions in the gateway's database: a random token in an HttpOnly,
//! SameSite=Strict cookie, an idle timeout, and a CSRF token per session that every form
//! carries. The table keeps only the token's sha256 and the user's key sealed under a key
//! derived from the token, so a copy of the database neither logs in nor signs; sessions
//! survive a restart of the gateway and are shared by gateways on one database.

use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use rand_core::RngCore;
use sha2::{Digest, Sha256};

use super::accounts::{Account, AccountError, AccountStore};
use super::now;
use crate::crypto::{derive_key, open_at_rest, seal_at_rest};
use crate::db::SessionRow;

/// Cookie name.
pub(super) const COOKIE: &str = "ehr_session";
/// Idle time after which a session ends.
pub(super) const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session's last use is written at most this often (not on every request).
const TOUCH_EVERY: u64 = 30;

/// A logged-in user.
#[derive(Clone)]
pub struct Session {
    /// The account.
    pub account: Account,
    /// The unlocked key (held in memory only while a request runs, and an upload it started:
    /// at most the upload's bound, `gateway::upload_timeout`).
    pub signer: PrivateKeySigner,
    /// The CSRF token forms must echo.
    pub csrf: String,
    /// The ticket of a form sent with its key (`form_key`): the session's chain client's
    /// next write goes out under it.
    pub(crate) ticket: Option<crate::chain::Ticket>,
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

fn aad(user: &str) -> Vec<u8> {
    format!("ehr-share/web-session/{user}").into_bytes()
}

/// All sessions.
#[derive(Debug, Clone)]
pub struct Sessions {
    accounts: AccountStore,
    idle: Duration,
}

impl Sessions {
    /// Sessions of `accounts`' users, ending after 30 minutes without a request.
    pub fn new(accounts: AccountStore) -> Self {
        Self::with_idle(accounts, IDLE)
    }

    /// Sessions that end after `idle` without a request.
    pub fn with_idle(accounts: AccountStore, idle: Duration) -> Self {
        Self { accounts, idle }
    }

    /// Starts a session; returns its token. Sessions idle too long are removed on the way.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn start(
        &self,
        account: &Account,
        signer: &PrivateKeySigner,
    ) -> Result<String, AccountError> {
        let db = self.accounts.db();
        let t = now();
        db.delete_idle_sessions(t.saturating_sub(self.idle.as_secs()))
            .await?;
        let token = token();
        let key = derive_key(token.as_bytes(), "web-session");
        db.insert_session(&SessionRow {
            token_hash: Sha256::digest(token.as_bytes()).to_vec(),
            username: account.username.clone(),
            csrf: self::token(),
            wrapped_key: seal_at_rest(&key, &aad(&account.username), &signer.to_bytes().0),
            created_at: t,
            last_seen: t,
        })
        .await?;
        Ok(token)
    }

    /// The live session for `token`, refreshing its idle timer; an idle one is removed.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn get(&self, token: &str) -> Result<Option<Session>, AccountError> {
        self.get_at(token, now()).await
    }

    /// `get` as seen at `at` (unix seconds; tests move the clock instead of sleeping).
    async fn get_at(&self, token: &str, at: u64) -> Result<Option<Session>, AccountError> {
        if token.len() != 64 {
            return Ok(None);
        }
        let db = self.accounts.db();
        let hash = Sha256::digest(token.as_bytes());
        let Some(row) = db.session(&hash).await? else {
            return Ok(None);
        };
        if at.saturating_sub(row.last_seen) >= self.idle.as_secs() {
            db.delete_session(&hash).await?;
            return Ok(None);
        }
        let Some(account) = self.accounts.account(&row.username).await? else {
            return Ok(None);
        };
        let key = derive_key(token.as_bytes(), "web-session");
        let signer = open_at_rest(&key, &aad(&row.username), &row.wrapped_key)
            .ok()
            .and_then(|b| PrivateKeySigner::from_slice(&b).ok())
            .filter(|s| s.address() == account.address);
        let Some(signer) = signer else {
            tracing::warn!(user = %row.username, "session key does not open; session ended");
            db.delete_session(&hash).await?;
            return Ok(None);
        };
        if at.saturating_sub(row.last_seen) >= TOUCH_EVERY {
            db.touch_session(&hash, at).await?;
        }
        Ok(Some(Session {
            account,
            signer,
            csrf: row.csrf,
            ticket: None,
        }))
    }

    /// Ends a session.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn end(&self, token: &str) -> Result<(), AccountError> {
        self.accounts
            .db()
            .delete_session(&Sha256::digest(token.as_bytes()))
            .await?;
        Ok(())
    }
}

/// A cookie only this site's requests carry, never scripts: `HttpOnly`, `SameSite=Strict`,
/// path `/`, `Secure` when asked (built by the `cookie` crate; values are hex, nothing to
/// encode).
pub(super) fn strict_cookie(
    name: &'static str,
    value: String,
    max_age: Option<u64>,
    secure: bool,
) -> String {
    use cookie::{Cookie, SameSite};
    let mut c = Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(secure);
    if let Some(secs) = max_age {
        c = c.max_age(cookie_duration(secs));
    }
    c.build().to_string()
}

fn cookie_duration(secs: u64) -> cookie::time::Duration {
    cookie::time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// The `Set-Cookie` value for a new session.
pub(super) fn set_cookie(token: &str, secure: bool) -> String {
    strict_cookie(COOKIE, token.to_owned(), Some(IDLE.as_secs()), secure)
}

/// The `Set-Cookie` value that clears the session cookie.
pub(super) fn clear_cookie() -> String {
    strict_cookie(COOKIE, String::new(), Some(0), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::Role;

    #[tokio::test]
    async fn sessions_refresh_on_use_end_when_idle_and_on_logout() {
        let (_dir, db) = crate::db::testing::sqlite().await;
        let accounts = AccountStore::new(db.clone()).await.unwrap();
        let (acct, key) = accounts
            .create("sam", "a long password", Role::Provider, None, None)
            .await
            .unwrap();
        let s = Sessions::with_idle(accounts, Duration::from_secs(60));
        let a = s.start(&acct, &key).await.unwrap();
        let b = s.start(&acct, &key).await.unwrap();
        assert_ne!(a, b);
        let t0 = now();
        let sa = s.get_at(&a, t0).await.unwrap().unwrap();
        assert_eq!(sa.signer.address(), key.address());
        assert_ne!(sa.csrf, s.get_at(&b, t0).await.unwrap().unwrap().csrf);
        assert!(s.get("not-a-token").await.unwrap().is_none());
        // Used every 40 s, `a` stays alive past the 60 s idle time; `b`, unused, ends.
        for step in 1..=3 {
            assert!(s.get_at(&a, t0 + 40 * step).await.unwrap().is_some());
        }
        assert!(
            s.get_at(&b, t0 + 121).await.unwrap().is_none(),
            "idle session must end"
        );
        // The table alone opens nothing: no token, no key in clear.
        let row = db
            .session(&Sha256::digest(a.as_bytes()))
            .await
            .unwrap()
            .unwrap();
        assert!(!hex::encode(&row.wrapped_key).contains(&hex::encode(key.to_bytes())));
        s.end(&a).await.unwrap();
        assert!(
            s.get(&a).await.unwrap().is_none(),
            "logout ends the session"
        );
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

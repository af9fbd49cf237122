//! Rows of `sessions`: a web session, found by the sha256 of its cookie.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Database, DbError, inserted, to_i64, to_u64};

/// One web session as stored (no cookie, no key in clear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// sha256 of the cookie's token.
    pub token_hash: Vec<u8>,
    /// The user.
    pub username: String,
    /// The CSRF token forms must echo.
    pub csrf: String,
    /// The user's key, sealed under a key derived from the cookie's token.
    pub wrapped_key: Vec<u8>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the last request (refreshed at most once a minute).
    pub last_seen: u64,
}

fn row(r: &AnyRow) -> Result<SessionRow, DbError> {
    Ok(SessionRow {
        token_hash: r.try_get("token_hash")?,
        username: r.try_get("username")?,
        csrf: r.try_get("csrf")?,
        wrapped_key: r.try_get("wrapped_key")?,
        created_at: to_u64(r.try_get("created_at")?, "session created_at")?,
        last_seen: to_u64(r.try_get("last_seen")?, "session last_seen")?,
    })
}

impl Database {
    /// Adds a session.
    ///
    /// # Errors
    /// Query failures.
    pub async fn insert_session(&self, s: &SessionRow) -> Result<(), DbError> {
        let r = sqlx::query(
            "INSERT INTO sessions (token_hash, username, csrf, wrapped_key, created_at, last_seen) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.token_hash)
        .bind(&s.username)
        .bind(&s.csrf)
        .bind(&s.wrapped_key)
        .bind(to_i64(s.created_at))
        .bind(to_i64(s.last_seen))
        .execute(self.pool())
        .await;
        inserted(r, "session")
    }

    /// The session with this token hash.
    ///
    /// # Errors
    /// Query failures.
    pub async fn session(&self, token_hash: &[u8]) -> Result<Option<SessionRow>, DbError> {
        sqlx::query(
            "SELECT token_hash, username, csrf, wrapped_key, created_at, last_seen \
             FROM sessions WHERE token_hash = ?",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(row)
        .transpose()
    }

    /// Records a request of the session at `at`.
    ///
    /// # Errors
    /// Query failures.
    pub async fn touch_session(&self, token_hash: &[u8], at: u64) -> Result<(), DbError> {
        sqlx::query("UPDATE sessions SET last_seen = ? WHERE token_hash = ?")
            .bind(to_i64(at))
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Ends a session.
    ///
    /// # Errors
    /// Query failures.
    pub async fn delete_session(&self, token_hash: &[u8]) -> Result<(), DbError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Removes the sessions idle since before `seen_before`; returns how many.
    ///
    /// # Errors
    /// Query failures.
    pub async fn delete_idle_sessions(&self, seen_before: u64) -> Result<u64, DbError> {
        let r = sqlx::query("DELETE FROM sessions WHERE last_seen < ?")
            .bind(to_i64(seen_before))
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected())
    }
}

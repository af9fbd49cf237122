//! Rows of `api_tokens`: a personal API token, found by its public id.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};

use super::{Database, DbError, inserted, to_i64, to_u64};

/// One personal API token as stored (no secret, no key in clear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Public id (8 hex digits).
    pub id: String,
    /// The user.
    pub username: String,
    /// The user's name for it.
    pub name: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
    /// sha256 of the token.
    pub token_hash: Vec<u8>,
    /// The user's key, sealed under a key derived from the token's secret.
    pub wrapped_key: Vec<u8>,
}

/// The columns, in one place (a macro so that queries stay literal for sqlx).
macro_rules! columns {
    () => {
        "id, username, name, created_at, expires_at, token_hash, wrapped_key"
    };
}

/// The INSERT of one token row, to run in a transaction.
pub(super) fn insert(t: &TokenRow) -> Query<'_, Any, AnyArguments> {
    sqlx::query(concat!(
        "INSERT INTO api_tokens (",
        columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&t.id)
    .bind(&t.username)
    .bind(&t.name)
    .bind(to_i64(t.created_at))
    .bind(to_i64(t.expires_at))
    .bind(&t.token_hash)
    .bind(&t.wrapped_key)
}

fn row(r: &AnyRow) -> Result<TokenRow, DbError> {
    Ok(TokenRow {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        name: r.try_get("name")?,
        created_at: to_u64(r.try_get("created_at")?, "token created_at")?,
        expires_at: to_u64(r.try_get("expires_at")?, "token expires_at")?,
        token_hash: r.try_get("token_hash")?,
        wrapped_key: r.try_get("wrapped_key")?,
    })
}

/// What [`Database::insert_token`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenInsert {
    /// The token was added.
    Added,
    /// The user holds the most unexpired tokens allowed.
    AtLimit,
    /// The user holds an unexpired token of that name.
    NameTaken,
}

impl Database {
    /// Adds a token unless the user already holds `max` unexpired ones at `now`, or one of
    /// the same name, in one transaction so that racing creations cannot pass either check
    /// together; the user's expired tokens are removed afterwards.
    ///
    /// # Errors
    /// [`DbError::Conflict`] for a taken id; query failures.
    pub async fn insert_token(
        &self,
        t: &TokenRow,
        max: usize,
        now: u64,
    ) -> Result<TokenInsert, DbError> {
        let mut tx = self.pool().begin().await?;
        // Touch the user's account row first: on MySQL/MariaDB this locks it, so creations for
        // one user run one after the other; SQLite runs writers one at a time anyway. Nothing
        // else in the transaction locks ranges of the token table (a DELETE there would take
        // gap locks that deadlock creations of neighbouring users).
        sqlx::query("UPDATE accounts SET created_at = created_at WHERE username = ?")
            .bind(&t.username)
            .execute(&mut *tx)
            .await?;
        // The user's live names, compared here byte for byte: a database's collation may take
        // "CI" and "ci" (or "café" and "cafe") for one name.
        let held: Vec<String> =
            sqlx::query("SELECT name FROM api_tokens WHERE username = ? AND expires_at > ?")
                .bind(&t.username)
                .bind(to_i64(now))
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<Result<_, _>>()?;
        // The name first: a form sent twice is told so, also when its first send took the
        // last place.
        if held.contains(&t.name) {
            return Ok(TokenInsert::NameTaken);
        }
        if held.len() >= max {
            return Ok(TokenInsert::AtLimit);
        }
        inserted(insert(t).execute(&mut *tx).await, "token id")?;
        tx.commit().await?;
        // Housekeeping only: a failure leaves expired rows that never resolve.
        let _ = sqlx::query("DELETE FROM api_tokens WHERE username = ? AND expires_at <= ?")
            .bind(&t.username)
            .bind(to_i64(now))
            .execute(self.pool())
            .await;
        Ok(TokenInsert::Added)
    }

    /// The token with public id `id`.
    ///
    /// # Errors
    /// Query failures.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRow>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM api_tokens WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(row)
        .transpose()
    }

    /// The user's tokens, newest first.
    ///
    /// # Errors
    /// Query failures.
    pub async fn tokens_of(&self, username: &str) -> Result<Vec<TokenRow>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM api_tokens WHERE username = ? ORDER BY created_at DESC, id"
        ))
        .bind(username)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(row)
        .collect()
    }

    /// Removes the user's token `id`; false when the user has no such token.
    ///
    /// # Errors
    /// Query failures.
    pub async fn delete_token(&self, username: &str, id: &str) -> Result<bool, DbError> {
        let r = sqlx::query("DELETE FROM api_tokens WHERE id = ? AND username = ?")
            .bind(id)
            .bind(username)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }
}

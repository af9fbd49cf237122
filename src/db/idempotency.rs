//! Rows of `idempotency_keys`: the requests callers named with an `Idempotency-Key`, and the
//! transaction each sent.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Row;

use super::{Database, DbError, inserted, to_i64};

/// How long a key names its request (a day, as payment APIs keep theirs): a retry comes within
/// minutes, and a client that reuses a key later means a new request.
pub const IDEMPOTENCY_TTL_SECS: u64 = 86_400;

/// What a key is to a request that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The first try (or one after a try that sent nothing), or a retry: the transaction an
    /// earlier try sent, if any.
    Same {
        /// The earlier try's transaction (`0x` + 64 hex digits).
        tx: Option<String>,
    },
    /// The key named another request (another path or body).
    Other,
}

/// When expired keys were last removed (unix seconds).
static SWEPT_AT: AtomicU64 = AtomicU64::new(0);

impl Database {
    /// Claims `key` in `scope` for a request of `fingerprint` at `now`: a new row, or what an
    /// unexpired row says (an expired one is taken over). Expired rows are removed at most
    /// once an hour.
    ///
    /// # Errors
    /// Query failures.
    pub async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: u64,
    ) -> Result<Claim, DbError> {
        let oldest = to_i64(now.saturating_sub(IDEMPOTENCY_TTL_SECS));
        let swept = SWEPT_AT.load(Ordering::Relaxed);
        if now >= swept.saturating_add(3_600)
            && SWEPT_AT
                .compare_exchange(swept, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
                .bind(oldest)
                .execute(self.pool())
                .await?;
        }
        let insert = sqlx::query(
            "INSERT INTO idempotency_keys (scope, idem_key, fingerprint, tx, created_at) \
             VALUES (?, ?, ?, NULL, ?)",
        )
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .bind(to_i64(now))
        .execute(self.pool())
        .await;
        match inserted(insert, "idempotency key") {
            Ok(()) => return Ok(Claim::Same { tx: None }),
            Err(DbError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let row = sqlx::query(
            "SELECT fingerprint, tx, created_at FROM idempotency_keys \
             WHERE scope = ? AND idem_key = ?",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            // Released between the two statements: the key is free again.
            return Box::pin(self.claim_idempotency_key(scope, key, fingerprint, now)).await;
        };
        let created: i64 = row.try_get("created_at")?;
        if created < oldest {
            // Expired: the key names this request from now on.
            sqlx::query(
                "UPDATE idempotency_keys SET fingerprint = ?, tx = NULL, created_at = ? \
                 WHERE scope = ? AND idem_key = ? AND created_at = ?",
            )
            .bind(fingerprint)
            .bind(to_i64(now))
            .bind(scope)
            .bind(key)
            .bind(created)
            .execute(self.pool())
            .await?;
            return Ok(Claim::Same { tx: None });
        }
        let stored: String = row.try_get("fingerprint")?;
        if stored != fingerprint {
            return Ok(Claim::Other);
        }
        Ok(Claim::Same {
            tx: row.try_get("tx")?,
        })
    }

    /// Records that the request `key` names sent `tx`.
    ///
    /// # Errors
    /// Query failures.
    pub async fn idempotency_key_sent(
        &self,
        scope: &str,
        key: &str,
        tx: &str,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE idempotency_keys SET tx = ? WHERE scope = ? AND idem_key = ?")
            .bind(tx)
            .bind(scope)
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Frees `key` when its request sent nothing (it failed before): a retry runs anew.
    ///
    /// # Errors
    /// Query failures.
    pub async fn release_idempotency_key(&self, scope: &str, key: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = ? AND idem_key = ? AND tx IS NULL")
            .bind(scope)
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

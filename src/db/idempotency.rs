//! Rows of `idempotency_keys`: the requests callers named with an `Idempotency-Key`, and the
//! transaction each sent. The caller passes the scope and the key as hex digests
//! (`gateway::idempotency`).

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Row;

use super::{Database, DbError, inserted, to_i64};

/// How long a key names its request (a day, as payment APIs keep theirs): a retry comes within
/// minutes, and a client that reuses a key later means a new request.
pub const IDEMPOTENCY_TTL_SECS: u64 = 86_400;

/// What a key is to a request that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request's key: the transaction an earlier try sent, if any, and whether this try
    /// made the row (only such a try frees it when it sends nothing: another try may be
    /// sending).
    Same {
        /// The earlier try's transaction (`0x` + 64 hex digits).
        tx: Option<String>,
        /// This try made the row.
        fresh: bool,
        /// When the row was made (unix seconds): how long ago the earlier try began.
        created_at: u64,
    },
    /// The key named another request (another path or body).
    Other,
}

/// When expired keys were last removed (unix seconds).
static SWEPT_AT: AtomicU64 = AtomicU64::new(0);

impl Database {
    /// Claims the key `key_hash` in `scope` for a request of `fingerprint` at `now`: a new row,
    /// or what an unexpired row says (an expired one is taken over). Expired rows are removed at
    /// most once an hour.
    ///
    /// # Errors
    /// Query failures.
    pub async fn claim_idempotency_key(
        &self,
        scope: &str,
        key_hash: &str,
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
        // A row deleted or taken over between the statements below: look again (a few times).
        for _ in 0..4 {
            let insert = sqlx::query(
                "INSERT INTO idempotency_keys (scope, key_hash, fingerprint, tx, created_at) \
                 VALUES (?, ?, ?, NULL, ?)",
            )
            .bind(scope)
            .bind(key_hash)
            .bind(fingerprint)
            .bind(to_i64(now))
            .execute(self.pool())
            .await;
            match inserted(insert, "idempotency key") {
                Ok(()) => {
                    return Ok(Claim::Same {
                        tx: None,
                        fresh: true,
                        created_at: now,
                    });
                }
                Err(DbError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
            let Some(row) = sqlx::query(
                "SELECT fingerprint, tx, created_at FROM idempotency_keys \
                 WHERE scope = ? AND key_hash = ?",
            )
            .bind(scope)
            .bind(key_hash)
            .fetch_optional(self.pool())
            .await?
            else {
                continue;
            };
            let created: i64 = row.try_get("created_at")?;
            if created < oldest {
                // Expired: the key names this request from now on, unless another try took
                // it over first.
                let took = sqlx::query(
                    "UPDATE idempotency_keys SET fingerprint = ?, tx = NULL, created_at = ? \
                     WHERE scope = ? AND key_hash = ? AND created_at = ?",
                )
                .bind(fingerprint)
                .bind(to_i64(now))
                .bind(scope)
                .bind(key_hash)
                .bind(created)
                .execute(self.pool())
                .await?;
                if took.rows_affected() == 1 {
                    return Ok(Claim::Same {
                        tx: None,
                        fresh: true,
                        created_at: now,
                    });
                }
                continue;
            }
            let stored: String = row.try_get("fingerprint")?;
            if stored != fingerprint {
                return Ok(Claim::Other);
            }
            return Ok(Claim::Same {
                tx: row.try_get("tx")?,
                fresh: false,
                created_at: u64::try_from(created).unwrap_or(0),
            });
        }
        Err(DbError::Conflict(
            "idempotency key (changed by other requests while it was claimed)",
        ))
    }

    /// Records that the request the key names is sending `tx`, where the row names `from`
    /// (nothing, or what this try found or recorded before): a compare-and-set, so of two
    /// tries of the key that send at once (in two gateways) one records. The row is made again
    /// if it is gone. `Some(other)`: the row names `other`, another try's transaction, and
    /// `tx` was not recorded (must not be sent).
    ///
    /// # Errors
    /// Query failures.
    pub async fn idempotency_key_sent(
        &self,
        scope: &str,
        key_hash: &str,
        fingerprint: &str,
        from: Option<&str>,
        tx: &str,
        now: u64,
    ) -> Result<Option<String>, DbError> {
        let mut from = from.map(str::to_owned);
        for _ in 0..4 {
            if self
                .idempotency_key_replaced(scope, key_hash, fingerprint, from.as_deref(), tx, now)
                .await?
            {
                return Ok(None);
            }
            let row = sqlx::query(
                "SELECT fingerprint, tx FROM idempotency_keys WHERE scope = ? AND key_hash = ?",
            )
            .bind(scope)
            .bind(key_hash)
            .fetch_optional(self.pool())
            .await?;
            let Some(row) = row else {
                // Gone (freed, or swept): made again, naming `tx`.
                let insert = sqlx::query(
                    "INSERT INTO idempotency_keys (scope, key_hash, fingerprint, tx, created_at) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(scope)
                .bind(key_hash)
                .bind(fingerprint)
                .bind(tx)
                .bind(to_i64(now))
                .execute(self.pool())
                .await;
                match inserted(insert, "idempotency key") {
                    Ok(()) => return Ok(None),
                    // Made again meanwhile by another try: look again.
                    Err(DbError::Conflict(_)) => continue,
                    Err(e) => return Err(e),
                }
            };
            if row.try_get::<String, _>("fingerprint")? != fingerprint {
                return Err(DbError::Conflict(
                    "idempotency key (freed and claimed by another request meanwhile)",
                ));
            }
            match row.try_get::<Option<String>, _>("tx")? {
                // Changed between the statements: try again from what it names now.
                Some(t) if from.as_deref() == Some(t.as_str()) => {}
                // Another try's, this one's own signed alike (the same nonce, fees and call
                // give the same bytes) included: that try sends it.
                Some(other) => return Ok(Some(other)),
                None => from = None,
            }
        }
        Err(DbError::Conflict(
            "idempotency key (changed by other requests while it was recorded)",
        ))
    }

    /// Makes the key name `to` as of `now`, where it names `from` (nothing yet, or what an
    /// earlier try made that will never come to anything) for the request of `fingerprint`: a
    /// compare-and-set, so of two tries that do it at once one does; `false` when the row
    /// names something else by now (or is another request's: freed and claimed again).
    ///
    /// # Errors
    /// Query failures.
    pub async fn idempotency_key_replaced(
        &self,
        scope: &str,
        key_hash: &str,
        fingerprint: &str,
        from: Option<&str>,
        to: &str,
        now: u64,
    ) -> Result<bool, DbError> {
        let q = match from {
            Some(_) => sqlx::query(
                "UPDATE idempotency_keys SET tx = ?, created_at = ? \
                 WHERE scope = ? AND key_hash = ? AND fingerprint = ? AND tx = ?",
            ),
            None => sqlx::query(
                "UPDATE idempotency_keys SET tx = ?, created_at = ? \
                 WHERE scope = ? AND key_hash = ? AND fingerprint = ? AND tx IS NULL",
            ),
        };
        let mut q = q
            .bind(to)
            .bind(to_i64(now))
            .bind(scope)
            .bind(key_hash)
            .bind(fingerprint);
        if let Some(from) = from {
            q = q.bind(from);
        }
        let r = q.execute(self.pool()).await?;
        Ok(r.rows_affected() == 1)
    }

    /// Where a chain write's `chain::Ticket` keeps its transaction: the row of `key_hash` in
    /// `scope` for the request of `fingerprint` ([`Self::idempotency_key_sent`] and
    /// [`Self::idempotency_key_withdrawn`]).
    pub fn idempotency_record(
        &self,
        scope: &str,
        key_hash: &str,
        fingerprint: &str,
    ) -> crate::chain::RecordSent {
        let row = std::sync::Arc::new((
            self.clone(),
            scope.to_owned(),
            key_hash.to_owned(),
            fingerprint.to_owned(),
        ));
        std::sync::Arc::new(move |what| {
            let row = std::sync::Arc::clone(&row);
            Box::pin(async move {
                let (db, scope, key_hash, fingerprint) = &*row;
                match what {
                    crate::chain::Recorded::Sent { from, tx } => db
                        .idempotency_key_sent(
                            scope,
                            key_hash,
                            fingerprint,
                            from.map(|f| f.to_string()).as_deref(),
                            &tx.to_string(),
                            crate::clock::unix_now(),
                        )
                        .await
                        .map(|other| other.and_then(|o| o.parse().ok())),
                    crate::chain::Recorded::Withdrawn(tx) => db
                        .idempotency_key_withdrawn(scope, key_hash, &tx.to_string())
                        .await
                        .map(|()| None),
                }
                .map_err(|e| crate::kind::with_sources(&e))
            })
        })
    }

    /// Makes the key name nothing again where it names `tx` (a transaction the node refused):
    /// the key stays claimed by the try that made the row, which frees it when it ends.
    ///
    /// # Errors
    /// Query failures.
    pub async fn idempotency_key_withdrawn(
        &self,
        scope: &str,
        key_hash: &str,
        tx: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE idempotency_keys SET tx = NULL WHERE scope = ? AND key_hash = ? AND tx = ?",
        )
        .bind(scope)
        .bind(key_hash)
        .bind(tx)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Frees the key whose request made `made` when that came to nothing (an upload that
    /// failed before its anchor was sent): a retry runs anew.
    ///
    /// # Errors
    /// Query failures.
    pub async fn release_idempotency_key_made(
        &self,
        scope: &str,
        key_hash: &str,
        made: &str,
    ) -> Result<(), DbError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = ? AND key_hash = ? AND tx = ?")
            .bind(scope)
            .bind(key_hash)
            .bind(made)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Frees the key when its request sent nothing (it failed before): a retry runs anew.
    ///
    /// # Errors
    /// Query failures.
    pub async fn release_idempotency_key(
        &self,
        scope: &str,
        key_hash: &str,
    ) -> Result<(), DbError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = ? AND key_hash = ? AND tx IS NULL")
            .bind(scope)
            .bind(key_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

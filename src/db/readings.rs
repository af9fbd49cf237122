//! Rows of the ingestion tables: readings waiting to be sealed, the nonces devices used, the
//! windows being sealed or sealed, and refusals per day. What the rows mean (signatures,
//! vital signs, encryption at rest) belongs to `crate::ingest`.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Database, DbError, bits_u64, to_i64, to_u64, u64_bits};

/// A reading (one signed envelope) to store.
#[derive(Debug, Clone)]
pub struct NewReading {
    /// The device key's address, `0x` + 40 hex digits, lowercase.
    pub device: String,
    /// Its nonce.
    pub nonce: u64,
    /// When the device signed it, unix seconds.
    pub signed_at: u64,
    /// Patient: area id.
    pub patient_aid: u64,
    /// Patient: patient id.
    pub patient_pid: u64,
    /// When it arrived, unix milliseconds.
    pub received_at: u64,
    /// Observations in it.
    pub observations: u32,
    /// Earliest and latest observation time, unix seconds.
    pub observed: (i64, i64),
    /// The envelope, encrypted at rest.
    pub envelope: Vec<u8>,
}

/// A patient with readings not yet claimed by a seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// Area id.
    pub patient_aid: u64,
    /// Patient id.
    pub patient_pid: u64,
    /// When the oldest arrived, unix milliseconds.
    pub oldest_ms: u64,
    /// Observations waiting.
    pub observations: u64,
}

/// A window of readings being sealed, or sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealRow {
    /// Random id, 32 hex digits.
    pub id: String,
    /// Area id.
    pub patient_aid: u64,
    /// Patient id.
    pub patient_pid: u64,
    /// When the window was claimed, unix seconds.
    pub created_at: u64,
    /// Envelopes in it.
    pub envelopes: u32,
    /// Observations in it.
    pub observations: u32,
    /// Earliest and latest observation time, unix seconds.
    pub observed: (i64, i64),
    /// The record it was sealed into, `0x` + 64 hex digits; `None` while being sealed.
    pub record: Option<String>,
    /// When it was sealed, unix seconds.
    pub sealed_at: Option<u64>,
}

/// Counts for the records office's dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Envelopes acknowledged and not yet sealed.
    pub waiting_envelopes: u64,
    /// Windows sealed into records.
    pub sealed_records: u64,
    /// Observations in them.
    pub sealed_observations: u64,
    /// Windows whose sealing has not finished (retried).
    pub pending_seals: u64,
    /// Refusals per reason since the day given, most first.
    pub refusals: Vec<(String, u64)>,
}

fn seal(r: &AnyRow) -> Result<SealRow, DbError> {
    let sealed_at: Option<i64> = r.try_get("sealed_at")?;
    Ok(SealRow {
        id: r.try_get("id")?,
        patient_aid: bits_u64(r.try_get("patient_aid")?),
        patient_pid: bits_u64(r.try_get("patient_pid")?),
        created_at: to_u64(r.try_get("created_at")?, "seal created_at")?,
        envelopes: count(r.try_get("envelopes")?)?,
        observations: count(r.try_get("observations")?)?,
        observed: (r.try_get("observed_from")?, r.try_get("observed_to")?),
        record: r.try_get("record")?,
        sealed_at: sealed_at.map(|t| to_u64(t, "seal sealed_at")).transpose()?,
    })
}

fn count(v: i32) -> Result<u32, DbError> {
    u32::try_from(v).map_err(|_| DbError::Corrupt {
        what: "seal count",
        problem: format!("negative value {v}"),
    })
}

/// The columns of an `ingest_seals` row, in the order `seal` reads them.
macro_rules! seal_columns {
    () => {
        "id, patient_aid, patient_pid, created_at, envelopes, observations, observed_from, observed_to, record, sealed_at"
    };
}

impl Database {
    /// Stores readings in one transaction (one commit for many: the writer groups what
    /// arrived together). Each gets `Ok` or [`DbError::Conflict`] when its device used its
    /// nonce before (a replay); the others are stored all the same.
    ///
    /// # Errors
    /// Query failures (then none is stored).
    pub async fn insert_readings(
        &self,
        rows: &[NewReading],
    ) -> Result<Vec<Result<(), DbError>>, DbError> {
        let mut tx = self.pool().begin().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let n = sqlx::query(
                "INSERT INTO ingest_nonces (device, nonce, signed_at) VALUES (?, ?, ?)",
            )
            .bind(&r.device)
            .bind(u64_bits(r.nonce))
            .bind(to_i64(r.signed_at))
            .execute(&mut *tx)
            .await;
            match n {
                Ok(_) => {}
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    out.push(Err(DbError::Conflict("reading with this device nonce")));
                    continue;
                }
                Err(e) => return Err(DbError::Query(e)),
            }
            let inserted = sqlx::query(
                "INSERT INTO ingest_readings (device, nonce, patient_aid, patient_pid, received_at, observations, observed_from, observed_to, envelope) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&r.device)
            .bind(u64_bits(r.nonce))
            .bind(u64_bits(r.patient_aid))
            .bind(u64_bits(r.patient_pid))
            .bind(to_i64(r.received_at))
            .bind(i64::from(r.observations))
            .bind(r.observed.0)
            .bind(r.observed.1)
            .bind(&r.envelope)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => out.push(Ok(())),
                // The reading outlived its nonce row (a long sealing outage): still a replay,
                // and the others of the group are stored all the same.
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    out.push(Err(DbError::Conflict("reading with this device nonce")));
                }
                Err(e) => return Err(DbError::Query(e)),
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Patients with readings no seal has claimed yet.
    ///
    /// # Errors
    /// Query failures.
    pub async fn waiting_readings(&self) -> Result<Vec<Waiting>, DbError> {
        let rows = sqlx::query(
            "SELECT patient_aid, patient_pid, MIN(received_at) AS oldest, CAST(SUM(observations) AS SIGNED) AS n \
             FROM ingest_readings WHERE seal_id IS NULL GROUP BY patient_aid, patient_pid",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Waiting {
                    patient_aid: bits_u64(r.try_get("patient_aid")?),
                    patient_pid: bits_u64(r.try_get("patient_pid")?),
                    oldest_ms: to_u64(r.try_get("oldest")?, "reading received_at")?,
                    observations: to_u64(r.try_get("n")?, "reading observations")?,
                })
            })
            .collect()
    }

    /// Claims the patient's oldest unclaimed readings for a new seal `id`: whole envelopes,
    /// oldest first, until about `max_observations` readings or `max_bytes` of envelopes; `None`
    /// when there are none. The seal's counts and time range come from the rows it claimed
    /// (a reading committed between the look and the claim is counted where it went).
    ///
    /// # Errors
    /// Query failures.
    pub async fn claim_readings(
        &self,
        id: &str,
        patient_aid: u64,
        patient_pid: u64,
        limits: (u64, u64),
        now: u64,
    ) -> Result<Option<SealRow>, DbError> {
        let (max_observations, max_bytes) = limits;
        let mut tx = self.pool().begin().await?;
        let rows = sqlx::query(
            "SELECT received_at, observations, CAST(LENGTH(envelope) AS SIGNED) AS size FROM ingest_readings \
             WHERE patient_aid = ? AND patient_pid = ? AND seal_id IS NULL \
             ORDER BY received_at",
        )
        .bind(u64_bits(patient_aid))
        .bind(u64_bits(patient_pid))
        .fetch_all(&mut *tx)
        .await?;
        let (mut observations, mut bytes) = (0u64, 0u64);
        let mut cutoff = None;
        for r in &rows {
            let at: i64 = r.try_get("received_at")?;
            if cutoff.is_some_and(|c| at > c)
                && (observations >= max_observations || bytes >= max_bytes)
            {
                break;
            }
            let n: i32 = r.try_get("observations")?;
            let size: i64 = r.try_get("size")?;
            observations += u64::from(count(n)?);
            bytes += to_u64(size, "reading size")?;
            cutoff = Some(at);
        }
        let Some(cutoff) = cutoff else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE ingest_readings SET seal_id = ? \
             WHERE patient_aid = ? AND patient_pid = ? AND seal_id IS NULL AND received_at <= ?",
        )
        .bind(id)
        .bind(u64_bits(patient_aid))
        .bind(u64_bits(patient_pid))
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        let t = sqlx::query(
            "SELECT COUNT(*) AS envelopes, CAST(SUM(observations) AS SIGNED) AS observations, \
             MIN(observed_from) AS observed_from, MAX(observed_to) AS observed_to \
             FROM ingest_readings WHERE seal_id = ?",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let envelopes: i64 = t.try_get("envelopes")?;
        let observations: Option<i64> = t.try_get("observations")?;
        let from: Option<i64> = t.try_get("observed_from")?;
        let to: Option<i64> = t.try_get("observed_to")?;
        let narrow = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        let (envelopes, observations) = (narrow(envelopes), narrow(observations.unwrap_or(0)));
        let observed = (from.unwrap_or(0), to.unwrap_or(0));
        sqlx::query(
            "INSERT INTO ingest_seals (id, patient_aid, patient_pid, created_at, envelopes, observations, observed_from, observed_to) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(u64_bits(patient_aid))
        .bind(u64_bits(patient_pid))
        .bind(to_i64(now))
        .bind(i64::from(envelopes))
        .bind(i64::from(observations))
        .bind(observed.0)
        .bind(observed.1)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(SealRow {
            id: id.to_owned(),
            patient_aid,
            patient_pid,
            created_at: now,
            envelopes,
            observations,
            observed,
            record: None,
            sealed_at: None,
        }))
    }

    /// The envelopes (encrypted at rest) a seal claimed, in arrival order.
    ///
    /// # Errors
    /// Query failures.
    pub async fn seal_envelopes(&self, id: &str) -> Result<Vec<Vec<u8>>, DbError> {
        let rows = sqlx::query(
            "SELECT envelope FROM ingest_readings WHERE seal_id = ? ORDER BY received_at, device, nonce",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get("envelope").map_err(DbError::from))
            .collect()
    }

    /// Seals whose record is not stored yet (a crash, or a failure, cut them off).
    ///
    /// # Errors
    /// Query failures.
    pub async fn unfinished_seals(&self) -> Result<Vec<SealRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            seal_columns!(),
            " FROM ingest_seals WHERE record IS NULL ORDER BY created_at"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(seal).collect()
    }

    /// Marks a seal done with its record and deletes its readings, in one transaction.
    ///
    /// # Errors
    /// Query failures.
    pub async fn finish_seal(&self, id: &str, record: &str, now: u64) -> Result<(), DbError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE ingest_seals SET record = ?, sealed_at = ? WHERE id = ?")
            .bind(record)
            .bind(to_i64(now))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM ingest_readings WHERE seal_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The patient's sealed windows whose observations reach into `[from, to]` (unix
    /// seconds), newest first, at most `limit`.
    ///
    /// # Errors
    /// Query failures.
    pub async fn sealed_windows(
        &self,
        patient_aid: u64,
        patient_pid: u64,
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Vec<SealRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            seal_columns!(),
            " FROM ingest_seals \
             WHERE patient_aid = ? AND patient_pid = ? AND record IS NOT NULL \
             AND observed_to >= ? AND observed_from <= ? \
             ORDER BY observed_to DESC LIMIT ?"
        ))
        .bind(u64_bits(patient_aid))
        .bind(u64_bits(patient_pid))
        .bind(from)
        .bind(to)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(seal).collect()
    }

    /// Forgets nonces signed before `before` (unix seconds): a replay of them is refused as
    /// stale by the clock check, before the nonce is looked up.
    ///
    /// # Errors
    /// Query failures.
    pub async fn prune_nonces(&self, before: u64) -> Result<u64, DbError> {
        Ok(sqlx::query("DELETE FROM ingest_nonces WHERE signed_at < ?")
            .bind(to_i64(before))
            .execute(self.pool())
            .await?
            .rows_affected())
    }

    /// Counts `n` refusals of `reason` on `day` (days since the epoch).
    ///
    /// # Errors
    /// Query failures.
    pub async fn count_refusals(&self, day: u64, reason: &str, n: u64) -> Result<(), DbError> {
        // Update first, insert when there was no row; a concurrent insert makes the insert
        // conflict, and the update then finds its row.
        for _ in 0..3 {
            let updated = sqlx::query(
                "UPDATE ingest_refusals SET refused = refused + ? WHERE day = ? AND reason = ?",
            )
            .bind(to_i64(n))
            .bind(to_i64(day))
            .bind(reason)
            .execute(self.pool())
            .await?
            .rows_affected();
            if updated > 0 {
                return Ok(());
            }
            let r =
                sqlx::query("INSERT INTO ingest_refusals (day, reason, refused) VALUES (?, ?, ?)")
                    .bind(to_i64(day))
                    .bind(reason)
                    .bind(to_i64(n))
                    .execute(self.pool())
                    .await;
            match r {
                Ok(_) => return Ok(()),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {}
                Err(e) => return Err(DbError::Query(e)),
            }
        }
        Err(DbError::Conflict("refusal counter"))
    }

    /// The dashboard's counts; refusals from `since_day` on.
    ///
    /// # Errors
    /// Query failures.
    pub async fn ingest_stats(&self, since_day: u64) -> Result<IngestStats, DbError> {
        let one = |sql: &'static str| async move {
            let r = sqlx::query(sql).fetch_one(self.pool()).await?;
            let v: Option<i64> = r.try_get(0)?;
            to_u64(v.unwrap_or(0), "ingest count")
        };
        let waiting_envelopes = one("SELECT COUNT(*) FROM ingest_readings").await?;
        let sealed_records =
            one("SELECT COUNT(*) FROM ingest_seals WHERE record IS NOT NULL").await?;
        let sealed_observations = one(
            "SELECT CAST(SUM(observations) AS SIGNED) FROM ingest_seals WHERE record IS NOT NULL",
        )
        .await?;
        let pending_seals = one("SELECT COUNT(*) FROM ingest_seals WHERE record IS NULL").await?;
        let rows = sqlx::query(
            "SELECT reason, CAST(SUM(refused) AS SIGNED) AS n FROM ingest_refusals WHERE day >= ? \
             GROUP BY reason ORDER BY n DESC",
        )
        .bind(to_i64(since_day))
        .fetch_all(self.pool())
        .await?;
        let refusals = rows
            .iter()
            .map(|r| Ok((r.try_get("reason")?, to_u64(r.try_get("n")?, "refusals")?)))
            .collect::<Result<_, DbError>>()?;
        Ok(IngestStats {
            waiting_envelopes,
            sealed_records,
            sealed_observations,
            pending_seals,
            refusals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(device: &str, nonce: u64, at: u64, n: u32) -> NewReading {
        NewReading {
            device: device.into(),
            nonce,
            signed_at: at / 1000,
            patient_aid: 1,
            patient_pid: u64::MAX,
            received_at: at,
            observations: n,
            observed: (
                i64::try_from(at / 1000).unwrap(),
                i64::try_from(at / 1000).unwrap() + 1,
            ),
            envelope: vec![u8::try_from(nonce % 256).unwrap(); 3],
        }
    }

    #[tokio::test]
    async fn replays_are_refused_one_by_one_and_seals_claim_then_finish() {
        let (_d, db) = crate::db::testing::sqlite().await;
        let r = db
            .insert_readings(&[reading("0xa", 1, 1000, 2), reading("0xa", 2, 2000, 2)])
            .await
            .unwrap();
        assert!(r.iter().all(Result::is_ok));
        let r = db
            .insert_readings(&[reading("0xa", 2, 3000, 1), reading("0xb", 2, 3000, 1)])
            .await
            .unwrap();
        assert!(matches!(r[0], Err(DbError::Conflict(_))), "replayed nonce");
        assert!(r[1].is_ok(), "another device's nonce 2");
        let w = db.waiting_readings().await.unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(
            (w[0].patient_pid, w[0].oldest_ms, w[0].observations),
            (u64::MAX, 1000, 5)
        );

        let s = db
            .claim_readings("s1", 1, u64::MAX, (3, u64::MAX), 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.envelopes, s.observations),
            (2, 4),
            "whole envelopes up to the max"
        );
        assert_eq!(
            db.seal_envelopes("s1").await.unwrap(),
            vec![vec![1; 3], vec![2; 3]]
        );
        assert_eq!(db.unfinished_seals().await.unwrap(), vec![s.clone()]);
        db.finish_seal("s1", "0xrecord", 11).await.unwrap();
        assert!(db.unfinished_seals().await.unwrap().is_empty());
        assert!(
            db.seal_envelopes("s1").await.unwrap().is_empty(),
            "sealed readings are deleted"
        );
        let w = db.waiting_readings().await.unwrap();
        assert_eq!(
            w[0].observations, 1,
            "the third is left for the next window"
        );
        let sealed = db.sealed_windows(1, u64::MAX, 0, 10, 10).await.unwrap();
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].record.as_deref(), Some("0xrecord"));

        // Nonces outlive their readings until pruned.
        let r = db
            .insert_readings(&[reading("0xa", 1, 4000, 1)])
            .await
            .unwrap();
        assert!(
            matches!(r[0], Err(DbError::Conflict(_))),
            "sealed reading's nonce replayed"
        );
        assert_eq!(db.prune_nonces(3).await.unwrap(), 2);

        db.count_refusals(7, "forged", 1).await.unwrap();
        db.count_refusals(7, "forged", 2).await.unwrap();
        db.count_refusals(8, "replayed", 1).await.unwrap();
        let st = db.ingest_stats(0).await.unwrap();
        assert_eq!(
            st.refusals,
            vec![("forged".into(), 3), ("replayed".into(), 1)]
        );
        assert_eq!(
            (
                st.sealed_records,
                st.sealed_observations,
                st.waiting_envelopes
            ),
            (1, 4, 1)
        );
    }

    #[tokio::test]
    async fn a_window_stops_at_its_byte_cap_and_a_replayed_reading_spoils_no_other() {
        let (_d, db) = crate::db::testing::sqlite().await;
        let r = db
            .insert_readings(&[reading("0xa", 1, 1000, 2), reading("0xa", 2, 2000, 2)])
            .await
            .unwrap();
        assert!(r.iter().all(Result::is_ok));
        let s = db
            .claim_readings("s", 1, u64::MAX, (u64::MAX, 1), 5)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.envelopes, s.observations),
            (1, 2),
            "the first envelope alone"
        );
        // Its nonce row pruned while the reading waits: the replay is still refused, alone.
        assert_eq!(db.prune_nonces(u64::MAX).await.unwrap(), 2);
        let r = db
            .insert_readings(&[reading("0xa", 2, 3000, 1), reading("0xb", 9, 3000, 1)])
            .await
            .unwrap();
        assert!(matches!(r[0], Err(DbError::Conflict(_))));
        assert!(r[1].is_ok(), "the rest of the group is stored");
    }
}

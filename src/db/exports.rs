//! Rows of `audit_exports`: each download of a patient's audit trail.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Database, DbError, inserted, to_i64, to_u64};

/// The columns of an `audit_exports` row, in the order `row` reads them.
macro_rules! columns {
    () => {
        "id, username, patient_aid, patient_pid, format, events, exported_at"
    };
}

/// One download of an audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRow {
    /// Random id (32 hex digits).
    pub id: String,
    /// Who downloaded it.
    pub username: String,
    /// Whose trail: area id.
    pub patient_aid: u64,
    /// Whose trail: patient id.
    pub patient_pid: u64,
    /// `fhir` or `csv`.
    pub format: String,
    /// How many events it held.
    pub events: u64,
    /// Unix seconds.
    pub exported_at: u64,
}

fn row(r: &AnyRow) -> Result<ExportRow, DbError> {
    Ok(ExportRow {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        patient_aid: to_u64(r.try_get("patient_aid")?, "export patient_aid")?,
        patient_pid: to_u64(r.try_get("patient_pid")?, "export patient_pid")?,
        format: r.try_get("format")?,
        events: to_u64(r.try_get("events")?, "export events")?,
        exported_at: to_u64(r.try_get("exported_at")?, "export exported_at")?,
    })
}

impl Database {
    /// Records a download.
    ///
    /// # Errors
    /// Query failures.
    pub async fn insert_export(&self, e: &ExportRow) -> Result<(), DbError> {
        let r = sqlx::query(
            "INSERT INTO audit_exports (id, username, patient_aid, patient_pid, format, events, exported_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.id)
        .bind(&e.username)
        .bind(to_i64(e.patient_aid))
        .bind(to_i64(e.patient_pid))
        .bind(&e.format)
        .bind(to_i64(e.events))
        .bind(to_i64(e.exported_at))
        .execute(self.pool())
        .await;
        inserted(r, "audit export")
    }

    /// The newest `limit` downloads of one patient's trail, newest first.
    ///
    /// # Errors
    /// Query failures.
    pub async fn exports_of(
        &self,
        aid: u64,
        pid: u64,
        limit: u32,
    ) -> Result<Vec<ExportRow>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM audit_exports WHERE patient_aid = ? AND patient_pid = ? \
             ORDER BY exported_at DESC, id LIMIT ?",
        ))
        .bind(to_i64(aid))
        .bind(to_i64(pid))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(row)
        .collect()
    }

    /// The newest `limit` downloads of any trail, newest first.
    ///
    /// # Errors
    /// Query failures.
    pub async fn recent_exports(&self, limit: u32) -> Result<Vec<ExportRow>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM audit_exports ORDER BY exported_at DESC, id LIMIT ?",
        ))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(row)
        .collect()
    }
}

//! Rows of `accounts`: a web user, their keystore and (for providers) their profile.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};

use super::{Database, DbError, bits_u64, inserted, to_i64, to_u64, u64_bits};

/// One web account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// Login name (primary key).
    pub username: String,
    /// `patient`, `provider` or `office`.
    pub role: String,
    /// The Ethereum address, checksummed.
    pub address: String,
    /// A patient's `Addr` (`aid`, `pid`), full uint64 range (stored bit for bit in BIGINT).
    pub patient: Option<(u64, u64)>,
    /// The Web3 secret-storage keystore (JSON).
    pub keystore: String,
    /// A provider's name, organisation and licence number.
    pub profile: Option<(String, String, String)>,
    /// Unix seconds.
    pub created_at: u64,
}

/// The columns, in one place; a macro so that queries stay literal (`concat!`), as sqlx asks
/// of SQL it cannot prove free of injection.
macro_rules! columns {
    () => {
        "username, role, address, patient_aid, patient_pid, keystore, \
         profile_name, profile_organisation, profile_licence, created_at"
    };
}

/// The INSERT of one account row, to run on the pool or in a transaction.
fn insert(a: &AccountRow) -> Query<'_, Any, AnyArguments> {
    let (aid, pid) = a.patient.map_or((None, None), |(a, p)| {
        (Some(u64_bits(a)), Some(u64_bits(p)))
    });
    let (name, org, licence) = a
        .profile
        .clone()
        .map_or((None, None, None), |(n, o, l)| (Some(n), Some(o), Some(l)));
    sqlx::query(concat!(
        "INSERT INTO accounts (",
        columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&a.username)
    .bind(&a.role)
    .bind(&a.address)
    .bind(aid)
    .bind(pid)
    .bind(&a.keystore)
    .bind(name)
    .bind(org)
    .bind(licence)
    .bind(to_i64(a.created_at))
}

fn row(r: &AnyRow) -> Result<AccountRow, DbError> {
    let aid: Option<i64> = r.try_get("patient_aid")?;
    let pid: Option<i64> = r.try_get("patient_pid")?;
    let patient = match (aid, pid) {
        (Some(a), Some(p)) => Some((bits_u64(a), bits_u64(p))),
        _ => None,
    };
    let name: Option<String> = r.try_get("profile_name")?;
    let org: Option<String> = r.try_get("profile_organisation")?;
    let licence: Option<String> = r.try_get("profile_licence")?;
    Ok(AccountRow {
        username: r.try_get("username")?,
        role: r.try_get("role")?,
        address: r.try_get("address")?,
        patient,
        keystore: r.try_get("keystore")?,
        profile: match (name, org, licence) {
            (Some(n), Some(o), Some(l)) => Some((n, o, l)),
            _ => None,
        },
        created_at: to_u64(r.try_get("created_at")?, "account created_at")?,
    })
}

impl Database {
    /// Adds an account.
    ///
    /// # Errors
    /// [`DbError::Conflict`] when the name is taken; query failures.
    pub async fn insert_account(&self, a: &AccountRow) -> Result<(), DbError> {
        inserted(insert(a).execute(self.pool()).await, "username")
    }

    /// The account named `username`.
    ///
    /// # Errors
    /// Query failures.
    pub async fn account(&self, username: &str) -> Result<Option<AccountRow>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM accounts WHERE username = ?"
        ))
        .bind(username)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(row)
        .transpose()
    }

    /// Every account, by name.
    ///
    /// # Errors
    /// Query failures.
    pub async fn accounts(&self) -> Result<Vec<AccountRow>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM accounts ORDER BY username"
        ))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(row)
        .collect()
    }

    /// Replaces an account's keystore (a stronger KDF); false when there is no such account.
    ///
    /// # Errors
    /// Query failures.
    pub async fn set_keystore(&self, username: &str, keystore: &str) -> Result<bool, DbError> {
        let r = sqlx::query("UPDATE accounts SET keystore = ? WHERE username = ?")
            .bind(keystore)
            .bind(username)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Sets a provider's profile; false when there is no such account.
    ///
    /// # Errors
    /// Query failures.
    pub async fn set_profile(
        &self,
        username: &str,
        name: &str,
        organisation: &str,
        licence: &str,
    ) -> Result<bool, DbError> {
        let r = sqlx::query(
            "UPDATE accounts SET profile_name = ?, profile_organisation = ?, profile_licence = ? \
             WHERE username = ?",
        )
        .bind(name)
        .bind(organisation)
        .bind(licence)
        .bind(username)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Adds an account made elsewhere with its API tokens, in one transaction (the import of
    /// an earlier version's files). An account already there with the same name and address
    /// counts as imported before: its missing tokens are added. Tokens whose id exists are
    /// left alone.
    ///
    /// # Errors
    /// [`DbError::Conflict`] when the name belongs to another account; query failures (then
    /// nothing of this account is written).
    pub async fn import_account(
        &self,
        a: &AccountRow,
        tokens: &[super::TokenRow],
    ) -> Result<(), DbError> {
        let mut tx = self.pool().begin().await?;
        match inserted(insert(a).execute(&mut *tx).await, "username") {
            Ok(()) => {}
            Err(DbError::Conflict(what)) => {
                let there = sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM accounts WHERE username = ?"
                ))
                .bind(&a.username)
                .fetch_optional(&mut *tx)
                .await?
                .as_ref()
                .map(row)
                .transpose()?;
                // The same key (its keystore may since have been re-encrypted at a login).
                let same = there.is_some_and(|t| t.address.eq_ignore_ascii_case(&a.address));
                if !same {
                    return Err(DbError::Conflict(what));
                }
            }
            Err(e) => return Err(e),
        }
        for t in tokens {
            match inserted(super::tokens::insert(t).execute(&mut *tx).await, "token id") {
                Ok(()) | Err(DbError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes an account with its sessions and tokens, in one transaction; false when there
    /// was none.
    ///
    /// # Errors
    /// Query failures (then nothing is removed).
    pub async fn delete_account(&self, username: &str) -> Result<bool, DbError> {
        let mut tx = self.pool().begin().await?;
        for sql in [
            "DELETE FROM sessions WHERE username = ?",
            "DELETE FROM api_tokens WHERE username = ?",
        ] {
            sqlx::query(sql).bind(username).execute(&mut *tx).await?;
        }
        let r = sqlx::query("DELETE FROM accounts WHERE username = ?")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(name: &str) -> AccountRow {
        AccountRow {
            username: name.into(),
            role: "provider".into(),
            address: "0x0000000000000000000000000000000000000001".into(),
            patient: Some((1, u64::from(u32::MAX) + 7)),
            keystore: "{}".into(),
            profile: None,
            created_at: 1_700_000_000,
        }
    }

    #[tokio::test]
    async fn accounts_round_trip_and_names_are_unique() {
        let (_dir, db) = crate::db::testing::sqlite().await;
        let a = sample("alice");
        db.insert_account(&a).await.unwrap();
        assert!(matches!(
            db.insert_account(&a).await,
            Err(DbError::Conflict("username"))
        ));
        assert_eq!(db.account("alice").await.unwrap(), Some(a.clone()));
        assert!(
            db.set_profile("alice", "Dr. Zoë Ørsted", "Hôpital", "L-1")
                .await
                .unwrap()
        );
        assert!(db.set_keystore("alice", "{\"v\":3}").await.unwrap());
        let back = db.account("alice").await.unwrap().unwrap();
        assert_eq!(back.profile.unwrap().0, "Dr. Zoë Ørsted");
        assert_eq!(back.keystore, "{\"v\":3}");
        assert!(db.delete_account("alice").await.unwrap());
        assert!(!db.delete_account("alice").await.unwrap());
        assert!(db.accounts().await.unwrap().is_empty());
    }
}

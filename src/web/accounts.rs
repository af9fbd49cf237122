//! Web accounts in the gateway's database: each user's Ethereum key lives in a standard Web3
//! secret-storage keystore (scrypt) in their row, unlocked only by the user's password at
//! login. Passwords are never stored or logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};

use super::keystore::{
    KeystoreError, SCRYPT_LOG_N, decrypt_keystore, encrypt_keystore, keystore_log_n,
};
use super::now;
use crate::chain::PatientAddr;
use crate::db::{AccountRow, Database, DbError};

/// A user's role in the web application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A patient.
    Patient,
    /// A doctor or other provider.
    Provider,
    /// The records office.
    Office,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patient => "patient",
            Self::Provider => "provider",
            Self::Office => "office",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Patient, Self::Provider, Self::Office]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// What is stored about a user (no password, no plaintext key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// Login name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Ethereum account.
    pub address: Address,
    /// For patients: their `Addr`.
    pub patient: Option<PatientAddr>,
    /// For providers: who they are, as entered at sign-up.
    #[serde(default)]
    pub profile: Option<ProviderProfile>,
}

/// Who a provider is: shown to the records office when verifying and to patients when granting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderProfile {
    /// Full name.
    pub name: String,
    /// Organisation (hospital, practice).
    pub organisation: String,
    /// Licence or registration number.
    pub licence: String,
}

impl ProviderProfile {
    /// A profile; every field 1 to 100 characters, no control characters.
    ///
    /// # Errors
    /// [`AccountError::Invalid`] naming the field.
    pub fn new(name: &str, organisation: &str, licence: &str) -> Result<Self, AccountError> {
        let field = |what: &str, v: &str| {
            let v = v.trim();
            if v.is_empty() || v.chars().count() > 100 || v.chars().any(char::is_control) {
                Err(AccountError::Invalid(format!(
                    "{what}: 1 to 100 characters"
                )))
            } else {
                Ok(v.to_owned())
            }
        };
        Ok(Self {
            name: field("name", name)?,
            organisation: field("organisation", organisation)?,
            licence: field("licence number", licence)?,
        })
    }
}

/// Errors of the account store.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Bad username or password (one message for both, so names cannot be probed).
    #[error("unknown user or wrong password")]
    BadLogin,
    /// The username is taken.
    #[error("username {0:?} is taken")]
    Taken(String),
    /// Input rules.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] DbError),
    /// A stored keystore does not open or hold the account's key.
    #[error("keystore of {user}: {problem}")]
    Keystore {
        /// The user.
        user: String,
        /// What is wrong.
        problem: String,
    },
}

impl crate::kind::Classify for AccountError {
    fn kind(&self) -> crate::kind::ErrorKind {
        use crate::kind::ErrorKind as K;
        match self {
            Self::BadLogin => K::Unauthenticated,
            Self::Taken(_) => K::Conflict,
            Self::Invalid(_) => K::BadInput,
            Self::Storage(e) => e.kind(),
            Self::Keystore { .. } => K::Internal,
        }
    }

    fn public_message(&self) -> String {
        match self {
            Self::Storage(e) => crate::kind::Classify::public_message(e),
            Self::Keystore { .. } => {
                "your account's key could not be opened; contact the administrator".to_owned()
            }
            _ => self.to_string(),
        }
    }
}

/// The web accounts, in the gateway's database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccountStore {
    db: Database,
    /// A keystore nobody can open, unlocked on logins of unknown users, so that they take as
    /// long as a wrong password (no user-name oracle from timing).
    decoy: Arc<str>,
    kdf_runs: Arc<AtomicU64>,
}

fn valid_name(name: &str) -> bool {
    (3..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Runs the password KDF off the async threads (it takes a few hundred ms and 128 MiB).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl AccountStore {
    /// The accounts in `db` (prepares the decoy keystore: one KDF run).
    ///
    /// # Errors
    /// Never today (the decoy's KDF parameters are constants); kept for stores that can fail.
    pub async fn new(db: Database) -> Result<Self, AccountError> {
        let decoy = blocking(|| {
            let mut pw = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut pw);
            encrypt_keystore(
                &PrivateKeySigner::random().to_bytes().0,
                &hex::encode(pw),
                SCRYPT_LOG_N,
            )
        })
        .await
        .map_err(|e| AccountError::Keystore {
            user: "(decoy)".into(),
            problem: e.to_string(),
        })?;
        Ok(Self {
            db,
            decoy: decoy.into(),
            kdf_runs: Arc::default(),
        })
    }

    /// The database behind the store.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// How many logins ran the password KDF (each one does, known user or not: logins of
    /// unknown users unlock a decoy keystore, so their timing tells nothing).
    pub fn kdf_runs(&self) -> u64 {
        self.kdf_runs.load(Ordering::Relaxed)
    }

    fn account_of(row: AccountRow) -> Result<Account, AccountError> {
        let corrupt = |problem: String| {
            AccountError::Storage(DbError::Corrupt {
                what: "account",
                problem,
            })
        };
        let role = Role::parse(&row.role)
            .ok_or_else(|| corrupt(format!("{}: role {:?}", row.username, row.role)))?;
        let address = row
            .address
            .parse()
            .map_err(|e| corrupt(format!("{}: address: {e}", row.username)))?;
        let patient = row
            .patient
            .map(|(aid, pid)| PatientAddr::new(aid, pid))
            .transpose()
            .map_err(|e| corrupt(format!("{}: patient: {e}", row.username)))?;
        let profile = row
            .profile
            .map(|(name, organisation, licence)| ProviderProfile {
                name,
                organisation,
                licence,
            });
        Ok(Account {
            username: row.username,
            role,
            address,
            patient,
            profile,
        })
    }

    /// Every account, sorted by name.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn list(&self) -> Result<Vec<Account>, AccountError> {
        self.db
            .accounts()
            .await?
            .into_iter()
            .map(Self::account_of)
            .collect()
    }

    /// Sets a provider's profile.
    ///
    /// # Errors
    /// Unknown user or storage failure.
    pub async fn set_profile(
        &self,
        username: &str,
        profile: ProviderProfile,
    ) -> Result<(), AccountError> {
        let found = self
            .db
            .set_profile(
                username,
                &profile.name,
                &profile.organisation,
                &profile.licence,
            )
            .await?;
        if found {
            Ok(())
        } else {
            Err(AccountError::Invalid(format!("no user {username:?}")))
        }
    }

    /// The profiles of the web app's providers, by account.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn profiles(&self) -> Result<HashMap<Address, ProviderProfile>, AccountError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter_map(|a| a.profile.map(|p| (a.address, p)))
            .collect())
    }

    /// The account named `username`, if any.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn account(&self, username: &str) -> Result<Option<Account>, AccountError> {
        if !valid_name(username) {
            return Ok(None);
        }
        self.db
            .account(username)
            .await?
            .map(Self::account_of)
            .transpose()
    }

    /// Creates a user with `key` (a fresh one when `None`), encrypted under `password`. Two
    /// sign-ups racing for one name: the database's key lets exactly one in.
    ///
    /// # Errors
    /// Invalid name or password, a taken name, storage failures.
    pub async fn create(
        &self,
        username: &str,
        password: &str,
        role: Role,
        patient: Option<PatientAddr>,
        key: Option<PrivateKeySigner>,
    ) -> Result<(Account, PrivateKeySigner), AccountError> {
        if !valid_name(username) {
            return Err(AccountError::Invalid(
                "username: 3 to 32 letters, digits, - or _".into(),
            ));
        }
        if password.chars().count() < 10 {
            return Err(AccountError::Invalid(
                "password: at least 10 characters".into(),
            ));
        }
        if self.db.account(username).await?.is_some() {
            return Err(AccountError::Taken(username.into()));
        }
        let key = key.unwrap_or_else(PrivateKeySigner::random);
        let bytes = key.to_bytes().0;
        let pw = password.to_owned();
        let keystore = blocking(move || encrypt_keystore(&bytes, &pw, SCRYPT_LOG_N))
            .await
            .map_err(|e| AccountError::Keystore {
                user: username.into(),
                problem: e.to_string(),
            })?;
        let account = Account {
            username: username.into(),
            role,
            address: key.address(),
            patient,
            profile: None,
        };
        let row = AccountRow {
            username: username.into(),
            role: role.as_str().into(),
            address: account.address.to_checksum(None),
            patient: patient.map(|p| (p.aid(), p.pid())),
            keystore,
            profile: None,
            created_at: now(),
        };
        match self.db.insert_account(&row).await {
            Ok(()) => Ok((account, key)),
            Err(DbError::Conflict(_)) => Err(AccountError::Taken(username.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Unlocks the user's key with `password`.
    ///
    /// # Errors
    /// [`AccountError::BadLogin`] for an unknown user or a wrong password.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(Account, PrivateKeySigner), AccountError> {
        let row = if valid_name(username) {
            self.db.account(username).await?
        } else {
            None
        };
        self.kdf_runs.fetch_add(1, Ordering::Relaxed);
        let pw = password.to_owned();
        let Some(row) = row else {
            let decoy = self.decoy.clone();
            let _ = blocking(move || decrypt_keystore(&decoy, &pw)).await;
            return Err(AccountError::BadLogin);
        };
        let keystore = row.keystore.clone();
        let opened = blocking(move || decrypt_keystore(&keystore, &pw)).await;
        let key = match opened {
            Ok(k) => k,
            Err(KeystoreError::WrongPassword) => return Err(AccountError::BadLogin),
            Err(e) => {
                return Err(AccountError::Keystore {
                    user: username.into(),
                    problem: e.to_string(),
                });
            }
        };
        let keystore_problem = |problem: String| AccountError::Keystore {
            user: username.into(),
            problem,
        };
        let signer = PrivateKeySigner::from_slice(key.as_ref())
            .map_err(|e| keystore_problem(e.to_string()))?;
        let account = Self::account_of(row.clone())?;
        if signer.address() != account.address {
            return Err(keystore_problem("it holds another key".into()));
        }
        self.upgrade_kdf(&row, &signer, password).await;
        Ok((account, signer))
    }

    /// Re-encrypts a keystore written with a cheaper KDF than today's (N < 2^17) now that the
    /// password is at hand, so old accounts do not stay 16 times cheaper to guess.
    async fn upgrade_kdf(&self, row: &AccountRow, signer: &PrivateKeySigner, password: &str) {
        if keystore_log_n(&row.keystore).is_none_or(|n| n >= SCRYPT_LOG_N) {
            return;
        }
        let (bytes, pw) = (signer.to_bytes().0, password.to_owned());
        let done = match blocking(move || encrypt_keystore(&bytes, &pw, SCRYPT_LOG_N)).await {
            Ok(ks) => self
                .db
                .set_keystore(&row.username, &ks)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match done {
            Ok(_) => {
                tracing::info!(user = %row.username, "keystore upgraded to scrypt N=2^{SCRYPT_LOG_N}")
            }
            Err(e) => tracing::warn!(user = %row.username, "keystore upgrade failed: {e}"),
        }
    }

    /// Removes a user with their sessions and tokens (used to roll back a sign-up whose chain
    /// registration failed).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn remove(&self, username: &str) -> Result<(), AccountError> {
        if !valid_name(username) {
            return Err(AccountError::Invalid(format!("bad username {username:?}")));
        }
        self.db.delete_account(username).await?;
        Ok(())
    }

    /// Whether `username` exists.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn exists(&self, username: &str) -> Result<bool, AccountError> {
        Ok(self.account(username).await?.is_some())
    }

    /// Stores an account made elsewhere, its keystore as is (tests of older keystores).
    ///
    /// # Errors
    /// A taken name, storage failures.
    #[cfg(test)]
    pub(crate) async fn insert_row(&self, row: &AccountRow) -> Result<(), AccountError> {
        match self.db.insert_account(row).await {
            Err(DbError::Conflict(_)) => Err(AccountError::Taken(row.username.clone())),
            r => Ok(r?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, AccountStore) {
        let (dir, db) = crate::db::testing::sqlite().await;
        (dir, AccountStore::new(db).await.unwrap())
    }

    #[tokio::test]
    async fn keys_unlock_only_with_the_password_and_are_stored_encrypted() {
        let (_dir, s) = store().await;
        let (a, k) = s
            .create(
                "alice",
                "correct horse battery",
                Role::Patient,
                PatientAddr::new(1, 2).ok(),
                None,
            )
            .await
            .unwrap();
        assert!(matches!(
            s.create("alice", "another long pw", Role::Patient, None, None)
                .await,
            Err(AccountError::Taken(_))
        ));
        assert!(matches!(
            s.create("bob", "short", Role::Provider, None, None).await,
            Err(AccountError::Invalid(_))
        ));
        assert!(matches!(
            s.create("../x", "long enough pw", Role::Provider, None, None)
                .await,
            Err(AccountError::Invalid(_))
        ));
        assert!(matches!(
            s.login("alice", "wrong password!").await,
            Err(AccountError::BadLogin)
        ));
        assert!(matches!(
            s.login("nobody", "correct horse battery").await,
            Err(AccountError::BadLogin)
        ));
        assert_eq!(s.kdf_runs(), 2, "unknown users cost a KDF run too");
        let (b, k2) = s.login("alice", "correct horse battery").await.unwrap();
        assert_eq!((a.address, k.address()), (b.address, k2.address()));
        assert_eq!(b.patient, PatientAddr::new(1, 2).ok());
        let row = s.db().account("alice").await.unwrap().unwrap();
        assert!(
            row.keystore.contains("\"kdf\":\"scrypt\""),
            "{}",
            row.keystore
        );
        assert!(!row.keystore.contains(&hex::encode(k.to_bytes())));
    }

    #[tokio::test]
    async fn racing_sign_ups_for_one_name_leave_one_user() {
        let (_dir, s) = store().await;
        let results = futures::future::join_all((0..4).map(|_| {
            let s = s.clone();
            async move {
                s.create("carol", "long enough password", Role::Provider, None, None)
                    .await
            }
        }))
        .await;
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "exactly one sign-up wins");
        assert!(
            results
                .iter()
                .filter(|r| r.is_err())
                .all(|r| matches!(r, Err(AccountError::Taken(_))))
        );
        let (a, _) = s.login("carol", "long enough password").await.unwrap();
        assert_eq!(a.address, won[0].0.address);
        assert_eq!(s.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn old_keystores_are_upgraded_at_login() {
        let (_dir, s) = store().await;
        let key = PrivateKeySigner::random();
        let row = AccountRow {
            username: "olduser".into(),
            role: "provider".into(),
            address: key.address().to_checksum(None),
            patient: None,
            keystore: encrypt_keystore(&key.to_bytes().0, "an old password", 13).unwrap(),
            profile: None,
            created_at: 0,
        };
        s.insert_row(&row).await.unwrap();
        s.login("olduser", "an old password").await.unwrap();
        let now = s.db().account("olduser").await.unwrap().unwrap().keystore;
        assert_eq!(keystore_log_n(&now), Some(SCRYPT_LOG_N));
        s.login("olduser", "an old password").await.unwrap();
    }
}

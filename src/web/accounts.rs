//! Web accounts: each user's Ethereum key lives in a standard Web3 secret-storage keystore
//! (scrypt), unlocked only by the user's password at login. Passwords are never stored or logged.

use std::path::{Path, PathBuf};

use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};

use super::keystore::{SCRYPT_LOG_N, write_keystore};
use crate::chain::PatientAddr;

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

/// What is stored about a user (no password, no plaintext key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// Login name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Ethereum account.
    pub address: alloy::primitives::Address,
    /// For patients: their `Addr`.
    pub patient: Option<PatientAddr>,
    /// File name of the encrypted key under `keystores/`.
    pub keystore: String,
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
    /// Storage failure.
    #[error("account storage failed: {0}")]
    Io(String),
}

/// Accounts on disk: `users/<name>.json` (role, address, keystore name) and `keystores/`.
#[derive(Debug, Clone)]
pub struct AccountStore {
    dir: PathBuf,
    kdf_runs: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn valid_name(name: &str) -> bool {
    (3..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl AccountStore {
    /// A store under `dir` (created when missing).
    ///
    /// # Errors
    /// When the folders cannot be created.
    pub fn open(dir: &Path) -> Result<Self, AccountError> {
        let io = |e: std::io::Error| AccountError::Io(e.to_string());
        crate::fsutil::private_dir(dir).map_err(io)?;
        for sub in ["users", "keystores"] {
            crate::fsutil::private_dir(&dir.join(sub)).map_err(io)?;
        }
        let store = Self {
            dir: dir.to_owned(),
            kdf_runs: std::sync::Arc::default(),
        };
        // A keystore nobody can open, unlocked on logins of unknown users, so that they take
        // as long as a wrong password (no user-name oracle from timing).
        let decoy = store.decoy();
        if !decoy.exists() {
            let mut pw = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut pw);
            write_keystore(
                &decoy,
                &PrivateKeySigner::random().to_bytes().0,
                &hex::encode(pw),
                SCRYPT_LOG_N,
            )
            .map_err(AccountError::Io)?;
        }
        Ok(store)
    }

    fn decoy(&self) -> PathBuf {
        self.dir.join("decoy.keystore")
    }

    /// How many logins ran the password KDF (each one does, known user or not: logins of
    /// unknown users unlock a decoy keystore, so their timing tells nothing).
    pub fn kdf_runs(&self) -> u64 {
        self.kdf_runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every account, sorted by name.
    ///
    /// # Errors
    /// When the folder cannot be read.
    pub fn list(&self) -> Result<Vec<Account>, AccountError> {
        let mut out = Vec::new();
        let rd = std::fs::read_dir(self.dir.join("users"))
            .map_err(|e| AccountError::Io(e.to_string()))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            if let Ok(text) = std::fs::read(e.path())
                && let Ok(a) = serde_json::from_slice::<Account>(&text)
            {
                out.push(a);
            }
        }
        out.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(out)
    }

    /// Sets a provider's profile.
    ///
    /// # Errors
    /// Unknown user or storage failure.
    pub fn set_profile(
        &self,
        username: &str,
        profile: ProviderProfile,
    ) -> Result<(), AccountError> {
        let mut a = self
            .account(username)
            .ok_or_else(|| AccountError::Invalid(format!("no user {username:?}")))?;
        a.profile = Some(profile);
        let json = serde_json::to_vec_pretty(&a).map_err(|e| AccountError::Io(e.to_string()))?;
        crate::fsutil::write_private(&self.user_file(username), &json)
            .map_err(|e| AccountError::Io(e.to_string()))
    }

    /// The profiles of the web app's providers, by account.
    pub fn profiles(
        &self,
    ) -> std::collections::HashMap<alloy::primitives::Address, ProviderProfile> {
        self.list()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| a.profile.map(|p| (a.address, p)))
            .collect()
    }

    /// The account named `username`, if any.
    pub fn account(&self, username: &str) -> Option<Account> {
        if !valid_name(username) {
            return None;
        }
        let text = std::fs::read(self.user_file(username)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Creates a user with `key` (a fresh one when `None`), encrypted under `password`.
    ///
    /// # Errors
    /// Invalid name or password, a taken name, storage failures.
    pub fn create(
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
        let user_file = self.user_file(username);
        if user_file.exists() {
            return Err(AccountError::Taken(username.into()));
        }
        let key = key.unwrap_or_else(PrivateKeySigner::random);
        // The keystore gets a unique file name; the user file names it and is linked into place
        // with a no-clobber hard link, so two sign-ups racing for one name cannot both win and
        // a crash leaves at worst an orphan keystore, never a user without a key.
        let keystore = format!("{username}-{}", hex::encode(key.address()));
        let io = |e: &dyn std::fmt::Display| AccountError::Io(e.to_string());
        write_keystore(
            &self.dir.join("keystores").join(&keystore),
            &key.to_bytes().0,
            password,
            SCRYPT_LOG_N,
        )
        .map_err(|e| io(&e))?;
        let signer = key.clone();
        let account = Account {
            username: username.into(),
            role,
            address: signer.address(),
            patient,
            keystore,
            profile: None,
        };
        let tmp = self
            .dir
            .join("users")
            .join(format!(".{username}.{}.tmp", hex::encode(key.address())));
        let json = serde_json::to_vec_pretty(&account).map_err(|e| io(&e))?;
        crate::fsutil::write_private(&tmp, &json).map_err(|e| io(&e))?;
        let linked = std::fs::hard_link(&tmp, &user_file);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(self.dir.join("keystores").join(&account.keystore));
                return Err(AccountError::Taken(username.into()));
            }
            Err(e) => return Err(io(&e)),
        }
        Ok((account, signer))
    }

    /// Unlocks the user's key with `password`.
    ///
    /// # Errors
    /// [`AccountError::BadLogin`] for an unknown user or a wrong password.
    pub fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(Account, PrivateKeySigner), AccountError> {
        let text = if valid_name(username) {
            std::fs::read(self.user_file(username)).ok()
        } else {
            None
        };
        self.kdf_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(text) = text else {
            let _ = PrivateKeySigner::decrypt_keystore(self.decoy(), password);
            return Err(AccountError::BadLogin);
        };
        let account: Account =
            serde_json::from_slice(&text).map_err(|e| AccountError::Io(e.to_string()))?;
        let signer = PrivateKeySigner::decrypt_keystore(
            self.dir.join("keystores").join(&account.keystore),
            password,
        )
        .map_err(|_| AccountError::BadLogin)?;
        if signer.address() != account.address {
            return Err(AccountError::Io(format!(
                "keystore of {username} holds another key"
            )));
        }
        self.upgrade_kdf(&account, &signer, password);
        Ok((account, signer))
    }

    /// Re-encrypts a keystore written with a cheaper KDF than today's (N < 2^17) now that the
    /// password is at hand, so old accounts do not stay 16 times cheaper to guess.
    fn upgrade_kdf(&self, account: &Account, signer: &PrivateKeySigner, password: &str) {
        let path = self.dir.join("keystores").join(&account.keystore);
        let n = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["crypto"]["kdfparams"]["n"].as_u64());
        if n.is_some_and(|n| n < 1 << SCRYPT_LOG_N) {
            match write_keystore(&path, &signer.to_bytes().0, password, SCRYPT_LOG_N) {
                Ok(()) => {
                    tracing::info!(user = %account.username, "keystore upgraded to scrypt N=2^{SCRYPT_LOG_N}")
                }
                Err(e) => tracing::warn!(user = %account.username, "keystore upgrade failed: {e}"),
            }
        }
    }

    /// Removes a user and their keystore (used to roll back a sign-up whose chain registration
    /// failed).
    ///
    /// # Errors
    /// When the files cannot be removed.
    pub fn remove(&self, username: &str) -> Result<(), AccountError> {
        if !valid_name(username) {
            return Err(AccountError::Invalid(format!("bad username {username:?}")));
        }
        let file = self.user_file(username);
        let text = std::fs::read(&file).map_err(|e| AccountError::Io(e.to_string()))?;
        let account: Account =
            serde_json::from_slice(&text).map_err(|e| AccountError::Io(e.to_string()))?;
        std::fs::remove_file(&file).map_err(|e| AccountError::Io(e.to_string()))?;
        let _ = std::fs::remove_file(self.dir.join("keystores").join(&account.keystore));
        Ok(())
    }

    /// Whether `username` exists.
    pub fn exists(&self, username: &str) -> bool {
        valid_name(username) && self.user_file(username).exists()
    }

    fn user_file(&self, username: &str) -> PathBuf {
        self.dir.join("users").join(format!("{username}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_unlock_only_with_the_password_and_are_stored_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let s = AccountStore::open(dir.path()).unwrap();
        let (a, k) = s
            .create(
                "alice",
                "correct horse battery",
                Role::Patient,
                PatientAddr::new(1, 2).ok(),
                None,
            )
            .unwrap();
        assert!(matches!(
            s.create("alice", "another long pw", Role::Patient, None, None),
            Err(AccountError::Taken(_))
        ));
        assert!(matches!(
            s.create("bob", "short", Role::Provider, None, None),
            Err(AccountError::Invalid(_))
        ));
        assert!(matches!(
            s.create("../x", "long enough pw", Role::Provider, None, None),
            Err(AccountError::Invalid(_))
        ));
        assert!(matches!(
            s.login("alice", "wrong password!"),
            Err(AccountError::BadLogin)
        ));
        assert!(matches!(
            s.login("nobody", "correct horse battery"),
            Err(AccountError::BadLogin)
        ));
        let (b, k2) = s.login("alice", "correct horse battery").unwrap();
        assert_eq!((a.address, k.address()), (b.address, k2.address()));
        let ks = std::fs::read_to_string(dir.path().join("keystores").join(&a.keystore)).unwrap();
        assert!(ks.contains("\"kdf\":\"scrypt\""), "{ks}");
        assert!(!ks.contains(&hex::encode(k.to_bytes())));
    }

    #[test]
    fn racing_sign_ups_for_one_name_leave_one_user_and_one_keystore() {
        let dir = tempfile::tempdir().unwrap();
        let s = AccountStore::open(dir.path()).unwrap();
        let results: Vec<_> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    sc.spawn(|| {
                        s.create("carol", "long enough password", Role::Provider, None, None)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "exactly one sign-up wins");
        assert!(
            results
                .iter()
                .filter(|r| r.is_err())
                .all(|r| matches!(r, Err(AccountError::Taken(_))))
        );
        let keystores = std::fs::read_dir(dir.path().join("keystores"))
            .unwrap()
            .count();
        assert_eq!(keystores, 1, "losers remove their keystores");
        let (a, _) = s.login("carol", "long enough password").unwrap();
        assert_eq!(a.address, won[0].0.address);
    }
}

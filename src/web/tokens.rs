//! Personal API tokens: a user creates, names, lists and revokes them in the web app; the REST
//! API accepts them as `Authorization: Bearer`. A token is shown once. The gateway keeps only
//! its sha256 and the user's key sealed under a key derived from the token itself, so the
//! stored file alone neither authenticates nor signs; each token expires (1 to 365 days).
//!
//! Format: `ehr_<id>_<secret>`: `id` (8 hex digits) finds the entry, `secret` (64 hex digits)
//! proves it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use alloy::signers::local::PrivateKeySigner;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::accounts::{Account, AccountError, AccountStore};
use crate::crypto::{derive_key, open_at_rest, seal_at_rest};

/// Tokens one user may hold at once.
pub const MAX_TOKENS: usize = 20;
/// Longest validity, in days.
pub const MAX_DAYS: u64 = 365;

/// What is stored per token (no secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Public id (8 hex digits).
    pub id: String,
    /// The user's name for it.
    pub name: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
    #[serde(with = "hex::serde")]
    hash: Vec<u8>,
    #[serde(with = "hex::serde")]
    wrapped_key: Vec<u8>,
}

/// The tokens of all users: files `<dir>/<user>.json` (0600 in 0700), mirrored by an index in
/// memory so that checking a bearer token reads no file, and updated under one lock so that a
/// revoke racing a create cannot bring a token back.
#[derive(Debug, Clone)]
pub struct TokenStore {
    dir: PathBuf,
    accounts: AccountStore,
    index: Arc<Mutex<HashMap<String, (String, TokenEntry)>>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn io(e: impl std::fmt::Display) -> AccountError {
    AccountError::Io(e.to_string())
}

fn aad(user: &str, id: &str) -> Vec<u8> {
    format!("ehr-share/api-token/{user}/{id}").into_bytes()
}

type Index = HashMap<String, (String, TokenEntry)>;

impl TokenStore {
    /// Tokens kept beside `accounts`' data, in `dir`; loads them all.
    ///
    /// # Errors
    /// When the folder cannot be created or a token file cannot be read.
    pub fn open(dir: &Path, accounts: AccountStore) -> Result<Self, AccountError> {
        crate::fsutil::private_dir(dir).map_err(io)?;
        let mut index = Index::new();
        for e in std::fs::read_dir(dir).map_err(io)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(user) = name.strip_suffix(".json") else {
                continue;
            };
            let entries: Vec<TokenEntry> =
                serde_json::from_slice(&std::fs::read(e.path()).map_err(io)?).map_err(io)?;
            for t in entries {
                index.insert(t.id.clone(), (user.to_owned(), t));
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            accounts,
            index: Arc::new(Mutex::new(index)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // A poisoned index only means a panic elsewhere mid-update; the map is still whole.
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn of(index: &Index, user: &str) -> Vec<TokenEntry> {
        let mut v: Vec<TokenEntry> = index
            .values()
            .filter(|(u, _)| u == user)
            .map(|(_, t)| t.clone())
            .collect();
        v.sort_by_key(|t| std::cmp::Reverse(t.created_at));
        v
    }

    fn persist(&self, index: &Index, user: &str) -> Result<(), AccountError> {
        let bytes = serde_json::to_vec_pretty(&Self::of(index, user)).map_err(io)?;
        crate::fsutil::write_private(&self.dir.join(format!("{user}.json")), &bytes).map_err(io)
    }

    /// The user's tokens, newest first (expired ones included, marked by their date).
    ///
    /// # Errors
    /// Never today; kept for a store that can fail.
    pub fn list(&self, user: &str) -> Result<Vec<TokenEntry>, AccountError> {
        Ok(Self::of(&self.lock(), user))
    }

    /// Creates a token for `account` (whose unlocked key is `signer`), valid `days`; returns
    /// the token, to show once.
    ///
    /// # Errors
    /// [`AccountError::Invalid`] for a bad name, days out of range, or too many tokens.
    pub fn create(
        &self,
        account: &Account,
        signer: &PrivateKeySigner,
        name: &str,
        days: u64,
    ) -> Result<String, AccountError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return Err(AccountError::Invalid(
                "token name: 1 to 64 characters".into(),
            ));
        }
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(AccountError::Invalid(format!(
                "valid for 1 to {MAX_DAYS} days"
            )));
        }
        let user = &account.username;
        let t = now();
        let mut index = self.lock();
        index.retain(|_, (u, e)| u != user || e.expires_at > t);
        if Self::of(&index, user).len() >= MAX_TOKENS {
            return Err(AccountError::Invalid(format!(
                "at most {MAX_TOKENS} tokens; revoke one first"
            )));
        }
        let id = loop {
            let mut id = [0u8; 4];
            rand_core::OsRng.fill_bytes(&mut id);
            let id = hex::encode(id);
            if !index.contains_key(&id) {
                break id;
            }
        };
        let mut secret = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut secret);
        let token = format!("ehr_{id}_{}", hex::encode(secret));
        let key = derive_key(&secret, "api-token");
        let entry = TokenEntry {
            id: id.clone(),
            name: name.to_owned(),
            created_at: t,
            expires_at: t + days * 86_400,
            hash: Sha256::digest(token.as_bytes()).to_vec(),
            wrapped_key: seal_at_rest(&key, &aad(user, &id), &signer.to_bytes().0),
        };
        index.insert(id.clone(), (user.clone(), entry));
        if let Err(e) = self.persist(&index, user) {
            index.remove(&id);
            return Err(e);
        }
        Ok(token)
    }

    /// Revokes the user's token `id`; false when the user has no such token.
    ///
    /// # Errors
    /// When the file cannot be written (the token then stays revoked in memory).
    pub fn revoke(&self, user: &str, id: &str) -> Result<bool, AccountError> {
        let mut index = self.lock();
        if index.get(id).is_none_or(|(u, _)| u != user) {
            return Ok(false);
        }
        index.remove(id);
        self.persist(&index, user)?;
        Ok(true)
    }

    /// The account and key behind `token`, if it is valid at `at` (unix seconds).
    pub fn resolve_at(&self, token: &str, at: u64) -> Option<(Account, PrivateKeySigner)> {
        let rest = token.strip_prefix("ehr_")?;
        let (id, secret) = rest.split_once('_')?;
        if id.len() != 8 || secret.len() != 64 {
            return None;
        }
        let secret: [u8; 32] = hex::decode(secret).ok()?.try_into().ok()?;
        let (user, e) = self.lock().get(id).cloned()?;
        let hash = Sha256::digest(token.as_bytes());
        let same = e.hash.len() == hash.len()
            && e.hash
                .iter()
                .zip(hash.iter())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0;
        if !same || e.expires_at <= at {
            return None;
        }
        let account = self.accounts.account(&user)?;
        let key = derive_key(&secret, "api-token");
        let bytes = open_at_rest(&key, &aad(&user, id), &e.wrapped_key).ok()?;
        let signer = PrivateKeySigner::from_slice(&bytes).ok()?;
        (signer.address() == account.address).then_some((account, signer))
    }
}

impl crate::gateway::TokenResolver for TokenStore {
    fn resolve(&self, token: &str) -> Option<PrivateKeySigner> {
        self.resolve_at(token, now()).map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::Role;

    #[test]
    fn tokens_resolve_until_revoked_or_expired_and_the_file_alone_signs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = AccountStore::open(&dir.path().join("web")).unwrap();
        let (a, key) = accounts
            .create("dana", "a long password!", Role::Provider, None, None)
            .unwrap();
        let tokens = TokenStore::open(&dir.path().join("web/tokens"), accounts).unwrap();
        let t = tokens.create(&a, &key, "ci script", 30).unwrap();
        let (who, signer) = tokens.resolve_at(&t, now()).unwrap();
        assert_eq!(
            (who.username.as_str(), signer.address()),
            ("dana", key.address())
        );
        assert!(
            tokens.resolve_at(&t, now() + 31 * 86_400).is_none(),
            "expired"
        );
        let mut forged = t.clone();
        forged.pop();
        forged.push(if t.ends_with('0') { '1' } else { '0' });
        assert!(
            tokens.resolve_at(&forged, now()).is_none(),
            "another secret"
        );
        let stored = std::fs::read_to_string(dir.path().join("web/tokens/dana.json")).unwrap();
        assert!(!stored.contains(&t[13..]), "no secret on disk");
        assert!(
            !stored.contains(&hex::encode(key.to_bytes())),
            "no key in clear"
        );
        assert!(tokens.create(&a, &key, "", 30).is_err());
        assert!(tokens.create(&a, &key, "x", 366).is_err());
        let id = tokens.list("dana").unwrap()[0].id.clone();
        assert!(tokens.revoke("dana", &id).unwrap());
        assert!(tokens.resolve_at(&t, now()).is_none(), "revoked");
    }
}

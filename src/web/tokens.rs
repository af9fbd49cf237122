//! Personal API tokens: a user creates, names, lists and revokes them in the web app; the REST
//! API accepts them as `Authorization: Bearer`. A token is shown once. The database keeps only
//! its sha256 and the user's key sealed under a key derived from the token itself, so the
//! table alone neither authenticates nor signs; each token expires (1 to 365 days). Every
//! check reads the database, so a revoke on one gateway holds on all that share it.
//!
//! Format: `ehr_<id>_<secret>`: `id` (8 hex digits) finds the entry, `secret` (64 hex digits)
//! proves it.

use alloy::signers::local::PrivateKeySigner;
use futures::future::BoxFuture;
use rand_core::RngCore;
use sha2::{Digest, Sha256};

use super::accounts::{Account, AccountError, AccountStore};
use super::now;
use crate::crypto::{derive_key, open_at_rest, seal_at_rest};
use crate::db::{DbError, TokenInsert, TokenRow};

/// Tokens one user may hold at once.
pub const MAX_TOKENS: usize = 20;
/// Longest validity, in days.
pub const MAX_DAYS: u64 = 365;

/// What is shown of a token (no secret).
#[derive(Debug, Clone)]
pub struct TokenEntry {
    /// Public id (8 hex digits).
    pub id: String,
    /// The user's name for it.
    pub name: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
}

/// The tokens of all users, in the accounts' database.
#[derive(Debug, Clone)]
pub struct TokenStore {
    accounts: AccountStore,
}

fn aad(user: &str, id: &str) -> Vec<u8> {
    format!("ehr-share/api-token/{user}/{id}").into_bytes()
}

impl TokenStore {
    /// Tokens of `accounts`' users.
    pub fn new(accounts: AccountStore) -> Self {
        Self { accounts }
    }

    /// The user's tokens, newest first (expired ones included, marked by their date).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn list(&self, user: &str) -> Result<Vec<TokenEntry>, AccountError> {
        Ok(self
            .accounts
            .db()
            .tokens_of(user)
            .await?
            .into_iter()
            .map(|t| TokenEntry {
                id: t.id,
                name: t.name,
                created_at: t.created_at,
                expires_at: t.expires_at,
            })
            .collect())
    }

    /// Creates a token for `account` (whose unlocked key is `signer`), valid `days`; returns
    /// the token, to show once.
    ///
    /// # Errors
    /// [`AccountError::Invalid`] for a bad name, days out of range, or too many tokens.
    pub async fn create(
        &self,
        account: &Account,
        signer: &PrivateKeySigner,
        name: &str,
        days: u64,
    ) -> Result<String, AccountError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
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
        // A new id on the (rare) collision with another user's token.
        for _ in 0..4 {
            let mut id = [0u8; 4];
            rand_core::OsRng.fill_bytes(&mut id);
            let id = hex::encode(id);
            let mut secret = [0u8; 32];
            rand_core::OsRng.fill_bytes(&mut secret);
            let token = format!("ehr_{id}_{}", hex::encode(secret));
            let key = derive_key(&secret, "api-token");
            let row = TokenRow {
                id: id.clone(),
                username: user.clone(),
                name: name.to_owned(),
                created_at: t,
                expires_at: t + days * 86_400,
                token_hash: Sha256::digest(token.as_bytes()).to_vec(),
                wrapped_key: seal_at_rest(&key, &aad(user, &id), &signer.to_bytes().0),
            };
            match self.accounts.db().insert_token(&row, MAX_TOKENS, t).await {
                Ok(TokenInsert::Added) => return Ok(token),
                Ok(TokenInsert::AtLimit) => {
                    return Err(AccountError::Invalid(format!(
                        "at most {MAX_TOKENS} tokens; revoke one first"
                    )));
                }
                // Also what the form sent again (its answer lost) meets: the token it made is
                // never shown again, and must not stay live unseen beside a second one.
                Ok(TokenInsert::NameTaken) => {
                    return Err(AccountError::Invalid(format!(
                        "you have a token named {name:?} already (if this form was sent twice, the first send made it: revoke it below if you did not copy it); choose another name"
                    )));
                }
                Err(DbError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(AccountError::Storage(DbError::Conflict("token id")))
    }

    /// Revokes the user's token `id`; false when the user has no such token.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn revoke(&self, user: &str, id: &str) -> Result<bool, AccountError> {
        Ok(self.accounts.db().delete_token(user, id).await?)
    }

    /// The account and key behind `token`, if it is valid at `at` (unix seconds).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn resolve_at(
        &self,
        token: &str,
        at: u64,
    ) -> Result<Option<(Account, PrivateKeySigner)>, AccountError> {
        let Some((id, secret)) = token
            .strip_prefix("ehr_")
            .and_then(|rest| rest.split_once('_'))
            .filter(|(id, secret)| id.len() == 8 && secret.len() == 64)
        else {
            return Ok(None);
        };
        let Some(secret) = hex::decode(secret)
            .ok()
            .and_then(|s| <[u8; 32]>::try_from(s).ok())
        else {
            return Ok(None);
        };
        let Some(e) = self.accounts.db().token(id).await? else {
            return Ok(None);
        };
        let hash = Sha256::digest(token.as_bytes());
        let same = e.token_hash.len() == hash.len()
            && e.token_hash
                .iter()
                .zip(hash.iter())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0;
        if !same || e.expires_at <= at {
            return Ok(None);
        }
        let Some(account) = self.accounts.account(&e.username).await? else {
            return Ok(None);
        };
        let key = derive_key(&secret, "api-token");
        let signer = open_at_rest(&key, &aad(&e.username, id), &e.wrapped_key)
            .ok()
            .and_then(|b| PrivateKeySigner::from_slice(&b).ok());
        Ok(signer
            .filter(|s| s.address() == account.address)
            .map(|s| (account, s)))
    }
}

impl crate::gateway::TokenResolver for TokenStore {
    fn resolve<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<PrivateKeySigner>, String>> {
        Box::pin(async move {
            self.resolve_at(token, now())
                .await
                .map(|found| found.map(|(_, s)| s))
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::Role;

    #[tokio::test]
    async fn tokens_resolve_until_revoked_or_expired_and_the_table_alone_signs_nothing() {
        let (_dir, db) = crate::db::testing::sqlite().await;
        let accounts = AccountStore::new(db.clone()).await.unwrap();
        let (a, key) = accounts
            .create("dana", "a long password!", Role::Provider, None, None)
            .await
            .unwrap();
        let tokens = TokenStore::new(accounts);
        let t = tokens.create(&a, &key, "ci script", 30).await.unwrap();
        let (who, signer) = tokens.resolve_at(&t, now()).await.unwrap().unwrap();
        assert_eq!(
            (who.username.as_str(), signer.address()),
            ("dana", key.address())
        );
        assert!(
            tokens
                .resolve_at(&t, now() + 31 * 86_400)
                .await
                .unwrap()
                .is_none(),
            "expired"
        );
        let mut forged = t.clone();
        forged.pop();
        forged.push(if t.ends_with('0') { '1' } else { '0' });
        assert!(
            tokens.resolve_at(&forged, now()).await.unwrap().is_none(),
            "another secret"
        );
        let row = db.token(&t[4..12]).await.unwrap().unwrap();
        let stored = format!("{row:?}");
        assert!(!stored.contains(&t[13..]), "no secret stored");
        assert!(
            !hex::encode(&row.wrapped_key).contains(&hex::encode(key.to_bytes())),
            "no key in clear"
        );
        assert!(tokens.create(&a, &key, "", 30).await.is_err());
        let twice = tokens.create(&a, &key, "ci script", 30).await.unwrap_err();
        assert!(
            twice
                .to_string()
                .contains("a token named \"ci script\" already"),
            "one live token per name: {twice}"
        );
        // Another case of the name is another name (on every database).
        tokens.create(&a, &key, "CI script", 30).await.unwrap();
        assert!(tokens.create(&a, &key, "x", 366).await.is_err());
        for i in 2..MAX_TOKENS {
            tokens.create(&a, &key, &format!("t{i}"), 1).await.unwrap();
        }
        assert!(
            tokens.create(&a, &key, "one too many", 1).await.is_err(),
            "at most {MAX_TOKENS}"
        );
        // Another of the user's tokens (the list is by creation time, all made this second).
        let listed = tokens.list("dana").await.unwrap();
        assert_eq!(listed.len(), MAX_TOKENS);
        let other = listed.iter().find(|e| e.id != t[4..12]).unwrap().id.clone();
        assert!(tokens.revoke("dana", &other).await.unwrap());
        assert!(
            tokens.resolve_at(&t, now()).await.unwrap().is_some(),
            "not this one"
        );
        assert!(!tokens.revoke("someone-else", &t[4..12]).await.unwrap());
        assert!(tokens.revoke("dana", &t[4..12]).await.unwrap());
        assert!(
            tokens.resolve_at(&t, now()).await.unwrap().is_none(),
            "revoked"
        );
    }
}

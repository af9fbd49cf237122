//! One-time import of the web data earlier versions kept in files (`users/*.json`,
//! `keystores/`, `tokens/*.json` under the web folder) into the database. The keystores are the
//! only copy of each user's key, so nothing is deleted: the imported folders are renamed
//! `*.imported` and can be removed once the database is backed up.

use std::path::Path;

use serde::Deserialize;

use super::accounts::{AccountError, AccountStore};
use crate::chain::PatientAddr;
use crate::db::{AccountRow, DbError, TokenRow};

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Users added.
    pub users: usize,
    /// Users skipped because the name exists in the database already.
    pub skipped: Vec<String>,
    /// API tokens added.
    pub tokens: usize,
}

#[derive(Deserialize)]
struct OldUser {
    username: String,
    role: super::Role,
    address: alloy::primitives::Address,
    patient: Option<PatientAddr>,
    keystore: String,
    #[serde(default)]
    profile: Option<super::ProviderProfile>,
}

#[derive(Deserialize)]
struct OldToken {
    id: String,
    name: String,
    created_at: u64,
    expires_at: u64,
    #[serde(with = "hex::serde")]
    hash: Vec<u8>,
    #[serde(with = "hex::serde")]
    wrapped_key: Vec<u8>,
}

fn io(what: &Path, e: impl std::fmt::Display) -> AccountError {
    AccountError::Invalid(format!("cannot import {}: {e}", what.display()))
}

/// Imports `dir` (a former `web.data_dir` or `.ehr/web`) into `accounts`' database; a folder
/// without `users/` imports nothing.
///
/// # Errors
/// An unreadable file (named), or the database failing; users imported before stay.
pub async fn import_web_dir(
    dir: &Path,
    accounts: &AccountStore,
) -> Result<ImportReport, AccountError> {
    let mut report = ImportReport::default();
    let users = dir.join("users");
    if !users.is_dir() {
        return Ok(report);
    }
    let mut files: Vec<_> = std::fs::read_dir(&users)
        .map_err(|e| io(&users, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for file in files {
        let old: OldUser = serde_json::from_slice(&std::fs::read(&file).map_err(|e| io(&file, e))?)
            .map_err(|e| io(&file, e))?;
        let ks_path = dir.join("keystores").join(&old.keystore);
        let keystore = std::fs::read_to_string(&ks_path).map_err(|e| io(&ks_path, e))?;
        let row = AccountRow {
            username: old.username.clone(),
            role: old.role.as_str().into(),
            address: old.address.to_checksum(None),
            patient: old.patient.map(|p| (p.aid(), p.pid())),
            keystore,
            profile: old.profile.map(|p| (p.name, p.organisation, p.licence)),
            created_at: 0,
        };
        match accounts.db().insert_account(&row).await {
            Ok(()) => report.users += 1,
            Err(DbError::Conflict(_)) => {
                report.skipped.push(old.username);
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        let tokens = dir.join("tokens").join(format!("{}.json", old.username));
        if tokens.exists() {
            let list: Vec<OldToken> =
                serde_json::from_slice(&std::fs::read(&tokens).map_err(|e| io(&tokens, e))?)
                    .map_err(|e| io(&tokens, e))?;
            for t in list {
                let row = TokenRow {
                    id: t.id,
                    username: old.username.clone(),
                    name: t.name,
                    created_at: t.created_at,
                    expires_at: t.expires_at,
                    token_hash: t.hash,
                    wrapped_key: t.wrapped_key,
                };
                if accounts.db().insert_token(&row, usize::MAX, 0).await? {
                    report.tokens += 1;
                }
            }
        }
    }
    for sub in ["users", "keystores", "tokens"] {
        let from = dir.join(sub);
        if from.exists() {
            let to = dir.join(format!("{sub}.imported"));
            std::fs::rename(&from, &to).map_err(|e| io(&from, e))?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{derive_key, seal_at_rest};
    use crate::web::{Role, TokenStore};
    use alloy::signers::local::PrivateKeySigner;
    use sha2::{Digest, Sha256};

    #[tokio::test]
    async fn users_and_tokens_of_the_file_layout_log_in_and_resolve_after_import() {
        let (_dbdir, db) = crate::db::testing::sqlite().await;
        let accounts = AccountStore::new(db).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path();
        for sub in ["users", "keystores", "tokens"] {
            std::fs::create_dir_all(web.join(sub)).unwrap();
        }
        // What the file-based version wrote for a provider with one API token.
        let key = PrivateKeySigner::random();
        let ks = super::super::keystore::encrypt_keystore(&key.to_bytes().0, "old password!", 13)
            .unwrap();
        std::fs::write(web.join("keystores/olga-1"), ks).unwrap();
        let user = serde_json::json!({
            "username": "olga", "role": "provider", "address": key.address(),
            "patient": null, "keystore": "olga-1",
            "profile": {"name": "Dr. Olga", "organisation": "Clinic", "licence": "L-9"},
        });
        std::fs::write(web.join("users/olga.json"), user.to_string()).unwrap();
        let secret = [7u8; 32];
        let token = format!("ehr_0badc0de_{}", hex::encode(secret));
        let wrapped = seal_at_rest(
            &derive_key(&secret, "api-token"),
            b"ehr-share/api-token/olga/0badc0de",
            &key.to_bytes().0,
        );
        let tokens = serde_json::json!([{
            "id": "0badc0de", "name": "old script", "created_at": 1,
            "expires_at": 4_000_000_000u64,
            "hash": hex::encode(Sha256::digest(token.as_bytes())),
            "wrapped_key": hex::encode(wrapped),
        }]);
        std::fs::write(web.join("tokens/olga.json"), tokens.to_string()).unwrap();

        let r = import_web_dir(web, &accounts).await.unwrap();
        assert_eq!((r.users, r.tokens, r.skipped.len()), (1, 1, 0));
        let (a, k) = accounts.login("olga", "old password!").await.unwrap();
        assert_eq!((a.role, k.address()), (Role::Provider, key.address()));
        assert_eq!(a.profile.unwrap().licence, "L-9");
        let (who, _) = TokenStore::new(accounts.clone())
            .resolve_at(&token, 2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(who.username, "olga");
        // The files are kept, renamed; a second run imports nothing.
        assert!(web.join("keystores.imported/olga-1").exists());
        assert_eq!(
            import_web_dir(web, &accounts).await.unwrap(),
            ImportReport::default()
        );
    }
}

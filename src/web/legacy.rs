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
    /// Users added (or found already added by an earlier, interrupted run).
    pub users: usize,
    /// Users not imported because another account has the name, or their files could not be
    /// read: each with the reason. While any is left, the folders keep their names, so a
    /// second run (after fixing them) sees them again.
    pub skipped: Vec<String>,
    /// API tokens read from the files.
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

fn read_user(dir: &Path, file: &Path) -> Result<(AccountRow, Vec<TokenRow>), String> {
    let what = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
    let old: OldUser = std::fs::read(file)
        .map_err(|e| what(file, &e))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| what(file, &e)))?;
    let ks_path = dir.join("keystores").join(&old.keystore);
    let keystore = std::fs::read_to_string(&ks_path).map_err(|e| what(&ks_path, &e))?;
    let tokens_file = dir.join("tokens").join(format!("{}.json", old.username));
    let tokens: Vec<OldToken> = if tokens_file.exists() {
        std::fs::read(&tokens_file)
            .map_err(|e| what(&tokens_file, &e))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| what(&tokens_file, &e)))?
    } else {
        Vec::new()
    };
    let tokens = tokens
        .into_iter()
        .map(|t| TokenRow {
            id: t.id,
            username: old.username.clone(),
            name: t.name,
            created_at: t.created_at,
            expires_at: t.expires_at,
            token_hash: t.hash,
            wrapped_key: t.wrapped_key,
        })
        .collect();
    let row = AccountRow {
        username: old.username,
        role: old.role.as_str().into(),
        address: old.address.to_checksum(None),
        patient: old.patient.map(|p| (p.aid(), p.pid())),
        keystore,
        profile: old.profile.map(|p| (p.name, p.organisation, p.licence)),
        created_at: 0,
    };
    Ok((row, tokens))
}

/// Imports `dir` (a former `web.data_dir` or `.ehr/web`) into `accounts`' database, each user
/// with their tokens in one transaction; a folder without `users/` imports nothing. When every
/// user is in, the folders are renamed `*.imported`; otherwise they stay for another run.
///
/// # Errors
/// When the database fails (users imported before stay; a second run continues).
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
        .map_err(|e| AccountError::Invalid(format!("cannot import {}: {e}", users.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for file in files {
        let (row, tokens) = match read_user(dir, &file) {
            Ok(v) => v,
            Err(e) => {
                report.skipped.push(e);
                continue;
            }
        };
        match accounts.db().import_account(&row, &tokens).await {
            Ok(()) => {
                report.users += 1;
                report.tokens += tokens.len();
            }
            Err(DbError::Conflict(_)) => report.skipped.push(format!(
                "{}: another account has this name in the database",
                row.username
            )),
            Err(e) => return Err(e.into()),
        }
    }
    if report.skipped.is_empty() {
        for sub in ["users", "keystores", "tokens"] {
            let from = dir.join(sub);
            if from.exists() {
                let to = dir.join(format!("{sub}.imported"));
                std::fs::rename(&from, &to).map_err(|e| {
                    AccountError::Invalid(format!("cannot rename {}: {e}", from.display()))
                })?;
            }
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

        // An interrupted earlier run (the account in, its folder not renamed) completes; a
        // name held by another account is skipped with its reason and the folders stay.
        for sub in ["users", "keystores", "tokens"] {
            std::fs::rename(web.join(format!("{sub}.imported")), web.join(sub)).unwrap();
        }
        accounts
            .create("zed", "another long pw", Role::Patient, None, None)
            .await
            .unwrap();
        let zed = serde_json::json!({
            "username": "zed", "role": "provider", "address": PrivateKeySigner::random().address(),
            "patient": null, "keystore": "olga-1",
        });
        std::fs::write(web.join("users/zed.json"), zed.to_string()).unwrap();
        std::fs::write(web.join("users/broken.json"), "{").unwrap();
        let r = import_web_dir(web, &accounts).await.unwrap();
        assert_eq!((r.users, r.tokens), (1, 1), "olga again, idempotent");
        assert_eq!(r.skipped.len(), 2, "{:?}", r.skipped);
        assert!(
            r.skipped
                .iter()
                .any(|s| s.contains("zed") && s.contains("another account"))
        );
        assert!(r.skipped.iter().any(|s| s.contains("broken.json")));
        assert!(web.join("users").is_dir(), "kept for another run");
        assert_eq!(
            TokenStore::new(accounts.clone())
                .list("olga")
                .await
                .unwrap()
                .len(),
            1,
            "no token twice"
        );
    }
}

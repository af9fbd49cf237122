//! The share node's durable store (redb: copy-on-write B-trees, a commit is fsynced and a crash
//! leaves the last committed state). Shares, and the nonces already used by requesters.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

const SHARES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("shares");
const NONCES: TableDefinition<&[u8; 52], u64> = TableDefinition::new("nonces");

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("share store failed: {0}")]
    Db(String),
    /// A different share is already stored for the record.
    #[error("a different share is already stored for record {0}")]
    Conflict(String),
}

fn db<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// What a node keeps for one record. `share` is secret; the rest is public.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredShare {
    /// Patient key on chain.
    pub patient: u128,
    /// Who deposited it.
    pub uploader: alloy::primitives::Address,
    /// The share (index + value), hex.
    pub share: String,
    /// Feldman commitments, hex.
    pub commitments: String,
    /// The record block sealed under the shared key, hex.
    pub sealed_block: String,
    /// Unix seconds.
    pub stored_at: u64,
}

/// The store.
#[derive(Debug)]
pub struct ShareStore {
    db: Database,
}

impl ShareStore {
    /// Opens or creates the store at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let database = Database::create(path).map_err(db)?;
        let tx = database.begin_write().map_err(db)?;
        tx.open_table(SHARES).map_err(db)?;
        tx.open_table(NONCES).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Self { db: database })
    }

    /// Stores a share; the same share again is a no-op, a different one a conflict.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] or database errors.
    pub fn put(&self, record: &[u8; 32], s: &StoredShare) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(s).map_err(db)?;
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(SHARES).map_err(db)?;
            if let Some(old) = t.get(record).map_err(db)? {
                let old: StoredShare = serde_json::from_slice(old.value()).map_err(db)?;
                if old.share != s.share
                    || old.commitments != s.commitments
                    || old.sealed_block != s.sealed_block
                {
                    return Err(StoreError::Conflict(hex::encode(record)));
                }
                return Ok(());
            }
            t.insert(record, bytes.as_slice()).map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// The share for `record`, if stored.
    ///
    /// # Errors
    /// Database errors.
    pub fn get(&self, record: &[u8; 32]) -> Result<Option<StoredShare>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(SHARES).map_err(db)?;
        match t.get(record).map_err(db)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(db)?)),
            None => Ok(None),
        }
    }

    /// Number of stored shares (public: reveals no secret).
    ///
    /// # Errors
    /// Database errors.
    pub fn count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        tx.open_table(SHARES).map_err(db)?.len().map_err(db)
    }

    /// Marks `(requester, nonce)` used; false when it was used before (a replay). Entries whose
    /// deadline passed more than a day ago are not needed any more but kept simple: the key
    /// space is per requester, and deadlines bound how long a signed request is valid anyway.
    ///
    /// # Errors
    /// Database errors.
    pub fn use_nonce(
        &self,
        requester: &[u8; 20],
        nonce: &[u8; 32],
        deadline: u64,
    ) -> Result<bool, StoreError> {
        let mut key = [0u8; 52];
        key[..20].copy_from_slice(requester);
        key[20..].copy_from_slice(nonce);
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(NONCES).map_err(db)?;
            if t.get(&key).map_err(db)?.is_some() {
                return Ok(false);
            }
            t.insert(&key, deadline).map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(v: &str) -> StoredShare {
        StoredShare {
            patient: 1,
            uploader: alloy::primitives::Address::ZERO,
            share: v.into(),
            commitments: "c".into(),
            sealed_block: "b".into(),
            stored_at: 1,
        }
    }

    #[test]
    fn survives_reopen_and_refuses_a_different_share() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        {
            let s = ShareStore::open(&p).unwrap();
            s.put(&[1; 32], &share("a")).unwrap();
            s.put(&[1; 32], &share("a")).unwrap();
            assert!(matches!(
                s.put(&[1; 32], &share("b")),
                Err(StoreError::Conflict(_))
            ));
            assert!(s.use_nonce(&[2; 20], &[3; 32], 9).unwrap());
        }
        let s = ShareStore::open(&p).unwrap();
        assert_eq!(s.get(&[1; 32]).unwrap(), Some(share("a")));
        assert_eq!(s.get(&[9; 32]).unwrap(), None);
        assert!(
            !s.use_nonce(&[2; 20], &[3; 32], 9).unwrap(),
            "a nonce is used once, across restarts"
        );
        assert_eq!(s.count().unwrap(), 1);
    }
}

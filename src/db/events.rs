//! Rows of `chain_events` and `chain_index`: the chain client's event index, kept between
//! runs (see [`crate::chain::IndexStore`]).

use alloy::primitives::B256;
use futures::future::BoxFuture;
use sqlx::Row;

use super::{Database, DbError, to_i64, to_u64};
use crate::chain::{AuditEvent, IndexStore, StoreError, StoredIndex};

/// The event index's store in the gateway's database.
#[derive(Debug, Clone)]
pub struct EventStore(Database);

impl EventStore {
    /// The store in `db`.
    pub fn new(db: Database) -> Self {
        Self(db)
    }

    async fn load(&self, deployment: B256) -> Result<Option<StoredIndex>, DbError> {
        // One transaction: the position and the events it covers, as one writer left them.
        let mut tx = self.0.pool().begin().await?;
        let Some(pos) =
            sqlx::query("SELECT next_block, last_hash FROM chain_index WHERE deployment_id = ?")
                .bind(deployment.as_slice())
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(None);
        };
        let next_block = to_u64(pos.try_get("next_block")?, "index next_block")?;
        let hash: Vec<u8> = pos.try_get("last_hash")?;
        let last_hash = B256::try_from(hash.as_slice()).map_err(|_| DbError::Corrupt {
            what: "index last_hash",
            problem: format!("{} bytes", hash.len()),
        })?;
        let rows = sqlx::query(
            "SELECT event FROM chain_events WHERE deployment_id = ? AND block_number < ? \
             ORDER BY block_number, log_index",
        )
        .bind(deployment.as_slice())
        .bind(to_i64(next_block))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut events = Vec::with_capacity(rows.len());
        for r in rows {
            let json: String = r.try_get("event")?;
            events.push(serde_json::from_str(&json).map_err(|e| DbError::Corrupt {
                what: "indexed event",
                problem: e.to_string(),
            })?);
        }
        Ok(Some(StoredIndex {
            events,
            next_block,
            last_hash,
        }))
    }

    /// `at`: the deployment block and the position this writer appends from.
    async fn append(
        &self,
        deployment: B256,
        (first_block, from_block): (u64, u64),
        events: &[AuditEvent],
        next_block: u64,
        last_hash: B256,
    ) -> Result<bool, DbError> {
        let mut tx = self.0.pool().begin().await?;
        // Move the position first, only from where this writer believes it is (a second
        // gateway on the same database may have moved it): the row lock then orders writers.
        let moved = sqlx::query(
            "UPDATE chain_index SET next_block = ?, last_hash = ? \
             WHERE deployment_id = ? AND next_block = ?",
        )
        .bind(to_i64(next_block))
        .bind(last_hash.as_slice())
        .bind(deployment.as_slice())
        .bind(to_i64(from_block))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !moved {
            if from_block != first_block {
                return Ok(false);
            }
            // The first append: no position yet (a racing first writer makes this fail).
            let r = sqlx::query(
                "INSERT INTO chain_index (deployment_id, next_block, last_hash) VALUES (?, ?, ?)",
            )
            .bind(deployment.as_slice())
            .bind(to_i64(next_block))
            .bind(last_hash.as_slice())
            .execute(&mut *tx)
            .await;
            match super::inserted(r, "index position") {
                Ok(()) => {}
                Err(DbError::Conflict(_)) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        for e in events {
            let json = serde_json::to_string(e).map_err(|e| DbError::Corrupt {
                what: "event to index",
                problem: e.to_string(),
            })?;
            sqlx::query(
                "INSERT INTO chain_events (deployment_id, block_number, log_index, event) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(deployment.as_slice())
            .bind(to_i64(e.block))
            .bind(to_i64(e.log_index))
            .bind(json)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn clear(&self, deployment: B256) -> Result<(), DbError> {
        let mut tx = self.0.pool().begin().await?;
        for sql in [
            "DELETE FROM chain_events WHERE deployment_id = ?",
            "DELETE FROM chain_index WHERE deployment_id = ?",
        ] {
            sqlx::query(sql)
                .bind(deployment.as_slice())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl IndexStore for EventStore {
    fn load(&self, deployment: B256) -> BoxFuture<'_, Result<Option<StoredIndex>, StoreError>> {
        Box::pin(async move { Ok(Self::load(self, deployment).await?) })
    }

    fn append<'a>(
        &'a self,
        deployment: B256,
        first_block: u64,
        from_block: u64,
        events: &'a [AuditEvent],
        next_block: u64,
        last_hash: B256,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let at = (first_block, from_block);
            Ok(Self::append(self, deployment, at, events, next_block, last_hash).await?)
        })
    }

    fn clear(&self, deployment: B256) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { Ok(Self::clear(self, deployment).await?) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{AuditKind, PatientAddr};

    #[tokio::test]
    async fn the_index_comes_back_whole_per_deployment_and_clears() {
        let (_dir, db) = crate::db::testing::sqlite().await;
        let store = EventStore::new(db);
        let (d1, d2) = (B256::repeat_byte(1), B256::repeat_byte(2));
        assert!(IndexStore::load(&store, d1).await.unwrap().is_none());
        let ev = |block, log_index| AuditEvent {
            block,
            timestamp: Some(1_700_000_000 + block),
            tx_hash: Some(B256::repeat_byte(9)),
            log_index,
            kind: AuditKind::GrantIssued {
                patient: PatientAddr::new(7, 8).ok(),
                provider: alloy::primitives::Address::repeat_byte(3),
                expires_at: None,
            },
        };
        let first = [ev(10, 0), ev(10, 1)];
        assert!(
            IndexStore::append(&store, d1, 5, 5, &first, 11, B256::repeat_byte(5))
                .await
                .unwrap()
        );
        assert!(
            IndexStore::append(&store, d1, 5, 11, &[ev(12, 0)], 20, B256::repeat_byte(6))
                .await
                .unwrap()
        );
        // A second writer that believes the position is elsewhere writes nothing.
        for from in [5, 11] {
            assert!(
                !IndexStore::append(&store, d1, 5, from, &[ev(13, 0)], 21, B256::ZERO)
                    .await
                    .unwrap()
            );
        }
        let back = IndexStore::load(&store, d1).await.unwrap().unwrap();
        assert_eq!(back.events, vec![ev(10, 0), ev(10, 1), ev(12, 0)]);
        assert_eq!(
            (back.next_block, back.last_hash),
            (20, B256::repeat_byte(6))
        );
        assert!(IndexStore::load(&store, d2).await.unwrap().is_none());
        IndexStore::clear(&store, d1).await.unwrap();
        assert!(IndexStore::load(&store, d1).await.unwrap().is_none());
    }
}

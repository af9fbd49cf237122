//! One task commits readings: whatever arrived together goes in one transaction, so a burst of
//! devices costs one disk sync, not one each (group commit). Each caller waits for the commit
//! of its own reading before it is acknowledged.

use tokio::sync::{mpsc, oneshot};

use crate::db::{Database, DbError, NewReading};

/// Most readings in one transaction.
const MAX_GROUP: usize = 512;
/// Readings waiting for the writer before callers wait to hand theirs over.
const QUEUE: usize = 4_096;

/// Why a reading was not stored.
#[derive(Debug)]
pub(super) enum NotStored {
    /// Its device used the nonce before.
    Replayed,
    /// The commit failed, or the writer stopped (the reading is not stored).
    Failed(String),
}

type Job = (NewReading, oneshot::Sender<Result<(), NotStored>>);

/// The handle callers store through.
#[derive(Debug, Clone)]
pub(super) struct Writer(mpsc::Sender<Job>);

impl Writer {
    /// Spawns the writer over `db`.
    pub(super) fn spawn(db: Database) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        tokio::spawn(async move {
            let mut jobs = Vec::with_capacity(MAX_GROUP);
            while rx.recv_many(&mut jobs, MAX_GROUP).await > 0 {
                let (rows, replies): (Vec<_>, Vec<_>) = jobs.drain(..).unzip();
                match db.insert_readings(&rows).await {
                    Ok(results) => {
                        for (reply, r) in replies.into_iter().zip(results) {
                            let _ = reply.send(r.map_err(|e| match e {
                                DbError::Conflict(_) => NotStored::Replayed,
                                e => NotStored::Failed(e.to_string()),
                            }));
                        }
                    }
                    Err(e) => {
                        tracing::warn!("ingest: storing {} readings failed: {e}", rows.len());
                        let why = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(NotStored::Failed(why.clone())));
                        }
                    }
                }
            }
        });
        Self(tx)
    }

    /// Stores `row`; returns once it is committed.
    ///
    /// # Errors
    /// [`NotStored`].
    pub(super) async fn store(&self, row: NewReading) -> Result<(), NotStored> {
        let stopped = || NotStored::Failed("the readings writer stopped".into());
        let (tx, rx) = oneshot::channel();
        self.0.send((row, tx)).await.map_err(|_| stopped())?;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

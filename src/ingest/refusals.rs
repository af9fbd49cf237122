//! Refusals counted in memory per reason, and written to the database in one go per tick: a
//! flood of bad readings costs no write each.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::db::{Database, DbError};

/// Refusals not yet written, per reason.
#[derive(Debug, Default)]
pub struct Refusals(Mutex<BTreeMap<&'static str, u64>>);

impl Refusals {
    /// Counts one refusal.
    pub fn count(&self, reason: &'static str) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// Writes the counts under `day` (days since the epoch) and clears them; what fails to be
    /// written is counted again.
    ///
    /// # Errors
    /// The database's.
    pub async fn flush(&self, db: &Database, day: u64) -> Result<(), DbError> {
        let taken = match self.0.lock() {
            Ok(mut m) => std::mem::take(&mut *m),
            Err(_) => return Ok(()),
        };
        let mut left = taken.into_iter();
        while let Some((reason, n)) = left.next() {
            if let Err(e) = db.count_refusals(day, reason, n).await {
                if let Ok(mut m) = self.0.lock() {
                    *m.entry(reason).or_default() += n;
                    for (r, k) in left {
                        *m.entry(r).or_default() += k;
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

//! What a reader may remember between reads, shared by every records client made from one
//! [`super::RecordsConfig`] (the gateway makes a client per request).
//!
//! Only facts that cannot go stale, or whose staleness the share nodes catch, are kept:
//! - where a record sits (its proof to a root the chain anchored: anchors are permanent);
//! - a patient address's account (the contract sets it once and never changes it);
//! - where a record's ciphertext is (its block never changes), so that a re-read fetches it
//!   while the shares are gathered;
//! - a reader's access transaction for a record, reused for [`ReadCache::reuse`] at most. The
//!   share nodes release on an access event for `ACCESS_WINDOW` (30 minutes), and check the
//!   grant on every request, so a revoke or an expiry refuses the reuse at once; the reader
//!   then forgets it and sends a new transaction, which the contract logs as denied.
//!
//! Each map is bounded: when one is full it is emptied, which costs only a lookup again.

use std::sync::Mutex;
use std::time::Duration;

use alloy::primitives::{Address, B256};

use crate::bounded::Bounded;
use crate::chain::{PatientAddr, RecordId};
use crate::share_node::AnchoredRecord;

/// Records whose place is remembered (a proof is a few hundred bytes).
const LOCATED: usize = 16_384;
/// Patient accounts remembered.
const ACCOUNTS: usize = 65_536;
/// Access transactions remembered.
const ACCESSES: usize = 65_536;
/// Ciphertext addresses remembered.
const CIPHERTEXTS: usize = 16_384;

/// An access transaction and when it was sent (unix seconds, the reader's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Access {
    pub(super) tx: B256,
    pub(super) sent_at: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ReadCache {
    reuse: Duration,
    located: Mutex<Bounded<RecordId, AnchoredRecord>>,
    accounts: Mutex<Bounded<PatientAddr, Address>>,
    accesses: Mutex<Bounded<(Address, RecordId), Access>>,
    ciphertexts: Mutex<Bounded<RecordId, (String, u64)>>,
}

/// The default reuse of an access transaction: a third of the contract's 30-minute window,
/// so that a reader's clock running behind the chain's by minutes still stays inside it.
pub const DEFAULT_ACCESS_REUSE: Duration = Duration::from_secs(600);

/// The longest reuse allowed: the contract's window less five minutes for clock skew.
pub const MAX_ACCESS_REUSE: Duration = Duration::from_secs(25 * 60);

impl Default for ReadCache {
    fn default() -> Self {
        Self::new(DEFAULT_ACCESS_REUSE)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves a map, never a half-written value.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ReadCache {
    /// A cache reusing an access transaction for `reuse` (zero: every read sends one),
    /// capped at [`MAX_ACCESS_REUSE`].
    pub fn new(reuse: Duration) -> Self {
        Self {
            reuse: reuse.min(MAX_ACCESS_REUSE),
            located: Mutex::new(Bounded::new(LOCATED)),
            accounts: Mutex::new(Bounded::new(ACCOUNTS)),
            accesses: Mutex::new(Bounded::new(ACCESSES)),
            ciphertexts: Mutex::new(Bounded::new(CIPHERTEXTS)),
        }
    }

    /// How long an access transaction is reused.
    pub fn reuse(&self) -> Duration {
        self.reuse
    }

    pub(super) fn located(&self, id: RecordId) -> Option<AnchoredRecord> {
        lock(&self.located).get(&id)
    }

    pub(super) fn remember_located(&self, id: RecordId, r: &AnchoredRecord) {
        lock(&self.located).put(id, r.clone());
    }

    pub(super) fn account(&self, p: PatientAddr) -> Option<Address> {
        lock(&self.accounts).get(&p)
    }

    /// Remembers `p`'s account; an unregistered address (none yet) is not remembered.
    pub(super) fn remember_account(&self, p: PatientAddr, a: Address) {
        lock(&self.accounts).put(p, a);
    }

    /// `reader`'s access transaction for `id` still within the reuse, at `now`.
    pub(super) fn access(&self, reader: Address, id: RecordId, now: u64) -> Option<B256> {
        let a = lock(&self.accesses).get(&(reader, id))?;
        (now.saturating_sub(a.sent_at) < self.reuse.as_secs()).then_some(a.tx)
    }

    /// When `reader`'s access transaction `tx` for `id` was sent, if it is the one remembered.
    pub(super) fn access_sent_at(&self, reader: Address, id: RecordId, tx: B256) -> Option<u64> {
        lock(&self.accesses)
            .get(&(reader, id))
            .filter(|a| a.tx == tx)
            .map(|a| a.sent_at)
    }

    pub(super) fn remember_access(&self, reader: Address, id: RecordId, a: Access) {
        if !self.reuse.is_zero() {
            lock(&self.accesses).put((reader, id), a);
        }
    }

    /// The CID and size of `id`'s ciphertext, from an earlier read here: a record's block
    /// never changes, and what is fetched on the strength of it is checked against the
    /// anchored digest all the same.
    pub(super) fn ciphertext(&self, id: RecordId) -> Option<(String, u64)> {
        lock(&self.ciphertexts).get(&id)
    }

    pub(super) fn remember_ciphertext(&self, id: RecordId, cid: &str, size: u64) {
        lock(&self.ciphertexts).put(id, (cid.to_owned(), size));
    }

    /// Forgets `reader`'s access to `id` (the nodes refused it).
    pub(super) fn forget_access(&self, reader: Address, id: RecordId) {
        lock(&self.accesses).remove(&(reader, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_is_reused_within_the_window_only() {
        let c = ReadCache::new(Duration::from_secs(600));
        let (me, id) = (Address::repeat_byte(1), RecordId(B256::repeat_byte(2)));
        let tx = B256::repeat_byte(3);
        c.remember_access(me, id, Access { tx, sent_at: 1000 });
        assert_eq!(c.access(me, id, 1000), Some(tx));
        assert_eq!(c.access(me, id, 1599), Some(tx));
        assert_eq!(c.access(me, id, 1600), None, "expired at the reuse");
        assert_eq!(
            c.access(Address::repeat_byte(9), id, 1000),
            None,
            "another reader"
        );
        c.forget_access(me, id);
        assert_eq!(c.access(me, id, 1000), None);
    }

    #[test]
    fn zero_reuse_keeps_nothing_and_the_reuse_is_capped() {
        let c = ReadCache::new(Duration::ZERO);
        let (me, id) = (Address::repeat_byte(1), RecordId(B256::repeat_byte(2)));
        c.remember_access(
            me,
            id,
            Access {
                tx: B256::ZERO,
                sent_at: 5,
            },
        );
        assert_eq!(c.access(me, id, 5), None);
        assert_eq!(
            ReadCache::new(Duration::from_secs(3600)).reuse(),
            MAX_ACCESS_REUSE
        );
    }
}

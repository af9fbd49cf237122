//! Transactions whose sender has not seen the outcome yet, so that asking again does not do it
//! twice.
//!
//! A write is signed and in the node's pool before its receipt is awaited. When the caller
//! goes away during that wait (a browser tab closed, a client's timeout: the gateway's handler
//! is dropped with its connection) or the wait ends without a receipt (the chain endpoint
//! stopped answering, blocks stopped coming), the transaction may still be mined. The caller
//! is told "try again", and a second send would repeat the action: a break-glass counted twice
//! against its daily limit, an access logged twice on the patient's trail.
//!
//! So a sent transaction is remembered, by account, contract and call data, until a caller has
//! seen its receipt. The same call from the same account within [`WINDOW`] is answered by that
//! transaction (waiting for it while it is in the pool; its receipt once mined) when it is still
//! the account's last transaction (by the node's count, so also across processes) and did not
//! revert. Otherwise the call is sent anew: after the account did anything else it is a new act
//! (a revoke after a grant that followed an earlier revoke), one the node dropped will never be
//! mined, and one that reverted is asked again to be tried again. Calls that come at once join
//! one transaction the same way: one of them sends, the others wait for its hash (a
//! double-clicked form).
//!
//! Limits: the memory is this process's (a restarted gateway, or the CLI, sends again); an
//! endpoint whose replicas do not share a pool may not know the transaction, and it is then sent
//! again; a call of another account in between is not looked at (a patient who ended an
//! emergency after the doctor's unseen break-glass: the doctor's repeat is answered with the
//! first opening, and reads judge the chain as it is).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, Bytes};

/// How long an unseen transaction answers for the same call: the longest a write waits for its
/// receipt, so a caller who gave up on it and asks again gets it (a call repeated later is
/// taken as a new one).
pub(super) const WINDOW: Duration = Duration::from_secs(600);

/// One kind of call: which chain, who signs, which contract, what it calls with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Call {
    pub(super) chain_id: u64,
    pub(super) from: Address,
    pub(super) to: Address,
    pub(super) input: Bytes,
}

/// A sent transaction nobody has seen the receipt of.
#[derive(Debug, Clone, Copy)]
pub(super) struct Unseen {
    pub(super) tx: B256,
    at: Instant,
}

impl Unseen {
    /// Whether it is recent enough to answer for its call once mined.
    pub(super) fn current(&self) -> bool {
        self.at.elapsed() < WINDOW
    }
}

/// The transaction (if any) sent for one call. Its lock is held from looking until a new
/// transaction's hash is in: two callers never both send.
pub(super) type Slot = Arc<tokio::sync::Mutex<Option<Unseen>>>;

struct Table {
    slots: HashMap<Call, Slot>,
    /// Entries left by callers who went away are swept when the table reaches this size.
    sweep_at: usize,
}

static SENT: LazyLock<Mutex<Table>> = LazyLock::new(|| {
    Mutex::new(Table {
        slots: HashMap::new(),
        sweep_at: 256,
    })
});

fn table() -> std::sync::MutexGuard<'static, Table> {
    SENT.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The slot of `call`: lock it, look, and either adopt the transaction in it or send and
/// [`record`] a new one.
pub(super) fn slot(call: &Call) -> Slot {
    let mut t = table();
    if t.slots.len() >= t.sweep_at {
        // A slot is kept while somebody holds it or it answers for its call.
        t.slots.retain(|_, s| {
            Arc::strong_count(s) > 1
                || s.try_lock()
                    .map_or(true, |u| u.as_ref().is_some_and(Unseen::current))
        });
        t.sweep_at = (t.slots.len() * 2).max(256);
    }
    Arc::clone(t.slots.entry(call.clone()).or_default())
}

/// `tx` was sent for the slot's call (the caller holds the slot's lock).
pub(super) fn record(held: &mut Option<Unseen>, tx: B256) {
    *held = Some(Unseen {
        tx,
        at: Instant::now(),
    });
}

/// A caller has seen `tx`'s receipt: the call is free to be sent anew.
pub(super) fn seen(call: &Call, slot: &Slot, tx: B256) {
    let mut t = table();
    let Ok(mut held) = slot.try_lock() else {
        // Another caller is looking or sending; it will settle the slot.
        return;
    };
    if held.is_some_and(|u| u.tx == tx) {
        *held = None;
    }
    // The table and this caller hold it: nobody else waits on it.
    if held.is_none()
        && Arc::strong_count(slot) == 2
        && t.slots.get(call).is_some_and(|s| Arc::ptr_eq(s, slot))
    {
        drop(held);
        t.slots.remove(call);
    }
}

/// What a named request's record is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The transaction `tx` is about to go to the node, where the record names `from` (nothing,
    /// or what this try found or recorded before): a retry is answered by it. A record that
    /// names another transaction by now (another try's, in another process) keeps it and
    /// answers with it.
    Sent {
        /// What the record names as far as this try knows.
        from: Option<B256>,
        /// The transaction.
        tx: B256,
    },
    /// The node refused `tx` (or it was never handed over): it names nothing any more.
    Withdrawn(B256),
}

/// Keeps a named request's transaction where its retries will look (a database row): `Ok(None)`
/// when kept, `Ok(Some(other))` when the record names another try's transaction `other`.
pub type RecordSent = Arc<
    dyn Fn(Recorded) -> futures::future::BoxFuture<'static, Result<Option<B256>, String>>
        + Send
        + Sync,
>;

/// The longest a record is waited for: it is written while the account's send turn is held.
const RECORD_WAIT: Duration = Duration::from_secs(10);

/// A request its caller named (an `Idempotency-Key`): every try of it is answered by one
/// transaction, whatever the account did between the tries, since the caller says they are
/// one request. Only the first write of a client carrying it uses it.
#[derive(Clone)]
pub struct Ticket {
    /// Tells the request apart in this process's table (the caller's scope and key).
    name: Bytes,
    /// The transaction an earlier try sent, as its record says.
    earlier: Option<B256>,
    record: RecordSent,
    /// Whether a write took it (the first does).
    taken: Arc<std::sync::atomic::AtomicBool>,
    /// Whether a transaction belongs to it (sent by this try, or the earlier one answering).
    bound: Arc<std::sync::atomic::AtomicBool>,
    /// Whether an earlier try's transaction answered it.
    replayed: Arc<std::sync::atomic::AtomicBool>,
    /// What the record names as far as this try knows.
    names: Arc<std::sync::Mutex<Option<B256>>>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("earlier", &self.earlier)
            .field("used", &self.used())
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// A ticket for the request called `name`, whose earlier try sent `earlier` (if any);
    /// `record` keeps the transaction this try sends.
    pub fn new(name: impl Into<Bytes>, earlier: Option<B256>, record: RecordSent) -> Self {
        Self {
            name: name.into(),
            earlier,
            record,
            taken: Arc::default(),
            bound: Arc::default(),
            replayed: Arc::default(),
            names: Arc::new(std::sync::Mutex::new(earlier)),
        }
    }

    /// Whether a transaction belongs to the request (one was sent, or an earlier try's
    /// answered); a try that failed before either holds none.
    pub fn used(&self) -> bool {
        self.bound.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Takes it for a write (`None` once taken: a later write of the same client is its own).
    pub(super) fn take(&self) -> Option<&Self> {
        (!self.taken.swap(true, std::sync::atomic::Ordering::SeqCst)).then_some(self)
    }

    /// An earlier try's transaction answers the request.
    pub(super) fn answered_by_earlier(&self) {
        self.bound.store(true, std::sync::atomic::Ordering::SeqCst);
        self.replayed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether an earlier try's transaction answered the request (a replay).
    pub fn replayed(&self) -> bool {
        self.replayed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether no write took it yet.
    pub(super) fn untaken(&self) -> bool {
        !self.taken.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// This process's table key part for it.
    pub(super) fn name(&self) -> Bytes {
        let mut n = b"idempotency-key:".to_vec();
        n.extend_from_slice(&self.name);
        n.into()
    }

    /// The earlier try's transaction.
    pub(super) fn earlier(&self) -> Option<B256> {
        self.earlier
    }

    /// Keeps `tx` as the request's, before it is sent; `Ok(Some(other))`: another try of the
    /// request (in another process) recorded `other` first, and `tx` must not be sent.
    ///
    /// # Errors
    /// The record failing or taking longer than [`RECORD_WAIT`]: the transaction must not be
    /// sent (a retry would not find it).
    pub(super) async fn record(&self, tx: B256) -> Result<Option<B256>, String> {
        let from = *self.names();
        let r = tokio::time::timeout(RECORD_WAIT, (self.record)(Recorded::Sent { from, tx }))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {RECORD_WAIT:?}")));
        if let Ok(None) = r {
            *self.names() = Some(tx);
            self.bound.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        r
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Option<B256>> {
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `tx`, recorded, never reached the node (refused, or not handed over): the request
    /// names no transaction again (where its record still names `tx`), and the try that made
    /// the key's row frees it.
    pub(super) async fn withdraw(&self, tx: B256) {
        self.bound.store(false, std::sync::atomic::Ordering::SeqCst);
        {
            let mut names = self.names();
            if *names == Some(tx) {
                *names = None;
            }
        }
        let r = tokio::time::timeout(RECORD_WAIT, (self.record)(Recorded::Withdrawn(tx)))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {RECORD_WAIT:?}")));
        if let Err(e) = r {
            tracing::warn!(%tx, "a named request's refused transaction is still recorded: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: u8) -> Call {
        Call {
            chain_id: 1,
            from: Address::repeat_byte(1),
            to: Address::repeat_byte(2),
            input: Bytes::from(vec![n]),
        }
    }

    #[tokio::test]
    async fn a_slot_answers_until_its_receipt_is_seen() {
        let c = call(200);
        let s = slot(&c);
        let tx = B256::repeat_byte(9);
        record(&mut *s.lock().await, tx);
        // Another caller of the same call finds it.
        let again = slot(&c);
        assert!(Arc::ptr_eq(&s, &again));
        assert_eq!(again.lock().await.map(|u| u.tx), Some(tx));
        drop(again);
        seen(&c, &s, tx);
        assert!(s.lock().await.is_none());
        // The table let go of it: the next caller starts afresh.
        let next = slot(&c);
        assert!(!Arc::ptr_eq(&s, &next));
        assert!(next.lock().await.is_none());
    }

    #[tokio::test]
    async fn a_receipt_seen_of_an_older_transaction_keeps_the_newer() {
        let c = call(201);
        let s = slot(&c);
        let (old, new) = (B256::repeat_byte(1), B256::repeat_byte(2));
        record(&mut *s.lock().await, new);
        seen(&c, &s, old);
        assert_eq!(s.lock().await.map(|u| u.tx), Some(new));
    }
}

//! The share node's durable store (redb: copy-on-write B-trees, a commit is fsynced and a crash
//! leaves the last committed state).
//!
//! - Bound to one deployment: the first open records chain id, contract and deployment id; an
//!   open for another deployment fails, so a node never serves old shares to a reset chain.
//! - Encrypted at rest: the share, the commitments and the sealed block are sealed under a key
//!   derived from the node's identity key (kept in another file), bound to the record id; a
//!   copied store file decrypts nothing without that key.
//! - Unanchored deposits are tracked per uploader (a quota) and collected after a deadline;
//!   request nonces are pruned once their deadline has passed.

use std::path::Path;

use alloy::primitives::{Address, B256};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::crypto::{AeadKey, open_at_rest, seal_at_rest};

mod codec;

/// redb's page cache. A read touches one share and its B-tree path, the branch pages stay hot,
/// and a leaf that missed comes from the OS page cache in microseconds: a larger cache buys
/// little and is counted in every node's resident memory (16 MiB was 80 MiB over five nodes).
const CACHE_BYTES: usize = 4 << 20;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SHARES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("shares");
/// Deposits not yet seen anchored: record -> uploader (20 bytes) || stored_at (u64 BE).
const PENDING: TableDefinition<&[u8; 32], &[u8; 28]> = TableDefinition::new("pending");
/// Unanchored deposits per uploader.
const PENDING_BY_UPLOADER: TableDefinition<&[u8; 20], u64> =
    TableDefinition::new("pending_by_uploader");
const NONCES: TableDefinition<&[u8; 52], u64> = TableDefinition::new("nonces");
/// Anchored records per patient: patient key (u128 BE) || record -> its public part (JSON of
/// [`PublicRecord`]), so listings never read the sealed shares.
const BY_PATIENT: TableDefinition<&[u8; 48], &[u8]> = TableDefinition::new("by_patient");
/// The same records in time order: patient key (u128 BE) || stored_at (u64 BE) || record, so
/// that the newest of a patient with 10^5 records are a short range read, not a scan.
const BY_PATIENT_TIME: TableDefinition<&[u8; 56], ()> = TableDefinition::new("by_patient_time");
/// How many anchored records each patient (u128 key) has here: a listing's count without
/// counting.
const PATIENT_COUNTS: TableDefinition<u128, u64> = TableDefinition::new("patient_counts");

/// Records as a listing returns them: id and public part.
pub(crate) type Listed = Vec<([u8; 32], PublicRecord)>;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("share store failed: {0}")]
    Db(String),
    /// A different share is already stored for the record.
    #[error("a different share is already stored for record {0}")]
    Conflict(String),
    /// The uploader has too many deposits that were never anchored.
    #[error(
        "{uploader} has {pending} deposits that are not anchored yet (quota {quota}); anchor or wait for them to expire"
    )]
    QuotaExceeded {
        /// The uploader.
        uploader: Address,
        /// Their unanchored deposits.
        pending: u64,
        /// The quota.
        quota: u64,
    },
    /// The store belongs to another deployment.
    #[error(
        "this share store belongs to {stored}, not to {wanted}: a share node serves one deployment (use a new data folder for a new deployment)"
    )]
    BoundElsewhere {
        /// What the store was created for.
        stored: Box<Binding>,
        /// What it was opened for.
        wanted: Box<Binding>,
    },
    /// A stored value did not decrypt: the store was changed or the key is not this node's.
    #[error("share of record {0} does not decrypt with this node's key (store copied or changed)")]
    Undecryptable(String),
}

/// What a sealed value is bound to: its record, patient, uploader and digest (all kept in clear
/// beside it), so none of them can be swapped in the file without the value failing to open.
fn aad(record: &[u8; 32], patient: u128, uploader: Address, digest: B256) -> Vec<u8> {
    let mut a = Vec::with_capacity(100);
    a.extend_from_slice(record);
    a.extend_from_slice(&patient.to_be_bytes());
    a.extend_from_slice(uploader.as_slice());
    a.extend_from_slice(digest.as_slice());
    a
}

fn time_key(patient: u128, stored_at: u64, record: &[u8; 32]) -> [u8; 56] {
    let mut k = [0u8; 56];
    k[..16].copy_from_slice(&patient.to_be_bytes());
    k[16..24].copy_from_slice(&stored_at.to_be_bytes());
    k[24..].copy_from_slice(record);
    k
}

fn patient_key(patient: u128, record: &[u8; 32]) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..16].copy_from_slice(&patient.to_be_bytes());
    k[16..].copy_from_slice(record);
    k
}

fn db<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// The deployment a store belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Chain id.
    pub chain_id: u64,
    /// Contract address.
    pub contract: Address,
    /// The contract's `deploymentId`.
    pub deployment_id: B256,
    /// keccak256 of the contract's runtime code (immutables included): another contract at the
    /// same address, even one that reports the same deployment id, has other code.
    pub code_hash: B256,
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chain {} contract {} deployment {} (code {})",
            self.chain_id, self.contract, self.deployment_id, self.code_hash
        )
    }
}

/// What a node keeps for one record. `share` is secret; the rest is public.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredShare {
    /// Patient key on chain.
    pub patient: u128,
    /// Who deposited it (the record's author on chain must be the same account).
    pub uploader: Address,
    /// The salt the record id is derived from.
    pub salt: B256,
    /// The record's keyed digest (its leaf commits to it).
    pub digest: B256,
    /// The anchored root and the record's proof to it, once the uploader presented them.
    pub anchor: Option<Anchor>,
    /// The share (index + value), hex.
    pub share: String,
    /// Feldman commitments, hex.
    pub commitments: String,
    /// The record block sealed under the shared key, hex.
    pub sealed_block: String,
    /// Unix seconds.
    pub stored_at: u64,
}

/// Where a stored record sits on chain: the anchored root and the record's proof to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Anchor {
    /// The anchored root.
    pub root: B256,
    /// Sibling hashes from the record's leaf up.
    pub proof: Vec<B256>,
}

/// The public part of a stored record (no share): what listings and proofs need.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublicRecord {
    /// Patient key on chain.
    pub patient: u128,
    /// Who deposited it.
    pub uploader: Address,
    /// The salt the record id is derived from.
    pub salt: B256,
    /// The record's keyed digest.
    pub digest: B256,
    /// The anchored root and the proof, once presented.
    pub anchor: Option<Anchor>,
    /// Unix seconds.
    pub stored_at: u64,
}

/// A row of format 1 (JSON), read only to rewrite a store of that format at open.
#[derive(Serialize, Deserialize)]
struct LegacyRow {
    patient: u128,
    uploader: Address,
    salt: B256,
    digest: B256,
    anchor: Option<Anchor>,
    stored_at: u64,
    /// `share || commitments || sealed block` as JSON, sealed at rest.
    #[serde(with = "hex::serde")]
    sealed: Vec<u8>,
}

impl StoredShare {
    /// Its public part.
    pub fn public(&self) -> PublicRecord {
        PublicRecord {
            patient: self.patient,
            uploader: self.uploader,
            salt: self.salt,
            digest: self.digest,
            anchor: self.anchor.clone(),
            stored_at: self.stored_at,
        }
    }
}

impl LegacyRow {
    fn public(&self) -> PublicRecord {
        PublicRecord {
            patient: self.patient,
            uploader: self.uploader,
            salt: self.salt,
            digest: self.digest,
            anchor: self.anchor.clone(),
            stored_at: self.stored_at,
        }
    }
}

/// The sealed plaintext of format 1 (JSON of hex strings).
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct LegacySecret {
    share: String,
    commitments: String,
    sealed_block: String,
}

/// A row of the shares table: the public part in clear (needed to judge a request before
/// decrypting anything), then the secret part sealed at rest.
fn row(public: &PublicRecord, sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(180 + sealed.len());
    codec::put_public(public, &mut out);
    out.extend_from_slice(sealed);
    out
}

/// Lists an anchored record under its patient (the index listings read, never the shares).
fn list_under_patient(
    tx: &redb::WriteTransaction,
    record: &[u8; 32],
    public: &PublicRecord,
) -> Result<(), StoreError> {
    let mut listed = Vec::new();
    codec::put_public(public, &mut listed);
    let new = tx
        .open_table(BY_PATIENT)
        .map_err(db)?
        .insert(&patient_key(public.patient, record), listed.as_slice())
        .map_err(db)?
        .is_none();
    if new {
        index_in_time(tx, record, public)?;
    }
    Ok(())
}

/// Adds a newly listed record to the time index and its patient's count.
fn index_in_time(
    tx: &redb::WriteTransaction,
    record: &[u8; 32],
    public: &PublicRecord,
) -> Result<(), StoreError> {
    tx.open_table(BY_PATIENT_TIME)
        .map_err(db)?
        .insert(&time_key(public.patient, public.stored_at, record), ())
        .map_err(db)?;
    let mut counts = tx.open_table(PATIENT_COUNTS).map_err(db)?;
    let n = counts
        .get(public.patient)
        .map_err(db)?
        .map_or(0, |v| v.value());
    counts.insert(public.patient, n + 1).map_err(db)?;
    Ok(())
}

/// Rebuilds the time index and the counts from the per-patient index when either does not
/// match it in size: a store written before they existed, or by such a version after them (it
/// writes the per-patient index only); returns how many records it indexed. Runs inside the opening
/// transaction.
fn index_by_time(tx: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let rows: Vec<([u8; 32], PublicRecord)> = {
        let by = tx.open_table(BY_PATIENT).map_err(db)?;
        let time = tx.open_table(BY_PATIENT_TIME).map_err(db)?;
        let mut counted = 0u64;
        for item in tx
            .open_table(PATIENT_COUNTS)
            .map_err(db)?
            .iter()
            .map_err(db)?
        {
            counted += item.map_err(db)?.1.value();
        }
        let listed = by.len().map_err(db)?;
        if listed == time.len().map_err(db)? && listed == counted {
            return Ok(0);
        }
        let mut rows = Vec::new();
        for item in by.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            let mut record = [0u8; 32];
            record.copy_from_slice(&k.value()[16..]);
            rows.push((record, codec::get_public(v.value()).map_err(db)?.0));
        }
        rows
    };
    tx.delete_table(BY_PATIENT_TIME).map_err(db)?;
    tx.delete_table(PATIENT_COUNTS).map_err(db)?;
    for (record, public) in &rows {
        index_in_time(tx, record, public)?;
    }
    Ok(rows.len() as u64)
}

/// Rewrites the rows of a format-1 store (JSON, hex) in the binary layout, resealing each
/// secret part; returns how many records it rewrote. Runs inside the opening transaction, so a
/// crash leaves the old store whole.
fn migrate(tx: &redb::WriteTransaction, key: &AeadKey) -> Result<u64, StoreError> {
    let mut shares = tx.open_table(SHARES).map_err(db)?;
    let mut rows = Vec::new();
    for item in shares.iter().map_err(db)? {
        let (k, v) = item.map_err(db)?;
        rows.push((*k.value(), v.value().to_vec()));
    }
    for (record, bytes) in &rows {
        let old: LegacyRow = serde_json::from_slice(bytes).map_err(db)?;
        let bound = aad(record, old.patient, old.uploader, old.digest);
        let plain = open_at_rest(key, &bound, &old.sealed)
            .map_err(|_| StoreError::Undecryptable(crate::strict_hex::encode(record)))?;
        let secret: LegacySecret = serde_json::from_slice(&plain).map_err(db)?;
        let plain = codec::put_secret(&secret.share, &secret.commitments, &secret.sealed_block)
            .map_err(db)?;
        let public = old.public();
        shares
            .insert(
                record,
                row(&public, &seal_at_rest(key, &bound, &plain)).as_slice(),
            )
            .map_err(db)?;
        if public.anchor.is_some() {
            list_under_patient(tx, record, &public)?;
        }
    }
    Ok(rows.len() as u64)
}

/// The store.
pub struct ShareStore {
    /// `None` only while a broken handle is being replaced.
    db: std::sync::RwLock<Option<std::sync::Arc<Database>>>,
    /// Set when an operation saw redb's latched I/O failure: the next one reopens the file.
    broken: std::sync::atomic::AtomicBool,
    path: std::path::PathBuf,
    key: AeadKey,
    binding: Binding,
    /// Whether a commit since the last durable one was not made durable
    /// ([`Self::use_release_nonce`]); [`Self::flush`] makes it so.
    unflushed: std::sync::atomic::AtomicBool,
    /// Set when a flush failed: release nonces are then committed durably, each, until one
    /// succeeds (a disk that fails must not widen the window of nonces a crash can lose).
    flush_failed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for ShareStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareStore").finish_non_exhaustive()
    }
}

impl ShareStore {
    /// Opens or creates the store at `path` for `binding`, encrypting under `key`. The file is
    /// created mode 0600.
    ///
    /// # Errors
    /// When the file cannot be opened, or [`StoreError::BoundElsewhere`].
    pub fn open(path: &Path, key: AeadKey, binding: &Binding) -> Result<Self, StoreError> {
        crate::fsutil::touch_private(path).map_err(db)?;
        let database = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(db)?;
        let tx = database.begin_write().map_err(db)?;
        {
            let mut meta = tx.open_table(META).map_err(db)?;
            let stored = meta
                .get("binding")
                .map_err(db)?
                .map(|v| serde_json::from_slice::<Binding>(v.value()));
            match stored {
                Some(Ok(b)) if b == *binding => {}
                Some(Ok(b)) => {
                    return Err(StoreError::BoundElsewhere {
                        stored: Box::new(b),
                        wanted: Box::new(*binding),
                    });
                }
                Some(Err(e)) => return Err(db(e)),
                None if tx.open_table(SHARES).map_err(db)?.len().map_err(db)? > 0 => {
                    return Err(StoreError::Db(
                        "this share store was written by an older version (no deployment binding, shares in clear); it cannot be served: start the node with a new data folder".into(),
                    ));
                }
                None => {
                    let v = serde_json::to_vec(binding).map_err(db)?;
                    meta.insert("binding", v.as_slice()).map_err(db)?;
                }
            }
            let format = meta.get("format").map_err(db)?.map(|v| v.value().to_vec());
            match format.as_deref() {
                Some(f) if f == codec::FORMAT.as_bytes() => {}
                Some(f) => {
                    return Err(StoreError::Db(format!(
                        "this share store has layout {:?}, written by a newer version; this one reads {}",
                        String::from_utf8_lossy(f),
                        codec::FORMAT
                    )));
                }
                None => {
                    let n = migrate(&tx, &key)?;
                    if n > 0 {
                        tracing::info!(
                            records = n,
                            "share store rewritten from JSON rows to the binary layout {}",
                            codec::FORMAT
                        );
                    }
                    meta.insert("format", codec::FORMAT.as_bytes())
                        .map_err(db)?;
                }
            }
            tx.open_table(SHARES).map_err(db)?;
            tx.open_table(PENDING).map_err(db)?;
            tx.open_table(PENDING_BY_UPLOADER).map_err(db)?;
            tx.open_table(NONCES).map_err(db)?;
            tx.open_table(BY_PATIENT).map_err(db)?;
            tx.open_table(BY_PATIENT_TIME).map_err(db)?;
            tx.open_table(PATIENT_COUNTS).map_err(db)?;
            let indexed = index_by_time(&tx)?;
            if indexed > 0 {
                tracing::info!(records = indexed, "share store: records indexed by time");
            }
        }
        tx.commit().map_err(db)?;
        Ok(Self {
            db: std::sync::RwLock::new(Some(std::sync::Arc::new(database))),
            broken: std::sync::atomic::AtomicBool::new(false),
            path: path.to_owned(),
            key,
            binding: *binding,
            unflushed: std::sync::atomic::AtomicBool::new(false),
            flush_failed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The database, reopened first when an earlier operation found it broken. After a failed
    /// write (a full disk, an I/O error) redb refuses every later operation with "previous
    /// I/O error" until the file is opened again; without this a node stayed down until it
    /// was restarted, although the disk had room again (the load bench filled one).
    fn handle(&self) -> Result<std::sync::Arc<Database>, StoreError> {
        use std::sync::atomic::Ordering;
        if self.broken.load(Ordering::Acquire) {
            let mut slot = self
                .db
                .write()
                .map_err(|_| StoreError::Db("share store lock poisoned".into()))?;
            if self.broken.load(Ordering::Acquire) {
                tracing::warn!(
                    "share store {}: reopening after a failed write (release nonces since the last durable commit are lost)",
                    self.path.display()
                );
                // The old handle must be gone before the file opens again (redb locks it);
                // an operation still holding it makes this try fail, and the next one retries.
                drop(slot.take());
                let database = Database::builder()
                    .set_cache_size(CACHE_BYTES)
                    .create(&self.path)
                    .map_err(db)?;
                tracing::warn!(
                    "share store {} reopened after an I/O error",
                    self.path.display()
                );
                *slot = Some(std::sync::Arc::new(database));
                self.broken.store(false, Ordering::Release);
            }
        }
        self.db
            .read()
            .map_err(|_| StoreError::Db("share store lock poisoned".into()))?
            .clone()
            .ok_or_else(|| StoreError::Db("share store is being reopened".into()))
    }

    /// Runs `op`; when it meets redb's latched I/O failure, reopens the file and runs it once
    /// more (an operation that failed changed nothing: redb commits whole transactions).
    fn guard<T>(&self, op: impl Fn() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let latched = |r: &Result<T, StoreError>| {
            matches!(r, Err(StoreError::Db(m))
                if m.contains("Previous I/O error") || m.contains("being reopened"))
        };
        let r = op();
        if !latched(&r) {
            return r;
        }
        self.broken
            .store(true, std::sync::atomic::Ordering::Release);
        let again = op();
        if latched(&again) {
            self.broken
                .store(true, std::sync::atomic::Ordering::Release);
        }
        again
    }

    /// The deployment this store belongs to.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// Stores a share as an unanchored deposit of its uploader; the same share again is a
    /// no-op, a different one a conflict. Refused when the uploader already has `quota`
    /// unanchored deposits.
    ///
    /// # Errors
    /// [`StoreError::Conflict`], [`StoreError::QuotaExceeded`] or database errors.
    pub fn put(&self, record: &[u8; 32], s: &StoredShare, quota: u64) -> Result<(), StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_write().map_err(db)?;
            self.put_in(&tx, record, s, quota)?;
            tx.commit().map_err(db)
        })
    }

    /// [`Self::put`] and [`Self::use_nonce`] for the deposit's request in one transaction
    /// (one write to disk): `Ok(false)` when the nonce was used already (nothing stored).
    /// A refused deposit (conflict, quota) leaves the nonce unused.
    ///
    /// # Errors
    /// As [`Self::put`].
    pub fn put_once(
        &self,
        record: &[u8; 32],
        s: &StoredShare,
        quota: u64,
        uploader: &[u8; 20],
        nonce: &[u8; 32],
        deadline: u64,
    ) -> Result<bool, StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_write().map_err(db)?;
            if !Self::nonce_in(&tx, uploader, nonce, deadline)? {
                return Ok(false);
            }
            self.put_in(&tx, record, s, quota)?;
            tx.commit().map_err(db)?;
            Ok(true)
        })
    }

    /// [`Self::put_once`] for many deposits in one transaction (one write to disk for the
    /// lot). Each gets its own outcome, as `put_once` would give it alone and in this order:
    /// `Ok(false)` for a used nonce, a conflict or quota error for a refused share; a refused
    /// deposit leaves its nonce unused. A database error fails them all (nothing is stored).
    ///
    /// # Errors
    /// Database errors.
    pub fn put_once_many(
        &self,
        deposits: &[OnceDeposit<'_>],
    ) -> Result<Vec<Result<bool, StoreError>>, StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_write().map_err(db)?;
            let mut outcomes = Vec::with_capacity(deposits.len());
            for d in deposits {
                if Self::nonce_seen(&tx, d.uploader, d.nonce)? {
                    outcomes.push(Ok(false));
                    continue;
                }
                // Refusals are found before `put_in` writes anything.
                match self.put_in(&tx, d.record, d.share, d.quota) {
                    Ok(()) => {}
                    Err(e @ (StoreError::Conflict(_) | StoreError::QuotaExceeded { .. })) => {
                        outcomes.push(Err(e));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                Self::nonce_in(&tx, d.uploader, d.nonce, d.deadline)?;
                outcomes.push(Ok(true));
            }
            tx.commit().map_err(db)?;
            Ok(outcomes)
        })
    }

    fn put_in(
        &self,
        tx: &redb::WriteTransaction,
        record: &[u8; 32],
        s: &StoredShare,
        quota: u64,
    ) -> Result<(), StoreError> {
        let plain = codec::put_secret(&s.share, &s.commitments, &s.sealed_block).map_err(db)?;
        let sealed = seal_at_rest(
            &self.key,
            &aad(record, s.patient, s.uploader, s.digest),
            &plain,
        );
        let mut public = s.public();
        public.anchor = None;
        let bytes = row(&public, &sealed);
        let mut t = tx.open_table(SHARES).map_err(db)?;
        if let Some(old) = t.get(record).map_err(db)? {
            let old = self.decode(record, old.value())?;
            if old.share != s.share
                || old.commitments != s.commitments
                || old.sealed_block != s.sealed_block
                || old.patient != s.patient
                || old.uploader != s.uploader
                || old.salt != s.salt
                || old.digest != s.digest
            {
                return Err(StoreError::Conflict(crate::strict_hex::encode(record)));
            }
            return Ok(());
        }
        let mut counts = tx.open_table(PENDING_BY_UPLOADER).map_err(db)?;
        let pending = counts
            .get(&s.uploader.0.0)
            .map_err(db)?
            .map_or(0, |v| v.value());
        if pending >= quota {
            return Err(StoreError::QuotaExceeded {
                uploader: s.uploader,
                pending,
                quota,
            });
        }
        counts.insert(&s.uploader.0.0, pending + 1).map_err(db)?;
        let mut p = tx.open_table(PENDING).map_err(db)?;
        let mut v = [0u8; 28];
        v[..20].copy_from_slice(s.uploader.as_slice());
        v[20..].copy_from_slice(&s.stored_at.to_be_bytes());
        p.insert(record, &v).map_err(db)?;
        t.insert(record, bytes.as_slice()).map_err(db)?;
        Ok(())
    }

    fn decode(&self, record: &[u8; 32], bytes: &[u8]) -> Result<StoredShare, StoreError> {
        let (p, n) = codec::get_public(bytes).map_err(db)?;
        let plain = open_at_rest(
            &self.key,
            &aad(record, p.patient, p.uploader, p.digest),
            &bytes[n..],
        )
        .map_err(|_| StoreError::Undecryptable(crate::strict_hex::encode(record)))?;
        let (share, commitments, sealed_block) = codec::get_secret(&plain).map_err(db)?;
        Ok(StoredShare {
            patient: p.patient,
            uploader: p.uploader,
            salt: p.salt,
            digest: p.digest,
            anchor: p.anchor,
            share,
            commitments,
            sealed_block,
            stored_at: p.stored_at,
        })
    }

    /// The share for `record`, if stored.
    ///
    /// # Errors
    /// Database errors; [`StoreError::Undecryptable`] when the value does not open.
    pub fn get(&self, record: &[u8; 32]) -> Result<Option<StoredShare>, StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_read().map_err(db)?;
            let t = tx.open_table(SHARES).map_err(db)?;
            match t.get(record).map_err(db)? {
                Some(v) => Ok(Some(self.decode(record, v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Whether `record`'s deposit is still waiting for its anchor.
    ///
    /// # Errors
    /// Database errors.
    pub fn is_pending(&self, record: &[u8; 32]) -> Result<bool, StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_read().map_err(db)?;
            let t = tx.open_table(PENDING).map_err(db)?;
            Ok(t.get(record).map_err(db)?.is_some())
        })
    }

    /// The record is under an anchored root (the caller checked `anchor` against the chain):
    /// keeps the root and proof with the share, takes the deposit out of its uploader's quota
    /// (it is never collected) and lists it under its patient. A record anchored already keeps
    /// its first anchor.
    ///
    /// # Errors
    /// Database errors; `Ok(false)` when no share of `record` is stored.
    pub fn mark_anchored(&self, record: &[u8; 32], anchor: &Anchor) -> Result<bool, StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_write().map_err(db)?;
            if !Self::anchor_in(&tx, record, anchor)? {
                return Ok(false);
            }
            tx.commit().map_err(db)?;
            Ok(true)
        })
    }

    /// [`Self::mark_anchored`] for many records in one transaction (one write to disk for
    /// the lot); `false` for each record not stored here.
    ///
    /// # Errors
    /// Database errors (nothing is written then).
    pub fn mark_anchored_many(&self, rows: &[([u8; 32], Anchor)]) -> Result<Vec<bool>, StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_write().map_err(db)?;
            let found = rows
                .iter()
                .map(|(record, anchor)| Self::anchor_in(&tx, record, anchor))
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit().map_err(db)?;
            Ok(found)
        })
    }

    /// [`Self::mark_anchored`] inside `tx`.
    fn anchor_in(
        tx: &redb::WriteTransaction,
        record: &[u8; 32],
        anchor: &Anchor,
    ) -> Result<bool, StoreError> {
        let mut t = tx.open_table(SHARES).map_err(db)?;
        let Some(bytes) = t.get(record).map_err(db)?.map(|v| v.value().to_vec()) else {
            return Ok(false);
        };
        let (mut public, n) = codec::get_public(&bytes).map_err(db)?;
        if public.anchor.is_some() {
            return Ok(true);
        }
        public.anchor = Some(anchor.clone());
        t.insert(record, row(&public, &bytes[n..]).as_slice())
            .map_err(db)?;
        list_under_patient(tx, record, &public)?;
        Self::unpend(tx, record, false)?;
        Ok(true)
    }

    /// Stores records already anchored (each `share.anchor` set; the caller checked them
    /// against the chain), all in one transaction: one write to disk for the lot, where
    /// [`Self::put`] and [`Self::mark_anchored`] make two per record. What a node's store
    /// looks like after that many uploads, in the time a bench can afford (the memory bench
    /// fills five stores with 10^5 records each). Rows stored already are kept as they are.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] for a record stored with other contents; a share without its
    /// anchor, database errors. Nothing is stored then.
    pub fn import_anchored(&self, rows: &[([u8; 32], StoredShare)]) -> Result<(), StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_write().map_err(db)?;
            for (record, s) in rows {
                let anchor = s.anchor.as_ref().ok_or_else(|| {
                    StoreError::Db(format!(
                        "{}: imported without its anchor",
                        crate::strict_hex::encode(record)
                    ))
                })?;
                self.put_in(&tx, record, s, u64::MAX)?;
                Self::anchor_in(&tx, record, anchor)?;
            }
            tx.commit().map_err(db)
        })
    }

    /// The anchored records of `patient` after `after` (record id order), at most `limit`:
    /// their public part, read from the per-patient index alone.
    ///
    /// # Errors
    /// Database errors.
    pub fn anchored_of(
        &self,
        patient: u128,
        after: Option<[u8; 32]>,
        limit: usize,
    ) -> Result<Vec<([u8; 32], PublicRecord)>, StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_read().map_err(db)?;
            let by = tx.open_table(BY_PATIENT).map_err(db)?;
            let start = patient_key(patient, &after.unwrap_or([0; 32]));
            let end = patient_key(patient, &[0xff; 32]);
            let mut out = Vec::new();
            for item in by.range::<&[u8; 48]>(&start..=&end).map_err(db)? {
                let (k, v) = item.map_err(db)?;
                let mut record = [0u8; 32];
                record.copy_from_slice(&k.value()[16..]);
                if after == Some(record) {
                    continue;
                }
                out.push((record, codec::get_public(v.value()).map_err(db)?.0));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// The newest `limit` anchored records of `patient` held here, newest first (by the time
    /// each was stored here, then record id), and how many this node holds in all.
    ///
    /// # Errors
    /// Database errors.
    pub fn newest_of(&self, patient: u128, limit: usize) -> Result<(Listed, u64), StoreError> {
        self.newest_until(patient, u64::MAX, None, limit)
    }

    /// [`Self::newest_of`] among those stored here at or before `until` (unix seconds), and
    /// when `before` is given, of those stored at `until` only the ones whose id sorts below
    /// it: the pages after the first of a listing by time.
    ///
    /// # Errors
    /// Database errors.
    pub fn newest_until(
        &self,
        patient: u128,
        until: u64,
        before: Option<[u8; 32]>,
        limit: usize,
    ) -> Result<(Listed, u64), StoreError> {
        use std::ops::Bound;
        self.guard(|| {
            let tx = self.handle()?.begin_read().map_err(db)?;
            let time = tx.open_table(BY_PATIENT_TIME).map_err(db)?;
            let by = tx.open_table(BY_PATIENT).map_err(db)?;
            let first = time_key(patient, 0, &[0; 32]);
            let last = time_key(patient, until, &before.unwrap_or([0xff; 32]));
            let end = if before.is_some() {
                Bound::Excluded(&last)
            } else {
                Bound::Included(&last)
            };
            let mut out = Vec::new();
            for item in time
                .range::<&[u8; 56]>((Bound::Included(&first), end))
                .map_err(db)?
                .rev()
            {
                if out.len() >= limit {
                    break;
                }
                let (k, _) = item.map_err(db)?;
                let mut record = [0u8; 32];
                record.copy_from_slice(&k.value()[24..]);
                if let Some(v) = by.get(&patient_key(patient, &record)).map_err(db)? {
                    out.push((record, codec::get_public(v.value()).map_err(db)?.0));
                }
            }
            let total = tx
                .open_table(PATIENT_COUNTS)
                .map_err(db)?
                .get(patient)
                .map_err(db)?
                .map_or(0, |v| v.value());
            Ok((out, total))
        })
    }

    /// The public part of `record`, if stored (nothing is decrypted).
    ///
    /// # Errors
    /// Database errors.
    pub fn public(&self, record: &[u8; 32]) -> Result<Option<PublicRecord>, StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_read().map_err(db)?;
            let t = tx.open_table(SHARES).map_err(db)?;
            match t.get(record).map_err(db)? {
                Some(v) => Ok(Some(codec::get_public(v.value()).map_err(db)?.0)),
                None => Ok(None),
            }
        })
    }

    /// Deletes a deposit that was never anchored (or whose anchor does not match it).
    ///
    /// # Errors
    /// Database errors.
    pub fn remove_unanchored(&self, record: &[u8; 32]) -> Result<(), StoreError> {
        self.drop_pending(record, true)
    }

    fn drop_pending(&self, record: &[u8; 32], delete_share: bool) -> Result<(), StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_write().map_err(db)?;
            Self::unpend(&tx, record, delete_share)?;
            tx.commit().map_err(db)
        })
    }

    fn unpend(
        tx: &redb::WriteTransaction,
        record: &[u8; 32],
        delete_share: bool,
    ) -> Result<(), StoreError> {
        {
            let mut p = tx.open_table(PENDING).map_err(db)?;
            let removed = p.remove(record).map_err(db)?.map(|v| *v.value());
            if let Some(v) = removed {
                let mut uploader = [0u8; 20];
                uploader.copy_from_slice(&v[..20]);
                let mut counts = tx.open_table(PENDING_BY_UPLOADER).map_err(db)?;
                let n = counts.get(&uploader).map_err(db)?.map_or(0, |c| c.value());
                if n <= 1 {
                    counts.remove(&uploader).map_err(db)?;
                } else {
                    counts.insert(&uploader, n - 1).map_err(db)?;
                }
                if delete_share {
                    tx.open_table(SHARES)
                        .map_err(db)?
                        .remove(record)
                        .map_err(db)?;
                }
            }
        }
        Ok(())
    }

    /// Unanchored deposits stored before `cutoff` (unix seconds), at most `limit`.
    ///
    /// # Errors
    /// Database errors.
    pub fn pending_before(&self, cutoff: u64, limit: usize) -> Result<Vec<[u8; 32]>, StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_read().map_err(db)?;
            let t = tx.open_table(PENDING).map_err(db)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                let mut at = [0u8; 8];
                at.copy_from_slice(&v.value()[20..]);
                if u64::from_be_bytes(at) < cutoff {
                    out.push(*k.value());
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    /// Number of stored shares (public: reveals no secret).
    ///
    /// # Errors
    /// Database errors.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_read().map_err(db)?;
            tx.open_table(SHARES).map_err(db)?.len().map_err(db)
        })
    }

    /// Number of deposits waiting for their anchor.
    ///
    /// # Errors
    /// Database errors.
    pub fn pending_count(&self) -> Result<u64, StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_read().map_err(db)?;
            tx.open_table(PENDING).map_err(db)?.len().map_err(db)
        })
    }

    /// Number of remembered request nonces.
    ///
    /// # Errors
    /// Database errors.
    pub fn nonce_count(&self) -> Result<u64, StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_read().map_err(db)?;
            tx.open_table(NONCES).map_err(db)?.len().map_err(db)
        })
    }

    /// Marks `(requester, nonce)` used; false when it was used before (a replay). The entry is
    /// kept until its deadline has passed ([`Self::prune_nonces`]): after that the signed
    /// request is refused for its deadline anyway.
    ///
    /// # Errors
    /// Database errors.
    pub fn use_nonce(
        &self,
        requester: &[u8; 20],
        nonce: &[u8; 32],
        deadline: u64,
    ) -> Result<bool, StoreError> {
        self.nonce_once(requester, nonce, deadline, true)
    }

    /// [`Self::use_nonce`] for a release request, committed without waiting for the disk: the
    /// commit is durable with the next durable one ([`Self::flush`], run every second by the
    /// node, or any deposit or anchor). A crash, or a failed write that makes the store reopen
    /// its file, can lose the release nonces since the last durable commit (while flushes
    /// fail, each nonce is committed durably instead). A release replayed after that within
    /// its deadline gets a share sealed again to the requester's key, which only the requester
    /// can open, after the chain said yes again: no more than the requester could ask for
    /// anew. A deposit's nonce is always durable.
    ///
    /// # Errors
    /// Database errors.
    pub fn use_release_nonce(
        &self,
        requester: &[u8; 20],
        nonce: &[u8; 32],
        deadline: u64,
    ) -> Result<bool, StoreError> {
        let durable = self.flush_failed.load(std::sync::atomic::Ordering::Acquire);
        let fresh = self.nonce_once(requester, nonce, deadline, durable)?;
        if fresh && !durable {
            self.unflushed
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(fresh)
    }

    /// Records `nonce` of `requester` in a transaction of its own, committed durably or not;
    /// `false` (nothing written) when it was there already.
    fn nonce_once(
        &self,
        requester: &[u8; 20],
        nonce: &[u8; 32],
        deadline: u64,
        durable: bool,
    ) -> Result<bool, StoreError> {
        self.guard(|| {
            let mut tx = self.handle()?.begin_write().map_err(db)?;
            if !durable {
                tx.set_durability(redb::Durability::None).map_err(db)?;
            }
            if !Self::nonce_in(&tx, requester, nonce, deadline)? {
                return Ok(false);
            }
            tx.commit().map_err(db)?;
            Ok(true)
        })
    }

    /// Makes the commits since the last durable one durable, when there are any; true when it
    /// wrote.
    ///
    /// # Errors
    /// Database errors.
    pub fn flush(&self) -> Result<bool, StoreError> {
        if !self
            .unflushed
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            return Ok(false);
        }
        let r = self.guard(|| {
            let tx = self.handle()?.begin_write().map_err(db)?;
            tx.commit().map_err(db)
        });
        self.flush_failed
            .store(r.is_err(), std::sync::atomic::Ordering::Release);
        if r.is_err() {
            self.unflushed
                .store(true, std::sync::atomic::Ordering::Release);
        }
        r.map(|()| true)
    }

    /// Whether `requester` used `nonce` already (and it is not pruned yet).
    fn nonce_seen(
        tx: &redb::WriteTransaction,
        requester: &[u8; 20],
        nonce: &[u8; 32],
    ) -> Result<bool, StoreError> {
        let t = tx.open_table(NONCES).map_err(db)?;
        Ok(t.get(&nonce_key(requester, nonce)).map_err(db)?.is_some())
    }

    /// Records `nonce` of `requester` in `tx`; `false` when it was there already.
    fn nonce_in(
        tx: &redb::WriteTransaction,
        requester: &[u8; 20],
        nonce: &[u8; 32],
        deadline: u64,
    ) -> Result<bool, StoreError> {
        let key = nonce_key(requester, nonce);
        let mut t = tx.open_table(NONCES).map_err(db)?;
        if t.get(&key).map_err(db)?.is_some() {
            return Ok(false);
        }
        t.insert(&key, deadline).map_err(db)?;
        Ok(true)
    }

    /// Forgets nonces whose deadline is before `now`; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub fn prune_nonces(&self, now: u64) -> Result<u64, StoreError> {
        self.guard(|| {
            let tx = self.handle()?.begin_write().map_err(db)?;
            let n = {
                let mut t = tx.open_table(NONCES).map_err(db)?;
                let before = t.len().map_err(db)?;
                t.retain(|_, deadline| deadline >= now).map_err(db)?;
                before - t.len().map_err(db)?
            };
            tx.commit().map_err(db)?;
            Ok(n)
        })
    }
}

/// A nonce's row key: its requester, then the nonce.
fn nonce_key(requester: &[u8; 20], nonce: &[u8; 32]) -> [u8; 52] {
    let mut key = [0u8; 52];
    key[..20].copy_from_slice(requester);
    key[20..].copy_from_slice(nonce);
    key
}

/// One deposit of [`ShareStore::put_once_many`]: `put_once`'s arguments.
#[derive(Debug)]
pub struct OnceDeposit<'a> {
    /// The record id.
    pub record: &'a [u8; 32],
    /// Its share, unanchored.
    pub share: &'a StoredShare,
    /// Most unanchored deposits of its uploader.
    pub quota: u64,
    /// The uploader (whose nonce it is).
    pub uploader: &'a [u8; 20],
    /// The request's nonce.
    pub nonce: &'a [u8; 32],
    /// The request's deadline (the nonce is kept until then).
    pub deadline: u64,
}

#[cfg(test)]
mod tests;

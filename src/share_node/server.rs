//! The share node's HTTP API.
//!
//! - `GET /health`: node address, chain reachability, share count (no secrets).
//! - `PUT /shares/{record}`: deposit, signed by the uploader (the patient or a granted provider).
//! - `POST /shares/{record}/anchor`: the record's root and proof; kept when the proof leads from
//!   the leaf of what was deposited to a root anchored on chain (then the record is readable,
//!   listed, and never collected).
//! - `POST /deposits`, `POST /anchors`: many deposits or proofs in one request, each judged as
//!   alone, the chain asked once per patient, uploader and root, stored in one write (an
//!   anchoring batch brings each node a proof per record at once).
//! - `POST /shares/{record}/release`: release, signed by the requester; allowed only when the
//!   contract's `canRead` is true at the latest block for the stored proof, for the patient, or
//!   for a provider with the block and time of the `AccessAllowed` event found in the receipt
//!   the request names.
//! - `GET /records/{record}`, `GET /patients/{aid-pid}/records`: the public part (proof, time)
//!   of anchored records held here; `GET /patients/{aid-pid}/records/newest?until=&before=`:
//!   the newest of them (stored at or before `until`, below record `before` at that time) and
//!   their count.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alloy::eips::BlockId;
use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

mod collector;
mod freshness;
mod refusal;
mod writes;

use super::auth::{NodeRequest, domain, signer_of};
use super::store::{
    Anchor, Binding, OnceDeposit, PublicRecord, ShareStore, StoreError, StoredShare,
};
use super::wire::{
    ANCHORS_PER_BATCH, AnchorBatch, BatchAnswer, DEPOSITS_PER_BATCH, DepositBatch, ItemAnswer,
};
pub use super::wire::{
    AnchorBody, AnchoredRecord, DepositBody, NewestRecords, ReleaseBody, ReleasedShare,
};
use crate::chain::merkle::RecordProof;
use crate::chain::{DenyReason, EhrChain, PatientAddr, RecordId};
use crate::kind::{Classify, ErrorKind};
use crate::limits::{RateLimiter, retry_after_secs};
use axum::extract::ConnectInfo;
use collector::{collect, flush};
use refusal::{Refusal, bad, denied, internal, not_allowed, too_many};
use writes::{anchor, anchors, deposit, deposits};

/// Longest validity of a signed request, so captured requests expire quickly.
const MAX_DEADLINE_SECS: u64 = 600;
/// Largest deposit body (a share, commitments for k <= 255 and a sealed block of a few KiB).
const BODY_LIMIT: usize = 64 * 1024;
/// Largest batch body: [`DEPOSITS_PER_BATCH`] deposits of the largest size, or
/// [`ANCHORS_PER_BATCH`] proofs of 64 hashes.
const BATCH_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Limits a share node enforces on whoever knocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLimits {
    /// Requests one requester (or uploader) may make at once.
    pub burst: u32,
    /// Sustained requests per minute per requester.
    pub per_minute: u32,
    /// Deposits an uploader may have waiting for their anchor.
    pub deposit_quota: u64,
    /// How long a deposit may wait for its anchor before it is collected.
    pub unanchored_ttl: Duration,
    /// How often the collector runs (unanchored deposits, spent nonces, deployment check).
    pub sweep_every: Duration,
    /// The oldest the chain endpoint's latest block may be when the node judges a request
    /// (`None`: no bound; see `server/freshness.rs`).
    pub max_chain_lag: Option<Duration>,
    /// Requests one client address may make at once (a gateway speaks for many users).
    pub client_burst: u32,
    /// Sustained requests per minute per client address.
    pub client_per_minute: u32,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            burst: 120,
            per_minute: 1200,
            deposit_quota: 1000,
            unanchored_ttl: Duration::from_secs(3600),
            sweep_every: Duration::from_secs(10),
            max_chain_lag: None,
            client_burst: 2000,
            client_per_minute: 60_000,
        }
    }
}

/// What a share node needs to run.
pub struct NodeConfig {
    /// The node's identity key (its address is what requests are addressed to).
    pub identity: PrivateKeySigner,
    /// Read-only client of the deployed contract (chain id and deployment id read at connect).
    pub chain: EhrChain,
    /// The durable store, opened for this deployment ([`open_store`]).
    pub store: ShareStore,
    /// Rate limits, quota and collection.
    pub limits: NodeLimits,
    /// Testing only: flip a byte of every released share, to exercise share verification.
    pub danger_corrupt_shares: bool,
}

/// Opens the node's store under `dir/shares.redb`, bound to `chain`'s deployment and encrypted
/// under a key derived from the node's identity key.
///
/// # Errors
/// [`StoreError::BoundElsewhere`] when the folder belongs to another deployment; I/O errors.
pub async fn open_store(
    dir: &std::path::Path,
    identity: &PrivateKeySigner,
    chain: &EhrChain,
) -> Result<ShareStore, StoreError> {
    let key = crate::crypto::derive_key(identity.to_bytes().as_slice(), "share-store");
    let code_hash = chain
        .code_hash()
        .await
        .map_err(|e| StoreError::Db(format!("reading the contract's code: {e}")))?;
    let binding = Binding {
        chain_id: chain.chain_id(),
        contract: chain.address(),
        deployment_id: chain.deployment_id(),
        code_hash,
    };
    ShareStore::open(&dir.join("shares.redb"), key, &binding)
}

struct Node {
    cfg: NodeConfig,
    domain: Eip712Domain,
    limiter: RateLimiter<Address>,
    per_client: RateLimiter<std::net::IpAddr>,
    /// Where each access transaction a requester named put its `AccessAllowed` event (block,
    /// time and block hash), by (transaction, requester, record): the grant is judged anew by
    /// `canRead` on every request. A mined event moves only with a reorganisation, so a
    /// remembered one is trusted as it is once final ([`settled`]), and before that
    /// only while its block is still the chain's (one call instead of three).
    accesses: std::sync::Mutex<KnownAccesses>,
    /// Roots the chain said are anchored: an anchor is never undone, and a batch of uploads
    /// brings each node one proof per record to the same root.
    roots: std::sync::Mutex<crate::bounded::Bounded<B256, ()>>,
    /// The age of the chain endpoint's head, when `max_chain_lag` bounds it.
    view: freshness::ChainView,

    /// Set when the contract at our address turned out to be another deployment.
    halted: AtomicBool,
}

use crate::clock::unix_now as now;

/// (access transaction, requester, record) to where its `AccessAllowed` event is.
type KnownAccesses = crate::bounded::Bounded<(B256, Address, B256), Known>;

/// A remembered access event, and whether its block was seen to be the chain's at a moment
/// when that block was final ([`settled`]): only then is it trusted without asking again. A
/// block number that turns final says nothing of which block holds it: a reorganisation may
/// have replaced the event's block before the chain finalized that height.
#[derive(Debug, Clone, Copy)]
struct Known {
    event: crate::chain::AccessEvent,
    final_here: bool,
}

/// Whether an access event's height `block` is final: at or below the block the endpoint
/// named `finalized` in the head check this request is judged by (`finalized`). A remembered
/// event whose block is seen to be the chain's while its height is final is trusted from then
/// on without asking again ([`Known`]). Without a
/// lag bound there is no head check and nothing is final; an endpoint that names no finalized
/// block (an error, or no block yet) makes nothing final either. Either way each release on a
/// remembered event checks its block's hash, in the same batch request as `canRead`: a
/// reorganisation can drop an access transaction, and with it the patient's audit entry.
/// Depth is no rule here: 64 blocks is proof-of-stake Ethereum's finality, not an L2's (its
/// blocks are final once its L1 data is, far later), nor anvil's (which names head - 64 but
/// reverts past it).
fn settled(block: u64, finalized: Option<u64>) -> bool {
    finalized.is_some_and(|f| block <= f)
}

/// Access transactions a node remembers the block and time of (about 100 bytes each).
const ACCESSES_REMEMBERED: usize = 65_536;
/// Anchored roots a node remembers.
const ROOTS_REMEMBERED: usize = 4_096;

/// Whether `root` is anchored on chain, remembered once it is.
async fn anchored(n: &Node, root: B256) -> Result<bool, crate::chain::ChainError> {
    let lock = || {
        n.roots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if lock().get(&root).is_some() {
        return Ok(true);
    }
    let yes = n.cfg.chain.root(root).await?.is_some();
    if yes {
        lock().put(root, ());
    }
    Ok(yes)
}

/// Where `requester`'s access event for a record is, as [`access_of`] found it.
struct Found {
    block: u64,
    time: u64,
    /// Remembered and not yet seen final ([`Known`]): the block's hash it was seen in, to be
    /// checked against the chain's ([`still_on_chain`]) before a share is released on it.
    unconfirmed: Option<B256>,
    /// Its block is final by the request's head check: a passing check makes it
    /// [`Known::final_here`].
    settled: bool,
}

/// Where `requester`'s access event for `proof`'s record in `access_tx` is (none: the
/// patient, who needs none: block and time 0); `None` when the transaction holds no such
/// event. Remembered per transaction, requester and record (`remembered`: whether to use what
/// is remembered); a remembered event comes back `unconfirmed` until its block was checked at
/// a moment it was final by a head check's `finalized` block ([`settled`], [`Known`]).
async fn access_of(
    n: &Node,
    requester: Address,
    proof: &crate::chain::merkle::RecordProof,
    access_tx: Option<B256>,
    finalized: Option<u64>,
    remembered: bool,
) -> Result<Option<Found>, Refusal> {
    let Some(tx) = access_tx else {
        return Ok(Some(Found {
            block: 0,
            time: 0,
            unconfirmed: None,
            settled: false,
        }));
    };
    let key = (tx, requester, proof.record_id().0);
    let known = if remembered {
        n.accesses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
    } else {
        None
    };
    if let Some(k) = known {
        let e = k.event;
        return Ok(Some(Found {
            block: e.block,
            time: e.time,
            unconfirmed: (!k.final_here).then_some(e.block_hash),
            settled: settled(e.block, finalized),
        }));
    }
    let found = n
        .cfg
        .chain
        .access_event(tx, requester, proof.record_id(), proof.patient)
        .await?;
    if let Some(at) = found {
        n.accesses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .put(
                key,
                Known {
                    event: at,
                    final_here: false,
                },
            );
    }
    Ok(found.map(|a| Found {
        block: a.block,
        time: a.time,
        unconfirmed: None,
        settled: false,
    }))
}

/// Whether block `number`, whose hash the node's chain says is `now`, still has `hash`; 503
/// when the chain has no such block now (a reorganisation to a shorter fork, or a replica
/// behind).
fn still_on_chain(number: u64, hash: B256, now: Option<B256>) -> Result<bool, Refusal> {
    match now {
        Some(h) => Ok(h == hash),
        None => Err(refusal::unavailable(
            format!(
                "this share node's chain has no block {number} (of the access transaction) now"
            ),
            Duration::from_secs(1),
        )),
    }
}

/// The node's routes (without the background collector; see [`serve`]).
pub fn router(cfg: NodeConfig) -> Router {
    routes(node(cfg))
}

fn node(cfg: NodeConfig) -> Arc<Node> {
    let domain = domain(
        cfg.chain.chain_id(),
        cfg.chain.address(),
        cfg.chain.deployment_id(),
    );
    let limiter = RateLimiter::new(cfg.limits.burst, cfg.limits.per_minute);
    let per_client = RateLimiter::new(cfg.limits.client_burst, cfg.limits.client_per_minute);
    Arc::new(Node {
        cfg,
        domain,
        limiter,
        per_client,
        accesses: std::sync::Mutex::new(crate::bounded::Bounded::new(ACCESSES_REMEMBERED)),
        roots: std::sync::Mutex::new(crate::bounded::Bounded::new(ROOTS_REMEMBERED)),
        view: freshness::ChainView::default(),

        halted: AtomicBool::new(false),
    })
}

fn routes(node: Arc<Node>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/shares/{record}", put(deposit))
        .route("/shares/{record}/release", post(release))
        .route("/shares/{record}/anchor", post(anchor))
        .route("/records/{record}", get(record_info))
        .route("/patients/{patient}/records", get(patient_records))
        .route("/patients/{patient}/records/newest", get(newest_records))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT))
        .merge(
            Router::new()
                .route("/deposits", post(deposits))
                .route("/anchors", post(anchors))
                .layer(tower_http::limit::RequestBodyLimitLayer::new(
                    BATCH_BODY_LIMIT,
                )),
        )
        .with_state(node)
}

/// Serves the node until `shutdown` resolves, over TLS when `tls` is given, with the
/// collector running beside it.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: NodeConfig,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let node = node(cfg);
    let collector = tokio::spawn(collect(node.clone()));
    let flusher = tokio::spawn(flush(node.clone()));
    let app = routes(node.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let r = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                stopper.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
            });
            match axum_server::from_tcp_rustls(listener.into_std()?, tls) {
                Ok(server) => server.handle(handle).serve(app).await,
                Err(e) => Err(e),
            }
        }
    };
    collector.abort();
    flusher.abort();
    if let Err(e) = node.cfg.store.flush() {
        tracing::warn!("share node store flush at shutdown: {e}");
    }
    r
}

/// The record's proof as a node keeps it, once anchored.
fn proof_of(stored: &StoredShare) -> Option<RecordProof> {
    public_proof(&stored.public())
}

/// The record's proof from its public part, once anchored.
fn public_proof(p: &PublicRecord) -> Option<RecordProof> {
    let anchor = p.anchor.as_ref()?;
    Some(RecordProof {
        patient: PatientAddr::from_key(p.patient)?,
        author: p.uploader,
        salt: p.salt,
        digest: p.digest,
        root: anchor.root,
        proof: anchor.proof.clone(),
    })
}

/// Where a request is judged: at `at`, which is `head` (with a bound) and was remembered
/// from an earlier request when `remembered`.
struct View {
    at: BlockId,
    head: Option<u64>,
    /// The endpoint's `finalized` block as the head check found it (with the head).
    finalized: Option<u64>,
    remembered: bool,
}

/// The block a request is judged at. Without a bound: the endpoint's latest. With one: the
/// head checked to be within the bound (remembered for half a second, or asked `again`), by
/// number, so every judging call sees that state or fails (an endpoint behind it has no such
/// block), even when the calls reach another replica than the check did. Refuses (503) while
/// the view is older than the bound, so that nothing is judged on a stale view (a revoked
/// grant, a suspended provider).
async fn fresh_view(n: &Node, again: bool) -> Result<View, Refusal> {
    let Some(max) = n.cfg.limits.max_chain_lag else {
        return Ok(View {
            at: BlockId::latest(),
            head: None,
            finalized: None,
            remembered: false,
        });
    };
    let (head, remembered) = n
        .view
        .check(&n.cfg.chain, max, crate::clock::unix_now(), again)
        .await
        .map_err(|e| match e {
            freshness::Stale::Chain(c) => Refusal::from(c),
            behind => refusal::unavailable(behind.to_string(), Duration::from_secs(1)),
        })?;
    Ok(View {
        at: BlockId::number(head.number),
        head: Some(head.number),
        // A finalized block above the head (an answer from another replica) is no finer
        // than the head itself.
        finalized: head.finalized.map(|f| f.min(head.number)),
        remembered,
    })
}

/// Whether `requester` may have `proof`'s shares now on the strength of `access_tx` (none:
/// as the patient), judged by the contract's `canRead` on a fresh view. The view is moved
/// to the current head when the access event is in a later block than the one remembered
/// (or, when even the current head is behind it, the node cannot judge yet: 503), and a "no"
/// on a remembered head is asked once more on the current one (the grant may be newer); a
/// "yes" stands (the remembered head is within the bound).
async fn may_read_now(
    n: &Node,
    requester: Address,
    proof: &crate::chain::merkle::RecordProof,
    access_tx: Option<B256>,
) -> Result<bool, Refusal> {
    // A remembered access event whose block a reorganisation replaced is forgotten, and the
    // transaction looked up again on the second pass.
    for remembered in [true, false] {
        let mut view = fresh_view(n, false).await?;
        let Some(found) =
            access_of(n, requester, proof, access_tx, view.finalized, remembered).await?
        else {
            return Ok(false);
        };
        let (block, time) = (found.block, found.time);
        let behind = |v: &View| v.head.is_some_and(|h| h < block);
        if behind(&view) {
            view = fresh_view(n, true).await?;
            if behind(&view) {
                return Err(refusal::unavailable(
                    format!(
                        "this share node's chain view has not reached block {block} of the access transaction yet"
                    ),
                    Duration::from_secs(1),
                ));
            }
        }
        let judge = |at: BlockId| async move {
            n.cfg
                .chain
                .at(at)
                .can_read_at(requester, proof, block, time)
                .await
                .map_err(Refusal::from)
        };
        // The block check runs beside the judgement (one round trip, not two); a "yes"
        // counts only when the block is still the chain's.
        let first = match found.unconfirmed {
            None => judge(view.at).await?,
            Some(hash) => {
                // The finalized block counts only for an event whose height the request's
                // head check found final (below): not asked otherwise (every release of a node
                // without a lag bound), which spares the endpoint a block lookup each.
                let (yes, now, finalized_now) = n
                    .cfg
                    .chain
                    .at(view.at)
                    .can_read_and_block_hash(requester, proof, block, time, block, found.settled)
                    .await?;
                if !still_on_chain(block, hash, now)? {
                    tracing::warn!(
                        "access transaction {:?}: its block {block} left the chain; looking it up again",
                        access_tx
                    );
                    if let Some(tx) = access_tx {
                        n.accesses
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .remove(&(tx, requester, proof.record_id().0));
                    }
                    continue;
                }
                // Final by the request's head check, and by the answer that held the hash (the
                // head check may have reached another replica than this request).
                if found.settled
                    && finalized_now.is_some_and(|f| f >= block)
                    && let Some(tx) = access_tx
                {
                    let key = (tx, requester, proof.record_id().0);
                    let mut known = n
                        .accesses
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let Some(k) = known.get(&key).filter(|k| k.event.block_hash == hash) {
                        known.put(
                            key,
                            Known {
                                event: k.event,
                                final_here: true,
                            },
                        );
                    }
                }
                yes
            }
        };
        if first {
            return Ok(true);
        }
        if !view.remembered {
            return Ok(false);
        }
        let at = fresh_view(n, true).await?.at;
        return judge(at).await;
    }
    Err(refusal::unavailable(
        "the access transaction's block changed twice while this request was judged".to_owned(),
        Duration::from_secs(1),
    ))
}

fn halted(n: &Node) -> Result<(), Refusal> {
    if n.halted.load(Ordering::SeqCst) {
        return Err(Refusal::new(
            ErrorKind::Unavailable,
            "the contract is not the deployment this node was set up for; it serves nothing",
        ));
    }
    Ok(())
}

fn limit(n: &Node, who: Address) -> Result<(), Refusal> {
    n.limiter
        .check(&who)
        .map_err(|wait| too_many(format!("too many requests from {who}; slow down"), wait))
}

/// Per client address, before any signature is checked: fresh keys cost nothing, addresses do.
fn limit_client(
    n: &Node,
    client: Option<&ConnectInfo<std::net::SocketAddr>>,
) -> Result<(), Refusal> {
    let Some(ConnectInfo(addr)) = client else {
        return Ok(());
    };
    let ip = addr.ip();
    n.per_client
        .check(&ip)
        .map_err(|wait| too_many(format!("too many requests from {ip}; slow down"), wait))
}

async fn health(State(n): State<Arc<Node>>) -> Json<serde_json::Value> {
    let chain_ok = n.cfg.chain.chain_time().await.is_ok();
    let halted = n.halted.load(Ordering::SeqCst);
    Json(json!({
        "status": if chain_ok && !halted { "ok" } else { "degraded" },
        "node": n.cfg.identity.address(),
        "contract": n.cfg.chain.address(),
        "chain_id": n.cfg.chain.chain_id(),
        "deployment_id": n.cfg.chain.deployment_id(),
        "chain_ok": chain_ok,
        "serving": !halted,
        "shares": n.cfg.store.count().ok(),
        "unanchored": n.cfg.store.pending_count().ok(),
        "nonces": n.cfg.store.nonce_count().ok(),
    }))
}

fn record_id(s: &str) -> Result<RecordId, Refusal> {
    s.parse()
        .map_err(|_| bad(format!("{s:?} is not a record id (0x + 64 hex digits)")))
}

/// The checks every signed request passes before anything else is looked at, written once
/// for deposits and releases: the record in the path, this node as the addressee, a live
/// deadline, the claimed signer's signature under this deployment's domain, and the signer's
/// rate limit.
fn check_signed<R: NodeRequest>(
    n: &Node,
    id: RecordId,
    r: &R,
    signature: &alloy::primitives::Signature,
) -> Result<k256::PublicKey, Refusal> {
    let what = R::WHAT;
    if r.record() != id.0 {
        return Err(bad(format!(
            "record id in the path and in the signed {what} differ"
        )));
    }
    if r.share_node() != n.cfg.identity.address() {
        return Err(denied(format!(
            "{what} is addressed to share node {}, not this one",
            r.share_node()
        )));
    }
    check_deadline(r.deadline())?;
    let key = match signer_of(signature, r.eip712_signing_hash(&n.domain)) {
        Some((key, addr)) if addr == r.signer() => key,
        _ => {
            return Err(denied(format!(
                "{what} signature is not {}'s (forged, or for another chain/contract/deployment)",
                r.signer()
            )));
        }
    };
    limit(n, r.signer())?;
    Ok(key)
}

fn check_deadline(deadline: u64) -> Result<(), Refusal> {
    let t = now();
    if deadline < t {
        return Err(denied(format!("request expired at {deadline} (now {t})")));
    }
    if deadline > t + MAX_DEADLINE_SECS {
        return Err(bad(format!(
            "deadline more than {MAX_DEADLINE_SECS} s ahead"
        )));
    }
    Ok(())
}

async fn release(
    State(n): State<Arc<Node>>,
    client: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    Path(record): Path<String>,
    Json(b): Json<ReleaseBody>,
) -> Result<Json<ReleasedShare>, Refusal> {
    halted(&n)?;
    limit_client(&n, client.as_deref())?;
    let id = record_id(&record)?;
    let r = &b.request;
    let requester_key = check_signed(&n, id, r, &b.signature)?;
    // One answer for "no such record", "not anchored" and "not allowed", and nothing is
    // written (not even the nonce) before the chain says yes.
    let stored = n.cfg.store.get(&id.0.0).map_err(internal)?;
    let Some((stored, proof)) = stored.and_then(|s| proof_of(&s).map(|p| (s, p))) else {
        return Err(not_allowed(r.requester, id));
    };
    let access_tx = (r.accessTx != B256::ZERO).then_some(r.accessTx);
    if !may_read_now(&n, r.requester, &proof, access_tx).await? {
        return Err(not_allowed(r.requester, id));
    }
    if !n
        .cfg
        .store
        .use_release_nonce(&r.requester.0.0, &r.nonce.to_be_bytes(), r.deadline)
        .map_err(internal)?
    {
        return Err(denied("request nonce already used (replay)"));
    }
    let mut share = stored.share;
    if n.cfg.danger_corrupt_shares {
        // Flip the last hex digit of the value: a plausible but wrong share.
        let last = share.pop().unwrap_or('0');
        share.push(if last == '0' { '1' } else { '0' });
    }
    // Sealed to the key that signed the request (its signature was checked above to be the
    // requester's): whatever stands between this node and the requester sees ciphertext.
    let plain =
        crate::strict_hex::decode(&share).map_err(|e| internal(format!("stored share: {e}")))?;
    let sealed = crate::crypto::seal_to(
        &requester_key,
        &super::wire::share_aad(id.0, n.cfg.identity.address(), r.nonce),
        &plain,
    );
    tracing::info!(record = %id, requester = %r.requester, "share released");
    Ok(Json(ReleasedShare {
        proof,
        share: crate::strict_hex::encode(sealed),
        commitments: stored.commitments,
        sealed_block: stored.sealed_block,
    }))
}

/// The public part of an anchored record held here.
async fn record_info(
    State(n): State<Arc<Node>>,
    client: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    Path(record): Path<String>,
) -> Result<Json<AnchoredRecord>, Refusal> {
    halted(&n)?;
    limit_client(&n, client.as_deref())?;
    let id = record_id(&record)?;
    let stored = n.cfg.store.public(&id.0.0).map_err(internal)?;
    match stored
        .as_ref()
        .and_then(|s| public_proof(s).map(|p| (s, p)))
    {
        Some((s, proof)) => Ok(Json(AnchoredRecord {
            record: id,
            proof,
            stored_at: s.stored_at,
        })),
        None => Err(Refusal::new(
            ErrorKind::NotFound,
            format!("no anchored record {id} here"),
        )),
    }
}

/// Query of `GET /patients/{patient}/records`.
#[derive(Debug, Deserialize)]
struct ListQuery {
    /// Record id to list after (paging).
    after: Option<String>,
    /// At most this many (default and maximum 500).
    limit: Option<usize>,
}

/// The anchored records of one patient held here, in record id order; paged.
async fn patient_records(
    State(n): State<Arc<Node>>,
    client: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    Path(patient): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
) -> Result<Json<Vec<AnchoredRecord>>, Refusal> {
    halted(&n)?;
    limit_client(&n, client.as_deref())?;
    let patient: PatientAddr = patient
        .parse()
        .map_err(|_| bad(format!("{patient:?} is not a patient address (aid-pid)")))?;
    let after = q.after.as_deref().map(record_id).transpose()?;
    let limit = q.limit.unwrap_or(500).clamp(1, 500);
    let rows = n
        .cfg
        .store
        .anchored_of(patient.key(), after.map(|a| a.0.0), limit)
        .map_err(internal)?;
    Ok(Json(listed(rows)))
}

/// Rows of a listing as the wire has them (those with their proof).
fn listed(rows: Vec<([u8; 32], PublicRecord)>) -> Vec<AnchoredRecord> {
    rows.into_iter()
        .filter_map(|(record, s)| {
            Some(AnchoredRecord {
                record: RecordId(B256::from(record)),
                proof: public_proof(&s)?,
                stored_at: s.stored_at,
            })
        })
        .collect()
}

/// Query of `GET /patients/{patient}/records/newest`.
#[derive(Debug, Deserialize)]
struct NewestQuery {
    /// At most this many (default 50, at most 500).
    limit: Option<usize>,
    /// Only those stored here at or before this time (unix seconds).
    until: Option<u64>,
    /// With `until`: of those stored at `until`, only the ones whose id sorts below this.
    before: Option<String>,
}

/// The newest anchored records of one patient held here (a range of the time index, however
/// many the patient has), and how many there are.
async fn newest_records(
    State(n): State<Arc<Node>>,
    client: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    Path(patient): Path<String>,
    axum::extract::Query(q): axum::extract::Query<NewestQuery>,
) -> Result<Json<NewestRecords>, Refusal> {
    halted(&n)?;
    limit_client(&n, client.as_deref())?;
    let patient: PatientAddr = patient
        .parse()
        .map_err(|_| bad(format!("{patient:?} is not a patient address (aid-pid)")))?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let before = match (&q.before, q.until) {
        (None, _) => None,
        (Some(b), Some(_)) => Some(
            b.parse::<RecordId>()
                .map_err(|_| bad(format!("before={b:?} is not a record id")))?
                .0
                .0,
        ),
        (Some(_), None) => return Err(bad("before= needs until=".to_owned())),
    };
    let (rows, total) = n
        .cfg
        .store
        .newest_until(patient.key(), q.until.unwrap_or(u64::MAX), before, limit)
        .map_err(internal)?;
    Ok(Json(NewestRecords {
        records: listed(rows),
        total,
    }))
}

#[cfg(test)]
mod tests {
    use super::settled;

    #[test]
    fn only_a_named_finalized_block_makes_an_event_final() {
        assert!(settled(100, Some(100)));
        assert!(settled(99, Some(100)));
        assert!(!settled(101, Some(100)));
        // Finalized block 0 (a young chain, an L2 whose L1 finalized nothing yet).
        assert!(!settled(1, Some(0)));
        // No head check (no lag bound), or an endpoint that names none: never final.
        assert!(!settled(0, None));
        assert!(!settled(10, None));
    }
}

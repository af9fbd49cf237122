//! The records client: put and get, talking to Kubo and the share nodes itself (so when the CLI
//! uses it, no server ever sees the plaintext).

use std::time::Duration;

use super::block::{RecordBlock, keyed_digest};
use super::directory::Directory;
use super::fhir::{FHIR_JSON, validate_fhir};
use super::node_health::NodeHealth;
use super::read_cache::{Access, ReadCache};
use super::sweeper;
use crate::chain::merkle::{self, RecordProof};
use crate::chain::{ChainError, DenyReason, EhrChain, PatientAddr, RecordId, random_b256};
use crate::crypto::{AeadKey, Opener, Scheme, seal_segments};
use crate::ipfs::{IpfsError, Replicas};
use crate::shamir::{Secret, Threshold, split};
pub use crate::share_node::ShareNodeRef;
use crate::share_node::{
    AnchorBody, AnchoredRecord, BatchedAnchor, BatchedDeposit, DepositBody, NodeClient,
    ReleaseBody, ShareDeposit, ShareRelease, domain, sign,
};
use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rand_core::RngCore;
use serde::Serialize;

/// Why one share node did not contribute a valid share.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeFailure {
    /// The node's URL.
    pub node: String,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.node, self.reason)
    }
}

fn list(f: &[NodeFailure]) -> String {
    f.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Errors of record operations, one per way it can fail.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// No share node holds a record with this id under an anchored root.
    #[error("record {0} not found (no share node holds it under an anchored root)")]
    NotFound(RecordId),
    /// The contract denied access (the denial is on the audit trail).
    #[error("access to record {0} denied: {1}")]
    Denied(RecordId, DenyReason),
    /// Fewer than k valid shares.
    #[error(
        "not enough valid shares for record {record}: {valid} valid, {needed} needed; {}",
        list(failures)
    )]
    NotEnoughShares {
        /// The record.
        record: RecordId,
        /// Valid shares gathered.
        valid: usize,
        /// Threshold.
        needed: usize,
        /// Each node that failed, and why.
        failures: Vec<NodeFailure>,
    },
    /// Fewer than k share nodes answered a listing: what they hold cannot be told apart from
    /// what one of them makes up, nor can it be complete.
    #[error("only {answered} share nodes answered the listing, {needed} needed")]
    NotEnoughListings {
        /// Nodes that answered.
        answered: usize,
        /// Threshold.
        needed: usize,
    },
    /// Fewer than k nodes stored their share; nothing was anchored and the ciphertext was unpinned.
    #[error(
        "only {stored} share nodes stored their share, {needed} needed; the upload was rolled back; {}",
        list(failures)
    )]
    NotEnoughAcks {
        /// Acknowledged.
        stored: usize,
        /// Threshold.
        needed: usize,
        /// Each node that failed, and why.
        failures: Vec<NodeFailure>,
    },
    /// The ciphertext is not on the IPFS node.
    #[error("ciphertext {cid} of record {record} missing from IPFS")]
    CiphertextMissing {
        /// The record.
        record: RecordId,
        /// Its CID.
        cid: String,
    },
    /// The decrypted content does not match the anchored digest.
    #[error("record {0}: content digest does not match the anchored digest")]
    DigestMismatch(RecordId),
    /// The record was anchored, but fewer than k share nodes accepted its proof: it cannot be
    /// read, and the nodes will collect its shares.
    #[error(
        "record {record} was anchored, but only {accepted} share nodes accepted its proof, {needed} needed; {}",
        list(failures)
    )]
    NotEnoughProofs {
        /// The record.
        record: RecordId,
        /// Nodes that keep the proof.
        accepted: usize,
        /// Threshold.
        needed: usize,
        /// Each node that failed, and why.
        failures: Vec<NodeFailure>,
    },
    /// The payload is not what its media type claims.
    #[error("invalid FHIR resource: {0}")]
    InvalidFhir(String),
    /// Anchoring the record's root failed after its transaction may have gone out (in a batch:
    /// for every record in it): it may be, or become, anchored.
    #[error("anchoring failed: {0}")]
    Anchoring(String),
    /// Anchoring the record's root failed before its transaction went out, or the contract
    /// refused it: nothing was anchored.
    #[error("anchoring failed, nothing anchored: {0}")]
    NotAnchored(String),
    /// Configuration problem (threshold vs node count).
    #[error("{0}")]
    Config(String),
    /// Decryption failed with the reconstructed key.
    #[error("record {0}: decryption failed: {1}")]
    Decrypt(RecordId, String),
    /// Chain errors.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// IPFS errors.
    #[error(transparent)]
    Ipfs(#[from] IpfsError),
}

impl crate::kind::Classify for RecordError {
    fn kind(&self) -> crate::kind::ErrorKind {
        use crate::kind::ErrorKind as K;
        match self {
            Self::NotFound(_) => K::NotFound,
            Self::Denied(..) => K::Denied,
            Self::InvalidFhir(_) => K::BadInput,
            Self::NotEnoughShares { .. }
            | Self::NotEnoughListings { .. }
            | Self::NotEnoughAcks { .. }
            | Self::NotEnoughProofs { .. }
            | Self::CiphertextMissing { .. }
            | Self::Anchoring(_)
            | Self::NotAnchored(_)
            | Self::Config(_) => K::Unavailable,
            // Content that does not match its anchor or key: corruption or an attack, logged.
            Self::DigestMismatch(_) | Self::Decrypt(..) => K::Internal,
            Self::Chain(e) => e.kind(),
            Self::Ipfs(e) => e.kind(),
        }
    }

    /// Counts, never the share nodes' URLs or their transport errors (those go to the log).
    fn public_message(&self) -> String {
        match self {
            Self::NotEnoughShares {
                record,
                valid,
                needed,
                ..
            } => format!(
                "not enough share nodes answered for record {record}: {valid} valid shares, {needed} needed; try again shortly"
            ),
            Self::NotEnoughAcks { stored, needed, .. } => format!(
                "only {stored} share nodes stored their share, {needed} needed; nothing was stored"
            ),
            Self::NotEnoughProofs {
                record,
                accepted,
                needed,
                ..
            } => format!(
                "record {record} was anchored, but only {accepted} share nodes accepted it, {needed} needed; it cannot be read"
            ),
            Self::Anchoring(_) => "anchoring on the chain did not complete; the upload was not acknowledged, upload it again".to_owned(),
            Self::NotAnchored(_) => "anchoring on the chain failed; nothing was stored".to_owned(),
            Self::Config(_) => "the records service is not configured right; it is logged for the operators".to_owned(),
            Self::NotEnoughListings { answered, needed } => format!(
                "only {answered} share nodes answered, {needed} needed to list records; try again shortly"
            ),
            Self::DigestMismatch(_) | Self::Decrypt(..) => {
                "the record failed its integrity check and is not shown; it is logged for the operators".to_owned()
            }
            Self::Chain(e) => e.public_message(),
            Self::Ipfs(e) => e.public_message(),
            _ => self.to_string(),
        }
    }
}

/// Where a record's leaf gets anchored: alone by the uploader, or batched with others (the
/// gateway's [`super::Batcher`]). Returns the anchored root and the leaf's proof to it.
pub trait Anchoring: Send + Sync + std::fmt::Debug {
    /// Anchors `leaf` (waiting until its root is on chain).
    fn anchor(
        &self,
        leaf: B256,
    ) -> futures::future::BoxFuture<'_, Result<(B256, Vec<B256>), RecordError>>;
}

/// Anchoring each record alone, by the uploader: the root is the leaf.
#[derive(Debug)]
struct Alone(EhrChain);

impl Anchoring for Alone {
    fn anchor(
        &self,
        leaf: B256,
    ) -> futures::future::BoxFuture<'_, Result<(B256, Vec<B256>), RecordError>> {
        Box::pin(async move {
            anchor_root(&self.0, leaf, 1).await?;
            Ok((leaf, Vec::new()))
        })
    }
}

/// Sends `anchor(root, count)`. A root anchored already (by anyone: a copied transaction
/// anchors the same records, and opens nothing to whoever sent it) counts as anchored.
///
/// # Errors
/// Chain rejections other than an existing root, transport errors.
pub async fn anchor_root(chain: &EhrChain, root: B256, count: u32) -> Result<(), RecordError> {
    match chain.anchor_root(root, count).await {
        Ok(_) => Ok(()),
        // Rejected (decoded) or reverted (a node that gives no reason): a duplicate root is
        // fine, anything else is the error.
        Err(e) if chain.root(root).await?.is_some() => {
            tracing::debug!("anchoring {root}: {e}");
            tracing::info!("root {root} was anchored already (by another sender): fine");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// How an upload failed, which decides what happens to its ciphertext.
#[derive(Debug)]
enum Failed {
    /// Before its anchor was sent, or refused by the contract: nothing can be anchored, the
    /// ciphertext goes at once.
    Unanchored(RecordError),
    /// Its root is, or may become, anchored: the ciphertext stays for the sweeper.
    MaybeAnchored(RecordError),
}

/// A failed upload ([`RecordsClient::put_salted`]).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct UploadError {
    /// Why it failed.
    #[source]
    pub error: RecordError,
    /// Its anchor was sent, or may have been: the record may be, or become, readable (the
    /// sweeper finishes it, or collects it once the share nodes dropped its shares). Otherwise
    /// nothing of it will ever be read.
    pub maybe_anchored: bool,
}

/// Put and get records as one account.
#[derive(Debug, Clone)]
pub struct RecordsClient {
    chain: EhrChain,
    signer: PrivateKeySigner,
    ipfs: Replicas,
    nodes: Vec<ShareNodeRef>,
    threshold: Threshold,
    domain: Eip712Domain,
    anchoring: std::sync::Arc<dyn Anchoring>,
    directory: Directory,
    cache: std::sync::Arc<ReadCache>,
    health: std::sync::Arc<NodeHealth>,
    /// How new records are padded ([`Scheme::CURRENT`] unless configured).
    padding: Scheme,
}

use crate::clock::unix_now as now;

/// Records up to this size have their ciphertext fetched while the shares are gathered, when
/// its CID is known from an earlier read (larger ones stream as they decrypt, to keep memory
/// near one copy).
const PREFETCH_MAX: u64 = 4 << 20;
/// No record is larger (uploads are bounded far below): a block claiming more is refused
/// before its size reaches the envelope's arithmetic.
const MAX_RECORD_BYTES: u64 = 1 << 40;

/// An access transaction younger than this (seconds) may not be in every node's view of the
/// chain yet.
const FRESH_ACCESS_SECS: u64 = 5;

/// A spawned task that is cancelled when its handle is dropped (a read that failed before
/// its prefetched ciphertext was needed).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn nonce() -> U256 {
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    U256::from_be_bytes(b)
}

impl RecordsClient {
    /// A client signing as `signer` (the same account as `chain`'s); made only through
    /// [`super::RecordsConfig::client`].
    ///
    /// # Errors
    /// [`RecordError::Config`] when k exceeds the number of nodes.
    pub(super) fn new(
        chain: EhrChain,
        signer: PrivateKeySigner,
        ipfs: Replicas,
        nodes: Vec<ShareNodeRef>,
        k: u8,
        cache: std::sync::Arc<ReadCache>,
        health: std::sync::Arc<NodeHealth>,
    ) -> Result<Self, RecordError> {
        let n = u8::try_from(nodes.len())
            .map_err(|_| RecordError::Config("at most 255 share nodes".into()))?;
        let threshold = Threshold::new(k, n)
            .map_err(|e| RecordError::Config(format!("{e} (share nodes configured: {n})")))?;
        let domain = domain(chain.chain_id(), chain.address(), chain.deployment_id());
        // The process's one share-node client: its connections and TLS sessions outlive this
        // records client, which the gateway makes per request.
        let http = crate::share_node::tls::http();
        Ok(Self {
            anchoring: std::sync::Arc::new(Alone(chain.clone())),
            directory: Directory::new(chain.clone(), nodes.clone(), k, http),
            chain,
            signer,
            ipfs,
            nodes,
            threshold,
            domain,
            cache,
            health,
            padding: Scheme::CURRENT,
        })
    }

    /// The same client, padding new records by `padding` (records keep the scheme they were
    /// written with; every scheme is read).
    #[must_use]
    pub fn with_padding(mut self, padding: Scheme) -> Self {
        self.padding = padding;
        self
    }

    /// The account that signs this client's uploads (and reads).
    pub fn uploader(&self) -> Address {
        self.signer.address()
    }

    /// The chain client it works over.
    pub fn chain(&self) -> &EhrChain {
        &self.chain
    }

    /// The same client, anchoring through `anchoring` (a batcher) instead of alone.
    pub fn with_anchoring(mut self, anchoring: std::sync::Arc<dyn Anchoring>) -> Self {
        self.anchoring = anchoring;
        self
    }

    /// Encrypts, stores and anchors a record for `patient`; returns its id.
    ///
    /// # Errors
    /// Invalid FHIR, IPFS failures, fewer than k share nodes storing, chain rejections.
    pub async fn put(
        &self,
        patient: PatientAddr,
        payload: Bytes,
        media_type: &str,
        file_name: Option<String>,
    ) -> Result<RecordId, RecordError> {
        self.put_salted(random_b256(), patient, payload, media_type, file_name)
            .await
            .map_err(|e| e.error)
    }

    /// The id an upload of a record for `patient` with `salt` gets: bound to this client's
    /// account (the uploader) and the patient (`recordIdOf(uploader, patient, salt)`), and
    /// share nodes take a deposit for it only signed by the uploader, so nobody else can claim
    /// it, whoever anchors a root with its leaf. Known before anything is stored: a caller
    /// that names the upload (an `Idempotency-Key`) records it first.
    pub fn upload_id(&self, patient: PatientAddr, salt: B256) -> RecordId {
        RecordId::derive(self.signer.address(), patient, salt)
    }

    /// [`Self::put`] with the salt of [`Self::upload_id`] (fresh and random for each upload:
    /// a salt used twice makes a second upload of the id, which the nodes and the contract
    /// refuse), telling on a failure whether the record may still become readable.
    ///
    /// # Errors
    /// As [`Self::put`], in an [`UploadError`].
    pub async fn put_salted(
        &self,
        salt: B256,
        patient: PatientAddr,
        payload: Bytes,
        media_type: &str,
        file_name: Option<String>,
    ) -> Result<RecordId, UploadError> {
        let unanchored = |error| UploadError {
            error,
            maybe_anchored: false,
        };
        if media_type == FHIR_JSON {
            validate_fhir(&payload)
                .map_err(RecordError::InvalidFhir)
                .map_err(unanchored)?;
        }
        let id = self.upload_id(patient, salt);
        let digest_key = random_b256();
        let digest = keyed_digest(&digest_key.0, &payload);
        let key = AeadKey::random();

        // Encrypt on a blocking thread, streaming sealed segments into the IPFS upload.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
        let enc_key = key.clone();
        let body = payload.clone();
        let padding = self.padding;
        let encrypt = tokio::task::spawn_blocking(move || {
            seal_segments(&enc_key, padding, &body, |seg| {
                let _ = tx.blocking_send(Ok(Bytes::from(seg)));
            });
        });
        // A marker first (shared with the uploads that start with this one): from here on a
        // crash leaves it for the sweeper, which finishes the upload or collects what it left
        // (`sweeper.rs`, `markers.rs`).
        let started = std::time::Instant::now();
        let mut member = super::markers::join(&self.ipfs, id)
            .await
            .map_err(|e| unanchored(e.into()))?;
        // Added on one peer, pinned by CID on the others (they copy it over bitswap).
        let placed_at = started.elapsed();
        let (placement, marker) = member.parts();
        let marker = marker.clone();
        let cid = self
            .ipfs
            .add_replicated(
                placement,
                tokio_stream::wrappers::ReceiverStream::new(rx),
                &sweeper::stored_name(id),
                &marker,
            )
            .await
            .map_err(|e| unanchored(e.into()))?;
        // On an error the ciphertext may be pinned all the same (Kubo stopped as it
        // answered): the member drops unsettled, and the marker stays for the sweeper.
        let _ = encrypt.await;
        let added_at = started.elapsed();

        let block = RecordBlock {
            record_id: id,
            patient,
            cid: cid.clone(),
            key: crate::strict_hex::encode(key.as_bytes()),
            scheme: self.padding.name().into(),
            digest,
            digest_key: crate::strict_hex::encode(digest_key),
            size: payload.len() as u64,
            media_type: media_type.to_owned(),
            file_name,
            author: self.signer.address(),
            created_at: now(),
        };
        match self.share_and_anchor(&block, salt).await {
            // Every node holds the proof: the upload is finished.
            Ok(true) => {
                let shared_at = started.elapsed();
                if let Err(e) = member.finish().await {
                    tracing::warn!(
                        "record {id} stored; unpinning its marker failed ({e}): the sweeper will"
                    );
                }
                // Where an upload's time goes (the load bench reads these at debug level).
                tracing::debug!(
                    record = %id,
                    marker_ms = placed_at.as_secs_f64() * 1e3,
                    add_ms = (added_at - placed_at).as_secs_f64() * 1e3,
                    shares_anchor_proofs_ms = (shared_at - added_at).as_secs_f64() * 1e3,
                    unpin_ms = (started.elapsed() - shared_at).as_secs_f64() * 1e3,
                    "upload phases"
                );
                Ok(id)
            }
            // Readable, but some node still waits for the proof: the sweeper gives it to it.
            Ok(false) => {
                member.keep();
                Ok(id)
            }
            // The root may be on chain (anchored but fewer than k nodes took the proof, or an
            // anchor whose outcome is unknown): the ciphertext and the marker stay, and the
            // sweeper finishes the record if a node holds its proof, or collects both once
            // every node has dropped the deposit.
            Err(Failed::MaybeAnchored(e)) => {
                member.keep();
                tracing::warn!(
                    "upload of {id} failed after its anchor was sent ({e}): left for the sweeper"
                );
                Err(UploadError {
                    error: e,
                    maybe_anchored: true,
                })
            }
            // No half record: without the anchor nobody can read it; drop the ciphertext too,
            // then this upload's part of the marker (a failure keeps the marker, and the
            // sweeper does it).
            Err(Failed::Unanchored(e)) => {
                match self.ipfs.unpin(&cid, member.peers()).await {
                    Ok(()) => {
                        if let Err(u) = member.finish().await {
                            tracing::warn!(
                                "could not unpin the marker of {id} ({u}): the sweeper will"
                            );
                        }
                    }
                    Err(u) => {
                        member.keep();
                        tracing::warn!(
                            "could not unpin {cid} after a failed upload ({u}): the sweeper will"
                        );
                    }
                }
                Err(unanchored(e))
            }
        }
    }

    /// Deposits the shares, anchors the leaf and gives every node the proof; `Ok(true)` when
    /// every node took it, `Ok(false)` when k did but not all.
    async fn share_and_anchor(&self, block: &RecordBlock, salt: B256) -> Result<bool, Failed> {
        let id = block.record_id;
        let patient = block.patient;
        let secret = Secret::random();
        let sealed = crate::strict_hex::encode(block.seal(&secret));
        let (shares, commitments) = split(&secret, self.threshold);
        let commitments = crate::strict_hex::encode(commitments.to_bytes());
        let mut pending = FuturesUnordered::new();
        for (node, share) in self.nodes.iter().zip(shares) {
            let body_share = crate::strict_hex::encode(share.to_bytes());
            let deposit = ShareDeposit {
                recordId: id.0,
                patient: patient.key(),
                uploader: self.signer.address(),
                salt,
                digest: block.digest,
                shareNode: node.address,
                contentHash: DepositBody::content_hash(&body_share, &commitments, &sealed),
                nonce: nonce(),
                deadline: now() + 120,
            };
            let signature = sign(&self.signer, &deposit, &self.domain)
                .map_err(|e| Failed::Unanchored(RecordError::Config(e.to_string())))?;
            let body = DepositBody {
                deposit,
                signature,
                share: body_share,
                commitments: commitments.clone(),
                sealed_block: sealed.clone(),
            };
            let url = node.url.clone();
            let node = self.directory.batchers(node);
            pending.push(async move {
                let r = node
                    .deposit(BatchedDeposit {
                        record: id,
                        request: body,
                    })
                    .await;
                (url, r.map_err(|e| e.to_string()))
            });
        }
        let started = std::time::Instant::now();
        let mut stored = 0;
        let mut failures = Vec::new();
        while let Some((node, r)) = pending.next().await {
            match r {
                Ok(()) => stored += 1,
                Err(reason) => failures.push(NodeFailure { node, reason }),
            }
        }
        let needed = usize::from(self.threshold.k());
        if stored < needed {
            return Err(Failed::Unanchored(RecordError::NotEnoughAcks {
                stored,
                needed,
                failures,
            }));
        }
        for f in &failures {
            tracing::warn!(
                "share node {} did not store its share of {id}: {}",
                f.node,
                f.reason
            );
        }
        let deposited_at = started.elapsed();
        let leaf = merkle::leaf(id, patient, self.signer.address(), block.digest);
        let (root, proof) = self.anchoring.anchor(leaf).await.map_err(|e| match &e {
            // Not sent, or refused by the contract: nothing was anchored.
            RecordError::NotAnchored(_) => Failed::Unanchored(e),
            RecordError::Chain(c) if c.is_rejection() => Failed::Unanchored(e),
            // A transport error after the transaction went out, a receipt that never came, a
            // chain that did not make the anchor durable: it may be, or become, anchored.
            _ => Failed::MaybeAnchored(e),
        })?;
        let anchored_at = started.elapsed();
        let r = self.present_proof(id, &AnchorBody { root, proof }).await;
        tracing::debug!(
            record = %id,
            deposits_ms = deposited_at.as_secs_f64() * 1e3,
            anchor_ms = (anchored_at - deposited_at).as_secs_f64() * 1e3,
            proofs_ms = (started.elapsed() - anchored_at).as_secs_f64() * 1e3,
            "upload phases on the share nodes"
        );
        r.map_err(Failed::MaybeAnchored)
    }

    /// Gives every share node the record's root and proof; k must accept them (`Ok(true)`:
    /// all did). A node whose chain view lags a block answers 409 (root not anchored yet) and
    /// is asked again.
    async fn present_proof(&self, id: RecordId, body: &AnchorBody) -> Result<bool, RecordError> {
        let mut pending = FuturesUnordered::new();
        for node in &self.nodes {
            let url = node.url.clone();
            let node = self.directory.batchers(node);
            pending.push(async move {
                let mut tries = 0;
                loop {
                    let r = node
                        .present(BatchedAnchor {
                            record: id,
                            root: body.root,
                            proof: body.proof.clone(),
                        })
                        .await;
                    tries += 1;
                    if r.as_ref().is_err_and(|e| e.status() == Some(409)) && tries < 10 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    return (url, r.map_err(|e| e.to_string()));
                }
            });
        }
        let mut accepted = 0;
        let mut failures = Vec::new();
        while let Some((node, r)) = pending.next().await {
            match r {
                Ok(()) => accepted += 1,
                Err(reason) => failures.push(NodeFailure { node, reason }),
            }
        }
        let needed = usize::from(self.threshold.k());
        if accepted < needed {
            return Err(RecordError::NotEnoughProofs {
                record: id,
                accepted,
                needed,
                failures,
            });
        }
        Ok(failures.is_empty())
    }

    /// Which share nodes failed this client's reads (or its gateway's) lately.
    pub fn node_health(&self) -> &NodeHealth {
        &self.health
    }

    /// The read-only side: where records sit and which a patient has.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    async fn locate(&self, id: RecordId) -> Result<AnchoredRecord, RecordError> {
        if let Some(r) = self.cache.located(id) {
            return Ok(r);
        }
        let r = self.directory.locate(id).await?;
        self.cache.remember_located(id, &r);
        Ok(r)
    }

    /// The account `patient`'s address was issued to (none yet), remembered once set: the
    /// contract never changes it.
    async fn account_of(&self, patient: PatientAddr) -> Result<Option<Address>, RecordError> {
        if let Some(a) = self.cache.account(patient) {
            return Ok(Some(a));
        }
        let a = self.chain.patient_account(patient).await?;
        if let Some(a) = a {
            self.cache.remember_account(patient, a);
        }
        Ok(a)
    }

    /// The patient's view of one of their own records: the metadata block (size, media type,
    /// file name, author) gathered from the share nodes and checked against the record's
    /// anchored proof, without fetching the ciphertext. Share nodes release to the patient
    /// without an access transaction, so listing one's own records leaves no audit noise.
    ///
    /// # Errors
    /// [`RecordError::NotFound`] for an unknown id; share-gathering and decryption failures.
    pub async fn metadata(&self, id: RecordId) -> Result<RecordBlock, RecordError> {
        let found = self.locate(id).await?;
        let (block, _) = self.open_block(id, &found.proof, None).await?;
        Ok(block)
    }

    /// Gathers the record's shares, recombines the secret, opens the block and checks it
    /// belongs to `anchor`; returns the block and the nodes that failed on the way.
    async fn open_block(
        &self,
        id: RecordId,
        anchor: &RecordProof,
        access_tx: Option<B256>,
    ) -> Result<(RecordBlock, Vec<NodeFailure>), RecordError> {
        let (secret, sealed, failures) = self.gather(id, access_tx).await?;
        let block = RecordBlock::open(&sealed, &secret)
            .map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
        if block.record_id != id || block.digest != anchor.digest || block.patient != anchor.patient
        {
            return Err(RecordError::DigestMismatch(id));
        }
        Ok((block, failures))
    }

    /// Reads a record: access transaction (for providers), shares from the nodes in parallel
    /// (stopping at k valid ones), recombination, IPFS, decryption, digest check.
    ///
    /// # Errors
    /// One variant per failure: not found, denied, not enough valid shares (naming the nodes),
    /// ciphertext missing, digest mismatch.
    pub async fn get(&self, id: RecordId) -> Result<Retrieved, RecordError> {
        let anchor = self.locate(id).await?.proof;
        let me = self.signer.address();
        if self.account_of(anchor.patient).await? == Some(me) {
            return self.read_located(id, &anchor, None).await;
        }
        if let Some(tx) = self.cache.access(me, id, now()) {
            match self.read_located(id, &anchor, Some(tx)).await {
                Err(e @ RecordError::NotEnoughShares { .. }) => {
                    // Most likely the grant changed since (revoked, expired, or given anew):
                    // the nodes judge the access against the grant of now. A new
                    // transaction settles it, and logs a denial if there is one.
                    tracing::debug!("reused access to {id} refused, asking anew: {e}");
                    self.cache.forget_access(me, id);
                }
                other => return other,
            }
        }
        let (reason, _) = self.chain.check_access_raw(anchor.patient, me).await?;
        // Accounts the office never verified, or suspended, cannot log an attempt (the
        // contract reverts): their access transaction fails as it always did, below.
        if !matches!(
            reason,
            DenyReason::None
                | DenyReason::NotProvider
                | DenyReason::UnverifiedProvider
                | DenyReason::SuspendedProvider
        ) {
            // The refusal is certain without mining anything: log the attempt (in the node's
            // pool before this returns), then answer; a revoke is told apart from a grant
            // never given by the patient's events (at the same time as the logging), and
            // reads as no grant when they cannot be read.
            let ids = [id];
            let (logged, told) = tokio::join!(
                self.chain.log_denied_access(anchor.patient, &ids),
                self.chain.tell_revoked(anchor.patient, me, reason)
            );
            let tx = logged?;
            tracing::debug!(%tx, "denied access to {id} logged");
            let reason = told.unwrap_or_else(|e| {
                tracing::warn!("telling a revoke apart for a denied read of {id}: {e}");
                reason
            });
            return Err(RecordError::Denied(id, reason));
        }
        let sent_at = now();
        let o = self.chain.access(anchor.patient, &[id]).await?;
        if let Some((_, why)) = o.denied.first() {
            return Err(RecordError::Denied(id, *why));
        }
        self.cache.remember_access(
            me,
            id,
            Access {
                tx: o.tx.tx_hash,
                sent_at,
            },
        );
        self.read_located(id, &anchor, Some(o.tx.tx_hash)).await
    }

    /// Reads several records of one patient (charts of device readings read dozens): one
    /// access transaction per `MAX_ACCESS_BATCH` records for a provider (none for the
    /// patient), then the records, a few at a time. One result per id, in order.
    ///
    /// # Errors
    /// Per record, as [`Self::get`]; all of them fail alike when the access transaction does.
    pub async fn get_many(
        &self,
        patient: PatientAddr,
        ids: &[RecordId],
    ) -> Vec<Result<Retrieved, RecordError>> {
        use futures::StreamExt as _;
        let located = futures::future::join_all(ids.iter().map(|id| self.locate(*id))).await;
        let mut access: std::collections::HashMap<RecordId, Result<Option<B256>, RecordError>> =
            std::collections::HashMap::new();
        let me = self.signer.address();
        let is_patient = match self.account_of(patient).await {
            Ok(a) => a == Some(me),
            Err(e) => {
                let why = e.to_string();
                return ids
                    .iter()
                    .map(|_| Err(RecordError::Config(format!("chain: {why}"))))
                    .collect();
            }
        };
        let readable: Vec<RecordId> = ids
            .iter()
            .zip(&located)
            .filter(|(_, l)| matches!(l, Ok(a) if a.proof.patient == patient))
            .map(|(id, _)| *id)
            .collect();
        if is_patient {
            access.extend(readable.iter().map(|id| (*id, Ok(None))));
        } else {
            for chunk in readable.chunks(crate::chain::MAX_ACCESS_BATCH) {
                match self.chain.access(patient, chunk).await {
                    Ok(o) => {
                        for id in chunk {
                            let denied = o.denied.iter().find(|(d, _)| d == id).map(|(_, w)| *w);
                            access.insert(
                                *id,
                                match denied {
                                    Some(why) => Err(RecordError::Denied(*id, why)),
                                    None => Ok(Some(o.tx.tx_hash)),
                                },
                            );
                        }
                    }
                    Err(e) => {
                        let why = e.to_string();
                        for id in chunk {
                            access.insert(*id, Err(RecordError::Config(format!("access: {why}"))));
                        }
                    }
                }
            }
        }
        let jobs = ids.iter().copied().zip(located).map(|(id, l)| {
            let a = access.remove(&id);
            async move {
                let anchor = l?.proof;
                if anchor.patient != patient {
                    return Err(RecordError::NotFound(id));
                }
                match a {
                    Some(Ok(tx)) => self.read_located(id, &anchor, tx).await,
                    Some(Err(e)) => Err(e),
                    None => Err(RecordError::NotFound(id)),
                }
            }
        });
        futures::stream::iter(jobs).buffered(8).collect().await
    }

    /// Reads a located record behind `access_tx` (none for the patient): shares, block,
    /// ciphertext, decryption, digest check.
    async fn read_located(
        &self,
        id: RecordId,
        anchor: &RecordProof,
        access_tx: Option<B256>,
    ) -> Result<Retrieved, RecordError> {
        // A record read here before: its ciphertext is fetched while the shares are gathered.
        let early = self
            .cache
            .ciphertext(id)
            .filter(|(_, size)| *size <= PREFETCH_MAX)
            .map(|(cid, _)| {
                let ipfs = self.ipfs.clone();
                let fetch = cid.clone();
                let task = tokio::spawn(async move {
                    let mut stream = Box::pin(ipfs.cat_stream(&fetch).await?);
                    let mut chunks = Vec::new();
                    while let Some(chunk) = stream.next().await {
                        chunks.push(chunk?);
                    }
                    Ok::<_, IpfsError>(chunks)
                });
                (cid, AbortOnDrop(task))
            });
        let (block, failures) = self.open_block(id, anchor, access_tx).await?;
        self.cache.remember_ciphertext(id, &block.cid, block.size);
        let key = block
            .payload_key()
            .map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
        let size = usize::try_from(block.size)
            .map_err(|_| RecordError::Decrypt(id, format!("size {} too large", block.size)))?;
        // The size is the uploader's word: one no upload can have had would overflow the
        // envelope's length arithmetic.
        if block.size > MAX_RECORD_BYTES {
            return Err(RecordError::Decrypt(
                id,
                format!("the block claims {} bytes", block.size),
            ));
        }
        let scheme =
            Scheme::parse(&block.scheme).map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
        // Decrypt as the ciphertext streams from Kubo: memory stays near the payload's size.
        let mut opener = Opener::new(&key, scheme, size);
        let fetched = match early {
            Some((cid, mut task)) if cid == block.cid => match (&mut task.0).await {
                Ok(Ok(chunks)) => Some(chunks),
                _ => None,
            },
            _ => None,
        };
        if let Some(chunks) = fetched {
            for chunk in chunks {
                opener
                    .push(&chunk)
                    .map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
            }
        } else {
            let mut stream = match self.ipfs.cat_stream(&block.cid).await {
                Ok(s) => Box::pin(s),
                Err(IpfsError::NotFound { cid }) => {
                    return Err(RecordError::CiphertextMissing { record: id, cid });
                }
                Err(e) => return Err(e.into()),
            };
            while let Some(chunk) = stream.next().await {
                opener
                    .push(&chunk?)
                    .map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
            }
        }
        let plain = opener
            .finish()
            .map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
        let digest = block
            .digest_of(&plain)
            .map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
        if digest != anchor.digest {
            return Err(RecordError::DigestMismatch(id));
        }
        Ok(Retrieved {
            block,
            data: plain,
            failures,
        })
    }

    /// Gathers k verified shares of one group ([`super::gather`]), asking healthy nodes first
    /// and signing each node's request (addressed to that node) when it is asked.
    async fn gather(
        &self,
        id: RecordId,
        access_tx: Option<B256>,
    ) -> Result<(Secret, Vec<u8>, Vec<NodeFailure>), RecordError> {
        let urls: Vec<&str> = self.nodes.iter().map(|n| n.url.as_str()).collect();
        let order = self
            .health
            .order(&urls)
            .into_iter()
            .map(|i| self.directory.client(&self.nodes[i]))
            .collect();
        let sign_for = |node: &NodeClient| {
            let request = ShareRelease {
                recordId: id.0,
                requester: self.signer.address(),
                accessTx: access_tx.unwrap_or_default(),
                shareNode: node.node().address,
                nonce: nonce(),
                deadline: now() + 120,
            };
            let signature = sign(&self.signer, &request, &self.domain)
                .map_err(|e| RecordError::Config(e.to_string()))?;
            Ok(ReleaseBody { request, signature })
        };
        // A node whose chain view lags may not hold an access transaction sent a moment ago:
        // its refusal of one is not held against it.
        let me = self.signer.address();
        let blame_refusals = access_tx.is_none_or(|tx| {
            self.cache
                .access_sent_at(me, id, tx)
                .is_some_and(|at| now().saturating_sub(at) >= FRESH_ACCESS_SECS)
        });
        let key = k256::SecretKey::from_slice(self.signer.to_bytes().as_slice())
            .map_err(|e| RecordError::Config(format!("signing key: {e}")))?;
        let g = super::gather::gather(
            id,
            order,
            sign_for,
            usize::from(self.threshold.k()),
            &key,
            &self.health,
            blame_refusals,
        )
        .await?;
        Ok((g.secret, g.sealed, g.failures))
    }
}

/// A record read back, with the share nodes that failed along the way.
#[derive(Debug)]
pub struct Retrieved {
    /// The record's block (metadata).
    pub block: RecordBlock,
    /// The plaintext.
    pub data: Vec<u8>,
    /// Nodes that were unreachable, refused, or returned a bad share.
    pub failures: Vec<NodeFailure>,
}

//! The records client: put and get, talking to Kubo and the share nodes itself (so when the CLI
//! uses it, no server ever sees the plaintext).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::block::{RecordBlock, keyed_digest};
use super::directory::Directory;
use super::fhir::{FHIR_JSON, validate_fhir};
use crate::chain::merkle::{self, RecordProof};
use crate::chain::{ChainError, DenyReason, EhrChain, PatientAddr, RecordId, random_b256};
use crate::crypto::{AeadKey, Opener, seal_segments};
use crate::ipfs::{IpfsError, KuboClient};
use crate::shamir::{Commitments, Secret, Share, Threshold, combine, split};
use crate::share_node::{
    AnchorBody, AnchoredRecord, DepositBody, ReleaseBody, ReleasedShare, ShareDeposit,
    ShareRelease, domain, sign_deposit, sign_release,
};
use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rand_core::RngCore;
use serde::Serialize;

/// A share node: where it listens and who it is.
#[derive(Debug, Clone, Serialize)]
pub struct ShareNodeRef {
    /// Base URL.
    pub url: String,
    /// Its identity address (requests are addressed to it).
    pub address: Address,
}

impl ShareNodeRef {
    /// Asks the node at `url` for its identity.
    ///
    /// # Errors
    /// When it does not answer.
    pub async fn discover(url: &str) -> Result<Self, RecordError> {
        let v: serde_json::Value = reqwest::get(format!("{}/health", url.trim_end_matches('/')))
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| RecordError::NodeUnreachable(url.to_owned(), e.to_string()))?
            .json()
            .await
            .map_err(|e| RecordError::NodeUnreachable(url.to_owned(), e.to_string()))?;
        let address = v["node"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                RecordError::NodeUnreachable(url.to_owned(), "no node address in /health".into())
            })?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            address,
        })
    }
}

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
    /// A share node could not be reached.
    #[error("share node {0} unreachable: {1}")]
    NodeUnreachable(String, String),
    /// Anchoring the record's root failed (in a batch: for every record in it).
    #[error("anchoring failed: {0}")]
    Anchoring(String),
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
            | Self::NotEnoughAcks { .. }
            | Self::NotEnoughProofs { .. }
            | Self::NodeUnreachable(..)
            | Self::CiphertextMissing { .. }
            | Self::Anchoring(_)
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
            Self::NodeUnreachable(..) => "a share node is unreachable; try again shortly".to_owned(),
            Self::Anchoring(_) => "anchoring on the chain failed; nothing was stored".to_owned(),
            Self::Config(_) => "the records service is not configured right; it is logged for the operators".to_owned(),
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

/// Put and get records as one account.
#[derive(Debug, Clone)]
pub struct RecordsClient {
    chain: EhrChain,
    signer: PrivateKeySigner,
    ipfs: KuboClient,
    nodes: Vec<ShareNodeRef>,
    threshold: Threshold,
    domain: Eip712Domain,
    http: reqwest::Client,
    anchoring: std::sync::Arc<dyn Anchoring>,
    directory: Directory,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn nonce() -> U256 {
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    U256::from_be_bytes(b)
}

impl RecordsClient {
    /// A client signing as `signer` (the same account as `chain`'s).
    ///
    /// # Errors
    /// [`RecordError::Config`] when k exceeds the number of nodes.
    pub fn new(
        chain: EhrChain,
        signer: PrivateKeySigner,
        ipfs: KuboClient,
        nodes: Vec<ShareNodeRef>,
        k: u8,
    ) -> Result<Self, RecordError> {
        let n = u8::try_from(nodes.len())
            .map_err(|_| RecordError::Config("at most 255 share nodes".into()))?;
        let threshold = Threshold::new(k, n)
            .map_err(|e| RecordError::Config(format!("{e} (share nodes configured: {n})")))?;
        let domain = domain(chain.chain_id(), chain.address(), chain.deployment_id());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| RecordError::Config(e.to_string()))?;
        Ok(Self {
            anchoring: std::sync::Arc::new(Alone(chain.clone())),
            directory: Directory::new(chain.clone(), nodes.clone(), k, http.clone()),
            chain,
            signer,
            ipfs,
            nodes,
            threshold,
            domain,
            http,
        })
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
        if media_type == FHIR_JSON {
            validate_fhir(&payload).map_err(RecordError::InvalidFhir)?;
        }
        // The id is bound to this uploader and patient (recordIdOf(uploader, patient, salt)), and
        // share nodes take a deposit for it only signed by the uploader: nobody else can claim
        // it, whoever anchors a root with its leaf.
        let salt = random_b256();
        let id = RecordId::derive(self.signer.address(), patient, salt);
        let digest_key = random_b256();
        let digest = keyed_digest(&digest_key.0, &payload);
        let key = AeadKey::random();

        // Encrypt on a blocking thread, streaming sealed segments into the IPFS upload.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
        let enc_key = key.clone();
        let body = payload.clone();
        let encrypt = tokio::task::spawn_blocking(move || {
            seal_segments(&enc_key, &body, |seg| {
                let _ = tx.blocking_send(Ok(Bytes::from(seg)));
            });
        });
        let cid = self
            .ipfs
            .add_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?;
        let _ = encrypt.await;

        let block = RecordBlock {
            record_id: id,
            patient,
            cid: cid.clone(),
            key: hex::encode(key.as_bytes()),
            scheme: "chacha20poly1305-stream64k-v1".into(),
            digest,
            digest_key: hex::encode(digest_key),
            size: payload.len() as u64,
            media_type: media_type.to_owned(),
            file_name,
            author: self.signer.address(),
            created_at: now(),
        };
        let result = self.share_and_anchor(&block, salt).await;
        if result.is_err() {
            // No half record: without the anchor nobody can read it; drop the ciphertext too.
            if let Err(e) = self.ipfs.unpin(&cid).await {
                tracing::warn!("could not unpin {cid} after a failed upload: {e}");
            }
        }
        result.map(|()| id)
    }

    async fn share_and_anchor(&self, block: &RecordBlock, salt: B256) -> Result<(), RecordError> {
        let id = block.record_id;
        let patient = block.patient;
        let secret = Secret::random();
        let sealed = hex::encode(block.seal(&secret));
        let (shares, commitments) = split(&secret, self.threshold);
        let commitments = hex::encode(commitments.to_bytes());
        let mut pending = FuturesUnordered::new();
        for (node, share) in self.nodes.iter().zip(shares) {
            let body_share = hex::encode(share.to_bytes());
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
            let signature = sign_deposit(&self.signer, &deposit, &self.domain)
                .map_err(|e| RecordError::Config(e.to_string()))?;
            let body = DepositBody {
                deposit,
                signature,
                share: body_share,
                commitments: commitments.clone(),
                sealed_block: sealed.clone(),
            };
            let http = self.http.clone();
            let url = format!("{}/shares/{id}", node.url);
            let name = node.url.clone();
            pending.push(async move {
                let r = http.put(url).json(&body).send().await;
                (name, answer(r).await.map(|_: serde_json::Value| ()))
            });
        }
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
            return Err(RecordError::NotEnoughAcks {
                stored,
                needed,
                failures,
            });
        }
        for f in &failures {
            tracing::warn!(
                "share node {} did not store its share of {id}: {}",
                f.node,
                f.reason
            );
        }
        let leaf = merkle::leaf(id, patient, self.signer.address(), block.digest);
        let (root, proof) = self.anchoring.anchor(leaf).await?;
        self.present_proof(id, &AnchorBody { root, proof }).await
    }

    /// Gives every share node the record's root and proof; k must accept them. A node whose
    /// chain view lags a block answers 409 (root not anchored yet) and is asked again.
    async fn present_proof(&self, id: RecordId, body: &AnchorBody) -> Result<(), RecordError> {
        let mut pending = FuturesUnordered::new();
        for node in &self.nodes {
            let http = self.http.clone();
            let url = format!("{}/shares/{id}/anchor", node.url);
            let name = node.url.clone();
            pending.push(async move {
                let mut tries = 0;
                loop {
                    let r = http.post(&url).json(body).send().await;
                    let lagging = r.as_ref().is_ok_and(|r| r.status() == 409);
                    tries += 1;
                    if lagging && tries < 10 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    return (name, answer(r).await.map(|_: serde_json::Value| ()));
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
        Ok(())
    }

    /// The read-only side: where records sit and which a patient has.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    async fn locate(&self, id: RecordId) -> Result<AnchoredRecord, RecordError> {
        self.directory.locate(id).await
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
        let mut access_tx = None;
        if self.chain.patient_account(anchor.patient).await? != Some(me) {
            let o = self.chain.access(anchor.patient, &[id]).await?;
            if let Some((_, why)) = o.denied.first() {
                return Err(RecordError::Denied(id, *why));
            }
            access_tx = Some(o.tx.tx_hash);
        }
        let (block, failures) = self.open_block(id, &anchor, access_tx).await?;
        let key = block
            .payload_key()
            .map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
        let size = usize::try_from(block.size)
            .map_err(|_| RecordError::Decrypt(id, format!("size {} too large", block.size)))?;
        // Decrypt as the ciphertext streams from Kubo: memory stays near the payload's size.
        let mut opener = Opener::new(&key, size);
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

    async fn gather(
        &self,
        id: RecordId,
        access_tx: Option<B256>,
    ) -> Result<(Secret, Vec<u8>, Vec<NodeFailure>), RecordError> {
        let started = std::time::Instant::now();
        let mut pending = FuturesUnordered::new();
        for node in &self.nodes {
            let request = ShareRelease {
                recordId: id.0,
                requester: self.signer.address(),
                accessTx: access_tx.unwrap_or_default(),
                shareNode: node.address,
                nonce: nonce(),
                deadline: now() + 120,
            };
            let signature = sign_release(&self.signer, &request, &self.domain)
                .map_err(|e| RecordError::Config(e.to_string()))?;
            let http = self.http.clone();
            let url = format!("{}/shares/{id}/release", node.url);
            let name = node.url.clone();
            pending.push(async move {
                let r = http
                    .post(url)
                    .json(&ReleaseBody { request, signature })
                    .send()
                    .await;
                (name, answer::<ReleasedShare>(r).await)
            });
        }
        let needed = usize::from(self.threshold.k());
        let mut failures = Vec::new();
        // Answers grouped by (commitments, sealed block): honest nodes agree on both.
        let mut groups: Groups = HashMap::new();
        while let Some((node, r)) = pending.next().await {
            let released = match r {
                Ok(x) => x,
                Err(reason) => {
                    failures.push(NodeFailure { node, reason });
                    continue;
                }
            };
            let parsed = hex::decode(&released.commitments)
                .ok()
                .and_then(|b| Commitments::from_bytes(&b).ok())
                .zip(
                    hex::decode(&released.share)
                        .ok()
                        .and_then(|b| Share::from_bytes(&b).ok()),
                );
            let Some((commitments, share)) = parsed else {
                failures.push(NodeFailure {
                    node,
                    reason: "malformed share or commitments".into(),
                });
                continue;
            };
            if !commitments.verify(&share) {
                tracing::error!(record = %id, node = %node, "share failed verification against the commitments");
                failures.push(NodeFailure {
                    node,
                    reason: format!("share {} failed verification", share.index),
                });
                continue;
            }
            let key = (released.commitments, released.sealed_block);
            let entry = groups
                .entry(key.clone())
                .or_insert_with(|| (commitments, Vec::new()));
            entry.1.push((node, share));
            if entry.1.len() >= needed && entry.0.k() == needed {
                let shares: Vec<Share> = entry.1.iter().map(|(_, s)| s.clone()).collect();
                let secret = combine(&shares, needed)
                    .map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
                let sealed =
                    hex::decode(&key.1).map_err(|e| RecordError::Decrypt(id, e.to_string()))?;
                // Nodes in other groups disagree with k verified shares: name them.
                for (k2, (_, members)) in &groups {
                    if *k2 != key {
                        for (n, _) in members {
                            tracing::error!(record = %id, node = %n, "share node returned commitments that disagree with the majority");
                            failures.push(NodeFailure {
                                node: n.clone(),
                                reason: "commitments disagree with the majority".into(),
                            });
                        }
                    }
                }
                // Give the remaining nodes a moment, so a bad node is named even when it is a
                // little slower than the rest: half the time the quorum took (2 to 250 ms). A
                // hung or dead node then costs a read at most half again its quorum time
                // (`benches/degraded.rs`) rather than a fixed wait; one that answers later
                // is not named.
                let grace = tokio::time::sleep(
                    (started.elapsed() / 2)
                        .clamp(Duration::from_millis(2), Duration::from_millis(250)),
                );
                tokio::pin!(grace);
                loop {
                    tokio::select! {
                        _ = &mut grace => break,
                        next = pending.next() => match next {
                            None => break,
                            Some((node, Err(reason))) => failures.push(NodeFailure { node, reason }),
                            Some((node, Ok(r))) => {
                                let ok = hex::decode(&r.share).ok().and_then(|b| Share::from_bytes(&b).ok())
                                    .is_some_and(|sh| entry_verifies(&groups, &key, &sh) && r.commitments == key.0);
                                if !ok {
                                    tracing::error!(record = %id, node = %node, "share failed verification against the commitments");
                                    failures.push(NodeFailure { node, reason: "share failed verification".into() });
                                }
                            }
                        }
                    }
                }
                return Ok((secret, sealed, failures));
            }
        }
        let valid = groups.values().map(|(_, m)| m.len()).max().unwrap_or(0);
        Err(RecordError::NotEnoughShares {
            record: id,
            valid,
            needed,
            failures,
        })
    }
}

/// Answers grouped by (commitments hex, sealed block hex): the commitments and each node's share.
type Groups = HashMap<(String, String), (Commitments, Vec<(String, Share)>)>;

fn entry_verifies(groups: &Groups, key: &(String, String), share: &Share) -> bool {
    groups.get(key).is_some_and(|(c, _)| c.verify(share))
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

pub(super) async fn answer<T: serde::de::DeserializeOwned>(
    r: Result<reqwest::Response, reqwest::Error>,
) -> Result<T, String> {
    let r = r.map_err(|e| {
        if e.is_connect() {
            "unreachable (connection refused)".to_owned()
        } else if e.is_timeout() {
            "timed out".to_owned()
        } else {
            e.to_string()
        }
    })?;
    let status = r.status();
    if !status.is_success() {
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        let msg = body["error"].as_str().unwrap_or("no message").to_owned();
        return Err(format!("HTTP {}: {msg}", status.as_u16()));
    }
    r.json().await.map_err(|e| format!("bad answer: {e}"))
}

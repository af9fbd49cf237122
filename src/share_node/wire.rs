//! The share-node protocol's bodies, as both sides see them: what the records client sends
//! (deposits, proofs, release requests) and what a node answers (a released share, the public
//! part of an anchored record).

use alloy::primitives::{B256, Signature};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::auth::{ShareDeposit, ShareRelease};
use crate::chain::RecordId;
use crate::chain::merkle::RecordProof;

/// Deposit request body.
#[derive(Debug, Serialize, Deserialize)]
pub struct DepositBody {
    /// The signed message.
    pub deposit: ShareDeposit,
    /// The uploader's signature over it.
    pub signature: Signature,
    /// The share, hex.
    pub share: String,
    /// Feldman commitments, hex.
    pub commitments: String,
    /// The sealed block, hex.
    pub sealed_block: String,
}

impl DepositBody {
    /// The hash the deposit signs over its payload.
    pub fn content_hash(share: &str, commitments: &str, sealed_block: &str) -> B256 {
        let mut h = Sha256::new();
        for part in [share, commitments, sealed_block] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        B256::from(<[u8; 32]>::from(h.finalize()))
    }
}

/// Release request body.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReleaseBody {
    /// The signed message.
    pub request: ShareRelease,
    /// The requester's signature over it.
    pub signature: Signature,
}

/// Body of `POST /shares/{record}/anchor`: where the uploader anchored the record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnchorBody {
    /// The anchored root.
    pub root: B256,
    /// Sibling hashes from the record's leaf up.
    pub proof: Vec<B256>,
}

/// Most deposits in one `POST /deposits`.
pub const DEPOSITS_PER_BATCH: usize = 32;
/// Most proofs in one `POST /anchors`.
pub const ANCHORS_PER_BATCH: usize = 256;

/// Body of `POST /deposits`: several deposits in one request, each judged as `PUT
/// /shares/{record}` would judge it alone, stored in one write to disk.
#[derive(Debug, Serialize, Deserialize)]
pub struct DepositBatch {
    /// At most [`DEPOSITS_PER_BATCH`].
    pub deposits: Vec<BatchedDeposit>,
}

/// One deposit of a [`DepositBatch`].
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchedDeposit {
    /// The record (the path of `PUT /shares/{record}`).
    pub record: RecordId,
    /// Its deposit, as `PUT /shares/{record}` takes it.
    pub request: DepositBody,
}

/// Body of `POST /anchors`: several records' proofs in one request, each judged as `POST
/// /shares/{record}/anchor` would judge it alone, kept in one write to disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnchorBatch {
    /// At most [`ANCHORS_PER_BATCH`].
    pub anchors: Vec<BatchedAnchor>,
}

/// One proof of an [`AnchorBatch`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchedAnchor {
    /// The record (the path of `POST /shares/{record}/anchor`).
    pub record: RecordId,
    /// The anchored root.
    pub root: B256,
    /// Sibling hashes from the record's leaf up.
    pub proof: Vec<B256>,
}

/// A node's answer to a batch: one outcome per item, in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchAnswer {
    /// One per item of the request.
    pub results: Vec<ItemAnswer>,
}

/// What the single request would have answered: its HTTP status and, unless it succeeded,
/// its error message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemAnswer {
    /// The status the item's own request would have had.
    pub status: u16,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A record a node holds under an anchored root: public (the chain's `Anchored` events and
/// the record ids were public in earlier versions too), no share.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AnchoredRecord {
    /// The record id.
    pub record: RecordId,
    /// Its leaf's fields and proof.
    pub proof: RecordProof,
    /// When its share was deposited here, unix seconds.
    pub stored_at: u64,
}

/// The newest anchored records of a patient a node holds, and how many it holds in all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NewestRecords {
    /// Newest first (by the time each was stored on this node, then record id).
    pub records: Vec<AnchoredRecord>,
    /// All anchored records of the patient on this node.
    pub total: u64,
}

/// What a node releases.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReleasedShare {
    /// Where the record sits on chain (the reader checks it against the anchored root).
    pub proof: RecordProof,
    /// The share sealed to the requester's public key (ECIES, [`crate::crypto::seal_to`]),
    /// bound to [`share_aad`] of the request, hex: only the requester opens it.
    pub share: String,
    /// Feldman commitments, hex.
    pub commitments: String,
    /// The sealed block, hex.
    pub sealed_block: String,
}

/// What a released share is bound to: the record, the share node that released it and the
/// request's nonce. A sealed share answered to one request does not open for another.
pub fn share_aad(
    record: alloy::primitives::B256,
    node: alloy::primitives::Address,
    nonce: alloy::primitives::U256,
) -> Vec<u8> {
    let mut a = Vec::with_capacity(84);
    a.extend_from_slice(record.as_slice());
    a.extend_from_slice(node.as_slice());
    a.extend_from_slice(&nonce.to_be_bytes::<32>());
    a
}

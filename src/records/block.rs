//! The record block: the small secret metadata (CID, key, digest, ...) that is Shamir-shared.
//! It is sealed under a key derived from a uniformly random field element; that element is
//! what the share nodes hold shares of.

use alloy::primitives::{Address, B256};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::{PatientAddr, RecordId};
use crate::crypto::{AeadKey, CryptoError, open, seal};
use crate::shamir::Secret;

/// The block. `key` is secret; the block only ever travels sealed or inside this process.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordBlock {
    /// Record id.
    pub record_id: RecordId,
    /// The patient.
    pub patient: PatientAddr,
    /// CID of the ciphertext on IPFS.
    pub cid: String,
    /// The payload key, hex.
    pub key: String,
    /// Envelope scheme (nonces are derived per segment; see `crypto`).
    pub scheme: String,
    /// sha256 of the plaintext payload (also anchored on chain).
    pub digest: B256,
    /// Payload size in bytes.
    pub size: u64,
    /// Media type.
    pub media_type: String,
    /// File name, when uploaded as a file.
    pub file_name: Option<String>,
    /// Who uploaded it.
    pub author: Address,
    /// Unix seconds.
    pub created_at: u64,
}

impl std::fmt::Debug for RecordBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBlock")
            .field("record_id", &self.record_id)
            .field("cid", &self.cid)
            .field("size", &self.size)
            .field("media_type", &self.media_type)
            .finish_non_exhaustive()
    }
}

fn block_key(secret: &Secret) -> AeadKey {
    let mut h = Sha256::new();
    h.update(b"ehr-share/record-block/v1");
    h.update(secret.to_bytes());
    // A sha256 output is always 32 bytes.
    AeadKey::from_slice(&h.finalize()).unwrap_or_else(|_| AeadKey::random())
}

impl RecordBlock {
    /// Seals the block under the key derived from `secret`.
    pub fn seal(&self, secret: &Secret) -> Vec<u8> {
        // Serializing plain data to JSON cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        seal(&block_key(secret), &json)
    }

    /// Opens a sealed block.
    ///
    /// # Errors
    /// When the secret is wrong or the block was changed.
    pub fn open(sealed: &[u8], secret: &Secret) -> Result<Self, CryptoError> {
        let json = open(&block_key(secret), sealed)?;
        serde_json::from_slice(&json).map_err(|_| CryptoError::Tampered { segment: 0 })
    }

    /// The payload key.
    ///
    /// # Errors
    /// When the stored key is malformed.
    pub fn payload_key(&self) -> Result<AeadKey, CryptoError> {
        AeadKey::from_slice(&hex::decode(&self.key).map_err(|_| CryptoError::BadKey(0))?)
    }
}

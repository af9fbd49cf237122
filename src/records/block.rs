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
    /// Envelope scheme, by name (how the payload was padded; see `crypto::Scheme`).
    pub scheme: String,
    /// Keyed digest of the plaintext payload (anchored on chain): see [`keyed_digest`].
    pub digest: B256,
    /// The random key of that digest, hex; secret like `key`, so the public anchor confirms
    /// no guess about the content.
    pub digest_key: String,
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

/// HMAC-SHA256 of the payload under a per-record random key. A plain sha256 would let anyone
/// confirm a guessed low-entropy record (a FHIR value) against the public anchor.
pub fn keyed_digest(key: &[u8; 32], payload: &[u8]) -> B256 {
    use hmac::Mac;
    // HMAC takes keys of any length.
    let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(b"ehr-share/record-digest/v1");
    mac.update(payload);
    B256::from(<[u8; 32]>::from(mac.finalize().into_bytes()))
}

impl RecordBlock {
    /// The payload's digest under this block's digest key.
    ///
    /// # Errors
    /// When the stored digest key is malformed.
    pub fn digest_of(&self, payload: &[u8]) -> Result<B256, CryptoError> {
        let k: [u8; 32] = crate::strict_hex::decode(&self.digest_key)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(CryptoError::BadKey(0))?;
        Ok(keyed_digest(&k, payload))
    }

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
        AeadKey::from_slice(
            &crate::strict_hex::decode(&self.key).map_err(|_| CryptoError::BadKey(0))?,
        )
    }
}

//! Encryption at rest under one long-lived key: XChaCha20-Poly1305 with a random 192-bit nonce
//! per value (safe to draw at random for any number of values, unlike a 96-bit nonce), and
//! associated data that binds a value to where it is stored (e.g. its record id), so a value
//! moved to another key of the store fails to open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use super::{AeadKey, CryptoError};

const NONCE: usize = 24;

/// Derives a storage key from a long-term secret (e.g. a node's identity key) and a purpose
/// label, so the same secret never keys two uses.
pub fn derive_key(secret: &[u8], purpose: &str) -> AeadKey {
    let mut h = Sha256::new();
    h.update(b"ehr-share/kdf/v1\0");
    h.update((purpose.len() as u64).to_be_bytes());
    h.update(purpose.as_bytes());
    h.update(secret);
    let out: [u8; 32] = h.finalize().into();
    // 32 bytes from sha256 are always a valid key.
    AeadKey::from_slice(&out).unwrap_or_else(|_| AeadKey::random())
}

/// Seals `plain` bound to `aad`: `nonce (24) || ciphertext || tag (16)`.
pub fn seal_at_rest(key: &AeadKey, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let mut nonce = [0u8; NONCE];
    OsRng.fill_bytes(&mut nonce);
    // Encryption of an in-memory buffer with a valid key and nonce cannot fail.
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .unwrap_or_default();
    let mut out = Vec::with_capacity(NONCE + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens what [`seal_at_rest`] sealed with the same key and `aad`.
///
/// # Errors
/// [`CryptoError::Tampered`] for a wrong key, wrong `aad` or a changed value;
/// [`CryptoError::BadLength`] when too short.
pub fn open_at_rest(key: &AeadKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE + 16 {
        return Err(CryptoError::BadLength(sealed.len()));
    }
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    cipher
        .decrypt(
            XNonce::from_slice(&sealed[..NONCE]),
            Payload {
                msg: &sealed[NONCE..],
                aad,
            },
        )
        .map_err(|_| CryptoError::Tampered { segment: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_binds_key_and_place() {
        let k = derive_key(b"node secret", "share-store");
        let sealed = seal_at_rest(&k, b"record-1", b"share bytes");
        assert_eq!(
            open_at_rest(&k, b"record-1", &sealed).unwrap(),
            b"share bytes"
        );
        assert!(
            open_at_rest(&k, b"record-2", &sealed).is_err(),
            "moved value"
        );
        let other = derive_key(b"another secret", "share-store");
        assert!(
            open_at_rest(&other, b"record-1", &sealed).is_err(),
            "wrong key"
        );
        let purpose = derive_key(b"node secret", "other-purpose");
        assert!(
            open_at_rest(&purpose, b"record-1", &sealed).is_err(),
            "wrong purpose"
        );
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(open_at_rest(&k, b"record-1", &bad).is_err(), "tampered");
        assert_ne!(
            seal_at_rest(&k, b"record-1", b"share bytes"),
            sealed,
            "random nonces"
        );
    }
}

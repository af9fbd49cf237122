//! Sealing a small secret to one secp256k1 public key (ECIES): a fresh ephemeral key, ECDH
//! with the recipient's key, a key derived from the shared point and both public keys, and
//! ChaCha20-Poly1305 over the secret with associated data that binds it to its context.
//!
//! Share nodes seal each released share to the key that signed the release request (recovered
//! from its EIP-712 signature), so a proxy, a TLS-terminating load balancer or a sniffer
//! between hosts sees only ciphertext: the share opens only with the requester's private key.
//!
//! Layout: `1 (version) || ephemeral public key, compressed (33) || ciphertext || tag (16)`.
//! The key is used once, so the nonce is zero.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use k256::elliptic_curve::sec1::ToEncodedPoint;
use k256::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};

/// The layout's version byte.
const VERSION: u8 = 1;
/// Bytes added to the secret: version, ephemeral key, tag.
pub const ECIES_OVERHEAD: usize = 1 + 33 + 16;

/// Why a sealed secret does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EciesError {
    /// Too short, another version, or an ephemeral key that is no curve point.
    #[error("malformed sealed secret")]
    Malformed,
    /// Authentication failed: another recipient, another context, or tampered.
    #[error("sealed secret failed authentication (another key or context, or tampered)")]
    Tampered,
}

fn key_of(shared_x: &[u8], ephemeral: &[u8], recipient: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"ehr-share/ecies/v1\0");
    h.update(shared_x);
    h.update(ephemeral);
    h.update(recipient);
    h.finalize().into()
}

/// Seals `secret` to `recipient`, bound to `aad`.
pub fn seal_to(recipient: &PublicKey, aad: &[u8], secret: &[u8]) -> Vec<u8> {
    let (eph, eph_pub) = super::secp::ephemeral();
    let eph_pub = eph_pub.to_encoded_point(true);
    // Every k256 public key is a curve point and `eph` a valid scalar, so this cannot fail;
    // were it to, no box goes out (a default secret would be a key anyone can derive).
    let shared = super::secp::shared_x(&eph, recipient)
        .expect("a k256 public key is a curve point and an ephemeral key a valid scalar");
    let rec = recipient.to_encoded_point(true);
    let key = key_of(shared.as_slice(), eph_pub.as_bytes(), rec.as_bytes());
    let ct = ChaCha20Poly1305::new(Key::from_slice(&key))
        .encrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: secret, aad })
        .unwrap_or_default(); // encryption of a slice under a valid key cannot fail
    let mut out = Vec::with_capacity(ECIES_OVERHEAD + secret.len());
    out.push(VERSION);
    out.extend_from_slice(eph_pub.as_bytes());
    out.extend_from_slice(&ct);
    out
}

/// Opens what [`seal_to`] sealed to `recipient`'s public key, with the same `aad`.
///
/// # Errors
/// [`EciesError`] when it is malformed, for another key or context, or tampered.
pub fn open_with(recipient: &SecretKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, EciesError> {
    Recipient::new(recipient).open(aad, sealed)
}

/// A recipient's key made ready to open several sealed secrets: its public key (part of each
/// box's key derivation) is a generator multiplication, done once here rather than per box,
/// and a reader opens a share from each of k nodes per read.
pub struct Recipient {
    secret: zeroize::Zeroizing<[u8; 32]>,
    public: [u8; 33],
}

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recipient").finish_non_exhaustive()
    }
}

impl Recipient {
    /// `key` with its public key.
    pub fn new(key: &SecretKey) -> Self {
        let secret = super::secp::secret_bytes(key);
        // A k256 key is a valid scalar, so libsecp256k1 computes it; k256 would all the same.
        let public = super::secp::public_compressed(&secret).unwrap_or_else(|| {
            let mut p = [0u8; 33];
            p.copy_from_slice(key.public_key().to_encoded_point(true).as_bytes());
            p
        });
        Self { secret, public }
    }

    /// Opens what [`seal_to`] sealed to this recipient's public key, with the same `aad`.
    ///
    /// # Errors
    /// [`EciesError`] when it is malformed, for another key or context, or tampered.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, EciesError> {
        if sealed.len() < ECIES_OVERHEAD || sealed[0] != VERSION {
            return Err(EciesError::Malformed);
        }
        let eph_bytes = &sealed[1..34];
        // The ephemeral key is parsed here: `None` only when it is no compressed point.
        let shared =
            super::secp::shared_x_sec1(&self.secret, eph_bytes).ok_or(EciesError::Malformed)?;
        let key = key_of(shared.as_slice(), eph_bytes, &self.public);
        ChaCha20Poly1305::new(Key::from_slice(&key))
            .decrypt(
                Nonce::from_slice(&[0u8; 12]),
                Payload {
                    msg: &sealed[34..],
                    aad,
                },
            )
            .map_err(|_| EciesError::Tampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recipient_opens_and_only_in_its_context() {
        let me = SecretKey::random(&mut rand_core::OsRng);
        let other = SecretKey::random(&mut rand_core::OsRng);
        let sealed = seal_to(&me.public_key(), b"record 1, node 2", b"a share");
        assert_eq!(sealed.len(), ECIES_OVERHEAD + 7);
        assert!(!sealed.windows(7).any(|w| w == b"a share"));
        assert_eq!(
            open_with(&me, b"record 1, node 2", &sealed).unwrap(),
            b"a share"
        );
        assert_eq!(
            open_with(&other, b"record 1, node 2", &sealed),
            Err(EciesError::Tampered)
        );
        assert_eq!(
            open_with(&me, b"record 1, node 3", &sealed),
            Err(EciesError::Tampered)
        );
        let mut t = sealed.clone();
        *t.last_mut().unwrap() ^= 1;
        assert_eq!(
            open_with(&me, b"record 1, node 2", &t),
            Err(EciesError::Tampered)
        );
        assert_eq!(
            open_with(&me, b"", &sealed[..20]),
            Err(EciesError::Malformed)
        );
        // An ephemeral key that is no compressed point: another tag, an x at or above p.
        let mut tag = sealed.clone();
        tag[1] = 0x04;
        let mut x = sealed.clone();
        x[2..34].fill(0xff);
        for bad in [tag, x] {
            assert_eq!(
                open_with(&me, b"record 1, node 2", &bad),
                Err(EciesError::Malformed)
            );
        }
        let again = seal_to(&me.public_key(), b"record 1, node 2", b"a share");
        assert_ne!(again, sealed, "a fresh ephemeral key each time");
    }

    /// The layout did not change with the arithmetic: what is sealed here opens with the
    /// construction written in k256 alone (as the first version was), and the other way round.
    #[test]
    fn sealed_boxes_open_with_the_k256_construction_and_back() {
        fn k256_seal(recipient: &PublicKey, aad: &[u8], secret: &[u8]) -> Vec<u8> {
            let eph = SecretKey::random(&mut rand_core::OsRng);
            let eph_pub = eph.public_key().to_encoded_point(true);
            let shared = k256::ecdh::diffie_hellman(eph.to_nonzero_scalar(), recipient.as_affine());
            let rec = recipient.to_encoded_point(true);
            let key = key_of(
                shared.raw_secret_bytes(),
                eph_pub.as_bytes(),
                rec.as_bytes(),
            );
            let ct = ChaCha20Poly1305::new(Key::from_slice(&key))
                .encrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: secret, aad })
                .unwrap();
            [&[VERSION][..], eph_pub.as_bytes(), &ct].concat()
        }
        fn k256_open(recipient: &SecretKey, aad: &[u8], sealed: &[u8]) -> Vec<u8> {
            let eph = PublicKey::from_sec1_bytes(&sealed[1..34]).unwrap();
            let shared = k256::ecdh::diffie_hellman(recipient.to_nonzero_scalar(), eph.as_affine());
            let rec = recipient.public_key().to_encoded_point(true);
            let key = key_of(shared.raw_secret_bytes(), &sealed[1..34], rec.as_bytes());
            ChaCha20Poly1305::new(Key::from_slice(&key))
                .decrypt(
                    Nonce::from_slice(&[0u8; 12]),
                    Payload {
                        msg: &sealed[34..],
                        aad,
                    },
                )
                .unwrap()
        }
        for i in 0..20u8 {
            let me = SecretKey::random(&mut rand_core::OsRng);
            let secret = [i; 33];
            let ours = seal_to(&me.public_key(), b"ctx", &secret);
            assert_eq!(k256_open(&me, b"ctx", &ours), secret);
            let theirs = k256_seal(&me.public_key(), b"ctx", &secret);
            assert_eq!(open_with(&me, b"ctx", &theirs).unwrap(), secret);
            // One recipient made ready once opens box after box.
            let ready = Recipient::new(&me);
            for _ in 0..3 {
                let theirs = k256_seal(&me.public_key(), b"ctx", &secret);
                assert_eq!(ready.open(b"ctx", &theirs).unwrap(), secret);
            }
            assert_eq!(ready.open(b"ctx", &ours).unwrap(), secret);
        }
    }
}

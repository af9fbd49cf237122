//! secp256k1 through libsecp256k1 (Bitcoin Core's C library; what reth and revm use for
//! `ecrecover`) for the curve work every request pays for: recovering who signed a share-node
//! request or a device's reading, and the Diffie-Hellman of sealing a released share.
//!
//! k256 stays the type at every boundary (keys in, keys out); only the arithmetic moves. Why:
//! measured on the CI machine (release build), k256 0.13 takes 151 us to recover a key (it
//! verifies the recovered key once more, a second double-scalar multiplication) against 27 us
//! here, and 87 us for an ephemeral key and its shared point against 38 us. A share node
//! recovers a key for every deposit and every release, so this was a third of its CPU time in
//! the load bench.

use std::sync::LazyLock;

use alloy::primitives::{Address, B256, Signature};
use k256::{PublicKey, SecretKey};
use secp256k1::{All, Secp256k1};
use zeroize::{Zeroize, Zeroizing};

/// One context for the process: building one precomputes nothing (the tables are static), but
/// its randomisation (blinding of signing and key generation; ECDH and recovery need none) is
/// done once.
static CONTEXT: LazyLock<Secp256k1<All>> = LazyLock::new(|| {
    let mut ctx = Secp256k1::new();
    let mut seed = Zeroizing::new([0u8; 32]);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, seed.as_mut());
    ctx.seeded_randomize(&seed);
    ctx
});

/// libsecp256k1's form of a public key (every k256 key is a valid point).
fn to_secp(key: &PublicKey) -> Option<secp256k1::PublicKey> {
    use k256::elliptic_curve::sec1::ToEncodedPoint;
    secp256k1::PublicKey::from_slice(key.to_encoded_point(false).as_bytes()).ok()
}

/// k256's form of a public key.
fn to_k256(key: &secp256k1::PublicKey) -> Option<PublicKey> {
    PublicKey::from_sec1_bytes(&key.serialize_uncompressed()).ok()
}

/// The public key that made the recoverable ECDSA signature `(r, s, y_parity)` over
/// `prehash`; `None` when it is no valid signature. `s` must be low (callers normalise it, as
/// alloy does before recovering), as k256 requires.
fn recover(prehash: &[u8; 32], r: &[u8; 32], s: &[u8; 32], y_parity: bool) -> Option<PublicKey> {
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(r);
    compact[32..].copy_from_slice(s);
    let id = if y_parity {
        secp256k1::ecdsa::RecoveryId::One
    } else {
        secp256k1::ecdsa::RecoveryId::Zero
    };
    let sig = secp256k1::ecdsa::RecoverableSignature::from_compact(&compact, id).ok()?;
    // k256 refuses a high s; so does this (libsecp256k1 would recover it).
    let mut low = sig.to_standard();
    low.normalize_s();
    if low.serialize_compact() != compact {
        return None;
    }
    let key = CONTEXT
        .recover_ecdsa(secp256k1::Message::from_digest(*prehash), &sig)
        .ok()?;
    to_k256(&key)
}

/// The key and the address that made `sig` over `prehash`, as alloy's `recover_from_prehash`
/// finds them (a high s is read as its low twin with the other parity); `None` when `sig` is
/// no valid signature.
pub fn recover_signer(sig: &Signature, prehash: &B256) -> Option<(PublicKey, Address)> {
    let sig = sig.normalized_s();
    let key = recover(
        &prehash.0,
        &sig.r().to_be_bytes(),
        &sig.s().to_be_bytes(),
        sig.v(),
    )?;
    let address = Address::from_public_key(&k256::ecdsa::VerifyingKey::from(&key));
    Some((key, address))
}

/// `key`'s recoverable ECDSA signature over `prehash`: RFC 6979 nonces and a low s, so the
/// signature k256 (alloy's `sign_hash_sync`) makes, in less than half its time (a gateway
/// signs one request per share node for every upload and read). The two differ only for a
/// hash at or above the group order (about one in 2^128), which libsecp256k1 reduces before
/// deriving the nonce: both signatures are then valid. `None` only for a key that is no valid
/// scalar, which a k256 key never is.
pub fn sign_prehash(key: &k256::ecdsa::SigningKey, prehash: &B256) -> Option<Signature> {
    let mut sk = secp256k1::SecretKey::from_byte_array(*moved_out(key.to_bytes())).ok()?;
    let sig = CONTEXT.sign_ecdsa_recoverable(secp256k1::Message::from_digest(prehash.0), &sk);
    sk.non_secure_erase();
    let (id, rs) = sig.serialize_compact();
    Some(Signature::from_bytes_and_parity(
        &rs,
        // Ids 2 and 3 (an x of R at or above the group order) carry the parity as 0 and 1.
        matches!(
            id,
            secp256k1::ecdsa::RecoveryId::One | secp256k1::ecdsa::RecoveryId::Three
        ),
    ))
}

/// A fresh key pair: the secret (wiped when dropped) and its public key.
pub(crate) fn ephemeral() -> (Zeroizing<[u8; 32]>, PublicKey) {
    loop {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, bytes.as_mut());
        // Fails only for 0 or a value >= the group order: about one draw in 2^128.
        if let Ok(mut sk) = secp256k1::SecretKey::from_byte_array(*bytes) {
            let public = secp256k1::PublicKey::from_secret_key(&CONTEXT, &sk);
            sk.non_secure_erase();
            if let Some(public) = to_k256(&public) {
                return (bytes, public);
            }
        }
    }
}

/// The x coordinate of `secret · public` (what k256's `diffie_hellman` gives as the raw
/// shared secret), wiped when dropped; `None` for a secret that is no valid scalar.
pub(crate) fn shared_x(secret: &[u8; 32], public: &PublicKey) -> Option<Zeroizing<[u8; 32]>> {
    shared_x_with(secret, &to_secp(public)?)
}

/// [`shared_x`] with the public key as SEC1 bytes, parsed by libsecp256k1 (whose square root
/// decompresses a point faster than k256's); `None` when they are no curve point.
pub(crate) fn shared_x_sec1(secret: &[u8; 32], public: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    shared_x_with(secret, &secp256k1::PublicKey::from_slice(public).ok()?)
}

fn shared_x_with(secret: &[u8; 32], public: &secp256k1::PublicKey) -> Option<Zeroizing<[u8; 32]>> {
    let mut sk = secp256k1::SecretKey::from_byte_array(*secret).ok()?;
    let point = Zeroizing::new(secp256k1::ecdh::shared_secret_point(public, &sk));
    sk.non_secure_erase();
    let mut x = Zeroizing::new([0u8; 32]);
    x.copy_from_slice(&point[..32]);
    Some(x)
}

/// The compressed public key of `secret` (k256's `SecretKey::public_key` multiplies the
/// generator as a variable base: 75 us against 12 here, and a gateway needs its own public key
/// for every share it opens). `None` for a secret that is no valid scalar.
pub(crate) fn public_compressed(secret: &[u8; 32]) -> Option<[u8; 33]> {
    let mut sk = secp256k1::SecretKey::from_byte_array(*secret).ok()?;
    let public = secp256k1::PublicKey::from_secret_key(&CONTEXT, &sk);
    sk.non_secure_erase();
    Some(public.serialize())
}

/// The secret bytes of a k256 key, wiped when dropped.
pub(crate) fn secret_bytes(key: &SecretKey) -> Zeroizing<[u8; 32]> {
    moved_out(key.to_bytes())
}

/// A secret's bytes moved out of k256's array into one wiped when dropped (the array is wiped
/// here).
fn moved_out(mut field: k256::FieldBytes) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&field);
    field.as_mut_slice().zeroize();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::{SigningKey, VerifyingKey};
    use k256::elliptic_curve::sec1::ToEncodedPoint;

    /// Against k256 on random keys and messages: the same key recovered, nothing for a high
    /// s, a flipped parity (another key or none) or an r that is no x coordinate.
    #[test]
    fn recovers_what_k256_recovers_and_refuses_what_it_refuses() {
        for i in 0..200u32 {
            let sk = SigningKey::random(&mut rand_core::OsRng);
            let mut hash = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut hash);
            hash[0] = i as u8;
            let (sig, id) = sk.sign_prehash_recoverable(&hash).unwrap();
            let (r, s) = (sig.r().to_bytes(), sig.s().to_bytes());
            let want = VerifyingKey::recover_from_prehash(&hash, &sig, id).unwrap();
            let got = recover(&hash, &r.into(), &s.into(), id.is_y_odd()).unwrap();
            assert_eq!(got, PublicKey::from(&want));
            assert_eq!(got, PublicKey::from(sk.verifying_key()));

            let flipped = recover(&hash, &r.into(), &s.into(), !id.is_y_odd());
            assert_ne!(flipped, Some(got), "the other parity is another key");

            let high = (-*sig.s()).to_bytes();
            assert_eq!(
                recover(&hash, &r.into(), &high.into(), !id.is_y_odd()),
                None
            );
            assert!(
                k256::ecdsa::Signature::from_scalars(r, high)
                    .ok()
                    .and_then(|h| VerifyingKey::recover_from_prehash(
                        &hash,
                        &h,
                        k256::ecdsa::RecoveryId::new(!id.is_y_odd(), false)
                    )
                    .ok())
                    .is_none(),
                "k256 refuses the high s too"
            );
        }
        // About half of all r are the x of no point: the same ones fail both ways.
        let mut failed = 0;
        for x in 1..=40u8 {
            let mut r = [0u8; 32];
            r[31] = x;
            let theirs = k256::ecdsa::Signature::from_scalars(r, [1u8; 32])
                .ok()
                .and_then(|sig| {
                    let id = k256::ecdsa::RecoveryId::new(false, false);
                    VerifyingKey::recover_from_prehash(&[1; 32], &sig, id).ok()
                })
                .map(|k| PublicKey::from(&k));
            let ours = recover(&[1; 32], &r, &[1; 32], false);
            assert_eq!(ours, theirs, "r = {x}");
            failed += usize::from(ours.is_none());
        }
        assert!(failed > 5, "some r are no point ({failed} of 40)");
        assert_eq!(recover(&[1; 32], &[0; 32], &[1; 32], false), None, "r = 0");
    }

    /// As alloy (k256) recovers: low and high s, on keys alloy signs with.
    #[test]
    fn recover_signer_agrees_with_alloy() {
        use alloy::primitives::U256;
        use alloy::signers::SignerSync;
        // The order of the group.
        let n: U256 = "0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141"
            .parse()
            .unwrap();
        for i in 0..50u8 {
            let signer = alloy::signers::local::PrivateKeySigner::random();
            let hash = alloy::primitives::keccak256([i]);
            let sig = signer.sign_hash_sync(&hash).unwrap();
            let (key, address) = recover_signer(&sig, &hash).unwrap();
            assert_eq!(address, signer.address());
            assert_eq!(address, sig.recover_address_from_prehash(&hash).unwrap());
            assert_eq!(
                key,
                PublicKey::from(&sig.recover_from_prehash(&hash).unwrap())
            );
            let high = Signature::new(sig.r(), n - sig.s(), !sig.v());
            assert_eq!(
                recover_signer(&high, &hash).map(|k| k.1),
                Some(signer.address())
            );
            assert_eq!(
                high.recover_address_from_prehash(&hash).ok(),
                Some(signer.address())
            );
            let other = alloy::primitives::keccak256([i, 1]);
            assert_ne!(
                recover_signer(&sig, &other).map(|k| k.1),
                Some(signer.address())
            );
        }
    }

    /// The same signatures as alloy's k256 signer, byte for byte (both RFC 6979, low s).
    #[test]
    fn signs_exactly_as_alloy_does() {
        use alloy::signers::SignerSync;
        for i in 0..50u8 {
            let signer = alloy::signers::local::PrivateKeySigner::random();
            let hash = alloy::primitives::keccak256([i]);
            assert_eq!(
                sign_prehash(signer.credential(), &hash),
                Some(signer.sign_hash_sync(&hash).unwrap())
            );
        }
    }

    #[test]
    fn shared_x_is_k256_diffie_hellman() {
        for _ in 0..50 {
            let (secret, public) = ephemeral();
            let other = SecretKey::random(&mut rand_core::OsRng);
            let sk = SecretKey::from_slice(secret.as_ref()).unwrap();
            assert_eq!(sk.public_key(), public);
            let want =
                k256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), other.public_key().as_affine());
            let got = shared_x(&secret, &other.public_key()).unwrap();
            assert_eq!(got.as_slice(), want.raw_secret_bytes().as_slice());
            let back = shared_x(&secret_bytes(&other), &public).unwrap();
            assert_eq!(
                public_compressed(&secret_bytes(&other)).unwrap().as_slice(),
                other.public_key().to_encoded_point(true).as_bytes()
            );
            assert_eq!(back.as_slice(), got.as_slice(), "both sides agree");
        }
        assert!(
            shared_x(
                &[0; 32],
                &SecretKey::random(&mut rand_core::OsRng).public_key()
            )
            .is_none()
        );
    }
}

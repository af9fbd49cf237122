//! Web3 secret-storage (v3) keystores, written with a password KDF cost that current guidance
//! accepts: scrypt N=2^17, r=8, p=1 (about 128 MiB and a few hundred ms per unlock). The
//! `eth-keystore` writer behind alloy fixes N=2^13, 16 times cheaper to brute-force, and its
//! reader takes a file path; keystores here live in the database, so both directions are here.

use aes::cipher::{KeyIvInit, StreamCipher};
use rand_core::{OsRng, RngCore};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

/// log2 of scrypt's N for new keystores.
pub(super) const SCRYPT_LOG_N: u8 = 17;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// The largest scrypt cost a stored keystore may ask for (2^20 with r=8: 1 GiB), so that a
/// tampered row cannot make a login allocate without bound.
const MAX_LOG_N: u8 = 20;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// Why a keystore does not open.
#[derive(Debug, thiserror::Error)]
pub(super) enum KeystoreError {
    /// Wrong password (the MAC does not match).
    #[error("wrong password")]
    WrongPassword,
    /// Not a keystore this build reads.
    #[error("unreadable keystore: {0}")]
    Format(String),
}

#[derive(Deserialize)]
struct Doc {
    crypto: Crypto,
}

#[derive(Deserialize)]
struct Crypto {
    cipher: String,
    cipherparams: CipherParams,
    #[serde(with = "hex::serde")]
    ciphertext: Vec<u8>,
    kdf: String,
    kdfparams: KdfParams,
    #[serde(with = "hex::serde")]
    mac: Vec<u8>,
}

#[derive(Deserialize)]
struct CipherParams {
    #[serde(with = "hex::serde")]
    iv: Vec<u8>,
}

#[derive(Deserialize)]
struct KdfParams {
    dklen: u32,
    n: u64,
    r: u32,
    p: u32,
    #[serde(with = "hex::serde")]
    salt: Vec<u8>,
}

fn format(e: impl std::fmt::Display) -> KeystoreError {
    KeystoreError::Format(e.to_string())
}

/// Encrypts `key` under `password` into a v3 keystore (JSON text).
///
/// # Errors
/// When the KDF parameters are rejected.
pub(super) fn encrypt_keystore(
    key: &[u8; 32],
    password: &str,
    log_n: u8,
) -> Result<String, KeystoreError> {
    let mut salt = [0u8; 32];
    let mut iv = [0u8; 16];
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut iv);
    OsRng.fill_bytes(&mut id);
    let params = scrypt::Params::new(log_n, SCRYPT_R, SCRYPT_P).map_err(format)?;
    let mut derived = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password.as_bytes(), &salt, &params, derived.as_mut()).map_err(format)?;
    let mut ciphertext = key.to_vec();
    Aes128Ctr::new(derived[..16].into(), (&iv).into()).apply_keystream(&mut ciphertext);
    let mac = mac(&derived, &ciphertext);
    // A random (version 4) UUID, as the format asks.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    let h = hex::encode(id);
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
    let doc = json!({
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": { "iv": hex::encode(iv) },
            "ciphertext": hex::encode(&ciphertext),
            "kdf": "scrypt",
            "kdfparams": { "dklen": 32, "n": 1u32 << log_n, "p": SCRYPT_P, "r": SCRYPT_R, "salt": hex::encode(salt) },
            "mac": hex::encode(mac),
        },
        "id": uuid,
        "version": 3,
    });
    Ok(doc.to_string())
}

fn mac(derived: &[u8; 32], ciphertext: &[u8]) -> alloy::primitives::B256 {
    let mut input = derived[16..32].to_vec();
    input.extend_from_slice(ciphertext);
    alloy::primitives::keccak256(&input)
}

/// log2 of the scrypt N a keystore was written with.
pub(super) fn keystore_log_n(json: &str) -> Option<u8> {
    let doc: Doc = serde_json::from_str(json).ok()?;
    let n = doc.crypto.kdfparams.n;
    n.is_power_of_two()
        .then(|| u8::try_from(n.trailing_zeros()).ok())?
}

/// A keystore whose format and parameters passed every check, before any KDF work.
pub(super) struct Checked {
    crypto: Crypto,
    params: scrypt::Params,
}

/// Checks a v3 scrypt / aes-128-ctr keystore's format and parameters (cheap; no KDF run), so
/// that a stored keystore asking for another cipher, r, p or an N above 2^20 is refused before
/// it costs anything.
///
/// # Errors
/// [`KeystoreError::Format`] for anything else than such a keystore.
pub(super) fn check_keystore(json: &str) -> Result<Checked, KeystoreError> {
    let c = serde_json::from_str::<Doc>(json).map_err(format)?.crypto;
    if c.kdf != "scrypt" || c.cipher != "aes-128-ctr" || c.kdfparams.dklen != 32 {
        return Err(format(format!(
            "{} / {} / dklen {} (this build reads scrypt, aes-128-ctr, 32)",
            c.kdf, c.cipher, c.kdfparams.dklen
        )));
    }
    let k = &c.kdfparams;
    let log_n = keystore_log_n(json).filter(|&l| (1..=MAX_LOG_N).contains(&l));
    // r=8, p=1 is what every writer of these keystores uses; anything else is tampering.
    let (Some(log_n), SCRYPT_R, SCRYPT_P, 16, 32) =
        (log_n, k.r, k.p, c.cipherparams.iv.len(), c.ciphertext.len())
    else {
        return Err(format("scrypt parameters or sizes out of range"));
    };
    let params = scrypt::Params::new(log_n, k.r, k.p).map_err(format)?;
    Ok(Checked { crypto: c, params })
}

/// Opens a v3 scrypt / aes-128-ctr keystore with `password`.
///
/// # Errors
/// [`KeystoreError::WrongPassword`] when the MAC does not match, [`KeystoreError::Format`]
/// for anything else than such a keystore (or a cost above 2^20).
pub(super) fn decrypt_keystore(
    json: &str,
    password: &str,
) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let Checked { crypto: c, params } = check_keystore(json)?;
    let mut derived = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(
        password.as_bytes(),
        &c.kdfparams.salt,
        &params,
        derived.as_mut(),
    )
    .map_err(format)?;
    let want = mac(&derived, &c.ciphertext);
    let same = want.len() == c.mac.len()
        && want
            .iter()
            .zip(&c.mac)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(KeystoreError::WrongPassword);
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&c.ciphertext);
    Aes128Ctr::new(derived[..16].into(), c.cipherparams.iv.as_slice().into())
        .apply_keystream(key.as_mut());
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;

    #[test]
    fn alloy_reads_what_we_write_and_we_read_what_alloy_writes() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKeySigner::random();
        let text = encrypt_keystore(&key.to_bytes().0, "a long password", SCRYPT_LOG_N).unwrap();
        assert_eq!(keystore_log_n(&text), Some(17));
        let p = dir.path().join("k.json");
        std::fs::write(&p, &text).unwrap();
        let back = PrivateKeySigner::decrypt_keystore(&p, "a long password").unwrap();
        assert_eq!(back.address(), key.address());
        assert_eq!(
            *decrypt_keystore(&text, "a long password").unwrap(),
            key.to_bytes().0
        );
        assert!(matches!(
            decrypt_keystore(&text, "wrong password!"),
            Err(KeystoreError::WrongPassword)
        ));
        // alloy's own writer (eth-keystore, N=2^13) is read too: accounts made by older builds.
        let mut rng = rand_core::OsRng;
        let (_, name) = PrivateKeySigner::encrypt_keystore(
            dir.path(),
            &mut rng,
            key.to_bytes(),
            "pw from before",
            None,
        )
        .unwrap();
        let old = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(keystore_log_n(&old), Some(13));
        assert_eq!(
            *decrypt_keystore(&old, "pw from before").unwrap(),
            key.to_bytes().0
        );
        // A tampered cost is refused before any work.
        let huge = text.replace("\"n\":131072", "\"n\":4294967296");
        assert!(matches!(
            decrypt_keystore(&huge, "a long password"),
            Err(KeystoreError::Format(_))
        ));
    }
}

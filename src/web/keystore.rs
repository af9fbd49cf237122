//! Writes Web3 secret-storage (v3) keystores with a password KDF cost that current guidance
//! accepts: scrypt N=2^17, r=8, p=1 (about 128 MiB and a few hundred ms per unlock). The
//! `eth-keystore` writer behind alloy fixes N=2^13, 16 times cheaper to brute-force; reading
//! keeps going through alloy, which takes the parameters from the file.

use std::path::Path;

use aes::cipher::{KeyIvInit, StreamCipher};
use rand_core::{OsRng, RngCore};
use serde_json::json;
use zeroize::Zeroizing;

/// log2 of scrypt's N for new keystores.
pub(super) const SCRYPT_LOG_N: u8 = 17;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// Encrypts `key` under `password` into a v3 keystore at `path` (mode 0600, atomic).
///
/// # Errors
/// When the KDF parameters are rejected or the file cannot be written.
pub(super) fn write_keystore(
    path: &Path,
    key: &[u8; 32],
    password: &str,
    log_n: u8,
) -> Result<(), String> {
    let mut salt = [0u8; 32];
    let mut iv = [0u8; 16];
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut iv);
    OsRng.fill_bytes(&mut id);
    let params = scrypt::Params::new(log_n, SCRYPT_R, SCRYPT_P).map_err(|e| e.to_string())?;
    let mut derived = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password.as_bytes(), &salt, &params, derived.as_mut())
        .map_err(|e| e.to_string())?;
    let mut ciphertext = key.to_vec();
    Aes128Ctr::new(derived[..16].into(), (&iv).into()).apply_keystream(&mut ciphertext);
    let mut mac_input = derived[16..32].to_vec();
    mac_input.extend_from_slice(&ciphertext);
    let mac = alloy::primitives::keccak256(&mac_input);
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
    let bytes = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
    crate::fsutil::write_private(path, &bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;

    #[test]
    fn alloy_reads_what_we_write_with_the_strong_kdf() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.json");
        let key = PrivateKeySigner::random();
        write_keystore(&p, &key.to_bytes().0, "a long password", SCRYPT_LOG_N).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["crypto"]["kdfparams"]["n"], 131_072);
        assert_eq!(v["crypto"]["kdfparams"]["r"], 8);
        let back = PrivateKeySigner::decrypt_keystore(&p, "a long password").unwrap();
        assert_eq!(back.address(), key.address());
        assert!(PrivateKeySigner::decrypt_keystore(&p, "wrong password!").is_err());
    }
}

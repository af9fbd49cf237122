//! The secp256k1 work of every share-node request, as k256 0.13 (what alloy's signer and
//! `recover_from_prehash` use) does it against what ehr-share does (`ehr_share::crypto`,
//! through libsecp256k1), in the same run, alternating round by round:
//! - recovering a request's signer (a share node, for every deposit and every release);
//! - signing a request (the gateway, one per share node for every upload and every read);
//! - sealing a released share to the requester's key (ECIES: an ephemeral key and its ECDH)
//!   and opening it (the gateway, one per share gathered).
//!
//! `cargo bench --bench curve` prints the table and writes `docs/curve-bench.md`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use alloy::primitives::{B256, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use k256::elliptic_curve::sec1::ToEncodedPoint;
use k256::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};

const ROUNDS: usize = 9;
const PER_ROUND: usize = 400;

/// The ECIES of `ehr_share::crypto::seal_to`, written with k256 alone (its first version).
fn k256_seal(recipient: &PublicKey, aad: &[u8], secret: &[u8]) -> Vec<u8> {
    let eph = SecretKey::random(&mut rand_core::OsRng);
    let eph_pub = eph.public_key().to_encoded_point(true);
    let shared = k256::ecdh::diffie_hellman(eph.to_nonzero_scalar(), recipient.as_affine());
    let rec = recipient.to_encoded_point(true);
    let mut h = Sha256::new();
    h.update(b"ehr-share/ecies/v1\0");
    h.update(shared.raw_secret_bytes());
    h.update(eph_pub.as_bytes());
    h.update(rec.as_bytes());
    let key: [u8; 32] = h.finalize().into();
    let ct = ChaCha20Poly1305::new(Key::from_slice(&key))
        .encrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: secret, aad })
        .expect("seal");
    [&[1u8][..], eph_pub.as_bytes(), &ct].concat()
}

/// Its opening, written with k256 alone.
fn k256_open(recipient: &SecretKey, aad: &[u8], sealed: &[u8]) -> Vec<u8> {
    let eph = PublicKey::from_sec1_bytes(&sealed[1..34]).expect("point");
    let shared = k256::ecdh::diffie_hellman(recipient.to_nonzero_scalar(), eph.as_affine());
    let rec = recipient.public_key().to_encoded_point(true);
    let mut h = Sha256::new();
    h.update(b"ehr-share/ecies/v1\0");
    h.update(shared.raw_secret_bytes());
    h.update(&sealed[1..34]);
    h.update(rec.as_bytes());
    let key: [u8; 32] = h.finalize().into();
    ChaCha20Poly1305::new(Key::from_slice(&key))
        .decrypt(
            Nonce::from_slice(&[0u8; 12]),
            Payload {
                msg: &sealed[34..],
                aad,
            },
        )
        .expect("open")
}

fn time(mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..PER_ROUND {
        f();
    }
    t.elapsed() / PER_ROUND as u32
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median per-call times of `a` and `b`, alternating round by round.
fn versus(mut a: impl FnMut(), mut b: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..50 {
        a();
        b();
    }
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ta.push(time(&mut a));
        tb.push(time(&mut b));
    }
    (median(ta), median(tb))
}

fn main() -> std::io::Result<()> {
    let signer = PrivateKeySigner::random();
    let hash: B256 = keccak256(b"a share-node request");
    let sig = signer.sign_hash_sync(&hash).expect("sign");
    let me = SecretKey::from(signer.credential());
    let my_public = me.public_key();
    let share = [7u8; 33];
    let sealed = ehr_share::crypto::seal_to(&me.public_key(), b"aad", &share);
    assert_eq!(k256_open(&me, b"aad", &sealed), share, "one format");

    let commitments = ehr_share::shamir::split(
        &ehr_share::shamir::Secret::random(),
        ehr_share::shamir::Threshold::new(3, 5).expect("3-of-5"),
    )
    .1
    .to_bytes();

    let rows = [
        (
            "recover a request's signer (share node, every deposit and release)",
            versus(
                || {
                    black_box(sig.recover_from_prehash(black_box(&hash)).expect("recover"));
                },
                || {
                    black_box(
                        ehr_share::crypto::recover_signer(black_box(&sig), &hash).expect("recover"),
                    );
                },
            ),
        ),
        (
            "sign a request (gateway, one per share node)",
            versus(
                || {
                    black_box(signer.sign_hash_sync(black_box(&hash)).expect("sign"));
                },
                || {
                    black_box(ehr_share::crypto::sign_prehash(
                        signer.credential(),
                        black_box(&hash),
                    ));
                },
            ),
        ),
        (
            "seal a share to the requester (share node, every release)",
            versus(
                || {
                    black_box(k256_seal(&my_public, b"aad", &share));
                },
                || {
                    black_box(ehr_share::crypto::seal_to(&my_public, b"aad", &share));
                },
            ),
        ),
        (
            "check a deposit's 3 commitments are points (share node, every deposit)",
            versus(
                || {
                    black_box(
                        ehr_share::shamir::Commitments::from_bytes(black_box(&commitments))
                            .expect("points"),
                    );
                },
                || {
                    black_box(
                        ehr_share::shamir::Commitments::check_bytes(black_box(&commitments))
                            .expect("points"),
                    );
                },
            ),
        ),
        (
            "open a sealed share (gateway, every share gathered)",
            versus(
                || {
                    black_box(k256_open(&me, b"aad", &sealed));
                },
                || {
                    black_box(ehr_share::crypto::open_with(&me, b"aad", &sealed).expect("open"));
                },
            ),
        ),
    ];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut md = format!(
        "# secp256k1 per request: k256 against libsecp256k1\n\n\
         Measured by `cargo bench --bench curve` (release build, one core): the curve work of \
         a share-node request done as k256 0.13 does it (alloy's `PrivateKeySigner` and \
         `Signature::recover_from_prehash`, and the ECIES of `crypto::seal_to` written with k256 \
         alone, as it first was) against `ehr_share::crypto` (libsecp256k1 0.31 underneath, the \
         same results: the tests in `src/crypto/secp.rs` and `src/crypto/ecies.rs` check them \
         against k256's); median of {ROUNDS} rounds of {PER_ROUND} calls, the two alternating \
         round by round.\n\n\
         | operation | k256 | ehr-share | ratio |\n|---|---:|---:|---:|\n"
    );
    for (what, (theirs, ours)) in &rows {
        let line = format!(
            "| {what} | {:.1} us | {:.1} us | {:.2}x |\n",
            us(*theirs),
            us(*ours),
            ours.as_secs_f64() / theirs.as_secs_f64()
        );
        print!("{line}");
        md.push_str(&line);
    }
    md.push_str(
        "\nWhy: k256's recovery verifies the key it recovered (a second double-scalar \
         multiplication) and its multiplications are written in portable Rust; libsecp256k1 \
         recovers with one, in tuned field arithmetic; the same holds for the square root that \
         decompresses a point. A deposit costs each of the five share nodes one recovery and \
         three decompressions, and a read each of three nodes a recovery and a seal; the load \
         bench (`docs/load-bench.md`) has what this does to whole uploads and reads.\n",
    );
    std::fs::write(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/curve-bench.md"),
        md,
    )?;
    println!("wrote docs/curve-bench.md");
    Ok(())
}

//! Record encryption: a padded, segmented ChaCha20-Poly1305 envelope under a fresh key per
//! record, encryption at rest under a long-lived derived key, small secrets sealed to one
//! secp256k1 public key (ECIES), and keys as zeroizing newtypes.
//! Imports nothing of ours.

mod at_rest;
mod ecies;
mod envelope;
mod secp;

pub use at_rest::{derive_key, open_at_rest, seal_at_rest};
pub use ecies::{ECIES_OVERHEAD, EciesError, Recipient, open_with, seal_to};
pub use envelope::{
    AeadKey, CryptoError, Opener, SEGMENT, Scheme, open, padded_len, seal, seal_segments,
};
pub(crate) use secp::public_compressed;
pub use secp::{recover_signer, sign_prehash};

//! Record encryption: a padded, segmented ChaCha20-Poly1305 envelope under a fresh key per
//! record, and keys as zeroizing newtypes. Imports nothing of ours.

mod envelope;

pub use envelope::{AeadKey, CryptoError, Opener, SEGMENT, open, padded_len, seal, seal_segments};

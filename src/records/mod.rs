//! Records end to end: validate, encrypt, add to IPFS, Shamir-share the key block across share
//! nodes, anchor on chain; and back: access transaction, gather and verify shares, recombine,
//! fetch, decrypt, check the digest against the chain.
//!
//! A failed upload leaves no visible half record: the record is anchored on chain only after k
//! share nodes acknowledged, and on any failure before that the ciphertext is unpinned. Shares
//! already deposited for a never-anchored record stay on their nodes but can never be released
//! (`canRead` is false for unanchored records) and hold nothing readable without k of them.

mod block;
mod client;
mod fhir;

pub use block::{RecordBlock, keyed_digest};
pub use client::{NodeFailure, RecordError, RecordsClient, Retrieved, ShareNodeRef};
pub use fhir::{FHIR_JSON, validate_fhir};

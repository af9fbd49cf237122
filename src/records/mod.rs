//! Records end to end: validate, encrypt, add to IPFS, Shamir-share the key block across share
//! nodes, anchor the record's leaf on chain (alone, or in a Merkle root of many by the
//! gateway's batcher), give each node the proof; and back: locate the record's proof, access
//! transaction, gather and verify shares, recombine, fetch, decrypt, check the digest.
//!
//! A failed upload leaves no visible half record: the record is anchored only after k share
//! nodes acknowledged, it is readable (and listed) only once k nodes accepted its proof, and on
//! a failure before the anchor the ciphertext is unpinned. Shares deposited for a record whose
//! proof never arrived can never be released (`canRead` needs the proof to an anchored root)
//! and are collected by the nodes after an hour. A crash in between (of the gateway, or of
//! nodes while the proof goes round) is settled by the [`UploadSweeper`]: the upload is
//! marked pending (a marker pinned beside it) until every node holds the proof, and the sweeper
//! either spreads the proof or, when no node has one, unpins the ciphertext.

mod batcher;
mod block;
mod client;
mod coalesce;
mod config;
mod directory;
mod fhir;
mod gather;
mod markers;
mod node_health;
mod read_cache;
mod sweeper;

pub use batcher::{BatchSettings, Batcher, ChainSource, Durability};
pub use block::{RecordBlock, keyed_digest};
pub use client::{
    Anchoring, NodeFailure, RecordError, RecordsClient, Retrieved, ShareNodeRef, UploadError,
    anchor_root,
};
pub use config::RecordsConfig;
pub(crate) use directory::NODE_DEADLINE;
pub use directory::{Directory, ListCursor, RecordsPage};
pub use fhir::{FHIR_JSON, validate_fhir};
pub use node_health::NodeHealth;
pub use read_cache::{DEFAULT_ACCESS_REUSE, MAX_ACCESS_REUSE, ReadCache};
pub use sweeper::{SweepReport, SweepSettings, UploadSweeper};

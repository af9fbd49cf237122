//! A share node: keeps one Shamir share per record in its own crash-safe store, and releases it
//! only to a requester who signs an EIP-712 request and whom the contract allows right now.

mod auth;
mod client;
mod config;
mod server;
mod store;
pub mod tls;
mod wire;

pub use auth::{NodeRequest, ShareDeposit, ShareRelease, domain, sign};
pub use client::{NodeClient, NodeError, PAGE, ShareNodeRef};
pub use config::{ShareNodeConfigError, ShareNodeFile, ShareNodeSettings};
pub use server::{
    AnchorBody, AnchoredRecord, DepositBody, NewestRecords, NodeConfig, NodeLimits, ReleaseBody,
    ReleasedShare, open_store, router, serve,
};
pub use store::{Anchor, Binding, PublicRecord, ShareStore, StoreError, StoredShare};
pub use wire::{
    ANCHORS_PER_BATCH, AnchorBatch, BatchAnswer, BatchedAnchor, BatchedDeposit, DEPOSITS_PER_BATCH,
    DepositBatch, ItemAnswer, share_aad,
};

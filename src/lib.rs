//! ehr-share: patients, doctors and a records office share electronic health records.
//!
//! Architecture (dependencies run one way, top to bottom):
//! - [`crypto`], [`shamir`]: pure maths, no I/O, nothing of ours imported.
//! - [`chain`]: the access-control contract's client (the source of truth for who may see what).
//! - [`ipfs`]: the Kubo RPC client (ciphertext only).
//! - [`fsutil`]: private (0600/0700) files and folders; [`limits`]: keyed rate limits;
//!   [`per_runtime`]: HTTP clients built once per runtime; [`clock`]: the wall clock.
//! - [`stack`]: starts anvil and Kubo as child processes for development and tests.
//! - [`db`]: the gateway's own database (SQLite or MySQL/MariaDB): web users, sessions, API
//!   tokens, the event index.
//! - [`kind`]: one classification of errors, rendered by the API, the pages and the share nodes.
//! - [`gateway`]: the HTTP service composing the above.
//! - [`cli`]: the `ehr` command line.

mod bounded;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod fsutil;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod ingest;
pub mod ipfs;
pub mod kind;
pub mod limits;
pub mod per_runtime;
pub mod records;
pub mod serve_config;
pub mod shamir;
pub mod share_node;
pub mod stack;
pub mod strict_hex;
pub mod tls;
pub mod web;

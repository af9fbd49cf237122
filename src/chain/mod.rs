//! The access-control contract on chain: bindings (one place), domain types, a typed client
//! over alloy, and audit-event reading.

mod bindings;
mod client;
mod deadline;
mod denials;
mod errors;
mod events;
mod fold;
mod index;
pub mod merkle;
mod send_lock;
mod sent;
mod sign;
pub use sent::{RecordSent, Recorded, Ticket};
mod types;
mod unbatch;
mod voucher;

pub use bindings::EhrAccess;
pub use client::{
    AccessEvent, AccessOutcome, CONTRACT_VERSION, Deployment, EhrChain, Head, Pinned, TxOutcome,
    Writer, read_only_provider,
};
pub use deadline::{DEFAULT_RPC_DEADLINE, rpc_deadline, set_rpc_deadline};
pub use errors::ChainError;
pub use events::{AuditEvent, AuditFilter, AuditKind, AuditPage};
pub use index::{IndexStore, StoreError, StoredIndex};
pub use types::{
    DenyReason, DeviceInfo, DeviceKind, EmergencyReason, GrantInfo, GrantState, InvalidPatientAddr,
    MAX_LABEL_BYTES, PatientAddr, PendingRequest, ProviderStatus, RecordId, RootInfo, UnknownCode,
    UnknownEmergencyReason, label_bytes, label_text, random_b256,
};
pub use voucher::{PatientVoucher, sign_voucher};

/// Most records one access transaction may name (`EhrAccess.MAX_ACCESS_BATCH`).
pub const MAX_ACCESS_BATCH: usize = 32;

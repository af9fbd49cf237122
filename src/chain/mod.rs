//! The access-control contract on chain: bindings (one place), domain types, a typed client
//! over alloy, and audit-event reading.

mod bindings;
mod client;
mod errors;
mod events;
mod send_lock;
mod types;

pub use bindings::EhrAccess;
pub use client::{AccessOutcome, Deployment, EhrChain, TxOutcome};
pub use errors::ChainError;
pub use events::{AuditEvent, AuditKind};
pub use types::{
    DenyReason, GrantInfo, GrantState, InvalidPatientAddr, PatientAddr, PendingRequest,
    ProviderStatus, RecordAnchor, RecordId,
};

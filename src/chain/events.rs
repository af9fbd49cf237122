//! The contract's events as an audit trail: decoded, ordered, with their transaction hashes.

use alloy::primitives::{Address, B256};
use alloy::rpc::types::Log;
use alloy::sol_types::SolEventInterface;
use serde::{Deserialize, Serialize};

use super::bindings::EhrAccess::EhrAccessEvents as Ev;
use super::types::{DenyReason, EmergencyReason, PatientAddr, RecordId};

/// One event of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Block number.
    pub block: u64,
    /// Block time, unix seconds, when the node reported it.
    pub timestamp: Option<u64>,
    /// Transaction hash.
    pub tx_hash: Option<B256>,
    /// Position in the block.
    pub log_index: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: AuditKind,
}

/// What an audit event says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditKind {
    /// The records office role moved.
    ManagerTransferred {
        /// New records office.
        manager: Address,
    },
    /// A patient registered.
    PatientRegistered {
        /// Patient.
        patient: Option<PatientAddr>,
        /// Their account.
        account: Address,
    },
    /// A provider registered.
    ProviderRegistered {
        /// Provider.
        provider: Address,
    },
    /// The records office verified a provider.
    ProviderVerified {
        /// Provider.
        provider: Address,
    },
    /// The records office suspended a provider.
    ProviderSuspended {
        /// Provider.
        provider: Address,
    },
    /// A provider asked for access.
    AccessRequested {
        /// Patient.
        patient: Option<PatientAddr>,
        /// Provider.
        provider: Address,
    },
    /// The patient declined a request.
    RequestDeclined {
        /// Patient.
        patient: Option<PatientAddr>,
        /// Provider.
        provider: Address,
    },
    /// The patient granted access.
    GrantIssued {
        /// Patient.
        patient: Option<PatientAddr>,
        /// Provider.
        provider: Address,
        /// Expiry; `None` when open-ended.
        expires_at: Option<u64>,
    },
    /// The patient revoked access.
    GrantRevoked {
        /// Patient.
        patient: Option<PatientAddr>,
        /// Provider.
        provider: Address,
    },
    /// A Merkle root of records was anchored (it names no patient: the records under it are
    /// proven to share nodes leaf by leaf).
    Anchored {
        /// The root.
        root: B256,
        /// Who sent it.
        anchorer: Address,
        /// Records under it.
        count: u32,
    },
    /// A read was allowed.
    AccessAllowed {
        /// Patient.
        patient: Option<PatientAddr>,
        /// Provider.
        provider: Address,
        /// Record.
        record: RecordId,
        /// Through break-glass.
        emergency: bool,
    },
    /// A read was denied.
    AccessDenied {
        /// Patient (absent for unknown records).
        patient: Option<PatientAddr>,
        /// Who tried.
        provider: Address,
        /// Record.
        record: RecordId,
        /// Why.
        reason: DenyReason,
        /// The provider's denied attempts so far.
        denied_count: u32,
    },
    /// Emergency access was opened.
    BreakGlassOpened {
        /// Patient.
        patient: Option<PatientAddr>,
        /// Provider.
        provider: Address,
        /// Reason (`None` for a code this version does not know).
        reason: Option<EmergencyReason>,
        /// Until, unix seconds.
        until: u64,
        /// Opened although the patient's last word to this provider was a revoke or the end
        /// of an emergency (derived from the events before it, not stored on chain).
        overrides_revoke: bool,
    },
    /// The patient ended a provider's emergency access early.
    BreakGlassEnded {
        /// Patient.
        patient: Option<PatientAddr>,
        /// Provider.
        provider: Address,
    },
    /// A patient registered a device (a write-only delegate for readings).
    DeviceAdded {
        /// Patient.
        patient: Option<PatientAddr>,
        /// The device key's address.
        device: Address,
        /// Device kind code (see [`crate::chain::DeviceKind`]).
        kind: u8,
        /// The patient's label for it.
        label: String,
    },
    /// A patient revoked a device.
    DeviceRevoked {
        /// Patient.
        patient: Option<PatientAddr>,
        /// The device key's address.
        device: Address,
    },
    /// The records office allowed or stopped an ingestion service.
    IngestorSet {
        /// The service's account.
        ingestor: Address,
        /// Allowed now.
        allowed: bool,
    },
    /// Any other event of the contract.
    Other {
        /// Its name.
        name: String,
    },
}

impl AuditKind {
    /// Whether this is a denial (highlighted on the dashboard).
    pub fn is_denial(&self) -> bool {
        matches!(self, Self::AccessDenied { .. })
    }

    /// The patient the event is about (its first indexed topic), if any.
    pub fn patient(&self) -> Option<PatientAddr> {
        match self {
            Self::PatientRegistered { patient, .. }
            | Self::AccessRequested { patient, .. }
            | Self::RequestDeclined { patient, .. }
            | Self::GrantIssued { patient, .. }
            | Self::GrantRevoked { patient, .. }
            | Self::AccessAllowed { patient, .. }
            | Self::AccessDenied { patient, .. }
            | Self::BreakGlassOpened { patient, .. }
            | Self::BreakGlassEnded { patient, .. }
            | Self::DeviceAdded { patient, .. }
            | Self::DeviceRevoked { patient, .. } => *patient,
            _ => None,
        }
    }

    /// The provider acting in a patient-provider event, if any.
    pub fn provider(&self) -> Option<Address> {
        match self {
            Self::AccessRequested { provider, .. }
            | Self::RequestDeclined { provider, .. }
            | Self::GrantIssued { provider, .. }
            | Self::GrantRevoked { provider, .. }
            | Self::AccessAllowed { provider, .. }
            | Self::AccessDenied { provider, .. }
            | Self::BreakGlassOpened { provider, .. }
            | Self::BreakGlassEnded { provider, .. } => Some(*provider),
            _ => None,
        }
    }
}

/// Decodes a log of the contract; `None` for logs of other contracts.
pub(crate) fn decode(log: &Log) -> Option<AuditEvent> {
    let ev = Ev::decode_raw_log(log.topics(), &log.data().data).ok()?;
    let p = PatientAddr::from_key;
    let kind = match ev {
        Ev::ManagerTransferred(e) => AuditKind::ManagerTransferred { manager: e.current },
        Ev::DeviceAdded(e) => AuditKind::DeviceAdded {
            patient: p(e.patient),
            device: e.device,
            kind: e.kind,
            label: crate::chain::types::label_text(e.label),
        },
        Ev::DeviceRevoked(e) => AuditKind::DeviceRevoked {
            patient: p(e.patient),
            device: e.device,
        },
        Ev::IngestorSet(e) => AuditKind::IngestorSet {
            ingestor: e.ingestor,
            allowed: e.allowed,
        },
        Ev::ManagerTransferStarted(_) => AuditKind::Other {
            name: "ManagerTransferStarted".into(),
        },
        Ev::PatientRegistered(e) => AuditKind::PatientRegistered {
            patient: p(e.patient),
            account: e.account,
        },
        Ev::ProviderRegistered(e) => AuditKind::ProviderRegistered {
            provider: e.provider,
        },
        Ev::ProviderVerified(e) => AuditKind::ProviderVerified {
            provider: e.provider,
        },
        Ev::ProviderSuspended(e) => AuditKind::ProviderSuspended {
            provider: e.provider,
        },
        Ev::AccessRequested(e) => AuditKind::AccessRequested {
            patient: p(e.patient),
            provider: e.provider,
        },
        Ev::RequestDeclined(e) => AuditKind::RequestDeclined {
            patient: p(e.patient),
            provider: e.provider,
        },
        Ev::GrantIssued(e) => AuditKind::GrantIssued {
            patient: p(e.patient),
            provider: e.provider,
            expires_at: (e.expiresAt != u64::MAX).then_some(e.expiresAt),
        },
        Ev::GrantRevoked(e) => AuditKind::GrantRevoked {
            patient: p(e.patient),
            provider: e.provider,
        },
        Ev::Anchored(e) => AuditKind::Anchored {
            root: e.root,
            anchorer: e.anchorer,
            count: e.count,
        },
        Ev::AccessAllowed(e) => AuditKind::AccessAllowed {
            patient: p(e.patient),
            provider: e.provider,
            record: RecordId(e.recordId),
            emergency: e.emergency,
        },
        Ev::AccessDenied(e) => AuditKind::AccessDenied {
            patient: p(e.patient),
            provider: e.provider,
            record: RecordId(e.recordId),
            reason: DenyReason::try_from(e.reason).unwrap_or(DenyReason::Unknown),
            denied_count: e.deniedCount,
        },
        Ev::BreakGlassOpened(e) => AuditKind::BreakGlassOpened {
            patient: p(e.patient),
            provider: e.provider,
            reason: EmergencyReason::try_from(e.reason).ok(),
            until: e.until,
            // Set by the index from the events before it (`fold::mark_overrides`).
            overrides_revoke: false,
        },
        Ev::BreakGlassEnded(e) => AuditKind::BreakGlassEnded {
            patient: p(e.patient),
            provider: e.provider,
        },
    };
    Some(AuditEvent {
        block: log.block_number.unwrap_or_default(),
        timestamp: log.block_timestamp,
        tx_hash: log.transaction_hash,
        log_index: log.log_index.unwrap_or_default(),
        kind,
    })
}

/// Which events an audit view shows: every event, or one kind, so that grants, revokes and
/// break-glass entries are never crowded out by a flood of access attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditFilter {
    /// Everything.
    #[default]
    All,
    /// Reads allowed and denied.
    Access,
    /// Denied attempts only.
    Denials,
    /// Grants, revokes, requests and declines.
    Grants,
    /// Break-glass openings and early ends.
    Emergency,
    /// Records added.
    Records,
}

impl AuditFilter {
    /// Every filter, in the order views list them.
    pub const ALL: [Self; 6] = [
        Self::All,
        Self::Grants,
        Self::Emergency,
        Self::Access,
        Self::Denials,
        Self::Records,
    ];

    /// Whether an event of kind `k` belongs in this view.
    pub fn matches(self, k: &AuditKind) -> bool {
        use AuditKind as K;
        match self {
            Self::All => true,
            Self::Access => matches!(k, K::AccessAllowed { .. } | K::AccessDenied { .. }),
            Self::Denials => matches!(k, K::AccessDenied { .. }),
            Self::Grants => matches!(
                k,
                K::GrantIssued { .. }
                    | K::GrantRevoked { .. }
                    | K::AccessRequested { .. }
                    | K::RequestDeclined { .. }
            ),
            Self::Emergency => matches!(k, K::BreakGlassOpened { .. } | K::BreakGlassEnded { .. }),
            Self::Records => matches!(k, K::Anchored { .. }),
        }
    }

    /// Its name in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Access => "access",
            Self::Denials => "denials",
            Self::Grants => "grants",
            Self::Emergency => "emergency",
            Self::Records => "records",
        }
    }

    /// Words for people.
    pub fn label(self) -> &'static str {
        match self {
            Self::All => "Everything",
            Self::Access => "Reads",
            Self::Denials => "Denied attempts",
            Self::Grants => "Grants and requests",
            Self::Emergency => "Break-glass",
            Self::Records => "Records added",
        }
    }
}

impl std::str::FromStr for AuditFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown audit filter {s:?}: all, grants, emergency, access, denials or records"
                )
            })
    }
}

/// One page of an audit view, newest first, with the total to page through.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    /// The events of this page.
    pub events: Vec<AuditEvent>,
    /// How many events the view has in all.
    pub total: usize,
}

//! The chain layer's errors: contract reverts decoded into words, not hex blobs.

use alloy::primitives::Address;

use super::bindings::EhrAccess::EhrAccessErrors as E;
use super::types::PatientAddr;

/// Errors of the chain client.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The node could not be reached or answered with a transport error.
    #[error("chain RPC failed")]
    Rpc(#[source] alloy::transports::TransportError),
    /// Waiting for a transaction's receipt failed (transport, or the wait timed out).
    #[error("waiting for the transaction failed")]
    Pending(#[source] alloy::providers::PendingTransactionError),
    /// A transaction was sent (it is in the node's pool, or mined) and its receipt did not come
    /// within the wait. The same call again is answered by it while it is the account's last
    /// transaction (`chain::sent`).
    #[error("transaction {tx} was sent and is not confirmed yet")]
    Unconfirmed {
        /// The transaction's hash.
        tx: alloy::primitives::B256,
        /// Why the wait ended.
        #[source]
        source: alloy::providers::PendingTransactionError,
    },
    /// The RPC URL does not parse.
    #[error("bad RPC URL {url}: {problem}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The contract rejected the call with one of its custom errors.
    #[error("{0}")]
    Rejected(String),
    /// The contract rejected the call because the caller lacks the role it needs (not the
    /// records office, not a patient, not a verified provider, not allowed to anchor).
    #[error("{0}")]
    NotPermitted(String),
    /// The transaction reverted without a decodable reason.
    #[error("transaction reverted: {0}")]
    Reverted(String),
    /// No contract code at the configured address.
    #[error("no EhrAccess contract at {0} on this chain (run `ehr deploy` or set EHR_CONTRACT)")]
    NoContract(Address),
    /// The contract at the address is not the version this build speaks, or not the deployment
    /// the deployment file names (a reset chain with a redeployed contract at the same address).
    #[error("{0}")]
    WrongDeployment(String),
    /// A value read from chain did not parse.
    #[error("unexpected data from chain: {0}")]
    Decode(String),
}

impl ChainError {
    /// Turns an alloy contract error into words, decoding the contract's custom errors.
    pub(crate) fn from_contract(err: alloy::contract::Error) -> Self {
        if let Some(decoded) = err.as_decoded_interface_error::<E>() {
            let words = describe(&decoded);
            return match decoded {
                E::NotManager(_)
                | E::NotPendingManager(_)
                | E::NotPatient(_)
                | E::ProviderNotVerified(_)
                | E::InvalidVoucher(_)
                | E::VoucherExpired(_) => Self::NotPermitted(words),
                _ => Self::Rejected(words),
            };
        }
        match err {
            alloy::contract::Error::TransportError(e) if e.as_error_resp().is_none() => {
                Self::Rpc(e)
            }
            other => Self::Reverted(other.to_string()),
        }
    }

    /// The same error for another caller of one shared request (a batch of denials): the
    /// same variant and words; transport and receipt errors keep their words only.
    pub(crate) fn shared(&self) -> Self {
        match self {
            Self::Rpc(_) | Self::Pending(_) => Self::Rpc(
                alloy::transports::TransportErrorKind::custom_str(&source_words(self)),
            ),
            Self::Unconfirmed { tx, .. } => Self::Unconfirmed {
                tx: *tx,
                source: alloy::providers::PendingTransactionError::TransportError(
                    alloy::transports::TransportErrorKind::custom_str(&source_words(self)),
                ),
            },
            Self::BadUrl { url, problem } => Self::BadUrl {
                url: url.clone(),
                problem: problem.clone(),
            },
            Self::Rejected(s) => Self::Rejected(s.clone()),
            Self::NotPermitted(s) => Self::NotPermitted(s.clone()),
            Self::Reverted(s) => Self::Reverted(s.clone()),
            Self::NoContract(a) => Self::NoContract(*a),
            Self::WrongDeployment(s) => Self::WrongDeployment(s.clone()),
            Self::Decode(s) => Self::Decode(s.clone()),
        }
    }

    /// Whether this is the given kind of contract rejection (for tests and callers that branch).
    pub fn is_rejection(&self) -> bool {
        matches!(self, Self::Rejected(_) | Self::NotPermitted(_))
    }
}

impl From<alloy::transports::TransportError> for ChainError {
    fn from(e: alloy::transports::TransportError) -> Self {
        Self::Rpc(e)
    }
}

impl From<alloy::providers::PendingTransactionError> for ChainError {
    fn from(e: alloy::providers::PendingTransactionError) -> Self {
        Self::Pending(e)
    }
}

/// The words of an error's source, when it has one.
fn source_words(e: &ChainError) -> String {
    std::error::Error::source(e).map_or_else(String::new, ToString::to_string)
}

fn patient(key: u128) -> String {
    PatientAddr::from_key(key).map_or_else(|| format!("#{key}"), |a| a.to_string())
}

fn describe(e: &E) -> String {
    match e {
        E::NotManager(x) => format!("{} is not the records office (manager)", x.caller),
        E::NotPendingManager(x) => format!("{} is not the nominated records office", x.caller),
        E::ZeroAddress(_) => "the zero address is not allowed here".into(),
        E::InvalidPatientAddr(x) => format!(
            "patient address {}-{} is invalid: both parts must be non-zero",
            x.aid, x.pid
        ),
        E::PatientAddrTaken(x) => {
            format!("patient address {}-{} is already registered", x.aid, x.pid)
        }
        E::AccountHasRole(x) => format!(
            "account {} is already registered as a patient or provider",
            x.account
        ),
        E::NotPatient(x) => format!(
            "account {} is not the account of patient {}",
            x.caller,
            patient(x.patient)
        ),
        E::UnknownPatient(x) => format!("no patient is registered at {}-{}", x.aid, x.pid),
        E::UnknownProvider(x) => format!("provider {} is not registered", x.provider),
        E::ProviderNotVerified(x) => format!("provider {} is not verified", x.provider),
        E::ProviderAlreadyVerified(x) => format!("provider {} is already verified", x.provider),
        E::ProviderNotActive(x) => format!("provider {} is not pending or verified", x.provider),
        E::ExpiryInPast(x) => format!("expiry {} is not in the future", x.expiresAt),
        E::NoActiveGrant(x) => format!(
            "patient {} has no active grant for provider {}",
            patient(x.patient),
            x.provider
        ),
        E::RootExists(x) => format!("root {} is already anchored", x.root),
        E::ZeroRoot(_) => "a root must not be zero".into(),
        E::BadBatchSize(x) => format!("a root holds 1 to {} records, not {}", x.max, x.count),
        E::EmptyBatch(_) => "an access transaction needs at least one record".into(),
        E::BatchTooLarge(x) => format!(
            "{} records in one access transaction; at most {}",
            x.size, x.max
        ),
        E::InvalidVoucher(_) => {
            "the voucher was not signed by the records office for this account and address".into()
        }
        E::VoucherExpired(x) => format!("the voucher expired at {}", x.deadline),
        E::UnknownEmergencyReason(x) => format!(
            "emergency reason code {} is not one of ETREAT(1), BTG(2), ERTREAT(3), DISASTER(4), THREAT(5)",
            x.reason
        ),
        E::EmergencyLimitReached(x) => format!(
            "provider {} has used every emergency opening for patient {} in the last 24 hours; next at {}",
            x.provider,
            patient(x.patient),
            x.nextAt
        ),
        E::UnknownDeviceKind(x) => format!(
            "device kind code {} is not one of {}",
            x.kind,
            crate::chain::DeviceKind::CODES
        ),
        E::DeviceTaken(x) => format!(
            "device {} is registered already (a device key serves one patient, and a revoked one is not registered again)",
            x.device
        ),
        E::NotActiveDevice(x) => format!(
            "device {} is not an active device of patient {}",
            x.device,
            patient(x.patient)
        ),
        E::NoOpenEmergency(x) => format!(
            "provider {} has no open emergency access to patient {}",
            x.provider,
            patient(x.patient)
        ),
    }
}

impl crate::kind::Classify for ChainError {
    fn kind(&self) -> crate::kind::ErrorKind {
        use crate::kind::ErrorKind as K;
        match self {
            Self::Rpc(_)
            | Self::Pending(_)
            | Self::Unconfirmed { .. }
            | Self::NoContract(_)
            | Self::WrongDeployment(_) => K::Unavailable,
            Self::BadUrl { .. } => K::BadInput,
            Self::Rejected(_) => K::Conflict,
            Self::NotPermitted(_) => K::Denied,
            // A revert we cannot name, or data we cannot read: ours to look into.
            Self::Reverted(_) | Self::Decode(_) => K::Internal,
        }
    }

    /// Transport errors name the node's URL (which may hold an API key): never shown.
    fn public_message(&self) -> String {
        match self {
            Self::Rpc(_) | Self::Pending(_) => {
                "the chain node is not available; try again shortly".to_owned()
            }
            Self::Unconfirmed { tx, .. } => format!(
                "transaction {tx} was sent and is not confirmed yet; look it up before repeating \
                 the request (this server answers the same request, soon, with this transaction \
                 while it is the account's last; send an Idempotency-Key to be sure)"
            ),
            // The URL may hold an API key.
            Self::BadUrl { .. } => "the chain node's URL is not valid; see the log".to_owned(),
            Self::Reverted(_) | Self::Decode(_) => {
                "the chain answered in a way this server does not understand; it is logged for the operators".to_owned()
            }
            _ => self.to_string(),
        }
    }
}

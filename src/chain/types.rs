//! Domain types of the contract, parsed once and valid from then on.

use std::fmt;
use std::str::FromStr;

use alloy::primitives::{Address, B256};
use serde::{Deserialize, Serialize};

/// A patient's pseudonymous address `Addr = {AID, PID}`: area id and patient id, both issued
/// by the records office and both non-zero. Written `AID-PID`, e.g. `12-3456`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PatientAddr {
    aid: u64,
    pid: u64,
}

/// Why a string is not a valid patient address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid patient address {0:?}: expected AID-PID with two non-zero numbers, e.g. 12-3456")]
pub struct InvalidPatientAddr(pub String);

impl PatientAddr {
    /// A patient address; both parts must be non-zero (the contract rejects zero).
    ///
    /// # Errors
    /// When either part is zero.
    pub fn new(aid: u64, pid: u64) -> Result<Self, InvalidPatientAddr> {
        if aid == 0 || pid == 0 {
            return Err(InvalidPatientAddr(format!("{aid}-{pid}")));
        }
        Ok(Self { aid, pid })
    }

    /// Area id.
    pub fn aid(self) -> u64 {
        self.aid
    }

    /// Patient id.
    pub fn pid(self) -> u64 {
        self.pid
    }

    /// The contract's key: `aid << 64 | pid`.
    pub fn key(self) -> u128 {
        (u128::from(self.aid) << 64) | u128::from(self.pid)
    }

    /// The address back from a contract key; `None` for key 0 (no patient).
    pub fn from_key(key: u128) -> Option<Self> {
        // Truncation is the point: the low and high 64 bits are the two parts.
        Self::new((key >> 64) as u64, key as u64).ok()
    }
}

impl fmt::Display for PatientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.aid, self.pid)
    }
}

impl FromStr for PatientAddr {
    type Err = InvalidPatientAddr;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidPatientAddr(s.to_owned());
        let (a, p) = s.trim().split_once('-').ok_or_else(bad)?;
        Self::new(a.parse().map_err(|_| bad())?, p.parse().map_err(|_| bad())?)
    }
}

impl TryFrom<String> for PatientAddr {
    type Error = InvalidPatientAddr;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PatientAddr> for String {
    fn from(a: PatientAddr) -> Self {
        a.to_string()
    }
}

/// A record id: 32 bytes, written as 0x-prefixed hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecordId(pub B256);

impl RecordId {
    /// A fresh random record id.
    pub fn random() -> Self {
        use rand_core::RngCore;
        let mut b = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut b);
        Self(B256::from(b))
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for RecordId {
    type Err = alloy::hex::FromHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.parse()?))
    }
}

/// Mirror of the contract's `ProviderStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderStatus {
    /// Not registered.
    None,
    /// Registered, waiting for the records office.
    Pending,
    /// Verified by the records office.
    Verified,
    /// Suspended by the records office.
    Suspended,
}

impl From<u8> for ProviderStatus {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::Pending,
            2 => Self::Verified,
            3 => Self::Suspended,
            _ => Self::None,
        }
    }
}

/// Mirror of the contract's `DenyReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// Not denied.
    None,
    /// No record with that id is anchored.
    UnknownRecord,
    /// The caller is not a registered provider.
    NotProvider,
    /// The provider waits for verification.
    UnverifiedProvider,
    /// The provider is suspended.
    SuspendedProvider,
    /// The patient never granted this provider.
    NoGrant,
    /// The grant was revoked.
    Revoked,
    /// The grant expired.
    Expired,
}

impl From<u8> for DenyReason {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::UnknownRecord,
            2 => Self::NotProvider,
            3 => Self::UnverifiedProvider,
            4 => Self::SuspendedProvider,
            5 => Self::NoGrant,
            6 => Self::Revoked,
            7 => Self::Expired,
            _ => Self::None,
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "allowed",
            Self::UnknownRecord => "unknown record",
            Self::NotProvider => "not a registered provider",
            Self::UnverifiedProvider => "provider not verified yet",
            Self::SuspendedProvider => "provider suspended",
            Self::NoGrant => "no grant from the patient",
            Self::Revoked => "grant revoked",
            Self::Expired => "grant expired",
        })
    }
}

/// Where a grant stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    /// In force.
    Active,
    /// Revoked by the patient.
    Revoked,
    /// Past its expiry.
    Expired,
}

/// A grant as the contract stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantInfo {
    /// The provider granted.
    pub provider: Address,
    /// When it was (last) granted, unix seconds.
    pub granted_at: u64,
    /// When it expires; `None` when open-ended.
    pub expires_at: Option<u64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<u64>,
    /// State at the time of reading.
    pub state: GrantState,
}

impl GrantInfo {
    /// Builds the info from the stored fields, judged at chain time `now`.
    pub fn from_parts(
        provider: Address,
        granted_at: u64,
        expires_at: u64,
        revoked_at: u64,
        now: u64,
    ) -> Self {
        let state = if revoked_at != 0 {
            GrantState::Revoked
        } else if now >= expires_at {
            GrantState::Expired
        } else {
            GrantState::Active
        };
        Self {
            provider,
            granted_at,
            expires_at: (expires_at != u64::MAX).then_some(expires_at),
            revoked_at: (revoked_at != 0).then_some(revoked_at),
            state,
        }
    }
}

/// A provider's pending request for access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    /// Who asks.
    pub provider: Address,
    /// When, unix seconds.
    pub requested_at: u64,
}

/// A record anchor as stored on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordAnchor {
    /// Record id.
    pub id: RecordId,
    /// The patient it belongs to.
    pub patient: PatientAddr,
    /// sha256 of the plaintext envelope.
    pub digest: B256,
    /// Who anchored it.
    pub author: Address,
    /// When, unix seconds.
    pub anchored_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_addr_parses_and_round_trips() {
        let a: PatientAddr = "12-3456".parse().unwrap();
        assert_eq!((a.aid(), a.pid()), (12, 3456));
        assert_eq!(a.to_string(), "12-3456");
        assert_eq!(PatientAddr::from_key(a.key()), Some(a));
        assert_eq!(a.key(), (12u128 << 64) | 3456);
        for bad in ["", "12", "0-1", "1-0", "a-b", "1-2-3", "-1-2"] {
            assert!(bad.parse::<PatientAddr>().is_err(), "{bad}");
        }
        assert_eq!(PatientAddr::from_key(0), None);
    }

    #[test]
    fn grant_state_is_judged_at_chain_time() {
        let p = Address::ZERO;
        assert_eq!(
            GrantInfo::from_parts(p, 1, u64::MAX, 0, 100).state,
            GrantState::Active
        );
        assert_eq!(
            GrantInfo::from_parts(p, 1, 100, 0, 100).state,
            GrantState::Expired
        );
        assert_eq!(
            GrantInfo::from_parts(p, 1, 200, 50, 100).state,
            GrantState::Revoked
        );
        assert_eq!(
            GrantInfo::from_parts(p, 1, u64::MAX, 0, 100).expires_at,
            None
        );
    }
}

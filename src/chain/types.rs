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
    /// A fresh random record id (for ids that need not exist on chain, e.g. in tests).
    pub fn random() -> Self {
        Self(random_b256())
    }

    /// The id the contract gives the record `author` creates for `patient` with `salt`
    /// (`recordIdOf`: keccak256 of the ABI-encoded triple). Binding the id to its uploader is
    /// what stops anyone else from anchoring it first.
    pub fn derive(author: Address, patient: PatientAddr, salt: B256) -> Self {
        use alloy::sol_types::SolValue;
        let encoded = (author, patient.key(), salt).abi_encode();
        Self(alloy::primitives::keccak256(encoded))
    }
}

/// 32 random bytes from the OS.
pub fn random_b256() -> B256 {
    use rand_core::RngCore;
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    B256::from(b)
}

/// Why a provider breaks the glass: the contract's fixed list, HL7 v3 PurposeOfUse codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EmergencyReason {
    /// ETREAT: emergency treatment.
    Etreat = 1,
    /// BTG: break the glass.
    Btg = 2,
    /// ERTREAT: emergency room treatment.
    Ertreat = 3,
    /// DISASTER: disaster response.
    Disaster = 4,
    /// THREAT: a threat to the patient or others.
    Threat = 5,
}

/// Why a value is not an emergency reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown emergency reason {0:?}: one of ETREAT, BTG, ERTREAT, DISASTER, THREAT")]
pub struct UnknownEmergencyReason(pub String);

impl EmergencyReason {
    /// Every reason, in code order.
    pub const ALL: [Self; 5] = [
        Self::Etreat,
        Self::Btg,
        Self::Ertreat,
        Self::Disaster,
        Self::Threat,
    ];

    /// The code on chain.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The HL7 code, e.g. `ETREAT`.
    pub fn hl7(self) -> &'static str {
        match self {
            Self::Etreat => "ETREAT",
            Self::Btg => "BTG",
            Self::Ertreat => "ERTREAT",
            Self::Disaster => "DISASTER",
            Self::Threat => "THREAT",
        }
    }

    /// Words for people.
    pub fn description(self) -> &'static str {
        match self {
            Self::Etreat => "emergency treatment",
            Self::Btg => "break the glass",
            Self::Ertreat => "emergency room treatment",
            Self::Disaster => "disaster response",
            Self::Threat => "threat to the patient or others",
        }
    }
}

impl TryFrom<u8> for EmergencyReason {
    type Error = UnknownEmergencyReason;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        Self::ALL
            .into_iter()
            .find(|r| r.code() == v)
            .ok_or_else(|| UnknownEmergencyReason(v.to_string()))
    }
}

impl FromStr for EmergencyReason {
    type Err = UnknownEmergencyReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(n) = t.parse::<u8>() {
            return Self::try_from(n);
        }
        Self::ALL
            .into_iter()
            .find(|r| r.hl7().eq_ignore_ascii_case(t))
            .ok_or_else(|| UnknownEmergencyReason(s.to_owned()))
    }
}

impl fmt::Display for EmergencyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.hl7(), self.description())
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

impl fmt::Display for ProviderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "Not registered",
            Self::Pending => "Pending",
            Self::Verified => "Verified",
            Self::Suspended => "Suspended",
        })
    }
}

/// A code of a contract enum that this build does not know (a newer contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} code {code} from the contract")]
pub struct UnknownCode {
    /// Which enum.
    pub what: &'static str,
    /// The code.
    pub code: u8,
}

impl TryFrom<u8> for ProviderStatus {
    type Error = UnknownCode;

    fn try_from(v: u8) -> Result<Self, UnknownCode> {
        Ok(match v {
            0 => Self::None,
            1 => Self::Pending,
            2 => Self::Verified,
            3 => Self::Suspended,
            code => {
                return Err(UnknownCode {
                    what: "provider status",
                    code,
                });
            }
        })
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
    /// A denial code this build does not know (audit events of a newer contract): still a
    /// denial, never "allowed".
    Unknown,
}

impl TryFrom<u8> for DenyReason {
    type Error = UnknownCode;

    fn try_from(v: u8) -> Result<Self, UnknownCode> {
        Ok(match v {
            0 => Self::None,
            1 => Self::UnknownRecord,
            2 => Self::NotProvider,
            3 => Self::UnverifiedProvider,
            4 => Self::SuspendedProvider,
            5 => Self::NoGrant,
            6 => Self::Revoked,
            7 => Self::Expired,
            code => {
                return Err(UnknownCode {
                    what: "deny reason",
                    code,
                });
            }
        })
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
            Self::Unknown => "denied (reason unknown to this version)",
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

impl fmt::Display for GrantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Active => "Active",
            Self::Revoked => "Revoked",
            Self::Expired => "Expired",
        })
    }
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

/// An anchored Merkle root of records, as stored on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootInfo {
    /// Who anchored it.
    pub anchorer: Address,
    /// When, unix seconds.
    pub anchored_at: u64,
    /// Records under it.
    pub count: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_codes_map_one_to_one_and_unknown_ones_never_mean_allowed() {
        for code in 0..=7u8 {
            let r = DenyReason::try_from(code).unwrap();
            assert_eq!(r == DenyReason::None, code == 0, "code {code}");
        }
        for code in [8u8, 9, 255] {
            assert_eq!(
                DenyReason::try_from(code),
                Err(UnknownCode {
                    what: "deny reason",
                    code
                })
            );
            assert!(ProviderStatus::try_from(code).is_err());
        }
        assert_eq!(
            ProviderStatus::try_from(2).unwrap(),
            ProviderStatus::Verified
        );
        assert_ne!(
            DenyReason::Unknown.to_string(),
            DenyReason::None.to_string()
        );
    }

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

/// What kind of device a patient registered (the contract's `kind` codes, 1 to
/// `MAX_DEVICE_KIND`). It says what readings to expect; it grants nothing by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// A wrist-worn watch or band.
    Watch = 1,
    /// A smart ring.
    Ring = 2,
    /// A chest strap (heart rate).
    ChestStrap = 3,
    /// A pulse oximeter (SpO2).
    PulseOximeter = 4,
    /// A blood pressure cuff.
    BpCuff = 5,
    /// A glucose meter or continuous glucose monitor.
    GlucoseMeter = 6,
    /// A thermometer.
    Thermometer = 7,
    /// The patient's phone (steps, or a hub for sensors without their own key).
    Phone = 8,
}

impl DeviceKind {
    /// Every kind, in code order.
    pub const ALL: [Self; 8] = [
        Self::Watch,
        Self::Ring,
        Self::ChestStrap,
        Self::PulseOximeter,
        Self::BpCuff,
        Self::GlucoseMeter,
        Self::Thermometer,
        Self::Phone,
    ];
    /// The codes and names, for error messages.
    pub const CODES: &'static str = "watch(1), ring(2), chest-strap(3), pulse-oximeter(4), bp-cuff(5), glucose-meter(6), thermometer(7), phone(8)";

    /// The contract's code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The name used on the command line and in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Watch => "watch",
            Self::Ring => "ring",
            Self::ChestStrap => "chest-strap",
            Self::PulseOximeter => "pulse-oximeter",
            Self::BpCuff => "bp-cuff",
            Self::GlucoseMeter => "glucose-meter",
            Self::Thermometer => "thermometer",
            Self::Phone => "phone",
        }
    }
}

impl TryFrom<u8> for DeviceKind {
    type Error = UnknownCode;
    fn try_from(code: u8) -> Result<Self, UnknownCode> {
        Self::ALL
            .into_iter()
            .find(|k| k.code() == code)
            .ok_or(UnknownCode {
                what: "device kind",
                code,
            })
    }
}

impl FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown device kind {s:?}: one of {}", Self::CODES))
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A device as the contract stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// The device key's address.
    pub device: Address,
    /// Whose device it is.
    pub patient: PatientAddr,
    /// Its kind (`None`: a code this build does not know).
    pub kind: Option<DeviceKind>,
    /// When it was added, unix seconds.
    pub added_at: u64,
    /// When it was revoked, unix seconds; `None` while active.
    pub revoked_at: Option<u64>,
}

/// Longest device label, bytes (it is stored as one `bytes32`).
pub const MAX_LABEL_BYTES: usize = 32;

/// A label as the contract's `bytes32`: UTF-8, zero-padded.
///
/// # Errors
/// When it is longer than [`MAX_LABEL_BYTES`] or holds a NUL or control character.
pub fn label_bytes(label: &str) -> Result<B256, String> {
    if label.len() > MAX_LABEL_BYTES {
        return Err(format!(
            "device label is {} bytes; at most {MAX_LABEL_BYTES}",
            label.len()
        ));
    }
    if label.chars().any(char::is_control) {
        return Err("device label must not hold control characters".into());
    }
    let mut b = [0u8; 32];
    b[..label.len()].copy_from_slice(label.as_bytes());
    Ok(B256::from(b))
}

/// A `bytes32` label as text (zero padding dropped; invalid UTF-8 replaced).
pub fn label_text(label: B256) -> String {
    let end = label.0.iter().position(|&c| c == 0).unwrap_or(32);
    String::from_utf8_lossy(&label.0[..end]).into_owned()
}

//! What a device sends: a FHIR resource (an `Observation`, or a `Bundle` of them) in a signed
//! envelope, one per request or one per line of a stream.
//!
//! The device signs an EIP-712 message naming itself, the patient, the keccak-256 of the
//! resource's exact bytes, a nonce and the time of signing, under a domain bound to the
//! deployment (chain id, contract, deployment id as salt) and named apart from the share
//! nodes' domain, so no signature made for one is good for the other. The exact bytes are
//! kept (`RawValue`), so the envelope can be stored as received and checked again by anyone
//! who reads the sealed record: no JSON canonicalisation is needed.

use alloy::primitives::{Address, B256, Signature, U256, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::chain::PatientAddr;

alloy::sol! {
    /// A device's readings for one patient.
    #[derive(Debug)]
    struct DeviceReadings {
        address device;
        uint128 patient;
        /// keccak-256 of the resource's exact bytes.
        bytes32 resource;
        uint64 nonce;
        /// When the device signed, unix seconds.
        uint64 time;
    }
}

/// The ingestion domain of a deployment.
pub fn ingest_domain(chain_id: u64, contract: Address, deployment_id: B256) -> Eip712Domain {
    Eip712Domain::new(
        Some("ehr-share ingest".into()),
        Some("1".into()),
        Some(U256::from(chain_id)),
        Some(contract),
        Some(deployment_id),
    )
}

/// A signed envelope as it arrives (borrowing the resource's bytes from the request).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<'a> {
    /// The device key's address (the signature must recover to it).
    pub device: Address,
    /// The patient the readings are for.
    pub patient: PatientAddr,
    /// Unique per device (a replayed nonce is refused).
    pub nonce: u64,
    /// When the device signed, unix seconds.
    pub time: u64,
    /// 65-byte secp256k1 signature, hex (absent: refused as unsigned).
    #[serde(default)]
    pub signature: Option<String>,
    /// The FHIR resource, exactly as signed.
    #[serde(borrow)]
    pub resource: &'a RawValue,
}

/// An envelope as a device builds it (owned; for `ehr device simulate` and tests).
#[derive(Debug, Serialize)]
pub struct OwnedEnvelope {
    /// The device key's address.
    pub device: Address,
    /// The patient.
    pub patient: PatientAddr,
    /// Nonce.
    pub nonce: u64,
    /// Unix seconds.
    pub time: u64,
    /// Signature, hex with 0x.
    pub signature: String,
    /// The resource.
    pub resource: Box<RawValue>,
}

/// Why an envelope's signature is not good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not 65 bytes of hex.
    #[error("signature is not 65 bytes of hex")]
    Malformed,
    /// It recovers to another key than the device named.
    #[error("signature does not recover to device {0} (forged, or signed over other bytes)")]
    WrongSigner(Address),
}

fn message(
    device: Address,
    patient: PatientAddr,
    resource: &[u8],
    nonce: u64,
    time: u64,
) -> DeviceReadings {
    DeviceReadings {
        device,
        patient: patient.key(),
        resource: keccak256(resource),
        nonce,
        time,
    }
}

impl Envelope<'_> {
    /// Checks that the device signed exactly this patient, resource, nonce and time.
    ///
    /// # Errors
    /// [`SignatureError`] when it did not.
    pub fn verify(&self, domain: &Eip712Domain) -> Result<(), SignatureError> {
        let s = self.signature.as_deref().unwrap_or_default();
        let hex = s.strip_prefix("0x").unwrap_or(s);
        let bytes = hex::decode(hex).map_err(|_| SignatureError::Malformed)?;
        let sig = Signature::try_from(bytes.as_slice()).map_err(|_| SignatureError::Malformed)?;
        let hash = message(
            self.device,
            self.patient,
            self.resource.get().as_bytes(),
            self.nonce,
            self.time,
        )
        .eip712_signing_hash(domain);
        match crate::crypto::recover_signer(&sig, &hash) {
            Some((_, a)) if a == self.device => Ok(()),
            _ => Err(SignatureError::WrongSigner(self.device)),
        }
    }
}

/// Signs `resource` (JSON text, sent as is) for `patient` as the device `key`.
///
/// # Errors
/// When `resource` is not JSON, or signing fails.
pub fn sign_envelope(
    key: &PrivateKeySigner,
    domain: &Eip712Domain,
    patient: PatientAddr,
    resource: String,
    nonce: u64,
    time: u64,
) -> Result<OwnedEnvelope, String> {
    let resource = RawValue::from_string(resource).map_err(|e| format!("resource: {e}"))?;
    let hash = message(
        key.address(),
        patient,
        resource.get().as_bytes(),
        nonce,
        time,
    )
    .eip712_signing_hash(domain);
    let sig = key.sign_hash_sync(&hash).map_err(|e| e.to_string())?;
    Ok(OwnedEnvelope {
        device: key.address(),
        patient,
        nonce,
        time,
        signature: format!("0x{}", hex::encode(sig.as_bytes())),
        resource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> Eip712Domain {
        ingest_domain(31337, Address::repeat_byte(7), B256::repeat_byte(9))
    }

    fn signed(resource: &str) -> String {
        let key = PrivateKeySigner::random();
        let p = PatientAddr::new(1, 1001).unwrap();
        serde_json::to_string(&sign_envelope(&key, &domain(), p, resource.into(), 5, 100).unwrap())
            .unwrap()
    }

    #[test]
    fn a_signed_envelope_verifies_with_its_exact_bytes() {
        let line = signed(r#"{"resourceType":"Observation",  "status":"final"}"#);
        let e: Envelope<'_> = serde_json::from_str(&line).unwrap();
        assert_eq!(e.verify(&domain()), Ok(()));
        assert_eq!(
            e.resource.get(),
            r#"{"resourceType":"Observation",  "status":"final"}"#,
            "the bytes are kept as signed, spaces and all"
        );
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let line = signed(r#"{"resourceType":"Observation","valueQuantity":{"value":72}}"#);
        for (from, to) in [
            ("\"value\":72", "\"value\":172"),
            ("\"nonce\":5", "\"nonce\":6"),
            ("\"time\":100", "\"time\":101"),
            ("\"patient\":\"1-1001\"", "\"patient\":\"1-1002\""),
        ] {
            let changed = line.replace(from, to);
            assert_ne!(changed, line, "{from} is in the line");
            let e: Envelope<'_> = serde_json::from_str(&changed).unwrap();
            assert!(
                matches!(e.verify(&domain()), Err(SignatureError::WrongSigner(_))),
                "{from} -> {to}"
            );
        }
        let e: Envelope<'_> = serde_json::from_str(&line).unwrap();
        let other = ingest_domain(1, Address::repeat_byte(7), B256::repeat_byte(9));
        assert!(e.verify(&other).is_err(), "another chain's domain");
    }

    #[test]
    fn unknown_fields_and_bad_signatures_are_refused() {
        let line = signed(r#"{"resourceType":"Observation"}"#);
        let extra = line.replacen('{', r#"{"extra":1,"#, 1);
        assert!(serde_json::from_str::<Envelope<'_>>(&extra).is_err());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let sig = v["signature"].as_str().unwrap();
        let bad = line.replace(sig, "0x1234");
        let e: Envelope<'_> = serde_json::from_str(&bad).unwrap();
        assert_eq!(e.verify(&domain()), Err(SignatureError::Malformed));
    }
}

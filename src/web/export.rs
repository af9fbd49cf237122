//! A patient's audit trail for other systems: a FHIR R4 `Bundle` of `AuditEvent`s (for an
//! EHR or a patient portal) and CSV (for a spreadsheet).
//!
//! Each contract event becomes one `AuditEvent`: its actor as the requesting agent (a
//! provider's or office's account as `urn:ethereum:` identifier, the patient by their `Addr`),
//! the contract on its chain as the observing source, the patient and the record as entities,
//! the transaction as an entity too, and a denial as outcome 4 with its reason. The codes
//! come from the bindings of the R4 resource: `audit-event-type` (`rest`) with
//! `restful-interaction` subtypes for reads and record creation, DICOM DCM codes for
//! security events, and v3 `ActReason` for break-glass purposes.

use alloy::primitives::Address;
use serde_json::{Value, json};

use super::view::describe;
use crate::chain::{AuditEvent, AuditKind, PatientAddr};

/// The system that observed the events: the contract on its chain.
#[derive(Debug, Clone, Copy)]
pub(super) struct Observer {
    /// The chain id.
    pub(super) chain_id: u64,
    /// The contract.
    pub(super) contract: Address,
}

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL: &str = "http://hl7.org/fhir/restful-interaction";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
/// Identifier system of patient addresses (`AID-PID`).
const PATIENT_SYSTEM: &str = "urn:ehr-share:patient-addr";
/// Identifier system of record ids.
const RECORD_SYSTEM: &str = "urn:ehr-share:record";
/// Identifier system of transactions.
const TX_SYSTEM: &str = "urn:ehr-share:ethereum-tx";

/// An instant in FHIR's form (UTC, seconds).
fn instant(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn account(a: Address) -> Value {
    json!({ "identifier": { "system": "urn:ietf:rfc:3986", "value": format!("urn:ethereum:{a:#x}") } })
}

fn patient_ref(p: PatientAddr) -> Value {
    json!({ "identifier": { "system": PATIENT_SYSTEM, "value": p.to_string() } })
}

/// The event's type, subtype (if any) and action code.
fn classify(k: &AuditKind) -> (Value, Option<Value>, &'static str) {
    let rest = |sub: &str| {
        (
            json!({ "system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation" }),
            Some(json!({ "system": RESTFUL, "code": sub, "display": sub })),
        )
    };
    let dcm = |code: &str, display: &str| {
        (
            json!({ "system": DCM, "code": code, "display": display }),
            None,
        )
    };
    let ((t, sub), action) = match k {
        AuditKind::AccessAllowed { .. } | AuditKind::AccessDenied { .. } => (rest("read"), "R"),
        AuditKind::Anchored { .. } => (rest("create"), "C"),
        AuditKind::GrantIssued { .. } | AuditKind::AccessRequested { .. } => {
            (dcm("110136", "Security Roles Changed"), "C")
        }
        AuditKind::GrantRevoked { .. } | AuditKind::RequestDeclined { .. } => {
            (dcm("110136", "Security Roles Changed"), "D")
        }
        AuditKind::BreakGlassOpened { .. } => (dcm("110113", "Security Alert"), "E"),
        AuditKind::BreakGlassEnded { .. } => (dcm("110136", "Security Roles Changed"), "U"),
        AuditKind::DeviceAdded { .. } => (dcm("110136", "Security Roles Changed"), "C"),
        AuditKind::DeviceRevoked { .. } => (dcm("110136", "Security Roles Changed"), "D"),
        AuditKind::IngestorSet { .. } => (dcm("110137", "User Security Attributes Changed"), "U"),
        AuditKind::PatientRegistered { .. } | AuditKind::ProviderRegistered { .. } => {
            (dcm("110137", "User Security Attributes Changed"), "C")
        }
        AuditKind::ProviderVerified { .. }
        | AuditKind::ProviderSuspended { .. }
        | AuditKind::ManagerTransferred { .. } => {
            (dcm("110137", "User Security Attributes Changed"), "U")
        }
        AuditKind::Other { .. } => (dcm("110100", "Application Activity"), "E"),
    };
    (t, sub, action)
}

/// Who acted: providers act on their requests, reads and break-glass; patients on grants,
/// revokes, declines and ending an emergency; accounts on registration.
fn actor(k: &AuditKind) -> Value {
    let by_patient =
        |p: &Option<PatientAddr>| p.map_or_else(|| json!({ "display": "patient" }), patient_ref);
    match k {
        AuditKind::GrantIssued { patient, .. }
        | AuditKind::GrantRevoked { patient, .. }
        | AuditKind::RequestDeclined { patient, .. }
        | AuditKind::BreakGlassEnded { patient, .. }
        | AuditKind::DeviceAdded { patient, .. }
        | AuditKind::DeviceRevoked { patient, .. } => by_patient(patient),
        AuditKind::AccessAllowed { provider, .. }
        | AuditKind::AccessDenied { provider, .. }
        | AuditKind::AccessRequested { provider, .. }
        | AuditKind::BreakGlassOpened { provider, .. }
        | AuditKind::ProviderRegistered { provider } => account(*provider),
        AuditKind::PatientRegistered { account: a, .. } => account(*a),
        AuditKind::Anchored { anchorer, .. } => account(*anchorer),
        AuditKind::ProviderVerified { .. }
        | AuditKind::ProviderSuspended { .. }
        | AuditKind::ManagerTransferred { .. }
        | AuditKind::IngestorSet { .. } => json!({ "display": "records office" }),
        AuditKind::Other { .. } => json!({ "display": "unknown" }),
    }
}

/// One `AuditEvent` resource.
fn audit_event(e: &AuditEvent, observer: Observer, fallback_time: u64) -> Value {
    let k = &e.kind;
    let (event_type, subtype, action) = classify(k);
    let (name, _, details) = describe(k);
    let mut r = json!({
        "resourceType": "AuditEvent",
        "id": format!("{}-{}", e.block, e.log_index),
        "type": event_type,
        "action": action,
        "recorded": instant(e.timestamp.unwrap_or(fallback_time)),
        "outcome": if k.is_denial() { "4" } else { "0" },
        "outcomeDesc": if details.is_empty() { name.to_owned() } else { format!("{name}: {details}") },
        "agent": [{ "who": actor(k), "requestor": true }],
        "source": {
            "observer": {
                "identifier": {
                    "system": "urn:ietf:rfc:3986",
                    "value": format!("urn:ethereum:chain:{}:{:#x}", observer.chain_id, observer.contract),
                },
                "display": "EhrAccess contract",
            },
        },
    });
    if let Some(sub) = subtype {
        r["subtype"] = json!([sub]);
    }
    if let AuditKind::BreakGlassOpened {
        reason: Some(reason),
        ..
    } = k
    {
        r["purposeOfEvent"] = json!([{ "coding": [{ "system": ACT_REASON, "code": reason.hl7(), "display": reason.to_string() }] }]);
    }
    let mut entities = Vec::new();
    if let Some(p) = k.patient() {
        entities.push(json!({
            "what": patient_ref(p),
            "type": { "system": ENTITY_TYPE, "code": "1", "display": "Person" },
            "role": { "system": OBJECT_ROLE, "code": "1", "display": "Patient" },
        }));
    }
    if let AuditKind::AccessAllowed { record, .. } | AuditKind::AccessDenied { record, .. } = k {
        entities.push(json!({
            "what": { "identifier": { "system": RECORD_SYSTEM, "value": record.to_string() } },
            "type": { "system": ENTITY_TYPE, "code": "2", "display": "System Object" },
        }));
    }
    if let Some(tx) = e.tx_hash {
        entities.push(json!({
            "what": { "identifier": { "system": TX_SYSTEM, "value": tx.to_string() } },
            "type": { "system": ENTITY_TYPE, "code": "2", "display": "System Object" },
            "description": format!("transaction in block {}", e.block),
        }));
    }
    if !entities.is_empty() {
        r["entity"] = Value::Array(entities);
    }
    r
}

/// A stable identity for an event's resource: a UUID (RFC 9562 version 8, its bits from a
/// SHA-256 of the chain, contract, block and log index), so two downloads of the same event
/// name the same resource.
fn full_url(e: &AuditEvent, observer: Observer) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(observer.chain_id.to_be_bytes());
    h.update(observer.contract.as_slice());
    h.update(e.block.to_be_bytes());
    h.update(e.log_index.to_be_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.finalize()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// The events as a FHIR R4 `Bundle` of type `collection`, made at `now`.
pub(super) fn fhir_bundle(events: &[AuditEvent], observer: Observer, now: u64) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": instant(now),
        "entry": events.iter().map(|e| json!({
            "fullUrl": full_url(e, observer),
            "resource": audit_event(e, observer, now),
        })).collect::<Vec<_>>(),
    })
}

/// A cell that a spreadsheet would run as a formula gets a leading quote (OWASP's advice
/// against CSV injection); nothing else changes.
fn cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

/// The events as CSV with a header row, RFC 4180 quoting.
///
/// # Errors
/// Never in practice (writes to memory); a CSV writer error otherwise.
pub(super) fn csv(events: &[AuditEvent]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "time_utc",
        "block",
        "log_index",
        "tx_hash",
        "event",
        "who",
        "details",
        "denied",
    ])?;
    for e in events {
        let (name, who, details) = describe(&e.kind);
        w.write_record([
            e.timestamp.map(instant).unwrap_or_default(),
            e.block.to_string(),
            e.log_index.to_string(),
            e.tx_hash.map(|h| h.to_string()).unwrap_or_default(),
            cell(name),
            cell(&who),
            cell(&details),
            e.kind.is_denial().to_string(),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{DenyReason, EmergencyReason, RecordId};
    use alloy::primitives::B256;

    fn events() -> Vec<AuditEvent> {
        let p: PatientAddr = "1-1001".parse().unwrap();
        let doc = Address::repeat_byte(0x70);
        let record = RecordId(B256::repeat_byte(0x1f));
        let ev = |block, kind| AuditEvent {
            block,
            timestamp: Some(1_795_545_744 + block),
            tx_hash: Some(B256::repeat_byte(block as u8)),
            log_index: 0,
            kind,
        };
        vec![
            ev(
                1,
                AuditKind::GrantIssued {
                    patient: Some(p),
                    provider: doc,
                    expires_at: None,
                },
            ),
            ev(
                2,
                AuditKind::AccessAllowed {
                    patient: Some(p),
                    provider: doc,
                    record,
                    emergency: false,
                },
            ),
            ev(
                3,
                AuditKind::AccessDenied {
                    patient: Some(p),
                    provider: doc,
                    record,
                    reason: DenyReason::Revoked,
                    denied_count: 1,
                },
            ),
            ev(
                4,
                AuditKind::BreakGlassOpened {
                    patient: Some(p),
                    provider: doc,
                    reason: Some(EmergencyReason::Btg),
                    until: 1_795_549_344,
                    overrides_revoke: true,
                },
            ),
        ]
    }

    #[test]
    fn fhir_bundle_has_what_r4_requires() {
        let observer = Observer {
            chain_id: 31_337,
            contract: Address::repeat_byte(0xee),
        };
        let b = fhir_bundle(&events(), observer, 1_795_600_000);
        assert_eq!(b["resourceType"], "Bundle");
        assert_eq!(b["type"], "collection");
        assert_eq!(b["timestamp"], "2026-11-25T09:46:40Z");
        let entries = b["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 4);
        for e in entries {
            assert!(e["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
            let r = &e["resource"];
            // The R4 minimum: type, recorded, agent with requestor, source with observer.
            assert!(r["type"]["code"].is_string());
            assert!(r["recorded"].as_str().unwrap().ends_with('Z'));
            assert_eq!(r["agent"][0]["requestor"], true);
            assert!(
                r["source"]["observer"]["identifier"]["value"]
                    .as_str()
                    .unwrap()
                    .starts_with("urn:ethereum:chain:31337:0xeeee")
            );
            assert!(["C", "R", "U", "D", "E"].contains(&r["action"].as_str().unwrap()));
        }
        let read = &entries[1]["resource"];
        assert_eq!(read["subtype"][0]["code"], "read");
        assert_eq!(read["outcome"], "0");
        assert_eq!(
            read["agent"][0]["who"]["identifier"]["value"],
            "urn:ethereum:0x7070707070707070707070707070707070707070"
        );
        let denied = &entries[2]["resource"];
        assert_eq!(denied["outcome"], "4");
        assert!(
            denied["outcomeDesc"]
                .as_str()
                .unwrap()
                .contains("grant revoked")
        );
        let glass = &entries[3]["resource"];
        assert_eq!(glass["purposeOfEvent"][0]["coding"][0]["code"], "BTG");
        // The grant was the patient's act.
        assert_eq!(
            entries[0]["resource"]["agent"][0]["who"]["identifier"]["value"],
            "1-1001"
        );
    }

    #[test]
    fn csv_has_a_header_a_row_per_event_and_no_formulas() {
        let out = String::from_utf8(csv(&events()).unwrap()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            "time_utc,block,log_index,tx_hash,event,who,details,denied"
        );
        assert!(lines[3].contains("ACCESS DENIED") && lines[3].ends_with(",true"));
        assert_eq!(cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(cell("0x12"), "0x12");
    }
}

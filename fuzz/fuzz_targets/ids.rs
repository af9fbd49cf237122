//! Identifiers from URLs and forms: patient addresses, record ids, emergency reasons, audit
//! filters, and Shamir shares and commitments from their bytes.
#![no_main]
use std::str::FromStr;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = ehr_share::chain::PatientAddr::from_str(s);
        let _ = ehr_share::chain::RecordId::from_str(s);
        let _ = ehr_share::chain::EmergencyReason::from_str(s);
        let _ = s.parse::<ehr_share::chain::AuditFilter>();
    }
    let _ = ehr_share::shamir::Share::from_bytes(data);
    let _ = ehr_share::shamir::Commitments::from_bytes(data);
});

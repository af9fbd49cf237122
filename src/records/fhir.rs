//! Minimal FHIR R4 JSON validation: a resource with a known `resourceType`, and for a Bundle a
//! valid `type` and entries that are resources themselves. Enough to refuse what is not FHIR.

use serde_json::Value;

/// The FHIR JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json";

const BUNDLE_TYPES: &[&str] = &[
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
];

const RESOURCE_TYPES: &[&str] = &[
    "AllergyIntolerance",
    "Appointment",
    "Binary",
    "Bundle",
    "CarePlan",
    "CareTeam",
    "Composition",
    "Condition",
    "Consent",
    "Coverage",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "EpisodeOfCare",
    "FamilyMemberHistory",
    "Goal",
    "ImagingStudy",
    "Immunization",
    "Location",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "QuestionnaireResponse",
    "RelatedPerson",
    "ServiceRequest",
    "Specimen",
];

/// Checks that `bytes` is a FHIR R4 JSON resource.
///
/// # Errors
/// A message saying what is wrong, with the JSON path.
pub fn validate_fhir(bytes: &[u8]) -> Result<(), String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    resource(&v, "$")
}

fn resource(v: &Value, path: &str) -> Result<(), String> {
    let rt = v
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{path}: missing string resourceType"))?;
    if !RESOURCE_TYPES.contains(&rt) {
        return Err(format!("{path}: unknown FHIR R4 resourceType {rt:?}"));
    }
    if rt == "Bundle" {
        let t = v
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{path}: Bundle needs a type"))?;
        if !BUNDLE_TYPES.contains(&t) {
            return Err(format!("{path}: invalid Bundle.type {t:?}"));
        }
        if let Some(entries) = v.get("entry") {
            let entries = entries
                .as_array()
                .ok_or_else(|| format!("{path}.entry: must be an array"))?;
            for (i, e) in entries.iter().enumerate() {
                if let Some(r) = e.get("resource") {
                    resource(r, &format!("{path}.entry[{i}].resource"))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_resources_and_bundles_and_names_what_is_wrong() {
        assert!(validate_fhir(br#"{"resourceType":"Patient","id":"x"}"#).is_ok());
        let b = br#"{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation"}}]}"#;
        assert!(validate_fhir(b).is_ok());
        let bad = br#"{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Nope"}}]}"#;
        assert!(
            validate_fhir(bad)
                .unwrap_err()
                .contains("$.entry[0].resource")
        );
        assert!(validate_fhir(br#"{"resourceType":"Bundle","type":"x"}"#).is_err());
        assert!(validate_fhir(b"{}").is_err());
        assert!(validate_fhir(b"not json").is_err());
    }
}

//! FHIR validation of an uploaded record (`records::validate_fhir`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ehr_share::records::validate_fhir(data);
});

//! A device's reading envelope as the gateway takes it: the envelope's JSON (with the
//! resource's raw bytes), its EIP-712 signature check, and the vital-sign validation of the
//! FHIR resource inside (`ingest::Envelope`, `ingest::vitals::readings`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ehr_share::fuzzing::readings(data);
});

//! A stored Web3 keystore's format and parameter checks (before any KDF work).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        ehr_share::fuzzing::keystore(s);
    }
});

//! The web upload form: multipart parsing, the CSRF field and the file.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ehr_share::fuzzing::multipart(data);
});

//! The configuration files an operator writes: `ehr serve`'s and a share node's TOML.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let p = std::path::Path::new("fuzz.toml");
        let _ = ehr_share::serve_config::ServeConfig::parse(s, p);
        let _ = ehr_share::share_node::ShareNodeFile::parse(s, p);
    }
});

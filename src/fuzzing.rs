//! Entry points for `cargo fuzz` (feature `fuzzing`, never in a release build): the parsers
//! that take outside bytes and are not public on their own. Each must return, whatever the
//! input: an error is fine, a panic, a hang or an unbounded allocation is a bug.

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::{Request, header};

/// A stored keystore's format and parameter checks (what runs before the KDF).
pub fn keystore(json: &str) {
    let _ = crate::web::fuzz_keystore(json);
}

/// The web upload form (multipart with a `csrf` field and a `file`), as a browser would post
/// it with boundary `XyZ`.
pub fn multipart(body: &[u8]) {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds")
    });
    let req = Request::post("/patient/upload")
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XyZ")
        .body(Body::from(body.to_vec()))
        .expect("a fixed request builds");
    rt.block_on(async {
        if let Ok(mp) = Multipart::from_request(req, &()).await {
            let _ = crate::web::fuzz_upload(mp).await;
        }
    });
}

/// A device's reading envelope: parsed as the gateway parses it, its signature checked, its
/// resource validated as vital signs, and read back as a sealed window's line.
pub fn readings(data: &[u8]) {
    use alloy::primitives::{Address, B256};
    static DOMAIN: OnceLock<alloy::sol_types::Eip712Domain> = OnceLock::new();
    let domain = DOMAIN.get_or_init(|| crate::ingest::ingest_domain(1, Address::ZERO, B256::ZERO));
    if let Ok(env) = serde_json::from_slice::<crate::ingest::Envelope<'_>>(data) {
        let _ = env.verify(domain);
        let _ = crate::ingest::vitals::readings(env.resource.get().as_bytes());
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        let _ = crate::ingest::read_sealed(data, domain, env.patient, &mut seen, &mut out);
    }
    let _ = crate::ingest::vitals::readings(data);
}

//! The upload form, for a patient's own records and a granted doctor's additions: one file and
//! the session's CSRF token, as multipart.

use axum::extract::Multipart;
use axum::http::StatusCode;

use super::error::{Result, WebError};
use super::extract::check_csrf;
use super::session::Session;
use crate::kind::ErrorKind;
use crate::records::FHIR_JSON;

/// Largest file the web upload takes (the form around it gets a little more; see `web::router`).
pub(super) const UPLOAD_LIMIT: usize = 32 * 1024 * 1024;

/// An uploaded file.
pub(super) struct Upload {
    /// Its name as the browser sent it.
    pub(super) name: String,
    /// Its media type (FHIR JSON for `.json` files and JSON types).
    pub(super) media_type: String,
    /// The bytes.
    pub(super) data: bytes::Bytes,
}

fn too_large() -> WebError {
    WebError::new(
        ErrorKind::TooLarge,
        format!(
            "the file is larger than the {} MiB limit; nothing was stored",
            UPLOAD_LIMIT >> 20
        ),
    )
}

fn failed(e: axum::extract::multipart::MultipartError) -> WebError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        WebError::new(
            ErrorKind::of_status(e.status()),
            format!("upload failed: {}", e.body_text()),
        )
    }
}

/// Reads the form: checks its CSRF token, then returns the file (`Ok(None)` for an empty one).
pub(super) async fn read(s: &Session, mut mp: Multipart) -> Result<Option<Upload>> {
    let mut csrf = String::new();
    let mut file = None;
    while let Some(field) = mp.next_field().await.map_err(failed)? {
        match field.name() {
            Some("csrf") => csrf = field.text().await.map_err(failed)?,
            Some("file") => {
                let name = field.file_name().unwrap_or("record").to_owned();
                let ct = field
                    .content_type()
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                let data = field.bytes().await.map_err(failed)?;
                file = Some((name, ct, data));
            }
            _ => {}
        }
    }
    check_csrf(s, &csrf)?;
    let (name, ct, data) = file.ok_or_else(|| WebError::bad("choose a file"))?;
    if data.is_empty() {
        return Ok(None);
    }
    if data.len() > UPLOAD_LIMIT {
        return Err(too_large());
    }
    let media_type = if name.ends_with(".json") || ct.contains("json") {
        FHIR_JSON.to_owned()
    } else {
        ct
    };
    Ok(Some(Upload {
        name,
        media_type,
        data,
    }))
}

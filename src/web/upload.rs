//! The upload form, for a patient's own records and a granted doctor's additions: one file,
//! the session's CSRF token and the form's own key, as multipart.
//!
//! A form sent twice stores one record: the form's key (`form_key`) names the upload as the
//! REST API's `Idempotency-Key` does (`gateway::named_upload`), so a browser that posts the
//! same form again is answered by the record the first send stored, or told it is still being
//! stored, instead of storing the same lab result twice. The upload runs in a task of its own
//! that a closed tab does not cut short, as the REST API's named uploads do.

use axum::extract::Multipart;
use axum::http::StatusCode;

use super::WebState;
use super::error::{Result, WebError};
use super::extract::check_csrf;
use super::session::Session;
use crate::chain::{PatientAddr, RecordId};
use crate::gateway::{ApiError, Charge, NamedRequest, NamedUpload, Settled};
use crate::kind::ErrorKind;
use crate::records::{FHIR_JSON, RecordsClient};

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
    /// The form's key (none from a form rendered before forms had one).
    pub(super) key: Option<String>,
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
    let mut key = None;
    let mut file = None;
    while let Some(field) = mp.next_field().await.map_err(failed)? {
        match field.name() {
            Some("csrf") => csrf = field.text().await.map_err(failed)?,
            Some(super::form_key::FIELD) => key = Some(field.text().await.map_err(failed)?),
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
    let key = key
        .map(|k| crate::gateway::key_from_text(&k))
        .transpose()
        .map_err(|e| WebError::bad(e.message()))?;
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
        key,
    }))
}

/// Where a form's upload goes: the path its form posts to (part of what the form's key names)
/// and the page its user goes back to.
pub(super) struct Target<'a> {
    pub(super) path: &'a str,
    pub(super) back_to: &'a str,
}

/// Stores the form's file `u` for `patient` as `s` ([`store`]) and takes the user back with
/// what became of it ([`outcome`]); `done` words a stored record, given the file's name.
///
/// # Errors
/// The session's records client failing (no share nodes); as [`outcome`].
pub(super) async fn save(
    state: &WebState,
    s: &Session,
    patient: PatientAddr,
    u: Upload,
    target: Target<'_>,
    charge: Option<&Charge>,
    done: impl FnOnce(&str, RecordId) -> String,
) -> Result<axum::response::Redirect> {
    let name = u.name.clone();
    let client = state.records_for(s)?;
    let stored = store(state, s, client, patient, u, target.path, charge).await;
    outcome(target.back_to, stored, |id| done(&name, id))
}

/// Stores `u` for `patient` with `client`, as `s`'s account, the form sent to `path`: under
/// the form's key when it has one (and the gateway keeps a database), holding `charge` (the
/// upload's share of the budget) until the upload ends.
///
/// # Errors
/// The upload's, and the key's (another file sent with a form's key: 422), as the REST API
/// answers them.
async fn store(
    state: &WebState,
    s: &Session,
    client: RecordsClient,
    patient: PatientAddr,
    u: Upload,
    path: &str,
    charge: Option<&Charge>,
) -> std::result::Result<Settled, ApiError> {
    let request = NamedRequest {
        patient,
        body: u.data,
        media_type: u.media_type,
        file_name: Some(u.name),
    };
    let named = match u.key {
        Some(key) if state.app.database().is_some() => {
            // The file's name is part of what the key names, as the REST API's query is.
            let target = format!(
                "{path}?patient={patient}&file_name={}",
                super::view::query_value(request.file_name.as_deref().unwrap_or_default())
            );
            Some(
                NamedUpload::claim_key(&state.app, &key, s.account.address, &target, &request)
                    .await?,
            )
        }
        _ => None,
    };
    let Some(named) = named else {
        let id = client
            .put(
                patient,
                request.body.clone(),
                &request.media_type,
                request.file_name.clone(),
            )
            .await?;
        return Ok(Settled::Stored {
            record: id,
            replayed: false,
        });
    };
    named
        .run(client, &request, charge.and_then(Charge::take))
        .await
}

/// Where a form's upload leaves its user: back on `to` with what became of it (a record, a
/// send still being stored, or the caller's mistake in words), or an error page for a fault
/// of ours or of a service.
fn outcome(
    to: &str,
    stored: std::result::Result<Settled, ApiError>,
    done: impl FnOnce(RecordId) -> String,
) -> Result<axum::response::Redirect> {
    match stored {
        Ok(Settled::Stored { record, replayed }) => {
            let mut text = done(record);
            if replayed {
                text.push_str(" (by an earlier send of this form: stored once)");
            }
            Ok(super::view::back(to, true, &text))
        }
        Ok(Settled::Unsettled { retry_secs, .. }) => Ok(super::view::back(
            to,
            false,
            &format!(
                "this form was sent before and that upload is still being stored: it shows in the records list once stored (look again in {retry_secs} s); nothing was stored twice"
            ),
        )),
        // A page from the browser's history, sent again with another file.
        Err(e) if e.kind() == ErrorKind::Unprocessable => Ok(super::view::back(
            to,
            false,
            "this form was sent before with another file; choose the file again on this page",
        )),
        Err(e) if e.kind().status().is_client_error() => {
            Ok(super::view::back(to, false, e.message()))
        }
        Err(e) => Err(e.into()),
    }
}

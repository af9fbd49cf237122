//! `Idempotency-Key` on uploads (`POST /records`): a client that lost the answer to an upload
//! (a timeout, a dropped connection, a 503) sends it again with the same key and is answered by
//! the record the first try stored (`Idempotent-Replayed: true`), instead of storing the same
//! lab result twice on the patient's record.
//!
//! Unlike a contract write, an upload's outcome is known before anything is done: its record
//! id (`recordIdOf(uploader, patient, salt)`) is fixed by a fresh salt. So the key's row names
//! the record before the upload starts, and the upload runs in a task of its own that a
//! dropped connection does not cut short. A retry of the key then finds, by asking the share
//! nodes for the record ([`crate::records::Directory::locate`]):
//! - the record anchored at k nodes: answered by it;
//! - while a try of the key runs in this process: waits for it first (a client's timeout
//!   shorter than the upload);
//! - no node holding it, and the row older than the orphan TTL (the sweeper's: by then the
//!   nodes have dropped any share of it, so it can never be read): the key is taken over and
//!   the upload runs anew, under a new record id;
//! - otherwise (an earlier try in another process, or one cut by a crash, may still anchor it):
//!   409 with `Retry-After`, the IETF draft's answer for a request still being processed.
//!
//! An upload that fails before its anchor is sent frees the key (nothing of it will be read);
//! one whose anchor may have gone out keeps it, and the record settles as above.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::idempotency::{HEADER, hex_sha256, key_of};
use super::{ApiError, AppState};
use crate::chain::{PatientAddr, RecordId};
use crate::db::{Claim, Database};
use crate::records::{RecordError, RecordsClient};

/// Seconds a client is asked to wait before asking about an unsettled upload again.
const RETRY_SECS: u64 = 60;

/// Per key, the try of an upload running in this process.
type Running = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;
static RUNNING: LazyLock<Running> = LazyLock::new(Default::default);

/// An upload its caller named, its key claimed.
pub(super) struct NamedUpload {
    db: Database,
    scope: String,
    key_hash: String,
    /// What the key's row names (an earlier try's record), and since when.
    earlier: Option<String>,
    since: u64,
    /// Held while this try (its task included) runs: the next try of the key here waits.
    turn: tokio::sync::OwnedMutexGuard<()>,
}

/// What the request asked for: the answer repeats it.
pub(super) struct Upload {
    pub(super) patient: PatientAddr,
    pub(super) body: Bytes,
    pub(super) media_type: String,
    pub(super) file_name: Option<String>,
}

impl Upload {
    /// The answer naming `record` (the same for a try and its replays).
    pub(super) fn answer(&self, record: RecordId, replayed: bool) -> Response {
        let mut r = Json(serde_json::json!({
            "record": record,
            "patient": self.patient,
            "size": self.body.len(),
            "media_type": self.media_type,
        }))
        .into_response();
        if replayed {
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        r
    }
}

impl NamedUpload {
    /// Claims the key of `headers` (if any) for an upload by `account` to `target` (path and
    /// query) of `upload`: after an earlier try of the key in this process has ended.
    ///
    /// # Errors
    /// A malformed key (400), no database (400), the key used for another request (422), the
    /// database failing (503).
    pub(super) async fn claim(
        state: &AppState,
        headers: &HeaderMap,
        account: alloy::primitives::Address,
        target: &str,
        upload: &Upload,
    ) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get(HEADER) else {
            return Ok(None);
        };
        let key = key_of(value)?;
        let db = state.database().cloned().ok_or_else(|| {
            ApiError::bad_request(
                "this gateway keeps no Idempotency-Key (it runs without a database); send the request without one".into(),
            )
        })?;
        let scope = hex_sha256(&[account.as_slice()]);
        let key_hash = hex_sha256(&[key.as_bytes()]);
        let turn = {
            let lock = {
                let mut map = RUNNING
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                map.retain(|_, m| Arc::strong_count(m) > 1);
                Arc::clone(map.entry(format!("{scope}:{key_hash}")).or_default())
            };
            lock.lock_owned().await
        };
        let fingerprint = hex_sha256(&[
            b"POST",
            target.as_bytes(),
            upload.media_type.as_bytes(),
            &upload.body,
        ]);
        let now = crate::clock::unix_now();
        let (earlier, since) = match db
            .claim_idempotency_key(&scope, &key_hash, &fingerprint, now)
            .await?
        {
            Claim::Other => {
                return Err(ApiError::new(
                    crate::kind::ErrorKind::Unprocessable,
                    "this Idempotency-Key was used for another request (another path, media type or body); use a new key for a new request".into(),
                ));
            }
            Claim::Same { tx, created_at, .. } => (tx, created_at),
        };
        Ok(Some(Self {
            db,
            scope,
            key_hash,
            earlier,
            since,
            turn,
        }))
    }

    /// Answers with the earlier try's record, or stores `upload` with `client` under the key.
    ///
    /// # Errors
    /// As an upload's; 409 (with `Retry-After`) while an earlier try's record is unsettled.
    pub(super) async fn run(
        self,
        client: RecordsClient,
        orphan_ttl: std::time::Duration,
        upload: Upload,
    ) -> Result<Response, ApiError> {
        let now = crate::clock::unix_now();
        if let Some(earlier) = &self.earlier {
            // Only an upload's try writes a record id under an upload's fingerprint.
            let record = earlier.parse::<RecordId>().map_err(|_| {
                ApiError::new(
                    crate::kind::ErrorKind::Internal,
                    format!("the Idempotency-Key's row names {earlier:?}, not a record"),
                )
            })?;
            match client.directory().locate(record).await {
                Ok(_) => return Ok(upload.answer(record, true)),
                Err(RecordError::NotFound(_))
                    if now.saturating_sub(self.since) > orphan_ttl.as_secs() => {}
                // Not readable, and it may still be: anchored (some node holds its proof),
                // or anchoring in another process, or cut off a moment ago.
                Err(RecordError::NotFound(_)) => return Ok(unsettled(Some(record))),
                Err(RecordError::NotEnoughShares { valid, .. }) if valid > 0 => {
                    return Ok(unsettled(Some(record)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        // A fresh record id, named by the key before anything is stored.
        let salt = crate::chain::random_b256();
        let record = client.upload_id(upload.patient, salt);
        let made = record.to_string();
        let named = self
            .db
            .idempotency_key_replaced(
                &self.scope,
                &self.key_hash,
                self.earlier.as_deref(),
                &made,
                now,
            )
            .await?;
        if !named {
            // Another process's try of the key got there first.
            return Ok(unsettled(None));
        }
        let Self {
            db,
            scope,
            key_hash,
            turn,
            ..
        } = self;
        let Upload {
            patient,
            body,
            media_type,
            file_name,
        } = &upload;
        let (patient, body, media, file_name) = (
            *patient,
            body.clone(),
            media_type.clone(),
            file_name.clone(),
        );
        // In a task of its own: a client that goes away does not cut the upload short, and the
        // next try of the key here waits for it (`turn`).
        let work = async move {
            let _turn = turn;
            let stored = tokio::time::timeout(
                super::uploads::UPLOAD_TIMEOUT,
                client.put_salted(salt, patient, body, &media, file_name),
            )
            .await;
            match stored {
                Ok(Ok(id)) => Ok(id),
                Ok(Err(e)) => {
                    if !e.maybe_anchored
                        && let Err(f) = db
                            .release_idempotency_key_made(&scope, &key_hash, &made)
                            .await
                    {
                        tracing::warn!(
                            "an Idempotency-Key whose upload stored nothing was not freed: {f}"
                        );
                    }
                    Err(ApiError::from(e.error))
                }
                // Cut wherever it was: the sweeper settles it, and the key with it.
                Err(_) => Err(ApiError::new(
                    crate::kind::ErrorKind::Unavailable,
                    format!(
                        "the upload of record {made} took longer than {} s; ask again with the same key later",
                        super::uploads::UPLOAD_TIMEOUT.as_secs()
                    ),
                )),
            }
        };
        let id = tokio::spawn(work).await.map_err(|e| {
            ApiError::new(
                crate::kind::ErrorKind::Internal,
                format!("the upload stopped: {e}"),
            )
        })??;
        Ok(upload.answer(id, false))
    }
}

/// 409: an earlier try's `record` is neither readable nor abandoned yet (`None`: another
/// try is under way).
fn unsettled(record: Option<RecordId>) -> Response {
    let which = record.map_or_else(String::new, |r| format!(" (record {r})"));
    let mut r = ApiError::new(
        crate::kind::ErrorKind::Conflict,
        format!(
            "an earlier try of this upload{which} has not finished; ask again with the same key later"
        ),
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_SECS));
    r
}

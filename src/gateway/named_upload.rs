//! `Idempotency-Key` on uploads (`POST /records`): a client that lost the answer to an upload
//! (a timeout, a dropped connection, a 503) sends it again with the same key and is answered by
//! the record the first try stored (`Idempotent-Replayed: true`), instead of storing the same
//! lab result twice on the patient's record.
//!
//! Unlike a contract write, an upload's outcome is known before anything is done: its record
//! id (`recordIdOf(uploader, patient, salt)`) is fixed by a fresh salt. So the key's row names
//! the record (a compare-and-set: of two tries in two gateways, one does) before anything is
//! stored, in a task of its own that a dropped connection does not cut short and that holds
//! the upload's share of the upload budget until it ends. A retry of the key then finds, by
//! asking the share nodes for the record ([`crate::records::Directory::locate`]):
//! - the record anchored at k nodes: answered by it;
//! - while a try of the key runs in this gateway: waits for it first (a client's timeout
//!   shorter than the upload);
//! - its try surely over ([`TRY_BOUND`]: only that try ever gives the proof to a node), and
//!   every node answering that it holds no proof of the record: it can never be read, so the
//!   key is taken over and the upload runs anew under a new record id;
//! - otherwise (its try may still be running, in another gateway or cut off by a crash a
//!   moment ago; or the record is anchored and its proof is still spreading): 409 with
//!   `Retry-After`, the IETF draft's answer for a request still being processed.
//!
//! An upload that fails before its anchor is sent frees the key (nothing of it will be read);
//! one whose anchor may have gone out keeps it, and the record settles as above.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::idempotency::{HEADER, KeyRow, hex_sha256, key_of};
use super::{ApiError, AppState};
use crate::chain::{PatientAddr, RecordId};
use crate::records::{RecordError, RecordsClient};

/// Seconds a client is asked to wait before asking again about an upload whose try is over but
/// whose record some node still holds a proof of (or a node did not answer).
const RETRY_SECS: u64 = 60;

/// How long after its record was named a try of an upload may still give the record's proof
/// to a share node: its task's bound; then a batch of proofs queued before the task ended,
/// which its sender sends on (a node request, and for a node without the batch route each
/// item again, each bounded by the node deadline); and a minute for a node still working on
/// one and for the clocks of two gateways (the naming one's writes the row's time, the
/// asking one's reads it). Only that try ever sends the proof (the sweeper spreads one only
/// from a node that holds it already), so a record that no node holds a proof of past this
/// can never be read.
const TRY_BOUND: std::time::Duration = std::time::Duration::from_secs(
    super::uploads::UPLOAD_TIMEOUT.as_secs() + 2 * crate::records::NODE_DEADLINE.as_secs() + 60,
);

/// Per key, the try of an upload running in this process.
type Running = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;
static RUNNING: LazyLock<Running> = LazyLock::new(Default::default);

/// An upload its caller named, its key claimed.
pub(crate) struct NamedUpload {
    row: KeyRow,
    fingerprint: String,
    /// What the key's row names (an earlier try's record), and since when.
    earlier: Option<String>,
    since: u64,
    /// Held while this try (its task included) runs: the next try of the key here waits.
    turn: tokio::sync::OwnedMutexGuard<()>,
}

/// What the request asked for: the answer repeats it.
pub(crate) struct Upload {
    pub(crate) patient: PatientAddr,
    pub(crate) body: Bytes,
    pub(crate) media_type: String,
    pub(crate) file_name: Option<String>,
}

/// How a named upload ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Stored as `record`: by this try, or by an earlier one (`replayed`).
    Stored { record: RecordId, replayed: bool },
    /// An earlier try's `record` is neither readable nor abandoned yet (`None`: another try
    /// is under way); to be asked again in `retry_secs`.
    Unsettled {
        record: Option<RecordId>,
        retry_secs: u64,
    },
}

impl Upload {
    /// The REST answer to a named upload's end.
    pub(super) fn respond(&self, settled: Settled) -> Response {
        match settled {
            Settled::Stored { record, replayed } => self.answer(record, replayed),
            Settled::Unsettled { record, retry_secs } => unsettled(record, retry_secs),
        }
    }

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
        Self::claim_key(state, &key_of(value)?, account, target, upload)
            .await
            .map(Some)
    }

    /// Claims `key` (checked as [`key_of`] checks a header's) for an upload by `account` to
    /// `target` of `upload`: after an earlier try of the key in this process has ended.
    ///
    /// # Errors
    /// As [`Self::claim`]'s.
    pub(crate) async fn claim_key(
        state: &AppState,
        key: &str,
        account: alloy::primitives::Address,
        target: &str,
        upload: &Upload,
    ) -> Result<Self, ApiError> {
        let row = KeyRow::new(state, key, account)?;
        let turn = {
            let lock = {
                let mut map = RUNNING
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                map.retain(|_, m| Arc::strong_count(m) > 1);
                Arc::clone(map.entry(row.name()).or_default())
            };
            lock.lock_owned().await
        };
        let fingerprint = hex_sha256(&[
            b"POST",
            target.as_bytes(),
            upload.media_type.as_bytes(),
            &upload.body,
        ]);
        let claimed = row.claim(&fingerprint).await?;
        Ok(Self {
            row,
            fingerprint,
            earlier: claimed.made,
            since: claimed.since,
            turn,
        })
    }

    /// Answers with the earlier try's record, or stores `upload` with `client` under the key
    /// (holding `charge`, its share of the upload budget, until the upload ends).
    ///
    /// # Errors
    /// As an upload's; 409 (with `Retry-After`) while an earlier try's record is unsettled.
    pub(crate) async fn run(
        self,
        client: RecordsClient,
        upload: &Upload,
        charge: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<Settled, ApiError> {
        if let Some(earlier) = &self.earlier {
            // Only an upload's try writes a record id under an upload's fingerprint.
            let record = earlier.parse::<RecordId>().map_err(|_| {
                ApiError::new(
                    crate::kind::ErrorKind::Internal,
                    format!("the Idempotency-Key's row names {earlier:?}, not a record"),
                )
            })?;
            match client.directory().locate(record).await {
                Ok(_) => {
                    return Ok(Settled::Stored {
                        record,
                        replayed: true,
                    });
                }
                // Not readable (yet). Once its try is surely over, and every node says it
                // holds no proof of it, nothing can give one any more: it can never be read.
                // Until then it may still be (a try under way, a proof spreading, a chain view
                // behind the nodes').
                Err(RecordError::NotFound(_) | RecordError::NotEnoughShares { .. }) => {
                    let over = self.since.saturating_add(TRY_BOUND.as_secs());
                    let wait = over.saturating_sub(crate::clock::unix_now());
                    if wait > 0 {
                        return Ok(Settled::Unsettled {
                            record: Some(record),
                            retry_secs: wait,
                        });
                    }
                    if !client.directory().held_nowhere(record).await {
                        return Ok(Settled::Unsettled {
                            record: Some(record),
                            retry_secs: RETRY_SECS,
                        });
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        let Self {
            row:
                KeyRow {
                    db,
                    scope,
                    key_hash,
                },
            fingerprint,
            earlier,
            turn,
            ..
        } = self;
        let (patient, body, media, file_name) = (
            upload.patient,
            upload.body.clone(),
            upload.media_type.clone(),
            upload.file_name.clone(),
        );
        // In a task of its own: a client that goes away does not cut the upload short (nor
        // leave the key naming a record nobody stores), and the next try of the key here waits
        // for it (`turn`). The task holds the upload's share of the budget.
        let work = async move {
            let (_turn, _charge) = (turn, charge);
            // A fresh record id, named by the key before anything is stored, as of now: the
            // try's bound counts from here.
            let salt = crate::chain::random_b256();
            let record = client.upload_id(patient, salt);
            let made = record.to_string();
            let named = db
                .idempotency_key_replaced(
                    &scope,
                    &key_hash,
                    &fingerprint,
                    earlier.as_deref(),
                    &made,
                    crate::clock::unix_now(),
                )
                .await?;
            if !named {
                // Another gateway's try of the key changed the row first.
                return Ok(None);
            }
            let stored = tokio::time::timeout(
                super::uploads::UPLOAD_TIMEOUT,
                client.put_salted(salt, patient, body, &media, file_name),
            )
            .await;
            match stored {
                Ok(Ok(id)) => Ok(Some(id)),
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
                // Cut wherever it was (its client had its 408 already): the key's rule and the
                // sweeper settle it.
                Err(_) => Err(ApiError::unavailable(format!(
                    "the upload of record {made} took longer than {} s; ask again with the same key later",
                    super::uploads::UPLOAD_TIMEOUT.as_secs()
                ))),
            }
        };
        let stored = tokio::spawn(work).await.map_err(|e| {
            ApiError::new(
                crate::kind::ErrorKind::Internal,
                format!("the upload stopped: {e}"),
            )
        })??;
        Ok(match stored {
            Some(record) => Settled::Stored {
                record,
                replayed: false,
            },
            None => Settled::Unsettled {
                record: None,
                retry_secs: 1,
            },
        })
    }
}

/// 409: an earlier try's `record` is neither readable nor abandoned yet (`None`: another
/// try is under way); asked again in `retry_secs`.
fn unsettled(record: Option<RecordId>, retry_secs: u64) -> Response {
    let which = record.map_or_else(String::new, |r| format!(" (record {r})"));
    let mut r = ApiError::new(
        crate::kind::ErrorKind::Conflict,
        format!(
            "an earlier try of this upload{which} has not finished; ask again with the same key later"
        ),
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_secs.max(1)));
    r
}

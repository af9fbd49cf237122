//! `Idempotency-Key` on the REST API's writes (the IETF httpapi draft's header, as payment APIs
//! use it): a client that did not get an answer (a timeout, a dropped connection, a 503 naming
//! a transaction) sends the same request again with the same key, and it is answered by the
//! transaction the first try sent instead of a second one: a break-glass is not counted twice,
//! a revoke retried after a grant does not undo the grant. Without a key the chain client's
//! own rules apply (`chain::sent`), which cannot tell a retry from a new request once the
//! account did something in between.
//!
//! The key is scoped to the caller's account (the one its API token signs as) and names one
//! request (method, path and body, as a sha256 fingerprint) for a day; the same key with another request is
//! refused (422). Which transaction a key's request sent is kept in the gateway's database,
//! so a retry after a restart is answered by it too. A try that failed before sending anything
//! frees its key. A replay carries `Idempotent-Replayed: true`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::chain::Ticket;
use crate::db::Claim;

/// The request header.
pub(super) const HEADER: &str = "idempotency-key";

/// The longest key taken (a UUID is 36 characters).
const MAX_KEY: usize = 255;

/// A key from its header: 1 to 255 printable ASCII characters, bare or as a structured-field
/// string (`"..."`, as the draft writes it).
pub(super) fn key_of(v: &HeaderValue) -> Result<String, ApiError> {
    // A value that is not visible ASCII is refused as an empty one is.
    key_from_text(v.to_str().unwrap_or_default())
}

/// A key from text (a header's, or a form field's): as [`key_of`].
///
/// # Errors
/// 400 for a malformed key.
pub(crate) fn key_from_text(s: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_KEY} printable ASCII characters (a UUID, say)"
        ))
    };
    let s = s.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    if s.is_empty()
        || s.len() > MAX_KEY
        || !s.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        || s.contains('"')
    {
        return Err(bad());
    }
    Ok(s.to_owned())
}

/// What a key names of a request: its method, path with query, and body.
pub(crate) fn request_fingerprint(parts: &axum::http::request::Parts, body: &[u8]) -> String {
    let target = parts
        .uri
        .path_and_query()
        .map_or("", axum::http::uri::PathAndQuery::as_str);
    hex_sha256(&[parts.method.as_str().as_bytes(), target.as_bytes(), body])
}

pub(crate) fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefixed: no two lists of parts hash alike.
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    crate::strict_hex::encode(h.finalize())
}

/// A caller's key in the gateway's database: the row its tries are claimed by (the
/// middleware of contract writes and named uploads alike). Scope and key are stored as
/// digests: fixed length and plain hex, compared alike by every database's collation.
pub(super) struct KeyRow {
    pub(super) db: crate::db::Database,
    pub(super) scope: String,
    pub(super) key_hash: String,
}

/// What a claim found in a key's row for a request of its own.
pub(super) struct Claimed {
    /// What an earlier try made (a transaction, or an upload's record).
    pub(super) made: Option<String>,
    /// This try made the row.
    pub(super) fresh: bool,
    /// When the row was made or last named something (unix seconds).
    pub(super) since: u64,
}

impl KeyRow {
    /// The row of `key` for `account`.
    ///
    /// # Errors
    /// 400 without a database.
    pub(super) fn new(
        state: &AppState,
        key: &str,
        account: alloy::primitives::Address,
    ) -> Result<Self, ApiError> {
        let db = state.database().cloned().ok_or_else(|| {
            ApiError::bad_request(
                "this gateway keeps no Idempotency-Key (it runs without a database); send the request without one".into(),
            )
        })?;
        Ok(Self {
            db,
            scope: hex_sha256(&[account.as_slice()]),
            key_hash: hex_sha256(&[key.as_bytes()]),
        })
    }

    /// The key's name in this process (its tries' table and locks).
    pub(super) fn name(&self) -> String {
        format!("{}:{}", self.scope, self.key_hash)
    }

    /// Claims the key for the request of `fingerprint`.
    ///
    /// # Errors
    /// 422 when the key names another request; the database failing (503).
    pub(super) async fn claim(&self, fingerprint: &str) -> Result<Claimed, ApiError> {
        match self
            .db
            .claim_idempotency_key(
                &self.scope,
                &self.key_hash,
                fingerprint,
                crate::clock::unix_now(),
            )
            .await?
        {
            Claim::Other => Err(ApiError::new(
                crate::kind::ErrorKind::Unprocessable,
                "this Idempotency-Key was used for another request (another path, media type or body); use a new key for a new request".into(),
            )),
            Claim::Same {
                tx,
                fresh,
                created_at,
            } => Ok(Claimed {
                made: tx,
                fresh,
                since: created_at,
            }),
        }
    }
}

/// A contract write its caller named, its key claimed: a chain client made
/// [`crate::chain::EhrChain::with_ticket`] of its ticket sends the write, or answers it with
/// the transaction an earlier try sent.
pub(crate) struct NamedWrite {
    row: KeyRow,
    /// This try made the key's row.
    fresh: bool,
    ticket: Ticket,
}

impl NamedWrite {
    /// Claims `key` (checked as [`key_of`] checks a header's) of `account` for the request of
    /// `fingerprint`.
    ///
    /// # Errors
    /// A malformed key or no database (400), the key used for another request (422), the
    /// database failing (503).
    pub(crate) async fn claim_key(
        state: &AppState,
        key: &str,
        account: alloy::primitives::Address,
        fingerprint: &str,
    ) -> Result<Self, ApiError> {
        Self::claim(
            KeyRow::new(state, &key_from_text(key)?, account)?,
            fingerprint,
        )
        .await
    }

    /// Claims `row` for the request of `fingerprint`.
    async fn claim(row: KeyRow, fingerprint: &str) -> Result<Self, ApiError> {
        let claimed = row.claim(fingerprint).await?;
        let earlier = claimed
            .made
            .and_then(|t| t.parse::<alloy::primitives::B256>().ok());
        let record = row
            .db
            .idempotency_record(&row.scope, &row.key_hash, fingerprint);
        let ticket = Ticket::new(row.name().into_bytes(), earlier, record);
        Ok(Self {
            row,
            fresh: claimed.fresh,
            ticket,
        })
    }

    /// The ticket the request's write goes out under.
    pub(crate) fn ticket(&self) -> Ticket {
        self.ticket.clone()
    }

    /// After the request's handler: frees the key when this try made its row and sent
    /// nothing (another try may be sending meanwhile otherwise). Whether the write was
    /// answered by an earlier try's transaction.
    pub(crate) async fn finish(self) -> bool {
        if self.fresh
            && !self.ticket.used()
            && let Err(e) = self
                .row
                .db
                .release_idempotency_key(&self.row.scope, &self.row.key_hash)
                .await
        {
            tracing::warn!("an Idempotency-Key whose request sent nothing was not freed: {e}");
        }
        self.ticket.replayed()
    }
}

/// The middleware: POSTs with the header get a [`Ticket`] in their extensions (the `Actor`
/// extractor hands it to the chain client); the rest pass as they are.
pub(super) async fn idempotency(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(value) = req.headers().get(HEADER).cloned() else {
        return next.run(req).await;
    };
    if req.method() != Method::POST {
        // Reads are idempotent already.
        return next.run(req).await;
    }
    match named(&state, req, value, next).await {
        Ok(r) | Err(r) => r,
    }
}

async fn named(
    state: &AppState,
    req: Request,
    value: HeaderValue,
    next: Next,
) -> Result<Response, Response> {
    let key = key_of(&value).map_err(IntoResponse::into_response)?;
    let (parts, body) = req.into_parts();
    // The caller first: a request without a known token is answered by the handler (401) and
    // claims nothing.
    let Ok(signer) = super::chain_api::signer_for(&parts, state).await else {
        return Ok(next.run(Request::from_parts(parts, body)).await);
    };
    let row = KeyRow::new(state, &key, signer.address()).map_err(IntoResponse::into_response)?;
    let bytes = axum::body::to_bytes(body, super::JSON_BODY_LIMIT)
        .await
        .map_err(|e| ApiError::unread_body(&e).into_response())?;
    let named = NamedWrite::claim(row, &request_fingerprint(&parts, &bytes))
        .await
        .map_err(IntoResponse::into_response)?;
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(named.ticket());
    // The handler's extractor takes the caller from here instead of resolving the token again.
    req.extensions_mut()
        .insert(super::chain_api::Caller(signer));
    let mut resp = next.run(req).await;
    if named.finish().await {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_bare_or_quoted() {
        let ok = |s: &str| key_of(&HeaderValue::from_str(s).unwrap());
        assert_eq!(ok("abc-123").unwrap(), "abc-123");
        assert_eq!(
            ok("\"8e03978e-40d5-43e8-bc93-6894a57f9324\"").unwrap(),
            "8e03978e-40d5-43e8-bc93-6894a57f9324"
        );
        assert!(ok("").is_err());
        assert!(ok("\"\"").is_err());
        assert!(ok(&"x".repeat(256)).is_err());
        assert!(ok("a\"b").is_err());
        assert!(key_of(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()).is_err());
    }

    #[test]
    fn fingerprints_tell_parts_apart() {
        assert_ne!(hex_sha256(&[b"ab", b"c"]), hex_sha256(&[b"a", b"bc"]));
        assert_eq!(hex_sha256(&[b"x"]).len(), 64);
    }
}

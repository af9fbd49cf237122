//! A key per rendering of a form whose send must not be done twice: the REST API's
//! `Idempotency-Key` (`gateway::idempotency`), carried in a hidden field. A browser that posts
//! the same form again (the user reloads a page whose answer is slow or never came, and the
//! browser sends the form once more; or goes back and sends it again) is answered by what the
//! first send did: the upload form's record (`upload`), the break-glass form's transaction
//! (counted once against the doctor's three a day, on the patient's trail once). A form
//! rendered anew has a new key: a new request.

use super::WebState;
use super::session::Session;
use crate::gateway::{ApiError, NamedWrite};

/// The hidden field that carries a form's key.
pub(super) const FIELD: &str = "idempotency_key";

/// A fresh key for one rendering of a form.
pub(super) fn new() -> String {
    crate::chain::random_b256().to_string()
}

/// Claims `key` (a form's, if it has one) of `s`'s account for the contract write that
/// `parts` describe (the form's path first, then its fields); `None` without a key, or when
/// the gateway keeps no database (the form then works as it did before it had a key).
///
/// # Errors
/// A malformed key (400), the key used for another request (422), the database failing (503).
pub(super) async fn named_write(
    state: &WebState,
    s: &Session,
    key: Option<&str>,
    parts: &[&[u8]],
) -> Result<Option<NamedWrite>, ApiError> {
    match key {
        Some(key) if state.app.database().is_some() => {
            let mut all: Vec<&[u8]> = vec![b"POST"];
            all.extend_from_slice(parts);
            let fingerprint = crate::gateway::hex_sha256(&all);
            NamedWrite::claim_key(&state.app, key, s.account.address, &fingerprint)
                .await
                .map(Some)
        }
        _ => Ok(None),
    }
}

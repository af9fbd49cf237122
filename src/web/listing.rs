//! A patient's records as the pages list them: from the share nodes' directory, and for the
//! patient also the file name, size and type from each record's metadata block.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::chain::{PatientAddr, RecordId};
use crate::records::{Directory, RecordsClient};

use super::error::Result;
use super::view::{human_size, short, time};

/// What the patient's record list shows besides the chain's anchor: from the record's metadata
/// block, which only the patient's own share-node requests may open. Immutable per record, so
/// cached; holds no key, CID or content.
#[derive(Debug, Clone)]
pub(super) struct Listing {
    /// File name.
    pub(super) name: String,
    /// Size, for people.
    pub(super) size: String,
    /// Media type.
    pub(super) media_type: String,
}

/// Listings by record id, shared by all sessions (a listing is only shown to its patient).
#[derive(Debug, Clone, Default)]
pub(super) struct ListingCache(Arc<Mutex<HashMap<RecordId, Listing>>>);

impl ListingCache {
    fn get(&self, id: RecordId) -> Option<Listing> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    fn put(&self, id: RecordId, l: Listing) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, l);
    }
}

/// The newest records the pages list.
const LIST_LIMIT: usize = 50;

/// One row of the records table.
pub(super) struct RecordRow {
    /// Record id.
    pub(super) id: String,
    /// Short id.
    pub(super) id_short: String,
    /// File name, size and type (patients only).
    pub(super) listing: Option<Listing>,
    /// When it was stored.
    pub(super) added: String,
    /// Who stored it.
    pub(super) author: String,
    /// Short author.
    pub(super) author_short: String,
    /// Where "Open" goes.
    pub(super) href: String,
}

/// The records table.
pub(super) struct RecordsView {
    /// The newest records, newest first.
    pub(super) rows: Vec<RecordRow>,
    /// How many the patient has.
    pub(super) count: usize,
    /// Whether listings were asked for (the patient's own page).
    pub(super) listed: bool,
}

/// The records of `addr`, opened under `open_prefix`; with `listing`, the metadata of each
/// (gathered concurrently for the records not cached yet).
pub(super) async fn records(
    dir: &Directory,
    addr: PatientAddr,
    open_prefix: &str,
    listing: Option<(&RecordsClient, &ListingCache)>,
) -> Result<RecordsView> {
    // The newest only, from each node's time index: a patient with a device has tens of
    // thousands of records within months.
    let (newest, count) = dir.newest(addr, LIST_LIMIT).await?;
    if let Some((rc, cache)) = listing {
        let missing: Vec<RecordId> = newest
            .iter()
            .map(|r| r.record)
            .filter(|id| cache.get(*id).is_none())
            .collect();
        let found = futures::future::join_all(missing.iter().map(|id| rc.metadata(*id))).await;
        for (id, m) in missing.into_iter().zip(found) {
            match m {
                Ok(b) => cache.put(
                    id,
                    Listing {
                        name: b.file_name.unwrap_or_else(|| "record".into()),
                        size: human_size(b.size),
                        media_type: b.media_type,
                    },
                ),
                Err(e) => tracing::warn!("listing of record {id} unavailable: {e}"),
            }
        }
    }
    let rows_len = newest.len();
    let rows = newest
        .iter()
        .map(|r| {
            let id = r.record.to_string();
            let author = r.proof.author.to_string();
            RecordRow {
                id_short: short(&id),
                listing: listing.and_then(|(_, cache)| cache.get(r.record)),
                added: time(r.stored_at),
                author_short: short(&author),
                author,
                href: format!("{open_prefix}/{id}"),
                id,
            }
        })
        .collect();
    Ok(RecordsView {
        rows,
        // The nodes' own count (the k-th largest), unless fewer records than a page were
        // found: then those are all the patient has that can be read.
        count: if rows_len < LIST_LIMIT {
            rows_len
        } else {
            usize::try_from(count).unwrap_or(usize::MAX).max(rows_len)
        },
        listed: listing.is_some(),
    })
}

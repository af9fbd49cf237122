//! Markers of uploads not finished yet: small pinned objects that tell the upload sweeper
//! (`records::sweeper`) and the replica repair ([`super::Replicas::repair`]) which records are
//! still on their way.
//!
//! Uploads that start together share one marker. Kubo's pinner takes one lock for every pin
//! and unpin and syncs its index under it: a marker pinned and unpinned per upload cost 4.7 ms
//! of Kubo's CPU per upload and halved upload throughput (86 against 165 per second without
//! markers, `docs/reliability.md`). Two forms are read:
//! - a group (written now): named `ehr-upload:group-<nonce>:<unix time>`; its content is a
//!   header line and one record id per line, so the marker is found by its name and its
//!   records by reading it (it is pinned, so the read is local);
//! - one upload (written by earlier versions): name and content `ehr-upload:<record>:<unix
//!   time>`.

use bytes::Bytes;

use super::{IpfsError, KuboClient};

/// Prefix of every marker's pin name.
pub const PENDING: &str = "ehr-upload:";
/// What follows [`PENDING`] in a group marker's name.
const GROUP: &str = "group-";
/// The first line of a group marker's content.
const HEADER: &str = "ehr-upload-group v1";

/// A marker to pin: its pin name and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The pin name (`ehr-upload:group-<nonce>:<created>`).
    pub name: String,
    /// The bytes pinned: the header, the name, then the records, one per line. The name makes
    /// the content, and so the CID, unique to this group.
    pub content: Bytes,
}

impl Marker {
    /// The marker of `records` (their ids as they appear in their pin names), begun at
    /// `created` (unix seconds).
    pub fn group(records: &[String], created: u64) -> Self {
        let mut nonce = [0u8; 12];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let name = format!("{PENDING}{GROUP}{}:{created}", hex::encode(nonce));
        let mut content = format!("{HEADER}\n{name}\n");
        for r in records {
            content.push_str(r);
            content.push('\n');
        }
        Self {
            name,
            content: Bytes::from(content),
        }
    }
}

/// A marker pinned on a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The marker's CID.
    pub cid: String,
    /// When its upload (or group of uploads) began, unix seconds.
    pub created: u64,
    /// The records it stands for, as written (ids are checked by whoever uses them).
    pub records: Vec<String>,
}

/// The records of a group marker's `content`, if it is one (for the group `name`).
fn group_records(name: &str, content: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(content).ok()?;
    let mut lines = text.lines();
    if lines.next()? != HEADER || lines.next()? != name {
        return None;
    }
    Some(lines.filter(|l| !l.is_empty()).map(str::to_owned).collect())
}

/// `(head, created)` of a marker's pin name: `head` is `group-<nonce>` or a record id.
fn split_name(name: &str) -> Option<(&str, u64)> {
    let (head, created) = name.strip_prefix(PENDING)?.rsplit_once(':')?;
    Some((head, created.parse().ok()?))
}

/// The markers pinned on `peer`, each with its records (a group's read from its content).
/// Pins whose name only looks like a marker's are left out.
///
/// # Errors
/// When the peer cannot list its pins, or cannot give a group marker's content: then which
/// records are pending is not known, and nothing may be decided on a partial list.
pub async fn pending_on(peer: &KuboClient) -> Result<Vec<Pending>, IpfsError> {
    let mut out = Vec::new();
    for (cid, name) in peer.pins_named(PENDING).await? {
        let Some((head, created)) = split_name(&name) else {
            continue;
        };
        let records = if head.starts_with(GROUP) {
            let content = match peer.cat(&cid).await {
                Ok(c) => c,
                // Unpinned (and its blocks collected) since the listing: no longer pending.
                Err(IpfsError::NotFound { .. }) if !peer.is_pinned(&cid).await? => continue,
                Err(e) => return Err(e),
            };
            match group_records(&name, &content) {
                Some(r) => r,
                None => {
                    tracing::warn!("marker {cid} ({name}) does not hold a list of records");
                    continue;
                }
            }
        } else {
            vec![head.to_owned()]
        };
        out.push(Pending {
            cid,
            created,
            records,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_marker_names_its_records_and_is_unique() {
        let records = vec!["0xaa".to_owned(), "0xbb".to_owned()];
        let m = Marker::group(&records, 1234);
        let (head, created) = split_name(&m.name).unwrap();
        assert!(head.starts_with(GROUP));
        assert_eq!(created, 1234);
        assert_eq!(group_records(&m.name, &m.content), Some(records.clone()));
        assert_ne!(Marker::group(&records, 1234), m, "two groups, two CIDs");
        // Content of another group, or not a group at all, is refused.
        let other = Marker::group(&records, 1234);
        assert_eq!(group_records(&m.name, &other.content), None);
        assert_eq!(group_records(&m.name, b"ehr-upload:0xaa:5"), None);
    }

    #[test]
    fn single_markers_of_earlier_versions_still_parse() {
        assert_eq!(split_name("ehr-upload:0xab:17"), Some(("0xab", 17)));
        assert_eq!(split_name("ehr-upload:0xab"), None);
        assert_eq!(split_name("ehr-record:0xab:17"), None);
    }
}

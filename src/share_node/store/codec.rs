//! The store's binary layout (format 2): fixed-width fields and length-prefixed bytes, no text.
//!
//! Format 1 kept each row as JSON with the sealed part hex-encoded, and inside it the share,
//! commitments and sealed block as hex strings again: about 4 times the bytes of the values.
//! A format-1 store is rewritten once when it is opened (`ShareStore::open`).
//!
//! - public part: patient (16, big-endian) | uploader (20) | salt (32) | digest (32) |
//!   stored_at (8, big-endian) | 0, or 1 | root (32) | n (1) | n proof hashes (32 each);
//! - a row of the shares table: the public part, then the value sealed at rest;
//! - the sealed plaintext: share (u16 length + bytes) | commitments (u16 length + bytes) |
//!   sealed block (u32 length + bytes).

use alloy::primitives::{Address, B256};

use super::{Anchor, PublicRecord};

/// The layout version kept in the `meta` table.
pub(super) const FORMAT: &str = "2";

/// Appends the public part of a record.
pub(super) fn put_public(p: &PublicRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(&p.patient.to_be_bytes());
    out.extend_from_slice(p.uploader.as_slice());
    out.extend_from_slice(p.salt.as_slice());
    out.extend_from_slice(p.digest.as_slice());
    out.extend_from_slice(&p.stored_at.to_be_bytes());
    match &p.anchor {
        None => out.push(0),
        Some(a) => {
            out.push(1);
            out.extend_from_slice(a.root.as_slice());
            // A node accepts proofs of at most 64 hashes.
            out.push(u8::try_from(a.proof.len()).unwrap_or(u8::MAX));
            for h in &a.proof {
                out.extend_from_slice(h.as_slice());
            }
        }
    }
}

/// The public part at the start of `b`, and the bytes it took.
pub(super) fn get_public(b: &[u8]) -> Result<(PublicRecord, usize), String> {
    let mut r = Reader { b, at: 0 };
    let patient = u128::from_be_bytes(r.array()?);
    let uploader = Address::from(r.array::<20>()?);
    let salt = B256::from(r.array::<32>()?);
    let digest = B256::from(r.array::<32>()?);
    let stored_at = u64::from_be_bytes(r.array()?);
    let anchor = match r.array::<1>()?[0] {
        0 => None,
        1 => {
            let root = B256::from(r.array::<32>()?);
            let n = r.array::<1>()?[0];
            let proof = (0..n)
                .map(|_| r.array::<32>().map(B256::from))
                .collect::<Result<_, _>>()?;
            Some(Anchor { root, proof })
        }
        t => return Err(format!("anchor tag {t}")),
    };
    Ok((
        PublicRecord {
            patient,
            uploader,
            salt,
            digest,
            anchor,
            stored_at,
        },
        r.at,
    ))
}

/// The plaintext sealed at rest, from the hex the wire carries.
pub(super) fn put_secret(
    share: &str,
    commitments: &str,
    sealed_block: &str,
) -> Result<Vec<u8>, String> {
    let bytes =
        |what: &str, h: &str| crate::strict_hex::decode(h).map_err(|e| format!("{what}: {e}"));
    let (s, c, b) = (
        bytes("share", share)?,
        bytes("commitments", commitments)?,
        bytes("sealed block", sealed_block)?,
    );
    let mut out = Vec::with_capacity(8 + s.len() + c.len() + b.len());
    for (part, width) in [(&s, 2), (&c, 2), (&b, 4)] {
        let len = u32::try_from(part.len()).map_err(|_| "a part over 4 GiB".to_owned())?;
        if width == 2 {
            let len =
                u16::try_from(len).map_err(|_| "a share or commitments over 64 KiB".to_owned())?;
            out.extend_from_slice(&len.to_be_bytes());
        } else {
            out.extend_from_slice(&len.to_be_bytes());
        }
        out.extend_from_slice(part);
    }
    Ok(out)
}

/// Share, commitments and sealed block, as hex, from the plaintext.
pub(super) fn get_secret(b: &[u8]) -> Result<(String, String, String), String> {
    let mut r = Reader { b, at: 0 };
    let share_len = usize::from(u16::from_be_bytes(r.array()?));
    let share = r.bytes(share_len)?;
    let commitments_len = usize::from(u16::from_be_bytes(r.array()?));
    let commitments = r.bytes(commitments_len)?;
    let block_len = usize::try_from(u32::from_be_bytes(r.array()?)).map_err(|e| e.to_string())?;
    let block = r.bytes(block_len)?;
    if r.at != b.len() {
        return Err("bytes after the sealed block".into());
    }
    Ok((
        crate::strict_hex::encode(share),
        crate::strict_hex::encode(commitments),
        crate::strict_hex::encode(block),
    ))
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let end =
            end.ok_or_else(|| format!("row ends at {} of {} bytes", self.b.len(), self.at + n))?;
        let out = &self.b[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(anchor: Option<Anchor>) -> PublicRecord {
        PublicRecord {
            patient: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
            uploader: Address::repeat_byte(0xaa),
            salt: B256::repeat_byte(1),
            digest: B256::repeat_byte(2),
            anchor,
            stored_at: 1_790_000_000,
        }
    }

    #[test]
    fn public_parts_round_trip_and_say_where_they_end() {
        for anchor in [
            None,
            Some(Anchor {
                root: B256::repeat_byte(3),
                proof: vec![B256::repeat_byte(4), B256::repeat_byte(5)],
            }),
        ] {
            let p = record(anchor);
            let mut b = Vec::new();
            put_public(&p, &mut b);
            b.extend_from_slice(b"sealed");
            let (back, n) = get_public(&b).unwrap();
            assert_eq!(back, p);
            assert_eq!(&b[n..], b"sealed");
        }
    }

    #[test]
    fn secrets_round_trip_and_truncation_is_an_error() {
        let b = put_secret("01ff", "0203", "deadbeef").unwrap();
        assert_eq!(b.len(), 2 + 2 + 2 + 2 + 4 + 4);
        assert_eq!(
            get_secret(&b).unwrap(),
            ("01ff".into(), "0203".into(), "deadbeef".into())
        );
        for cut in 0..b.len() {
            assert!(get_secret(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(get_secret(&long).is_err());
        let mut p = Vec::new();
        put_public(&record(None), &mut p);
        for cut in 0..p.len() {
            assert!(get_public(&p[..cut]).is_err(), "cut at {cut}");
        }
        assert!(put_secret("zz", "", "").is_err());
    }
}

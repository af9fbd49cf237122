//! The journal of the development chain's transactions since its state file was last copied
//! aside: the signed bytes of every transaction, in the order the chain mined them, each with
//! its block number. `stack::AnvilState` appends to it before an upload is acknowledged and
//! replays it after anvil restarts, so a crash loses nothing acknowledged without a dump of
//! the whole chain per upload batch.
//!
//! The file is a run of records `block (u64, big-endian) | length (u32, big-endian) | bytes`.
//! Records are only appended (and `fsync`ed before [`append`] returns) or the file replaced
//! whole by [`retain_after`], so a crash leaves at worst a cut last record, which [`read`]
//! ignores: it was never acknowledged.

use std::io::Write;
use std::path::Path;

/// Largest transaction a record may hold: anything longer is a damaged length field.
const MAX_TX_BYTES: usize = 1 << 20;
const HEADER: usize = 12;

/// One journaled transaction: the block it was mined in, and its signed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// Its block on the chain that journaled it.
    pub(super) block: u64,
    /// The signed transaction (EIP-2718 envelope), as `eth_sendRawTransaction` takes it.
    pub(super) raw: Vec<u8>,
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| HEADER + e.raw.len()).sum());
    for e in entries {
        out.extend_from_slice(&e.block.to_be_bytes());
        out.extend_from_slice(&u32::try_from(e.raw.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&e.raw);
    }
    out
}

/// Parses a journal's bytes: every whole record, up to the first cut or damaged one, and the
/// length they take.
fn decode(mut bytes: &[u8]) -> (Vec<Entry>, usize) {
    let mut out = Vec::new();
    let mut whole = 0;
    while bytes.len() >= HEADER {
        let block = u64::from_be_bytes(bytes[..8].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(bytes[8..HEADER].try_into().unwrap_or_default()) as usize;
        if len == 0 || len > MAX_TX_BYTES || bytes.len() < HEADER + len {
            break;
        }
        out.push(Entry {
            block,
            raw: bytes[HEADER..HEADER + len].to_vec(),
        });
        bytes = &bytes[HEADER + len..];
        whole += HEADER + len;
    }
    (out, whole)
}

/// The entries of the journal at `path` (none when there is no file).
///
/// # Errors
/// When the file exists but cannot be read.
pub(super) fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(decode(&bytes).0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Cuts the journal after its last whole record (a crash in the middle of an append leaves a
/// cut one, never acknowledged), so that appends go on where [`read`] can see them; returns
/// how many bytes were cut.
///
/// # Errors
/// When the file exists but cannot be read, cut or synced.
pub(super) fn repair(path: &Path) -> std::io::Result<u64> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let whole = decode(&bytes).1;
    if whole == bytes.len() {
        return Ok(0);
    }
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(whole as u64)?;
    f.sync_all()?;
    Ok((bytes.len() - whole) as u64)
}

/// Appends `entries` and returns once they are on disk (the file's creation too). A failed
/// append takes back what it wrote, so the next one does not follow a cut record.
///
/// # Errors
/// When an entry is empty or larger than a record holds, or the file cannot be opened,
/// written or synced.
pub(super) fn append(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    if let Some(e) = entries
        .iter()
        .find(|e| e.raw.is_empty() || e.raw.len() > MAX_TX_BYTES)
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a transaction of {} bytes in block {} does not fit a journal record",
                e.raw.len(),
                e.block
            ),
        ));
    }
    let created = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let before = f.metadata()?.len();
    let written = f.write_all(&encode(entries)).and_then(|()| f.sync_data());
    if let Err(e) = written {
        // Best effort: if this fails too, the cut record ends what `read` returns.
        let _ = f.set_len(before).and_then(|()| f.sync_data());
        return Err(e);
    }
    if created {
        sync_dir(path);
    }
    Ok(())
}

/// Keeps only the entries of blocks after `block` (those before are in a copy of the state
/// file that anvil can load), replacing the file whole; returns how many were dropped.
///
/// # Errors
/// When the journal cannot be read or replaced.
pub(super) fn retain_after(path: &Path, block: u64) -> std::io::Result<usize> {
    let entries = read(path)?;
    let kept: Vec<Entry> = entries
        .iter()
        .filter(|e| e.block > block)
        .cloned()
        .collect();
    let dropped = entries.len() - kept.len();
    if dropped == 0 {
        return Ok(0);
    }
    replace(path, &kept)?;
    Ok(dropped)
}

/// Replaces the journal with `entries`, whole or not at all.
///
/// # Errors
/// When the file cannot be written, synced or renamed.
pub(super) fn replace(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    let tmp = path.with_extension("journal.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&encode(entries))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path);
    Ok(())
}

/// Makes a file's creation or renaming durable (best effort: some file systems refuse to open
/// a folder).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(block: u64, len: usize) -> Entry {
        Entry {
            block,
            raw: (0..len).map(|i| (i as u8) ^ (block as u8)).collect(),
        }
    }

    #[test]
    fn appended_entries_read_back_in_order_and_a_cut_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.journal");
        assert!(read(&path).unwrap().is_empty());
        let first = vec![entry(5, 120), entry(5, 3), entry(7, 300)];
        append(&path, &first).unwrap();
        append(&path, &[entry(9, 44)]).unwrap();
        let mut all = first.clone();
        all.push(entry(9, 44));
        assert_eq!(read(&path).unwrap(), all);

        // A crash in the middle of an append leaves a cut record: every earlier one stays.
        let bytes = std::fs::read(&path).unwrap();
        for cut in [1, HEADER - 1, HEADER, HEADER + 43] {
            std::fs::write(&path, &bytes[..bytes.len() - 56 + cut]).unwrap();
            assert_eq!(read(&path).unwrap(), first, "cut after {cut} bytes");
        }
        // Zeros where the file system extended the file but never wrote the record.
        let mut zeroed = bytes[..bytes.len() - 56].to_vec();
        zeroed.extend_from_slice(&[0; 56]);
        std::fs::write(&path, &zeroed).unwrap();
        assert_eq!(read(&path).unwrap(), first);

        // Repaired, the next append follows the last whole record and reads back.
        assert_eq!(repair(&path).unwrap(), 56);
        assert_eq!(repair(&path).unwrap(), 0);
        append(&path, &[entry(11, 7)]).unwrap();
        let mut after = first.clone();
        after.push(entry(11, 7));
        assert_eq!(read(&path).unwrap(), after);
    }

    #[test]
    fn entries_no_record_can_hold_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.journal");
        append(&path, &[entry(1, 10)]).unwrap();
        for bad in [entry(2, 0), entry(2, MAX_TX_BYTES + 1)] {
            let err = append(&path, &[entry(2, 5), bad]).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        }
        assert_eq!(read(&path).unwrap(), vec![entry(1, 10)]);
    }

    #[test]
    fn retaining_drops_the_blocks_a_saved_state_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.journal");
        append(
            &path,
            &[entry(3, 10), entry(4, 10), entry(4, 11), entry(6, 12)],
        )
        .unwrap();
        assert_eq!(retain_after(&path, 2).unwrap(), 0);
        assert_eq!(retain_after(&path, 4).unwrap(), 3);
        assert_eq!(read(&path).unwrap(), vec![entry(6, 12)]);
        // Appends go on after the rewrite.
        append(&path, &[entry(8, 5)]).unwrap();
        assert_eq!(read(&path).unwrap(), vec![entry(6, 12), entry(8, 5)]);
        assert_eq!(retain_after(&path, 8).unwrap(), 2);
        assert!(read(&path).unwrap().is_empty());
    }
}

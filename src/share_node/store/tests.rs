//! Unit tests of the parent module.

use super::*;
use crate::crypto::derive_key;

fn share(v: &str) -> StoredShare {
    StoredShare {
        patient: 1,
        uploader: Address::repeat_byte(7),
        salt: B256::repeat_byte(1),
        digest: B256::repeat_byte(2),
        anchor: None,
        share: hex::encode(v),
        commitments: "0c".into(),
        sealed_block: "0b".into(),
        stored_at: 1,
    }
}

fn binding(id: u8) -> Binding {
    Binding {
        chain_id: 31337,
        contract: Address::repeat_byte(9),
        deployment_id: B256::repeat_byte(id),
        code_hash: B256::repeat_byte(3),
    }
}

fn key() -> AeadKey {
    derive_key(b"node", "share-store")
}

#[test]
fn survives_reopen_and_refuses_a_different_share() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.redb");
    {
        let s = ShareStore::open(&p, key(), &binding(1)).unwrap();
        s.put(&[1; 32], &share("a"), 10).unwrap();
        s.put(&[1; 32], &share("a"), 10).unwrap();
        assert!(matches!(
            s.put(&[1; 32], &share("b"), 10),
            Err(StoreError::Conflict(_))
        ));
        assert!(s.use_nonce(&[2; 20], &[3; 32], 9).unwrap());
    }
    let s = ShareStore::open(&p, key(), &binding(1)).unwrap();
    assert_eq!(s.get(&[1; 32]).unwrap(), Some(share("a")));
    assert_eq!(s.get(&[9; 32]).unwrap(), None);
    assert!(
        !s.use_nonce(&[2; 20], &[3; 32], 9).unwrap(),
        "a nonce is used once, across restarts"
    );
    assert_eq!(s.count().unwrap(), 1);
    assert_eq!(s.prune_nonces(10).unwrap(), 1);
    assert_eq!(s.nonce_count().unwrap(), 0);
}

#[test]
fn a_deposit_and_its_nonce_are_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = ShareStore::open(&dir.path().join("s.redb"), key(), &binding(1)).unwrap();
    let up = [7; 20];
    assert!(
        s.put_once(&[1; 32], &share("a"), 10, &up, &[1; 32], 9)
            .unwrap()
    );
    assert!(
        !s.put_once(&[1; 32], &share("a"), 10, &up, &[1; 32], 9)
            .unwrap(),
        "a replayed deposit request is refused, even for the same share"
    );
    // A refused deposit (another share for the record) leaves its nonce unused.
    assert!(matches!(
        s.put_once(&[1; 32], &share("b"), 10, &up, &[2; 32], 9),
        Err(StoreError::Conflict(_))
    ));
    assert!(s.use_nonce(&up, &[2; 32], 9).unwrap());
    // A replay stores nothing: a new record under a used nonce is not written.
    assert!(
        !s.put_once(&[5; 32], &share("c"), 10, &up, &[1; 32], 9)
            .unwrap()
    );
    assert_eq!(s.get(&[5; 32]).unwrap(), None);
    assert_eq!((s.count().unwrap(), s.nonce_count().unwrap()), (1, 2));
}

/// A batch of deposits gives each one the outcome it would have alone, in one write: a
/// replay, a conflicting share, an uploader over quota and a nonce used twice within the
/// batch are refused one by one, and a refused deposit leaves its nonce unused.
#[test]
fn a_batch_of_deposits_judges_each_as_alone_in_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = ShareStore::open(&dir.path().join("s.redb"), key(), &binding(1)).unwrap();
    let up = [7; 20];
    assert!(
        s.put_once(&[1; 32], &share("a"), 4, &up, &[1; 32], 9)
            .unwrap()
    );
    fn d<'a>(record: &'a [u8; 32], share: &'a StoredShare, nonce: &'a [u8; 32]) -> OnceDeposit<'a> {
        OnceDeposit {
            record,
            share,
            quota: 4,
            uploader: &[7; 20],
            nonce,
            deadline: 9,
        }
    }
    let (a, b, c) = (&share("a"), &share("b"), &share("c"));
    let outcomes = s
        .put_once_many(&[
            d(&[2; 32], a, &[1; 32]), // nonce used before the batch: replay
            d(&[1; 32], b, &[2; 32]), // another share for record 1: conflict
            d(&[3; 32], c, &[3; 32]), // stored
            d(&[4; 32], c, &[3; 32]), // the nonce just used in this batch: replay
            d(&[5; 32], c, &[4; 32]), // stored (the uploader's third of 4)
            d(&[6; 32], c, &[5; 32]), // stored (fourth)
            d(&[7; 32], c, &[6; 32]), // over quota
        ])
        .unwrap();
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|o| match o {
            Ok(true) => "stored",
            Ok(false) => "replay",
            Err(StoreError::Conflict(_)) => "conflict",
            Err(StoreError::QuotaExceeded { .. }) => "quota",
            Err(_) => "error",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "replay", "conflict", "stored", "replay", "stored", "stored", "quota"
        ]
    );
    assert_eq!(s.get(&[1; 32]).unwrap(), Some(share("a")), "kept");
    assert_eq!(s.get(&[2; 32]).unwrap(), None);
    assert_eq!(s.get(&[4; 32]).unwrap(), None);
    assert_eq!(s.get(&[7; 32]).unwrap(), None);
    assert_eq!(s.count().unwrap(), 4);
    assert!(
        s.use_nonce(&up, &[2; 32], 9).unwrap() && s.use_nonce(&up, &[6; 32], 9).unwrap(),
        "refused deposits leave their nonces unused"
    );
    assert!(
        !s.use_nonce(&up, &[4; 32], 9).unwrap(),
        "a stored one's is used"
    );

    // Proofs in one write: each record stored here is anchored, one that is not is named.
    let anchor = Anchor {
        root: B256::repeat_byte(5),
        proof: vec![B256::repeat_byte(6)],
    };
    let found = s
        .mark_anchored_many(&[
            ([3; 32], anchor.clone()),
            ([9; 32], anchor.clone()),
            ([5; 32], anchor.clone()),
        ])
        .unwrap();
    assert_eq!(found, [true, false, true]);
    assert_eq!(s.get(&[3; 32]).unwrap().unwrap().anchor, Some(anchor));
    assert_eq!(s.pending_count().unwrap(), 2, "records 1 and 6 wait");
    assert_eq!(
        s.anchored_of(1, None, 10).unwrap().len(),
        2,
        "listed once anchored"
    );
}

#[test]
fn release_nonces_are_refused_at_once_and_written_with_the_next_flush() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.redb");
    let who = [4; 20];
    {
        let s = ShareStore::open(&p, key(), &binding(1)).unwrap();
        assert!(!s.flush().unwrap(), "nothing to write yet");
        assert!(s.use_release_nonce(&who, &[1; 32], 9).unwrap());
        assert!(
            !s.use_release_nonce(&who, &[1; 32], 9).unwrap(),
            "a replay is refused before any flush"
        );
        assert!(!s.use_nonce(&who, &[1; 32], 9).unwrap(), "one nonce table");
        assert!(s.flush().unwrap());
        assert!(!s.flush().unwrap(), "written once");
    }
    let s = ShareStore::open(&p, key(), &binding(1)).unwrap();
    assert!(!s.use_release_nonce(&who, &[1; 32], 9).unwrap());
    assert_eq!(s.nonce_count().unwrap(), 1);
}

/// What a crash would leave: copies of the open store's file, before and after a flush.
#[test]
fn a_flush_makes_release_nonces_durable() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.redb");
    let who = [4; 20];
    let s = ShareStore::open(&p, key(), &binding(1)).unwrap();
    assert!(s.use_release_nonce(&who, &[1; 32], 9).unwrap());
    std::fs::copy(&p, dir.path().join("before.redb")).unwrap();
    assert!(s.flush().unwrap());
    std::fs::copy(&p, dir.path().join("after.redb")).unwrap();
    let before = ShareStore::open(&dir.path().join("before.redb"), key(), &binding(1)).unwrap();
    assert_eq!(
        before.nonce_count().unwrap(),
        0,
        "not on disk before the flush"
    );
    let after = ShareStore::open(&dir.path().join("after.redb"), key(), &binding(1)).unwrap();
    assert!(
        !after.use_release_nonce(&who, &[1; 32], 9).unwrap(),
        "on disk after it"
    );
}

#[test]
fn bound_to_one_deployment_and_encrypted_under_the_node_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.redb");
    {
        let s = ShareStore::open(&p, key(), &binding(1)).unwrap();
        s.put(&[1; 32], &share("SECRET-SHARE-MARKER"), 10).unwrap();
    }
    assert!(matches!(
        ShareStore::open(&p, key(), &binding(2)),
        Err(StoreError::BoundElsewhere { .. })
    ));
    let raw = std::fs::read(&p).unwrap();
    assert!(
        !raw.windows(19).any(|w| w == b"SECRET-SHARE-MARKER"),
        "the share is not in the file in clear"
    );
    let thief = ShareStore::open(&p, derive_key(b"other", "share-store"), &binding(1)).unwrap();
    assert!(matches!(
        thief.get(&[1; 32]),
        Err(StoreError::Undecryptable(_))
    ));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn quota_and_collection_of_unanchored_deposits() {
    let dir = tempfile::tempdir().unwrap();
    let s = ShareStore::open(&dir.path().join("s.redb"), key(), &binding(1)).unwrap();
    s.put(&[1; 32], &share("a"), 2).unwrap();
    s.put(&[2; 32], &share("a"), 2).unwrap();
    assert!(matches!(
        s.put(&[3; 32], &share("a"), 2),
        Err(StoreError::QuotaExceeded { pending: 2, .. })
    ));
    let anchor = Anchor {
        root: B256::repeat_byte(5),
        proof: vec![B256::repeat_byte(6)],
    };
    assert!(s.mark_anchored(&[1; 32], &anchor).unwrap());
    assert!(
        !s.mark_anchored(&[9; 32], &anchor).unwrap(),
        "nothing stored"
    );
    s.put(&[3; 32], &share("a"), 2).unwrap();
    assert_eq!(s.pending_before(2, 10).unwrap().len(), 2);
    for r in s.pending_before(2, 10).unwrap() {
        s.remove_unanchored(&r).unwrap();
    }
    assert_eq!(s.count().unwrap(), 1, "the anchored share stays");
    assert_eq!(s.pending_count().unwrap(), 0);
    let kept = s.get(&[1; 32]).unwrap().unwrap();
    assert_eq!(
        kept.anchor,
        Some(anchor.clone()),
        "the proof is kept with the share"
    );
    let listed = s.anchored_of(1, None, 10).unwrap();
    assert_eq!(listed.len(), 1, "only anchored records are listed");
    assert_eq!(
        (listed[0].0, listed[0].1.anchor.as_ref()),
        ([1; 32], Some(&anchor))
    );
    assert!(
        s.anchored_of(2, None, 10).unwrap().is_empty(),
        "per patient"
    );
    assert!(
        s.anchored_of(1, Some([1; 32]), 10).unwrap().is_empty(),
        "paged after"
    );
}

#[test]
fn a_store_of_json_rows_is_rewritten_in_the_binary_layout_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.redb");
    drop(ShareStore::open(&p, key(), &binding(1)).unwrap());
    // What a node of the previous version left: JSON rows, hex inside, no layout mark.
    let anchor = Anchor {
        root: B256::repeat_byte(5),
        proof: vec![B256::repeat_byte(6), B256::repeat_byte(7)],
    };
    let old = share("an old share");
    {
        let raw = Database::create(&p).unwrap();
        let tx = raw.begin_write().unwrap();
        {
            tx.open_table(META).unwrap().remove("format").unwrap();
            let bound = aad(&[1; 32], old.patient, old.uploader, old.digest);
            let secret = LegacySecret {
                share: old.share.clone(),
                commitments: old.commitments.clone(),
                sealed_block: old.sealed_block.clone(),
            };
            let row = LegacyRow {
                patient: old.patient,
                uploader: old.uploader,
                salt: old.salt,
                digest: old.digest,
                anchor: Some(anchor.clone()),
                stored_at: old.stored_at,
                sealed: seal_at_rest(&key(), &bound, &serde_json::to_vec(&secret).unwrap()),
            };
            let json = serde_json::to_vec(&row).unwrap();
            tx.open_table(SHARES)
                .unwrap()
                .insert(&[1; 32], json.as_slice())
                .unwrap();
            let listed = serde_json::to_vec(&row.public()).unwrap();
            tx.open_table(BY_PATIENT)
                .unwrap()
                .insert(&patient_key(old.patient, &[1; 32]), listed.as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let row_len = {
        let s = ShareStore::open(&p, key(), &binding(1)).unwrap();
        let got = s.get(&[1; 32]).unwrap().unwrap();
        assert_eq!(got.share, old.share);
        assert_eq!(got.anchor, Some(anchor.clone()));
        assert_eq!(
            s.anchored_of(old.patient, None, 10).unwrap()[0].1.anchor,
            Some(anchor.clone())
        );
        let tx = s.handle().unwrap().begin_read().unwrap();
        let row = tx
            .open_table(SHARES)
            .unwrap()
            .get(&[1; 32])
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        assert!(!row.starts_with(b"{"), "the row is binary now");
        row.len()
    };
    // Opened again, nothing is rewritten twice and everything still reads.
    let s = ShareStore::open(&p, key(), &binding(1)).unwrap();
    assert_eq!(s.get(&[1; 32]).unwrap().unwrap().share, old.share);
    assert!(
        row_len < 300,
        "{row_len} bytes for a row with a two-hash proof"
    );
}

#[test]
fn a_store_of_a_newer_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.redb");
    drop(ShareStore::open(&p, key(), &binding(1)).unwrap());
    {
        let raw = Database::create(&p).unwrap();
        let tx = raw.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("format", b"3".as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let e = ShareStore::open(&p, key(), &binding(1)).unwrap_err();
    assert!(e.to_string().contains("newer version"), "{e}");
}

/// A full disk (a tmpfs of 4 MiB, filled up) fails a write; redb then refuses everything
/// until the file is opened again. Once there is room, the store reopens by itself: shares
/// stored before are all there and new ones are taken, with no restart. Needs root (mount).
#[test]
fn a_full_disk_fails_writes_and_the_store_recovers_when_room_returns() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs needs root");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(dir.path());
    let s = ShareStore::open(&dir.path().join("s.redb"), key(), &binding(1)).unwrap();
    for i in 0..10u8 {
        s.put(&[i; 32], &share("kept"), 1_000).unwrap();
    }
    // Fill what is left of the disk.
    let filler = dir.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 64 << 10]).is_ok() {}
        let _ = f.sync_all();
    }
    let mut failed_at = None;
    for i in 10..5_000u32 {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_be_bytes());
        if s.put(&id, &share(&"x".repeat(2_000)), 10_000).is_err() {
            failed_at = Some(i);
            break;
        }
    }
    assert!(failed_at.is_some(), "the full disk never failed a write");
    // Room again: within a couple of operations the store answers, with every earlier share.
    std::fs::remove_file(&filler).unwrap();
    let mut answered = false;
    for _ in 0..3 {
        if s.count().is_ok() {
            answered = true;
            break;
        }
    }
    assert!(
        answered,
        "the store stayed broken after the disk had room again"
    );
    for i in 0..10u8 {
        assert_eq!(s.get(&[i; 32]).unwrap(), Some(share("kept")));
    }
    s.put(&[200; 32], &share("after"), 10_000).unwrap();
    assert_eq!(s.get(&[200; 32]).unwrap(), Some(share("after")));
}

#[test]
fn an_import_stores_anchored_records_as_deposits_and_proofs_do_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = ShareStore::open(&dir.path().join("s.redb"), key(), &binding(1)).unwrap();
    let anchor = Anchor {
        root: B256::repeat_byte(5),
        proof: vec![B256::repeat_byte(6)],
    };
    let anchored = |v: &str| StoredShare {
        anchor: Some(anchor.clone()),
        ..share(v)
    };
    // The same record by the deposit and proof path, in a second store, for comparison.
    let other = ShareStore::open(&dir.path().join("o.redb"), key(), &binding(1)).unwrap();
    other.put(&[1; 32], &share("a"), 10).unwrap();
    assert!(other.mark_anchored(&[1; 32], &anchor).unwrap());

    s.import_anchored(&[([1; 32], anchored("a")), ([2; 32], anchored("b"))])
        .unwrap();
    assert_eq!(s.get(&[1; 32]).unwrap(), other.get(&[1; 32]).unwrap());
    assert_eq!(s.count().unwrap(), 2);
    assert_eq!(
        s.pending_count().unwrap(),
        0,
        "imported records wait for nothing"
    );
    assert_eq!(s.anchored_of(1, None, 10).unwrap().len(), 2);

    // A conflicting row or one without its anchor fails the whole import.
    assert!(matches!(
        s.import_anchored(&[([3; 32], anchored("c")), ([1; 32], anchored("z"))]),
        Err(StoreError::Conflict(_))
    ));
    assert!(s.import_anchored(&[([4; 32], share("d"))]).is_err());
    assert_eq!(s.count().unwrap(), 2);
    assert_eq!(s.get(&[3; 32]).unwrap(), None);
}

#[test]
fn the_newest_records_of_a_patient_are_a_range_read_at_any_count_and_old_stores_get_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = ShareStore::open(&path, key(), &binding(1)).unwrap();
    let anchor = Anchor {
        root: B256::repeat_byte(5),
        proof: vec![],
    };
    // More records than a listing by id pages through (10,000), stored over time in an
    // order unrelated to their ids; and another patient's, newer still.
    let n: u64 = 12_000;
    let id_of = |i: u64| {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes());
        id
    };
    let rows: Vec<([u8; 32], StoredShare)> = (0..n)
        .map(|i| {
            (
                id_of(i),
                StoredShare {
                    anchor: Some(anchor.clone()),
                    stored_at: 1_000 + i,
                    ..share("a")
                },
            )
        })
        .collect();
    for chunk in rows.chunks(1_000) {
        s.import_anchored(chunk).unwrap();
    }
    s.import_anchored(&[(
        [0xee; 32],
        StoredShare {
            patient: 2,
            anchor: Some(anchor.clone()),
            stored_at: 1_000_000,
            ..share("b")
        },
    )])
    .unwrap();
    let expect: Vec<[u8; 32]> = (n - 50..n).rev().map(id_of).collect();
    let check = |s: &ShareStore| {
        let (newest, total) = s.newest_of(1, 50).unwrap();
        assert_eq!(total, n);
        assert_eq!(
            newest.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            expect,
            "the 50 stored last, newest first"
        );
        assert!(
            newest
                .iter()
                .all(|(_, p)| p.patient == 1 && p.anchor.is_some())
        );
        assert_eq!(s.newest_of(2, 50).unwrap().1, 1);
        assert_eq!(s.newest_of(3, 50).unwrap(), (vec![], 0));
        // A later page: those stored at or before a time, newest first.
        let (page, total) = s.newest_until(1, 1_000 + 5_000, None, 3).unwrap();
        assert_eq!(total, n);
        assert_eq!(
            page.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![id_of(5_000), id_of(4_999), id_of(4_998)]
        );
        assert!(s.newest_until(1, 999, None, 3).unwrap().0.is_empty());
        // Below a record stored at that time: the ones before it.
        let (page, _) = s
            .newest_until(1, 1_000 + 5_000, Some(id_of(5_000)), 2)
            .unwrap();
        assert_eq!(
            page.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![id_of(4_999), id_of(4_998)]
        );
    };
    check(&s);
    // A store written before the time index: it is built when the store opens.
    drop(s);
    {
        let database = Database::create(&path).unwrap();
        let tx = database.begin_write().unwrap();
        tx.delete_table(BY_PATIENT_TIME).unwrap();
        tx.delete_table(PATIENT_COUNTS).unwrap();
        tx.commit().unwrap();
    }
    let s = ShareStore::open(&path, key(), &binding(1)).unwrap();
    check(&s);
    // Counts lost alone are counted again.
    drop(s);
    {
        let database = Database::create(&path).unwrap();
        let tx = database.begin_write().unwrap();
        tx.delete_table(PATIENT_COUNTS).unwrap();
        tx.commit().unwrap();
    }
    let s = ShareStore::open(&path, key(), &binding(1)).unwrap();
    check(&s);
    // A record listed by a version without the index (it writes the per-patient index only):
    // the next open indexes it too.
    drop(s);
    {
        let database = Database::create(&path).unwrap();
        let tx = database.begin_write().unwrap();
        let public = StoredShare {
            anchor: Some(anchor.clone()),
            stored_at: 5_000_000,
            ..share("c")
        }
        .public();
        let mut listed = Vec::new();
        codec::put_public(&public, &mut listed);
        tx.open_table(BY_PATIENT)
            .unwrap()
            .insert(&patient_key(1, &[0xcc; 32]), listed.as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let s = ShareStore::open(&path, key(), &binding(1)).unwrap();
    let (newest, total) = s.newest_of(1, 2).unwrap();
    assert_eq!(total, n + 1);
    assert_eq!(
        newest.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![[0xcc; 32], id_of(n - 1)]
    );
}

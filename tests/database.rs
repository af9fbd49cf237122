//! The gateway's database on both backends it supports (issue #9): SQLite (a file, the
//! default) and MariaDB (Debian's server, started by the fixture with a throw-away data
//! folder). The same scenarios run on each: migrations, accounts, races for one name, the
//! token limit under concurrent creation, sessions, the event index; then the web app keeps
//! its users, sessions and API tokens across a restart.

mod common;

use std::collections::HashSet;

use alloy::primitives::{Address, B256};
use ehr_share::chain::{AuditKind, IndexStore, PatientAddr};
use ehr_share::db::{Backend, Database, EventStore};
use ehr_share::web::{AccountError, AccountStore, ProviderProfile, Role, Sessions, TokenStore};

use common::web::{Web, browser, create_token, csrf, form_token, login};

/// The ingestion tables: readings with their nonces, sums, a claim, the seal, refusals (MySQL
/// returns SUM as DECIMAL, which the Any driver cannot read: the queries cast).
async fn readings(db: &Database) {
    use ehr_share::db::NewReading;
    let row = |device: &str, nonce: u64, at: u64| NewReading {
        device: device.into(),
        nonce,
        signed_at: at / 1000,
        patient_aid: 3,
        patient_pid: u64::MAX,
        received_at: at,
        observations: 2,
        observed: (i64::try_from(at).unwrap(), i64::try_from(at).unwrap() + 5),
        envelope: vec![7; 100],
    };
    let r = db
        .insert_readings(&[
            row("0xa", u64::MAX, 1000),
            row("0xa", 1, 2000),
            row("0xa", 1, 2000),
        ])
        .await
        .unwrap();
    assert!(r[0].is_ok() && r[1].is_ok() && r[2].is_err(), "{r:?}");
    let w = db.waiting_readings().await.unwrap();
    assert_eq!((w.len(), w[0].observations, w[0].oldest_ms), (1, 4, 1000));
    let s = db
        .claim_readings("seal-1", 3, u64::MAX, (10, u64::MAX), 50)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (s.envelopes, s.observations, s.observed),
        (2, 4, (1000, 2005))
    );
    assert_eq!(db.seal_envelopes("seal-1").await.unwrap().len(), 2);
    db.finish_seal("seal-1", "0xrecord", 60).await.unwrap();
    db.count_refusals(1, "forged", 2).await.unwrap();
    db.count_refusals(1, "forged", 1).await.unwrap();
    let st = db.ingest_stats(0).await.unwrap();
    assert_eq!(
        (
            st.sealed_records,
            st.sealed_observations,
            st.waiting_envelopes
        ),
        (1, 4, 0)
    );
    assert_eq!(st.refusals, vec![("forged".to_owned(), 3)]);
    let sealed = db.sealed_windows(3, u64::MAX, 0, 5000, 10).await.unwrap();
    assert_eq!(sealed[0].record.as_deref(), Some("0xrecord"));
}

/// Idempotency keys: claimed, recorded, scoped, refused for another request, freed (only by
/// the try that made the row), expired and taken over.
async fn idempotency_keys(db: &Database) {
    use ehr_share::db::{Claim, IDEMPOTENCY_TTL_SECS};
    let (scope, other_scope) = ("a".repeat(64), "b".repeat(64));
    let (fp, other_fp) = ("1".repeat(64), "2".repeat(64));
    let key = "c".repeat(64);
    let tx = format!("0x{}", "ab".repeat(32));
    // Far from the clock of other tests' rows; expired rows are swept at most hourly.
    let now = 1_900_000_000
        + u64::from(u16::from_be_bytes([
            ehr_share::chain::random_b256()[0],
            ehr_share::chain::random_b256()[0],
        ])) * 100_000;
    let claim = |scope: &str, fp: &str, at: u64| {
        let (scope, fp, key) = (scope.to_owned(), fp.to_owned(), key.clone());
        async move {
            db.claim_idempotency_key(&scope, &key, &fp, at)
                .await
                .unwrap()
        }
    };
    let same = |tx: Option<&str>, fresh: bool, created_at: u64| Claim::Same {
        tx: tx.map(str::to_owned),
        fresh,
        created_at,
    };
    assert_eq!(claim(&scope, &fp, now).await, same(None, true, now));
    // A second try before anything was sent: nothing to answer with yet, and not its row.
    assert_eq!(claim(&scope, &fp, now + 1).await, same(None, false, now));
    assert_eq!(
        db.idempotency_key_sent(&scope, &key, &fp, None, &tx, now + 1)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        claim(&scope, &fp, now + 2).await,
        same(Some(&tx), false, now + 1)
    );
    // Another try (another gateway) that read the row before: its transaction is not
    // recorded, and it learns which one is.
    let late = format!("0x{}", "ef".repeat(32));
    assert_eq!(
        db.idempotency_key_sent(&scope, &key, &fp, None, &late, now + 2)
            .await
            .unwrap(),
        Some(tx.clone())
    );
    assert_eq!(
        claim(&scope, &fp, now + 2).await,
        same(Some(&tx), false, now + 1)
    );
    // Signed alike by another try (the same nonce, fees and call): that try's to send.
    assert_eq!(
        db.idempotency_key_sent(&scope, &key, &fp, None, &tx, now + 2)
            .await
            .unwrap(),
        Some(tx.clone())
    );
    // Another request's row (freed and claimed again meanwhile) is not written.
    assert!(
        db.idempotency_key_sent(&scope, &key, &other_fp, None, &late, now + 2)
            .await
            .is_err()
    );
    assert_eq!(claim(&scope, &other_fp, now + 2).await, Claim::Other);
    // Another caller's key of the same name is its own.
    assert_eq!(
        claim(&other_scope, &other_fp, now).await,
        same(None, true, now)
    );
    // Freed only when nothing was sent.
    db.release_idempotency_key(&scope, &key).await.unwrap();
    assert_eq!(claim(&scope, &other_fp, now + 3).await, Claim::Other);
    db.release_idempotency_key(&other_scope, &key)
        .await
        .unwrap();
    assert_eq!(
        claim(&other_scope, &fp, now + 3).await,
        same(None, true, now + 3)
    );
    // A row gone before its transaction is recorded is made again.
    db.release_idempotency_key(&other_scope, &key)
        .await
        .unwrap();
    assert_eq!(
        db.idempotency_key_sent(&other_scope, &key, &fp, None, &tx, now + 4)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        claim(&other_scope, &fp, now + 5).await,
        same(Some(&tx), false, now + 4)
    );
    // What a try made (an upload's record) is replaced only while the row names it, and the
    // key is freed only of what it names.
    let other_tx = format!("0x{}", "cd".repeat(32));
    assert!(
        !db.idempotency_key_replaced(&other_scope, &key, &fp, Some(&other_tx), &other_tx, now + 6)
            .await
            .unwrap()
    );
    assert!(
        db.idempotency_key_replaced(&other_scope, &key, &fp, Some(&tx), &other_tx, now + 6)
            .await
            .unwrap()
    );
    assert_eq!(
        claim(&other_scope, &fp, now + 7).await,
        same(Some(&other_tx), false, now + 6)
    );
    db.release_idempotency_key_made(&other_scope, &key, &tx)
        .await
        .unwrap();
    assert_eq!(
        claim(&other_scope, &fp, now + 8).await,
        same(Some(&other_tx), false, now + 6)
    );
    db.release_idempotency_key_made(&other_scope, &key, &other_tx)
        .await
        .unwrap();
    assert_eq!(
        claim(&other_scope, &fp, now + 9).await,
        same(None, true, now + 9)
    );
    // A row that names nothing yet is set once.
    assert!(
        db.idempotency_key_replaced(&other_scope, &key, &fp, None, &tx, now + 10)
            .await
            .unwrap()
    );
    assert!(
        !db.idempotency_key_replaced(&other_scope, &key, &fp, None, &other_tx, now + 10)
            .await
            .unwrap()
    );
    assert_eq!(
        claim(&other_scope, &fp, now + 11).await,
        same(Some(&tx), false, now + 10)
    );
    // Withdrawn: names nothing again, only where it named that transaction; still claimed.
    db.idempotency_key_withdrawn(&other_scope, &key, &other_tx)
        .await
        .unwrap();
    assert_eq!(
        claim(&other_scope, &fp, now + 12).await,
        same(Some(&tx), false, now + 10)
    );
    db.idempotency_key_withdrawn(&other_scope, &key, &tx)
        .await
        .unwrap();
    assert_eq!(
        claim(&other_scope, &fp, now + 12).await,
        same(None, false, now + 10)
    );
    assert!(
        db.idempotency_key_replaced(&other_scope, &key, &fp, None, &tx, now + 10)
            .await
            .unwrap()
    );
    // A day later the key names a new request (taken over, or swept and made anew).
    let later = now + IDEMPOTENCY_TTL_SECS + 10;
    assert_eq!(
        claim(&scope, &other_fp, later).await,
        same(None, true, later)
    );
}

async fn exercise(url: &str, backend: Backend) {
    let db = Database::open(url).await.unwrap();
    readings(&db).await;
    idempotency_keys(&db).await;
    assert_eq!(db.backend(), backend);
    // Opening again runs no migration twice.
    Database::open(url).await.unwrap().ping().await.unwrap();
    let accounts = AccountStore::new(db.clone()).await.unwrap();

    // Four sign-ups racing for one name: exactly one wins.
    let racing = futures::future::join_all((0..4).map(|_| {
        let a = accounts.clone();
        async move {
            a.create("río", "long enough pw", Role::Provider, None, None)
                .await
        }
    }))
    .await;
    assert!(
        racing
            .iter()
            .all(|r| matches!(r, Err(AccountError::Invalid(_)))),
        "non-ASCII names are refused"
    );
    let racing = futures::future::join_all((0..4).map(|_| {
        let a = accounts.clone();
        async move {
            a.create("rio", "long enough pw", Role::Provider, None, None)
                .await
        }
    }))
    .await;
    assert_eq!(racing.iter().filter(|r| r.is_ok()).count(), 1, "{backend}");
    assert!(
        racing
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, AccountError::Taken(_)))
    );
    let (rio, key) = accounts.login("rio", "long enough pw").await.unwrap();
    // Profiles keep any Unicode (MariaDB's default character set would not).
    let profile = ProviderProfile::new("Dr. Zoë Ørsted 李", "Hôpital Saint-Éloi", "ÉL-42").unwrap();
    accounts.set_profile("rio", profile.clone()).await.unwrap();
    assert_eq!(
        accounts.profiles().await.unwrap().get(&rio.address),
        Some(&profile)
    );
    let (pat, _) = accounts
        .create(
            "pat",
            "long enough pw",
            Role::Patient,
            Some(PatientAddr::new(u64::MAX, 7).unwrap()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        accounts.account("pat").await.unwrap().unwrap().patient,
        pat.patient,
        "the largest aid round-trips"
    );

    // Sessions: survive a new store on the same database, end on logout.
    let sessions = Sessions::new(accounts.clone());
    let s = sessions.start(&rio, &key).await.unwrap();
    let again = Sessions::new(AccountStore::new(db.clone()).await.unwrap());
    let found = again.get(&s).await.unwrap().unwrap();
    assert_eq!(found.signer.address(), key.address());
    again.end(&s).await.unwrap();
    assert!(sessions.get(&s).await.unwrap().is_none());

    // Tokens: 30 created at once, at most 20 held.
    let tokens = TokenStore::new(accounts.clone());
    let made = futures::future::join_all((0..30).map(|i| {
        let (t, rio, key) = (tokens.clone(), rio.clone(), key.clone());
        async move { t.create(&rio, &key, &format!("script {i}"), 30).await }
    }))
    .await;
    let ok: Vec<&String> = made.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), ehr_share::web::MAX_TOKENS, "{backend}");
    assert_eq!(
        tokens.list("rio").await.unwrap().len(),
        ehr_share::web::MAX_TOKENS
    );
    let ids: HashSet<&str> = ok.iter().map(|t| &t[4..12]).collect();
    assert_eq!(ids.len(), ok.len());
    let (who, signer) = tokens.resolve_at(ok[0], 0).await.unwrap().unwrap();
    assert_eq!(
        (who.username.as_str(), signer.address()),
        ("rio", key.address())
    );
    assert!(tokens.revoke("rio", &ok[0][4..12]).await.unwrap());
    assert!(tokens.resolve_at(ok[0], 0).await.unwrap().is_none());
    // One live token per name (a form sent twice must not leave an unseen one beside it),
    // also for two creations at once.
    let (a, b) = futures::join!(
        tokens.create(&rio, &key, "twice", 30),
        tokens.create(&rio, &key, "twice", 30),
    );
    assert_eq!(
        usize::from(a.is_ok()) + usize::from(b.is_ok()),
        1,
        "{backend}: {a:?} {b:?}"
    );
    let refused = a.err().or(b.err()).unwrap().to_string();
    assert!(
        refused.contains("a token named \"twice\" already"),
        "{refused}"
    );
    // Names are compared byte for byte, whatever the database's collation.
    assert!(tokens.revoke("rio", &ok[2][4..12]).await.unwrap());
    tokens.create(&rio, &key, "Twice", 30).await.unwrap();

    // Removing an account removes its sessions and tokens with it.
    let s = sessions.start(&rio, &key).await.unwrap();
    accounts.remove("rio").await.unwrap();
    assert!(sessions.get(&s).await.unwrap().is_none());
    assert!(tokens.resolve_at(ok[1], 0).await.unwrap().is_none());
    assert!(tokens.list("rio").await.unwrap().is_empty());

    // The event index: appended in steps, loaded whole, per deployment.
    let store = EventStore::new(db.clone());
    let d = B256::repeat_byte(0xd1);
    let ev = |block: u64, log_index: u64| ehr_share::chain::AuditEvent {
        block,
        timestamp: Some(1_750_000_000 + block),
        tx_hash: Some(B256::repeat_byte(7)),
        log_index,
        kind: AuditKind::ProviderVerified {
            provider: Address::repeat_byte(4),
        },
    };
    let batch: Vec<_> = (0..500).map(|i| ev(100 + i / 3, i % 3)).collect();
    assert!(
        store
            .append(d, 90, 90, &batch, 300, B256::repeat_byte(1))
            .await
            .unwrap()
    );
    assert!(
        store
            .append(d, 90, 300, &[ev(400, 0)], 401, B256::repeat_byte(2))
            .await
            .unwrap()
    );
    // Two gateways on one database: the one behind writes nothing and says so.
    for from in [90, 300] {
        assert!(
            !store
                .append(d, 90, from, &[ev(350, 0)], 360, B256::ZERO)
                .await
                .unwrap()
        );
    }
    let back = store.load(d).await.unwrap().unwrap();
    assert_eq!(back.events.len(), 501);
    assert_eq!(back.events[500], ev(400, 0));
    assert_eq!(
        (back.next_block, back.last_hash),
        (401, B256::repeat_byte(2))
    );
    assert!(store.load(B256::repeat_byte(0xd2)).await.unwrap().is_none());
    db.close().await;
}

#[tokio::test]
async fn stores_behave_the_same_on_sqlite_and_mariadb() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&ehr_share::db::sqlite_in(dir.path()), Backend::Sqlite).await;
    exercise(&common::mariadb::fresh_database(), Backend::MySql).await;
}

/// Users, sessions, API tokens and the audit index outlive a restart of the gateway, on each
/// backend.
async fn survives_a_restart(db_url: Option<&str>) {
    let w = Web::start(db_url, 4).await;
    w.accounts
        .create("nora", "nora's long password", Role::Provider, None, None)
        .await
        .unwrap();
    let c = browser();
    let t = form_token(&c, &w.url, "/").await;
    assert_eq!(
        login(&c, &w.url, &t, "nora", "nora's long password")
            .await
            .status(),
        303
    );
    let token_csrf = csrf(&c, &w.url, "/tokens").await;
    let api_token = create_token(
        &c,
        &w.url,
        &token_csrf,
        "backup job",
        "nora's long password",
    )
    .await;
    let audit_before: serde_json::Value = reqwest::get(format!("{}/api/audit?limit=5", w.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let w = w.restart(4).await;
    // The same browser is still logged in; the token still works; the audit is the same.
    let r = c.get(format!("{}/tokens", w.url)).send().await.unwrap();
    assert_eq!(r.status(), 200, "session kept across the restart");
    assert!(r.text().await.unwrap().contains("backup job"));
    let me = reqwest::Client::new()
        .get(format!("{}/api/me", w.url))
        .bearer_auth(&api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let audit_after: serde_json::Value = reqwest::get(format!("{}/api/audit?limit=5", w.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = |e: &serde_json::Value| format!("{}/{}", e["tx_hash"], e["log_index"]);
    let after: HashSet<String> = audit_after["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(key)
        .collect();
    let before = audit_before["events"].as_array().unwrap();
    assert!(!before.is_empty());
    assert!(
        before.iter().all(|e| after.contains(&key(e))),
        "{audit_before} / {audit_after}"
    );
    // The index was kept in the database, not only in memory.
    let office = common::office().await;
    let stored = EventStore::new(w.db.clone())
        .load(office.deployment_id())
        .await
        .unwrap()
        .expect("the event index is stored");
    assert!(!stored.events.is_empty());
    let health: serde_json::Value = reqwest::get(format!("{}/health", w.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["database"]["ok"], true, "{health}");
}

#[tokio::test]
async fn the_web_app_keeps_users_sessions_and_tokens_across_restarts_on_sqlite() {
    survives_a_restart(None).await;
}

#[tokio::test]
async fn the_web_app_keeps_users_sessions_and_tokens_across_restarts_on_mariadb() {
    survives_a_restart(Some(&common::mariadb::fresh_database())).await;
}

//! Transactions that wait in the pool, on an anvil of this binary's own (its tests turn
//! automatic mining off, one at a time).
//!
//! - Gas is estimated against the latest block; a transaction still pending ahead of it can make
//!   it dearer. Found by the load bench (426 of 1,023 concurrent grants by one patient reverted,
//!   out of gas, with a 500); the chain client now leaves headroom above the estimate.
//! - A caller who gives up while the transaction waits, and asks again, must not do the action
//!   twice (`chain::sent`).

mod common;

use std::time::Duration;

use alloy::providers::ext::AnvilApi;
use alloy::providers::{Provider, ProviderBuilder};

use common::{as_, funded, office, unique_patient};
use ehr_share::chain::{AuditFilter, AuditKind, PatientAddr};
use ehr_share::gateway::{AppState, Keyring};

/// Each test here stops and starts the chain's mining: one at a time.
static CHAIN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_grant_estimated_behind_a_pending_change_is_mined() {
    let _chain = CHAIN.lock().await;
    let office = office().await;
    let patient = as_(&office, &funded().await);
    let addr = unique_patient();
    office.issue_patient(addr, patient.from()).await.unwrap();
    let doctor = as_(&office, &funded().await);
    doctor.register_provider().await.unwrap();
    office.verify_provider(doctor.from()).await.unwrap();
    let now = office.chain_time().await.unwrap();
    let (e1, e2) = (now + 86_400, now + 2 * 86_400);
    patient.grant(doctor.from(), Some(e1)).await.unwrap();

    // From here blocks come once a second: a transaction waits in the pool until then.
    let node = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
    node.anvil_set_auto_mine(false).await.unwrap();
    node.anvil_set_interval_mining(1).await.unwrap();

    // The grant moves to e2 and waits in the pool ...
    let ahead = {
        let (p, d) = (patient.clone(), doctor.from());
        tokio::spawn(async move { p.grant(d, Some(e2)).await })
    };
    let from = patient.from();
    assert!(
        common::nodes::wait_until(Duration::from_secs(10), || {
            let node = node.clone();
            async move {
                let latest = node.get_transaction_count(from).await.unwrap();
                let pending = node.get_transaction_count(from).pending().await.unwrap();
                pending > latest
            }
        })
        .await,
        "the first grant waits in the pool"
    );
    // ... while the grant back to e1 is estimated on the latest block, where it writes the
    // value the slot already has (cheap), and runs after the first (a real change).
    let behind = patient.grant(doctor.from(), Some(e1)).await;
    let ahead = ahead.await.unwrap();

    node.anvil_set_interval_mining(0).await.unwrap();
    node.anvil_set_auto_mine(true).await.unwrap();
    ahead.expect("the first grant is mined");
    behind.expect("the grant behind it is mined, not out of gas");
    let grants = office.grants(addr, 0, 100).await.unwrap();
    assert!(
        grants
            .iter()
            .any(|g| g.provider == doctor.from() && g.expires_at == Some(e1)),
        "the last grant wins: {grants:?}"
    );
}

/// A gateway (with a database) whose tokens `tok-doctor` and `tok-patient` sign as `doctor`
/// and `patient`.
async fn gateway_for(
    doctor: &alloy::signers::local::PrivateKeySigner,
    patient: &alloy::signers::local::PrivateKeySigner,
) -> String {
    // The Idempotency-Key store; the folder lives as long as the test binary.
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    gateway_on(
        &common::rpc(),
        &ehr_share::db::sqlite_in(dir.path()),
        doctor,
        patient,
    )
    .await
}

/// [`gateway_for`] on the chain endpoint `rpc`, keeping keys in the database at `db`.
async fn gateway_on(
    rpc: &str,
    db: &str,
    doctor: &alloy::signers::local::PrivateKeySigner,
    patient: &alloy::signers::local::PrivateKeySigner,
) -> String {
    let office = office().await;
    let chain = ehr_share::chain::EhrChain::connect(rpc, None, &office.deployment())
        .await
        .unwrap();
    let mut keyring = Keyring::default();
    keyring.insert("tok-doctor", doctor.clone());
    keyring.insert("tok-patient", patient.clone());
    let db = ehr_share::db::Database::open(db).await.unwrap();
    let state = AppState::new(
        rpc,
        Some(chain),
        ehr_share::ipfs::KuboClient::new(&common::stack().kubo.api_url),
        keyring,
    )
    .unwrap()
    .with_database(db);
    common::serve_gateway(state).await
}

/// `POST {url}{path}` with `body` as `token`, as a task (aborting it is a client that gives
/// up: its connection closes).
fn post(
    url: &str,
    token: &'static str,
    path: &str,
    body: serde_json::Value,
) -> tokio::task::JoinHandle<reqwest::Response> {
    post_keyed(url, token, path, body, None)
}

/// [`post`] with an `Idempotency-Key`.
fn post_keyed(
    url: &str,
    token: &'static str,
    path: &str,
    body: serde_json::Value,
    key: Option<&'static str>,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let url = format!("{url}{path}");
    tokio::spawn(async move {
        let mut r = reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .json(&body);
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        r.send().await.unwrap()
    })
}

/// The doctor's `POST /api/break-glass` for `addr` (see [`post`]).
fn break_glass(url: &str, addr: PatientAddr) -> tokio::task::JoinHandle<reqwest::Response> {
    break_glass_keyed(url, addr, None)
}

fn break_glass_keyed(
    url: &str,
    addr: PatientAddr,
    key: Option<&'static str>,
) -> tokio::task::JoinHandle<reqwest::Response> {
    post_keyed(
        url,
        "tok-doctor",
        "/api/break-glass",
        serde_json::json!({"addr": addr.to_string(), "reason": "ETREAT"}),
        key,
    )
}

/// The chain's blocks stop until this is dropped (also when a test fails: the next test of
/// this binary finds them going again).
struct NoBlocks;

impl NoBlocks {
    async fn start() -> Self {
        let node = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
        node.anvil_set_auto_mine(false).await.unwrap();
        Self
    }
}

impl Drop for NoBlocks {
    fn drop(&mut self) {
        // A thread and a client of its own: drop may run inside the test's runtime, which must
        // not block on itself (a client made there is served by that runtime's tasks).
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let node = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
                    node.anvil_set_auto_mine(true).await.unwrap();
                    node.anvil_mine(Some(1), None).await.unwrap();
                })
        })
        .join()
        .unwrap();
    }
}

/// Waits until `from` has `n` transactions in the pool.
async fn until_pooled(node: &impl Provider, from: alloy::primitives::Address, n: u64) {
    assert!(
        common::nodes::wait_until(Duration::from_secs(10), || async move {
            let latest = node.get_transaction_count(from).await.unwrap();
            let pending = node.get_transaction_count(from).pending().await.unwrap();
            pending == latest + n
        })
        .await,
        "{n} transactions of {from} wait in the pool"
    );
}

/// How many times emergency access to `addr` was opened.
async fn openings(office: &ehr_share::chain::EhrChain, addr: PatientAddr) -> usize {
    let page = office
        .audit_page_for_patient(addr, AuditFilter::Emergency, 0, 50)
        .await
        .unwrap();
    page.events
        .iter()
        .filter(|e| matches!(e.kind, AuditKind::BreakGlassOpened { .. }))
        .count()
}

/// A doctor's break-glass, sent with an `Idempotency-Key`, is in the pool when the doctor's
/// client gives up (no block came); the doctor requests access to another patient meanwhile,
/// then asks again with the same key. The second ask is answered by the first transaction:
/// emergency access opened once, one of the three a day used. Without the key the account's
/// request in between makes the same call a new one (it would be sent); before, the second
/// ask sent a second break-glass either way.
#[tokio::test]
async fn a_break_glass_asked_again_with_its_key_after_the_client_gave_up_opens_once() {
    let _chain = CHAIN.lock().await;
    let office = office().await;
    let (patient, addr) = common::new_patient(&office).await;
    let doctor = common::verified_doctor(&office).await;
    let (_, elsewhere) = common::new_patient(&office).await;
    let url = gateway_for(&doctor, &patient).await;
    let node = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
    let nonce = node.get_transaction_count(doctor.address()).await.unwrap();

    let no_blocks = NoBlocks::start().await;
    let first = break_glass_keyed(&url, addr, Some("bg-1"));
    until_pooled(&node, doctor.address(), 1).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let between = post(
        &url,
        "tok-doctor",
        "/api/requests",
        serde_json::json!({"addr": elsewhere.to_string()}),
    );
    until_pooled(&node, doctor.address(), 2).await;
    let again = break_glass_keyed(&url, addr, Some("bg-1"));
    // Its answer needs a block: blocks come back (a second transaction, had one been sent by
    // now or later, is mined too).
    drop(no_blocks);
    let r = again.await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(between.await.unwrap().status(), 200);

    assert_eq!(
        openings(&office, addr).await,
        1,
        "emergency access opened once"
    );
    assert_eq!(
        node.get_transaction_count(doctor.address())
            .pending()
            .await
            .unwrap(),
        nonce + 2,
        "the break-glass and the request from the doctor"
    );
}

/// Without a key: a caller of the chain client that went away while its break-glass waited in
/// the pool (a dropped request handler), and the same call again, are one transaction: the
/// second is answered by the first while it is the doctor's last.
#[tokio::test]
async fn a_break_glass_called_again_after_its_caller_went_away_opens_once() {
    let _chain = CHAIN.lock().await;
    let office = office().await;
    let (_, addr) = common::new_patient(&office).await;
    let doctor = as_(&office, &common::verified_doctor(&office).await);
    let node = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
    let nonce = node.get_transaction_count(doctor.from()).await.unwrap();
    let call = || {
        let d = doctor.clone();
        tokio::spawn(async move {
            d.break_glass(addr, ehr_share::chain::EmergencyReason::Etreat)
                .await
        })
    };

    let no_blocks = NoBlocks::start().await;
    let first = call();
    until_pooled(&node, doctor.from(), 1).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let again = call();
    drop(no_blocks);
    again.await.unwrap().expect("answered");

    assert_eq!(
        openings(&office, addr).await,
        1,
        "emergency access opened once"
    );
    assert_eq!(
        node.get_transaction_count(doctor.from())
            .pending()
            .await
            .unwrap(),
        nonce + 1,
        "one transaction from the doctor"
    );
}

/// A patient's revoke waits in the pool when the patient's client gives up; the patient grants
/// again (a new transaction), then revokes again. The second revoke is a new act, not a repeat
/// of the first, although it is the same call: it is sent, and the doctor ends up without a
/// grant. Joined to the first revoke, it would leave the grant standing.
#[tokio::test]
async fn a_revoke_after_a_grant_after_a_revoke_is_sent() {
    let _chain = CHAIN.lock().await;
    let office = office().await;
    let (patient, addr) = common::new_patient(&office).await;
    let doctor = common::verified_doctor(&office).await;
    as_(&office, &patient)
        .grant(doctor.address(), None)
        .await
        .unwrap();
    let url = gateway_for(&doctor, &patient).await;
    let node = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
    let revoke = || {
        post(
            &url,
            "tok-patient",
            &format!("/api/grants/{}/revoke", doctor.address()),
            serde_json::json!({}),
        )
    };

    let no_blocks = NoBlocks::start().await;
    let first = revoke();
    until_pooled(&node, patient.address(), 1).await;
    first.abort();
    let grant = post(
        &url,
        "tok-patient",
        "/api/grants",
        serde_json::json!({"provider": doctor.address().to_string()}),
    );
    until_pooled(&node, patient.address(), 2).await;
    let again = revoke();
    until_pooled(&node, patient.address(), 3).await;
    drop(no_blocks);
    for r in [grant.await.unwrap(), again.await.unwrap()] {
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    let (reason, _) = office
        .at(alloy::eips::BlockId::latest())
        .check_access_raw(addr, doctor.address())
        .await
        .unwrap();
    assert_ne!(
        reason,
        ehr_share::chain::DenyReason::None,
        "the last revoke took effect"
    );
}

/// The first break-glass left the node's pool without being mined (evicted, or lost with a
/// restarted node): asking again sends it anew instead of waiting for a transaction that will
/// never come.
#[tokio::test]
async fn a_break_glass_the_node_dropped_is_sent_again() {
    let _chain = CHAIN.lock().await;
    let office = office().await;
    let (patient, addr) = common::new_patient(&office).await;
    let doctor = common::verified_doctor(&office).await;
    let url = gateway_for(&doctor, &patient).await;
    let node = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());

    let no_blocks = NoBlocks::start().await;
    let first = break_glass(&url, addr);
    until_pooled(&node, doctor.address(), 1).await;
    first.abort();
    node.anvil_drop_all_transactions().await.unwrap();
    drop(no_blocks);

    // Bounded: waiting for the dropped transaction would take the whole receipt wait (10 min).
    let r = tokio::time::timeout(Duration::from_secs(60), break_glass(&url, addr))
        .await
        .expect("answered, not waiting for the dropped transaction")
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(openings(&office, addr).await, 1, "emergency access opened");
}

/// Two tries of one named request (an `Idempotency-Key` sent twice at once): the second read
/// the key's record before the first sent anything, and comes to its checks after the first
/// was mined. A doctor's access request is then pending, which the check before a send refuses
/// (409), although the first try's transaction answers this one. Found by CI (a gateway test
/// that sends the two at once failed on one run in ten or so); here the order is forced.
#[tokio::test]
async fn a_named_request_whose_other_try_was_mined_meanwhile_is_answered_by_it() {
    let _chain = CHAIN.lock().await;
    let office = office().await;
    let (_, addr) = common::new_patient(&office).await;
    let doctor = as_(&office, &common::verified_doctor(&office).await);
    let recorded = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let ticket = || {
        let recorded = std::sync::Arc::clone(&recorded);
        let record: ehr_share::chain::RecordSent = std::sync::Arc::new(move |what| {
            recorded.lock().unwrap().push(what);
            Box::pin(async { Ok(None) })
        });
        // Both tries found the key's record without a transaction.
        ehr_share::chain::Ticket::new(
            format!("{}:rq-race", doctor.from()).into_bytes(),
            None,
            record,
        )
    };
    let (first, second) = (ticket(), ticket());
    let a = doctor
        .with_ticket(first.clone())
        .request_access(addr)
        .await
        .expect("the first try is sent");
    let b = doctor
        .with_ticket(second.clone())
        .request_access(addr)
        .await
        .expect("the second try is answered by the first, not refused");
    assert_eq!(a.tx_hash, b.tx_hash, "one transaction");
    assert!(second.replayed() && !first.replayed());
    assert_eq!(
        recorded.lock().unwrap().len(),
        1,
        "one transaction recorded"
    );
    // Without the name, the same request is refused: one is pending.
    let e = doctor.request_access(addr).await.unwrap_err();
    assert!(
        matches!(e, ehr_share::chain::ChainError::Rejected(_)),
        "{e}"
    );
}

/// The endpoint (or a proxy in front of it) takes a doctor's break-glass and loses the answer:
/// the gateway answers 503 naming the transaction, which the node has, and the key's row names
/// it already. Asked again with its `Idempotency-Key`, the break-glass is answered by that
/// transaction (emergency access opened once); without a key, the same call from the chain
/// client joins it too. Before, the hash was known only from the node's answer: nothing was
/// recorded, and the retry opened emergency access a second time. A proxy that answers a
/// JSON-RPC error after passing the send on is caught by asking the node. A send the node
/// refuses (here the proxy, as a node without the funds would) names nothing: its key is free.
#[tokio::test]
async fn a_send_whose_answer_was_lost_is_answered_by_its_transaction_when_asked_again() {
    use common::nodes::Sends;
    let _chain = CHAIN.lock().await;
    let office = office().await;
    let (patient, addr) = common::new_patient(&office).await;
    let (_, other) = common::new_patient(&office).await;
    let (_, third) = common::new_patient(&office).await;
    let (_, fourth) = common::new_patient(&office).await;
    let doctor = common::verified_doctor(&office).await;
    let (rpc, sends) = common::nodes::lossy_rpc(common::rpc()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = ehr_share::db::sqlite_in(dir.path());
    let url = gateway_on(&rpc, &db, &doctor, &patient).await;
    let node = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
    let nonce = node.get_transaction_count(doctor.address()).await.unwrap();
    // What the key's row names (`None`: no row).
    let named = |key: &'static str| {
        let db = db.clone();
        async move {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update((key.len() as u64).to_be_bytes());
            h.update(key.as_bytes());
            let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT tx FROM idempotency_keys WHERE key_hash = ?",
            )
            .bind(hex::encode(h.finalize()))
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    };
    // Through the gateway with a key: the send's answer is lost `how`, then it is asked again.
    let lost_then_retried = |patient: PatientAddr, key: &'static str, how: Sends| {
        let (url, sends, node, office) = (url.clone(), sends.clone(), &node, &office);
        async move {
            sends.set(how);
            let r = break_glass_keyed(&url, patient, Some(key)).await.unwrap();
            assert_eq!(r.status(), 503, "{:?}", r.text().await);
            let tx: alloy::primitives::B256 = named(key)
                .await
                .flatten()
                .expect("the row names the transaction")
                .parse()
                .unwrap();
            assert!(
                node.get_transaction_by_hash(tx).await.unwrap().is_some(),
                "the node has the transaction the row names"
            );
            sends.set(Sends::Pass);
            let r = break_glass_keyed(&url, patient, Some(key)).await.unwrap();
            assert_eq!(r.status(), 200, "{:?}", r.headers());
            assert_eq!(
                r.headers()
                    .get("idempotent-replayed")
                    .map(|v| v.to_str().unwrap().to_owned()),
                Some("true".to_owned())
            );
            assert_eq!(
                openings(office, patient).await,
                1,
                "emergency access opened once"
            );
        }
    };
    lost_then_retried(addr, "bg-lost", Sends::LoseAnswer).await;
    lost_then_retried(fourth, "bg-error", Sends::ErrorAfterPassing).await;

    // Refused by the node: the key names nothing and is free.
    sends.set(Sends::Refuse);
    let asked = sends.asked();
    let r = break_glass_keyed(&url, third, Some("bg-refused"))
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{:?}", r.text().await);
    assert_eq!(sends.asked(), asked + 1, "the send reached the endpoint");
    assert_eq!(
        named("bg-refused").await,
        None,
        "the refused request's key was freed"
    );
    sends.set(Sends::Pass);

    // Without a key, from the chain client.
    let d = ehr_share::chain::EhrChain::connect(&rpc, Some(doctor.clone()), &office.deployment())
        .await
        .unwrap();
    sends.set(Sends::LoseAnswer);
    let e = d
        .break_glass(other, ehr_share::chain::EmergencyReason::Etreat)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ehr_share::chain::ChainError::Unconfirmed { .. }),
        "{e}"
    );
    sends.set(Sends::Pass);
    d.break_glass(other, ehr_share::chain::EmergencyReason::Etreat)
        .await
        .expect("answered by the first");
    assert_eq!(
        openings(&office, other).await,
        1,
        "emergency access opened once"
    );
    assert_eq!(
        node.get_transaction_count(doctor.address()).await.unwrap(),
        nonce + 3,
        "three break-glasses from the doctor, one per patient"
    );
}

/// Two tries of one named request in two gateways (two processes: each its own table of
/// calls, one database of keys) that both read the key's row before either sent, and send at
/// once. One records its transaction; the other's, signed but not recorded, is never sent,
/// and it answers with the first's. Before, each recorded over the other and both sent:
/// emergency access opened twice.
#[tokio::test]
async fn two_gateways_sending_one_named_request_at_once_send_one_transaction() {
    let _chain = CHAIN.lock().await;
    let office = office().await;
    let (_, addr) = common::new_patient(&office).await;
    let doctor = as_(&office, &common::verified_doctor(&office).await);
    let dir = tempfile::tempdir().unwrap();
    let db = ehr_share::db::Database::open(&ehr_share::db::sqlite_in(dir.path()))
        .await
        .unwrap();
    let (scope, key, fp) = ("a1".repeat(32), "b2".repeat(32), "c3".repeat(32));
    for _ in 0..2 {
        db.claim_idempotency_key(&scope, &key, &fp, common::nodes::now())
            .await
            .unwrap();
    }
    // Each gateway's ticket for the key, as its middleware makes it.
    let ticket = |gateway: &str| {
        ehr_share::chain::Ticket::new(
            format!("{gateway}:key").into_bytes(),
            None,
            db.idempotency_record(&scope, &key, &fp),
        )
    };
    let (a, b) = (ticket("gateway-a"), ticket("gateway-b"));
    let (ca, cb) = (doctor.with_ticket(a.clone()), doctor.with_ticket(b.clone()));
    let (ra, rb) = tokio::join!(
        ca.break_glass(addr, ehr_share::chain::EmergencyReason::Etreat),
        cb.break_glass(addr, ehr_share::chain::EmergencyReason::Etreat),
    );
    let (ra, rb) = (
        ra.expect("the first answered"),
        rb.expect("the second answered"),
    );
    assert_eq!(ra.tx_hash, rb.tx_hash, "one transaction for both");
    assert!(
        a.replayed() != b.replayed(),
        "one sent, the other was answered by it"
    );
    assert_eq!(
        openings(&office, addr).await,
        1,
        "emergency access opened once"
    );
}

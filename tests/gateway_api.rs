//! The gateway's REST API on a real port, against real anvil and Kubo: health, the chain
//! operations, and clear 4xx errors for bad input.

mod common;

use alloy::signers::local::PrivateKeySigner;
use ehr_share::gateway::{AppState, Keyring};
use ehr_share::ipfs::KuboClient;
use serde_json::{Value, json};

async fn gateway(keyring: Keyring) -> String {
    common::serve_gateway(state(keyring).await).await
}

/// A gateway's state over the shared chain and Kubo, signing with `keyring`.
async fn state(keyring: Keyring) -> AppState {
    let office = common::office().await;
    let d = office.deployment();
    let chain = ehr_share::chain::EhrChain::connect(&common::rpc(), None, &d)
        .await
        .unwrap();
    AppState::new(
        &common::rpc(),
        Some(chain),
        KuboClient::new(&common::stack().kubo.api_url),
        keyring,
    )
    .unwrap()
}

#[tokio::test]
async fn health_names_the_chain_and_the_ipfs_node() {
    let url = gateway(Keyring::default()).await;
    let h: Value = reqwest::get(format!("{url}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["chain"]["chain_id"], common::chain_id());
    let client = h["chain"]["client"].as_str().unwrap();
    assert!(
        client.starts_with(if common::on_geth() { "Geth/" } else { "anvil/" }),
        "{client}"
    );
    assert!(!h["ipfs"]["version"].as_str().unwrap().is_empty());
    let spec: Value = reqwest::get(format!("{url}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    assert!(spec["paths"]["/api/grants"]["post"].is_object());
    assert!(
        spec["paths"]["/api/grants"]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
        "writes name their Idempotency-Key header"
    );
}

#[tokio::test]
async fn a_patient_grants_and_revokes_through_the_api() {
    let patient = common::funded().await;
    let doctor = common::funded().await;
    let office = common::office().await;
    common::as_(&office, &doctor)
        .register_provider()
        .await
        .unwrap();
    office.verify_provider(doctor.address()).await.unwrap();
    let mut keyring = Keyring::default();
    keyring.insert("tok-patient", patient.clone());
    let url = gateway(keyring).await;
    let http = reqwest::Client::new();
    let addr = common::unique_patient();
    let post = |path: &str, body: Value| {
        http.post(format!("{url}{path}"))
            .bearer_auth("tok-patient")
            .json(&body)
            .send()
    };
    // Claiming an address needs the records office's voucher for this account.
    let deadline = office.chain_time().await.unwrap() + 600;
    let own = ehr_share::chain::sign_voucher(&patient, &office, addr, patient.address(), deadline)
        .unwrap();
    let r = post(
        "/api/patients",
        json!({"addr": addr.to_string(), "deadline": deadline, "voucher": own}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403, "a self-signed voucher is refused");
    let voucher = ehr_share::chain::sign_voucher(
        &common::office_key(),
        &office,
        addr,
        patient.address(),
        deadline,
    )
    .unwrap();
    let r = post(
        "/api/patients",
        json!({"addr": addr.to_string(), "deadline": deadline, "voucher": voucher}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = post("/api/grants", json!({"provider": doctor.address()}))
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert!(body["gas_used"].as_u64().unwrap() > 21_000);
    let g: Value = http
        .get(format!("{url}/api/patients/{addr}/grants"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(g["grants"][0]["state"], "active");
    let r = post(
        &format!("/api/grants/{}/revoke", doctor.address()),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    // Revoking twice conflicts with chain state: 409 with the contract's reason in words.
    let r = post(
        &format!("/api/grants/{}/revoke", doctor.address()),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"].as_str().unwrap().contains("has no active grant"),
        "{e}"
    );
    let trail: Value = http
        .get(format!("{url}/api/patients/{addr}/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(trail["events"][0]["event"], "grant_revoked");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let mut keyring = Keyring::default();
    keyring.insert("tok", common::funded().await);
    let url = gateway(keyring).await;
    let http = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(
            http.get(format!("{url}/api/patients/0-5/grants"))
                .send()
                .await
                .unwrap()
        ),
        400
    );
    assert_eq!(
        status(
            http.get(format!("{url}/api/providers/0xnothex"))
                .send()
                .await
                .unwrap()
        ),
        400
    );
    assert_eq!(
        status(
            http.get(format!("{url}/api/audit?limit=0"))
                .send()
                .await
                .unwrap()
        ),
        400
    );
    // A patient's records: a cursor that is not one, or an offset beyond what is skipped.
    for q in ["before=junk", "before=12-0xzz", "offset=2001"] {
        let r = http
            .get(format!("{url}/api/patients/1-2/records?{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{q}: {body}"
        );
    }
    assert_eq!(
        status(
            http.post(format!("{url}/api/providers"))
                .send()
                .await
                .unwrap()
        ),
        401
    );
    assert_eq!(
        status(
            http.post(format!("{url}/api/providers"))
                .bearer_auth("wrong")
                .send()
                .await
                .unwrap()
        ),
        401
    );
    let r = http
        .post(format!("{url}/api/grants"))
        .bearer_auth("tok")
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 400);
    let big = "x".repeat(100_000);
    let r = http
        .post(format!("{url}/api/access"))
        .bearer_auth("tok")
        .json(&json!({"records": [big]}))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 413);
    let r = http
        .post(format!("{url}/api/access"))
        .bearer_auth("tok")
        .json(&json!({"patient": "1-1001", "records": ["0x12"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 400);
    // Not a patient: forbidden, with the contract's reason in words.
    let r = http
        .post(format!("{url}/api/grants"))
        .bearer_auth("tok")
        .json(&json!({"provider": "0x976EA74026E726554dB657fA54763abd0C3a0aa9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("is not a registered patient")
    );
}

#[tokio::test]
async fn record_uploads_are_bounded_and_need_share_nodes() {
    let mut keyring = Keyring::default();
    keyring.insert("tok", common::funded().await);
    let url = gateway(keyring).await;
    let http = reqwest::Client::new();
    let big = vec![0u8; 33 * 1024 * 1024];
    let r = http
        .post(format!("{url}/records?patient=1-2"))
        .bearer_auth("tok")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = http
        .post(format!("{url}/records?patient=1-2"))
        .bearer_auth("tok")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "no share nodes configured");
    let r = http
        .get(format!("{url}/records/0x12"))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!(
            "{url}/records/{}",
            ehr_share::chain::RecordId::random()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn one_role_cannot_use_another_roles_api() {
    let patient = common::funded().await;
    let doctor = common::funded().await;
    let office = common::office().await;
    common::as_(&office, &doctor)
        .register_provider()
        .await
        .unwrap();
    office.verify_provider(doctor.address()).await.unwrap();
    let addr = common::unique_patient();
    office.issue_patient(addr, patient.address()).await.unwrap();
    let mut keyring = Keyring::default();
    keyring.insert("tok-patient", patient.clone());
    keyring.insert("tok-doctor", doctor.clone());
    let url = gateway(keyring).await;
    let http = reqwest::Client::new();
    let call = |token: &'static str, path: String, body: Value| {
        http.post(format!("{url}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let stranger = PrivateKeySigner::random().address();
    // The patient is not the records office.
    let r = call(
        "tok-patient",
        format!("/api/providers/{stranger}/verify"),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("is not the records office")
    );
    // The patient cannot act as a provider.
    let r = call(
        "tok-patient",
        "/api/requests".into(),
        json!({"addr": addr.to_string()}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let r = call(
        "tok-patient",
        "/api/break-glass".into(),
        json!({"addr": addr.to_string(), "reason": "ETREAT"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    // The doctor cannot grant (a patient's act) nor suspend (the office's).
    let r = call(
        "tok-doctor",
        "/api/grants".into(),
        json!({"provider": doctor.address()}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let r = call(
        "tok-doctor",
        format!("/api/providers/{}/suspend", doctor.address()),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    // Nothing changed on chain.
    let (status, _) = office.provider_status(doctor.address()).await.unwrap();
    assert_eq!(status, ehr_share::chain::ProviderStatus::Verified);
}

/// A gateway with a database (the `Idempotency-Key` store) in `dir`.
async fn gateway_with_database(keyring: Keyring, dir: &std::path::Path) -> String {
    let db = ehr_share::db::Database::open(&ehr_share::db::sqlite_in(dir))
        .await
        .unwrap();
    common::serve_gateway(state(keyring).await.with_database(db)).await
}

/// A patient's client sends a revoke with an `Idempotency-Key`, and sends it again (as after a
/// lost answer): the retry is answered by the first revoke's transaction, marked as a replay,
/// instead of a second revoke (which the contract refuses: 409). After the patient grants
/// again, the key still names the first revoke: the retry does not undo the new grant. The
/// same key for another request is refused (422); a request that failed before sending
/// anything frees its key.
#[tokio::test]
async fn a_request_retried_with_its_idempotency_key_is_answered_by_the_first_transaction() {
    let office = common::office().await;
    let (patient, addr) = common::new_patient(&office).await;
    let doctor = common::verified_doctor(&office).await;
    let other = common::verified_doctor(&office).await;
    let p = common::as_(&office, &patient);
    p.grant(doctor.address(), None).await.unwrap();
    let mut keyring = Keyring::default();
    keyring.insert("tok-patient", patient.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = gateway_with_database(keyring, dir.path()).await;
    let http = reqwest::Client::new();
    let post = |path: String, key: &str, body: Value| {
        http.post(format!("{url}{path}"))
            .bearer_auth("tok-patient")
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let revoke = |who: alloy::primitives::Address, key: &str| {
        post(format!("/api/grants/{who}/revoke"), key, json!({}))
    };
    let tx_of = |v: &Value| v["tx_hash"].as_str().unwrap().to_owned();

    let r = revoke(doctor.address(), "k-1").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("idempotent-replayed").is_none());
    let first: Value = r.json().await.unwrap();

    let r = revoke(doctor.address(), "k-1").await.unwrap();
    assert_eq!(r.status(), 200, "a retry, not a second revoke");
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(tx_of(&r.json().await.unwrap()), tx_of(&first));

    p.grant(doctor.address(), None).await.unwrap();
    let r = revoke(doctor.address(), "\"k-1\"").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(tx_of(&r.json().await.unwrap()), tx_of(&first));
    let (reason, _) = office
        .at(alloy::eips::BlockId::latest())
        .check_access_raw(addr, doctor.address())
        .await
        .unwrap();
    assert_eq!(
        reason,
        ehr_share::chain::DenyReason::None,
        "the grant after the revoke stands"
    );

    // The key names the first request only.
    let r = revoke(other.address(), "k-1").await.unwrap();
    assert_eq!(r.status(), 422, "{:?}", r.text().await);

    // A revoke the contract refuses sends nothing: its key is free for another request.
    let r = revoke(other.address(), "k-2").await.unwrap();
    assert_eq!(r.status(), 409, "{:?}", r.text().await);
    let r = post(
        "/api/grants".into(),
        "k-2",
        json!({"provider": other.address()}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    // Keys are the caller's: malformed ones are refused before anything is sent.
    let r = revoke(doctor.address(), "").await.unwrap();
    assert_eq!(r.status(), 400);
}

/// A doctor's access request sent twice at once with one key is one transaction; sent again
/// after it was mined, it is answered by it, although a second request would be refused (one
/// is pending): the check made before a send does not refuse a replay.
#[tokio::test]
async fn a_keyed_request_sent_twice_at_once_and_again_later_is_one_transaction() {
    let office = common::office().await;
    let (_, addr) = common::new_patient(&office).await;
    let doctor = common::verified_doctor(&office).await;
    let mut keyring = Keyring::default();
    keyring.insert("tok-doctor", doctor.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = gateway_with_database(keyring, dir.path()).await;
    let http = reqwest::Client::new();
    let ask = |key: &'static str| {
        http.post(format!("{url}/api/requests"))
            .bearer_auth("tok-doctor")
            .header("Idempotency-Key", key)
            .json(&json!({"addr": addr.to_string()}))
            .send()
    };
    let answer = |r: reqwest::Response| async move {
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        body["tx_hash"].as_str().unwrap().to_owned()
    };
    let (a, b) = tokio::join!(ask("rq-1"), ask("rq-1"));
    let (a, b) = (answer(a.unwrap()).await, answer(b.unwrap()).await);
    assert_eq!(a, b, "one transaction for both tries");
    let again = ask("rq-1").await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(answer(again).await, a);
    // A new request (another key) is refused: one is pending.
    let r = ask("rq-2").await.unwrap();
    assert_eq!(r.status(), 409, "{:?}", r.text().await);
}

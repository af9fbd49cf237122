//! Device readings end to end on real anvil, Kubo and five `ehr share-node` processes: devices
//! registered on chain sign readings, the gateway takes them, seals each patient's window into
//! a record, and a granted doctor reads it back with every reading's signature checked. And
//! each way an outsider could slip a reading in is tried and refused with its status.

mod common;

use std::time::Duration;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use common::nodes;
use ehr_share::chain::{DeviceKind, EhrChain, PatientAddr};
use ehr_share::db::Database;
use ehr_share::gateway::{AppState, Keyring};
use ehr_share::ingest::device::Device;
use ehr_share::ingest::vitals::observation_json;
use ehr_share::ingest::{
    Ingest, IngestSettings, OwnedEnvelope, Sealer, Vital, at_rest_key, read_sealed, sign_envelope,
};
use ehr_share::ipfs::KuboClient;
use ehr_share::records::RecordsConfig;
use futures::StreamExt;
use serde_json::{Value, json};

/// A gateway taking readings for the shared contract; returns its URL, the service and the
/// database.
async fn gateway(
    office: &EhrChain,
    settings: IngestSettings,
    ingestor: &PrivateKeySigner,
    records: Option<RecordsConfig>,
) -> (String, Ingest, Database, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&ehr_share::db::sqlite_in(dir.path()))
        .await
        .unwrap();
    let reader = EhrChain::connect(&common::rpc(), None, &office.deployment())
        .await
        .unwrap();
    let ingest = Ingest::new(
        db.clone(),
        reader.clone(),
        at_rest_key(&ingestor.to_bytes().0),
        settings,
    );
    let ipfs = KuboClient::new(&common::stack().kubo.api_url);
    let mut state = AppState::new(
        &common::rpc(),
        Some(reader),
        ipfs.clone(),
        Keyring::default(),
    )
    .unwrap();
    if let Some(cfg) = records {
        let client = cfg
            .client(common::as_(office, ingestor), ingestor.clone(), ipfs)
            .unwrap();
        Sealer::new(db.clone(), client, &ingest).spawn();
        state = state.with_records(cfg);
    }
    let url = common::serve_gateway(state.with_ingest(ingest.clone())).await;
    (url, ingest, db, dir)
}

/// An ingestion service's account, allowed by the office.
async fn ingestor(office: &EhrChain) -> PrivateKeySigner {
    let key = common::funded().await;
    office.set_ingestor(key.address(), true).await.unwrap();
    key
}

/// A device key registered by `patient` (whose chain client is `as_patient`).
async fn device(as_patient: &EhrChain, kind: DeviceKind) -> PrivateKeySigner {
    let key = PrivateKeySigner::random();
    as_patient
        .add_device(key.address(), kind, "test device")
        .await
        .unwrap();
    key
}

fn unix_now() -> u64 {
    nodes::now()
}

fn hr(value: f64) -> String {
    observation_json(
        Vital::HeartRate,
        i64::try_from(unix_now()).unwrap(),
        value,
        None,
    )
    .to_string()
}

async fn post(http: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = http
        .post(format!("{url}/ingest"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn line(e: &OwnedEnvelope) -> String {
    serde_json::to_string(e).unwrap()
}

#[tokio::test]
async fn readings_are_sealed_into_records_a_granted_doctor_reads_with_every_signature_checked() {
    let office = common::office().await;
    let (pkey, patient) = common::new_patient(&office).await;
    let as_patient = common::as_(&office, &pkey);
    let doctor = common::funded().await;
    common::as_(&office, &doctor)
        .register_provider()
        .await
        .unwrap();
    office.verify_provider(doctor.address()).await.unwrap();
    as_patient.grant(doctor.address(), None).await.unwrap();
    let ing = ingestor(&office).await;

    let procs = nodes::start_many(office.address(), 5, &[]).await;
    let refs = nodes::refs(&procs).await;
    let settings = IngestSettings {
        window: Duration::from_secs(1),
        tick: Duration::from_millis(200),
        ..Default::default()
    };
    let (url, ingest, db, _dir) = gateway(
        &office,
        settings,
        &ing,
        Some(RecordsConfig::new(refs.clone(), 3)),
    )
    .await;
    let domain = ingest.domain().clone();

    // Before any device: the share nodes refuse the ingestor's records for this patient.
    let as_ingestor = nodes::client(&office, &ing, &refs);
    let early = as_ingestor
        .put(
            patient,
            bytes::Bytes::from_static(b"{}"),
            "application/json",
            None,
        )
        .await;
    assert!(early.is_err(), "no active device, no ingestion: {early:?}");

    let watch = Device::new(
        device(&as_patient, DeviceKind::Watch).await,
        patient,
        domain.clone(),
    );
    let cuff = Device::new(
        device(&as_patient, DeviceKind::BpCuff).await,
        patient,
        domain.clone(),
    );
    let http = reqwest::Client::new();

    // One request: a Bundle of three heart rates.
    let t = i64::try_from(unix_now()).unwrap();
    let bundle = json!({ "resourceType": "Bundle", "type": "collection", "entry": [
        { "resource": observation_json(Vital::HeartRate, t - 2, 71.0, None) },
        { "resource": observation_json(Vital::HeartRate, t - 1, 72.0, None) },
        { "resource": observation_json(Vital::HeartRate, t, 141.0, None) },
    ]});
    let env = watch.sign(bundle.to_string()).unwrap();
    let (status, body) = post(&http, &url, line(&env)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"]["observations"], 3);

    // A stream: five blood pressures, each answered in order.
    let envs: Vec<OwnedEnvelope> = (0..5)
        .map(|i| {
            cuff.sign(
                observation_json(
                    Vital::BloodPressure,
                    t - 10 + i,
                    118.0 + f64::from(u8::try_from(i).unwrap()),
                    Some(76.0),
                )
                .to_string(),
            )
            .unwrap()
        })
        .collect();
    let answers: Vec<Value> = Device::stream(&http, &url, futures::stream::iter(envs))
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(answers.len(), 5);
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a["ok"], true, "{a}");
        assert_eq!(a["line"], i + 1);
    }

    // The window closes and is sealed into a record; the readings leave the gateway.
    let sealed = nodes::wait_until(Duration::from_secs(60), || async {
        let st = db.ingest_stats(0).await.unwrap();
        st.waiting_envelopes == 0 && st.sealed_observations == 8
    })
    .await;
    assert!(sealed, "{:?}", db.ingest_stats(0).await.unwrap());
    let windows = db
        .sealed_windows(patient.aid(), patient.pid(), 0, i64::MAX, 10)
        .await
        .unwrap();
    assert!(!windows.is_empty());

    // The doctor reads every window (an access transaction each) and checks each reading.
    let as_doctor = nodes::client(&office, &doctor, &refs);
    let mut seen = std::collections::HashSet::new();
    let mut readings = Vec::new();
    for w in &windows {
        let id: ehr_share::chain::RecordId = w.record.as_deref().unwrap().parse().unwrap();
        let got = as_doctor.get(id).await.unwrap();
        assert_eq!(got.block.media_type, ehr_share::ingest::READINGS_MEDIA_TYPE);
        assert_eq!(
            got.block.author,
            ing.address(),
            "sealed by the ingestion service"
        );
        let bad = read_sealed(&got.data, &domain, patient, &mut seen, &mut readings);
        assert_eq!(bad, 0, "every envelope's signature holds");
    }
    assert_eq!(readings.len(), 8);
    let hr: Vec<f64> = readings
        .iter()
        .filter(|r| r.reading.vital == Vital::HeartRate)
        .map(|r| r.reading.value)
        .collect();
    assert_eq!(hr.len(), 3);
    assert!(hr.contains(&141.0));
    assert!(
        readings.iter().any(|r| r.reading.out_of_range()),
        "141/min is out of range"
    );
    assert!(
        readings
            .iter()
            .filter(|r| r.reading.vital == Vital::BloodPressure)
            .all(|r| r.device == cuff.address())
    );

    // Another patient's record cannot be slipped in by the ingestor for a patient whose
    // devices are all revoked, nor by an account the office never allowed.
    as_patient.revoke_device(watch.address()).await.unwrap();
    as_patient.revoke_device(cuff.address()).await.unwrap();
    let late = as_ingestor
        .put(
            patient,
            bytes::Bytes::from_static(b"{}"),
            "application/json",
            None,
        )
        .await;
    assert!(late.is_err(), "devices revoked: no ingestion: {late:?}");
    let stranger = common::funded().await;
    let _d = device(&as_patient, DeviceKind::Ring).await;
    let forged = nodes::client(&office, &stranger, &refs)
        .put(
            patient,
            bytes::Bytes::from_static(b"{}"),
            "application/json",
            None,
        )
        .await;
    assert!(forged.is_err(), "not an ingestor: {forged:?}");
    drop(procs);
}

#[tokio::test]
async fn every_bad_reading_is_refused_with_its_status_and_nothing_of_it_is_stored() {
    let office = common::office().await;
    let (pkey, patient) = common::new_patient(&office).await;
    let as_patient = common::as_(&office, &pkey);
    let (okey, other) = common::new_patient(&office).await;
    let as_other = common::as_(&office, &okey);
    let ing = ingestor(&office).await;
    let (url, ingest, db, _dir) = gateway(&office, IngestSettings::default(), &ing, None).await;
    let domain = ingest.domain().clone();
    let http = reqwest::Client::new();
    let watch = device(&as_patient, DeviceKind::Watch).await;
    let now = unix_now();
    let sign = |key: &PrivateKeySigner, p: PatientAddr, resource: String, nonce: u64, time: u64| {
        sign_envelope(key, &domain, p, resource, nonce, time).unwrap()
    };
    let mut expect_stored = 0;

    // A good one, then the same again: a replay.
    let good = line(&sign(&watch, patient, hr(72.0), 1, now));
    assert_eq!(post(&http, &url, good.clone()).await.0, 200);
    expect_stored += 1;
    let (s, b) = post(&http, &url, good.clone()).await;
    assert_eq!(
        (s, b["error"].as_str().unwrap().contains("replay")),
        (409, true),
        "{b}"
    );

    // Unsigned: the signature left out.
    let mut v: Value =
        serde_json::from_str(&line(&sign(&watch, patient, hr(72.0), 2, now))).unwrap();
    v.as_object_mut().unwrap().remove("signature");
    let (s, b) = post(&http, &url, v.to_string()).await;
    assert_eq!(s, 401, "{b}");

    // Forged: signed by a key of our own, naming the patient's device.
    let forger = PrivateKeySigner::random();
    let mut v: Value =
        serde_json::from_str(&line(&sign(&forger, patient, hr(72.0), 3, now))).unwrap();
    v["device"] = json!(watch.address());
    assert_eq!(post(&http, &url, v.to_string()).await.0, 401);

    // Tampered: the value changed after signing (the signed bytes no longer match).
    let tampered =
        line(&sign(&watch, patient, hr(72.0), 4, now)).replace("\"value\":72.0", "\"value\":42.0");
    assert!(tampered.contains("42.0"));
    assert_eq!(post(&http, &url, tampered).await.0, 401);

    // Stale, and from the future, beyond the 300 s bound.
    let (s, b) = post(
        &http,
        &url,
        line(&sign(&watch, patient, hr(72.0), 5, now - 1_000)),
    )
    .await;
    assert_eq!(s, 401, "{b}");
    assert!(b["error"].as_str().unwrap().contains("stale"), "{b}");
    assert_eq!(
        post(
            &http,
            &url,
            line(&sign(&watch, patient, hr(72.0), 6, now + 1_000))
        )
        .await
        .0,
        401
    );

    // A key no patient registered.
    let (s, b) = post(
        &http,
        &url,
        line(&sign(
            &PrivateKeySigner::random(),
            patient,
            hr(72.0),
            7,
            now,
        )),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("not registered"),
        "{b}"
    );

    // The patient's device writing for another patient.
    let (s, b) = post(&http, &url, line(&sign(&watch, other, hr(72.0), 8, now))).await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("not a device of patient"),
        "{b}"
    );
    // ... and another patient's device writing for ours.
    let theirs = device(&as_other, DeviceKind::Ring).await;
    assert_eq!(
        post(&http, &url, line(&sign(&theirs, patient, hr(72.0), 9, now)))
            .await
            .0,
        403
    );

    // Malformed: not JSON, not an envelope, not an Observation.
    assert_eq!(post(&http, &url, "{not json").await.0, 400);
    assert_eq!(post(&http, &url, r#"{"device":"0x1"}"#).await.0, 400);
    let patient_resource = json!({ "resourceType": "Patient", "id": "x" }).to_string();
    assert_eq!(
        post(
            &http,
            &url,
            line(&sign(&watch, patient, patient_resource, 10, now))
        )
        .await
        .0,
        400
    );

    // Wrong unit, an impossible value, a code that is no vital sign: 422.
    let mut o: Value = serde_json::from_str(&hr(72.0)).unwrap();
    o["valueQuantity"]["code"] = json!("/h");
    let (s, b) = post(
        &http,
        &url,
        line(&sign(&watch, patient, o.to_string(), 11, now)),
    )
    .await;
    assert_eq!(s, 422, "{b}");
    assert!(b["error"].as_str().unwrap().contains("/min"), "{b}");
    assert_eq!(
        post(
            &http,
            &url,
            line(&sign(&watch, patient, hr(900.0), 12, now))
        )
        .await
        .0,
        422
    );
    let mut o: Value = serde_json::from_str(&hr(72.0)).unwrap();
    o["code"]["coding"][0]["code"] = json!("2093-3");
    assert_eq!(
        post(
            &http,
            &url,
            line(&sign(&watch, patient, o.to_string(), 13, now))
        )
        .await
        .0,
        422
    );

    // An observation dated ahead of the clock, or from long ago: it would claim chart windows
    // it does not belong to.
    for (nonce, at) in [(30, now + 3_600), (31, now - 40 * 86_400)] {
        let o = observation_json(Vital::HeartRate, i64::try_from(at).unwrap(), 70.0, None);
        let (s, b) = post(
            &http,
            &url,
            line(&sign(&watch, patient, o.to_string(), nonce, now)),
        )
        .await;
        assert_eq!(s, 422, "{b}");
    }

    // Too large for one envelope.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(300 * 1024));
    assert_eq!(post(&http, &url, big).await.0, 413);

    // Revoked: accepted up to the revoke, refused from the next request on.
    let ring = device(&as_patient, DeviceKind::Ring).await;
    assert_eq!(
        post(&http, &url, line(&sign(&ring, patient, hr(70.0), 1, now)))
            .await
            .0,
        200
    );
    expect_stored += 1;
    as_patient.revoke_device(ring.address()).await.unwrap();
    let (s, b) = post(
        &http,
        &url,
        line(&sign(&ring, patient, hr(70.0), 2, unix_now())),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(b["error"].as_str().unwrap().contains("revoked"), "{b}");

    // A stream mixing good and bad lines: one answer per line, in order, with each status.
    let lines = [
        line(&sign(&watch, patient, hr(73.0), 20, unix_now())),
        "{broken".to_owned(),
        line(&sign(&watch, patient, hr(74.0), 20, unix_now())),
        line(&sign(&watch, patient, hr(901.0), 21, unix_now())),
        line(&sign(&watch, patient, hr(75.0), 22, unix_now())),
    ];
    expect_stored += 2;
    let r = http
        .post(format!("{url}/ingest/stream"))
        .body(lines.join("\n") + "\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let answers: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let statuses: Vec<Value> = answers
        .iter()
        .map(|a| a.get("status").cloned().unwrap_or(json!(200)))
        .collect();
    // Lines 1 and 3 carry the same nonce and are checked concurrently: whichever is stored
    // first wins, and the other is the replay. Exactly one of them is stored.
    let mut same_nonce = [statuses[0].clone(), statuses[2].clone()];
    same_nonce.sort_by_key(|v| v.as_u64());
    assert_eq!(same_nonce, [json!(200), json!(409)], "{text}");
    assert_eq!(
        [&statuses[1], &statuses[3], &statuses[4]],
        [&json!(400), &json!(422), &json!(200)],
        "{text}"
    );

    // Only the good ones are stored, encrypted at rest; every refusal is counted.
    ingest.refusals().flush(&db, now / 86_400).await.unwrap();
    let st = db.ingest_stats(0).await.unwrap();
    assert_eq!(st.waiting_envelopes, expect_stored, "{st:?}");
    let refused: u64 = st.refusals.iter().map(|(_, n)| n).sum();
    // Every refusal above but the oversized body, which the body limit stops before it is read.
    assert_eq!(refused, 21, "{st:?}");
    for reason in [
        "replayed",
        "unsigned",
        "bad-signature",
        "stale",
        "unknown-device",
        "other-patient",
        "malformed",
        "unsupported",
        "revoked-device",
    ] {
        assert!(
            st.refusals.iter().any(|(r, _)| r == reason),
            "{reason} counted: {st:?}"
        );
    }
    let file = std::fs::read(_dir.path().join("ehr.db")).unwrap();
    let wal = std::fs::read(_dir.path().join("ehr.db-wal")).unwrap_or_default();
    for bytes in [&file, &wal] {
        assert!(
            !bytes.windows(6).any(|w| w == b"8867-4"),
            "readings are encrypted at rest"
        );
    }
    let _: Address = watch.address();
}

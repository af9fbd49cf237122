//! The local stack survives crashes (issue #9): records are uploaded to `ehr dev`; then anvil
//! (at once: an acknowledged upload must already be durable), a share node, Kubo and finally
//! `ehr dev` itself are killed with SIGKILL; the supervisor restarts
//! each child, and `ehr dev` started again on the same folder serves every record byte-identical,
//! the complete audit trail, and the same contract. Device readings acknowledged just before
//! the last kill, before their window closed, are sealed into a record after the restart.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::nodes::wait_until;
use ehr_share::stack::ManagedChild;
use serde_json::Value;

/// The sealing window of device readings in these runs.
const READINGS_WINDOW_SECS: u64 = 30;

struct Ports {
    gateway: u16,
    anvil: u16,
    kubo_api: u16,
    kubo_gateway: u16,
    share_base: u16,
}

async fn start_dev(state: &Path, p: &Ports) -> ManagedChild {
    let mut cmd = tokio::process::Command::new(common::ehr_bin());
    cmd.arg("dev")
        .env("EHR_STATE_DIR", state)
        .env("EHR_PROJECT_DIR", common::root())
        .env("EHR_ANVIL_CONFIG", common::root().join("anvil.toml"))
        .env("EHR_ANVIL_PORT", p.anvil.to_string())
        .env("EHR_GATEWAY_PORT", p.gateway.to_string())
        .env("EHR_KUBO_API_PORT", p.kubo_api.to_string())
        .env("EHR_KUBO_GATEWAY_PORT", p.kubo_gateway.to_string())
        .env("EHR_SHARE_NODE_BASE_PORT", p.share_base.to_string())
        // Longer than the time from the readings' acknowledgement to the kill below.
        .env(
            "EHR_DEV_INGEST_WINDOW_SECS",
            READINGS_WINDOW_SECS.to_string(),
        );
    let mut child = ManagedChild::spawn("ehr dev", cmd, false).unwrap();
    let url = format!("http://127.0.0.1:{}/health", p.gateway);
    child
        .wait_healthy(Duration::from_secs(180), || {
            let url = url.clone();
            async move { matches!(reqwest::get(url).await, Ok(r) if r.status().is_success()) }
        })
        .await
        .unwrap_or_else(|e| panic!("ehr dev did not start: {e}"));
    child
}

/// Every process below `root`, with its command line.
fn descendants(root: u32) -> Vec<(u32, String)> {
    let mut all = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The parent pid is the second field after the parenthesised command name.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        all.push((pid, ppid, cmd));
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid, cmd) in &all {
            if *ppid == p {
                out.push((*pid, cmd.clone()));
                frontier.push(*pid);
            }
        }
    }
    out
}

/// The pid of the one process below `root` whose command line has every one of `words`
/// (wrapper shells excluded).
fn pid_of(root: u32, words: &[&str]) -> Option<u32> {
    descendants(root)
        .into_iter()
        .find(|(_, cmd)| {
            !cmd.starts_with("bash")
                && !cmd.starts_with("sh ")
                && words.iter().all(|w| cmd.contains(w))
        })
        .map(|(pid, _)| pid)
}

fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Waits until the process matching `words` has been replaced by a new one and `healthy` holds.
async fn restarted(root: u32, words: &[&str], old: u32, what: &str, healthy: impl Fn() -> bool) {
    let ok = wait_until(Duration::from_secs(60), || {
        let now = pid_of(root, words);
        let h = healthy();
        async move { now.is_some_and(|p| p != old) && h }
    })
    .await;
    assert!(ok, "{what} was not restarted");
}

async fn health(gw: &str) -> Value {
    match reqwest::get(format!("{gw}/health")).await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    }
}

async fn upload(gw: &str, body: Vec<u8>) -> String {
    let r: Value = reqwest::Client::new()
        .post(format!("{gw}/records?patient=1-1001"))
        .bearer_auth("demo-patient1")
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["record"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned()
}

/// Patient 1 grants demo doctor 1 with `Idempotency-Key: key`: the transaction, and whether
/// the answer is a replay.
async fn keyed_grant(gw: &str, key: &str) -> (String, bool) {
    let r = reqwest::Client::new()
        .post(format!("{gw}/api/grants"))
        .bearer_auth("demo-patient1")
        .header("Idempotency-Key", key)
        .json(&serde_json::json!({"provider": "0x976EA74026E726554dB657fA54763abd0C3a0aa9"}))
        .send()
        .await
        .unwrap();
    let replayed = r.headers().contains_key("idempotent-replayed");
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    (body["tx_hash"].as_str().unwrap().to_owned(), replayed)
}

async fn read(gw: &str, id: &str) -> Vec<u8> {
    let r = reqwest::Client::new()
        .get(format!("{gw}/records/{id}"))
        .bearer_auth("demo-patient1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "record {id}");
    r.bytes().await.unwrap().to_vec()
}

/// The ids of patient 1-1001's records, as the gateway lists them (from the share nodes,
/// proofs checked against the chain), in pages of two, each from the `next` of the one before.
/// A listing cut short (a page answered 503 while fewer than k nodes answer, or a record seen
/// twice when a node came back between pages) is started again, up to 50 times.
async fn listed(gw: &str) -> Vec<String> {
    for _ in 0..50 {
        if let Some(ids) = list_once(gw).await {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no complete listing of 1-1001's records in 50 tries");
}

async fn list_once(gw: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut url = format!("{gw}/api/patients/1-1001/records?limit=2");
        if let Some(n) = &next {
            url.push_str(&format!("&before={n}"));
        }
        let r = reqwest::get(url).await.ok()?;
        if r.status() != 200 {
            return None;
        }
        let page: Value = r.json().await.ok()?;
        out.extend(
            page["records"]
                .as_array()?
                .iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned)),
        );
        match page["next"].as_str() {
            Some(n) => next = Some(n.to_owned()),
            None => break,
        }
    }
    let unique: std::collections::HashSet<&String> = out.iter().collect();
    (unique.len() == out.len()).then_some(out)
}

/// Waits until the chain's state file, or its journal, holds every block the chain at `rpc`
/// has now (`ehr dev` journals within about a second of a change).
async fn state_saved(state: &Path, rpc: &str) {
    use alloy::providers::Provider as _;
    let head = alloy::providers::ProviderBuilder::new()
        .connect_http(rpc.parse().unwrap())
        .get_block_number()
        .await
        .unwrap();
    let file: PathBuf = state.join("anvil-state.json");
    let ok = wait_until(Duration::from_secs(20), || {
        let saved = ehr_share::stack::durable_head(&file);
        async move { saved.is_some_and(|n| n >= head) }
    })
    .await;
    assert!(ok, "the chain was never saved with block {head}");
}

fn payload(i: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i))
        .collect()
}

#[tokio::test]
async fn every_record_survives_kill_9_of_each_part_and_of_ehr_dev() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    // Nine ports in one block, so no two of them can be the same.
    let base = common::quiet_ports(9);
    let p = Ports {
        gateway: base,
        anvil: base + 1,
        kubo_api: base + 2,
        kubo_gateway: base + 3,
        share_base: base + 4,
    };
    let gw = format!("http://127.0.0.1:{}", p.gateway);
    let mut dev = start_dev(&state, &p).await;
    let root = dev.pid().unwrap();
    let contract = health(&gw).await["chain"]["contract"].clone();
    assert!(contract.is_string());

    let mut records = Vec::new();
    for i in 0..3u8 {
        let data = payload(i, 1000 + 100_000 * usize::from(i));
        records.push((upload(&gw, data.clone()).await, data));
    }

    // anvil: SIGKILL right after the acknowledgements, before ehr dev's periodic save (every
    // second): an acknowledged upload's anchor is on disk already (`stack::AnvilState`), so the
    // restarted chain still has it and the records read back.
    let anvil_port = format!("--port {}", p.anvil);
    let words = ["anvil", anvil_port.as_str()];
    let anvil = pid_of(root, &words).expect("anvil runs under ehr dev");
    kill9(anvil);
    let gw2 = gw.clone();
    restarted(root, &words, anvil, "anvil", || true).await;
    assert!(
        wait_until(Duration::from_secs(30), || {
            let gw = gw2.clone();
            async move { health(&gw).await["chain"]["ok"] == true }
        })
        .await
    );
    for (id, data) in &records {
        assert_eq!(
            &read(&gw, id).await,
            data,
            "record {id} after anvil's SIGKILL"
        );
    }

    // One share node and Kubo.
    let node_port = format!("--port {}", p.share_base + 1);
    let words = ["share-node", node_port.as_str()];
    let node = pid_of(root, &words).expect("share node 2 runs under ehr dev");
    kill9(node);
    restarted(root, &words, node, "share node 2", || true).await;
    let words = ["ipfs", "daemon"];
    let kubo = pid_of(root, &words).expect("Kubo runs under ehr dev");
    kill9(kubo);
    restarted(root, &words, kubo, "Kubo", || true).await;
    assert!(
        wait_until(Duration::from_secs(30), || {
            let gw = gw.clone();
            async move { health(&gw).await["ipfs"]["ok"] == true }
        })
        .await
    );
    assert_eq!(read(&gw, &records[1].0).await, records[1].1);

    // An upload after the restarts, a web login, then SIGKILL of ehr dev itself.
    let data = payload(9, 4242);
    records.push((upload(&gw, data.clone()).await, data));
    let browser = common::web::browser();
    let t = common::web::form_token(&browser, &gw, "/").await;
    let r = common::web::login(&browser, &gw, &t, "patient1", "patient1-password").await;
    assert_eq!(r.status(), 303, "demo patient logs in");
    // A device of patient 1 sends readings; each is acknowledged once committed, long before
    // its window closes.
    let mut settings =
        ehr_share::config::AnvilSettings::load(&common::root().join("anvil.toml")).unwrap();
    settings.port = p.anvil;
    let deployment = ehr_share::chain::Deployment::load(&state.join("deployment.json")).unwrap();
    let as_patient = ehr_share::chain::EhrChain::connect(
        &settings.rpc_url(),
        Some(ehr_share::cli::demo_signer(&settings, 3).unwrap()),
        &deployment,
    )
    .await
    .unwrap();
    let key = alloy::signers::local::PrivateKeySigner::random();
    as_patient
        .add_device(
            key.address(),
            ehr_share::chain::DeviceKind::Watch,
            "restart",
        )
        .await
        .unwrap();
    let device = ehr_share::ingest::device::Device::new(
        key,
        "1-1001".parse().unwrap(),
        ehr_share::ingest::ingest_domain(
            as_patient.chain_id(),
            as_patient.address(),
            as_patient.deployment_id(),
        ),
    );
    // A grant named with an Idempotency-Key (kept in ehr dev's database).
    let (grant_tx, replayed) = keyed_grant(&gw, "restart-grant").await;
    assert!(!replayed);
    let http = reqwest::Client::new();
    let acked_at = SystemTime::now();
    let mut nonces = Vec::new();
    for i in 0..5 {
        let at = i64::try_from(common::nodes::now()).unwrap();
        let o = ehr_share::ingest::vitals::observation_json(
            ehr_share::ingest::Vital::HeartRate,
            at,
            70.0 + f64::from(i),
            None,
        );
        let env = device.sign(o.to_string()).unwrap();
        ehr_share::ingest::device::Device::send(&http, &gw, &env)
            .await
            .unwrap();
        nonces.push(env.nonce);
    }
    state_saved(&state, &format!("http://127.0.0.1:{}", p.anvil)).await;
    assert!(
        acked_at.elapsed().unwrap() < Duration::from_secs(READINGS_WINDOW_SECS),
        "killed before the readings' window closed"
    );
    let ehr = pid_of(root, &["ehr", " dev"]).expect("ehr dev under its tether");
    kill9(ehr);
    let _ = tokio::time::timeout(Duration::from_secs(30), dev.wait_exit()).await;
    let anvil_addr = format!("127.0.0.1:{}", p.anvil);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let a = anvil_addr.clone();
            async move { std::net::TcpStream::connect(&a).is_err() }
        })
        .await,
        "the children died with ehr dev"
    );

    // Started again on the same folder: same contract, every record, the whole trail, and
    // the web session (kept in the database, not in the killed process).
    let _dev = start_dev(&state, &p).await;
    assert_eq!(health(&gw).await["chain"]["contract"], contract);
    let r = browser.get(format!("{gw}/patient")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the web session outlives kill -9 of ehr dev"
    );
    for (id, data) in &records {
        assert_eq!(&read(&gw, id).await, data, "record {id}");
    }
    // The grant asked again with its key is answered by the first try's transaction, which
    // the restarted process knows only from the database.
    assert_eq!(
        keyed_grant(&gw, "restart-grant").await,
        (grant_tx, true),
        "a retry after kill -9 of ehr dev is the first grant"
    );
    // The patient's records list (from the share nodes, proofs checked against the chain)
    // names every record.
    let ids = listed(&gw).await;
    for (id, _) in &records {
        assert!(ids.contains(id), "{id} missing from the records list");
    }

    // The acknowledged readings are sealed into a record after the restart, every one of them.
    let known: Vec<String> = records.iter().map(|(id, _)| id.clone()).collect();
    let sealed = wait_until(Duration::from_secs(READINGS_WINDOW_SECS + 60), || {
        let (gw, known, nonces) = (gw.clone(), known.clone(), nonces.clone());
        async move {
            let mut found = Vec::new();
            for id in listed(&gw).await.iter().filter(|id| !known.contains(id)) {
                // Sealed windows hold one signed envelope per line; other records (the demo
                // record) hold none.
                let data = read(&gw, id).await;
                for line in String::from_utf8_lossy(&data).lines() {
                    if let Ok(v) = serde_json::from_str::<Value>(line)
                        && let Some(n) = v["nonce"].as_u64()
                    {
                        found.push(n);
                    }
                }
            }
            nonces.iter().all(|n| found.contains(n))
        }
    })
    .await;
    assert!(
        sealed,
        "readings acknowledged before kill -9 were sealed after the restart"
    );
}

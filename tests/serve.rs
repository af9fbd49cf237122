//! `ehr serve` against a configured deployment (issue #9): `--check` validates the file and
//! reports what it reaches; development settings are refused by name; served over TLS, the web
//! app answers over HTTPS with `Secure` cookies and no demo token works.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::nodes;
use ehr_share::stack::{ManagedChild, free_port};

fn config(
    dir: &Path,
    deployment: &Path,
    nodes: &[(String, String)],
    extra: &str,
) -> std::path::PathBuf {
    let mut text = format!(
        "listen = \"127.0.0.1:{}\"\n[chain]\nrpc_url = \"{}\"\ndeployment = \"{}\"\n[ipfs]\napi_url = \"{}\"\n[records]\nthreshold = 2\n",
        free_port().unwrap(),
        common::rpc(),
        deployment.display(),
        common::stack().kubo.api_url,
    );
    for (url, address) in nodes {
        text.push_str(&format!(
            "[[records.share_nodes]]\nurl = \"{url}\"\naddress = \"{address}\"\n"
        ));
    }
    text.push_str(&format!(
        "[database]\nurl = \"sqlite://web/ehr.db\"\n{extra}"
    ));
    let path = dir.join("ehr.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `ehr serve` with none of the caller's `EHR_*` settings (each key reads one).
fn serve_cmd() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(common::ehr_bin());
    cmd.arg("serve");
    for (_, var, _) in ehr_share::serve_config::ENV {
        cmd.env_remove(var);
    }
    cmd.env_remove("EHR_CONFIG");
    cmd
}

async fn check(path: &Path) -> Output {
    tokio::time::timeout(
        Duration::from_secs(60),
        serve_cmd().args(["--check", "--config"]).arg(path).output(),
    )
    .await
    .unwrap()
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The shared contract's deployment file in a fresh folder, and two share nodes (URL, address).
struct Setup {
    office: ehr_share::chain::EhrChain,
    dir: tempfile::TempDir,
    deployment: std::path::PathBuf,
    good: Vec<(String, String)>,
    _procs: Vec<nodes::NodeProc>,
}

async fn setup() -> Setup {
    let office = common::office().await;
    let dir = tempfile::tempdir().unwrap();
    let deployment = dir.path().join("deployment.json");
    office.deployment().save(&deployment).unwrap();
    let procs = nodes::start_many(office.address(), 2, &[]).await;
    let good = nodes::refs(&procs)
        .await
        .iter()
        .map(|r| (r.url.clone(), r.address.to_string()))
        .collect();
    Setup {
        office,
        dir,
        deployment,
        good,
        _procs: procs,
    }
}

#[tokio::test]
async fn check_reports_what_it_reaches_and_names_bad_keys() {
    let Setup {
        office: _,
        dir,
        deployment,
        good,
        _procs,
    } = setup().await;

    let path = config(dir.path(), &deployment, &good, "");
    let o = check(&path).await;
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("chain   ok"), "{t}");
    assert!(t.contains("ipfs    ok"), "{t}");
    assert_eq!(t.matches("share   ok").count(), 2, "{t}");

    // A node that answers as another identity: reported, exit 2.
    let mut wrong = good.clone();
    wrong[1].1 = "0x0000000000000000000000000000000000000bad".into();
    let o = check(&config(dir.path(), &deployment, &wrong, "")).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("share   WRONG"), "{}", text(&o));

    // Development settings are refused by name; a bad threshold names its key and the fix.
    let o = check(&config(
        dir.path(),
        &deployment,
        &good,
        "[dev]\nmnemonic = \"test test test test test test test test test test test junk\"\n",
    ))
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("`dev.mnemonic` is a development-only setting"),
        "{}",
        text(&o)
    );
    let p = config(dir.path(), &deployment, &good, "");
    let t = std::fs::read_to_string(&p)
        .unwrap()
        .replace("threshold = 2", "threshold = 5");
    std::fs::write(&p, t).unwrap();
    let o = check(&p).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("`records.threshold`") && text(&o).contains("between 1 and 2"),
        "{}",
        text(&o)
    );
}

#[tokio::test]
async fn serves_https_with_secure_cookies_and_no_demo_tokens() {
    let Setup {
        office,
        dir,
        deployment,
        good,
        _procs,
    } = setup().await;
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let port = common::quiet_port();
    let path = config(
        dir.path(),
        &deployment,
        &good,
        "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
    );
    let mut cmd = serve_cmd();
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let mut child = ManagedChild::spawn("ehr serve", cmd, false).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let (h, b) = (https.clone(), base.clone());
    child
        .wait_healthy(Duration::from_secs(60), move || {
            let (h, b) = (h.clone(), b.clone());
            async move { matches!(h.get(format!("{b}/health")).send().await, Ok(r) if r.status().is_success()) }
        })
        .await
        .unwrap_or_else(|e| panic!("ehr serve did not start: {e}"));
    let health: serde_json::Value = https
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        health["chain"]["contract"].as_str().unwrap().to_lowercase(),
        office.address().to_string().to_lowercase()
    );
    let nodes_health = health["share_nodes"].as_array().unwrap();
    assert_eq!(nodes_health.len(), 2);
    assert!(nodes_health.iter().all(|n| n["ok"] == true), "{health}");
    assert_eq!(health["status"], "ok");
    // The login page sets its form cookie Secure.
    let r = https.get(format!("{base}/")).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    // No demo token opens anything.
    let r = https
        .get(format!("{base}/api/me"))
        .bearer_auth("demo-office")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Plain HTTP on the TLS port gets nothing useful.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health")).await;
    assert!(plain.map_or(true, |r| !r.status().is_success()));
    child.stop(Duration::from_secs(5)).await;
}

/// `ehr share-node --config`: a node configured by a file (port, folder, chain, contract, a
/// limit) starts, answers as its identity, and `ehr serve --check` finds it; a flag wins over
/// the file; a testing switch in the file is refused.
#[tokio::test]
async fn a_share_node_runs_from_its_config_file() {
    let Setup {
        office,
        dir,
        deployment,
        good,
        _procs,
    } = setup().await;
    let port = common::quiet_port();
    let file = dir.path().join("share-node.toml");
    std::fs::write(
        &file,
        format!(
            "port = 1\nhost = \"127.0.0.1\"\ndata_dir = \"node-data\"\nkey_file = \"keys/node.key\"\nrpc_url = \"{}\"\ndeployment = \"{}\"\nburst = 7\n",
            common::rpc(),
            deployment.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    let mut cmd = tokio::process::Command::new(common::ehr_bin());
    cmd.args(["share-node", "--config"])
        .arg(&file)
        // The flag wins over the file's port 1.
        .args(["--port", &port.to_string()])
        .env_remove("EHR_RPC_URL")
        .env_remove("EHR_DEPLOYMENT")
        .env_remove("EHR_CONTRACT");
    let mut child = nodes::spawn_healthy(cmd, port).await;
    let url = format!("http://127.0.0.1:{port}");
    assert!(
        dir.path().join("keys/node.key").exists(),
        "key where the file says"
    );
    assert!(
        dir.path().join("node-data").is_dir(),
        "store where the file says"
    );
    let found = ehr_share::records::ShareNodeRef::discover(&url)
        .await
        .unwrap();
    let nodes = vec![good[0].clone(), (url.clone(), found.address.to_string())];
    let o = check(&config(dir.path(), &deployment, &nodes, "")).await;
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o).matches("share   ok").count(), 2, "{}", text(&o));
    child.stop(Duration::from_secs(5)).await;
    let _ = office;

    std::fs::write(&file, "danger_corrupt_shares = true\n").unwrap();
    let o = tokio::process::Command::new(common::ehr_bin())
        .args(["share-node", "--config"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("tests only"), "{}", text(&o));
}

/// A server's log that goes to a pipe (a file, systemd's journal, `ehr dev`'s collector) is
/// plain text: no terminal colour codes around every field, which a reader of the file or a
/// log shipper would see as garbage. With `EHR_LOG_FORMAT=json` each line is one JSON object
/// with the event's level and fields; another format is refused by name. A share node's
/// refusal is logged and read back from its stderr pipe.
#[tokio::test]
async fn a_log_written_to_a_pipe_is_plain_text_or_json() {
    let office = common::office().await;
    for format in ["", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let mut cmd = nodes::command(dir.path(), office.address(), port, &[]);
        cmd.env_remove("NO_COLOR")
            .env_remove("EHR_LOG")
            .env("EHR_LOG_FORMAT", format);
        let mut child = nodes::spawn_healthy(cmd, port).await;
        let url = format!("http://127.0.0.1:{port}");
        let r = reqwest::Client::new()
            .post(format!("{url}/anchors"))
            .json(&serde_json::json!({ "anchors": [] }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
        // The log line is written after the answer: wait for it (bounded).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !child.last_log().contains("share node refused") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the refusal was not logged: {}",
                child.last_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let log = child.last_log();
        assert!(!log.contains('\u{1b}'), "escape codes in the log: {log:?}");
        if format == "json" {
            let line = log
                .lines()
                .find(|l| l.contains("share node refused"))
                .unwrap();
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(v["level"], "WARN", "{line}");
            assert_eq!(v["fields"]["status"], "400 Bad Request", "{line}");
            assert!(
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("share node refused")),
                "{line}"
            );
        }
        child.stop(Duration::from_secs(5)).await;
    }
    let o = nodes::command(
        tempfile::tempdir().unwrap().path(),
        office.address(),
        1,
        &[],
    )
    .env("EHR_LOG_FORMAT", "yaml")
    .output()
    .await
    .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("EHR_LOG_FORMAT is `text` or `json`, not `yaml`"),
        "{}",
        text(&o)
    );
}

/// A chain that does not answer at start: `ehr serve` starts anyway, `/health` says 503 with
/// the chain down and no contract, and once the chain is up (here: a new anvil on that port
/// with the contract deployed) the gateway picks it up without a restart.
#[tokio::test]
async fn a_chain_down_at_start_is_reported_then_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let chain_port = common::quiet_port();
    let office_key = common::office_key();
    // The first contract an account deploys lands at a known address.
    let contract = office_key.address().create(0);
    let port = common::quiet_port();
    let path = dir.path().join("ehr.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[chain]\nrpc_url = \"http://127.0.0.1:{chain_port}\"\ncontract = \"{contract}\"\n[ipfs]\napi_url = \"{}\"\n[records]\nthreshold = 1\n[[records.share_nodes]]\nurl = \"http://127.0.0.1:9\"\naddress = \"0x0000000000000000000000000000000000000001\"\n",
            common::stack().kubo.api_url
        ),
    )
    .unwrap();
    let mut cmd = serve_cmd();
    cmd.arg("--config").arg(&path);
    let mut child = ManagedChild::spawn("ehr serve", cmd, false).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let health = move |b: String| async move {
        match reqwest::get(format!("{b}/health")).await {
            Ok(r) => Some((
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.ok()?,
            )),
            Err(_) => None,
        }
    };
    let b = base.clone();
    child
        .wait_healthy(Duration::from_secs(60), move || {
            let b = b.clone();
            async move { health(b).await.is_some() }
        })
        .await
        .unwrap_or_else(|e| panic!("ehr serve did not start without its chain: {e}"));
    let (status, h) = health(base.clone()).await.unwrap();
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["chain"]["ok"], false, "{h}");
    assert!(h["chain"]["contract"].is_null(), "{h}");
    // Chain-backed routes answer 503 meanwhile, not 500 and never without access control.
    let r = reqwest::get(format!("{base}/api/audit")).await.unwrap();
    assert_eq!(r.status(), 503);

    // The chain comes up with the contract.
    let tools = ehr_share::config::Tools::in_project(common::root());
    let mut settings =
        ehr_share::config::AnvilSettings::load(&common::root().join("anvil.toml")).unwrap();
    settings.port = chain_port;
    settings.state_file.clear();
    let _anvil = ehr_share::stack::start_anvil(&tools.anvil, &settings, false)
        .await
        .unwrap();
    let (chain, _) = ehr_share::chain::EhrChain::deploy(
        &format!("http://127.0.0.1:{chain_port}"),
        office_key.clone(),
        office_key.address(),
    )
    .await
    .unwrap();
    assert_eq!(chain.address(), contract);
    let b = base.clone();
    let want = contract.to_string().to_lowercase();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, h) = health(b.clone()).await.unwrap();
        if h["chain"]["contract"].as_str().map(str::to_lowercase) == Some(want.clone()) {
            assert_eq!(h["chain"]["ok"], true, "{h}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never picked up the chain: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.stop(Duration::from_secs(5)).await;
}

/// A loopback endpoint that accepts connections and never answers: a wedged chain node or a
/// proxy that holds requests. Its connections stay open while the task runs.
async fn hung_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    (url, task)
}

/// A JSON-RPC endpoint that answers `eth_chainId` and `eth_getCode` (a contract is there) and
/// never answers anything else: stuck half way, as an overloaded node can be.
async fn half_hung_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    async fn answer(
        axum::Json(req): axum::Json<serde_json::Value>,
    ) -> axum::Json<serde_json::Value> {
        let result = match req["method"].as_str() {
            Some("eth_chainId") => serde_json::json!("0x7a69"),
            Some("eth_getCode") => serde_json::json!("0x6001600155"),
            _ => std::future::pending().await,
        };
        axum::Json(serde_json::json!({"jsonrpc": "2.0", "id": req["id"], "result": result}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/", axum::routing::post(answer));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

fn serve_toml(dir: &Path, rpc_url: &str, port: u16, timeout_secs: u64) -> std::path::PathBuf {
    let path = dir.join("ehr.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[chain]\nrpc_url = \"{rpc_url}\"\ncontract = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\nrpc_timeout_secs = {timeout_secs}\n[ipfs]\napi_url = \"{}\"\n[records]\nthreshold = 1\n[[records.share_nodes]]\nurl = \"http://127.0.0.1:9\"\naddress = \"0x0000000000000000000000000000000000000001\"\n",
            common::stack().kubo.api_url
        ),
    )
    .unwrap();
    path
}

/// A chain endpoint that accepts and never answers held `ehr serve` and `ehr share-node` at
/// start for ever (no chain request had a deadline). Now each request fails at
/// `rpc_timeout_secs`: the check reports the chain failed and exits, the gateway serves
/// `/health` (503) while it retries, a share node stops with the reason, and an endpoint that
/// hangs only on calls is a chain that failed, not a contract of another version.
#[tokio::test]
async fn a_chain_that_never_answers_fails_at_the_timeout() {
    let (hung, _server) = hung_endpoint().await;
    let (half, _half_server) = half_hung_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    for url in [&hung, &half] {
        let o = check(&serve_toml(dir.path(), url, common::quiet_port(), 1)).await;
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains("chain   FAILED")
                && text(&o).contains("did not answer within 1000 ms"),
            "{url}: {}",
            text(&o)
        );
    }

    // Out of range, the key is named.
    let o = check(&serve_toml(dir.path(), &hung, common::quiet_port(), 0)).await;
    assert!(
        !o.status.success() && text(&o).contains("chain.rpc_timeout_secs"),
        "{}",
        text(&o)
    );

    // Serving, the gateway reports the chain down on /health instead of hanging on it.
    let port = common::quiet_port();
    let mut cmd = serve_cmd();
    cmd.arg("--config")
        .arg(serve_toml(dir.path(), &hung, port, 1));
    let mut child = ManagedChild::spawn("ehr serve", cmd, false).unwrap();
    let health = format!("http://127.0.0.1:{port}/health");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let answered = std::sync::Arc::new(std::sync::Mutex::new(None));
    let (h, a) = (health.clone(), answered.clone());
    child
        .wait_healthy(Duration::from_secs(60), move || {
            let (http, h, a) = (http.clone(), h.clone(), a.clone());
            async move {
                let Ok(r) = http.get(&h).send().await else {
                    return false;
                };
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                *a.lock().unwrap() = Some((status, body));
                true
            }
        })
        .await
        .unwrap_or_else(|e| panic!("/health never answered with the chain hung: {e}"));
    let (status, body) = answered.lock().unwrap().take().unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["chain"]["ok"], false, "{body}");
    child.stop(Duration::from_secs(5)).await;

    // A share node on that endpoint stops at start with the same reason; 0 s is refused.
    for (secs, says) in [
        ("1", "did not answer within 1000 ms"),
        ("0", "rpc_timeout_secs"),
    ] {
        let node = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(common::ehr_bin())
                .args(["share-node", "--port", &common::quiet_port().to_string()])
                .args(["--rpc-url", &hung, "--rpc-timeout-secs", secs])
                .args(["--contract", "0x5FbDB2315678afecb367f032d93F642f64180aa3"])
                .arg("--data-dir")
                .arg(dir.path().join("node"))
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the share node gave up on the hung chain")
        .unwrap();
        assert!(!node.status.success(), "{}", text(&node));
        assert!(text(&node).contains(says), "{}", text(&node));
    }
}

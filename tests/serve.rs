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

async fn check(path: &Path) -> Output {
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(common::ehr_bin())
            .args(["serve", "--check", "--config"])
            .arg(path)
            .env_remove("EHR_CHAIN_RPC_URL")
            .env_remove("EHR_IPFS_API_URL")
            .env_remove("EHR_DATABASE_URL")
            .output(),
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
    let mut cmd = tokio::process::Command::new(common::ehr_bin());
    cmd.args(["serve", "--config"])
        .arg(&path)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("EHR_CHAIN_RPC_URL")
        .env_remove("EHR_IPFS_API_URL")
        .env_remove("EHR_DATABASE_URL");
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

//! Starts Kubo (the reference IPFS daemon) as a private, offline node on loopback.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

use super::{ManagedChild, StackError};

/// How to start Kubo.
#[derive(Debug, Clone)]
pub struct KuboOptions {
    /// The `ipfs` binary.
    pub bin: PathBuf,
    /// The repository folder; created and initialised when missing.
    pub repo: PathBuf,
    /// RPC API port on 127.0.0.1.
    pub api_port: u16,
    /// HTTP gateway port on 127.0.0.1.
    pub gateway_port: u16,
}

/// A running Kubo daemon.
#[derive(Debug)]
pub struct KuboNode {
    /// The supervised process.
    pub child: ManagedChild,
    /// Base URL of the RPC API, e.g. `http://127.0.0.1:5001`.
    pub api_url: String,
    /// Base URL of the read-only HTTP gateway.
    pub gateway_url: String,
    /// The repository folder.
    pub repo: PathBuf,
}

/// Initialises the repo if needed, pins the node to loopback with no peers, no bootstrap and no
/// public routing, starts `ipfs daemon --offline`, and waits until the RPC API answers.
///
/// # Errors
/// When a setup step fails, or the daemon exits or is not healthy within 60 s.
pub async fn start_kubo(opts: &KuboOptions, echo: bool) -> Result<KuboNode, StackError> {
    std::fs::create_dir_all(&opts.repo).map_err(|source| StackError::Io {
        context: format!("creating Kubo repo {}", opts.repo.display()),
        source,
    })?;
    if !opts.repo.join("config").exists() {
        // The "test" profile: loopback addresses, no bootstrap peers, no MDNS.
        run(opts, &["init", "--profile=test", "--empty-repo"]).await?;
    }
    let api = format!("/ip4/127.0.0.1/tcp/{}", opts.api_port);
    let gw = format!("/ip4/127.0.0.1/tcp/{}", opts.gateway_port);
    for (key, value, json) in [
        ("Addresses.API", api.as_str(), false),
        ("Addresses.Gateway", gw.as_str(), false),
        ("Addresses.Swarm", "[]", true),
        ("Bootstrap", "[]", true),
        ("Routing.Type", "none", false),
        ("Discovery.MDNS.Enabled", "false", true),
        ("AutoTLS.Enabled", "false", true),
        ("AutoConf.Enabled", "false", true),
    ] {
        let mut args = vec!["config"];
        if json {
            args.push("--json");
        }
        args.extend([key, value]);
        run(opts, &args).await?;
    }
    let mut cmd = Command::new(&opts.bin);
    cmd.env("IPFS_PATH", &opts.repo)
        .args(["daemon", "--offline"]);
    let mut child = ManagedChild::spawn("kubo", cmd, echo)?;
    let api_url = format!("http://127.0.0.1:{}", opts.api_port);
    let http = reqwest::Client::new();
    child
        .wait_healthy(Duration::from_secs(60), || {
            let http = http.clone();
            let url = format!("{api_url}/api/v0/version");
            async move {
                matches!(http.post(url).timeout(Duration::from_secs(2)).send().await,
                    Ok(r) if r.status().is_success())
            }
        })
        .await?;
    Ok(KuboNode {
        child,
        api_url,
        gateway_url: format!("http://127.0.0.1:{}", opts.gateway_port),
        repo: opts.repo.clone(),
    })
}

async fn run(opts: &KuboOptions, args: &[&str]) -> Result<(), StackError> {
    let out = Command::new(&opts.bin)
        .env("IPFS_PATH", &opts.repo)
        .args(args)
        .output()
        .await
        .map_err(|source| StackError::Spawn {
            name: "kubo".into(),
            path: opts.bin.display().to_string(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    // Keys that an older Kubo does not know are harmless to skip; everything else is fatal.
    if args.first() == Some(&"config") && detail.contains("key has no attribute") {
        tracing::debug!(
            "kubo config {:?} not supported by this version: {detail}",
            args
        );
        return Ok(());
    }
    Err(StackError::Setup {
        name: "kubo".into(),
        step: format!("ipfs {}", args.join(" ")),
        detail,
    })
}

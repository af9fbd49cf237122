//! Starts Kubo (the reference IPFS daemon): a private, offline node on loopback (`ehr dev`), or
//! one peer of a private IPFS network (a swarm key, no public bootstrap, `Peering` with the
//! other peers), the engine of record replication (`ipfs::Replicas`).

use std::net::IpAddr;
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
    /// `None`: offline, on loopback. `Some`: a peer of a private network.
    pub network: Option<KuboNetwork>,
}

/// One peer of a private IPFS network.
#[derive(Debug, Clone)]
pub struct KuboNetwork {
    /// The address the API, gateway and swarm listen on (instead of 127.0.0.1).
    pub host: IpAddr,
    /// The libp2p swarm port.
    pub swarm_port: u16,
    /// The network's pre-shared key (`/key/swarm/psk/1.0.0/` format, see [`swarm_key`]):
    /// peers without it cannot connect.
    pub swarm_key: String,
    /// The other peers, as `(peer id, multiaddress)`, kept connected through `Peering`.
    pub peers: Vec<(String, String)>,
    /// The bearer token the RPC API requires (`API.Authorizations`); `None`: open, for an API
    /// reachable only from trusted hosts.
    pub api_token: Option<String>,
}

/// A fresh pre-shared key for a private IPFS network, in the swarm.key file format.
pub fn swarm_key() -> String {
    use rand_core::RngCore;
    let mut key = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut key);
    format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", hex::encode(key))
}

/// Initialises the repo of `opts` if needed and returns the node's peer id, which the other
/// peers need for their `Peering` before any of them starts.
///
/// # Errors
/// When `ipfs init` fails or the repo's config cannot be read.
pub async fn kubo_peer_id(opts: &KuboOptions) -> Result<String, StackError> {
    init(opts).await?;
    let path = opts.repo.join("config");
    let text = std::fs::read_to_string(&path).map_err(|source| StackError::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["Identity"]["PeerID"].as_str().map(str::to_owned))
        .ok_or_else(|| StackError::Setup {
            name: "kubo".into(),
            step: "reading Identity.PeerID".into(),
            detail: format!("no peer id in {}", path.display()),
        })
}

async fn init(opts: &KuboOptions) -> Result<(), StackError> {
    std::fs::create_dir_all(&opts.repo).map_err(|source| StackError::Io {
        context: format!("creating Kubo repo {}", opts.repo.display()),
        source,
    })?;
    if !opts.repo.join("config").exists() {
        // The "test" profile: loopback addresses, no bootstrap peers, no MDNS.
        run(opts, &["init", "--profile=test", "--empty-repo"]).await?;
    }
    Ok(())
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
    init(opts).await?;
    let host = opts
        .network
        .as_ref()
        .map_or_else(|| "127.0.0.1".to_owned(), |n| n.host.to_string());
    let api = format!("/ip4/{host}/tcp/{}", opts.api_port);
    let gw = format!("/ip4/{host}/tcp/{}", opts.gateway_port);
    let authorizations = match opts.network.as_ref().and_then(|n| n.api_token.as_ref()) {
        Some(t) => serde_json::json!({
            "ehr": { "AuthSecret": format!("bearer:{t}"), "AllowedPaths": ["/api/v0"] }
        })
        .to_string(),
        None => "{}".to_owned(),
    };
    let (swarm, peering) = match &opts.network {
        None => ("[]".to_owned(), "[]".to_owned()),
        Some(n) => {
            let peers: Vec<serde_json::Value> = n
                .peers
                .iter()
                .map(|(id, addr)| serde_json::json!({ "ID": id, "Addrs": [addr] }))
                .collect();
            (
                serde_json::json!([format!("/ip4/{host}/tcp/{}", n.swarm_port)]).to_string(),
                serde_json::Value::Array(peers).to_string(),
            )
        }
    };
    for (key, value, json) in [
        ("Addresses.API", api.as_str(), false),
        ("Addresses.Gateway", gw.as_str(), false),
        ("Addresses.Swarm", swarm.as_str(), true),
        ("Peering.Peers", peering.as_str(), true),
        ("API.Authorizations", authorizations.as_str(), true),
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
    cmd.env("IPFS_PATH", &opts.repo).arg("daemon");
    match &opts.network {
        None => {
            cmd.arg("--offline");
        }
        Some(n) => {
            let key = opts.repo.join("swarm.key");
            // The network's secret: the owner only.
            crate::fsutil::touch_private(&key)
                .and_then(|()| std::fs::write(&key, &n.swarm_key))
                .map_err(|source| StackError::Io {
                    context: format!("writing {}", key.display()),
                    source,
                })?;
            // Refuse to start without the key rather than join the public network.
            cmd.env("LIBP2P_FORCE_PNET", "1");
        }
    }
    let mut child = ManagedChild::spawn("kubo", cmd, echo)?;
    let api_url = format!("http://{host}:{}", opts.api_port);
    let mut client = crate::ipfs::KuboClient::new(&api_url);
    if let Some(t) = opts.network.as_ref().and_then(|n| n.api_token.as_ref()) {
        client = client.with_token(t);
    }
    child
        .wait_healthy(Duration::from_secs(60), || {
            let client = client.clone();
            async move { client.version().await.is_ok() }
        })
        .await?;
    Ok(KuboNode {
        child,
        api_url,
        gateway_url: format!("http://{host}:{}", opts.gateway_port),
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

//! `ehr share-node` and `ehr record put|get`: the share server, and records handled client-side
//! (the CLI talks to Kubo and the share nodes itself; no server sees the plaintext).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::ChainArgs;
use super::keys::KeyArgs;
use crate::chain::{EhrChain, PatientAddr, RecordId};
use crate::ipfs::KuboClient;
use crate::records::{RecordsClient, ShareNodeRef};
use crate::share_node::{NodeConfig, ShareNodeFile, ShareNodeSettings, open_store};

/// `ehr share-node` flags. Each also comes from its variable and from the `--config` file
/// (flags and variables win); the defaults apply last.
#[derive(Debug, Args)]
pub struct ShareNodeArgs {
    /// A TOML file with any of the settings below under their snake_case names (see
    /// share-node.example.toml); relative paths are relative to it.
    #[arg(long, env = "EHR_SHARE_NODE_CONFIG")]
    config: Option<PathBuf>,
    /// Port. Default: 7001.
    #[arg(long, env = "EHR_SHARE_NODE_PORT")]
    port: Option<u16>,
    /// Interface to listen on. Default: 127.0.0.1 (put a TLS proxy in front to serve other
    /// hosts, or listen on a private network).
    #[arg(long, env = "EHR_SHARE_NODE_HOST")]
    host: Option<std::net::IpAddr>,
    /// Folder for the node's key and store. Default: .ehr/share-node.
    #[arg(long, env = "EHR_SHARE_NODE_DIR")]
    data_dir: Option<PathBuf>,
    /// The node's identity key file (hex). Its secret also keys the store's encryption at rest,
    /// so keep it apart from the data folder (and its backups) where you can. Default:
    /// <data-dir>/node.key, created on first start.
    #[arg(long, env = "EHR_SHARE_NODE_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// JSON-RPC URL of the chain. Default: http://127.0.0.1:8545.
    #[arg(long, env = "EHR_RPC_URL")]
    rpc_url: Option<String>,
    /// Deployment file written by `ehr deploy`. Default: .ehr/deployment.json.
    #[arg(long, env = "EHR_DEPLOYMENT")]
    deployment: Option<PathBuf>,
    /// Contract address; overrides the deployment file.
    #[arg(long, env = "EHR_CONTRACT")]
    contract: Option<alloy::primitives::Address>,
    /// Requests one requester may make at once. Default: 120.
    #[arg(long, env = "EHR_SHARE_NODE_BURST")]
    burst: Option<u32>,
    /// Sustained requests per minute per requester. Default: 1200.
    #[arg(long, env = "EHR_SHARE_NODE_PER_MINUTE")]
    per_minute: Option<u32>,
    /// Deposits an uploader may have waiting for their anchor. Default: 1000.
    #[arg(long, env = "EHR_SHARE_NODE_DEPOSIT_QUOTA")]
    deposit_quota: Option<u64>,
    /// Seconds a deposit may wait for its anchor before it is deleted. Default: 3600.
    #[arg(long, env = "EHR_SHARE_NODE_UNANCHORED_TTL")]
    unanchored_ttl_secs: Option<u64>,
    /// Seconds between collector runs (also how soon a replaced contract halts the node).
    /// Default: 10.
    #[arg(long, env = "EHR_SHARE_NODE_SWEEP_SECS")]
    sweep_secs: Option<u64>,
    /// Refuse to judge requests (503) while the chain endpoint's latest block is older than
    /// this many seconds, so that a lagging endpoint cannot show a revoked grant. Default: no
    /// bound (for chains that mine only for transactions); set a few block times.
    #[arg(long, env = "EHR_SHARE_NODE_MAX_CHAIN_LAG_SECS")]
    max_chain_lag_secs: Option<u64>,
    /// Seconds a JSON-RPC request to the chain may take before it fails (the request waiting
    /// on it is answered 503), 1 to 600. Default: 10.
    #[arg(long, env = "EHR_SHARE_NODE_RPC_TIMEOUT_SECS")]
    rpc_timeout_secs: Option<u64>,
    /// PEM certificate chain to serve HTTPS with (needs --tls-key). Clients on other hosts
    /// reach the node over TLS only; without it the node speaks plain HTTP.
    #[arg(long, env = "EHR_SHARE_NODE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "EHR_SHARE_NODE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Testing only: release corrupted shares, to exercise verification. Never in production.
    #[arg(long, hide = true)]
    danger_corrupt_shares: bool,
}

impl ShareNodeArgs {
    /// The flags and variables given, in the file's shape.
    fn given(&self) -> ShareNodeFile {
        ShareNodeFile {
            port: self.port,
            host: self.host,
            data_dir: self.data_dir.clone(),
            key_file: self.key_file.clone(),
            rpc_url: self.rpc_url.clone(),
            deployment: self.deployment.clone(),
            contract: self.contract,
            burst: self.burst,
            per_minute: self.per_minute,
            deposit_quota: self.deposit_quota,
            unanchored_ttl_secs: self.unanchored_ttl_secs,
            sweep_secs: self.sweep_secs,
            max_chain_lag_secs: self.max_chain_lag_secs,
            rpc_timeout_secs: self.rpc_timeout_secs,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }

    fn settings(&self) -> anyhow::Result<ShareNodeSettings> {
        let file = match &self.config {
            Some(p) => ShareNodeFile::load(p)?,
            None => ShareNodeFile::default(),
        };
        Ok(ShareNodeSettings::merge(&self.given(), &file))
    }
}

/// Where records go.
#[derive(Debug, Args)]
pub struct RecordTargets {
    /// Share node URLs, comma-separated. Default: the five of `ehr dev`.
    #[arg(
        long,
        env = "EHR_SHARE_NODES",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003,http://127.0.0.1:7004,http://127.0.0.1:7005"
    )]
    share_nodes: Vec<String>,
    /// Shares needed to read (k). Default: 3.
    #[arg(long, env = "EHR_THRESHOLD", default_value_t = 3)]
    threshold: u8,
    /// Kubo RPC API. Default: http://127.0.0.1:5001.
    #[arg(long, env = "EHR_IPFS_API", default_value = "http://127.0.0.1:5001")]
    ipfs_api: String,
    /// More Kubo peers of the same private network (RPC API URLs, comma-separated); records
    /// go to --replication of them and --ipfs-api.
    #[arg(long, env = "EHR_IPFS_PEERS", value_delimiter = ',')]
    ipfs_peers: Vec<String>,
    /// Copies of each record's ciphertext. Default: 2 (1 without --ipfs-peers).
    #[arg(long, env = "EHR_IPFS_REPLICATION")]
    replication: Option<usize>,
    /// A file holding the Kubo peers' API token (`API.Authorizations`), when they need one.
    #[arg(long, env = "EHR_IPFS_API_TOKEN_FILE")]
    ipfs_api_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the share nodes' HTTPS certificates (trusted besides
    /// the system's roots).
    #[arg(long, env = "EHR_SHARE_NODE_CA")]
    share_node_ca: Option<PathBuf>,
    /// Chain and contract flags.
    #[command(flatten)]
    chain: ChainArgs,
    /// Signing key flags.
    #[command(flatten)]
    key: KeyArgs,
}

/// `ehr record ...`.
#[derive(Debug, Subcommand)]
pub enum RecordCmd {
    /// Encrypt and store a record for a patient (FHIR JSON is validated).
    Put {
        /// The patient (AID-PID).
        #[arg(long)]
        patient: PatientAddr,
        /// The file to upload.
        file: PathBuf,
        /// Media type. Default: application/fhir+json for .json files, else application/octet-stream.
        #[arg(long)]
        media_type: Option<String>,
        /// Targets and key.
        #[command(flatten)]
        t: RecordTargets,
    },
    /// Fetch, verify and decrypt a record.
    Get {
        /// Record id.
        id: RecordId,
        /// Write the content here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Targets and key.
        #[command(flatten)]
        t: RecordTargets,
    },
}

/// Runs a share node until Ctrl-C / SIGTERM.
///
/// # Errors
/// When the store, key or chain cannot be opened.
pub async fn share_node(a: ShareNodeArgs) -> anyhow::Result<()> {
    let s = a.settings()?;
    crate::fsutil::private_dir(&s.data_dir)
        .with_context(|| format!("creating {}", s.data_dir.display()))?;
    let identity = super::dev::node_identity_at(&s.key_file)?;
    let deployment = super::chain_cmds::deployment(&ChainArgs {
        rpc_url: s.rpc_url.clone(),
        deployment: s.deployment.clone(),
        contract: s.contract,
    })?;
    anyhow::ensure!(
        (1..=600).contains(&s.rpc_timeout.as_secs()),
        "`rpc_timeout_secs` (--rpc-timeout-secs, EHR_SHARE_NODE_RPC_TIMEOUT_SECS) is {} s: set it between 1 and 600 (the default is 10)",
        s.rpc_timeout.as_secs()
    );
    crate::chain::set_rpc_deadline(s.rpc_timeout);
    let chain = EhrChain::connect(&s.rpc_url, None, &deployment)
        .await
        .with_context(|| format!("connecting to the chain at {}", s.rpc_url))?;
    let store = open_store(&s.data_dir, &identity, &chain)
        .await
        .with_context(|| {
            format!(
                "opening the share store in {} (set --data-dir/EHR_SHARE_NODE_DIR or data_dir)",
                s.data_dir.display()
            )
        })?;
    let listener = tokio::net::TcpListener::bind((s.host, s.port))
        .await
        .with_context(|| {
            format!(
                "port {} busy (set --port/EHR_SHARE_NODE_PORT or port)",
                s.port
            )
        })?;
    if a.danger_corrupt_shares {
        tracing::warn!("DANGER: this share node releases corrupted shares (testing only)");
    }
    let tls = match &s.tls {
        Some((cert, key)) => Some(
            crate::share_node::tls::server_config(cert, key)
                .await
                .context("set --tls-cert/--tls-key (or tls_cert/tls_key) to PEM files")?,
        ),
        None => {
            if !s.host.is_loopback() {
                tracing::warn!(
                    "listening on {} over plain HTTP: record ids and requests travel in clear (shares are sealed to their requester); set --tls-cert and --tls-key",
                    s.host
                );
            }
            None
        }
    };
    println!(
        "share node {} listening on {}://{}:{}",
        identity.address(),
        if tls.is_some() { "https" } else { "http" },
        s.host,
        s.port
    );
    let cfg = NodeConfig {
        identity,
        chain,
        store,
        limits: s.limits,
        danger_corrupt_shares: a.danger_corrupt_shares,
    };
    crate::share_node::serve(listener, cfg, tls, super::dev::shutdown_signal()).await?;
    Ok(())
}

async fn client(t: &RecordTargets) -> anyhow::Result<RecordsClient> {
    if let Some(ca) = &t.share_node_ca {
        crate::share_node::tls::trust_pem(ca).context("--share-node-ca")?;
    }
    let token = match &t.ipfs_api_token_file {
        Some(p) => Some(
            crate::ipfs::read_api_token(p)
                .with_context(|| format!("--ipfs-api-token-file {}", p.display()))?,
        ),
        None => None,
    };
    let peers = KuboClient::many(
        std::iter::once(&t.ipfs_api).chain(&t.ipfs_peers),
        token.as_deref(),
    );
    let replication = t.replication.unwrap_or_else(|| 2.min(peers.len()));
    let replicas = crate::ipfs::Replicas::new(peers, replication)
        .context("--replication must be between 1 and the number of IPFS peers")?;
    let signer = t.key.signer()?;
    let deployment = super::chain_cmds::deployment(&t.chain)?;
    // The nodes all at once, while the chain client connects: one after another, they cost a
    // round trip each before the first byte of work.
    // A chain that cannot be reached is said at once, without waiting for the nodes.
    let (chain, found) = tokio::try_join!(
        EhrChain::connect(&t.chain.rpc_url, Some(signer.clone()), &deployment),
        async {
            Ok(
                futures::future::join_all(t.share_nodes.iter().map(|u| ShareNodeRef::discover(u)))
                    .await,
            )
        }
    )?;
    let mut nodes = Vec::new();
    for (url, n) in t.share_nodes.iter().zip(found) {
        match n {
            Ok(n) => nodes.push(n),
            // An unreachable node still counts as one of n: its share is simply missing.
            Err(e) => {
                tracing::warn!("share node {url}: {e}");
                nodes.push(ShareNodeRef {
                    url: url.clone(),
                    address: alloy::primitives::Address::ZERO,
                });
            }
        }
    }
    Ok(crate::records::RecordsConfig::new(nodes, t.threshold).client(chain, signer, replicas)?)
}

/// `ehr record ...`.
///
/// # Errors
/// Record errors in words.
pub async fn record(cmd: RecordCmd) -> anyhow::Result<()> {
    match cmd {
        RecordCmd::Put {
            patient,
            file,
            media_type,
            t,
        } => {
            let data = tokio::fs::read(&file)
                .await
                .with_context(|| format!("reading {}", file.display()))?;
            let media = media_type.unwrap_or_else(|| {
                if file.extension().is_some_and(|e| e == "json") {
                    crate::records::FHIR_JSON.into()
                } else {
                    "application/octet-stream".into()
                }
            });
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
            let id = client(&t)
                .await?
                .put(patient, data.into(), &media, name)
                .await?;
            println!("{id}");
        }
        RecordCmd::Get { id, out, t } => {
            let r = client(&t).await?.get(id).await?;
            for f in &r.failures {
                eprintln!("warning: share node {f}");
            }
            let (block, data) = (r.block, r.data);
            match out {
                Some(p) => {
                    tokio::fs::write(&p, &data)
                        .await
                        .with_context(|| format!("writing {}", p.display()))?;
                    eprintln!(
                        "wrote {} ({} bytes, {})",
                        p.display(),
                        data.len(),
                        block.media_type
                    );
                }
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&data)?;
                }
            }
        }
    }
    Ok(())
}

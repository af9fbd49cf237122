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
use crate::share_node::{NodeConfig, NodeLimits, open_store};

/// `ehr share-node` flags.
#[derive(Debug, Args)]
pub struct ShareNodeArgs {
    /// Port. Default: 7001.
    #[arg(long, env = "EHR_SHARE_NODE_PORT", default_value_t = 7001)]
    port: u16,
    /// Interface to listen on. Default: 127.0.0.1 (put a TLS proxy in front to serve other
    /// hosts, or listen on a private network).
    #[arg(long, env = "EHR_SHARE_NODE_HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Folder for the node's key and store. Default: .ehr/share-node.
    #[arg(long, env = "EHR_SHARE_NODE_DIR", default_value = ".ehr/share-node")]
    data_dir: PathBuf,
    /// The node's identity key file (hex). Its secret also keys the store's encryption at rest,
    /// so keep it apart from the data folder (and its backups) where you can. Default:
    /// <data-dir>/node.key, created on first start.
    #[arg(long, env = "EHR_SHARE_NODE_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Chain and contract flags.
    #[command(flatten)]
    chain: ChainArgs,
    /// Requests one requester may make at once. Default: 120.
    #[arg(long, env = "EHR_SHARE_NODE_BURST", default_value_t = 120)]
    burst: u32,
    /// Sustained requests per minute per requester. Default: 1200.
    #[arg(long, env = "EHR_SHARE_NODE_PER_MINUTE", default_value_t = 1200)]
    per_minute: u32,
    /// Deposits an uploader may have waiting for their anchor. Default: 1000.
    #[arg(long, env = "EHR_SHARE_NODE_DEPOSIT_QUOTA", default_value_t = 1000)]
    deposit_quota: u64,
    /// Seconds a deposit may wait for its anchor before it is deleted. Default: 3600.
    #[arg(long, env = "EHR_SHARE_NODE_UNANCHORED_TTL", default_value_t = 3600)]
    unanchored_ttl_secs: u64,
    /// Seconds between collector runs (also how soon a replaced contract halts the node).
    /// Default: 10.
    #[arg(long, env = "EHR_SHARE_NODE_SWEEP_SECS", default_value_t = 10)]
    sweep_secs: u64,
    /// Testing only: release corrupted shares, to exercise verification. Never in production.
    #[arg(long, hide = true)]
    danger_corrupt_shares: bool,
}

impl ShareNodeArgs {
    fn limits(&self) -> NodeLimits {
        NodeLimits {
            burst: self.burst,
            per_minute: self.per_minute,
            deposit_quota: self.deposit_quota,
            unanchored_ttl: std::time::Duration::from_secs(self.unanchored_ttl_secs),
            sweep_every: std::time::Duration::from_secs(self.sweep_secs.max(1)),
            ..NodeLimits::default()
        }
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
    crate::fsutil::private_dir(&a.data_dir)
        .with_context(|| format!("creating {}", a.data_dir.display()))?;
    let key_file = a
        .key_file
        .clone()
        .unwrap_or_else(|| a.data_dir.join("node.key"));
    let identity = super::dev::node_identity_at(&key_file)?;
    let deployment = super::chain_cmds::deployment(&a.chain)?;
    let chain = EhrChain::connect(&a.chain.rpc_url, None, &deployment).await?;
    let store = open_store(&a.data_dir, &identity, &chain)
        .await
        .with_context(|| {
            format!(
                "opening the share store in {} (set --data-dir/EHR_SHARE_NODE_DIR)",
                a.data_dir.display()
            )
        })?;
    let listener = tokio::net::TcpListener::bind((a.host, a.port))
        .await
        .with_context(|| format!("port {} busy (set --port/EHR_SHARE_NODE_PORT)", a.port))?;
    if a.danger_corrupt_shares {
        tracing::warn!("DANGER: this share node releases corrupted shares (testing only)");
    }
    println!(
        "share node {} listening on http://{}:{}",
        identity.address(),
        a.host,
        a.port
    );
    let cfg = NodeConfig {
        identity,
        chain,
        store,
        limits: a.limits(),
        danger_corrupt_shares: a.danger_corrupt_shares,
    };
    crate::share_node::serve(listener, cfg, super::dev::shutdown_signal()).await?;
    Ok(())
}

async fn client(t: &RecordTargets) -> anyhow::Result<RecordsClient> {
    let signer = t.key.signer()?;
    let deployment = super::chain_cmds::deployment(&t.chain)?;
    let chain = EhrChain::connect(&t.chain.rpc_url, Some(signer.clone()), &deployment).await?;
    let mut nodes = Vec::new();
    for url in &t.share_nodes {
        match ShareNodeRef::discover(url).await {
            Ok(n) => nodes.push(n),
            // An unreachable node still counts as one of n: its share is simply missing.
            Err(e) => {
                tracing::warn!("{e}");
                nodes.push(ShareNodeRef {
                    url: url.clone(),
                    address: alloy::primitives::Address::ZERO,
                });
            }
        }
    }
    Ok(RecordsClient::new(
        chain,
        signer,
        KuboClient::new(&t.ipfs_api),
        nodes,
        t.threshold,
    )?)
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

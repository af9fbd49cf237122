//! `ehr ipfs`: the Kubo peers that hold the records' ciphertext.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::ipfs::{KuboClient, Replicas};
use crate::serve_config::ServeConfig;

/// `ehr ipfs …`.
#[derive(Debug, Subcommand)]
pub enum IpfsCmd {
    /// Pin every record that has fewer copies than the replication factor on peers that lack
    /// it (they fetch it from a holder over the private network), and report what was done.
    /// Run it when a peer comes back or is replaced.
    Repair(RepairArgs),
}

/// Which peers, and how many copies.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Read `[ipfs]` (api_url, peers, replication) from this `ehr serve` configuration file.
    #[arg(long, env = "EHR_CONFIG", conflicts_with = "peer")]
    config: Option<PathBuf>,
    /// A peer's RPC API URL instead of a configuration file; repeat for each peer.
    #[arg(long = "peer", value_name = "URL")]
    peer: Vec<String>,
    /// Copies of each record (with --peer). Default: 2, or 1 with one peer.
    #[arg(long)]
    replication: Option<usize>,
    /// A file holding the peers' API token (with --peer; `ipfs.api_token_file` otherwise).
    #[arg(long, env = "EHR_IPFS_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `ehr ipfs …`.
///
/// # Errors
/// A configuration that does not load, or fewer peers up than the replication factor.
pub async fn ipfs(cmd: IpfsCmd) -> anyhow::Result<()> {
    match cmd {
        IpfsCmd::Repair(a) => repair(a).await,
    }
}

async fn repair(a: RepairArgs) -> anyhow::Result<()> {
    let replicas = if a.peer.is_empty() {
        let c = ServeConfig::load(a.config.as_deref())
            .context("loading [ipfs] from the configuration (or give --peer URL for each peer)")?;
        c.ipfs.replicas()?
    } else {
        let r = a.replication.unwrap_or_else(|| 2.min(a.peer.len()));
        let token = match &a.api_token_file {
            Some(p) => Some(
                crate::ipfs::read_api_token(p)
                    .with_context(|| format!("--api-token-file {}", p.display()))?,
            ),
            None => None,
        };
        let clients = KuboClient::many(&a.peer, token.as_deref());
        Replicas::new(clients, r)
            .context("--replication must be between 1 and the number of --peer")?
    };
    let report = replicas.repair().await.with_context(|| {
        format!(
            "repair needs {} peers up to keep {} copies",
            replicas.replication(),
            replicas.replication()
        )
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "peers     {} up{}",
        report.peers_up,
        if report.peers_down.is_empty() {
            String::new()
        } else {
            format!(", down: {}", report.peers_down.join(", "))
        }
    );
    println!(
        "records   {} found, {} with fewer than {} copies",
        report.records,
        report.under_replicated,
        replicas.replication()
    );
    println!("pinned    {} new copies", report.pinned);
    if report.pending > 0 {
        println!(
            "pending   {} uploads not finished (left to the sweeper)",
            report.pending
        );
    }
    if report.failed > 0 {
        anyhow::bail!("{} copies could not be made (see the log)", report.failed);
    }
    Ok(())
}

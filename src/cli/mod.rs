//! The `ehr` command line: a `Command` per area, every flag also readable from `EHR_*`.

pub mod chain_cmds;
pub mod dev;
pub mod device_cmds;
pub mod ipfs_cmds;
pub mod keys;
pub mod records_cmds;
pub mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use dev::demo_signer;

/// ehr-share: share health records with on-chain access control.
#[derive(Debug, Parser)]
#[command(name = "ehr", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole stack locally: anvil, Kubo, the contract with demo data, and the gateway.
    Dev(dev::DevArgs),
    /// Serve the gateway and web application for a deployment (configuration file, no demo keys).
    Serve(serve::ServeArgs),
    /// Deploy the access-control contract and write the deployment file.
    Deploy(chain_cmds::DeployArgs),
    /// Patient operations (register, grant, revoke, requests, audit).
    #[command(subcommand)]
    Patient(chain_cmds::PatientCmd),
    /// Provider operations (register, request, access, break-glass).
    #[command(subcommand)]
    Provider(chain_cmds::ProviderCmd),
    /// Records office operations (verify, suspend, transfer, audit).
    #[command(subcommand)]
    Office(chain_cmds::OfficeCmd),
    /// A patient's devices (add, revoke, list) and the device simulator.
    #[command(subcommand)]
    Device(device_cmds::DeviceCmd),
    /// Run a share node.
    ShareNode(records_cmds::ShareNodeArgs),
    /// Put and get records client-side (encryption and share handling happen here).
    #[command(subcommand)]
    Record(records_cmds::RecordCmd),
    /// The Kubo peers that hold the records' ciphertext (repair copies).
    #[command(subcommand)]
    Ipfs(ipfs_cmds::IpfsCmd),
}

/// Where the chain and the deployed contract are.
#[derive(Debug, Clone, Args)]
pub struct ChainArgs {
    /// JSON-RPC URL of the chain. Default: http://127.0.0.1:8545 (the dev anvil).
    #[arg(long, env = "EHR_RPC_URL", default_value = "http://127.0.0.1:8545")]
    pub rpc_url: String,
    /// Deployment file written by `ehr deploy`. Default: .ehr/deployment.json.
    #[arg(long, env = "EHR_DEPLOYMENT", default_value = ".ehr/deployment.json")]
    pub deployment: PathBuf,
    /// Contract address; overrides the deployment file.
    #[arg(long, env = "EHR_CONTRACT")]
    pub contract: Option<alloy::primitives::Address>,
}

/// Runs the parsed command line.
///
/// # Errors
/// Any failure, with a message that names the flag or variable to fix.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev(a) => dev::run(a).await,
        Command::Serve(a) => serve::run(a).await,
        Command::Deploy(a) => chain_cmds::deploy(a).await,
        Command::Patient(c) => chain_cmds::patient(c).await,
        Command::Provider(c) => chain_cmds::provider(c).await,
        Command::Office(c) => chain_cmds::office(c).await,
        Command::Device(c) => device_cmds::device(c).await,
        Command::ShareNode(a) => records_cmds::share_node(a).await,
        Command::Record(c) => records_cmds::record(c).await,
        Command::Ipfs(c) => ipfs_cmds::ipfs(c).await,
    }
}

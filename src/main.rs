//! The `ehr` binary: parse the command line, start tracing, dispatch.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EHR_LOG")
                .unwrap_or_else(|_| "info,ehr::child=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    ehr_share::cli::run(ehr_share::cli::Cli::parse()).await
}

//! The `ehr` binary: parse the command line, tune the allocator of the long-running commands,
//! start tracing, dispatch.

use clap::Parser;
use ehr_share::cli::{Cli, Command};

/// glibc's malloc settings for the servers: a fixed mmap threshold (128 KiB: buffers above it,
/// such as 1 MiB records, go back to the system when freed; left to itself glibc raises the
/// threshold after the first such free and keeps later ones in its heaps) and two arenas
/// (not one per thread, each holding its own free memory). After the load bench the gateway
/// held 275 MiB resident without them and 48 MiB with them, at the same throughput
/// (`docs/load-bench.md`).
const TUNABLES: &str = "glibc.malloc.mmap_threshold=131072:glibc.malloc.arena_max=2";

/// The server commands (`dev`, `serve`, `share-node`) run again as themselves with
/// [`TUNABLES`] in their environment, which glibc reads only at start; the same process (an
/// exec keeps the process id), so supervisors and signals see no difference. An environment
/// that sets `GLIBC_TUNABLES` already is left as it is.
fn tune_allocator(cli: &Cli) {
    use std::os::unix::process::CommandExt;
    if !cfg!(all(target_os = "linux", target_env = "gnu"))
        || std::env::var_os("GLIBC_TUNABLES").is_some()
        || !matches!(
            cli.command,
            Command::Dev(_) | Command::Serve(_) | Command::ShareNode(_)
        )
    {
        return;
    }
    let Ok(me) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(me)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", TUNABLES)
        .exec();
    // Only reached when the exec failed: run untuned.
    eprintln!("ehr: running without allocator tuning ({err})");
}

/// Colours in the log only for a person at a terminal: logs that go to a file, a pipe or a
/// journal (`ehr serve` under systemd, the share nodes under `ehr dev`) stay plain text,
/// without escape sequences in every line. `NO_COLOR` (no-color.org) turns them off anywhere.
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// How the log is written (`EHR_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    /// One readable line per event (the default).
    Text,
    /// One JSON object per line (timestamp, level, target, the event's fields), for a log
    /// shipper or a journal that indexes fields.
    Json,
}

/// `EHR_LOG_FORMAT`: `text` (or unset) or `json`; anything else stops the command with its
/// name, rather than logging in a format the operator did not ask for.
fn log_format() -> anyhow::Result<LogFormat> {
    match std::env::var("EHR_LOG_FORMAT") {
        Err(std::env::VarError::NotPresent) => Ok(LogFormat::Text),
        Ok(v) if v.is_empty() || v == "text" => Ok(LogFormat::Text),
        Ok(v) if v == "json" => Ok(LogFormat::Json),
        Ok(other) => anyhow::bail!("EHR_LOG_FORMAT is `text` or `json`, not `{other}`"),
        Err(e) => anyhow::bail!("EHR_LOG_FORMAT: {e}"),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let format = log_format()?;
    tune_allocator(&cli);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let log = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("EHR_LOG")
                        .unwrap_or_else(|_| "info,ehr::child=warn".into()),
                )
                .with_writer(std::io::stderr);
            match format {
                LogFormat::Text => log.with_ansi(colour_logs()).init(),
                LogFormat::Json => log.json().init(),
            }
            ehr_share::cli::run(cli).await
        })
}

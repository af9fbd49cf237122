//! Local services as the product starts them: anvil and Kubo child processes with health checks,
//! log capture, crash reports and clean shutdown. Used by `ehr dev` and by the test fixtures.

mod anvil;
mod anvil_journal;
mod anvil_state;
mod geth;
mod kubo;
mod process;
mod supervise;

pub use anvil::{AnvilNode, back_up_state, start_anvil};
pub use anvil_state::{AnvilState, durable_head, journal_path};
pub use geth::{GETH_DEV_CHAIN_ID, GethNode, GethOptions, fund as geth_fund, geth_in, start_geth};
pub use kubo::{KuboNetwork, KuboNode, KuboOptions, kubo_peer_id, start_kubo, swarm_key};
pub use process::{ChildExit, ManagedChild};
pub use supervise::Supervisor;

use std::time::Duration;

/// Errors starting or supervising a local service.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The program could not be spawned at all (usually: not installed).
    #[error("cannot start {name} from {path}: {source} (run scripts/setup to install it)")]
    Spawn {
        /// Service name.
        name: String,
        /// Program path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A preparatory command (such as `ipfs init`) failed.
    #[error("{name} setup step `{step}` failed: {detail}")]
    Setup {
        /// Service name.
        name: String,
        /// The step.
        step: String,
        /// Its output.
        detail: String,
    },
    /// The child exited while we waited for it to become healthy.
    #[error("{name} exited during start-up ({status}); last log lines:\n{log}")]
    Crashed {
        /// Service name.
        name: String,
        /// Exit status.
        status: String,
        /// Last lines of its output.
        log: String,
    },
    /// The child did not become healthy in time.
    #[error("{name} not healthy after {waited:?}; last log lines:\n{log}")]
    Unhealthy {
        /// Service name.
        name: String,
        /// How long we waited.
        waited: Duration,
        /// Last lines of its output.
        log: String,
    },
    /// A file-system step failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Replaying the development chain's journal failed (`AnvilState::recover`).
    #[error("replaying the chain's journal: {0}")]
    Replay(String),
}

/// Reserves a free loopback TCP port by binding port 0; tests use it to run services side by side.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

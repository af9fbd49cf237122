//! Plain configuration data: the local chain's `anvil.toml` and where the developer tools live.
//!
//! Values come from the TOML file first; the CLI (`cli/`) overrides them with flags that also
//! read `EHR_*` environment variables.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors reading configuration files.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: toml::de::Error,
    },
}

/// Settings of the local anvil chain, as written in `anvil.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AnvilSettings {
    /// Interface to listen on; keep it on loopback.
    #[serde(default = "default_host")]
    pub host: String,
    /// JSON-RPC port.
    pub port: u16,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// BIP-39 mnemonic the dev accounts derive from.
    pub mnemonic: String,
    /// How many dev accounts to fund.
    #[serde(default = "default_accounts")]
    pub accounts: u32,
    /// Balance of each dev account, in ether.
    #[serde(default = "default_balance")]
    pub balance_eth: u64,
    /// Seconds between blocks; 0 = a block per transaction.
    #[serde(default)]
    pub block_time_secs: u64,
    /// Where the chain state is kept across restarts; empty = fresh chain (`ehr dev` then keeps
    /// it in its state folder).
    #[serde(default)]
    pub state_file: String,
    /// At most how many seconds a change to the chain waits to be made durable while running
    /// (so a kill -9 loses at most this much): `ehr dev` journals new transactions this often
    /// and dumps the whole state every 30 s or this, if longer (`stack::AnvilState`); 0 = only
    /// on exit and after upload batches.
    #[serde(default = "default_state_interval")]
    pub state_interval_secs: u64,
}

fn default_state_interval() -> u64 {
    1
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_accounts() -> u32 {
    10
}
fn default_balance() -> u64 {
    10_000
}

impl AnvilSettings {
    /// Reads `anvil.toml`; a relative `state_file` becomes relative to the file's folder.
    ///
    /// # Errors
    /// When the file cannot be read or does not match the schema.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut settings: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        if !settings.state_file.is_empty() && Path::new(&settings.state_file).is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            settings.state_file = base.join(&settings.state_file).display().to_string();
        }
        Ok(settings)
    }

    /// The HTTP JSON-RPC endpoint these settings give.
    pub fn rpc_url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }
}

/// Where the external programs installed by `scripts/setup` live.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The anvil binary (npm `@foundry-rs/anvil-linux-amd64`).
    pub anvil: PathBuf,
    /// The Kubo `ipfs` binary built from `tools/kubo`.
    pub ipfs: PathBuf,
}

impl Tools {
    /// The tools as `scripts/setup` installs them under the project folder `root`.
    pub fn in_project(root: &Path) -> Self {
        Self {
            anvil: root.join("tools/node/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"),
            ipfs: root.join(".tools/bin/ipfs"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_repository_anvil_toml() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("anvil.toml");
        let s = AnvilSettings::load(&path).unwrap();
        assert_eq!(s.chain_id, 31337);
        assert_eq!(s.host, "127.0.0.1");
        assert_eq!(s.rpc_url(), format!("http://127.0.0.1:{}", s.port));
    }

    #[test]
    fn rejects_unknown_keys_and_resolves_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("anvil.toml");
        std::fs::write(&p, "port = 1\nchain_id = 2\nmnemonic = \"m\"\nbogus = 1\n").unwrap();
        assert!(matches!(
            AnvilSettings::load(&p),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::write(
            &p,
            "port = 1\nchain_id = 2\nmnemonic = \"m\"\nstate_file = \"s.json\"\n",
        )
        .unwrap();
        let s = AnvilSettings::load(&p).unwrap();
        assert_eq!(Path::new(&s.state_file), dir.path().join("s.json"));
    }
}

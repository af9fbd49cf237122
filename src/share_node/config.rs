//! `ehr share-node`'s settings: flags and `EHR_SHARE_NODE_*` variables win, then the TOML file
//! given by `--config` (same names as the flags, in snake case: `share-node.example.toml`),
//! then the defaults. Relative paths in the file are relative to the file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::Address;
use serde::Deserialize;

use super::NodeLimits;

/// A share node's default deadline for a chain request, seconds: under the 20 s a gateway
/// waits for a node's answer, so that a node whose chain endpoint hangs answers 503 (and the
/// gateway asks another) rather than being counted as a node that timed out. Its requests
/// are view calls and block lookups, which take milliseconds on a healthy endpoint.
pub(crate) const RPC_TIMEOUT_SECS: u64 = 10;

/// The file's keys; every one optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShareNodeFile {
    /// Port. Default: 7001.
    pub port: Option<u16>,
    /// Interface to listen on. Default: 127.0.0.1.
    pub host: Option<IpAddr>,
    /// Folder for the store (and the key, unless `key_file`). Default: .ehr/share-node.
    pub data_dir: Option<PathBuf>,
    /// The identity key file. Default: `<data_dir>/node.key`.
    pub key_file: Option<PathBuf>,
    /// The chain's JSON-RPC URL. Default: http://127.0.0.1:8545.
    pub rpc_url: Option<String>,
    /// The deployment file `ehr deploy` wrote. Default: .ehr/deployment.json.
    pub deployment: Option<PathBuf>,
    /// The contract address, instead of a deployment file.
    pub contract: Option<Address>,
    /// Requests one requester may make at once. Default: 120.
    pub burst: Option<u32>,
    /// Sustained requests per minute per requester. Default: 1200.
    pub per_minute: Option<u32>,
    /// Deposits an uploader may have waiting for their anchor. Default: 1000.
    pub deposit_quota: Option<u64>,
    /// Seconds a deposit may wait for its anchor. Default: 3600.
    pub unanchored_ttl_secs: Option<u64>,
    /// Seconds between collector runs. Default: 10.
    pub sweep_secs: Option<u64>,
    /// The oldest, in seconds, the chain endpoint's latest block may be when the node judges a
    /// request; older, it refuses (503). Default: no bound (chains that mine only for
    /// transactions have old heads when idle); set a few block times on a chain with a block
    /// time.
    pub max_chain_lag_secs: Option<u64>,
    /// Seconds a JSON-RPC request to the chain may take before it fails and the request that
    /// waits on it is answered 503. Default: [`RPC_TIMEOUT_SECS`].
    pub rpc_timeout_secs: Option<u64>,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`). Default: plain HTTP, for
    /// loopback only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

/// Why a share node's file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ShareNodeConfigError {
    /// Not readable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key or a wrong type (the parser names key and line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A testing-only setting.
    #[error(
        "{path}: `{key}` is for tests only and cannot come from a file (it makes the node release corrupted shares)"
    )]
    Danger {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
}

impl ShareNodeFile {
    /// Reads `path`; relative paths in it become relative to its folder.
    ///
    /// # Errors
    /// One [`ShareNodeConfigError`] naming the key.
    pub fn load(path: &Path) -> Result<Self, ShareNodeConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ShareNodeConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text` (`path` names it and anchors relative paths).
    ///
    /// # Errors
    /// One [`ShareNodeConfigError`] naming the key.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ShareNodeConfigError> {
        let parse = |e: toml::de::Error| ShareNodeConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let table: toml::Table = toml::from_str(text).map_err(parse)?;
        if let Some(key) = table.keys().find(|k| k.starts_with("danger")) {
            return Err(ShareNodeConfigError::Danger {
                path: path.to_owned(),
                key: key.clone(),
            });
        }
        let mut f: Self = table.try_into().map_err(parse)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut f.data_dir,
            &mut f.key_file,
            &mut f.deployment,
            &mut f.tls_cert,
            &mut f.tls_key,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(f)
    }
}

/// The settings a share node runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareNodeSettings {
    /// Interface.
    pub host: IpAddr,
    /// Port.
    pub port: u16,
    /// Store folder.
    pub data_dir: PathBuf,
    /// Identity key file.
    pub key_file: PathBuf,
    /// Chain RPC URL.
    pub rpc_url: String,
    /// How long a chain request may take (see [`crate::chain::set_rpc_deadline`]).
    pub rpc_timeout: Duration,
    /// Deployment file (unless `contract`).
    pub deployment: PathBuf,
    /// Contract address, instead of the deployment file.
    pub contract: Option<Address>,
    /// Rate limits, quota and collector.
    pub limits: NodeLimits,
    /// HTTPS certificate chain and key files, when set.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl ShareNodeSettings {
    /// `given` (flags and environment) over `file` over the defaults.
    pub fn merge(given: &ShareNodeFile, file: &ShareNodeFile) -> Self {
        macro_rules! pick {
            ($f:ident, $default:expr) => {
                given
                    .$f
                    .clone()
                    .or_else(|| file.$f.clone())
                    .unwrap_or_else(|| $default)
            };
        }
        let data_dir = pick!(data_dir, PathBuf::from(".ehr/share-node"));
        let defaults = NodeLimits::default();
        Self {
            host: pick!(host, IpAddr::from([127, 0, 0, 1])),
            port: pick!(port, 7001),
            key_file: pick!(key_file, data_dir.join("node.key")),
            rpc_url: pick!(rpc_url, "http://127.0.0.1:8545".to_owned()),
            rpc_timeout: Duration::from_secs(pick!(rpc_timeout_secs, RPC_TIMEOUT_SECS)),
            // Where the contract is comes from one place: a flag or variable naming either the
            // deployment file or the address overrides both keys of the file.
            deployment: if given.deployment.is_some() || given.contract.is_some() {
                given.deployment.clone()
            } else {
                file.deployment.clone()
            }
            .unwrap_or_else(|| PathBuf::from(".ehr/deployment.json")),
            contract: if given.deployment.is_some() || given.contract.is_some() {
                given.contract
            } else {
                file.contract
            },
            limits: NodeLimits {
                burst: pick!(burst, defaults.burst),
                per_minute: pick!(per_minute, defaults.per_minute),
                deposit_quota: pick!(deposit_quota, defaults.deposit_quota),
                unanchored_ttl: Duration::from_secs(pick!(
                    unanchored_ttl_secs,
                    defaults.unanchored_ttl.as_secs()
                )),
                sweep_every: Duration::from_secs(
                    pick!(sweep_secs, defaults.sweep_every.as_secs()).max(1),
                ),
                max_chain_lag: given
                    .max_chain_lag_secs
                    .or(file.max_chain_lag_secs)
                    // 0 would refuse nearly everything: a second is the least.
                    .map(|s| Duration::from_secs(s.max(1)))
                    .or(defaults.max_chain_lag),
                ..defaults
            },
            tls: given
                .tls_cert
                .clone()
                .or_else(|| file.tls_cert.clone())
                .zip(given.tls_key.clone().or_else(|| file.tls_key.clone())),
            data_dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file = ShareNodeFile::parse(
            "port = 7101\nhost = \"10.0.0.5\"\ndata_dir = \"store\"\nrpc_url = \"http://chain:8545\"\nburst = 5\n",
            Path::new("/etc/ehr/share-node.toml"),
        )
        .unwrap();
        let given = ShareNodeFile {
            port: Some(7200),
            ..ShareNodeFile::default()
        };
        let s = ShareNodeSettings::merge(&given, &file);
        assert_eq!(s.port, 7200);
        assert_eq!(s.host, IpAddr::from([10, 0, 0, 5]));
        assert_eq!(s.data_dir, Path::new("/etc/ehr/store"));
        assert_eq!(s.key_file, Path::new("/etc/ehr/store/node.key"));
        assert_eq!(s.limits.burst, 5);
        assert_eq!(s.limits.per_minute, NodeLimits::default().per_minute);
        assert_eq!(s.rpc_url, "http://chain:8545");
        // A deployment flag replaces a contract address from the file (and the other way).
        let file = ShareNodeFile::parse(
            "contract = \"0x0000000000000000000000000000000000000001\"\n",
            Path::new("/etc/ehr/n.toml"),
        )
        .unwrap();
        let given = ShareNodeFile {
            deployment: Some(PathBuf::from("/srv/deployment.json")),
            ..ShareNodeFile::default()
        };
        let s = ShareNodeSettings::merge(&given, &file);
        assert_eq!(
            (s.contract, s.deployment.as_path()),
            (None, Path::new("/srv/deployment.json"))
        );
        let s = ShareNodeSettings::merge(&ShareNodeFile::default(), &file);
        assert!(s.contract.is_some());
        assert_eq!(s.limits.max_chain_lag, None, "no bound unless asked");
    }

    #[test]
    fn the_chain_lag_bound_comes_from_a_flag_or_the_file_and_is_at_least_a_second() {
        let file = ShareNodeFile::parse(
            "max_chain_lag_secs = 60
",
            Path::new("n.toml"),
        )
        .unwrap();
        let s = ShareNodeSettings::merge(&ShareNodeFile::default(), &file);
        assert_eq!(s.limits.max_chain_lag, Some(Duration::from_secs(60)));
        let given = ShareNodeFile {
            max_chain_lag_secs: Some(0),
            ..ShareNodeFile::default()
        };
        let s = ShareNodeSettings::merge(&given, &file);
        assert_eq!(s.limits.max_chain_lag, Some(Duration::from_secs(1)));
    }

    #[test]
    fn mistakes_and_testing_switches_are_refused_by_name() {
        let p = Path::new("n.toml");
        let e = ShareNodeFile::parse("prot = 1\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("prot"), "{e}");
        let e = ShareNodeFile::parse("danger_corrupt_shares = true\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tests only"), "{e}");
        let e = ShareNodeFile::parse("port = \"x\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn the_example_in_the_repository_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("share-node.example.toml");
        let f = ShareNodeFile::load(&p).unwrap();
        assert_eq!(f.port, Some(7001));
    }
}

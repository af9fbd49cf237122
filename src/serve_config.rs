//! The configuration of `ehr serve`: plain serde data read from a TOML file (every key also from
//! `EHR_*` environment variables and flags, applied by the CLI), checked once at load so that a
//! missing or wrong value names its key and the fix. Development-only settings (mnemonics, demo
//! tokens, faucets, dev accounts, private keys) are refused by name: a deployment's users bring
//! their own keys.

use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};

/// Keys that only make sense in `ehr dev`; a deployment config naming one is refused.
const DEV_ONLY: [&str; 7] = [
    "mnemonic",
    "demo_tokens",
    "faucet",
    "danger_dev_faucet",
    "dev_account",
    "private_key",
    "keyring",
];

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ServeConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key of the wrong type or unknown.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said (it names the key and line).
        message: String,
    },
    /// A development-only setting in a deployment config.
    #[error(
        "`{key}` is a development-only setting (ehr dev); ehr serve takes none: remove it, users bring their own keys"
    )]
    DevOnly {
        /// The key, with its table.
        key: String,
    },
    /// A value that parses but cannot work.
    #[error("`{key}`: {problem}; {fix}")]
    Invalid {
        /// The key, with its table.
        key: &'static str,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
}

/// `ehr serve`'s configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address and port to listen on, e.g. `127.0.0.1:8080` (behind a proxy) or `0.0.0.0:443`.
    pub listen: String,
    /// The chain and the deployed contract.
    pub chain: ChainSection,
    /// The Kubo node.
    pub ipfs: IpfsSection,
    /// The share nodes and the threshold.
    pub records: RecordsSection,
    /// The web application's own data.
    pub web: WebSection,
    /// Serve HTTPS directly; without it, run behind a TLS-terminating proxy.
    #[serde(default)]
    pub tls: Option<TlsSection>,
}

/// `[chain]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChainSection {
    /// JSON-RPC URL of any EVM node.
    pub rpc_url: String,
    /// The deployment file `ehr deploy` wrote (chain id, address, block, deployment id).
    #[serde(default)]
    pub deployment: Option<PathBuf>,
    /// The contract address, when there is no deployment file.
    #[serde(default)]
    pub contract: Option<Address>,
}

/// `[ipfs]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IpfsSection {
    /// Kubo's RPC API URL.
    pub api_url: String,
}

/// `[records]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecordsSection {
    /// Shares needed to read a record (k of n).
    pub threshold: u8,
    /// The share nodes, each with the address it must answer with.
    pub share_nodes: Vec<ShareNodeEntry>,
}

/// One `[[records.share_nodes]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShareNodeEntry {
    /// Base URL.
    pub url: String,
    /// The node's identity address (`ehr share-node` prints it; `/health` reports it).
    pub address: Address,
}

/// `[web]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    /// Folder of the web users and their keystores (created 0700).
    pub data_dir: PathBuf,
    /// Always mark cookies `Secure` (set it when a TLS proxy is in front). With `[tls]` they
    /// are `Secure` anyway.
    #[serde(default)]
    pub secure_cookies: bool,
}

/// `[tls]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

fn find_dev_only(v: &toml::Value, at: &str) -> Option<String> {
    match v {
        toml::Value::Table(t) => t.iter().find_map(|(k, v)| {
            let key = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if DEV_ONLY.contains(&k.as_str()) {
                Some(key)
            } else {
                find_dev_only(v, &key)
            }
        }),
        toml::Value::Array(a) => a.iter().find_map(|v| find_dev_only(v, at)),
        _ => None,
    }
}

impl ServeConfig {
    /// Reads and checks `path`; relative paths in it are relative to the file's folder.
    ///
    /// # Errors
    /// One [`ServeConfigError`] naming the key and the fix.
    pub fn load(path: &Path) -> Result<Self, ServeConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks TOML text (`path` only names it in errors and anchors relative paths).
    ///
    /// # Errors
    /// One [`ServeConfigError`] naming the key and the fix.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ServeConfigError> {
        let parse = |e: toml::de::Error| ServeConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let value: toml::Value = toml::from_str(text).map_err(parse)?;
        if let Some(key) = find_dev_only(&value, "") {
            return Err(ServeConfigError::DevOnly { key });
        }
        let mut c: Self = toml::from_str(text).map_err(parse)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(d) = c.chain.deployment.as_mut() {
            anchor(d);
        }
        anchor(&mut c.web.data_dir);
        if let Some(t) = c.tls.as_mut() {
            anchor(&mut t.cert);
            anchor(&mut t.key);
        }
        c.check()?;
        Ok(c)
    }

    /// The rules a parsed config must also follow.
    ///
    /// # Errors
    /// The first rule broken, naming its key and the fix.
    pub fn check(&self) -> Result<(), ServeConfigError> {
        use ServeConfigError::Invalid;
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(Invalid {
                key: "listen",
                problem: format!("{:?} is not an address:port", self.listen),
                fix: "write it like \"127.0.0.1:8080\"".into(),
            });
        }
        for (key, url) in [
            ("chain.rpc_url", &self.chain.rpc_url),
            ("ipfs.api_url", &self.ipfs.api_url),
        ] {
            if reqwest::Url::parse(url).is_err() {
                return Err(Invalid {
                    key,
                    problem: format!("{url:?} is not a URL"),
                    fix: "write it like \"http://127.0.0.1:8545\"".into(),
                });
            }
        }
        match (&self.chain.deployment, &self.chain.contract) {
            (None, None) => {
                return Err(Invalid {
                    key: "chain.deployment",
                    problem: "neither chain.deployment nor chain.contract is set".into(),
                    fix: "point chain.deployment at the file `ehr deploy` wrote".into(),
                });
            }
            (Some(_), Some(_)) => {
                return Err(Invalid {
                    key: "chain.contract",
                    problem: "both chain.deployment and chain.contract are set".into(),
                    fix: "keep one (the deployment file also pins the deployment id)".into(),
                });
            }
            _ => {}
        }
        let n = self.records.share_nodes.len();
        if n == 0 || n > 255 {
            return Err(Invalid {
                key: "records.share_nodes",
                problem: format!("{n} share nodes"),
                fix: "list 1 to 255 [[records.share_nodes]] with url and address".into(),
            });
        }
        let k = usize::from(self.records.threshold);
        if k == 0 || k > n {
            return Err(Invalid {
                key: "records.threshold",
                problem: format!("{k} shares needed but {n} share nodes configured"),
                fix: format!("set records.threshold between 1 and {n}"),
            });
        }
        let mut seen_urls = std::collections::HashSet::new();
        let mut seen_addrs = std::collections::HashSet::new();
        for (i, node) in self.records.share_nodes.iter().enumerate() {
            if !seen_urls.insert(node.url.trim_end_matches('/')) || !seen_addrs.insert(node.address)
            {
                return Err(Invalid {
                    key: "records.share_nodes",
                    problem: format!("entry {} repeats a URL or an address", i + 1),
                    fix: "list each share node once: a repeated node would count twice toward the threshold".into(),
                });
            }
            if reqwest::Url::parse(&node.url).is_err() {
                return Err(Invalid {
                    key: "records.share_nodes.url",
                    problem: format!("entry {} has {:?}, not a URL", i + 1, node.url),
                    fix: "write it like \"https://share1.example.org\"".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:8080"
[chain]
rpc_url = "http://127.0.0.1:8545"
deployment = "deployment.json"
[ipfs]
api_url = "http://127.0.0.1:5001"
[records]
threshold = 2
[[records.share_nodes]]
url = "http://127.0.0.1:7001"
address = "0x0000000000000000000000000000000000000001"
[[records.share_nodes]]
url = "http://127.0.0.1:7002"
address = "0x0000000000000000000000000000000000000002"
[web]
data_dir = "web"
"#;

    #[test]
    fn a_good_config_loads_with_paths_next_to_it() {
        let c = ServeConfig::parse(GOOD, Path::new("/etc/ehr/ehr.toml")).unwrap();
        assert_eq!(c.web.data_dir, Path::new("/etc/ehr/web"));
        assert_eq!(
            c.chain.deployment.as_deref(),
            Some(Path::new("/etc/ehr/deployment.json"))
        );
    }

    #[test]
    fn the_example_in_the_repository_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("ehr.example.toml");
        let c = ServeConfig::load(&p).unwrap();
        assert_eq!(c.records.share_nodes.len(), 3);
        assert!(c.tls.is_none());
    }

    #[test]
    fn mistakes_name_their_key() {
        let p = Path::new("ehr.toml");
        let e = ServeConfig::parse(&GOOD.replace("threshold = 2", "threshold = 3"), p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("records.threshold") && e.contains("between 1 and 2"),
            "{e}"
        );
        let e = ServeConfig::parse(&format!("{GOOD}\n[dev]\nmnemonic = \"test test\"\n"), p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`dev.mnemonic` is a development-only setting"),
            "{e}"
        );
        let e = ServeConfig::parse(&GOOD.replace("listen", "lissen"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lissen"), "{e}");
        let e = ServeConfig::parse(&GOOD.replace("7002", "7001"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("repeats a URL"), "{e}");
        let e = ServeConfig::parse(&GOOD.replace("127.0.0.1:8080", "eighty"), p)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("`listen`"), "{e}");
    }
}

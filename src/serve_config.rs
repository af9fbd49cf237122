//! The configuration of `ehr serve`: plain serde data read from a TOML file, then every key
//! from its `EHR_*` environment variable (`chain.rpc_url` from `EHR_CHAIN_RPC_URL`, see
//! [`ENV`]), checked once at load so that a missing or wrong value names its key and the fix. Development-only settings (mnemonics, demo
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
    /// An environment variable that does not fit its key.
    #[error("{var}: {problem}; {fix}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
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

/// Every key and the environment variable that overrides it (a container sets them instead of
/// writing a file). `records.share_nodes` takes `URL=ADDRESS` pairs separated by commas,
/// `proxy.trusted` addresses or CIDR ranges separated by commas.
pub const ENV: [(&str, &str, Kind); 25] = [
    ("listen", "EHR_LISTEN", Kind::Str),
    ("chain.rpc_url", "EHR_CHAIN_RPC_URL", Kind::Str),
    ("chain.deployment", "EHR_CHAIN_DEPLOYMENT", Kind::Str),
    ("chain.contract", "EHR_CHAIN_CONTRACT", Kind::Str),
    ("chain.confirmations", "EHR_CHAIN_CONFIRMATIONS", Kind::Int),
    (
        "chain.rpc_timeout_secs",
        "EHR_CHAIN_RPC_TIMEOUT_SECS",
        Kind::Int,
    ),
    ("ipfs.api_url", "EHR_IPFS_API_URL", Kind::Str),
    ("ipfs.peers", "EHR_IPFS_PEERS", Kind::List),
    ("ipfs.replication", "EHR_IPFS_REPLICATION", Kind::Int),
    ("ipfs.api_token_file", "EHR_IPFS_API_TOKEN_FILE", Kind::Str),
    ("records.threshold", "EHR_RECORDS_THRESHOLD", Kind::Int),
    (
        "records.share_nodes",
        "EHR_RECORDS_SHARE_NODES",
        Kind::Nodes,
    ),
    (
        "records.batch_key_file",
        "EHR_RECORDS_BATCH_KEY_FILE",
        Kind::Str,
    ),
    (
        "records.batch_window_ms",
        "EHR_RECORDS_BATCH_WINDOW_MS",
        Kind::Int,
    ),
    (
        "records.share_node_ca",
        "EHR_RECORDS_SHARE_NODE_CA",
        Kind::Str,
    ),
    (
        "records.orphan_ttl_secs",
        "EHR_RECORDS_ORPHAN_TTL_SECS",
        Kind::Int,
    ),
    (
        "records.access_reuse_secs",
        "EHR_RECORDS_ACCESS_REUSE_SECS",
        Kind::Int,
    ),
    ("records.padding", "EHR_RECORDS_PADDING", Kind::Str),
    ("database.url", "EHR_DATABASE_URL", Kind::Str),
    ("web.secure_cookies", "EHR_WEB_SECURE_COOKIES", Kind::Bool),
    ("proxy.trusted", "EHR_PROXY_TRUSTED", Kind::List),
    ("tls.cert", "EHR_TLS_CERT", Kind::Str),
    ("tls.key", "EHR_TLS_KEY", Kind::Str),
    ("ingest.key_file", "EHR_INGEST_KEY_FILE", Kind::Str),
    ("ingest.window_secs", "EHR_INGEST_WINDOW_SECS", Kind::Int),
];

/// How an environment variable's text becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text as is.
    Str,
    /// An integer.
    Int,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    Bool,
    /// Comma-separated text.
    List,
    /// Comma-separated `URL=ADDRESS` share nodes.
    Nodes,
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
    /// The gateway's database (accounts, sessions, tokens, event index).
    #[serde(default)]
    pub database: DatabaseSection,
    /// The web application.
    #[serde(default)]
    pub web: WebSection,
    /// Behind a reverse proxy: which peers' forwarded headers to believe.
    #[serde(default)]
    pub proxy: Option<ProxySection>,
    /// Serve HTTPS directly; without it, run behind a TLS-terminating proxy.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Take readings from patients' devices (`POST /ingest`); off without it.
    #[serde(default)]
    pub ingest: Option<IngestSection>,
}

/// `[ingest]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    /// The private key (hex, in a 0600 file) of the ingestion service's account, which the
    /// records office allows with `setIngestor`; records of sealed readings are its uploads,
    /// and readings waiting for their window are encrypted under a key derived from it.
    pub key_file: PathBuf,
    /// Seconds a patient's readings wait before they are sealed into one record; default 300.
    #[serde(default = "default_ingest_window_secs")]
    pub window_secs: u64,
    /// Readings that seal a window before its time is up; default 2000.
    #[serde(default = "default_ingest_max_observations")]
    pub max_observations: u64,
    /// Largest difference between a device's signing time and this server's clock, seconds;
    /// default 300.
    #[serde(default = "default_ingest_max_skew_secs")]
    pub max_skew_secs: u64,
}

fn default_ingest_window_secs() -> u64 {
    300
}

fn default_ingest_max_observations() -> u64 {
    2_000
}

fn default_ingest_max_skew_secs() -> u64 {
    300
}

/// `[database]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `sqlite://PATH` (relative to the config file; created when missing) or
    /// `mysql://USER:PASSWORD@HOST:PORT/DATABASE` (MySQL or MariaDB).
    pub url: String,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: "sqlite://ehr.db".into(),
        }
    }
}

/// `[proxy]`: the gateway runs behind a TLS-terminating reverse proxy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// The proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the client; from
    /// any other peer the header is ignored. Cookies are always `Secure` in proxy mode.
    pub trusted: Vec<String>,
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
    /// Blocks a transaction must have (its own and those after it) before the gateway counts
    /// it done: an upload is acknowledged, a grant shown. 1 (the default) suits a dev chain or
    /// an L2 whose sequencer does not reorganise; on an L1 choose by how deep a reorg you
    /// accept. At most 64.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// Seconds a JSON-RPC request to `rpc_url` may take before it fails (default 30, at most
    /// 600). An endpoint that accepts and never answers would otherwise hold every request
    /// that waits on the chain, and an account's transactions behind it, for ever.
    #[serde(default = "default_rpc_timeout_secs")]
    pub rpc_timeout_secs: u64,
}

fn default_confirmations() -> u64 {
    1
}

fn default_rpc_timeout_secs() -> u64 {
    crate::chain::DEFAULT_RPC_DEADLINE.as_secs()
}

/// `[ipfs]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IpfsSection {
    /// Kubo's RPC API URL: the peer uploads and reads try first.
    pub api_url: String,
    /// The RPC API URLs of the other Kubo peers of the same private network (a swarm key and
    /// `Peering` between them). Each record's ciphertext is pinned on `replication` of
    /// `api_url` and these, spread by record id.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Copies kept of each record's ciphertext; default 2 (1 when there are no peers).
    #[serde(default)]
    pub replication: Option<usize>,
    /// A file (mode 0600) holding the bearer token the peers' RPC APIs require (Kubo's
    /// `API.Authorizations`). Needed once an API listens beyond loopback: without it anyone
    /// who reaches the port can unpin every record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<PathBuf>,
}

impl IpfsSection {
    /// Copies kept of each record: as set, or 2 (capped by the peers).
    pub fn replication(&self) -> usize {
        self.replication.unwrap_or(2).min(1 + self.peers.len())
    }

    /// The peers, `api_url` first, as one client each (with the API token, when set).
    ///
    /// # Errors
    /// When the token file cannot be read or is empty.
    pub fn clients(&self) -> Result<Vec<crate::ipfs::KuboClient>, ServeConfigError> {
        let token =
            match &self.api_token_file {
                Some(path) => Some(crate::ipfs::read_api_token(path).map_err(|e| {
                    ServeConfigError::Invalid {
                        key: "ipfs.api_token_file",
                        problem: format!("cannot read a token from {}: {e}", path.display()),
                        fix: "point it at a file holding the peers' API token".into(),
                    }
                })?),
                None => None,
            };
        Ok(crate::ipfs::KuboClient::many(
            std::iter::once(&self.api_url).chain(&self.peers),
            token.as_deref(),
        ))
    }

    /// The peers and the replication factor ([`ServeConfig::check`] has checked they fit).
    ///
    /// # Errors
    /// When the token file cannot be read, or the replication factor does not fit the peers.
    pub fn replicas(&self) -> Result<crate::ipfs::Replicas, ServeConfigError> {
        crate::ipfs::Replicas::new(self.clients()?, self.replication()).map_err(|e| {
            ServeConfigError::Invalid {
                key: "ipfs.replication",
                problem: e.to_string(),
                fix: "set ipfs.replication between 1 and the number of peers".into(),
            }
        })
    }
}

/// `[records]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecordsSection {
    /// Shares needed to read a record (k of n).
    pub threshold: u8,
    /// The share nodes, each with the address it must answer with.
    pub share_nodes: Vec<ShareNodeEntry>,
    /// The private key (hex, in a 0600 file) of the account the gateway anchors uploads with,
    /// many to a Merkle root in one transaction. Without it, each uploader's own account
    /// anchors their record alone (one transaction per upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_key_file: Option<std::path::PathBuf>,
    /// How long the first upload of a batch waits for others, in milliseconds (a lone upload
    /// waits this long); default 50.
    #[serde(default = "default_batch_window_ms")]
    pub batch_window_ms: u64,
    /// Seconds before the ciphertext of an upload that was never anchored (the gateway or
    /// the chain failed in the middle) is unpinned; default 4200. Keep it above the share
    /// nodes' TTL for unanchored deposits (3600 by default): once the nodes have collected the
    /// shares, a late proof finds nothing to anchor, so the record can never become readable
    /// without its ciphertext.
    #[serde(default = "default_orphan_ttl_secs")]
    pub orphan_ttl_secs: u64,
    /// PEM file of the CA(s) that signed the share nodes' HTTPS certificates, trusted for
    /// share-node connections besides the system's roots (for `https://` nodes with
    /// certificates from a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_node_ca: Option<std::path::PathBuf>,
    /// Seconds a reader's access transaction for a record is reused for further reads of it
    /// (0: every read sends one; at most 1500, inside the contract's 30-minute window); default
    /// 600. Share nodes check the grant on every read, so a revoke takes effect at once.
    #[serde(default = "default_access_reuse_secs")]
    pub access_reuse_secs: u64,
    /// How new records' ciphertext is padded: `padme` (default; at most 6.25% larger, up to 32
    /// sizes per doubling) or `power-of-two` (one size per doubling, up to twice as large; the
    /// only scheme gateways before 2026-11-27 read: keep it until every reader is upgraded).
    #[serde(default)]
    pub padding: Padding,
}

/// `records.padding`: the envelope schemes by their configuration names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Padding {
    /// [`crate::crypto::Scheme::Padme`].
    #[default]
    Padme,
    /// [`crate::crypto::Scheme::PowerOfTwo`].
    PowerOfTwo,
}

impl Padding {
    /// The envelope scheme.
    pub fn scheme(self) -> crate::crypto::Scheme {
        match self {
            Self::Padme => crate::crypto::Scheme::Padme,
            Self::PowerOfTwo => crate::crypto::Scheme::PowerOfTwo,
        }
    }
}

fn default_access_reuse_secs() -> u64 {
    crate::records::DEFAULT_ACCESS_REUSE.as_secs()
}

fn default_batch_window_ms() -> u64 {
    50
}

fn default_orphan_ttl_secs() -> u64 {
    4200
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    /// Always mark cookies `Secure`. With `[tls]` or `[proxy]` they are `Secure` anyway.
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

/// Sets `key` (dotted) in `root` from an environment variable's `text`.
fn set_from_env(
    root: &mut toml::Table,
    key: &str,
    var: &str,
    kind: Kind,
    text: &str,
) -> Result<(), ServeConfigError> {
    let bad = |problem: String, fix: &str| ServeConfigError::Env {
        var: var.to_owned(),
        problem,
        fix: fix.to_owned(),
    };
    let value = match kind {
        Kind::Str => toml::Value::String(text.to_owned()),
        Kind::Int => toml::Value::Integer(
            text.trim()
                .parse()
                .map_err(|_| bad(format!("{text:?} is not a number"), "write digits only"))?,
        ),
        Kind::Bool => toml::Value::Boolean(match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                return Err(bad(
                    format!("{text:?} is not true or false"),
                    "write true or false",
                ));
            }
        }),
        Kind::List => toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        Kind::Nodes => {
            let mut nodes = Vec::new();
            for pair in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (url, address) = pair.rsplit_once('=').ok_or_else(|| {
                    bad(
                        format!("{pair:?} has no `=`"),
                        "write URL=ADDRESS pairs separated by commas",
                    )
                })?;
                let mut t = toml::Table::new();
                t.insert("url".into(), toml::Value::String(url.trim().to_owned()));
                t.insert(
                    "address".into(),
                    toml::Value::String(address.trim().to_owned()),
                );
                nodes.push(toml::Value::Table(t));
            }
            toml::Value::Array(nodes)
        }
    };
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut table = root;
    for p in parts {
        let entry = table
            .entry(p.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| {
            bad(
                format!("`{p}` in the file is not a table"),
                "fix the file's section",
            )
        })?;
    }
    table.insert(last.to_owned(), value);
    Ok(())
}

impl ServeConfig {
    /// Reads `path` (when given), applies the `EHR_*` environment ([`ENV`]) and checks the
    /// result; relative paths are relative to the file's folder (or the working folder).
    ///
    /// # Errors
    /// One [`ServeConfigError`] naming the key and the fix.
    pub fn load(path: Option<&Path>) -> Result<Self, ServeConfigError> {
        Self::load_with(path, |v| std::env::var(v).ok())
    }

    /// [`load`](Self::load) with the environment given as a function (tests).
    ///
    /// # Errors
    /// One [`ServeConfigError`] naming the key and the fix.
    pub fn load_with(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ServeConfigError> {
        let (text, named) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ServeConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?,
                p.to_owned(),
            ),
            None => (String::new(), PathBuf::from("(environment)")),
        };
        Self::parse_with(&text, &named, env)
    }

    /// Parses and checks TOML text without the environment (`path` only names it in errors
    /// and anchors relative paths).
    ///
    /// # Errors
    /// One [`ServeConfigError`] naming the key and the fix.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ServeConfigError> {
        Self::parse_with(text, path, |_| None)
    }

    fn parse_with(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ServeConfigError> {
        let parse = |e: toml::de::Error| ServeConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let mut root: toml::Table = toml::from_str(text).map_err(parse)?;
        if let Some(key) = find_dev_only(&toml::Value::Table(root.clone()), "") {
            return Err(ServeConfigError::DevOnly { key });
        }
        if root.get("web").and_then(|w| w.get("data_dir")).is_some() {
            return Err(ServeConfigError::Invalid {
                key: "web.data_dir",
                problem: "web users now live in the database".into(),
                fix: "keep that folder (it holds the users' keys), import it once with `ehr serve --import-web-dir <folder>`, then remove web.data_dir and set [database] url (default: sqlite://ehr.db next to this file)".into(),
            });
        }
        for (key, var, kind) in ENV {
            if let Some(text) = env(var) {
                set_from_env(&mut root, key, var, kind, &text)?;
            }
        }
        let mut c: Self = root.try_into().map_err(parse)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(d) = c.chain.deployment.as_mut() {
            anchor(d);
        }
        if let Some(ca) = c.records.share_node_ca.as_mut() {
            anchor(ca);
        }
        if let Some(t) = c.ipfs.api_token_file.as_mut() {
            anchor(t);
        }
        if let Some(t) = c.tls.as_mut() {
            anchor(&mut t.cert);
            anchor(&mut t.key);
        }
        if let Some(file) = c.database.url.strip_prefix("sqlite://") {
            let mut p = PathBuf::from(file);
            anchor(&mut p);
            c.database.url = format!("sqlite://{}", p.display());
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
        if !(1..=64).contains(&self.chain.confirmations) {
            return Err(Invalid {
                key: "chain.confirmations",
                problem: format!("{} blocks", self.chain.confirmations),
                fix: "set it between 1 (the default) and 64".into(),
            });
        }
        if !(1..=600).contains(&self.chain.rpc_timeout_secs) {
            return Err(Invalid {
                key: "chain.rpc_timeout_secs",
                problem: format!("{} seconds", self.chain.rpc_timeout_secs),
                fix: "set it between 1 and 600 (the default is 30)".into(),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for url in std::iter::once(&self.ipfs.api_url).chain(&self.ipfs.peers) {
            if reqwest::Url::parse(url).is_err() {
                return Err(Invalid {
                    key: "ipfs.peers",
                    problem: format!("{url:?} is not a URL"),
                    fix: "list each peer's RPC API, e.g. [\"http://10.0.0.7:5001\"]".into(),
                });
            }
            if !seen.insert(url.trim_end_matches('/')) {
                return Err(Invalid {
                    key: "ipfs.peers",
                    problem: format!("{url:?} is listed twice"),
                    fix: "list each Kubo peer once (ipfs.api_url is one of them)".into(),
                });
            }
        }
        let peers = 1 + self.ipfs.peers.len();
        if let Some(r) = self.ipfs.replication
            && (r == 0 || r > peers)
        {
            return Err(Invalid {
                key: "ipfs.replication",
                problem: format!("{r} copies but {peers} Kubo peers"),
                fix: format!("set ipfs.replication between 1 and {peers}, or list more ipfs.peers"),
            });
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
        let db = &self.database.url;
        if !(db.starts_with("sqlite://")
            || db.starts_with("mysql://")
            || db.starts_with("mariadb://"))
        {
            return Err(Invalid {
                key: "database.url",
                problem: format!("{:?} is not a database URL", crate::db::redact(db)),
                fix: "write sqlite://PATH or mysql://USER:PASSWORD@HOST:PORT/DATABASE".into(),
            });
        }
        if let Some(p) = &self.proxy {
            if let Err(e) = crate::gateway::TrustedProxies::parse(&p.trusted) {
                return Err(Invalid {
                    key: "proxy.trusted",
                    problem: e,
                    fix: "list addresses or ranges, e.g. [\"127.0.0.1\", \"10.0.0.0/8\"]".into(),
                });
            }
            if p.trusted.is_empty() {
                return Err(Invalid {
                    key: "proxy.trusted",
                    problem: "no proxy listed".into(),
                    fix: "list the proxy's address, e.g. trusted = [\"127.0.0.1\"]".into(),
                });
            }
            if self.tls.is_some() {
                return Err(Invalid {
                    key: "proxy",
                    problem: "both [proxy] and [tls] are set".into(),
                    fix:
                        "keep [tls] to serve HTTPS directly, or [proxy] when a proxy terminates TLS"
                            .into(),
                });
            }
        }
        if let Some(i) = &self.ingest {
            if i.window_secs == 0 || i.max_observations == 0 {
                return Err(Invalid {
                    key: "ingest.window_secs",
                    problem: "a window of 0 seconds or 0 readings".into(),
                    fix: "set ingest.window_secs and ingest.max_observations above 0 (defaults 300 and 2000)".into(),
                });
            }
            if !(30..=3_600).contains(&i.max_skew_secs) {
                return Err(Invalid {
                    key: "ingest.max_skew_secs",
                    problem: format!("{} s", i.max_skew_secs),
                    fix: "set it between 30 and 3600 (default 300)".into(),
                });
            }
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
        let max_reuse = crate::records::MAX_ACCESS_REUSE.as_secs();
        if self.records.access_reuse_secs > max_reuse {
            return Err(Invalid {
                key: "records.access_reuse_secs",
                problem: format!("{} s", self.records.access_reuse_secs),
                fix: format!(
                    "set it between 0 and {max_reuse} (default 600): share nodes honour an access transaction for 30 minutes"
                ),
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
mod tests;

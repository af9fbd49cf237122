//! Shared state of the gateway: the chain client, the IPFS client and the keyring of accounts
//! the gateway signs for.

use crate::records::RecordsConfig;
use std::collections::HashMap;
use std::sync::Arc;

use alloy::primitives::Address;
use alloy::providers::DynProvider;
use alloy::signers::local::PrivateKeySigner;
use sha2::{Digest, Sha256};

use crate::chain::EhrChain;
use crate::ipfs::Replicas;

/// Accounts whose keys the gateway holds, each reachable by an API token (`Authorization:
/// Bearer <token>`). Only token digests are kept, so a memory dump of the map does not reveal
/// the tokens.
#[derive(Clone, Default)]
pub struct Keyring {
    by_token: HashMap<[u8; 32], PrivateKeySigner>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("accounts", &self.by_token.len())
            .finish()
    }
}

impl Keyring {
    /// Adds `signer`, reachable with `token`.
    pub fn insert(&mut self, token: &str, signer: PrivateKeySigner) {
        self.by_token
            .insert(Sha256::digest(token.as_bytes()).into(), signer);
    }

    /// The signer for `token`, if any.
    pub fn signer(&self, token: &str) -> Option<&PrivateKeySigner> {
        self.by_token
            .get(&<[u8; 32]>::from(Sha256::digest(token.as_bytes())))
    }
}

/// Resolves personal API tokens (issued by the web application) to the account's key, so the
/// gateway does not depend on how the web app stores them.
pub trait TokenResolver: Send + Sync + std::fmt::Debug {
    /// The key behind `token`, if the token is valid now.
    ///
    /// # Errors
    /// When the token store cannot answer (its words, for the log; the client gets 503).
    fn resolve<'a>(
        &'a self,
        token: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<PrivateKeySigner>, String>>;
}

struct Inner {
    records: Option<RecordsConfig>,
    rpc_url: String,
    provider: DynProvider,
    /// Set at start, or later when the chain was unreachable at start (`ehr serve` keeps
    /// trying); until then every chain-backed route answers 503.
    chain: std::sync::OnceLock<EhrChain>,
    database: Option<crate::db::Database>,
    ipfs: Replicas,
    keyring: Keyring,
    tokens: Option<Arc<dyn TokenResolver>>,
    uploads: super::UploadSlots,
    http: reqwest::Client,
    ingest: Option<crate::ingest::Ingest>,
    /// Contract clients signing as an account, by account (see [`AppState::chain_as`]).
    signing: std::sync::Mutex<HashMap<Address, EhrChain>>,
}

/// Accounts whose signing clients are kept; past it the map starts again (a client is cheap
/// to build; what it learned is looked up again once).
const SIGNING_CLIENTS: usize = 4096;

/// Cheap-to-clone state handed to every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// State for a gateway on `rpc_url` and the Kubo API at `ipfs`; `chain` is the deployed
    /// contract (absent before `ehr deploy`, then only `/health` is useful).
    ///
    /// # Errors
    /// When `rpc_url` is not a URL.
    pub fn new(
        rpc_url: &str,
        chain: Option<EhrChain>,
        ipfs: impl Into<Replicas>,
        keyring: Keyring,
    ) -> Result<Self, String> {
        let provider = crate::chain::read_only_provider(rpc_url)
            .map_err(|e| format!("bad RPC URL {rpc_url}: {e}"))?;
        let cell = std::sync::OnceLock::new();
        if let Some(c) = chain {
            let _ = cell.set(c);
        }
        Ok(Self(Arc::new(Inner {
            records: None,
            rpc_url: rpc_url.to_owned(),
            provider,
            chain: cell,
            database: None,
            ipfs: ipfs.into(),
            keyring,
            tokens: None,
            uploads: super::UploadSlots::default(),
            http: crate::share_node::tls::http(),
            ingest: None,
            signing: Default::default(),
        })))
    }

    /// The same state with record storage configured (`POST /records`, `GET /records/{id}`).
    pub fn with_records(self, cfg: RecordsConfig) -> Self {
        match Arc::try_unwrap(self.0) {
            Ok(mut inner) => {
                inner.records = Some(cfg);
                Self(Arc::new(inner))
            }
            Err(shared) => {
                tracing::warn!("records config ignored: state already shared");
                Self(shared)
            }
        }
    }

    /// The same state reporting `db` in `/health` and keeping `Idempotency-Key`s in it.
    pub fn with_database(self, db: crate::db::Database) -> Self {
        match Arc::try_unwrap(self.0) {
            Ok(mut inner) => {
                inner.database = Some(db);
                Self(Arc::new(inner))
            }
            Err(shared) => {
                tracing::warn!("database ignored: state already shared");
                Self(shared)
            }
        }
    }

    /// The same state taking device readings through `ingest` (`POST /ingest`).
    pub fn with_ingest(self, ingest: crate::ingest::Ingest) -> Self {
        match Arc::try_unwrap(self.0) {
            Ok(mut inner) => {
                inner.ingest = Some(ingest);
                Self(Arc::new(inner))
            }
            Err(shared) => {
                tracing::warn!("ingest ignored: state already shared");
                Self(shared)
            }
        }
    }

    /// The ingestion service, when this gateway takes device readings.
    pub fn ingest(&self) -> Option<&crate::ingest::Ingest> {
        self.0.ingest.as_ref()
    }

    /// The database, when the gateway has one.
    pub fn database(&self) -> Option<&crate::db::Database> {
        self.0.database.as_ref()
    }

    /// Sets the contract client once the chain answers (when it did not at start); false when
    /// one was set already.
    pub fn set_chain(&self, chain: EhrChain) -> bool {
        self.0.chain.set(chain).is_ok()
    }

    /// The same state with `n` upload slots instead of [`super::MAX_UPLOADS`].
    pub fn with_upload_slots(self, n: usize) -> Self {
        match Arc::try_unwrap(self.0) {
            Ok(mut inner) => {
                inner.uploads = super::UploadSlots::new(n);
                Self(Arc::new(inner))
            }
            Err(shared) => {
                tracing::warn!("upload slots ignored: state already shared");
                Self(shared)
            }
        }
    }

    /// The same state accepting the personal API tokens `tokens` resolves.
    pub fn with_tokens(self, tokens: Arc<dyn TokenResolver>) -> Self {
        match Arc::try_unwrap(self.0) {
            Ok(mut inner) => {
                inner.tokens = Some(tokens);
                Self(Arc::new(inner))
            }
            Err(shared) => {
                tracing::warn!("API tokens ignored: state already shared");
                Self(shared)
            }
        }
    }

    /// The key behind a bearer token: a keyring token (`ehr dev`'s demo tokens) or a personal
    /// API token.
    ///
    /// # Errors
    /// When the token store cannot answer.
    pub async fn signer_for_token(&self, token: &str) -> Result<Option<PrivateKeySigner>, String> {
        if let Some(s) = self.0.keyring.signer(token) {
            return Ok(Some(s.clone()));
        }
        match &self.0.tokens {
            Some(t) => t.resolve(token).await,
            None => Ok(None),
        }
    }

    /// The records configuration, when set.
    pub fn records(&self) -> Option<&RecordsConfig> {
        self.0.records.as_ref()
    }

    /// The chain's RPC URL.
    pub fn rpc_url(&self) -> &str {
        &self.0.rpc_url
    }

    /// A read-only provider.
    pub fn provider(&self) -> &DynProvider {
        &self.0.provider
    }

    /// The read-only contract client, when deployed.
    pub fn chain(&self) -> Option<&EhrChain> {
        self.0.chain.get()
    }

    /// The contract client signing as `signer` (`None` before the contract is known), built
    /// once per account and kept: what it learns stays learned. Above all the patient address
    /// behind the account, which every patient request (a grant, a revoke) otherwise looked
    /// up in the event index again, catching the index up to the head under the lock that
    /// every audit query and denied read waits on.
    ///
    /// # Errors
    /// When the RPC URL is not a URL.
    pub fn chain_as(
        &self,
        signer: &PrivateKeySigner,
    ) -> Result<Option<EhrChain>, crate::chain::ChainError> {
        let Some(chain) = self.chain() else {
            return Ok(None);
        };
        let who = signer.address();
        let mut kept = self
            .0
            .signing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = kept.get(&who) {
            return Ok(Some(c.clone()));
        }
        let c = chain.with_signer(self.rpc_url(), signer.clone())?;
        if kept.len() >= SIGNING_CLIENTS {
            kept.clear();
        }
        kept.insert(who, c.clone());
        Ok(Some(c))
    }

    /// The IPFS client.
    pub fn ipfs(&self) -> &Replicas {
        &self.0.ipfs
    }

    /// The slots for uploads in flight (shared by the REST API and the web pages).
    pub fn upload_slots(&self) -> &super::UploadSlots {
        &self.0.uploads
    }

    /// One HTTP client for the gateway's own checks (share-node health).
    pub fn http(&self) -> &reqwest::Client {
        &self.0.http
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.0.keyring
    }

    /// The address of the account behind `token`.
    pub fn account(&self, token: &str) -> Option<Address> {
        self.0.keyring.signer(token).map(PrivateKeySigner::address)
    }
}

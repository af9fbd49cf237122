//! A typed client of the EhrAccess contract over alloy: one signer, one contract, every
//! operation as a method that returns our types and our errors.

mod devices;
mod pinned;
mod reads;
mod writes;

use std::path::Path;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionReceipt};
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};

pub use self::pinned::{Head, Pinned, Writer};
use super::bindings::EhrAccess;
use super::errors::ChainError;
use super::events::{self, AuditEvent, AuditFilter, AuditKind, AuditPage};
use super::merkle::RecordProof;
use super::types::{
    DenyReason, DeviceInfo, DeviceKind, EmergencyReason, GrantInfo, PatientAddr, PendingRequest,
    ProviderStatus, RecordId, RootInfo,
};

/// Where an access transaction put its `AccessAllowed` event ([`EhrChain::access_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessEvent {
    /// Its block's number.
    pub block: u64,
    /// Its block's time (unix seconds).
    pub time: u64,
    /// Its block's hash: a reorganisation that drops the block changes the hash at `block`.
    pub block_hash: B256,
}

/// Where a deployed contract lives; written by `ehr deploy`, read by the other commands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Deployment {
    /// Chain id it was deployed on.
    pub chain_id: u64,
    /// Contract address.
    pub address: Address,
    /// Block of the deployment (event queries start here).
    pub block: u64,
    /// The contract's `deploymentId` (zero in files written before it existed: then read from
    /// the chain and not checked).
    #[serde(default)]
    pub deployment_id: B256,
    /// The contract's interface `VERSION`.
    #[serde(default)]
    pub version: u16,
}

impl Deployment {
    /// Reads a deployment file.
    ///
    /// # Errors
    /// When the file is missing or malformed.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }

    /// Writes the deployment file atomically (temp file + rename).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }
}

/// What a mined transaction cost and where it landed.
#[derive(Debug, Clone, Serialize)]
pub struct TxOutcome {
    /// Transaction hash.
    pub tx_hash: B256,
    /// Block number.
    pub block: u64,
    /// Gas used.
    pub gas_used: u64,
}

impl TxOutcome {
    fn from_receipt(r: &TransactionReceipt) -> Self {
        Self {
            tx_hash: r.transaction_hash,
            block: r.block_number.unwrap_or_default(),
            gas_used: r.gas_used,
        }
    }
}

/// The result of an access transaction: which records were allowed, which denied and why.
#[derive(Debug, Clone, Serialize)]
pub struct AccessOutcome {
    /// The transaction.
    pub tx: TxOutcome,
    /// Allowed records.
    pub allowed: Vec<RecordId>,
    /// Denied records with the reason.
    pub denied: Vec<(RecordId, DenyReason)>,
}

type Contract = EhrAccess::EhrAccessInstance<DynProvider>;

/// The contract interface version this build speaks (`EhrAccess.VERSION`).
pub const CONTRACT_VERSION: u16 = 5;

/// How a send failed: before the transaction went to the node (filling, signing), or when it
/// was handed over.
#[derive(Debug, thiserror::Error)]
enum SendFailure {
    #[error("{0}")]
    Before(ChainError),
    #[error("{0}")]
    Broadcast(alloy::transports::TransportError),
    /// Another try of the named request recorded this transaction first.
    #[error("another try of the request recorded transaction {0}")]
    Lost(B256),
}

/// How long a try that lost its request's record to another try (in another process) waits
/// for the node to have that try's transaction: the other signed it just before recording it,
/// and sends it at once.
const OTHER_TRY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A client of one deployed EhrAccess contract, signing as one account (or read-only).
#[derive(Debug, Clone)]
pub struct EhrChain {
    provider: DynProvider,
    contract: Contract,
    from: Address,
    deploy_block: u64,
    deployment_id: B256,
    chain_id: u64,
    index: std::sync::Arc<super::index::EventIndex>,
    /// The signer's patient address, once looked up: patient calls name it, and an account's
    /// address never changes.
    own_patient: std::sync::Arc<tokio::sync::OnceCell<PatientAddr>>,
    /// Blocks a write waits for before it counts as done (1: its own block). More guards
    /// against a reorganisation dropping it on a chain whose blocks are not final at once.
    confirmations: u64,
    /// The request its caller named, for the next write (see [`Self::with_ticket`]).
    ticket: Option<super::sent::Ticket>,
    /// When the endpoint last refused a batch request (`chain::unbatch`).
    refused: super::unbatch::Refused,
    /// The signer's wallet, which signs writes before they are sent (`chain::sign`).
    wallet: Option<alloy::network::EthereumWallet>,
}

/// How often a nearby node is asked for a transaction's receipt. alloy's default for local
/// nodes (250 ms), and its 7 s for others, is the whole wait whenever the first look misses; a
/// node on this host or on the deployment's private network answers in well under a
/// millisecond, so asking every 10 ms costs nothing (the multi-host test's first upload took
/// 6 to 8 s against a chain on a private address before). Public endpoints keep alloy's
/// default: their blocks take seconds.
const LOCAL_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// The RPC client for `url`, polling receipts every [`LOCAL_POLL`] when the node is on this
/// host or a private network (RFC 1918, link-local).
/// The one HTTP client (per runtime) every chain client talks JSON-RPC through. The gateway
/// makes a chain client per request (each signing as its caller); building an HTTP client
/// each time loaded the TLS roots and opened new connections on every request, about 5 ms of
/// a read that otherwise takes a few.
fn rpc_http() -> alloy::transports::http::reqwest::Client {
    static HTTP: crate::per_runtime::PerRuntime<alloy::transports::http::reqwest::Client> =
        crate::per_runtime::PerRuntime::new();
    HTTP.get(|| {
        crate::tls::built(
            crate::tls::builder().pool_max_idle_per_host(64),
            "chain HTTP client",
        )
    })
}

fn rpc_client(url: reqwest::Url) -> alloy::rpc::client::RpcClient {
    rpc_client_with(url, super::deadline::rpc_deadline())
}

/// [`rpc_client`] with every request failing after `deadline` (see [`super::deadline`]).
pub(super) fn rpc_client_with(
    url: reqwest::Url,
    deadline: std::time::Duration,
) -> alloy::rpc::client::RpcClient {
    let near = url.host_str().is_some_and(|h| {
        h == "localhost"
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| match ip {
                    std::net::IpAddr::V4(v4) => {
                        v4.is_loopback() || v4.is_private() || v4.is_link_local()
                    }
                    std::net::IpAddr::V6(v6) => v6.is_loopback(),
                })
    });
    let http = alloy::transports::http::Http::with_client(rpc_http(), url.clone());
    let is_local = http.guess_local();
    // Outside the deadline: a refused batch's single requests each get theirs.
    let client = alloy::rpc::client::RpcClient::new(
        super::unbatch::Unbatch::new(super::deadline::Deadline::new(http, deadline), url.as_str()),
        is_local,
    );
    if near {
        client.with_poll_interval(LOCAL_POLL)
    } else {
        client
    }
}

/// A provider for `rpc_url`; a signing one fills the chain id in from `chain_id` when it is
/// known (a client per gateway request asked the node for it again on its first send).
fn connect(
    rpc_url: &str,
    signer: Option<PrivateKeySigner>,
    chain_id: Option<u64>,
) -> Result<DynProvider, ChainError> {
    let url: reqwest::Url =
        rpc_url
            .parse()
            .map_err(
                |e: <reqwest::Url as std::str::FromStr>::Err| ChainError::BadUrl {
                    url: rpc_url.to_owned(),
                    problem: e.to_string(),
                },
            )?;
    let client = rpc_client(url);
    Ok(match signer {
        // Simple nonce management asks the node for the pending nonce on every transaction:
        // several clients (CLI, gateway requests, tests) may sign for one account at once, and a
        // per-client nonce cache would hand out nonces with gaps that never mine.
        Some(s) => {
            let b = ProviderBuilder::new()
                .disable_recommended_fillers()
                .with_gas_estimation()
                .with_simple_nonce_management();
            let b = match chain_id {
                Some(id) => b.with_chain_id(id),
                None => b.fetch_chain_id(),
            };
            b.wallet(EthereumWallet::from(s))
                .connect_client(client)
                .erased()
        }
        None => ProviderBuilder::new().connect_client(client).erased(),
    })
}

/// When the endpoint at `rpc_url` last refused a batch: the record its transport keeps (by
/// the URL as parsed, as `rpc_client_with` names it).
fn refusals_of(rpc_url: &str) -> super::unbatch::Refused {
    rpc_url.parse::<reqwest::Url>().map_or_else(
        |_| std::sync::Arc::default(),
        |u| super::unbatch::refusals(u.as_str()),
    )
}

/// A read-only provider for `rpc_url` with the process's request deadline and the shared
/// HTTP client, for chain-level questions asked before (or without) a contract: the
/// gateway's `/health` among them.
///
/// # Errors
/// When `rpc_url` is not a URL.
pub fn read_only_provider(rpc_url: &str) -> Result<DynProvider, ChainError> {
    connect(rpc_url, None, None)
}

impl EhrChain {
    /// Deploys a new contract with `manager` as the records office, signed by `signer`.
    ///
    /// # Errors
    /// When the node is unreachable or the deployment reverts.
    pub async fn deploy(
        rpc_url: &str,
        signer: PrivateKeySigner,
        manager: Address,
    ) -> Result<(Self, Deployment), ChainError> {
        let from = signer.address();
        let wallet = alloy::network::EthereumWallet::from(signer.clone());
        let provider = connect(rpc_url, Some(signer), None)?;
        let chain_id = provider.get_chain_id().await?;
        let builder = EhrAccess::deploy_builder(provider.clone(), manager);
        let pending = super::send_lock::submit(from, || builder.send())
            .await
            .map_err(ChainError::from_contract)?;
        let receipt = pending.get_receipt().await?;
        let address = receipt
            .contract_address
            .ok_or_else(|| ChainError::Reverted("deployment produced no contract".into()))?;
        let block = receipt.block_number.unwrap_or_default();
        let contract = EhrAccess::new(address, provider.clone());
        let deployment_id = contract
            .deploymentId()
            .call()
            .await
            .map_err(ChainError::from_contract)?;
        let deployment = Deployment {
            chain_id,
            address,
            block,
            deployment_id,
            version: CONTRACT_VERSION,
        };
        Ok((
            Self {
                provider,
                contract,
                from,
                deploy_block: block,
                deployment_id,
                chain_id,
                index: super::index::EventIndex::new(block, deployment_id, None),
                own_patient: Default::default(),
                confirmations: 1,
                ticket: None,
                refused: refusals_of(rpc_url),
                wallet: Some(wallet),
            },
            deployment,
        ))
    }

    /// Connects to a deployed contract; with `signer` the client can send transactions. Checks
    /// the chain id, the contract's version and (when the file records it) its deployment id.
    ///
    /// # Errors
    /// When the node is unreachable, there is no contract code at the address, or it is another
    /// version or deployment ([`ChainError::WrongDeployment`]).
    pub async fn connect(
        rpc_url: &str,
        signer: Option<PrivateKeySigner>,
        deployment: &Deployment,
    ) -> Result<Self, ChainError> {
        let from = signer
            .as_ref()
            .map_or(Address::ZERO, PrivateKeySigner::address);
        let wallet = signer.clone().map(alloy::network::EthereumWallet::from);
        let provider = connect(rpc_url, signer, None)?;
        let contract = EhrAccess::new(deployment.address, provider.clone());
        // The four questions at once (one after another they were a third of a short
        // command's time before its own work); judged in the order they were asked before.
        let (version_call, id_call) = (contract.VERSION(), contract.deploymentId());
        let (code, chain_id, version, deployment_id) = tokio::join!(
            provider.get_code_at(deployment.address),
            provider.get_chain_id(),
            version_call.call(),
            id_call.call()
        );
        if code?.is_empty() {
            return Err(ChainError::NoContract(deployment.address));
        }
        let chain_id = chain_id?;
        if deployment.chain_id != 0 && chain_id != deployment.chain_id {
            return Err(ChainError::WrongDeployment(format!(
                "the chain at {rpc_url} has chain id {chain_id}, the deployment is on {}",
                deployment.chain_id
            )));
        }
        // A contract without `VERSION` (another contract, an old build) reverts: version 0. A
        // transport failure is no answer about the contract, and stays one.
        let version = match version {
            Ok(v) => v,
            Err(e) => match pinned::pinned_error(e) {
                e @ ChainError::Rpc(_) => return Err(e),
                _ => 0,
            },
        };
        if version != CONTRACT_VERSION {
            return Err(ChainError::WrongDeployment(format!(
                "the contract at {} is EhrAccess version {version}, this build needs version {CONTRACT_VERSION} (deploy it with `ehr deploy`)",
                deployment.address
            )));
        }
        let deployment_id = deployment_id.map_err(ChainError::from_contract)?;
        if !deployment.deployment_id.is_zero() && deployment.deployment_id != deployment_id {
            return Err(ChainError::WrongDeployment(format!(
                "the contract at {} is another deployment (id {deployment_id}) than the one recorded ({}): was the chain reset?",
                deployment.address, deployment.deployment_id
            )));
        }
        Ok(Self {
            provider,
            contract,
            from,
            deploy_block: deployment.block,
            deployment_id,
            chain_id,
            index: super::index::EventIndex::new(deployment.block, deployment_id, None),
            own_patient: Default::default(),
            confirmations: 1,
            ticket: None,
            refused: refusals_of(rpc_url),
            wallet,
        })
    }

    /// The same client with its event index kept in `store` (loaded at the first audit query,
    /// appended at each catch-up), so that a restart does not read the whole log history
    /// again. Clients cloned or derived from the result share that index.
    #[must_use]
    pub fn with_index_store(mut self, store: std::sync::Arc<dyn super::IndexStore>) -> Self {
        self.index =
            super::index::EventIndex::new(self.deploy_block, self.deployment_id, Some(store));
        self
    }

    /// The same contract, signing as another account (shares the HTTP connection pool only
    /// through the RPC URL; cheap to create).
    ///
    /// # Errors
    /// When the RPC URL is invalid.
    pub fn with_signer(&self, rpc_url: &str, signer: PrivateKeySigner) -> Result<Self, ChainError> {
        let from = signer.address();
        let wallet = alloy::network::EthereumWallet::from(signer.clone());
        let provider = connect(rpc_url, Some(signer), Some(self.chain_id))?;
        Ok(Self {
            contract: EhrAccess::new(*self.contract.address(), provider.clone()),
            provider,
            from,
            deploy_block: self.deploy_block,
            deployment_id: self.deployment_id,
            chain_id: self.chain_id,
            index: self.index.clone(),
            own_patient: Default::default(),
            confirmations: self.confirmations,
            ticket: None,
            refused: refusals_of(rpc_url),
            wallet: Some(wallet),
        })
    }

    /// The same client, whose next write belongs to the request `ticket` names: answered by
    /// the transaction an earlier try of it sent (when the node knows it), else sent and
    /// recorded for the next try (`chain::sent`).
    #[must_use]
    pub fn with_ticket(&self, ticket: super::sent::Ticket) -> Self {
        Self {
            ticket: Some(ticket),
            ..self.clone()
        }
    }

    /// The same client, counting a write done only once `n` blocks hold it (its own and
    /// `n - 1` after it); `n` of 0 counts as 1. Clients made from it by `with_signer` keep it.
    #[must_use]
    pub fn with_confirmations(mut self, n: u64) -> Self {
        self.confirmations = n.max(1);
        self
    }

    /// Whether this client's batch requests go out as single requests now (its endpoint
    /// refused one): their answers may come from several replicas (`chain::unbatch`).
    pub fn batches_split(&self) -> bool {
        super::unbatch::split(&self.refused)
    }

    /// Blocks a write waits for (see [`EhrChain::with_confirmations`]).
    pub fn confirmations(&self) -> u64 {
        self.confirmations
    }

    /// The contract address.
    pub fn address(&self) -> Address {
        *self.contract.address()
    }

    /// The signing account (zero when read-only).
    pub fn from(&self) -> Address {
        self.from
    }

    /// The underlying provider, for chain-level queries.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The deployment block.
    pub fn deploy_block(&self) -> u64 {
        self.deploy_block
    }

    /// The contract's unique deployment id (read once at connect).
    pub fn deployment_id(&self) -> B256 {
        self.deployment_id
    }

    /// The contract's deployment id as the chain says now (differs from
    /// [`Self::deployment_id`] when the chain was reset and the contract redeployed).
    ///
    /// # Errors
    /// Transport errors, or no contract at the address any more.
    pub async fn current_deployment_id(&self) -> Result<B256, ChainError> {
        self.contract
            .deploymentId()
            .call()
            .await
            .map_err(ChainError::from_contract)
    }

    /// keccak256 of the contract's runtime code now (zero when there is no code any more).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn code_hash(&self) -> Result<B256, ChainError> {
        let code = self.provider.get_code_at(self.address()).await?;
        Ok(if code.is_empty() {
            B256::ZERO
        } else {
            alloy::primitives::keccak256(&code)
        })
    }

    /// The chain id (read once at connect).
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// This deployment as a deployment file records it.
    pub fn deployment(&self) -> Deployment {
        Deployment {
            chain_id: self.chain_id,
            address: self.address(),
            block: self.deploy_block,
            deployment_id: self.deployment_id,
            version: CONTRACT_VERSION,
        }
    }

    /// The latest block's timestamp: the clock grants are judged by.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn chain_time(&self) -> Result<u64, ChainError> {
        Ok(self.head().await?.time)
    }

    fn filter(&self) -> Filter {
        Filter::new()
            .address(self.address())
            .from_block(self.deploy_block)
    }

    async fn send<C>(&self, call: C) -> Result<TxOutcome, ChainError>
    where
        C: Sendable,
    {
        let r = self.send_receipt(call).await?;
        Ok(TxOutcome::from_receipt(&r))
    }

    /// Sends `call` and waits for its receipt, or, when the same call from this account was
    /// sent as its last transaction and nobody has seen its receipt, answers with that one
    /// instead (`chain::sent`): a caller who gave up and asks again does not do it twice.
    async fn send_receipt<C>(&self, call: C) -> Result<TransactionReceipt, ChainError>
    where
        C: Sendable,
    {
        let request = call.request();
        let ticket = self
            .ticket
            .as_ref()
            .and_then(super::sent::Ticket::take)
            .cloned();
        let named = ticket.is_some();
        let key = self.call_key(match &ticket {
            Some(t) => t.name(),
            None => request.input.input().cloned().unwrap_or_default(),
        });
        let slot = super::sent::slot(&key);
        // In a task of its own: a caller dropped during the send (its client went away) would
        // leave a transaction in the pool that the slot does not name, and the retry would
        // send a second one.
        let tx = {
            let (chain, slot) = (self.clone(), std::sync::Arc::clone(&slot));
            tokio::spawn(async move { chain.send_or_join(&slot, request, ticket).await })
                .await
                .map_err(|e| {
                    ChainError::Rpc(alloy::transports::TransportErrorKind::custom_str(&format!(
                        "sending the transaction failed: {e}"
                    )))
                })??
        };
        let receipt = self.receipt_of(tx).await?;
        if !named {
            // A named request's transaction stays in its slot: a try of it that comes at once
            // but reaches the slot later is answered by it too.
            super::sent::seen(&key, &slot, tx);
        }
        if !receipt.status() {
            return Err(ChainError::Reverted(format!(
                "transaction {} reverted",
                receipt.transaction_hash
            )));
        }
        Ok(receipt)
    }

    /// The transaction for the call in `slot`: the one in it when that still answers for the
    /// call ([`Self::answers_for`]); otherwise `request` estimated, sent
    /// (`send_lock::submit`) and put in the slot. Holds the slot meanwhile, so calls that come
    /// at once send one transaction.
    async fn send_or_join(
        &self,
        slot: &super::sent::Slot,
        request: alloy::rpc::types::TransactionRequest,
        ticket: Option<super::sent::Ticket>,
    ) -> Result<B256, ChainError> {
        let mut held = slot.lock().await;
        if let Some(t) = &ticket {
            // A named request: its tries are one request, whatever happened between them.
            // Answered by the transaction a try sent while the node knows it.
            if let Some(tx) = held.map(|u| u.tx).or(t.earlier())
                && self.ours(tx).await?.is_some()
            {
                tracing::info!(%tx, "a retried request; answering with its transaction");
                t.answered_by_earlier();
                return Ok(tx);
            }
        } else if let Some(u) = *held
            && self.answers_for(u).await?
        {
            tracing::info!(tx = %u.tx, "the same call was sent and not seen through; answering with it");
            return Ok(u.tx);
        }
        let contract_error =
            |e| ChainError::from_contract(alloy::contract::Error::TransportError(e));
        let estimate = self
            .provider
            .estimate_gas(request.clone())
            .block(alloy::eips::BlockId::latest())
            .await
            .map_err(contract_error)?;
        let request = request.gas_limit(gas_limit(estimate));
        let wallet = self.wallet.as_ref().ok_or_else(|| {
            ChainError::Rpc(alloy::transports::TransportErrorKind::custom_str(
                "this chain client has no signer",
            ))
        })?;
        // Signed here, so its hash is named (in the request's record) before the node sees
        // it: a send cut off after the node took it still leaves it named (`chain::sign`).
        // Every hash signed by this call, the last one last (a stale nonce signs again).
        let signed_all = std::sync::Mutex::new(Vec::<B256>::new());
        let sent = super::send_lock::submit(self.from, || async {
            let signed = super::sign::sign(
                &self.provider,
                wallet,
                self.from,
                self.chain_id,
                request.clone(),
            )
            .await
            .map_err(SendFailure::Before)?;
            signed_all
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(signed.hash);
            if let Some(t) = &ticket {
                let recorded = t.record(signed.hash).await.map_err(|e| {
                    SendFailure::Before(ChainError::Rpc(
                        alloy::transports::TransportErrorKind::custom_str(&format!(
                            "the request's record could not be kept, so nothing was sent: {e}"
                        )),
                    ))
                })?;
                if let Some(other) = recorded {
                    return Err(SendFailure::Lost(other));
                }
            }
            self.provider
                .send_raw_transaction(&signed.raw)
                .await
                .map(|_| signed.hash)
                .map_err(SendFailure::Broadcast)
        })
        .await;
        let signed_all = signed_all
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A failed send names none of its hashes in the request's record (an earlier pass's
        // may still be there when a later pass's record failed).
        let withdraw_all = |keep: Option<B256>| {
            let (ticket, signed_all) = (&ticket, &signed_all);
            async move {
                if let Some(t) = ticket {
                    for tx in signed_all.iter().filter(|tx| Some(**tx) != keep) {
                        t.withdraw(*tx).await;
                    }
                }
            }
        };
        match (sent, signed_all.last().copied()) {
            (Ok(tx), _) => {
                super::sent::record(&mut held, tx);
                Ok(tx)
            }
            (Err(SendFailure::Broadcast(e)), Some(tx)) => {
                // The node's word first: a proxy may answer an error after passing it on (a
                // node that cannot be asked cannot say it does not have it).
                let known = !matches!(self.ours(tx).await, Ok(None));
                if known || super::sign::maybe_sent(&e) {
                    // Named in the slot, a repeat of the call joins it while the node knows
                    // it; the caller is told which transaction to look for.
                    tracing::warn!(%tx, "sending a transaction failed on the way ({e}); it may be mined");
                    super::sent::record(&mut held, tx);
                    return Err(ChainError::Unconfirmed {
                        tx,
                        source: alloy::providers::PendingTransactionError::TransportError(e),
                    });
                }
                withdraw_all(None).await;
                Err(contract_error(e))
            }
            (Err(SendFailure::Broadcast(e)), None) => Err(contract_error(e)),
            // Another try of the request, in another process, recorded its transaction first:
            // this one answers with it once the node has it.
            (Err(SendFailure::Lost(other)), _) => {
                // The other's transaction is the other's to keep named (it may be this one's
                // too: signed alike).
                withdraw_all(Some(other)).await;
                let Some(t) = &ticket else {
                    return Err(ChainError::Rejected("a send lost to another".into()));
                };
                let until = std::time::Instant::now() + OTHER_TRY_WAIT;
                loop {
                    if self.ours(other).await?.is_some() {
                        tracing::info!(tx = %other, "another try of this request sent it; answering with its transaction");
                        t.answered_by_earlier();
                        super::sent::record(&mut held, other);
                        return Ok(other);
                    }
                    if std::time::Instant::now() >= until {
                        // Asked again with the key, the request is answered by it once the
                        // node has it (or sent anew when it never will).
                        return Err(ChainError::Unconfirmed {
                            tx: other,
                            source: alloy::providers::PendingTransactionError::TransportError(
                                alloy::transports::TransportErrorKind::custom_str(
                                    "another try of this request is sending it",
                                ),
                            ),
                        });
                    }
                    tokio::time::sleep(self.provider.client().poll_interval()).await;
                }
            }
            (Err(SendFailure::Before(e)), _) => {
                withdraw_all(None).await;
                Err(e)
            }
        }
    }

    /// The transaction `tx` as the node has it (in its pool or mined), when it was sent by this
    /// client's account to its contract.
    async fn ours(&self, tx: B256) -> Result<Option<alloy::rpc::types::Transaction>, ChainError> {
        Ok(self
            .provider
            .get_transaction_by_hash(tx)
            .await?
            .filter(|t| {
                t.inner.signer() == self.from
                    && alloy::consensus::Transaction::to(t) == Some(self.address())
            }))
    }

    /// Whether this client's next write is the retry of a named request whose earlier try's
    /// transaction the node knows (see [`Self::with_ticket`]): it will be answered by that
    /// transaction, so checks made before a send (of state the first try changed: a request
    /// now pending, a patient now issued) would refuse what is a replay.
    ///
    /// # Errors
    /// Transport errors.
    pub(super) async fn retrying(&self) -> Result<bool, ChainError> {
        let Some(t) = self.ticket.as_ref().filter(|t| t.untaken()) else {
            return Ok(false);
        };
        // A try of the same request in this process may have sent since this one's record was
        // read (two tries at once): its transaction is in the request's slot. Locking the slot
        // waits for a send under way.
        let slot = super::sent::slot(&self.call_key(t.name()));
        let held = slot.lock().await.map(|u| u.tx);
        let Some(tx) = held.or(t.earlier()) else {
            return Ok(false);
        };
        Ok(self.ours(tx).await?.is_some())
    }

    /// Runs `check`, a check made before a send that refuses what the contract would refuse
    /// (with a clearer reason) or what a replay must not be refused for, unless this write is
    /// the retry of a named request ([`Self::retrying`]). A refusal is looked at again: a try
    /// of the same request that runs at once may have sent, and been mined, while this one
    /// looked (its transaction then answers this one too).
    ///
    /// # Errors
    /// The check's refusal; transport errors.
    pub(super) async fn check_unless_retrying<F>(&self, check: F) -> Result<(), ChainError>
    where
        F: std::future::Future<Output = Result<(), ChainError>>,
    {
        if self.retrying().await? {
            return Ok(());
        }
        match check.await {
            Err(e @ ChainError::Rejected(_)) if !self.retrying().await? => Err(e),
            Err(ChainError::Rejected(_)) => Ok(()),
            r => r,
        }
    }

    /// The `chain::sent` table's key of a call from this client's account to its contract.
    fn call_key(&self, input: alloy::primitives::Bytes) -> super::sent::Call {
        super::sent::Call {
            chain_id: self.chain_id,
            from: self.from,
            to: self.address(),
            input,
        }
    }

    /// Whether the unseen transaction `u` answers for a call the same as it: the node has it,
    /// and nothing was sent from this account after it (by this process or another); once
    /// mined, it did not revert and was sent less than [`super::sent::WINDOW`] ago. After the
    /// account did something else, the same call is a new act (a revoke after a grant that
    /// followed an earlier revoke); one the node dropped will never be mined; one that reverted
    /// is asked again to be tried again; one still in the pool answers however long it waits
    /// (a second would queue behind it).
    async fn answers_for(&self, u: super::sent::Unseen) -> Result<bool, ChainError> {
        let Some(t) = self.ours(u.tx).await? else {
            return Ok(false);
        };
        let next = self
            .provider
            .get_transaction_count(self.from)
            .pending()
            .await?;
        // At most one past it (the node's pending count can miss a transaction it is moving
        // into a block: `send_lock`).
        if next > alloy::consensus::Transaction::nonce(&t) + 1 {
            return Ok(false);
        }
        if t.block_number.is_none() {
            return Ok(true);
        }
        Ok(u.current()
            && self
                .provider
                .get_transaction_receipt(u.tx)
                .await?
                .is_some_and(|r| r.status()))
    }

    /// `tx`'s receipt once it has [`Self::confirmations`] blocks (its own included), asked
    /// every poll interval of the client (10 ms for a node nearby) for at most
    /// [`RECEIPT_WAIT`]. alloy's watcher with more than one confirmation relies on blocks it
    /// saw itself, so a transaction mined before it started (one a repeated call joins) was
    /// never reported.
    async fn receipt_of(&self, tx: B256) -> Result<TransactionReceipt, ChainError> {
        let poll = self.provider.client().poll_interval();
        let waited = async {
            // Failed polls are asked again for a while (a node restarting, a replica behind a
            // load balancer without the transaction yet), then the wait fails.
            let mut failing_since = None;
            // The first looks come soon and then less often, up to the poll interval: a node
            // that mines on arrival (anvil, `geth --dev`) has the receipt a millisecond or two
            // after the send, and a first miss cost a whole interval (10 ms of a 7 ms read).
            // On a nearby node the first pause is at most half a millisecond (tokio's timer
            // rounds it up to its next millisecond): after 1.25 ms, the second look came 3 ms
            // after the send, about half of a client-side first read's time past its floor.
            // A distant node keeps alloy's pace (its blocks take seconds; metered endpoints
            // bill each look).
            let mut pause = if poll <= LOCAL_POLL {
                (poll / 8).min(FIRST_RECEIPT_PAUSE)
            } else {
                poll / 8
            };
            loop {
                match self.confirmed_receipt(tx).await {
                    Ok(Some(r)) => return Ok(r),
                    Ok(None) => failing_since = None,
                    Err(e) => {
                        let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() >= RECEIPT_POLL_FAILURES {
                            return Err(e);
                        }
                    }
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(poll);
            }
        };
        match tokio::time::timeout(RECEIPT_WAIT, waited).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(ChainError::Unconfirmed {
                tx,
                source: alloy::providers::PendingTransactionError::TransportError(e),
            }),
            Err(_) => Err(ChainError::Unconfirmed {
                tx,
                source: alloy::providers::PendingTransactionError::TxWatcher(
                    alloy::providers::WatchTxError::Timeout,
                ),
            }),
        }
    }

    /// `tx`'s receipt when it has [`Self::confirmations`] blocks now.
    async fn confirmed_receipt(
        &self,
        tx: B256,
    ) -> Result<Option<TransactionReceipt>, alloy::transports::TransportError> {
        let Some(r) = self.provider.get_transaction_receipt(tx).await? else {
            return Ok(None);
        };
        if self.confirmations <= 1 {
            return Ok(Some(r));
        }
        let needed = r
            .block_number
            .unwrap_or_default()
            .saturating_add(self.confirmations - 1);
        Ok((self.provider.get_block_number().await? >= needed).then_some(r))
    }
}

/// The longest a write waits for its receipt (and confirmations). A transaction the pool
/// dropped never gets one, and with more than one confirmation alloy waits on its block
/// watcher, which retries an endpoint that stopped answering without end: either held the
/// caller for ever.
const RECEIPT_WAIT: std::time::Duration = std::time::Duration::from_secs(600);
/// The longest wait before the second look for a receipt (see [`EhrChain::receipt_of`]).
const FIRST_RECEIPT_PAUSE: std::time::Duration = std::time::Duration::from_micros(500);

/// How long polls for a receipt may fail one after another before the wait gives up.
const RECEIPT_POLL_FAILURES: std::time::Duration = std::time::Duration::from_secs(30);

/// The contract's form of a record proof.
fn sol_proof(p: &RecordProof) -> EhrAccess::RecordProof {
    EhrAccess::RecordProof {
        patient: p.patient.key(),
        author: p.author,
        salt: p.salt,
        digest: p.digest,
        root: p.root,
        proof: p.proof.clone(),
    }
}

/// A prepared contract call that can be sent: lets `send` take any generated call builder.
trait Sendable {
    /// The transaction it asks for (to, call data; the signer's provider fills the rest).
    fn request(self) -> alloy::rpc::types::TransactionRequest;
}

impl<D: alloy::contract::CallDecoder + Send> Sendable
    for alloy::contract::CallBuilder<&DynProvider, D>
{
    fn request(self) -> alloy::rpc::types::TransactionRequest {
        self.into_transaction_request()
    }
}

/// The gas limit for a transaction estimated at `estimate`.
///
/// The estimate runs against the latest block, but this account's earlier transactions still
/// waiting in the pool run first and can make this one dearer: a slot written back to a value
/// it had costs 2,900 more than a write of the same value, a zero slot set 20,000 more (a grant
/// estimated while a revoke of the same provider is pending). Without headroom such a
/// transaction runs out of gas (the load bench saw 426 of 1,023 concurrent grants by one
/// patient fail so). Only the gas used is paid, so the headroom costs nothing.
fn gas_limit(estimate: u64) -> u64 {
    estimate.saturating_add(estimate / 5).saturating_add(25_000)
}

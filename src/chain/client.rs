//! A typed client of the EhrAccess contract over alloy: one signer, one contract, every
//! operation as a method that returns our types and our errors.

use std::path::Path;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionReceipt};
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};

use super::bindings::EhrAccess;
use super::errors::ChainError;
use super::events::{self, AuditEvent, AuditFilter, AuditKind, AuditPage};
use super::merkle::RecordProof;
use super::types::{
    DenyReason, EmergencyReason, GrantInfo, PatientAddr, PendingRequest, ProviderStatus, RecordId,
    RootInfo,
};

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
pub const CONTRACT_VERSION: u16 = 4;

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
}

/// How often a local node is asked for a transaction's receipt. alloy's default for local
/// nodes (250 ms) is the whole wait whenever the first look misses; a node on this host answers
/// in well under a millisecond, so asking every 10 ms costs nothing. Remote nodes keep alloy's
/// default (seconds: their blocks take seconds).
const LOCAL_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// The RPC client for `url`, polling receipts every [`LOCAL_POLL`] when the node is on this
/// host.
fn rpc_client(url: reqwest::Url) -> alloy::rpc::client::RpcClient {
    let local = url.host_str().is_some_and(|h| {
        h == "localhost"
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    let client = alloy::rpc::client::RpcClient::new_http(url);
    if local {
        client.with_poll_interval(LOCAL_POLL)
    } else {
        client
    }
}

fn connect(rpc_url: &str, signer: Option<PrivateKeySigner>) -> Result<DynProvider, ChainError> {
    let url: reqwest::Url = rpc_url
        .parse()
        .map_err(|e| ChainError::Rpc(format!("bad RPC URL {rpc_url}: {e}")))?;
    let client = rpc_client(url);
    Ok(match signer {
        // Simple nonce management asks the node for the pending nonce on every transaction:
        // several clients (CLI, gateway requests, tests) may sign for one account at once, and a
        // per-client nonce cache would hand out nonces with gaps that never mine.
        Some(s) => ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(s))
            .connect_client(client)
            .erased(),
        None => ProviderBuilder::new().connect_client(client).erased(),
    })
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
        let provider = connect(rpc_url, Some(signer))?;
        let chain_id = provider.get_chain_id().await?;
        let builder = EhrAccess::deploy_builder(provider.clone(), manager);
        let pending = {
            let _turn = super::send_lock::lock(from).await;
            builder.send().await.map_err(ChainError::from_contract)?
        };
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
        let provider = connect(rpc_url, signer)?;
        let code = provider.get_code_at(deployment.address).await?;
        if code.is_empty() {
            return Err(ChainError::NoContract(deployment.address));
        }
        let chain_id = provider.get_chain_id().await?;
        if deployment.chain_id != 0 && chain_id != deployment.chain_id {
            return Err(ChainError::WrongDeployment(format!(
                "the chain at {rpc_url} has chain id {chain_id}, the deployment is on {}",
                deployment.chain_id
            )));
        }
        let contract = EhrAccess::new(deployment.address, provider.clone());
        let version = contract.VERSION().call().await.unwrap_or(0);
        if version != CONTRACT_VERSION {
            return Err(ChainError::WrongDeployment(format!(
                "the contract at {} is EhrAccess version {version}, this build needs version {CONTRACT_VERSION} (deploy it with `ehr deploy`)",
                deployment.address
            )));
        }
        let deployment_id = contract
            .deploymentId()
            .call()
            .await
            .map_err(ChainError::from_contract)?;
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
        let provider = connect(rpc_url, Some(signer))?;
        Ok(Self {
            contract: EhrAccess::new(*self.contract.address(), provider.clone()),
            provider,
            from,
            deploy_block: self.deploy_block,
            deployment_id: self.deployment_id,
            chain_id: self.chain_id,
            index: self.index.clone(),
            own_patient: Default::default(),
        })
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

    // ------------------------------------------------------------ transactions

    /// Sends `wei` to `to` (development faucets; goes through the same per-account send lock as
    /// contract calls).
    ///
    /// # Errors
    /// Transport errors and a failed transfer.
    pub async fn send_value(&self, to: Address, wei: U256) -> Result<TxOutcome, ChainError> {
        let tx = alloy::rpc::types::TransactionRequest::default()
            .to(to)
            .value(wei);
        let pending = {
            let _turn = super::send_lock::lock(self.from).await;
            self.provider.send_transaction(tx).await?
        };
        let receipt = pending.get_receipt().await?;
        if !receipt.status() {
            return Err(ChainError::Reverted(format!(
                "transfer {} failed",
                receipt.transaction_hash
            )));
        }
        Ok(TxOutcome::from_receipt(&receipt))
    }

    /// Records office: issues `addr` to `account`.
    ///
    /// # Errors
    /// Contract rejections (not the office, address taken, account has a role) and transport errors.
    pub async fn issue_patient(
        &self,
        addr: PatientAddr,
        account: Address,
    ) -> Result<TxOutcome, ChainError> {
        self.check_issuable(account).await?;
        self.send(self.contract.issuePatient(addr.aid(), addr.pid(), account))
            .await
    }

    /// Refuses an account that already holds a patient address or is a provider: one account,
    /// one role, one address. The contract refuses a provider and a taken address itself; it
    /// keeps no account-to-address map (one slot per patient), so the records office's tools
    /// check the account's earlier registrations here, before issuing or signing a voucher.
    ///
    /// # Errors
    /// [`ChainError::Rejected`] for an account with a role; transport errors.
    pub async fn check_issuable(&self, account: Address) -> Result<(), ChainError> {
        let is_provider = self.provider_status(account).await?.0 != ProviderStatus::None;
        if is_provider || self.patient_of(account).await?.is_some() {
            return Err(ChainError::Rejected(format!(
                "account {account} is already registered as a patient or provider"
            )));
        }
        Ok(())
    }

    /// Registers the signer as the patient at `addr` with the records office's voucher
    /// (see [`super::sign_voucher`]).
    ///
    /// # Errors
    /// Contract rejections (bad or expired voucher, address taken, account has a role) and
    /// transport errors.
    pub async fn register_patient(
        &self,
        addr: PatientAddr,
        deadline: u64,
        office_signature: alloy::primitives::Bytes,
    ) -> Result<TxOutcome, ChainError> {
        // The contract takes the EIP-2098 compact form (64 bytes, no malleable twin); a voucher
        // that is no signature at all is sent as zeros, for the contract to refuse.
        let compact = alloy::primitives::Signature::from_raw(&office_signature)
            .map(|s| s.as_erc2098())
            .unwrap_or([0; 64]);
        let (r, vs) = (
            B256::from_slice(&compact[..32]),
            B256::from_slice(&compact[32..]),
        );
        self.send(
            self.contract
                .registerPatient(addr.aid(), addr.pid(), deadline, r, vs),
        )
        .await
    }

    /// Registers the signer as a provider (pending verification).
    ///
    /// # Errors
    /// Contract rejections and transport errors.
    pub async fn register_provider(&self) -> Result<TxOutcome, ChainError> {
        // The contract refuses a second provider registration; a patient account it cannot
        // see without a reverse map, so the index is asked here.
        if self.patient_of(self.from).await?.is_some() {
            return Err(ChainError::Rejected(format!(
                "account {} is already registered as a patient or provider",
                self.from
            )));
        }
        self.send(self.contract.registerProvider()).await
    }

    /// Records office: verifies a provider.
    ///
    /// # Errors
    /// Contract rejections and transport errors.
    pub async fn verify_provider(&self, provider: Address) -> Result<TxOutcome, ChainError> {
        if self.patient_of(provider).await?.is_some() {
            return Err(ChainError::Rejected(format!(
                "account {provider} holds a patient address: one account, one role"
            )));
        }
        self.send(self.contract.verifyProvider(provider)).await
    }

    /// Records office: suspends a provider.
    ///
    /// # Errors
    /// Contract rejections and transport errors.
    pub async fn suspend_provider(&self, provider: Address) -> Result<TxOutcome, ChainError> {
        self.send(self.contract.suspendProvider(provider)).await
    }

    /// Records office: nominates a successor (two-step transfer).
    ///
    /// # Errors
    /// Contract rejections and transport errors.
    pub async fn transfer_manager(&self, nominee: Address) -> Result<TxOutcome, ChainError> {
        self.send(self.contract.transferManager(nominee)).await
    }

    /// The nominee accepts the records office role.
    ///
    /// # Errors
    /// Contract rejections and transport errors.
    pub async fn accept_manager(&self) -> Result<TxOutcome, ChainError> {
        self.send(self.contract.acceptManager()).await
    }

    /// Patient: grants `provider` until `expires_at` (unix seconds; `None` = open-ended).
    ///
    /// # Errors
    /// Contract rejections and transport errors.
    pub async fn grant(
        &self,
        provider: Address,
        expires_at: Option<u64>,
    ) -> Result<TxOutcome, ChainError> {
        let me = self.own_patient().await?;
        // The contract does not look the provider up (a grant to an account that is no
        // verified provider opens nothing, and the read saves gas); a typo is caught here.
        if self.provider_status(provider).await?.0 == ProviderStatus::None {
            return Err(ChainError::Rejected(format!(
                "provider {provider} is not registered"
            )));
        }
        self.send(
            self.contract
                .grant(me.key(), provider, expires_at.unwrap_or(0)),
        )
        .await
    }

    /// Patient: revokes `provider`.
    ///
    /// # Errors
    /// Contract rejections and transport errors.
    pub async fn revoke(&self, provider: Address) -> Result<TxOutcome, ChainError> {
        let me = self.own_patient().await?;
        self.send(self.contract.revoke(me.key(), provider)).await
    }

    /// Provider: asks the patient at `addr` for access.
    ///
    /// # Errors
    /// Contract rejections and transport errors.
    pub async fn request_access(&self, addr: PatientAddr) -> Result<TxOutcome, ChainError> {
        // Nothing is stored per request; the index tells whether one is pending already.
        if self.is_pending(addr, self.from).await? {
            return Err(ChainError::Rejected(format!(
                "provider {} already has a pending request to patient {addr}",
                self.from
            )));
        }
        self.send(self.contract.requestAccess(addr.key())).await
    }

    /// Patient: approves a pending request as a grant (the grant settles the request).
    ///
    /// # Errors
    /// [`ChainError::Rejected`] when no request from `provider` is pending; contract rejections
    /// and transport errors.
    pub async fn approve_request(
        &self,
        provider: Address,
        expires_at: Option<u64>,
    ) -> Result<TxOutcome, ChainError> {
        let me = self.own_patient().await?;
        if !self.is_pending(me, provider).await? {
            return Err(ChainError::Rejected(format!(
                "no pending request from provider {provider} to patient {me}"
            )));
        }
        self.grant(provider, expires_at).await
    }

    /// Whether `provider` has a request to the patient at `addr` that is still pending.
    async fn is_pending(&self, addr: PatientAddr, provider: Address) -> Result<bool, ChainError> {
        Ok(self
            .pending_requests(addr, 0, u64::MAX)
            .await?
            .iter()
            .any(|r| r.provider == provider))
    }

    /// Patient: declines a pending request.
    ///
    /// # Errors
    /// Contract rejections and transport errors.
    pub async fn decline_request(&self, provider: Address) -> Result<TxOutcome, ChainError> {
        let me = self.own_patient().await?;
        if !self.is_pending(me, provider).await? {
            return Err(ChainError::Rejected(format!(
                "no pending request from provider {provider} to patient {me}"
            )));
        }
        self.send(self.contract.declineRequest(me.key(), provider))
            .await
    }

    /// Anchors a Merkle root of `count` records (one record: its leaf, count 1).
    ///
    /// # Errors
    /// Contract rejections (a root anchored already, a bad count) and transport errors.
    pub async fn anchor_root(&self, root: B256, count: u32) -> Result<TxOutcome, ChainError> {
        self.send(self.contract.anchor(root, count)).await
    }

    /// An anchored root, if anchored.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn root(&self, root: B256) -> Result<Option<RootInfo>, ChainError> {
        let r = self
            .contract
            .roots(root)
            .call()
            .await
            .map_err(ChainError::from_contract)?;
        Ok((r.anchoredAt != 0).then_some(RootInfo {
            anchorer: r.anchorer,
            anchored_at: r.anchoredAt,
            count: r.count,
        }))
    }

    /// Whether `proof` leads to an anchored root, by the contract's own `isAnchored`.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn is_anchored(&self, proof: &RecordProof) -> Result<bool, ChainError> {
        Ok(self
            .contract
            .isAnchored(sol_proof(proof))
            .call()
            .await
            .map_err(ChainError::from_contract)?
            .anchored)
    }

    /// Provider: the access transaction before reading `ids`, records of the patient at
    /// `addr`. Denials do not fail the call: they are returned (and logged on chain). Share
    /// nodes then release to requests naming this transaction ([`AccessOutcome::tx`]).
    ///
    /// # Errors
    /// Contract rejections (empty or oversized batch, unknown patient, not a verified
    /// provider) and transport errors.
    pub async fn access(
        &self,
        addr: PatientAddr,
        ids: &[RecordId],
    ) -> Result<AccessOutcome, ChainError> {
        let call = self
            .contract
            .access(addr.key(), ids.iter().map(|r| r.0).collect());
        let receipt = self.send_receipt(call).await?;
        let mut allowed = Vec::new();
        let mut denied = Vec::new();
        let mut logs: Vec<AuditEvent> = receipt
            .inner
            .logs()
            .iter()
            .filter_map(events::decode)
            .collect();
        // A revoked grant is cleared on chain, so its denials say `NoGrant`; the patient's
        // events tell a revoke apart.
        let patients: std::collections::HashSet<PatientAddr> = logs
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    AuditKind::AccessDenied {
                        reason: DenyReason::NoGrant,
                        ..
                    }
                )
            })
            .filter_map(|e| e.kind.patient())
            .collect();
        for p in patients {
            let before: Vec<AuditEvent> = self
                .patient_events(p)
                .await?
                .into_iter()
                .filter(|e| e.block < receipt.block_number.unwrap_or(u64::MAX))
                .collect();
            super::fold::mark_revoked(&before, &mut logs);
        }
        for e in logs {
            match Some(e.kind) {
                Some(AuditKind::AccessAllowed { record, .. }) => allowed.push(record),
                Some(AuditKind::AccessDenied { record, reason, .. }) => {
                    denied.push((record, reason))
                }
                _ => {}
            }
        }
        Ok(AccessOutcome {
            tx: TxOutcome::from_receipt(&receipt),
            allowed,
            denied,
        })
    }

    /// Provider: opens emergency access to the patient at `addr`.
    ///
    /// # Errors
    /// Contract rejections and transport errors.
    pub async fn break_glass(
        &self,
        addr: PatientAddr,
        reason: EmergencyReason,
    ) -> Result<TxOutcome, ChainError> {
        self.send(self.contract.breakGlass(addr.key(), reason.code()))
            .await
    }

    /// Patient: ends `provider`'s open emergency access now.
    ///
    /// # Errors
    /// Contract rejections (no open emergency) and transport errors.
    pub async fn end_emergency(&self, provider: Address) -> Result<TxOutcome, ChainError> {
        let me = self.own_patient().await?;
        self.send(self.contract.endEmergency(me.key(), provider))
            .await
    }

    /// The signer's own patient address (looked up once).
    ///
    /// # Errors
    /// [`ChainError::NotPermitted`] when the signer is not a registered patient; transport
    /// errors.
    async fn own_patient(&self) -> Result<PatientAddr, ChainError> {
        self.own_patient
            .get_or_try_init(|| async {
                self.patient_of(self.from).await?.ok_or_else(|| {
                    ChainError::NotPermitted(format!(
                        "account {} is not a registered patient",
                        self.from
                    ))
                })
            })
            .await
            .copied()
    }

    /// When `provider`'s emergency access to the patient at `addr` ends, if one is open now.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn emergency_until(
        &self,
        addr: PatientAddr,
        provider: Address,
    ) -> Result<Option<u64>, ChainError> {
        let until = self
            .contract
            .emergencyUntil(addr.key(), provider)
            .call()
            .await
            .map_err(ChainError::from_contract)?;
        Ok((until > self.chain_time().await?).then_some(until))
    }

    // ------------------------------------------------------------ queries

    /// The records office.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn manager(&self) -> Result<Address, ChainError> {
        self.contract
            .manager()
            .call()
            .await
            .map_err(ChainError::from_contract)
    }

    /// The patient address registered to `account`, if any: from the event index (the
    /// contract keeps no reverse map), confirmed against the contract's own map.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn patient_of(&self, account: Address) -> Result<Option<PatientAddr>, ChainError> {
        let page = self
            .index
            .query(
                &self.provider,
                &self.filter(),
                |e| matches!(e.kind, AuditKind::PatientRegistered { account: a, .. } if a == account),
                0,
                1,
            )
            .await?;
        let Some(addr) = page.events.first().and_then(|e| e.kind.patient()) else {
            return Ok(None);
        };
        Ok((self.patient_account(addr).await? == Some(account)).then_some(addr))
    }

    /// The account registered at `addr`, if any.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn patient_account(&self, addr: PatientAddr) -> Result<Option<Address>, ChainError> {
        let a = self
            .contract
            .patientAccount(addr.key())
            .call()
            .await
            .map_err(ChainError::from_contract)?;
        Ok((a != Address::ZERO).then_some(a))
    }

    /// A provider's status and denied-attempt counter.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn provider_status(
        &self,
        provider: Address,
    ) -> Result<(ProviderStatus, u32), ChainError> {
        let p = self
            .contract
            .providers(provider)
            .call()
            .await
            .map_err(ChainError::from_contract)?;
        let status =
            ProviderStatus::try_from(p.status).map_err(|e| ChainError::Decode(e.to_string()))?;
        Ok((status, p.deniedCount))
    }

    /// Whether `provider` may read the patient's records now, and why not.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn check_access(
        &self,
        addr: PatientAddr,
        provider: Address,
    ) -> Result<(DenyReason, bool), ChainError> {
        let r = self
            .contract
            .checkAccess(addr.key(), provider)
            .call()
            .await
            .map_err(ChainError::from_contract)?;
        let mut reason =
            DenyReason::try_from(r.reason).map_err(|e| ChainError::Decode(e.to_string()))?;
        // A revoked grant is cleared on chain and reads as `NoGrant`; the events tell it apart.
        if reason == DenyReason::NoGrant
            && super::fold::grants(&self.patient_events(addr).await?, 0)
                .iter()
                .any(|g| g.provider == provider && g.revoked_at.is_some())
        {
            reason = DenyReason::Revoked;
        }
        Ok((reason, r.emergency))
    }

    /// What share nodes ask: may `requester` read the record `proof` describes right now, on
    /// the strength of its access transaction `access_tx` (none for the patient)? The proof
    /// must lead to an anchored root. The transaction's receipt must hold this contract's
    /// `AccessAllowed` event for exactly this requester, record and the record's patient; its
    /// block and time then go to the contract's `canRead`, which judges the window and the grant
    /// as they stand now.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn can_read(
        &self,
        requester: Address,
        proof: &RecordProof,
        access_tx: Option<B256>,
    ) -> Result<bool, ChainError> {
        let (block, time) = match access_tx {
            None => (0, 0),
            Some(tx) => match self
                .access_in(tx, requester, proof.record_id(), proof.patient)
                .await?
            {
                Some(at) => at,
                None => return Ok(false),
            },
        };
        self.contract
            .canRead(requester, sol_proof(proof), block, time)
            .call()
            .await
            .map_err(ChainError::from_contract)
    }

    /// The block and time of transaction `tx`, when it holds this contract's `AccessAllowed`
    /// event for `requester`, record `id` and the record's own `patient`. Asked with the logs of
    /// that one block filtered by contract and all three topics (not the transaction's whole
    /// receipt), so a transaction with a huge receipt costs the asking node nothing; a
    /// reverted transaction has no logs.
    async fn access_in(
        &self,
        tx: B256,
        requester: Address,
        id: RecordId,
        patient: PatientAddr,
    ) -> Result<Option<(u64, u64)>, ChainError> {
        use alloy::sol_types::SolEvent;
        let Some(t) = self.provider.get_transaction_by_hash(tx).await? else {
            return Ok(None);
        };
        let Some(block_hash) = t.block_hash else {
            return Ok(None);
        };
        let filter = Filter::new()
            .address(self.address())
            .at_block_hash(block_hash)
            .event_signature(EhrAccess::AccessAllowed::SIGNATURE_HASH)
            .topic1(B256::from(U256::from(patient.key())))
            .topic2(requester.into_word())
            .topic3(id.0);
        let logs = self.provider.get_logs(&filter).await?;
        let Some(log) = logs.iter().find(|l| l.transaction_hash == Some(tx)) else {
            return Ok(None);
        };
        let Some(block) = log.block_number else {
            return Ok(None);
        };
        let time = match log.block_timestamp {
            Some(t) => t,
            None => self
                .provider
                .get_block_by_hash(block_hash)
                .await?
                .map(|b| b.header.timestamp)
                .ok_or_else(|| ChainError::Decode(format!("block {block} not found")))?,
        };
        Ok(Some((block, time)))
    }

    /// All grants the patient ever gave, each as it stands now (first granted first); paged.
    /// Folded from the event index: the contract stores only the current grant.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn grants(
        &self,
        addr: PatientAddr,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<GrantInfo>, ChainError> {
        let now = self.chain_time().await?;
        let events = self.patient_events(addr).await?;
        Ok(super::fold::grants(&events, now)
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect())
    }

    /// Requests still pending for the patient (asked, neither granted nor declined since), in
    /// the order they were made; paged.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn pending_requests(
        &self,
        addr: PatientAddr,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<PendingRequest>, ChainError> {
        let events = self.patient_events(addr).await?;
        Ok(super::fold::pending_requests(&events)
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect())
    }

    /// Every event about the patient, oldest first.
    async fn patient_events(&self, addr: PatientAddr) -> Result<Vec<AuditEvent>, ChainError> {
        let mut page = self
            .index
            .query(
                &self.provider,
                &self.filter(),
                |e| e.kind.patient() == Some(addr),
                0,
                usize::MAX,
            )
            .await?;
        page.events.reverse();
        Ok(page.events)
    }

    /// The patient's audit trail (every event about them), newest first; paged.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn audit_for_patient(
        &self,
        addr: PatientAddr,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, ChainError> {
        Ok(self
            .audit_page_for_patient(addr, AuditFilter::All, offset, limit)
            .await?
            .events)
    }

    /// One page of the patient's audit trail, newest first, keeping only `filter`'s events.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn audit_page_for_patient(
        &self,
        addr: PatientAddr,
        filter: AuditFilter,
        offset: usize,
        limit: usize,
    ) -> Result<AuditPage, ChainError> {
        self.index
            .query(
                &self.provider,
                &self.filter(),
                |e| e.kind.patient() == Some(addr) && filter.matches(&e.kind),
                offset,
                limit,
            )
            .await
    }

    /// One page of every event of the contract, newest first, keeping only `filter`'s events.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn audit_page_all(
        &self,
        filter: AuditFilter,
        offset: usize,
        limit: usize,
    ) -> Result<AuditPage, ChainError> {
        self.index
            .query(
                &self.provider,
                &self.filter(),
                |e| filter.matches(&e.kind),
                offset,
                limit,
            )
            .await
    }

    /// One page of every event that `keep` keeps, newest first (the office's monitoring, with
    /// its filters by kind, provider and patient).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn audit_page_where(
        &self,
        keep: impl Fn(&AuditEvent) -> bool,
        offset: usize,
        limit: usize,
    ) -> Result<AuditPage, ChainError> {
        self.index
            .query(&self.provider, &self.filter(), keep, offset, limit)
            .await
    }

    /// Calls `visit` on every event of the contract, oldest first, without copying them (for
    /// summaries such as the office's activity chart).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn audit_scan(&self, visit: impl FnMut(&AuditEvent)) -> Result<(), ChainError> {
        self.index.scan(&self.provider, &self.filter(), visit).await
    }

    /// Events naming `provider` as the actor (requests, grants, reads, denials), newest first.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn audit_for_provider(
        &self,
        provider: Address,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, ChainError> {
        Ok(self
            .index
            .query(
                &self.provider,
                &self.filter(),
                |e| e.kind.provider() == Some(provider),
                offset,
                limit,
            )
            .await?
            .events)
    }

    /// Every event of the contract, newest first (the records office's monitoring view).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn audit_all(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, ChainError> {
        Ok(self
            .audit_page_all(AuditFilter::All, offset, limit)
            .await?
            .events)
    }

    /// Every account that ever registered as a provider, in registration order (from the
    /// `ProviderRegistered` events, whatever else happened since).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn registered_providers(&self) -> Result<Vec<Address>, ChainError> {
        let page = self
            .index
            .query(
                &self.provider,
                &self.filter(),
                |e| matches!(e.kind, AuditKind::ProviderRegistered { .. }),
                0,
                usize::MAX,
            )
            .await?;
        let mut seen = std::collections::HashSet::new();
        Ok(page
            .events
            .iter()
            .rev()
            .filter_map(|e| match e.kind {
                AuditKind::ProviderRegistered { provider } => Some(provider),
                _ => None,
            })
            .filter(|p| seen.insert(*p))
            .collect())
    }

    /// The latest block's timestamp: the clock grants are judged by.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn chain_time(&self) -> Result<u64, ChainError> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await?
            .ok_or_else(|| ChainError::Decode("no latest block".into()))?;
        Ok(block.header.timestamp)
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

    async fn send_receipt<C>(&self, call: C) -> Result<TransactionReceipt, ChainError>
    where
        C: Sendable,
    {
        let pending = {
            let _turn = super::send_lock::lock(self.from).await;
            call.send_it().await?
        };
        let receipt = pending.get_receipt().await?;
        if !receipt.status() {
            return Err(ChainError::Reverted(format!(
                "transaction {} reverted",
                receipt.transaction_hash
            )));
        }
        Ok(receipt)
    }
}

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
    async fn send_it(
        self,
    ) -> Result<alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>, ChainError>;
}

impl<D: alloy::contract::CallDecoder + Send> Sendable
    for alloy::contract::CallBuilder<&DynProvider, D>
{
    async fn send_it(
        self,
    ) -> Result<alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>, ChainError>
    {
        self.send().await.map_err(ChainError::from_contract)
    }
}

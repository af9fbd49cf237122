//! The contract's transactions: patients, providers, the office's role, grants and requests,
//! anchors, access transactions and break-glass. Each goes through the account's send lock.

use super::*;

impl EhrChain {
    /// Sends `wei` to `to` (development faucets; goes through the same per-account send lock as
    /// contract calls).
    ///
    /// # Errors
    /// Transport errors and a failed transfer.
    pub async fn send_value(&self, to: Address, wei: U256) -> Result<TxOutcome, ChainError> {
        let tx = alloy::rpc::types::TransactionRequest::default()
            .to(to)
            .value(wei);
        let pending = crate::chain::send_lock::submit(self.from, || {
            self.provider.send_transaction(tx.clone())
        })
        .await?;
        let receipt = pending
            .with_required_confirmations(self.confirmations)
            .get_receipt()
            .await?;
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
        self.check_unless_retrying(self.check_issuable(account))
            .await?;
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
        self.check_unless_retrying(async {
            if self.is_pending(addr, self.from).await? {
                return Err(ChainError::Rejected(format!(
                    "provider {} already has a pending request to patient {addr}",
                    self.from
                )));
            }
            Ok(())
        })
        .await?;
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
        self.check_pending(me, provider).await?;
        self.grant(provider, expires_at).await
    }

    /// Refuses when no request from `provider` to the patient at `me` is pending (unless
    /// retrying: the first try settled it).
    async fn check_pending(&self, me: PatientAddr, provider: Address) -> Result<(), ChainError> {
        self.check_unless_retrying(async {
            if !self.is_pending(me, provider).await? {
                return Err(ChainError::Rejected(format!(
                    "no pending request from provider {provider} to patient {me}"
                )));
            }
            Ok(())
        })
        .await
    }

    /// Whether `provider` has a request to the patient at `addr` that is still pending.
    pub(super) async fn is_pending(
        &self,
        addr: PatientAddr,
        provider: Address,
    ) -> Result<bool, ChainError> {
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
        self.check_pending(me, provider).await?;
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
            crate::chain::fold::mark_revoked(&before, &mut logs);
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

    /// Provider: puts on the audit trail an attempt to read `ids` that
    /// [`EhrChain::check_access`] just refused, without waiting for it to be mined: the
    /// `access` transaction is signed and in the node's pool when this returns (so a denied
    /// reader is answered in milliseconds, and the attempt is logged even when the reader goes
    /// away); a task follows it to its receipt and reports a failure. Nothing is released on
    /// a denial, so no caller needs the receipt. Attempts on the same patient that arrive
    /// while one of this account's denials is being sent go out together in the next
    /// transaction (`chain::denials`), each logged as its own event.
    ///
    /// Call it for a verified provider only (others cannot log: the contract reverts).
    ///
    /// # Errors
    /// Transport errors, and the node's refusal of the transaction.
    pub async fn log_denied_access(
        &self,
        addr: PatientAddr,
        ids: &[RecordId],
    ) -> Result<B256, ChainError> {
        if ids.is_empty() || ids.len() > crate::chain::MAX_ACCESS_BATCH {
            // The contract refuses it: no reason to hold others up with it.
            return self.send_denials(addr, ids).await;
        }
        let key = (
            self.chain_id,
            *self.contract.address(),
            self.from,
            addr.key(),
        );
        crate::chain::denials::DENIALS
            .submit(key, ids, crate::chain::MAX_ACCESS_BATCH, {
                let chain = self.clone();
                move |batch| {
                    let chain = chain.clone();
                    async move { chain.send_denials(addr, &batch).await }
                }
            })
            .await
    }

    /// One `access` transaction for denied `ids` (see [`Self::log_denied_access`]).
    async fn send_denials(&self, addr: PatientAddr, ids: &[RecordId]) -> Result<B256, ChainError> {
        // A fixed gas limit instead of an estimate (one round trip less): a denial of one record
        // costs about 36,300 gas and about 3,000 per further record (`docs/gas.md`); the limit
        // leaves three times that.
        let gas = 100_000 + 15_000 * ids.len() as u64;
        let call = self
            .contract
            .access(addr.key(), ids.iter().map(|r| r.0).collect())
            .gas(gas);
        let pending = crate::chain::send_lock::submit(self.from, || call.send())
            .await
            .map_err(ChainError::from_contract)?;
        let hash = *pending.tx_hash();
        tokio::spawn(async move {
            // Bounded: a transaction dropped from the pool must not keep a watcher forever.
            match pending
                .with_timeout(Some(std::time::Duration::from_secs(300)))
                .get_receipt()
                .await
            {
                Ok(r) if r.status() => {}
                Ok(r) => tracing::warn!(tx = %r.transaction_hash, "a denied access's log reverted"),
                Err(e) => tracing::warn!(tx = %hash, "a denied access's log was not mined: {e}"),
            }
        });
        Ok(hash)
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
    pub(super) async fn own_patient(&self) -> Result<PatientAddr, ChainError> {
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
}

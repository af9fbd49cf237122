//! Reads of the contract and of its event index: who is who, access now, `canRead`, grants
//! and pending requests folded from events, and the audit views.

use alloy::eips::BlockId;

use super::*;

impl EhrChain {
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
        self.at(BlockId::latest()).patient_account(addr).await
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
        self.at(BlockId::latest())
            .check_access(addr, provider)
            .await
    }

    /// The contract's `checkAccess` as it answers: a revoked grant reads as `NoGrant` (see
    /// [`Self::tell_revoked`]). One `eth_call`, no log query.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn check_access_raw(
        &self,
        addr: PatientAddr,
        provider: Address,
    ) -> Result<(DenyReason, bool), ChainError> {
        self.at(BlockId::latest())
            .check_access_raw(addr, provider)
            .await
    }

    /// `reason`, with `NoGrant` told apart as `Revoked` when the patient's events show a
    /// revoke of `provider` (a revoked grant is cleared on chain). The label says that the
    /// patient revoked this provider once (the contract revokes only a grant in force); it
    /// decides nothing.
    ///
    /// A revoke indexed already answers without a catch-up: a denied read asks this every
    /// time, and a catch-up (three round trips and a database write, under the index's lock,
    /// behind any other catch-up) was most of a denied read's cost, and under load its queue.
    ///
    /// # Errors
    /// Transport errors reading the events.
    pub async fn tell_revoked(
        &self,
        addr: PatientAddr,
        provider: Address,
        reason: DenyReason,
    ) -> Result<DenyReason, ChainError> {
        if reason != DenyReason::NoGrant {
            return Ok(reason);
        }
        if !self.index.revoked_already(addr, provider) {
            self.index
                .catch_up_now(&self.provider, &self.filter())
                .await?;
        }
        Ok(if self.index.revoked_already(addr, provider) {
            DenyReason::Revoked
        } else {
            reason
        })
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
        self.can_read_at(requester, proof, block, time).await
    }

    /// The contract's `canRead` for an access at `block` and `time` (0, 0: none), as
    /// [`Self::access_in`] found them: for a node that remembers them per transaction.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn can_read_at(
        &self,
        requester: Address,
        proof: &RecordProof,
        block: u64,
        time: u64,
    ) -> Result<bool, ChainError> {
        self.at(BlockId::latest())
            .can_read_at(requester, proof, block, time)
            .await
    }

    /// The block and time of transaction `tx`, when it holds this contract's `AccessAllowed`
    /// event for `requester`, record `id` and the record's own `patient`. Asked with the logs of
    /// that one block filtered by contract and all three topics (not the transaction's whole
    /// receipt), so a transaction with a huge receipt costs the asking node nothing; a
    /// reverted transaction has no logs.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn access_in(
        &self,
        tx: B256,
        requester: Address,
        id: RecordId,
        patient: PatientAddr,
    ) -> Result<Option<(u64, u64)>, ChainError> {
        Ok(self
            .access_event(tx, requester, id, patient)
            .await?
            .map(|a| (a.block, a.time)))
    }

    /// [`Self::access_in`] with the hash of the block the event is in, for a caller that
    /// remembers the event and must notice when a reorganisation drops that block.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn access_event(
        &self,
        tx: B256,
        requester: Address,
        id: RecordId,
        patient: PatientAddr,
    ) -> Result<Option<AccessEvent>, ChainError> {
        use alloy::sol_types::SolEvent;
        // A node can answer for a transaction from its pool a moment after the block with
        // it exists (anvil did for 2 of 4,410 transactions asked right after their receipt,
        // and the load bench lost 5 of 4,995 granted reads to it): a transaction without a
        // block is asked again for up to about 100 ms before it counts as not mined.
        let mut tries = 0;
        let block_hash = loop {
            let t = self.provider.get_transaction_by_hash(tx).await?;
            match t.and_then(|t| t.block_hash) {
                Some(h) => break h,
                None if tries < PENDING_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                None => return Ok(None),
            }
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
        Ok(Some(AccessEvent {
            block,
            time,
            block_hash,
        }))
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
        Ok(crate::chain::fold::grants(&events, now)
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
        Ok(crate::chain::fold::pending_requests(&events)
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect())
    }

    /// Every event about the patient, oldest first.
    pub(super) async fn patient_events(
        &self,
        addr: PatientAddr,
    ) -> Result<Vec<AuditEvent>, ChainError> {
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
        self.audit_page_where(
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
        self.audit_page_where(|e| filter.matches(&e.kind), offset, limit)
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
}

/// How many more times a transaction seen without a block is asked for (20 ms apart).
const PENDING_RETRIES: u32 = 5;

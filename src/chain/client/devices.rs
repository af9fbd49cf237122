//! Devices and ingestors: a patient's wearables as write-only delegates, and the ingestion
//! services the records office allows to seal their readings into records.

use super::*;

impl EhrChain {
    /// Patient: registers `device` (its key's address) of `kind` with a short public `label`.
    ///
    /// # Errors
    /// [`ChainError::Rejected`] for a label that does not fit; contract rejections (a taken
    /// device key, a key with a role) and transport errors.
    pub async fn add_device(
        &self,
        device: Address,
        kind: DeviceKind,
        label: &str,
    ) -> Result<TxOutcome, ChainError> {
        let me = self.own_patient().await?;
        let label = super::super::types::label_bytes(label).map_err(ChainError::Rejected)?;
        self.send(
            self.contract
                .addDevice(me.key(), device, kind.code(), label),
        )
        .await
    }

    /// Patient: revokes `device`; its readings are refused from the next request on.
    ///
    /// # Errors
    /// Contract rejections (not an active device of the caller) and transport errors.
    pub async fn revoke_device(&self, device: Address) -> Result<TxOutcome, ChainError> {
        let me = self.own_patient().await?;
        self.send(self.contract.revokeDevice(me.key(), device))
            .await
    }

    /// Records office: allows or stops the ingestion service `ingestor`.
    ///
    /// # Errors
    /// Contract rejections (not the office) and transport errors.
    pub async fn set_ingestor(
        &self,
        ingestor: Address,
        allowed: bool,
    ) -> Result<TxOutcome, ChainError> {
        self.send(self.contract.setIngestor(ingestor, allowed))
            .await
    }

    /// Whether the records office allowed `account` as an ingestion service.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn is_ingestor(&self, account: Address) -> Result<bool, ChainError> {
        self.contract
            .ingestors(account)
            .call()
            .await
            .map_err(ChainError::from_contract)
    }

    /// The device registered under `device`, if any (active or revoked).
    ///
    /// # Errors
    /// Transport errors; [`ChainError::Decode`] for a stored patient key that is no address.
    pub async fn device(&self, device: Address) -> Result<Option<DeviceInfo>, ChainError> {
        let d = self
            .contract
            .devices(device)
            .call()
            .await
            .map_err(ChainError::from_contract)?;
        if d.patient == 0 {
            return Ok(None);
        }
        let patient = PatientAddr::from_key(d.patient)
            .ok_or_else(|| ChainError::Decode(format!("device {device}: bad patient key")))?;
        let revoked_at: u64 = d.revokedAt.to();
        Ok(Some(DeviceInfo {
            device,
            patient,
            kind: DeviceKind::try_from(d.kind).ok(),
            added_at: d.addedAt.to(),
            revoked_at: (revoked_at != 0).then_some(revoked_at),
        }))
    }

    /// Whether `device` is an active device of the patient at `addr` now (one call, read at
    /// the latest block: a revoke counts from the next request on).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn is_active_device(
        &self,
        device: Address,
        addr: PatientAddr,
    ) -> Result<bool, ChainError> {
        self.contract
            .isActiveDevice(device, addr.key())
            .call()
            .await
            .map_err(ChainError::from_contract)
    }

    /// Whether `ingestor` may add records for the patient at `addr` now: an ingestion service
    /// the records office allowed, and the patient has an active device.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn may_ingest(
        &self,
        ingestor: Address,
        addr: PatientAddr,
    ) -> Result<bool, ChainError> {
        self.at(alloy::eips::BlockId::latest())
            .may_ingest(ingestor, addr)
            .await
    }

    /// The patient's devices, active and revoked, in the order they were added (from the
    /// event index, each confirmed against the contract's own map).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn devices_of(
        &self,
        addr: PatientAddr,
    ) -> Result<Vec<(DeviceInfo, String)>, ChainError> {
        let mut out = Vec::new();
        for e in self.patient_events(addr).await? {
            if let AuditKind::DeviceAdded { device, label, .. } = e.kind
                && let Some(d) = self.device(device).await?
                && d.patient == addr
            {
                out.push((d, label));
            }
        }
        Ok(out)
    }
}

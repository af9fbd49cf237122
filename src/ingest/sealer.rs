//! Seals each patient's readings into records: when the oldest reading has waited a window,
//! or enough have arrived, they are claimed under a new seal, written as one record through
//! the ingestion service's records client (anchored in the gateway's batches), and deleted.
//!
//! Crash safety: claiming, and finishing (recording the record id and deleting the readings),
//! are each one transaction. A seal that was claimed but not finished is retried from its
//! readings, which are still there. A crash after the record was stored but before the seal
//! was finished stores the window twice; readers drop the copies by (device, nonce), which the
//! device signed, so no reading is lost and none counts twice.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use alloy::sol_types::Eip712Domain;
use bytes::Bytes;
use futures::StreamExt;

use super::{IngestSettings, Refusals, aad};
use crate::chain::PatientAddr;
use crate::crypto::AeadKey;
use crate::db::{Database, SealRow};
use crate::records::RecordsClient;

/// The media type of a sealed window: the device-signed envelopes, one JSON object per line.
pub const READINGS_MEDIA_TYPE: &str = "application/vnd.ehr-share.device-readings+ndjson";

/// Windows sealed at once.
const PARALLEL: usize = 2;
/// Largest window, bytes of envelopes: a window is held in memory while it is sealed (the
/// envelopes, the payload and its ciphertext), so `PARALLEL` of these bound the sealer.
const MAX_WINDOW_BYTES: u64 = 32 * 1024 * 1024;
/// Longest wait before a failed seal is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often spent nonces are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The background task that seals windows.
pub struct Sealer {
    db: Database,
    records: RecordsClient,
    at_rest: AeadKey,
    settings: IngestSettings,
    refusals: std::sync::Arc<Refusals>,
}

use crate::clock::unix_now;

fn random_id() -> String {
    hex::encode(&crate::chain::random_b256().0[..16])
}

impl Sealer {
    /// A sealer storing records through `records` (the ingestion service's account).
    pub fn new(db: Database, records: RecordsClient, ingest: &super::Ingest) -> Self {
        Self {
            db,
            records,
            at_rest: ingest.0.at_rest.clone(),
            settings: ingest.0.settings,
            refusals: ingest.0.refusals.clone(),
        }
    }

    /// Runs until the runtime stops.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let mut retry: HashMap<String, (Instant, Duration)> = HashMap::new();
        let mut pruned = Instant::now();
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = unix_now();
            if let Err(e) = self.refusals.flush(&self.db, now / 86_400).await {
                tracing::warn!("ingest: counting refusals failed: {e}");
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = Instant::now();
                let before = now.saturating_sub(2 * self.settings.max_skew.as_secs());
                if let Err(e) = self.db.prune_nonces(before).await {
                    tracing::warn!("ingest: pruning nonces failed: {e}");
                }
            }
            let seals = match self.due(now, &retry).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("ingest: looking for windows to seal failed: {e}");
                    continue;
                }
            };
            let me = &self;
            let results: Vec<(String, bool)> = futures::stream::iter(seals)
                .map(|s| async move {
                    let id = s.id.clone();
                    match me.seal(&s).await {
                        Ok(record) => {
                            tracing::info!(
                                "ingest: sealed {} observations of patient {}-{} into record {record}",
                                s.observations,
                                s.patient_aid,
                                s.patient_pid
                            );
                            (id, true)
                        }
                        Err(e) => {
                            tracing::warn!("ingest: sealing window {id} failed (retried): {e}");
                            (id, false)
                        }
                    }
                })
                .buffer_unordered(PARALLEL)
                .collect()
                .await;
            for (id, ok) in results {
                if ok {
                    retry.remove(&id);
                } else {
                    let backoff = retry
                        .get(&id)
                        .map_or(Duration::from_secs(1), |(_, b)| (*b * 2).min(MAX_BACKOFF));
                    retry.insert(id, (Instant::now() + backoff, backoff));
                }
            }
        }
    }

    /// Seals to write now: unfinished ones whose backoff is over, then new windows.
    async fn due(
        &self,
        now: u64,
        retry: &HashMap<String, (Instant, Duration)>,
    ) -> Result<Vec<SealRow>, crate::db::DbError> {
        let mut out: Vec<SealRow> = self
            .db
            .unfinished_seals()
            .await?
            .into_iter()
            .filter(|s| retry.get(&s.id).is_none_or(|(at, _)| Instant::now() >= *at))
            .collect();
        let busy: HashSet<(u64, u64)> =
            out.iter().map(|s| (s.patient_aid, s.patient_pid)).collect();
        let window_ms = u64::try_from(self.settings.window.as_millis()).unwrap_or(u64::MAX);
        let now_ms = now.saturating_mul(1000);
        for w in self.db.waiting_readings().await? {
            let due = now_ms.saturating_sub(w.oldest_ms) >= window_ms
                || w.observations >= self.settings.max_observations;
            if !due || busy.contains(&(w.patient_aid, w.patient_pid)) {
                continue;
            }
            if let Some(s) = self
                .db
                .claim_readings(
                    &random_id(),
                    w.patient_aid,
                    w.patient_pid,
                    (self.settings.max_observations, MAX_WINDOW_BYTES),
                    now,
                )
                .await?
            {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Writes one window as a record and finishes its seal; returns the record id.
    async fn seal(&self, s: &SealRow) -> Result<String, String> {
        let patient = PatientAddr::new(s.patient_aid, s.patient_pid).map_err(|e| e.to_string())?;
        // Share nodes take this service's records only while the patient has an active
        // device (and the office allows it). Readings acknowledged before the patient revoked
        // the last device are kept, and sealed once a device is active again; nothing is
        // uploaded meanwhile.
        let chain = self.records.chain();
        if !chain
            .may_ingest(self.records.uploader(), patient)
            .await
            .map_err(|e| e.to_string())?
        {
            return Err(format!(
                "patient {patient} has no active device now (or this service is not allowed): the window waits"
            ));
        }
        let sealed = self
            .db
            .seal_envelopes(&s.id)
            .await
            .map_err(|e| e.to_string())?;
        let mut payload = Vec::new();
        for blob in sealed {
            let line = open_stored(&self.at_rest, &blob)?;
            payload.extend_from_slice(&line);
            payload.push(b'\n');
        }
        if payload.is_empty() {
            return Err(format!("window {} holds no readings", s.id));
        }
        let name = format!("readings-{}-{}.ndjson", s.observed.0, s.observed.1);
        let id = self
            .records
            .put(
                patient,
                Bytes::from(payload),
                READINGS_MEDIA_TYPE,
                Some(name),
            )
            .await
            .map_err(|e| e.to_string())?;
        let record = id.to_string();
        self.db
            .finish_seal(&s.id, &record, unix_now())
            .await
            .map_err(|e| e.to_string())?;
        Ok(record)
    }
}

/// Opens a stored envelope ([`seal_stored`]): its first 28 bytes are the (device, nonce) it
/// was sealed under, bound as associated data, so a tampered prefix fails to open.
fn open_stored(key: &AeadKey, blob: &[u8]) -> Result<Vec<u8>, String> {
    let (head, sealed) = blob
        .split_at_checked(28)
        .ok_or_else(|| "stored reading too short".to_owned())?;
    crate::crypto::open_at_rest(key, head, sealed).map_err(|e| e.to_string())
}

/// Seals an envelope for storage: `device (20) || nonce (8) || sealed`, the first 28 bytes
/// being the associated data.
pub(super) fn seal_stored(key: &AeadKey, device: Address, nonce: u64, envelope: &[u8]) -> Vec<u8> {
    let head = aad(device, nonce);
    let mut out = head.clone();
    out.extend(crate::crypto::seal_at_rest(key, &head, envelope));
    out
}

/// One reading read back from a sealed record, with its provenance.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SealedReading {
    /// The reading.
    #[serde(flatten)]
    pub reading: super::Reading,
    /// The device that signed it.
    pub device: Address,
}

/// The readings of a sealed record, each envelope's signature checked against `domain` and
/// its patient against `patient`; envelopes that fail are counted, not returned. Copies (the
/// same device and nonce, from a window stored twice) are dropped by the caller's `seen`.
pub fn read_sealed(
    data: &[u8],
    domain: &Eip712Domain,
    patient: PatientAddr,
    seen: &mut HashSet<(Address, u64)>,
    out: &mut Vec<SealedReading>,
) -> usize {
    let mut bad = 0;
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(env) = serde_json::from_slice::<super::Envelope<'_>>(line) else {
            bad += 1;
            continue;
        };
        if env.patient != patient || env.verify(domain).is_err() {
            bad += 1;
            continue;
        }
        if !seen.insert((env.device, env.nonce)) {
            continue;
        }
        match super::vitals::readings(env.resource.get().as_bytes()) {
            Ok(rs) => out.extend(rs.into_iter().map(|reading| SealedReading {
                reading,
                device: env.device,
            })),
            Err(_) => bad += 1,
        }
    }
    bad
}

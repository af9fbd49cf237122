//! Readings from patients' devices: signed, checked, stored durably before they are
//! acknowledged, then sealed per patient per window into one encrypted record.
//!
//! The path of a reading:
//! 1. A device (a key the patient registered on chain: a write-only delegate) signs an
//!    envelope around a FHIR `Observation` or `Bundle` ([`signed`]).
//! 2. [`Ingest::accept`] checks, cheapest first: the envelope parses, its signing time is
//!    within the allowed clock skew, the signature recovers to the device it names, the
//!    resource is a vital sign in the right unit ([`vitals`]), and the device is an active
//!    device of that patient right now (one `eth_call`, so a revoke counts from the next
//!    request on). Then the [`writer`] commits it, encrypted at rest, with its nonce (a reused
//!    nonce is a replay); only then is it acknowledged.
//! 3. The [`Sealer`] claims each patient's readings when the oldest has waited a window (or
//!    enough have arrived), writes them as one record (the device-signed envelopes, one per
//!    line, so a reader can check every reading's signature) through the records client of
//!    the ingestion service's account, anchored in the gateway's batches, and deletes them.
//!
//! Refusals are counted per reason for the records office's dashboard.

pub mod device;
mod refusals;
mod sealer;
pub mod signed;
pub mod simulate;
pub mod vitals;
mod writer;

pub use refusals::Refusals;
pub use sealer::{READINGS_MEDIA_TYPE, SealedReading, Sealer, read_sealed};
pub use signed::{Envelope, OwnedEnvelope, ingest_domain, sign_envelope};
pub use vitals::{Reading, Vital};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::Address;
use alloy::sol_types::Eip712Domain;

use crate::chain::{ChainError, EhrChain, PatientAddr};
use crate::crypto::AeadKey;
use crate::db::{Database, NewReading};
use crate::kind::{Classify, ErrorKind};

/// How readings are taken and sealed.
#[derive(Debug, Clone, Copy)]
pub struct IngestSettings {
    /// A patient's readings are sealed once the oldest has waited this long.
    pub window: Duration,
    /// ... or once this many observations wait, whichever comes first.
    pub max_observations: u64,
    /// Largest difference between a device's signing time and the gateway's clock.
    pub max_skew: Duration,
    /// How often the sealer looks for windows to seal.
    pub tick: Duration,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            max_observations: 2_000,
            max_skew: Duration::from_secs(300),
            tick: Duration::from_secs(1),
        }
    }
}

/// Oldest observation taken, seconds before now (a device may buffer readings while offline).
pub const MAX_READING_AGE_SECS: i64 = 30 * 86_400;

/// Largest envelope (one request, or one line of a stream).
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;

/// Why a reading was refused, or could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Not an envelope, or not FHIR (400).
    #[error("{0}")]
    Malformed(String),
    /// FHIR, but not a vital sign in a unit and range taken here (422).
    #[error("{0}")]
    Unsupported(String),
    /// No signature (401).
    #[error("unsigned: every reading must be signed by its device's key")]
    Unsigned,
    /// A signature that is malformed or recovers to another key (401).
    #[error("{0}")]
    BadSignature(#[from] signed::SignatureError),
    /// Signed too long ago, or in the future (401).
    #[error(
        "signed at {signed} but the gateway's clock says {now}: more than {max_skew} s apart (stale, or the device's clock is wrong)"
    )]
    Stale {
        /// The envelope's time.
        signed: u64,
        /// The gateway's time.
        now: u64,
        /// The bound, seconds.
        max_skew: u64,
    },
    /// The key is no registered device (403).
    #[error("device {0} is not registered: the patient adds it first")]
    UnknownDevice(Address),
    /// The device was revoked (403).
    #[error("device {0} was revoked by its patient")]
    RevokedDevice(Address),
    /// The device belongs to another patient (403).
    #[error("device {device} is not a device of patient {patient}")]
    OtherPatient {
        /// The device.
        device: Address,
        /// The patient named.
        patient: PatientAddr,
    },
    /// The device used this nonce before (409).
    #[error("device {device} used nonce {nonce} before (a replay)")]
    Replayed {
        /// The device.
        device: Address,
        /// The nonce.
        nonce: u64,
    },
    /// The chain could not be asked (503).
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// The database could not store it (503).
    #[error("store: {0}")]
    Store(String),
}

impl IngestError {
    /// The reason counted on the dashboard; `None` for failures of ours.
    pub fn reason(&self) -> Option<&'static str> {
        Some(match self {
            Self::Malformed(_) => "malformed",
            Self::Unsupported(_) => "unsupported",
            Self::Unsigned => "unsigned",
            Self::BadSignature(_) => "bad-signature",
            Self::Stale { .. } => "stale",
            Self::UnknownDevice(_) => "unknown-device",
            Self::RevokedDevice(_) => "revoked-device",
            Self::OtherPatient { .. } => "other-patient",
            Self::Replayed { .. } => "replayed",
            Self::Chain(_) | Self::Store(_) => return None,
        })
    }
}

impl Classify for IngestError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Malformed(_) => ErrorKind::BadInput,
            Self::Unsupported(_) => ErrorKind::Unprocessable,
            Self::Unsigned | Self::BadSignature(_) | Self::Stale { .. } => {
                ErrorKind::Unauthenticated
            }
            Self::UnknownDevice(_) | Self::RevokedDevice(_) | Self::OtherPatient { .. } => {
                ErrorKind::Denied
            }
            Self::Replayed { .. } => ErrorKind::Conflict,
            Self::Chain(e) => e.kind(),
            Self::Store(_) => ErrorKind::Unavailable,
        }
    }

    fn public_message(&self) -> String {
        match self {
            Self::Chain(e) => e.public_message(),
            Self::Store(_) => "the gateway cannot store readings now; try again shortly".into(),
            _ => self.to_string(),
        }
    }
}

/// A reading taken: stored, and acknowledged to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Accepted {
    /// The device.
    pub device: Address,
    /// Its nonce.
    pub nonce: u64,
    /// Observations in the envelope.
    pub observations: u32,
}

struct Inner {
    chain: EhrChain,
    domain: Eip712Domain,
    at_rest: AeadKey,
    settings: IngestSettings,
    writer: writer::Writer,
    refusals: Arc<Refusals>,
}

/// The ingestion service of a gateway (cheap to clone).
#[derive(Clone)]
pub struct Ingest(Arc<Inner>);

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("settings", &self.0.settings)
            .finish_non_exhaustive()
    }
}

use crate::clock::unix_now;

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The key readings are encrypted under at rest, from the ingestion service's key: a copy of
/// the database alone does not reveal them.
pub fn at_rest_key(ingestor_secret: &[u8]) -> AeadKey {
    crate::crypto::derive_key(ingestor_secret, "ingest-readings")
}

/// What binds a stored envelope to its row.
fn aad(device: Address, nonce: u64) -> Vec<u8> {
    let mut a = device.to_vec();
    a.extend_from_slice(&nonce.to_be_bytes());
    a
}

impl Ingest {
    /// The service over `db`, checking devices on `chain` (read-only is enough), storing
    /// envelopes under `at_rest`. Spawns the writer that groups commits.
    pub fn new(db: Database, chain: EhrChain, at_rest: AeadKey, settings: IngestSettings) -> Self {
        let domain = ingest_domain(chain.chain_id(), chain.address(), chain.deployment_id());
        Self(Arc::new(Inner {
            writer: writer::Writer::spawn(db),
            refusals: Arc::new(Refusals::default()),
            chain,
            domain,
            at_rest,
            settings,
        }))
    }

    /// The EIP-712 domain devices sign under.
    pub fn domain(&self) -> &Eip712Domain {
        &self.0.domain
    }

    /// The settings.
    pub fn settings(&self) -> IngestSettings {
        self.0.settings
    }

    /// The refusal counters (flushed to the database by the sealer).
    pub fn refusals(&self) -> &Arc<Refusals> {
        &self.0.refusals
    }

    /// Checks one envelope and stores it; counts a refusal.
    ///
    /// # Errors
    /// [`IngestError`]: a refusal (4xx) or a failure of the chain or the database (503).
    pub async fn accept(&self, envelope: &[u8]) -> Result<Accepted, IngestError> {
        let r = self.check_and_store(envelope).await;
        if let Err(e) = &r
            && let Some(reason) = e.reason()
        {
            self.0.refusals.count(reason);
        }
        r
    }

    async fn check_and_store(&self, bytes: &[u8]) -> Result<Accepted, IngestError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(IngestError::Malformed(format!(
                "envelope of {} bytes; at most {MAX_ENVELOPE_BYTES}",
                bytes.len()
            )));
        }
        let env: Envelope<'_> = serde_json::from_slice(bytes).map_err(|e| {
            IngestError::Malformed(format!(
                "not a reading envelope {{device, patient, nonce, time, signature, resource}}: {e}"
            ))
        })?;
        if env.signature.as_deref().is_none_or(str::is_empty) {
            return Err(IngestError::Unsigned);
        }
        let now = unix_now();
        let max_skew = self.0.settings.max_skew.as_secs();
        if env.time.abs_diff(now) > max_skew {
            return Err(IngestError::Stale {
                signed: env.time,
                now,
                max_skew,
            });
        }
        env.verify(&self.0.domain)?;
        let readings = vitals::readings(env.resource.get().as_bytes()).map_err(|e| match e {
            vitals::VitalsError::Malformed(m) => IngestError::Malformed(m),
            vitals::VitalsError::Unsupported(m) => IngestError::Unsupported(m),
        })?;
        // Observation times within what a device may have buffered, and not ahead of the
        // clock: a reading dated far away would claim a chart's window it does not belong to.
        let (t, skew) = (
            i64::try_from(now).unwrap_or(i64::MAX),
            i64::try_from(max_skew).unwrap_or(0),
        );
        if let Some(r) = readings
            .iter()
            .find(|r| r.at > t + skew || r.at < t - MAX_READING_AGE_SECS)
        {
            return Err(IngestError::Unsupported(format!(
                "an observation is dated {} (unix seconds) and the gateway's clock says {t}: readings are taken from up to {} days back, and not from the future",
                r.at,
                MAX_READING_AGE_SECS / 86_400
            )));
        }
        match self.0.chain.device(env.device).await? {
            None => return Err(IngestError::UnknownDevice(env.device)),
            Some(d) if d.patient != env.patient => {
                return Err(IngestError::OtherPatient {
                    device: env.device,
                    patient: env.patient,
                });
            }
            Some(d) if d.revoked_at.is_some() => {
                return Err(IngestError::RevokedDevice(env.device));
            }
            Some(_) => {}
        }
        let observations = u32::try_from(readings.len()).unwrap_or(u32::MAX);
        let from = readings.iter().map(|r| r.at).min().unwrap_or_default();
        let to = readings.iter().map(|r| r.at).max().unwrap_or_default();
        let row = NewReading {
            device: format!("{:#x}", env.device),
            nonce: env.nonce,
            signed_at: env.time,
            patient_aid: env.patient.aid(),
            patient_pid: env.patient.pid(),
            received_at: unix_millis(),
            observations,
            observed: (from, to),
            envelope: sealer::seal_stored(&self.0.at_rest, env.device, env.nonce, bytes),
        };
        match self.0.writer.store(row).await {
            Ok(()) => Ok(Accepted {
                device: env.device,
                nonce: env.nonce,
                observations,
            }),
            Err(writer::NotStored::Replayed) => Err(IngestError::Replayed {
                device: env.device,
                nonce: env.nonce,
            }),
            Err(writer::NotStored::Failed(e)) => Err(IngestError::Store(e)),
        }
    }
}

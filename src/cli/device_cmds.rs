//! `ehr device`: a patient's devices (add, revoke, list) and the device simulator.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use anyhow::Context;
use clap::{Args, Subcommand};
use futures::StreamExt;

use super::ChainArgs;
use super::chain_cmds::deployment;
use super::keys::KeyArgs;
use crate::chain::{DeviceKind, EhrChain, PatientAddr};
use crate::ingest::device::Device;
use crate::ingest::simulate::Sensor;
use crate::ingest::{Vital, ingest_domain};

/// Chain and the patient's key.
#[derive(Debug, Args)]
pub struct PatientKey {
    /// ChainArgs flags.
    #[command(flatten)]
    chain: ChainArgs,
    /// The patient's key (KeyArgs flags).
    #[command(flatten)]
    key: KeyArgs,
}

/// `ehr device ...`.
#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Register a device for the signing patient. Without --device, a new device key is made
    /// and written to --key-out (mode 0600) for the device to use.
    Add {
        /// Kind: watch, ring, chest-strap, pulse-oximeter, bp-cuff, glucose-meter,
        /// thermometer, phone.
        #[arg(long)]
        kind: DeviceKind,
        /// A short public label (no PHI), at most 32 bytes.
        #[arg(long, default_value = "")]
        label: String,
        /// The device key's address, when the device made its own key.
        #[arg(long, conflicts_with = "key_out")]
        device: Option<Address>,
        /// Where to write a new device key (hex).
        #[arg(long, required_unless_present = "device")]
        key_out: Option<PathBuf>,
        /// Chain and patient key.
        #[command(flatten)]
        p: PatientKey,
    },
    /// Revoke a device of the signing patient: its readings are refused from the next request.
    Revoke {
        /// The device key's address.
        device: Address,
        /// Chain and patient key.
        #[command(flatten)]
        p: PatientKey,
    },
    /// List a patient's devices (active and revoked), as JSON.
    List {
        /// The patient (AID-PID).
        patient: PatientAddr,
        /// Chain flags.
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Register simulated devices for the signing patient and stream synthetic readings to a
    /// gateway (daily rhythms, noise, occasional out-of-range episodes; no real data).
    Simulate(SimulateArgs),
}

/// `ehr device simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The patient (AID-PID); must be the signing key's patient address.
    #[arg(long)]
    patient: PatientAddr,
    /// Devices to register and run.
    #[arg(long, default_value_t = 4)]
    devices: u32,
    /// Readings per second per device, e.g. `10/s` (or `0.2/s`: one every five seconds).
    #[arg(long, default_value = "1/s", value_parser = parse_rate)]
    rate: f64,
    /// Vitals, spread over the devices in turn: hr, spo2, bp, glucose, temp, steps.
    #[arg(long, default_value = "hr,spo2,bp", value_delimiter = ',')]
    kinds: Vec<String>,
    /// The gateway's URL.
    #[arg(long, env = "EHR_GATEWAY_URL", default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Seed of the synthetic readings (the same seed, the same values).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Chance per reading that an out-of-range episode of a few minutes starts.
    #[arg(long, default_value_t = 0.002)]
    episode_chance: f64,
    /// Chain and patient key.
    #[command(flatten)]
    p: PatientKey,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    let r: f64 = n
        .parse()
        .map_err(|_| format!("rate {s:?}: a number of readings per second, e.g. 10/s"))?;
    if !(0.001..=1_000.0).contains(&r) {
        return Err(format!("rate {s:?}: between 0.001/s and 1000/s"));
    }
    Ok(r)
}

/// The device kind that measures a vital.
fn kind_of(v: Vital) -> DeviceKind {
    match v {
        Vital::HeartRate => DeviceKind::Watch,
        Vital::Spo2 => DeviceKind::PulseOximeter,
        Vital::BloodPressure => DeviceKind::BpCuff,
        Vital::Glucose => DeviceKind::GlucoseMeter,
        Vital::BodyTemperature => DeviceKind::Thermometer,
        Vital::Steps => DeviceKind::Phone,
    }
}

async fn signing(p: &PatientKey) -> anyhow::Result<EhrChain> {
    let signer = p.key.signer()?;
    Ok(EhrChain::connect(&p.chain.rpc_url, Some(signer), &deployment(&p.chain)?).await?)
}

/// Runs `ehr device ...`.
///
/// # Errors
/// Chain, key and gateway failures, naming the flag to fix.
pub async fn device(cmd: DeviceCmd) -> anyhow::Result<()> {
    match cmd {
        DeviceCmd::Add {
            kind,
            label,
            device,
            key_out,
            p,
        } => {
            let chain = signing(&p).await?;
            let address = match (device, key_out) {
                (Some(a), _) => a,
                (None, Some(path)) => {
                    let key = PrivateKeySigner::random();
                    crate::fsutil::write_private(&path, hex::encode(key.to_bytes()).as_bytes())
                        .with_context(|| format!("--key-out {}", path.display()))?;
                    println!("device key written to {}", path.display());
                    key.address()
                }
                (None, None) => anyhow::bail!("give --device ADDRESS or --key-out FILE"),
            };
            let o = chain.add_device(address, kind, &label).await?;
            println!(
                "added {kind} device {address}: tx {} (block {}, gas {})",
                o.tx_hash, o.block, o.gas_used
            );
        }
        DeviceCmd::Revoke { device, p } => {
            let o = signing(&p).await?.revoke_device(device).await?;
            println!(
                "revoked device {device}: tx {} (block {}, gas {})",
                o.tx_hash, o.block, o.gas_used
            );
        }
        DeviceCmd::List { patient, chain } => {
            let c = EhrChain::connect(&chain.rpc_url, None, &deployment(&chain)?).await?;
            let list: Vec<_> = c
                .devices_of(patient)
                .await?
                .into_iter()
                .map(|(d, label)| serde_json::json!({ "device": d, "label": label }))
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        DeviceCmd::Simulate(a) => simulate(a).await?,
    }
    Ok(())
}

/// Counts of a simulation run.
#[derive(Debug, Default)]
struct Counts {
    sent: AtomicU64,
    accepted: AtomicU64,
    observations: AtomicU64,
    refused: std::sync::Mutex<BTreeMap<u16, u64>>,
}

async fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    let vitals = a
        .kinds
        .iter()
        .map(|k| Vital::parse(k.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--kinds: {e}"))?;
    anyhow::ensure!(!vitals.is_empty(), "--kinds: name at least one vital");
    anyhow::ensure!(a.devices > 0, "--devices: at least 1");
    let chain = signing(&a.p).await?;
    let me = chain.from();
    anyhow::ensure!(
        chain.patient_account(a.patient).await? == Some(me),
        "--patient {}: the signing key {me} is not that patient's account (pass the patient's key)",
        a.patient
    );
    let domain = ingest_domain(chain.chain_id(), chain.address(), chain.deployment_id());
    eprintln!(
        "[simulate] registering {} devices for patient {}",
        a.devices, a.patient
    );
    let mut devices = Vec::new();
    for i in 0..a.devices {
        let vital = vitals[usize::try_from(i).unwrap_or(0) % vitals.len()];
        let key = PrivateKeySigner::random();
        chain
            .add_device(
                key.address(),
                kind_of(vital),
                &format!("simulated {}", vital.short()),
            )
            .await
            .with_context(|| format!("registering simulated device {i}"))?;
        devices.push((
            Device::new(key, a.patient, domain.clone()),
            Sensor::new(
                vital,
                a.seed.wrapping_mul(1_000_003).wrapping_add(u64::from(i)),
                a.episode_chance,
            ),
        ));
    }
    // Readings come in envelopes of one second's worth (or one reading when slower).
    let period = Duration::from_secs_f64((1.0 / a.rate).max(1.0));
    let per_envelope = (a.rate * period.as_secs_f64()).round().max(1.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let per_envelope = per_envelope as usize;
    eprintln!(
        "[simulate] streaming {}/s per device ({} readings every {:.1} s) to {}",
        a.rate,
        per_envelope,
        period.as_secs_f64(),
        a.gateway
    );
    let counts = Arc::new(Counts::default());
    let http = crate::tls::client();
    let stop_at = a
        .duration_secs
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut tasks = tokio::task::JoinSet::new();
    for (device, sensor) in devices {
        let counts = counts.clone();
        let http = http.clone();
        let gateway = a.gateway.clone();
        tasks.spawn(async move {
            let device = Arc::new(device);
            let d2 = device.clone();
            let c2 = counts.clone();
            let step = (period.as_secs_f64() / per_envelope as f64).max(0.001);
            let envelopes = futures::stream::unfold(
                (tokio::time::interval(period), sensor),
                move |(mut tick, mut s)| {
                    let d = d2.clone();
                    let c = c2.clone();
                    let n = per_envelope;
                    async move {
                        tick.tick().await;
                        if stop_at.is_some_and(|t| Instant::now() >= t) {
                            return None;
                        }
                        let now = crate::ingest::simulate::now_secs_f64();
                        let obs: Vec<_> = (0..n)
                            .map(|k| {
                                #[allow(clippy::cast_possible_truncation)]
                                let at = (now - step * (n - 1 - k) as f64) as i64;
                                #[allow(clippy::cast_possible_truncation)]
                                s.observation(at, step.ceil() as i64)
                            })
                            .collect();
                        let resource = if n == 1 {
                            obs[0].to_string()
                        } else {
                            serde_json::json!({
                                "resourceType": "Bundle", "type": "collection",
                                "entry": obs.into_iter().map(|o| serde_json::json!({ "resource": o })).collect::<Vec<_>>(),
                            })
                            .to_string()
                        };
                        let env = d.sign(resource).ok()?;
                        c.sent.fetch_add(1, Ordering::Relaxed);
                        Some((env, (tick, s)))
                    }
                },
            );
            match Device::stream(&http, &gateway, envelopes).await {
                Ok(answers) => {
                    futures::pin_mut!(answers);
                    while let Some(v) = answers.next().await {
                        if v["ok"] == true {
                            counts.accepted.fetch_add(1, Ordering::Relaxed);
                            counts.observations.fetch_add(
                                v["accepted"]["observations"].as_u64().unwrap_or(0),
                                Ordering::Relaxed,
                            );
                        } else {
                            let status = u16::try_from(v["status"].as_u64().unwrap_or(0)).unwrap_or(0);
                            if let Ok(mut m) = counts.refused.lock() {
                                *m.entry(status).or_default() += 1;
                            }
                            tracing::warn!("device {}: {}", device.address(), v["error"]);
                        }
                    }
                }
                Err(e) => eprintln!("[simulate] device {}: {e}", device.address()),
            }
        });
    }
    let started = Instant::now();
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = progress.tick() => {
                let secs = started.elapsed().as_secs_f64().max(0.001);
                let obs = counts.observations.load(Ordering::Relaxed);
                let refused: u64 = counts.refused.lock().map(|m| m.values().sum()).unwrap_or(0);
                #[allow(clippy::cast_precision_loss)]
                let rate = obs as f64 / secs;
                eprint!("\r[simulate] {secs:6.1} s: {obs} readings stored ({rate:.0}/s), {refused} envelopes refused   ");
            }
            done = tasks.join_next() => {
                if done.is_none() { break; }
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\n[simulate] stopping");
                tasks.abort_all();
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let refused = counts.refused.lock().map(|m| m.clone()).unwrap_or_default();
    eprintln!();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "patient": a.patient,
            "devices": a.devices,
            "seconds": (secs * 10.0).round() / 10.0,
            "envelopes_sent": counts.sent.load(Ordering::Relaxed),
            "envelopes_stored": counts.accepted.load(Ordering::Relaxed),
            "readings_stored": counts.observations.load(Ordering::Relaxed),
            "refused_by_status": refused,
        }))?
    );
    Ok(())
}

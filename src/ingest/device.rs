//! The device side: signs readings and sends them to a gateway, one request each or down one
//! long-lived stream. Used by `ehr device simulate`, the ingestion bench and the tests; a
//! phone app does the same in its own language.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use futures::{Stream, StreamExt};
use serde_json::Value;

use super::signed::{OwnedEnvelope, sign_envelope};
use crate::chain::PatientAddr;

/// A device: its key, its patient, the deployment's ingestion domain and a nonce counter.
#[derive(Debug)]
pub struct Device {
    key: PrivateKeySigner,
    patient: PatientAddr,
    domain: Eip712Domain,
    next_nonce: AtomicU64,
}

use crate::clock::unix_now;

impl Device {
    /// A device signing with `key` for `patient` under `domain` (see
    /// [`super::ingest_domain`]). Nonces start at the current time in microseconds, so a
    /// restarted device does not reuse the nonces of its last run.
    pub fn new(key: PrivateKeySigner, patient: PatientAddr, domain: Eip712Domain) -> Self {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(1));
        Self {
            key,
            patient,
            domain,
            next_nonce: AtomicU64::new(start),
        }
    }

    /// The device key's address.
    pub fn address(&self) -> alloy::primitives::Address {
        self.key.address()
    }

    /// Signs `resource` (FHIR JSON text) with a fresh nonce and the current time.
    ///
    /// # Errors
    /// When `resource` is not JSON.
    pub fn sign(&self, resource: String) -> Result<OwnedEnvelope, String> {
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        sign_envelope(
            &self.key,
            &self.domain,
            self.patient,
            resource,
            nonce,
            unix_now(),
        )
    }

    /// Sends one envelope to `POST {gateway}/ingest`: `Ok` with the answer, or the status and
    /// the error message.
    ///
    /// # Errors
    /// The gateway's refusal, or a transport error (status 0).
    pub async fn send(
        http: &reqwest::Client,
        gateway: &str,
        env: &OwnedEnvelope,
    ) -> Result<Value, (u16, String)> {
        let r = http
            .post(format!("{gateway}/ingest"))
            .json(env)
            .send()
            .await
            .map_err(|e| (0, e.to_string()))?;
        let status = r.status().as_u16();
        let v: Value = r.json().await.map_err(|e| (status, e.to_string()))?;
        if status == 200 {
            Ok(v)
        } else {
            Err((status, v["error"].as_str().unwrap_or_default().to_owned()))
        }
    }

    /// Streams `envelopes` to `POST {gateway}/ingest/stream` and returns the answers, one JSON
    /// value per envelope, as the gateway stores them. The request stays open until
    /// `envelopes` ends.
    ///
    /// # Errors
    /// A transport error or a refusal of the whole stream.
    pub async fn stream(
        http: &reqwest::Client,
        gateway: &str,
        envelopes: impl Stream<Item = OwnedEnvelope> + Send + 'static,
    ) -> Result<impl Stream<Item = Value>, String> {
        let body = envelopes.map(|e| {
            let mut line = serde_json::to_vec(&e).map_err(std::io::Error::other)?;
            line.push(b'\n');
            Ok::<_, std::io::Error>(line)
        });
        let r = http
            .post(format!("{gateway}/ingest/stream"))
            .header("content-type", "application/x-ndjson")
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            let status = r.status();
            return Err(format!("{status}: {}", r.text().await.unwrap_or_default()));
        }
        let mut buf = Vec::new();
        Ok(r.bytes_stream()
            .map(move |chunk| {
                let mut out = Vec::new();
                match chunk {
                    Ok(c) => {
                        buf.extend_from_slice(&c);
                        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = buf.drain(..=i).collect();
                            out.push(serde_json::from_slice(&line).unwrap_or_else(
                                |e| serde_json::json!({ "ok": false, "status": 0, "error": e.to_string() }),
                            ));
                        }
                    }
                    Err(e) => out.push(
                        serde_json::json!({ "ok": false, "status": 0, "error": e.to_string() }),
                    ),
                }
                futures::stream::iter(out)
            })
            .flatten())
    }
}

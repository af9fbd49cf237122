//! The share-node protocol from the caller's side, in one place: each call's method, path and
//! answer type. The records client and the directory talk to nodes only through
//! [`NodeClient`], the server in `server.rs` answers the same types.

use std::time::Duration;

use alloy::primitives::Address;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{
    AnchorBatch, AnchorBody, AnchoredRecord, BatchAnswer, DepositBatch, DepositBody, NewestRecords,
    ReleaseBody, ReleasedShare,
};
use crate::chain::{PatientAddr, RecordId};

/// Most records a node answers per page of a patient's listing.
pub const PAGE: usize = 500;

/// A share node: where it listens and who it is.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ShareNodeRef {
    /// Base URL.
    pub url: String,
    /// Its identity address (requests are addressed to it).
    pub address: Address,
}

impl ShareNodeRef {
    /// Asks the node at `url` for its identity (`GET /health`).
    ///
    /// # Errors
    /// When it does not answer, or names no node address.
    pub async fn discover(url: &str) -> Result<Self, NodeError> {
        let url = url.trim_end_matches('/').to_owned();
        let health = NodeClient::new(
            super::tls::http(),
            Self {
                url: url.clone(),
                address: Address::ZERO,
            },
        )
        .health()
        .await?;
        let address = health["node"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| NodeError::BadAnswer("no node address in /health".into()))?;
        Ok(Self { url, address })
    }
}

/// The TLS error under `e`, when a handshake failed. rustls's error sits inside I/O errors
/// (two, nested), whose `source` skips the error they wrap: they are opened with `get_ref`.
fn tls_failure(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => err.source(),
        };
    }
    None
}

/// Why a node did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// Nothing listens there.
    #[error("unreachable (connection refused)")]
    Unreachable,
    /// No answer within the deadline.
    #[error("timed out")]
    TimedOut,
    /// Another transport failure.
    #[error("{0}")]
    Transport(String),
    /// The node refused, with its status and message.
    #[error("HTTP {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The node's `error` message.
        message: String,
    },
    /// The answer did not parse.
    #[error("bad answer: {0}")]
    BadAnswer(String),
}

impl NodeError {
    /// The node's status, when it refused.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One share node, asked through a shared HTTP client.
#[derive(Debug, Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    node: ShareNodeRef,
    deadline: Option<Duration>,
}

impl NodeClient {
    /// Asks `node` through `http` (reused, never built per call).
    pub fn new(http: reqwest::Client, node: ShareNodeRef) -> Self {
        Self {
            http,
            node,
            deadline: None,
        }
    }

    /// The same client, giving each call at most `deadline` (a hung node then delays nothing
    /// beyond it).
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The node asked.
    pub fn node(&self) -> &ShareNodeRef {
        &self.node
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.node.url)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, NodeError> {
        let req = match self.deadline {
            Some(d) => req.timeout(d),
            None => req,
        };
        let r = req.send().await.map_err(|e| {
            if let Some(tls) = tls_failure(&e) {
                // reqwest counts a refused certificate as a failed connection; it is not
                // "connection refused", and the cause is what the operator needs.
                NodeError::Transport(format!("TLS: {tls}"))
            } else if e.is_connect() {
                NodeError::Unreachable
            } else if e.is_timeout() {
                NodeError::TimedOut
            } else {
                NodeError::Transport(e.to_string())
            }
        })?;
        let status = r.status();
        if !status.is_success() {
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            return Err(NodeError::Refused {
                status: status.as_u16(),
                message: body["error"].as_str().unwrap_or("no message").to_owned(),
            });
        }
        r.json()
            .await
            .map_err(|e| NodeError::BadAnswer(e.to_string()))
    }

    /// `GET /health`: identity, deployment, counts.
    ///
    /// # Errors
    /// See [`NodeError`].
    pub async fn health(&self) -> Result<serde_json::Value, NodeError> {
        self.call(self.http.get(self.url("/health"))).await
    }

    /// `PUT /shares/{id}`: deposits a share of a new record.
    ///
    /// # Errors
    /// See [`NodeError`].
    pub async fn deposit(&self, id: RecordId, body: &DepositBody) -> Result<(), NodeError> {
        self.call::<serde_json::Value>(self.http.put(self.url(&format!("/shares/{id}"))).json(body))
            .await
            .map(drop)
    }

    /// `POST /shares/{id}/anchor`: gives the node the record's proof to an anchored root.
    ///
    /// # Errors
    /// See [`NodeError`]; 409 while the node's chain view has not seen the root yet.
    pub async fn present(&self, id: RecordId, body: &AnchorBody) -> Result<(), NodeError> {
        self.call::<serde_json::Value>(
            self.http
                .post(self.url(&format!("/shares/{id}/anchor")))
                .json(body),
        )
        .await
        .map(drop)
    }

    /// `POST /deposits`: several deposits at once; each one's outcome, in order, as its own
    /// [`Self::deposit`] would have had it.
    ///
    /// # Errors
    /// See [`NodeError`], for the request as a whole (404, 405 or 413: a node without batches).
    pub async fn deposit_many(
        &self,
        batch: &DepositBatch,
    ) -> Result<Vec<Result<(), NodeError>>, NodeError> {
        let a = self
            .call(self.http.post(self.url("/deposits")).json(batch))
            .await?;
        outcomes(a, batch.deposits.len())
    }

    /// `POST /anchors`: several records' proofs at once; each one's outcome, in order, as its
    /// own [`Self::present`] would have had it.
    ///
    /// # Errors
    /// See [`NodeError`], for the request as a whole (404, 405 or 413: a node without batches).
    pub async fn present_many(
        &self,
        batch: &AnchorBatch,
    ) -> Result<Vec<Result<(), NodeError>>, NodeError> {
        let a = self
            .call(self.http.post(self.url("/anchors")).json(batch))
            .await?;
        outcomes(a, batch.anchors.len())
    }

    /// `POST /shares/{id}/release`: asks for the share under a signed request.
    ///
    /// # Errors
    /// See [`NodeError`].
    pub async fn release(
        &self,
        id: RecordId,
        body: &ReleaseBody,
    ) -> Result<ReleasedShare, NodeError> {
        self.call(
            self.http
                .post(self.url(&format!("/shares/{id}/release")))
                .json(body),
        )
        .await
    }

    /// `GET /records/{id}`: where the node says the record sits (its proof).
    ///
    /// # Errors
    /// See [`NodeError`]; 404 when the node holds no such anchored record.
    pub async fn locate(&self, id: RecordId) -> Result<AnchoredRecord, NodeError> {
        self.call(self.http.get(self.url(&format!("/records/{id}"))))
            .await
    }

    /// `GET /patients/{patient}/records?after=`: one page (at most [`PAGE`]) of the patient's
    /// anchored records on this node, after `after`.
    ///
    /// # Errors
    /// See [`NodeError`].
    pub async fn records_page(
        &self,
        patient: PatientAddr,
        after: Option<RecordId>,
    ) -> Result<Vec<AnchoredRecord>, NodeError> {
        let mut url = self.url(&format!("/patients/{patient}/records"));
        if let Some(a) = after {
            url.push_str(&format!("?after={a}"));
        }
        self.call(self.http.get(url)).await
    }

    /// `GET /patients/{patient}/records/newest?limit=`: the patient's newest anchored records
    /// on this node (at most `limit`, up to 500) and how many it holds.
    ///
    /// # Errors
    /// See [`NodeError`].
    pub async fn newest(
        &self,
        patient: PatientAddr,
        limit: usize,
    ) -> Result<NewestRecords, NodeError> {
        self.newest_until(patient, limit, None).await
    }

    /// [`Self::newest`] among the records stored on the node at or before `until` (unix
    /// seconds and, with a record, below that record at that second; `None`: all).
    ///
    /// # Errors
    /// See [`NodeError`].
    pub async fn newest_until(
        &self,
        patient: PatientAddr,
        limit: usize,
        until: Option<(u64, Option<RecordId>)>,
    ) -> Result<NewestRecords, NodeError> {
        let mut url = self.url(&format!("/patients/{patient}/records/newest?limit={limit}"));
        if let Some((u, before)) = until {
            url.push_str(&format!("&until={u}"));
            if let Some(b) = before {
                url.push_str(&format!("&before={b}"));
            }
        }
        self.call(self.http.get(url)).await
    }
}

/// A batch's answer as one outcome per item, refused items with their own status.
fn outcomes(a: BatchAnswer, items: usize) -> Result<Vec<Result<(), NodeError>>, NodeError> {
    if a.results.len() != items {
        return Err(NodeError::BadAnswer(format!(
            "{} outcomes for {items} items",
            a.results.len()
        )));
    }
    Ok(a.results
        .into_iter()
        .map(|r| {
            if (200..300).contains(&r.status) {
                Ok(())
            } else {
                Err(NodeError::Refused {
                    status: r.status,
                    message: r.error.unwrap_or_else(|| "no message".into()),
                })
            }
        })
        .collect())
}

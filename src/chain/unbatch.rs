//! JSON-RPC batch requests, and what to do when an endpoint refuses them.
//!
//! Share nodes ask their endpoint for a judgement's calls in one batch request (the head and
//! the finalized block, `canRead` with the access block's hash, a deposit's writers): one
//! replica answers them all, and the endpoint does one request's work instead of several. Not
//! every endpoint takes batches: some hosted ones and proxies refuse them (with an HTTP 4xx,
//! or one error object where an array was asked for), others cap their size and refuse a
//! larger one whole. A node on such an endpoint refused every write and most releases with
//! 503. Now a refused batch is sent again as single requests side by side, and the endpoint
//! is remembered (per process, by URL, for [`FORGET_AFTER`]) as one that takes none, so later
//! batches go singly at once. The answer is the batch's, assembled.
//!
//! What callers lose: the calls may now reach different replicas behind a load balancer, as
//! any two requests may. `Pinned` names blocks by number, so a lagging replica still fails its
//! call instead of answering on old state; but "the hash and the finalized block came in one
//! answer" no longer holds, so a share node asks [`split`] and trusts no access event as final
//! on such an endpoint (it checks the event's block on every release).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use alloy::rpc::json_rpc::{RequestPacket, Response, ResponsePacket};
use alloy::transports::{TransportError, TransportFut};

/// How long an endpoint that refused a batch is sent none: then one is tried again (an
/// endpoint that began to take them, or a refusal that was not one).
pub(crate) const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// When an endpoint last refused a batch (milliseconds since [`EPOCH`]; 0: never).
pub(crate) type Refused = Arc<AtomicU64>;

/// The instant refusal times count from.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The endpoints (by URL) that refused a batch in this process.
static REFUSING: LazyLock<Mutex<HashMap<String, Refused>>> = LazyLock::new(Mutex::default);

fn now_ms() -> u64 {
    // Never 0, which means "never refused".
    u64::try_from(EPOCH.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// When the endpoint at `url` refused a batch: shared by every client of the URL.
pub(crate) fn refusals(url: &str) -> Refused {
    let mut map = REFUSING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(map.entry(url.to_owned()).or_default())
}

/// Whether batches to an endpoint are sent as single requests now (it refused one less than
/// [`FORGET_AFTER`] ago): answers of one batch may come from several replicas.
pub(crate) fn split(refused: &Refused) -> bool {
    let at = refused.load(Ordering::Relaxed);
    at != 0 && now_ms().saturating_sub(at) < FORGET_AFTER.as_millis() as u64
}

/// A transport that sends a batch its endpoint refuses as single requests.
#[derive(Debug, Clone)]
pub(crate) struct Unbatch<S> {
    inner: S,
    refused: Refused,
}

impl<S> Unbatch<S> {
    /// `inner`, talking to the endpoint at `url`.
    pub(crate) fn new(inner: S, url: &str) -> Self {
        Self {
            inner,
            refused: refusals(url),
        }
    }
}

/// Whether `answer` to a batch of `asked` requests is the endpoint's refusal of batches
/// (rather than answers, or a failure that single requests would meet too: a rate limit, an
/// overloaded or unreachable node).
fn refused(asked: usize, answer: &Result<ResponsePacket, TransportError>) -> bool {
    let about_batches =
        |e: &alloy::rpc::json_rpc::ErrorPayload| e.message.to_ascii_lowercase().contains("batch");
    match answer {
        // One error object where an array was asked for (alloy hands the JSON-RPC error body
        // of an HTTP error status over as such an answer too, a 429's among them): "invalid
        // request" (a server that takes no arrays) or words about batches.
        Ok(ResponsePacket::Single(r)) => r
            .payload()
            .as_error()
            .is_some_and(|e| e.code == -32600 || about_batches(e)),
        // A cap: errors only, each saying so. (A node answers an array of errors for calls
        // that each fail; those are answers.)
        Ok(ResponsePacket::Batch(rs)) => {
            rs.len() != asked
                || rs
                    .iter()
                    .all(|r| r.payload().as_error().is_some_and(about_batches))
        }
        // An HTTP status that refuses the request itself, without a JSON-RPC body (not "too
        // many requests" or "timed out", which single requests would meet too).
        Err(e) => e
            .as_transport_err()
            .and_then(|k| k.as_http_error())
            .is_some_and(|h| (400..500).contains(&h.status) && !matches!(h.status, 408 | 429)),
    }
}

impl<S> tower::Service<RequestPacket> for Unbatch<S>
where
    S: tower::Service<
            RequestPacket,
            Response = ResponsePacket,
            Error = TransportError,
            Future = TransportFut<'static>,
        > + Clone
        + Send
        + 'static,
{
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        let RequestPacket::Batch(calls) = req else {
            return self.inner.call(req);
        };
        let mut inner = self.inner.clone();
        let refused_at = Arc::clone(&self.refused);
        Box::pin(async move {
            if !split(&refused_at) {
                let answer = inner.call(RequestPacket::Batch(calls.clone())).await;
                if !refused(calls.len(), &answer) {
                    return answer;
                }
                tracing::warn!(
                    "the chain endpoint refused a batch of {} requests; sending single requests \
                     to it for the next {} s",
                    calls.len(),
                    FORGET_AFTER.as_secs()
                );
                refused_at.store(now_ms(), Ordering::Relaxed);
            }
            singly(inner, calls).await
        })
    }
}

/// The calls of a batch as single requests at once; their answers as the batch's.
async fn singly<S>(
    inner: S,
    calls: Vec<alloy::rpc::json_rpc::SerializedRequest>,
) -> Result<ResponsePacket, TransportError>
where
    S: tower::Service<
            RequestPacket,
            Response = ResponsePacket,
            Error = TransportError,
            Future = TransportFut<'static>,
        > + Clone,
{
    let answers = futures::future::try_join_all(calls.into_iter().map(|c| {
        let mut inner = inner.clone();
        inner.call(RequestPacket::Single(c))
    }))
    .await?;
    let mut out: Vec<Response> = Vec::with_capacity(answers.len());
    for a in answers {
        match a {
            ResponsePacket::Single(r) => out.push(r),
            ResponsePacket::Batch(rs) => out.extend(rs),
        }
    }
    Ok(ResponsePacket::Batch(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::providers::Provider;
    use serde_json::{Value, json};

    /// How an endpoint turns batches away.
    #[derive(Clone, Copy)]
    enum Refusal {
        /// HTTP 200 and one error object (some proxies).
        OneError,
        /// HTTP 400 with a text body.
        Status,
        /// An array of "batch too large" errors above two calls.
        Cap,
        /// HTTP 429 with a JSON-RPC error body: a rate limit, no refusal of batches.
        RateLimit,
        /// Takes batches.
        None,
    }

    /// A JSON-RPC endpoint that answers every call with 7 and treats batches as `how` says;
    /// its URL and the count of batches it was sent.
    async fn endpoint(how: Refusal) -> (reqwest::Url, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        let batches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&batches);
        let answer = |r: &Value| json!({"jsonrpc": "2.0", "id": r["id"], "result": "0x7"});
        // Any path: each endpoint gets a URL of its own (refusals are remembered by URL, and a
        // port may be used again by a later test).
        let app = axum::Router::new().fallback(
            axum::routing::post(move |axum::Json(req): axum::Json<Value>| {
                let seen = Arc::clone(&seen);
                async move {
                    let Value::Array(items) = req else {
                        return axum::Json(answer(&req)).into_response();
                    };
                    seen.fetch_add(1, Ordering::SeqCst);
                    match how {
                        Refusal::OneError => axum::Json(json!({"jsonrpc": "2.0", "id": null,
                            "error": {"code": -32600, "message": "batch requests are not supported"}}))
                        .into_response(),
                        Refusal::Status => {
                            (StatusCode::BAD_REQUEST, "batches not allowed").into_response()
                        }
                        Refusal::RateLimit => (
                            StatusCode::TOO_MANY_REQUESTS,
                            axum::Json(json!({"jsonrpc": "2.0", "id": null,
                                "error": {"code": -32005, "message": "rate limit exceeded"}})),
                        )
                            .into_response(),
                        Refusal::Cap if items.len() > 2 => axum::Json(Value::Array(
                            items
                                .iter()
                                .map(|r| json!({"jsonrpc": "2.0", "id": r["id"],
                                    "error": {"code": -32005, "message": "batch size too large"}}))
                                .collect(),
                        ))
                        .into_response(),
                        _ => axum::Json(Value::Array(items.iter().map(answer).collect()))
                            .into_response(),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/{}",
            listener.local_addr().unwrap(),
            crate::chain::random_b256()
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url.parse().unwrap(), batches)
    }

    /// Three `eth_blockNumber` calls in one batch through a client of `url`.
    async fn three(url: &reqwest::Url) -> Result<Vec<u64>, TransportError> {
        let client =
            super::super::client::rpc_client_with(url.clone(), std::time::Duration::from_secs(5));
        let provider = alloy::providers::ProviderBuilder::new().connect_client(client);
        let mut batch = alloy::rpc::client::BatchRequest::new(provider.client());
        let calls = (0..3)
            .map(|_| batch.add_call::<_, alloy::primitives::U64>("eth_blockNumber", &()))
            .collect::<Result<Vec<_>, _>>()?;
        batch.send().await?;
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await?.to::<u64>());
        }
        let _ = provider.get_block_number().await?;
        Ok(out)
    }

    #[tokio::test]
    async fn a_refused_batch_is_answered_by_single_requests_and_remembered() {
        for how in [Refusal::OneError, Refusal::Status, Refusal::Cap] {
            let (url, batches) = endpoint(how).await;
            assert_eq!(three(&url).await.unwrap(), [7, 7, 7]);
            assert_eq!(three(&url).await.unwrap(), [7, 7, 7]);
            assert_eq!(
                batches.load(Ordering::SeqCst),
                1,
                "once refused, the endpoint is sent no more batches"
            );
        }
    }

    #[tokio::test]
    async fn a_rate_limited_batch_is_no_refusal() {
        let (url, batches) = endpoint(Refusal::RateLimit).await;
        assert!(three(&url).await.is_err(), "the rate limit is the answer");
        assert!(three(&url).await.is_err());
        assert_eq!(
            batches.load(Ordering::SeqCst),
            2,
            "the endpoint is still sent batches"
        );
    }

    #[tokio::test]
    async fn an_endpoint_that_takes_batches_gets_them() {
        let (url, batches) = endpoint(Refusal::None).await;
        assert_eq!(three(&url).await.unwrap(), [7, 7, 7]);
        assert_eq!(three(&url).await.unwrap(), [7, 7, 7]);
        assert_eq!(batches.load(Ordering::SeqCst), 2);
    }
}

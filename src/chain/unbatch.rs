//! JSON-RPC batch requests, and what to do when an endpoint refuses them.
//!
//! Share nodes ask their endpoint for a judgement's calls in one batch request (the head and
//! the finalized block, `canRead` with the access block's hash, a deposit's writers): one
//! replica answers them all, and the endpoint does one request's work instead of several. Not
//! every endpoint takes batches: some hosted ones and proxies refuse them (with an HTTP 4xx,
//! or one error object where an array was asked for), others cap their size and refuse a
//! larger one whole. A node on such an endpoint refused every write and most releases with
//! 503. Now a refused batch is sent again as single requests side by side, and the endpoint
//! is remembered (per process, by URL) as one that takes none, so later batches go singly at
//! once. The answer is the batch's, assembled: callers do not see the difference.
//!
//! Given up: the single calls may reach different replicas behind a load balancer, as any two
//! requests may (`Pinned` names blocks by number, so a lagging replica still fails its call
//! instead of answering on old state).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};

use alloy::rpc::json_rpc::{RequestPacket, Response, ResponsePacket};
use alloy::transports::{TransportError, TransportFut};

/// The endpoints (by URL) that refused a batch in this process.
static REFUSING: LazyLock<Mutex<HashMap<String, Arc<AtomicBool>>>> = LazyLock::new(Mutex::default);

/// Whether the endpoint at `url` refused a batch: shared by every client of the URL.
fn refuses(url: &str) -> Arc<AtomicBool> {
    let mut map = REFUSING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(map.entry(url.to_owned()).or_default())
}

/// A transport that sends a batch its endpoint refuses as single requests.
#[derive(Debug, Clone)]
pub(crate) struct Unbatch<S> {
    inner: S,
    refuses: Arc<AtomicBool>,
}

impl<S> Unbatch<S> {
    /// `inner`, talking to the endpoint at `url`.
    pub(crate) fn new(inner: S, url: &str) -> Self {
        Self {
            inner,
            refuses: refuses(url),
        }
    }
}

/// Whether `answer` to a batch of `asked` requests is the endpoint's refusal of batches
/// (rather than answers, or a failure that single requests would meet too).
fn refused(asked: usize, answer: &Result<ResponsePacket, TransportError>) -> bool {
    match answer {
        // One error object where an array was asked for (alloy hands a JSON-RPC error body
        // of an HTTP error status over as such an answer too).
        Ok(ResponsePacket::Single(_)) => true,
        // A cap: errors only, saying so. (A node answers an array of errors for calls that
        // each fail; those are answers.)
        Ok(ResponsePacket::Batch(rs)) => {
            rs.len() != asked
                || rs.iter().all(|r| {
                    r.payload()
                        .as_error()
                        .is_some_and(|e| e.message.to_ascii_lowercase().contains("batch"))
                })
        }
        // An HTTP status that refuses the request itself (not "too many requests", "timed
        // out", or the server's own failure, which singles would meet too).
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
        let refuses = Arc::clone(&self.refuses);
        Box::pin(async move {
            if !refuses.load(Ordering::Relaxed) {
                let answer = inner.call(RequestPacket::Batch(calls.clone())).await;
                if !refused(calls.len(), &answer) {
                    return answer;
                }
                tracing::warn!(
                    "the chain endpoint refused a batch of {} requests; sending single requests \
                     to it from now on",
                    calls.len()
                );
                refuses.store(true, Ordering::Relaxed);
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
        let app = axum::Router::new().route(
            "/",
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
        let url = format!("http://{}", listener.local_addr().unwrap());
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
    async fn an_endpoint_that_takes_batches_gets_them() {
        let (url, batches) = endpoint(Refusal::None).await;
        assert_eq!(three(&url).await.unwrap(), [7, 7, 7]);
        assert_eq!(three(&url).await.unwrap(), [7, 7, 7]);
        assert_eq!(batches.load(Ordering::SeqCst), 2);
    }
}

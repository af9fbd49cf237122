//! A deadline on every JSON-RPC request to the chain.
//!
//! alloy's HTTP transport waits as long as the endpoint keeps the connection open. An endpoint
//! that accepts and never answers (a wedged node, a proxy holding the request) then holds
//! whatever waits on it for ever: a share node's judgement, a gateway request, and, for a
//! send, the account's turn in [`super::send_lock`] and every transaction queued behind it
//! (the denials of a doctor among them). With a deadline the request fails as a transport
//! error ([`super::ChainError::Rpc`], a 503 to a caller of the gateway) and the turn passes
//! on. A transaction whose send timed out may still have reached the pool: the next send asks
//! for the pending nonce again, and a nonce that turns out taken is retried by the send lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use alloy::rpc::json_rpc::{RequestPacket, ResponsePacket};
use alloy::transports::{TransportError, TransportErrorKind, TransportFut};

/// A request's deadline unless the process sets another ([`set_rpc_deadline`]). Calls on a
/// healthy node take milliseconds; the longest are log queries over a block range (the event
/// index asks a bounded range at a time), which public providers themselves cut off at about
/// this.
pub const DEFAULT_RPC_DEADLINE: Duration = Duration::from_secs(30);

static DEADLINE_MS: AtomicU64 = AtomicU64::new(DEFAULT_RPC_DEADLINE.as_millis() as u64);

/// Sets the deadline of the chain requests of clients connected from now on (a server sets it
/// once from its configuration, before it connects). Zero is taken as one millisecond.
pub fn set_rpc_deadline(d: Duration) {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    DEADLINE_MS.store(ms, Ordering::Relaxed);
}

/// The deadline clients connected now get.
pub fn rpc_deadline() -> Duration {
    Duration::from_millis(DEADLINE_MS.load(Ordering::Relaxed))
}

/// A transport whose every request (a batch counts as one) fails after `after`.
#[derive(Debug, Clone)]
pub(crate) struct Deadline<S> {
    inner: S,
    after: Duration,
}

impl<S> Deadline<S> {
    pub(crate) fn new(inner: S, after: Duration) -> Self {
        Self { inner, after }
    }
}

impl<S> tower::Service<RequestPacket> for Deadline<S>
where
    S: tower::Service<
            RequestPacket,
            Response = ResponsePacket,
            Error = TransportError,
            Future = TransportFut<'static>,
        >,
{
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        let after = self.after;
        let call = self.inner.call(req);
        Box::pin(async move {
            tokio::time::timeout(after, call).await.unwrap_or_else(|_| {
                Err(TransportErrorKind::custom_str(&format!(
                    "the chain endpoint did not answer within {} ms",
                    after.as_millis()
                )))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::providers::{Provider, ProviderBuilder};
    use alloy::signers::local::PrivateKeySigner;

    /// A TCP endpoint that accepts connections and reads requests but never answers; the
    /// connections stay open as long as the returned task runs.
    async fn hung_endpoint() -> (reqwest::Url, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_hung_endpoint_fails_a_call_at_the_deadline() {
        let (url, _server) = hung_endpoint().await;
        let client = super::super::client::rpc_client_with(url, Duration::from_millis(300));
        let provider = ProviderBuilder::new().connect_client(client);
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(20), provider.get_block_number())
            .await
            .expect("the call returned at its deadline, not hung");
        let err = answer.expect_err("a hung endpoint gives no block number");
        assert!(
            err.to_string().contains("did not answer within 300 ms"),
            "{err}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    /// A send to a hung endpoint gives the account's turn back: the next send of the same
    /// account gets it (and fails at its own deadline) instead of queueing for ever.
    #[tokio::test]
    async fn a_send_to_a_hung_endpoint_passes_the_accounts_turn_on() {
        let (url, _server) = hung_endpoint().await;
        let signer = PrivateKeySigner::random();
        let from = signer.address();
        let client = super::super::client::rpc_client_with(url, Duration::from_millis(200));
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_simple_nonce_management()
            .with_chain_id(31337)
            .wallet(alloy::network::EthereumWallet::from(signer))
            .connect_client(client);
        let send = || {
            let provider = provider.clone();
            let tx = alloy::rpc::types::TransactionRequest::default()
                .to(alloy::primitives::Address::ZERO)
                .value(alloy::primitives::U256::from(1))
                .gas_limit(21_000)
                .gas_price(1);
            super::super::send_lock::submit(from, move || {
                let (provider, tx) = (provider.clone(), tx.clone());
                async move { provider.send_transaction(tx).await }
            })
        };
        let both = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(send(), send())
        })
        .await
        .expect("both sends returned; neither held the account's turn for ever");
        for r in [both.0, both.1] {
            let err = r.expect_err("nothing answers the send");
            assert!(err.to_string().contains("did not answer"), "{err}");
        }
    }
}

//! Transactions filled and signed here, before the node sees them: their hash is known before
//! they are sent. A send that fails on the way (the endpoint, or a proxy in front of it, cut
//! the connection or timed out after the node took the transaction) leaves a transaction that
//! may be mined; with its hash named first (`chain::sent`, and an `Idempotency-Key`'s row), a
//! retry is answered by it instead of doing the act twice.
//!
//! What alloy's fillers did for the same request: the nonce from the node's pending count (as
//! `send_lock` expects), the chain id, EIP-1559 fees from the node's fee history (a legacy gas
//! price where the node has none). The gas limit is the caller's (`gas_limit`).

use alloy::consensus::TxEnvelope;
use alloy::eips::eip2718::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::transports::RpcError;

use super::ChainError;

/// A signed transaction: its hash and its bytes for `eth_sendRawTransaction`.
#[derive(Debug, Clone)]
pub(super) struct Signed {
    pub(super) hash: B256,
    pub(super) raw: Bytes,
}

/// Fills `request` from `from` on chain `chain_id` and signs it with `wallet`.
///
/// # Errors
/// Transport errors; a request that cannot be built (a missing field).
pub(super) async fn sign(
    provider: &DynProvider,
    wallet: &EthereumWallet,
    from: Address,
    chain_id: u64,
    request: TransactionRequest,
) -> Result<Signed, ChainError> {
    let nonce = provider.get_transaction_count(from).pending().await?;
    let mut request = request
        .with_from(from)
        .with_chain_id(chain_id)
        .with_nonce(nonce);
    if request.gas_price.is_none()
        && (request.max_fee_per_gas.is_none() || request.max_priority_fee_per_gas.is_none())
    {
        match provider.estimate_eip1559_fees().await {
            Ok(fees) => {
                request.set_max_fee_per_gas(fees.max_fee_per_gas);
                request.set_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
            }
            Err(RpcError::UnsupportedFeature(_)) => {
                request.set_gas_price(provider.get_gas_price().await?);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let envelope: TxEnvelope = request.build(wallet).await.map_err(|e| {
        ChainError::Rpc(alloy::transports::TransportErrorKind::custom_str(&format!(
            "the transaction could not be signed: {e}"
        )))
    })?;
    Ok(Signed {
        hash: *envelope.tx_hash(),
        raw: envelope.encoded_2718().into(),
    })
}

/// Whether a failed `eth_sendRawTransaction` may have left the transaction with the node
/// (asked when the node does not know it yet). Not when the request never got there or was
/// refused as a request: no connection made, a body that could not be written, an HTTP 4xx
/// other than a timeout (a proxy's or a server's refusal of the request), or a JSON-RPC error
/// answer (the node's refusal; one a proxy answers after passing the request on is caught by
/// asking the node first). Anything else (a cut connection, a timeout, a 5xx, an answer that
/// is not JSON-RPC) may have come after the node took it.
pub(super) fn maybe_sent(e: &alloy::transports::TransportError) -> bool {
    use alloy::transports::TransportErrorKind;
    match e {
        RpcError::ErrorResp(_) | RpcError::SerError(_) => false,
        RpcError::Transport(TransportErrorKind::HttpError(h)) => h.status == 408 || h.status >= 500,
        RpcError::Transport(TransportErrorKind::Custom(c)) => !c
            .downcast_ref::<alloy::transports::http::reqwest::Error>()
            .is_some_and(alloy::transports::http::reqwest::Error::is_connect),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::transports::TransportErrorKind;

    #[test]
    fn a_refusal_is_told_from_a_send_that_may_have_arrived() {
        // The node's own refusal, and a request refused as a request: not sent.
        assert!(!maybe_sent(&RpcError::ErrorResp(
            alloy::rpc::json_rpc::ErrorPayload::internal_error_message("insufficient funds".into())
        )));
        for status in [400, 401, 403, 413, 429] {
            assert!(
                !maybe_sent(&TransportErrorKind::http_error(status, String::new())),
                "{status}"
            );
        }
        // After the request may have reached the node: a timeout, a gateway error, a cut
        // connection or a deadline of our own.
        for status in [408, 500, 502, 503, 504] {
            assert!(
                maybe_sent(&TransportErrorKind::http_error(status, String::new())),
                "{status}"
            );
        }
        assert!(maybe_sent(&TransportErrorKind::custom_str(
            "request timed out after 30s"
        )));
        assert!(maybe_sent(&RpcError::NullResp));
    }

    #[tokio::test]
    async fn no_connection_is_not_sent() {
        // TCP port 1 (tcpmux): nothing listens on it here, so the connection is refused.
        let e = alloy::transports::http::reqwest::Client::new()
            .post("http://127.0.0.1:1")
            .send()
            .await
            .unwrap_err();
        assert!(!maybe_sent(&TransportErrorKind::custom(e)));
    }
}

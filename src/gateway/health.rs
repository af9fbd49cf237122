//! `/health`: which chain and which IPFS node the gateway is connected to, and whether they answer.

use alloy::providers::Provider;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;

/// Health of the gateway and its backing services; 503 when one of them does not answer.
pub(super) async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let provider = state.provider();
    let chain = match (
        provider.get_chain_id().await,
        provider.get_block_number().await,
    ) {
        (Ok(id), Ok(block)) => {
            let client = provider.get_client_version().await.unwrap_or_default();
            json!({"ok": true, "chain_id": id, "block": block, "client": client, "rpc_url": state.rpc_url(),
                   "contract": state.chain().map(|c| c.address())})
        }
        (Err(e), _) | (_, Err(e)) => {
            json!({"ok": false, "error": e.to_string(), "rpc_url": state.rpc_url()})
        }
    };
    let ipfs = match state.ipfs().version().await {
        Ok(v) => {
            json!({"ok": true, "version": v.version, "commit": v.commit, "api_url": state.ipfs().base_url()})
        }
        Err(e) => json!({"ok": false, "error": e.to_string(), "api_url": state.ipfs().base_url()}),
    };
    let ok = chain["ok"] == true && ipfs["ok"] == true;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ok { "ok" } else { "degraded" },
            "version": env!("CARGO_PKG_VERSION"),
            "chain": chain,
            "ipfs": ipfs,
        })),
    )
}

//! `/health`: which chain, IPFS node and share nodes the gateway uses, and whether they answer
//! (a share node counts only when it answers as the identity the gateway expects).

use alloy::primitives::Address;
use alloy::providers::Provider;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;

/// Health of the gateway and its backing services; 503 when one of them does not answer.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    summary = "Health of the gateway, chain, IPFS node and share nodes",
    responses((status = 200, description = "every service answers", content_type = "application/json"), (status = 503, description = "a service does not answer", content_type = "application/json"))
)]
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
    let ipfs = ipfs_health(state.ipfs()).await;
    let nodes = share_node_health(&state).await;
    let database = match state.database() {
        None => Value::Null,
        Some(db) => match db.ping().await {
            Ok(()) => json!({"ok": true, "backend": db.backend().to_string()}),
            Err(e) => {
                tracing::warn!("health: {e}");
                json!({"ok": false, "backend": db.backend().to_string(), "error": "does not answer"})
            }
        },
    };
    let needed = state.records().map_or(0, |c| usize::from(c.threshold));
    let nodes_ok = nodes.iter().filter(|n| n.ok).count();
    // Without the contract client (the chain did not answer at start) nothing is served yet.
    let chain_ok = chain["ok"] == true && state.chain().is_some();
    let db_ok = database.is_null() || database["ok"] == true;
    let all_ok = chain_ok && ipfs["ok"] == true && db_ok && nodes_ok == nodes.len();
    // Reads need the chain, IPFS, the database (sessions, tokens) and k share nodes; below
    // that the gateway is unavailable.
    let serving = chain_ok && ipfs["ok"] == true && db_ok && nodes_ok >= needed;
    let status = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if all_ok { "ok" } else if serving { "degraded" } else { "unavailable" },
            "version": env!("CARGO_PKG_VERSION"),
            "chain": chain,
            "ipfs": ipfs,
            "share_nodes": nodes,
            "share_nodes_needed": needed,
            "database": database,
        })),
    )
}

/// How one configured share node answered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeHealth {
    /// Its URL.
    pub url: String,
    /// The identity it should answer as.
    pub address: Address,
    /// It answered as that identity and is serving.
    pub ok: bool,
    /// The identity it answered as, if it answered.
    pub answers_as: Option<Address>,
}

/// Every configured share node's `/health`, all at once, each with a short timeout (one dead
/// node must not stall the caller); used by `/health` and the records office's page.
pub async fn share_node_health(state: &AppState) -> Vec<NodeHealth> {
    let Some(cfg) = state.records() else {
        return Vec::new();
    };
    let http = state.http();
    let checks = cfg.nodes.iter().map(|n| async move {
        let r = http
            .get(format!("{}/health", n.url))
            .timeout(std::time::Duration::from_secs(2))
            .send()
            .await;
        let v: Value = match r {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        let answers_as = v["node"].as_str().and_then(|a| a.parse::<Address>().ok());
        NodeHealth {
            url: n.url.clone(),
            address: n.address,
            ok: answers_as == Some(n.address) && v["serving"] != false,
            answers_as,
        }
    });
    futures::future::join_all(checks).await
}

/// The first peer's answer as before, plus every peer's: uploads need `replication` of them.
async fn ipfs_health(replicas: &crate::ipfs::Replicas) -> Value {
    let versions = replicas.versions().await;
    let peers: Vec<Value> = replicas
        .peers()
        .iter()
        .zip(&versions)
        .map(|(p, v)| match v {
            Ok(v) => json!({"ok": true, "version": v.version, "api_url": p.base_url()}),
            Err(e) => json!({"ok": false, "error": e.to_string(), "api_url": p.base_url()}),
        })
        .collect();
    let up = versions.iter().filter(|v| v.is_ok()).count();
    let mut first = peers[0].clone();
    if let (Some(Ok(v)), Some(o)) = (versions.first(), first.as_object_mut()) {
        o.insert("commit".into(), json!(v.commit));
    }
    if let Some(o) = first.as_object_mut() {
        o.insert("ok".into(), json!(up >= replicas.replication()));
        o.insert("replication".into(), json!(replicas.replication()));
        o.insert("peers_up".into(), json!(up));
        o.insert("peers".into(), Value::Array(peers));
    }
    first
}

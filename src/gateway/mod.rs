//! The HTTP gateway: `router(AppState) -> Router` for tests, `serve` for the binary.
//!
//! REST API (JSON) for the chain operations and records, plus `/health` and `/openapi.json`.

mod chain_api;
mod error;
mod health;
mod openapi;
mod proxy;
mod records_api;
mod state;
#[cfg(test)]
mod tests;
mod uploads;

pub use crate::records::RecordsConfig;
pub use error::ApiError;
pub use health::{NodeHealth, share_node_health};
pub use proxy::{TrustedProxies, real_client};
pub use state::{AppState, Keyring, TokenResolver};
pub use uploads::{MAX_UPLOADS, UploadSlots, gate_html, gate_json, timeout as upload_timeout};

use axum::Router;
use axum::routing::{get, post};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

/// Largest request body accepted by JSON endpoints (record uploads have their own limit).
const JSON_BODY_LIMIT: usize = 64 * 1024;

/// The gateway's routes over `state`.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health::health))
        .route("/openapi.json", get(openapi::spec))
        .route("/api/providers/{address}", get(chain_api::provider_status))
        .route("/api/patients/{addr}/grants", get(chain_api::grants))
        .route("/api/patients/{addr}/requests", get(chain_api::requests))
        .route("/api/patients/{addr}/records", get(chain_api::records))
        .route("/api/patients/{addr}/audit", get(chain_api::patient_audit))
        .route("/api/audit", get(chain_api::all_audit))
        .route("/api/me", get(chain_api::me))
        .route("/api/patients", post(chain_api::register_patient))
        .route("/api/office/patients", post(chain_api::issue_patient))
        .route("/api/providers", post(chain_api::register_provider))
        .route(
            "/api/providers/{address}/verify",
            post(chain_api::verify_provider),
        )
        .route(
            "/api/providers/{address}/suspend",
            post(chain_api::suspend_provider),
        )
        .route("/api/grants", post(chain_api::grant))
        .route("/api/grants/{provider}/revoke", post(chain_api::revoke))
        .route("/api/requests", post(chain_api::request_access))
        .route("/api/requests/{provider}/approve", post(chain_api::approve))
        .route("/api/requests/{provider}/decline", post(chain_api::decline))
        .route("/api/access", post(chain_api::access))
        .route("/api/break-glass", post(chain_api::break_glass))
        .layer(RequestBodyLimitLayer::new(JSON_BODY_LIMIT));
    let upload = Router::new()
        .route("/records", post(records_api::upload))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(records_api::UPLOAD_LIMIT))
        .layer(uploads::timeout())
        .layer(axum::middleware::from_fn_with_state(
            state.upload_slots().clone(),
            uploads::gate_json,
        ));
    let records = Router::new()
        .route("/records/{id}", get(records_api::download))
        .layer(RequestBodyLimitLayer::new(JSON_BODY_LIMIT))
        .merge(upload);
    api.merge(records)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the gateway on `listener` until `shutdown` resolves.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

//! The HTTP gateway: `router(AppState) -> Router` for tests, `serve` for the binary.
//!
//! REST API (JSON) for the chain operations and records, plus `/health` and `/openapi.json`.

mod chain_api;
mod error;
mod health;
mod idempotency;
mod ingest_api;
mod named_upload;
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
pub(crate) use idempotency::{NamedWrite, key_from_text, request_fingerprint};
pub(crate) use named_upload::{NamedUpload, Settled, Upload as NamedRequest};
pub use proxy::{TrustedProxies, real_client};
pub use state::{AppState, Keyring, TokenResolver};
pub(crate) use uploads::Charge;
pub use uploads::{
    MAX_UPLOADS, UPLOAD_TIMEOUT_SECS, UploadSlots, gate_html, gate_json, timeout as upload_timeout,
};

use axum::Router;
use axum::routing::get;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest request body accepted by JSON endpoints (record uploads have their own limit).
const JSON_BODY_LIMIT: usize = 64 * 1024;

/// The gateway's routes over `state`. Each REST handler carries its `#[utoipa::path]`, and
/// `/openapi.json` is generated from the same handlers the router serves.
pub fn router(state: AppState) -> Router {
    let api = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(chain_api::provider_status))
        .routes(routes!(chain_api::grants))
        .routes(routes!(chain_api::requests))
        .routes(routes!(chain_api::records))
        .routes(routes!(chain_api::patient_audit))
        .routes(routes!(chain_api::all_audit))
        .routes(routes!(chain_api::me))
        .routes(routes!(chain_api::register_patient))
        .routes(routes!(chain_api::issue_patient))
        .routes(routes!(chain_api::register_provider))
        .routes(routes!(chain_api::verify_provider))
        .routes(routes!(chain_api::suspend_provider))
        .routes(routes!(chain_api::grant))
        .routes(routes!(chain_api::revoke))
        .routes(routes!(chain_api::request_access))
        .routes(routes!(chain_api::approve))
        .routes(routes!(chain_api::decline))
        .routes(routes!(chain_api::access))
        .routes(routes!(chain_api::break_glass))
        .routes(routes!(records_api::download))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .layer(RequestBodyLimitLayer::new(JSON_BODY_LIMIT));
    let upload = OpenApiRouter::new()
        .routes(routes!(records_api::upload))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(records_api::UPLOAD_LIMIT))
        .layer(uploads::timeout())
        .layer(axum::middleware::from_fn_with_state(
            state.upload_slots().clone(),
            uploads::gate_json,
        ));
    let devices = OpenApiRouter::new()
        .routes(routes!(ingest_api::ingest))
        .layer(RequestBodyLimitLayer::new(
            crate::ingest::MAX_ENVELOPE_BYTES,
        ))
        .merge(
            // A stream has no total size: each line is bounded instead.
            OpenApiRouter::new()
                .routes(routes!(ingest_api::stream))
                .layer(axum::extract::DefaultBodyLimit::disable()),
        );
    let (routes, mut doc) = api.merge(upload).merge(devices).split_for_parts();
    openapi::idempotency_header(&mut doc);
    let doc = std::sync::Arc::new(doc);
    routes
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
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

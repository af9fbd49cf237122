//! The REST API called in-process (`tower::ServiceExt::oneshot`, no port, no chain): who may
//! call, and what a caller gets back for each kind of failure, with the status of its
//! [`crate::kind::ErrorKind`].

use alloy::signers::local::PrivateKeySigner;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;

use super::{AppState, Keyring, router};
use crate::ipfs::KuboClient;

fn app() -> axum::Router {
    let mut keys = Keyring::default();
    keys.insert("tok-doctor", PrivateKeySigner::random());
    router(
        AppState::new(
            "http://127.0.0.1:9",
            None,
            KuboClient::new("http://127.0.0.1:9"),
            keys,
        )
        .unwrap(),
    )
}

async fn call(req: Request<Body>) -> (StatusCode, Value) {
    let resp = app().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn post(uri: &str, auth: Option<&str>, body: &str) -> Request<Body> {
    let mut r = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(a) = auth {
        r = r.header(header::AUTHORIZATION, a);
    }
    r.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn writes_need_a_known_bearer_token() {
    let body = r#"{"provider":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8"}"#;
    for (auth, says) in [
        (None, "missing Authorization"),
        (Some("Basic eDp5"), "must be `Bearer"),
        (Some("Bearer tok-unknown"), "unknown, expired or revoked"),
    ] {
        let (status, v) = call(post("/api/grants", auth, body)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(v["error"].as_str().unwrap().contains(says), "{v}");
        assert_eq!(v["kind"], "Unauthenticated");
    }
    // A known token on a gateway without a contract: 503, said in words.
    let (status, v) = call(post("/api/grants", Some("Bearer tok-doctor"), body)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no contract deployed")
    );
    assert_eq!(v["kind"], "Unavailable");
}

#[tokio::test]
async fn bad_input_is_refused_before_any_work() {
    // Reads of a malformed address or page.
    let (status, v) = call(
        Request::get("/api/patients/not-an-addr/grants")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::SERVICE_UNAVAILABLE,
        "{status} {v}"
    );
    // A body over the JSON limit (64 KiB) is refused by its length, before the token or the
    // chain is looked at.
    let big = format!(r#"{{"provider":"{}"}}"#, "a".repeat(70 * 1024));
    let mut req = post("/api/grants", Some("Bearer tok-doctor"), &big);
    req.headers_mut()
        .insert(header::CONTENT_LENGTH, big.len().into());
    let resp = app().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A record id that is not one.
    let (status, v) = call(
        Request::get("/records/0x1234")
            .header(header::AUTHORIZATION, "Bearer tok-doctor")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(
        status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{status} {v}"
    );
    // The OpenAPI document is served.
    let (status, v) = call(Request::get("/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["openapi"], "3.1.0");
    // Generated from the handlers the router serves: every route is there, with its auth.
    assert_eq!(v["paths"].as_object().unwrap().len(), 24, "{}", v["paths"]);
    // Device readings carry their own signature, no bearer token.
    for path in ["/ingest", "/ingest/stream"] {
        assert!(v["paths"][path]["post"]["security"].is_null(), "{path}");
    }
    let grant = &v["paths"]["/api/grants"]["post"];
    assert_eq!(grant["security"][0]["bearer"], serde_json::json!([]));
    // Writes name their Idempotency-Key and what answers to one carry.
    assert!(
        grant["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")
    );
    assert!(grant["responses"]["200"]["headers"]["Idempotent-Replayed"].is_object());
    let upload = &v["paths"]["/records"]["post"];
    assert!(upload["responses"]["200"]["headers"]["Idempotent-Replayed"].is_object());
    assert_eq!(
        upload["responses"]["409"]["headers"]["Retry-After"]["schema"]["type"],
        "integer"
    );
    assert_eq!(
        grant["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/GrantBody"
    );
    assert_eq!(
        v["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(
        v["paths"]["/api/patients/{addr}/grants"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "limit" && p["in"] == "query")
    );
}

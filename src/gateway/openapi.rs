//! `/openapi.json`: the REST API described as OpenAPI 3.1, written by hand next to the routes.

use axum::Json;
use serde_json::{Value, json};

fn op(summary: &str, auth: bool, params: &[&str], body: Option<Value>) -> Value {
    let mut o = json!({
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {}}},
            "400": {"$ref": "#/components/responses/Error"},
            "409": {"$ref": "#/components/responses/Error"},
            "503": {"$ref": "#/components/responses/Error"}
        }
    });
    if auth {
        o["security"] = json!([{"bearer": []}]);
        o["responses"]["401"] = json!({"$ref": "#/components/responses/Error"});
    }
    let mut ps: Vec<Value> = params
        .iter()
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if !auth && summary.starts_with("List") {
        ps.push(
            json!({"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}),
        );
        ps.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}}));
    }
    if !ps.is_empty() {
        o["parameters"] = Value::Array(ps);
    }
    if let Some(b) = body {
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": b}}});
    }
    o
}

/// The spec.
pub(super) async fn spec() -> Json<Value> {
    let addr = json!({"type": "string", "pattern": "^[1-9][0-9]*-[1-9][0-9]*$", "description": "patient address AID-PID"});
    let eth = json!({"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"});
    let grant_body = json!({"type": "object", "required": ["provider"], "properties": {
        "provider": eth, "expires_at": {"type": "integer", "description": "unix seconds; absent = open-ended"}}});
    Json(json!({
        "openapi": "3.1.0",
        "info": {"title": "ehr-share gateway", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Access control on chain, encrypted records on IPFS. Writes sign as the account behind the bearer token."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"error": {"type": "string"}}}}}}}
        },
        "paths": {
            "/health": {"get": op("Health of the gateway, chain and IPFS node", false, &[], None)},
            "/api/me": {"get": op("The caller's account and roles", true, &[], None)},
            "/api/audit": {"get": op("List every contract event, newest first", false, &[], None)},
            "/api/providers": {"post": op("Register the caller as a provider", true, &[], None)},
            "/api/providers/{address}": {"get": op("A provider's status", false, &["address"], None)},
            "/api/providers/{address}/verify": {"post": op("Records office: verify a provider", true, &["address"], None)},
            "/api/providers/{address}/suspend": {"post": op("Records office: suspend a provider", true, &["address"], None)},
            "/api/patients": {"post": op("Register the caller as a patient with the records office's voucher", true, &[],
                Some(json!({"type": "object", "required": ["addr", "deadline", "voucher"], "properties": {"addr": addr,
                    "deadline": {"type": "integer"}, "voucher": {"type": "string", "pattern": "^0x[0-9a-fA-F]{130}$"}}})))},
            "/api/patients/{addr}/grants": {"get": op("List a patient's grants", false, &["addr"], None)},
            "/api/patients/{addr}/requests": {"get": op("List a patient's pending requests", false, &["addr"], None)},
            "/api/patients/{addr}/records": {"get": op("List a patient's anchored records (from the share nodes; each with its proof to an anchored root)", false, &["addr"], None)},
            "/api/patients/{addr}/audit": {"get": op("List a patient's audit trail, newest first", false, &["addr"], None)},
            "/api/grants": {"post": op("Patient: grant a provider", true, &[], Some(grant_body))},
            "/api/grants/{provider}/revoke": {"post": op("Patient: revoke a provider", true, &["provider"], None)},
            "/api/requests": {"post": op("Provider: request access to a patient", true, &[],
                Some(json!({"type": "object", "required": ["addr"], "properties": {"addr": addr}})))},
            "/api/requests/{provider}/approve": {"post": op("Patient: approve a request", true, &["provider"], None)},
            "/api/requests/{provider}/decline": {"post": op("Patient: decline a request", true, &["provider"], None)},
            "/api/access": {"post": op("Provider: access transaction for records of one patient (denials are logged, not errors)", true, &[],
                Some(json!({"type": "object", "required": ["patient", "records"], "properties": {"patient": {"type": "string", "pattern": "^[0-9]+-[0-9]+$"}, "records": {"type": "array", "maxItems": 32,
                    "items": {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"}}}})))},
            "/records": {"post": {
                "summary": "Store a record for a patient (body = content, Content-Type = media type; FHIR JSON is validated; max 32 MiB)",
                "security": [{"bearer": []}],
                "parameters": [{"name": "patient", "in": "query", "required": true, "schema": addr},
                               {"name": "file_name", "in": "query", "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"*/*": {}}},
                "responses": {"200": {"description": "stored and anchored"}, "400": {"$ref": "#/components/responses/Error"},
                              "401": {"$ref": "#/components/responses/Error"}, "409": {"$ref": "#/components/responses/Error"},
                              "413": {"$ref": "#/components/responses/Error"}, "503": {"$ref": "#/components/responses/Error"}}}},
            "/records/{id}": {"get": {
                "summary": "Read a record: access transaction, share gathering, decryption, digest check",
                "security": [{"bearer": []}],
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"}}],
                "responses": {"200": {"description": "the content, with its media type"}, "400": {"$ref": "#/components/responses/Error"},
                              "401": {"$ref": "#/components/responses/Error"}, "403": {"$ref": "#/components/responses/Error"},
                              "404": {"$ref": "#/components/responses/Error"}, "503": {"$ref": "#/components/responses/Error"}}}},
            "/api/break-glass": {"post": op("Provider: open emergency access", true, &[],
                Some(json!({"type": "object", "required": ["addr", "reason"], "properties": {"addr": addr,
                    "reason": {"type": "string", "enum": ["ETREAT", "BTG", "ERTREAT", "DISASTER", "THREAT"],
                               "description": "HL7 v3 PurposeOfUse; at most 3 openings per patient per 24 h"}}})))},
            "/api/office/patients": {"post": op("Records office: issue a patient address to an account", true, &[],
                Some(json!({"type": "object", "required": ["addr", "account"], "properties": {"addr": addr,
                    "account": {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}}})))}
        }
    }))
}

//! The web router called in-process (`tower::ServiceExt::oneshot`, no port, no chain): logins
//! are required, roles and CSRF tokens are checked before any work, bad forms get 400,
//! missing services get 503 in words, and what users typed comes back escaped.

use alloy::signers::local::PrivateKeySigner;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt as _;

use super::{AccountStore, Role, WebState, router};
use crate::gateway::{AppState, Keyring};
use crate::ipfs::KuboClient;

struct Fixture {
    app: Router,
    state: WebState,
    _dir: tempfile::TempDir,
}

/// The web app with no chain and no IPFS behind it (nothing listens on port 9).
async fn fixture() -> Fixture {
    let (dir, db) = crate::db::testing::sqlite().await;
    let accounts = AccountStore::new(db).await.unwrap();
    let app = AppState::new(
        "http://127.0.0.1:9",
        None,
        KuboClient::new("http://127.0.0.1:9"),
        Keyring::default(),
    )
    .unwrap();
    let state = WebState::new(app, accounts);
    Fixture {
        app: router(state.clone()),
        state,
        _dir: dir,
    }
}

impl Fixture {
    /// A session of a new user in `role`: its cookie and CSRF token.
    async fn session(&self, name: &str, role: Role) -> (String, String) {
        let patient = (role == Role::Patient).then(|| "1-1001".parse().unwrap());
        let (account, signer): (_, PrivateKeySigner) = self
            .state
            .accounts
            .create(name, "a long password", role, patient, None)
            .await
            .unwrap();
        let token = self.state.sessions.start(&account, &signer).await.unwrap();
        let csrf = self.state.sessions.get(&token).await.unwrap().unwrap().csrf;
        (format!("{}={token}", super::session::COOKIE), csrf)
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, String, axum::http::HeaderMap) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned(), headers)
    }

    async fn get(&self, uri: &str, cookie: Option<&str>) -> (StatusCode, String) {
        let mut r = Request::get(uri);
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        let (s, b, _) = self.send(r.body(Body::empty()).unwrap()).await;
        (s, b)
    }

    async fn post(&self, uri: &str, cookie: &str, form: &str) -> (StatusCode, String) {
        let r = Request::post(uri)
            .header(header::COOKIE, cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap();
        let (s, b, _) = self.send(r).await;
        (s, b)
    }
}

#[tokio::test]
async fn pages_need_a_session_and_the_right_role() {
    let f = fixture().await;
    for uri in [
        "/patient",
        "/doctor",
        "/office",
        "/tokens",
        "/patient/audit.csv",
    ] {
        let (status, _) = f.get(uri, None).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{uri} without a session");
    }
    let (patient, _) = f.session("pat", Role::Patient).await;
    let (doctor, _) = f.session("doc", Role::Provider).await;
    for uri in ["/office", "/doctor", "/doctor/patient?addr=1-1001"] {
        let (status, body) = f.get(uri, Some(&patient)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a patient on {uri}");
        assert!(body.contains("this page is for another role"));
    }
    for uri in [
        "/patient",
        "/patient/audit.csv",
        "/patient/audit.fhir.json",
        "/office",
    ] {
        let (status, _) = f.get(uri, Some(&doctor)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a doctor on {uri}");
    }
    // A forged or expired cookie is no session.
    let (status, _) = f.get("/patient", Some("ehr_session=forged")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn forms_need_the_session_csrf_token_and_valid_fields() {
    let f = fixture().await;
    let (patient, csrf) = f.session("pat", Role::Patient).await;
    let provider = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
    for form in [
        format!("provider={provider}"),
        format!("csrf=wrong&provider={provider}"),
        format!("csrf=&provider={provider}"),
    ] {
        let (status, body) = f.post("/patient/revoke", &patient, &form).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{form}");
        assert!(body.contains("did not come from this site"));
    }
    // With the token, a decision that is not one of the enum's is a 400 in words.
    let (status, body) = f
        .post(
            "/patient/request",
            &patient,
            &format!("csrf={csrf}&provider={provider}&decision=maybe"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("the form is not valid"), "{body}");
    // A well-formed form reaches the handler, which finds no chain: 503, said in words.
    let (status, body) = f
        .post(
            "/patient/revoke",
            &patient,
            &format!("csrf={csrf}&provider={provider}"),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no contract deployed"), "{body}");
    // An office form from a patient stops at the role, before the CSRF check.
    let (status, _) = f
        .post(
            "/office/provider",
            &patient,
            &format!("csrf={csrf}&provider={provider}&decision=suspend"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Logout needs the token too, and then the session is gone.
    let (status, _) = f.post("/logout", &patient, "csrf=wrong").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = f.post("/logout", &patient, &format!("csrf={csrf}")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = f.get("/patient", Some(&patient)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn what_users_type_comes_back_escaped() {
    let f = fixture().await;
    // The login form keeps a wrong login's user name.
    let (_, _, headers) = f.send(Request::get("/").body(Body::empty()).unwrap()).await;
    let form_cookie = headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let token = form_cookie.split_once('=').unwrap().1.to_owned();
    let evil = "<script>alert(1)</script>\"'";
    let body = format!(
        "form_token={token}&username={}&password=x",
        crate::web::view::query_value(evil)
    );
    let (status, page) = f.post("/login", &form_cookie, &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("unknown user or wrong password"));
    assert!(!page.contains("<script>alert"), "raw script in the page");
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
            || page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    // A notice in the query is text, never markup.
    let (_, page) = f
        .get("/?err=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E", None)
        .await;
    assert!(!page.contains("<img src=x"), "raw tag in the page");
    // The static assets are served with their types.
    let (_, _, h) = f
        .send(Request::get("/assets/app.css").body(Body::empty()).unwrap())
        .await;
    assert_eq!(h[header::CONTENT_TYPE], "text/css; charset=utf-8");
}

/// An upload whose time ran out gets a page in words with its 408 (the timeout layer's own
/// answer is empty): with a database (the form's key kept) that it may still be stored and
/// the form can be sent again, without one that it was stopped; other answers pass unchanged.
#[tokio::test]
async fn a_timed_out_upload_is_told_in_words() {
    use axum::extract::State;
    use axum::response::IntoResponse as _;
    async fn page(state: &WebState) -> String {
        let r = super::upload_timed_out(
            State(state.clone()),
            StatusCode::REQUEST_TIMEOUT.into_response(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8_lossy(&body).into_owned()
    }
    let f = fixture().await;
    let without = page(&f.state).await;
    assert!(
        without.contains("took longer than 120 s and was stopped"),
        "{without}"
    );
    let (_dir, db) = crate::db::testing::sqlite().await;
    let app = AppState::new(
        "http://127.0.0.1:9",
        None,
        KuboClient::new("http://127.0.0.1:9"),
        Keyring::default(),
    )
    .unwrap()
    .with_database(db.clone());
    let kept = WebState::new(app, AccountStore::new(db).await.unwrap());
    let with = page(&kept).await;
    assert!(
        with.contains("took longer than 120 s") && with.contains("does not store it twice"),
        "{with}"
    );
    let other = super::upload_timed_out(
        State(f.state.clone()),
        StatusCode::SEE_OTHER.into_response(),
    )
    .await;
    assert_eq!(other.status(), StatusCode::SEE_OTHER);
}

//! The gateway and web app in-process on the shared chain and Kubo, on a database of the
//! test's choice (a SQLite file by default), stoppable and restartable on the same database.

use alloy::signers::local::PrivateKeySigner;
use ehr_share::chain::EhrChain;
use ehr_share::db::{Database, EventStore};
use ehr_share::gateway::{AppState, Keyring};
use ehr_share::ipfs::KuboClient;

/// A running gateway + web app.
pub struct Web {
    pub url: String,
    pub accounts: ehr_share::web::AccountStore,
    pub db: Database,
    pub dir: tempfile::TempDir,
    db_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Web {
    /// Starts on `db_url` (a SQLite file in a fresh folder when `None`), with `upload_slots`
    /// and a keyring token `tok-uploader`.
    pub async fn start(db_url: Option<&str>, upload_slots: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = db_url.map_or_else(
            || ehr_share::db::sqlite_in(&dir.path().join("web")),
            str::to_owned,
        );
        Self::start_in(dir, &url, upload_slots).await
    }

    async fn start_in(dir: tempfile::TempDir, db_url: &str, upload_slots: usize) -> Self {
        let office = super::office().await;
        let db = Database::open(db_url).await.unwrap();
        let accounts = ehr_share::web::AccountStore::new(db.clone()).await.unwrap();
        let tokens = ehr_share::web::TokenStore::new(accounts.clone());
        let chain = EhrChain::connect(&super::rpc(), None, &office.deployment())
            .await
            .unwrap()
            .with_index_store(std::sync::Arc::new(EventStore::new(db.clone())));
        let app = AppState::new(
            &super::rpc(),
            Some(chain),
            KuboClient::new(&super::stack().kubo.api_url),
            {
                let mut k = Keyring::default();
                k.insert("tok-uploader", PrivateKeySigner::random());
                k
            },
        )
        .unwrap()
        .with_upload_slots(upload_slots)
        .with_database(db.clone())
        .with_tokens(std::sync::Arc::new(tokens.clone()));
        let web = ehr_share::web::WebState::new(app.clone(), accounts.clone()).with_tokens(tokens);
        let router = ehr_share::gateway::router(app).merge(ehr_share::web::router(web));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            url,
            accounts,
            db,
            dir,
            db_url: db_url.to_owned(),
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Stops this server and starts a new one on the same database (and folder): what a
    /// restart of the gateway process keeps.
    pub async fn restart(mut self, upload_slots: usize) -> Self {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
        self.db.close().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let url = std::mem::take(&mut self.db_url);
        Self::start_in(dir, &url, upload_slots).await
    }
}

/// A browser-like client: keeps cookies, does not follow redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The 64-hex-digit value of the hidden field `name` on `page`, fetched with `c`.
async fn hidden(c: &reqwest::Client, url: &str, page: &str, name: &str) -> String {
    let html = c
        .get(format!("{url}{page}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = format!(r#"name="{name}" value=""#);
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field on {page}: {html}"))
        + marker.len();
    html[at..at + 64].to_owned()
}

/// The form token of a page (and the cookie that goes with it, kept by `c`).
pub async fn form_token(c: &reqwest::Client, url: &str, page: &str) -> String {
    hidden(c, url, page, "form_token").await
}

/// Posts the login form.
pub async fn login(
    c: &reqwest::Client,
    url: &str,
    token: &str,
    user: &str,
    pw: &str,
) -> reqwest::Response {
    c.post(format!("{url}/login"))
        .form(&[("form_token", token), ("username", user), ("password", pw)])
        .send()
        .await
        .unwrap()
}

/// The CSRF token of a logged-in page.
pub async fn csrf(c: &reqwest::Client, url: &str, page: &str) -> String {
    hidden(c, url, page, "csrf").await
}

/// Posts the create-token form of the logged-in `c`: the response.
pub async fn post_token(
    c: &reqwest::Client,
    url: &str,
    csrf: &str,
    name: &str,
    password: &str,
) -> reqwest::Response {
    c.post(format!("{url}/tokens"))
        .form(&[
            ("csrf", csrf),
            ("name", name),
            ("days", "7"),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

/// Creates an API token through the web form; the token the page shows once.
pub async fn create_token(
    c: &reqwest::Client,
    url: &str,
    csrf: &str,
    name: &str,
    password: &str,
) -> String {
    let page = post_token(c, url, csrf, name, password)
        .await
        .text()
        .await
        .unwrap();
    let at = page
        .find(r#"<code id="new-token">"#)
        .unwrap_or_else(|| panic!("{page}"))
        + 21;
    page[at..].split('<').next().unwrap().to_owned()
}

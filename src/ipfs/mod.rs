//! Kubo HTTP RPC client: version, add (streamed, pinned under a name), cat (streamed), named
//! pins (list, add by CID) and unpin; and [`Replicas`], the set of Kubo peers a deployment
//! keeps each record's ciphertext on.
//!
//! Only ciphertext ever goes through here: IPFS content is public to anyone who knows the CID.

pub mod markers;
mod replicas;

pub use replicas::{Placement, RepairReport, Replicas, spread};

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::Deserialize;

/// Errors talking to Kubo. `Clone`: uploads that share one marker share its failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IpfsError {
    /// The node could not be reached.
    #[error("IPFS node at {url} unreachable: {source}")]
    Unreachable {
        /// The API base URL.
        url: String,
        /// Transport error.
        source: std::sync::Arc<reqwest::Error>,
    },
    /// Kubo answered with an error message.
    #[error("IPFS {call} failed: {message}")]
    Api {
        /// The RPC call.
        call: &'static str,
        /// Kubo's message.
        message: String,
    },
    /// Fewer peers than the replication factor took the content.
    #[error("only {reached} of the {needed} IPFS peers needed took the content")]
    NotEnoughPeers {
        /// The replication factor.
        needed: usize,
        /// Peers that took it.
        reached: usize,
    },
    /// A replication factor the peers cannot meet.
    #[error("replication {replication} needs at least that many IPFS peers; {peers} configured")]
    Replication {
        /// The factor asked for.
        replication: usize,
        /// Peers configured.
        peers: usize,
    },
    /// The content is not on the node (offline nodes cannot fetch it elsewhere).
    #[error("content {cid} not found on the IPFS node")]
    NotFound {
        /// The CID asked for.
        cid: String,
    },
    /// Kubo's answer did not parse.
    #[error("unexpected answer from IPFS {call}: {detail}")]
    Protocol {
        /// The RPC call.
        call: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// Kubo's `/api/v0/version` answer.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct KuboVersion {
    /// Kubo release, e.g. `0.42.0`.
    #[serde(rename = "Version")]
    pub version: String,
    /// Git commit of the build.
    #[serde(rename = "Commit", default)]
    pub commit: String,
    /// Go version it was built with.
    #[serde(rename = "Golang", default)]
    pub golang: String,
}

#[derive(Deserialize)]
struct AddResponse {
    #[serde(rename = "Hash")]
    hash: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "Message")]
    message: String,
}

/// A client of one Kubo node's RPC API.
#[derive(Debug, Clone)]
pub struct KuboClient {
    base: String,
    http: reqwest::Client,
    token: Option<ApiToken>,
}

/// Reads a Kubo API token from `path` (surrounding whitespace dropped).
///
/// # Errors
/// When the file cannot be read, or holds no token.
pub fn read_api_token(path: &std::path::Path) -> std::io::Result<String> {
    let token = std::fs::read_to_string(path)?.trim().to_owned();
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} holds no token", path.display()),
        ));
    }
    Ok(token)
}

/// A bearer token for Kubo's RPC API (`API.Authorizations`); never printed.
#[derive(Clone)]
struct ApiToken(std::sync::Arc<str>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

impl KuboClient {
    /// A client for the RPC API at `base` (e.g. `http://127.0.0.1:5001`).
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            // A peer whose host is gone (packets dropped, no reset) must not hold a call for
            // the kernel's two minutes of SYN retries: the next peer is tried instead.
            http: crate::tls::built(
                crate::tls::builder().connect_timeout(Duration::from_secs(3)),
                "Kubo HTTP client",
            ),
            token: None,
        }
    }

    /// The same client, sending `token` as a bearer token: a Kubo peer on a network (not on
    /// loopback) takes RPC calls only with it (`API.Authorizations`), or anyone who reaches
    /// the port could unpin every record.
    #[must_use]
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(ApiToken(token.into()));
        self
    }

    /// Clients for `urls`, each sending `token` when there is one.
    pub fn many<'a>(urls: impl IntoIterator<Item = &'a String>, token: Option<&str>) -> Vec<Self> {
        urls.into_iter()
            .map(|url| match token {
                Some(t) => Self::new(url).with_token(t),
                None => Self::new(url),
            })
            .collect()
    }

    /// The API base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The node's version.
    ///
    /// # Errors
    /// When the node is unreachable or answers with an error.
    pub async fn version(&self) -> Result<KuboVersion, IpfsError> {
        self.quick_json("version").await
    }

    /// Adds and pins content streamed from `body`; returns its CID (v1, raw leaves).
    ///
    /// # Errors
    /// When the node is unreachable, rejects the upload, or the body stream fails.
    pub async fn add_stream<S>(&self, body: S) -> Result<String, IpfsError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        self.add_stream_named(body, "").await
    }

    /// Adds and pins content streamed from `body` under the pin name `pin_name` (empty: no
    /// name); returns its CID (v1, raw leaves). The name is how a collector later finds pins
    /// that were never finished (see [`KuboClient::pins_named`]).
    ///
    /// # Errors
    /// When the node is unreachable, rejects the upload, or the body stream fails.
    pub async fn add_stream_named<S>(&self, body: S, pin_name: &str) -> Result<String, IpfsError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(body))
            .file_name("record.bin")
            .mime_str("application/octet-stream")
            .map_err(|e| IpfsError::Protocol {
                call: "add",
                detail: e.to_string(),
            })?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let resp = self
            .post(
                "add",
                &[
                    ("pin", "true"),
                    ("cid-version", "1"),
                    ("quieter", "true"),
                    ("progress", "false"),
                    ("pin-name", pin_name),
                ][..if pin_name.is_empty() { 4 } else { 5 }],
            )
            .multipart(form)
            .send()
            .await;
        let resp = self.check("add", resp).await?;
        let body = self.body(resp).await?;
        let text = String::from_utf8_lossy(&body);
        // One JSON object per line; with `quieter` the last one is the file itself.
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let parsed: AddResponse = serde_json::from_str(last).map_err(|e| IpfsError::Protocol {
            call: "add",
            detail: format!("{e}: {last}"),
        })?;
        Ok(parsed.hash)
    }

    /// Adds and pins `data`.
    ///
    /// # Errors
    /// As [`KuboClient::add_stream`].
    pub async fn add_bytes(&self, data: Bytes) -> Result<String, IpfsError> {
        self.add_stream(futures::stream::once(async move { Ok(data) }))
            .await
    }

    /// Adds and pins `data` under the pin name `pin_name`.
    ///
    /// # Errors
    /// As [`KuboClient::add_stream`].
    pub async fn add_bytes_named(&self, data: Bytes, pin_name: &str) -> Result<String, IpfsError> {
        self.add_stream_named(futures::stream::once(async move { Ok(data) }), pin_name)
            .await
    }

    /// Streams the content of `cid`; only local content is found (the node does not ask its
    /// peers).
    ///
    /// # Errors
    /// [`IpfsError::NotFound`] when the node does not hold it.
    pub async fn cat_stream(
        &self,
        cid: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, IpfsError>> + use<>, IpfsError> {
        self.cat_stream_from(cid, None).await
    }

    /// Streams the content of `cid`, fetching what the node lacks from its peers (bitswap)
    /// for up to `wait`; [`IpfsError::NotFound`] when no peer gave it in that time.
    ///
    /// # Errors
    /// As [`KuboClient::cat_stream`].
    pub async fn cat_stream_from_peers(
        &self,
        cid: &str,
        wait: Duration,
    ) -> Result<impl Stream<Item = Result<Bytes, IpfsError>> + use<>, IpfsError> {
        self.cat_stream_from(cid, Some(wait)).await
    }

    async fn cat_stream_from(
        &self,
        cid: &str,
        peers_for: Option<Duration>,
    ) -> Result<impl Stream<Item = Result<Bytes, IpfsError>> + use<>, IpfsError> {
        // `offline=true`: never wait for the network for content we do not have; with peers,
        // Kubo's own `timeout` bounds the whole command, the stream included.
        let wait = peers_for.map(|d| format!("{}ms", d.as_millis()));
        let query: Vec<(&str, &str)> = match &wait {
            None => vec![("arg", cid), ("offline", "true")],
            Some(w) => vec![("arg", cid), ("timeout", w.as_str())],
        };
        let resp = self.post("cat", &query).send().await;
        let resp = match self.check("cat", resp).await {
            Err(IpfsError::Api { message, .. })
                if is_not_found(&message) || message.contains("context deadline exceeded") =>
            {
                return Err(IpfsError::NotFound {
                    cid: cid.to_owned(),
                });
            }
            other => other?,
        };
        let url = self.base.clone();
        Ok(resp
            .bytes_stream()
            .map_err(move |source| IpfsError::Unreachable {
                url: url.clone(),
                source: source.into(),
            }))
    }

    /// Reads the whole content of `cid` into memory.
    ///
    /// # Errors
    /// As [`KuboClient::cat_stream`].
    pub async fn cat(&self, cid: &str) -> Result<Vec<u8>, IpfsError> {
        let mut stream = Box::pin(self.cat_stream(cid).await?);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// Unpins `cid` (used to clean up after a failed upload); unknown pins are not an error.
    ///
    /// # Errors
    /// When the node is unreachable or fails otherwise.
    pub async fn unpin(&self, cid: &str) -> Result<(), IpfsError> {
        let resp = self.post("pin/rm", &[("arg", cid)]).send().await;
        match self.check("pin/rm", resp).await {
            Ok(_) => Ok(()),
            Err(IpfsError::Api { message, .. }) if message.contains("not pinned") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Pins `cid` under `name`, fetching its blocks from the node's peers (bitswap) when it
    /// lacks them; gives up after `wait`.
    ///
    /// # Errors
    /// When the node is unreachable, or cannot get the content in time.
    pub async fn pin_add(&self, cid: &str, name: &str, wait: Duration) -> Result<(), IpfsError> {
        let resp = self
            .post("pin/add", &[("arg", cid), ("name", name)])
            .timeout(wait)
            .send()
            .await;
        self.check("pin/add", resp).await.map(|_| ())
    }

    /// How many peers the node is connected to (in a private network: the other members it
    /// reached).
    ///
    /// # Errors
    /// When the node is unreachable or its answer does not parse.
    pub async fn swarm_peers(&self) -> Result<usize, IpfsError> {
        #[derive(Deserialize)]
        struct Peers {
            #[serde(rename = "Peers", default)]
            peers: Option<Vec<serde_json::Value>>,
        }
        let p: Peers = self.quick_json("swarm/peers").await?;
        Ok(p.peers.map_or(0, |v| v.len()))
    }

    /// Whether the node pins `cid` recursively (then it holds every block of it).
    ///
    /// # Errors
    /// When the node is unreachable or fails otherwise.
    pub async fn is_pinned(&self, cid: &str) -> Result<bool, IpfsError> {
        let resp = self
            .post("pin/ls", &[("arg", cid), ("type", "recursive")])
            .send()
            .await;
        match self.check("pin/ls", resp).await {
            Ok(_) => Ok(true),
            Err(IpfsError::Api { message, .. }) if message.contains("not pinned") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The recursive pins whose name contains `part`, as (CID, name).
    ///
    /// # Errors
    /// When the node is unreachable or its answer does not parse.
    pub async fn pins_named(&self, part: &str) -> Result<Vec<(String, String)>, IpfsError> {
        #[derive(Deserialize)]
        struct Pin {
            #[serde(rename = "Name", default)]
            name: String,
        }
        #[derive(Deserialize)]
        struct Pins {
            #[serde(rename = "Keys", default)]
            keys: Option<std::collections::BTreeMap<String, Pin>>,
        }
        let resp = self
            .post("pin/ls", &[("type", "recursive"), ("name", part)])
            .send()
            .await;
        let resp = self.check("pin/ls", resp).await?;
        let pins: Pins = parse("pin/ls", &self.body(resp).await?)?;
        Ok(pins
            .keys
            .unwrap_or_default()
            .into_iter()
            .map(|(cid, p)| (cid, p.name))
            .filter(|(_, n)| n.contains(part))
            .collect())
    }

    /// A call without arguments that answers at once with JSON (5 s at most).
    async fn quick_json<T: serde::de::DeserializeOwned>(
        &self,
        call: &'static str,
    ) -> Result<T, IpfsError> {
        let resp = self
            .post(call, &[])
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let resp = self.check(call, resp).await?;
        parse(call, &self.body(resp).await?)
    }

    /// An answer's body. Failing to read it means Kubo stopped or the connection broke while
    /// it answered (reqwest reports that as a decode error): unavailable, worth another try.
    async fn body(&self, resp: reqwest::Response) -> Result<bytes::Bytes, IpfsError> {
        resp.bytes().await.map_err(|source| IpfsError::Unreachable {
            url: self.base.clone(),
            source: source.into(),
        })
    }

    fn post(&self, call: &str, query: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let request = self
            .http
            .post(format!("{}/api/v0/{call}", self.base))
            .query(query);
        match &self.token {
            Some(t) => request.bearer_auth(&*t.0),
            None => request,
        }
    }

    async fn check(
        &self,
        call: &'static str,
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, IpfsError> {
        let resp = resp.map_err(|source| IpfsError::Unreachable {
            url: self.base.clone(),
            source: source.into(),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&body)
            .map(|b| b.message)
            .unwrap_or_else(|_| format!("HTTP {status}: {body}"));
        Err(IpfsError::Api { call, message })
    }
}

/// A JSON answer of `call`; anything else is a protocol error.
fn parse<T: serde::de::DeserializeOwned>(call: &'static str, body: &[u8]) -> Result<T, IpfsError> {
    serde_json::from_slice(body).map_err(|e| IpfsError::Protocol {
        call,
        detail: e.to_string(),
    })
}

fn is_not_found(message: &str) -> bool {
    message.contains("not found") || message.contains("block was not found locally")
}

impl crate::kind::Classify for IpfsError {
    fn kind(&self) -> crate::kind::ErrorKind {
        use crate::kind::ErrorKind as K;
        match self {
            Self::NotFound { .. } => K::NotFound,
            Self::Unreachable { .. } | Self::Api { .. } | Self::NotEnoughPeers { .. } => {
                K::Unavailable
            }
            Self::Protocol { .. } | Self::Replication { .. } => K::Internal,
        }
    }

    /// The IPFS API is an admin interface: its URL and messages stay in the log.
    fn public_message(&self) -> String {
        match self {
            Self::NotFound { .. } => self.to_string(),
            _ => "the IPFS node is not available; try again shortly".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::{Classify as _, ErrorKind};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A one-connection HTTP server that answers with `head` and `body`, then closes.
    async fn answering(head: &'static str, body: &'static [u8]) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = c.read(&mut buf).await;
            c.write_all(head.as_bytes()).await.unwrap();
            c.write_all(body).await.unwrap();
        });
        url
    }

    /// Kubo killed while it answers (the crash bench saw it): unavailable, worth another try,
    /// not a server fault; an answer that is no JSON stays a protocol error.
    #[tokio::test]
    async fn an_answer_cut_off_is_unavailable_and_one_that_is_no_json_is_not() {
        let cut = answering(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
            b"{\"Version\":",
        )
        .await;
        let e = KuboClient::new(&cut).version().await.unwrap_err();
        assert!(matches!(e, IpfsError::Unreachable { .. }), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::Unavailable);

        let garbled = answering(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n",
            b"hello",
        )
        .await;
        let e = KuboClient::new(&garbled).version().await.unwrap_err();
        assert!(matches!(e, IpfsError::Protocol { .. }), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::Internal);
    }
}

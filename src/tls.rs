//! TLS for the process's outgoing HTTPS: every HTTP client it builds (chain, Kubo, share
//! nodes) shares one client configuration, which reads the system's root certificates the
//! first time a server's certificate is checked, once per configuration (the system's, and
//! the share nodes' when they have a private CA).
//!
//! Why: reqwest reads every root certificate of the system when a client is built (about 150
//! files parsed, a few milliseconds of CPU), whether or not the client ever speaks HTTPS. An
//! `ehr record get` builds three clients (chain, Kubo, share nodes), all to `http://` on a
//! development machine, and read the roots three times for nothing.

use std::sync::{Arc, LazyLock, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The configuration of clients that trust the system's roots.
static SYSTEM: LazyLock<rustls::ClientConfig> = LazyLock::new(|| config(Vec::new()));

/// A client builder whose HTTPS trusts the system's roots (read on its first use).
///
/// Its TLS is set: the builder's own TLS options (`tls_*`, `danger_accept_invalid_*`,
/// minimum versions, extra roots, client identities, `http1_only`'s ALPN) have no effect on
/// it. Extra roots go through [`trusting`] and [`builder_trusting`].
pub fn builder() -> reqwest::ClientBuilder {
    builder_trusting(&SYSTEM)
}

/// A client from [`builder`] with reqwest's other defaults.
pub fn client() -> reqwest::Client {
    built(builder(), "HTTP client")
}

/// The client `builder` builds; when it cannot (a preconfigured TLS backend leaves nothing
/// to fail but the system's resolver setup), said in the log and replaced by reqwest's
/// defaults, which read the roots when built.
pub fn built(builder: reqwest::ClientBuilder, what: &str) -> reqwest::Client {
    builder.build().unwrap_or_else(|e| {
        tracing::error!("{what}: {e}; using reqwest's defaults");
        reqwest::Client::new()
    })
}

/// A client builder whose HTTPS goes by `config` (one of [`trusting`]'s: the system's roots
/// and extra ones).
pub fn builder_trusting(config: &rustls::ClientConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(config.clone())
}

/// An extra root certificate that cannot be trusted.
#[derive(Debug, thiserror::Error)]
#[error("not a usable CA certificate: {0}")]
pub struct UnusableRoot(#[from] rustls::Error);

/// A client configuration trusting the system's roots and `extra` (checked here: a malformed
/// certificate is refused now, not at the first connection).
///
/// # Errors
/// [`UnusableRoot`] when one of `extra` is not a usable root certificate.
pub fn trusting(extra: Vec<CertificateDer<'static>>) -> Result<rustls::ClientConfig, UnusableRoot> {
    let mut store = rustls::RootCertStore::empty();
    for cert in &extra {
        store.add(cert.clone())?;
    }
    Ok(config(extra))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn config(extra: Vec<CertificateDer<'static>>) -> rustls::ClientConfig {
    config_with(Arc::new(LazyRoots::new(provider(), extra)))
}

fn config_with(verifier: Arc<LazyRoots>) -> rustls::ClientConfig {
    // The process default too, for the libraries that build their own configuration.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let provider = verifier.provider.clone();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("aws-lc-rs supports TLS 1.2 and 1.3"))
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // What reqwest offers when it builds the configuration itself.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// reqwest's own verifier on Linux (the platform verifier: the system's roots through
/// WebPKI, plus extra roots), built on the first certificate it is asked to check. A failed
/// build (no root certificates found, no file handle left) is not kept: that handshake fails,
/// the failure is logged, and the next one tries again.
#[derive(Debug)]
struct LazyRoots {
    provider: Arc<CryptoProvider>,
    extra: Vec<CertificateDer<'static>>,
    inner: Mutex<Option<Arc<rustls_platform_verifier::Verifier>>>,
}

impl LazyRoots {
    fn new(provider: Arc<CryptoProvider>, extra: Vec<CertificateDer<'static>>) -> Self {
        Self {
            provider,
            extra,
            inner: Mutex::new(None),
        }
    }

    /// Whether the roots were read.
    #[cfg(test)]
    fn read(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    fn verifier(&self) -> Result<Arc<rustls_platform_verifier::Verifier>, rustls::Error> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = inner.as_ref() {
            return Ok(v.clone());
        }
        let built = rustls_platform_verifier::Verifier::new_with_extra_roots(
            self.extra.iter().cloned(),
            self.provider.clone(),
        )
        .map(Arc::new)
        .map_err(|e| {
            let e = rustls::Error::General(format!(
                "no HTTPS server can be trusted: loading the system's root certificates failed ({e})"
            ));
            tracing::error!("{e}");
            e
        })?;
        *inner = Some(built.clone());
        Ok(built)
    }
}

impl ServerCertVerifier for LazyRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    /// The provider's schemes, which are what the platform verifier answers, without reading
    /// the roots (a client offers them in every hello).
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_extra_root_is_refused_at_once() {
        assert!(trusting(vec![CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])]).is_err());
    }

    /// A server on loopback with a certificate for 127.0.0.1 from a CA of its own; the CA.
    async fn server() -> (String, CertificateDer<'static>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            leaf.pem().into_bytes(),
            key.serialize_pem().into_bytes(),
        )
        .await
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let server = axum_server::tls_rustls::from_tcp_rustls(listener, tls).unwrap();
        tokio::spawn(server.serve(app.into_make_service()));
        (format!("https://{addr}/"), ca_cert.der().clone())
    }

    #[tokio::test]
    async fn certificates_are_still_checked_when_the_roots_are_read_late() {
        let (url, ca) = server().await;
        // The system's roots do not vouch for the server's CA: refused.
        let refused = client().get(&url).send().await.unwrap_err();
        assert!(
            format!("{refused:?}").contains("UnknownIssuer"),
            "{refused:?}"
        );
        // Trusting its CA besides them: answered.
        let config = trusting(vec![ca]).unwrap();
        let client = builder_trusting(&config).build().unwrap();
        let answer = client.get(&url).send().await.unwrap();
        assert_eq!(answer.text().await.unwrap(), "ok");
    }

    #[tokio::test]
    async fn the_roots_are_read_at_the_first_certificate_not_before() {
        let roots = Arc::new(LazyRoots::new(provider(), Vec::new()));
        let client = builder_trusting(&config_with(roots.clone()))
            .build()
            .unwrap();
        assert!(!roots.read(), "read when the client was built");
        // Plain HTTP reads none.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "plain" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let plain = client.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(plain.text().await.unwrap(), "plain");
        assert!(!roots.read(), "read for a plain HTTP request");
        // The first certificate checked reads them (and refuses this one).
        let (url, _) = server().await;
        assert!(client.get(&url).send().await.is_err());
        assert!(
            roots.read(),
            "not read for an HTTPS request: another verifier checked it"
        );
    }
}

//! TLS between share nodes and their clients on other hosts.
//!
//! A released share is sealed to its requester's key whatever the transport (`crypto::ecies`),
//! so TLS adds what the seal cannot: the record ids, addresses and signed requests are hidden
//! from the network, and a client knows it talks to the node it means to, not to a host that
//! took its address. Nodes run by different organisations often carry certificates from a
//! private CA; clients trust it next to the system's roots with [`trust_pem`], called once at
//! start, before the first client is built.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("{path}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Extra roots were given after the first client was built.
    #[error("share-node CA roots must be set before the first share-node client is built")]
    TooLate,
}

/// The client configuration trusting the extra roots besides the system's, set once.
static ROOTS: OnceLock<rustls::ClientConfig> = OnceLock::new();
/// The one HTTP client for share nodes (per runtime), built on first use.
static HTTP: crate::per_runtime::PerRuntime<reqwest::Client> =
    crate::per_runtime::PerRuntime::new();
/// Whether a share-node client was built (extra roots come too late after that).
static BUILT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Trusts the CA certificates in the PEM file at `path` for share-node connections, besides
/// the system's roots; returns how many it read.
///
/// # Errors
/// [`TlsError::Pem`] for an unreadable file or one without usable certificates;
/// [`TlsError::TooLate`] once a client exists, or when roots were set already.
pub fn trust_pem(path: &Path) -> Result<usize, TlsError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let pem_error = |detail: String| TlsError::Pem {
        path: path.to_owned(),
        detail,
    };
    let pem = std::fs::read(path).map_err(|e| pem_error(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no PEM certificate in it".into()));
    }
    let n = certs.len();
    let config = crate::tls::trusting(certs).map_err(|e| pem_error(e.to_string()))?;
    if BUILT.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(TlsError::TooLate);
    }
    ROOTS.set(config).map_err(|_| TlsError::TooLate)?;
    Ok(n)
}

/// A client builder that trusts the system's roots and those given to [`trust_pem`].
pub fn http_builder() -> reqwest::ClientBuilder {
    BUILT.store(true, std::sync::atomic::Ordering::SeqCst);
    match ROOTS.get() {
        Some(roots) => crate::tls::builder_trusting(roots),
        None => crate::tls::builder(),
    }
}

/// The share-node HTTP client (a clone of one built once per runtime).
pub fn http() -> reqwest::Client {
    HTTP.get(|| crate::tls::built(http_builder(), "share-node HTTP client"))
}

/// The server side: the certificate chain and key in PEM files.
///
/// # Errors
/// [`TlsError::Pem`] when they cannot be read or do not match.
pub async fn server_config(
    cert: &Path,
    key: &Path,
) -> Result<axum_server::tls_rustls::RustlsConfig, TlsError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|e| TlsError::Pem {
            path: cert.to_owned(),
            detail: format!("with key {}: {e}", key.display()),
        })
}

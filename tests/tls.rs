//! Share nodes serving HTTPS with certificates from a private CA: clients that trust the CA
//! read and write through them; a client that does not, or a host holding another CA's
//! certificate for the node's address, gets nothing; a sniffer between them sees neither
//! record ids nor requests. (Scale-out issue: "shares never travel in clear".)

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::nodes;
use ehr_share::records::{RecordsConfig, ShareNodeRef};
use ehr_share::stack::{ManagedChild, free_port};

/// A CA and, per name, a certificate for 127.0.0.1 it signed; PEM files in `dir`.
fn pki(dir: &Path, ca_name: &str) -> rcgen::Issuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{ca_name}.pem")), cert.pem()).unwrap();
    rcgen::Issuer::new(params, key)
}

fn leaf(dir: &Path, ca: &rcgen::Issuer<'static, rcgen::KeyPair>, name: &str) -> [String; 2] {
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    let cert_file = dir.join(format!("{name}.crt"));
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    [
        cert_file.display().to_string(),
        key_file.display().to_string(),
    ]
}

/// A share node serving HTTPS with `cert`; waits until it answers (without checking its
/// certificate: that is what the test does next).
async fn start_tls(
    dir: &Path,
    contract: alloy::primitives::Address,
    cert: &[String; 2],
) -> (ManagedChild, u16) {
    let port = free_port().unwrap();
    let extra = ["--tls-cert", &cert[0], "--tls-key", &cert[1]];
    let mut child = ManagedChild::spawn(
        "share-node",
        nodes::command(dir, contract, port, &extra),
        false,
    )
    .unwrap();
    let blind = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/health");
    child
        .wait_healthy(Duration::from_secs(30), || {
            let (blind, url) = (blind.clone(), url.clone());
            async move { matches!(blind.get(url).send().await, Ok(r) if r.status().is_success()) }
        })
        .await
        .unwrap_or_else(|e| panic!("share node did not start: {e}"));
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_nodes_speak_tls_only_to_clients_that_trust_their_ca() {
    let pki_dir = tempfile::tempdir().unwrap();
    let ca = pki(pki_dir.path(), "hospital-ca");
    let rogue_ca = pki(pki_dir.path(), "rogue-ca");
    let office = common::office().await;
    let data = tempfile::tempdir().unwrap();
    let mut procs = Vec::new();
    for i in 0..3 {
        let cert = leaf(pki_dir.path(), &ca, &format!("node{i}"));
        procs.push(start_tls(&data.path().join(format!("n{i}")), office.address(), &cert).await);
    }
    let url = |port: u16| format!("https://127.0.0.1:{port}");

    // Without the CA, the system's roots alone do not trust the node: no answer at all.
    let untrusting = reqwest::Client::new();
    let e = untrusting
        .get(format!("{}/health", url(procs[0].1)))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    // Plain HTTP to the TLS port gets no answer either: there is no fallback to clear text.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/health", procs[0].1)).await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP answered: {plain:?}"
    );

    // The clients of this process trust the hospital's CA (once, before any share-node client).
    let n = ehr_share::share_node::tls::trust_pem(&pki_dir.path().join("hospital-ca.pem")).unwrap();
    assert_eq!(n, 1);
    assert!(
        ehr_share::share_node::tls::trust_pem(&pki_dir.path().join("rogue-ca.pem")).is_err(),
        "roots can be set once only"
    );
    let mut refs = Vec::new();
    for (_, port) in &procs {
        refs.push(ShareNodeRef::discover(&url(*port)).await.unwrap());
    }

    // A patient writes and reads through a sniffer in front of node 0.
    let (proxy, seen) = nodes::sniffing_proxy(format!("127.0.0.1:{}", procs[0].1)).await;
    let mut sniffed = refs.clone();
    // The certificate names 127.0.0.1, so the proxy's address (also 127.0.0.1) passes the
    // name check: the sniffer sees the bytes but cannot read them.
    sniffed[0].url = format!("https://{proxy}");
    let (patient, addr) = common::new_patient(&office).await;
    let client = RecordsConfig::new(sniffed, 2)
        .client(
            common::as_(&office, &patient),
            patient.clone(),
            ehr_share::ipfs::KuboClient::new(&common::stack().kubo.api_url),
        )
        .unwrap();
    let body = Bytes::from_static(b"TLS-MARKER-record over https");
    let id = client
        .put(addr, body.clone(), "text/plain", None)
        .await
        .unwrap();
    let got = client.get(id).await.unwrap();
    assert_eq!(got.data, body);
    assert!(got.failures.is_empty(), "{:?}", got.failures);
    let captured = seen.lock().unwrap().clone();
    assert!(captured.len() > 2_000, "the sniffer saw the traffic");
    let id_hex = id.to_string();
    let address = patient.address().to_string();
    assert!(
        !nodes::contains(&captured, address.as_bytes())
            && !nodes::contains(&captured, address.to_lowercase().as_bytes()),
        "the sniffer read the patient's address"
    );
    for needle in [
        id_hex.as_bytes(),
        id_hex.trim_start_matches("0x").as_bytes(),
        b"/records/".as_slice(),
        b"HTTP/1.1".as_slice(),
    ] {
        assert!(
            !nodes::contains(&captured, needle),
            "the sniffer read {:?}",
            String::from_utf8_lossy(needle)
        );
    }

    // A host with a certificate for the same address from another CA cannot pose as a node.
    let impostor_cert = leaf(pki_dir.path(), &rogue_ca, "impostor");
    let (_impostor, port) = start_tls(
        &data.path().join("impostor"),
        office.address(),
        &impostor_cert,
    )
    .await;
    let posed = ShareNodeRef::discover(&url(port)).await;
    // Said as a certificate refused, not as a node that is down.
    assert!(
        matches!(&posed, Err(ehr_share::share_node::NodeError::Transport(m)) if m.contains("UnknownIssuer")),
        "a node with a rogue CA's certificate: {posed:?}"
    );
    // Refused for its certificate (the client trusts the hospital's CA, not this one).
    let e = ehr_share::share_node::tls::http()
        .get(format!("{}/health", url(port)))
        .send()
        .await
        .unwrap_err();
    let why = format!("{e:?}");
    assert!(
        why.contains("UnknownIssuer") || why.contains("certificate"),
        "refused, but not for its certificate: {why}"
    );
}

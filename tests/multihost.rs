//! Every part on its own host: the chain, 3 Kubo peers (a private IPFS network), 5 share nodes
//! (HTTPS, certificates from the hospital's CA), the gateway and the client each in a Linux
//! network namespace of their own, joined by a bridge; only addresses inside namespaces this
//! test creates (10.231.0.0/24) are used. Upload, grant, read, revoke and denied reads pass
//! across them, client-side (as `ehr record` does) and through the gateway's REST API over
//! HTTPS (a patient who signed up on the web app); a packet capture on the bridge sees the
//! chain's JSON-RPC in clear but nothing readable in the share nodes' or the gateway's
//! traffic; a Kubo host cut off loses no record; Kubo's APIs refuse callers without the token.
//!
//! Needs root (network namespaces), as CI and `scripts/test` run.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ehr_share::chain::EhrChain;
use ehr_share::config::{AnvilSettings, Tools};
use ehr_share::ipfs::{KuboClient, Replicas};
use ehr_share::records::{RecordError, RecordsConfig, ShareNodeRef};
use ehr_share::stack::{
    KuboNetwork, KuboNode, KuboOptions, ManagedChild, kubo_peer_id, start_anvil, start_kubo,
    swarm_key,
};

const SHARE_PORT: u16 = 7001;
const RPC_PORT: u16 = 8545;
const KUBO_API_PORT: u16 = 5001;

/// The hosts, in address order from 10.231.0.2.
const HOSTS: [&str; 11] = [
    "chain", "kubo0", "kubo1", "kubo2", "share0", "share1", "share2", "share3", "share4", "gw",
    "client",
];

/// The namespaces and the bridge between them; deleted on drop.
struct Net {
    prefix: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the `ip` tool");
    assert!(
        out.status.success(),
        "ip {}: {} (network namespaces need root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    fn new() -> Self {
        // Random, so that a concurrent run never shares (or deletes) our namespaces; short,
        // for interface names of at most 15 bytes.
        let prefix = format!(
            "e{:04x}",
            rand_core::RngCore::next_u32(&mut rand_core::OsRng) >> 16
        );
        let net = Self { prefix };
        let hub = net.ns("hub");
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "set", "lo", "up"]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for (i, host) in HOSTS.iter().enumerate() {
            let ns = net.ns(host);
            let (inner, outer) = (format!("{}v{i}", net.prefix), format!("{}h{i}", net.prefix));
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            ip(&["link", "set", &inner, "netns", &ns, "name", "eth0"]);
            ip(&["link", "set", &outer, "netns", &hub]);
            ip(&["-n", &hub, "link", "set", &outer, "master", "br0", "up"]);
            let addr = format!("{}/24", net.addr(host));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn addr(&self, host: &str) -> Ipv4Addr {
        let i = HOSTS.iter().position(|h| *h == host).expect("a known host");
        Ipv4Addr::new(10, 231, 0, 2 + i as u8)
    }

    /// A script that runs `bin` with its arguments inside `host`'s namespace.
    fn wrap(&self, dir: &Path, host: &str, bin: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let name = format!("{host}-{}", bin.file_name().unwrap().to_string_lossy());
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec ip netns exec {} {} \"$@\"\n",
                self.ns(host),
                bin.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Moves the calling thread (and the threads and processes it starts) into `host`'s
    /// namespace.
    fn enter(&self, host: &str) {
        let f = std::fs::File::open(format!("/run/netns/{}", self.ns(host))).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    }
}

impl Net {
    /// Deletes the namespaces (their interfaces go with them) and any veth left outside.
    fn remove(&self) {
        for host in HOSTS.iter().chain(std::iter::once(&"hub")) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(host)])
                .output();
        }
        for i in 0..HOSTS.len() {
            let _ = Command::new("ip")
                .args(["link", "del", &format!("{}v{i}", self.prefix)])
                .output();
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Every frame crossing the bridge, captured in the hub's namespace until stopped.
struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Vec<u8>>>>,
}

impl Capture {
    fn start(net: &Net) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let hub = net.ns("hub");
        let flag = stop.clone();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            use nix::sys::socket::{
                AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, setsockopt,
                socket, sockopt,
            };
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(format!("/run/netns/{hub}")).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let fd = socket(
                AddressFamily::Packet,
                SockType::Raw,
                SockFlag::empty(),
                SockProtocol::EthAll,
            )
            .unwrap();
            setsockopt(
                &fd,
                sockopt::ReceiveTimeout,
                &nix::sys::time::TimeVal::new(0, 200_000),
            )
            .unwrap();
            ready_tx.send(()).unwrap();
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 65_536];
            while !flag.load(Ordering::Relaxed) {
                if let Ok(n) = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                    frames.push(buf[..n].to_vec());
                }
            }
            frames
        });
        ready.recv().unwrap();
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// The TCP payload of an Ethernet/IPv4 frame to or from `port`, if it is one.
fn tcp_payload(frame: &[u8], port: u16) -> Option<&[u8]> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[9] != 6 || ip.len() < ihl + 20 || total > ip.len() {
        return None;
    }
    let tcp = &ip[ihl..total];
    let (src, dst) = (
        u16::from_be_bytes([tcp[0], tcp[1]]),
        u16::from_be_bytes([tcp[2], tcp[3]]),
    );
    let off = usize::from(tcp[12] >> 4) * 4;
    (src == port || dst == port).then(|| tcp.get(off..).unwrap_or_default())
}

fn payload_on(frames: &[Vec<u8>], port: u16) -> Vec<u8> {
    frames
        .iter()
        .filter_map(|f| tcp_payload(f, port))
        .flatten()
        .copied()
        .collect()
}

/// The hospital's CA and a certificate for each share node's address and the gateway's; PEM
/// files in `dir`.
fn pki(dir: &Path, net: &Net) -> Vec<[PathBuf; 2]> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hospital CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join("ca.pem"), params.self_signed(&key).unwrap().pem()).unwrap();
    let ca = rcgen::Issuer::new(params, key);
    (0..5)
        .map(|i| format!("share{i}"))
        .chain(std::iter::once("gw".to_owned()))
        .map(|host| {
            let leaf = rcgen::CertificateParams::new(vec![net.addr(&host).to_string()]).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = leaf.signed_by(&key, &ca).unwrap();
            let files = [
                dir.join(format!("{host}.crt")),
                dir.join(format!("{host}.key")),
            ];
            std::fs::write(&files[0], cert.pem()).unwrap();
            std::fs::write(&files[1], key.serialize_pem()).unwrap();
            files
        })
        .collect()
}

async fn wait_for(what: &str, child: &mut ManagedChild, url: String, client: reqwest::Client) {
    child
        .wait_healthy(Duration::from_secs(60), || {
            let (client, url) = (client.clone(), url.clone());
            async move { matches!(client.get(url).send().await, Ok(r) if r.status().is_success()) }
        })
        .await
        .unwrap_or_else(|e| panic!("{what} did not start: {e}"));
}

#[test]
fn flows_pass_across_hosts_in_network_namespaces() {
    let net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    // This thread is the client host from here on; so are its runtime and the processes it
    // starts, unless they enter another namespace (the wrappers).
    let body = std::thread::scope(|s| {
        s.spawn(|| {
            net.enter("client");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(across_hosts(&net, dir.path()))
        })
        .join()
        .unwrap()
    });
    eprintln!("{body}");
}

#[allow(clippy::too_many_lines)]
async fn across_hosts(net: &Net, dir: &Path) -> String {
    let tools = Tools::in_project(common::root());
    let ehr = common::ehr_bin();

    // The chain.
    let mut settings = AnvilSettings::load(&common::root().join("anvil.toml")).unwrap();
    settings.host = net.addr("chain").to_string();
    settings.port = RPC_PORT;
    settings.state_file.clear();
    let _anvil = start_anvil(&net.wrap(dir, "chain", &tools.anvil), &settings, false)
        .await
        .unwrap();
    let rpc = settings.rpc_url();
    let key = |i| ehr_share::cli::demo_signer(&settings, i).unwrap();
    let (office_key, patient_key, doctor_key, stranger_key) = (key(0), key(1), key(2), key(3));
    let (office, deployment) = EhrChain::deploy(&rpc, office_key.clone(), office_key.address())
        .await
        .unwrap();
    deployment.save(&dir.join("deployment.json")).unwrap();
    let as_ =
        |k: &alloy::signers::local::PrivateKeySigner| office.with_signer(&rpc, k.clone()).unwrap();

    // The private IPFS network; each peer's RPC API takes calls only with the token.
    let swarm = swarm_key();
    let api_token = hex::encode(ehr_share::chain::random_b256());
    std::fs::write(dir.join("kubo.token"), &api_token).unwrap();
    let mut kubo_opts = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let host = format!("kubo{i}");
        let o = KuboOptions {
            bin: net.wrap(dir, &host, &tools.ipfs),
            repo: dir.join(&host),
            api_port: KUBO_API_PORT,
            gateway_port: 8080,
            network: Some(KuboNetwork {
                host: net.addr(&host).into(),
                swarm_port: 4001,
                swarm_key: swarm.clone(),
                peers: Vec::new(),
                api_token: Some(api_token.clone()),
            }),
        };
        ids.push(kubo_peer_id(&o).await.unwrap());
        kubo_opts.push(o);
    }
    let mut kubos: Vec<Option<KuboNode>> = Vec::new();
    for (i, o) in kubo_opts.iter_mut().enumerate() {
        o.network.as_mut().unwrap().peers = (0..3)
            .filter(|&j| j != i)
            .map(|j| {
                (
                    ids[j].clone(),
                    format!("/ip4/{}/tcp/4001", net.addr(&format!("kubo{j}"))),
                )
            })
            .collect();
        kubos.push(Some(start_kubo(o, false).await.unwrap()));
    }
    let kubo_urls: Vec<String> = (0..3)
        .map(|i| format!("http://{}:{KUBO_API_PORT}", net.addr(&format!("kubo{i}"))))
        .collect();
    let replicas = Replicas::new(
        kubo_urls
            .iter()
            .map(|u| KuboClient::new(u).with_token(&api_token))
            .collect(),
        2,
    )
    .unwrap();
    let t = Instant::now();
    for peer in replicas.peers() {
        assert!(
            common::nodes::wait_until(Duration::from_secs(60), || async {
                peer.swarm_peers().await.unwrap_or(0) >= 2
            })
            .await,
            "Kubo {} did not reach its 2 peers",
            peer.base_url()
        );
    }
    let peering_ms = t.elapsed().as_millis();

    // Five share nodes over HTTPS.
    let mut certs = pki(dir, net);
    let gw_cert = certs.pop().unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    // Clients of the gateway, trusting the hospital's CA: a browser (cookies, no redirects)
    // and an API client.
    let browser = reqwest::Client::builder()
        .tls_certs_merge([ca.clone()])
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let rest = reqwest::Client::builder()
        .tls_certs_merge([ca])
        .build()
        .unwrap();
    let blind = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let mut share_nodes = Vec::new();
    for (i, cert) in certs.iter().enumerate() {
        let host = format!("share{i}");
        let mut cmd = tokio::process::Command::new(net.wrap(dir, &host, &ehr));
        cmd.args(["share-node", "--host", &net.addr(&host).to_string()])
            .args(["--port", &SHARE_PORT.to_string(), "--rpc-url", &rpc])
            .arg("--deployment")
            .arg(dir.join("deployment.json"))
            .arg("--data-dir")
            .arg(dir.join(format!("{host}-data")))
            .arg("--tls-cert")
            .arg(&cert[0])
            .arg("--tls-key")
            .arg(&cert[1]);
        let mut child = ManagedChild::spawn(&host, cmd, false).unwrap();
        let url = format!("https://{}:{SHARE_PORT}", net.addr(&host));
        wait_for(&host, &mut child, format!("{url}/health"), blind.clone()).await;
        share_nodes.push((child, url));
    }
    ehr_share::share_node::tls::trust_pem(&dir.join("ca.pem")).unwrap();
    let mut refs = Vec::new();
    for (_, url) in &share_nodes {
        refs.push(ShareNodeRef::discover(url).await.unwrap());
    }

    // The gateway.
    let gw = format!("https://{}:8080", net.addr("gw"));
    let mut config = format!(
        "listen = \"{}:8080\"\n[chain]\nrpc_url = \"{rpc}\"\ndeployment = \"deployment.json\"\n[ipfs]\napi_url = \"{}\"\npeers = [\"{}\", \"{}\"]\nreplication = 2\napi_token_file = \"kubo.token\"\n[records]\nthreshold = 3\nshare_node_ca = \"ca.pem\"\n",
        net.addr("gw"),
        kubo_urls[0],
        kubo_urls[1],
        kubo_urls[2],
    );
    for r in &refs {
        config.push_str(&format!(
            "[[records.share_nodes]]\nurl = \"{}\"\naddress = \"{}\"\n",
            r.url, r.address
        ));
    }
    config.push_str(&format!(
        "[database]\nurl = \"sqlite://gw.db\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        gw_cert[0].display(),
        gw_cert[1].display()
    ));
    std::fs::write(dir.join("ehr.toml"), config).unwrap();
    let mut cmd = tokio::process::Command::new(net.wrap(dir, "gw", &ehr));
    cmd.arg("serve").arg("--config").arg(dir.join("ehr.toml"));
    for (_, var, _) in ehr_share::serve_config::ENV {
        cmd.env_remove(var);
    }
    let mut gateway = ManagedChild::spawn("gateway", cmd, false).unwrap();
    wait_for(
        "the gateway",
        &mut gateway,
        format!("{gw}/health"),
        rest.clone(),
    )
    .await;
    let health: serde_json::Value = rest
        .get(format!("{gw}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["ipfs"]["peers_up"], 3, "{health}");
    let shares_ok = health["share_nodes"].as_array().unwrap();
    assert!(
        shares_ok.len() == 5 && shares_ok.iter().all(|n| n["ok"] == true),
        "{health}"
    );

    // People: a patient, a granted doctor, a doctor never granted.
    let patient_addr = common::unique_patient();
    office
        .issue_patient(patient_addr, patient_key.address())
        .await
        .unwrap();
    for d in [&doctor_key, &stranger_key] {
        as_(d).register_provider().await.unwrap();
        office.verify_provider(d.address()).await.unwrap();
    }
    let records = RecordsConfig::new(refs.clone(), 3);
    let client_of = |k: &alloy::signers::local::PrivateKeySigner| {
        records.client(as_(k), k.clone(), replicas.clone()).unwrap()
    };
    let (patient, doctor, stranger) = (
        client_of(&patient_key),
        client_of(&doctor_key),
        client_of(&stranger_key),
    );

    // Capture the bridge while the flows run.
    let capture = Capture::start(net);
    let payload = Bytes::from(format!("NETNS-MARKER {}", "clinical note. ".repeat(680)));
    let t = Instant::now();
    let id = patient
        .put(patient_addr, payload.clone(), "text/plain", None)
        .await
        .unwrap();
    let first_upload_ms = t.elapsed().as_millis();
    // A second upload, once the peers are connected: the steady state.
    let t = Instant::now();
    patient
        .put(patient_addr, payload.clone(), "text/plain", None)
        .await
        .unwrap();
    let upload_ms = t.elapsed().as_millis();
    as_(&patient_key)
        .grant(doctor_key.address(), None)
        .await
        .unwrap();
    let t = Instant::now();
    let read = doctor.get(id).await.unwrap();
    let read_ms = t.elapsed().as_millis();
    assert_eq!(read.data, payload);
    assert!(read.failures.is_empty(), "{:?}", read.failures);
    match stranger.get(id).await {
        Err(RecordError::Denied(..)) => {}
        other => panic!(
            "a doctor without a grant read: {:?}",
            other.map(|r| r.data.len())
        ),
    }
    as_(&patient_key)
        .revoke(doctor_key.address())
        .await
        .unwrap();
    match doctor.get(id).await {
        Err(RecordError::Denied(..)) => {}
        other => panic!("a revoked doctor read: {:?}", other.map(|r| r.data.len())),
    }

    // The same through the gateway on its own host: a patient signs up on the web app, takes
    // an API token, has the office issue their address, uploads and reads back over REST; the
    // gateway reaches the Kubo peers (with their token), the share nodes (over TLS) and the
    // chain, each on another host.
    let web = browser;
    let (user, password) = ("netns-patient", "a long enough password");
    let web_addr = common::unique_patient();
    let form = common::web::form_token(&web, &gw, "/signup").await;
    let r = web
        .post(format!("{gw}/signup"))
        .form(&[
            ("form_token", form.as_str()),
            ("username", user),
            ("password", password),
            ("role", "patient"),
            ("aid", &web_addr.aid().to_string()),
            ("pid", &web_addr.pid().to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "sign-up");
    let csrf = common::web::csrf(&web, &gw, "/tokens").await;
    let token = common::web::create_token(&web, &gw, &csrf, "netns", password).await;
    let me: serde_json::Value = rest
        .get(format!("{gw}/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let account: alloy::primitives::Address = me["account"].as_str().unwrap().parse().unwrap();
    alloy::providers::ext::AnvilApi::anvil_set_balance(
        office.provider(),
        account,
        alloy::primitives::U256::from(10u128.pow(18)),
    )
    .await
    .unwrap();
    office.issue_patient(web_addr, account).await.unwrap();
    let through = Bytes::from_static(b"NETNS-MARKER uploaded through the gateway");
    let r = rest
        .post(format!("{gw}/records?patient={web_addr}"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(through.clone())
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "upload through the gateway: {}",
        r.status()
    );
    let uploaded: serde_json::Value = r.json().await.unwrap();
    let web_id = uploaded["record"]
        .as_str()
        .unwrap_or_else(|| panic!("{uploaded}"))
        .to_owned();
    let r = rest
        .get(format!("{gw}/records/{web_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "read through the gateway");
    assert_eq!(r.bytes().await.unwrap(), through);
    let frames = capture.finish();

    // What a sniffer on the bridge learned.
    let to_nodes = payload_on(&frames, SHARE_PORT);
    let to_chain = payload_on(&frames, RPC_PORT);
    let swarm = payload_on(&frames, 4001);
    let kubo_api = payload_on(&frames, KUBO_API_PORT);
    assert!(
        to_nodes.len() > 5_000,
        "the capture saw {} bytes of share-node traffic",
        to_nodes.len()
    );
    assert!(
        common::nodes::contains(&to_chain, b"eth_"),
        "the capture works: the chain's JSON-RPC is in clear"
    );
    let id_hex = id.to_string();
    for needle in [
        id_hex.trim_start_matches("0x").as_bytes(),
        b"HTTP/1.1".as_slice(),
        b"/records/".as_slice(),
        b"NETNS-MARKER".as_slice(),
    ] {
        assert!(
            !common::nodes::contains(&to_nodes, needle),
            "share-node traffic shows {:?}",
            String::from_utf8_lossy(needle)
        );
    }
    assert!(
        !frames
            .iter()
            .any(|f| common::nodes::contains(f, b"NETNS-MARKER")),
        "the record's text crossed the network in clear"
    );

    // Anyone else on the network reaches the Kubo APIs, but without the token they can
    // neither list nor unpin a record, nor add anything.
    for url in &kubo_urls {
        let outsider = KuboClient::new(url);
        assert!(
            outsider.pins_named("ehr-record:").await.is_err(),
            "{url} listed pins"
        );
        assert!(
            outsider.unpin("bafkqaaa").await.is_err(),
            "{url} took an unpin"
        );
        let wrong = KuboClient::new(url).with_token("not-the-token");
        assert!(wrong.version().await.is_err(), "{url} took a wrong token");
    }
    assert_eq!(
        replicas.peers()[1]
            .pins_named("ehr-record:")
            .await
            .unwrap()
            .len()
            + replicas.peers()[2]
                .pins_named("ehr-record:")
                .await
                .unwrap()
                .len()
            + replicas.peers()[0]
                .pins_named("ehr-record:")
                .await
                .unwrap()
                .len(),
        6,
        "3 records (2 by the client, 1 through the gateway), 2 copies each"
    );

    // The gateway, on its own host, reads the patient's trail from the chain's host.
    let audit: serde_json::Value = rest
        .get(format!("{gw}/api/patients/{patient_addr}/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = audit["events"].as_array().unwrap();
    assert!(events.len() >= 4, "{audit}");

    // One Kubo host drops off the network (its link cut: packets vanish, nothing answers or
    // resets): the record still reads from the other copy, and uploads go on with 2 of 3.
    ip(&["-n", &net.ns("kubo0"), "link", "set", "eth0", "down"]);
    let t = Instant::now();
    let again = patient.get(id).await.unwrap();
    assert_eq!(again.data, payload);
    let degraded_ms = t.elapsed().as_millis();
    let mut degraded_upload_ms = Vec::new();
    for text in [
        "while a Kubo host is away",
        "still away",
        "away again",
        "and again",
    ] {
        let t = Instant::now();
        let late = patient
            .put(patient_addr, Bytes::from(text), "text/plain", None)
            .await
            .unwrap();
        degraded_upload_ms.push(t.elapsed().as_millis());
        assert_eq!(&patient.get(late).await.unwrap().data[..], text.as_bytes());
    }
    kubos[0].take();

    for (mut child, _) in share_nodes {
        child.stop(Duration::from_secs(5)).await;
    }
    gateway.stop(Duration::from_secs(5)).await;
    // Frames are counted where they enter and where they leave the bridge: half is the wire.
    format!(
        "[multihost] Kubo peers connected {peering_ms} ms after start; upload {} KB: first {first_upload_ms} ms, then {upload_ms} ms; granted read: {read_ms} ms; with one Kubo host cut off: read {degraded_ms} ms, uploads {degraded_upload_ms:?} ms; bytes on the wire (TCP payload) for 2 uploads + 3 reads (1 granted, 2 denied) by the client and 1 upload + 1 read through the gateway: share nodes {}, chain JSON-RPC {}, Kubo RPC {}, Kubo swarm (replication) {}",
        payload.len() / 1000,
        to_nodes.len() / 2,
        to_chain.len() / 2,
        kubo_api.len() / 2,
        swarm.len() / 2
    )
}

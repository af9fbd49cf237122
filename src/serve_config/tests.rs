//! Unit tests of the parent module.

use super::*;

const GOOD: &str = r#"
listen = "127.0.0.1:8080"
[chain]
rpc_url = "http://127.0.0.1:8545"
deployment = "deployment.json"
[ipfs]
api_url = "http://127.0.0.1:5001"
[records]
threshold = 2
[[records.share_nodes]]
url = "http://127.0.0.1:7001"
address = "0x0000000000000000000000000000000000000001"
[[records.share_nodes]]
url = "http://127.0.0.1:7002"
address = "0x0000000000000000000000000000000000000002"
[database]
url = "sqlite://data/ehr.db"
"#;

#[test]
fn a_good_config_loads_with_paths_next_to_it() {
    let c = ServeConfig::parse(GOOD, Path::new("/etc/ehr/ehr.toml")).unwrap();
    assert_eq!(c.database.url, "sqlite:///etc/ehr/data/ehr.db");
    assert_eq!(
        c.chain.deployment.as_deref(),
        Some(Path::new("/etc/ehr/deployment.json"))
    );
}

#[test]
fn the_example_in_the_repository_is_valid() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("ehr.example.toml");
    let c = ServeConfig::load_with(Some(&p), |_| None).unwrap();
    assert_eq!(c.records.share_nodes.len(), 3);
    assert!(c.tls.is_none());
}

#[test]
fn mistakes_name_their_key() {
    let p = Path::new("ehr.toml");
    let e = ServeConfig::parse(&GOOD.replace("threshold = 2", "threshold = 3"), p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("records.threshold") && e.contains("between 1 and 2"),
        "{e}"
    );
    let e = ServeConfig::parse(&format!("{GOOD}\n[dev]\nmnemonic = \"test test\"\n"), p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`dev.mnemonic` is a development-only setting"),
        "{e}"
    );
    let e = ServeConfig::parse(&GOOD.replace("listen", "lissen"), p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("lissen"), "{e}");
    let e = ServeConfig::parse(&GOOD.replace("7002", "7001"), p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("repeats a URL"), "{e}");
    let e = ServeConfig::parse(&GOOD.replace("127.0.0.1:8080", "eighty"), p)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("`listen`"), "{e}");
    let e = ServeConfig::parse(&format!("{GOOD}[web]\ndata_dir = \"w\"\n"), p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("web.data_dir") && e.contains("[database] url"),
        "{e}"
    );
    let e = ServeConfig::parse(
        &GOOD.replace("sqlite://data/ehr.db", "postgres://u:pw@h/db"),
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("database.url") && !e.contains("pw@"), "{e}");
    let e = ServeConfig::parse(&format!("{GOOD}[proxy]\ntrusted = [\"10.0.0.0/33\"]\n"), p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("proxy") && e.contains("trusted"), "{e}");
}

#[test]
fn every_key_comes_from_the_environment_too() {
    let env = |v: &str| {
        Some(
            match v {
                "EHR_LISTEN" => "0.0.0.0:9000",
                "EHR_CHAIN_RPC_URL" => "http://chain:8545",
                "EHR_CHAIN_DEPLOYMENT" => "/srv/deployment.json",
                "EHR_IPFS_API_URL" => "http://kubo:5001",
                "EHR_RECORDS_THRESHOLD" => "1",
                "EHR_RECORDS_SHARE_NODES" => {
                    "http://s1:7001=0x0000000000000000000000000000000000000001, http://s2:7001=0x0000000000000000000000000000000000000002"
                }
                "EHR_DATABASE_URL" => "mysql://ehr:pw@db:3306/ehr",
                "EHR_WEB_SECURE_COOKIES" => "yes",
                "EHR_PROXY_TRUSTED" => "10.0.0.0/8, 127.0.0.1/32",
                _ => return None,
            }
            .to_owned(),
        )
    };
    // No file at all: a container's environment is the whole configuration.
    let c = ServeConfig::load_with(None, env).unwrap();
    assert_eq!(c.listen, "0.0.0.0:9000");
    assert_eq!(c.chain.rpc_url, "http://chain:8545");
    assert_eq!(c.records.threshold, 1);
    assert_eq!(c.records.share_nodes.len(), 2);
    assert_eq!(c.records.share_nodes[1].url, "http://s2:7001");
    assert_eq!(c.database.url, "mysql://ehr:pw@db:3306/ehr");
    assert!(c.web.secure_cookies);
    assert_eq!(c.proxy.unwrap().trusted.len(), 2);
    // The environment wins over the file.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ehr.toml");
    std::fs::write(&f, GOOD).unwrap();
    let c = ServeConfig::load_with(Some(&f), |v| {
        (v == "EHR_RECORDS_THRESHOLD").then(|| "1".to_owned())
    })
    .unwrap();
    assert_eq!(c.records.threshold, 1);
    let e = ServeConfig::load_with(Some(&f), |v| {
        (v == "EHR_RECORDS_THRESHOLD").then(|| "three".to_owned())
    })
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("EHR_RECORDS_THRESHOLD"), "{e}");
}

#[test]
fn padding_defaults_to_padme_and_names_its_key_when_wrong() {
    let p = Path::new("ehr.toml");
    let c = ServeConfig::parse(GOOD, p).unwrap();
    assert_eq!(c.records.padding, Padding::Padme);
    assert_eq!(c.records.padding.scheme(), crate::crypto::Scheme::CURRENT);
    let with = |v: &str| GOOD.replace("threshold = 2", &format!("threshold = 2\npadding = {v}"));
    let c = ServeConfig::parse(&with("\"power-of-two\""), p).unwrap();
    assert_eq!(
        c.records.padding.scheme(),
        crate::crypto::Scheme::PowerOfTwo
    );
    let e = ServeConfig::parse(&with("\"pow2\""), p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("padding") && e.contains("power-of-two"), "{e}");
}

#[test]
fn ipfs_peers_and_replication_are_checked() {
    let p = Path::new("ehr.toml");
    let one = ServeConfig::parse(GOOD, p).unwrap();
    assert_eq!(
        (one.ipfs.replication(), one.ipfs.clients().unwrap().len()),
        (1, 1)
    );
    let peers = r#"api_url = "http://127.0.0.1:5001"
peers = ["http://10.0.0.2:5001", "http://10.0.0.3:5001"]"#;
    let three = ServeConfig::parse(
        &GOOD.replace(r#"api_url = "http://127.0.0.1:5001""#, peers),
        p,
    )
    .unwrap();
    assert_eq!(three.ipfs.replication(), 2, "the default is 2 copies");
    assert_eq!(three.ipfs.replicas().unwrap().peers().len(), 3);
    let e = ServeConfig::parse(
        &GOOD.replace(
            r#"api_url = "http://127.0.0.1:5001""#,
            &format!("{peers}\nreplication = 4"),
        ),
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("ipfs.replication") && e.contains("between 1 and 3"),
        "{e}"
    );
    let e = ServeConfig::parse(
        &GOOD.replace(
            r#"api_url = "http://127.0.0.1:5001""#,
            "api_url = \"http://127.0.0.1:5001\"\npeers = [\"http://127.0.0.1:5001/\"]",
        ),
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("ipfs.peers") && e.contains("listed twice"),
        "{e}"
    );
}

#[test]
fn confirmations_default_to_one_and_are_bounded() {
    let p = Path::new("ehr.toml");
    assert_eq!(ServeConfig::parse(GOOD, p).unwrap().chain.confirmations, 1);
    let with = |n: &str| {
        GOOD.replace(
            "deployment = \"deployment.json\"",
            &format!("deployment = \"deployment.json\"\nconfirmations = {n}"),
        )
    };
    assert_eq!(
        ServeConfig::parse(&with("12"), p)
            .unwrap()
            .chain
            .confirmations,
        12
    );
    for bad in ["0", "65"] {
        let e = ServeConfig::parse(&with(bad), p).unwrap_err().to_string();
        assert!(e.contains("chain.confirmations"), "{e}");
    }
}

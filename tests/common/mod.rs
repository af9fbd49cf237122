//! Fixtures for end-to-end tests: one real anvil and one real Kubo per test binary, started
//! through the product's own `stack` code, plus helpers for fresh funded accounts.
//!
//! The services live on a runtime of their own (a static one), so they outlive each test's
//! runtime; they are tethered to this process and stop when the test binary exits.
//!
//! `EHR_TEST_CHAIN=geth` runs the same tests on geth `--dev` instead of anvil (a second EVM
//! client; `scripts/test` runs the suites that use no anvil-only method that way too).

#![allow(dead_code, unreachable_pub)]

pub mod mariadb;
pub mod nodes;
pub mod ports;
pub mod web;

use std::path::{Path, PathBuf};
use std::sync::{LazyLock, OnceLock};

use alloy::primitives::U256;
use alloy::providers::ext::AnvilApi;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use ehr_share::chain::{Deployment, EhrChain, PatientAddr};
use ehr_share::config::{AnvilSettings, Tools};
use ehr_share::ipfs::KuboClient;
use ehr_share::stack::{AnvilNode, KuboNode, KuboOptions, free_port, start_anvil, start_kubo};

/// The project folder.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("fixture runtime")
});

/// The services shared by the tests of one binary.
pub struct Stack {
    /// anvil (absent on geth).
    pub anvil: Option<AnvilNode>,
    /// geth `--dev` (with `EHR_TEST_CHAIN=geth`).
    pub geth: Option<ehr_share::stack::GethNode>,
    /// The chain's JSON-RPC URL, whichever client it is.
    pub rpc_url: String,
    /// The chain id.
    pub chain_id: u64,
    pub kubo: KuboNode,
    _repo: tempfile::TempDir,
}

/// Whether the tests run on geth (`EHR_TEST_CHAIN=geth`) rather than anvil.
pub fn on_geth() -> bool {
    std::env::var("EHR_TEST_CHAIN").is_ok_and(|v| v == "geth")
}

static STACK: OnceLock<Stack> = OnceLock::new();
static CONTRACT: OnceLock<Deployment> = OnceLock::new();

/// Starts (once) anvil on a free port with anvil.toml's other settings, and Kubo with a
/// throw-away repo; waits for both to be healthy.
pub fn stack() -> &'static Stack {
    STACK.get_or_init(|| {
        std::thread::spawn(|| RT.block_on(start()))
            .join()
            .expect("fixture thread")
    })
}

async fn start() -> Stack {
    let tools = Tools::in_project(root());
    let repo = tempfile::tempdir().unwrap();
    let (anvil, geth, rpc_url, chain_id) = if on_geth() {
        let geth = ehr_share::stack::start_geth(
            &ehr_share::stack::GethOptions {
                bin: ehr_share::stack::geth_in(root()),
                datadir: None,
                http_port: free_port().unwrap(),
                authrpc_port: free_port().unwrap(),
                p2p_port: free_port().unwrap(),
            },
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("geth did not start (run scripts/setup): {e}"));
        // The records office's key (account 0 of the dev mnemonic) pays for the deployment.
        geth.fund(
            office_key().address(),
            U256::from(10_000u128 * 10u128.pow(18)),
        )
        .await
        .unwrap();
        let url = geth.rpc_url.clone();
        (None, Some(geth), url, ehr_share::stack::GETH_DEV_CHAIN_ID)
    } else {
        let mut settings = AnvilSettings::load(&root().join("anvil.toml")).expect("anvil.toml");
        settings.port = free_port().unwrap();
        settings.state_file.clear();
        let anvil = start_anvil(&tools.anvil, &settings, false)
            .await
            .unwrap_or_else(|e| panic!("anvil did not start (run scripts/setup): {e}"));
        let url = anvil.rpc_url.clone();
        (Some(anvil), None, url, settings.chain_id)
    };
    let kubo = start_kubo(
        &KuboOptions {
            bin: tools.ipfs.clone(),
            repo: repo.path().join("kubo"),
            api_port: free_port().unwrap(),
            gateway_port: free_port().unwrap(),
            network: None,
        },
        false,
    )
    .await
    .unwrap_or_else(|e| panic!("Kubo did not start (run scripts/setup): {e}"));
    let ipfs = KuboClient::new(&kubo.api_url);
    let v = ipfs.version().await.unwrap();
    let http = ProviderBuilder::new().connect_http(rpc_url.parse().unwrap());
    let client = http.get_client_version().await.unwrap();
    eprintln!("[fixture] {client} at {rpc_url} (chain id {chain_id})");
    eprintln!(
        "[fixture] Kubo {} (commit {}) at {}",
        v.version, v.commit, kubo.api_url
    );
    Stack {
        anvil,
        geth,
        rpc_url,
        chain_id,
        kubo,
        _repo: repo,
    }
}

/// Serves the gateway `state` on a free loopback port for the rest of the test; its URL.
pub async fn serve_gateway(state: ehr_share::gateway::AppState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(ehr_share::gateway::serve(
        listener,
        state,
        std::future::pending(),
    ));
    url
}

/// The RPC URL of the shared chain.
pub fn rpc() -> String {
    stack().rpc_url.clone()
}

/// The shared chain's id.
pub fn chain_id() -> u64 {
    stack().chain_id
}

/// A fresh random account funded with 100 ether: `anvil_setBalance` on anvil, a transfer
/// from the developer account on geth.
pub async fn funded() -> PrivateKeySigner {
    let signer = PrivateKeySigner::random();
    let wei = U256::from(100u128 * 10u128.pow(18));
    if on_geth() {
        ehr_share::stack::geth_fund(&rpc(), signer.address(), wei)
            .await
            .unwrap();
    } else {
        let p = ProviderBuilder::new().connect_http(rpc().parse().unwrap());
        p.anvil_set_balance(signer.address(), wei).await.unwrap();
    }
    signer
}

/// Makes the chain produce a block now (anvil mines only for transactions here): `evm_mine`
/// on anvil, a 1-wei transfer on geth.
pub async fn mine_block() {
    if on_geth() {
        ehr_share::stack::geth_fund(&rpc(), PrivateKeySigner::random().address(), U256::from(1))
            .await
            .unwrap();
    } else {
        let p = ProviderBuilder::new().connect_http(rpc().parse().unwrap());
        p.raw_request::<_, String>("evm_mine".into(), ())
            .await
            .unwrap();
    }
}

/// Anchors a record of `addr` by `author`'s account alone (its leaf is the root), with no share
/// nodes: what the contract tests need. Returns the record's proof.
pub async fn anchor_alone(
    author: &EhrChain,
    addr: PatientAddr,
    digest: alloy::primitives::B256,
) -> ehr_share::chain::merkle::RecordProof {
    let salt = ehr_share::chain::random_b256();
    let id = ehr_share::chain::RecordId::derive(author.from(), addr, salt);
    let leaf = ehr_share::chain::merkle::leaf(id, addr, author.from(), digest);
    author.anchor_root(leaf, 1).await.unwrap();
    ehr_share::chain::merkle::RecordProof {
        patient: addr,
        author: author.from(),
        salt,
        digest,
        root: leaf,
        proof: Vec::new(),
    }
}

/// A patient address no other test uses.
pub fn unique_patient() -> PatientAddr {
    let pid = u64::from_le_bytes(
        PrivateKeySigner::random().address().0[..8]
            .try_into()
            .unwrap(),
    ) | 1;
    PatientAddr::new(7, pid).unwrap()
}

/// The contract deployed once per test binary; the records office is returned as a client.
pub async fn office() -> EhrChain {
    let settings = AnvilSettings::load(&root().join("anvil.toml")).unwrap();
    let office = ehr_share::cli::demo_signer(&settings, 0).unwrap();
    if let Some(d) = CONTRACT.get() {
        return EhrChain::connect(&rpc(), Some(office), d).await.unwrap();
    }
    let (chain, d) = EhrChain::deploy(&rpc(), office.clone(), office.address())
        .await
        .unwrap();
    match CONTRACT.set(d) {
        Ok(()) => chain,
        // Another test deployed first: use theirs.
        Err(_) => EhrChain::connect(&rpc(), Some(office), CONTRACT.get().unwrap())
            .await
            .unwrap(),
    }
}

/// The same contract as `office`, signing as `signer`.
pub fn as_(office: &EhrChain, signer: &PrivateKeySigner) -> EhrChain {
    office.with_signer(&rpc(), signer.clone()).unwrap()
}

/// The `ehr` binary built by cargo for this test run.
pub fn ehr_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ehr"))
}

/// The records office's key (account 0 of the dev mnemonic).
pub fn office_key() -> PrivateKeySigner {
    let settings = AnvilSettings::load(&root().join("anvil.toml")).unwrap();
    ehr_share::cli::demo_signer(&settings, 0).unwrap()
}

/// A fresh funded account registered as the patient at a fresh address (issued by the office).
pub async fn new_patient(office: &EhrChain) -> (PrivateKeySigner, PatientAddr) {
    let key = funded().await;
    let addr = unique_patient();
    office.issue_patient(addr, key.address()).await.unwrap();
    (key, addr)
}

/// A fresh funded account registered as a provider and verified by the office.
pub async fn verified_doctor(office: &EhrChain) -> PrivateKeySigner {
    let key = funded().await;
    as_(office, &key).register_provider().await.unwrap();
    office.verify_provider(key.address()).await.unwrap();
    key
}

#[allow(unused_imports)] // each test binary uses some
pub use ports::{quiet_port, quiet_ports};

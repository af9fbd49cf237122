//! Transaction latency on a local node: send, then wait for the receipt, one after another,
//! with alloy's receipt poll interval for local nodes (250 ms) and with the 10 ms the chain
//! client uses (`chain::client::LOCAL_POLL`), measured in the same run on one anvil that
//! already holds 2,000 blocks.
//!
//! `cargo bench --bench tx_latency` prints the table and writes `docs/tx-latency.md`.

use std::path::Path;
use std::time::{Duration, Instant};

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::U256;
use alloy::providers::ext::AnvilApi;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use ehr_share::config::{AnvilSettings, Tools};
use ehr_share::stack::{free_port, start_anvil};

const TXS: usize = 200;
const BLOCKS_BEFORE: u64 = 2_000;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn run(
    rpc: &str,
    poll: Option<Duration>,
    key: PrivateKeySigner,
) -> anyhow::Result<Vec<Duration>> {
    let client = RpcClient::new_http(rpc.parse()?);
    let client = match poll {
        Some(p) => client.with_poll_interval(p),
        None => client,
    };
    let from = key.address();
    let p = ProviderBuilder::new()
        .wallet(EthereumWallet::from(key))
        .connect_client(client);
    let mut times = Vec::with_capacity(TXS);
    for i in 0..TXS {
        let tx = TransactionRequest::default()
            .with_from(from)
            .with_to(alloy::primitives::Address::with_last_byte(7))
            .with_value(U256::from(i + 1));
        let t = Instant::now();
        p.send_transaction(tx).await?.get_receipt().await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut settings = AnvilSettings::load(&root.join("anvil.toml"))?;
    settings.port = free_port()?;
    settings.state_file.clear();
    let anvil = start_anvil(&Tools::in_project(root).anvil, &settings, false).await?;
    let rpc = anvil.rpc_url.clone();
    let admin = ProviderBuilder::new().connect_http(rpc.parse()?);
    admin.anvil_mine(Some(BLOCKS_BEFORE), None).await?;
    let mut rows = Vec::new();
    for (name, poll) in [
        ("alloy default for local nodes (250 ms)", None),
        ("chain client (10 ms)", Some(Duration::from_millis(10))),
    ] {
        let key = PrivateKeySigner::random();
        admin
            .anvil_set_balance(key.address(), U256::from(10u128.pow(20)))
            .await?;
        let t = run(&rpc, poll, key).await?;
        let total: Duration = t.iter().sum();
        rows.push(format!(
            "| {name} | {TXS} | {:.1} | {:.1} | {:.1} | {:.1} |",
            percentile(&t, 0.5),
            percentile(&t, 0.95),
            percentile(&t, 0.99),
            TXS as f64 / total.as_secs_f64()
        ));
    }
    let report = format!(
        "# Transaction latency on a local node\n\n\
         `cargo bench --bench tx_latency` (release build): {TXS} value transfers sent one after \
         another, each waiting for its receipt, on one anvil (automine) holding {BLOCKS_BEFORE} \
         blocks, with two receipt poll intervals in the same run. The chain client uses 10 ms for \
         nodes on this host (`src/chain/client.rs`, `LOCAL_POLL`); remote nodes keep alloy's \
         default.\n\n\
         | poll interval | transactions | p50 ms | p95 ms | p99 ms | per second |\n\
         |---|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    println!("{report}");
    std::fs::write(root.join("docs/tx-latency.md"), report)?;
    Ok(())
}

//! The foundation's services are real: anvil answers JSON-RPC, Kubo stores and returns bytes.

mod common;

use alloy::providers::{Provider, ProviderBuilder};
use bytes::Bytes;
use ehr_share::config::{AnvilSettings, Tools};
use ehr_share::ipfs::KuboClient;
use ehr_share::stack::{StackError, start_anvil};
use rand_core::RngCore;

#[tokio::test]
async fn anvil_is_a_real_chain() {
    let s = common::stack()
        .anvil
        .as_ref()
        .expect("this test runs on anvil");
    let p = ProviderBuilder::new().connect_http(s.rpc_url.parse().unwrap());
    assert_eq!(p.get_chain_id().await.unwrap(), s.settings.chain_id);
    let before = p.get_block_number().await.unwrap();
    p.raw_request::<_, String>("evm_mine".into(), ())
        .await
        .unwrap();
    assert_eq!(p.get_block_number().await.unwrap(), before + 1);
    assert!(p.get_client_version().await.unwrap().starts_with("anvil/"));
}

#[tokio::test]
async fn kubo_round_trips_10_mib_byte_identical() {
    let ipfs = KuboClient::new(&common::stack().kubo.api_url);
    let mut data = vec![0u8; 10 << 20];
    rand_core::OsRng.fill_bytes(&mut data);
    let data = Bytes::from(data);
    // Stream it in 1 MiB chunks, as uploads do.
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(1 << 20)
        .map(|c| Ok(data.slice_ref(c)))
        .collect();
    let cid = ipfs
        .add_stream(futures::stream::iter(chunks))
        .await
        .unwrap();
    assert!(
        cid.starts_with("bafk") || cid.starts_with("bafy"),
        "CIDv1 expected, got {cid}"
    );
    let back = ipfs.cat(&cid).await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "content differs after the round trip");
    ipfs.unpin(&cid).await.unwrap();
}

#[tokio::test]
async fn unknown_content_is_not_found_not_hung() {
    let ipfs = KuboClient::new(&common::stack().kubo.api_url);
    let cid = ipfs
        .add_bytes(Bytes::from_static(b"ephemeral"))
        .await
        .unwrap();
    let other = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    assert_ne!(cid, other);
    let err = ipfs.cat(other).await.unwrap_err();
    assert!(
        matches!(err, ehr_share::ipfs::IpfsError::NotFound { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_second_anvil_on_a_busy_port_is_reported_with_its_log() {
    let s = common::stack();
    let mut settings: AnvilSettings = s.anvil.as_ref().expect("on anvil").settings.clone();
    settings.chain_id = 4242; // the health check must not mistake the first anvil for this one
    let tools = Tools::in_project(common::root());
    let err = start_anvil(&tools.anvil, &settings, false)
        .await
        .unwrap_err();
    match err {
        StackError::Crashed { log, .. } => {
            assert!(log.to_lowercase().contains("address"), "log: {log}")
        }
        other => panic!("expected a crash report, got {other}"),
    }
}

fn random_address() -> alloy::primitives::Address {
    let mut b = [0u8; 20];
    rand_core::OsRng.fill_bytes(&mut b);
    b.into()
}

/// The pid of the anvil listening on `port` (the managed child is the shell that tethers it).
fn anvil_pid(port: u16) -> Option<i32> {
    let want = format!("--port\0{port}\0");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        // Not the shell that tethers it, whose arguments name anvil too.
        let program = cmd.split('\0').next()?;
        (program.ends_with("/bin/anvil") && cmd.contains(&want)).then_some(pid)
    })
}

/// The development chain's journal (`stack::AnvilState`, what `ehr dev` acknowledges an
/// upload on): transactions mined before a settle survive anvil's SIGKILL, with no dump of the
/// chain written, by the replay before the next start; those mined after it are lost with the
/// process (nothing acknowledged them); the restarted chain journals on from where it is.
#[tokio::test]
async fn a_chain_killed_after_a_settle_keeps_every_journaled_transaction() {
    use alloy::network::TransactionBuilder;
    use alloy::primitives::{Address, U256};
    use alloy::rpc::types::TransactionRequest;
    use ehr_share::records::Durability;
    use ehr_share::stack::{AnvilState, free_port};

    let dir = tempfile::tempdir().unwrap();
    let mut settings: AnvilSettings = common::stack()
        .anvil
        .as_ref()
        .expect("on anvil")
        .settings
        .clone();
    settings.port = free_port().unwrap();
    settings.chain_id = 4343;
    settings.block_time_secs = 0;
    settings.state_interval_secs = 0;
    let file = dir.path().join("anvil-state.json");
    settings.state_file = file.display().to_string();
    let tools = Tools::in_project(common::root());
    let state = AnvilState::new(settings.rpc_url(), &file);

    state.recover(&tools.anvil, &settings).await.unwrap();
    let mut node = start_anvil(&tools.anvil, &settings, false).await.unwrap();
    let p = ProviderBuilder::new().connect_http(settings.rpc_url().parse().unwrap());
    let from = p.get_accounts().await.unwrap();
    let pay = |from: Address, to: Address, wei: u64| {
        let p = p.clone();
        async move {
            let tx = TransactionRequest::default()
                .with_from(from)
                .with_to(to)
                .with_value(U256::from(wei));
            p.send_transaction(tx)
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
        }
    };
    let kept: Vec<(Address, u64)> = (1..=4).map(|i| (random_address(), i * 1000)).collect();
    for (i, (to, wei)) in kept.iter().enumerate() {
        pay(from[i % 2], *to, *wei).await;
    }
    state.settle(std::time::Instant::now()).await.unwrap();
    assert!(!file.exists(), "settling wrote the whole chain");
    let lost: Vec<Address> = (0..2).map(|_| random_address()).collect();
    for to in &lost {
        pay(from[0], *to, 7).await;
    }

    let pid = anvil_pid(settings.port).expect("anvil runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    node.child.wait_exit().await;
    assert!(!file.exists(), "a SIGKILL dumps nothing");

    assert_eq!(
        state.recover(&tools.anvil, &settings).await.unwrap(),
        4,
        "the four settled payments are replayed, and nothing after them"
    );
    let mut node = start_anvil(&tools.anvil, &settings, false).await.unwrap();
    for (to, wei) in &kept {
        assert_eq!(
            p.get_balance(*to).await.unwrap(),
            U256::from(*wei),
            "a journaled payment to {to}"
        );
    }
    for to in &lost {
        assert_eq!(
            p.get_balance(*to).await.unwrap(),
            U256::ZERO,
            "a payment after the settle"
        );
    }

    // The restarted chain journals on from its replayed head: a payment settled now survives
    // the next SIGKILL too.
    let later = random_address();
    pay(from[1], later, 99).await;
    state.settle(std::time::Instant::now()).await.unwrap();
    let pid = anvil_pid(settings.port).expect("anvil runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    node.child.wait_exit().await;
    // The journal still holds the four (until a copy of the state file does), which the state
    // file now holds too: only the one payment since is new to it.
    assert_eq!(state.recover(&tools.anvil, &settings).await.unwrap(), 1);
    let mut node = start_anvil(&tools.anvil, &settings, false).await.unwrap();
    assert_eq!(p.get_balance(later).await.unwrap(), U256::from(99u64));
    assert_eq!(
        p.get_balance(kept[0].0).await.unwrap(),
        U256::from(kept[0].1)
    );

    // A copy of the state file set aside holds every journaled block: the journal empties.
    let journal = ehr_share::stack::journal_path(&file);
    assert!(std::fs::metadata(&journal).unwrap().len() > 0);
    state.back_up().await.unwrap();
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
    assert!(file.with_extension("json.good").exists());
    node.child.stop(std::time::Duration::from_secs(5)).await;
}

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

//! #1: a record can only be claimed by whoever uploaded it. On an anvil of its own with
//! automining off (a public mempool), an attacker who is a registered patient copies the
//! victim's pending anchoring transaction as it is, and anchors a root of their own, with a
//! higher tip so theirs are mined first, then presents their root as the victim's record's.
//! They get nothing from any share node, the CLI's records client or the REST API; the
//! victim's upload completes and reads back.

mod common;

use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes as AlloyBytes};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use bytes::Bytes;
use common::nodes;
use ehr_share::chain::{EhrAccess, RecordId, merkle};
use ehr_share::gateway::Keyring;

const SECRET: &str = "VICTIM-PLAINTEXT-3b91";

/// The input of the first pending transaction from `from` to `to`, once it shows up.
async fn pending_input(p: &impl Provider, from: Address, to: Address) -> AlloyBytes {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pool: serde_json::Value = p.raw_request("txpool_content".into(), ()).await.unwrap();
        let txs = pool["pending"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|(a, _)| a.parse::<Address>().ok() == Some(from))
            .flat_map(|(_, by_nonce)| by_nonce.as_object().unwrap().values());
        for tx in txs {
            if tx["to"].as_str().and_then(|t| t.parse::<Address>().ok()) == Some(to) {
                return tx["input"].as_str().unwrap().parse().unwrap();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the victim's anchoring transaction never reached the mempool"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_copied_anchoring_transaction_steals_nothing() {
    let office = common::office().await;
    let procs = nodes::start_many(office.address(), 5, &[]).await;
    let refs = nodes::refs(&procs).await;
    let (victim, victim_addr) = common::new_patient(&office).await;
    let (attacker, attacker_addr) = common::new_patient(&office).await;
    let rpc = common::rpc();
    let anvil = ProviderBuilder::new().connect_http(rpc.parse().unwrap());

    // A public mempool: transactions wait until a block is mined on request.
    let _: () = anvil
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .unwrap();
    let victim_client = nodes::client(&office, &victim, &refs);
    let upload = tokio::spawn(async move {
        victim_client
            .put(
                victim_addr,
                Bytes::from_static(SECRET.as_bytes()),
                "text/plain",
                Some("secret.txt".into()),
            )
            .await
    });
    let input = pending_input(&anvil, victim.address(), office.address()).await;
    let call = EhrAccess::anchorCall::abi_decode(&input).unwrap();

    // The attacker front-runs with a higher tip: the victim's anchoring transaction copied as it
    // is (so the attacker anchors the victim's root), and a root of the attacker's own (a leaf
    // claiming a record of the attacker's patient address).
    let attacker_p = ProviderBuilder::new()
        .wallet(EthereumWallet::from(attacker.clone()))
        .connect_http(rpc.parse().unwrap());
    let own_leaf = merkle::leaf(
        RecordId::derive(attacker.address(), attacker_addr, B256::repeat_byte(1)),
        attacker_addr,
        attacker.address(),
        B256::repeat_byte(2),
    );
    let own = EhrAccess::anchorCall {
        root: own_leaf,
        count: 1,
    }
    .abi_encode();
    let mut sent = Vec::new();
    for data in [input.to_vec(), own] {
        let tx = TransactionRequest::default()
            .with_to(office.address())
            .with_input(data)
            .with_gas_limit(400_000)
            .with_max_fee_per_gas(200_000_000_000)
            .with_max_priority_fee_per_gas(100_000_000_000);
        sent.push(*attacker_p.send_transaction(tx).await.unwrap().tx_hash());
    }
    let _: String = anvil.raw_request("evm_mine".into(), ()).await.unwrap();
    let _: () = anvil
        .raw_request("evm_setAutomine".into(), (true,))
        .await
        .unwrap();

    // Both of the attacker's transactions were mined: the victim's root is anchored by the
    // attacker. That changes nothing: a root names no patient, and each record under it is
    // bound to its uploader and patient by its id and leaf.
    for tx in &sent {
        let r = anvil.get_transaction_receipt(*tx).await.unwrap().unwrap();
        assert!(r.status());
    }
    assert_eq!(
        office.root(call.root).await.unwrap().unwrap().anchorer,
        attacker.address(),
        "the copy was mined first"
    );

    // The victim's upload completes (its own anchor reverts as a duplicate; the root is on
    // chain all the same), bound to the victim.
    let victim_id = tokio::time::timeout(Duration::from_secs(60), upload)
        .await
        .expect("the victim's upload finishes")
        .unwrap()
        .expect("the victim's upload succeeds");
    let located = nodes::client(&office, &victim, &refs)
        .directory()
        .locate(victim_id)
        .await
        .unwrap();
    assert_eq!(
        (
            located.proof.author,
            located.proof.patient,
            located.proof.root
        ),
        (victim.address(), victim_addr, call.root)
    );
    let id = victim_id;
    // The attacker presents their own anchored root as the victim's record's: refused by every
    // node (the proof must lead from what the victim deposited).
    for r in &refs {
        let resp = nodes::present(r, victim_id, own_leaf, &[]).await;
        assert_eq!(resp.status(), 400, "node {} took a foreign root", r.url);
    }
    let attacker_id = RecordId::derive(attacker.address(), attacker_addr, B256::repeat_byte(1));

    // The attacker gets nothing: not from any node directly, for either id ...
    for target in [victim_id, attacker_id] {
        for r in &refs {
            let resp = nodes::release(&office, r, &attacker, target).await;
            assert_ne!(resp.status(), 200, "node {} released {target}", r.url);
            assert!(!resp.text().await.unwrap().contains("share\""));
        }
    }
    // ... nor through the records client the CLI uses ...
    let attacker_client = nodes::client(&office, &attacker, &refs);
    assert!(attacker_client.get(victim_id).await.is_err());
    assert!(attacker_client.get(attacker_id).await.is_err());
    // ... nor through the REST API.
    let mut keyring = Keyring::default();
    keyring.insert("tok-attacker", attacker.clone());
    let url = nodes::gateway_with_records(&office, keyring, refs.clone()).await;
    for target in [victim_id, attacker_id] {
        let r = reqwest::Client::new()
            .get(format!("{url}/records/{target}"))
            .bearer_auth("tok-attacker")
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(
            !status.is_success(),
            "REST gave the attacker {target}: {text}"
        );
        assert!(!text.contains(SECRET));
    }
    // The victim reads the record back, byte-identical.
    let got = nodes::client(&office, &victim, &refs)
        .get(id)
        .await
        .unwrap();
    assert_eq!(got.data, SECRET.as_bytes());
}

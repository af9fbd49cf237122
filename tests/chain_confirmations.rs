//! Writes wait for the configured confirmations (`chain.confirmations`), on an anvil of its own
//! that mines a block a second (this binary turns automatic mining off).

mod common;

use alloy::providers::ext::AnvilApi;
use alloy::providers::{Provider, ProviderBuilder};

use common::{as_, funded, office};

#[tokio::test]
async fn a_write_returns_only_once_its_confirmations_are_mined() {
    let office = office().await;
    let key = funded().await;
    let node = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
    node.anvil_set_auto_mine(false).await.unwrap();
    node.anvil_set_interval_mining(1).await.unwrap();

    let doctor = as_(&office, &key).with_confirmations(3);
    assert_eq!(doctor.confirmations(), 3);
    let out = doctor.register_provider().await.unwrap();
    let latest = node.get_block_number().await.unwrap();
    assert!(
        latest >= out.block + 2,
        "returned at block {latest} for a transaction in block {}: fewer than 3 confirmations",
        out.block
    );
    // Clients made from it keep the setting.
    assert_eq!(
        doctor
            .with_signer(&common::rpc(), key)
            .unwrap()
            .confirmations(),
        3
    );
}

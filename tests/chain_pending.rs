//! Transactions of one account sent while its earlier ones still wait in the pool, on an anvil
//! of its own (this binary turns automatic mining off).
//!
//! Gas is estimated against the latest block; a transaction still pending ahead of it can make
//! it dearer. Found by the load bench (426 of 1,023 concurrent grants by one patient reverted,
//! out of gas, with a 500); the chain client now leaves headroom above the estimate.

mod common;

use std::time::Duration;

use alloy::providers::ext::AnvilApi;
use alloy::providers::{Provider, ProviderBuilder};

use common::{as_, funded, office, unique_patient};

#[tokio::test]
async fn a_grant_estimated_behind_a_pending_change_is_mined() {
    let office = office().await;
    let patient = as_(&office, &funded().await);
    let addr = unique_patient();
    office.issue_patient(addr, patient.from()).await.unwrap();
    let doctor = as_(&office, &funded().await);
    doctor.register_provider().await.unwrap();
    office.verify_provider(doctor.from()).await.unwrap();
    let now = office.chain_time().await.unwrap();
    let (e1, e2) = (now + 86_400, now + 2 * 86_400);
    patient.grant(doctor.from(), Some(e1)).await.unwrap();

    // From here blocks come once a second: a transaction waits in the pool until then.
    let node = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
    node.anvil_set_auto_mine(false).await.unwrap();
    node.anvil_set_interval_mining(1).await.unwrap();

    // The grant moves to e2 and waits in the pool ...
    let ahead = {
        let (p, d) = (patient.clone(), doctor.from());
        tokio::spawn(async move { p.grant(d, Some(e2)).await })
    };
    let from = patient.from();
    assert!(
        common::nodes::wait_until(Duration::from_secs(10), || {
            let node = node.clone();
            async move {
                let latest = node.get_transaction_count(from).await.unwrap();
                let pending = node.get_transaction_count(from).pending().await.unwrap();
                pending > latest
            }
        })
        .await,
        "the first grant waits in the pool"
    );
    // ... while the grant back to e1 is estimated on the latest block, where it writes the
    // value the slot already has (cheap), and runs after the first (a real change).
    let behind = patient.grant(doctor.from(), Some(e1)).await;
    let ahead = ahead.await.unwrap();

    node.anvil_set_interval_mining(0).await.unwrap();
    node.anvil_set_auto_mine(true).await.unwrap();
    ahead.expect("the first grant is mined");
    behind.expect("the grant behind it is mined, not out of gas");
    let grants = office.grants(addr, 0, 100).await.unwrap();
    assert!(
        grants
            .iter()
            .any(|g| g.provider == doctor.from() && g.expires_at == Some(e1)),
        "the last grant wins: {grants:?}"
    );
}

//! A reorganisation that drops a doctor's access transaction, on an anvil of its own (this
//! binary replaces blocks with anvil's snapshot and revert, which would pull the chain from
//! under any other test sharing it). Its tests take turns ([`CHAIN`]) for the same reason.

mod common;

use std::time::Duration;

use alloy::providers::{Provider, ProviderBuilder};
use bytes::Bytes;

use common::nodes;

/// Held by each test for its whole run: one test's revert would drop the other's blocks.
static CHAIN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A share node remembers where each access transaction put its event, to spare a re-read
/// calls to the chain. The attack: a doctor reads a record once (the node now remembers the
/// access), then the block with the access transaction is replaced (a reorganisation; here
/// anvil's revert to a snapshot taken before it) and the transaction is gone, with the
/// patient's audit entry for it. The doctor asks the node again naming that transaction. A
/// node that trusted what it remembered released the share on an access that is on no chain
/// (and so on no audit trail); it must refuse, as it does for a transaction it never saw.
#[tokio::test]
async fn a_share_is_not_released_on_an_access_transaction_a_reorganisation_dropped() {
    let _turn = CHAIN.lock().await;
    let office = common::office().await;
    let procs = nodes::start_many(office.address(), 3, &[]).await;
    let refs = nodes::refs(&procs).await;
    let (patient, addr) = common::new_patient(&office).await;
    let id = nodes::client(&office, &patient, &refs)
        .put(
            addr,
            Bytes::from_static(b"a record read before a reorganisation"),
            "text/plain",
            None,
        )
        .await
        .unwrap();
    let doctor = common::verified_doctor(&office).await;
    common::as_(&office, &patient)
        .grant(doctor.address(), None)
        .await
        .unwrap();

    let p = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
    let snap: alloy::primitives::U256 = p.raw_request("evm_snapshot".into(), ()).await.unwrap();
    let access = common::as_(&office, &doctor)
        .access(addr, &[id])
        .await
        .unwrap();
    let tx = access.tx.tx_hash;
    let release = |i: usize| {
        let (office, node, doctor) = (&office, &refs[i], &doctor);
        async move {
            let r = nodes::release_under(office, node, doctor, id, tx).await;
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    // Read once on every node: each remembers the access event.
    for i in 0..refs.len() {
        let (status, text) = release(i).await;
        assert_eq!(status, 200, "node {i} before the reorganisation: {text}");
    }

    // The access transaction's block is replaced: another block takes its number, and then
    // some (fewer than a node's settled depth).
    let _: bool = p.raw_request("evm_revert".into(), (snap,)).await.unwrap();
    assert!(
        p.get_transaction_by_hash(tx).await.unwrap().is_none(),
        "the revert dropped the access transaction"
    );
    for _ in 0..3 {
        common::mine_block().await;
    }

    for i in 0..refs.len() {
        let (status, text) = release(i).await;
        assert_eq!(
            status, 403,
            "node {i} after the reorganisation dropped the access transaction: {text}"
        );
    }

    // A new access transaction on the new chain reads again: the grant still stands.
    let again = common::as_(&office, &doctor)
        .access(addr, &[id])
        .await
        .unwrap();
    let ok = nodes::wait_until(Duration::from_secs(10), || {
        let (office, node, doctor) = (&office, &refs[0], &doctor);
        async move {
            nodes::release_under(office, node, doctor, id, again.tx.tx_hash)
                .await
                .status()
                == 200
        }
    })
    .await;
    assert!(
        ok,
        "a new access transaction after the reorganisation reads"
    );
}

/// A node with a lag bound on an endpoint that names block 0 finalized until its switch is
/// set (`nodes::unfinalized_rpc`), on which a doctor under a grant read a record once on an
/// access transaction, and then a reorganisation dropped that transaction's block: anvil's
/// revert to a snapshot taken just before it.
struct Dropped {
    office: ehr_share::chain::EhrChain,
    refs: Vec<ehr_share::records::ShareNodeRef>,
    doctor: alloy::signers::local::PrivateKeySigner,
    id: ehr_share::chain::RecordId,
    tx: alloy::primitives::B256,
    all_final: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _node: nodes::NodeProc,
}

/// The endpoint a [`Dropped`] node asks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// Names block 0 finalized until the switch is set.
    Unfinalized,
    /// Names every block finalized from the start, and refuses batch requests: the node sends
    /// its calls one by one, which a load balancer may route to different replicas.
    SplitAllFinal,
}

impl Dropped {
    async fn new() -> Self {
        Self::on(Endpoint::Unfinalized).await
    }

    async fn on(endpoint: Endpoint) -> Self {
        let office = common::office().await;
        let (mut rpc, all_final) = nodes::unfinalized_rpc(common::rpc()).await;
        if endpoint == Endpoint::SplitAllFinal {
            all_final.store(true, std::sync::atomic::Ordering::SeqCst);
            rpc = nodes::unbatched_rpc(rpc).await.0;
        }
        let node = nodes::start_on(&rpc, office.address(), &["--max-chain-lag-secs", "3600"]).await;
        let refs = nodes::refs(std::slice::from_ref(&node)).await;
        let (patient, addr) = common::new_patient(&office).await;
        let id = nodes::client(&office, &patient, &refs)
            .put(
                addr,
                Bytes::from_static(b"a record read before a reorganisation"),
                "text/plain",
                None,
            )
            .await
            .unwrap();
        let doctor = common::verified_doctor(&office).await;
        common::as_(&office, &patient)
            .grant(doctor.address(), None)
            .await
            .unwrap();
        let p = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
        let snap: alloy::primitives::U256 = p.raw_request("evm_snapshot".into(), ()).await.unwrap();
        let tx = common::as_(&office, &doctor)
            .access(addr, &[id])
            .await
            .unwrap()
            .tx
            .tx_hash;
        let d = Self {
            office,
            refs,
            doctor,
            id,
            tx,
            all_final,
            _node: node,
        };
        // Twice: the first looks the transaction up, the second is judged on what the node
        // remembers, its block checked (not final yet), which must not make it trusted later.
        for _ in 0..2 {
            assert_eq!(d.release().await.0, 200, "before the reorganisation");
        }
        let _: bool = p.raw_request("evm_revert".into(), (snap,)).await.unwrap();
        assert!(p.get_transaction_by_hash(tx).await.unwrap().is_none());
        d
    }

    /// The doctor's release naming the dropped transaction: status and the start of the body.
    async fn release(&self) -> (u16, String) {
        let r =
            nodes::release_under(&self.office, &self.refs[0], &self.doctor, self.id, self.tx).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, text.chars().take(200).collect())
    }

    /// A refused request makes the node look at the head (and the finalized block) again:
    /// it remembers the head it last saw for half a second.
    async fn refresh_head(&self) {
        let stranger = alloy::signers::local::PrivateKeySigner::random();
        let r = nodes::release(&self.office, &self.refs[0], &stranger, self.id).await;
        assert_eq!(r.status(), 403);
    }
}

/// The same attack where the reorganisation is deeper than 64 blocks, on a chain that has not
/// finalized them (an L2 finalizes with its L1, many of its blocks later). A node with a lag
/// bound took an access event 64 blocks deep as final and released on what it remembered
/// without asking whether the block was still the chain's; it must go by the endpoint's
/// `finalized` block instead, which here is still block 0.
#[tokio::test]
async fn a_deep_reorganisation_before_finality_is_caught() {
    let _turn = CHAIN.lock().await;
    let d = Dropped::new().await;
    for _ in 0..70 {
        common::mine_block().await;
    }
    d.refresh_head().await;
    let (status, text) = d.release().await;
    assert_eq!(
        status, 403,
        "released on an access transaction a reorganisation dropped, 70 blocks deep on a chain that finalized none of them: {text}"
    );
}

/// A height the chain finalizes after a reorganisation vouches for the block that holds it
/// now, not for the one the node saw the access event in. A node with a lag bound read once
/// on an access (remembering its block); a reorganisation replaces that block before the
/// chain finalized it; then the chain finalizes that height, with the new block. A node that
/// took "at or below finalized" as final released on the dropped access; it must check the
/// block once at a moment the height is final, and then it finds the hash changed.
#[tokio::test]
async fn a_height_finalized_after_a_reorganisation_vouches_for_no_dropped_block() {
    let _turn = CHAIN.lock().await;
    let d = Dropped::new().await;
    for _ in 0..3 {
        common::mine_block().await;
    }
    d.all_final.store(true, std::sync::atomic::Ordering::SeqCst);
    d.refresh_head().await;
    let (status, text) = d.release().await;
    assert_eq!(
        status, 403,
        "released on an access whose block a reorganisation replaced before its height was final: {text}"
    );
}

/// The attack on an endpoint that refuses batch requests, so that the node sends a judgement's
/// calls one by one: behind a load balancer that routes per request, the access block's hash
/// and the finalized block may then come from two replicas, one on a fork that holds the
/// access block, the other having finalized that height on the chain that does not. Here the
/// endpoint names every block final from the start, and the doctor's reads before the
/// reorganisation see the block's hash beside a finalized block above it. A node that took
/// that as final released on the dropped access after the reorganisation; on such an
/// endpoint it must take no access as final, and check the block on every release.
#[tokio::test]
async fn on_an_endpoint_that_splits_batches_no_access_is_taken_as_final() {
    let _turn = CHAIN.lock().await;
    let d = Dropped::on(Endpoint::SplitAllFinal).await;
    // The chain goes on past the height the node last judged at.
    for _ in 0..3 {
        common::mine_block().await;
    }
    d.refresh_head().await;
    let (status, text) = d.release().await;
    assert_eq!(
        status, 403,
        "released on a dropped access whose block a split batch's finalized block vouched for: {text}"
    );
}

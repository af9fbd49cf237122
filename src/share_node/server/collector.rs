//! The node's background work: forgetting spent nonces, collecting deposits never anchored,
//! and halting when the contract at its address stops being its deployment.

use super::*;

/// Every `sweep_every`: forget spent nonces, delete deposits never anchored within
/// `unanchored_ttl` (or whose anchor does not match them), and check that the contract at our
/// address is still our deployment.
pub(super) async fn collect(n: Arc<Node>) {
    let mut tick = tokio::time::interval(n.cfg.limits.sweep_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&n).await {
            tracing::warn!("share node collector: {e}");
        }
    }
}

/// How often release nonces committed without waiting for the disk are made durable.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Every second: make the release nonces of the last second durable (one disk write for all
/// of them rather than one per read; see [`ShareStore::use_release_nonce`]).
pub(super) async fn flush(n: Arc<Node>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // An fsync: off the async workers, so releases do not wait behind it.
        let node = n.clone();
        match tokio::task::spawn_blocking(move || node.cfg.store.flush()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("share node store flush: {e}"),
            Err(e) => tracing::warn!("share node store flush task: {e}"),
        }
    }
}

pub(super) async fn sweep(n: &Node) -> Result<(), String> {
    let store = &n.cfg.store;
    let t = now();
    let pruned = store.prune_nonces(t).map_err(|e| e.to_string())?;
    // The contract must still be the one the store was opened for: same code (immutables,
    // so the deployment id, included). No code, or other code, halts the node for good.
    match n.cfg.chain.code_hash().await {
        Ok(now_hash) => {
            let first = n.cfg.store.binding().code_hash;
            if now_hash != first {
                if !n.halted.swap(true, Ordering::SeqCst) {
                    tracing::error!(
                        "the contract at {} changed (code {now_hash}, was {first}; the chain was reset or replaced): this node stops serving",
                        n.cfg.chain.address()
                    );
                }
                return Ok(());
            }
        }
        Err(e) => return Err(format!("chain unreachable: {e}")),
    }
    // Deposits whose uploader never presented an anchored root (a failed or abandoned
    // upload) are deleted: nothing can read them, and they count against the uploader's quota.
    let cutoff = t.saturating_sub(n.cfg.limits.unanchored_ttl.as_secs());
    let mut collected = 0;
    for record in store
        .pending_before(cutoff, 512)
        .map_err(|e| e.to_string())?
    {
        store
            .remove_unanchored(&record)
            .map_err(|e| e.to_string())?;
        collected += 1;
    }
    if pruned + collected > 0 {
        tracing::info!(
            pruned_nonces = pruned,
            collected_deposits = collected,
            "share node collector"
        );
    }
    Ok(())
}

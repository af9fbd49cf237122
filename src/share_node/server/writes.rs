//! The write path: deposits of shares (`PUT /shares/{record}`, `POST /deposits`) and the
//! proofs that make them readable (`POST /shares/{record}/anchor`, `POST /anchors`).
//!
//! A single request and a batch go through the same steps, so a batch is no way around a
//! check: every item passes the checks that need no chain (each counted against the rate
//! limits as its own request), then the chain is asked at once for all of them (once per
//! anchored root and once per patient and uploader, a few questions at a time), then every
//! accepted item is written in one transaction. Each item gets the answer its own request
//! would have had.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;

use super::*;

/// Chain questions a request asks at once.
const ASKED_AT_ONCE: usize = 8;
/// Largest share, commitments and sealed block of one deposit together, hex (a batch of
/// [`DEPOSITS_PER_BATCH`] of them fits [`BATCH_BODY_LIMIT`]; one alone fits [`BODY_LIMIT`]).
const DEPOSIT_CONTENT_LIMIT: usize = 60 * 1024;

/// A deposit that passed every check needing no chain: what it stores, and for whom.
struct CheckedDeposit {
    id: RecordId,
    patient: PatientAddr,
    nonce: [u8; 32],
    deadline: u64,
    stored: StoredShare,
}

/// The checks of a deposit that need no chain: its size, its signature (and the uploader's
/// rate limit), its content against the signed hash, the share and commitments well formed,
/// the id derived from its uploader.
fn check_deposit(n: &Node, id: RecordId, mut b: DepositBody) -> Result<CheckedDeposit, Refusal> {
    if b.share.len() + b.commitments.len() + b.sealed_block.len() > DEPOSIT_CONTENT_LIMIT {
        return Err(Refusal::new(
            ErrorKind::TooLarge,
            format!(
                "a deposit's share, commitments and sealed block hold at most {DEPOSIT_CONTENT_LIMIT} hex digits"
            ),
        ));
    }
    let d = &b.deposit;
    check_signed(n, id, d, &b.signature)?;
    if DepositBody::content_hash(&b.share, &b.commitments, &b.sealed_block) != d.contentHash {
        return Err(bad("content does not match the signed content hash"));
    }
    // Hex in one spelling from here on: the store compares a retried deposit's strings with
    // its own lowercase ones, and a retry spelled in capitals is the same content.
    for text in [&mut b.share, &mut b.commitments, &mut b.sealed_block] {
        text.make_ascii_lowercase();
    }
    crate::shamir::Share::from_bytes(
        &crate::strict_hex::decode(&b.share).map_err(|_| bad("share is not hex"))?,
    )
    .map_err(|e| bad(e.to_string()))?;
    crate::shamir::Commitments::check_bytes(
        &crate::strict_hex::decode(&b.commitments).map_err(|_| bad("commitments are not hex"))?,
    )
    .map_err(|e| bad(e.to_string()))?;
    crate::strict_hex::decode(&b.sealed_block).map_err(|_| bad("sealed block is not hex"))?;
    let patient =
        PatientAddr::from_key(d.patient).ok_or_else(|| bad("patient key 0 is not a patient"))?;
    // The id must be the one the contract will give this uploader's record: then nobody else
    // can ever anchor it, and the release check ties the share to that anchor.
    if RecordId::derive(d.uploader, patient, d.salt) != id {
        return Err(bad(
            "record id is not recordIdOf(uploader, patient, salt): it must be derived from its uploader",
        ));
    }
    Ok(CheckedDeposit {
        id,
        patient,
        nonce: d.nonce.to_be_bytes(),
        deadline: d.deadline,
        stored: StoredShare {
            patient: d.patient,
            uploader: d.uploader,
            salt: d.salt,
            digest: d.digest,
            anchor: None,
            share: b.share,
            commitments: b.commitments,
            sealed_block: b.sealed_block,
            stored_at: now(),
        },
    })
}

/// The answer to a deposit the store took (`Ok(true)`), found replayed (`Ok(false)`) or
/// refused.
fn deposited(r: Result<bool, StoreError>, n: &Node) -> Result<(), Refusal> {
    match r {
        Ok(true) => Ok(()),
        Ok(false) => Err(denied("deposit nonce already used (replay)")),
        Err(StoreError::Conflict(m)) => Err(Refusal::new(
            ErrorKind::Conflict,
            format!("a different share is stored for {m}"),
        )),
        Err(e @ StoreError::QuotaExceeded { .. }) => {
            Err(too_many(e.to_string(), n.cfg.limits.unanchored_ttl))
        }
        Err(e) => Err(internal(e)),
    }
}

/// Whether each uploader may write for each patient now, judged on a fresh view from one
/// batch of chain calls for all pairs (see [`Pinned::writers`](crate::chain::Pinned::writers)):
/// a batch of uploads names a few patients and one uploader. A denial on a remembered head is
/// asked again on the current one (the grant may be newer), as in [`may_read_now`].
async fn may_write_all(
    n: &Node,
    pairs: impl IntoIterator<Item = (PatientAddr, Address)>,
    verb: &'static str,
) -> HashMap<(PatientAddr, Address), Result<(), Refusal>> {
    let distinct: Vec<_> = pairs
        .into_iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let every = |pairs: Vec<_>, r: Refusal| pairs.into_iter().map(move |p| (p, Err(r.clone())));
    let view = match fresh_view(n, false).await {
        Ok(v) => v,
        Err(r) => return every(distinct, r).collect(),
    };
    let mut judged: HashMap<_, _> = may_write_at(n, view.at, &distinct, verb)
        .await
        .into_iter()
        .collect();
    if view.remembered {
        let again: Vec<_> = judged
            .iter()
            .filter(|(_, r)| matches!(r, Err(r) if r.is_denial()))
            .map(|(p, _)| *p)
            .collect();
        if !again.is_empty() {
            match fresh_view(n, true).await {
                Ok(v) => judged.extend(may_write_at(n, v.at, &again, verb).await),
                Err(r) => judged.extend(every(again, r)),
            }
        }
    }
    judged
}

/// [`may_write`] for each pair at block `at`; a failed batch fails every pair.
async fn may_write_at(
    n: &Node,
    at: BlockId,
    pairs: &[(PatientAddr, Address)],
    verb: &'static str,
) -> Vec<((PatientAddr, Address), Result<(), Refusal>)> {
    let writers = match n.cfg.chain.at(at).writers(pairs).await {
        Ok(w) => w,
        Err(e) => {
            let r = Refusal::from(e);
            return pairs.iter().map(|p| (*p, Err(r.clone()))).collect();
        }
    };
    futures::stream::iter(pairs.iter().copied().zip(writers))
        .map(|((patient, uploader), w)| async move {
            let r = may_write(n, at, patient, uploader, w, verb).await;
            ((patient, uploader), r)
        })
        .buffer_unordered(ASKED_AT_ONCE)
        .collect()
        .await
}

/// Whether `uploader` may add records for `patient` from what the chain said at block `at` (`w`): the patient themselves, a provider
/// under a grant in force, or an ingestion service the records office allowed while the
/// patient has an active device (the service seals the devices' signed readings; it can never
/// read). Break-glass opens reading only: an emergency never lets a provider write into a
/// chart the patient did not open to them.
///
/// Only a refusal asks more: whether the uploader is an ingestion service, and, for the
/// refusal's words, whether a grant was revoked.
async fn may_write(
    n: &Node,
    at: BlockId,
    patient: PatientAddr,
    uploader: Address,
    w: crate::chain::Writer,
    verb: &str,
) -> Result<(), Refusal> {
    if w.patient_account == Some(uploader) {
        return Ok(());
    }
    if w.reason != DenyReason::None {
        if n.cfg.chain.at(at).may_ingest(uploader, patient).await? {
            return Ok(());
        }
        let reason = n
            .cfg
            .chain
            .tell_revoked(patient, uploader, w.reason)
            .await?;
        return Err(denied(format!(
            "{uploader} {verb} add records for patient {patient}: {reason}"
        )));
    }
    if w.emergency {
        return Err(denied(format!(
            "{uploader} {verb} add records for patient {patient}: break-glass access opens reading only, not writing"
        )));
    }
    Ok(())
}

/// Items that passed the checks so far, by their place in the request, and the outcomes of
/// those that did not.
struct Outcomes<T> {
    done: Vec<Option<Result<(), Refusal>>>,
    ready: Vec<(usize, T)>,
}

impl<T> Outcomes<T> {
    fn new(items: usize) -> Self {
        Self {
            done: Vec::with_capacity(items),
            ready: Vec::new(),
        }
    }

    fn push(&mut self, r: Result<Option<T>, Refusal>) {
        match r {
            Ok(Some(t)) => {
                self.ready.push((self.done.len(), t));
                self.done.push(None);
            }
            Ok(None) => self.done.push(Some(Ok(()))),
            Err(refusal) => self.done.push(Some(Err(refusal))),
        }
    }

    /// Keeps the ready items `judge` lets through; the others get its refusal.
    fn keep(&mut self, mut judge: impl FnMut(&T) -> Result<(), Refusal>) {
        let done = &mut self.done;
        self.ready.retain(|(i, t)| match judge(t) {
            Ok(()) => true,
            Err(r) => {
                done[*i] = Some(Err(r));
                false
            }
        });
    }

    /// Every item's outcome, the ready ones from `written` (in their order).
    fn finish(
        mut self,
        written: impl IntoIterator<Item = Result<(), Refusal>>,
    ) -> Vec<Result<(), Refusal>> {
        for ((i, _), r) in self.ready.iter().zip(written) {
            self.done[*i] = Some(r);
        }
        self.done
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(internal("no outcome"))))
            .collect()
    }
}

/// Deposits `items`; each one's outcome, in order. Each item is counted against `client`'s
/// rate limit (`None`: counted by the caller).
async fn deposit_items(
    n: &Node,
    client: Option<&ConnectInfo<std::net::SocketAddr>>,
    items: Vec<(RecordId, DepositBody)>,
) -> Result<Vec<Result<(), Refusal>>, Refusal> {
    let mut out = Outcomes::new(items.len());
    for (id, body) in items {
        out.push(limit_client(n, client).and_then(|()| check_deposit(n, id, body).map(Some)));
    }
    let judged = may_write_all(
        n,
        out.ready
            .iter()
            .map(|(_, c)| (c.patient, c.stored.uploader)),
        "may not",
    )
    .await;
    out.keep(|c| judged[&(c.patient, c.stored.uploader)].clone());
    let quota = n.cfg.limits.deposit_quota;
    let rows: Vec<_> = out
        .ready
        .iter()
        .map(|(_, c)| OnceDeposit {
            record: &c.id.0.0,
            share: &c.stored,
            quota,
            uploader: &c.stored.uploader.0.0,
            nonce: &c.nonce,
            deadline: c.deadline,
        })
        .collect();
    // The requests' nonces and the shares in one write.
    let stored = if rows.is_empty() {
        Vec::new()
    } else {
        n.cfg.store.put_once_many(&rows).map_err(internal)?
    };
    let written: Vec<_> = stored.into_iter().map(|r| deposited(r, n)).collect();
    Ok(out.finish(written))
}

pub(super) async fn deposit(
    State(n): State<Arc<Node>>,
    client: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    Path(record): Path<String>,
    Json(b): Json<DepositBody>,
) -> Result<Json<serde_json::Value>, Refusal> {
    halted(&n)?;
    limit_client(&n, client.as_deref())?;
    let id = record_id(&record)?;
    let mut out = deposit_items(&n, None, vec![(id, b)]).await?;
    out.pop().unwrap_or_else(|| Err(internal("no outcome")))?;
    Ok(Json(
        json!({ "stored": id, "node": n.cfg.identity.address() }),
    ))
}

/// `POST /deposits`: see the module documentation.
pub(super) async fn deposits(
    State(n): State<Arc<Node>>,
    client: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    Json(b): Json<DepositBatch>,
) -> Result<Json<BatchAnswer>, Refusal> {
    halted(&n)?;
    batch_size(b.deposits.len(), DEPOSITS_PER_BATCH, "deposits")?;
    let items = b
        .deposits
        .into_iter()
        .map(|d| (d.record, d.request))
        .collect();
    let out = deposit_items(&n, client.as_deref(), items).await?;
    Ok(Json(answer(out)))
}

/// An empty batch (which would cost a write and no rate limit) or one over `max` is refused
/// whole.
fn batch_size(len: usize, max: usize, what: &str) -> Result<(), Refusal> {
    if len == 0 || len > max {
        return Err(bad(format!("1 to {max} {what} per request, not {len}")));
    }
    Ok(())
}

/// A batch's answer from its items' outcomes.
fn answer(results: Vec<Result<(), Refusal>>) -> BatchAnswer {
    BatchAnswer {
        results: results
            .into_iter()
            .map(|r| match r {
                Ok(()) => ItemAnswer {
                    status: 200,
                    error: None,
                },
                Err(refusal) => refusal.into_item(),
            })
            .collect(),
    }
}

/// A proof that leads from a deposited record's leaf to its root; the chain is still to
/// say that the root is anchored and the uploader may still write.
struct CheckedProof {
    id: RecordId,
    patient: PatientAddr,
    uploader: Address,
    anchor: Anchor,
}

/// The checks of a record's proof that need no chain: it leads from the leaf of what was
/// deposited here (its id, patient, uploader and digest) to its root. `None` when the record
/// was anchored already (the first anchor stays, and nothing more is asked or written).
fn check_proof(
    n: &Node,
    id: RecordId,
    root: B256,
    proof: Vec<B256>,
) -> Result<Option<CheckedProof>, Refusal> {
    if proof.len() > 64 {
        return Err(bad("a proof has at most 64 hashes"));
    }
    let Some(stored) = n.cfg.store.public(&id.0.0).map_err(internal)? else {
        return Err(not_stored(id));
    };
    let patient = PatientAddr::from_key(stored.patient)
        .ok_or_else(|| internal("stored share without a patient"))?;
    let leads = RecordProof {
        patient,
        author: stored.uploader,
        salt: stored.salt,
        digest: stored.digest,
        root,
        proof,
    };
    if leads.record_id() != id || !leads.holds() {
        return Err(bad(format!(
            "the proof does not lead from record {id}'s leaf (as deposited here) to root {root}"
        )));
    }
    if stored.anchor.is_some() {
        return Ok(None);
    }
    Ok(Some(CheckedProof {
        id,
        patient,
        uploader: stored.uploader,
        anchor: Anchor {
            root,
            proof: leads.proof,
        },
    }))
}

fn not_stored(id: RecordId) -> Refusal {
    Refusal::new(
        ErrorKind::NotFound,
        format!("no share stored for record {id}"),
    )
}

/// Keeps the proofs of `items` whose roots are anchored and whose uploaders may still write
/// for the patient (a provider revoked since the deposit may not finish the upload); each
/// one's outcome, in order.
async fn anchor_items(
    n: &Node,
    client: Option<&ConnectInfo<std::net::SocketAddr>>,
    items: Vec<(RecordId, B256, Vec<B256>)>,
) -> Result<Vec<Result<(), Refusal>>, Refusal> {
    let mut out = Outcomes::new(items.len());
    for (id, root, proof) in items {
        out.push(limit_client(n, client).and_then(|()| check_proof(n, id, root, proof)));
    }
    let roots: HashSet<B256> = out.ready.iter().map(|(_, p)| p.anchor.root).collect();
    let anchored: HashMap<B256, Result<bool, Refusal>> = futures::stream::iter(roots)
        .map(|root| async move { (root, anchored(n, root).await.map_err(Refusal::from)) })
        .buffer_unordered(ASKED_AT_ONCE)
        .collect()
        .await;
    out.keep(|p| match &anchored[&p.anchor.root] {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refusal::new(
            ErrorKind::Conflict,
            format!(
                "root {} is not anchored on chain (anchor it first)",
                p.anchor.root
            ),
        )),
        Err(r) => Err(r.clone()),
    });
    let judged = may_write_all(
        n,
        out.ready.iter().map(|(_, p)| (p.patient, p.uploader)),
        "may no longer",
    )
    .await;
    out.keep(|p| judged[&(p.patient, p.uploader)].clone());
    let rows: Vec<_> = out
        .ready
        .iter()
        .map(|(_, p)| (p.id.0.0, p.anchor.clone()))
        .collect();
    let kept = if rows.is_empty() {
        Vec::new()
    } else {
        n.cfg.store.mark_anchored_many(&rows).map_err(internal)?
    };
    // A deposit collected while the chain was asked is no longer here.
    let written: Vec<_> = kept
        .into_iter()
        .zip(&rows)
        .map(|(found, (record, _))| {
            if found {
                Ok(())
            } else {
                Err(not_stored(RecordId(B256::from(*record))))
            }
        })
        .collect();
    Ok(out.finish(written))
}

/// The uploader (or anyone: a proof proves itself) says where the record was anchored. The
/// node checks the proof, then keeps it with the share: the record is readable from now on
/// and is never collected. Answers the root kept (the first one, when anchored already).
pub(super) async fn anchor(
    State(n): State<Arc<Node>>,
    client: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    Path(record): Path<String>,
    Json(b): Json<AnchorBody>,
) -> Result<Json<serde_json::Value>, Refusal> {
    halted(&n)?;
    limit_client(&n, client.as_deref())?;
    let id = record_id(&record)?;
    let mut out = anchor_items(&n, None, vec![(id, b.root, b.proof)]).await?;
    out.pop().unwrap_or_else(|| Err(internal("no outcome")))?;
    // The proof is kept: a failed re-read answers the root presented, not an error.
    let kept = n.cfg.store.public(&id.0.0).ok().flatten();
    let root = kept.and_then(|p| p.anchor).map_or(b.root, |a| a.root);
    Ok(Json(json!({ "anchored": id, "root": root })))
}

/// `POST /anchors`: see the module documentation.
pub(super) async fn anchors(
    State(n): State<Arc<Node>>,
    client: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    Json(b): Json<AnchorBatch>,
) -> Result<Json<BatchAnswer>, Refusal> {
    halted(&n)?;
    batch_size(b.anchors.len(), ANCHORS_PER_BATCH, "proofs")?;
    let items = b
        .anchors
        .into_iter()
        .map(|a| (a.record, a.root, a.proof))
        .collect();
    let out = anchor_items(&n, client.as_deref(), items).await?;
    Ok(Json(answer(out)))
}

//! The access-control contract on a real anvil: every role path, every rejection decoded into
//! words, denials logged as events. (Time-moving tests live in `contract_time.rs`, on their own
//! anvil, so they cannot expire grants under these tests.)

mod common;

use alloy::primitives::{Address, B256};
use ehr_share::chain::merkle::{self, RecordProof};
use ehr_share::chain::{
    AuditFilter, AuditKind, DenyReason, EhrChain, EmergencyReason, GrantState, PatientAddr,
    ProviderStatus, RecordId, random_b256, sign_voucher,
};

use common::{as_, funded, office, unique_patient};

struct World {
    office: EhrChain,
    patient: EhrChain,
    addr: PatientAddr,
    doctor: EhrChain,
}

/// A fresh patient and a fresh verified doctor on the shared contract.
async fn world() -> World {
    let office = office().await;
    let patient = as_(&office, &funded().await);
    let addr = unique_patient();
    office.issue_patient(addr, patient.from()).await.unwrap();
    let doctor = as_(&office, &funded().await);
    doctor.register_provider().await.unwrap();
    office.verify_provider(doctor.from()).await.unwrap();
    World {
        office,
        patient,
        addr,
        doctor,
    }
}

async fn anchored(w: &World) -> RecordProof {
    common::anchor_alone(&w.patient, w.addr, B256::repeat_byte(0xab)).await
}

fn rejected(e: ehr_share::chain::ChainError, words: &str) {
    assert!(e.is_rejection(), "expected a decoded rejection, got {e}");
    assert!(e.to_string().contains(words), "{e:?} should say {words:?}");
}

#[tokio::test]
async fn patients_register_once_per_address_and_account() {
    let office = office().await;
    let p = as_(&office, &funded().await);
    let addr = unique_patient();
    office.issue_patient(addr, p.from()).await.unwrap();
    assert_eq!(office.patient_of(p.from()).await.unwrap(), Some(addr));
    assert_eq!(office.patient_account(addr).await.unwrap(), Some(p.from()));
    rejected(
        office
            .issue_patient(unique_patient(), p.from())
            .await
            .unwrap_err(),
        "already registered as a patient or provider",
    );
    let q = as_(&office, &funded().await);
    rejected(
        office.issue_patient(addr, q.from()).await.unwrap_err(),
        &format!("patient address {addr} is already registered"),
    );
    // Zero parts are rejected by the contract too (our type refuses to build them, so call raw).
    let raw = ehr_share::chain::EhrAccess::new(office.address(), office.provider().clone());
    let e = raw.issuePatient(0, 5, q.from()).send().await.unwrap_err();
    let decoded = e.as_decoded_interface_error::<ehr_share::chain::EhrAccess::EhrAccessErrors>();
    assert!(matches!(
        decoded,
        Some(ehr_share::chain::EhrAccess::EhrAccessErrors::InvalidPatientAddr(_))
    ));
    // A patient cannot also be a provider.
    rejected(
        p.register_provider().await.unwrap_err(),
        "already registered",
    );
}

/// Security #7: an `Addr` is issued by the records office (a transaction, or a voucher it signed
/// for exactly one account); claiming one yourself, with a voucher you signed, with someone
/// else's voucher or with an expired one, fails and changes nothing.
#[tokio::test]
async fn patient_addresses_are_issued_not_squatted() {
    let office = office().await;
    let office_key = common::office_key();
    let squatter_key = funded().await;
    let squatter = as_(&office, &squatter_key);
    let addr = unique_patient();
    let deadline = office.chain_time().await.unwrap() + 3600;
    // 1. A voucher the squatter signed for themself.
    let own = sign_voucher(&squatter_key, &office, addr, squatter.from(), deadline).unwrap();
    not_permitted(
        squatter
            .register_patient(addr, deadline, own)
            .await
            .unwrap_err(),
        "not signed by the records office",
    );
    // 2. The office's genuine voucher for the real patient, copied (e.g. from the mempool).
    let patient_key = funded().await;
    let patient = as_(&office, &patient_key);
    let genuine = sign_voucher(&office_key, &office, addr, patient.from(), deadline).unwrap();
    not_permitted(
        squatter
            .register_patient(addr, deadline, genuine.clone())
            .await
            .unwrap_err(),
        "not signed by the records office",
    );
    // 3. A voucher for another address than the one claimed.
    not_permitted(
        patient
            .register_patient(unique_patient(), deadline, genuine.clone())
            .await
            .unwrap_err(),
        "not signed by the records office",
    );
    // 4. An expired voucher.
    let now = office.chain_time().await.unwrap();
    let old = sign_voucher(&office_key, &office, addr, patient.from(), now - 1).unwrap();
    not_permitted(
        patient
            .register_patient(addr, now - 1, old)
            .await
            .unwrap_err(),
        "expired",
    );
    // 5. Issuing is the office's alone.
    not_permitted(
        squatter
            .issue_patient(addr, squatter.from())
            .await
            .unwrap_err(),
        "is not the records office",
    );
    assert_eq!(
        office.patient_account(addr).await.unwrap(),
        None,
        "nothing was claimed"
    );
    // The genuine voucher works for its account, once.
    patient
        .register_patient(addr, deadline, genuine.clone())
        .await
        .unwrap();
    assert_eq!(
        office.patient_account(addr).await.unwrap(),
        Some(patient.from())
    );
    rejected(
        patient
            .register_patient(addr, deadline, genuine)
            .await
            .unwrap_err(),
        "already registered",
    );
}

fn not_permitted(e: ehr_share::chain::ChainError, words: &str) {
    assert!(
        matches!(e, ehr_share::chain::ChainError::NotPermitted(_)),
        "expected a role refusal, got {e:?}"
    );
    assert!(e.to_string().contains(words), "{e:?} should say {words:?}");
}

#[tokio::test]
async fn providers_wait_for_verification_and_can_be_suspended() {
    let office = office().await;
    let d = as_(&office, &funded().await);
    d.register_provider().await.unwrap();
    assert_eq!(
        office.provider_status(d.from()).await.unwrap().0,
        ProviderStatus::Pending
    );
    let patient_addr = unique_patient();
    office
        .issue_patient(patient_addr, funded().await.address())
        .await
        .unwrap();
    rejected(
        d.request_access(patient_addr).await.unwrap_err(),
        &format!("provider {} is not verified", d.from()),
    );
    rejected(
        d.break_glass(patient_addr, EmergencyReason::Etreat)
            .await
            .unwrap_err(),
        "is not verified",
    );
    // Only the records office verifies.
    rejected(
        d.verify_provider(d.from()).await.unwrap_err(),
        "is not the records office",
    );
    office.verify_provider(d.from()).await.unwrap();
    rejected(
        office.verify_provider(d.from()).await.unwrap_err(),
        "already verified",
    );
    rejected(
        office
            .verify_provider(Address::repeat_byte(9))
            .await
            .unwrap_err(),
        "is not registered",
    );
    d.request_access(patient_addr).await.unwrap();
    rejected(
        d.request_access(patient_addr).await.unwrap_err(),
        "already has a pending request",
    );
    office.suspend_provider(d.from()).await.unwrap();
    assert_eq!(
        office.provider_status(d.from()).await.unwrap().0,
        ProviderStatus::Suspended
    );
    rejected(
        office.suspend_provider(d.from()).await.unwrap_err(),
        "is not pending or verified",
    );
    rejected(
        d.register_provider().await.unwrap_err(),
        "already registered",
    );
}

#[tokio::test]
async fn grant_read_revoke_and_every_denial_is_an_event() {
    let w = world().await;
    let rec = anchored(&w).await;
    let id = rec.record_id();

    // Never granted: denied, logged, counted.
    let o = w.doctor.access(w.addr, &[id]).await.unwrap();
    assert_eq!(o.denied, vec![(id, DenyReason::NoGrant)]);
    let denied_tx = Some(o.tx.tx_hash);
    assert!(
        !w.office
            .can_read(w.doctor.from(), &rec, denied_tx)
            .await
            .unwrap()
    );

    // Granted: allowed, and share nodes may now release on the strength of that transaction.
    w.patient.grant(w.doctor.from(), None).await.unwrap();
    let o = w.doctor.access(w.addr, &[id]).await.unwrap();
    assert_eq!(o.allowed, vec![id]);
    let granted_tx = Some(o.tx.tx_hash);
    assert!(
        w.office
            .can_read(w.doctor.from(), &rec, granted_tx)
            .await
            .unwrap()
    );
    assert!(
        !w.office
            .can_read(w.doctor.from(), &rec, None)
            .await
            .unwrap(),
        "a provider needs its access transaction"
    );
    assert!(
        !w.office
            .can_read(w.doctor.from(), &rec, denied_tx)
            .await
            .unwrap(),
        "a denied attempt opens nothing even while a grant is active"
    );
    let other = as_(&w.office, &funded().await);
    assert!(
        !w.office
            .can_read(other.from(), &rec, granted_tx)
            .await
            .unwrap(),
        "someone else's access transaction opens nothing"
    );
    assert!(
        w.office
            .can_read(w.patient.from(), &rec, None)
            .await
            .unwrap(),
        "the patient can always read"
    );
    let g = w.office.grants(w.addr, 0, 10).await.unwrap();
    assert_eq!(
        (g.len(), g[0].state, g[0].expires_at),
        (1, GrantState::Active, None)
    );

    // Revoked: denied from the next block, and the old access no longer opens shares.
    w.patient.revoke(w.doctor.from()).await.unwrap();
    assert!(
        !w.office
            .can_read(w.doctor.from(), &rec, granted_tx)
            .await
            .unwrap()
    );
    let o = w.doctor.access(w.addr, &[id]).await.unwrap();
    assert_eq!(o.denied, vec![(id, DenyReason::Revoked)]);
    rejected(
        w.patient.revoke(w.doctor.from()).await.unwrap_err(),
        "has no active grant",
    );
    assert_eq!(
        w.office.grants(w.addr, 0, 10).await.unwrap()[0].state,
        GrantState::Revoked
    );
    assert_eq!(
        w.office.provider_status(w.doctor.from()).await.unwrap().1,
        2,
        "two denied attempts counted"
    );

    // Re-granting replaces the revoked grant; an access from before the revocation does not count.
    w.patient.grant(w.doctor.from(), None).await.unwrap();
    assert!(
        !w.office
            .can_read(w.doctor.from(), &rec, granted_tx)
            .await
            .unwrap(),
        "needs a fresh access transaction"
    );

    // The patient's audit trail shows it all, newest first, with transaction hashes.
    let trail = w.office.audit_for_patient(w.addr, 0, 50).await.unwrap();
    let kinds: Vec<_> = trail.iter().map(|e| &e.kind).collect();
    let denials: Vec<_> = kinds
        .iter()
        .filter_map(|k| match k {
            AuditKind::AccessDenied {
                reason, provider, ..
            } if *provider == w.doctor.from() => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(denials, vec![DenyReason::Revoked, DenyReason::NoGrant]);
    assert!(matches!(kinds[0], AuditKind::GrantIssued { .. }));
    assert!(
        trail
            .iter()
            .all(|e| e.tx_hash.is_some() && e.timestamp.is_some())
    );
    assert!(trail.windows(2).all(|p| p[0].block >= p[1].block));
}

/// v3's access transaction names a patient and stores nothing. A provider granted by two
/// patients who reads one's record with an access transaction under the other patient's key
/// (allowed: the contract does not look records up) would read it without the read appearing in
/// its own patient's audit trail. The share nodes' check must refuse that transaction.
#[tokio::test]
async fn an_access_naming_another_patients_record_opens_nothing() {
    let w = world().await;
    let victim = world().await;
    let theirs_proof = anchored(&victim).await;
    let mine_proof = anchored(&w).await;
    let (theirs, mine) = (theirs_proof.record_id(), mine_proof.record_id());
    w.patient.grant(w.doctor.from(), None).await.unwrap();
    victim.patient.grant(w.doctor.from(), None).await.unwrap();
    let o = w.doctor.access(w.addr, &[theirs, mine]).await.unwrap();
    assert_eq!(
        o.allowed,
        vec![theirs, mine],
        "the contract does not look ids up"
    );
    let tx = Some(o.tx.tx_hash);
    assert!(
        w.office
            .can_read(w.doctor.from(), &mine_proof, tx)
            .await
            .unwrap()
    );
    assert!(
        !w.office
            .can_read(w.doctor.from(), &theirs_proof, tx)
            .await
            .unwrap(),
        "a read under another patient's key, missing from the record's own audit trail, opened it"
    );
    // The same record under its own patient's key: allowed, and in that patient's trail.
    let o = w.doctor.access(victim.addr, &[theirs]).await.unwrap();
    assert!(
        w.office
            .can_read(w.doctor.from(), &theirs_proof, Some(o.tx.tx_hash))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn unverified_suspended_and_strangers_are_denied_with_their_reason() {
    let w = world().await;
    let rec = anchored(&w).await;
    let id = rec.record_id();
    let stranger = as_(&w.office, &funded().await);
    let pending = as_(&w.office, &funded().await);
    pending.register_provider().await.unwrap();
    w.patient.grant(pending.from(), None).await.unwrap();
    w.patient.grant(w.doctor.from(), None).await.unwrap();
    w.office.suspend_provider(w.doctor.from()).await.unwrap();
    // Accounts the office never verified cannot write under the patient's topic at all
    // (security #4: no audit flooding by strangers); their attempt reverts.
    let before = w
        .office
        .audit_for_patient(w.addr, 0, 1000)
        .await
        .unwrap()
        .len();
    for who in [&stranger, &pending] {
        assert!(matches!(
            who.access(w.addr, &[id]).await.unwrap_err(),
            ehr_share::chain::ChainError::NotPermitted(_)
        ));
    }
    assert_eq!(
        w.office
            .audit_for_patient(w.addr, 0, 1000)
            .await
            .unwrap()
            .len(),
        before
    );
    // A suspended provider reverts too: suspension stops a provider who floods trails.
    assert!(matches!(
        w.doctor.access(w.addr, &[id]).await.unwrap_err(),
        ehr_share::chain::ChainError::NotPermitted(_)
    ));
    // A verified provider's attempts are logged, unknown records included.
    let d2 = as_(&w.office, &funded().await);
    d2.register_provider().await.unwrap();
    w.office.verify_provider(d2.from()).await.unwrap();
    assert_eq!(
        d2.access(w.addr, &[id]).await.unwrap().denied,
        vec![(id, DenyReason::NoGrant)]
    );
    // Batches are bounded.
    rejected(
        stranger.access(w.addr, &[]).await.unwrap_err(),
        "at least one record",
    );
    let many: Vec<_> = (0..33).map(|_| RecordId::random()).collect();
    rejected(
        stranger.access(w.addr, &many).await.unwrap_err(),
        "33 records in one access transaction; at most 32",
    );
}

#[tokio::test]
async fn requests_are_approved_or_declined_by_the_patient() {
    let w = world().await;
    let d2 = as_(&w.office, &funded().await);
    d2.register_provider().await.unwrap();
    w.office.verify_provider(d2.from()).await.unwrap();
    w.doctor.request_access(w.addr).await.unwrap();
    d2.request_access(w.addr).await.unwrap();
    let pending = w.office.pending_requests(w.addr, 0, 10).await.unwrap();
    assert_eq!(
        pending.iter().map(|r| r.provider).collect::<Vec<_>>(),
        vec![w.doctor.from(), d2.from()]
    );
    let until = w.office.chain_time().await.unwrap() + 10 * 365 * 86_400;
    w.patient
        .approve_request(w.doctor.from(), Some(until))
        .await
        .unwrap();
    w.patient.decline_request(d2.from()).await.unwrap();
    assert!(
        w.office
            .pending_requests(w.addr, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    rejected(
        w.patient.decline_request(d2.from()).await.unwrap_err(),
        "no pending request",
    );
    assert_eq!(
        w.office
            .check_access(w.addr, w.doctor.from())
            .await
            .unwrap()
            .0,
        DenyReason::None
    );
    assert_eq!(
        w.office.check_access(w.addr, d2.from()).await.unwrap().0,
        DenyReason::NoGrant
    );
    let g = w.office.grants(w.addr, 0, 10).await.unwrap();
    assert_eq!(g[0].expires_at, Some(until));
    rejected(
        w.doctor.request_access(unique_patient()).await.unwrap_err(),
        "no patient is registered at",
    );
    // Only patients grant; grants need a registered provider and a future expiry.
    rejected(
        w.doctor.grant(d2.from(), None).await.unwrap_err(),
        "is not a registered patient",
    );
    rejected(
        w.patient
            .grant(Address::repeat_byte(3), None)
            .await
            .unwrap_err(),
        "is not registered",
    );
    rejected(
        w.patient.grant(d2.from(), Some(1)).await.unwrap_err(),
        "is not in the future",
    );
}

/// Anchoring is a Merkle root that names no patient: anyone may anchor one, once, and what it
/// holds is proven leaf by leaf. The contract's `leafOf`/`verifyProof`/`isAnchored` agree with
/// the Rust tree for every leaf of a batch, and a proof binds its record to author and patient.
#[tokio::test]
async fn roots_anchor_batches_and_proofs_bind_each_record() {
    let w = world().await;
    let stranger = as_(&w.office, &funded().await);
    // A batch of 37 records of two patients, anchored by an account with no role at all.
    let other = world().await;
    let mut proofs = Vec::new();
    for i in 0..37u8 {
        let (author, addr) = if i % 2 == 0 {
            (&w.patient, w.addr)
        } else {
            (&other.patient, other.addr)
        };
        proofs.push(RecordProof {
            patient: addr,
            author: author.from(),
            salt: random_b256(),
            digest: B256::repeat_byte(i + 1),
            root: B256::ZERO,
            proof: Vec::new(),
        });
    }
    let leaves: Vec<B256> = proofs.iter().map(RecordProof::leaf).collect();
    let tree = merkle::Tree::new(&leaves);
    for (p, proof) in proofs.iter_mut().zip(&tree.proofs) {
        p.root = tree.root;
        p.proof = proof.clone();
    }
    assert!(
        !w.office.is_anchored(&proofs[0]).await.unwrap(),
        "nothing before the anchor"
    );
    let tx = stranger.anchor_root(tree.root, 37).await.unwrap();
    let root = w.office.root(tree.root).await.unwrap().unwrap();
    assert_eq!((root.anchorer, root.count), (stranger.from(), 37));
    for p in &proofs {
        assert!(
            w.office.is_anchored(p).await.unwrap(),
            "leaf of {}",
            p.record_id()
        );
    }
    rejected(
        w.patient.anchor_root(tree.root, 37).await.unwrap_err(),
        "is already anchored",
    );
    rejected(
        w.patient.anchor_root(B256::ZERO, 1).await.unwrap_err(),
        "must not be zero",
    );
    rejected(
        w.patient.anchor_root(random_b256(), 0).await.unwrap_err(),
        "a root holds 1 to 65536 records, not 0",
    );
    // Changing any field of a leaf breaks its proof: author, patient, salt (so the id), digest.
    let p = &proofs[0];
    for forged in [
        RecordProof {
            author: stranger.from(),
            ..p.clone()
        },
        RecordProof {
            patient: other.addr,
            ..p.clone()
        },
        RecordProof {
            salt: random_b256(),
            ..p.clone()
        },
        RecordProof {
            digest: random_b256(),
            ..p.clone()
        },
    ] {
        assert!(!forged.holds());
        assert!(!w.office.is_anchored(&forged).await.unwrap());
    }
    // The anchor is in the audit trail as a root, under no patient.
    let trail = w.office.audit_all(0, 10_000).await.unwrap();
    assert!(trail.iter().any(|e| matches!(e.kind,
        AuditKind::Anchored { root, count: 37, .. } if root == tree.root)
        && e.tx_hash == Some(tx.tx_hash)));
    assert!(
        w.office
            .audit_for_patient(w.addr, 0, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| !matches!(e.kind, AuditKind::Anchored { .. }))
    );
}

#[tokio::test]
async fn the_records_office_role_moves_in_two_steps() {
    // A deployment of its own, so the shared records office stays put for the other tests.
    let boss = funded().await;
    let heir = funded().await;
    let e = EhrChain::deploy(&common::rpc(), boss.clone(), Address::ZERO)
        .await
        .unwrap_err();
    assert!(e.is_rejection(), "{e}");
    let (mine, _) = EhrChain::deploy(&common::rpc(), boss.clone(), boss.address())
        .await
        .unwrap();
    let heir_chain = as_(&mine, &heir);
    rejected(
        heir_chain.accept_manager().await.unwrap_err(),
        "is not the nominated records office",
    );
    rejected(
        heir_chain
            .transfer_manager(heir.address())
            .await
            .unwrap_err(),
        "is not the records office",
    );
    mine.transfer_manager(heir.address()).await.unwrap();
    assert_eq!(
        mine.manager().await.unwrap(),
        boss.address(),
        "nothing moves before acceptance"
    );
    heir_chain.accept_manager().await.unwrap();
    assert_eq!(mine.manager().await.unwrap(), heir.address());
    rejected(
        mine.verify_provider(boss.address()).await.unwrap_err(),
        "is not the records office",
    );
}

#[tokio::test]
async fn every_state_change_emits_its_event() {
    let w = world().await;
    let d2 = as_(&w.office, &funded().await);
    d2.register_provider().await.unwrap();
    w.office.suspend_provider(d2.from()).await.unwrap();
    w.doctor.request_access(w.addr).await.unwrap();
    w.patient.decline_request(w.doctor.from()).await.unwrap();
    let root = anchored(&w).await.root;
    let mine = |e: &ehr_share::chain::AuditEvent| match &e.kind {
        AuditKind::PatientRegistered { account, .. } => *account == w.patient.from(),
        AuditKind::ProviderRegistered { provider } => {
            *provider == d2.from() || *provider == w.doctor.from()
        }
        AuditKind::ProviderVerified { provider } => *provider == w.doctor.from(),
        AuditKind::ProviderSuspended { provider } => *provider == d2.from(),
        AuditKind::AccessRequested { patient, .. } | AuditKind::RequestDeclined { patient, .. } => {
            *patient == Some(w.addr)
        }
        AuditKind::Anchored { root: r, .. } => *r == root,
        _ => false,
    };
    let names: std::collections::BTreeSet<String> = w
        .office
        .audit_all(0, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| mine(e))
        .map(|e| {
            serde_json::to_value(e).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let want = [
        "access_requested",
        "anchored",
        "patient_registered",
        "provider_registered",
        "provider_suspended",
        "provider_verified",
        "request_declined",
    ];
    assert_eq!(names.iter().map(String::as_str).collect::<Vec<_>>(), want);
}

/// Security #4: strangers cannot write under a patient's topic at all (see
/// `unverified_suspended_and_strangers_are_denied_with_their_reason`), and a verified provider who
/// floods it cannot hide a break-glass or a grant: the views filter by kind and page through the
/// whole history.
#[tokio::test]
async fn a_flood_of_denials_hides_no_grant_and_no_break_glass() {
    let w = world().await;
    let rec = anchored(&w).await;
    let id = rec.record_id();
    w.patient.grant(w.doctor.from(), None).await.unwrap();
    let medic = as_(&w.office, &funded().await);
    medic.register_provider().await.unwrap();
    w.office.verify_provider(medic.from()).await.unwrap();
    medic
        .break_glass(w.addr, EmergencyReason::Ertreat)
        .await
        .unwrap();
    let flooder = as_(&w.office, &funded().await);
    flooder.register_provider().await.unwrap();
    w.office.verify_provider(flooder.from()).await.unwrap();
    for _ in 0..4 {
        let o = flooder.access(w.addr, &[id; 32]).await.unwrap();
        assert_eq!(o.denied.len(), 32);
    }
    let all = w
        .office
        .audit_page_for_patient(w.addr, AuditFilter::All, 0, 50)
        .await
        .unwrap();
    assert!(all.total >= 128 + 3, "{}", all.total);
    assert!(
        all.events.iter().all(|e| e.kind.is_denial()),
        "the newest page is all flood"
    );
    // The filters keep what matters in view.
    let emergency = w
        .office
        .audit_page_for_patient(w.addr, AuditFilter::Emergency, 0, 50)
        .await
        .unwrap();
    assert!(matches!(emergency.events[..], [ref e] if matches!(e.kind,
        AuditKind::BreakGlassOpened { provider, .. } if provider == medic.from())));
    let grants = w
        .office
        .audit_page_for_patient(w.addr, AuditFilter::Grants, 0, 50)
        .await
        .unwrap();
    assert!(grants.events.iter().any(|e| matches!(e.kind,
        AuditKind::GrantIssued { provider, .. } if provider == w.doctor.from())));
    // Paging reaches the oldest event: the patient's registration.
    let last_page = (all.total - 1) / 50;
    let oldest = w
        .office
        .audit_page_for_patient(w.addr, AuditFilter::All, last_page * 50, 50)
        .await
        .unwrap();
    assert!(matches!(
        oldest.events.last().unwrap().kind,
        AuditKind::PatientRegistered { .. }
    ));
}

/// A freshly funded account can send its first transaction the moment funding returns, again
/// and again, while other accounts keep the chain busy. On geth this attacks a race: its
/// transaction pool moves its copy of the state to a new block in the background, so a send
/// right after the funding's receipt could be refused with "insufficient funds ... balance 0"
/// (seen once in CI).
#[tokio::test]
async fn a_funded_account_sends_at_once() {
    let office = office().await;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..4 {
        let office = office.clone();
        tasks.spawn(async move {
            for round in 0..25 {
                let d = as_(&office, &funded().await);
                if let Err(e) = d.register_provider().await {
                    panic!(
                        "task {task} round {round}: the funded account could not send: {}",
                        ehr_share::kind::with_sources(&e)
                    );
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// The calls a share node judges with, pinned to a block: at a block the endpoint has, the
/// state then (an account registered later is not there yet); at one it does not have yet (a
/// replica behind the head the node checked), an error that says the chain is unavailable
/// (503 at a node), never an answer and never a revert. Runs on anvil and on geth, whose
/// messages differ ("BlockOutOfRangeError", "header not found").
#[tokio::test]
async fn pinned_calls_answer_at_their_block_and_a_block_not_there_yet_is_unavailable() {
    use alloy::eips::BlockId;
    use alloy::providers::Provider as _;
    use ehr_share::kind::{Classify as _, ErrorKind};
    let office = office().await;
    let p = funded().await;
    let addr = unique_patient();
    let before = office.provider().get_block_number().await.unwrap();
    office.issue_patient(addr, p.address()).await.unwrap();
    let after = office.head().await.unwrap().number;
    assert!(after > before);
    assert_eq!(
        office
            .at(BlockId::number(before))
            .patient_account(addr)
            .await
            .unwrap(),
        None,
        "not registered yet at the block before"
    );
    assert_eq!(
        office
            .at(BlockId::number(after))
            .patient_account(addr)
            .await
            .unwrap(),
        Some(p.address())
    );
    let ahead = office.at(BlockId::number(after + 1_000));
    for e in [
        ahead.patient_account(addr).await.unwrap_err(),
        ahead.check_access_raw(addr, p.address()).await.unwrap_err(),
        ahead.may_ingest(p.address(), addr).await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e:?}");
    }
}

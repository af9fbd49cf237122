//! Time-dependent contract behaviour, on an anvil of its own (this binary moves the clock).

mod common;

use alloy::primitives::B256;
use alloy::providers::ext::AnvilApi;
use alloy::providers::{Provider, ProviderBuilder};
use ehr_share::chain::{AuditKind, DenyReason, GrantState, RecordId};

use common::{as_, funded, office, unique_patient};

async fn advance(secs: u64) {
    let p = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
    p.anvil_increase_time(secs).await.unwrap();
    p.raw_request::<_, String>("evm_mine".into(), ())
        .await
        .unwrap();
}

#[tokio::test]
async fn expiry_and_break_glass_lapse_by_themselves() {
    let office = office().await;
    let patient = as_(&office, &funded().await);
    let addr = unique_patient();
    patient.register_patient(addr).await.unwrap();
    let doctor = as_(&office, &funded().await);
    let medic = as_(&office, &funded().await);
    for d in [&doctor, &medic] {
        d.register_provider().await.unwrap();
        office.verify_provider(d.from()).await.unwrap();
    }
    let id = RecordId::random();
    patient
        .anchor_record(id, addr, B256::repeat_byte(7))
        .await
        .unwrap();

    // A one-hour grant: allowed now, expired after the hour.
    let now = office.chain_time().await.unwrap();
    patient
        .grant(doctor.from(), Some(now + 3600))
        .await
        .unwrap();
    assert_eq!(doctor.access(&[id]).await.unwrap().allowed, vec![id]);
    assert!(office.can_read(doctor.from(), id).await.unwrap());

    // Break-glass by a doctor without any grant: allowed, flagged as emergency, loud in the trail.
    medic.break_glass(addr, 42).await.unwrap();
    let o = medic.access(&[id]).await.unwrap();
    assert_eq!(o.allowed, vec![id]);
    assert_eq!(
        office.check_access(addr, medic.from()).await.unwrap(),
        (DenyReason::None, true)
    );
    let trail = office.audit_for_patient(addr, 0, 50).await.unwrap();
    assert!(
        trail.iter().any(|e| matches!(e.kind,
        AuditKind::BreakGlassOpened { provider, reason_code: 42, .. } if provider == medic.from()))
    );
    assert!(trail.iter().any(|e| matches!(e.kind,
        AuditKind::AccessAllowed { provider, emergency: true, .. } if provider == medic.from())));

    // The access window for share nodes is 30 minutes.
    advance(31 * 60).await;
    assert!(
        !office.can_read(doctor.from(), id).await.unwrap(),
        "access transaction older than the window"
    );

    // Past the hour: the grant has expired and break-glass has closed, with no transaction.
    advance(30 * 60).await;
    assert_eq!(
        doctor.access(&[id]).await.unwrap().denied,
        vec![(id, DenyReason::Expired)]
    );
    assert_eq!(
        medic.access(&[id]).await.unwrap().denied,
        vec![(id, DenyReason::NoGrant)]
    );
    assert_eq!(
        office.grants(addr, 0, 10).await.unwrap()[0].state,
        GrantState::Expired
    );
    let denied: Vec<_> = office
        .audit_for_provider(doctor.from(), 0, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.is_denial())
        .collect();
    assert_eq!(denied.len(), 1);
}

//! Time-dependent contract behaviour, on an anvil of its own (this binary moves the clock).

mod common;

use alloy::primitives::B256;
use alloy::providers::ext::AnvilApi;
use alloy::providers::{Provider, ProviderBuilder};
use ehr_share::chain::{AuditFilter, AuditKind, DenyReason, EmergencyReason, GrantState};

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
    office.issue_patient(addr, patient.from()).await.unwrap();
    let doctor = as_(&office, &funded().await);
    let medic = as_(&office, &funded().await);
    for d in [&doctor, &medic] {
        d.register_provider().await.unwrap();
        office.verify_provider(d.from()).await.unwrap();
    }
    let rec = common::anchor_alone(&patient, addr, B256::repeat_byte(7)).await;
    let id = rec.record_id();

    // A one-hour grant: allowed now, expired after the hour.
    let now = office.chain_time().await.unwrap();
    patient
        .grant(doctor.from(), Some(now + 3600))
        .await
        .unwrap();
    let o = doctor.access(addr, &[id]).await.unwrap();
    assert_eq!(o.allowed, vec![id]);
    let doctor_tx = Some(o.tx.tx_hash);
    assert!(
        office
            .can_read(doctor.from(), &rec, doctor_tx)
            .await
            .unwrap()
    );

    // Break-glass by a doctor without any grant: allowed, flagged as emergency, loud in the trail.
    medic
        .break_glass(addr, EmergencyReason::Etreat)
        .await
        .unwrap();
    let o = medic.access(addr, &[id]).await.unwrap();
    assert_eq!(o.allowed, vec![id]);
    assert_eq!(
        office.check_access(addr, medic.from()).await.unwrap(),
        (DenyReason::None, true)
    );
    let trail = office.audit_for_patient(addr, 0, 50).await.unwrap();
    assert!(
        trail.iter().any(|e| matches!(e.kind,
        AuditKind::BreakGlassOpened { provider, reason: Some(EmergencyReason::Etreat), overrides_revoke: false, .. } if provider == medic.from()))
    );
    assert!(trail.iter().any(|e| matches!(e.kind,
        AuditKind::AccessAllowed { provider, emergency: true, .. } if provider == medic.from())));

    // The access window for share nodes is 30 minutes.
    advance(31 * 60).await;
    assert!(
        !office
            .can_read(doctor.from(), &rec, doctor_tx)
            .await
            .unwrap(),
        "access transaction older than the window"
    );

    // Past the hour: the grant has expired and break-glass has closed, with no transaction.
    advance(30 * 60).await;
    assert_eq!(
        doctor.access(addr, &[id]).await.unwrap().denied,
        vec![(id, DenyReason::Expired)]
    );
    assert_eq!(
        medic.access(addr, &[id]).await.unwrap().denied,
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

    // Security #6. The patient ends an emergency early.
    medic.break_glass(addr, EmergencyReason::Btg).await.unwrap();
    assert!(office.check_access(addr, medic.from()).await.unwrap().1);
    assert!(
        office
            .emergency_until(addr, medic.from())
            .await
            .unwrap()
            .is_some()
    );
    patient.end_emergency(medic.from()).await.unwrap();
    assert_eq!(
        office.check_access(addr, medic.from()).await.unwrap(),
        (DenyReason::NoGrant, false)
    );
    let e = patient.end_emergency(medic.from()).await.unwrap_err();
    assert!(e.to_string().contains("no open emergency"), "{e}");
    // At most three openings per patient per 24 hours (this is the third, then refused).
    medic
        .break_glass(addr, EmergencyReason::Ertreat)
        .await
        .unwrap();
    let e = medic
        .break_glass(addr, EmergencyReason::Etreat)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("used every emergency opening"),
        "{e}"
    );
    advance(24 * 3600).await;
    medic
        .break_glass(addr, EmergencyReason::Threat)
        .await
        .unwrap();
    // Reasons come from the fixed coded list only.
    let raw = ehr_share::chain::EhrAccess::new(office.address(), medic.provider().clone());
    for bad in [0u8, 6, 200] {
        let e = raw
            .breakGlass(addr.key(), bad)
            .from(medic.from())
            .call()
            .await
            .unwrap_err();
        assert!(matches!(
            e.as_decoded_interface_error::<ehr_share::chain::EhrAccess::EhrAccessErrors>(),
            Some(ehr_share::chain::EhrAccess::EhrAccessErrors::UnknownEmergencyReason(_))
        ));
    }
    // Breaking the glass after an explicit revoke is possible (emergency care) but flagged, and
    // an access transaction made under the revoked grant does not count for the emergency.
    patient.grant(doctor.from(), None).await.unwrap();
    let o = doctor.access(addr, &[id]).await.unwrap();
    assert_eq!(o.allowed, vec![id]);
    let before_revoke = Some(o.tx.tx_hash);
    patient.revoke(doctor.from()).await.unwrap();
    doctor
        .break_glass(addr, EmergencyReason::Etreat)
        .await
        .unwrap();
    assert!(
        !office
            .can_read(doctor.from(), &rec, before_revoke)
            .await
            .unwrap(),
        "the access before the emergency does not open shares"
    );
    let o = doctor.access(addr, &[id]).await.unwrap();
    assert_eq!(o.allowed, vec![id]);
    assert!(
        office
            .can_read(doctor.from(), &rec, Some(o.tx.tx_hash))
            .await
            .unwrap()
    );
    let flagged = office
        .audit_page_for_patient(addr, AuditFilter::Emergency, 0, 10)
        .await
        .unwrap();
    assert!(matches!(
        flagged.events[0].kind,
        AuditKind::BreakGlassOpened { provider, overrides_revoke: true, .. } if provider == doctor.from()
    ));
    assert!(flagged.events.iter().any(|e| matches!(e.kind,
        AuditKind::BreakGlassEnded { provider, .. } if provider == medic.from())));
    // Re-opening right after the patient ended it is flagged the same way.
    assert!(flagged.events.iter().any(|e| matches!(e.kind,
        AuditKind::BreakGlassOpened { provider, reason: Some(EmergencyReason::Ertreat), overrides_revoke: true, .. } if provider == medic.from())));
    // A revoke ends an open emergency of that provider.
    patient.grant(medic.from(), None).await.unwrap();
    assert!(
        office
            .emergency_until(addr, medic.from())
            .await
            .unwrap()
            .is_some()
    );
    patient.revoke(medic.from()).await.unwrap();
    assert_eq!(
        office.emergency_until(addr, medic.from()).await.unwrap(),
        None
    );
    assert_eq!(
        office.check_access(addr, medic.from()).await.unwrap(),
        (DenyReason::Revoked, false)
    );

    // The event index follows the chain when blocks are replaced (anvil's snapshot/revert
    // stands in for a reorganisation): events of dropped blocks disappear from every view.
    let p = ProviderBuilder::new().connect_http(common::rpc().parse().unwrap());
    let snap: alloy::primitives::U256 = p.raw_request("evm_snapshot".into(), ()).await.unwrap();
    patient.grant(doctor.from(), None).await.unwrap();
    let grants = |page: ehr_share::chain::AuditPage| {
        page.events.iter().filter(|e| matches!(e.kind, AuditKind::GrantIssued { provider, .. } if provider == doctor.from())).count()
    };
    let before = grants(
        office
            .audit_page_for_patient(addr, AuditFilter::Grants, 0, 100)
            .await
            .unwrap(),
    );
    let _: bool = p.raw_request("evm_revert".into(), (snap,)).await.unwrap();
    // Another transaction takes the replaced block's number.
    doctor.request_access(addr).await.unwrap();
    let after = grants(
        office
            .audit_page_for_patient(addr, AuditFilter::Grants, 0, 100)
            .await
            .unwrap(),
    );
    assert_eq!(
        after,
        before - 1,
        "the dropped grant is gone from the index"
    );
}

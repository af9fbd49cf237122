//! State the contract keeps only as events, folded from the audit trail: a patient's grants
//! with when they were given and revoked, requests still pending, and whether a break-glass
//! opening overrode the patient's revoke. The contract stores just what its checks need (one
//! slot per grant, nothing per request), so these lists cost no gas to keep.

use alloy::primitives::Address;

use super::events::{AuditEvent, AuditKind};
use super::types::{DenyReason, GrantInfo, PatientAddr, PendingRequest};

/// Every provider the patient ever granted, in the order of their first grant, each as it
/// stands at chain time `now`. `events` are one patient's, oldest first.
pub(crate) fn grants(events: &[AuditEvent], now: u64) -> Vec<GrantInfo> {
    // provider -> (granted at, expires at (MAX open-ended), revoked at (0 not revoked))
    let mut order: Vec<Address> = Vec::new();
    let mut state: std::collections::HashMap<Address, (u64, u64, u64)> = Default::default();
    for e in events {
        let at = e.timestamp.unwrap_or_default();
        match e.kind {
            AuditKind::GrantIssued {
                provider,
                expires_at,
                ..
            } => {
                if !state.contains_key(&provider) {
                    order.push(provider);
                }
                state.insert(provider, (at, expires_at.unwrap_or(u64::MAX), 0));
            }
            AuditKind::GrantRevoked { provider, .. } => {
                if let Some(g) = state.get_mut(&provider) {
                    g.2 = at.max(1);
                }
            }
            _ => {}
        }
    }
    order
        .into_iter()
        .map(|p| {
            let (granted, expires, revoked) = state[&p];
            GrantInfo::from_parts(p, granted, expires, revoked, now)
        })
        .collect()
}

/// Requests neither granted nor declined since they were made, in the order they were made
/// (a provider asking twice counts once, from its first ask). `events` are one patient's,
/// oldest first.
pub(crate) fn pending_requests(events: &[AuditEvent]) -> Vec<PendingRequest> {
    let mut pending: Vec<PendingRequest> = Vec::new();
    for e in events {
        match e.kind {
            AuditKind::AccessRequested { provider, .. }
                if !pending.iter().any(|r| r.provider == provider) =>
            {
                pending.push(PendingRequest {
                    provider,
                    requested_at: e.timestamp.unwrap_or_default(),
                });
            }
            AuditKind::GrantIssued { provider, .. }
            | AuditKind::RequestDeclined { provider, .. } => {
                pending.retain(|r| r.provider != provider)
            }
            _ => {}
        }
    }
    pending
}

/// Fills in what the contract does not store: `overrides_revoke` on break-glass openings
/// ([`mark_overrides`]) and `Revoked` for denials the contract reports as `NoGrant` because the
/// revoked grant was cleared ([`mark_revoked`]).
pub(crate) fn derive(earlier: &[AuditEvent], new: &mut [AuditEvent]) {
    mark_overrides(earlier, new);
    mark_revoked(earlier, new);
}

/// Turns each `NoGrant` denial in `new` into `Revoked` when the patient's last grant event for
/// that provider before it was a revoke.
pub(crate) fn mark_revoked(earlier: &[AuditEvent], new: &mut [AuditEvent]) {
    for i in 0..new.len() {
        let AuditKind::AccessDenied {
            patient,
            provider,
            reason: DenyReason::NoGrant,
            ..
        } = new[i].kind
        else {
            continue;
        };
        let revoked = withdrawn_before(earlier, &new[..i], patient, provider, |k| {
            matches!(k, AuditKind::GrantRevoked { .. })
        });
        if let AuditKind::AccessDenied { reason, .. } = &mut new[i].kind
            && revoked
        {
            *reason = DenyReason::Revoked;
        }
    }
}

/// Sets `overrides_revoke` on each break-glass opening in `new`: whether the patient's last
/// word to that provider before it (after `earlier`, then the `new` events before it) was a
/// revoke or the end of an emergency, rather than a grant.
pub(crate) fn mark_overrides(earlier: &[AuditEvent], new: &mut [AuditEvent]) {
    for i in 0..new.len() {
        let AuditKind::BreakGlassOpened {
            patient, provider, ..
        } = new[i].kind
        else {
            continue;
        };
        let overrides = withdrawn_before(earlier, &new[..i], patient, provider, |k| {
            matches!(
                k,
                AuditKind::GrantRevoked { .. } | AuditKind::BreakGlassEnded { .. }
            )
        });
        if let AuditKind::BreakGlassOpened {
            overrides_revoke, ..
        } = &mut new[i].kind
        {
            *overrides_revoke = overrides;
        }
    }
}

/// Whether the patient's last word to `provider` in `earlier` then `before` (newest first) was
/// one that `withdraws` rather than a grant; false when there was neither.
fn withdrawn_before(
    earlier: &[AuditEvent],
    before: &[AuditEvent],
    patient: Option<PatientAddr>,
    provider: Address,
    withdraws: impl Fn(&AuditKind) -> bool,
) -> bool {
    before
        .iter()
        .rev()
        .chain(earlier.iter().rev())
        .filter(|e| e.kind.patient() == patient && e.kind.provider() == Some(provider))
        .find_map(|e| match e.kind {
            AuditKind::GrantIssued { .. } => Some(false),
            ref k if withdraws(k) => Some(true),
            _ => None,
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::types::{EmergencyReason, GrantState};

    fn ev(block: u64, kind: AuditKind) -> AuditEvent {
        AuditEvent {
            block,
            timestamp: Some(1_000 + block),
            tx_hash: None,
            log_index: 0,
            kind,
        }
    }

    fn who(n: u8) -> Address {
        Address::repeat_byte(n)
    }

    fn opened(p: Option<PatientAddr>, d: Address) -> AuditKind {
        AuditKind::BreakGlassOpened {
            patient: p,
            provider: d,
            reason: Some(EmergencyReason::Etreat),
            until: 0,
            overrides_revoke: false,
        }
    }

    #[test]
    fn grants_fold_issue_revoke_and_regrant() {
        let p = PatientAddr::new(1, 2).ok();
        let (a, b) = (who(1), who(2));
        let events = vec![
            ev(
                1,
                AuditKind::GrantIssued {
                    patient: p,
                    provider: a,
                    expires_at: None,
                },
            ),
            ev(
                2,
                AuditKind::GrantIssued {
                    patient: p,
                    provider: b,
                    expires_at: Some(1_500),
                },
            ),
            ev(
                3,
                AuditKind::GrantRevoked {
                    patient: p,
                    provider: a,
                },
            ),
            ev(
                4,
                AuditKind::GrantIssued {
                    patient: p,
                    provider: b,
                    expires_at: Some(9_000),
                },
            ),
        ];
        let g = grants(&events, 2_000);
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[0].provider, g[0].state, g[0].revoked_at),
            (a, GrantState::Revoked, Some(1_003))
        );
        assert_eq!(
            (g[1].provider, g[1].state, g[1].granted_at),
            (b, GrantState::Active, 1_004)
        );
        assert_eq!(grants(&events, 9_000)[1].state, GrantState::Expired);
    }

    #[test]
    fn requests_settle_on_grant_or_decline() {
        let p = PatientAddr::new(1, 2).ok();
        let (a, b, c) = (who(1), who(2), who(3));
        let req = |d| AuditKind::AccessRequested {
            patient: p,
            provider: d,
        };
        let events = vec![
            ev(1, req(a)),
            ev(2, req(b)),
            ev(3, req(a)),
            ev(4, req(c)),
            ev(
                5,
                AuditKind::GrantIssued {
                    patient: p,
                    provider: a,
                    expires_at: None,
                },
            ),
            ev(
                6,
                AuditKind::RequestDeclined {
                    patient: p,
                    provider: c,
                },
            ),
        ];
        let left = pending_requests(&events);
        assert_eq!(left.iter().map(|r| r.provider).collect::<Vec<_>>(), vec![b]);
        assert_eq!(left[0].requested_at, 1_002);
    }

    #[test]
    fn an_opening_overrides_only_a_standing_revoke_or_end() {
        let p = PatientAddr::new(1, 2).ok();
        let q = PatientAddr::new(1, 3).ok();
        let (a, b) = (who(1), who(2));
        let earlier = vec![
            ev(
                1,
                AuditKind::GrantIssued {
                    patient: p,
                    provider: a,
                    expires_at: None,
                },
            ),
            ev(
                2,
                AuditKind::GrantRevoked {
                    patient: p,
                    provider: a,
                },
            ),
        ];
        let mut new = vec![
            ev(3, opened(p, a)), // after a revoke
            ev(4, opened(p, b)), // never granted
            ev(5, opened(q, a)), // another patient
            ev(
                6,
                AuditKind::GrantIssued {
                    patient: p,
                    provider: a,
                    expires_at: None,
                },
            ),
            ev(7, opened(p, a)), // after a re-grant
            ev(
                8,
                AuditKind::BreakGlassEnded {
                    patient: p,
                    provider: a,
                },
            ),
            ev(9, opened(p, a)), // after an early end
        ];
        mark_overrides(&earlier, &mut new);
        let flags: Vec<bool> = new
            .iter()
            .filter_map(|e| match e.kind {
                AuditKind::BreakGlassOpened {
                    overrides_revoke, ..
                } => Some(overrides_revoke),
                _ => None,
            })
            .collect();
        assert_eq!(flags, vec![true, false, false, false, true]);
    }

    #[test]
    fn a_no_grant_denial_after_a_revoke_reads_revoked() {
        let p = PatientAddr::new(1, 2).ok();
        let (a, b) = (who(1), who(2));
        let denied = |d| AuditKind::AccessDenied {
            patient: p,
            provider: d,
            record: crate::chain::RecordId(alloy::primitives::B256::ZERO),
            reason: DenyReason::NoGrant,
            denied_count: 1,
        };
        let earlier = vec![
            ev(
                1,
                AuditKind::GrantIssued {
                    patient: p,
                    provider: a,
                    expires_at: None,
                },
            ),
            ev(
                2,
                AuditKind::GrantRevoked {
                    patient: p,
                    provider: a,
                },
            ),
        ];
        let mut new = vec![
            ev(3, denied(a)),
            ev(4, denied(b)),
            ev(
                5,
                AuditKind::GrantIssued {
                    patient: p,
                    provider: a,
                    expires_at: None,
                },
            ),
            ev(6, denied(a)),
        ];
        mark_revoked(&earlier, &mut new);
        let reasons: Vec<DenyReason> = new
            .iter()
            .filter_map(|e| match e.kind {
                AuditKind::AccessDenied { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                DenyReason::Revoked,
                DenyReason::NoGrant,
                DenyReason::NoGrant
            ]
        );
    }
}

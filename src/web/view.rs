//! What every page shows the same way: the layout, notices after a redirect, times, sizes,
//! short ids, providers' names and the audit table. Handlers gather typed data into these
//! views; the templates in `templates/` only lay them out (and escape everything).

use std::collections::HashMap;

use alloy::primitives::Address;
use axum::response::Redirect;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::ProviderProfile;
use super::error::{Result, WebError};
use super::session::Session;
use crate::chain::{AuditEvent, AuditFilter, AuditKind, PatientAddr};
use crate::kind::Classify;

/// The frame of a page: its title and, when logged in, who and the logout form's token.
pub(super) struct Layout {
    /// The page title.
    pub(super) title: String,
    /// The user bar.
    pub(super) user: Option<UserBar>,
}

/// The logged-in user in the header.
pub(super) struct UserBar {
    /// Name and short account.
    pub(super) name: String,
    /// The CSRF token of the logout form.
    pub(super) csrf: String,
}

impl Layout {
    /// A page before login.
    pub(super) fn anonymous(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            user: None,
        }
    }

    /// A page of a logged-in user.
    pub(super) fn user(s: &Session, title: &str) -> Self {
        Self {
            title: title.to_owned(),
            user: Some(UserBar {
                name: format!(
                    "{} ({})",
                    s.account.username,
                    short(&s.account.address.to_string())
                ),
                csrf: s.csrf.clone(),
            }),
        }
    }
}

/// A message shown on a page: the outcome of the last form.
pub(super) struct Flash {
    /// Whether it went well.
    pub(super) ok: bool,
    /// What to say.
    pub(super) text: String,
}

impl Flash {
    /// A failure message.
    pub(super) fn err(text: impl Into<String>) -> Self {
        Self {
            ok: false,
            text: text.into(),
        }
    }
}

/// The query after a redirect: a notice, and the audit view's filters and page.
#[derive(Deserialize, Default)]
pub(super) struct Notice {
    #[serde(default)]
    ok: Option<String>,
    #[serde(default)]
    err: Option<String>,
    /// Audit view: which kind of event.
    #[serde(default)]
    pub(super) kind: Option<String>,
    /// Audit view: page number from 0.
    #[serde(default)]
    pub(super) page: Option<usize>,
    /// Office monitoring: one provider's events.
    #[serde(default)]
    pub(super) provider: Option<String>,
    /// Office monitoring: one patient's events.
    #[serde(default)]
    pub(super) patient: Option<String>,
}

impl Notice {
    /// The notice to show, if any.
    pub(super) fn flash(&self) -> Option<Flash> {
        match (&self.ok, &self.err) {
            (Some(m), _) => Some(Flash {
                ok: true,
                text: m.clone(),
            }),
            (None, Some(m)) => Some(Flash::err(m.clone())),
            (None, None) => None,
        }
    }
}

/// Back to `to` with a notice.
pub(super) fn back(to: &str, ok: bool, text: &str) -> Redirect {
    Redirect::to(&format!(
        "{to}{}{}={}",
        if to.contains('?') { "&" } else { "?" },
        if ok { "ok" } else { "err" },
        utf8_percent_encode(text, NON_ALPHANUMERIC)
    ))
}

/// What to tell the user about a failed action: the error's public message (our faults and
/// unavailable services are logged with their detail).
pub(super) fn words(e: &(impl Classify + 'static)) -> String {
    if e.kind().status().is_server_error() {
        tracing::warn!("web: {}", crate::kind::with_sources(e));
    }
    e.public_message()
}

/// A value for a URL query.
pub(super) fn query_value(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// A short form of a hex id for tables.
pub(super) fn short(s: &str) -> String {
    if s.len() > 14 {
        format!("{}…{}", &s[..8], &s[s.len() - 4..])
    } else {
        s.to_owned()
    }
}

/// Unix seconds as UTC `YYYY-MM-DD HH:MM`.
pub(super) fn time(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(
            || secs.to_string(),
            |t| t.strftime("%Y-%m-%d %H:%M").to_string(),
        )
}

/// A byte count for people.
pub(super) fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// A patient address from a form or query.
pub(super) fn patient_addr(s: &str) -> Result<PatientAddr> {
    s.trim()
        .parse()
        .map_err(|e: crate::chain::InvalidPatientAddr| WebError::bad(e.to_string()))
}

/// An account address from a form.
pub(super) fn account_addr(s: &str) -> Result<Address> {
    s.trim().parse().map_err(|_| {
        WebError::bad(format!(
            "{s:?} is not an account address (0x + 40 hex digits)"
        ))
    })
}

/// A provider as people see them: name, organisation and licence when the web app knows them,
/// always the account.
pub(super) struct ProviderName {
    /// The account.
    pub(super) address: Address,
    /// What the provider told the web app at sign-up.
    pub(super) profile: Option<ProviderProfile>,
}

impl ProviderName {
    /// `a` with its profile from `profiles`.
    pub(super) fn of(profiles: &HashMap<Address, ProviderProfile>, a: Address) -> Self {
        Self {
            address: a,
            profile: profiles.get(&a).cloned(),
        }
    }
}

/// One row of an audit table.
pub(super) struct AuditRow {
    /// When (UTC).
    pub(super) when: String,
    /// What happened.
    pub(super) event: &'static str,
    /// Who did it.
    pub(super) who: String,
    /// Patient, record, reason.
    pub(super) details: String,
    /// The transaction hash.
    pub(super) tx: String,
    /// Whether it is a denied attempt (highlighted).
    pub(super) denied: bool,
}

impl AuditRow {
    /// The row of event `e`.
    pub(super) fn of(e: &AuditEvent) -> Self {
        let (event, who, details) = describe(&e.kind);
        Self {
            when: e.timestamp.map(time).unwrap_or_default(),
            event,
            who,
            details,
            tx: e.tx_hash.map(|h| h.to_string()).unwrap_or_default(),
            denied: e.kind.is_denial(),
        }
    }

    /// The transaction hash, short.
    pub(super) fn tx_short(&self) -> String {
        short(&self.tx)
    }
}

/// An event in words: its name, who acted and the details.
pub(crate) fn describe(k: &AuditKind) -> (&'static str, String, String) {
    let p = |p: &Option<PatientAddr>| p.map(|a| a.to_string()).unwrap_or_default();
    match k {
        AuditKind::ManagerTransferred { manager } => {
            ("Records office set", manager.to_string(), String::new())
        }
        AuditKind::PatientRegistered { patient, account } => {
            ("Patient registered", account.to_string(), p(patient))
        }
        AuditKind::ProviderRegistered { provider } => {
            ("Provider registered", provider.to_string(), String::new())
        }
        AuditKind::DeviceAdded {
            patient,
            device,
            kind,
            label,
        } => (
            "Device added",
            device.to_string(),
            format!(
                "{} for {}{}",
                crate::chain::DeviceKind::try_from(*kind)
                    .map_or_else(|_| format!("kind {kind}"), |k| k.to_string()),
                p(patient),
                if label.is_empty() {
                    String::new()
                } else {
                    format!(" ({label})")
                }
            ),
        ),
        AuditKind::DeviceRevoked { patient, device } => {
            ("Device revoked", device.to_string(), p(patient))
        }
        AuditKind::IngestorSet { ingestor, allowed } => (
            if *allowed {
                "Ingestion service allowed"
            } else {
                "Ingestion service stopped"
            },
            ingestor.to_string(),
            String::new(),
        ),
        AuditKind::ProviderVerified { provider } => {
            ("Provider verified", provider.to_string(), String::new())
        }
        AuditKind::ProviderSuspended { provider } => {
            ("Provider suspended", provider.to_string(), String::new())
        }
        AuditKind::AccessRequested { patient, provider } => {
            ("Access requested", provider.to_string(), p(patient))
        }
        AuditKind::RequestDeclined { patient, provider } => {
            ("Request declined", provider.to_string(), p(patient))
        }
        AuditKind::GrantIssued {
            patient,
            provider,
            expires_at,
        } => (
            "Access granted",
            provider.to_string(),
            match expires_at {
                Some(t) => format!("{} until {}", p(patient), time(*t)),
                None => format!("{}, open-ended", p(patient)),
            },
        ),
        AuditKind::GrantRevoked { patient, provider } => {
            ("Access revoked", provider.to_string(), p(patient))
        }
        AuditKind::Anchored {
            root,
            anchorer,
            count,
        } => (
            "Records anchored",
            anchorer.to_string(),
            format!(
                "{count} record{} under root {}",
                if *count == 1 { "" } else { "s" },
                short(&root.to_string())
            ),
        ),
        AuditKind::AccessAllowed {
            patient,
            provider,
            record,
            emergency,
        } => (
            if *emergency {
                "Read (BREAK-GLASS)"
            } else {
                "Read"
            },
            provider.to_string(),
            format!("{} record {}", p(patient), short(&record.to_string())),
        ),
        AuditKind::AccessDenied {
            patient,
            provider,
            record,
            reason,
            denied_count,
        } => (
            "ACCESS DENIED",
            provider.to_string(),
            format!(
                "{} record {}: {reason} (attempt {denied_count})",
                p(patient),
                short(&record.to_string())
            ),
        ),
        AuditKind::BreakGlassOpened {
            patient,
            provider,
            reason,
            until,
            overrides_revoke,
        } => (
            if *overrides_revoke {
                "BREAK-GLASS opened (overrides your revoke)"
            } else {
                "BREAK-GLASS opened"
            },
            provider.to_string(),
            format!(
                "{} reason {} until {}",
                p(patient),
                reason.map_or_else(|| "unknown".to_owned(), |r| r.to_string()),
                time(*until)
            ),
        ),
        AuditKind::BreakGlassEnded { patient, provider } => (
            "Emergency access ended by the patient",
            provider.to_string(),
            p(patient),
        ),
        AuditKind::Other { name } => ("Other", String::new(), name.clone()),
    }
}

/// Audit rows per page.
pub(super) const AUDIT_PAGE: usize = 50;

/// A link of the audit view.
pub(super) struct Link {
    /// Shown text.
    pub(super) label: &'static str,
    /// Where it goes.
    pub(super) href: String,
    /// Whether it is the current view.
    pub(super) current: bool,
}

/// One page of an audit trail with its kind filters and its pager.
pub(super) struct AuditView {
    /// A link per kind of event.
    pub(super) filters: Vec<Link>,
    /// The events of this page, newest first.
    pub(super) rows: Vec<AuditRow>,
    /// This page, from 1.
    pub(super) page: usize,
    /// How many pages.
    pub(super) pages: usize,
    /// How many events the view has.
    pub(super) total: usize,
    /// The newer page.
    pub(super) newer: Option<String>,
    /// The older page.
    pub(super) older: Option<String>,
}

/// Which audit page the query asks for.
pub(super) fn audit_query(n: &Notice) -> Result<(AuditFilter, usize)> {
    let filter = match n.kind.as_deref() {
        None | Some("") => AuditFilter::All,
        Some(k) => k.parse().map_err(WebError::bad)?,
    };
    Ok((filter, n.page.unwrap_or(0).min(1_000_000)))
}

impl AuditView {
    /// The view of `events` (page `page_no` of `total`) at `base`, whose query already holds
    /// `extra` (other filters, `&`-joined, URL-encoded).
    pub(super) fn new(
        base: &str,
        extra: &str,
        filter: AuditFilter,
        page_no: usize,
        events: &[AuditEvent],
        total: usize,
    ) -> Self {
        let href = |kind: &str, page: Option<usize>| {
            let mut q = format!("{base}?kind={kind}{extra}");
            if let Some(p) = page {
                q.push_str(&format!("&page={p}"));
            }
            q.push_str("#audit");
            q
        };
        let pages = total.div_ceil(AUDIT_PAGE).max(1);
        Self {
            filters: AuditFilter::ALL
                .into_iter()
                .map(|f| Link {
                    label: f.label(),
                    href: href(f.as_str(), None),
                    current: f == filter,
                })
                .collect(),
            rows: events.iter().map(AuditRow::of).collect(),
            page: page_no + 1,
            pages,
            total,
            newer: (page_no > 0).then(|| href(filter.as_str(), Some(page_no - 1))),
            older: (page_no + 1 < pages).then(|| href(filter.as_str(), Some(page_no + 1))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(time(0), "1970-01-01 00:00");
        assert_eq!(time(1_795_545_744), "2026-11-24 18:42");
        assert_eq!(short("0x1234567890abcdef"), "0x123456…cdef");
        assert_eq!(human_size(70_026), "68.4 KiB");
        let r = back("/patient", false, "a & b <c>");
        let loc = axum::response::IntoResponse::into_response(r);
        assert_eq!(
            loc.headers()["location"],
            "/patient?err=a%20%26%20b%20%3Cc%3E"
        );
    }
}

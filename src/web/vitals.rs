//! Charts of the vital signs a patient's devices sent: each sealed window is a record, read
//! like any other (for a doctor: behind access transactions, one per 32 windows, so the
//! patient's trail shows the reading), each reading's device signature checked, then drawn
//! server-side in SVG: the normal range shaded, out-of-range points marked. No script, no CDN.

use std::collections::{BTreeMap, HashSet};

use super::WebState;
use super::error::Result;
use super::session::Session;
use super::view::time;
use crate::chain::{PatientAddr, RecordId};
use crate::ingest::vitals::DIASTOLIC_NORMAL;
use crate::ingest::{SealedReading, Vital, ingest_domain, read_sealed};

/// The time spans a chart shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Span {
    /// The last 24 hours.
    Day,
    /// The last 7 days.
    Week,
    /// The last 30 days.
    Month,
}

impl Span {
    /// Parses `day`, `week`, `month`.
    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            _ => None,
        }
    }

    fn secs(self) -> i64 {
        match self {
            Self::Day => 86_400,
            Self::Week => 7 * 86_400,
            Self::Month => 30 * 86_400,
        }
    }

    /// Its name.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }
}

/// Most windows read for one view (the newest; the page says when there were more).
const MAX_WINDOWS: u32 = 96;
/// Drawing width and plot height.
const W: f64 = 900.0;
const H: f64 = 150.0;
/// Left margin for the value axis.
const LEFT: f64 = 44.0;
/// Room above the plot (for the top value label).
const TOP: f64 = 8.0;
/// Shortest time axis, seconds (a few fresh readings still spread out).
const MIN_AXIS: i64 = 120;

/// A point drawn.
pub(super) struct Dot {
    pub(super) x: String,
    pub(super) y: String,
    /// Outside the normal range (marked).
    pub(super) out: bool,
    /// Tooltip.
    pub(super) title: String,
}

/// One vital's chart.
pub(super) struct VitalChart {
    pub(super) title: &'static str,
    pub(super) unit: &'static str,
    /// Normal bands: (top y, height).
    pub(super) bands: Vec<(String, String)>,
    /// One polyline per series (blood pressure has two).
    pub(super) lines: Vec<String>,
    pub(super) dots: Vec<Dot>,
    /// Value ticks: (y, label).
    pub(super) ticks: Vec<(String, String)>,
    pub(super) count: usize,
    pub(super) out_count: usize,
    pub(super) latest: String,
    /// The time axis' ends, as labels.
    pub(super) first: String,
    pub(super) last: String,
}

/// The vitals section of a page.
pub(super) struct VitalsView {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) charts: Vec<VitalChart>,
    pub(super) windows: usize,
    /// Windows left out (older than the newest `MAX_WINDOWS`).
    pub(super) more: bool,
    /// Envelopes whose signature or patient did not check out (not drawn).
    pub(super) unverified: usize,
    /// Windows that could not be read.
    pub(super) failed: usize,
    /// The chart's width and height, for the SVG.
    pub(super) width: u32,
    pub(super) height: u32,
}

fn now() -> i64 {
    i64::try_from(super::now()).unwrap_or(i64::MAX)
}

/// Reads the patient's sealed windows of the last `span` as `s` and draws them.
///
/// # Errors
/// The database's, and the chain's when the access transaction cannot be sent.
pub(super) async fn load(
    state: &WebState,
    s: &Session,
    addr: PatientAddr,
    span: Span,
) -> Result<VitalsView> {
    let to = now();
    let from = to - span.secs();
    let windows = state
        .accounts
        .db()
        .sealed_windows(addr.aid(), addr.pid(), from, to, MAX_WINDOWS + 1)
        .await?;
    let more = windows.len() > MAX_WINDOWS as usize;
    let ids: Vec<RecordId> = windows
        .iter()
        .take(MAX_WINDOWS as usize)
        .filter_map(|w| w.record.as_deref()?.parse().ok())
        .collect();
    let chain = state.chain_for(s)?;
    let domain = ingest_domain(chain.chain_id(), chain.address(), chain.deployment_id());
    let mut readings = Vec::new();
    let mut seen = HashSet::new();
    let (mut unverified, mut failed) = (0, 0);
    if !ids.is_empty() {
        let got = state.records_for(s)?.get_many(addr, &ids).await;
        for r in got {
            match r {
                Ok(r) => {
                    unverified += read_sealed(&r.data, &domain, addr, &mut seen, &mut readings);
                }
                Err(e) => {
                    tracing::warn!("vitals of {addr}: a window could not be read: {e}");
                    failed += 1;
                }
            }
        }
    }
    readings.retain(|r| (from..=to).contains(&r.reading.at));
    readings.sort_by_key(|r| r.reading.at);
    let mut by_vital: BTreeMap<Vital, Vec<&SealedReading>> = BTreeMap::new();
    for r in &readings {
        by_vital.entry(r.reading.vital).or_default().push(r);
    }
    let charts = by_vital
        .into_iter()
        .map(|(v, rs)| chart(v, &rs, from, to))
        .collect();
    Ok(VitalsView {
        from: time(u64::try_from(from).unwrap_or(0)),
        to: time(u64::try_from(to).unwrap_or(0)),
        charts,
        windows: ids.len(),
        more,
        unverified,
        failed,
        width: W as u32,
        height: (H + TOP) as u32,
    })
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Draws one vital over `[from, to]`.
fn chart(vital: Vital, rs: &[&SealedReading], from: i64, to: i64) -> VitalChart {
    let bp = vital == Vital::BloodPressure;
    let values = rs
        .iter()
        .flat_map(|r| std::iter::once(r.reading.value).chain(r.reading.second));
    let (mut lo, mut hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if let Some((n0, n1)) = vital.normal() {
        lo = lo.min(n0);
        hi = hi.max(n1);
    }
    if bp {
        lo = lo.min(DIASTOLIC_NORMAL.0);
    }
    let pad = ((hi - lo) * 0.08).max(1.0);
    let (lo, hi) = (lo - pad, hi + pad);
    // The time axis runs over the readings (within the span), at least `MIN_AXIS` long: a
    // day's chart of an hour of readings would squeeze them into one edge.
    let first_at = rs.first().map_or(from, |r| r.reading.at).max(from);
    let last_at = rs.last().map_or(to, |r| r.reading.at).min(to);
    let (t0, t1) = if last_at - first_at >= MIN_AXIS {
        (first_at, last_at)
    } else {
        let mid = first_at + (last_at - first_at) / 2;
        (mid - MIN_AXIS / 2, mid + MIN_AXIS / 2)
    };
    #[allow(clippy::cast_precision_loss)]
    let x = |t: i64| LEFT + (t - t0) as f64 / ((t1 - t0).max(1)) as f64 * (W - LEFT - 4.0);
    let y = |v: f64| TOP + H - (v - lo) / (hi - lo) * H;
    let band = |(a, b): (f64, f64)| (format!("{:.1}", y(b)), format!("{:.1}", y(a) - y(b)));
    let mut bands: Vec<_> = vital.normal().into_iter().map(band).collect();
    if bp {
        bands.push(band(DIASTOLIC_NORMAL));
    }
    let line = |pick: &dyn Fn(&SealedReading) -> Option<f64>| {
        rs.iter()
            .filter_map(|r| pick(r).map(|v| format!("{:.1},{:.1}", x(r.reading.at), y(v))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut lines = vec![line(&|r| Some(r.reading.value))];
    if bp {
        lines.push(line(&|r| r.reading.second));
    }
    let dots = rs
        .iter()
        .filter(|r| r.reading.out_of_range() || rs.len() <= 200)
        .map(|r| {
            let v = match r.reading.second {
                Some(d) => format!("{}/{}", fmt(r.reading.value), fmt(d)),
                None => fmt(r.reading.value),
            };
            Dot {
                x: format!("{:.1}", x(r.reading.at)),
                y: format!("{:.1}", y(r.reading.value)),
                out: r.reading.out_of_range(),
                title: format!(
                    "{v} {} at {} (device {})",
                    vital.unit(),
                    time(u64::try_from(r.reading.at).unwrap_or(0)),
                    r.device
                ),
            }
        })
        .collect();
    let ticks = (0..=4)
        .map(|i| {
            let v = lo + (hi - lo) * f64::from(i) / 4.0;
            (format!("{:.1}", y(v)), fmt(v))
        })
        .collect();
    let latest = rs
        .last()
        .map_or_else(String::new, |r| match r.reading.second {
            Some(d) => format!("{}/{} {}", fmt(r.reading.value), fmt(d), vital.unit()),
            None => format!("{} {}", fmt(r.reading.value), vital.unit()),
        });
    let label = |t: i64| time(u64::try_from(t).unwrap_or(0));
    VitalChart {
        first: label(t0),
        last: label(t1),
        title: vital.title(),
        unit: vital.unit(),
        bands,
        lines,
        dots,
        ticks,
        count: rs.len(),
        out_count: rs.iter().filter(|r| r.reading.out_of_range()).count(),
        latest,
    }
}

//! The records office's activity chart: transactions and denied attempts over time, as bars
//! drawn server-side in SVG (no script, no CDN). The bucket size adapts to the time the
//! events span, so a day-old test chain and a year-old deployment both get readable bars.

use super::view::time;

/// Bucket sizes to choose from, seconds, with their names.
const BUCKETS: [(u64, &str); 9] = [
    (60, "minute"),
    (300, "5 minutes"),
    (900, "15 minutes"),
    (3_600, "hour"),
    (6 * 3_600, "6 hours"),
    (86_400, "day"),
    (7 * 86_400, "week"),
    (30 * 86_400, "30 days"),
    (365 * 86_400, "year"),
];
/// Most bars drawn.
const MAX_BARS: u64 = 48;
/// Fewest bars drawn (a short history is spread over this many).
const MIN_BARS: u64 = 12;
/// Drawing size.
pub(super) const WIDTH: u32 = 900;
/// Drawing height (the plot; labels below).
pub(super) const HEIGHT: u32 = 160;

/// One bar: allowed transactions under denied attempts, stacked.
pub(super) struct Bar {
    /// Left edge.
    pub(super) x: u32,
    /// Width.
    pub(super) w: u32,
    /// Top of the allowed part.
    pub(super) y_ok: u32,
    /// Height of the allowed part.
    pub(super) h_ok: u32,
    /// Top of the denied part.
    pub(super) y_denied: u32,
    /// Height of the denied part.
    pub(super) h_denied: u32,
    /// Tooltip: the bucket's start and counts.
    pub(super) title: String,
}

/// The chart's view.
pub(super) struct Chart {
    /// Bars, oldest first.
    pub(super) bars: Vec<Bar>,
    /// The tallest bar's count (the scale).
    pub(super) max: u64,
    /// Start of the first bucket.
    pub(super) from: String,
    /// End of the last bucket.
    pub(super) to: String,
    /// What one bar covers.
    pub(super) bucket: &'static str,
    /// Transactions in the chart.
    pub(super) transactions: u64,
    /// Denied attempts in the chart.
    pub(super) denied: u64,
}

impl Chart {
    /// The chart of events given as `(block time, denied)`, up to `now`.
    pub(super) fn of(events: &[(u64, bool)], now: u64) -> Self {
        let first = events.iter().map(|e| e.0).min().unwrap_or(now).min(now);
        // Whole buckets from the one holding the first event to the one holding now.
        let buckets = |size: u64| now / size + 1 - first / size;
        let (size, name) = BUCKETS
            .into_iter()
            .find(|(s, _)| buckets(*s) <= MAX_BARS)
            .unwrap_or(BUCKETS[BUCKETS.len() - 1]);
        let end = (now / size + 1) * size;
        let n = buckets(size).clamp(MIN_BARS, MAX_BARS);
        let start = end.saturating_sub(n * size);
        let mut counts = vec![(0u64, 0u64); n as usize];
        for &(t, denied) in events {
            if t < start || t >= end {
                continue;
            }
            let c = &mut counts[((t - start) / size) as usize];
            if denied {
                c.1 += 1;
            } else {
                c.0 += 1;
            }
        }
        let max = counts.iter().map(|c| c.0 + c.1).max().unwrap_or(0).max(1);
        let slot = WIDTH / n as u32;
        let scale = |v: u64| (v * u64::from(HEIGHT) / max) as u32;
        let bars = counts
            .iter()
            .enumerate()
            .map(|(i, &(ok, denied))| {
                let h_ok = scale(ok);
                let h_denied = scale(denied);
                Bar {
                    x: i as u32 * slot + 1,
                    w: slot.saturating_sub(2).max(1),
                    y_ok: HEIGHT - h_ok,
                    h_ok,
                    y_denied: HEIGHT - h_ok - h_denied,
                    h_denied,
                    title: format!(
                        "{}: {ok} transactions, {denied} denied",
                        time(start + i as u64 * size)
                    ),
                }
            })
            .collect();
        Self {
            bars,
            max,
            from: time(start),
            to: time(end),
            bucket: name,
            transactions: counts.iter().map(|c| c.0).sum(),
            denied: counts.iter().map(|c| c.1).sum(),
        }
    }

    /// Drawing width.
    pub(super) fn width(&self) -> u32 {
        WIDTH
    }

    /// Drawing height.
    pub(super) fn height(&self) -> u32 {
        HEIGHT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_adapt_and_count_every_event() {
        let now = 1_800_000_000;
        // Three hours of activity: 5-minute bars (37 of them).
        let events: Vec<(u64, bool)> = (0..180)
            .map(|m| (now - 3 * 3_600 + m * 60, m % 10 == 0))
            .collect();
        let c = Chart::of(&events, now);
        assert_eq!(c.bucket, "5 minutes");
        assert_eq!(c.transactions + c.denied, 180);
        assert_eq!(c.denied, 18);
        assert!(c.bars.len() as u64 <= MAX_BARS && c.bars.len() as u64 >= MIN_BARS);
        // The tallest bar fills the height; none overflows.
        assert!(c.bars.iter().any(|b| b.h_ok + b.h_denied == HEIGHT));
        assert!(c.bars.iter().all(|b| b.h_ok + b.h_denied <= HEIGHT));
        // A year of history gets weekly bars.
        let c = Chart::of(&[(now - 300 * 86_400, false), (now, true)], now);
        assert_eq!(c.bucket, "week");
        assert_eq!((c.transactions, c.denied), (1, 1));
        // No events: an empty chart, not a division by zero.
        let c = Chart::of(&[], now);
        assert_eq!(c.transactions + c.denied, 0);
        assert_eq!(c.bars.len() as u64, MIN_BARS);
    }
}

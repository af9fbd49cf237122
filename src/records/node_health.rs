//! Which share nodes a read asks first, shared by every records client made from one
//! [`super::RecordsConfig`].
//!
//! A read needs k shares, so it asks k nodes and more only when one fails, disagrees, or is
//! slow ([`super::gather`]). A node that failed a read (unreachable, a server error, a bad or
//! disagreeing share, a refusal while k others released, or no answer long after the others)
//! is a suspect for [`SUSPECT_FOR`]: asked after the others, so that one broken node does not
//! cost every read a hedge. A node whose answers are much slower than the others' is asked
//! after the healthy ones too. Healthy nodes are taken in a random order, so their load stays
//! even, and a node cannot buy its way to the front by answering fast.
//!
//! The hedge delay follows the nodes: three times the median of the nodes' smoothed answer
//! times, so that a loaded system does not hedge every read, a hung node costs a read a few
//! answer times, and one slow node cannot stretch the hedge for all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand_core::RngCore;

/// How long a node that failed a read is asked last.
pub(super) const SUSPECT_FOR: Duration = Duration::from_secs(30);

/// The hedge delay's bounds, and its value before any answer was timed.
const HEDGE_MIN: Duration = Duration::from_millis(5);
const HEDGE_MAX: Duration = Duration::from_millis(250);
const HEDGE_FIRST: Duration = Duration::from_millis(20);

/// A node this many times slower than the median node is asked after the others (for
/// [`SUSPECT_FOR`] after its last answer at most).
const SLOW: f64 = 3.0;

/// What a read learnt about one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A share that counted (or agreed with the ones that did), after this long.
    Answered(Duration),
    /// A refusal when the read failed: the node works, and judged the request (the grant is
    /// most likely gone).
    Refused,
    /// Unreachable, a server error, a bad or disagreeing share, a refusal while k others
    /// released, or no answer long after the others.
    Faulty,
}

#[derive(Debug, Default)]
struct Node {
    suspect_until: Option<Instant>,
    /// Smoothed answer time in microseconds (an exponential average), and when it last
    /// changed: a node slow a while ago is tried again with the others.
    answer_us: Option<f64>,
    answered_at: Option<Instant>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct NodeHealth {
    /// Bounded by the configured nodes: only their URLs are ever noted.
    nodes: Mutex<HashMap<String, Node>>,
    /// A fixed hedge delay (tests), instead of one that follows the nodes.
    fixed_hedge: Option<Duration>,
}

/// The median of the nodes' smoothed answer times, in microseconds.
fn median_us(nodes: &HashMap<String, Node>) -> Option<f64> {
    let mut v: Vec<f64> = nodes.values().filter_map(|n| n.answer_us).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

impl NodeHealth {
    /// Health with a fixed hedge delay (see [`super::RecordsConfig::with_fixed_hedge`]).
    pub(super) fn with_hedge(hedge: Duration) -> Self {
        Self {
            fixed_hedge: Some(hedge),
            ..Self::default()
        }
    }

    /// The order in which to ask `urls` (indices into it): healthy nodes in a random order,
    /// then nodes much slower than the median, then the suspects, the one suspected longest
    /// ago first.
    pub(super) fn order(&self, urls: &[&str]) -> Vec<usize> {
        let now = Instant::now();
        let nodes = self.nodes.lock().expect("node health lock");
        let median = median_us(&nodes);
        let mut keyed: Vec<(Option<Instant>, bool, u64, usize)> = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let n = nodes.get(*url);
                let until = n.and_then(|n| n.suspect_until).filter(|t| *t > now);
                let slow = n
                    .filter(|n| n.answered_at.is_some_and(|t| now - t < SUSPECT_FOR))
                    .and_then(|n| n.answer_us)
                    .zip(median)
                    .is_some_and(|(mine, m)| mine > SLOW * m);
                (until, slow, rand_core::OsRng.next_u64(), i)
            })
            .collect();
        drop(nodes);
        // `None` (not suspected) sorts before any deadline, `false` (not slow) before `true`.
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, _, _, i)| i).collect()
    }

    /// How long to wait for the first k answers before asking the remaining nodes too.
    pub(super) fn hedge_after(&self) -> Duration {
        if let Some(h) = self.fixed_hedge {
            return h;
        }
        let nodes = self.nodes.lock().expect("node health lock");
        median_us(&nodes).map_or(HEDGE_FIRST, |us| {
            Duration::from_micros((SLOW * us) as u64).clamp(HEDGE_MIN, HEDGE_MAX)
        })
    }

    /// How long a node may stay out while the others answer before it counts as faulty:
    /// three median answer times (not capped like the hedge, so that nodes all slower than
    /// the hedge's cap are not suspected for it), and never less than the hedge.
    pub(super) fn late_after(&self) -> Duration {
        let nodes = self.nodes.lock().expect("node health lock");
        let late =
            median_us(&nodes).map_or(HEDGE_FIRST, |us| Duration::from_micros((SLOW * us) as u64));
        drop(nodes);
        late.max(self.hedge_after())
    }

    /// Takes in what a read learnt about node `url`.
    pub(super) fn note(&self, url: &str, outcome: Outcome) {
        let mut nodes = self.nodes.lock().expect("node health lock");
        let n = nodes.entry(url.to_owned()).or_default();
        match outcome {
            Outcome::Answered(took) => {
                let us = took.as_micros() as f64;
                n.answer_us = Some(n.answer_us.map_or(us, |avg| 0.8 * avg + 0.2 * us));
                n.answered_at = Some(Instant::now());
                n.suspect_until = None;
            }
            Outcome::Refused => {}
            Outcome::Faulty => n.suspect_until = Some(Instant::now() + SUSPECT_FOR),
        }
    }

    /// The nodes suspected now (for health reports).
    pub fn suspects(&self) -> Vec<String> {
        let now = Instant::now();
        let nodes = self.nodes.lock().expect("node health lock");
        let mut v: Vec<String> = nodes
            .iter()
            .filter(|(_, n)| n.suspect_until.is_some_and(|t| t > now))
            .map(|(u, _)| u.clone())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URLS: [&str; 5] = ["a", "b", "c", "d", "e"];

    #[test]
    fn suspects_go_last_and_an_answer_clears_them() {
        let h = NodeHealth::default();
        h.note("b", Outcome::Faulty);
        h.note("c", Outcome::Refused);
        for _ in 0..20 {
            assert_eq!(h.order(&URLS)[4], 1, "the suspect last");
        }
        h.note("d", Outcome::Faulty);
        for _ in 0..20 {
            let mut last = h.order(&URLS)[3..].to_vec();
            last.sort_unstable();
            assert_eq!(last, [1, 3], "both suspects last");
        }
        assert_eq!(h.suspects(), ["b", "d"]);
        h.note("b", Outcome::Answered(Duration::from_millis(1)));
        assert_eq!(h.suspects(), ["d"]);
        assert_eq!(h.order(&URLS)[4], 3);
    }

    #[test]
    fn healthy_nodes_take_turns() {
        let h = NodeHealth::default();
        let mut first = [0usize; 5];
        for _ in 0..500 {
            first[h.order(&URLS)[0]] += 1;
        }
        assert!(first.iter().all(|n| *n > 40), "uneven: {first:?}");
    }

    #[test]
    fn a_slow_node_goes_after_the_others_and_does_not_stretch_the_hedge() {
        let h = NodeHealth::default();
        for u in ["a", "b", "c", "d"] {
            h.note(u, Outcome::Answered(Duration::from_millis(4)));
        }
        h.note("e", Outcome::Answered(Duration::from_millis(240)));
        for _ in 0..20 {
            assert_eq!(h.order(&URLS)[4], 4, "the slow node last");
        }
        assert_eq!(h.hedge_after(), Duration::from_millis(12));
    }

    #[test]
    fn the_hedge_follows_the_answers_within_bounds() {
        let h = NodeHealth::default();
        assert_eq!(h.hedge_after(), HEDGE_FIRST);
        h.note("a", Outcome::Answered(Duration::from_millis(4)));
        assert_eq!(h.hedge_after(), Duration::from_millis(12));
        for _ in 0..100 {
            h.note("a", Outcome::Answered(Duration::from_micros(100)));
        }
        assert_eq!(h.hedge_after(), HEDGE_MIN);
        for _ in 0..200 {
            h.note("a", Outcome::Answered(Duration::from_secs(1)));
        }
        assert_eq!(h.hedge_after(), HEDGE_MAX);
        assert!(
            h.late_after() > Duration::from_secs(2),
            "lateness is not capped"
        );
        assert_eq!(
            NodeHealth::with_hedge(Duration::from_secs(9)).hedge_after(),
            Duration::from_secs(9)
        );
    }
}

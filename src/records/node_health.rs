//! Which share nodes a read asks first, shared by every records client made from one
//! [`super::RecordsConfig`].
//!
//! A read needs k shares, so it asks k nodes and more only when one fails, disagrees, or is
//! slow ([`super::gather`]). A node that failed a read (unreachable, a server error, a bad or
//! disagreeing share, or no answer before the read ended) is a suspect for [`SUSPECT_FOR`]:
//! asked after the others, so that one broken node does not cost every read a hedge. A
//! refusal (the node judged the request and said no) is not a fault. Healthy nodes are taken
//! in a random order, so their load stays even.
//!
//! The hedge delay follows the nodes: three times the smoothed time of an answer, so that a
//! loaded system does not hedge every read, and a hung node costs a read a few answer times.

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

/// What a read learnt about one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A share that counted (or agreed with the ones that did), after this long.
    Answered(Duration),
    /// A refusal: the node works, and judged the request.
    Refused,
    /// Unreachable, a server error, a bad or disagreeing share, or no answer in time.
    Faulty,
}

#[derive(Debug, Default)]
struct State {
    suspect_until: HashMap<String, Instant>,
    /// Smoothed answer time in microseconds (an exponential average over all nodes).
    answer_us: Option<f64>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct NodeHealth {
    state: Mutex<State>,
}

impl NodeHealth {
    /// The order in which to ask `urls` (indices into it): healthy nodes in a random order,
    /// then the suspects, the one suspected longest ago first.
    pub(super) fn order(&self, urls: &[&str]) -> Vec<usize> {
        let now = Instant::now();
        let state = self.state.lock().expect("node health lock");
        let mut keyed: Vec<(Option<Instant>, u64, usize)> = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let until = state.suspect_until.get(*url).copied().filter(|t| *t > now);
                (until, rand_core::OsRng.next_u64(), i)
            })
            .collect();
        drop(state);
        // `None` (healthy) sorts before any deadline.
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, _, i)| i).collect()
    }

    /// How long to wait for the first k answers before asking the remaining nodes too.
    pub(super) fn hedge_after(&self) -> Duration {
        let state = self.state.lock().expect("node health lock");
        state.answer_us.map_or(HEDGE_FIRST, |us| {
            Duration::from_micros((3.0 * us) as u64).clamp(HEDGE_MIN, HEDGE_MAX)
        })
    }

    /// Takes in what a read learnt about node `url`.
    pub(super) fn note(&self, url: &str, outcome: Outcome) {
        let mut state = self.state.lock().expect("node health lock");
        match outcome {
            Outcome::Answered(took) => {
                let us = took.as_micros() as f64;
                state.answer_us = Some(state.answer_us.map_or(us, |avg| 0.9 * avg + 0.1 * us));
                state.suspect_until.remove(url);
            }
            Outcome::Refused => {}
            Outcome::Faulty => {
                // Bounded by the configured nodes: only their URLs are ever noted.
                state
                    .suspect_until
                    .insert(url.to_owned(), Instant::now() + SUSPECT_FOR);
            }
        }
    }

    /// The nodes suspected now (for health reports).
    pub fn suspects(&self) -> Vec<String> {
        let now = Instant::now();
        let state = self.state.lock().expect("node health lock");
        let mut v: Vec<String> = state
            .suspect_until
            .iter()
            .filter(|(_, t)| **t > now)
            .map(|(u, _)| u.clone())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspects_go_last_and_an_answer_clears_them() {
        let h = NodeHealth::default();
        let urls = ["a", "b", "c", "d", "e"];
        h.note("b", Outcome::Faulty);
        h.note("d", Outcome::Faulty);
        h.note("c", Outcome::Refused);
        for _ in 0..20 {
            let o = h.order(&urls);
            assert_eq!(o.len(), 5);
            assert_eq!(&o[3..], &[1, 3], "suspects last, the earlier one first");
        }
        assert_eq!(h.suspects(), ["b", "d"]);
        h.note("b", Outcome::Answered(Duration::from_millis(1)));
        assert_eq!(h.suspects(), ["d"]);
        assert_eq!(h.order(&urls)[4], 3);
    }

    #[test]
    fn healthy_nodes_take_turns() {
        let h = NodeHealth::default();
        let urls = ["a", "b", "c", "d", "e"];
        let mut first = [0usize; 5];
        for _ in 0..500 {
            first[h.order(&urls)[0]] += 1;
        }
        assert!(first.iter().all(|n| *n > 40), "uneven: {first:?}");
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
    }
}

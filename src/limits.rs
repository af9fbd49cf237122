//! Keyed rate limits (token buckets) for everything a stranger can knock on: share-node
//! requests per requester, logins per account and per client address, sign-ups and the dev
//! faucet per client address. In memory and bounded: when the table is full, idle buckets are
//! dropped first (a full bucket is the same as no bucket).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many keys a limiter remembers at most before it forgets idle ones.
const MAX_KEYS: usize = 100_000;

/// A token bucket per key: `burst` requests at once, then one more every `every`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter allowing `burst` at once and `per_minute` sustained, per key.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self::with_interval(
            burst,
            Duration::from_secs_f64(60.0 / f64::from(per_minute.max(1))),
        )
    }

    /// A limiter allowing `burst` at once and one more every `every`, per key.
    pub fn with_interval(burst: u32, every: Duration) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_sec: 1.0 / every.as_secs_f64().max(1e-6),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `Err(wait)` says how long until one is free.
    ///
    /// # Errors
    /// The time to wait when the bucket is empty.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    /// [`Self::check`] at a given instant (tests move this clock instead of sleeping).
    ///
    /// # Errors
    /// The time to wait when the bucket is empty.
    pub fn check_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.take_at(key, now, true)
    }

    /// Whether `key` has a token now, without taking it (for limits that count only failures:
    /// look before, [`Self::consume`] after a failure).
    ///
    /// # Errors
    /// The time to wait when the bucket is empty.
    pub fn peek(&self, key: &K) -> Result<(), Duration> {
        self.take_at(key, Instant::now(), false)
    }

    /// Takes a token for `key` if there is one (a failure to count).
    pub fn consume(&self, key: &K) {
        let _ = self.take_at(key, Instant::now(), true);
    }

    fn take_at(&self, key: &K, now: Instant, take: bool) -> Result<(), Duration> {
        // A poisoned lock only means another thread panicked mid-update of plain numbers.
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            // Forget the tenth of the keys seen longest ago: a flood of new keys evicts old
            // ones instead of locking every newcomer out.
            let mut ages: Vec<Instant> = map.values().map(|(_, at)| *at).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 10];
            map.retain(|_, (_, at)| *at > cutoff);
        }
        let (tokens, at) = map.entry(key.clone()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.per_sec;
        *tokens = (*tokens + refill).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            if take {
                *tokens -= 1.0;
            }
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_sec))
        }
    }

    /// Puts `key`'s bucket back to full (e.g. after a successful login).
    pub fn reset(&self, key: &K) {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

/// Whole seconds for a `Retry-After` header (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_key() {
        let l = RateLimiter::new(3, 60);
        let t = Instant::now();
        for _ in 0..3 {
            l.check_at(&"a", t).unwrap();
        }
        let wait = l.check_at(&"a", t).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        l.check_at(&"b", t).unwrap();
        l.check_at(&"a", t + Duration::from_secs(1)).unwrap();
        assert!(l.check_at(&"a", t + Duration::from_secs(1)).is_err());
        l.reset(&"a");
        l.check_at(&"a", t + Duration::from_secs(1)).unwrap();
        // Peek looks without taking; consume takes.
        let f = RateLimiter::new(1, 1);
        f.peek(&"x").unwrap();
        f.peek(&"x").unwrap();
        f.consume(&"x");
        assert!(f.peek(&"x").is_err());
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
    }
}

//! Clients built once per tokio runtime.
//!
//! An HTTP client's pooled connections are driven by tasks of the runtime that opened them; a
//! client kept in a `static` and used from a second runtime picks such a connection and fails
//! with "runtime dropped the dispatch task" once the first runtime is gone. A process has one
//! runtime in production, tests one per test: each runtime gets its own client, built on first
//! use and shared by everything on that runtime after.

use std::sync::Mutex;

/// Runtimes remembered (the oldest is dropped beyond): tests end their runtimes in turn.
const RUNTIMES: usize = 8;

/// One `C` per tokio runtime (and one for callers outside any runtime).
#[derive(Debug)]
pub struct PerRuntime<C> {
    slots: Mutex<Vec<(Option<tokio::runtime::Id>, C)>>,
}

impl<C: Clone> PerRuntime<C> {
    /// None built yet.
    pub const fn new() -> Self {
        Self {
            slots: Mutex::new(Vec::new()),
        }
    }

    /// The current runtime's `C`, built by `build` the first time.
    pub fn get(&self, build: impl FnOnce() -> C) -> C {
        let id = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, c)) = slots.iter().find(|(i, _)| *i == id) {
            return c.clone();
        }
        let c = build();
        if slots.len() >= RUNTIMES {
            slots.remove(0);
        }
        slots.push((id, c.clone()));
        c
    }
}

impl<C: Clone> Default for PerRuntime<C> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::PerRuntime;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn each_runtime_builds_once() {
        static BUILT: AtomicUsize = AtomicUsize::new(0);
        let cell: PerRuntime<usize> = PerRuntime::new();
        let build = || BUILT.fetch_add(1, Ordering::SeqCst);
        for _ in 0..2 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let (a, b) = rt.block_on(async { (cell.get(build), cell.get(build)) });
            assert_eq!(a, b, "one per runtime");
        }
        assert_eq!(
            BUILT.load(Ordering::SeqCst),
            2,
            "a new runtime builds its own"
        );
    }
}

//! Free loopback ports for the processes a test or bench starts and that bind their port
//! seconds after it was chosen (`ehr dev`, `ehr serve`, anvil, Kubo, MariaDB).
//!
//! The ports lie below Linux's ephemeral range (32768 and up), so an outgoing connection cannot
//! take one meanwhile. Checking that a port binds is not enough: two picks in one process, made
//! before either port is bound, could return the same port (CI once handed anvil and a share
//! node both 26240). So every port handed out is remembered and never handed out again.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::sync::Mutex;

use rand_core::{OsRng, RngCore};

const FIRST: u16 = 20_000;
const SPAN: u16 = 12_000;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// The first of `n` consecutive loopback ports that bind now and that this process has not
/// handed out before.
pub fn quiet_ports(n: u16) -> u16 {
    assert!((1..SPAN).contains(&n), "{n} ports asked for");
    let mut taken = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let base = FIRST + (OsRng.next_u32() % u32::from(SPAN - n)) as u16;
        let range = base..base + n;
        if range.clone().any(|p| taken.contains(&p)) {
            continue;
        }
        if range
            .clone()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        {
            taken.extend(range);
            return base;
        }
    }
}

/// One port, as [`quiet_ports`].
pub fn quiet_port() -> u16 {
    quiet_ports(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_port_is_handed_out_twice() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let base = super::quiet_ports(9);
            assert!((base..base + 9).all(|p| seen.insert(p)));
        }
    }
}

//! The proxy's clock: monotonic timestamps relative to a process-wide base, cheap to keep in
//! atomics.
//!
//! Each read of the clock is ~30 ns in this kind of VM (`Instant::now` in a loop, pinned), so
//! a proxied request reads it three times, not once per use: as it arrives, as each attempt
//! starts (the pool checks an idle connection's age against that reading), and as the response
//! head arrives (the transport's reading stamps the connection's return to the pool, ends the
//! attempt's latency, and dates the topology edge).

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the process's clock base: a cheap, comparable timestamp for atomics.
pub fn now_millis() -> u64 {
    millis_at(Instant::now())
}

/// [`now_millis`] for an instant already read, so a request reads the clock fewer times.
pub fn millis_at(at: Instant) -> u64 {
    at.saturating_duration_since(base()).as_millis() as u64
}

/// Nanoseconds since the process's clock base.
pub fn nanos_at(at: Instant) -> u64 {
    at.saturating_duration_since(base()).as_nanos() as u64
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_follow_the_clock() {
        let _ = now_millis(); // sets the base, which must precede the readings compared
        let first = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let later = Instant::now();
        assert!(millis_at(later) >= millis_at(first) + 2, "{} {}", millis_at(later), millis_at(first));
        assert!(nanos_at(later) >= nanos_at(first) + 2_000_000);
        assert!(now_millis() >= millis_at(later));
    }
}

//! The proxy's clock: monotonic readings, and the last one this thread took.
//!
//! A proxied request used to read the clock six times (arrival, attempt start and end, the
//! pool's checkout and checkin, the topology edge's "last seen"); each read is ~30 ns in this
//! kind of VM, about 1% of what a request costs the proxy's core. Bookkeeping that only needs
//! "about now" reads [`recent`] instead: the last [`now`] on this thread, which on the request
//! path was taken microseconds earlier by the same request. As nginx does with its cached
//! time, it is never ahead of the real clock, so an idle connection stamped with it only looks
//! older than it is (and is dropped a little early, never kept too long).

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Instant;

thread_local! {
    /// The last reading [`now`] took on this thread.
    static RECENT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Reads the clock, and remembers the reading for [`recent`].
pub fn now() -> Instant {
    let now = Instant::now();
    RECENT.with(|r| r.set(Some(now)));
    now
}

/// The last reading [`now`] took on this thread (a fresh one when it has taken none): for
/// bookkeeping where a few microseconds' staleness does not matter.
pub fn recent() -> Instant {
    RECENT.with(Cell::get).unwrap_or_else(now)
}

/// Milliseconds since the process's clock base: a cheap, comparable timestamp for atomics.
pub fn now_millis() -> u64 {
    millis_at(now())
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
    fn recent_is_the_last_reading_and_never_ahead_of_the_clock() {
        let read = now();
        assert_eq!(recent(), read);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(recent() < Instant::now(), "a remembered reading lags the clock");
        let later = now();
        assert!(later > read);
        assert_eq!(recent(), later);
        assert!(millis_at(later) >= millis_at(read) + 2);
        assert!(nanos_at(later) > nanos_at(read));
    }

    #[test]
    fn a_thread_that_never_read_gets_a_fresh_reading() {
        let before = Instant::now();
        let got = std::thread::spawn(recent).join().expect("thread");
        assert!(got >= before);
    }
}

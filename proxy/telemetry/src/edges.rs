//! Call edges for the topology view: which route (or mesh API caller) reached which service,
//! how often, how often it failed and how long it took. Plain atomics, carried across
//! snapshots, so the hot path records an edge without a lock or an allocation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::millis_at;

/// Counters of one (source, service) edge.
#[derive(Debug, Default)]
pub struct EdgeStats {
    requests: AtomicU64,
    errors: AtomicU64,
    latency_micros: AtomicU64,
    last_ms: AtomicU64,
}

/// A reading of an [`EdgeStats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeReading {
    /// Requests that reached a verdict.
    pub requests: u64,
    /// Of which failed: a 5xx from the upstream or a local 5xx (no endpoint, timeout, breaker).
    pub errors: u64,
    /// Mean time to the response head, in milliseconds.
    pub mean_latency_ms: f64,
    /// When the last request finished, in Unix milliseconds (0 when none has).
    pub last_ms: u64,
}

impl EdgeStats {
    /// Records one request that ended with a response head after `elapsed`, at `now` (a clock
    /// reading the caller already took).
    pub fn record(&self, error: bool, elapsed: Duration, now: Instant) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.last_ms.store(millis_at(now), Ordering::Relaxed);
    }

    /// The counters now.
    pub fn read(&self) -> EdgeReading {
        let requests = self.requests.load(Ordering::Relaxed);
        let micros = self.latency_micros.load(Ordering::Relaxed);
        EdgeReading {
            requests,
            errors: self.errors.load(Ordering::Relaxed),
            mean_latency_ms: if requests == 0 { 0.0 } else { micros as f64 / requests as f64 / 1000.0 },
            last_ms: self.last_ms.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_reflects_every_record() {
        let edge = EdgeStats::default();
        assert_eq!(edge.read().requests, 0);
        let now = Instant::now();
        edge.record(false, Duration::from_millis(2), now);
        edge.record(true, Duration::from_millis(4), now);
        let r = edge.read();
        assert_eq!((r.requests, r.errors), (2, 1));
        assert!((r.mean_latency_ms - 3.0).abs() < 1e-9);
        assert_eq!(r.last_ms, millis_at(now));
    }
}

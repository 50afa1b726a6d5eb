//! A lock-free histogram for the request path.
//!
//! prometheus-client's `Histogram` takes a mutex per observation; this one uses one atomic
//! add per bucket hit and per sum, and encodes through the same exposition code.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds, in seconds, for request latencies: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Upper bounds, in seconds, for plugin calls: 1 µs to 100 ms (a call's deadline).
pub const PLUGIN_CALL_BUCKETS: [f64; 12] =
    [0.000_001, 0.000_002_5, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.001, 0.01, 0.05, 0.1];

/// A histogram of durations with fixed buckets, cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub struct DurationHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bounds_ns: Box<[u64]>,
    bounds_s: Box<[f64]>,
    /// One count per bound plus the `+Inf` bucket (non-cumulative).
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl DurationHistogram {
    /// A histogram with the given upper bounds in seconds (ascending).
    pub fn new(bounds_s: &[f64]) -> Self {
        let bounds_ns = bounds_s.iter().map(|s| (s * 1e9) as u64).collect();
        let counts = (0..=bounds_s.len()).map(|_| AtomicU64::new(0)).collect();
        Self { inner: Arc::new(Inner { bounds_ns, bounds_s: bounds_s.into(), counts, sum_ns: AtomicU64::new(0) }) }
    }

    /// A histogram with [`LATENCY_BUCKETS`].
    pub fn latency() -> Self {
        Self::new(&LATENCY_BUCKETS)
    }

    /// A histogram with [`PLUGIN_CALL_BUCKETS`].
    pub fn plugin_calls() -> Self {
        Self::new(&PLUGIN_CALL_BUCKETS)
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let ns = d.as_nanos().min(u128::from(u64::MAX)) as u64;
        let i = self.inner.bounds_ns.partition_point(|&b| b < ns);
        self.inner.counts[i].fetch_add(1, Ordering::Relaxed);
        self.inner.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl Default for DurationHistogram {
    fn default() -> Self {
        Self::latency()
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder accumulates the per-bucket counts itself.
        let mut count = 0;
        let mut buckets = Vec::with_capacity(self.inner.counts.len());
        for (i, c) in self.inner.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            buckets.push((self.inner.bounds_s.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        let sum = self.inner.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn encodes_cumulative_buckets() {
        let h = DurationHistogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let mut registry = Registry::default();
        registry.register("lat", "test", h.clone());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encodes");
        assert!(out.contains("lat_bucket{le=\"0.001\"} 1"), "{out}");
        assert!(out.contains("lat_bucket{le=\"0.01\"} 2"), "{out}");
        assert!(out.contains("lat_bucket{le=\"+Inf\"} 3"), "{out}");
        assert!(out.contains("lat_count 3"), "{out}");
        assert_eq!(h.count(), 3);
    }
}

//! Peak-EWMA by power of two choices, as Linkerd balances.
//!
//! Cost is the endpoint's decayed peak latency average times its outstanding requests plus
//! one, divided by weight: slow or busy endpoints are avoided, and an endpoint that slows down
//! is avoided at once because a slow sample replaces the average.

use super::{Balancer, PickContext, power_of_two};
use crate::upstream::Endpoint;

/// Of two random endpoints, the one with the lower latency × load.
#[derive(Debug, Default)]
pub struct PeakEwma;

impl Balancer for PeakEwma {
    fn pick(&self, ctx: &PickContext, endpoints: &[Endpoint], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        power_of_two(endpoints, eligible, |e| {
            e.stats.ewma_nanos(ctx.now) * f64::from(e.stats.in_flight() + 1) / f64::from(e.weight)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::test_support::{ctx, endpoints};
    use super::*;

    #[test]
    fn prefers_the_faster_endpoint() {
        let eps = endpoints(&[1, 1]);
        let now = Instant::now();
        eps[0].stats.observe_latency(now, Duration::from_millis(200));
        eps[1].stats.observe_latency(now, Duration::from_millis(1));
        for _ in 0..50 {
            assert_eq!(PeakEwma.pick(&ctx(None), &eps, &|_| true), Some(1));
        }
    }

    #[test]
    fn a_slow_sample_takes_effect_at_once() {
        let eps = endpoints(&[1]);
        let now = Instant::now();
        eps[0].stats.observe_latency(now, Duration::from_millis(1));
        eps[0].stats.observe_latency(now, Duration::from_millis(500));
        assert!(eps[0].stats.ewma_nanos(now) >= 499e6);
    }
}

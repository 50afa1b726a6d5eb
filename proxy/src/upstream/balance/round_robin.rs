//! Smooth weighted round robin, as nginx does it, precomputed into a schedule.
//!
//! nginx's algorithm spreads a heavy endpoint's turns evenly (weights 5,1,1 give
//! `a a b a c a a`, not `a a a a a b c`). Running it under a lock per request would serialise
//! workers, so the whole period is computed once per snapshot and picks walk it with one atomic
//! counter.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, PickContext};
use crate::upstream::Endpoint;

/// Longest schedule kept; larger weight sums are scaled down proportionally.
const MAX_SCHEDULE: u64 = 1 << 16;

/// Smooth weighted round robin.
#[derive(Debug)]
pub struct RoundRobin {
    schedule: Box<[u32]>,
    next: AtomicUsize,
}

impl RoundRobin {
    /// Precomputes one period of the schedule for `endpoints`' weights.
    pub fn new(endpoints: &[Endpoint]) -> Self {
        let weights = reduced_weights(endpoints);
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut schedule = Vec::with_capacity(total as usize);
        for _ in 0..total {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
                .expect("schedule is only built for a non-empty endpoint list");
            current[best] -= total;
            schedule.push(best as u32);
        }
        Self { schedule: schedule.into_boxed_slice(), next: AtomicUsize::new(0) }
    }
}

/// Weights divided by their gcd, then scaled so one period fits in [`MAX_SCHEDULE`].
fn reduced_weights(endpoints: &[Endpoint]) -> Vec<i64> {
    let g = endpoints.iter().map(|e| u64::from(e.weight)).fold(0, gcd).max(1);
    let mut weights: Vec<u64> = endpoints.iter().map(|e| u64::from(e.weight) / g).collect();
    let total: u64 = weights.iter().sum();
    if total > MAX_SCHEDULE {
        for w in &mut weights {
            *w = (*w * MAX_SCHEDULE / total).max(1);
        }
    }
    weights.into_iter().map(|w| w as i64).collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Balancer for RoundRobin {
    fn pick(&self, _ctx: &PickContext, endpoints: &[Endpoint], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 || endpoints.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // Skipping ineligible turns keeps the others' order; one period visits every endpoint.
        (0..len).map(|k| self.schedule[(start + k) % len] as usize).find(|&i| eligible(i))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ctx, endpoints};
    use super::*;

    fn picks(rr: &RoundRobin, eps: &[Endpoint], n: usize) -> Vec<usize> {
        (0..n).map(|_| rr.pick(&ctx(None), eps, &|_| true).expect("an endpoint")).collect()
    }

    #[test]
    fn equal_weights_rotate_in_order() {
        let eps = endpoints(&[1, 1, 1]);
        let rr = RoundRobin::new(&eps);
        assert_eq!(picks(&rr, &eps, 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn heavy_endpoint_is_spread_like_nginx() {
        let eps = endpoints(&[5, 1, 1]);
        let rr = RoundRobin::new(&eps);
        assert_eq!(picks(&rr, &eps, 7), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn ineligible_endpoints_are_skipped() {
        let eps = endpoints(&[1, 1, 1]);
        let rr = RoundRobin::new(&eps);
        let got: Vec<_> = (0..4).map(|_| rr.pick(&ctx(None), &eps, &|i| i != 1).expect("one")).collect();
        assert_eq!(got, [0, 2, 2, 0]);
        assert_eq!(rr.pick(&ctx(None), &eps, &|_| false), None);
    }

    #[test]
    fn huge_weights_are_scaled_not_exploded() {
        let eps = endpoints(&[10_000, 9_999, 1]);
        let rr = RoundRobin::new(&eps);
        assert!(rr.schedule.len() as u64 <= MAX_SCHEDULE + 3);
        assert!(rr.schedule.contains(&2));
    }
}

//! Weighted random selection over cumulative weights.

use super::{Balancer, PickContext};
use crate::upstream::Endpoint;

/// Picks each endpoint with probability proportional to its weight.
#[derive(Debug)]
pub struct WeightedRandom {
    /// Running sums of the weights, for a binary search per pick.
    cumulative: Box<[u64]>,
}

impl WeightedRandom {
    /// Precomputes cumulative weights.
    pub fn new(endpoints: &[Endpoint]) -> Self {
        let cumulative = endpoints
            .iter()
            .scan(0u64, |sum, e| {
                *sum += u64::from(e.weight);
                Some(*sum)
            })
            .collect();
        Self { cumulative }
    }

    fn draw(&self) -> Option<usize> {
        let total = *self.cumulative.last()?;
        let x = fastrand::u64(..total);
        Some(self.cumulative.partition_point(|&c| c <= x))
    }
}

impl Balancer for WeightedRandom {
    fn pick(&self, _ctx: &PickContext, endpoints: &[Endpoint], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        for _ in 0..4 {
            let i = self.draw()?;
            if eligible(i) {
                return Some(i);
            }
        }
        // Most endpoints are excluded: draw among the eligible ones directly.
        let total: u64 = (0..endpoints.len()).filter(|&i| eligible(i)).map(|i| u64::from(endpoints[i].weight)).sum();
        if total == 0 {
            return None;
        }
        let mut x = fastrand::u64(..total);
        for i in (0..endpoints.len()).filter(|&i| eligible(i)) {
            let w = u64::from(endpoints[i].weight);
            if x < w {
                return Some(i);
            }
            x -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ctx, endpoints};
    use super::*;

    #[test]
    fn follows_weights() {
        let eps = endpoints(&[1, 3]);
        let b = WeightedRandom::new(&eps);
        let mut counts = [0u32; 2];
        for _ in 0..20_000 {
            counts[b.pick(&ctx(None), &eps, &|_| true).expect("one")] += 1;
        }
        let share = f64::from(counts[1]) / 20_000.0;
        assert!((0.72..0.78).contains(&share), "weight-3 share {share}");
    }

    #[test]
    fn respects_eligibility() {
        let eps = endpoints(&[100, 1]);
        let b = WeightedRandom::new(&eps);
        for _ in 0..100 {
            assert_eq!(b.pick(&ctx(None), &eps, &|i| i == 1), Some(1));
        }
        assert_eq!(b.pick(&ctx(None), &eps, &|_| false), None);
    }
}

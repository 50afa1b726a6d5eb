//! Least request by power of two choices (Envoy's LEAST_REQUEST with choice_count = 2).

use super::{Balancer, PickContext, power_of_two};
use crate::upstream::Endpoint;

/// Of two random endpoints, the one with fewer requests in flight per unit of weight.
#[derive(Debug, Default)]
pub struct LeastRequest;

impl Balancer for LeastRequest {
    fn pick(&self, _ctx: &PickContext, endpoints: &[Endpoint], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        power_of_two(endpoints, eligible, |e| f64::from(e.stats.in_flight() + 1) / f64::from(e.weight))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ctx, endpoints};
    use super::*;

    #[test]
    fn avoids_the_loaded_endpoint() {
        let eps = endpoints(&[1, 1]);
        for _ in 0..10 {
            eps[0].stats.start_request();
        }
        for _ in 0..50 {
            assert_eq!(LeastRequest.pick(&ctx(None), &eps, &|_| true), Some(1));
        }
    }

    #[test]
    fn single_eligible_endpoint_is_chosen() {
        let eps = endpoints(&[1, 1, 1]);
        assert_eq!(LeastRequest.pick(&ctx(None), &eps, &|i| i == 2), Some(2));
        assert_eq!(LeastRequest.pick(&ctx(None), &eps, &|_| false), None);
    }
}

//! Load balancing: one trait, one file per algorithm.
//!
//! A balancer is built once per snapshot from the service's endpoint list and never locks:
//! per-pick state is atomic. `eligible` lets the caller exclude endpoints (unhealthy, ejected,
//! already tried) without rebuilding the balancer, as Pingora's `select_with` does.

mod least_request;
mod peak_ewma;
mod random;
pub mod ring_hash;
mod round_robin;

use std::fmt::Debug;
use std::time::Instant;

pub use least_request::LeastRequest;
pub use peak_ewma::PeakEwma;
pub use random::WeightedRandom;
pub use ring_hash::RingHash;
pub use round_robin::RoundRobin;

use super::Endpoint;
use crate::config::BalancePolicy;

/// What a balancer may know about the request it picks for.
#[derive(Debug, Clone, Copy)]
pub struct PickContext {
    /// The request's consistent-hash key, when the service hashes and the key was present.
    pub hash: Option<u64>,
    /// The time of the pick, read once per request.
    pub now: Instant,
}

/// Chooses an endpoint for a request.
pub trait Balancer: Send + Sync + Debug {
    /// Returns the index into `endpoints` of the chosen endpoint, or `None` when no
    /// eligible endpoint exists. `endpoints` is the same list the balancer was built from.
    fn pick(&self, ctx: &PickContext, endpoints: &[Endpoint], eligible: &dyn Fn(usize) -> bool) -> Option<usize>;
}

/// Builds the balancer for `policy` over `endpoints`.
pub fn build(policy: BalancePolicy, endpoints: &[Endpoint]) -> Box<dyn Balancer> {
    match policy {
        BalancePolicy::RoundRobin => Box::new(RoundRobin::new(endpoints)),
        BalancePolicy::Random => Box::new(WeightedRandom::new(endpoints)),
        BalancePolicy::LeastRequest => Box::new(LeastRequest),
        BalancePolicy::PeakEwma => Box::new(PeakEwma),
        BalancePolicy::RingHash => Box::new(RingHash::new(endpoints)),
    }
}

/// Power of two choices: draws two distinct eligible endpoints at random and keeps the one
/// with the lower `cost`. Shared by least-request and peak-EWMA, which differ only in cost.
pub(crate) fn power_of_two(
    endpoints: &[Endpoint],
    eligible: &dyn Fn(usize) -> bool,
    cost: impl Fn(&Endpoint) -> f64,
) -> Option<usize> {
    let n = endpoints.len();
    let first = random_eligible(n, eligible, None)?;
    let Some(second) = random_eligible(n, eligible, Some(first)) else {
        return Some(first);
    };
    if cost(&endpoints[second]) < cost(&endpoints[first]) { Some(second) } else { Some(first) }
}

/// A uniformly random eligible index other than `except`: a few random draws, then a scan
/// from a random start so that a mostly-ineligible set still terminates quickly.
fn random_eligible(n: usize, eligible: &dyn Fn(usize) -> bool, except: Option<usize>) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let ok = |i: usize| Some(i) != except && eligible(i);
    for _ in 0..4 {
        let i = fastrand::usize(..n);
        if ok(i) {
            return Some(i);
        }
    }
    let start = fastrand::usize(..n);
    (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::super::Endpoint;

    /// Endpoints 127.0.0.1:9000+i with the given weights.
    pub fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = format!("127.0.0.1:{}", 9000 + i).parse().expect("valid address");
                Endpoint::standalone(addr, w)
            })
            .collect()
    }

    pub fn ctx(hash: Option<u64>) -> super::PickContext {
        super::PickContext { hash, now: std::time::Instant::now() }
    }
}

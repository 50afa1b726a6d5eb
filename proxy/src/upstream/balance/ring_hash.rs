//! Consistent hashing on a ring (Envoy's RING_HASH, ketama-style).
//!
//! Each endpoint owns points on a 64-bit ring in proportion to its weight; a request's key
//! hash goes to the first point at or after it. Points are derived from the endpoint's
//! address, not its position, so removing one endpoint moves only the keys it owned.

use std::net::SocketAddr;

use xxhash_rust::xxh3::xxh3_64;

use super::{Balancer, PickContext};
use crate::upstream::Endpoint;

/// Points per unit of weight (ketama's 160). Fixed, rather than scaled to the endpoint
/// count as Envoy's minimum ring size is, so that an endpoint's points do not change when
/// another endpoint joins or leaves: only the leaver's keys move.
const POINTS_PER_WEIGHT: u64 = 160;
/// Points on the ring, at most; beyond it every endpoint's share is scaled down.
const MAX_RING_SIZE: u64 = 1 << 20;

/// Consistent hashing ring.
#[derive(Debug)]
pub struct RingHash {
    /// (point, endpoint index), sorted by point.
    ring: Box<[(u64, u32)]>,
}

impl RingHash {
    /// Builds the ring for `endpoints`.
    pub fn new(endpoints: &[Endpoint]) -> Self {
        let total: u64 = endpoints.iter().map(|e| u64::from(e.weight)).sum();
        let mut ring = Vec::new();
        if total > 0 {
            let points = |weight: u64| {
                if total * POINTS_PER_WEIGHT <= MAX_RING_SIZE {
                    weight * POINTS_PER_WEIGHT
                } else {
                    (weight * MAX_RING_SIZE / total).max(1)
                }
            };
            for (i, e) in endpoints.iter().enumerate() {
                for replica in 0..points(u64::from(e.weight)) {
                    ring.push((point(e.address, replica), i as u32));
                }
            }
        }
        ring.sort_unstable();
        Self { ring: ring.into_boxed_slice() }
    }
}

fn point(addr: SocketAddr, replica: u64) -> u64 {
    xxh3_64(format!("{addr}_{replica}").as_bytes())
}

/// The ring hash of a request key.
pub fn hash_key(key: &[u8]) -> u64 {
    xxh3_64(key)
}

impl Balancer for RingHash {
    fn pick(&self, ctx: &PickContext, endpoints: &[Endpoint], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let len = self.ring.len();
        if len == 0 || endpoints.is_empty() {
            return None;
        }
        let Some(hash) = ctx.hash else {
            // No key on this request: spread it like random.
            return (0..4).map(|_| self.ring[fastrand::usize(..len)].1 as usize).find(|&i| eligible(i));
        };
        let start = self.ring.partition_point(|&(p, _)| p < hash);
        // Walking on past an excluded endpoint's points gives its keys to their ring
        // successors, the same ones that would take them if it were removed.
        (0..len).map(|k| self.ring[(start + k) % len].1 as usize).find(|&i| eligible(i))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ctx, endpoints};
    use super::*;

    fn owner(ring: &RingHash, eps: &[Endpoint], key: &str) -> std::net::SocketAddr {
        let i = ring.pick(&ctx(Some(hash_key(key.as_bytes()))), eps, &|_| true).expect("one");
        eps[i].address
    }

    #[test]
    fn same_key_same_endpoint() {
        let eps = endpoints(&[1, 1, 1]);
        let ring = RingHash::new(&eps);
        for k in 0..100 {
            let key = format!("user-{k}");
            assert_eq!(owner(&ring, &eps, &key), owner(&ring, &eps, &key));
        }
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_keys() {
        let three = endpoints(&[1, 1, 1]);
        let two: Vec<Endpoint> = endpoints(&[1, 1, 1]).into_iter().take(2).collect();
        let (r3, r2) = (RingHash::new(&three), RingHash::new(&two));
        let removed = three[2].address;
        let mut moved_from_kept = 0;
        let mut owned_by_removed = 0;
        for k in 0..3000 {
            let key = format!("k{k}");
            let before = owner(&r3, &three, &key);
            let after = owner(&r2, &two, &key);
            if before == removed {
                owned_by_removed += 1;
            } else if before != after {
                moved_from_kept += 1;
            }
        }
        assert_eq!(moved_from_kept, 0);
        assert!((700..1300).contains(&owned_by_removed), "removed endpoint owned {owned_by_removed}");
    }

    #[test]
    fn weights_shape_the_share() {
        let eps = endpoints(&[1, 3]);
        let ring = RingHash::new(&eps);
        let heavy = (0..4000).filter(|k| owner(&ring, &eps, &format!("{k}")) == eps[1].address).count();
        assert!((2600..3400).contains(&heavy), "weight-3 endpoint got {heavy} of 4000");
    }
}

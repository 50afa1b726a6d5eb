//! Zone-aware balancer: keeps a request in its zone (the `zone_header` it carries, else the
//! proxy's own `zone`) while enough healthy endpoints there remain, and there picks the
//! endpoint with the lowest latency × load (EWMA latency times in-flight requests plus one,
//! over weight). Ties rotate, so equal endpoints share the traffic.
//!
//! Config: `{ zone = "eu-1", zone_header = "x-zone", zone_key = "zone", min_local = 1 }`
//! (`zone_key` is the endpoint metadata label holding its zone).

use wasmesh_plugin_sdk::{Balancer, Endpoint, Interest, Request};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneBalancer {
    zone: Option<String>,
    zone_header: Option<String>,
    #[serde(default = "ZoneBalancer::default_zone_key")]
    zone_key: String,
    #[serde(default = "ZoneBalancer::default_min_local")]
    min_local: usize,
    /// Rotates the start of the tie-break; per instance, which is enough to spread ties.
    #[serde(skip)]
    turn: usize,
}

impl ZoneBalancer {
    fn default_zone_key() -> String {
        "zone".into()
    }
    fn default_min_local() -> usize {
        1
    }
}

fn zone_of<'a>(e: &'a Endpoint, key: &str) -> Option<&'a str> {
    e.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Latency × load, lower is better.
fn cost(e: &Endpoint) -> u64 {
    (u64::from(e.ewma_latency_us) + 1) * (u64::from(e.in_flight) + 1) * 1000 / u64::from(e.weight.max(1))
}

impl Balancer for ZoneBalancer {
    type Config = Self;

    fn new(mut config: Self) -> Result<Self, String> {
        if config.zone.is_none() && config.zone_header.is_none() {
            return Err("config: set `zone`, `zone_header`, or both".into());
        }
        if config.min_local == 0 {
            return Err("config.min_local: must be at least 1".into());
        }
        if let Some(name) = &mut config.zone_header {
            name.make_ascii_lowercase();
        }
        Ok(config)
    }

    fn interest(&self) -> Interest {
        Interest::headers(self.zone_header.clone())
    }

    fn pick(&mut self, req: &Request, candidates: &[Endpoint]) -> Option<u32> {
        let wanted = self.zone_header.as_deref().and_then(|h| req.header(h)).or(self.zone.as_deref());
        let local = |e: &Endpoint| e.healthy && wanted.is_some() && zone_of(e, &self.zone_key) == wanted;
        let local_count = candidates.iter().filter(|e| local(e)).count();
        // The host passes only endpoints it would route to; in its panic mode they may all be
        // unhealthy, and then health cannot rank them.
        let any_healthy = candidates.iter().any(|e| e.healthy);
        let in_scope = |e: &Endpoint| {
            if local_count >= self.min_local { local(e) } else { e.healthy || !any_healthy }
        };
        let n = candidates.len();
        let start = self.turn;
        self.turn = self.turn.wrapping_add(1);
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| in_scope(&candidates[i]))
            .min_by_key(|&i| cost(&candidates[i]))
            .map(|i| i as u32)
    }
}

wasmesh_plugin_sdk::export!(ZoneBalancer);

//! Endpoints as balancer and health-check plugins see them: the plugin contract's
//! `endpoint` record, filled from an [`Endpoint`] and its live statistics.

use std::time::Instant;

use super::{Endpoint, EndpointStats};
use crate::plugin::types;

/// Endpoint `id` as balancer and health-check plugins see it, with its live statistics.
pub fn endpoint_view(id: u32, endpoint: &Endpoint, now: Instant, now_ms: u64) -> types::Endpoint {
    let mut view = types::Endpoint {
        id,
        address: endpoint.authority.as_str().to_owned(),
        weight: endpoint.weight,
        in_flight: 0,
        ewma_latency_us: 0,
        healthy: false,
        metadata: endpoint.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    refresh_live_stats(&mut view, &endpoint.stats, now, now_ms);
    view
}

/// Updates the live fields of an endpoint view (load, latency, routability) from `stats`.
pub fn refresh_live_stats(view: &mut types::Endpoint, stats: &EndpointStats, now: Instant, now_ms: u64) {
    view.in_flight = stats.in_flight();
    view.ewma_latency_us = (stats.ewma_nanos(now) / 1000.0).min(f64::from(u32::MAX)) as u32;
    view.healthy = stats.is_routable(now_ms);
}

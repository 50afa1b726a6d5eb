//! Building a snapshot from a validated configuration.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::{HashKey, ListenerRoutes, Route, Service, Snapshot};
use crate::config::{Config, HashKeyConfig, ServiceConfig};
use crate::routing::{Matcher, Rewrite};
use crate::telemetry::Metrics;
use crate::upstream::pool::{PoolSettings, UpstreamPool};
use crate::upstream::{Endpoint, EndpointStats, balance};

/// State carried from one snapshot to the next, keyed by service and endpoint.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    endpoints: HashMap<(String, SocketAddr), Arc<EndpointStats>>,
    pools: HashMap<String, (PoolSettings, UpstreamPool)>,
}

/// Builds snapshot `version` from `config`, reusing carried state for endpoints and pools
/// that still exist and dropping it for those that left.
pub(crate) fn build(config: Arc<Config>, version: u64, carried: &mut Carried, metrics: &Metrics) -> Snapshot {
    let mut next = Carried::default();
    let services: Vec<Service> =
        config.services.iter().map(|s| build_service(s, carried, &mut next, metrics)).collect();
    *carried = next;

    let listeners = config
        .listeners
        .iter()
        .map(|l| ListenerRoutes {
            name: l.name.clone(),
            routes: config
                .routes
                .iter()
                .filter(|r| r.listeners.is_empty() || r.listeners.contains(&l.name))
                .map(|r| {
                    let service = services.iter().position(|s| s.name == r.service).expect("validated reference");
                    let matcher = Matcher::new(&r.matcher);
                    Route {
                        name: r.name.clone(),
                        rewrite: r.rewrite.as_ref().and_then(Rewrite::new),
                        service,
                        timeout: r.timeout.unwrap_or(config.services[service].timeouts.request),
                        metrics: metrics.route(&r.name, &r.service),
                        matcher,
                    }
                })
                .collect(),
        })
        .collect();

    Snapshot { version, loaded_at: SystemTime::now(), access_log: config.log.access_log, listeners, services, config }
}

fn build_service(cfg: &ServiceConfig, old: &mut Carried, next: &mut Carried, metrics: &Metrics) -> Service {
    let endpoints: Vec<Endpoint> = cfg
        .endpoints
        .iter()
        .map(|e| {
            let key = (cfg.name.clone(), e.address);
            let stats = old.endpoints.remove(&key).unwrap_or_default();
            next.endpoints.insert(key, stats.clone());
            Endpoint::new(e.address, e.weight, e.metadata.clone(), stats)
        })
        .collect();
    let settings = PoolSettings {
        protocol: cfg.protocol,
        connect_timeout: cfg.timeouts.connect,
        idle_timeout: cfg.timeouts.idle,
        max_idle_per_endpoint: cfg.max_idle_per_endpoint,
    };
    let pool = match old.pools.remove(&cfg.name) {
        Some((s, pool)) if s == settings => pool,
        _ => UpstreamPool::new(&settings, metrics),
    };
    next.pools.insert(cfg.name.clone(), (settings, pool.clone()));
    let hash_key = cfg.hash_key.as_ref().map(|k| match k {
        HashKeyConfig::Header { name } => {
            HashKey::Header(http::HeaderName::from_bytes(name.as_bytes()).expect("validated header name"))
        }
        HashKeyConfig::Cookie { name } => HashKey::Cookie(name.clone()),
        HashKeyConfig::ClientIp => HashKey::ClientIp,
    });
    Service {
        name: cfg.name.clone(),
        balancer: balance::build(cfg.balance, &endpoints),
        endpoints,
        hash_key,
        protocol: cfg.protocol,
        pool,
    }
}

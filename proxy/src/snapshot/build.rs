//! Building a snapshot from a validated configuration.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::{HashKey, ListenerRoutes, Route, Service, ServicePolicy, Snapshot};
use crate::config::{Config, HashKeyConfig, ServiceConfig, UpstreamProtocol};
use crate::plugin::{self, Plugin, PluginCounters, PluginError};
use crate::routing::{Matcher, Rewrite};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::EndpointLabels;
use crate::telemetry::metrics::PluginLabels;
use crate::upstream::breaker::ServiceState;
use crate::upstream::conn_pool::{ConnPool, ConnSettings};
use crate::upstream::http2::Http2Client;
use crate::upstream::{Endpoint, EndpointStats, Transport, balance};

/// State carried from one snapshot to the next, keyed by service and endpoint.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    endpoints: HashMap<(String, SocketAddr), (Arc<EndpointStats>, Arc<ConnPool>)>,
    h2_clients: HashMap<String, (ConnSettings, Http2Client)>,
    services: HashMap<String, Arc<ServiceState>>,
}

/// Builds snapshot `version` from `config`, reusing carried state for endpoints and pools
/// that still exist and dropping it for those that left.
pub(crate) fn build(
    config: Arc<Config>,
    version: u64,
    carried: &mut Carried,
    metrics: &Metrics,
) -> Result<Snapshot, PluginError> {
    // Plugins first: a plugin that fails to load rejects the whole snapshot before any
    // carried state is touched.
    let mut plugins = Vec::new();
    for p in &config.plugins {
        let labels = PluginLabels { plugin: p.name.clone() };
        let counters = PluginCounters {
            failures: metrics.plugin_failures.get_or_create_owned(&labels),
            instances: metrics.plugin_instances.get_or_create_owned(&labels),
        };
        plugins.push((p.name.clone(), plugin::load(p, &metrics.plugin_families, counters)?));
    }
    let router = |name: &Option<String>| {
        name.as_ref().and_then(|n| plugins.iter().find(|(pn, _)| pn == n)).and_then(|(_, p)| match p {
            Plugin::Router(r) => Some(r.clone()),
            Plugin::Filter(_) => None,
        })
    };
    let filters = |names: &[String]| {
        names
            .iter()
            .filter_map(|n| plugins.iter().find(|(pn, _)| pn == n))
            .filter_map(|(_, p)| match p {
                Plugin::Filter(f) => Some(f.clone()),
                Plugin::Router(_) => None,
            })
            .collect::<Vec<_>>()
    };
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
                    Route {
                        name: r.name.clone(),
                        matcher: Matcher::new(&r.matcher),
                        rewrite: r.rewrite.as_ref().and_then(Rewrite::new),
                        service,
                        timeout: r.timeout.unwrap_or(config.services[service].timeouts.request),
                        metrics: metrics.route(&r.name, &r.service),
                        router: router(&r.router),
                        filters: filters(&r.filters),
                    }
                })
                .collect(),
        })
        .collect();

    Ok(Snapshot {
        version,
        loaded_at: SystemTime::now(),
        access_log: config.log.access_log,
        listeners,
        services,
        plugins,
        config,
    })
}

fn build_service(cfg: &ServiceConfig, old: &mut Carried, next: &mut Carried, metrics: &Metrics) -> Service {
    let state = old.services.remove(&cfg.name).unwrap_or_default();
    next.services.insert(cfg.name.clone(), state.clone());
    let settings = ConnSettings {
        connect_timeout: cfg.timeouts.connect,
        idle_timeout: cfg.timeouts.idle,
        max_idle: cfg.max_idle_per_endpoint,
    };
    let endpoints: Vec<Endpoint> = cfg
        .endpoints
        .iter()
        .map(|e| {
            let key = (cfg.name.clone(), e.address);
            let (stats, conns) = match old.endpoints.remove(&key) {
                Some((stats, conns)) if *conns.settings() == settings => (stats, conns),
                Some((stats, _)) => (stats, new_conn_pool(e.address, &settings, &state, metrics)),
                None => (Arc::default(), new_conn_pool(e.address, &settings, &state, metrics)),
            };
            next.endpoints.insert(key, (stats.clone(), conns.clone()));
            Endpoint::new(e.address, e.weight, e.metadata.clone(), stats, conns)
        })
        .collect();
    let transport = match cfg.protocol {
        UpstreamProtocol::Http1 => Transport::Http1,
        UpstreamProtocol::H2c => {
            let client = match old.h2_clients.remove(&cfg.name) {
                Some((s, client)) if s == settings => client,
                _ => Http2Client::new(&settings, metrics),
            };
            next.h2_clients.insert(cfg.name.clone(), (settings, client.clone()));
            Transport::H2c(Box::new(client))
        }
    };
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
        transport,
        policy: ServicePolicy {
            health_check: cfg.health_check.clone(),
            panic_threshold: cfg.healthy_panic_threshold,
            outlier: cfg.outlier_detection.clone(),
            breaker: cfg.circuit_breaker.clone(),
            retry: cfg.retry.clone(),
        },
        state,
    }
}

fn new_conn_pool(addr: SocketAddr, settings: &ConnSettings, state: &ServiceState, metrics: &Metrics) -> Arc<ConnPool> {
    let labels = EndpointLabels { endpoint: addr.to_string() };
    Arc::new(ConnPool::new(
        addr,
        settings.clone(),
        metrics.upstream_connections.get_or_create_owned(&labels),
        metrics.upstream_connections_opened.get_or_create_owned(&labels),
        state.conns.clone(),
    ))
}

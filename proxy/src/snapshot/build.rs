//! Building a snapshot from a validated configuration.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::inputs::{Assets, LoadedPlugin};
use super::{CALL_LISTENER, HashKey, ListenerRoutes, Route, Service, ServicePolicy, Snapshot, Tracing};
use crate::clock::now_millis;
use crate::config::{Config, HashKeyConfig, ServiceConfig, TracingConfig, UpstreamProtocol};
use crate::plugin::{BalancerPlugin, Plugin};
use crate::registry::{Instance, InstanceSet};
use crate::routing::{Matcher, Rewrite};
use crate::telemetry::Metrics;
use crate::telemetry::edges::EdgeStats;
use crate::telemetry::metrics::EndpointLabels;
use crate::telemetry::otlp::SpanExport;
use crate::tls::client::UpstreamTls;
use crate::upstream::breaker::ServiceState;
use crate::upstream::conn_pool::{ConnPool, ConnSettings};
use crate::upstream::{Endpoint, EndpointStats, Transport, balance};

/// State carried from one snapshot to the next, keyed by service and endpoint.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    endpoints: HashMap<(String, SocketAddr), (Arc<EndpointStats>, Arc<ConnPool>)>,
    services: HashMap<String, Arc<ServiceState>>,
    edges: HashMap<(String, String), Arc<EdgeStats>>,
    spans: Option<Arc<SpanExport>>,
}

/// Builds snapshot `version` from `config`, its loaded `plugins` and the registered
/// `instances`, reusing carried state for endpoints, pools and edges that still exist and
/// dropping it for those that left.
pub(crate) fn build(
    config: Arc<Config>,
    plugins: &[LoadedPlugin],
    assets: &Assets,
    instances: &Arc<InstanceSet>,
    version: u64,
    carried: &mut Carried,
    metrics: &Metrics,
) -> Snapshot {
    let plugin = |name: &str| plugins.iter().find(|p| p.config.name == name).map(|p| &p.plugin);
    let router = |name: &Option<String>| match name.as_deref().and_then(plugin) {
        Some(Plugin::Router(r)) => Some(r.clone()),
        _ => None,
    };
    let filters = |names: &[String]| {
        names
            .iter()
            .filter_map(|n| match plugin(n) {
                Some(Plugin::Filter(f)) => Some(f.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };

    // Services: those configured, then those that exist only in the registry, by name.
    let mut registered: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    for i in instances.values() {
        registered.entry(i.service_name.as_str()).or_default().push(i);
    }
    let implicit: Vec<ServiceConfig> = registered
        .keys()
        .filter(|name| !config.services.iter().any(|s| s.name == **name))
        .map(|name| ServiceConfig::named(name))
        .collect();
    let mut next = Carried::default();
    let services: Vec<Service> = config
        .services
        .iter()
        .chain(&implicit)
        .map(|s| {
            let members = registered.get(s.name.as_str()).map_or(&[][..], Vec::as_slice);
            let balancer = match s.balancer.as_deref().and_then(plugin) {
                Some(Plugin::Balancer(b)) => Some(b.clone()),
                _ => None,
            };
            let mut service = build_service(
                s,
                members,
                balancer,
                assets.tls.services.get(&s.name).cloned(),
                carried,
                &mut next,
                metrics,
            );
            service.contracts = assets.contracts.get(&s.name).cloned();
            service
        })
        .collect();
    let timeouts: Vec<Duration> = config.services.iter().chain(&implicit).map(|s| s.timeouts.request).collect();

    let mut edges = |route: &str, targets: &mut dyn Iterator<Item = &str>| -> Box<[Arc<EdgeStats>]> {
        targets
            .map(|service| {
                let key = (route.to_owned(), service.to_owned());
                let edge = carried.edges.remove(&key).unwrap_or_default();
                next.edges.insert(key, edge.clone());
                edge
            })
            .collect()
    };
    let mut listeners: Vec<ListenerRoutes> = config
        .listeners
        .iter()
        .map(|l| ListenerRoutes {
            name: l.name.clone(),
            tls: assets.tls.listeners.get(&l.name).cloned(),
            forwarded_headers: l.forwarded_headers,
            max_request_headers: l.max_request_headers,
            routes: config
                .routes
                .iter()
                .filter(|r| r.listeners.is_empty() || r.listeners.contains(&l.name))
                .map(|r| {
                    let service = services.iter().position(|s| s.name == r.service).expect("validated reference");
                    let router = router(&r.router);
                    let mut targets: Box<dyn Iterator<Item = &str>> = if router.is_some() {
                        Box::new(services.iter().map(|s| s.name.as_str()))
                    } else {
                        Box::new(std::iter::once(r.service.as_str()))
                    };
                    Route {
                        name: r.name.clone(),
                        matcher: Matcher::new(&r.matcher),
                        rewrite: r.rewrite.as_ref().and_then(Rewrite::new),
                        service,
                        timeout: r.timeout.unwrap_or(timeouts[service]),
                        metrics: metrics.route(&r.name, &r.service),
                        router,
                        filters: filters(&r.filters),
                        edges: edges(&r.name, &mut targets),
                    }
                })
                .collect(),
        })
        .collect();

    // The mesh API's routes: one per service, with the filters of the first configured route
    // to that service, so a call is treated like traffic arriving through the mesh.
    let calls = services
        .iter()
        .enumerate()
        .map(|(idx, s)| {
            let name = format!("call:{}", s.name);
            let like = config.routes.iter().find(|r| r.service == s.name);
            Route {
                matcher: Matcher::new(&Default::default()),
                rewrite: None,
                service: idx,
                timeout: timeouts[idx],
                metrics: metrics.route(&name, &s.name),
                router: None,
                filters: like.map(|r| filters(&r.filters)).unwrap_or_default(),
                edges: edges(&name, &mut std::iter::once(s.name.as_str())),
                name,
            }
        })
        .collect();
    listeners.push(ListenerRoutes {
        name: CALL_LISTENER.to_owned(),
        tls: None,
        forwarded_headers: true,
        max_request_headers: wasmesh_http1::MAX_HEADERS,
        routes: calls,
    });
    next.spans = span_export(&config.tracing, carried.spans.take());
    *carried = next;

    Snapshot {
        version,
        loaded_at: SystemTime::now(),
        access_log: config.log.access_log,
        tracing: Tracing {
            enabled: config.tracing.enabled,
            sample_ratio: config.tracing.sample_ratio,
            export: carried.spans.clone(),
        },
        listeners,
        services,
        plugins: plugins.iter().map(|p| (p.config.name.clone(), p.plugin.clone())).collect(),
        instances: instances.clone(),
        config,
    }
}

/// The span exporter `cfg` asks for: the running one when its settings are unchanged (a
/// reload keeps its queue), a new one otherwise. One that cannot start is logged and skipped:
/// the proxy serves without exporting rather than not at all.
fn span_export(cfg: &TracingConfig, running: Option<Arc<SpanExport>>) -> Option<Arc<SpanExport>> {
    let endpoint = cfg.otlp_endpoint.as_deref()?;
    if let Some(same) = running.filter(|r| r.config == *cfg) {
        return Some(same);
    }
    match SpanExport::start(cfg, endpoint) {
        Ok(export) => Some(Arc::new(export)),
        Err(e) => {
            tracing::error!(endpoint, error = %e, "span export not started");
            None
        }
    }
}

fn build_service(
    cfg: &ServiceConfig,
    registered: &[&Instance],
    balancer_plugin: Option<Arc<BalancerPlugin>>,
    tls: Option<Arc<UpstreamTls>>,
    old: &mut Carried,
    next: &mut Carried,
    metrics: &Metrics,
) -> Service {
    let state = old.services.remove(&cfg.name).unwrap_or_default();
    state.configure(&cfg.circuit_breaker);
    next.services.insert(cfg.name.clone(), state.clone());
    let settings = ConnSettings {
        tls,
        connect_timeout: cfg.timeouts.connect,
        idle_timeout: cfg.timeouts.idle,
        max_idle: cfg.max_idle_per_endpoint,
    };
    // Static endpoints, then registered instances at other addresses (a static one wins).
    let now_ms = now_millis();
    let static_eps = cfg.endpoints.iter().map(|e| (e.address, e.weight, e.metadata.clone(), None));
    let dynamic = registered
        .iter()
        .filter(|i| !i.expired(now_ms) && !cfg.endpoints.iter().any(|e| e.address == i.endpoint))
        .map(|i| (i.endpoint, i.weight, i.metadata.clone(), i.health_check.clone().map(Arc::new)));
    let endpoints: Vec<Endpoint> = static_eps
        .chain(dynamic)
        .map(|(address, weight, metadata, health_check)| {
            let key = (cfg.name.clone(), address);
            let (stats, conns) = match old.endpoints.remove(&key) {
                Some((stats, conns)) if *conns.settings() == settings => (stats, conns),
                Some((stats, _)) => (stats, new_conn_pool(address, &settings, metrics)),
                None => (Arc::default(), new_conn_pool(address, &settings, metrics)),
            };
            next.endpoints.insert(key, (stats.clone(), conns.clone()));
            let mut endpoint = Endpoint::new(address, weight, metadata, stats, conns);
            endpoint.health_check = health_check;
            endpoint
        })
        .collect();
    let outlier = cfg.outlier_detection.enabled.then(|| cfg.outlier_detection.clone());
    let filters_endpoints =
        cfg.health_check.is_some() || outlier.is_some() || endpoints.iter().any(|e| e.health_check.is_some());
    let transport = match cfg.protocol {
        UpstreamProtocol::Http1 => Transport::Http1,
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => Transport::Http2,
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
        balancer_plugin,
        endpoints,
        hash_key,
        transport,
        policy: ServicePolicy {
            health_check: cfg.health_check.clone(),
            panic_threshold: cfg.healthy_panic_threshold,
            outlier,
            breaker: cfg.circuit_breaker.clone(),
            retry: cfg.retry.clone(),
        },
        state,
        filters_endpoints,
        contracts: None,
    }
}

fn new_conn_pool(addr: SocketAddr, settings: &ConnSettings, metrics: &Metrics) -> Arc<ConnPool> {
    let labels = EndpointLabels { endpoint: addr.to_string() };
    Arc::new(ConnPool::new(
        addr,
        settings.clone(),
        metrics.upstream_connections.get_or_create_owned(&labels),
        metrics.upstream_connections_opened.get_or_create_owned(&labels),
    ))
}

//! The snapshot: everything a request reads, immutable, swapped whole on reload.
//!
//! A request loads the current snapshot once and uses it to the end, so a reload never
//! changes the rules under a request in flight. State that must outlive a snapshot (endpoint
//! statistics, connection pools) is owned by [`crate::mesh::Mesh`] and shared into each new
//! snapshot for the endpoints and services that still exist.

mod build;
mod inputs;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName};

pub(crate) use build::{Carried, build};
pub use inputs::{Assets, LoadError, LoadedPlugin};

use crate::config::{CircuitBreakerConfig, Config, HealthCheckConfig, OutlierConfig, RetryConfig};
use crate::contract::Contracts;
use crate::plugin::{BalancerPlugin, FilterPlugin, Plugin, RouterPlugin};
use crate::registry::InstanceSet;
use crate::routing::{MatchInput, Matcher, Rewrite};
use crate::telemetry::edges::EdgeStats;
use crate::telemetry::metrics::RouteMetrics;
use crate::telemetry::otlp::SpanExport;
use crate::upstream::Endpoint;
use crate::upstream::Transport;
use crate::upstream::balance::{Balancer, ring_hash};
use crate::upstream::breaker::{BreakerState, ServiceState};

/// One immutable version of the proxy's rules.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every applied configuration.
    pub version: u64,
    /// When this snapshot was built.
    pub loaded_at: SystemTime,
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// Route tables, one per listener.
    pub listeners: Vec<ListenerRoutes>,
    /// Services, referenced by index from routes.
    pub services: Vec<Service>,
    /// Whether to emit access-log events.
    pub access_log: bool,
    /// Trace sampling and span export.
    pub tracing: Tracing,
    /// Loaded plugins, by name.
    pub plugins: Vec<(String, Plugin)>,
    /// The registered instances whose endpoints it includes.
    pub instances: Arc<InstanceSet>,
}

/// Trace sampling and span export, as the request path needs them.
#[derive(Debug, Clone)]
pub struct Tracing {
    /// Whether the proxy takes part in traces at all.
    pub enabled: bool,
    /// Share of new traces recorded.
    pub sample_ratio: f64,
    /// Where recorded spans go, when configured.
    pub export: Option<Arc<SpanExport>>,
}

/// Name of the hidden route table that holds one route per service for `POST call`.
pub const CALL_LISTENER: &str = "@call";

impl Snapshot {
    /// The route table of the listener named `name`.
    pub fn listener(&self, name: &str) -> Option<(usize, &ListenerRoutes)> {
        self.listeners.iter().enumerate().find(|(_, l)| l.name == name)
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<(usize, &Service)> {
        self.services.iter().enumerate().find(|(_, s)| s.name == name)
    }

    /// The mesh API's route to service `service` (an index into `services`): its listener
    /// index and route index.
    pub fn call_route(&self, service: usize) -> Option<(usize, usize)> {
        let (listener, table) = self.listener(CALL_LISTENER)?;
        table.routes.iter().position(|r| r.service == service).map(|route| (listener, route))
    }
}

/// The routes that apply to one listener, in match order.
#[derive(Debug)]
pub struct ListenerRoutes {
    /// Listener name.
    pub name: String,
    /// TLS termination settings, when the listener is a TLS one; a new connection takes them
    /// from the snapshot in force, so a renewed certificate applies from the next handshake.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Whether requests get `X-Forwarded-*` headers.
    pub forwarded_headers: bool,
    /// Most header lines a request may carry.
    pub max_request_headers: usize,
    /// Routes in configuration order.
    pub routes: Vec<Route>,
}

impl ListenerRoutes {
    /// Index of the first route matching `req`.
    pub fn find(&self, req: &MatchInput<'_>) -> Option<usize> {
        self.routes.iter().position(|r| r.matcher.matches(req))
    }
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Route name.
    pub name: String,
    /// Match conditions.
    pub matcher: Matcher,
    /// Path rewrite, if any.
    pub rewrite: Option<Rewrite>,
    /// Index into [`Snapshot::services`].
    pub service: usize,
    /// Total time allowed for a request on this route.
    pub timeout: Duration,
    /// Metric handles.
    pub metrics: RouteMetrics,
    /// Router plugin.
    pub router: Option<Arc<RouterPlugin>>,
    /// Filter plugins, in order.
    pub filters: Vec<Arc<FilterPlugin>>,
    /// Call edges to services: one per service when a router plugin may choose any, else
    /// only the route's own.
    pub edges: Box<[Arc<EdgeStats>]>,
}

impl Route {
    /// The edge to service `service` (an index into the snapshot's services).
    pub fn edge(&self, service: usize) -> &EdgeStats {
        if self.edges.len() == 1 { &self.edges[0] } else { &self.edges[service] }
    }
}

/// A compiled upstream service.
#[derive(Debug)]
pub struct Service {
    /// Service name.
    pub name: String,
    /// Endpoints, in configuration order.
    pub endpoints: Vec<Endpoint>,
    /// Chooses among `endpoints`; with a balancer plugin, when the plugin fails open.
    pub balancer: Box<dyn Balancer>,
    /// A plugin that chooses among `endpoints` instead of `balancer`.
    pub balancer_plugin: Option<Arc<BalancerPlugin>>,
    /// Consistent-hash key source.
    pub hash_key: Option<HashKey>,
    /// How requests reach the endpoints (HTTP/1.1 pools or an h2c client).
    pub transport: Transport,
    /// Health, ejection, breaker and retry policies.
    pub policy: ServicePolicy,
    /// Live limits and breaker state, carried across snapshots.
    pub state: Arc<ServiceState>,
    /// Whether endpoint health or ejection can exclude endpoints at all.
    filters_endpoints: bool,
    /// JSON Schema contracts for request and response bodies.
    pub contracts: Option<Arc<Contracts>>,
}

/// A service's resilience policies, as configured.
#[derive(Debug, Clone)]
pub struct ServicePolicy {
    /// Active health checking.
    pub health_check: Option<HealthCheckConfig>,
    /// Below this share of routable endpoints (percent), balance over all.
    pub panic_threshold: u8,
    /// Passive health checking; `None` when turned off.
    pub outlier: Option<OutlierConfig>,
    /// Limits and the failure-rate breaker.
    pub breaker: CircuitBreakerConfig,
    /// Retries.
    pub retry: Option<RetryConfig>,
}

impl Service {
    /// Whether endpoint health or ejection can exclude endpoints at all.
    pub fn filters_endpoints(&self) -> bool {
        self.filters_endpoints
    }

    /// Whether `endpoint` may receive traffic at `now_ms` (panic mode aside).
    pub fn routable(&self, endpoint: &Endpoint, now_ms: u64) -> bool {
        !self.filters_endpoints || endpoint.stats.is_routable(now_ms)
    }

    /// How many endpoints may receive traffic at `now_ms`.
    pub fn routable_count(&self, now_ms: u64) -> usize {
        self.endpoints.iter().filter(|e| self.routable(e, now_ms)).count()
    }

    /// The failure-rate breaker's position, or `None` when it is turned off.
    pub fn breaker(&self) -> Option<BreakerState> {
        self.policy.breaker.active_failure_rate().map(|_| self.state.breaker_state())
    }

    /// The breaker as the admin views show it: `closed`, `open` or `half_open`, or `disabled`
    /// when the failure-rate breaker is turned off (the concurrency limits apply regardless).
    pub fn breaker_label(&self) -> &'static str {
        self.breaker().map_or("disabled", BreakerState::as_str)
    }
}

/// Where a request's consistent-hash key comes from.
#[derive(Debug, Clone)]
pub enum HashKey {
    /// A header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The client's IP address.
    ClientIp,
}

impl HashKey {
    /// The request's key hash, or `None` when the request lacks the key.
    pub fn hash(&self, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
        match self {
            Self::Header(name) => headers.get(name).map(|v| ring_hash::hash_key(v.as_bytes())),
            Self::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    (k == name).then(|| ring_hash::hash_key(v.as_bytes()))
                }),
            Self::ClientIp => Some(match client {
                IpAddr::V4(ip) => ring_hash::hash_key(&ip.octets()),
                IpAddr::V6(ip) => ring_hash::hash_key(&ip.octets()),
            }),
        }
    }
}

//! The proxy's Prometheus metrics.
//!
//! Families are registered once at start-up; the snapshot builder resolves the label sets a
//! route will use into plain counter handles, so the request path only does atomic adds and
//! never takes the families' locks.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::histogram::DurationHistogram;

/// Labels of per-route request metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route name.
    pub route: String,
    /// Service name.
    pub service: String,
}

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route name.
    pub route: String,
    /// Service name.
    pub service: String,
    /// `1xx` … `5xx`.
    pub status_class: &'static str,
}

/// Why the proxy answered a request itself.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ErrorKind {
    /// No route matched (404).
    no_route,
    /// The service had no endpoint to send to (503).
    no_endpoint,
    /// Connecting to the upstream failed (502).
    upstream_connect,
    /// The upstream connection was reset or closed before a response (502).
    upstream_reset,
    /// The request ran out of time (504).
    timeout,
    /// The request could not be forwarded as received (400).
    bad_request,
    /// A concurrency limit of the service was reached (503).
    overflow,
    /// The service's circuit breaker is open (503).
    circuit_open,
    /// A body broke the service's contract (400 for a request, 502 for an enforced response).
    contract_violation,
    /// A request body exceeded the contract's size limit (413).
    body_too_large,
    /// An HTTP/1.1 request without `Host`, or with two, or with an invalid one; or an HTTP/2
    /// request whose `host` disagrees with its `:authority` (400, RFC 9112 §3.2).
    invalid_host,
    /// A request with more header lines than its listener allows (431).
    headers_too_large,
}

/// Labels of the locally-answered error counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Route name, empty when no route matched.
    pub route: String,
    /// What went wrong.
    pub kind: ErrorKind,
}

/// Labels of per-endpoint connection metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `ip:port` of the endpoint.
    pub endpoint: String,
}

/// Labels of per-service metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// Service name.
    pub service: String,
}

/// Labels of per-endpoint resilience metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceEndpointLabels {
    /// Service name.
    pub service: String,
    /// `ip:port` of the endpoint.
    pub endpoint: String,
}

/// Labels of the health-check counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthCheckLabels {
    /// Service name.
    pub service: String,
    /// `ip:port` of the endpoint.
    pub endpoint: String,
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Labels of breaker transitions and shed requests.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceReasonLabels {
    /// Service name.
    pub service: String,
    /// The new breaker state, or the limit that shed the request.
    pub reason: &'static str,
}

/// Labels of metrics a plugin records itself.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginMetricLabels {
    /// Plugin name.
    pub plugin: String,
    /// The name the plugin gave.
    pub name: String,
}

/// Metric families plugins write into, labelled with the plugin's name.
#[derive(Debug, Clone, Default)]
pub struct PluginMetricFamilies {
    /// `counter-add`.
    pub counters: Family<PluginMetricLabels, Counter>,
    /// `histogram-record` (values in microseconds).
    pub histograms: Family<PluginMetricLabels, DurationHistogram>,
}

/// Labels of per-plugin metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// Plugin name.
    pub plugin: String,
}

/// Labels of per-hook plugin metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginHookLabels {
    /// Plugin name.
    pub plugin: String,
    /// The hook called: `route`, `on_request`, `on_response`, `pick` or `judge`.
    pub hook: &'static str,
}

/// Labels of the reload counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `applied`, `unchanged` or `rejected`.
    pub outcome: &'static str,
}

/// Labels of the contract-violation counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContractLabels {
    /// The service whose contract was broken.
    pub service: String,
    /// `request` or `response`.
    pub direction: &'static str,
    /// `rejected` (answered 400, 413 or 502) or `reported` (passed, logged).
    pub action: &'static str,
}

/// Labels of per-listener metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// Listener name.
    pub listener: String,
}

/// Every metric the proxy exports, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Proxied requests answered, by route, service and status class.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from receiving a request to sending the response head.
    pub request_duration: Family<RouteLabels, DurationHistogram>,
    /// Requests whose response has not finished.
    pub active_requests: Family<RouteLabels, Gauge>,
    /// Requests the proxy answered itself, by reason.
    pub errors: Family<ErrorLabels, Counter>,
    /// Open upstream connections.
    pub upstream_connections: Family<EndpointLabels, Gauge>,
    /// Upstream connections opened.
    pub upstream_connections_opened: Family<EndpointLabels, Counter>,
    /// Open downstream connections.
    pub downstream_connections: Family<ListenerLabels, Gauge>,
    /// Downstream connections closed at accept because the listener was full.
    pub downstream_rejected: Family<ListenerLabels, Counter>,
    /// TLS handshakes that failed or timed out on a listener.
    pub tls_handshake_failures: Family<ListenerLabels, Counter>,
    /// Active health-check probes, by result.
    pub health_checks: Family<HealthCheckLabels, Counter>,
    /// Endpoint health: 1 healthy, 0 unhealthy, -1 unknown.
    pub endpoint_health: Family<ServiceEndpointLabels, Gauge>,
    /// Outlier ejections.
    pub ejections: Family<ServiceEndpointLabels, Counter>,
    /// Circuit-breaker transitions, by new state.
    pub breaker_transitions: Family<ServiceReasonLabels, Counter>,
    /// Requests shed by a limit or an open breaker, by reason.
    pub shed: Family<ServiceReasonLabels, Counter>,
    /// Retries sent.
    pub retries: Family<ServiceLabels, Counter>,
    /// Retries not sent because the retry budget was spent.
    pub retry_budget_exhausted: Family<ServiceLabels, Counter>,
    /// Plugin calls that failed (trap, deadline, memory).
    pub plugin_failures: Family<PluginLabels, Counter>,
    /// Plugin instances created.
    pub plugin_instances: Family<PluginLabels, Counter>,
    /// Time of plugin hook calls, from taking an instance to its decision: a sample, one call
    /// in the plugin host's `TIMED_CALL_EVERY` on each worker (reading the clock twice cost a
    /// sixth of a hook's host-side work).
    pub plugin_call_duration: Family<PluginHookLabels, DurationHistogram, fn() -> DurationHistogram>,
    /// Plugin hook calls, every one (the duration histogram times a sample).
    pub plugin_calls: Family<PluginHookLabels, Counter>,
    /// Metrics plugins record through their `metrics` import.
    pub plugin_families: PluginMetricFamilies,
    /// Configuration reloads, by outcome.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Bodies that broke a service contract.
    pub contract_violations: Family<ContractLabels, Counter>,
    /// Time a reload took, from reading the files to the new snapshot serving.
    pub reload_duration: prometheus_client::metrics::histogram::Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family under the `wasmesh_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wasmesh");
        let requests = Family::default();
        let request_duration = Family::default();
        let active_requests = Family::default();
        let errors = Family::default();
        let upstream_connections = Family::default();
        let upstream_connections_opened = Family::default();
        let downstream_connections = Family::default();
        let downstream_rejected = Family::default();
        let tls_handshake_failures = Family::default();
        let health_checks = Family::default();
        let endpoint_health = Family::default();
        let ejections = Family::default();
        let breaker_transitions = Family::default();
        let shed = Family::default();
        let retries = Family::default();
        let retry_budget_exhausted = Family::default();
        let plugin_failures = Family::default();
        let plugin_instances = Family::default();
        let plugin_call_duration =
            Family::<_, _, fn() -> DurationHistogram>::new_with_constructor(DurationHistogram::plugin_calls);
        let plugin_calls = Family::default();
        let plugin_families = PluginMetricFamilies::default();
        let reloads = Family::default();
        let contract_violations = Family::default();
        let reload_duration = prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16),
        );
        registry.register("reloads", "Configuration reloads, by outcome", reloads.clone());
        registry.register(
            "contract_violations",
            "Request and response bodies that broke their service's contract",
            contract_violations.clone(),
        );
        registry.register_with_unit(
            "reload_duration",
            "Time a reload took, from reading the files to the new snapshot serving",
            prometheus_client::registry::Unit::Seconds,
            reload_duration.clone(),
        );
        registry.register(
            "plugin_failures",
            "Plugin calls that failed (trap, deadline, memory)",
            plugin_failures.clone(),
        );
        registry.register("plugin_instances", "Plugin instances created", plugin_instances.clone());
        registry.register_with_unit(
            "plugin_call_duration",
            "Time of plugin hook calls, from taking an instance to its decision (one call in seven per worker is timed)",
            prometheus_client::registry::Unit::Seconds,
            plugin_call_duration.clone(),
        );
        registry.register("plugin_calls", "Plugin hook calls", plugin_calls.clone());
        registry.register("plugin_counter", "Counters plugins record", plugin_families.counters.clone());
        registry.register_with_unit(
            "plugin_histogram",
            "Histograms plugins record (recorded in microseconds)",
            prometheus_client::registry::Unit::Seconds,
            plugin_families.histograms.clone(),
        );
        registry.register("health_checks", "Active health-check probes, by result", health_checks.clone());
        registry.register(
            "endpoint_health",
            "Endpoint health: 1 healthy, 0 unhealthy, -1 unknown",
            endpoint_health.clone(),
        );
        registry.register("outlier_ejections", "Outlier ejections", ejections.clone());
        registry.register(
            "breaker_transitions",
            "Circuit-breaker transitions, by new state",
            breaker_transitions.clone(),
        );
        registry.register("shed_requests", "Requests shed by a limit or an open breaker, by reason", shed.clone());
        registry.register("retries", "Retries sent", retries.clone());
        registry.register(
            "retry_budget_exhausted",
            "Retries not sent because the retry budget was spent",
            retry_budget_exhausted.clone(),
        );
        registry.register(
            "requests",
            "Proxied requests answered, by route, service and status class",
            requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from receiving a request to sending the response head",
            prometheus_client::registry::Unit::Seconds,
            request_duration.clone(),
        );
        registry.register("active_requests", "Requests whose response has not finished", active_requests.clone());
        registry.register("local_responses", "Requests the proxy answered itself, by reason", errors.clone());
        registry.register("upstream_connections", "Open upstream connections", upstream_connections.clone());
        registry.register(
            "upstream_connections_opened",
            "Upstream connections opened",
            upstream_connections_opened.clone(),
        );
        registry.register("downstream_connections", "Open downstream connections", downstream_connections.clone());
        registry.register(
            "downstream_connections_rejected",
            "Downstream connections closed at accept because the listener was full",
            downstream_rejected.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on a listener that failed or timed out",
            tls_handshake_failures.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            active_requests,
            errors,
            upstream_connections,
            upstream_connections_opened,
            downstream_connections,
            downstream_rejected,
            tls_handshake_failures,
            health_checks,
            endpoint_health,
            ejections,
            breaker_transitions,
            shed,
            retries,
            retry_budget_exhausted,
            plugin_failures,
            plugin_instances,
            plugin_call_duration,
            plugin_calls,
            plugin_families,
            reloads,
            contract_violations,
            reload_duration,
        }
    }

    /// The handles one route needs on the request path.
    pub fn route(&self, route: &str, service: &str) -> RouteMetrics {
        let labels = RouteLabels { route: route.to_owned(), service: service.to_owned() };
        let class = |status_class| {
            self.requests.get_or_create_owned(&RequestLabels {
                route: route.to_owned(),
                service: service.to_owned(),
                status_class,
            })
        };
        RouteMetrics {
            by_class: [class("1xx"), class("2xx"), class("3xx"), class("4xx"), class("5xx")],
            duration: self.request_duration.get_or_create_owned(&labels),
            active: self.active_requests.get_or_create_owned(&labels),
            errors: ERROR_KINDS
                .map(|kind| self.errors.get_or_create_owned(&ErrorLabels { route: route.to_owned(), kind })),
        }
    }

    /// Counts a request answered before any route matched.
    pub fn unrouted_error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&ErrorLabels { route: String::new(), kind }).inc();
    }

    /// Encodes every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

const ERROR_KINDS: [ErrorKind; 12] = [
    ErrorKind::no_route,
    ErrorKind::no_endpoint,
    ErrorKind::upstream_connect,
    ErrorKind::upstream_reset,
    ErrorKind::timeout,
    ErrorKind::bad_request,
    ErrorKind::overflow,
    ErrorKind::circuit_open,
    ErrorKind::contract_violation,
    ErrorKind::body_too_large,
    ErrorKind::invalid_host,
    ErrorKind::headers_too_large,
];

/// Pre-resolved metric handles of one route, held by the snapshot.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    /// Latency to the response head.
    pub duration: DurationHistogram,
    /// In-flight requests.
    pub active: Gauge,
    errors: [Counter; ERROR_KINDS.len()],
}

impl RouteMetrics {
    /// Counts a response by its status class.
    pub fn count_status(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
    }

    /// Counts a locally answered error.
    pub fn count_error(&self, kind: ErrorKind) {
        self.errors[kind as usize].inc();
    }
}

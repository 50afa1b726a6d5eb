//! The TOML schema: what a `wasmesh.toml` may contain, with its defaults.
//!
//! Every struct rejects unknown fields so that a typo is an error with a line number rather
//! than a silently ignored setting. Defaults follow Envoy's where our users come from it and are
//! documented in `examples/quickstart/wasmesh.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole deployment, as read from one TOML file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin listener (metrics, status, mesh API).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Process-wide runtime settings.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Distributed tracing: sampling and span export.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// Downstream listeners that accept proxied traffic.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Routes, tried in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Upstream services.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Wasm plugins that routes can use.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// Where registered service instances are stored and discovered.
    #[serde(default)]
    pub registry: RegistryConfig,
}

impl Config {
    /// Every file this configuration reads besides itself: plugin components, certificates
    /// and keys, CA bundles, JSON Schemas. A change to any of them is a change to the configuration.
    pub fn files(&self) -> Vec<std::path::PathBuf> {
        let mut files: Vec<std::path::PathBuf> = self.plugins.iter().map(|p| p.path.clone()).collect();
        for tls in self.listeners.iter().filter_map(|l| l.tls.as_ref()) {
            files.extend(tls.certificates.iter().flat_map(|c| [c.cert.clone(), c.key.clone()]));
        }
        for tls in self.services.iter().filter_map(|s| s.tls.as_ref()) {
            files.extend([&tls.ca_file, &tls.client_cert, &tls.client_key].into_iter().flatten().cloned());
        }
        for c in self.services.iter().flat_map(|s| &s.contracts) {
            files.extend([&c.request_schema, &c.response_schema].into_iter().flatten().cloned());
        }
        files
    }
}

/// Which store holds registered instances.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RegistryBackend {
    /// A local file, written with fsync and atomic rename: one machine, no server needed.
    #[default]
    Embedded,
    /// An etcd cluster shared by several proxies.
    Etcd,
    /// A Consul agent.
    Consul,
}

/// The service registry behind the mesh API.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `embedded`, `etcd` or `consul`.
    #[serde(default)]
    pub backend: RegistryBackend,
    /// Embedded: the data file, relative to the working directory.
    #[serde(default = "RegistryConfig::default_path")]
    pub path: std::path::PathBuf,
    /// etcd settings.
    #[serde(default)]
    pub etcd: EtcdConfig,
    /// Consul settings.
    #[serde(default)]
    pub consul: ConsulConfig,
}

impl RegistryConfig {
    fn default_path() -> std::path::PathBuf {
        "wasmesh-registry.json".into()
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            backend: RegistryBackend::default(),
            path: Self::default_path(),
            etcd: EtcdConfig::default(),
            consul: ConsulConfig::default(),
        }
    }
}

/// The etcd registry: one key per instance under `prefix`, held by a lease.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of the cluster.
    #[serde(default = "EtcdConfig::default_endpoints")]
    pub endpoints: Vec<String>,
    /// Key prefix of instance records.
    #[serde(default = "EtcdConfig::default_prefix")]
    pub prefix: String,
    /// Lease of instances registered without `ttl_seconds`, kept alive while this proxy runs.
    #[serde(default = "EtcdConfig::default_lease", with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Connect and request timeout.
    #[serde(default = "EtcdConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl EtcdConfig {
    fn default_endpoints() -> Vec<String> {
        vec!["http://127.0.0.1:2379".to_owned()]
    }
    fn default_prefix() -> String {
        "/wasmesh/instances/".to_owned()
    }
    fn default_lease() -> Duration {
        Duration::from_secs(10)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(2)
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: Self::default_endpoints(),
            prefix: Self::default_prefix(),
            lease_ttl: Self::default_lease(),
            timeout: Self::default_timeout(),
        }
    }
}

/// The Consul registry: the local agent's service API and blocking health queries.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsulConfig {
    /// The agent's HTTP address, `host:port`.
    #[serde(default = "ConsulConfig::default_address")]
    pub address: SocketAddr,
    /// ACL token sent as `X-Consul-Token`.
    #[serde(default)]
    pub token: Option<String>,
    /// Longest wait of one blocking query.
    #[serde(default = "ConsulConfig::default_wait", with = "humantime_serde")]
    pub wait: Duration,
    /// Timeout of non-blocking requests.
    #[serde(default = "ConsulConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl ConsulConfig {
    fn default_address() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8500))
    }
    fn default_wait() -> Duration {
        Duration::from_secs(30)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(2)
    }
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            address: Self::default_address(),
            token: None,
            wait: Self::default_wait(),
            timeout: Self::default_timeout(),
        }
    }
}

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    /// Decides where a request goes (`router` world).
    Router,
    /// Changes or answers requests and responses (`filter` world).
    Filter,
    /// Picks a service's endpoint for each request (`balancer` world).
    Balancer,
    /// Judges an endpoint's health from its probe response (`health-check` world).
    HealthCheck,
}

impl PluginKind {
    /// The world's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Router => "router",
            Self::Filter => "filter",
            Self::Balancer => "balancer",
            Self::HealthCheck => "health_check",
        }
    }

    /// The hooks of this kind's world, in the order the host indexes them.
    pub fn hooks(self) -> &'static [&'static str] {
        match self {
            Self::Router => &["route"],
            Self::Filter => &["on_request", "on_response"],
            Self::Balancer => &["pick"],
            Self::HealthCheck => &["judge"],
        }
    }

    /// The WIT world a component of this kind implements.
    pub fn world(self) -> &'static str {
        match self {
            Self::HealthCheck => "health-check",
            other => other.as_str(),
        }
    }
}

/// What a plugin failure (trap, deadline, memory) means for the request.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Skip the plugin: the route's default service, or the request unchanged.
    #[default]
    Open,
    /// Answer with `fail_status`.
    Closed,
}

/// A Wasm plugin.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Unique name; routes refer to it, and its logs and metrics carry it.
    pub name: String,
    /// `router`, `filter`, `balancer` or `health_check`.
    pub kind: PluginKind,
    /// The `.wasm` component, relative to the working directory.
    pub path: std::path::PathBuf,
    /// Handed to the plugin's `init` as JSON.
    #[serde(default = "PluginConfig::default_config")]
    pub config: toml::Value,
    /// Headers the plugin may see; when empty, those its `init` declares. A list narrows what
    /// the plugin declared (for instance to keep `authorization` from a third-party plugin).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Deadline of one call; a plugin still running is stopped (within up to 20 ms more: the
    /// deadline is counted in 10 ms epoch ticks).
    #[serde(default = "PluginConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Linear memory an instance may grow to.
    #[serde(default = "PluginConfig::default_memory")]
    pub memory_limit_mib: usize,
    /// `open` skips a failing plugin; `closed` answers with `fail_status`.
    #[serde(default)]
    pub fail: FailMode,
    /// Status answered when failing closed.
    #[serde(default = "PluginConfig::default_fail_status")]
    pub fail_status: u16,
}

impl PluginConfig {
    fn default_config() -> toml::Value {
        toml::Value::Table(Default::default())
    }
    fn default_timeout() -> Duration {
        Duration::from_millis(10)
    }
    fn default_memory() -> usize {
        16
    }
    fn default_fail_status() -> u16 {
        503
    }
}

/// The admin HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to bind. Loopback by default; any other address requires `token`.
    #[serde(default = "AdminConfig::default_listen")]
    pub listen: SocketAddr,
    /// Bearer token every admin request must carry when set.
    #[serde(default)]
    pub token: Option<String>,
}

impl AdminConfig {
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 10010))
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: Self::default_listen(), token: None }
    }
}

/// Process-wide runtime settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads; 0 means one per core. 1 runs everything on a single thread.
    #[serde(default)]
    pub workers: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(default = "RuntimeConfig::default_drain", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl RuntimeConfig {
    fn default_drain() -> Duration {
        Duration::from_secs(10)
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { workers: 0, drain_timeout: Self::default_drain() }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`; the `--log-format` flag overrides it.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter directive such as `info` or `wasmesh=debug`.
    #[serde(default = "LogConfig::default_level")]
    pub level: String,
    /// Emit one access-log event per proxied request.
    #[serde(default = "default_true")]
    pub access_log: bool,
}

impl LogConfig {
    fn default_level() -> String {
        "info".to_owned()
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: Self::default_level(), access_log: true }
    }
}

/// Distributed tracing: which traces are recorded, and where their spans go.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Whether the proxy takes part in traces (W3C Trace Context): joins the caller's trace
    /// or starts one, and sends its own span id upstream in `traceparent`. Off, `traceparent`
    /// and `tracestate` pass through untouched and no span is recorded.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Share (0 to 1) of new traces recorded; a trace the caller started keeps the caller's
    /// sampled flag (parent-based sampling). Passed to upstreams in `traceparent`.
    #[serde(default = "TracingConfig::default_sample_ratio")]
    pub sample_ratio: f64,
    /// OTLP/HTTP (protobuf) traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`; spans
    /// are not exported without one.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    #[serde(default = "TracingConfig::default_service_name")]
    pub service_name: String,
    /// Deadline of one export; a collector slower than this loses that batch.
    #[serde(default = "TracingConfig::default_export_timeout", with = "humantime_serde")]
    pub export_timeout: Duration,
    /// Spans held while waiting for export; when full, new spans are dropped, never waited on.
    #[serde(default = "TracingConfig::default_max_queue")]
    pub max_queue: usize,
    /// Spans per export request.
    #[serde(default = "TracingConfig::default_batch_size")]
    pub batch_size: usize,
    /// Longest a span waits before its batch is sent.
    #[serde(default = "TracingConfig::default_batch_delay", with = "humantime_serde")]
    pub batch_delay: Duration,
}

impl TracingConfig {
    fn default_sample_ratio() -> f64 {
        1.0
    }
    fn default_service_name() -> String {
        "wasmesh".to_owned()
    }
    fn default_export_timeout() -> Duration {
        Duration::from_secs(5)
    }
    fn default_max_queue() -> usize {
        2048
    }
    fn default_batch_size() -> usize {
        512
    }
    fn default_batch_delay() -> Duration {
        Duration::from_secs(1)
    }
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sample_ratio: Self::default_sample_ratio(),
            otlp_endpoint: None,
            service_name: Self::default_service_name(),
            export_timeout: Self::default_export_timeout(),
            max_queue: Self::default_max_queue(),
            batch_size: Self::default_batch_size(),
            batch_delay: Self::default_batch_delay(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// A downstream listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name; routes may restrict themselves to named listeners.
    pub name: String,
    /// Address to bind.
    pub listen: SocketAddr,
    /// Time allowed to receive a complete HTTP/1 request head, counted from when the
    /// connection is ready for it (so it also bounds how long a kept-alive HTTP/1
    /// connection waits for its next request). Defends against slowloris.
    #[serde(default = "ListenerConfig::default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes either way for this long is closed.
    #[serde(default = "ListenerConfig::default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections beyond this many are closed at accept.
    #[serde(default = "ListenerConfig::default_max_connections")]
    pub max_connections: usize,
    /// Largest request head accepted, in KiB (request line and header lines over HTTP/1.1, the
    /// decoded header list over HTTP/2); a larger one gets 431. It also bounds the memory a
    /// slow or idle connection holds for an unfinished head.
    #[serde(default = "ListenerConfig::default_max_request_headers_kib")]
    pub max_request_headers_kib: usize,
    /// Most header lines a request may carry; more get 431.
    #[serde(default = "ListenerConfig::default_max_request_headers")]
    pub max_request_headers: usize,
    /// Whether requests go upstream with `X-Forwarded-For` (the client appended),
    /// `X-Forwarded-Proto` and `X-Forwarded-Host`. Off, a client's own are passed on as sent
    /// (as nginx and HAProxy do unless told otherwise).
    #[serde(default = "default_true")]
    pub forwarded_headers: bool,
    /// TLS termination; plain TCP when absent.
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
}

/// TLS termination on a listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Certificates with their keys; the client's SNI picks one, and the first one answers
    /// clients that send no name or a name no certificate covers.
    pub certificates: Vec<CertificateConfig>,
    /// Oldest protocol version accepted.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Protocols offered by ALPN, in preference order.
    #[serde(default = "ListenerTlsConfig::default_alpn")]
    pub alpn: Vec<String>,
}

impl ListenerTlsConfig {
    fn default_alpn() -> Vec<String> {
        vec!["h2".to_owned(), "http/1.1".to_owned()]
    }
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// The chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// TLS from the proxy to a service's endpoints.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM file of the CA certificates that sign the endpoints' certificates; the system's
    /// roots when absent.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Name sent by SNI and verified in the endpoint's certificate; the endpoint's IP address
    /// when absent.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Client certificate for mutual TLS (needs `client_key`).
    #[serde(default)]
    pub client_cert: Option<std::path::PathBuf>,
    /// Private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<std::path::PathBuf>,
}

impl ListenerConfig {
    fn default_header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    fn default_max_connections() -> usize {
        10_000
    }
    fn default_max_request_headers_kib() -> usize {
        64
    }
    fn default_max_request_headers() -> usize {
        100
    }

    /// [`ListenerConfig::max_request_headers_kib`] in bytes.
    pub fn max_request_head_bytes(&self) -> usize {
        self.max_request_headers_kib * 1024
    }
}

/// A route: a match and the service it sends to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// Listeners this route applies to; all listeners when empty.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// What a request must look like.
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// The service that handles matched requests.
    pub service: String,
    /// Path rewriting applied before forwarding.
    #[serde(default)]
    pub rewrite: Option<RewriteConfig>,
    /// Overrides the service's total request timeout for this route.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// A router plugin that may send the request elsewhere or answer it.
    #[serde(default)]
    pub router: Option<String>,
    /// Filter plugins, run in this order on requests and in reverse on responses.
    #[serde(default)]
    pub filters: Vec<String>,
}

/// Conditions a request must meet for a route to match; all given conditions must hold.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Host (without port); `*.example.com` matches any subdomain.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix, matched on segment boundaries (`/api` matches `/api` and `/api/x`, not `/apix`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Exact path.
    #[serde(default)]
    pub path_exact: Option<String>,
    /// Allowed methods; any when empty.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
}

/// One header condition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchConfig {
    /// Header name (case-insensitive).
    pub name: String,
    /// Required exact value; when absent the header only has to be present.
    #[serde(default)]
    pub value: Option<String>,
}

/// Path rewriting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    /// Replaces the matched `path_prefix` (use `"/"` to strip it).
    #[serde(default)]
    pub prefix: Option<String>,
}

/// An upstream service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Unique name.
    pub name: String,
    /// Static endpoints.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// Load-balancing policy; with `balancer`, the fallback when the plugin fails open.
    #[serde(default)]
    pub balance: BalancePolicy,
    /// A `balancer` plugin that picks the endpoint for each request.
    #[serde(default)]
    pub balancer: Option<String>,
    /// Consistent-hash key, for `balance = "ring_hash"`.
    #[serde(default)]
    pub hash_key: Option<HashKeyConfig>,
    /// Protocol spoken to the endpoints.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Idle pooled connections kept per endpoint.
    #[serde(default = "ServiceConfig::default_max_idle")]
    pub max_idle_per_endpoint: usize,
    /// Active health checking; off when absent.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Below this percentage of healthy endpoints, balance over all of them (Envoy's
    /// `healthy_panic_threshold`); 0 disables panic mode.
    #[serde(default = "ServiceConfig::default_panic_threshold")]
    pub healthy_panic_threshold: u8,
    /// Passive health checking (ejection on consecutive failures): on with its defaults when
    /// absent, off with `enabled = false`.
    #[serde(default)]
    pub outlier_detection: OutlierConfig,
    /// Concurrency limits and the failure-rate breaker (on with its defaults when absent).
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// Retry policy; no retries when absent.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// TLS to the endpoints; plain TCP when absent.
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// Service contracts: JSON Schemas for request and response bodies, per method and path.
    /// The first contract matching a request applies.
    #[serde(default)]
    pub contracts: Vec<ContractConfig>,
}

/// One contract: the bodies a service accepts and returns on some of its operations.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ContractConfig {
    /// Methods it covers; all when empty.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path pattern, as the service sees the path (after any rewrite): literal segments,
    /// `{name}` for any one segment, and a final `*` for any rest.
    pub path: String,
    /// JSON Schema file for request bodies; requests that fail it get a 400.
    #[serde(default)]
    pub request_schema: Option<std::path::PathBuf>,
    /// JSON Schema file for successful (2xx) response bodies.
    #[serde(default)]
    pub response_schema: Option<std::path::PathBuf>,
    /// What a response that fails its schema gets.
    #[serde(default)]
    pub response_mode: ContractMode,
    /// Largest body validated; a larger request gets a 413, a larger response is handled as
    /// a failing one.
    #[serde(default = "ContractConfig::default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Media types whose bodies are validated; others pass untouched.
    #[serde(default = "ContractConfig::default_content_types")]
    pub content_types: Vec<String>,
}

impl ContractConfig {
    fn default_max_body_bytes() -> usize {
        1024 * 1024
    }
    fn default_content_types() -> Vec<String> {
        vec!["application/json".to_owned()]
    }
}

/// What happens to a response that breaks its contract.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ContractMode {
    /// Pass it on, with a warning in the log and a metric.
    #[default]
    Report,
    /// Replace it with a 502 listing the violations.
    Enforce,
}

impl ServiceConfig {
    /// A service with every setting at its default: how a service that exists only in the
    /// registry is run.
    pub fn named(name: &str) -> Self {
        serde_json::from_value(serde_json::json!({ "name": name })).expect("every other field has a default")
    }

    fn default_max_idle() -> usize {
        1024
    }
    fn default_panic_threshold() -> u8 {
        50
    }
}

/// How an active health check probes an endpoint.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// An HTTP request; healthy when the status is expected.
    #[default]
    Http,
    /// A TCP connect; healthy when it succeeds.
    Tcp,
}

/// Active health checking (Envoy's `health_checks` fields).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http` or `tcp`.
    #[serde(default)]
    pub kind: HealthCheckKind,
    /// Path probed by HTTP checks.
    #[serde(default = "HealthCheckConfig::default_path")]
    pub path: String,
    /// Method of HTTP checks.
    #[serde(default = "HealthCheckConfig::default_method")]
    pub method: String,
    /// `Host` header of HTTP checks; the endpoint address when absent.
    #[serde(default)]
    pub host: Option<String>,
    /// Statuses that count as healthy, as inclusive `[low, high]` ranges.
    #[serde(default = "HealthCheckConfig::default_statuses")]
    pub expected_statuses: Vec<[u16; 2]>,
    /// Time between checks of one endpoint.
    #[serde(default = "HealthCheckConfig::default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Up to this much is added to each interval at random, so checks do not align.
    #[serde(default = "HealthCheckConfig::default_jitter", with = "humantime_serde")]
    pub interval_jitter: Duration,
    /// A probe that takes longer fails.
    #[serde(default = "HealthCheckConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy endpoint healthy.
    #[serde(default = "HealthCheckConfig::default_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy.
    #[serde(default = "HealthCheckConfig::default_threshold")]
    pub unhealthy_threshold: u32,
    /// A `health_check` plugin that judges each HTTP probe's response (status, headers and
    /// the first `max_body_bytes` of the body) instead of `expected_statuses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Body bytes read from a probe response and handed to `plugin`.
    #[serde(
        default = "HealthCheckConfig::default_max_body",
        skip_serializing_if = "HealthCheckConfig::is_default_max_body"
    )]
    pub max_body_bytes: usize,
}

impl HealthCheckConfig {
    fn default_path() -> String {
        "/health".to_owned()
    }
    fn default_method() -> String {
        "GET".to_owned()
    }
    fn default_statuses() -> Vec<[u16; 2]> {
        vec![[200, 299]]
    }
    fn default_interval() -> Duration {
        Duration::from_secs(5)
    }
    fn default_jitter() -> Duration {
        Duration::from_millis(500)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(1)
    }
    fn default_threshold() -> u32 {
        2
    }
    /// Whether a probe answering `status` passes by status alone.
    pub fn expects(&self, status: u16) -> bool {
        self.expected_statuses.iter().any(|[lo, hi]| (*lo..=*hi).contains(&status))
    }

    fn default_max_body() -> usize {
        4096
    }
    fn is_default_max_body(n: &usize) -> bool {
        *n == Self::default_max_body()
    }
}

/// Outlier detection (Envoy's `outlier_detection` fields), on for every service unless
/// `enabled = false`: a service nobody tuned still stops sending to an endpoint that fails.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Whether endpoints are ejected at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Consecutive 5xx responses that eject an endpoint; 0 disables.
    #[serde(default = "OutlierConfig::default_consecutive")]
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures (connect error, reset, timeout, 502-504) that eject; 0 disables.
    #[serde(default = "OutlierConfig::default_consecutive")]
    pub consecutive_gateway_failure: u32,
    /// First ejection length; the n-th lasts n times as long.
    #[serde(default = "OutlierConfig::default_base", with = "humantime_serde")]
    pub base_ejection_time: Duration,
    /// Longest ejection.
    #[serde(default = "OutlierConfig::default_max", with = "humantime_serde")]
    pub max_ejection_time: Duration,
    /// At most this percentage of a service's endpoints is ejected at once (at least one).
    #[serde(default = "OutlierConfig::default_max_percent")]
    pub max_ejection_percent: u8,
    /// Whether a passing active health check ends an ejection early.
    #[serde(default)]
    pub successful_active_health_check_uneject_host: bool,
}

impl OutlierConfig {
    fn default_consecutive() -> u32 {
        5
    }
    fn default_base() -> Duration {
        Duration::from_secs(30)
    }
    fn default_max() -> Duration {
        Duration::from_secs(300)
    }
    fn default_max_percent() -> u8 {
        10
    }
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_5xx: Self::default_consecutive(),
            consecutive_gateway_failure: Self::default_consecutive(),
            base_ejection_time: Self::default_base(),
            max_ejection_time: Self::default_max(),
            max_ejection_percent: Self::default_max_percent(),
            successful_active_health_check_uneject_host: false,
        }
    }
}

/// Concurrency limits (Envoy's `circuit_breakers` thresholds) and a failure-rate breaker.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Upstream connections open to the service at once.
    #[serde(default = "CircuitBreakerConfig::default_limit")]
    pub max_connections: u32,
    /// Requests waiting for a new upstream connection at once.
    #[serde(default = "CircuitBreakerConfig::default_limit")]
    pub max_pending_requests: u32,
    /// Requests in flight to the service at once.
    #[serde(default = "CircuitBreakerConfig::default_limit")]
    pub max_requests: u32,
    /// Retries in flight to the service at once.
    #[serde(default = "CircuitBreakerConfig::default_max_retries")]
    pub max_retries: u32,
    /// Failure-rate breaker: on with its defaults when absent, off with `enabled = false`.
    #[serde(default)]
    pub failure_rate: FailureRateConfig,
}

impl CircuitBreakerConfig {
    /// The failure-rate breaker's settings, unless it is turned off.
    pub fn active_failure_rate(&self) -> Option<&FailureRateConfig> {
        self.failure_rate.enabled.then_some(&self.failure_rate)
    }

    fn default_limit() -> u32 {
        1024
    }
    fn default_max_retries() -> u32 {
        3
    }
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            max_connections: Self::default_limit(),
            max_pending_requests: Self::default_limit(),
            max_requests: Self::default_limit(),
            max_retries: Self::default_max_retries(),
            failure_rate: FailureRateConfig::default(),
        }
    }
}

/// Opens the circuit when too many recent requests failed; on for every service unless
/// `enabled = false`, as Linkerd turns failure accrual on without being asked.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FailureRateConfig {
    /// Whether the circuit opens at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Percentage of failed requests (5xx or gateway failure) in the window that opens the circuit.
    #[serde(default = "FailureRateConfig::default_threshold")]
    pub threshold_percent: u8,
    /// Requests the window must hold before the rate counts.
    #[serde(default = "FailureRateConfig::default_minimum")]
    pub minimum_requests: u32,
    /// Length of the rolling window: whole seconds, 1 s to [`FailureRateConfig::MAX_WINDOW`].
    #[serde(default = "FailureRateConfig::default_window", with = "humantime_serde")]
    pub window: Duration,
    /// How long the circuit stays open before half-open probes.
    #[serde(default = "FailureRateConfig::default_open", with = "humantime_serde")]
    pub open_duration: Duration,
    /// Probe requests admitted while half-open; all must succeed to close.
    #[serde(default = "FailureRateConfig::default_probes")]
    pub half_open_requests: u32,
}

impl FailureRateConfig {
    /// The longest `window` accepted: a breaker that remembers longer reacts too late to help.
    pub const MAX_WINDOW: Duration = Duration::from_secs(3600);

    fn default_threshold() -> u8 {
        50
    }
    fn default_minimum() -> u32 {
        20
    }
    fn default_window() -> Duration {
        Duration::from_secs(10)
    }
    fn default_open() -> Duration {
        Duration::from_secs(30)
    }
    fn default_probes() -> u32 {
        3
    }
}

impl Default for FailureRateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold_percent: Self::default_threshold(),
            minimum_requests: Self::default_minimum(),
            window: Self::default_window(),
            open_duration: Self::default_open(),
            half_open_requests: Self::default_probes(),
        }
    }
}

/// What makes an attempt worth retrying.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// The connection could not be made.
    ConnectFailure,
    /// The connection was reset or closed before a response.
    Reset,
    /// 502, 503, 504, or any gateway failure.
    GatewayError,
    /// Any 5xx.
    #[serde(rename = "5xx")]
    FiveXx,
    /// A status listed in `retriable_status_codes`.
    RetriableStatusCodes,
}

/// Retry policy (Envoy's `retry_policy`, with Linkerd's replay limit).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Conditions that trigger a retry.
    #[serde(default = "RetryConfig::default_on")]
    pub retry_on: Vec<RetryOn>,
    /// Statuses retried under `retriable-status-codes`.
    #[serde(default)]
    pub retriable_status_codes: Vec<u16>,
    /// Retries after the first attempt.
    #[serde(default = "RetryConfig::default_retries")]
    pub num_retries: u32,
    /// Limit of each attempt, inside the request's total timeout.
    #[serde(default, with = "humantime_serde")]
    pub per_try_timeout: Option<Duration>,
    /// First backoff; doubles per retry, with full jitter.
    #[serde(default = "RetryConfig::default_base", with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest backoff.
    #[serde(default = "RetryConfig::default_max_backoff", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Retries may add at most this percentage of the service's active requests...
    #[serde(default = "RetryConfig::default_budget")]
    pub budget_percent: u8,
    /// ...or this many concurrent retries, whichever is larger.
    #[serde(default = "RetryConfig::default_min_concurrency")]
    pub min_retry_concurrency: u32,
    /// Retry non-idempotent methods even after the request reached the upstream.
    #[serde(default)]
    pub retry_non_idempotent: bool,
    /// Request bodies up to this size are kept for replay; larger ones are not retried.
    #[serde(default = "RetryConfig::default_replay")]
    pub max_replay_body: usize,
}

impl RetryConfig {
    fn default_on() -> Vec<RetryOn> {
        vec![RetryOn::ConnectFailure, RetryOn::Reset, RetryOn::GatewayError]
    }
    fn default_retries() -> u32 {
        1
    }
    fn default_base() -> Duration {
        Duration::from_millis(25)
    }
    fn default_max_backoff() -> Duration {
        Duration::from_millis(250)
    }
    fn default_budget() -> u8 {
        20
    }
    fn default_min_concurrency() -> u32 {
        3
    }
    fn default_replay() -> usize {
        64 * 1024
    }
}

/// A static endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// `ip:port`.
    pub address: SocketAddr,
    /// Relative share of traffic, 1..=10000.
    #[serde(default = "EndpointConfig::default_weight")]
    pub weight: u32,
    /// Free-form labels (zone, version) that balancers and plugins may read.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl EndpointConfig {
    fn default_weight() -> u32 {
        1
    }
}

/// Load-balancing policies; one file per algorithm under `upstream/balance/`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BalancePolicy {
    /// Smooth weighted round robin (as nginx).
    #[default]
    RoundRobin,
    /// Weighted random.
    Random,
    /// Power of two choices on in-flight requests (as Envoy LEAST_REQUEST).
    LeastRequest,
    /// Power of two choices on peak-EWMA latency times load (as Linkerd).
    PeakEwma,
    /// Consistent hashing on a ring (as Envoy RING_HASH), keyed by `hash_key`.
    RingHash,
}

/// What a consistent hash is computed from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "source")]
pub enum HashKeyConfig {
    /// A request header's value.
    Header {
        /// Header name.
        name: String,
    },
    /// A cookie's value.
    Cookie {
        /// Cookie name.
        name: String,
    },
    /// The client's IP address.
    ClientIp,
}

/// Protocol spoken to upstream endpoints.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 over cleartext (prior knowledge).
    H2c,
    /// HTTP/2 over TLS, negotiated by ALPN; needs `tls`.
    H2,
}

/// Upstream timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// TCP connect.
    #[serde(default = "TimeoutsConfig::default_connect", with = "humantime_serde")]
    pub connect: Duration,
    /// Whole request: from routing until the response body has been sent.
    #[serde(default = "TimeoutsConfig::default_request", with = "humantime_serde")]
    pub request: Duration,
    /// An idle pooled upstream connection is closed after this long.
    #[serde(default = "TimeoutsConfig::default_idle", with = "humantime_serde")]
    pub idle: Duration,
}

impl TimeoutsConfig {
    fn default_connect() -> Duration {
        Duration::from_secs(5)
    }
    fn default_request() -> Duration {
        Duration::from_secs(15)
    }
    fn default_idle() -> Duration {
        Duration::from_secs(90)
    }
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self { connect: Self::default_connect(), request: Self::default_request(), idle: Self::default_idle() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_without_resilience_settings_breaks_and_ejects_and_turns_off_only_when_asked() {
        let untuned = ServiceConfig::named("s");
        let rate = untuned.circuit_breaker.active_failure_rate().expect("the failure-rate breaker is on");
        assert_eq!((rate.threshold_percent, rate.minimum_requests), (50, 20));
        assert_eq!((rate.window, rate.open_duration), (Duration::from_secs(10), Duration::from_secs(30)));
        assert!(untuned.outlier_detection.enabled);
        assert_eq!(untuned.outlier_detection.consecutive_gateway_failure, 5);

        let off: ServiceConfig = toml::from_str(
            "name = \"s\"\noutlier_detection = { enabled = false }\ncircuit_breaker = { failure_rate = { enabled = false } }",
        )
        .expect("valid");
        assert!(off.circuit_breaker.active_failure_rate().is_none());
        assert!(!off.outlier_detection.enabled);
        assert_eq!(off.circuit_breaker.max_requests, 1024, "the concurrency limits stay");
    }
}

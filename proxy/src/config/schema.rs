//! The TOML schema: what a `wasmesh.toml` may contain, with its defaults.
//!
//! Every struct rejects unknown fields so that a typo is an error with a line number rather
//! than a silently ignored setting. Defaults follow Envoy's where our users come from it and are
//! documented in `examples/quickstart/wasmesh.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

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
    /// Downstream listeners that accept proxied traffic.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Routes, tried in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Upstream services.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
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

fn default_true() -> bool {
    true
}

/// A downstream listener.
#[derive(Debug, Clone, Deserialize)]
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
    /// Load-balancing policy.
    #[serde(default)]
    pub balance: BalancePolicy,
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
}

impl ServiceConfig {
    fn default_max_idle() -> usize {
        1024
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

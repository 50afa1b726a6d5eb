//! `[[services]]`: upstream services, their endpoints, balancing, protocol, timeouts and contracts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::health::HealthCheckConfig;
use super::resilience::{CircuitBreakerConfig, OutlierConfig, RetryConfig};
use super::tls::UpstreamTlsConfig;

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

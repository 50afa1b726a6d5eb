//! `[services.outlier_detection]`, `[services.circuit_breaker]` and `[services.retry]`.

use std::time::Duration;

use serde::Deserialize;

use super::defaults::default_true;

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

//! `[services.health_check]`: active health checking.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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

//! `[[plugins]]`: Wasm components, their kind, limits and what happens when a call fails.

use std::time::Duration;

use serde::Deserialize;

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

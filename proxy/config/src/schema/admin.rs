//! `[admin]` and `[runtime]`: the admin listener and process-wide settings.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

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

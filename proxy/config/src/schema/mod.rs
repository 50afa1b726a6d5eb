//! The TOML schema: what a `wasmesh.toml` may contain, with its defaults.
//!
//! Every struct rejects unknown fields so that a typo is an error with a line number rather
//! than a silently ignored setting. Defaults follow Envoy's where our users come from it and are
//! documented in `examples/quickstart/wasmesh.toml`.
//!
//! One file per TOML table; this one has the root, [`Config`].

mod admin;
mod defaults;
mod health;
mod listeners;
mod observability;
mod plugins;
mod registry;
mod resilience;
mod routes;
mod services;
mod tls;

pub use admin::*;
pub use health::*;
pub use listeners::*;
pub use observability::*;
pub use plugins::*;
pub use registry::*;
pub use resilience::*;
pub use routes::*;
pub use services::*;
pub use tls::*;

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

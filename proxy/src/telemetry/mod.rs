//! Telemetry: Prometheus metrics and logs.

pub mod edges;
pub mod histogram;
pub mod logging;
pub mod metrics;

pub use metrics::Metrics;

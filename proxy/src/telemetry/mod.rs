//! Telemetry: Prometheus metrics and logs.

pub mod histogram;
pub mod logging;
pub mod metrics;

pub use metrics::Metrics;

//! Telemetry: Prometheus metrics, logs and W3C trace context.

pub mod edges;
pub mod histogram;
pub mod logging;
pub mod metrics;
pub mod trace_context;

pub use metrics::Metrics;

//! wasmesh's telemetry: Prometheus metrics, logs, W3C trace context and OTLP span export, and
//! the clock whose cheap timestamps they record.

#![deny(missing_docs)]

pub mod clock;
pub mod edges;
pub mod histogram;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod trace_context;

pub use metrics::Metrics;

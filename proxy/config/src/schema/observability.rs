//! `[log]` and `[tracing]`: logging, trace-context sampling and span export.

use std::time::Duration;

use serde::Deserialize;

use super::defaults::default_true;

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    /// Parses the spelling the TOML uses (`text`, `json`), for the `--log-format` flag.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}: expected text or json")),
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`; the `--log-format` flag overrides it.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter directive such as `info` or `wasmesh=debug`.
    #[serde(default = "LogConfig::default_level")]
    pub level: String,
    /// Emit one access-log event per proxied request.
    #[serde(default = "default_true")]
    pub access_log: bool,
}

impl LogConfig {
    fn default_level() -> String {
        "info".to_owned()
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: Self::default_level(), access_log: true }
    }
}

/// Distributed tracing: which traces are recorded, and where their spans go.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Whether the proxy takes part in traces (W3C Trace Context): joins the caller's trace
    /// or starts one, and sends its own span id upstream in `traceparent`. Off, `traceparent`
    /// and `tracestate` pass through untouched and no span is recorded.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Share (0 to 1) of new traces recorded; a trace the caller started keeps the caller's
    /// sampled flag (parent-based sampling). Passed to upstreams in `traceparent`.
    #[serde(default = "TracingConfig::default_sample_ratio")]
    pub sample_ratio: f64,
    /// OTLP/HTTP (protobuf) traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`; spans
    /// are not exported without one.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    #[serde(default = "TracingConfig::default_service_name")]
    pub service_name: String,
    /// Deadline of one export; a collector slower than this loses that batch.
    #[serde(default = "TracingConfig::default_export_timeout", with = "humantime_serde")]
    pub export_timeout: Duration,
    /// Spans held while waiting for export; when full, new spans are dropped, never waited on.
    #[serde(default = "TracingConfig::default_max_queue")]
    pub max_queue: usize,
    /// Spans per export request.
    #[serde(default = "TracingConfig::default_batch_size")]
    pub batch_size: usize,
    /// Longest a span waits before its batch is sent.
    #[serde(default = "TracingConfig::default_batch_delay", with = "humantime_serde")]
    pub batch_delay: Duration,
}

impl TracingConfig {
    fn default_sample_ratio() -> f64 {
        1.0
    }
    fn default_service_name() -> String {
        "wasmesh".to_owned()
    }
    fn default_export_timeout() -> Duration {
        Duration::from_secs(5)
    }
    fn default_max_queue() -> usize {
        2048
    }
    fn default_batch_size() -> usize {
        512
    }
    fn default_batch_delay() -> Duration {
        Duration::from_secs(1)
    }
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sample_ratio: Self::default_sample_ratio(),
            otlp_endpoint: None,
            service_name: Self::default_service_name(),
            export_timeout: Self::default_export_timeout(),
            max_queue: Self::default_max_queue(),
            batch_size: Self::default_batch_size(),
            batch_delay: Self::default_batch_delay(),
        }
    }
}

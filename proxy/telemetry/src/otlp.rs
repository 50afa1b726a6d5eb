//! Span export over OTLP/HTTP (protobuf). The proxy's span for each sampled request goes into a
//! bounded queue that the OpenTelemetry SDK's batch processor drains from its own thread, in
//! batches, through `opentelemetry-otlp`. The request path never waits on the collector: when
//! it is slow or down, the queue fills and further spans are dropped.
//!
//! The proxy already owns its ids (see [`TraceContext`]), so a finished span is handed to the
//! processor as `SpanData` rather than built through a tracer that would make new ids.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};

pub use opentelemetry::trace::Event;

use super::trace_context::TraceContext;
use wasmesh_config::TracingConfig;

/// Largest collector answer read back.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A span exporter that could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Export needs the proxy's async runtime for its HTTP client.
    #[error("span export needs a running tokio runtime")]
    NoRuntime,
    /// The OTLP exporter refused its settings.
    #[error("OTLP exporter: {0}")]
    Build(String),
}

/// The proxy's span for one finished request.
#[derive(Debug)]
pub struct FinishedSpan {
    /// Span name: method and route, as the HTTP semantic conventions ask.
    pub name: String,
    /// When the request arrived.
    pub start: SystemTime,
    /// When its response head was ready.
    pub end: SystemTime,
    /// HTTP semantic-convention attributes, and the proxy's own.
    pub attributes: Vec<KeyValue>,
    /// Timed plugin calls, one event each.
    pub events: Vec<Event>,
    /// Whether the request failed (a 5xx answer).
    pub error: bool,
}

/// Batches and exports the proxy's spans to one OTLP endpoint.
#[derive(Debug)]
pub struct SpanExport {
    /// Taken on drop, to shut the worker down off the caller's thread.
    processor: Option<BatchSpanProcessor>,
    scope: InstrumentationScope,
    /// The settings it runs with, so a reload can tell whether to keep it.
    pub config: TracingConfig,
}

impl SpanExport {
    /// Starts the batch worker for `cfg.otlp_endpoint`; its HTTP requests run on the current
    /// tokio runtime.
    pub fn start(cfg: &TracingConfig, endpoint: &str) -> Result<Self, ExportError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| ExportError::NoRuntime)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.export_timeout));
        connector.set_nodelay(true);
        let client = RuntimeClient {
            handle,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: cfg.export_timeout,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(cfg.export_timeout)
            .build()
            .map_err(|e| ExportError::Build(e.to_string()))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cfg.max_queue)
            .with_max_export_batch_size(cfg.batch_size)
            .with_scheduled_delay(cfg.batch_delay)
            .build();
        let mut processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
        processor.set_resource(&Resource::builder_empty().with_service_name(cfg.service_name.clone()).build());
        let scope = InstrumentationScope::builder("wasmesh").with_version(env!("CARGO_PKG_VERSION")).build();
        Ok(Self { processor: Some(processor), scope, config: cfg.clone() })
    }

    /// Queues the span of the request `trace` describes; never blocks.
    pub fn record(&self, trace: &TraceContext, span: FinishedSpan) {
        let mut events = SpanEvents::default();
        events.events = span.events;
        let data = SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(trace.trace_id),
                SpanId::from_bytes(trace.span_id),
                TraceFlags::new(trace.flags),
                false,
                TraceState::NONE,
            ),
            parent_span_id: trace.parent_id.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: trace.parent_id.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Owned(span.name),
            start_time: span.start,
            end_time: span.end,
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status: if span.error { Status::error("") } else { Status::Unset },
            instrumentation_scope: self.scope.clone(),
        };
        // `on_end` only tries to enqueue: a full queue drops the span.
        if let Some(processor) = &self.processor {
            processor.on_end(data);
        }
    }

    /// Exports what is queued and stops the worker, waiting at most the export timeout.
    pub fn shutdown(&self) {
        if let Some(processor) = &self.processor {
            let _ = processor.shutdown_with_timeout(self.config.export_timeout);
        }
    }
}

impl Drop for SpanExport {
    fn drop(&mut self) {
        // The last holder may be a request on a proxy worker: flush on a thread of its own.
        if let Some(processor) = self.processor.take() {
            let timeout = self.config.export_timeout;
            let _ = std::thread::Builder::new()
                .name("wasmesh-otlp-stop".into())
                .spawn(move || processor.shutdown_with_timeout(timeout));
        }
    }
}

/// The exporter's HTTP client: hyper on the proxy's runtime, reachable from the batch
/// worker's thread (which is not a runtime thread) by spawning each request onto it.
#[derive(Debug)]
struct RuntimeClient {
    handle: tokio::runtime::Handle,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let request = request.map(Full::new);
        let exchange = async move {
            let response = client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await?.to_bytes();
            Ok::<_, HttpError>(http::Response::from_parts(parts, body))
        };
        self.handle
            .spawn(async move { tokio::time::timeout(timeout, exchange).await.map_err(|_| "export timed out")? })
            .await?
    }
}

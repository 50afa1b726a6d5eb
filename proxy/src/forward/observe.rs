//! What the proxy records about a request once its answer is known: the access-log event and,
//! for a sampled trace when span export is configured, the proxy's span (OpenTelemetry HTTP
//! semantic conventions) with each plugin call it made as an event.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, StatusCode, Uri, Version};
use opentelemetry::KeyValue;

use crate::plugin::HookCalls;
use crate::snapshot::Snapshot;
use crate::telemetry::logging::ACCESS_LOG_TARGET;
use crate::telemetry::otlp::{Event, FinishedSpan, SpanExport};
use crate::telemetry::trace_context::{Hex, TraceContext};

/// The request's trace context and what its record needs.
pub(super) struct Observer {
    /// The proxy's hop of the trace, already in the upstream request's `traceparent`; `None`
    /// when tracing is off.
    trace: Option<TraceContext>,
    /// Method, URI and version, kept only when something records them (cloning shares buffers).
    request: Option<(Method, Uri, Version)>,
    access_log: bool,
    span: Option<SpanDraft>,
}

/// A span being recorded.
struct SpanDraft {
    export: Arc<SpanExport>,
    start: SystemTime,
    /// `Host` as the client sent it.
    host: String,
    events: Vec<Event>,
}

/// Where a request went, for its record.
pub(super) struct Finished<'a> {
    /// The status answered downstream.
    pub status: StatusCode,
    /// The route's name.
    pub route: &'a str,
    /// The service it was sent to.
    pub service: &'a str,
    /// The endpoint of the last attempt; `None` when the proxy answered before any.
    pub upstream: Option<&'a http::uri::Authority>,
    /// Attempts after the first (retries).
    pub resends: u32,
    /// Time since the request arrived.
    pub elapsed: Duration,
}

impl Observer {
    /// Joins or starts the request's trace (rewriting its `traceparent` for the upstream),
    /// unless tracing is off, and decides what to record about it.
    pub fn start(snap: &Snapshot, parts: &mut http::request::Parts) -> Self {
        let trace =
            snap.tracing.enabled.then(|| TraceContext::propagate(&mut parts.headers, snap.tracing.sample_ratio));
        let sampled = trace.is_some_and(|t| t.sampled());
        let span = snap.tracing.export.as_ref().filter(|_| sampled).map(|export| SpanDraft {
            export: export.clone(),
            start: SystemTime::now(),
            host: parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned(),
            events: Vec::new(),
        });
        let request =
            (snap.access_log || span.is_some()).then(|| (parts.method.clone(), parts.uri.clone(), parts.version));
        Self { trace, request, access_log: snap.access_log, span }
    }

    /// Emits the access-log event and queues the span, as configured. Called once.
    pub fn finish(&mut self, client: std::net::SocketAddr, outcome: Finished<'_>) {
        let Some((method, uri, version)) = &self.request else { return };
        if self.access_log {
            let (trace_id, span_id, parent_id) = match &self.trace {
                Some(t) => (Hex(&t.trace_id), Hex(&t.span_id), t.parent_id.as_ref().map_or(Hex(&[]), |p| Hex(p))),
                None => (Hex(&[]), Hex(&[]), Hex(&[])),
            };
            tracing::info!(
                target: ACCESS_LOG_TARGET,
                method = %method,
                path = uri.path(),
                status = outcome.status.as_u16(),
                route = outcome.route,
                upstream = outcome.upstream.map_or("-", http::uri::Authority::as_str),
                duration_us = outcome.elapsed.as_micros() as u64,
                trace_id = %trace_id,
                span_id = %span_id,
                parent_id = %parent_id,
            );
        }
        let (Some(span), Some(trace)) = (self.span.take(), &self.trace) else { return };
        let status = outcome.status.as_u16();
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.as_str().to_owned()),
            KeyValue::new("url.path", uri.path().to_owned()),
            KeyValue::new("http.route", outcome.route.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(status)),
            KeyValue::new("network.protocol.version", protocol_version(*version)),
            KeyValue::new("server.address", span.host),
            KeyValue::new("client.address", client.ip().to_string()),
            KeyValue::new("client.port", i64::from(client.port())),
            KeyValue::new("wasmesh.service", outcome.service.to_owned()),
        ];
        if let Some(upstream) = outcome.upstream {
            attributes.push(KeyValue::new("wasmesh.upstream.address", upstream.as_str().to_owned()));
        }
        if let Some(query) = uri.query() {
            attributes.push(KeyValue::new("url.query", query.to_owned()));
        }
        if outcome.resends > 0 {
            attributes.push(KeyValue::new("http.request.resend_count", i64::from(outcome.resends)));
        }
        let error = outcome.status.is_server_error();
        if error {
            attributes.push(KeyValue::new("error.type", status.to_string()));
        }
        let end = span.start + outcome.elapsed.max(Duration::from_nanos(1));
        span.export.record(
            trace,
            FinishedSpan {
                name: format!("{method} {}", outcome.route),
                start: span.start,
                end,
                attributes,
                events: span.events,
                error,
            },
        );
    }
}

impl HookCalls for Observer {
    /// Runs one plugin hook; when the request's span is recorded, the call becomes its event.
    fn plugin_call<R>(&mut self, plugin: &str, hook: &'static str, call: impl FnOnce() -> R) -> R {
        let Some(span) = &mut self.span else { return call() };
        let (at, started) = (SystemTime::now(), Instant::now());
        let result = call();
        let attributes = vec![
            KeyValue::new("wasmesh.plugin.name", plugin.to_owned()),
            KeyValue::new("wasmesh.plugin.hook", hook),
            KeyValue::new("wasmesh.plugin.duration_us", started.elapsed().as_micros() as i64),
        ];
        span.events.push(Event::new("plugin.call", at, attributes, 0));
        result
    }
}

/// `network.protocol.version` of an HTTP version.
fn protocol_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

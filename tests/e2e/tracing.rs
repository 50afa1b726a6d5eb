//! W3C trace context through two wasmesh hops: the caller's trace is joined, each hop's span
//! is the next hop's parent, and a request without a trace gets one. Spans exported over
//! OTLP/HTTP to a receiver in the test, and an exporter outage that costs requests nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::harness::{Proxy, backends, eventually, get, json, one_route, plugin_toml, send};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The value of `key=` on the access-log line of `proxy` that carries `trace_id=TRACE`.
async fn logged(proxy: &Proxy, trace: &str, key: &str) -> String {
    let needle = format!("trace_id={trace}");
    eventually(Duration::from_secs(3), "the access-log line", || async {
        let log = proxy.log();
        let line = log.lines().find(|l| l.contains(&needle))?.to_owned();
        let rest = &line[line.find(&format!(" {key}="))? + key.len() + 2..];
        Some(rest.split_whitespace().next().unwrap_or_default().to_owned())
    })
    .await
}

#[tokio::test]
async fn trace_context_is_joined_and_each_hop_parents_the_next() {
    let b = backends(1).await;
    let inner = Proxy::start(&one_route(b[0].addr)).await;
    let outer = Proxy::start(&one_route(inner.listen)).await;

    let req = Request::get(outer.url("/echo"))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .header("tracestate", "vendor=abc")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let seen = json(send(req).await).await;
    let traceparent = seen["headers"]["traceparent"].as_str().expect("traceparent reached the backend").to_owned();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE, "01"), "same trace, version and flags");
    assert_eq!(seen["headers"]["tracestate"], "vendor=abc", "tracestate passes through");

    // outer: parent = the caller's span; inner: parent = outer's span; backend: parent = inner's span.
    assert_eq!(logged(&outer, TRACE, "parent_id").await, CALLER_SPAN);
    let outer_span = logged(&outer, TRACE, "span_id").await;
    assert_eq!(logged(&inner, TRACE, "parent_id").await, outer_span);
    let inner_span = logged(&inner, TRACE, "span_id").await;
    assert_eq!(parts[2], inner_span, "the backend's parent is the last hop's span");
    assert_ne!(outer_span, inner_span);
    assert_ne!(outer_span, CALLER_SPAN);

    // No trace context: the first hop starts a trace, which the second joins.
    let seen = json(send(Request::get(outer.url("/echo")).body(Full::new(Bytes::new())).expect("request")).await).await;
    let started = seen["headers"]["traceparent"].as_str().expect("a new trace").to_owned();
    let trace = &started[3..35];
    assert_ne!(trace, TRACE);
    assert!(trace.bytes().all(|c| c.is_ascii_hexdigit()) && trace != "0".repeat(32), "{started}");
    assert_eq!(logged(&outer, trace, "parent_id").await, "", "the first hop has no parent");
    assert_eq!(logged(&inner, trace, "parent_id").await, logged(&outer, trace, "span_id").await);
}

#[tokio::test]
async fn a_request_the_proxy_answers_itself_has_its_access_log_line_too() {
    let b = backends(1).await;
    let filter =
        plugin_toml("keys", "filter", "header_filter.wasm", r#"{ request_id = false, api_keys = ["k1"] }"#, "");
    let config = format!(
        "{filter}[[routes]]\nname = \"r\"\nservice = \"s\"\nfilters = [\"keys\"]\n[[services]]\nname = \"s\"\nendpoints = [{{ address = \"{}\" }}]\n",
        b[0].addr
    );
    let proxy = Proxy::start(&config).await;

    // The filter refuses the request without a key: no upstream was asked.
    let refused = send(traced(&proxy.url("/echo"), TRACE, "01")).await;
    assert_eq!(refused.status(), 401);
    let value = |v: String| v.trim_matches('"').to_owned();
    assert_eq!(value(logged(&proxy, TRACE, "status").await), "401");
    assert_eq!(value(logged(&proxy, TRACE, "route").await), "r");
    assert_eq!(value(logged(&proxy, TRACE, "upstream").await), "-", "no upstream was asked");

    // A request the filter lets through names its endpoint.
    let other = "0af7651916cd43dd8448eb211c80319c";
    let mut req = traced(&proxy.url("/echo"), other, "01");
    req.headers_mut().insert("x-api-key", http::HeaderValue::from_static("k1"));
    assert_eq!(send(req).await.status(), 200);
    assert_eq!(value(logged(&proxy, other, "upstream").await), b[0].addr.to_string());
}

#[tokio::test]
async fn with_tracing_off_trace_context_passes_through_untouched() {
    let b = backends(1).await;
    let proxy = Proxy::start(&format!("{}\n[tracing]\nenabled = false\n", one_route(b[0].addr))).await;
    let caller = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let req = Request::get(proxy.url("/echo"))
        .header("traceparent", &caller)
        .header("tracestate", "vendor=abc")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let seen = json(send(req).await).await;
    assert_eq!(seen["headers"]["traceparent"], caller.as_str(), "the proxy made no span of its own");
    assert_eq!(seen["headers"]["tracestate"], "vendor=abc");
    let seen = json(send(Request::get(proxy.url("/echo")).body(Full::new(Bytes::new())).expect("request")).await).await;
    assert!(seen["headers"].get("traceparent").is_none(), "no trace started: {}", seen["headers"]);
}

/// An OTLP/HTTP receiver: decodes each `POST /v1/traces` and keeps the spans with the
/// `service.name` of their resource.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

impl Collector {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let spans: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
        let kept = spans.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let kept = kept.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.expect("body").to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                        for resource in export.resource_spans {
                            let name = resource
                                .resource
                                .as_ref()
                                .and_then(|r| string_attr(&r.attributes, "service.name"))
                                .unwrap_or_default();
                            for scope in resource.scope_spans {
                                kept.lock().expect("lock").extend(scope.spans.into_iter().map(|s| (name.clone(), s)));
                            }
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Self { addr, spans }
    }

    /// The span of trace `trace` (hex), once it has arrived.
    async fn span(&self, trace: &str) -> (String, Span) {
        eventually(Duration::from_secs(10), "the span at the collector", || async {
            self.spans.lock().expect("lock").iter().find(|(_, s)| hex(&s.trace_id) == trace).cloned()
        })
        .await
    }
}

/// A GET of `url` in trace `trace` (hex) from the caller's span, with trace flags `flags`.
fn traced(url: &str, trace: &str, flags: &str) -> Request<Full<Bytes>> {
    Request::get(url)
        .header("traceparent", format!("00-{trace}-{CALLER_SPAN}-{flags}"))
        .body(Full::new(Bytes::new()))
        .expect("request")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attrs.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attrs.iter().find(|a| a.key == key)?.value.as_ref()? {
        AnyValue { value: Some(any_value::Value::IntValue(i)) } => Some(*i),
        _ => None,
    }
}

fn tracing_section(endpoint: &str, extra: &str) -> String {
    format!(
        "[tracing]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"edge-proxy\"\nbatch_delay = \"50ms\"\n{extra}\n"
    )
}

#[tokio::test]
async fn spans_reach_an_otlp_collector_with_http_attributes_and_plugin_calls() {
    let b = backends(1).await;
    let collector = Collector::start().await;
    let filter = plugin_toml(
        "stamp",
        "filter",
        "header_filter.wasm",
        r#"{ request_id = false, request_set = { "x-env" = "test" } }"#,
        "",
    );
    let config = format!(
        "{}{filter}[[routes]]\nname = \"r\"\nservice = \"s\"\nfilters = [\"stamp\"]\n[[services]]\nname = \"s\"\nendpoints = [{{ address = \"{}\" }}]\n",
        tracing_section(&format!("http://{}/v1/traces", collector.addr), ""),
        b[0].addr
    );
    let proxy = Proxy::start(&config).await;

    let req = traced(&proxy.url("/echo?x=1"), TRACE, "01");
    let seen = json(send(req).await).await;
    let upstream_parent =
        seen["headers"]["traceparent"].as_str().expect("traceparent").split('-').nth(2).map(str::to_owned);

    let (service, span) = collector.span(TRACE).await;
    assert_eq!(service, "edge-proxy");
    assert_eq!(span.name, "GET r");
    assert_eq!(hex(&span.parent_span_id), CALLER_SPAN, "the caller's span is the parent");
    assert_eq!(Some(hex(&span.span_id)), upstream_parent, "the span exported is the upstream's parent");
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert!(span.end_time_unix_nano > span.start_time_unix_nano);
    let attrs = &span.attributes;
    assert_eq!(string_attr(attrs, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(string_attr(attrs, "url.path").as_deref(), Some("/echo"));
    assert_eq!(string_attr(attrs, "url.query").as_deref(), Some("x=1"));
    assert_eq!(string_attr(attrs, "http.route").as_deref(), Some("r"));
    assert_eq!(int_attr(attrs, "http.response.status_code"), Some(200));
    assert_eq!(string_attr(attrs, "wasmesh.upstream.address"), Some(b[0].addr.to_string()));
    assert_eq!(string_attr(attrs, "client.address").as_deref(), Some("127.0.0.1"));
    let call = span.events.iter().find(|e| e.name == "plugin.call").expect("the filter call is an event");
    assert_eq!(string_attr(&call.attributes, "wasmesh.plugin.name").as_deref(), Some("stamp"));
    assert_eq!(string_attr(&call.attributes, "wasmesh.plugin.hook").as_deref(), Some("on_request"));
    assert!(int_attr(&call.attributes, "wasmesh.plugin.duration_us").is_some());

    // A caller that does not sample its trace gets no span exported.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let req = traced(&proxy.url("/echo"), unsampled, "00");
    assert_eq!(send(req).await.status(), 200);
    // A sampled request sent after it arrives after it: the unsampled one was not exported.
    let later = "11111111111111111111111111111111";
    let req = traced(&proxy.url("/echo"), later, "01");
    assert_eq!(send(req).await.status(), 200);
    collector.span(later).await;
    assert!(!collector.spans.lock().expect("lock").iter().any(|(_, s)| hex(&s.trace_id) == unsampled));
}

#[tokio::test]
async fn an_exporter_outage_neither_fails_nor_holds_up_requests() {
    let b = backends(1).await;
    // A collector that accepts connections and never answers: each export waits its full
    // 30 s timeout, and the 16-span queue is full after a few requests.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hole_addr = hole.local_addr().expect("addr");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hole.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            held.push(stream);
        }
    });
    let section = tracing_section(
        &format!("http://{hole_addr}/v1/traces"),
        "export_timeout = \"30s\"\nmax_queue = 16\nbatch_size = 4",
    );
    let proxy = Proxy::start(&format!("{section}{}", one_route(b[0].addr))).await;

    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..300 {
        let t = Instant::now();
        let resp = get(&proxy.url("/echo")).await.expect("request");
        assert_eq!(resp.status(), 200);
        slowest = slowest.max(t.elapsed());
    }
    // Waiting on the exporter even once would take its 30 s timeout.
    assert!(slowest < Duration::from_secs(5), "slowest request {slowest:?}");
    assert!(started.elapsed() < Duration::from_secs(25), "300 requests took {:?}", started.elapsed());
    eventually(Duration::from_secs(5), "an export attempt at the dead collector", || async {
        (accepted.load(std::sync::atomic::Ordering::Relaxed) > 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn spans_still_queued_are_exported_on_shutdown() {
    let b = backends(1).await;
    let collector = Collector::start().await;
    // Batches would wait a minute: only the shutdown flush can deliver this span in time.
    let section = tracing_section(&format!("http://{}/v1/traces", collector.addr), "")
        .replace("batch_delay = \"50ms\"", "batch_delay = \"60s\"");
    let mut proxy = Proxy::start(&format!("{section}{}", one_route(b[0].addr))).await;
    let trace = "22222222222222222222222222222222";
    let req = traced(&proxy.url("/echo"), trace, "01");
    assert_eq!(send(req).await.status(), 200);
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)).await, Some(0));
    assert!(collector.spans.lock().expect("lock").iter().any(|(_, s)| hex(&s.trace_id) == trace));
}

//! W3C trace context through two wasmesh hops: the caller's trace is joined, each hop's span
//! is the next hop's parent, and a request without a trace gets one.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::harness::{Proxy, backends, eventually, json, one_route, send};

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

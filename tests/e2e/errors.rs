//! The proxy's own answers (404, 502, 503, 504) and header hygiene.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::AsyncReadExt;

use crate::harness::{Proxy, backends, free_port, get, h2c_client, json, one_route, send, text};

#[tokio::test]
async fn each_error_has_its_status_reason_and_metric() {
    // A backend that accepts, reads, and slams the connection shut.
    let resetter = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let reset_addr = resetter.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = resetter.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            drop(s);
        }
    });
    let b = backends(1).await;
    let closed = free_port();
    let config = format!(
        r#"
[[routes]]
name = "refused"
service = "refused"
match = {{ path_prefix = "/refused" }}
[[routes]]
name = "reset"
service = "reset"
match = {{ path_prefix = "/reset" }}
[[routes]]
name = "empty"
service = "empty"
match = {{ path_prefix = "/empty" }}
[[routes]]
name = "slow"
service = "ok"
timeout = "300ms"
match = {{ path_prefix = "/delay" }}

[[services]]
name = "refused"
endpoints = [{{ address = "127.0.0.1:{closed}" }}]
[[services]]
name = "reset"
endpoints = [{{ address = "{reset_addr}" }}]
[[services]]
name = "empty"
endpoints = []
[[services]]
name = "ok"
endpoints = [{{ address = "{}" }}]
"#,
        b[0].addr
    );
    let proxy = Proxy::start(&config).await;
    let cases = [
        ("/nowhere", 404, "no_route"),
        ("/refused", 502, "upstream_connect"),
        ("/reset", 502, "upstream_reset"),
        ("/empty", 503, "no_endpoint"),
        ("/delay/5000", 504, "timeout"),
    ];
    for (path, status, kind) in cases {
        let started = std::time::Instant::now();
        let resp = get(&proxy.url(path)).await.expect("request");
        assert_eq!(resp.status(), status, "{path}");
        assert_eq!(resp.headers()["x-wasmesh-error"], kind, "{path}");
        assert!(resp.headers()["content-type"].to_str().expect("ascii").starts_with("text/plain"));
        let body = text(resp).await;
        assert!(!body.is_empty() && body.len() < 80, "{path}: short reason, got {body:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{path} took {:?}", started.elapsed());
    }
    assert_eq!(proxy.metric("wasmesh_local_responses_total{route=\"\",kind=\"no_route\"}").await, Some(1.0));
    for (route, kind) in
        [("refused", "upstream_connect"), ("reset", "upstream_reset"), ("empty", "no_endpoint"), ("slow", "timeout")]
    {
        let sample = format!("wasmesh_local_responses_total{{route=\"{route}\",kind=\"{kind}\"}}");
        assert_eq!(proxy.metric(&sample).await, Some(1.0), "{sample}");
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_forwarded_headers_added() {
    let b = backends(1).await;
    let config = one_route(b[0].addr);
    let proxy = Proxy::start(&config).await;

    let req = Request::get(proxy.url("/echo"))
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let seen = json(send(req).await).await;
    let headers = seen["headers"].as_object().expect("headers");
    for gone in ["x-private", "keep-alive", "proxy-connection", "te"] {
        assert!(!headers.contains_key(gone), "{gone} reached the backend: {headers:?}");
    }
    assert_eq!(headers["x-end-to-end"], "kept");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], proxy.listen.to_string());
    assert_eq!(headers["host"], proxy.listen.to_string());

    let resp = get(&proxy.url("/respond-headers?connection=x-resp&x-resp=1&keep-alive=timeout%3D1&x-kept=yes"))
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-resp").is_none(), "{:?}", resp.headers());
    assert!(resp.headers().get("keep-alive").is_none(), "{:?}", resp.headers());
    assert_eq!(resp.headers()["x-kept"], "yes");
}

#[tokio::test]
async fn forwarded_headers_can_be_turned_off_per_listener() {
    let b = backends(1).await;
    let proxy = Proxy::start_with(&one_route(b[0].addr), "forwarded_headers = false").await;
    let req = Request::get(proxy.url("/echo"))
        .header("x-forwarded-for", "203.0.113.9")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let seen = json(send(req).await).await;
    let headers = seen["headers"].as_object().expect("headers");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9", "the client's own passes as sent");
    for absent in ["x-forwarded-proto", "x-forwarded-host"] {
        assert!(!headers.contains_key(absent), "{absent} added: {headers:?}");
    }
    assert_eq!(headers["host"], proxy.listen.to_string());
}

#[tokio::test]
async fn response_headers_arrive_as_the_backend_sent_them_on_every_downstream_path() {
    let b = backends(1).await;
    let proxy = Proxy::start(&one_route(b[0].addr)).await;
    let url = proxy.url("/respond-headers?x-multi=1&x-multi=2&keep-alive=timeout&proxy-connection=x&x-kept=yes");
    // A plain GET takes the HTTP/1.1 fast path, a GET with a body and any HTTP/2 request hyper's.
    let h1_body = Request::get(&url).body(Full::new(Bytes::from_static(b"abc"))).expect("request");
    let h2 = Request::get(&url).body(Full::new(Bytes::new())).expect("request");
    for (path, resp) in [
        ("h1 fast path", get(&url).await.expect("request")),
        ("h1 with a body", send(h1_body).await),
        ("h2c", h2c_client().request(h2).await.expect("request")),
    ] {
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers().clone();
        let all = |name: &str| h.get_all(name).iter().map(|v| v.to_str().unwrap_or("?").to_owned()).collect::<Vec<_>>();
        assert_eq!(all("x-multi"), ["1", "2"], "{path}: {h:?}");
        assert_eq!(all("x-kept"), ["yes"], "{path}: {h:?}");
        assert_eq!(all("x-backend"), ["b0"], "{path}: {h:?}");
        assert_eq!(all("date").len(), 1, "{path}: {h:?}");
        for gone in ["keep-alive", "proxy-connection"] {
            assert!(all(gone).is_empty(), "{path}: {gone} passed: {h:?}");
        }
        if path != "h2c" {
            assert_eq!(all("content-length"), ["11"], "{path}: {h:?}");
        }
        assert_eq!(text(resp).await, "backend b0\n", "{path}");
    }
}

#[tokio::test]
async fn routes_match_on_host_method_header_and_rewrite_the_prefix() {
    let b = backends(3).await;
    let config = format!(
        r#"
[[routes]]
name = "canary"
service = "canary"
match = {{ path_prefix = "/api", headers = [{{ name = "x-canary", value = "1" }}] }}
rewrite = {{ prefix = "/echo/canary" }}
[[routes]]
name = "writes"
service = "writes"
match = {{ host = "*.example.com", methods = ["POST"] }}
[[routes]]
name = "api"
service = "main"
match = {{ path_prefix = "/api" }}
rewrite = {{ prefix = "/echo" }}

[[services]]
name = "main"
endpoints = [{{ address = "{}" }}]
[[services]]
name = "canary"
endpoints = [{{ address = "{}" }}]
[[services]]
name = "writes"
endpoints = [{{ address = "{}" }}]
"#,
        b[0].addr, b[1].addr, b[2].addr
    );
    let proxy = Proxy::start(&config).await;
    let echo = |req: Request<Full<Bytes>>| async { json(send(req).await).await };
    let empty = || Full::new(Bytes::new());

    let seen = echo(Request::get(proxy.url("/api/users?q=1")).body(empty()).expect("req")).await;
    assert_eq!(seen["backend"], "b0");
    assert_eq!(seen["path"], "/echo/users?q=1");

    let seen = echo(Request::get(proxy.url("/api/users")).header("x-canary", "1").body(empty()).expect("req")).await;
    assert_eq!(seen["backend"], "b1");
    assert_eq!(seen["path"], "/echo/canary/users");

    let seen =
        echo(Request::post(proxy.url("/echo")).header("host", "shop.example.com").body(empty()).expect("req")).await;
    assert_eq!(seen["backend"], "b2");

    let resp =
        send(Request::get(proxy.url("/echo")).header("host", "shop.example.com").body(empty()).expect("req")).await;
    assert_eq!(resp.status(), 404, "GET does not match the POST-only route");
    let resp = send(Request::get(proxy.url("/apix")).body(empty()).expect("req")).await;
    assert_eq!(resp.status(), 404, "prefixes match whole segments");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_class() {
    let b = backends(1).await;
    let config = one_route(b[0].addr);
    let proxy = Proxy::start(&config).await;
    for _ in 0..5 {
        text(get(&proxy.url("/")).await.expect("request")).await;
    }
    for _ in 0..2 {
        text(get(&proxy.url("/status/503")).await.expect("request")).await;
    }
    let ok = "wasmesh_requests_total{route=\"r\",service=\"s\",status_class=\"2xx\"}";
    let bad = "wasmesh_requests_total{route=\"r\",service=\"s\",status_class=\"5xx\"}";
    assert_eq!(proxy.metric(ok).await, Some(5.0));
    assert_eq!(proxy.metric(bad).await, Some(2.0));
    assert_eq!(proxy.metric("wasmesh_request_duration_seconds_count{route=\"r\",service=\"s\"}").await, Some(7.0));
    assert_eq!(proxy.metric("wasmesh_active_requests{route=\"r\",service=\"s\"}").await, Some(0.0));
    let open = format!("wasmesh_upstream_connections{{endpoint=\"{}\"}}", b[0].addr);
    assert!(proxy.metric(&open).await.is_some_and(|n| n >= 1.0), "pooled upstream connection is counted");
}

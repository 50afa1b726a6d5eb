//! Bad input from clients and upstreams: `Host` rules (RFC 9112 §3.2), request and response
//! head limits. Each refusal is a clear 4xx (or 502 for an upstream), and nothing reaches the
//! backend.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Proxy, backends, get, h2c_client, json, one_route};

/// Sends `request` on a new connection and returns what comes back until the proxy closes it
/// (or 5 s pass). The requests here say `Connection: close` where they are valid.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // A refused request may not be read whole: the answer counts, not the write.
    let _ = conn.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw response.
fn status(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {response:?}"))
}

/// A GET (the fast path serves it) or a POST with a body (hyper serves it) with `headers`.
fn request(post: bool, headers: &str) -> Vec<u8> {
    if post {
        format!("POST /echo HTTP/1.1\r\n{headers}Content-Length: 5\r\nConnection: close\r\n\r\nhello").into_bytes()
    } else {
        format!("GET /echo HTTP/1.1\r\n{headers}Connection: close\r\n\r\n").into_bytes()
    }
}

#[tokio::test]
async fn host_must_be_present_once_and_valid_on_both_paths() {
    let b = backends(1).await;
    let proxy = Proxy::start(&one_route(b[0].addr)).await;
    for post in [false, true] {
        for (headers, what) in [
            ("", "no Host"),
            ("Host: a.example\r\nHost: b.example\r\n", "two Host lines"),
            ("Host: a.example\r\nHost: a.example\r\n", "the same Host twice"),
            ("Host: a b\r\n", "a space in Host"),
            ("Host: a.example/x\r\n", "a path in Host"),
            ("Host: user@a.example\r\n", "userinfo in Host"),
            ("Host: a.example:80x\r\n", "a bad port"),
        ] {
            let answer = exchange(proxy.listen, &request(post, headers)).await;
            assert_eq!(status(&answer), 400, "{what} (post: {post}): {answer}");
            assert!(answer.contains("x-wasmesh-error: invalid_host"), "{what} (post: {post}): {answer}");
        }
    }
    assert_eq!(b[0].hits(), 0, "nothing reached the backend");
    assert_eq!(
        proxy.metric("wasmesh_local_responses_total{route=\"\",kind=\"invalid_host\"}").await,
        Some(14.0),
        "each refusal is counted"
    );
    // A valid request on each path still goes through.
    for post in [false, true] {
        let answer = exchange(proxy.listen, &request(post, "Host: a.example\r\n")).await;
        assert_eq!(status(&answer), 200, "{answer}");
    }
    assert_eq!(b[0].hits(), 2);
}

#[tokio::test]
async fn an_absolute_target_replaces_host_and_routes_by_it() {
    let (a, other) = (backends(1).await, backends(1).await);
    let config = format!(
        r#"
[[routes]]
name = "named"
service = "named"
match = {{ host = "routed.example" }}
[[routes]]
name = "rest"
service = "rest"
[[services]]
name = "named"
endpoints = [{{ address = "{}" }}]
[[services]]
name = "rest"
endpoints = [{{ address = "{}" }}]
"#,
        a[0].addr, other[0].addr
    );
    let proxy = Proxy::start(&config).await;
    for post in [false, true] {
        let method = if post { "POST" } else { "GET" };
        let body = if post { "Content-Length: 0\r\n" } else { "" };
        let req = format!(
            "{method} http://routed.example:8443/echo HTTP/1.1\r\nHost: other.example\r\n{body}Connection: close\r\n\r\n"
        );
        let answer = exchange(proxy.listen, req.as_bytes()).await;
        assert_eq!(status(&answer), 200, "{answer}");
        let seen: serde_json::Value =
            serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("a body")).expect("the echo's JSON");
        assert_eq!(seen["headers"]["host"], "routed.example:8443", "{seen}");
        assert_eq!(seen["path"], "/echo", "origin form upstream: {seen}");
    }
    assert_eq!((a[0].hits(), other[0].hits()), (2, 0));
}

#[tokio::test]
async fn http2_host_must_agree_with_the_authority() {
    let b = backends(1).await;
    let proxy = Proxy::start(&one_route(b[0].addr)).await;
    let client = h2c_client();
    let disagree = Request::get(proxy.url("/echo"))
        .header("host", "elsewhere.example")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client.request(disagree).await.expect("an answer");
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-wasmesh-error"], "invalid_host");
    assert_eq!(b[0].hits(), 0);
    let agree = Request::get(proxy.url("/echo")).header("host", proxy.listen.to_string()).body(Full::new(Bytes::new()));
    let resp = client.request(agree.expect("request")).await.expect("an answer");
    assert_eq!(resp.status(), 200);
    let seen = json(resp).await;
    assert_eq!(seen["headers"]["host"], proxy.listen.to_string());
}

/// `n` header lines of `size` bytes each.
fn filler(n: usize, size: usize) -> String {
    (0..n).map(|i| format!("x-fill-{i:03}: {}\r\n", "v".repeat(size.saturating_sub(15)))).collect()
}

#[tokio::test]
async fn oversized_request_heads_get_431_on_every_path() {
    let b = backends(1).await;
    let proxy = Proxy::start(&one_route(b[0].addr)).await;
    for post in [false, true] {
        // 128 KiB and 256 KiB in 64 lines of 2 and 4 KiB; then 101 short lines.
        for (lines, size) in [(64, 2048), (64, 4096), (101, 20)] {
            let headers = format!("Host: a.example\r\n{}", filler(lines, size));
            let answer = exchange(proxy.listen, &request(post, &headers)).await;
            assert_eq!(status(&answer), 431, "{lines} lines of {size} bytes (post: {post}): {answer:.200}");
        }
        // One line of 100 KiB.
        let headers = format!("Host: a.example\r\nx-big: {}\r\n", "v".repeat(100 * 1024));
        let answer = exchange(proxy.listen, &request(post, &headers)).await;
        assert_eq!(status(&answer), 431, "one long line (post: {post}): {answer:.200}");
    }
    // Just under the size limit (and under the demo backend's own 100 headers, with the
    // X-Forwarded-* and traceparent headers the proxy adds): served.
    let headers = format!("Host: a.example\r\n{}", filler(90, 700));
    let answer = exchange(proxy.listen, &request(false, &headers)).await;
    assert_eq!(status(&answer), 200, "{answer:.200}");
    assert_eq!(b[0].hits(), 1, "only the request within the limits reached the backend");
}

#[tokio::test]
async fn listener_head_limits_are_configurable() {
    let b = backends(1).await;
    let proxy =
        Proxy::start_with(&one_route(b[0].addr), "max_request_headers_kib = 8\nmax_request_headers = 20\n").await;
    for post in [false, true] {
        for (lines, size, expected) in [(17, 20, 200), (21, 20, 431), (10, 1000, 431), (6, 1000, 200)] {
            let headers = format!("Host: a.example\r\n{}", filler(lines, size));
            let answer = exchange(proxy.listen, &request(post, &headers)).await;
            assert_eq!(status(&answer), expected, "{lines} lines of {size} bytes (post: {post}): {answer:.200}");
        }
    }
    assert_eq!(b[0].hits(), 4);
    // HTTP/2: the header count is checked by the proxy, the size by SETTINGS_MAX_HEADER_LIST_SIZE.
    let client = h2c_client();
    let mut many = Request::get(proxy.url("/echo"));
    for i in 0..21 {
        many = many.header(format!("x-n-{i}"), "v");
    }
    let resp = client.request(many.body(Full::new(Bytes::new())).expect("request")).await.expect("an answer");
    assert_eq!(resp.status(), 431);
    assert_eq!(resp.headers()["x-wasmesh-error"], "headers_too_large");
    let big = Request::get(proxy.url("/echo")).header("x-big", "v".repeat(10 * 1024)).body(Full::new(Bytes::new()));
    match client.request(big.expect("request")).await {
        Ok(resp) => assert_eq!(resp.status(), 431),
        Err(e) => assert!(format!("{e:?}").contains("Reset") || format!("{e:?}").contains("REFUSED"), "{e:?}"),
    }
    assert_eq!(b[0].hits(), 4, "no HTTP/2 request past the limits reached the backend");
    let resp = get(&proxy.url("/echo")).await.expect("an answer");
    assert_eq!(resp.status(), 200, "the listener still serves");
}

#[tokio::test]
async fn oversized_upstream_response_heads_are_a_502() {
    // A backend whose answer depends on the path: a 70 KiB header line, 101 header lines, or
    // a plain answer.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = upstream.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let headers = if head.starts_with("GET /long") {
                    format!("x-long: {}\r\n", "v".repeat(70 * 1024))
                } else if head.starts_with("GET /many") {
                    filler(101, 20)
                } else {
                    String::new()
                };
                let answer = format!("HTTP/1.1 200 OK\r\n{headers}content-length: 2\r\nconnection: close\r\n\r\nok");
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    let proxy = Proxy::start(&one_route(addr)).await;
    for path in ["/long", "/many"] {
        let resp = get(&proxy.url(path)).await.expect("an answer");
        assert_eq!(resp.status(), 502, "{path}");
    }
    let resp = get(&proxy.url("/plain")).await.expect("an answer");
    assert_eq!(resp.status(), 200);
}

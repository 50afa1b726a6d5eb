//! Every timeout fires: request (head and body), connect, header read, idle, upstream idle.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Backlogged, Proxy, backends, client, closed_within, get};

fn one_service(addr: &str, timeouts: &str) -> String {
    format!(
        "[[routes]]\nname = \"r\"\nservice = \"s\"\n[[services]]\nname = \"s\"\nendpoints = [{{ address = \"{addr}\" }}]\n[services.timeouts]\n{timeouts}\n"
    )
}

#[tokio::test]
async fn request_timeout_bounds_a_stalled_response_head_and_body() {
    let b = backends(1).await;
    let proxy = Proxy::start(&one_service(&b[0].addr.to_string(), "request = \"400ms\"")).await;

    let started = Instant::now();
    let resp = get(&proxy.url("/delay/10000")).await.expect("request");
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(2), "504 after {:?}", started.elapsed());

    // The head arrives, then the body stalls: the stream is cut at the same deadline.
    let started = Instant::now();
    let resp = get(&proxy.url("/stall")).await.expect("request");
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await.expect("bounded");
    assert!(body.is_err(), "a stalled body must end in an error, not complete");
    assert!(started.elapsed() < Duration::from_secs(2), "body cut after {:?}", started.elapsed());
}

#[tokio::test]
async fn connect_timeout_fires_against_a_backlogged_listener() {
    let backlogged = Backlogged::start().await;
    let addr = backlogged.addr;
    let proxy = Proxy::start(&one_service(&addr.to_string(), "connect = \"300ms\"\nrequest = \"5s\"")).await;
    let started = Instant::now();
    let resp = get(&proxy.url("/")).await.expect("request");
    assert_eq!(resp.status(), 504, "{:?}", resp.headers());
    assert_eq!(resp.headers()["x-wasmesh-error"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn slow_request_heads_are_cut_at_the_header_read_timeout() {
    let b = backends(1).await;
    let proxy = Proxy::start_with(&one_service(&b[0].addr.to_string(), ""), "header_read_timeout = \"500ms\"").await;
    let mut slow = TcpStream::connect(proxy.listen).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n").await.expect("partial head");
    let closed = closed_within(&mut slow, Duration::from_secs(5)).await;
    assert!(closed.is_some_and(|t| t >= Duration::from_millis(400)), "closed after {closed:?}");
}

#[tokio::test]
async fn idle_downstream_connections_are_closed() {
    let b = backends(1).await;
    let proxy = Proxy::start_with(
        &one_service(&b[0].addr.to_string(), ""),
        "idle_timeout = \"800ms\"\nheader_read_timeout = \"30s\"",
    )
    .await;
    let mut conn = TcpStream::connect(proxy.listen).await.expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("request");
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let closed = closed_within(&mut conn, Duration::from_secs(5)).await;
    assert!(closed.is_some_and(|t| t >= Duration::from_millis(700)), "closed after {closed:?}");
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_cut_off() {
    let b = backends(1).await;
    let proxy = Proxy::start_with(
        &one_service(&b[0].addr.to_string(), "request = \"60s\""),
        "idle_timeout = \"800ms\"\nheader_read_timeout = \"30s\"",
    )
    .await;
    // Far more than loopback socket buffers hold, so the proxy's writes must wait for the client.
    const BODY: usize = 64 << 20;
    let mut conn = TcpStream::connect(proxy.listen).await.expect("connect");
    conn.write_all(format!("GET /stream/{BODY} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.expect("request");
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = conn.read(&mut buf).await.expect("response head");
    assert!(String::from_utf8_lossy(&buf[..total]).starts_with("HTTP/1.1 200"));
    // The client stops reading for well past the idle timeout, then drains what was sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the connection is still open after 20 s of reading");
    assert!(total < BODY, "{total} bytes arrived: the stalled response was never cut off");
}

#[tokio::test]
async fn idle_upstream_connections_leave_the_pool() {
    for protocol in ["http1", "h2c"] {
        let b = backends(1).await;
        let config = format!(
            "[[routes]]\nname = \"r\"\nservice = \"s\"\n[[services]]\nname = \"s\"\nprotocol = \"{protocol}\"\n\
             endpoints = [{{ address = \"{}\" }}]\ntimeouts = {{ idle = \"500ms\" }}\n",
            b[0].addr
        );
        let proxy = Proxy::start(&config).await;
        let c = client();
        let resp = c.get(proxy.url("/").parse().expect("url")).await.expect("request");
        resp.into_body().collect().await.expect("body");
        let open = format!("wasmesh_upstream_connections{{endpoint=\"{}\"}}", b[0].addr);
        assert_eq!(proxy.metric(&open).await, Some(1.0), "{protocol}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while proxy.metric(&open).await != Some(0.0) {
            assert!(Instant::now() < deadline, "{protocol}: pooled connection still open after its idle timeout");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Sends `request` on `conn` and returns the status of the one response it reads.
async fn status_on(conn: &mut TcpStream, request: &[u8]) -> String {
    conn.write_all(request).await.expect("request");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await.expect("answered").expect("read");
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_connection_quiet_between_requests_keeps_serving_and_loses_no_bytes() {
    // A quiet kept-alive connection is parked (its buffers given back) within two seconds, and
    // the idle timeout still counts from its last byte.
    let b = backends(1).await;
    let proxy = Proxy::start_with(
        &one_service(&b[0].addr.to_string(), ""),
        "idle_timeout = \"4s\"\nheader_read_timeout = \"30s\"",
    )
    .await;
    let mut conn = TcpStream::connect(proxy.listen).await.expect("connect");
    assert_eq!(status_on(&mut conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await, "HTTP/1.1 200 OK");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status_on(&mut conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await, "HTTP/1.1 200 OK");

    // Half a head, then quiet: the bytes already read are kept, not parked away.
    conn.write_all(b"GET / HTTP/1.1\r\nHo").await.expect("half a head");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status_on(&mut conn, b"st: x\r\n\r\n").await, "HTTP/1.1 200 OK");

    // Parked, the connection still closes at the idle timeout from its last byte.
    let closed = closed_within(&mut conn, Duration::from_secs(10)).await;
    assert!(
        closed.is_some_and(|t| t >= Duration::from_millis(3500) && t < Duration::from_secs(6)),
        "closed after {closed:?}"
    );
}

#[tokio::test]
async fn parked_connections_hold_their_place_until_they_close() {
    // Connections that have sent nothing, and kept-alive ones quiet between requests, wait
    // parked; each still counts against the listener's max_connections until it closes.
    let b = backends(1).await;
    let proxy = Proxy::start_with(
        &one_service(&b[0].addr.to_string(), ""),
        "idle_timeout = \"30s\"\nheader_read_timeout = \"30s\"\nmax_connections = 2",
    )
    .await;
    let open = "wasmesh_downstream_connections{listener=\"main\"}";
    let rejected = "wasmesh_downstream_connections_rejected_total{listener=\"main\"}";

    let silent = TcpStream::connect(proxy.listen).await.expect("connect");
    let mut kept = TcpStream::connect(proxy.listen).await.expect("connect");
    assert_eq!(status_on(&mut kept, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await, "HTTP/1.1 200 OK");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(proxy.metric(open).await, Some(2.0));

    // Full: a third connection is closed at once, without an answer.
    let mut third = TcpStream::connect(proxy.listen).await.expect("connect");
    let closed = closed_within(&mut third, Duration::from_secs(5)).await;
    assert!(closed.is_some_and(|t| t < Duration::from_secs(2)), "third connection closed after {closed:?}");
    assert_eq!(proxy.metric(rejected).await, Some(1.0));

    // The parked ones are still served, and a client closing its parked connection frees its place.
    assert_eq!(status_on(&mut kept, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await, "HTTP/1.1 200 OK");
    drop(silent);
    let mut freed = None;
    for _ in 0..50 {
        if proxy.metric(open).await == Some(1.0) {
            freed = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed.is_some(), "the closed parked connection still counts as open");
    let mut fourth = TcpStream::connect(proxy.listen).await.expect("connect");
    assert_eq!(status_on(&mut fourth, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await, "HTTP/1.1 200 OK");
}

//! HTTP/1.1 and h2c on both sides, streaming without buffering, and WebSocket upgrades.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Proxy, backends, client, h2c_client, json, one_route, text};

#[tokio::test]
async fn h1_and_h2c_on_both_sides() {
    let b = backends(2).await;
    let config = format!(
        r#"
[[routes]]
name = "to-h2"
service = "h2"
match = {{ path_prefix = "/h2" }}
rewrite = {{ prefix = "/" }}
[[routes]]
name = "to-h1"
service = "h1"

[[services]]
name = "h1"
endpoints = [{{ address = "{}" }}]
[[services]]
name = "h2"
protocol = "h2c"
endpoints = [{{ address = "{}" }}]
"#,
        b[0].addr, b[1].addr
    );
    let proxy = Proxy::start(&config).await;
    for (downstream, c) in [("HTTP/1.1", client()), ("HTTP/2.0", h2c_client())] {
        for (prefix, upstream) in [("", "HTTP/1.1"), ("/h2", "HTTP/2.0")] {
            let resp = c.get(proxy.url(&format!("{prefix}/echo")).parse().expect("url")).await.expect("request");
            assert_eq!(format!("{:?}", resp.version()), downstream);
            let seen = json(resp).await;
            assert_eq!(seen["version"], upstream, "downstream {downstream} via {prefix:?}");
            assert_eq!(seen["path"], "/echo");
            assert!(seen["headers"]["host"].is_string(), "Host is set for upstream {upstream}: {seen}");
        }
    }
}

#[tokio::test]
async fn a_100_mb_body_streams_both_ways_with_flat_memory() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let b = backends(1).await;
    let config = one_route(b[0].addr);
    let proxy = Proxy::start(&config).await;
    text(client().get(proxy.url("/").parse().expect("url")).await.expect("warm-up")).await;
    let rss_before = proxy.rss_kib();

    // Download: count bytes as they arrive, sampling the proxy's memory on the way.
    let resp = client().get(proxy.url(&format!("/stream/{SIZE}")).parse().expect("url")).await.expect("request");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let (mut received, mut peak) = (0u64, rss_before);
    while let Some(frame) = body.frame().await {
        received += frame.expect("frame").data_ref().map_or(0, |d| d.len() as u64);
        if received % (8 * 1024 * 1024) < 65536 {
            peak = peak.max(proxy.rss_kib());
        }
    }
    assert_eq!(received, SIZE);

    // Upload: a streamed request body the backend counts.
    let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
    let chunks = (SIZE / chunk.len() as u64) as usize;
    let stream =
        futures_util::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))));
    let upload: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(proxy.url("/upload")).body(StreamBody::new(stream)).expect("request");
    let resp = upload.request(req).await.expect("upload");
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, SIZE.to_string());
    peak = peak.max(proxy.rss_kib());

    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    assert!(growth_mib < 32, "proxy RSS grew by {growth_mib} MiB while streaming 100 MiB each way");
}

#[tokio::test]
async fn websocket_upgrade_is_passed_through() {
    let b = backends(1).await;
    let config = one_route(b[0].addr);
    let proxy = Proxy::start(&config).await;
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.listen)).await.expect("handshake");
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("echo in time");
        assert_eq!(echoed.expect("message").expect("ok"), Message::text(format!("hello {i}")));
    }
    ws.close(None).await.expect("close");
    let _ = Full::new(Bytes::new());
}

#[tokio::test]
async fn chunked_upstream_bodies_are_relayed_whole() {
    let b = backends(1).await;
    let config = one_route(b[0].addr);
    let proxy = Proxy::start(&config).await;
    let c = client();
    for size in [0usize, 1, 65_536, 300_001] {
        let resp = c.get(proxy.url(&format!("/chunked/{size}")).parse().expect("url")).await.expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(text(resp).await.len(), size);
    }
}

/// A backend that answers the first request on each connection and closes the connection
/// when a second request arrives on it, as a server whose keep-alive timer just expired.
async fn closing_backend() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = std::sync::Arc::new(AtomicU64::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_upstream_is_replaced_transparently() {
    let (addr, connections) = closing_backend().await;
    let config = one_route(addr);
    let proxy = Proxy::start(&config).await;
    let c = client();
    for i in 0..20 {
        let resp = c.get(proxy.url("/").parse().expect("url")).await.expect("request");
        assert_eq!(resp.status(), 200, "request {i}: {:?}\n{}", resp.headers(), proxy.log());
        assert_eq!(text(resp).await, "ok");
    }
    assert!(connections.load(std::sync::atomic::Ordering::Relaxed) >= 20);
}

/// Reads one HTTP/1.1 response from `conn` (`buf` keeps bytes read past it): the status, the
/// head's lines lower-cased, and the body of its `content-length` (none for `HEAD`).
async fn read_response(
    conn: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> (u16, Vec<String>, String) {
    use tokio::io::AsyncReadExt;
    let read_more = async |conn: &mut tokio::net::TcpStream, buf: &mut Vec<u8>| {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "connection closed early; have {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(conn, buf).await;
    };
    let head = String::from_utf8(buf.drain(..end).collect()).expect("utf-8 head");
    let lines: Vec<String> = head.lines().map(str::to_ascii_lowercase).collect();
    let status = lines[0].split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let length: usize =
        lines.iter().find_map(|l| l.strip_prefix("content-length: ")).map_or(0, |n| n.parse().expect("length"));
    let length = if head_request { 0 } else { length };
    while buf.len() < length {
        read_more(conn, buf).await;
    }
    let body = String::from_utf8(buf.drain(..length).collect()).expect("utf-8 body");
    (status, lines, body)
}

#[tokio::test]
async fn one_connection_serves_pipelined_head_and_body_requests_in_order() {
    use tokio::io::AsyncWriteExt;
    let b = backends(1).await;
    let proxy = Proxy::start(&one_route(b[0].addr)).await;
    let mut conn = tokio::net::TcpStream::connect(proxy.listen).await.expect("connect");
    let mut buf = Vec::new();
    // Two requests in one write: answered in order.
    conn.write_all(b"GET /echo?n=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    for n in 1..=2 {
        let (status, _, body) = read_response(&mut conn, &mut buf, false).await;
        assert_eq!(status, 200);
        let seen: serde_json::Value = serde_json::from_str(&body).expect("echo");
        assert_eq!(seen["path"], format!("/echo?n={n}"));
    }
    // HEAD: the head with its length, and no body, then the connection goes on.
    conn.write_all(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("write");
    let (status, lines, body) = read_response(&mut conn, &mut buf, true).await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(lines.iter().any(|l| l.starts_with("content-length: ")), "{lines:?}");
    // A body, then a plain request again, on the same connection.
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello").await.expect("write");
    let (status, _, body) = read_response(&mut conn, &mut buf, false).await;
    assert_eq!(status, 200);
    assert_eq!(body, "5", "the backend read the 5 body bytes");
    conn.write_all(b"GET /echo?n=3 HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("write");
    let (status, _, body) = read_response(&mut conn, &mut buf, false).await;
    assert_eq!(status, 200);
    assert!(body.contains("/echo?n=3"), "{body}");
    // `Connection: close` is honoured: answered, then closed.
    conn.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.expect("write");
    let (status, lines, _) = read_response(&mut conn, &mut buf, false).await;
    assert_eq!(status, 200);
    assert!(lines.iter().any(|l| l == "connection: close"), "{lines:?}");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut rest));
    assert_eq!(read.await.expect("closed in time").expect("read"), 0);
    // A request the fast path serves also closes cleanly for a client that says so first.
    let mut fresh = tokio::net::TcpStream::connect(proxy.listen).await.expect("connect");
    fresh.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.expect("write");
    let (status, _, body) = read_response(&mut fresh, &mut Vec::new(), false).await;
    assert_eq!((status, body.as_str()), (200, "backend b0\n"));
}

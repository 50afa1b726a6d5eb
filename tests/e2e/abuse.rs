//! Abuse under load: while clients keep legitimate requests going, other connections sit
//! idle, send their heads a byte at a time (slowloris), or flood HTTP/2 frames (rapid reset,
//! CONTINUATION without END_HEADERS, SETTINGS, PING, a stream whose window never opens). The
//! proxy keeps answering the legitimate requests, closes the abusers within its timeouts, and
//! its memory stays bounded. The legitimate latency with and without abuse is a benchmark
//! (`benches/abuse.sh`), not asserted here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::harness::{Proxy, backends, client, closed_within, one_route};

/// How much the proxy's resident memory may grow while it is abused: a few KiB per abusive
/// connection, far below what buffering the floods would take.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;

/// Legitimate clients, each sending one request after another until stopped.
struct Legit {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<String>>>,
    ok: Arc<AtomicU64>,
}

impl Legit {
    fn start(proxy: &Proxy, clients: usize) -> Self {
        let (stop, ok) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let url: hyper::Uri = proxy.url("/").parse().expect("url");
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, url) = (stop.clone(), ok.clone(), url.clone());
                tokio::spawn(async move {
                    let client = client();
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match client.get(url.clone()).await {
                            Ok(resp) if resp.status() == 200 => {
                                use http_body_util::BodyExt;
                                match resp.into_body().collect().await {
                                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                                    Err(e) => {
                                        failures.push(format!("body: {e}"));
                                        continue;
                                    }
                                };
                            }
                            Ok(resp) => failures.push(format!("status {}", resp.status())),
                            Err(e) => failures.push(e.to_string()),
                        }
                    }
                    failures
                })
            })
            .collect();
        Self { stop, tasks, ok }
    }

    /// Stops the clients; asserts that none failed and that they were served throughout.
    async fn finish(self, at_least: u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for task in self.tasks {
            failures.extend(task.await.expect("legit client"));
        }
        let ok = self.ok.load(Ordering::Relaxed);
        assert!(
            failures.is_empty(),
            "{} legitimate requests failed (of {ok} ok): {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(ok >= at_least, "only {ok} legitimate requests served");
    }
}

/// Raises this process's open-file limit: the tests hold thousands of sockets.
fn enough_descriptors() {
    rlimit::increase_nofile_limit(u64::MAX).expect("raise the open-file limit");
}

#[tokio::test]
async fn idle_and_slowloris_connections_are_shed_while_legitimate_requests_flow() {
    enough_descriptors();
    let b = backends(1).await;
    let proxy = Proxy::start_with(&one_route(b[0].addr), "idle_timeout = \"4s\"\nheader_read_timeout = \"2s\"").await;
    let rss_before = proxy.rss_kib();
    let legit = Legit::start(&proxy, 4);

    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(proxy.listen).await.expect("idle connection"));
    }
    let mut slow = Vec::new();
    for _ in 0..500 {
        let mut conn = TcpStream::connect(proxy.listen).await.expect("slowloris connection");
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("slowloris start");
        slow.push(Some(conn));
    }
    // A header byte per connection every second, until the proxy closes each.
    let started = Instant::now();
    let mut slow_closed = 0;
    while slow_closed < slow.len() && started.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for conn in &mut slow {
            let closed = match conn {
                Some(stream) => stream.write_all(b"a").await.is_err() || peer_closed(stream),
                None => false,
            };
            if closed {
                *conn = None;
                slow_closed += 1;
            }
        }
    }
    assert_eq!(slow_closed, 500, "slowloris connections still open {:?} after they started", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(6), "slowloris cut after {:?}", started.elapsed());
    let rss_during = proxy.rss_kib();

    // The idle connections are closed at the idle timeout (4 s, counted from their connect).
    let deadline = Duration::from_secs(8);
    for conn in &mut idle {
        let waited = closed_within(conn, deadline.saturating_sub(started.elapsed())).await;
        assert!(waited.is_some(), "an idle connection still open {:?} after it connected", started.elapsed());
    }
    legit.finish(100).await;
    assert!(
        rss_during.saturating_sub(rss_before) < RSS_GROWTH_LIMIT_KIB,
        "RSS grew from {rss_before} KiB to {rss_during} KiB"
    );
}

/// Whether the peer has closed `stream` (a read would return end of file or an error).
fn peer_closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// HTTP/2 frames written by hand: the abuse needs frames no well-behaved client sends.
mod frame {
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    /// One frame: the 9-byte header, then `payload`.
    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("frame size").to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A GET of `path` as an HPACK block: static-table method and scheme, literal path and
    /// authority, nothing indexed.
    pub fn get(path: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
        for (index, value) in [(4u8, path), (1u8, "abuse")] {
            block.push(index); // literal without indexing, name from the static table
            block.push(u8::try_from(value.len()).expect("short value"));
            block.extend_from_slice(value.as_bytes());
        }
        block
    }

    /// The client preface and a SETTINGS frame with `settings` (identifier, value).
    pub fn preface(settings: &[(u16, u32)]) -> Vec<u8> {
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &payload));
        out
    }
}

/// Opens an HTTP/2 (prior knowledge) connection and writes the preface with `settings`.
async fn h2_abuser(proxy: &Proxy, settings: &[(u16, u32)]) -> TcpStream {
    let mut conn = TcpStream::connect(proxy.listen).await.expect("connect");
    conn.write_all(&frame::preface(settings)).await.expect("preface");
    conn
}

/// Writes `frames` again and again, `total` bytes in all, without reading anything; how many
/// bytes the proxy took before it closed the connection (all of them if it never did).
async fn flood(conn: &mut TcpStream, frames: &[u8], total: usize) -> usize {
    let mut written = 0;
    while written < total {
        match tokio::time::timeout(Duration::from_secs(5), conn.write_all(frames)).await {
            Ok(Ok(())) => written += frames.len(),
            Ok(Err(_)) => break,
            // The proxy stopped reading: the flood is held off by TCP flow control.
            Err(_) => break,
        }
    }
    written
}

#[tokio::test]
async fn http2_floods_are_cut_off_while_legitimate_requests_flow() {
    enough_descriptors();
    let b = backends(1).await;
    let proxy = Proxy::start_with(&one_route(b[0].addr), "idle_timeout = \"3s\"\nheader_read_timeout = \"2s\"").await;
    let rss_before = proxy.rss_kib();
    let legit = Legit::start(&proxy, 4);

    // Rapid reset: 10,000 streams, each opened and cancelled at once.
    let mut conn = h2_abuser(&proxy, &[]).await;
    let mut pairs = Vec::new();
    for stream in (1..20_000u32).step_by(2) {
        pairs.extend(frame::frame(frame::HEADERS, frame::END_HEADERS | frame::END_STREAM, stream, &frame::get("/")));
        pairs.extend(frame::frame(frame::RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.write_all(&pairs)).await;
    let closed = closed_within(&mut conn, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "a rapid-reset connection is closed");
    assert!(b[0].hits() < 10_000, "{} of the 10,000 reset streams reached the backend", b[0].hits());

    // CONTINUATION without END_HEADERS: a header block that never ends.
    let mut conn = h2_abuser(&proxy, &[]).await;
    let start = frame::frame(frame::HEADERS, frame::END_STREAM, 1, &frame::get("/"));
    conn.write_all(&start).await.expect("headers");
    let mut junk = Vec::new();
    for i in 0..256u32 {
        junk.extend_from_slice(&[0x00, 0x05]);
        junk.extend_from_slice(format!("x{i:04}").as_bytes());
        junk.extend_from_slice(&[0x7f, 0x20]);
        junk.extend_from_slice(&[b'v'; 32 + 127]);
    }
    let continuation = frame::frame(frame::CONTINUATION, 0, 1, &junk[..16 * 1024]);
    let taken = flood(&mut conn, &continuation, 64 << 20).await;
    assert!(taken < 64 << 20, "64 MiB of CONTINUATION frames were all taken");
    assert!(closed_within(&mut conn, Duration::from_secs(10)).await.is_some(), "a CONTINUATION flood is closed");

    // SETTINGS and PING floods from clients that never read the acknowledgements.
    for (kind, payload) in [(frame::SETTINGS, Vec::new()), (frame::PING, vec![0u8; 8])] {
        let mut conn = h2_abuser(&proxy, &[]).await;
        let batch: Vec<u8> = (0..1000).flat_map(|_| frame::frame(kind, 0, 0, &payload)).collect();
        let taken = flood(&mut conn, &batch, 64 << 20).await;
        assert!(taken < 64 << 20, "64 MiB of frames of type {kind} were all taken");
        assert!(closed_within(&mut conn, Duration::from_secs(10)).await.is_some(), "a flood of type {kind} is closed");
    }

    // A stream whose window never opens: 64 MiB asked for, nothing read.
    let mut conn = h2_abuser(&proxy, &[(0x4, 0)]).await; // SETTINGS_INITIAL_WINDOW_SIZE = 0
    let request =
        frame::frame(frame::HEADERS, frame::END_HEADERS | frame::END_STREAM, 1, &frame::get("/stream/67108864"));
    conn.write_all(&request).await.expect("request");
    let rss_stalled = {
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.rss_kib()
    };
    // Dropped after two idle periods: the first asks it to close, the stream cannot finish.
    let closed = closed_within(&mut conn, Duration::from_secs(12)).await;
    assert!(closed.is_some(), "a connection with a stalled stream is dropped");

    legit.finish(100).await;
    let rss_after = proxy.rss_kib().max(rss_stalled);
    assert!(
        rss_after.saturating_sub(rss_before) < RSS_GROWTH_LIMIT_KIB,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

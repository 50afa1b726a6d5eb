//! One health probe: a TCP connect, or an HTTP request in the protocol the service speaks
//! (HTTP/1.1 or HTTP/2, over TLS when the service uses it) whose answer is checked by status
//! or handed, with the first bytes of its body, to a health-check plugin.

use std::fmt;
use std::net::SocketAddr;

use bytes::BytesMut;
use http::Method;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::body::Body;
use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::tls::client::UpstreamTls;
use crate::upstream::http2;
use crate::upstream::stream::UpstreamStream;
use wasmesh_http1::client::{self, ResponseHead};
use wasmesh_http1::decode::Decoded;

/// The result of one probe.
#[derive(Debug)]
pub enum ProbeOutcome {
    /// The endpoint passed.
    Pass,
    /// The endpoint answered with a status outside the expected ranges.
    BadStatus(u16),
    /// The probe could not complete (refused, reset, timed out, malformed).
    Failed(String),
    /// The endpoint answered; a plugin is to judge the answer.
    Answered(Answer),
}

/// A probe response kept for a health-check plugin.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// The first `max_body_bytes` of the body.
    pub body: Vec<u8>,
}

impl ProbeOutcome {
    /// Whether the endpoint passed.
    pub fn passed(&self) -> bool {
        matches!(self, Self::Pass)
    }
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pass => write!(f, "pass"),
            Self::BadStatus(s) => write!(f, "status {s}"),
            Self::Failed(why) => write!(f, "{why}"),
            Self::Answered(a) => write!(f, "status {} with {} body bytes", a.status, a.body.len()),
        }
    }
}

/// How to reach an endpoint as its service's traffic does.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The endpoint.
    pub addr: SocketAddr,
    /// TLS to it; plain TCP when `None`.
    pub tls: Option<&'a UpstreamTls>,
    /// Whether it speaks HTTP/2 (h2c, or h2 after ALPN) rather than HTTP/1.1.
    pub http2: bool,
}

/// Probes `target` once, bounded by the check's timeout. With `capture`, an HTTP answer is
/// returned whole (status, headers, body prefix) instead of being checked by status.
pub async fn probe(cfg: &HealthCheckConfig, target: Target<'_>, capture: bool) -> ProbeOutcome {
    match tokio::time::timeout(cfg.timeout, run(cfg, target, capture)).await {
        Ok(outcome) => outcome,
        Err(_) => ProbeOutcome::Failed("timed out".into()),
    }
}

async fn run(cfg: &HealthCheckConfig, Target { addr, tls, http2 }: Target<'_>, capture: bool) -> ProbeOutcome {
    let tcp = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return ProbeOutcome::Failed(format!("connect: {e}")),
    };
    if cfg.kind == HealthCheckKind::Tcp {
        return ProbeOutcome::Pass;
    }
    let mut stream = match tls {
        None => UpstreamStream::Plain(tcp),
        Some(tls) => match tls.connect(addr, tcp).await {
            Ok(s) => UpstreamStream::Tls(Box::new(s)),
            Err(e) => return ProbeOutcome::Failed(format!("TLS handshake: {e}")),
        },
    };
    let host = cfg.host.clone().unwrap_or_else(|| addr.to_string());
    if http2 {
        return over_http2(cfg, &host, stream, tls.is_some(), capture).await;
    }
    let request = format!(
        "{} {} HTTP/1.1\r\nhost: {host}\r\nuser-agent: wasmesh-health-check\r\nconnection: close\r\n\r\n",
        cfg.method, cfg.path
    );
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return ProbeOutcome::Failed(format!("write: {e}"));
    }
    let mut buf = BytesMut::with_capacity(4096);
    let head = loop {
        match client::parse_response_head(&mut buf, false) {
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(e) => return ProbeOutcome::Failed(e.to_string()),
        }
        if let Err(why) = read_more(&mut stream, &mut buf).await {
            return ProbeOutcome::Failed(why);
        }
    };
    let status = head.status.as_u16();
    if capture {
        return match read_body_prefix(cfg, &head, &mut stream, buf).await {
            Ok(body) => ProbeOutcome::Answered(Answer { status, headers: head.headers, body }),
            Err(why) => ProbeOutcome::Failed(why),
        };
    }
    by_status(cfg, status)
}

fn by_status(cfg: &HealthCheckConfig, status: u16) -> ProbeOutcome {
    if cfg.expects(status) { ProbeOutcome::Pass } else { ProbeOutcome::BadStatus(status) }
}

/// The probe's request and answer over HTTP/2 on `stream` (`https`: over TLS).
async fn over_http2(
    cfg: &HealthCheckConfig,
    host: &str,
    stream: UpstreamStream,
    https: bool,
    capture: bool,
) -> ProbeOutcome {
    let (mut sender, connection) = match http2::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return ProbeOutcome::Failed(format!("HTTP/2 handshake: {e}")),
    };
    let scheme = if https { "https" } else { "http" };
    let request = http::Request::builder()
        .method(cfg.method.as_str())
        .uri(format!("{scheme}://{host}{}", cfg.path))
        .header(http::header::USER_AGENT, "wasmesh-health-check")
        .body(Body::Empty);
    let request = match request {
        Ok(r) => r,
        Err(e) => return ProbeOutcome::Failed(format!("request: {e}")),
    };
    let exchange = async {
        let response = sender.send_request(request).await.map_err(|e| format!("HTTP/2: {e}"))?;
        let status = response.status().as_u16();
        if !capture {
            return Ok(by_status(cfg, status));
        }
        let (head, mut body) = response.into_parts();
        let mut kept = Vec::new();
        while kept.len() < cfg.max_body_bytes {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => kept.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
                Some(Err(e)) => return Err(format!("read: {e}")),
            }
        }
        kept.truncate(cfg.max_body_bytes);
        Ok(ProbeOutcome::Answered(Answer { status, headers: head.headers, body: kept }))
    };
    // The connection's task sends the request; once it ends (the endpoint closed or went
    // away), the exchange ends too, with the answer or the reason.
    let mut exchange = std::pin::pin!(exchange);
    let outcome = tokio::select! {
        outcome = &mut exchange => outcome,
        _ = connection => exchange.await,
    };
    outcome.unwrap_or_else(ProbeOutcome::Failed)
}

async fn read_more(stream: &mut UpstreamStream, buf: &mut BytesMut) -> Result<(), String> {
    match stream.read_buf(buf).await {
        Ok(0) => Err("closed before responding".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Reads the decoded body up to `max_body_bytes`; what lies beyond is never read.
async fn read_body_prefix(
    cfg: &HealthCheckConfig,
    head: &ResponseHead,
    stream: &mut UpstreamStream,
    mut buf: BytesMut,
) -> Result<Vec<u8>, String> {
    let method = Method::from_bytes(cfg.method.as_bytes()).unwrap_or(Method::GET);
    let mut decoder = client::response_framing(&method, head).map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    while body.len() < cfg.max_body_bytes {
        match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
            Decoded::Data(piece) => body.extend_from_slice(&piece),
            Decoded::Done => break,
            Decoded::NeedMore => match stream.read_buf(&mut buf).await {
                Ok(0) if decoder.ends_at_eof() => break,
                Ok(0) => return Err("closed mid-body".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            },
        }
    }
    body.truncate(cfg.max_body_bytes);
    Ok(body)
}

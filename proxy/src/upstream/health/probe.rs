//! One health probe: a TCP connect, or an HTTP request whose status is checked.

use std::fmt;
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::upstream::http1::codec;

/// The result of one probe.
#[derive(Debug)]
pub enum ProbeOutcome {
    /// The endpoint passed.
    Pass,
    /// The endpoint answered with a status outside the expected ranges.
    BadStatus(u16),
    /// The probe could not complete (refused, reset, timed out, malformed).
    Failed(String),
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
        }
    }
}

/// Probes `addr` once, bounded by the check's timeout.
pub async fn probe(cfg: &HealthCheckConfig, addr: SocketAddr) -> ProbeOutcome {
    match tokio::time::timeout(cfg.timeout, run(cfg, addr)).await {
        Ok(outcome) => outcome,
        Err(_) => ProbeOutcome::Failed("timed out".into()),
    }
}

async fn run(cfg: &HealthCheckConfig, addr: SocketAddr) -> ProbeOutcome {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return ProbeOutcome::Failed(format!("connect: {e}")),
    };
    if cfg.kind == HealthCheckKind::Tcp {
        return ProbeOutcome::Pass;
    }
    let host = cfg.host.clone().unwrap_or_else(|| addr.to_string());
    let request = format!(
        "{} {} HTTP/1.1\r\nhost: {host}\r\nuser-agent: wasmesh-health-check\r\nconnection: close\r\n\r\n",
        cfg.method, cfg.path
    );
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return ProbeOutcome::Failed(format!("write: {e}"));
    }
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match codec::parse_head(&mut buf) {
            Ok(Some(head)) => {
                let status = head.status.as_u16();
                let ok = cfg.expected_statuses.iter().any(|[lo, hi]| (*lo..=*hi).contains(&status));
                return if ok { ProbeOutcome::Pass } else { ProbeOutcome::BadStatus(status) };
            }
            Ok(None) => {}
            Err(e) => return ProbeOutcome::Failed(e.to_string()),
        }
        match tokio::io::AsyncReadExt::read_buf(&mut stream, &mut buf).await {
            Ok(0) => return ProbeOutcome::Failed("closed before responding".into()),
            Ok(_) => {}
            Err(e) => return ProbeOutcome::Failed(format!("read: {e}")),
        }
    }
}

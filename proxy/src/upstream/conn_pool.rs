//! Idle keep-alive connections to one endpoint, shared lock-free by every worker, and its
//! shared HTTP/2 connection ([`Http2Conn`]).
//!
//! A lock-free bounded queue holds the idle connections: checking one out or back in is one
//! atomic operation, so the request path never waits on another worker. A connection that the
//! endpoint closed while it sat idle is noticed at checkout without a system call (the I/O
//! driver has already marked it readable) and dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;

use super::breaker::ConnSlot;
use super::connection::{Conn, Http2Conn, OpenGuard};
use super::stream::UpstreamStream;
use crate::tls::client::UpstreamTls;

/// Settings of an endpoint's connections; a reload keeps the pool while these are unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnSettings {
    /// TLS to the endpoint; plain TCP when `None`.
    pub tls: Option<Arc<UpstreamTls>>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    /// Idle connections kept, at most.
    pub max_idle: usize,
}

/// How long a pooled connection sits unused before it gives its buffers back: long enough
/// that a busy pool keeps them warm.
const QUIET: Duration = Duration::from_secs(1);

/// The connections of one endpoint and the handles to count them.
#[derive(Debug)]
pub struct ConnPool {
    addr: SocketAddr,
    settings: ConnSettings,
    /// Boxed: a connection crosses the queue and several async layers per request.
    idle: ArrayQueue<(Box<Conn>, Instant)>,
    open: Gauge,
    opened: Counter,
    /// The endpoint's HTTP/2 connection, for a service that speaks HTTP/2.
    pub(super) h2: Http2Conn,
}

/// Connecting to an endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect did not finish within the connect timeout.
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    /// The TCP connect failed (refused, unreachable).
    #[error("connect to {0} failed: {1}")]
    Io(SocketAddr, #[source] std::io::Error),
    /// The TLS handshake failed (certificate not trusted, wrong name, protocol mismatch).
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(SocketAddr, #[source] std::io::Error),
}

impl ConnPool {
    /// An empty pool for `addr`, counting open and opened connections into the given metric
    /// handles.
    pub fn new(addr: SocketAddr, settings: ConnSettings, open: Gauge, opened: Counter) -> Self {
        let idle = ArrayQueue::new(settings.max_idle.max(1));
        Self { addr, settings, idle, open, opened, h2: Http2Conn::default() }
    }

    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The settings this pool was built with.
    pub fn settings(&self) -> &ConnSettings {
        &self.settings
    }

    /// A live idle connection, if one is pooled; `now` is the clock as the caller read it.
    pub fn checkout(&self, now: Instant) -> Option<Box<Conn>> {
        while let Some((mut conn, since)) = self.idle.pop() {
            if now.duration_since(since) < self.settings.idle_timeout && conn.stream_mut().still_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Opens a new HTTP/1.1 connection in the place `slot` reserved.
    pub async fn connect(&self, slot: ConnSlot) -> Result<Box<Conn>, ConnectError> {
        let (stream, open) = self.open_stream(slot).await?;
        Ok(Box::new(Conn::new(stream, open)))
    }

    /// Opens a new stream in the place `slot` reserved, with the guard that counts it open.
    pub async fn open_stream(&self, slot: ConnSlot) -> Result<(UpstreamStream, OpenGuard), ConnectError> {
        let stream = connect(self.addr, &self.settings).await?;
        self.opened.inc();
        Ok((stream, OpenGuard::new(self.open.clone(), slot)))
    }

    /// Returns a connection whose last exchange completed cleanly at `now`; when the pool is
    /// full the connection is closed instead.
    pub fn checkin(&self, conn: Box<Conn>, now: Instant) {
        let _ = self.idle.push((conn, now));
    }

    /// Closes idle connections that expired or that the endpoint closed, and has those idle
    /// for [`QUIET`] give their buffers back (they come again with the next exchange).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.h2.sweep(crate::clock::millis_at(now), self.settings.idle_timeout);
        for _ in 0..self.idle.len() {
            let Some((mut conn, since)) = self.idle.pop() else { break };
            let idle = now.duration_since(since);
            if idle < self.settings.idle_timeout && conn.stream_mut().still_open() {
                if idle >= QUIET {
                    conn.release_buffers();
                }
                let _ = self.idle.push((conn, since));
            }
        }
    }

    /// Idle connections now.
    pub fn idle_len(&self) -> usize {
        self.idle.len()
    }
}

/// Connects to `addr` as `settings` say: TCP, then the TLS handshake when configured, the
/// two together within the connect timeout.
pub async fn connect(addr: SocketAddr, settings: &ConnSettings) -> Result<UpstreamStream, ConnectError> {
    let connecting = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| ConnectError::Io(addr, e))?;
        let _ = tcp.set_nodelay(true);
        match &settings.tls {
            None => Ok(UpstreamStream::Plain(tcp)),
            Some(tls) => match tls.connect(addr, tcp).await {
                Ok(stream) => Ok(UpstreamStream::Tls(Box::new(stream))),
                Err(e) => Err(ConnectError::Tls(addr, e)),
            },
        }
    };
    tokio::time::timeout(settings.connect_timeout, connecting).await.unwrap_or(Err(ConnectError::Timeout(addr)))
}

/// Sweeps `pools` every `period` until the returned task is dropped by runtime shutdown.
pub fn spawn_sweeper(pools: impl Fn() -> Vec<Arc<ConnPool>> + Send + 'static, period: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for pool in pools() {
                pool.sweep();
            }
        }
    });
}

//! Upstream HTTP/2 (h2c, or h2 over TLS): hyper-util's pooled client, which multiplexes
//! requests over one connection per endpoint, over a connector that runs the TLS handshake
//! when configured and counts connections for the metrics.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use std::net::SocketAddr;

use crate::body::Body;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::EndpointLabels;
use crate::upstream::conn_pool::{self, ConnSettings};
use crate::upstream::stream::UpstreamStream;

/// An HTTP/2 client for one service's endpoints.
#[derive(Debug, Clone)]
pub struct Http2Client {
    client: Client<CountingConnector, Body>,
}

impl Http2Client {
    /// Creates a client with no connections yet.
    pub fn new(settings: &ConnSettings, metrics: &Metrics) -> Self {
        let connector = CountingConnector {
            settings: settings.clone(),
            open: metrics.upstream_connections.clone(),
            opened: metrics.upstream_connections_opened.clone(),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(settings.idle_timeout)
            .pool_max_idle_per_host(settings.max_idle)
            .http2_only(true)
            .build(connector);
        Self { client }
    }

    /// Sends a request whose URI is absolute (`http://endpoint/path`).
    pub fn send(&self, req: http::Request<Body>) -> hyper_util::client::legacy::ResponseFuture {
        self.client.request(req)
    }
}

type Family<M> = prometheus_client::metrics::family::Family<EndpointLabels, M>;

/// Connects as the service's settings say (TCP or TLS) and counts open and opened
/// connections per endpoint.
#[derive(Debug, Clone)]
struct CountingConnector {
    settings: ConnSettings,
    open: Family<Gauge>,
    opened: Family<prometheus_client::metrics::counter::Counter>,
}

impl tower_service::Service<Uri> for CountingConnector {
    type Response = CountedConnection;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let endpoint = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let (open, opened, settings) = (self.open.clone(), self.opened.clone(), self.settings.clone());
        Box::pin(async move {
            let addr: SocketAddr = endpoint
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("`{endpoint}` is not an address")))?;
            let stream = conn_pool::connect(addr, &settings).await.map_err(io::Error::other)?;
            if let UpstreamStream::Plain(tcp) = &stream {
                let _ = socket2::SockRef::from(tcp)
                    .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)));
            }
            let labels = EndpointLabels { endpoint };
            opened.get_or_create(&labels).inc();
            let gauge = open.get_or_create_owned(&labels);
            gauge.inc();
            Ok(CountedConnection { io: TokioIo::new(stream), gauge })
        })
    }
}

/// A connection that decrements its endpoint's open-connection gauge when closed.
#[derive(Debug)]
struct CountedConnection {
    io: TokioIo<UpstreamStream>,
    gauge: Gauge,
}

impl Drop for CountedConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Connection for CountedConnection {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for CountedConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for CountedConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

//! Downstream listeners: accept, limit, serve HTTP/1.1 and h2c, time out idle and slow
//! clients, and drain on shutdown. The proxy and the admin API share this machinery.

mod activity;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use activity::{ActivityIo, Expired, Tracked, watchdog};

use crate::body::BoxError;

/// Per-connection limits of a listener.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Time allowed for an HTTP/1 request head, counted from when the connection is ready for it.
    pub header_read_timeout: Duration,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// Connections beyond this many are closed at accept.
    pub max_connections: usize,
}

/// Metrics a listener keeps.
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics {
    /// Open connections.
    pub open: Gauge,
    /// Connections refused because the listener was full.
    pub rejected: Counter,
}

/// Errors binding a listener.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` with `SO_REUSEADDR` and a deep accept backlog.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let err = |source| BindError { addr, source };
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(4096).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// Accepts connections on `tcp` until `shutdown` fires, serving each with the service
/// `make_service` returns for the client address. On shutdown every connection is asked to
/// finish its in-flight requests and close; the tasks are tracked by `tracker`. The socket is
/// shared so that a reload can restart the loop with new limits without closing it.
pub async fn serve<F, S, B>(
    tcp: Arc<TcpListener>,
    limits: ConnLimits,
    metrics: ListenerMetrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    make_service: F,
) where
    F: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Header-read and idle timeouts are the watchdog's (see `activity`); writes are flattened
    // into one buffer, which measured faster than vectored writes for small responses.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None).keep_alive(true).writev(false);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(20)));
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = tcp.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.rejected.inc();
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (io, activity) = ActivityIo::new(stream);
        let service = Tracked::new(make_service(peer), activity.clone());
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let open = metrics.open.clone();
        let (idle_timeout, head_timeout) = (limits.idle_timeout, limits.header_read_timeout);
        tracker.spawn(async move {
            let _permit = permit;
            open.inc();
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(conn);
            let expiry = watchdog(activity, idle_timeout, head_timeout);
            tokio::pin!(expiry);
            let mut closing = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = shutdown.cancelled(), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    expired = &mut expiry, if !closing => match expired {
                        Expired::Idle => {
                            tracing::debug!(%peer, "closing idle connection");
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        Expired::HeadTimeout => {
                            tracing::debug!(%peer, "request head not received in time: closing");
                            break;
                        }
                    },
                }
            }
            open.dec();
        });
    }
}

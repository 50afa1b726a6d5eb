//! Downstream listeners: accept, limit, terminate TLS, serve HTTP/1.1 and HTTP/2, time out
//! idle and slow clients, and drain on shutdown. The proxy and the admin API share this
//! machinery.

mod activity;
pub(crate) mod http1;
mod on_wake;
mod rewind;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use activity::{ActivityIo, Expired, Tracked, watchdog};
use http1::Ended;
use on_wake::on_wake;
use rewind::Rewind;

use crate::body::BoxError;
use crate::message::{ProxyRequest, ProxyResponse};
use crate::wire::WithRawHeaders;

/// Answers a listener's requests. Any `Fn(Box<ProxyRequest>) -> impl Future<Output =
/// Box<ProxyResponse<_>>>` is one; messages travel boxed (see [`crate::message`]) and the
/// answer cannot fail: errors are responses.
pub trait Handler: Send + Sync + 'static {
    /// The response body.
    type Body: http_body::Body<Data = Bytes, Error = BoxError> + WithRawHeaders + Send + Unpin + 'static;
    /// The response, when ready.
    type Future: Future<Output = Box<ProxyResponse<Self::Body>>> + Send + 'static;
    /// Answers `req`.
    fn call(&self, req: Box<ProxyRequest>) -> Self::Future;
}

impl<F, Fut, B> Handler for F
where
    F: Fn(Box<ProxyRequest>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Box<ProxyResponse<B>>> + Send + 'static,
    B: http_body::Body<Data = Bytes, Error = BoxError> + WithRawHeaders + Send + Unpin + 'static,
{
    type Body = B;
    type Future = Fut;

    fn call(&self, req: Box<ProxyRequest>) -> Fut {
        self(req)
    }
}

/// Spawns the tasks hyper asks for (one per HTTP/2 stream) boxed, for the reason the accept
/// loop boxes each connection's: tokio copies an unboxed task future whole several times.
#[derive(Debug, Clone, Copy)]
struct BoxingExecutor;

impl<F> hyper::rt::Executor<F> for BoxingExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Box::pin(fut));
    }
}

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
    /// TLS handshakes that failed or timed out.
    pub tls_failures: Counter,
}

/// Where a TLS listener gets its certificates: called at each accepted connection, so a
/// renewed certificate applies from the next handshake while open connections continue.
pub type TlsSource = Arc<dyn Fn() -> Option<Arc<rustls::ServerConfig>> + Send + Sync>;

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

/// Accepts connections on `tcp` until `shutdown` fires, serving each with the handler
/// `make_handler` returns for the client address (plain HTTP/1.1 requests on the fast path of
/// [`http1`], everything else with hyper); with `tls`, after a TLS handshake that must
/// finish within the header-read timeout. On shutdown every connection is asked to finish
/// its in-flight requests and close; the tasks are tracked by `tracker`. The socket is
/// shared so that a reload can restart the loop with new limits without closing it.
#[allow(clippy::too_many_arguments)]
pub async fn serve<F, H>(
    tcp: Arc<TcpListener>,
    limits: ConnLimits,
    metrics: ListenerMetrics,
    tls: Option<TlsSource>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    make_handler: F,
) where
    F: Fn(SocketAddr) -> H,
    H: Handler,
{
    let mut builder = auto::Builder::new(BoxingExecutor);
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
        let handler = make_handler(peer);
        let tls_config = match &tls {
            None => None,
            Some(source) => match source() {
                Some(config) => Some(config),
                // The snapshot lost this listener's certificates: a reload is replacing it.
                None => continue,
            },
        };
        let conn = Conn {
            builder: builder.clone(),
            shutdown: shutdown.clone(),
            activity: activity.clone(),
            peer,
            idle_timeout: limits.idle_timeout,
            head_timeout: limits.header_read_timeout,
        };
        let (open, tls_failures) = (metrics.open.clone(), metrics.tls_failures.clone());
        // Boxed: tokio moves a task's future whole into its cell and writes over it when the
        // task ends, nine copies of a ~10 KB connection future per connection unboxed.
        tracker.spawn(Box::pin(async move {
            let _permit = permit;
            open.inc();
            match tls_config {
                None => conn.serve(io, handler).await,
                Some(config) => {
                    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(io);
                    match tokio::time::timeout(conn.head_timeout, handshake).await {
                        Ok(Ok(stream)) => conn.serve(stream, handler).await,
                        Ok(Err(e)) => {
                            tls_failures.inc();
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            tls_failures.inc();
                            tracing::debug!(%peer, "TLS handshake not finished in time: closing");
                        }
                    }
                }
            }
            open.dec();
        }));
    }
}

/// One accepted connection's serving settings.
struct Conn {
    builder: Arc<auto::Builder<BoxingExecutor>>,
    shutdown: CancellationToken,
    activity: Arc<activity::ConnActivity>,
    peer: SocketAddr,
    idle_timeout: Duration,
    head_timeout: Duration,
}

impl Conn {
    /// Serves HTTP on `io` until the client closes, the watchdog expires it or shutdown
    /// drains it: on the fast path while requests suit it, then with hyper.
    async fn serve<I, H>(self, io: I, handler: H)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        H: Handler,
    {
        let peer = self.peer;
        let watch = || Box::pin(watchdog(self.activity.clone(), self.idle_timeout, self.head_timeout));
        // Polled beside the connection's work on every wake-up of its task, but only when they
        // woke it themselves (see `on_wake`).
        let mut expiry = on_wake(watch());
        let mut shutdown = on_wake(Box::pin(self.shutdown.clone().cancelled_owned()));
        // Set when the connection should end after the response in progress.
        let closing = AtomicBool::new(false);
        let handoff = {
            let fast = http1::serve(io, &handler, &self.activity, &closing);
            tokio::pin!(fast);
            loop {
                let wind_down = tokio::select! {
                    ended = fast.as_mut() => match ended {
                        Ok(Ended::Handoff(io, unread)) => break Some(Rewind::new(io, unread)),
                        Ok(Ended::Closed) => break None,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                            break None;
                        }
                    },
                    () = &mut shutdown, if !closing.load(Ordering::Relaxed) => true,
                    expired = &mut expiry => match expired {
                        Expired::Idle => {
                            tracing::debug!(%peer, "closing idle connection");
                            expiry.set(watch());
                            true
                        }
                        Expired::WriteStalled => {
                            tracing::debug!(%peer, "client stopped reading its response: closing");
                            break None;
                        }
                        Expired::HeadTimeout => {
                            tracing::debug!(%peer, "request head not received in time: closing");
                            break None;
                        }
                    },
                };
                if wind_down {
                    // Between requests the loop waits for a head: drop it, closing the
                    // connection; otherwise it ends after the response in progress.
                    if self.activity.is_idle() {
                        break None;
                    }
                    closing.store(true, Ordering::Relaxed);
                }
            }
        };
        let Some(io) = handoff else { return };
        let service = Tracked::new(handler, self.activity.clone());
        let conn = self.builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut closing = closing.into_inner();
        if closing {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                () = &mut shutdown, if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                expired = &mut expiry => match expired {
                    Expired::Idle => {
                        if !closing {
                            tracing::debug!(%peer, "closing idle connection");
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        expiry.set(watch());
                    }
                    Expired::WriteStalled => {
                        tracing::debug!(%peer, "client stopped reading its response: closing");
                        break;
                    }
                    Expired::HeadTimeout => {
                        tracing::debug!(%peer, "request head not received in time: closing");
                        break;
                    }
                },
            }
        }
    }
}

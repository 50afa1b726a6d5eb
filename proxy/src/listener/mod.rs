//! Downstream listeners: accept, limit, terminate TLS, serve HTTP/1.1 and HTTP/2, time out
//! idle and slow clients, and drain on shutdown. The proxy and the admin API share this
//! machinery.

mod activity;
pub(crate) mod http1;
mod on_wake;
mod park;
mod rewind;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use activity::{ActivityIo, Expired, Tracked, watchdog};
use http1::Ended;
use on_wake::on_wake;
use park::{Lot, Waiting};
use rewind::Rewind;

use crate::body::BoxError;
use crate::message::{ProxyRequest, ProxyResponse};
use wasmesh_http1::WithRawHeaders;

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
    /// Bounds on a request head.
    pub head: HeadLimits,
}

/// Bounds on a request head; past either, the request gets 431 and reaches no handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Bytes: the request line and header lines over HTTP/1.1, the decoded header list
    /// (`SETTINGS_MAX_HEADER_LIST_SIZE`) over HTTP/2.
    pub max_bytes: usize,
    /// Header lines (HTTP/1.1; HTTP/2 header counts are the handler's to check).
    pub max_headers: usize,
}

impl HeadLimits {
    /// The defaults: 64 KiB and 100 headers (Envoy allows 60 KiB and 100, nginx 32 KiB,
    /// HAProxy 16 KiB).
    pub const DEFAULT: Self = Self { max_bytes: wasmesh_http1::MAX_HEAD, max_headers: wasmesh_http1::MAX_HEADERS };
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
    F: Fn(SocketAddr) -> H + Send + Sync + 'static,
    H: Handler,
{
    let mut builder = auto::Builder::new(BoxingExecutor);
    // Header-read and idle timeouts are the watchdog's (see `activity`); writes are flattened
    // into one buffer, which measured faster than vectored writes for small responses.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true)
        .writev(false)
        // hyper refuses a head that does not fit its read buffer with 431; it reads in 8 KiB steps.
        .max_buf_size(limits.head.max_bytes.max(8 * 1024))
        .max_headers(limits.head.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        // No keep-alive PINGs: their answers would count as activity and keep an idle
        // connection open for good; the idle timeout already ends a dead peer's connection.
        .keep_alive_interval(None)
        .max_header_list_size(u32::try_from(limits.head.max_bytes).unwrap_or(u32::MAX));
    let admissions = Arc::new(Admissions { slots: Semaphore::new(limits.max_connections), open: metrics.open.clone() });
    let (lot, keeper) = Lot::new();
    let listener = Arc::new(Listener {
        builder: Arc::new(builder),
        limits,
        metrics,
        tls,
        shutdown,
        tracker: tracker.clone(),
        lot,
        make_handler,
    });
    let resumer = listener.clone();
    tracker.spawn(keeper.run(listener.shutdown.clone(), move |stream, peer, admission| {
        resumer.resume(stream, peer, admission);
    }));
    loop {
        let (stream, peer) = tokio::select! {
            () = listener.shutdown.cancelled() => break,
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
        let Some(admission) = Admission::new(&admissions) else {
            listener.metrics.rejected.inc();
            continue;
        };
        // Until the client sends its first bytes, a connection waits in the lot, without a
        // task; one whose request is already here is served at once.
        match park::peek(&stream, std::task::Waker::noop()) {
            std::task::Poll::Ready(true) => listener.resume(stream, peer, admission),
            std::task::Poll::Ready(false) => {}
            std::task::Poll::Pending => {
                let wait = listener.limits.idle_timeout;
                listener.lot.park(Waiting { stream, admission, wait });
            }
        }
    }
}

/// A listener's count of open connections, against `max_connections`.
#[derive(Debug)]
struct Admissions {
    slots: Semaphore,
    open: Gauge,
}

/// A connection's place among its listener's: counted as open, and holding one of the
/// `max_connections` permits, until dropped. One pointer, since every parked connection
/// holds one.
#[derive(Debug)]
pub struct Admission(Arc<Admissions>);

impl Admission {
    /// A place, unless the listener is full.
    fn new(admissions: &Arc<Admissions>) -> Option<Self> {
        admissions.slots.try_acquire().ok()?.forget();
        admissions.open.inc();
        Some(Self(admissions.clone()))
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.open.dec();
        self.0.slots.add_permits(1);
    }
}

/// A listener's serving settings, shared by its connections.
struct Listener<F> {
    builder: Arc<auto::Builder<BoxingExecutor>>,
    limits: ConnLimits,
    metrics: ListenerMetrics,
    tls: Option<TlsSource>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Where its quiet connections wait, without a task each (see [`park`]).
    lot: Lot,
    make_handler: F,
}

impl<F, H> Listener<F>
where
    F: Fn(SocketAddr) -> H + Send + Sync + 'static,
    H: Handler,
{
    /// Serves a connection whose bytes have arrived on a task of its own, and parks it again
    /// when it goes quiet.
    fn resume(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, admission: Admission) {
        let listener = self.clone();
        // Boxed: tokio copies an unboxed task future whole several times.
        self.tracker.spawn(Box::pin(async move {
            if let Some((stream, quiet)) = listener.serve_connection(stream, peer).await {
                let wait = listener.limits.idle_timeout.saturating_sub(quiet);
                listener.lot.park(Waiting { stream, admission, wait });
            }
        }));
    }

    /// Serves a connection whose first bytes have arrived: the TLS handshake if the listener
    /// has TLS, then HTTP. A plain connection that goes quiet between requests comes back,
    /// with how long it has been quiet, to wait for its next request parked (TLS sessions
    /// hold their state throughout).
    async fn serve_connection(&self, stream: TcpStream, peer: SocketAddr) -> Option<(TcpStream, Duration)> {
        let tls_config = match &self.tls {
            None => None,
            Some(source) => match source() {
                Some(config) => Some(config),
                // The snapshot lost this listener's certificates: a reload is replacing it.
                None => return None,
            },
        };
        let _ = stream.set_nodelay(true);
        let (io, activity) = ActivityIo::new(stream);
        let handler = (self.make_handler)(peer);
        let conn = Conn {
            builder: self.builder.clone(),
            shutdown: self.shutdown.clone(),
            activity,
            peer,
            idle_timeout: self.limits.idle_timeout,
            head_timeout: self.limits.header_read_timeout,
            head_limits: self.limits.head,
            park: tls_config.is_none(),
        };
        match tls_config {
            None => conn.serve(io, handler).await.map(|(io, quiet)| (io.into_inner(), quiet)),
            Some(config) => {
                let handshake = tokio_rustls::TlsAcceptor::from(config).accept(io);
                match tokio::time::timeout(conn.head_timeout, handshake).await {
                    Ok(Ok(stream)) => {
                        conn.serve(stream, handler).await;
                    }
                    Ok(Err(e)) => {
                        self.metrics.tls_failures.inc();
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        self.metrics.tls_failures.inc();
                        tracing::debug!(%peer, "TLS handshake not finished in time: closing");
                    }
                }
                None
            }
        }
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
    head_limits: HeadLimits,
    /// Whether the connection may be parked while quiet (see [`Expired::Quiet`]).
    park: bool,
}

/// What the fast path's connection does next.
enum Next {
    /// Goes on with hyper, which gets these bytes first.
    Handoff(BytesMut),
    /// Waits for its next request parked: it has been quiet this long.
    Park(Duration),
    /// Closes.
    Close,
}

impl Conn {
    /// Serves HTTP on `io` until the client closes, the watchdog expires it or shutdown
    /// drains it: on the fast path while requests suit it, then with hyper. Gives `io` back,
    /// with how long it has been quiet, when the connection can be parked.
    async fn serve<I, H>(self, mut io: I, handler: H) -> Option<(I, Duration)>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        H: Handler,
    {
        let peer = self.peer;
        let watch = || Box::pin(watchdog(self.activity.clone(), self.idle_timeout, self.head_timeout, self.park));
        // Polled beside the connection's work on every wake-up of its task, but only when they
        // woke it themselves (see `on_wake`).
        let mut expiry = on_wake(watch());
        let mut shutdown = on_wake(Box::pin(self.shutdown.clone().cancelled_owned()));
        // Set when the connection should end after the response in progress.
        let closing = AtomicBool::new(false);
        let next = {
            let fast = http1::serve(&mut io, &handler, &self.activity, &closing, self.head_limits);
            tokio::pin!(fast);
            loop {
                let wind_down = tokio::select! {
                    ended = fast.as_mut() => match ended {
                        Ok(Ended::Handoff(unread)) => break Next::Handoff(unread),
                        Ok(Ended::Closed) => break Next::Close,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                            break Next::Close;
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
                            break Next::Close;
                        }
                        Expired::HeadTimeout => {
                            tracing::debug!(%peer, "request head not received in time: closing");
                            break Next::Close;
                        }
                        Expired::Quiet(quiet) => break Next::Park(quiet),
                    },
                };
                if wind_down {
                    // Between requests the loop waits for a head: drop it, closing the
                    // connection; otherwise it ends after the response in progress.
                    if self.activity.is_idle() {
                        break Next::Close;
                    }
                    closing.store(true, Ordering::Relaxed);
                }
            }
        };
        let unread = match next {
            Next::Handoff(unread) => unread,
            Next::Park(quiet) => return Some((io, quiet)),
            Next::Close => return None,
        };
        let io = Rewind::new(io, unread);
        let service = Tracked::new(handler, self.activity.clone());
        // Boxed, so that a connection on the fast path does not carry room for hyper's state.
        let mut conn = Box::pin(self.builder.serve_connection_with_upgrades(TokioIo::new(io), service));
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
                        // A second idle period while closing: what is left cannot finish (an
                        // HTTP/2 stream whose client never opens its window), so drop it.
                        if closing {
                            tracing::debug!(%peer, "idle connection did not finish closing: dropping it");
                            break;
                        }
                        tracing::debug!(%peer, "closing idle connection");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
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
                    // Only the fast path waits in a way that parks; hyper keeps its connection.
                    Expired::Quiet(_) => expiry.set(watch()),
                },
            }
        }
        None
    }
}

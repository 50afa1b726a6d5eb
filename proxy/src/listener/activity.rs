//! Per-connection timing without a timer per request: the I/O wrapper and the service
//! wrapper record what happens in a few atomics, and one watchdog per connection, waking a
//! few times per timeout period, decides when a connection has been idle or has taken too
//! long to send a request head (slowloris).
//!
//! hyper's own header-read timer allocates and arms a timer for every request; this costs
//! about 8% of throughput on the proxy benchmark, so the listener keeps its own.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::Service;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::Handler;
use crate::body::Body;
use crate::message::{ProxyRequest, ProxyResponse};
use wasmesh_http1::{WithRawHeaders, materialize};

/// What one connection has been doing.
#[derive(Debug, Default)]
pub struct ConnActivity {
    /// Bytes moved either way since the watchdog last looked.
    moved: AtomicBool,
    /// Bytes arrived while no request was in flight: a request head is being received.
    head_pending: AtomicBool,
    /// Requests whose response has not finished.
    in_flight: AtomicU32,
    /// Requests started so far.
    started: AtomicU64,
    /// HTTP/2: heads arrive interleaved on streams, so head timing does not apply.
    multiplexed: AtomicBool,
    /// A write is waiting for the client to read: the socket's send buffer is full.
    write_blocked: AtomicBool,
    /// The HTTP/1.1 fast path waits for a request's first bytes with nothing buffered:
    /// dropping it then loses nothing.
    awaiting_head: AtomicBool,
}

impl ConnActivity {
    fn on_read(&self) {
        self.moved.store(true, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 && !self.multiplexed.load(Ordering::Relaxed) {
            self.head_pending.store(true, Ordering::Relaxed);
        }
    }

    fn on_write(&self) {
        self.moved.store(true, Ordering::Relaxed);
        self.write_blocked.store(false, Ordering::Relaxed);
    }

    /// Notes the outcome of a write: progress, or a wait for the client to read.
    fn on_write_polled(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => self.on_write(),
            Poll::Pending => self.write_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(_) => {}
        }
    }

    /// Notes whether the fast path waits for a request's first bytes with nothing buffered.
    pub fn set_awaiting_head(&self, awaiting: bool) {
        self.awaiting_head.store(awaiting, Ordering::Relaxed);
    }

    /// Whether no request is in flight: an HTTP/1 connection is between requests.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Counts a request as in flight until the guard drops.
    pub fn begin(self: &Arc<Self>, version: Version) -> RequestGuard {
        if version == Version::HTTP_2 {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        self.head_pending.store(false, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// [`begin`](Self::begin) for the HTTP/1.1 fast path, whose requests run one at a time on
    /// the connection's own task, where the watchdog runs too: with one writer the counts need
    /// no read-modify-write, and the guard borrows instead of holding a reference count (five
    /// locked instructions per request fewer, ~9 ns each here).
    pub fn begin_on_own_task(&self) -> OwnTaskRequestGuard<'_> {
        self.in_flight.store(self.in_flight.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        self.started.store(self.started.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        self.head_pending.store(false, Ordering::Relaxed);
        OwnTaskRequestGuard(self)
    }
}

/// Keeps a fast-path request counted as in flight until dropped (see
/// [`ConnActivity::begin_on_own_task`]).
#[derive(Debug)]
pub struct OwnTaskRequestGuard<'a>(&'a ConnActivity);

impl Drop for OwnTaskRequestGuard<'_> {
    fn drop(&mut self) {
        let in_flight = &self.0.in_flight;
        in_flight.store(in_flight.load(Ordering::Relaxed).saturating_sub(1), Ordering::Relaxed);
    }
}

/// Why the watchdog ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No bytes either way for the idle timeout.
    Idle,
    /// A response has waited the idle timeout for a client that does not read it. Nothing
    /// can finish it, so the connection is dropped at once (Envoy's stream idle timeout).
    WriteStalled,
    /// A request head took longer than the header-read timeout.
    HeadTimeout,
    /// Nothing moved for a tick while the fast path waited for a request with nothing
    /// buffered: the connection can be parked, holding only its socket, until bytes come. It
    /// has been quiet for the duration given.
    Quiet(Duration),
}

/// The longest the watchdog sleeps.
const MAX_TICK: Duration = Duration::from_secs(1);

/// The longest the watchdog of a connection that can be parked sleeps: how soon a quiet one is
/// parked (see [`Expired::Quiet`]). Short, so that a burst of clients that each send a request
/// and then wait does not hold a burst's worth of serving state; long enough that a client
/// sending its requests back to back is never parked between them.
const PARK_TICK: Duration = Duration::from_millis(250);

/// Resolves when the connection has been idle for `idle` (its write stalled, or not), or has
/// been receiving one request head for `head` (each to within a quarter of the smaller period,
/// or a second, or a quarter second with `park`), or, with `park`, when it can be parked (see [`Expired::Quiet`]).
/// After [`Expired::Idle`] with a request in flight, call again: the response may stall next.
pub async fn watchdog(activity: Arc<ConnActivity>, idle: Duration, head: Duration, park: bool) -> Expired {
    let tick = (idle.min(head) / 4).min(if park { PARK_TICK } else { MAX_TICK });
    let (mut quiet, mut pending) = (Duration::ZERO, Duration::ZERO);
    let mut last_started = activity.started.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(tick).await;
        if activity.moved.swap(false, Ordering::Relaxed) {
            quiet = Duration::ZERO;
        } else {
            quiet += tick;
            if park && activity.awaiting_head.load(Ordering::Relaxed) {
                return Expired::Quiet(quiet);
            }
            if quiet >= idle {
                return if activity.write_blocked.load(Ordering::Relaxed) {
                    Expired::WriteStalled
                } else {
                    Expired::Idle
                };
            }
        }
        let started = activity.started.load(Ordering::Relaxed);
        let same_head = started == last_started && activity.in_flight.load(Ordering::Relaxed) == 0;
        if same_head && activity.head_pending.load(Ordering::Relaxed) {
            pending += tick;
            if pending >= head {
                return Expired::HeadTimeout;
            }
        } else {
            pending = Duration::ZERO;
        }
        last_started = started;
    }
}

/// Keeps a request counted as in flight on its connection until dropped.
#[derive(Debug)]
pub struct RequestGuard(Arc<ConnActivity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Makes a [`Handler`] a hyper service: every request is counted on its connection until its
/// response body ends, and its body becomes the proxy's [`Body`].
#[derive(Debug, Clone)]
pub struct Tracked<H> {
    inner: H,
    activity: Arc<ConnActivity>,
}

impl<H> Tracked<H> {
    /// Wraps `inner`.
    pub fn new(inner: H, activity: Arc<ConnActivity>) -> Self {
        Self { inner, activity }
    }
}

impl<H: Handler> Service<Request<Incoming>> for Tracked<H> {
    type Response = Response<TrackedBody<H::Body>>;
    type Error = Infallible;
    type Future = TrackedFuture<H::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = self.activity.begin(req.version());
        TrackedFuture { inner: self.inner.call(ProxyRequest::boxed(req.map(Body::Incoming))), guard: Some(guard) }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`Tracked`] handler.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
    }
}

impl<F, B> std::future::Future for TrackedFuture<F>
where
    F: std::future::Future<Output = Box<ProxyResponse<B>>>,
    B: WithRawHeaders,
{
    type Output = Result<Response<TrackedBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.inner.poll(cx)).into_http();
        let guard = this.guard.take();
        // hyper writes the map alone: raw header lines must be in it.
        materialize(&mut resp);
        Poll::Ready(Ok(resp.map(|inner| TrackedBody { inner, _guard: guard })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted until it is dropped.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        _guard: Option<RequestGuard>,
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A TCP stream that reports reads and writes to its connection's [`ConnActivity`].
#[derive(Debug)]
pub struct ActivityIo {
    inner: TcpStream,
    activity: Arc<ConnActivity>,
}

impl ActivityIo {
    /// Wraps `inner`, returning the shared activity record.
    pub fn new(inner: TcpStream) -> (Self, Arc<ConnActivity>) {
        let activity = Arc::new(ConnActivity { moved: AtomicBool::new(true), ..Default::default() });
        (Self { inner, activity: activity.clone() }, activity)
    }

    /// The stream, unwrapped.
    pub fn into_inner(self) -> TcpStream {
        self.inner
    }
}

impl AsyncRead for ActivityIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            this.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for ActivityIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.activity.on_write_polled(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.activity.on_write_polled(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

//! Upstream HTTP/2 (h2c, or h2 over TLS): one connection per endpoint that every request to it
//! shares (streams multiplex), opened on first use and again once the endpoint closed it.
//!
//! A request finds its endpoint's connection with one `ArcSwap` load. Only a request that finds
//! none waits for one: it counts against the service's `max_pending_requests` until the
//! connection is up (or failed), and a request opening a connection needs a place among the
//! service's `max_connections`, kept while the connection is open. Requests beyond the
//! endpoint's concurrent-stream limit wait inside the connection for a stream; hyper does not
//! show that limit to the client, so those count only against `max_requests`.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, Connection, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::Limits;
use super::breaker::Shed;
use super::conn_pool::{ConnPool, ConnectError};
use super::connection::OpenGuard;
use super::stream::UpstreamStream;
use crate::body::Body;

/// An upstream HTTP/2 exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Http2Error {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection was made but the HTTP/2 handshake failed.
    #[error("HTTP/2 handshake with {0} failed: {1}")]
    Handshake(SocketAddr, #[source] hyper::Error),
    /// A new connection was needed but a service limit forbade it.
    #[error("service limit reached: {}", .0.as_str())]
    Shed(Shed),
    /// The stream failed (reset, connection lost, malformed response).
    #[error("upstream HTTP/2: {0}")]
    Stream(#[source] hyper::Error),
}

/// Sends `req` (absolute URI) to the endpoint of `pool` on its shared connection, opening
/// that first when needed; `now_ms` is the clock as the attempt started.
pub async fn send(
    pool: &ConnPool,
    mut req: http::Request<Body>,
    limits: Limits<'_>,
    now_ms: u64,
) -> Result<http::Response<Incoming>, Http2Error> {
    // A connection the endpoint closed since it was last used hands the request back unsent:
    // it then goes once more, on a new connection.
    let mut resent = false;
    loop {
        let mut sender = match pool.h2.ready(now_ms) {
            Some(sender) => sender,
            None => open(pool, limits, now_ms).await?,
        };
        match sender.try_send_request(req).await {
            Ok(response) => return Ok(response),
            Err(mut e) => match e.take_message() {
                Some(unsent) if !resent => {
                    req = unsent;
                    resent = true;
                }
                _ => return Err(Http2Error::Stream(e.into_error())),
            },
        }
    }
}

/// Waits for the endpoint's connection, opening it unless another request is already doing so.
async fn open(pool: &ConnPool, limits: Limits<'_>, now_ms: u64) -> Result<SendRequest<Body>, Http2Error> {
    let _pending = limits.state.begin_pending(limits.breaker).map_err(Http2Error::Shed)?;
    let _turn = pool.h2.opening.lock().await;
    if let Some(sender) = pool.h2.ready(now_ms) {
        return Ok(sender);
    }
    let slot = limits.state.reserve_connection(limits.breaker).map_err(Http2Error::Shed)?;
    let (stream, open) = Box::pin(pool.open_stream(slot)).await?;
    if let UpstreamStream::Plain(tcp) = &stream {
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive);
    }
    let io = Counted { io: TokioIo::new(stream), _open: open };
    let (sender, connection) = handshake(io).await.map_err(|e| Http2Error::Handshake(pool.addr(), e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
        }
    });
    pool.h2.install(sender.clone(), now_ms);
    Ok(sender)
}

/// Starts an HTTP/2 client connection over `io`: the handle that sends requests, and the
/// connection's task, which must be polled (spawned) for anything to move.
pub async fn handshake<T>(io: T) -> hyper::Result<(SendRequest<Body>, Connection<T, Body, TokioExecutor>)>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        // Response heads are bounded as over HTTP/1.1 (hyper's own default is 16 KiB).
        .max_header_list_size(u32::try_from(wasmesh_http1::MAX_HEAD).unwrap_or(u32::MAX))
        .handshake(io)
        .await
}

pin_project_lite::pin_project! {
    /// A stream that keeps its connection counted open until it is dropped.
    #[derive(Debug)]
    struct Counted {
        #[pin]
        io: TokioIo<UpstreamStream>,
        _open: OpenGuard,
    }
}

impl hyper::rt::Read for Counted {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Counted {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
}

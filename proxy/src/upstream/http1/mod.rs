//! A lean HTTP/1.1 client for upstream requests.
//!
//! The request's own task writes the request and reads the response on a pooled connection:
//! no connection task, no channel, no hand-off between tasks per request, which is what a
//! general-purpose pooled client costs. The response body is read by whoever polls it (the
//! downstream connection) and the connection returns to its pool as soon as the body ends.

mod body;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::BytesMut;
use http::{Response, StatusCode};
use http_body::Body as _;
use tokio::time::Sleep;

pub use body::Http1Body;

use crate::body::Body;
use crate::message::ProxyRequest;
use crate::upstream::Limits;
use crate::upstream::breaker::Shed;
use crate::upstream::conn_pool::{ConnPool, ConnectError};
use crate::upstream::connection::{Conn, OpenGuard};
use wasmesh_http1::client::{self, ResponseHead};
use wasmesh_http1::decode::{BodyDecoder, Decoded};
use wasmesh_http1::{BodyWriteError, Framing, RawHeaders, ResponseError};

/// An upstream HTTP/1.1 exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Reading or writing the connection failed.
    #[error("upstream i/o: {0}")]
    Io(#[source] std::io::Error),
    /// The upstream closed the connection before a complete response head.
    #[error("upstream closed the connection before responding")]
    Closed,
    /// The response was not valid HTTP/1.x, or its head was too large.
    #[error("invalid upstream response: {0}")]
    Invalid(#[from] ResponseError),
    /// The upstream closed the connection in the middle of the body.
    #[error("upstream closed the connection mid-body")]
    BodyIncomplete,
    /// Reading the downstream request body failed.
    #[error("request body: {0}")]
    RequestBody(String),
    /// The deadline passed before the response head arrived.
    #[error("no response before the deadline")]
    Timeout,
    /// A new connection was needed but a service limit forbade it.
    #[error("service limit reached: {}", .0.as_str())]
    Shed(Shed),
}

/// A connection that switched protocols (`101`): the stream, bytes already read past the
/// response head, and the guard that keeps it counted.
#[derive(Debug)]
pub struct Upgraded {
    /// The raw stream.
    pub stream: crate::upstream::stream::UpstreamStream,
    /// Bytes the upstream sent after its `101` head.
    pub leftover: BytesMut,
    /// Keeps the connection counted as open.
    pub guard: OpenGuard,
}

/// The outcome of an exchange: the response, and the raw connection when it switched protocols.
/// Returned boxed: it is ~240 bytes and passes through several async layers.
#[derive(Debug)]
pub struct Exchange {
    /// Status, headers and body.
    pub response: Response<Body>,
    /// The end-to-end header lines as they arrived, when the response's map was left empty
    /// for them (see [`RawHeaders`]).
    pub raw: Option<RawHeaders>,
    /// Set on `101 Switching Protocols`.
    pub upgraded: Option<Upgraded>,
    /// When the response head arrived: read once here, it also ends the attempt's latency.
    pub received: Instant,
}

/// Sends `req` (origin-form path in its URI) to the endpoint of `pool`, the attempt having
/// started at `started` (a pooled connection's idle time is measured to it); fails with
/// [`Http1Error::Timeout`] when the response head has not arrived by `deadline`. With
/// `raw_headers`, a plain response's header lines come back as they arrived
/// ([`Exchange::raw`]) instead of in the response's map.
pub async fn send(
    pool: &Arc<ConnPool>,
    mut req: Box<ProxyRequest>,
    limits: Limits<'_>,
    started: Instant,
    deadline: Instant,
    raw_headers: bool,
) -> Result<Box<Exchange>, Http1Error> {
    let mut body = std::mem::take(&mut req.body);
    let parts = &req.head;
    let framing =
        if let Some(n) = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()) {
            Framing::Length(n)
        } else if body.is_end_stream() {
            Framing::None
        } else if let Some(n) = body.size_hint().exact() {
            Framing::Length(n)
        } else {
            Framing::Chunked
        };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // A pooled connection the endpoint closed in the meantime fails before any response byte;
    // then the request is sent again on a fresh connection, unless its body was already consumed.
    let mut use_pool = true;
    loop {
        let pooled = if use_pool { pool.checkout(started) } else { None };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let slot = limits.state.reserve_connection(limits.breaker).map_err(Http1Error::Shed)?;
                let _pending = limits.state.begin_pending(limits.breaker).map_err(Http1Error::Shed)?;
                // Boxed: a TLS handshake's state is large, and this path is rare.
                match tokio::time::timeout_at(deadline.into(), Box::pin(pool.connect(slot))).await {
                    Ok(connected) => connected?,
                    Err(_) => return Err(Http1Error::Timeout),
                }
            }
        };
        conn.write_buf.clear();
        client::encode_request_head(&parts.method, path, &parts.headers, framing, &mut conn.write_buf);
        let sent_body = framing != Framing::None;
        let mut timer = conn.timer_until(deadline);
        let head = before(timer.as_mut(), async {
            exchange(&mut conn, &mut body, framing).await?;
            read_head(&mut conn, raw_headers).await
        })
        .await;
        conn.keep_timer(timer);
        match head {
            Ok(head) => return respond(conn, pool, &parts.method, head),
            Err(Http1Error::Closed | Http1Error::Io(_)) if reused && !sent_body => use_pool = false,
            Err(e) => return Err(e),
        }
    }
}

/// Runs `work` until it completes or `timer` fires.
async fn before<T>(
    mut timer: Pin<&mut Sleep>,
    work: impl Future<Output = Result<T, Http1Error>>,
) -> Result<T, Http1Error> {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = work.as_mut().poll(cx) {
            return Poll::Ready(done);
        }
        timer.as_mut().poll(cx).map(|()| Err(Http1Error::Timeout))
    })
    .await
}

/// Writes the head (already in `write_buf`) and the body.
async fn exchange(conn: &mut Conn, body: &mut Body, framing: Framing) -> Result<(), Http1Error> {
    let (io, out) = conn.stream_and_write_buf();
    match wasmesh_http1::write_body(io, out, Pin::new(body), framing).await {
        Ok(_) => Ok(()),
        Err(BodyWriteError::Io(e)) => Err(Http1Error::Io(e)),
        Err(e) => Err(Http1Error::RequestBody(e.to_string())),
    }
}

/// Reads the response head, skipping interim 1xx answers other than 101.
async fn read_head(conn: &mut Conn, raw_headers: bool) -> Result<ResponseHead, Http1Error> {
    loop {
        match client::parse_response_head(&mut conn.read_buf, raw_headers)? {
            Some(head) if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS => continue,
            Some(head) => return Ok(head),
            None => {}
        }
        match conn.fill().await {
            Ok(0) => return Err(Http1Error::Closed),
            Ok(_) => {}
            Err(e) => return Err(Http1Error::Io(e)),
        }
    }
}

/// Sets up the response body for `head`: the bytes already read, or the connection itself.
fn respond(
    mut conn: Box<Conn>,
    pool: &Arc<ConnPool>,
    method: &http::Method,
    mut head: ResponseHead,
) -> Result<Box<Exchange>, Http1Error> {
    let reusable = client::keeps_alive(&head);
    let received = Instant::now();
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        let response = response(head, Body::Empty);
        let (stream, leftover, guard) = conn.into_parts();
        return Ok(Box::new(Exchange {
            response,
            raw: None,
            upgraded: Some(Upgraded { stream, leftover, guard }),
            received,
        }));
    }
    let mut decoder = client::response_framing(method, &head)?;
    // Common case: the whole body arrived with the head. Answer with it and free the
    // connection before the downstream write even starts.
    if let BodyDecoder::Length(n) = decoder
        && conn.read_buf.len() as u64 >= n
    {
        let data = match decoder.decode(&mut conn.read_buf)? {
            Decoded::Data(d) => Body::full(d),
            Decoded::Done | Decoded::NeedMore => Body::Empty,
        };
        if reusable && conn.read_buf.is_empty() {
            pool.checkin(conn, received);
        }
        let raw = head.raw.take();
        return Ok(Box::new(Exchange { response: response(head, data), raw, upgraded: None, received }));
    }
    let body = Body::streamed(Http1Body::new(conn, pool.clone(), decoder, reusable));
    let raw = head.raw.take();
    Ok(Box::new(Exchange { response: response(head, body), raw, upgraded: None, received }))
}

fn response(head: ResponseHead, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    response
}

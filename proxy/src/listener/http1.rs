//! The downstream HTTP/1.1 fast path: the request every proxy mostly sees (HTTP/1.1, no body,
//! no upgrade) is parsed, served and answered here, on the connection's own task, with one
//! read buffer and one write buffer reused for the connection's life.
//!
//! Anything else (a request with a body, an upgrade, HTTP/1.0, an HTTP/2 preface, a head
//! httparse refuses) hands the connection, with the bytes already read, to hyper, which
//! serves it from there on: hyper keeps every corner of the protocol; this loop only makes
//! the common request cheap. A head past the listener's [`HeadLimits`] is refused here with
//! 431, as hyper refuses it on the requests it serves.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::activity::ConnActivity;
use super::{Handler, HeadLimits};
use crate::body::{Body, BoxError};
use crate::message::{ProxyRequest, ProxyResponse};
use wasmesh_http1::head::head_end;
use wasmesh_http1::server::{Parsed, RequestHead, encode_response_head, parse_request};
use wasmesh_http1::{BodyWriteError, Framing, WRITE_CHUNK, WithRawHeaders};

/// Read buffer growth step: a typical head, or several pipelined ones, in one read.
const READ_CHUNK: usize = 8 * 1024;

/// How the fast path ended.
pub(super) enum Ended {
    /// The connection is finished: the client closed it, asked to, or it is draining.
    Closed,
    /// A request the fast path leaves to hyper: every byte read from the stream that hyper
    /// has not seen, starting with that request's head.
    Handoff(BytesMut),
}

/// Serves requests on `io` until it closes or meets one for hyper. `closing` asks the loop
/// to end after the response in progress (which then says `Connection: close`); the caller
/// drops the loop outright while no request is in flight. A head past `limits` is answered
/// with 431 and the connection closed. While it waits for a request with nothing buffered,
/// `activity` says so: dropping the loop then loses nothing.
pub(super) async fn serve<I, H>(
    io: &mut I,
    handler: &H,
    activity: &Arc<ConnActivity>,
    closing: &AtomicBool,
    limits: HeadLimits,
) -> io::Result<Ended>
where
    I: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut read_buf = BytesMut::with_capacity(READ_CHUNK);
    let mut write_buf = BytesMut::with_capacity(WRITE_CHUNK);
    loop {
        // Bytes already searched for the head's end, less the three a line end may span.
        let mut searched = 0;
        let end = loop {
            if let Some(end) = head_end(&read_buf[searched..]) {
                break searched + end;
            }
            if read_buf.len() > limits.max_bytes {
                return refuse(io, HEAD_TOO_LARGE, &mut read_buf).await;
            }
            searched = read_buf.len().saturating_sub(3);
            if read_buf.is_empty() {
                // The last request's memory is free again (no header value still points into
                // it): reuse the front of the buffer, which is warm in the cache.
                let _ = read_buf.try_reclaim(READ_CHUNK);
            }
            if read_buf.capacity() - read_buf.len() < READ_CHUNK / 4 {
                read_buf.reserve(READ_CHUNK);
            }
            let awaiting = read_buf.is_empty();
            if awaiting {
                activity.set_awaiting_head(true);
            }
            let read = io.read_buf(&mut read_buf).await?;
            if awaiting {
                activity.set_awaiting_head(false);
            }
            if read == 0 {
                return Ok(Ended::Closed);
            }
        };
        if end > limits.max_bytes {
            return refuse(io, HEAD_TOO_LARGE, &mut read_buf).await;
        }
        // The head's bytes become shared memory that header values point into: no copies.
        let head = read_buf.split_to(end).freeze();
        let (request, keep_alive) = match parse_request(&head, limits.max_headers, fast_path_request) {
            Parsed::Serve(request) => request,
            Parsed::TooManyHeaders => return refuse(io, HEAD_TOO_LARGE, &mut read_buf).await,
            Parsed::ForHyper => {
                let mut unread = BytesMut::with_capacity(head.len() + read_buf.len());
                unread.extend_from_slice(&head);
                unread.extend_from_slice(&read_buf);
                return Ok(Ended::Handoff(unread));
            }
        };
        let head_only = request.head.method == Method::HEAD;
        let _in_flight = activity.begin_on_own_task();
        let response = handler.call(request).await;
        let close = !keep_alive || closing.load(Ordering::Relaxed);
        let reusable = write_response(io, &mut write_buf, response, head_only, close).await?;
        if !reusable {
            let _ = io.shutdown().await;
            return Ok(Ended::Closed);
        }
    }
}

/// The answer to a head past the listener's limits (RFC 6585 §5): the connection then closes,
/// since the rest of the head is still unread.
static HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
content-type: text/plain; charset=utf-8\r\n\
x-wasmesh-error: headers_too_large\r\n\
content-length: 36\r\n\
connection: close\r\n\r\n\
request header fields are too large\n";

/// How long, and how many bytes of, the rest of a refused request are read and dropped before
/// its connection closes: closing a socket with unread bytes sends a reset, which can destroy
/// the refusal before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

/// Writes `answer`, ends the sending side, drains what the client still sends (within
/// [`LINGER`] and [`LINGER_BYTES`], into `buf`) and closes the connection.
async fn refuse<I>(io: &mut I, answer: &[u8], buf: &mut BytesMut) -> io::Result<Ended>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(answer).await?;
    let _ = io.shutdown().await;
    let drain = async {
        let mut drained = 0;
        while drained < LINGER_BYTES {
            buf.clear();
            buf.reserve(READ_CHUNK);
            match io.read_buf(buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
    Ok(Ended::Closed)
}

/// The request a head the fast path serves stands for, and whether the connection may stay
/// open after it.
fn fast_path_request(head: RequestHead) -> (Box<ProxyRequest>, bool) {
    let RequestHead { method, uri, headers, keep_alive } = head;
    let mut request = ProxyRequest::new(method, uri, Version::HTTP_11, headers, Body::Empty);
    // The parser served it here only if it meets the proxy's request rules.
    request.head_checked = true;
    (request, keep_alive)
}

/// Writes `response`; returns whether the connection may carry another request (it may not
/// after `close`, or when the body failed or fell short of its length).
async fn write_response<I, B>(
    io: &mut I,
    out: &mut BytesMut,
    mut response: Box<ProxyResponse<B>>,
    head_only: bool,
    close: bool,
) -> io::Result<bool>
where
    I: AsyncWrite + Unpin,
    B: http_body::Body<Data = Bytes, Error = BoxError> + WithRawHeaders + Unpin,
{
    let ProxyResponse { head, body } = &mut *response;
    let mut body = Pin::new(body);
    let raw = body.raw_headers();
    let framing = encode_response_head(&head.status, raw, &head.headers, &*body, head_only, close, out);
    let complete = match wasmesh_http1::write_body(io, out, body.as_mut(), framing).await {
        Ok(sent) => !matches!(framing, Framing::Length(n) if sent < n),
        Err(BodyWriteError::Io(e)) => return Err(e),
        Err(e) => {
            tracing::debug!(error = %e, "response body cut short: closing the connection");
            // What was written of it goes out; the connection then ends.
            wasmesh_http1::flush(io, out).await?;
            false
        }
    };
    io.flush().await?;
    Ok(complete && !close)
}

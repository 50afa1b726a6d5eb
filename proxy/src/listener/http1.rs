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

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::activity::ConnActivity;
use super::{Handler, HeadLimits};
use crate::body::{Body, BoxError};
use crate::message::{ProxyRequest, ProxyResponse};
use crate::wire::{
    self, BodyWriteError, Framing, MAX_HEADERS, RawHeaders, WRITE_CHUNK, WithRawHeaders, head_end, header_name,
};

/// Read buffer growth step: a typical head, or several pipelined ones, in one read.
const READ_CHUNK: usize = 8 * 1024;
/// Room a request map is made with beyond the client's headers: the proxy adds
/// `X-Forwarded-*` and `traceparent`, and filters may add more, without a rehash.
const ADDED_HEADERS: usize = 6;

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
        let Head { request, keep_alive } = match parse_request(&head, limits.max_headers) {
            Parsed::Serve(head) => head,
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

/// A request the fast path serves, and whether the client lets the connection stay open.
pub(crate) struct Head {
    pub(crate) request: Box<ProxyRequest>,
    pub(crate) keep_alive: bool,
}

/// What a complete request head is, to the fast path.
pub(crate) enum Parsed {
    /// A request it serves.
    Serve(Head),
    /// More header lines than the listener allows.
    TooManyHeaders,
    /// One for hyper (see the module docs).
    ForHyper,
}

/// Parses the complete head `head`, allowing at most `max_headers` header lines.
pub(crate) fn parse_request(head: &Bytes, max_headers: usize) -> Parsed {
    // httparse fills only the slots it uses; initialising all of them costs more than parsing.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut parsed, head, &mut slots) {
        Ok(httparse::Status::Complete(_)) => {}
        // Past the slots the fast path has, hyper counts up to a higher limit.
        Err(httparse::Error::TooManyHeaders) if max_headers > MAX_HEADERS => return Parsed::ForHyper,
        Err(httparse::Error::TooManyHeaders) => return Parsed::TooManyHeaders,
        _ => return Parsed::ForHyper,
    }
    if parsed.headers.len() > max_headers {
        return Parsed::TooManyHeaders;
    }
    match serve_here(head, &parsed) {
        Some(head) => Parsed::Serve(head),
        None => Parsed::ForHyper,
    }
}

/// The request `parsed` (from `head`) as the fast path serves it; `None` when it is one for hyper.
fn serve_here(head: &Bytes, parsed: &httparse::Request<'_, '_>) -> Option<Head> {
    if parsed.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    let uri = Uri::from_maybe_shared(head.slice_ref(parsed.path?.as_bytes())).ok()?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len() + ADDED_HEADERS);
    let mut keep_alive = true;
    let mut hosts = 0;
    for h in parsed.headers.iter() {
        let name = header_name(h.name.as_bytes()).ok()?;
        if name == HOST {
            hosts += 1;
            if !wire::is_valid_host(h.value) {
                return None;
            }
        }
        if name == TRANSFER_ENCODING || name == UPGRADE {
            return None;
        }
        if name == CONTENT_LENGTH && h.value.trim_ascii() != b"0" {
            return None;
        }
        if name == CONNECTION {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                }
            }
        }
        headers.append(name, HeaderValue::from_maybe_shared(head.slice_ref(h.value)).ok()?);
    }
    // One valid Host and an origin-form target: the head meets the proxy's rules (see
    // `ProxyRequest::head_checked`); anything else is left to hyper, and the rules refuse it.
    if hosts != 1 || uri.authority().is_some() {
        return None;
    }
    let mut request = ProxyRequest::new(method, uri, Version::HTTP_11, headers, Body::Empty);
    request.head_checked = true;
    Some(Head { request, keep_alive })
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
    let framing = encode_head(&head.status, raw, &head.headers, &*body, head_only, close, out);
    let complete = match wire::write_body(io, out, body.as_mut(), framing).await {
        Ok(sent) => !matches!(framing, Framing::Length(n) if sent < n),
        Err(BodyWriteError::Io(e)) => return Err(e),
        Err(e) => {
            tracing::debug!(error = %e, "response body cut short: closing the connection");
            // What was written of it goes out; the connection then ends.
            wire::flush(io, out).await?;
            false
        }
    };
    io.flush().await?;
    Ok(complete && !close)
}

/// Writes the status line and headers (`raw` lines as they are, then the map's), adding the
/// framing header, `Date` when missing and `Connection: close` when closing; returns the
/// framing the body takes.
fn encode_head<B: http_body::Body>(
    status: &StatusCode,
    raw: Option<&RawHeaders>,
    headers: &HeaderMap,
    body: &B,
    head_only: bool,
    close: bool,
    out: &mut BytesMut,
) -> Framing {
    out.reserve(128 + headers.len() * 48);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    let (mut length, mut has_date) = (None, false);
    if let Some(raw) = raw {
        raw.write_to(out);
        (length, has_date) = (raw.content_length(), raw.has_date());
    }
    for (name, value) in headers {
        if name == TRANSFER_ENCODING || name == CONNECTION {
            continue;
        }
        if name == CONTENT_LENGTH {
            if length.is_some() {
                continue;
            }
            length = std::str::from_utf8(value.as_bytes()).ok().and_then(|v| v.trim().parse::<u64>().ok());
        }
        has_date |= name == DATE;
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    let no_body = head_only
        || status.is_informational()
        || *status == StatusCode::NO_CONTENT
        || *status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::None
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        let n = if body.is_end_stream() { Some(0) } else { body.size_hint().exact() };
        match n {
            Some(n) => {
                out.put_slice(b"content-length: ");
                out.put_slice(itoa::Buffer::new().format(n).as_bytes());
                out.put_slice(b"\r\n");
                Framing::Length(n)
            }
            None => {
                out.put_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
        }
    };
    if !has_date {
        out.put_slice(b"date: ");
        out.put_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.put_slice(b"\r\n");
    }
    if close {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
    framing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &[u8]) -> Option<Head> {
        match parse_request(&Bytes::copy_from_slice(wire), MAX_HEADERS) {
            Parsed::Serve(head) => Some(head),
            _ => None,
        }
    }

    #[test]
    fn plain_requests_are_served_here() {
        let head = parse(b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-Custom: v\r\nContent-Length: 0\r\n\r\n")
            .expect("a plain request");
        assert_eq!(head.request.head.method, Method::GET);
        assert_eq!(head.request.head.uri.path_and_query().map(|p| p.as_str()), Some("/a?b=1"));
        assert_eq!(head.request.head.headers["host"], "example.com");
        assert_eq!(head.request.head.headers["x-custom"], "v");
        assert!(head.keep_alive);
        assert!(head.request.head_checked);
        let head =
            parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n").expect("a plain request");
        assert!(!head.keep_alive);
    }

    #[test]
    fn everything_else_is_left_to_hyper() {
        for wire in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"G@T / HTTP/1.1\r\n\r\n",
            // Host missing, twice, invalid, or an absolute-form target: the proxy's Host rules
            // decide those on the hyper path.
            b"GET / HTTP/1.1\r\nX: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(parse(wire).is_none(), "{}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn header_lines_past_the_limit_are_refused() {
        let mut wire = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..9 {
            wire.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        let head = Bytes::from(wire);
        assert!(matches!(parse_request(&head, 10), Parsed::Serve(_)));
        assert!(matches!(parse_request(&head, 9), Parsed::TooManyHeaders));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let many = Bytes::from(many);
        assert!(matches!(parse_request(&many, MAX_HEADERS), Parsed::TooManyHeaders));
        assert!(matches!(parse_request(&many, MAX_HEADERS + 50), Parsed::ForHyper), "hyper counts past the slots");
    }

    fn head_of(status: u16, headers: &[(&str, &str)], body: Body, head_only: bool, close: bool) -> (String, Framing) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let mut out = BytesMut::new();
        let status = StatusCode::from_u16(status).expect("status");
        let framing = encode_head(&status, None, &map, &body, head_only, close, &mut out);
        (String::from_utf8(out.to_vec()).expect("ASCII head"), framing)
    }

    #[test]
    fn response_heads_carry_the_framing_their_body_needs() {
        let (text, framing) = head_of(200, &[("date", "x")], Body::full("hello"), false, false);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(framing, Framing::Length(5));
        let (text, framing) = head_of(200, &[("content-length", "7"), ("date", "x")], Body::Empty, true, false);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ndate: x\r\n\r\n");
        assert_eq!(framing, Framing::None);
        let (text, _) =
            head_of(404, &[("transfer-encoding", "chunked"), ("connection", "x")], Body::Empty, false, true);
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\ndate: "), "{text}");
        assert!(text.ends_with("\r\nconnection: close\r\n\r\n"), "{text}");
        let (_, framing) = head_of(204, &[], Body::Empty, false, false);
        assert_eq!(framing, Framing::None);
    }
}

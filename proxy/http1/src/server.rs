//! The server side of HTTP/1.1 (the proxy's listeners): request heads in, the ones the fast
//! path serves told from the ones it leaves to hyper, and response heads out.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

use crate::head::{MAX_HEADERS, header_name, is_valid_host};
use crate::raw_headers::RawHeaders;
use crate::write::Framing;

/// Room a request map is made with beyond the client's headers: the proxy adds
/// `X-Forwarded-*` and `traceparent`, and filters may add more, without a rehash.
const ADDED_HEADERS: usize = 6;

/// A request head the fast path serves (HTTP/1.1, one valid `Host`, an origin-form target, no
/// body, no upgrade), and whether the client lets the connection stay open.
#[derive(Debug)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// The request target, in origin form.
    pub uri: Uri,
    /// The header fields, in a map with room for the proxy's additions.
    pub headers: HeaderMap,
    /// False when the client sent `Connection: close`.
    pub keep_alive: bool,
}

/// What a complete request head is, to the fast path: `R` is what the caller makes of a
/// request it serves (the proxy boxes it at once, so the head is not moved again).
#[derive(Debug)]
pub enum Parsed<R> {
    /// A request it serves.
    Serve(R),
    /// More header lines than the listener allows.
    TooManyHeaders,
    /// One for hyper (see the module docs).
    ForHyper,
}

/// Parses the complete head `head`, allowing at most `max_headers` header lines; a request the
/// fast path serves is handed to `make`.
pub fn parse_request<R>(head: &Bytes, max_headers: usize, make: impl FnOnce(RequestHead) -> R) -> Parsed<R> {
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
        Some(head) => Parsed::Serve(make(head)),
        None => Parsed::ForHyper,
    }
}

/// The request `parsed` (from `head`) as the fast path serves it; `None` when it is one for hyper.
fn serve_here(head: &Bytes, parsed: &httparse::Request<'_, '_>) -> Option<RequestHead> {
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
            if !is_valid_host(h.value) {
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
    // One valid Host and an origin-form target: the head meets the proxy's request rules;
    // anything else is left to hyper, and the rules refuse it.
    if hosts != 1 || uri.authority().is_some() {
        return None;
    }
    Some(RequestHead { method, uri, headers, keep_alive })
}

/// Writes the status line and headers (`raw` lines as they are, then the map's), adding the
/// framing header, `Date` when missing and `Connection: close` when closing; returns the
/// framing the body takes.
pub fn encode_response_head<B: http_body::Body>(
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
    use http_body_util::{Empty, Full};

    use super::*;

    fn parse(wire: &[u8]) -> Option<RequestHead> {
        match parse_request(&Bytes::copy_from_slice(wire), MAX_HEADERS, |head| head) {
            Parsed::Serve(head) => Some(head),
            _ => None,
        }
    }

    #[test]
    fn plain_requests_are_served_here() {
        let head = parse(b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-Custom: v\r\nContent-Length: 0\r\n\r\n")
            .expect("a plain request");
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.path_and_query().map(|p| p.as_str()), Some("/a?b=1"));
        assert_eq!(head.headers["host"], "example.com");
        assert_eq!(head.headers["x-custom"], "v");
        assert!(head.keep_alive);
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
        assert!(matches!(parse_request(&head, 10, drop), Parsed::Serve(_)));
        assert!(matches!(parse_request(&head, 9, drop), Parsed::TooManyHeaders));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let many = Bytes::from(many);
        assert!(matches!(parse_request(&many, MAX_HEADERS, drop), Parsed::TooManyHeaders));
        assert!(
            matches!(parse_request(&many, MAX_HEADERS + 50, drop), Parsed::ForHyper),
            "hyper counts past the slots"
        );
    }

    fn head_of<B: http_body::Body>(
        status: u16,
        headers: &[(&str, &str)],
        body: B,
        head_only: bool,
        close: bool,
    ) -> (String, Framing) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let mut out = BytesMut::new();
        let status = StatusCode::from_u16(status).expect("status");
        let framing = encode_response_head(&status, None, &map, &body, head_only, close, &mut out);
        (String::from_utf8(out.to_vec()).expect("ASCII head"), framing)
    }

    #[test]
    fn response_heads_carry_the_framing_their_body_needs() {
        let (text, framing) = head_of(200, &[("date", "x")], Full::new(Bytes::from_static(b"hello")), false, false);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(framing, Framing::Length(5));
        let (text, framing) =
            head_of(200, &[("content-length", "7"), ("date", "x")], Empty::<Bytes>::new(), true, false);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ndate: x\r\n\r\n");
        assert_eq!(framing, Framing::None);
        let (text, _) =
            head_of(404, &[("transfer-encoding", "chunked"), ("connection", "x")], Empty::<Bytes>::new(), false, true);
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\ndate: "), "{text}");
        assert!(text.ends_with("\r\nconnection: close\r\n\r\n"), "{text}");
        let (_, framing) = head_of(204, &[], Empty::<Bytes>::new(), false, false);
        assert_eq!(framing, Framing::None);
    }
}

//! The client side of HTTP/1.1 (the proxy's upstream connections): request heads out,
//! response heads in, and how the response body is delimited (RFC 9112 §6.3).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};

use crate::ResponseError;
use crate::decode::{BodyDecoder, Chunked};
use crate::head::{MAX_HEAD, MAX_HEADERS, NameClass, classify, head_end, header_name};
use crate::raw_headers::RawHeaders;
use crate::write::Framing;

/// Writes `method path HTTP/1.1`, the headers, and the framing header the body needs.
pub fn encode_request_head(method: &Method, path: &str, headers: &HeaderMap, framing: Framing, out: &mut BytesMut) {
    out.reserve(256 + headers.len() * 32);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(path.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == CONTENT_LENGTH && framing != Framing::None {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            out.put_slice(b"content-length: ");
            out.put_slice(n.to_string().as_bytes());
            out.put_slice(b"\r\n");
        }
        Framing::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.put_slice(b"\r\n");
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Headers, sharing the read buffer's memory; empty when they are kept in `raw`.
    pub headers: HeaderMap,
    /// The end-to-end header lines as they arrived, when the caller accepts them so.
    pub raw: Option<RawHeaders>,
    /// What the framing headers said, noted while parsing so that nothing is looked up twice.
    framing: HeadFraming,
}

/// The headers that decide connection reuse and body framing, as seen while parsing.
#[derive(Debug, Default, Clone, Copy)]
struct HeadFraming {
    /// `Connection: close` (or HTTP/1.0 without `keep-alive`).
    close: bool,
    /// `Transfer-Encoding` present; `Some(true)` when its final coding is chunked.
    chunked: Option<bool>,
    /// The first `Content-Length`, `Some(None)` when it is not a number.
    length: Option<Option<u64>>,
}

impl HeadFraming {
    /// Notes a header of class `class`; returns `false` for one the response need not carry
    /// on: a `Connection` header with only `close` / `keep-alive` tokens, which describes this
    /// hop alone (a `Connection` header naming other headers is kept for the forwarder to honour).
    fn note(&mut self, class: NameClass, value: &[u8]) -> bool {
        match class {
            NameClass::Connection => {
                // The usual values, without splitting into tokens.
                if value.eq_ignore_ascii_case(b"keep-alive") {
                    self.close = false;
                    return false;
                }
                if value.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                    return false;
                }
                let mut only_hop = true;
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.close = false;
                    } else if !token.is_empty() {
                        only_hop = false;
                    }
                }
                return !only_hop;
            }
            NameClass::TransferEncoding => {
                let last = value.rsplit(|&b| b == b',').next().map(<[u8]>::trim_ascii);
                self.chunked = Some(last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")));
            }
            NameClass::ContentLength if self.length.is_none() => self.length = Some(parse_length(value)),
            _ => {}
        }
        true
    }
}

/// A `Content-Length` value: decimal digits (at most 19, so that it cannot overflow), with
/// optional whitespace around them.
fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
}

/// Parses a complete response head at the start of `buf`, removing it from `buf`.
/// Returns `Ok(None)` when more bytes are needed. With `keep_raw`, the end-to-end header
/// lines of a plain response stay as they arrived (see [`RawHeaders`]) instead of filling
/// the map.
pub fn parse_response_head(buf: &mut BytesMut, keep_raw: bool) -> Result<Option<ResponseHead>, ResponseError> {
    let Some(end) = head_end(buf) else {
        return if buf.len() > MAX_HEAD { Err(ResponseError::HeadTooLarge) } else { Ok(None) };
    };
    if end > MAX_HEAD {
        return Err(ResponseError::HeadTooLarge);
    }
    // The head's bytes become shared memory that header values point into: no copies.
    let head: Bytes = buf.split_to(end).freeze();
    // httparse fills only the slots it uses; initialising all of them cost more than parsing.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, &head, &mut slots) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(ResponseError::Invalid("truncated response head".into())),
        Err(e) => return Err(ResponseError::Invalid(e.to_string())),
    }
    let status =
        res.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or(ResponseError::Invalid("bad status".into()))?;
    let version = if res.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let fresh = HeadFraming { close: version == Version::HTTP_10, ..HeadFraming::default() };
    let mut framing = fresh;
    if keep_raw
        && status != StatusCode::SWITCHING_PROTOCOLS
        && let Some(raw) = raw_lines(&head, res.headers, &mut framing)
    {
        return Ok(Some(ResponseHead { status, version, headers: HeaderMap::new(), raw: Some(raw), framing }));
    }
    framing = fresh;
    // Room for the response's own headers and two more (a filter's, say) without a rehash.
    let mut headers = HeaderMap::with_capacity(res.headers.len() + 2);
    for h in res.headers.iter() {
        if !framing.note(classify(h.name.as_bytes()), h.value) {
            continue;
        }
        let name = header_name(h.name.as_bytes()).map_err(|e| ResponseError::Invalid(e.to_string()))?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value))
            .map_err(|e| ResponseError::Invalid(e.to_string()))?;
        headers.append(name, value);
    }
    Ok(Some(ResponseHead { status, version, headers, raw: None, framing }))
}

/// The end-to-end lines of `head` (whose parsed headers are `parsed`), noting framing on
/// the way; `None` for a head that needs the general path: bare-LF line ends, a
/// `Connection` header naming other headers, `TE`, `Transfer-Encoding` beside
/// `Content-Length`, repeated `Content-Length`, or too many dropped lines in between.
fn raw_lines(head: &Bytes, parsed: &[httparse::Header<'_>], framing: &mut HeadFraming) -> Option<RawHeaders> {
    if !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let offset = |name: &str| name.as_ptr() as usize - head.as_ptr() as usize;
    let block_end = head.len() - 2;
    let mut raw = RawHeaders::new(head.clone());
    let mut lengths = 0;
    for (i, h) in parsed.iter().enumerate() {
        let start = offset(h.name);
        let end = parsed.get(i + 1).map_or(block_end, |next| offset(next.name));
        if !head[..end].ends_with(b"\r\n") {
            return None;
        }
        let class = classify(h.name.as_bytes());
        let keep = match class {
            NameClass::Other => true,
            NameClass::Date => {
                raw.set_date();
                true
            }
            NameClass::ContentLength => {
                lengths += 1;
                true
            }
            NameClass::Connection | NameClass::TransferEncoding | NameClass::Upgrade | NameClass::HopByHop => false,
            NameClass::Te => return None,
        };
        if framing.note(class, h.value) && class == NameClass::Connection {
            return None;
        }
        if keep && !raw.keep_line(start, end) {
            return None;
        }
    }
    if lengths > 1 || (lengths == 1 && framing.chunked.is_some()) {
        return None;
    }
    raw.set_content_length(framing.length.flatten());
    Some(raw)
}

/// Whether the connection may carry another request after this response.
pub fn keeps_alive(head: &ResponseHead) -> bool {
    !head.framing.close
}

/// How the response body is delimited (RFC 9112 §6.3).
pub fn response_framing(method: &Method, head: &ResponseHead) -> Result<BodyDecoder, ResponseError> {
    let status = head.status.as_u16();
    if method == Method::HEAD || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(BodyDecoder::Length(0));
    }
    if let Some(chunked) = head.framing.chunked {
        return Ok(if chunked { BodyDecoder::Chunked(Chunked::Size { size: 0, digits: 0 }) } else { BodyDecoder::Eof });
    }
    match head.framing.length {
        Some(Some(n)) => Ok(BodyDecoder::Length(n)),
        Some(None) => Err(ResponseError::Invalid("bad content-length".into())),
        None => Ok(BodyDecoder::Eof),
    }
}

#[cfg(test)]
mod tests {
    use http::header::CONNECTION;

    use super::*;

    #[test]
    fn heads_parse_and_share_the_buffer() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"[..]);
        let head = parse_response_head(&mut buf, false).expect("valid").expect("complete");
        assert_eq!(head.status, 200);
        assert_eq!(head.headers["x-a"], "b");
        assert_eq!(head.headers["content-length"], "5");
        assert_eq!(&buf[..], b"hello");
        assert!(keeps_alive(&head));
        assert_eq!(response_framing(&Method::GET, &head).expect("framing"), BodyDecoder::Length(5));
        assert_eq!(response_framing(&Method::HEAD, &head).expect("framing"), BodyDecoder::Length(0));
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-"[..]);
        assert!(parse_response_head(&mut partial, true).expect("valid so far").is_none());
    }

    #[test]
    fn connection_header_is_dropped_unless_it_names_headers() {
        let wire = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nServer: x\r\nContent-Length: 0\r\n\r\n";
        let head = parse_response_head(&mut BytesMut::from(&wire[..]), false).expect("valid").expect("complete");
        assert!(keeps_alive(&head));
        assert!(!head.headers.contains_key(CONNECTION));
        assert_eq!(head.headers["server"], "x");
        let wire = b"HTTP/1.1 200 OK\r\nCONNECTION: close, X-Hop\r\nX-Hop: 1\r\n\r\n";
        let head = parse_response_head(&mut BytesMut::from(&wire[..]), false).expect("valid").expect("complete");
        assert!(!keeps_alive(&head));
        assert_eq!(head.headers[CONNECTION], "close, X-Hop");
        let head = parse_response_head(&mut BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\n"[..]), true)
            .expect("valid")
            .expect("done");
        assert!(!keeps_alive(&head));
    }

    fn raw(wire: &[u8]) -> ResponseHead {
        parse_response_head(&mut BytesMut::from(wire), true).expect("valid").expect("complete")
    }

    #[test]
    fn plain_heads_keep_their_lines_as_they_arrived_less_the_hop_by_hop_ones() {
        let head = raw(b"HTTP/1.1 200 OK\r\nServer: x\r\nKeep-Alive: 5\r\nDate: d\r\nContent-Length: 5\r\nConnection: close\r\n\r\n");
        assert!(head.headers.is_empty());
        assert!(!keeps_alive(&head));
        assert_eq!(response_framing(&Method::GET, &head).expect("framing"), BodyDecoder::Length(5));
        let lines = head.raw.expect("raw lines");
        let mut out = BytesMut::new();
        lines.write_to(&mut out);
        assert_eq!(&out[..], b"Server: x\r\nDate: d\r\nContent-Length: 5\r\n");
        assert_eq!((lines.content_length(), lines.has_date()), (Some(5), true));
        let mut map = HeaderMap::new();
        lines.append_to(&mut map);
        assert_eq!(map.len(), 3);
        assert_eq!([&map["server"], &map["date"], &map["content-length"]], ["x", "d", "5"]);
        // Chunked framing is the downstream writer's to choose: the line is left out.
        let head = raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: \r\n\r\n");
        let lines = head.raw.as_ref().expect("raw lines");
        let mut out = BytesMut::new();
        lines.write_to(&mut out);
        assert_eq!((&out[..], lines.content_length()), (&b"X-A: \r\n"[..], None));
        assert!(matches!(response_framing(&Method::GET, &head), Ok(BodyDecoder::Chunked(_))));
    }

    #[test]
    fn unusual_heads_are_parsed_into_the_map() {
        for wire in [
            &b"HTTP/1.1 200 OK\nServer: x\n\n"[..],
            b"HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTE: trailers\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: 1\r\nUpgrade: x\r\nB: 1\r\nKeep-Alive: 1\r\nC: 1\r\nProxy-Connection: 1\r\nD: 1\r\nTE: x\r\nE: 1\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        ] {
            let head = raw(wire);
            assert!(head.raw.is_none(), "{}", String::from_utf8_lossy(wire));
        }
        let head = raw(b"HTTP/1.1 200 OK\r\nA: 1\r\nUpgrade: x\r\nB: 1\r\nKeep-Alive: 1\r\nC: 1\r\nProxy-Connection: 1\r\nD: 1\r\nE: 1\r\n\r\n");
        let mut map = HeaderMap::new();
        head.raw.expect("four runs fit").append_to(&mut map);
        assert_eq!(map.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn content_lengths_are_plain_decimal() {
        assert_eq!(parse_length(b" 42 "), Some(42));
        assert_eq!(parse_length(b"9999999999999999999"), Some(9_999_999_999_999_999_999));
        for bad in [&b""[..], b"+1", b"1 2", b"0x10", b"99999999999999999999", b"-1"] {
            assert_eq!(parse_length(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn request_heads_carry_their_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("a"));
        headers.insert("content-length", HeaderValue::from_static("3"));
        let mut out = BytesMut::new();
        encode_request_head(&Method::POST, "/x?y=1", &headers, Framing::Length(3), &mut out);
        assert_eq!(&out[..], b"POST /x?y=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n");
    }
}

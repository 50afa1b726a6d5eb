//! HTTP/1.1 wire format for the upstream side: request heads out, response heads and body
//! framing (content-length, chunked, close-delimited) in.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};

use super::Http1Error;
use crate::wire::{Framing, MAX_HEAD, MAX_HEADERS, NameClass, RawHeaders, classify, head_end, header_name};

/// Writes `method path HTTP/1.1`, the headers, and the framing header the body needs.
pub fn encode_head(method: &Method, path: &str, headers: &HeaderMap, framing: Framing, out: &mut BytesMut) {
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
pub fn parse_head(buf: &mut BytesMut, keep_raw: bool) -> Result<Option<ResponseHead>, Http1Error> {
    let Some(end) = head_end(buf) else {
        return if buf.len() > MAX_HEAD { Err(Http1Error::HeadTooLarge) } else { Ok(None) };
    };
    if end > MAX_HEAD {
        return Err(Http1Error::HeadTooLarge);
    }
    // The head's bytes become shared memory that header values point into: no copies.
    let head: Bytes = buf.split_to(end).freeze();
    // httparse fills only the slots it uses; initialising all of them cost more than parsing.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, &head, &mut slots) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Http1Error::Invalid("truncated response head".into())),
        Err(e) => return Err(Http1Error::Invalid(e.to_string())),
    }
    let status = res.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or(Http1Error::Invalid("bad status".into()))?;
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
        let name = header_name(h.name.as_bytes()).map_err(|e| Http1Error::Invalid(e.to_string()))?;
        let value =
            HeaderValue::from_maybe_shared(head.slice_ref(h.value)).map_err(|e| Http1Error::Invalid(e.to_string()))?;
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
pub fn response_framing(method: &Method, head: &ResponseHead) -> Result<BodyDecoder, Http1Error> {
    let status = head.status.as_u16();
    if method == Method::HEAD || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(BodyDecoder::Length(0));
    }
    if let Some(chunked) = head.framing.chunked {
        return Ok(if chunked { BodyDecoder::Chunked(Chunked::Size { size: 0, digits: 0 }) } else { BodyDecoder::Eof });
    }
    match head.framing.length {
        Some(Some(n)) => Ok(BodyDecoder::Length(n)),
        Some(None) => Err(Http1Error::Invalid("bad content-length".into())),
        None => Ok(BodyDecoder::Eof),
    }
}

/// Body framing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyDecoder {
    /// This many bytes remain.
    Length(u64),
    /// Chunked transfer coding.
    Chunked(Chunked),
    /// Everything until the peer closes.
    Eof,
}

/// States of the chunked decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Reading the hex size.
    Size {
        /// Size so far.
        size: u64,
        /// Hex digits read.
        digits: u8,
    },
    /// Skipping a chunk extension up to CR LF; holds the size.
    Extension(u64),
    /// Expecting LF after the size line; holds the size.
    SizeLf(u64),
    /// Inside chunk data; bytes left.
    Data(u64),
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    TrailerLine,
    /// Expecting LF of the final empty line.
    FinalLf,
    /// Finished.
    Done,
}

/// What decoding the buffered bytes produced.
#[derive(Debug)]
pub enum Decoded {
    /// A piece of body.
    Data(Bytes),
    /// The body is complete.
    Done,
    /// More bytes must be read.
    NeedMore,
}

impl BodyDecoder {
    /// Takes the next piece of body from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Http1Error> {
        match self {
            Self::Length(0) => Ok(Decoded::Done),
            Self::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                Ok(Decoded::Data(buf.split_to(n as usize).freeze()))
            }
            Self::Eof => {
                if buf.is_empty() {
                    Ok(Decoded::NeedMore)
                } else {
                    Ok(Decoded::Data(buf.split().freeze()))
                }
            }
            Self::Chunked(state) => decode_chunked(state, buf),
        }
    }

    /// Whether the body ends when the peer closes (so a close is not an error).
    pub fn ends_at_eof(&self) -> bool {
        matches!(self, Self::Eof)
    }
}

fn invalid(what: &str) -> Http1Error {
    Http1Error::Invalid(format!("bad chunked encoding: {what}"))
}

fn decode_chunked(state: &mut Chunked, buf: &mut BytesMut) -> Result<Decoded, Http1Error> {
    loop {
        if let Chunked::Done = state {
            return Ok(Decoded::Done);
        }
        if let Chunked::Data(left) = state {
            if buf.is_empty() {
                return Ok(Decoded::NeedMore);
            }
            let n = (*left).min(buf.len() as u64);
            *left -= n;
            if *left == 0 {
                *state = Chunked::DataCr;
            }
            return Ok(Decoded::Data(buf.split_to(n as usize).freeze()));
        }
        let Some(&byte) = buf.first() else { return Ok(Decoded::NeedMore) };
        let _ = buf.split_to(1);
        *state = match (*state, byte) {
            (Chunked::Size { size, digits }, b) if b.is_ascii_hexdigit() => {
                if digits >= 16 {
                    return Err(invalid("chunk size too large"));
                }
                let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                Chunked::Size { size: size * 16 + d, digits: digits + 1 }
            }
            (Chunked::Size { size, digits }, b'\r') if digits > 0 => Chunked::SizeLf(size),
            (Chunked::Size { size, digits }, b';' | b' ' | b'\t') if digits > 0 => Chunked::Extension(size),
            (Chunked::Size { .. }, _) => return Err(invalid("chunk size")),
            (Chunked::Extension(size), b'\r') => Chunked::SizeLf(size),
            (Chunked::Extension(size), _) => Chunked::Extension(size),
            (Chunked::SizeLf(0), b'\n') => Chunked::TrailerStart,
            (Chunked::SizeLf(size), b'\n') => Chunked::Data(size),
            (Chunked::DataCr, b'\r') => Chunked::DataLf,
            (Chunked::DataLf, b'\n') => Chunked::Size { size: 0, digits: 0 },
            (Chunked::TrailerStart, b'\r') => Chunked::FinalLf,
            (Chunked::TrailerStart | Chunked::TrailerLine, b'\n') => Chunked::TrailerStart,
            (Chunked::TrailerStart | Chunked::TrailerLine, _) => Chunked::TrailerLine,
            (Chunked::FinalLf, b'\n') => Chunked::Done,
            _ => return Err(invalid("framing")),
        };
    }
}

#[cfg(test)]
mod tests {
    use http::header::CONNECTION;

    use super::*;

    fn decode_all(mut decoder: BodyDecoder, wire: &[u8], step: usize) -> Result<(Vec<u8>, bool), Http1Error> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::Done => return Ok((out, true)),
                    Decoded::NeedMore => break,
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in 1..wire.len() {
            let (body, done) =
                decode_all(BodyDecoder::Chunked(Chunked::Size { size: 0, digits: 0 }), wire, step).expect("valid");
            assert_eq!(body, b"hello world", "step {step}");
            assert!(done);
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        let bad = decode_all(BodyDecoder::Chunked(Chunked::Size { size: 0, digits: 0 }), b"zz\r\n", 4);
        assert!(bad.is_err());
        let huge = decode_all(BodyDecoder::Chunked(Chunked::Size { size: 0, digits: 0 }), b"11111111111111111\r\n", 32);
        assert!(huge.is_err());
    }

    #[test]
    fn length_bodies_stop_at_the_length() {
        let (body, done) = decode_all(BodyDecoder::Length(5), b"helloEXTRA", 3).expect("valid");
        assert_eq!(body, b"hello");
        assert!(done);
    }

    #[test]
    fn heads_parse_and_share_the_buffer() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"[..]);
        let head = parse_head(&mut buf, false).expect("valid").expect("complete");
        assert_eq!(head.status, 200);
        assert_eq!(head.headers["x-a"], "b");
        assert_eq!(head.headers["content-length"], "5");
        assert_eq!(&buf[..], b"hello");
        assert!(keeps_alive(&head));
        assert_eq!(response_framing(&Method::GET, &head).expect("framing"), BodyDecoder::Length(5));
        assert_eq!(response_framing(&Method::HEAD, &head).expect("framing"), BodyDecoder::Length(0));
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-"[..]);
        assert!(parse_head(&mut partial, true).expect("valid so far").is_none());
    }

    #[test]
    fn connection_header_is_dropped_unless_it_names_headers() {
        let wire = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nServer: x\r\nContent-Length: 0\r\n\r\n";
        let head = parse_head(&mut BytesMut::from(&wire[..]), false).expect("valid").expect("complete");
        assert!(keeps_alive(&head));
        assert!(!head.headers.contains_key(CONNECTION));
        assert_eq!(head.headers["server"], "x");
        let wire = b"HTTP/1.1 200 OK\r\nCONNECTION: close, X-Hop\r\nX-Hop: 1\r\n\r\n";
        let head = parse_head(&mut BytesMut::from(&wire[..]), false).expect("valid").expect("complete");
        assert!(!keeps_alive(&head));
        assert_eq!(head.headers[CONNECTION], "close, X-Hop");
        let head =
            parse_head(&mut BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\n"[..]), true).expect("valid").expect("done");
        assert!(!keeps_alive(&head));
    }

    fn raw(wire: &[u8]) -> ResponseHead {
        parse_head(&mut BytesMut::from(wire), true).expect("valid").expect("complete")
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
        encode_head(&Method::POST, "/x?y=1", &headers, Framing::Length(3), &mut out);
        assert_eq!(&out[..], b"POST /x?y=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n");
    }
}

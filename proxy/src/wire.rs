//! HTTP/1.1 wire helpers both sides share: where a head ends, the header names that are
//! matched without the general parse, a response's header lines passed on as they arrived,
//! and writing a message body (downstream responses, upstream requests).

use std::io;
use std::pin::Pin;
use std::task::Poll;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::body::BoxError;

/// Whether `value` is a valid `Host`: `uri-host [ ":" port ]` (RFC 3986 §3.2.2-3.2.3), an IP
/// literal in brackets or a reg-name (which IPv4 addresses are, too). Empty is valid: it is
/// what a client sends for a target without an authority.
pub fn is_valid_host(value: &[u8]) -> bool {
    if let [b'[', rest @ ..] = value {
        return match rest.iter().position(|&b| b == b']') {
            Some(close)
                if close > 0 && rest[..close].iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') =>
            {
                is_port(&rest[close + 1..])
            }
            _ => false,
        };
    }
    // A reg-name, in one pass: the check runs on every request's `Host`.
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        if REG_NAME[usize::from(b)] {
            i += 1;
        } else if b == b':' {
            return value[i + 1..].iter().all(u8::is_ascii_digit);
        } else if b == b'%' && value.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
            i += 3;
        } else {
            return false;
        }
    }
    true
}

/// Whether `rest`, after an IP literal, is nothing or `:` and a port's digits.
fn is_port(rest: &[u8]) -> bool {
    match rest {
        [] => true,
        [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// The bytes RFC 3986 allows in a `reg-name` as they are: unreserved characters and
/// sub-delimiters.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let allowed = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=";
    let mut i = 0;
    while i < allowed.len() {
        table[allowed[i] as usize] = true;
        i += 1;
    }
    table
};

/// Heads larger than this are refused (upstream) or left to hyper (downstream).
pub const MAX_HEAD: usize = 64 * 1024;
/// Headers beyond this count are refused (upstream) or left to hyper (downstream).
pub const MAX_HEADERS: usize = 100;

/// The length of the head at the start of `buf` (through its blank line), accepting bare LF
/// line ends as httparse does; `None` while it is incomplete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|lf| match buf.get(lf + 1..lf + 3) {
        Some([b'\r', b'\n']) => Some(lf + 3),
        Some([b'\n', _]) => Some(lf + 2),
        None if buf.get(lf + 1) == Some(&b'\n') => Some(lf + 2),
        _ => None,
    })
}

/// The header name `raw`, which httparse has accepted as a token: the names most requests and
/// responses carry are matched by length and then bytes, cheaper than the general parse in
/// `HeaderName::from_bytes` (a sixth of a response head's cost); others take that parse.
pub fn header_name(raw: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    match common_name(raw) {
        Some(name) => Ok(name),
        None => HeaderName::from_bytes(raw),
    }
}

fn common_name(raw: &[u8]) -> Option<HeaderName> {
    use http::header::{
        ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE, ACCEPT_RANGES, AUTHORIZATION, CACHE_CONTROL, CONNECTION,
        CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, DATE, ETAG, HOST, LAST_MODIFIED, ORIGIN, REFERER,
        SERVER, TRANSFER_ENCODING, USER_AGENT, VARY,
    };
    // Within a length, the names responses carry come first (the upstream side parses more heads).
    let candidates: &[(&[u8], HeaderName)] = match raw.len() {
        4 => &[(b"date", DATE), (b"etag", ETAG), (b"vary", VARY), (b"host", HOST)],
        6 => &[(b"server", SERVER), (b"accept", ACCEPT), (b"cookie", COOKIE), (b"origin", ORIGIN)],
        7 => &[(b"referer", REFERER)],
        10 => &[(b"connection", CONNECTION), (b"user-agent", USER_AGENT)],
        12 => &[(b"content-type", CONTENT_TYPE)],
        13 => &[
            (b"cache-control", CACHE_CONTROL),
            (b"last-modified", LAST_MODIFIED),
            (b"accept-ranges", ACCEPT_RANGES),
            (b"authorization", AUTHORIZATION),
        ],
        14 => &[(b"content-length", CONTENT_LENGTH)],
        15 => &[(b"accept-encoding", ACCEPT_ENCODING), (b"accept-language", ACCEPT_LANGUAGE)],
        16 => &[(b"content-encoding", CONTENT_ENCODING)],
        17 => &[(b"transfer-encoding", TRANSFER_ENCODING)],
        _ => return None,
    };
    candidates.iter().find(|(known, _)| is_token_lowercase(raw, known)).map(|(_, name)| name.clone())
}

/// Whether the header name `raw`, which httparse accepted as a token, is the lower-case `known`
/// in any case. Setting bit 0x20 lower-cases a letter; no other token character becomes a
/// letter, digit or `-` by it, so one OR per byte, without branches, replaces the per-byte
/// case folding of `eq_ignore_ascii_case` (a seventh of a response head's parse).
fn is_token_lowercase(raw: &[u8], known: &[u8]) -> bool {
    raw.len() == known.len() && raw.iter().zip(known).fold(0, |diff, (r, k)| diff | ((r | 0x20) ^ k)) == 0
}

/// What a header name means to the framing and hop-by-hop rules (RFC 9110 §7.6.1, RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameClass {
    /// `Connection`: hop-by-hop, and may name more hop-by-hop headers.
    Connection,
    /// `TE`: hop-by-hop, though `TE: trailers` is passed on (gRPC needs it).
    Te,
    /// `Transfer-Encoding`: hop-by-hop; frames the body.
    TransferEncoding,
    /// `Upgrade`: hop-by-hop unless the protocol switch goes through.
    Upgrade,
    /// `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate` or `Proxy-Authorization`.
    HopByHop,
    /// `Content-Length`.
    ContentLength,
    /// `Date`.
    Date,
    /// Any other name: end to end.
    Other,
}

/// The class of the header name `raw` (a token, in any case): one length comparison for most
/// names, then at most two byte comparisons.
pub fn classify(raw: &[u8]) -> NameClass {
    let is = |known: &[u8]| is_token_lowercase(raw, known);
    match raw.len() {
        2 if is(b"te") => NameClass::Te,
        4 if is(b"date") => NameClass::Date,
        7 if is(b"upgrade") => NameClass::Upgrade,
        10 if is(b"connection") => NameClass::Connection,
        10 if is(b"keep-alive") => NameClass::HopByHop,
        14 if is(b"content-length") => NameClass::ContentLength,
        16 if is(b"proxy-connection") => NameClass::HopByHop,
        17 if is(b"transfer-encoding") => NameClass::TransferEncoding,
        18 if is(b"proxy-authenticate") => NameClass::HopByHop,
        19 if is(b"proxy-authorization") => NameClass::HopByHop,
        _ => NameClass::Other,
    }
}

/// Runs of lines a [`RawHeaders`] holds at most; a head that needs more is parsed into a map.
const MAX_RUNS: usize = 4;

/// The end-to-end header lines of an upstream HTTP/1.1 response, as they arrived (hop-by-hop
/// lines left out). A response nobody reads or changes the headers of goes downstream with
/// one copy per run of lines, instead of each header being hashed into a `HeaderMap` and
/// encoded again: with callgrind on the peers benchmark, that was a sixth of a request's cost.
///
/// It travels in the response body ([`WithRawHeaders`]), beside an empty `HeaderMap`;
/// whatever reads the headers first calls [`materialize`], which moves the lines into the map.
///
/// Boxed: a response is moved a dozen times on its way through the proxy, and one pointer
/// moves cheaper than the lines' bookkeeping.
#[derive(Debug, Clone)]
pub struct RawHeaders(Box<Lines>);

#[derive(Debug, Clone)]
struct Lines {
    /// The response head the lines are in.
    head: Bytes,
    /// Runs of whole lines, CR LF included, as offsets into `head`.
    runs: [(u32, u32); MAX_RUNS],
    run_count: u8,
    content_length: Option<u64>,
    has_date: bool,
}

impl RawHeaders {
    /// No lines yet of `head`, a complete response head.
    pub fn new(head: Bytes) -> Self {
        Self(Box::new(Lines { head, runs: [(0, 0); MAX_RUNS], run_count: 0, content_length: None, has_date: false }))
    }

    /// Keeps the line at `start..end` of the head (CR LF included). Returns `false` when it
    /// would take more runs than fit: the head has too many dropped lines in between.
    pub fn keep_line(&mut self, start: usize, end: usize) -> bool {
        let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(end)) else { return false };
        let lines = &mut *self.0;
        let count = usize::from(lines.run_count);
        if count > 0 && lines.runs[count - 1].1 == start {
            lines.runs[count - 1].1 = end;
            return true;
        }
        if count == MAX_RUNS {
            return false;
        }
        lines.runs[count] = (start, end);
        lines.run_count += 1;
        true
    }

    /// Notes the value of the kept `Content-Length` line, which frames the downstream body.
    pub fn set_content_length(&mut self, length: Option<u64>) {
        self.0.content_length = length;
    }

    /// Notes that a kept line is `Date`.
    pub fn set_date(&mut self) {
        self.0.has_date = true;
    }

    /// The `Content-Length` among the lines.
    pub fn content_length(&self) -> Option<u64> {
        self.0.content_length
    }

    /// Whether a `Date` line is among them.
    pub fn has_date(&self) -> bool {
        self.0.has_date
    }

    fn runs(&self) -> impl Iterator<Item = &[u8]> {
        let lines = &*self.0;
        lines.runs[..usize::from(lines.run_count)].iter().map(|&(s, e)| &lines.head[s as usize..e as usize])
    }

    /// The headers as name (as it arrived), value (trimmed) pairs, in order.
    pub fn lines(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.runs().flat_map(whole_lines).filter_map(split_line)
    }

    /// Drops the lines of header `name` (any case). Returns `false`, changing nothing, when
    /// the lines left would take more runs than fit; the caller then moves them into a map.
    pub fn remove(&mut self, name: &[u8]) -> bool {
        let lines = &*self.0;
        let (mut runs, mut count, mut removed) = ([(0u32, 0u32); MAX_RUNS], 0, false);
        for &(start, end) in &lines.runs[..usize::from(lines.run_count)] {
            let mut at = start;
            for line in whole_lines(&lines.head[start as usize..end as usize]) {
                let line_end = at + line.len() as u32;
                // A kept line has no space before its colon (httparse refuses one).
                if line.get(name.len()) == Some(&b':') && line[..name.len()].eq_ignore_ascii_case(name) {
                    removed = true;
                } else if count > 0 && runs[count - 1].1 == at {
                    runs[count - 1].1 = line_end;
                } else if count == MAX_RUNS {
                    return false;
                } else {
                    runs[count] = (at, line_end);
                    count += 1;
                }
                at = line_end;
            }
        }
        if removed {
            let lines = &mut *self.0;
            (lines.runs, lines.run_count) = (runs, count as u8);
            match classify(name) {
                NameClass::ContentLength => lines.content_length = None,
                NameClass::Date => lines.has_date = false,
                _ => {}
            }
        }
        true
    }

    /// Appends the lines, as they arrived, to `out`.
    pub fn write_to(&self, out: &mut BytesMut) {
        for run in self.runs() {
            out.put_slice(run);
        }
    }

    /// Appends the headers to `map`; values share the head's memory.
    pub fn append_to(&self, map: &mut HeaderMap) {
        for (name, value) in self.lines() {
            let value = self.0.head.slice_ref(value);
            if let (Ok(name), Ok(value)) = (header_name(name), HeaderValue::from_maybe_shared(value)) {
                map.append(name, value);
            }
        }
    }
}

/// The lines of `run`, each with its line end. A search per line, not a test per byte.
fn whole_lines(mut run: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let end = memchr::memchr(b'\n', run).map_or(run.len(), |i| i + 1);
        let (line, rest) = run.split_at(end);
        run = rest;
        (!line.is_empty()).then_some(line)
    })
}

/// A header line's name and trimmed value. httparse validated every kept line: a token, a
/// colon, a value of visible characters.
fn split_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = memchr::memchr(b':', line)?;
    Some((&line[..colon], line[colon + 1..].trim_ascii()))
}

/// A response body that may carry its response's header lines raw (see [`RawHeaders`]).
pub trait WithRawHeaders {
    /// The raw header lines, if the response has them.
    fn raw_headers(&self) -> Option<&RawHeaders> {
        None
    }

    /// Takes them out, to move them into the map.
    fn take_raw_headers(&mut self) -> Option<RawHeaders> {
        None
    }
}

/// Moves the raw header lines a response may carry (see [`RawHeaders`]) into its `HeaderMap`,
/// for code that reads or changes its headers.
pub fn materialize<B: WithRawHeaders>(response: &mut http::Response<B>) {
    if let Some(raw) = response.body_mut().take_raw_headers() {
        raw.append_to(response.headers_mut());
    }
}

/// Buffered body bytes are written out at this size; larger frames go straight out.
pub const WRITE_CHUNK: usize = 16 * 1024;

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body follows (a request without one; `HEAD`, 1xx, 204, 304 responses).
    None,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Why a message body was not written whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyWriteError {
    /// The connection failed.
    #[error("writing the body: {0}")]
    Io(#[from] io::Error),
    /// The body itself failed (its source broke off).
    #[error("the body failed: {0}")]
    Body(BoxError),
    /// The body ran past the `Content-Length` its head announced.
    #[error("the body is longer than its announced {0} bytes")]
    TooLong(u64),
}

/// Writes `body` to `io` after whatever `out` already holds (its head, typically), framed as
/// `framing` says: with [`Framing::None`] the body is not read, with [`Framing::Chunked`] each
/// data frame is a chunk (and the last chunk ends it). Frames gather in `out`, which is written
/// when it fills, when the body must wait for its next frame, and at the end: a head and a
/// small body leave in one write. Trailers and empty frames are skipped. A body longer than its
/// [`Framing::Length`] stops with [`BodyWriteError::TooLong`] before the excess is written.
/// Returns the data bytes written; on an error, `out` may still hold some of them.
pub async fn write_body<I, B>(
    io: &mut I,
    out: &mut BytesMut,
    mut body: Pin<&mut B>,
    framing: Framing,
) -> Result<u64, BodyWriteError>
where
    I: AsyncWrite + Unpin,
    B: http_body::Body<Data = Bytes, Error = BoxError> + ?Sized,
{
    let (chunked, length) = match framing {
        Framing::None => {
            flush(io, out).await?;
            return Ok(0);
        }
        Framing::Length(n) => (false, Some(n)),
        Framing::Chunked => (true, None),
    };
    let mut sent = 0u64;
    loop {
        // Take what the body has now; only when it must wait, send what is buffered first.
        let frame = match std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                flush(io, out).await?;
                std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => return Err(BodyWriteError::Body(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        sent += data.len() as u64;
        if let Some(n) = length
            && sent > n
        {
            return Err(BodyWriteError::TooLong(n));
        }
        if chunked {
            // Writing into a `BytesMut` cannot fail.
            let _ = std::fmt::Write::write_fmt(out, format_args!("{:x}\r\n", data.len()));
        }
        if data.len() >= WRITE_CHUNK {
            flush(io, out).await?;
            io.write_all(&data).await?;
        } else {
            out.put_slice(&data);
        }
        if chunked {
            out.put_slice(b"\r\n");
        }
        if out.len() >= WRITE_CHUNK {
            flush(io, out).await?;
        }
    }
    if chunked {
        out.put_slice(b"0\r\n\r\n");
    }
    flush(io, out).await?;
    Ok(sent)
}

/// Writes all of `out` to `io` and empties it, keeping its memory.
pub async fn flush<I: AsyncWrite + Unpin>(io: &mut I, out: &mut BytesMut) -> io::Result<()> {
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::header::{CONTENT_LENGTH, DATE, ETAG, HOST, USER_AGENT};

    use super::*;

    #[test]
    fn hosts_are_checked_against_rfc_3986() {
        for valid in ["", "a.example", "a.example:8080", "127.0.0.1:80", "[::1]", "[::1]:443", "x%41y", "a_b~c:"] {
            assert!(is_valid_host(valid.as_bytes()), "{valid}");
        }
        for invalid in ["a b", "a/b", "a@b", "a:8o", "[::1", "[]", "[::1]x", "x%4", "x%zz", "a\u{7f}", "é"] {
            assert!(!is_valid_host(invalid.as_bytes()), "{invalid}");
        }
    }

    /// Two data frames, "hello" and " world!".
    fn two_frames() -> crate::body::Body {
        use crate::body::Body;
        Body::Prefixed(Some(Bytes::from_static(b"hello")), Box::new(Body::full(&b" world!"[..])))
    }

    #[tokio::test]
    async fn bodies_follow_their_head_in_one_write_framed_and_held_to_their_length() {
        let (mut wire, mut out) = (Vec::new(), BytesMut::from(&b"HEAD\r\n"[..]));
        let sent =
            write_body(&mut wire, &mut out, Pin::new(&mut two_frames()), Framing::Chunked).await.expect("written");
        assert_eq!(sent, 12);
        assert_eq!(wire, b"HEAD\r\n5\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n");
        assert!(out.is_empty(), "everything went out");

        let (mut wire, mut out) = (Vec::new(), BytesMut::new());
        let sent =
            write_body(&mut wire, &mut out, Pin::new(&mut two_frames()), Framing::Length(12)).await.expect("written");
        assert_eq!((sent, wire.as_slice()), (12, &b"hello world!"[..]));

        let (mut wire, mut out) = (Vec::new(), BytesMut::new());
        let err = write_body(&mut wire, &mut out, Pin::new(&mut two_frames()), Framing::Length(8)).await;
        assert!(matches!(err, Err(BodyWriteError::TooLong(8))), "{err:?}");
        assert_eq!((wire.as_slice(), &out[..]), (&b""[..], &b"hello"[..]), "the excess frame was not written");
    }

    #[test]
    fn common_names_match_in_any_case_and_nothing_else() {
        for raw in ["content-length", "Content-Length", "CONTENT-LENGTH", "cOnTeNt-LeNgTh"] {
            assert_eq!(common_name(raw.as_bytes()), Some(CONTENT_LENGTH), "{raw}");
        }
        assert_eq!(common_name(b"Date"), Some(DATE));
        assert_eq!(common_name(b"ETag"), Some(ETAG));
        assert_eq!(common_name(b"Host"), Some(HOST));
        assert_eq!(common_name(b"User-Agent"), Some(USER_AGENT));
        // Same lengths, other names: the general parse takes them, with the same result.
        for raw in ["content_length", "content-lengti", "dat_", "x-served-by-abc"] {
            assert_eq!(common_name(raw.as_bytes()), None, "{raw}");
            assert_eq!(header_name(raw.as_bytes()).ok(), HeaderName::from_bytes(raw.as_bytes()).ok());
        }
    }

    #[test]
    fn names_classify_in_any_case() {
        use NameClass::*;
        for (raw, class) in [
            ("Connection", Connection),
            ("te", Te),
            ("Transfer-Encoding", TransferEncoding),
            ("UPGRADE", Upgrade),
            ("Keep-Alive", HopByHop),
            ("Proxy-Connection", HopByHop),
            ("Proxy-Authenticate", HopByHop),
            ("proxy-authorization", HopByHop),
            ("Content-Length", ContentLength),
            ("date", Date),
            ("x-connection", Other),
            ("tf", Other),
            ("content-lengtx", Other),
        ] {
            assert_eq!(classify(raw.as_bytes()), class, "{raw}");
        }
    }

    /// Raw lines of `head` (status line, header lines, blank line), keeping every header
    /// line except those named in `drop`, as the upstream reader does with hop-by-hop ones.
    fn raw_lines(head: &'static [u8], drop: &[&str]) -> RawHeaders {
        let mut raw = RawHeaders::new(Bytes::from_static(head));
        let mut at = memchr::memchr(b'\n', head).expect("a status line") + 1;
        for line in head[at..head.len() - 2].split_inclusive(|&b| b == b'\n') {
            let (name, value) = split_line(line).expect("a header line");
            if !drop.iter().any(|d| d.as_bytes().eq_ignore_ascii_case(name)) {
                assert!(raw.keep_line(at, at + line.len()));
                match classify(name) {
                    NameClass::ContentLength => {
                        raw.set_content_length(std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()))
                    }
                    NameClass::Date => raw.set_date(),
                    _ => {}
                }
            }
            at += line.len();
        }
        raw
    }

    fn written(raw: &RawHeaders) -> String {
        let mut out = BytesMut::new();
        raw.write_to(&mut out);
        String::from_utf8(out.to_vec()).expect("ascii")
    }

    #[test]
    fn raw_lines_lose_a_header_in_any_case_and_keep_the_rest_in_order() {
        let head =
            b"HTTP/1.1 200 OK\r\nServer: x\r\nX-A: 1\r\nDate: d\r\nx-a:2\r\nContent-Length: 5\r\nETag: e\r\n\r\n";
        let mut raw = raw_lines(head, &[]);
        assert_eq!(
            raw.lines().map(|(n, _)| n).collect::<Vec<_>>(),
            [&b"Server"[..], b"X-A", b"Date", b"x-a", b"Content-Length", b"ETag"]
        );
        assert_eq!(raw.lines().nth(3), Some((&b"x-a"[..], &b"2"[..])), "values trimmed");
        assert!(raw.remove(b"x-absent"));
        assert_eq!(written(&raw), "Server: x\r\nX-A: 1\r\nDate: d\r\nx-a:2\r\nContent-Length: 5\r\nETag: e\r\n");
        assert!(raw.remove(b"X-a"));
        assert_eq!(written(&raw), "Server: x\r\nDate: d\r\nContent-Length: 5\r\nETag: e\r\n");
        assert_eq!((raw.content_length(), raw.has_date()), (Some(5), true));
        assert!(raw.remove(b"content-length") && raw.remove(b"DATE"));
        assert_eq!((raw.content_length(), raw.has_date()), (None, false), "framing notes follow the lines");
        assert_eq!(written(&raw), "Server: x\r\nETag: e\r\n");
    }

    #[test]
    fn raw_lines_refuse_a_removal_that_takes_more_runs_than_fit() {
        let head = b"HTTP/1.1 200 OK\r\nA: 1\r\nX: 1\r\nB: 1\r\nX: 2\r\nC: 1\r\nX: 3\r\nD: 1\r\nX: 4\r\nE: 1\r\n\r\n";
        let mut raw = raw_lines(head, &[]);
        assert!(!raw.remove(b"x"), "five runs left");
        assert_eq!(raw.lines().count(), 9, "nothing changed");
        let mut raw = raw_lines(head, &["e"]);
        assert!(raw.remove(b"x"), "four runs left");
        assert_eq!(written(&raw), "A: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n");
    }

    #[test]
    fn heads_end_at_the_blank_line_with_either_line_end() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }
}

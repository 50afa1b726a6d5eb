//! A response's header lines passed on as they arrived, without a `HeaderMap` in between.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};

use crate::head::{NameClass, classify, header_name};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}

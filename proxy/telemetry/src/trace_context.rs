//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the proxy joins the trace a
//! request carries in `traceparent` (or starts one when it carries none or an invalid one),
//! gives its own hop a fresh span id, and tells the upstream that span is its parent.
//! `tracestate` is passed through untouched, as the specification asks of a participant that
//! adds no vendor entry.

use std::fmt;

use http::header::{Entry, HeaderMap, HeaderName, HeaderValue};

/// The `traceparent` header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The `tracestate` header.
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Trace flag: the caller records this trace.
const SAMPLED: u8 = 0x01;

/// The proxy's hop of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace, from the caller or new.
    pub trace_id: [u8; 16],
    /// The caller's span, absent when the proxy started the trace.
    pub parent_id: Option<[u8; 8]>,
    /// The proxy's own span for this request: the upstream's parent.
    pub span_id: [u8; 8],
    /// Trace flags, passed on as received (for a new trace, sampled or not by the ratio).
    pub flags: u8,
}

impl TraceContext {
    /// Joins the trace `headers` carry (keeping the caller's sampled flag), or starts a new one
    /// recorded with probability `sample_ratio`, and points `traceparent` at the proxy's span
    /// for the upstream.
    pub fn propagate(headers: &mut HeaderMap, sample_ratio: f64) -> Self {
        let span_id = random_nonzero::<8>();
        // One hash and probe finds the caller's `traceparent` and replaces it.
        let mut slot = headers.entry(&TRACEPARENT);
        let incoming = match &slot {
            Entry::Occupied(e) => parse(e.get().as_bytes()),
            Entry::Vacant(_) => None,
        };
        let ctx = match incoming {
            Some((trace_id, parent, flags)) => Self { trace_id, parent_id: Some(parent), span_id, flags },
            None => {
                let flags = if sample_ratio >= 1.0 || fastrand::f64() < sample_ratio { SAMPLED } else { 0 };
                Self { trace_id: random_nonzero::<16>(), parent_id: None, span_id, flags }
            }
        };
        match slot {
            Entry::Occupied(ref mut e) => {
                e.insert(ctx.header_value());
            }
            Entry::Vacant(e) => {
                e.insert(ctx.header_value());
            }
        }
        if incoming.is_none() {
            // A tracestate without a valid traceparent has no trace to belong to.
            headers.remove(&TRACESTATE);
        }
        ctx
    }

    /// `traceparent` naming the proxy's span as the parent.
    pub fn header_value(&self) -> HeaderValue {
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        hex_into(&self.trace_id, &mut out[3..35]);
        out[35] = b'-';
        hex_into(&self.span_id, &mut out[36..52]);
        out[52] = b'-';
        hex_into(&[self.flags], &mut out[53..55]);
        HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
    }

    /// Whether the caller asked for this trace to be recorded.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

/// Lower-case hex of an id, as logs and headers show it.
#[derive(Debug)]
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Parses `version-traceid-parentid-flags`. Version 00 must be exactly that; a later version
/// may append fields, which are ignored; version ff and all-zero ids are invalid.
fn parse(v: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&v[..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) || (version != 0 && v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace_id = unhex::<16>(&v[3..35])?;
    let parent = unhex::<8>(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace_id, parent, flags))
}

/// Decodes lower-case hex (the specification forbids upper case).
fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

fn random_nonzero<const N: usize>() -> [u8; N] {
    loop {
        // One 128-bit draw fills either id (8 or 16 bytes).
        let mut id = [0u8; N];
        id.copy_from_slice(&fastrand::u128(..).to_ne_bytes()[..N]);
        if id != [0; N] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn joins_the_callers_trace_with_a_new_span() {
        let mut headers = HeaderMap::new();
        headers.insert(&TRACEPARENT, HeaderValue::from_static(INCOMING));
        headers.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
        let ctx = TraceContext::propagate(&mut headers, 1.0);
        assert_eq!(Hex(&ctx.trace_id).to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.parent_id.map(|p| Hex(&p).to_string()).as_deref(), Some("00f067aa0ba902b7"));
        assert!(ctx.sampled());
        let out = headers[&TRACEPARENT].to_str().expect("ascii");
        assert_eq!(out, format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", Hex(&ctx.span_id)));
        assert_ne!(&out[36..52], "00f067aa0ba902b7", "the upstream's parent is the proxy's span");
        assert_eq!(headers["tracestate"], "congo=t61rcWkgMzE");
    }

    #[test]
    fn invalid_or_absent_context_starts_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(&TRACEPARENT, HeaderValue::from_str(bad).expect("header"));
            headers.insert("tracestate", HeaderValue::from_static("a=b"));
            let ctx = TraceContext::propagate(&mut headers, 1.0);
            assert_eq!(ctx.parent_id, None, "{bad:?}");
            assert_ne!(Hex(&ctx.trace_id).to_string(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad:?}");
            assert!(headers.get("tracestate").is_none(), "{bad:?}");
            assert!(parse(headers[&TRACEPARENT].as_bytes()).is_some(), "{bad:?}: the new header is valid");
        }
    }

    #[test]
    fn a_later_version_is_read_as_far_as_version_00_goes() {
        let v = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future";
        let (trace, parent, flags) = parse(v).expect("valid");
        assert_eq!(Hex(&trace).to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(Hex(&parent).to_string(), "00f067aa0ba902b7");
        assert_eq!(flags, 0);
    }

    #[test]
    fn new_traces_are_sampled_by_the_ratio_and_joined_ones_keep_the_callers_flag() {
        let sampled = |ratio: f64| {
            (0..1000)
                .filter(|_| {
                    let mut headers = HeaderMap::new();
                    TraceContext::propagate(&mut headers, ratio).sampled()
                })
                .count()
        };
        assert_eq!(sampled(0.0), 0);
        assert_eq!(sampled(1.0), 1000);
        let some = sampled(0.25);
        assert!((150..350).contains(&some), "{some} of 1000 sampled at 0.25");

        let mut headers = HeaderMap::new();
        headers.insert(&TRACEPARENT, HeaderValue::from_static(INCOMING));
        assert!(TraceContext::propagate(&mut headers, 0.0).sampled(), "the caller's sampled flag wins");
        let mut headers = HeaderMap::new();
        let unsampled = INCOMING.replace("-01", "-00");
        headers.insert(&TRACEPARENT, HeaderValue::from_str(&unsampled).expect("header"));
        let ctx = TraceContext::propagate(&mut headers, 1.0);
        assert!(!ctx.sampled());
        assert!(headers[&TRACEPARENT].to_str().expect("ascii").ends_with("-00"));
    }
}

//! The packed buffers that cross the sandbox boundary, laid out as `wit/plugin.wit` says: the
//! heads a plugin sees (`request-head`, `response-head`) and the changes it answers
//! (`mutations`). One buffer is one allocation and one copy; a string per field, header or
//! change cost an allocation on one side and a free on the other, on every call.

use std::cell::RefCell;

use http::{HeaderMap, HeaderName, HeaderValue};

use wasmesh_http1::RawHeaders;

/// A request as the proxy holds it, borrowed for one plugin call.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a str,
    /// `Host` (or `:authority`).
    pub authority: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// `ip:port` of the downstream client.
    pub client_addr: &'a str,
    /// All request headers; the plugin is passed the ones it declared.
    pub headers: &'a HeaderMap,
}

/// A response head, borrowed for one plugin call.
#[derive(Debug, Clone, Copy)]
pub struct ResponseView<'a> {
    /// Status code.
    pub status: u16,
    /// Response headers held as they arrived from the upstream, if any; they come first.
    pub raw: Option<&'a RawHeaders>,
    /// The other response headers. The plugin is passed the ones it declared, of both.
    pub headers: &'a HeaderMap,
}

/// The headers a plugin is passed.
#[derive(Debug, Clone)]
pub enum HeaderInterest {
    /// Every header.
    All,
    /// Only these (an empty list: none).
    Only(Vec<HeaderName>),
}

impl HeaderInterest {
    /// From the lower-case names a plugin declared (`None`: all). A name that is not a valid
    /// header name can never be present, so it is dropped.
    pub fn new(names: Option<&[String]>) -> Self {
        match names {
            None => Self::All,
            Some(names) => Self::Only(names.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect()),
        }
    }

    /// Whether no header is passed.
    pub fn is_none(&self) -> bool {
        matches!(self, Self::Only(names) if names.is_empty())
    }

    /// Whether header `name` (any case) is passed.
    pub fn reads(&self, name: &[u8]) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.iter().any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name)),
        }
    }

    /// Calls `f` with each passed header of `headers`, in the declared order.
    fn each(&self, headers: &HeaderMap, mut f: impl FnMut(&HeaderName, &HeaderValue)) {
        match self {
            Self::All => headers.iter().for_each(|(name, value)| f(name, value)),
            Self::Only(names) => {
                for name in names {
                    headers.get_all(name).iter().for_each(|value| f(name, value));
                }
            }
        }
    }

    /// Appends the passed headers of `headers` to `out` as name, value pairs.
    fn encode(&self, headers: &HeaderMap, out: &mut Vec<u8>) {
        self.each(headers, |name, value| {
            put(out, name.as_str().as_bytes());
            put(out, value.as_bytes());
        });
    }

    /// Copies the passed headers of `from` into `into`.
    pub fn copy(&self, from: &HeaderMap, into: &mut HeaderMap) {
        self.each(from, |name, value| {
            into.append(name.clone(), value.clone());
        });
    }

    /// The passed headers of `headers` as owned name, value pairs (the health-check probe's form).
    pub fn list(&self, headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        self.each(headers, |name, value| out.push((name.as_str().to_owned(), value.as_bytes().to_vec())));
        out
    }
}

impl RequestView<'_> {
    /// Appends this request, with the headers `interest` passes, to `out`.
    pub fn encode(&self, interest: &HeaderInterest, out: &mut Vec<u8>) {
        let fields = [self.method, self.authority, self.path, self.client_addr];
        out.reserve(fields.iter().map(|f| 4 + f.len()).sum());
        for field in fields {
            put(out, field.as_bytes());
        }
        interest.encode(self.headers, out);
    }
}

impl ResponseView<'_> {
    /// Appends this response and the request `req` it answers, with the headers `interest`
    /// passes, to `out`: the request's length and the request first, as `response-head` says.
    pub fn encode(&self, req: &RequestView<'_>, interest: &HeaderInterest, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        req.encode(interest, out);
        let len = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&self.status.to_le_bytes());
        if let Some(raw) = self.raw.filter(|_| !interest.is_none()) {
            for (name, value) in raw.lines().filter(|(name, _)| interest.reads(name)) {
                // Names cross in lower case, as the map's are.
                let at = out.len() + 4;
                put(out, name);
                out[at..].make_ascii_lowercase();
                put(out, value);
            }
        }
        interest.encode(self.headers, out);
    }
}

/// One change of a packed `mutations` buffer, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// Set header `name` to `value`, replacing any of that name.
    Set(&'a [u8], &'a [u8]),
    /// Add `value` to header `name`, keeping those present.
    Append(&'a [u8], &'a [u8]),
    /// Remove header `name`.
    Remove(&'a [u8]),
    /// Replace the path and query.
    Path(&'a [u8]),
}

/// A packed `mutations` buffer that stops following the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed changes from byte {at}")]
pub struct MalformedChanges {
    /// Offset of the change that could not be read.
    pub at: usize,
}

/// The changes packed in `buf`, in order. A malformed change is yielded as an error and ends
/// the iteration: what follows it cannot be framed.
pub fn changes(buf: &[u8]) -> Changes<'_> {
    Changes { buf, at: 0 }
}

/// Iterator over a packed `mutations` buffer; see [`changes`].
#[derive(Debug, Clone)]
pub struct Changes<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Changes<'a> {
    type Item = Result<Change<'a>, MalformedChanges>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.at;
        let &tag = self.buf.get(start)?;
        let mut at = start + 1;
        let mut field = || take(self.buf, &mut at);
        let change = match tag {
            1 => field().zip(field()).map(|(name, value)| Change::Set(name, value)),
            2 => field().zip(field()).map(|(name, value)| Change::Append(name, value)),
            3 => field().map(Change::Remove),
            4 => field().map(Change::Path),
            _ => None,
        };
        self.at = if change.is_some() { at } else { self.buf.len() };
        Some(change.ok_or(MalformedChanges { at: start }))
    }
}

/// The length-prefixed field at `*at`, moving `*at` past it; `None` if `buf` does not hold it.
fn take<'a>(buf: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let len = buf.get(*at..at.checked_add(4)?)?;
    let start = *at + 4;
    let end = start.checked_add(u32::from_le_bytes(len.try_into().ok()?) as usize)?;
    let field = buf.get(start..end)?;
    *at = end;
    Some(field)
}

/// Appends `bytes` with its length. Heads are bounded far below 4 GiB by the listener's
/// header limits; a longer field would be cut, never misframed.
fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..len as usize]);
}

/// Packs one change as the SDK's `Changes` does: the tag, then each field with its length.
/// For code that plays a plugin's answer (the proxy's tests, fuzz targets).
pub fn pack_change(out: &mut Vec<u8>, tag: u8, fields: &[&[u8]]) {
    out.push(tag);
    fields.iter().for_each(|f| put(out, f));
}

/// Runs `f` with an empty buffer that keeps its capacity from call to call on this thread, so
/// packing heads allocates nothing once warm.
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    /// A buffer grown past this by one huge head is not kept.
    const KEEP: usize = 64 * 1024;
    thread_local!(static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) });
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let r = f(&mut buf);
            if buf.capacity() > KEEP {
                *buf = Vec::new();
            }
            r
        }
        // Only if a plugin call ever nests in another: a fresh buffer.
        Err(_) => f(&mut Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the fields back as the SDK does.
    fn fields(mut buf: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while buf.len() >= 4 {
            let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
            out.push(buf[4..4 + len].to_vec());
            buf = &buf[4 + len..];
        }
        assert!(buf.is_empty(), "no trailing bytes");
        out
    }

    #[test]
    fn packed_changes_read_back_in_order_and_stop_at_a_malformed_one() {
        let mut buf = Vec::new();
        pack_change(&mut buf, 3, &[b"x-debug"]);
        pack_change(&mut buf, 1, &[b"x-env", b"prod"]);
        pack_change(&mut buf, 2, &[b"vary", b""]);
        pack_change(&mut buf, 4, &[b"/v2?a=1"]);
        let got: Vec<_> = changes(&buf).collect();
        assert_eq!(
            got,
            vec![
                Ok(Change::Remove(b"x-debug")),
                Ok(Change::Set(b"x-env", b"prod")),
                Ok(Change::Append(b"vary", b"")),
                Ok(Change::Path(b"/v2?a=1")),
            ]
        );

        let whole = buf.len();
        pack_change(&mut buf, 9, &[b"x"]);
        pack_change(&mut buf, 3, &[b"never-read"]);
        let got: Vec<_> = changes(&buf).collect();
        assert_eq!(got.len(), 5, "four changes, then the unknown tag ends it");
        assert_eq!(got[4], Err(MalformedChanges { at: whole }));

        // A field cut short: its change is malformed, the ones before it stand.
        let mut cut = Vec::new();
        pack_change(&mut cut, 3, &[b"x-a"]);
        pack_change(&mut cut, 1, &[b"x-b", b"value"]);
        cut.truncate(cut.len() - 2);
        let got: Vec<_> = changes(&cut).collect();
        assert_eq!(got, vec![Ok(Change::Remove(b"x-a")), Err(MalformedChanges { at: 8 })]);
        assert_eq!(changes(&[]).count(), 0);
    }

    #[test]
    fn a_request_packs_its_fields_then_the_declared_headers_only() {
        let mut headers = HeaderMap::new();
        headers.insert("x-canary", "1".parse().expect("value"));
        headers.append("x-user", "a".parse().expect("value"));
        headers.append("x-user", "b".parse().expect("value"));
        headers.insert("cookie", "secret".parse().expect("value"));
        let view = RequestView {
            method: "GET",
            authority: "api.local",
            path: "/v1?x=1",
            client_addr: "127.0.0.1:5000",
            headers: &headers,
        };
        let mut buf = Vec::new();
        let only = HeaderInterest::new(Some(&["x-user".into(), "x-absent".into(), "not a name".into()]));
        view.encode(&only, &mut buf);
        let got = fields(&buf);
        let want: Vec<&[u8]> =
            vec![b"GET", b"api.local", b"/v1?x=1", b"127.0.0.1:5000", b"x-user", b"a", b"x-user", b"b"];
        assert_eq!(got, want.iter().map(|f| f.to_vec()).collect::<Vec<_>>());

        buf.clear();
        view.encode(&HeaderInterest::new(None), &mut buf);
        assert_eq!(fields(&buf).len(), 4 + 2 * 4, "all four headers when the plugin declared none");
        assert!(HeaderInterest::new(None).reads(b"cookie") && !only.reads(b"cookie") && only.reads(b"X-User"));
    }

    #[test]
    fn a_response_packs_its_request_then_its_status_then_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("server", "x".parse().expect("value"));
        let mut request_headers = HeaderMap::new();
        request_headers.insert("x-trace", "req".parse().expect("value"));
        let req =
            RequestView { method: "GET", authority: "a", path: "/p", client_addr: "c", headers: &request_headers };
        // The request as a field of its own, then the status and the headers.
        let split = |buf: &[u8]| {
            let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
            let (request, rest) = buf[4..].split_at(len);
            (fields(request), u16::from_le_bytes([rest[0], rest[1]]), fields(&rest[2..]))
        };
        let mut buf = Vec::new();
        ResponseView { status: 503, raw: None, headers: &headers }.encode(&req, &HeaderInterest::All, &mut buf);
        let (request, status, response) = split(&buf);
        let want: Vec<&[u8]> = vec![b"GET", b"a", b"/p", b"c", b"x-trace", b"req"];
        assert_eq!(request, want.iter().map(|f| f.to_vec()).collect::<Vec<_>>());
        assert_eq!(status, 503);
        assert_eq!(response, vec![b"server".to_vec(), b"x".to_vec()]);

        // Raw lines first, names lower-cased, then the map's; only the declared ones.
        let mut raw = RawHeaders::new(bytes::Bytes::from_static(b"HTTP/1.1 200 OK\r\nETag: e\r\nX-Trace: t\r\n\r\n"));
        assert!(raw.keep_line(17, 38));
        buf.clear();
        let view = ResponseView { status: 200, raw: Some(&raw), headers: &headers };
        view.encode(&req, &HeaderInterest::All, &mut buf);
        let want: Vec<&[u8]> = vec![b"etag", b"e", b"x-trace", b"t", b"server", b"x"];
        assert_eq!(split(&buf).2, want.iter().map(|f| f.to_vec()).collect::<Vec<_>>());
        buf.clear();
        view.encode(&req, &HeaderInterest::new(Some(&["x-trace".into()])), &mut buf);
        let (request, _, response) = split(&buf);
        assert_eq!(request.len(), 6, "the request passes the declared headers too");
        assert_eq!(response, vec![b"x-trace".to_vec(), b"t".to_vec()]);
    }
}

//! Request and response heads as the host packs them, read in place, and header and path
//! changes packed as the host reads them.

/// A request head as the host packs it (`request-head` in `wit/plugin.wit`), read in place:
/// method, authority, path and client address, then the headers the plugin declared.
#[derive(Debug, Clone)]
pub struct Request {
    buf: Vec<u8>,
    /// Byte ranges of method, authority, path and client address.
    fields: [(usize, usize); 4],
    /// Byte range of the packed headers.
    headers: (usize, usize),
}

impl Request {
    /// Reads the packed head `buf`. A malformed buffer (never sent by the host) reads as empty
    /// fields and no headers rather than failing the plugin.
    pub fn new(buf: Vec<u8>) -> Self {
        let end = buf.len();
        Self::within(buf, 0, end)
    }

    /// Reads the head packed in `buf[start..end]`.
    fn within(buf: Vec<u8>, start: usize, end: usize) -> Self {
        let mut fields = [(start, start); 4];
        let mut at = start;
        for slot in &mut fields {
            let Some(range) = field(&buf[..end], at) else { break };
            *slot = range;
            at = range.1;
        }
        Self { buf, fields, headers: (at, end) }
    }

    fn text(&self, i: usize) -> &str {
        let (start, end) = self.fields[i];
        std::str::from_utf8(&self.buf[start..end]).unwrap_or_default()
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &str {
        self.text(0)
    }

    /// The authority (`Host`), empty when the request had none.
    pub fn authority(&self) -> &str {
        self.text(1)
    }

    /// The path and query.
    pub fn path(&self) -> &str {
        self.text(2)
    }

    /// The downstream client's `ip:port`.
    pub fn client_addr(&self) -> &str {
        self.text(3)
    }

    /// The headers passed: the ones the plugin declared in its `interest`.
    pub fn headers(&self) -> Headers<'_> {
        Headers { rest: &self.buf[self.headers.0..self.headers.1] }
    }

    /// The first value of header `name` (lower-case), if passed and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name)
    }
}

/// A response head as the host packs it (`response-head` in `wit/plugin.wit`), with the
/// request it answers, read in place.
#[derive(Debug, Clone)]
pub struct Response {
    request: Request,
    /// Where the status is; the headers follow it.
    status_at: usize,
}

impl Response {
    /// Reads the packed head `buf`. A malformed buffer (never sent by the host) reads as an
    /// empty request, status 0 and no headers.
    pub fn new(buf: Vec<u8>) -> Self {
        let (start, end) = field(&buf, 0).unwrap_or((buf.len(), buf.len()));
        Self { request: Request::within(buf, start, end), status_at: end }
    }

    /// The request this response answers.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The status code (0 in a malformed buffer, never sent by the host).
    pub fn status(&self) -> u16 {
        match self.request.buf.get(self.status_at..self.status_at + 2) {
            Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
            _ => 0,
        }
    }

    /// The headers passed: the ones the plugin declared in its `interest`.
    pub fn headers(&self) -> Headers<'_> {
        Headers { rest: self.request.buf.get(self.status_at + 2..).unwrap_or_default() }
    }

    /// The first value of header `name` (lower-case), if passed and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name)
    }
}

/// Packed header name (lower-case), value pairs, iterated in the order the host passed them.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    rest: &'a [u8],
}

impl<'a> Headers<'a> {
    /// The first value of header `name` (lower-case), if present and UTF-8.
    pub fn get(mut self, name: &str) -> Option<&'a str> {
        // Names compared as bytes: only the value found is checked as UTF-8.
        let (_, value) = std::iter::from_fn(|| self.next_raw()).find(|(n, _)| *n == name.as_bytes())?;
        std::str::from_utf8(value).ok()
    }

    /// The next name, value pair as bytes.
    fn next_raw(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let (name_start, name_end) = field(self.rest, 0)?;
        let (value_start, value_end) = field(self.rest, name_end)?;
        let pair = (&self.rest[name_start..name_end], &self.rest[value_start..value_end]);
        self.rest = &self.rest[value_end..];
        Some(pair)
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (name, value) = self.next_raw()?;
        Some((std::str::from_utf8(name).unwrap_or_default(), value))
    }
}

/// Header and path changes, packed as the host reads them (`mutations` in `wit/plugin.wit`),
/// applied in the order they were added. Build it once where it does not change (at `init`)
/// and [`extend`](Self::extend) or clone it per call: one buffer, one allocation.
/// ```ignore
/// let changes = Changes::new().remove("x-debug").set("x-env", "prod");
/// FilterAction::Mutate(changes.into())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    buf: Vec<u8>,
}

impl Changes {
    const SET: u8 = 1;
    const APPEND: u8 = 2;
    const REMOVE: u8 = 3;
    const PATH: u8 = 4;

    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// No changes yet, with room for `bytes` of them.
    pub fn with_capacity(bytes: usize) -> Self {
        Self { buf: Vec::with_capacity(bytes) }
    }

    /// Sets header `name` to `value`, replacing any header of that name.
    pub fn set(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.change(Self::SET, &[name.as_bytes(), value.as_ref()])
    }

    /// Adds a value to header `name`, keeping those present.
    pub fn append(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.change(Self::APPEND, &[name.as_bytes(), value.as_ref()])
    }

    /// Removes header `name`.
    pub fn remove(self, name: &str) -> Self {
        self.change(Self::REMOVE, &[name.as_bytes()])
    }

    /// Replaces the path and query (requests only).
    pub fn path(self, path: &str) -> Self {
        self.change(Self::PATH, &[path.as_bytes()])
    }

    /// Adds all of `other`'s changes after these.
    pub fn extend(mut self, other: &Changes) -> Self {
        self.buf.extend_from_slice(&other.buf);
        self
    }

    /// Whether there are no changes.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The packed size in bytes (for [`with_capacity`](Self::with_capacity)).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    fn change(mut self, tag: u8, fields: &[&[u8]]) -> Self {
        self.buf.push(tag);
        for field in fields {
            // Names, values and paths are far below 4 GiB; a longer one would be cut.
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(&field[..len as usize]);
        }
        self
    }
}

/// The packed buffer a `mutate` decision carries.
impl From<Changes> for Vec<u8> {
    fn from(changes: Changes) -> Self {
        changes.buf
    }
}

/// The byte range of the length-prefixed field at `at`, if `buf` holds all of it.
fn field(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let len = buf.get(at..at.checked_add(4)?)?;
    let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    let start = at + 4;
    let end = start.checked_add(len)?;
    (end <= buf.len()).then_some((start, end))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `fields`, each a little-endian u32 length and its bytes, as the host packs heads.
    pub(crate) fn pack(fields: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in fields {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn a_packed_request_reads_back() {
        let req =
            Request::new(pack(&[b"GET", b"api", b"/x?y=1", b"1.2.3.4:5", b"x-a", b"1", b"x-b", b"\xff", b"x-a", b"2"]));
        assert_eq!(
            (req.method(), req.authority(), req.path(), req.client_addr()),
            ("GET", "api", "/x?y=1", "1.2.3.4:5")
        );
        assert_eq!(req.header("x-a"), Some("1"), "the first of repeated headers");
        assert_eq!(req.header("x-b"), None, "not UTF-8");
        assert_eq!(req.headers().count(), 3);
    }

    #[test]
    fn a_truncated_buffer_reads_as_what_is_whole() {
        let mut buf = pack(&[b"GET", b"api", b"/", b"c", b"x-a", b"1"]);
        buf.truncate(buf.len() - 1);
        let req = Request::new(buf);
        assert_eq!(req.path(), "/");
        assert_eq!(req.headers().count(), 0);
        assert_eq!(Request::new(vec![9, 0, 0]).method(), "");
    }

    #[test]
    fn changes_pack_in_order_as_the_wit_says() {
        let base = Changes::new().remove("x-debug");
        let changes = Changes::with_capacity(64).extend(&base).set("x-env", "prod").append("vary", b"a").path("/v2");
        let mut want = vec![3];
        want.extend(pack(&[b"x-debug"]));
        want.push(1);
        want.extend(pack(&[b"x-env", b"prod"]));
        want.push(2);
        want.extend(pack(&[b"vary", b"a"]));
        want.push(4);
        want.extend(pack(&[b"/v2"]));
        assert_eq!(Vec::from(changes.clone()), want);
        assert_eq!(changes.len(), want.len());
        assert!(Changes::new().is_empty() && !base.is_empty());
    }

    #[test]
    fn a_packed_response_reads_back_with_its_request() {
        let mut buf = pack(&[&pack(&[b"GET", b"api", b"/x", b"c", b"server", b"in"])]);
        buf.extend(404u16.to_le_bytes());
        buf.extend(pack(&[b"server", b"x"]));
        let resp = Response::new(buf);
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.header("server"), Some("x"));
        assert_eq!(resp.headers().count(), 1, "the request's headers are its own");
        let req = resp.request();
        assert_eq!((req.method(), req.path(), req.header("server")), ("GET", "/x", Some("in")));
        assert_eq!(req.headers().count(), 1, "the response's headers are not the request's");

        let truncated = Response::new(vec![200, 0]);
        assert_eq!((truncated.status(), truncated.request().method(), truncated.headers().count()), (0, "", 0));
    }
}

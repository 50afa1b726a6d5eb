//! Glue between the request path and Wasm plugins: what a plugin sees, and applying what it
//! decides.

use std::cell::RefCell;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::response::{ERROR_HEADER, ResponseBody};
use crate::body::Body;
use crate::plugin::{Change, RequestView, changes, types};
use crate::wire::RawHeaders;

/// The request as plugins see it. `authority` is the `Host` header as it arrived, kept apart
/// from `headers`, which plugins may change.
pub fn request_view<'a>(
    method: &'a http::Method,
    authority: Option<&'a HeaderValue>,
    path: &'a PathAndQuery,
    client: &'a str,
    headers: &'a HeaderMap,
) -> RequestView<'a> {
    RequestView {
        method: method.as_str(),
        authority: authority.and_then(|h| h.to_str().ok()).unwrap_or_default(),
        path: path.as_str(),
        client_addr: client,
        headers,
    }
}

/// Applies a plugin's packed changes in order; an invalid name, value or path is skipped and
/// a malformed buffer applied up to where it breaks, each with a debug log. The header values
/// share the buffer lifted from the plugin (no copy per value). A response's headers may be
/// partly `raw` lines: changes land in the map, and a header set or removed leaves the lines
/// (all of them move into the map when dropping lines would take more runs than they hold).
pub fn apply(
    m: types::Mutations,
    headers: &mut HeaderMap,
    raw: &mut Option<RawHeaders>,
    mut path: Option<&mut PathAndQuery>,
) {
    let buf = Bytes::from(m);
    for change in changes(&buf) {
        match change {
            Ok(change @ (Change::Set(name, value) | Change::Append(name, value))) => {
                let Some((name, value)) = header(name, buf.slice_ref(value)) else { continue };
                if matches!(change, Change::Set(..)) {
                    remove_raw(raw, headers, name.as_str().as_bytes());
                    headers.insert(name, value);
                } else {
                    headers.append(name, value);
                }
            }
            Ok(Change::Remove(name)) => {
                remove_raw(raw, headers, name);
                // A name that is not valid cannot be present.
                if let Ok(name) = std::str::from_utf8(name) {
                    headers.remove(name);
                }
            }
            Ok(Change::Path(new)) => {
                let Some(path) = path.as_deref_mut() else { continue };
                match PathAndQuery::from_maybe_shared(buf.slice_ref(new)) {
                    Ok(p) => *path = p,
                    Err(e) => tracing::debug!(error = %e, "plugin set an invalid path; skipped"),
                }
            }
            Err(e) => tracing::debug!(error = %e, "plugin returned malformed changes; the rest skipped"),
        }
    }
}

/// Drops header `name` from the `raw` lines, moving them all into `headers` first when the
/// lines cannot be cut there.
fn remove_raw(raw: &mut Option<RawHeaders>, headers: &mut HeaderMap, name: &[u8]) {
    if let Some(lines) = raw
        && !lines.remove(name)
    {
        lines.append_to(headers);
        *raw = None;
    }
}

/// A header from a plugin, or `None` (logged) when the name or value is invalid.
fn header(name: &[u8], value: Bytes) -> Option<(HeaderName, HeaderValue)> {
    match (header_name(name), HeaderValue::from_maybe_shared(value)) {
        (Ok(name), Ok(value)) => Some((name, value)),
        _ => {
            tracing::debug!(header = %String::from_utf8_lossy(name), "plugin set an invalid header; skipped");
            None
        }
    }
}

/// How many header names [`header_name`] keeps per thread.
const CACHED_NAMES: usize = 32;

/// The header name `name` (any case). Plugins set the same few names on every request, and
/// `HeaderName::from_bytes` allocates a copy of each name that is not a standard one, so the
/// names seen last are kept per thread and cloned (a reference count) instead.
fn header_name(name: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    thread_local! {
        static NAMES: RefCell<Vec<HeaderName>> = const { RefCell::new(Vec::new()) };
    }
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(known) = names.iter().find(|n| n.as_str().as_bytes().eq_ignore_ascii_case(name)) {
            return Ok(known.clone());
        }
        let parsed = HeaderName::from_bytes(name)?;
        // A plugin that invents a new name per request only refills the cache.
        if names.len() == CACHED_NAMES {
            names.clear();
        }
        names.push(parsed.clone());
        Ok(parsed)
    })
}

/// A plugin's own answer.
pub fn local_response(lr: types::LocalResponse) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::plain(Body::full(Bytes::from(lr.body))));
    *resp.status_mut() = StatusCode::from_u16(lr.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in lr.headers {
        if let Some((name, value)) = header(name.as_bytes(), Bytes::from(value)) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

/// The answer when a plugin failed and fails closed.
pub fn failed_closed(plugin: &str, status: u16) -> Response<ResponseBody> {
    let body = format!("plugin `{plugin}` failed\n");
    let mut resp = Response::new(ResponseBody::plain(Body::full(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut().insert(ERROR_HEADER, HeaderValue::from_static("plugin_failed"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_cached_case_insensitively_and_validated() {
        let first = header_name(b"X-Env").expect("valid");
        assert_eq!(first.as_str(), "x-env");
        assert_eq!(header_name(b"x-env").expect("valid"), first);
        assert!(header_name(b"bad name").is_err());
        // More distinct names than the cache holds: every answer is still the right name.
        for i in 0..CACHED_NAMES * 2 {
            let name = format!("x-name-{i}");
            assert_eq!(header_name(name.as_bytes()).expect("valid").as_str(), name);
        }
        assert_eq!(header_name(b"X-ENV").expect("valid").as_str(), "x-env");
    }

    #[test]
    fn apply_changes_in_order_and_skips_invalid_ones() {
        let mut headers = HeaderMap::new();
        headers.insert("x-old", HeaderValue::from_static("1"));
        headers.insert("vary", HeaderValue::from_static("a"));
        let mut path = PathAndQuery::from_static("/a");
        let mut m = Vec::new();
        let mut change = |tag: u8, fields: &[&[u8]]| crate::plugin::pack_change(&mut m, tag, fields);
        change(3, &[b"X-Old"]);
        change(1, &[b"X-New", b"v"]);
        change(1, &[b"bad name", b"v"]);
        change(1, &[b"x-bad-value", b"a\nb"]);
        change(2, &[b"vary", b"b"]);
        change(4, &[b"/b?q=1"]);
        change(4, &[b"not a path"]);
        change(1, &[b"x-last", b"1"]);
        m.push(7);
        apply(m, &mut headers, &mut None, Some(&mut path));
        assert_eq!(headers.len(), 4, "{headers:?}");
        assert_eq!(headers["x-new"], "v");
        assert_eq!(headers.get_all("vary").iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(headers["x-last"], "1", "changes after an invalid one still apply");
        assert_eq!(path.as_str(), "/b?q=1");
    }

    #[test]
    fn changes_to_raw_response_lines_leave_them_and_land_in_the_map() {
        const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nServer: s\r\nX-A: 1\r\nVary: a\r\nX-B: 1\r\nETag: e\r\n\r\n";
        let lines = || {
            let mut raw = RawHeaders::new(Bytes::from_static(HEAD));
            assert!(raw.keep_line(17, HEAD.len() - 2));
            Some(raw)
        };
        let names = |raw: &Option<RawHeaders>| -> Vec<String> {
            raw.iter().flat_map(|r| r.lines()).map(|(n, _)| String::from_utf8_lossy(n).into_owned()).collect()
        };
        let mut m = Vec::new();
        let mut change = |tag: u8, fields: &[&[u8]]| crate::plugin::pack_change(&mut m, tag, fields);
        change(1, &[b"x-a", b"2"]);
        change(2, &[b"vary", b"b"]);
        change(3, &[b"ETAG"]);
        change(1, &[b"x-new", b"v"]);
        let (mut headers, mut raw) = (HeaderMap::new(), lines());
        apply(m, &mut headers, &mut raw, None);
        assert_eq!(names(&raw), ["Server", "Vary", "X-B"], "set and removed names left the lines");
        assert_eq!(headers.len(), 3, "{headers:?}");
        assert_eq!([&headers["x-a"], &headers["vary"], &headers["x-new"]], ["2", "b", "v"]);

        // Lines that cannot be cut there (five runs would be left) all move into the map first.
        const MANY: &[u8] =
            b"HTTP/1.1 200 OK\r\nA: 1\r\nX: 1\r\nB: 1\r\nX: 2\r\nC: 1\r\nX: 3\r\nD: 1\r\nX: 4\r\nE: 1\r\n\r\n";
        let mut many = RawHeaders::new(Bytes::from_static(MANY));
        assert!(many.keep_line(17, MANY.len() - 2));
        let (mut headers, mut raw) = (HeaderMap::new(), Some(many));
        let mut m = Vec::new();
        crate::plugin::pack_change(&mut m, 1, &[b"x", b"new"]);
        apply(m, &mut headers, &mut raw, None);
        assert!(raw.is_none());
        assert_eq!(headers.get_all("x").iter().collect::<Vec<_>>(), ["new"]);
        assert_eq!(headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["a", "x", "b", "c", "d", "e"]);
    }
}

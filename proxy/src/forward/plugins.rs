//! The request path's plugin phases: the router and the filters on the request, the filters
//! on the response head; and the glue they share: what a plugin sees, and applying what it
//! decides.

use std::cell::RefCell;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::Forwarding;
use super::observe::Observer;
use super::response::{Answer, ERROR_HEADER, ResponseBody};
use crate::body::Body;
use crate::config::FailMode;
use crate::message::ProxyResponse;
use crate::plugin::types::{FilterAction, Hooks, RouteDecision};
use crate::plugin::{Change, HookCalls, PackedRequest, RequestView, ResponseView, changes, types};
use crate::snapshot::{Route, Service, Snapshot};
use wasmesh_http1::RawHeaders;

/// The plugins phase: the route's router may send the request to another service (of `snap`)
/// or answer it; then its filters, in order, may change the request or answer it. `Err` is
/// the answer, a plugin's own or its failure's when it fails closed.
#[inline]
pub(super) fn on_request(fw: &mut Forwarding<'_>, snap: &Snapshot, obs: &mut Observer) -> Result<(), Answer> {
    let route = fw.route;
    if route.router.is_none() && route.filters.is_empty() {
        return Ok(());
    }
    let parts = &mut fw.req.head;
    // Plugins see the `Host` the request arrived with, whatever a plugin sets.
    let authority = parts.headers.get(http::header::HOST).cloned();
    if let Some(router) = &route.router {
        let head = request_view(&parts.method, authority.as_ref(), &fw.path, &fw.down.client_text, &parts.headers);
        match obs.plugin_call(router.name(), "route", || router.route(&head)) {
            Ok(RouteDecision::Default) => {}
            Ok(RouteDecision::Upstream(choice)) => {
                let Some((idx, _)) = snap.service(&choice.service) else {
                    tracing::warn!(plugin = router.name(), service = %choice.service, "router chose an unknown service");
                    return Err(failed_closed(router.name(), 502));
                };
                fw.service_idx = idx;
                if let Some(m) = choice.mutations {
                    apply(m, &mut parts.headers, &mut None, Some(&mut fw.path));
                }
            }
            Ok(RouteDecision::Respond(answer)) => return Err(local_response(answer)),
            Err(_) if router.fail == FailMode::Closed => return Err(failed_closed(router.name(), router.fail_status)),
            Err(_) => {}
        }
    }
    for filter in route.filters.iter().filter(|f| f.wants(Hooks::ON_REQUEST)) {
        let head = request_view(&parts.method, authority.as_ref(), &fw.path, &fw.down.client_text, &parts.headers);
        match obs.plugin_call(filter.name(), "on_request", || filter.on_request(&head)) {
            Ok(FilterAction::Proceed) => {}
            Ok(FilterAction::Mutate(m)) => apply(m, &mut parts.headers, &mut None, Some(&mut fw.path)),
            Ok(FilterAction::Respond(answer)) => return Err(local_response(answer)),
            Err(_) if filter.fail == FailMode::Closed => return Err(failed_closed(filter.name(), filter.fail_status)),
            Err(_) => {}
        }
    }
    Ok(())
}

/// The request packed for `service`'s balancer plugin, when it has one.
#[inline]
pub(super) fn balancer_head(service: &Service, fw: &Forwarding<'_>) -> Option<PackedRequest> {
    let plugin = service.balancer_plugin.as_ref()?;
    let parts = &fw.req.head;
    let authority = parts.headers.get(http::header::HOST);
    Some(plugin.pack(&request_view(&parts.method, authority, &fw.path, &fw.down.client_text, &parts.headers)))
}

/// What response filters see of the request, kept when a route has any: the request line and
/// only the headers those filters read.
pub(super) struct RequestCopy {
    method: http::Method,
    authority: Option<http::HeaderValue>,
    path: PathAndQuery,
    headers: http::HeaderMap,
}

impl RequestCopy {
    /// The copy `route`'s response filters need of the request `parts` for `path`, if it has
    /// any: the request itself goes to the endpoint.
    #[inline]
    pub fn for_response_filters(route: &Route, parts: &http::request::Parts, path: &PathAndQuery) -> Option<Self> {
        let mut filters = route.filters.iter().filter(|f| f.wants(Hooks::ON_RESPONSE)).peekable();
        filters.peek()?;
        let mut headers = http::HeaderMap::new();
        for filter in filters {
            filter.header_interest().copy(&parts.headers, &mut headers);
        }
        Some(Self {
            method: parts.method.clone(),
            authority: parts.headers.get(http::header::HOST).cloned(),
            path: path.clone(),
            headers,
        })
    }
}

/// Runs the route's filters on a response head, last filter first. Returns a replacement
/// response when a filter answers (or fails closed).
pub(super) fn on_response(
    route: &Route,
    req: &RequestCopy,
    client: &str,
    parts: &mut http::response::Parts,
    raw: &mut Option<RawHeaders>,
    obs: &mut Observer,
) -> Option<Answer> {
    for filter in route.filters.iter().rev().filter(|f| f.wants(Hooks::ON_RESPONSE)) {
        let head = request_view(&req.method, req.authority.as_ref(), &req.path, client, &req.headers);
        let resp = ResponseView { status: parts.status.as_u16(), raw: raw.as_ref(), headers: &parts.headers };
        match obs.plugin_call(filter.name(), "on_response", || filter.on_response(&head, &resp)) {
            Ok(FilterAction::Proceed) => {}
            Ok(FilterAction::Mutate(m)) => apply(m, &mut parts.headers, raw, None),
            Ok(FilterAction::Respond(answer)) => return Some(local_response(answer)),
            Err(_) if filter.fail == FailMode::Closed => {
                return Some(failed_closed(filter.name(), filter.fail_status));
            }
            Err(_) => {}
        }
    }
    None
}

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
                let Some((name, value)) = header(name, value, &buf) else { continue };
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

/// A header from a plugin, `value` lying in `buf`, or `None` (logged) when the name or value
/// is invalid.
fn header(name: &[u8], value: &[u8], buf: &Bytes) -> Option<(HeaderName, HeaderValue)> {
    let invalid = || {
        tracing::debug!(header = %String::from_utf8_lossy(name), "plugin set an invalid header; skipped");
        None
    };
    RECENT.with(|recent| {
        let mut recent = recent.borrow_mut();
        // Plugins send lower-case names: an exact comparison finds them at once.
        let found = recent.iter().position(|(n, _)| n.as_str().as_bytes() == name);
        let found = found.or_else(|| recent.iter().position(|(n, _)| n.as_str().as_bytes().eq_ignore_ascii_case(name)));
        let at = match found {
            Some(at) => at,
            None => {
                let Ok(parsed) = wasmesh_http1::head::header_name(name) else { return invalid() };
                // A plugin that invents a new name per request only refills the cache.
                if recent.len() == CACHED_HEADERS {
                    recent.clear();
                }
                recent.push((parsed, HeaderValue::from_static("")));
                recent.len() - 1
            }
        };
        let slot = &mut recent[at];
        if slot.1.as_bytes() != value {
            let Ok(parsed) = HeaderValue::from_maybe_shared(buf.slice_ref(value)) else { return invalid() };
            slot.1 = parsed;
        }
        Some(slot.clone())
    })
}

/// How many headers [`RECENT`] keeps per thread.
const CACHED_HEADERS: usize = 32;

thread_local! {
    /// Headers plugins set lately, with the value last set under each name. Plugins set the
    /// same few headers, mostly to the same values, on every request; a hit saves parsing the
    /// name (`HeaderName::from_bytes` allocates a copy of a name that is not a standard one),
    /// validating the value, and the shared reference into the plugin's buffer that the value
    /// would take (whose first use allocates).
    static RECENT: RefCell<Vec<(HeaderName, HeaderValue)>> = const { RefCell::new(Vec::new()) };
}

/// A plugin's own answer.
pub fn local_response(lr: types::LocalResponse) -> Answer {
    let mut resp = Response::new(ResponseBody::plain(Body::full(Bytes::from(lr.body))));
    *resp.status_mut() = StatusCode::from_u16(lr.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in lr.headers {
        let value = Bytes::from(value);
        if let Some((name, value)) = header(name.as_bytes(), &value, &value) {
            resp.headers_mut().insert(name, value);
        }
    }
    ProxyResponse::boxed(resp)
}

/// The answer when a plugin failed and fails closed.
pub fn failed_closed(plugin: &str, status: u16) -> Answer {
    let body = format!("plugin `{plugin}` failed\n");
    let mut resp = Response::new(ResponseBody::plain(Body::full(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut().insert(ERROR_HEADER, HeaderValue::from_static("plugin_failed"));
    ProxyResponse::boxed(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_cached_by_name_in_any_case_with_their_last_value_and_validated() {
        let buf = Bytes::from_static(b"prod staging");
        let (prod, staging) = (&buf[..4], &buf[5..]);
        let (name, value) = header(b"X-Env", prod, &buf).expect("valid");
        assert_eq!((name.as_str(), value.to_str().ok()), ("x-env", Some("prod")));
        assert_eq!(header(b"x-env", prod, &buf), Some((name.clone(), value)), "a hit");
        assert_eq!(header(b"X-ENV", staging, &buf).map(|(_, v)| v), Some(HeaderValue::from_static("staging")));
        assert_eq!(header(b"x-env", prod, &buf).map(|(_, v)| v), Some(HeaderValue::from_static("prod")));
        assert!(header(b"bad name", prod, &buf).is_none());
        assert!(header(b"x-env", b"a\nb", &Bytes::from_static(b"a\nb")).is_none());
        assert_eq!(header(b"x-env", prod, &buf).map(|(_, v)| v), Some(HeaderValue::from_static("prod")), "unchanged");
        // More distinct names than the cache holds: every answer is still the right header.
        for i in 0..CACHED_HEADERS * 2 {
            let name = format!("x-name-{i}");
            let (n, v) = header(name.as_bytes(), prod, &buf).expect("valid");
            assert_eq!((n.as_str(), v.as_bytes()), (name.as_str(), prod));
        }
        assert_eq!(header(b"X-Env", staging, &buf).map(|(n, _)| n), Some(name));
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

//! Glue between the request path and Wasm plugins: what a plugin sees, and applying what it
//! decides.

use std::cell::RefCell;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::response::{ERROR_HEADER, ResponseBody};
use crate::body::Body;
use crate::plugin::{RequestView, types};

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

/// Applies header and path changes; invalid names or values are skipped with a debug log.
/// Takes the changes by value: a header value keeps the bytes lifted from the plugin.
pub fn apply(m: types::Mutations, headers: &mut HeaderMap, path: Option<&mut PathAndQuery>) {
    for name in &m.remove {
        headers.remove(name.as_str());
    }
    for (name, value) in m.set {
        match (header_name(name.as_bytes()), HeaderValue::from_maybe_shared(Bytes::from(value))) {
            (Ok(n), Ok(v)) => {
                headers.insert(n, v);
            }
            _ => tracing::debug!(header = %name, "plugin set an invalid header; skipped"),
        }
    }
    if let (Some(new), Some(path)) = (m.path, path) {
        match PathAndQuery::try_from(new) {
            Ok(p) => *path = p,
            Err(e) => tracing::debug!(error = %e, "plugin set an invalid path; skipped"),
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
    apply(types::Mutations { set: lr.headers, remove: vec![], path: None }, resp.headers_mut(), None);
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
    fn apply_sets_removes_and_skips_invalid_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-old", HeaderValue::from_static("1"));
        let mut path = PathAndQuery::from_static("/a");
        let m = types::Mutations {
            set: vec![("X-New".into(), b"v".to_vec()), ("bad name".into(), b"v".to_vec())],
            remove: vec!["x-old".into()],
            path: Some("/b?q=1".into()),
        };
        apply(m, &mut headers, Some(&mut path));
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-new"], "v");
        assert_eq!(path.as_str(), "/b?q=1");
    }
}

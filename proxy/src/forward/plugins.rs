//! Glue between the request path and Wasm plugins: what a plugin sees, and applying what it
//! decides.

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
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_maybe_shared(Bytes::from(value))) {
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

//! Header rules for forwarding: hop-by-hop removal (RFC 9110 §7.6.1) and `X-Forwarded-*`.

use http::header::Entry;
use http::header::{CONNECTION, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use crate::wire::{NameClass, classify};

/// `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate` and `Proxy-Authorization`: the
/// hop-by-hop headers without a rule of their own ([`NameClass::HopByHop`]).
static OTHER_HOP_BY_HOP: [HeaderName; 4] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether the request asks to switch protocols (`Connection: upgrade` with `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
/// With `upgrade`, keeps `Upgrade` and `Connection: upgrade` so the switch reaches the peer.
///
/// Most messages carry none of these, or only `Connection`: one pass over the names finds
/// which are present before anything is hashed or removed (this runs twice per request).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let (mut connection, mut te, mut transfer_encoding, mut upgrade_header, mut other) =
        (false, false, false, false, false);
    for name in headers.keys() {
        match classify(name.as_str().as_bytes()) {
            NameClass::Connection => connection = true,
            NameClass::Te => te = true,
            NameClass::TransferEncoding => transfer_encoding = true,
            NameClass::Upgrade => upgrade_header = true,
            NameClass::HopByHop => other = true,
            NameClass::ContentLength | NameClass::Date | NameClass::Other => {}
        }
    }
    if connection {
        // `close` and `keep-alive` are the usual tokens and name no header to remove here
        // (`Keep-Alive` itself is in the list).
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            if !(upgrade && name == UPGRADE) {
                headers.remove(&name);
            }
        }
        headers.remove(CONNECTION);
    }
    if transfer_encoding {
        headers.remove(TRANSFER_ENCODING);
    }
    if upgrade_header && !upgrade {
        headers.remove(UPGRADE);
    }
    if other {
        for name in &OTHER_HOP_BY_HOP {
            headers.remove(name);
        }
    }
    // `TE: trailers` is end-to-end in practice: gRPC needs it to reach the server.
    if te && headers.get(TE).is_some_and(|v| v != "trailers") {
        headers.remove(TE);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Makes sure `Host` is set when the request came over HTTP/2 with only an `:authority`;
/// returns it, borrowed: a caller that needs its own copy clones it (a value shares the
/// request's buffer, and each clone and drop is a locked reference-count update).
pub fn ensure_host<'a>(headers: &'a mut HeaderMap, uri: &Uri) -> Option<&'a HeaderValue> {
    match headers.entry(HOST) {
        Entry::Occupied(h) => Some(h.into_mut()),
        Entry::Vacant(slot) => {
            let authority = uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
            authority.map(|a| &*slot.insert(a))
        }
    }
}

/// Adds `X-Forwarded-For` (appending the client), `-Proto` and `-Host` (`host`, the
/// request's `Host`).
pub fn add_forwarded(headers: &mut HeaderMap, host: Option<HeaderValue>, client_ip: &HeaderValue, proto: &'static str) {
    // One hash and probe per header: `entry` rather than a lookup followed by an insert.
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Occupied(mut prev) => {
            let first = prev.get();
            let mut v = Vec::with_capacity(first.len() + 2 + client_ip.len());
            v.extend_from_slice(first.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(client_ip.as_bytes());
            prev.insert(HeaderValue::from_bytes(&v).unwrap_or_else(|_| client_ip.clone()));
        }
        Entry::Vacant(slot) => {
            slot.insert(client_ip.clone());
        }
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(&X_FORWARDED_HOST, host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = headers(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn keeps_upgrade_when_switching() {
        let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket"), ("te", "trailers")]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn forwarded_headers_append_and_fill_host() {
        let mut h = headers(&[("x-forwarded-for", "10.0.0.1")]);
        let uri: Uri = "http://api.local:8080/x".parse().expect("uri");
        let host = ensure_host(&mut h, &uri).cloned();
        add_forwarded(&mut h, host, &HeaderValue::from_static("127.0.0.1"), "http");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["host"], "api.local:8080");
        assert_eq!(h["x-forwarded-host"], "api.local:8080");
    }
}

//! Header rules for forwarding: hop-by-hop removal (RFC 9110 §7.6.1) and `X-Forwarded-*`.

use http::header::Entry;
use http::header::{CONNECTION, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Uri, Version};

use crate::telemetry::metrics::ErrorKind;
use wasmesh_http1::head::{NameClass, classify, is_valid_host};

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

/// Refuses a request head that must not be forwarded: an HTTP/1.1 request without `Host`, any
/// request with two `Host` lines or an invalid one, or whose target carries userinfo, an HTTP/2
/// request whose `host` disagrees with its `:authority` (RFC 9112 §3.2, RFC 9113 §8.3.1), and
/// one with more than `max_headers` header lines. An absolute-form target's authority replaces
/// `Host` (RFC 9112 §3.2.2), so routing and the upstream see the name the client asked for.
pub fn check_request_head(head: &mut http::request::Parts, max_headers: usize) -> Result<(), ErrorKind> {
    // HTTP/1.1 heads were counted as they were parsed; HTTP/2 ones are counted here.
    if head.headers.len() > max_headers {
        return Err(ErrorKind::headers_too_large);
    }
    let mut hosts = head.headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() || host.is_some_and(|h| !is_valid_host(h.as_bytes())) {
        return Err(ErrorKind::invalid_host);
    }
    let Some(target) = head.uri.authority() else {
        return if host.is_none() && head.version == Version::HTTP_11 { Err(ErrorKind::invalid_host) } else { Ok(()) };
    };
    if target.as_str().contains('@') {
        return Err(ErrorKind::invalid_host);
    }
    match head.version {
        Version::HTTP_2 | Version::HTTP_3 => match host {
            Some(h) if !h.as_bytes().eq_ignore_ascii_case(target.as_str().as_bytes()) => Err(ErrorKind::invalid_host),
            _ => Ok(()),
        },
        version => {
            if host.is_none() && version == Version::HTTP_11 {
                return Err(ErrorKind::invalid_host);
            }
            let value = HeaderValue::from_str(target.as_str()).map_err(|_| ErrorKind::invalid_host)?;
            head.headers.insert(HOST, value);
            Ok(())
        }
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

    fn head(target: &str, version: Version, hosts: &[&str]) -> http::request::Parts {
        let mut req = http::Request::get(target).version(version);
        for h in hosts {
            req = req.header(HOST, *h);
        }
        req.body(()).expect("a request").into_parts().0
    }

    #[test]
    fn host_must_be_present_once_and_valid() {
        use ErrorKind::invalid_host;
        for (target, version, hosts, expected) in [
            ("/", Version::HTTP_11, &[][..], Err(invalid_host)),
            ("/", Version::HTTP_11, &["a", "b"][..], Err(invalid_host)),
            ("/", Version::HTTP_11, &["a", "a"][..], Err(invalid_host)),
            ("/", Version::HTTP_10, &["a", "b"][..], Err(invalid_host)),
            ("/", Version::HTTP_11, &["a b"][..], Err(invalid_host)),
            ("/", Version::HTTP_11, &["a/b"][..], Err(invalid_host)),
            ("/", Version::HTTP_11, &["user@a"][..], Err(invalid_host)),
            ("/", Version::HTTP_11, &["a:8x"][..], Err(invalid_host)),
            ("/", Version::HTTP_11, &["[::1"][..], Err(invalid_host)),
            ("/", Version::HTTP_11, &["[::1]x"][..], Err(invalid_host)),
            ("/", Version::HTTP_11, &["[]"][..], Err(invalid_host)),
            ("/", Version::HTTP_11, &["a%zz"][..], Err(invalid_host)),
            ("/", Version::HTTP_11, &["a"][..], Ok(())),
            ("/", Version::HTTP_11, &["api.example.com:8080"][..], Ok(())),
            ("/", Version::HTTP_11, &["127.0.0.1:80"][..], Ok(())),
            ("/", Version::HTTP_11, &["[::1]:8080"][..], Ok(())),
            ("/", Version::HTTP_11, &["xn--bcher-kva.example"][..], Ok(())),
            ("/", Version::HTTP_11, &["a%41"][..], Ok(())),
            ("/", Version::HTTP_11, &[""][..], Ok(())),
            ("/", Version::HTTP_10, &[][..], Ok(())),
            ("http://a/", Version::HTTP_11, &[][..], Err(invalid_host)),
            ("http://u@a/", Version::HTTP_11, &["a"][..], Err(invalid_host)),
            ("http://a/", Version::HTTP_2, &["b"][..], Err(invalid_host)),
            ("http://a:80/", Version::HTTP_2, &["A:80"][..], Ok(())),
            ("http://a/", Version::HTTP_2, &[][..], Ok(())),
            ("/", Version::HTTP_2, &[][..], Ok(())),
        ] {
            let mut parts = head(target, version, hosts);
            assert_eq!(check_request_head(&mut parts, 100), expected, "{target} {version:?} {hosts:?}");
        }
    }

    #[test]
    fn an_absolute_target_names_the_host() {
        let mut parts = head("http://b.example:81/x", Version::HTTP_11, &["a.example"]);
        assert_eq!(check_request_head(&mut parts, 100), Ok(()));
        assert_eq!(parts.headers[HOST], "b.example:81");
        assert_eq!(parts.headers.get_all(HOST).iter().count(), 1);
        let mut parts = head("http://b.example/x", Version::HTTP_10, &[]);
        assert_eq!(check_request_head(&mut parts, 100), Ok(()));
        assert_eq!(parts.headers[HOST], "b.example");
    }

    #[test]
    fn header_lines_are_counted() {
        let mut parts = head("/", Version::HTTP_2, &[]);
        for i in 0..5 {
            parts.headers.append("x-n", HeaderValue::from(i));
        }
        assert_eq!(check_request_head(&mut parts, 5), Ok(()));
        assert_eq!(check_request_head(&mut parts, 4), Err(ErrorKind::headers_too_large));
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

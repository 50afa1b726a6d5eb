//! The request type that flows from a listener to the upstream client.
//!
//! A request head is ~220 bytes (method, URI, header map, extensions). Passed by value, it is
//! copied into the frame of every async layer it crosses (connection loop, handler, forward,
//! upstream client): measured with a uprobe on `memmove`, fourteen copies of 272 bytes per
//! proxied request, most of them into frames of connections that are cold in the cache when
//! hundreds are open. Boxed once where it is parsed, it crosses those layers as a pointer and
//! is changed in place into the upstream request.

use http::request::Parts;
use http::{HeaderMap, Method, Uri, Version};

use crate::body::Body;

/// A request on its way through the proxy: its head, with public fields so that one part can
/// be changed while another is read, and its body.
#[derive(Debug)]
pub struct ProxyRequest {
    /// Method, URI, version, headers and extensions.
    pub head: Parts,
    /// The body, streamed.
    pub body: Body,
}

impl ProxyRequest {
    /// A request with this head and `body`, boxed.
    pub fn new(method: Method, uri: Uri, version: Version, headers: HeaderMap, body: Body) -> Box<Self> {
        // `Parts` has no constructor of its own.
        let (mut head, ()) = http::Request::new(()).into_parts();
        head.method = method;
        head.uri = uri;
        head.version = version;
        head.headers = headers;
        Box::new(Self { head, body })
    }

    /// Boxes `req`.
    pub fn boxed(req: http::Request<Body>) -> Box<Self> {
        let (head, body) = req.into_parts();
        Box::new(Self { head, body })
    }

    /// The request as `http` types it, for code that takes one (hyper's client, the admin API).
    pub fn into_http(self) -> http::Request<Body> {
        http::Request::from_parts(self.head, self.body)
    }
}

//! The messages that flow through the proxy: a request from a listener to the upstream client,
//! a response back.
//!
//! A request head is ~220 bytes (method, URI, header map, extensions), a response head ~110.
//! Passed by value, a message is copied into the frame of every async layer it crosses
//! (connection loop, handler, forward, upstream client), into frames of connections that are
//! cold in the cache when hundreds are open. Boxed once where it is made, a message crosses
//! those layers as a pointer and is changed in place. Measured with a uprobe on `memmove`
//! (`wrk -c32` on the peers benchmark): 49 copies, 9.8 KB, per proxied request before; 20
//! copies, 2.6 KB after (with the upstream exchange and pooled connections boxed too).

use http::{HeaderMap, Method, Uri, Version, request, response};

use crate::body::Body;

/// A request on its way through the proxy: its head, with public fields so that one part can
/// be changed while another is read, and its body.
#[derive(Debug)]
pub struct ProxyRequest {
    /// Method, URI, version, headers and extensions.
    pub head: request::Parts,
    /// The body, streamed.
    pub body: Body,
    /// The head already meets [`crate::forward::check_request_head`]'s rules: the HTTP/1.1
    /// fast path checks them as it parses, so they are not checked twice.
    pub head_checked: bool,
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
        Box::new(Self { head, body, head_checked: false })
    }

    /// Boxes `req`.
    pub fn boxed(req: http::Request<Body>) -> Box<Self> {
        let (head, body) = req.into_parts();
        Box::new(Self { head, body, head_checked: false })
    }

    /// The request as `http` types it, for code that takes one (hyper's client, the admin API).
    pub fn into_http(self) -> http::Request<Body> {
        http::Request::from_parts(self.head, self.body)
    }
}

/// A response on its way back to the client: its head, with public fields as for
/// [`ProxyRequest`], and its body.
#[derive(Debug)]
pub struct ProxyResponse<B> {
    /// Status, version, headers and extensions.
    pub head: response::Parts,
    /// The body, streamed.
    pub body: B,
}

impl<B> ProxyResponse<B> {
    /// Boxes `resp`.
    pub fn boxed(resp: http::Response<B>) -> Box<Self> {
        let (head, body) = resp.into_parts();
        Box::new(Self { head, body })
    }

    /// The response as `http` types it, for code that takes one (hyper's server, the admin API).
    pub fn into_http(self) -> http::Response<B> {
        http::Response::from_parts(self.head, self.body)
    }
}

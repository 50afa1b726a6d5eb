//! The body type that flows through the proxy in both directions.
//!
//! One enum rather than a boxed trait object: forwarding a streamed body costs no allocation,
//! and locally built bodies (error texts, admin answers) share the same type. The one body
//! behind a trait is the upstream HTTP/1.1 client's, so that this module, which the client
//! writes requests from, does not depend on the client.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

pub use wasmesh_http1::BoxError;

/// A request or response body.
#[derive(Debug, Default)]
pub enum Body {
    /// Streamed from a peer, never buffered.
    Incoming(Incoming),
    /// Streamed from an upstream HTTP/1.1 connection; boxed because it holds the connection,
    /// and a request or response is moved a dozen times on its way through the proxy: a body
    /// that arrived whole with its head (the usual case) never takes this variant.
    Streamed(Streamed),
    /// Fully known bytes (taken on first poll).
    Full(Option<Bytes>),
    /// Bytes already read, then the rest of the stream: a body read in part (to check it)
    /// and then passed on whole.
    Prefixed(Option<Bytes>, Box<Body>),
    /// No body.
    #[default]
    Empty,
}

/// The proxy's own bodies come with their headers in the map.
impl wasmesh_http1::WithRawHeaders for Body {}

/// A body the proxy reads from a connection itself (the upstream HTTP/1.1 client's).
pub struct Streamed(Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send + Sync>>);

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed").field("size_hint", &self.0.size_hint()).finish_non_exhaustive()
    }
}

impl Body {
    /// A body read from a connection by `body`.
    pub fn streamed(body: impl http_body::Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static) -> Self {
        Self::Streamed(Streamed(Box::pin(body)))
    }

    /// A body of known bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() { Self::Empty } else { Self::Full(Some(bytes)) }
    }
}

impl From<Incoming> for Body {
    fn from(b: Incoming) -> Self {
        Self::Incoming(b)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Streamed(b) => b.0.as_mut().poll_frame(cx),
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Self::Prefixed(prefix, rest) => match prefix.take() {
                Some(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
                None => Pin::new(rest.as_mut()).poll_frame(cx),
            },
            Self::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Incoming(b) => b.is_end_stream(),
            Self::Streamed(b) => b.0.is_end_stream(),
            Self::Full(data) => data.is_none(),
            Self::Prefixed(prefix, rest) => prefix.is_none() && rest.is_end_stream(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Incoming(b) => b.size_hint(),
            Self::Streamed(b) => b.0.size_hint(),
            Self::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Self::Full(None) | Self::Empty => SizeHint::with_exact(0),
            Self::Prefixed(prefix, rest) => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let hint = rest.size_hint();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower() + extra);
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper + extra);
                }
                sum
            }
        }
    }
}

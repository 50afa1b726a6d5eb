//! HTTP/1.1 on the wire, for both sides of the proxy: finding and parsing heads, encoding
//! them, and framing bodies by length or in chunks.
//!
//! hyper serves every corner of the protocol; this crate is the lean path the proxy takes for
//! the requests and responses it sees most (see `docs/architecture.md`). It knows nothing of
//! routing, pools or plugins: it reads and writes bytes.
//!
//! - [`head`]: where a head ends, size limits, header names, `Host` validation.
//! - [`server`]: request heads in, response heads out (the listeners' side).
//! - [`client`]: request heads out, response heads in (the upstream side).
//! - [`decode`] and [`write`](mod@write): bodies in and out.
//! - [`raw_headers`]: a response's header lines passed on as they arrived.

#![deny(missing_docs)]

pub mod client;
pub mod decode;
pub mod head;
pub mod raw_headers;
pub mod server;
pub mod write;

pub use head::{MAX_HEAD, MAX_HEADERS, is_valid_host};
pub use raw_headers::{RawHeaders, WithRawHeaders, materialize};
pub use write::{BodyWriteError, Framing, WRITE_CHUNK, flush, write_body};

/// The error type of streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response head or body that is not valid HTTP/1.x.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// Malformed: what is wrong with it.
    #[error("{0}")]
    Invalid(String),
    /// The head is larger than [`MAX_HEAD`].
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
}

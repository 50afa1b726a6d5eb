//! Upstream side of the proxy: endpoints and their live state, load balancing, breakers and
//! outlier ejection, connection pools and the clients that speak HTTP/1.1 and HTTP/2 to
//! endpoints, over TCP or TLS. A snapshot is built from these; how a request uses them is in
//! [`crate::send`].

pub mod balance;
pub mod breaker;
pub mod conn_pool;
pub mod connection;
pub mod endpoint;
pub mod http1;
pub mod http2;
pub mod outlier;
pub mod plugin_view;
pub mod stream;

pub use endpoint::{Endpoint, EndpointStats};

use crate::config::CircuitBreakerConfig;
use breaker::ServiceState;
use conn_pool::ConnectError;
use http1::Http1Error;
use http2::Http2Error;

/// How a service reaches its endpoints.
#[derive(Debug, Clone)]
pub enum Transport {
    /// HTTP/1.1 on each endpoint's own connection pool.
    Http1,
    /// HTTP/2 (h2c, or h2 over TLS) on each endpoint's one shared connection.
    Http2,
}

/// An upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Over HTTP/1.1 (its timeout is [`Self::Timeout`]).
    #[error(transparent)]
    Http1(Http1Error),
    /// Over HTTP/2.
    #[error(transparent)]
    Http2(#[from] Http2Error),
    /// No response head before the deadline, over either protocol.
    #[error("no response before the deadline")]
    Timeout,
}

impl From<Http1Error> for UpstreamError {
    fn from(e: Http1Error) -> Self {
        match e {
            Http1Error::Timeout => Self::Timeout,
            e => Self::Http1(e),
        }
    }
}

impl UpstreamError {
    /// Whether the endpoint failed the TLS handshake (certificate not trusted, wrong name):
    /// a configuration problem worth a warning, unlike an endpoint that is merely down.
    pub fn is_tls_handshake(&self) -> bool {
        matches!(
            self,
            Self::Http1(Http1Error::Connect(ConnectError::Tls(..)))
                | Self::Http2(Http2Error::Connect(ConnectError::Tls(..)))
        )
    }
}

/// The service limits that apply while sending.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// The service's live counters.
    pub state: &'a ServiceState,
    /// Its configured limits.
    pub breaker: &'a CircuitBreakerConfig,
}

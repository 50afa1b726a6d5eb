//! Upstream side of the proxy: endpoints, load balancing, connection pools and the clients
//! that speak HTTP/1.1 and h2c to endpoints.

pub mod balance;
pub mod breaker;
pub mod conn_pool;
pub mod endpoint;
pub mod health;
pub mod http1;
pub mod http2;
pub mod outlier;
pub mod retry;

use http::Request;

pub use endpoint::{Endpoint, EndpointStats};

use crate::body::Body;
use crate::config::CircuitBreakerConfig;
use breaker::ServiceState;
use http1::{Exchange, Http1Error};
use http2::Http2Client;

/// How a service reaches its endpoints.
#[derive(Debug, Clone)]
pub enum Transport {
    /// HTTP/1.1 on each endpoint's own connection pool.
    Http1,
    /// h2c through a multiplexing client.
    H2c(Box<Http2Client>),
}

/// An upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Over HTTP/1.1.
    #[error(transparent)]
    Http1(#[from] Http1Error),
    /// Over h2c.
    #[error(transparent)]
    Http2(#[from] hyper_util::client::legacy::Error),
}

/// The service limits that apply while sending.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// The service's live counters.
    pub state: &'a ServiceState,
    /// Its configured limits.
    pub breaker: &'a CircuitBreakerConfig,
}

/// Sends `req` (absolute URI) to `endpoint` over `transport`.
pub async fn send(
    transport: &Transport,
    endpoint: &Endpoint,
    req: Request<Body>,
    limits: Limits<'_>,
) -> Result<Exchange, UpstreamError> {
    match transport {
        Transport::Http1 => Ok(http1::send(&endpoint.conns, req, limits).await?),
        Transport::H2c(client) => {
            let response = client.send(req).await?.map(Body::Incoming);
            Ok(Exchange { response, upgraded: None })
        }
    }
}

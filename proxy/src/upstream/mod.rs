//! Upstream side of the proxy: endpoints, load balancing and the connection pool.

pub mod balance;
pub mod endpoint;
pub mod pool;

pub use endpoint::{Endpoint, EndpointStats};

//! Upstream connections as the pools hold them: an HTTP/1.1 connection with its buffers
//! (`http1.rs`), an endpoint's shared HTTP/2 connection (`http2.rs`), and the guard that
//! counts an open connection of either kind. The clients in [`crate::upstream::http1`] and
//! [`crate::upstream::http2`] exchange requests on them.

mod http1;
mod http2;

use prometheus_client::metrics::gauge::Gauge;

pub use http1::Conn;
pub use http2::Http2Conn;

use super::breaker::ConnSlot;

/// Counts a connection in its endpoint's gauge, and keeps its place among its service's
/// connections, until dropped.
#[derive(Debug)]
pub struct OpenGuard {
    gauge: Gauge,
    _slot: ConnSlot,
}

impl OpenGuard {
    /// Counts a connection that holds `slot` in `gauge`.
    pub fn new(gauge: Gauge, slot: ConnSlot) -> Self {
        gauge.inc();
        Self { gauge, _slot: slot }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

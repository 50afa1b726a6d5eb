//! The in-flight count of a request: on its route (the `active_requests` gauge) and on the
//! endpoint it was sent to (which least-request and the plugins' view of an endpoint read).

use std::sync::Arc;

use crate::snapshot::Snapshot;
use crate::upstream::Endpoint;

/// A request counted as in flight on its route and endpoint until dropped.
///
/// It holds the request's snapshot, so the route and endpoint it counts against stay
/// alive as long as the response streams, even across a reload.
#[derive(Debug)]
pub struct InFlight {
    snapshot: Arc<Snapshot>,
    listener: usize,
    route: usize,
    service: usize,
    endpoint: usize,
}

impl InFlight {
    /// Counts the request as started on route `route` of listener `listener`, and on endpoint
    /// `endpoint` of service `service` (which a router plugin may have chosen).
    pub fn start(snapshot: Arc<Snapshot>, listener: usize, route: usize, service: usize, endpoint: usize) -> Self {
        let me = Self { snapshot, listener, route, service, endpoint };
        me.snapshot.listeners[listener].routes[route].metrics.active.inc();
        me.endpoint().stats.start_request();
        me
    }

    fn endpoint(&self) -> &Endpoint {
        &self.snapshot.services[self.service].endpoints[self.endpoint]
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.snapshot.listeners[self.listener].routes[self.route].metrics.active.dec();
        self.endpoint().stats.finish_request();
    }
}

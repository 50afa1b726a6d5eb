//! The hooks of each kind of plugin: a router routes, a filter filters requests and responses,
//! a balancer picks, a health check judges.

use crate::head::with_scratch;
use crate::pool::{CallError, Common};
use crate::world::{BalancerWorld, FilterWorld, HealthCheckWorld, RouterWorld};
use crate::{RequestView, ResponseView, types};

/// A router plugin.
pub type RouterPlugin = Common<RouterWorld>;
/// A filter plugin.
pub type FilterPlugin = Common<FilterWorld>;
/// A balancer plugin.
pub type BalancerPlugin = Common<BalancerWorld>;
/// A health-check plugin.
pub type HealthCheckPlugin = Common<HealthCheckWorld>;

impl RouterPlugin {
    /// Decides where `req` goes.
    pub fn route(&self, req: &RequestView<'_>) -> Result<types::RouteDecision, CallError> {
        with_scratch(|buf| {
            req.encode(&self.headers, buf);
            self.call(0, |b, store| b.call_route(store, buf))
        })
    }
}

impl FilterPlugin {
    /// The filter's decision on a request.
    pub fn on_request(&self, req: &RequestView<'_>) -> Result<types::FilterAction, CallError> {
        with_scratch(|buf| {
            req.encode(&self.headers, buf);
            self.call(0, |b, store| b.call_on_request(store, buf))
        })
    }

    /// The filter's decision on a response.
    pub fn on_response(
        &self,
        req: &RequestView<'_>,
        resp: &ResponseView<'_>,
    ) -> Result<types::FilterAction, CallError> {
        with_scratch(|buf| {
            resp.encode(req, &self.headers, buf);
            self.call(1, |b, store| b.call_on_response(store, buf))
        })
    }
}

/// A request packed once for a balancer, which may be asked again on a retry.
#[derive(Debug)]
pub struct PackedRequest(Vec<u8>);

impl BalancerPlugin {
    /// Packs `req` as this balancer is passed it.
    pub fn pack(&self, req: &RequestView<'_>) -> PackedRequest {
        let mut buf = Vec::new();
        req.encode(&self.headers, &mut buf);
        PackedRequest(buf)
    }

    /// The index into `candidates` of the endpoint `req` should go to; `None` declines.
    pub fn pick(&self, req: &PackedRequest, candidates: &[types::Endpoint]) -> Result<Option<u32>, CallError> {
        self.call(0, |b, store| b.call_pick(store, &req.0, candidates))
    }
}

impl HealthCheckPlugin {
    /// The plugin's verdict on `target` given its probe response.
    pub fn judge(&self, target: &types::Endpoint, probe: &types::ProbeResponse) -> Result<types::Health, CallError> {
        self.call(0, |b, store| b.call_judge(store, target, probe))
    }
}

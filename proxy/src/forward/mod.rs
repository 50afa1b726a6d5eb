//! Request forwarding. A request goes through phases in a fixed order, each a function of its
//! own over the request's `Forwarding`:
//!
//! 1. admit: the listener's routes, the head's rules, the first matching route ([`forward`];
//!    the mesh API's [`call`] names its route instead);
//! 2. route: header hygiene, the trace, the path rewrite;
//! 3. plugins: the router may choose another service or answer, filters may change the
//!    request or answer (`plugins.rs`);
//! 4. contract: the request body checked against the service's contract (`contract.rs`);
//! 5. pick and send, with retries: the breaker's admission, the body kept for replay, then the
//!    attempts ([`crate::send`]);
//! 6. respond: the response contract, the response filters, the body streamed back or the
//!    connection spliced after an upgrade.
//!
//! Any phase may end the request with an answer of its own. However it ends, one guard
//! (`record.rs`) records it, in the route's metrics, the topology edge and the access log, as
//! far as that way of ending counts there.
//!
//! This is the hot path. It loads the snapshot once, allocates only what the upstream
//! request needs, and takes no lock. The phases that await do so in `dispatch` itself (a
//! contract check or a body read for replay behind a box of its own, only when needed), so
//! that splitting the path into phases adds no async layer.

mod buffer;
mod contract;
mod headers;
mod observe;
mod plugins;
mod record;
pub mod response;
mod upgrade;

use std::mem::take;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response};
use hyper::upgrade::OnUpgrade;

pub use headers::{add_forwarded, check_request_head, ensure_host, is_upgrade, strip_hop_by_hop};
use plugins::RequestCopy;
use record::{LastAttempt, RequestRecord, Stage};
use response::{Answer, ResponseBody, SHED_HEADER, local};

use crate::body::Body;
use crate::clock::millis_at;
use crate::config::RetryConfig;
use crate::mesh::Mesh;
use crate::message::{ProxyRequest, ProxyResponse};
use crate::routing::{MatchInput, host_without_port};
use crate::send::attempts::{self, Attempts, Failure, RequestBody, Unsent};
use crate::send::in_flight::InFlight;
use crate::snapshot::{Route, Snapshot};
use crate::telemetry::metrics::ErrorKind;
use crate::upstream::balance::PickContext;
use crate::upstream::breaker::{Admission, Shed};
use crate::upstream::http1::Exchange;

/// What the proxy knows about the downstream connection a request arrived on.
#[derive(Debug)]
pub struct Downstream {
    /// Name of the listener that accepted it.
    pub listener: String,
    /// The client's address.
    pub client: SocketAddr,
    /// The client's IP, formatted once per connection for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// `ip:port` of the client, formatted once per connection for plugins.
    pub client_text: String,
    /// `http` or `https`.
    pub proto: &'static str,
}

impl Downstream {
    /// Describes a connection accepted on `listener` from `client`.
    pub fn new(listener: &str, client: SocketAddr, proto: &'static str) -> Self {
        let client_ip = HeaderValue::from_str(&client.ip().to_string()).expect("an IP address is a valid header value");
        Self { listener: listener.to_owned(), client, client_ip, client_text: client.to_string(), proto }
    }
}

/// Forwards one downstream request and returns the response to send back.
pub async fn forward(mesh: Arc<Mesh>, down: Arc<Downstream>, mut req: Box<ProxyRequest>) -> Answer {
    let started = Instant::now();
    let snap = mesh.snapshot();
    let target = match admit(&snap, &down, &mut req) {
        Ok(target) => target,
        Err(kind) => {
            mesh.metrics.unrouted_error(kind);
            return local(kind);
        }
    };
    let (Ok(answer) | Err(answer)) = dispatch(&mesh, snap, &down, target, req, started).await;
    answer
}

/// Sends `req` to the service named `service` on the mesh API's route to it: balancing,
/// breaker, retries, timeouts and the route's filters, as for proxied traffic. `None` when no
/// such service exists.
pub async fn call(
    mesh: &Arc<Mesh>,
    down: &Downstream,
    service: &str,
    req: Request<Body>,
) -> Option<Response<ResponseBody>> {
    let started = Instant::now();
    let snap = mesh.snapshot();
    let (service_idx, _) = snap.service(service)?;
    let target = snap.call_route(service_idx)?;
    let (Ok(answer) | Err(answer)) = dispatch(mesh, snap, down, target, ProxyRequest::boxed(req), started).await;
    let mut response = answer.into_http();
    wasmesh_http1::materialize(&mut response);
    Some(response)
}

/// The admit phase: the listener's routes, the head's rules (unless the HTTP/1.1 fast path
/// checked them as it parsed), the first route that matches: its (listener, route) indices.
/// `Err`: why the request has no route, answered and counted without one.
#[inline]
fn admit(snap: &Snapshot, down: &Downstream, req: &mut ProxyRequest) -> Result<(usize, usize), ErrorKind> {
    let (listener_idx, table) = snap.listener(&down.listener).ok_or(ErrorKind::no_route)?;
    if !req.head_checked {
        check_request_head(&mut req.head, table.max_request_headers)?;
    }
    let head = &req.head;
    let host = head
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| head.uri.authority().map(|a| a.as_str()))
        .map_or("", host_without_port);
    let view = MatchInput { host, path: head.uri.path(), method: &head.method, headers: &head.headers };
    let route_idx = table.find(&view).ok_or(ErrorKind::no_route)?;
    Ok((listener_idx, route_idx))
}

/// One request being forwarded: what the phases after routing share and hand on.
struct Forwarding<'s> {
    down: &'s Downstream,
    /// Listener and route indices.
    target: (usize, usize),
    route: &'s Route,
    /// The route's service, or the one its router plugin chose.
    service_idx: usize,
    /// The request, body included, until the attempts take it.
    req: Box<ProxyRequest>,
    /// The path sent upstream: rewritten, and plugins may change it.
    path: PathAndQuery,
    /// hyper's handle on the downstream connection, when the request asks for an upgrade.
    upgrade: Option<OnUpgrade>,
    /// When the request arrived.
    started: Instant,
    /// The route's deadline for the whole request, response body included.
    deadline: Instant,
}

/// Forwards `req` on route `target` (listener index, route index) of `snap`, phase by phase.
/// `Ok`: the answer made of the last attempt; `Err`: the answer of a phase that ended the
/// request before any attempt. The guard `record` records the request either way.
async fn dispatch(
    mesh: &Arc<Mesh>,
    snap: Arc<Snapshot>,
    down: &Downstream,
    target: (usize, usize),
    mut req: Box<ProxyRequest>,
    started: Instant,
) -> Result<Answer, Answer> {
    // Route; the guard starts with the trace, which the cleaned head carries upstream.
    let route = &snap.listeners[target.0].routes[target.1];
    let upgrade = clean_head(&snap, down, target.0, &mut req);
    let mut record = RequestRecord::start(&snap, route, down, started, &mut req.head);
    let path = rewrite(route, &req.head).map_err(|kind| record.local(Stage::Route, kind))?;
    let deadline = started + route.timeout;
    let mut fw = Forwarding { down, target, route, service_idx: route.service, req, path, upgrade, started, deadline };

    // Plugins.
    plugins::on_request(&mut fw, &snap, &mut record.obs)
        .map_err(|answer| record.early(Stage::Plugins, None, answer))?;
    record.bound_for(fw.service_idx);
    let service = &snap.services[fw.service_idx];

    // Contract.
    let contract = service.contracts.as_ref().and_then(|c| c.find(&fw.req.head.method, fw.path.path()));
    if let Some(c) = contract {
        let checking =
            contract::check_request(mesh, service, c, &fw.req.head.headers, take(&mut fw.req.body), deadline);
        fw.req.body =
            Box::pin(checking).await.map_err(|(kind, answer)| record.early(Stage::Contract, Some(kind), answer))?;
    }

    // Pick and send, with retries.
    // One clock read serves admission and the first pick: the request's arrival, unless its
    // body was read for a contract check, which may have taken a while.
    let now_ms = millis_at(if contract.is_some() { Instant::now() } else { started });
    let mut admission =
        attempts::admit(&mesh.metrics, service, now_ms).map_err(|shed| shed_answer(&mut record, shed))?;
    // Retries need the request body again: keep it when it is small and announced.
    let retry = service.policy.retry.as_ref().filter(|_| fw.upgrade.is_none());
    let body = match retry {
        Some(r) => Box::pin(buffer::replayable(&mut fw.req.body, r.max_replay_body, deadline))
            .await
            .map_err(|kind| record.local(Stage::Replay, kind))?,
        None => RequestBody::Streamed,
    };
    let request = RequestCopy::for_response_filters(route, &fw.req.head, &fw.path);
    // Contracts read the response's headers from a map; otherwise an HTTP/1.1 upstream's
    // header lines go downstream as they arrived (response filters read and change them there).
    let to = attempts_of(mesh, &snap, &fw, &fw.path, retry, now_ms, contract.is_none());
    let sent = attempts::send(&to, fw.req, body, &mut admission, &mut record.obs)
        .await
        .map_err(|unsent| unsent_answer(&mut record, unsent))?;

    // Respond.
    let last = LastAttempt { service, endpoint: sent.endpoint, resends: sent.resends, ended: sent.ended };
    let mut up = match sent.result {
        Ok((exchange, in_flight)) => Upstream { exchange, in_flight, admission, error: None, last },
        Err(failure) => return Ok(failed(&mut record, last, failure)),
    };
    if let Some(c) = contract.filter(|_| up.exchange.upgraded.is_none()) {
        Box::pin(contract::check_response(mesh, route, service, c, &mut up, deadline)).await;
    }
    Ok(respond(down, route, fw.upgrade, deadline, request.as_ref(), up, &mut record))
}

/// The route phase's header hygiene on `req`, arrived on listener `listener_idx`: hop-by-hop
/// headers out, `Host` in, the `X-Forwarded-*` headers when the listener adds them. Returns
/// the upgrade handle, when the request asks for one.
#[inline]
fn clean_head(snap: &Snapshot, down: &Downstream, listener_idx: usize, req: &mut ProxyRequest) -> Option<OnUpgrade> {
    // hyper leaves an upgrade's handle in the extensions of a request that asks for one.
    let upgrade = is_upgrade(&req.head.headers).then(|| req.head.extensions.remove::<OnUpgrade>()).flatten();
    let parts = &mut req.head;
    strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
    let host = ensure_host(&mut parts.headers, &parts.uri);
    if snap.listeners[listener_idx].forwarded_headers {
        let host = host.cloned();
        add_forwarded(&mut parts.headers, host, &down.client_ip, down.proto);
    }
    upgrade
}

/// The route phase's path: the request's, or as the route rewrites it. `Err` when the rewrite
/// makes no valid path.
#[inline]
fn rewrite(route: &Route, head: &http::request::Parts) -> Result<PathAndQuery, ErrorKind> {
    let path = match &route.rewrite {
        Some(rw) => {
            let original = head.uri.path_and_query().map_or("/", PathAndQuery::as_str);
            PathAndQuery::try_from(rw.apply(&route.matcher, original))
        }
        None => Ok(head.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"))),
    };
    path.map_err(|_| ErrorKind::bad_request)
}

/// The pick-and-send phase's terms for the request `fw` of `snap` to `path`, admitted at
/// `now_ms`: `retry` unless it cannot be retried, `raw_headers` unless a contract reads the
/// response.
#[inline]
fn attempts_of<'s, 'r>(
    mesh: &'s Mesh,
    snap: &'s Arc<Snapshot>,
    fw: &Forwarding<'s>,
    path: &'r PathAndQuery,
    retry: Option<&'s RetryConfig>,
    now_ms: u64,
    raw_headers: bool,
) -> Attempts<'s, 'r> {
    let service = &snap.services[fw.service_idx];
    let hash = service.hash_key.as_ref().and_then(|k| k.hash(&fw.req.head.headers, fw.down.client.ip()));
    Attempts {
        metrics: &mesh.metrics,
        snapshot: snap,
        route: fw.target,
        service: fw.service_idx,
        pick: PickContext { hash, now: fw.started },
        first_pick_ms: now_ms,
        balancer_head: plugins::balancer_head(service, fw),
        path,
        retry,
        deadline: fw.deadline,
        raw_headers,
    }
}

/// The answer to a request the service's breaker or limits shed.
fn shed_answer(record: &mut RequestRecord<'_>, shed: Shed) -> Answer {
    let kind = if shed == Shed::Open { ErrorKind::circuit_open } else { ErrorKind::overflow };
    record.early(Stage::Admission, Some(kind), with_shed_reason(local(kind), shed))
}

/// The answer to a request no attempt could be made for.
fn unsent_answer(record: &mut RequestRecord<'_>, unsent: Unsent<'_>) -> Answer {
    match unsent {
        Unsent::NoEndpoint => record.local(Stage::Pick, ErrorKind::no_endpoint),
        Unsent::PluginFailed(plugin) => {
            record.early(Stage::Pick, None, plugins::failed_closed(plugin.name(), plugin.fail_status))
        }
    }
}

/// The answer to a request whose last attempt got no response: the proxy's own, naming the
/// limit that shed it when one did.
fn failed<'s>(record: &mut RequestRecord<'s>, last: LastAttempt<'s>, failure: Failure) -> Answer {
    let answer = match failure.shed {
        Some(shed) => with_shed_reason(local(failure.kind), shed),
        None => local(failure.kind),
    };
    let status = answer.head.status;
    record.exchanged(last, true, Some(failure.kind), status, status);
    answer
}

fn with_shed_reason(mut resp: Answer, shed: Shed) -> Answer {
    resp.head.headers.insert(SHED_HEADER, HeaderValue::from_static(shed.as_str()));
    resp
}

/// An endpoint's response on its way back (kept in its box: a response head is large), with
/// what keeps the request counted while its body streams.
struct Upstream<'s> {
    exchange: Box<Exchange>,
    in_flight: InFlight,
    admission: Admission,
    /// The proxy's own error, when its answer took the response's place.
    error: Option<ErrorKind>,
    last: LastAttempt<'s>,
}

impl Upstream<'_> {
    /// Puts the proxy's answer for `kind` in the response's place.
    fn replace(&mut self, kind: ErrorKind, resp: Response<Body>) {
        self.error = Some(kind);
        self.exchange.response = resp;
    }
}

/// The respond phase: the response head cleaned and shown to the response filters (`request` is
/// what they see of the request), then the body streamed back under the request's `deadline`,
/// or the two connections spliced when both sides switched protocols.
#[inline]
fn respond<'s>(
    down: &Downstream,
    route: &Route,
    downstream_upgrade: Option<OnUpgrade>,
    deadline: Instant,
    request: Option<&RequestCopy>,
    up: Upstream<'s>,
    record: &mut RequestRecord<'s>,
) -> Answer {
    let Upstream { exchange, in_flight, admission, error, last } = up;
    let Exchange { response, mut raw, upgraded, .. } = *exchange;
    let (mut head, body) = response.into_parts();
    let status = head.status;
    strip_hop_by_hop(&mut head.headers, upgraded.is_some() && downstream_upgrade.is_some());
    let replaced = match request {
        Some(req) if upgraded.is_none() => {
            plugins::on_response(route, req, &down.client_text, &mut head, &mut raw, &mut record.obs)
        }
        _ => None,
    };
    record.exchanged(last, false, error, status, replaced.as_ref().map_or(status, |a| a.head.status));
    if let Some(answer) = replaced {
        return answer;
    }
    let body = match (downstream_upgrade, upgraded) {
        (Some(down_up), Some(up_up)) => {
            upgrade::tunnel(down_up, up_up, in_flight, admission);
            ResponseBody::plain(Body::Empty)
        }
        _ => ResponseBody::streamed(body, in_flight, admission, deadline).with_raw_headers(raw),
    };
    Box::new(ProxyResponse { head, body })
}

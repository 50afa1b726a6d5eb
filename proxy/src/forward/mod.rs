//! Request forwarding: route, rewrite, hand the request to its attempts at the service
//! (`upstream::attempts`), stream the answer back.
//!
//! This is the hot path. It loads the snapshot once, allocates only what the upstream
//! request needs, and takes no lock.

mod buffer;
mod contract;
mod headers;
mod observe;
mod plugins;
pub mod response;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;

pub use headers::{add_forwarded, check_request_head, ensure_host, is_upgrade, strip_hop_by_hop};
use observe::{Finished, Observer};
use response::{Answer, ResponseBody, SHED_HEADER, local};

use crate::body::Body;
use crate::clock::millis_at;
use crate::config::FailMode;
use crate::mesh::Mesh;
use crate::message::{ProxyRequest, ProxyResponse};
use crate::plugin::types::{FilterAction, Hooks, RouteDecision};
use crate::plugin::{HookCalls, ResponseView};
use crate::routing::{RequestView, host_without_port};
use crate::snapshot::Route;
use crate::telemetry::metrics::ErrorKind;
use crate::upstream::attempts::{self, Attempts, RequestBody, Sent, Unsent};
use crate::upstream::balance::PickContext;
use crate::upstream::breaker::Shed;
use crate::upstream::http1::Exchange;
use crate::wire;

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
    let Some((listener_idx, table)) = snap.listener(&down.listener) else {
        mesh.metrics.unrouted_error(ErrorKind::no_route);
        return local(ErrorKind::no_route);
    };
    if !req.head_checked
        && let Err(kind) = check_request_head(&mut req.head, table.max_request_headers)
    {
        mesh.metrics.unrouted_error(kind);
        return local(kind);
    }
    let head = &req.head;
    let host = head
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| head.uri.authority().map(|a| a.as_str()))
        .map_or("", host_without_port);
    let view = RequestView { host, path: head.uri.path(), method: &head.method, headers: &head.headers };
    let Some(route_idx) = table.find(&view) else {
        mesh.metrics.unrouted_error(ErrorKind::no_route);
        return local(ErrorKind::no_route);
    };
    dispatch(&mesh, snap, &down, (listener_idx, route_idx), req, started).await
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
    let mut response = dispatch(mesh, snap, down, target, ProxyRequest::boxed(req), started).await.into_http();
    wire::materialize(&mut response);
    Some(response)
}

/// Forwards `req` on route `target` (listener index, route index) of `snap`.
async fn dispatch(
    mesh: &Arc<Mesh>,
    snap: Arc<crate::snapshot::Snapshot>,
    down: &Downstream,
    (listener_idx, route_idx): (usize, usize),
    mut req: Box<ProxyRequest>,
    started: Instant,
) -> Answer {
    let route = &snap.listeners[listener_idx].routes[route_idx];
    let mut service_idx = route.service;

    // hyper leaves an upgrade's handle in the extensions of a request that asks for one.
    let downstream_upgrade = is_upgrade(&req.head.headers).then(|| req.head.extensions.remove::<OnUpgrade>()).flatten();
    let parts = &mut req.head;
    strip_hop_by_hop(&mut parts.headers, downstream_upgrade.is_some());
    let host = ensure_host(&mut parts.headers, &parts.uri);
    if snap.listeners[listener_idx].forwarded_headers {
        let host = host.cloned();
        add_forwarded(&mut parts.headers, host, &down.client_ip, down.proto);
    }
    let mut obs = Observer::start(&snap, parts);
    let path = match &route.rewrite {
        Some(rw) => {
            let original = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
            PathAndQuery::try_from(rw.apply(&route.matcher, original))
        }
        None => Ok(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"))),
    };
    let Ok(mut path) = path else {
        route.metrics.count_error(ErrorKind::bad_request);
        return local(ErrorKind::bad_request);
    };

    // Plugins: the router may pick another service or answer; filters may change or answer.
    if route.router.is_some() || !route.filters.is_empty() {
        let authority = parts.headers.get(http::header::HOST).cloned();
        if let Some(router) = &route.router {
            let head =
                plugins::request_view(&parts.method, authority.as_ref(), &path, &down.client_text, &parts.headers);
            match obs.plugin_call(router.name(), "route", || router.route(&head)) {
                Ok(RouteDecision::Default) => {}
                Ok(RouteDecision::Upstream(choice)) => {
                    let Some((idx, _)) = snap.service(&choice.service) else {
                        tracing::warn!(plugin = router.name(), service = %choice.service, "router chose an unknown service");
                        return plugins::failed_closed(router.name(), 502);
                    };
                    service_idx = idx;
                    if let Some(m) = choice.mutations {
                        plugins::apply(m, &mut parts.headers, &mut None, Some(&mut path));
                    }
                }
                Ok(RouteDecision::Respond(answer)) => return plugins::local_response(answer),
                Err(_) if router.fail == FailMode::Closed => {
                    return plugins::failed_closed(router.name(), router.fail_status);
                }
                Err(_) => {}
            }
        }
        for filter in route.filters.iter().filter(|f| f.wants(Hooks::ON_REQUEST)) {
            let head =
                plugins::request_view(&parts.method, authority.as_ref(), &path, &down.client_text, &parts.headers);
            match obs.plugin_call(filter.name(), "on_request", || filter.on_request(&head)) {
                Ok(FilterAction::Proceed) => {}
                Ok(FilterAction::Mutate(m)) => plugins::apply(m, &mut parts.headers, &mut None, Some(&mut path)),
                Ok(FilterAction::Respond(answer)) => return plugins::local_response(answer),
                Err(_) if filter.fail == FailMode::Closed => {
                    return plugins::failed_closed(filter.name(), filter.fail_status);
                }
                Err(_) => {}
            }
        }
    }
    let service = &snap.services[service_idx];
    let deadline = started + route.timeout;
    let contract = service.contracts.as_ref().and_then(|c| c.find(&parts.method, path.path()));
    if let Some(c) = contract {
        let body = std::mem::take(&mut req.body);
        match Box::pin(contract::check_request(mesh, route, service, c, &parts.headers, body, deadline)).await {
            Ok(checked) => req.body = checked,
            Err(answer) => {
                route.metrics.count_status(answer.head.status);
                return answer;
            }
        }
    }
    // One clock read serves admission and the first pick: the request's arrival, unless its
    // body was read for a contract check, which may have taken a while.
    let now_ms = millis_at(if contract.is_some() { Instant::now() } else { started });
    let hash = service.hash_key.as_ref().and_then(|k| k.hash(&parts.headers, down.client.ip()));

    let mut admission = match attempts::admit(&mesh.metrics, service, now_ms) {
        Ok(admission) => admission,
        Err(shed) => {
            let kind = if shed == Shed::Open { ErrorKind::circuit_open } else { ErrorKind::overflow };
            route.metrics.count_error(kind);
            route.metrics.count_status(StatusCode::SERVICE_UNAVAILABLE);
            route.edge(service_idx).record(true, started.elapsed(), Instant::now());
            return with_shed_reason(local(kind), shed);
        }
    };

    // Retries need the request body again: keep it when it is small and announced.
    let retry = service.policy.retry.as_ref().filter(|_| downstream_upgrade.is_none());
    let body = match retry {
        Some(r) => match Box::pin(buffer::replayable(&mut req.body, r.max_replay_body, deadline)).await {
            Ok(body) => body,
            Err(kind) => {
                route.metrics.count_error(kind);
                return local(kind);
            }
        },
        None => RequestBody::Streamed,
    };
    let balancer_head = service.balancer_plugin.as_ref().map(|plugin| {
        let authority = parts.headers.get(http::header::HOST);
        plugin.pack(&plugins::request_view(&parts.method, authority, &path, &down.client_text, &parts.headers))
    });
    let request_line = RequestCopy::for_response_filters(route, parts, &path);
    let to = Attempts {
        metrics: &mesh.metrics,
        snapshot: &snap,
        route: (listener_idx, route_idx),
        service: service_idx,
        pick: PickContext { hash, now: started },
        first_pick_ms: now_ms,
        balancer_head,
        path: &path,
        retry,
        deadline,
        // Contracts read the response's headers from a map; otherwise an HTTP/1.1 upstream's
        // header lines go downstream as they arrived (response filters read and change them there).
        raw_headers: contract.is_none(),
    };
    let sent = match attempts::send(&to, req, body, &mut admission, &mut obs).await {
        Ok(sent) => sent,
        Err(Unsent::NoEndpoint) => {
            route.metrics.count_error(ErrorKind::no_endpoint);
            route.edge(service_idx).record(true, started.elapsed(), Instant::now());
            return local(ErrorKind::no_endpoint);
        }
        Err(Unsent::PluginFailed(plugin)) => {
            route.edge(service_idx).record(true, started.elapsed(), Instant::now());
            return plugins::failed_closed(plugin.name(), plugin.fail_status);
        }
    };
    let Sent { endpoint, resends, ended: now, result } = sent;
    let elapsed = now - started;
    let finished = |status| Finished {
        status,
        route: &route.name,
        service: &service.name,
        upstream: &endpoint.authority,
        resends,
        elapsed,
    };
    let (exchange, in_flight) = match result {
        Ok(pair) => pair,
        Err(failure) => {
            let kind = failure.kind;
            route.metrics.count_error(kind);
            let resp = match failure.shed {
                Some(shed) => with_shed_reason(local(kind), shed),
                None => local(kind),
            };
            route.metrics.count_status(resp.head.status);
            route.metrics.duration.observe(elapsed);
            route.edge(service_idx).record(true, elapsed, now);
            obs.finish(down.client, finished(resp.head.status));
            return resp;
        }
    };
    let Exchange { response, mut raw, upgraded, .. } = *exchange;
    let (mut head, mut body) = response.into_parts();
    if let Some(c) = contract.filter(|_| upgraded.is_none()) {
        match Box::pin(contract::check_response(mesh, route, service, c, &head, body, deadline)).await {
            Ok(checked) => body = checked,
            Err(answer) => (head, body) = answer.into_parts(),
        }
    }
    let status = head.status;
    route.metrics.count_status(status);
    route.metrics.duration.observe(elapsed);
    route.edge(service_idx).record(status.is_server_error(), elapsed, now);

    strip_hop_by_hop(&mut head.headers, upgraded.is_some() && downstream_upgrade.is_some());
    let answer = match &request_line {
        Some(req) if upgraded.is_none() => {
            response_filters(route, req, &down.client_text, &mut head, &mut raw, &mut obs)
        }
        _ => None,
    };
    obs.finish(down.client, finished(answer.as_ref().map_or(status, |a| a.head.status)));
    if let Some(answer) = answer {
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

/// What response filters see of the request, kept when a route has any: the request line and
/// only the headers those filters read.
struct RequestCopy {
    method: http::Method,
    authority: Option<http::HeaderValue>,
    path: PathAndQuery,
    headers: http::HeaderMap,
}

impl RequestCopy {
    fn for_response_filters(route: &Route, parts: &http::request::Parts, path: &PathAndQuery) -> Option<Self> {
        let mut filters = route.filters.iter().filter(|f| f.wants(Hooks::ON_RESPONSE)).peekable();
        filters.peek()?;
        let mut headers = http::HeaderMap::new();
        for filter in filters {
            filter.header_interest().copy(&parts.headers, &mut headers);
        }
        Some(Self {
            method: parts.method.clone(),
            authority: parts.headers.get(http::header::HOST).cloned(),
            path: path.clone(),
            headers,
        })
    }
}

/// Runs the route's filters on a response head, last filter first. Returns a replacement
/// response when a filter answers (or fails closed).
fn response_filters(
    route: &Route,
    req: &RequestCopy,
    client: &str,
    parts: &mut http::response::Parts,
    raw: &mut Option<wire::RawHeaders>,
    obs: &mut Observer,
) -> Option<Answer> {
    for filter in route.filters.iter().rev().filter(|f| f.wants(Hooks::ON_RESPONSE)) {
        let head = plugins::request_view(&req.method, req.authority.as_ref(), &req.path, client, &req.headers);
        let resp = ResponseView { status: parts.status.as_u16(), raw: raw.as_ref(), headers: &parts.headers };
        match obs.plugin_call(filter.name(), "on_response", || filter.on_response(&head, &resp)) {
            Ok(FilterAction::Proceed) => {}
            Ok(FilterAction::Mutate(m)) => plugins::apply(m, &mut parts.headers, raw, None),
            Ok(FilterAction::Respond(answer)) => return Some(plugins::local_response(answer)),
            Err(_) if filter.fail == FailMode::Closed => {
                return Some(plugins::failed_closed(filter.name(), filter.fail_status));
            }
            Err(_) => {}
        }
    }
    None
}

fn with_shed_reason(mut resp: Answer, shed: Shed) -> Answer {
    resp.head.headers.insert(SHED_HEADER, HeaderValue::from_static(shed.as_str()));
    resp
}

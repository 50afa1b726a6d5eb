//! Request forwarding: route, balance, rewrite, send upstream, stream the answer back.
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

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::upgrade::OnUpgrade;

pub use headers::{add_forwarded, check_request_head, ensure_host, is_upgrade, strip_hop_by_hop};
use observe::{Finished, Observer};
use response::{Answer, ResponseBody, SHED_HEADER, local};

use crate::body::Body;
use crate::clock::{millis_at, now_millis};
use crate::config::FailMode;
use crate::mesh::Mesh;
use crate::message::{ProxyRequest, ProxyResponse};
use crate::plugin::types::{FilterAction, Hooks, RouteDecision};
use crate::plugin::{HookCalls, ResponseView};
use crate::routing::{RequestView, host_without_port};
use crate::snapshot::{Route, Service};
use crate::telemetry::metrics::ErrorKind;
use crate::telemetry::metrics::{ServiceEndpointLabels, ServiceLabels, ServiceReasonLabels};
use crate::upstream::balance::PickContext;
use crate::upstream::breaker::{Shed, Transition};
use crate::upstream::conn_pool::ConnectError;
use crate::upstream::http1::{Exchange, Http1Error};
use crate::upstream::http2::Http2Error;
use crate::upstream::in_flight::InFlight;
use crate::upstream::outlier::{self, Outcome};
use crate::upstream::retry::{Attempt as RetryAttempt, Tried, backoff, should_retry};
use crate::upstream::select;
use crate::upstream::{self, Limits, Transport, UpstreamError};
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
    let body = std::mem::take(&mut req.body);
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
    let body = match contract {
        Some(c) => {
            match Box::pin(contract::check_request(mesh, route, service, c, &parts.headers, body, deadline)).await {
                Ok(checked) => checked,
                Err(answer) => {
                    route.metrics.count_status(answer.head.status);
                    return answer;
                }
            }
        }
        None => body,
    };
    // One clock read serves admission and the first pick: the request's arrival, unless its
    // body was read for a contract check, which may have taken a while.
    let now_ms = millis_at(if contract.is_some() { Instant::now() } else { started });
    let hash = service.hash_key.as_ref().and_then(|k| k.hash(&parts.headers, down.client.ip()));

    let mut admission = match service.state.admit(&service.policy.breaker, now_ms) {
        Ok((admission, transition)) => {
            if let Some(t) = transition {
                note_transition(mesh, service, t);
            }
            admission
        }
        Err(shed) => {
            count_shed(mesh, service, shed);
            let kind = if shed == Shed::Open { ErrorKind::circuit_open } else { ErrorKind::overflow };
            route.metrics.count_error(kind);
            route.metrics.count_status(StatusCode::SERVICE_UNAVAILABLE);
            route.edge(service_idx).record(true, started.elapsed(), Instant::now());
            return with_shed_reason(local(kind), shed);
        }
    };

    parts.version = match service.transport {
        Transport::Http1 => Version::HTTP_11,
        Transport::Http2 => Version::HTTP_2,
    };
    let mut body = body;

    // Retries need the request body again: keep it when it is small and announced.
    let retry = service.policy.retry.as_ref().filter(|_| downstream_upgrade.is_none());
    let replay = match retry {
        Some(r) => match Box::pin(buffer::replayable(body, r.max_replay_body, deadline)).await {
            Ok(buffer::Replay::Kept(bytes)) => {
                body = Body::Empty;
                Some(bytes)
            }
            Ok(buffer::Replay::Streamed(b)) => {
                body = b;
                None
            }
            Err(kind) => {
                route.metrics.count_error(kind);
                return local(kind);
            }
        },
        None => None,
    };
    let max_attempts = match (retry, &replay) {
        (Some(r), Some(_)) => r.num_retries + 1,
        _ => 1,
    };

    let ctx = PickContext { hash, now: started };
    let balancer_head = service.balancer_plugin.as_ref().map(|plugin| {
        let authority = parts.headers.get(http::header::HOST);
        plugin.pack(&plugins::request_view(&parts.method, authority, &path, &down.client_text, &parts.headers))
    });
    let mut tried = Tried::default();
    let mut attempt = 0;
    let request_line = RequestCopy::for_response_filters(route, parts, &path);
    // Contracts read the response's headers from a map; otherwise an HTTP/1.1 upstream's
    // header lines go downstream as they arrived (response filters read and change them there).
    let raw_headers = contract.is_none();
    let mut req = Some(req);
    let mut retry_slot = None;
    let (endpoint_idx, now, answered_ms, result) = loop {
        attempt += 1;
        let pick_ms = if attempt == 1 { now_ms } else { now_millis() };
        let idx = match select::pick(service, &ctx, pick_ms, &tried, balancer_head.as_ref(), &mut obs) {
            Ok(Some(idx)) => idx,
            Ok(None) => {
                route.metrics.count_error(ErrorKind::no_endpoint);
                route.edge(service_idx).record(true, started.elapsed(), Instant::now());
                return local(ErrorKind::no_endpoint);
            }
            Err(plugin) => {
                route.edge(service_idx).record(true, started.elapsed(), Instant::now());
                return plugins::failed_closed(plugin.name(), plugin.fail_status);
            }
        };
        let endpoint = &service.endpoints[idx];
        let uri = upstream_uri(endpoint, &path);
        let request = match (&replay, attempt < max_attempts) {
            // More attempts may follow: send a copy.
            (Some(bytes), true) => {
                let head = &req.as_ref().expect("the request is kept until the last attempt").head;
                let body = Body::full(bytes.clone());
                ProxyRequest::new(head.method.clone(), uri, head.version, head.headers.clone(), body)
            }
            // The downstream request becomes the upstream one.
            _ => {
                let mut last = req.take().expect("the last attempt takes the request");
                last.head.uri = uri;
                last.body = match &replay {
                    Some(bytes) => Body::full(bytes.clone()),
                    None => std::mem::take(&mut body),
                };
                last
            }
        };
        let method = request.head.method.clone();
        let in_flight = InFlight::start(snap.clone(), listener_idx, route_idx, service_idx, idx);
        let attempt_started = Instant::now();
        let try_deadline = match retry.and_then(|r| r.per_try_timeout) {
            Some(per_try) => deadline.min(attempt_started + per_try),
            None => deadline,
        };
        let limits = Limits { state: &service.state, breaker: &service.policy.breaker };
        let sent = upstream::send(&service.transport, endpoint, request, limits, attempt_started, try_deadline, raw_headers).await.map_err(|e| {
            if e.is_tls_handshake() {
                tracing::warn!(route = %route.name, upstream = %endpoint.authority, error = %e, "upstream TLS handshake failed");
            } else {
                tracing::debug!(route = %route.name, upstream = %endpoint.authority, error = %e, "upstream request failed");
            }
            Failure::from(&e)
        });
        // The transport read the clock as the response head arrived.
        let now = sent.as_ref().map_or_else(|_| Instant::now(), |exchange| exchange.received);
        // One conversion for outlier detection and the breaker (~30 instructions each).
        let answered_ms = millis_at(now);
        let outcome = match &sent {
            Ok(exchange) => RetryAttempt::Status(exchange.response.status()),
            Err(f) => f.attempt,
        };
        if let Some(outlier) = &service.policy.outlier {
            let gateway_failure = match outcome {
                RetryAttempt::Status(s) => matches!(s.as_u16(), 502..=504),
                _ => matches!(&sent, Err(f) if f.shed.is_none()),
            };
            let five_xx = gateway_failure || matches!(outcome, RetryAttempt::Status(s) if s.is_server_error());
            if let Some(length) =
                outlier::record(outlier, &service.endpoints, idx, Outcome { five_xx, gateway_failure }, answered_ms)
            {
                tracing::warn!(service = %service.name, endpoint = %endpoint.authority, ?length, "endpoint ejected");
                let labels =
                    ServiceEndpointLabels { service: service.name.clone(), endpoint: endpoint.address.to_string() };
                mesh.metrics.ejections.get_or_create(&labels).inc();
            }
        }
        let retryable = attempt < max_attempts
            && !matches!(&sent, Err(f) if f.shed.is_some())
            && retry.is_some_and(|r| should_retry(r, &method, outcome));
        if retryable && let Some(r) = retry {
            let labels = ServiceLabels { service: service.name.clone() };
            retry_slot = service.state.begin_retry(
                r.budget_percent,
                r.min_retry_concurrency,
                service.policy.breaker.max_retries,
            );
            if retry_slot.is_some() {
                let wait = backoff(r, attempt);
                if Instant::now() + wait < deadline {
                    mesh.metrics.retries.get_or_create(&labels).inc();
                    drop((sent, in_flight));
                    tokio::time::sleep(wait).await;
                    tried.insert(idx);
                    continue;
                }
            } else {
                mesh.metrics.retry_budget_exhausted.get_or_create(&labels).inc();
            }
        }
        if sent.is_ok() {
            endpoint.stats.observe_latency(now, now - attempt_started);
        }
        break (idx, now, answered_ms, sent.map(|e| (e, in_flight)));
    };
    drop(retry_slot);
    let endpoint = &service.endpoints[endpoint_idx];
    let elapsed = now - started;
    let finished = |status| Finished {
        status,
        route: &route.name,
        service: &service.name,
        upstream: &endpoint.authority,
        resends: attempt - 1,
        elapsed,
    };
    // An attempt shed by the proxy's own limits says nothing about the service's health.
    if !matches!(&result, Err(f) if f.shed.is_some()) {
        let success = matches!(&result, Ok((e, _)) if !e.response.status().is_server_error());
        if let Some(t) = service.state.record(&service.policy.breaker, success, admission.take_probe(), answered_ms) {
            note_transition(mesh, service, t);
        }
    }

    let (exchange, in_flight) = match result {
        Ok(pair) => pair,
        Err(failure) => {
            let kind = failure.kind;
            route.metrics.count_error(kind);
            let resp = match failure.shed {
                Some(shed) => {
                    count_shed(mesh, service, shed);
                    with_shed_reason(local(kind), shed)
                }
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

/// The URI of a request to `endpoint` for `path`.
fn upstream_uri(endpoint: &crate::upstream::Endpoint, path: &PathAndQuery) -> Uri {
    let mut uri = http::uri::Parts::default();
    // HTTP/2 sends the scheme as `:scheme`; HTTP/1.1 sends only the path.
    uri.scheme = Some(if endpoint.conns.settings().tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP });
    uri.authority = Some(endpoint.authority.clone());
    uri.path_and_query = Some(path.clone());
    Uri::from_parts(uri).expect("scheme, authority and path make a valid URI")
}

/// Why an attempt produced no upstream response.
#[derive(Debug)]
struct Failure {
    kind: ErrorKind,
    attempt: RetryAttempt,
    shed: Option<Shed>,
}

impl From<&UpstreamError> for Failure {
    fn from(e: &UpstreamError) -> Self {
        let (kind, attempt, shed) = match e {
            UpstreamError::Timeout => (ErrorKind::timeout, RetryAttempt::Timeout, None),
            UpstreamError::Http1(Http1Error::Shed(s)) | UpstreamError::Http2(Http2Error::Shed(s)) => {
                (ErrorKind::overflow, RetryAttempt::ConnectFailure, Some(*s))
            }
            UpstreamError::Http1(Http1Error::Connect(ConnectError::Timeout(_)))
            | UpstreamError::Http2(Http2Error::Connect(ConnectError::Timeout(_))) => {
                (ErrorKind::timeout, RetryAttempt::ConnectFailure, None)
            }
            UpstreamError::Http1(Http1Error::Connect(ConnectError::Io(..) | ConnectError::Tls(..)))
            | UpstreamError::Http2(
                Http2Error::Connect(ConnectError::Io(..) | ConnectError::Tls(..)) | Http2Error::Handshake(..),
            ) => (ErrorKind::upstream_connect, RetryAttempt::ConnectFailure, None),
            UpstreamError::Http1(Http1Error::RequestBody(_)) => (ErrorKind::bad_request, RetryAttempt::Reset, None),
            UpstreamError::Http1(_) => (ErrorKind::upstream_reset, RetryAttempt::Reset, None),
            UpstreamError::Http2(Http2Error::Stream(e)) => (classify_http2(e), RetryAttempt::Reset, None),
        };
        Self { kind, attempt, shed }
    }
}

fn count_shed(mesh: &Mesh, service: &Service, shed: Shed) {
    let reason = ServiceReasonLabels { service: service.name.clone(), reason: shed.as_str() };
    mesh.metrics.shed.get_or_create(&reason).inc();
}

fn with_shed_reason(mut resp: Answer, shed: Shed) -> Answer {
    resp.head.headers.insert(SHED_HEADER, HeaderValue::from_static(shed.as_str()));
    resp
}

fn note_transition(mesh: &Mesh, service: &Service, t: Transition) {
    tracing::warn!(service = %service.name, state = t.0.as_str(), "circuit breaker changed state");
    let labels = ServiceReasonLabels { service: service.name.clone(), reason: t.0.as_str() };
    mesh.metrics.breaker_transitions.get_or_create(&labels).inc();
}

/// Maps a failed HTTP/2 stream to the local answer it deserves.
fn classify_http2(e: &hyper::Error) -> ErrorKind {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let io_timeout = c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        if io_timeout || c.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) {
            return ErrorKind::timeout;
        }
        cause = c.source();
    }
    ErrorKind::upstream_reset
}

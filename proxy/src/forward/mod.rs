//! Request forwarding: route, balance, rewrite, send upstream, stream the answer back.
//!
//! This is the hot path. It loads the snapshot once, allocates only what the upstream
//! request needs, and takes no lock.

mod headers;
pub mod response;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

pub use headers::{add_forwarded, is_upgrade, strip_hop_by_hop};
use response::{InFlight, ResponseBody, local};

use crate::body::Body;
use crate::mesh::Mesh;
use crate::routing::{RequestView, host_without_port};
use crate::telemetry::logging::ACCESS_LOG_TARGET;
use crate::telemetry::metrics::ErrorKind;
use crate::upstream::balance::PickContext;
use crate::upstream::conn_pool::ConnectError;
use crate::upstream::http1::{Exchange, Http1Error};
use crate::upstream::{self, Transport, UpstreamError};

/// What the proxy knows about the downstream connection a request arrived on.
#[derive(Debug)]
pub struct Downstream {
    /// Name of the listener that accepted it.
    pub listener: String,
    /// The client's address.
    pub client: SocketAddr,
    /// The client's IP, formatted once per connection for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// `http` or `https`.
    pub proto: &'static str,
}

impl Downstream {
    /// Describes a connection accepted on `listener` from `client`.
    pub fn new(listener: &str, client: SocketAddr, proto: &'static str) -> Self {
        let client_ip = HeaderValue::from_str(&client.ip().to_string()).expect("an IP address is a valid header value");
        Self { listener: listener.to_owned(), client, client_ip, proto }
    }
}

/// Forwards one downstream request and returns the response to send back.
pub async fn forward(mesh: Arc<Mesh>, down: Arc<Downstream>, mut req: Request<Incoming>) -> Response<ResponseBody> {
    let started = Instant::now();
    let snap = mesh.snapshot();
    let Some((listener_idx, table)) = snap.listener(&down.listener) else {
        mesh.metrics.unrouted_error(ErrorKind::no_route);
        return local(ErrorKind::no_route);
    };
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .map_or("", host_without_port);
    let view = RequestView { host, path: req.uri().path(), method: req.method(), headers: req.headers() };
    let Some(route_idx) = table.find(&view) else {
        mesh.metrics.unrouted_error(ErrorKind::no_route);
        return local(ErrorKind::no_route);
    };
    let route = &table.routes[route_idx];
    let service = &snap.services[route.service];

    let ctx = PickContext {
        hash: service.hash_key.as_ref().and_then(|k| k.hash(req.headers(), down.client.ip())),
        now: started,
    };
    let Some(endpoint_idx) = service.balancer.pick(&ctx, &service.endpoints, &|_| true) else {
        route.metrics.count_error(ErrorKind::no_endpoint);
        return local(ErrorKind::no_endpoint);
    };
    let endpoint = &service.endpoints[endpoint_idx];

    let downstream_upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, downstream_upgrade.is_some());
    add_forwarded(&mut parts.headers, &parts.uri, &down.client_ip, down.proto);
    // Kept for the access log only; cloning shares the buffers.
    let logged = snap.access_log.then(|| (parts.method.clone(), parts.uri.clone()));
    let path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let path = match &route.rewrite {
        Some(rw) => PathAndQuery::try_from(rw.apply(&route.matcher, path)),
        None => match parts.uri.path_and_query() {
            Some(pq) => Ok(pq.clone()),
            None => Ok(PathAndQuery::from_static("/")),
        },
    };
    let Ok(path) = path else {
        route.metrics.count_error(ErrorKind::bad_request);
        return local(ErrorKind::bad_request);
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(endpoint.authority.clone());
    uri.path_and_query = Some(path);
    parts.uri = Uri::from_parts(uri).expect("scheme, authority and path make a valid URI");
    parts.version = match service.transport {
        Transport::Http1 => Version::HTTP_11,
        Transport::H2c(_) => Version::HTTP_2,
    };
    let upstream_req = Request::from_parts(parts, Body::Incoming(body));

    let route_name = &route.name;
    let in_flight = InFlight::start(snap.clone(), listener_idx, route_idx, endpoint_idx);
    let mut deadline = Box::pin(tokio::time::sleep_until((started + route.timeout).into()));
    let sent = tokio::select! {
        biased;
        r = upstream::send(&service.transport, endpoint, upstream_req) => r.map_err(|e| {
            tracing::debug!(route = %route.name, upstream = %endpoint.authority, error = %e, "upstream request failed");
            classify(&e)
        }),
        () = &mut deadline => Err(ErrorKind::timeout),
    };
    let now = Instant::now();
    let Exchange { response: resp, upgraded } = match sent {
        Ok(exchange) => exchange,
        Err(kind) => {
            route.metrics.count_error(kind);
            let resp = local(kind);
            route.metrics.count_status(resp.status());
            route.metrics.duration.observe(now - started);
            if let Some((method, uri)) = &logged {
                access_log(method, uri, resp.status(), route_name, &endpoint.authority, now - started);
            }
            return resp;
        }
    };
    endpoint.stats.observe_latency(now, now - started);
    let status = resp.status();
    route.metrics.count_status(status);
    route.metrics.duration.observe(now - started);
    if let Some((method, uri)) = &logged {
        access_log(method, uri, status, route_name, &endpoint.authority, now - started);
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgraded.is_some() && downstream_upgrade.is_some());
    match (downstream_upgrade, upgraded) {
        (Some(down_up), Some(up_up)) => {
            upgrade::tunnel(down_up, up_up, in_flight);
            Response::from_parts(parts, ResponseBody::plain(Body::Empty))
        }
        _ => Response::from_parts(parts, ResponseBody::streamed(body, in_flight, deadline)),
    }
}

fn access_log(
    method: &http::Method,
    uri: &Uri,
    status: StatusCode,
    route: &str,
    endpoint: &http::uri::Authority,
    elapsed: std::time::Duration,
) {
    tracing::info!(
        target: ACCESS_LOG_TARGET,
        method = %method,
        path = uri.path(),
        status = status.as_u16(),
        route,
        upstream = %endpoint,
        duration_us = elapsed.as_micros() as u64,
    );
}

/// Maps an upstream failure to the local answer it deserves.
fn classify(e: &UpstreamError) -> ErrorKind {
    match e {
        UpstreamError::Http1(Http1Error::Connect(ConnectError::Timeout(_))) => ErrorKind::timeout,
        UpstreamError::Http1(Http1Error::Connect(ConnectError::Io(..))) => ErrorKind::upstream_connect,
        UpstreamError::Http1(Http1Error::RequestBody(_)) => ErrorKind::bad_request,
        UpstreamError::Http1(_) => ErrorKind::upstream_reset,
        UpstreamError::Http2(e) => {
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let io_timeout =
                    s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
                if io_timeout || s.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) {
                    return ErrorKind::timeout;
                }
                source = s.source();
            }
            if e.is_connect() { ErrorKind::upstream_connect } else { ErrorKind::upstream_reset }
        }
    }
}

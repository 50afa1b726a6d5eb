//! A request's attempts at its service: admission under the service's breaker and limits, then
//! attempt after attempt (pick an endpoint with [`select`](super::select), send, learn from the
//! outcome: outlier detection, latency) for as long as the retry policy, the retry budget and
//! the deadline allow another. The breaker hears the last attempt's outcome, once.
//!
//! Nothing here knows HTTP above the exchange: the request path hands over the request with a
//! body that can be sent again or only once, and makes the answer out of what comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{Uri, Version};

use super::in_flight::InFlight;
use super::retry::{Attempt, Tried, backoff, should_retry};
use super::select;
use crate::body::Body;
use crate::clock::{millis_at, now_millis};
use crate::config::RetryConfig;
use crate::message::ProxyRequest;
use crate::plugin::{BalancerPlugin, HookCalls, PackedRequest};
use crate::snapshot::{Service, Snapshot};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{ErrorKind, ServiceEndpointLabels, ServiceLabels, ServiceReasonLabels};
use crate::upstream::balance::PickContext;
use crate::upstream::breaker::{Admission, Shed, Slotted, Transition};
use crate::upstream::conn_pool::ConnectError;
use crate::upstream::http1::{self, Exchange, Http1Error};
use crate::upstream::http2::{self, Http2Error};
use crate::upstream::outlier::{self, Outcome};
use crate::upstream::{Endpoint, Limits, Transport, UpstreamError};

/// Admits a request to `service` at `now_ms`: the admission to hold while it is in flight, or
/// the limit (or open breaker) that shed it, counted.
#[inline]
pub fn admit(metrics: &Metrics, service: &Service, now_ms: u64) -> Result<Admission, Shed> {
    match service.state.admit(&service.policy.breaker, now_ms) {
        Ok((admission, transition)) => {
            if let Some(t) = transition {
                note_transition(metrics, service, t);
            }
            Ok(admission)
        }
        Err(shed) => {
            count_shed(metrics, service, shed);
            Err(shed)
        }
    }
}

/// How a request's attempts send its body.
#[derive(Debug)]
pub enum RequestBody {
    /// Kept whole, here: every attempt sends it, so the request may be retried.
    Replayable(Bytes),
    /// Streamed from the request itself: only one attempt can send it.
    Streamed,
}

/// What a request's attempts need besides the request: where it goes and under which rules.
#[derive(Debug)]
pub struct Attempts<'s, 'r> {
    /// Where ejections, retries and shed requests are counted.
    pub metrics: &'s Metrics,
    /// The request's snapshot, which each attempt's [`InFlight`] keeps alive.
    pub snapshot: &'s Arc<Snapshot>,
    /// Listener and route indices of the request's route.
    pub route: (usize, usize),
    /// The service's index in the snapshot.
    pub service: usize,
    /// The consistent-hash key and the time the balancers see.
    pub pick: PickContext,
    /// The clock in milliseconds for the first pick, read once with the breaker's admission.
    pub first_pick_ms: u64,
    /// The request packed for the service's balancer plugin, when it has one.
    pub balancer_head: Option<PackedRequest>,
    /// The path and query every attempt sends.
    pub path: &'r PathAndQuery,
    /// The service's retry policy, unless the request cannot be retried (an upgrade).
    pub retry: Option<&'s RetryConfig>,
    /// The request's deadline, which each attempt's per-try timeout may shorten.
    pub deadline: Instant,
    /// An HTTP/1.1 response's header lines may come back as they arrived ([`Exchange::raw`]).
    pub raw_headers: bool,
}

/// How a request's attempts ended: where the last one went, when it ended and what it got.
#[derive(Debug)]
pub struct Sent<'s> {
    /// The endpoint of the last attempt.
    pub endpoint: &'s Endpoint,
    /// Attempts after the first.
    pub resends: u32,
    /// When the last attempt ended: as its response head arrived, or as it failed.
    pub ended: Instant,
    /// The exchange, counted in flight until its response is done; or why there was none.
    pub result: Result<(Box<Exchange>, InFlight), Failure>,
}

/// Why an attempt could not be made.
#[derive(Debug)]
pub enum Unsent<'s> {
    /// No endpoint may take the request.
    NoEndpoint,
    /// The service's balancer plugin failed, and fails closed.
    PluginFailed(&'s BalancerPlugin),
}

/// Sends `req`, with its body as `body` says, to the service of `to`, attempt after attempt as its retry policy
/// allows, under `admission`; balancer plugins run through `hooks`. Each attempt is counted in
/// flight on its endpoint; the last one's count goes back with its exchange.
pub async fn send<'s>(
    to: &Attempts<'s, '_>,
    mut req: Box<ProxyRequest>,
    body: RequestBody,
    admission: &mut Admission,
    hooks: &mut impl HookCalls,
) -> Result<Sent<'s>, Unsent<'s>> {
    let service = &to.snapshot.services[to.service];
    req.head.version = match service.transport {
        Transport::Http1 => Version::HTTP_11,
        Transport::Http2 => Version::HTTP_2,
    };
    let max_attempts = match (to.retry, &body) {
        (Some(r), RequestBody::Replayable(_)) => r.num_retries + 1,
        _ => 1,
    };
    let mut req = Some(req);
    let (mut tried, mut attempt, mut retry_slot) = (Tried::default(), 0, None);
    loop {
        attempt += 1;
        let pick_ms = if attempt == 1 { to.first_pick_ms } else { now_millis() };
        let idx = match select::pick(service, &to.pick, pick_ms, &tried, to.balancer_head.as_ref(), hooks) {
            Ok(Some(idx)) => idx,
            Ok(None) => return Err(Unsent::NoEndpoint),
            Err(plugin) => return Err(Unsent::PluginFailed(plugin)),
        };
        let endpoint = &service.endpoints[idx];
        let request = for_attempt(&mut req, &body, endpoint, to.path, attempt < max_attempts);
        let method = request.head.method.clone();
        let in_flight = InFlight::start(to.snapshot.clone(), to.route.0, to.route.1, to.service, idx);
        let started = Instant::now();
        let deadline = to.try_deadline(started);
        let limits = Limits { state: &service.state, breaker: &service.policy.breaker };
        // The transports are awaited here, not behind a function of their own: one async layer
        // less for every poll of the request.
        let sent = match service.transport {
            Transport::Http1 => http1::send(&endpoint.conns, request, limits, started, deadline, to.raw_headers)
                .await
                .map_err(Into::into),
            Transport::Http2 => {
                let sending = http2::send(&endpoint.conns, request.into_http(), limits, millis_at(started));
                http2_exchange(tokio::time::timeout_at(deadline.into(), Box::pin(sending)).await)
            }
        };
        let sent = sent.map_err(|e| Failure::logged(&e, to.route_name(), endpoint));
        // The transport read the clock as the response head arrived.
        let ended = sent.as_ref().map_or_else(|_| Instant::now(), |exchange| exchange.received);
        // One conversion serves outlier detection and the breaker.
        let ended_ms = millis_at(ended);
        let (outcome, shed) = judge(&sent);
        detect_outlier(to.metrics, service, idx, outcome, shed, ended_ms);
        if attempt < max_attempts
            && !shed
            && let Some(r) = to.retry.filter(|r| should_retry(r, &method, outcome))
            && let Some(wait) = retry_wait(to, service, r, attempt, &mut retry_slot)
        {
            drop((sent, in_flight));
            tokio::time::sleep(wait).await;
            tried.insert(idx);
            continue;
        }
        if sent.is_ok() {
            endpoint.stats.observe_latency(ended, ended - started);
        }
        drop(retry_slot);
        conclude(to.metrics, service, &sent, admission, ended_ms);
        return Ok(Sent { endpoint, resends: attempt - 1, ended, result: sent.map(|e| (e, in_flight)) });
    }
}

impl Attempts<'_, '_> {
    /// The route's name, for logs.
    fn route_name(&self) -> &str {
        &self.snapshot.listeners[self.route.0].routes[self.route.1].name
    }

    /// The deadline of an attempt that started at `started`: the request's, or sooner by the
    /// retry policy's per-try timeout.
    #[inline]
    fn try_deadline(&self, started: Instant) -> Instant {
        match self.retry.and_then(|r| r.per_try_timeout) {
            Some(per_try) => self.deadline.min(started + per_try),
            None => self.deadline,
        }
    }
}

/// How an attempt ended, as the retry policy sees it, and whether the proxy's own limits shed
/// it: that is no failure of the endpoint or the service, and is not retried.
#[inline]
fn judge(sent: &Result<Box<Exchange>, Failure>) -> (Attempt, bool) {
    match sent {
        Ok(exchange) => (Attempt::Status(exchange.response.status()), false),
        Err(f) => (f.attempt, f.shed.is_some()),
    }
}

/// The request for an attempt to `endpoint`: a copy of `req` while `more` attempts may follow,
/// else `req` itself, taken.
#[inline]
fn for_attempt(
    req: &mut Option<Box<ProxyRequest>>,
    body: &RequestBody,
    endpoint: &Endpoint,
    path: &PathAndQuery,
    more: bool,
) -> Box<ProxyRequest> {
    let uri = upstream_uri(endpoint, path);
    match (body, more) {
        (RequestBody::Replayable(bytes), true) => {
            let head = &req.as_ref().expect("the request is kept until the last attempt").head;
            let body = Body::full(bytes.clone());
            ProxyRequest::new(head.method.clone(), uri, head.version, head.headers.clone(), body)
        }
        (body, _) => {
            let mut last = req.take().expect("the last attempt takes the request");
            last.head.uri = uri;
            if let RequestBody::Replayable(bytes) = body {
                last.body = Body::full(bytes.clone());
            }
            last
        }
    }
}

/// The URI of a request to `endpoint` for `path`.
#[inline]
fn upstream_uri(endpoint: &Endpoint, path: &PathAndQuery) -> Uri {
    let mut uri = http::uri::Parts::default();
    // HTTP/2 sends the scheme as `:scheme`; HTTP/1.1 sends only the path.
    uri.scheme = Some(if endpoint.conns.settings().tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP });
    uri.authority = Some(endpoint.authority.clone());
    uri.path_and_query = Some(path.clone());
    Uri::from_parts(uri).expect("scheme, authority and path make a valid URI")
}

/// An HTTP/2 response, or its failure, as an exchange.
fn http2_exchange(
    sent: Result<Result<http::Response<hyper::body::Incoming>, Http2Error>, tokio::time::error::Elapsed>,
) -> Result<Box<Exchange>, UpstreamError> {
    let response = sent.map_err(|_| UpstreamError::Timeout)??.map(Body::Incoming);
    Ok(Box::new(Exchange { response, raw: None, upgraded: None, received: Instant::now() }))
}

/// Records an attempt's outcome for outlier detection on endpoint `idx`, and counts the
/// ejection it may start.
#[inline]
fn detect_outlier(metrics: &Metrics, service: &Service, idx: usize, outcome: Attempt, shed: bool, now_ms: u64) {
    let Some(cfg) = &service.policy.outlier else { return };
    let gateway_failure = match outcome {
        Attempt::Status(s) => matches!(s.as_u16(), 502..=504),
        _ => !shed,
    };
    let five_xx = gateway_failure || matches!(outcome, Attempt::Status(s) if s.is_server_error());
    if let Some(length) = outlier::record(cfg, &service.endpoints, idx, Outcome { five_xx, gateway_failure }, now_ms) {
        let endpoint = &service.endpoints[idx];
        tracing::warn!(service = %service.name, endpoint = %endpoint.authority, ?length, "endpoint ejected");
        let labels = ServiceEndpointLabels { service: service.name.clone(), endpoint: endpoint.address.to_string() };
        metrics.ejections.get_or_create(&labels).inc();
    }
}

/// The wait before retry number `attempt`, when the retry budget has a slot for it (held in
/// `slot`) and the wait ends before the request's deadline; counted either way.
fn retry_wait<'s>(
    to: &Attempts<'_, '_>,
    service: &'s Service,
    r: &RetryConfig,
    attempt: u32,
    slot: &mut Option<Slotted<'s>>,
) -> Option<Duration> {
    let labels = ServiceLabels { service: service.name.clone() };
    *slot = service.state.begin_retry(r.budget_percent, r.min_retry_concurrency, service.policy.breaker.max_retries);
    if slot.is_none() {
        to.metrics.retry_budget_exhausted.get_or_create(&labels).inc();
        return None;
    }
    let wait = backoff(r, attempt);
    if Instant::now() + wait >= to.deadline {
        return None;
    }
    to.metrics.retries.get_or_create(&labels).inc();
    Some(wait)
}

/// Tells the breaker how the last attempt went (unless the proxy's own limits shed it: that
/// says nothing about the service's health, and is counted as shed instead).
#[inline]
fn conclude(
    metrics: &Metrics,
    service: &Service,
    sent: &Result<Box<Exchange>, Failure>,
    admission: &mut Admission,
    now_ms: u64,
) {
    if let Err(Failure { shed: Some(shed), .. }) = sent {
        count_shed(metrics, service, *shed);
        return;
    }
    let success = matches!(sent, Ok(e) if !e.response.status().is_server_error());
    if let Some(t) = service.state.record(&service.policy.breaker, success, admission.take_probe(), now_ms) {
        note_transition(metrics, service, t);
    }
}

/// Why an attempt produced no upstream response.
#[derive(Debug)]
pub struct Failure {
    /// The proxy's own answer for it.
    pub kind: ErrorKind,
    /// How it ended, as the retry policy sees it.
    pub attempt: Attempt,
    /// The proxy's own limit that shed it, when one did.
    pub shed: Option<Shed>,
}

impl Failure {
    /// The failure `e` of an attempt on `route` to `endpoint`, logged: a failed TLS handshake as a warning
    /// (a configuration problem), anything else at debug level (an endpoint that is down).
    fn logged(e: &UpstreamError, route: &str, endpoint: &Endpoint) -> Self {
        if e.is_tls_handshake() {
            tracing::warn!(route = %route, upstream = %endpoint.authority, error = %e, "upstream TLS handshake failed");
        } else {
            tracing::debug!(route = %route, upstream = %endpoint.authority, error = %e, "upstream request failed");
        }
        Self::from(e)
    }
}

impl From<&UpstreamError> for Failure {
    fn from(e: &UpstreamError) -> Self {
        let (kind, attempt, shed) = match e {
            UpstreamError::Timeout => (ErrorKind::timeout, Attempt::Timeout, None),
            UpstreamError::Http1(Http1Error::Shed(s)) | UpstreamError::Http2(Http2Error::Shed(s)) => {
                (ErrorKind::overflow, Attempt::ConnectFailure, Some(*s))
            }
            UpstreamError::Http1(Http1Error::Connect(ConnectError::Timeout(_)))
            | UpstreamError::Http2(Http2Error::Connect(ConnectError::Timeout(_))) => {
                (ErrorKind::timeout, Attempt::ConnectFailure, None)
            }
            UpstreamError::Http1(Http1Error::Connect(ConnectError::Io(..) | ConnectError::Tls(..)))
            | UpstreamError::Http2(
                Http2Error::Connect(ConnectError::Io(..) | ConnectError::Tls(..)) | Http2Error::Handshake(..),
            ) => (ErrorKind::upstream_connect, Attempt::ConnectFailure, None),
            UpstreamError::Http1(Http1Error::RequestBody(_)) => (ErrorKind::bad_request, Attempt::Reset, None),
            UpstreamError::Http1(_) => (ErrorKind::upstream_reset, Attempt::Reset, None),
            UpstreamError::Http2(Http2Error::Stream(e)) => (classify_http2(e), Attempt::Reset, None),
        };
        Self { kind, attempt, shed }
    }
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

/// Counts a request shed by `service`'s limits or its open breaker.
fn count_shed(metrics: &Metrics, service: &Service, shed: Shed) {
    let reason = ServiceReasonLabels { service: service.name.clone(), reason: shed.as_str() };
    metrics.shed.get_or_create(&reason).inc();
}

/// Logs and counts a change of `service`'s breaker state.
fn note_transition(metrics: &Metrics, service: &Service, t: Transition) {
    tracing::warn!(service = %service.name, state = t.0.as_str(), "circuit breaker changed state");
    let labels = ServiceReasonLabels { service: service.name.clone(), reason: t.0.as_str() };
    metrics.breaker_transitions.get_or_create(&labels).inc();
}

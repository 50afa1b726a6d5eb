//! The one place a routed request's ending is recorded: its route's metrics, the topology edge
//! to its service, and the access log with the span, one line however it ended. The phases only say how the request ended,
//! whichever of them returned; the guard records it when it is dropped, so no way out of the
//! request path can skip the record or write it twice.

use std::time::Instant;

use http::StatusCode;

use super::Downstream;
use super::observe::{Finished, Observer};
use super::response::{Answer, local};
use crate::snapshot::{Route, Service, Snapshot};
use crate::telemetry::metrics::ErrorKind;
use crate::upstream::Endpoint;

/// The phase that ended a request before any exchange with an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// The path rewrite made no valid path.
    Route,
    /// The router or a filter answered, or failed closed.
    Plugins,
    /// The request broke its service's contract, or its body could not be read for the check.
    Contract,
    /// The service's breaker or limits shed the request.
    Admission,
    /// The body kept for retries could not be read.
    Replay,
    /// No endpoint could be picked, or the balancer plugin failed closed.
    Pick,
}

/// Where a request's last attempt went, and when it ended.
#[derive(Debug)]
pub(super) struct LastAttempt<'s> {
    /// The service it went to.
    pub service: &'s Service,
    /// The endpoint it went to.
    pub endpoint: &'s Endpoint,
    /// Attempts after the first.
    pub resends: u32,
    /// When its response head arrived, or when it failed.
    pub ended: Instant,
}

/// How the request ended.
enum End<'s> {
    /// Before any exchange, at `stage`, answered with `status` (and the proxy's own `error`).
    Early { stage: Stage, error: Option<ErrorKind>, status: StatusCode },
    /// After its last attempt.
    Exchanged {
        last: LastAttempt<'s>,
        /// No response came back: the proxy answered for the endpoint.
        failed: bool,
        /// The proxy's own answer, for a failed attempt or a response that broke the contract.
        error: Option<ErrorKind>,
        /// The status counted: the endpoint's, or the proxy's in its place.
        status: StatusCode,
        /// The status sent downstream, which a response filter may have changed.
        answered: StatusCode,
    },
}

/// The guard that records a routed request once, when it is dropped. A request whose future
/// is dropped before it ended (the client went away) is not recorded.
pub(super) struct RequestRecord<'s> {
    snap: &'s Snapshot,
    route: &'s Route,
    /// The service the request is bound for, whose edge it counts on.
    service: usize,
    started: Instant,
    down: &'s Downstream,
    /// Traces the request and writes its access log; plugin calls go through it.
    pub obs: Observer,
    end: Option<End<'s>>,
}

impl<'s> RequestRecord<'s> {
    /// Starts the record of a request on `route`, which arrived at `started` from `down`, and
    /// its trace (`head` carries the trace context upstream).
    #[inline]
    pub fn start(
        snap: &'s Snapshot,
        route: &'s Route,
        down: &'s Downstream,
        started: Instant,
        head: &mut http::request::Parts,
    ) -> Self {
        Self { snap, route, service: route.service, started, down, obs: Observer::start(snap, head), end: None }
    }

    /// The request is bound for service `idx` (a router plugin may have chosen it).
    #[inline]
    pub fn bound_for(&mut self, idx: usize) {
        self.service = idx;
    }

    /// Ends the request at `stage` with the proxy's own answer for `kind`.
    pub fn local(&mut self, stage: Stage, kind: ErrorKind) -> Answer {
        self.early(stage, Some(kind), local(kind))
    }

    /// Ends the request at `stage` with `answer`, the proxy's own for `error` when it has one.
    pub fn early(&mut self, stage: Stage, error: Option<ErrorKind>, answer: Answer) -> Answer {
        self.end = Some(End::Early { stage, error, status: answer.head.status });
        answer
    }

    /// Ends the request after its `last` attempt: `failed` when no response came back, `error`
    /// when the proxy answered itself, `status` counted, `answered` sent downstream.
    #[inline]
    pub fn exchanged(
        &mut self,
        last: LastAttempt<'s>,
        failed: bool,
        error: Option<ErrorKind>,
        status: StatusCode,
        answered: StatusCode,
    ) {
        self.end = Some(End::Exchanged { last, failed, error, status, answered });
    }

    /// An answer before any exchange counts the proxy's error; its status only when a contract
    /// or the breaker refused the request; on the service's edge (as a failure) only when the
    /// service had no place or no endpoint for it. Its access-log line names no upstream.
    fn record_early(&mut self, stage: Stage, error: Option<ErrorKind>, status: StatusCode) {
        let metrics = &self.route.metrics;
        if let Some(kind) = error {
            metrics.count_error(kind);
        }
        if matches!(stage, Stage::Contract | Stage::Admission) {
            metrics.count_status(status);
        }
        let now = Instant::now();
        if matches!(stage, Stage::Admission | Stage::Pick) {
            self.route.edge(self.service).record(true, now - self.started, now);
        }
        let finished = Finished {
            status,
            route: &self.route.name,
            service: self.snap.services.get(self.service).map_or("", |s| s.name.as_str()),
            upstream: None,
            resends: 0,
            elapsed: now - self.started,
        };
        self.obs.finish(self.down.client, finished);
    }
}

impl Drop for RequestRecord<'_> {
    fn drop(&mut self) {
        match self.end.take() {
            None => {}
            Some(End::Early { stage, error, status }) => self.record_early(stage, error, status),
            Some(End::Exchanged { last, failed, error, status, answered }) => {
                // Timed to the response head (or the failure), read once by the transport.
                let elapsed = last.ended - self.started;
                let metrics = &self.route.metrics;
                if let Some(kind) = error {
                    metrics.count_error(kind);
                }
                metrics.count_status(status);
                metrics.duration.observe(elapsed);
                self.route.edge(self.service).record(failed || status.is_server_error(), elapsed, last.ended);
                let finished = Finished {
                    status: answered,
                    route: &self.route.name,
                    service: &last.service.name,
                    upstream: Some(&last.endpoint.authority),
                    resends: last.resends,
                    elapsed,
                };
                self.obs.finish(self.down.client, finished);
            }
        }
    }
}

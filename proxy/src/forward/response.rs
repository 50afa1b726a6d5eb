//! Responses to the downstream: the streamed upstream body with its request's bookkeeping,
//! and the proxy's own short plain-text answers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

use crate::body::{Body, BoxError};
use crate::message::ProxyResponse;
use crate::send::in_flight::InFlight;
use crate::telemetry::metrics::ErrorKind;
use crate::upstream::breaker::Admission;
use wasmesh_http1::{RawHeaders, WithRawHeaders};

/// Header naming why the proxy answered a request itself.
pub const ERROR_HEADER: &str = "x-wasmesh-error";
/// Header naming the limit (or open breaker) that shed a request.
pub const SHED_HEADER: &str = "x-wasmesh-shed";

/// The body sent downstream.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Body,
    /// Released when the body ends, fails or is dropped.
    in_flight: Option<InFlight>,
    /// The service's admission, released with `in_flight`.
    admission: Option<Admission>,
    /// The request's total deadline, still running while the body streams.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The response's header lines as the upstream sent them, for the downstream HTTP/1.1
    /// writer to copy out (see [`RawHeaders`]).
    raw: Option<RawHeaders>,
}

impl ResponseBody {
    /// An upstream body, still bounded by the request's `deadline` while it streams.
    pub fn streamed(inner: Body, in_flight: InFlight, admission: Admission, deadline: Instant) -> Self {
        // A body that arrived whole needs no timer.
        let streaming = !matches!(inner, Body::Full(_) | Body::Empty);
        let deadline = streaming.then(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        Self { inner, in_flight: Some(in_flight), admission: Some(admission), deadline, raw: None }
    }

    /// Sends `raw` as the response's header lines, before those of its map.
    pub fn with_raw_headers(self, raw: Option<RawHeaders>) -> Self {
        Self { raw, ..self }
    }

    /// A body with no bookkeeping.
    pub fn plain(inner: Body) -> Self {
        Self { inner, in_flight: None, admission: None, deadline: None, raw: None }
    }

    fn release(&mut self) {
        self.in_flight = None;
        self.admission = None;
        self.deadline = None;
    }
}

impl WithRawHeaders for ResponseBody {
    fn raw_headers(&self) -> Option<&RawHeaders> {
        self.raw.as_ref()
    }

    fn take_raw_headers(&mut self) -> Option<RawHeaders> {
        self.raw.take()
    }
}

/// The response body outlived the request's total timeout.
#[derive(Debug, thiserror::Error)]
#[error("request timeout elapsed while streaming the response body")]
pub struct BodyTimeout;

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                this.release();
                polled
            }
            Poll::Ready(Some(Ok(_))) => polled,
            Poll::Pending => {
                let expired = this.deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    this.release();
                    Poll::Ready(Some(Err(BodyTimeout.into())))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The status and short reason the proxy answers with for `kind`.
pub fn status_of(kind: ErrorKind) -> (StatusCode, &'static str) {
    match kind {
        ErrorKind::no_route => (StatusCode::NOT_FOUND, "no route matches this request\n"),
        ErrorKind::no_endpoint => (StatusCode::SERVICE_UNAVAILABLE, "no healthy endpoint for this service\n"),
        ErrorKind::upstream_connect => (StatusCode::BAD_GATEWAY, "upstream connection refused or failed\n"),
        ErrorKind::upstream_reset => (StatusCode::BAD_GATEWAY, "upstream reset the connection before responding\n"),
        ErrorKind::timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream request timed out\n"),
        ErrorKind::bad_request => (StatusCode::BAD_REQUEST, "request cannot be forwarded\n"),
        ErrorKind::overflow => (StatusCode::SERVICE_UNAVAILABLE, "service concurrency limit reached\n"),
        ErrorKind::circuit_open => (StatusCode::SERVICE_UNAVAILABLE, "circuit breaker open for this service\n"),
        ErrorKind::contract_violation => (StatusCode::BAD_REQUEST, "body breaks the service's contract\n"),
        ErrorKind::body_too_large => (StatusCode::PAYLOAD_TOO_LARGE, "body exceeds the contract's size limit\n"),
        ErrorKind::invalid_host => (StatusCode::BAD_REQUEST, "missing, repeated or invalid Host header\n"),
        ErrorKind::headers_too_large => {
            (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request header fields are too large\n")
        }
    }
}

/// What forwarding answers the client with.
pub type Answer = Box<ProxyResponse<ResponseBody>>;

/// The proxy's own answer for `kind`: its status, a plain-text reason and an error header.
pub fn local(kind: ErrorKind) -> Answer {
    ProxyResponse::boxed(local_body(kind).map(ResponseBody::plain))
}

/// [`local`], as a plain body (to stand in for an upstream response).
pub fn local_body(kind: ErrorKind) -> Response<Body> {
    let (status, reason) = status_of(kind);
    let mut resp = Response::new(Body::full(Bytes::from_static(reason.as_bytes())));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(ERROR_HEADER, HeaderValue::from_static(error_name(kind)));
    resp
}

/// The `x-wasmesh-error` value of `kind`.
pub fn error_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::no_route => "no_route",
        ErrorKind::no_endpoint => "no_endpoint",
        ErrorKind::upstream_connect => "upstream_connect",
        ErrorKind::upstream_reset => "upstream_reset",
        ErrorKind::timeout => "timeout",
        ErrorKind::bad_request => "bad_request",
        ErrorKind::overflow => "overflow",
        ErrorKind::circuit_open => "circuit_open",
        ErrorKind::contract_violation => "contract_violation",
        ErrorKind::body_too_large => "body_too_large",
        ErrorKind::invalid_host => "invalid_host",
        ErrorKind::headers_too_large => "headers_too_large",
    }
}

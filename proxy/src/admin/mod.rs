//! The admin API: metrics, readiness and the configuration in force.
//!
//! It binds to loopback unless configured otherwise, and when a token is configured every
//! request must carry it as `Authorization: Bearer <token>`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::Body;
use crate::mesh::Mesh;
use crate::upstream::endpoint::now_millis;

/// Content type of the metrics exposition (prometheus-client writes OpenMetrics text).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything the admin API serves from.
#[derive(Debug)]
pub struct Admin {
    mesh: Arc<Mesh>,
    token: Option<String>,
}

impl Admin {
    /// An admin API over `mesh`, requiring `token` when given.
    pub fn new(mesh: Arc<Mesh>, token: Option<String>) -> Self {
        Self { mesh, token }
    }

    /// Answers one admin request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if !self.authorized(&req) {
            let mut resp = text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
            resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => {
                let mut resp = Response::new(Body::full(self.mesh.metrics.encode()));
                resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
                resp
            }
            (&Method::GET, "/ready") => text(StatusCode::OK, "ready\n"),
            (&Method::GET, "/config") => self.config(),
            (&Method::GET, "/upstreams") => json(StatusCode::OK, &self.upstreams()),
            (_, "/metrics" | "/ready" | "/config" | "/upstreams") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else { return true };
        let Some(given) = req.headers().get(AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")) else {
            return false;
        };
        constant_time_eq(given, token.as_bytes())
    }

    fn config(&self) -> Response<Body> {
        let snap = self.mesh.snapshot();
        let loaded = snap.loaded_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let body = serde_json::json!({
            "version": snap.version,
            "loaded_at_unix": loaded,
            "listeners": snap.config.listeners.iter().map(|l| &l.name).collect::<Vec<_>>(),
            "routes": snap.config.routes.iter().map(|r| &r.name).collect::<Vec<_>>(),
            "services": snap.config.services.iter().map(|s| &s.name).collect::<Vec<_>>(),
        });
        json(StatusCode::OK, &body)
    }
}

impl Admin {
    /// Every service's breaker and limits, and every endpoint's health, ejection and load.
    pub fn upstreams(&self) -> serde_json::Value {
        let snap = self.mesh.snapshot();
        let now_ms = now_millis();
        let services: Vec<_> = snap
            .services
            .iter()
            .map(|s| {
                let endpoints: Vec<_> = s
                    .endpoints
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "address": e.address.to_string(),
                            "weight": e.weight,
                            "metadata": e.metadata,
                            "health": e.stats.health().as_str(),
                            "ejected": e.stats.is_ejected(now_ms),
                            "times_ejected": e.stats.times_ejected(),
                            "routable": e.stats.is_routable(now_ms),
                            "in_flight": e.stats.in_flight(),
                            "ewma_latency_ms": e.stats.ewma_nanos(std::time::Instant::now()) / 1e6,
                            "idle_connections": e.conns.idle_len(),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "name": s.name,
                    "breaker": s.state.breaker_state().as_str(),
                    "in_flight": s.state.in_flight(),
                    "health_checks": s.policy.health_check.is_some(),
                    "outlier_detection": s.policy.outlier.is_some(),
                    "endpoints": endpoints,
                })
            })
            .collect();
        serde_json::json!({ "version": snap.version, "services": services })
    }
}

/// Compares without an early exit, so response time does not reveal the token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

//! The admin API: metrics, readiness, the configuration in force, and the mesh API
//! ([`mesh_api`]) for registration, discovery, invocation, health and topology.
//!
//! It binds to loopback unless configured otherwise, and when a token is configured every
//! request must carry it as `Authorization: Bearer <token>`, except for the [`dashboard`]'s
//! static files, which hold no data.

mod dashboard;
pub(crate) mod mesh_api;
mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::clock::now_millis;
use crate::mesh::Mesh;
use crate::registry::Registry;
use crate::reload::{Outcome, Reloader};

/// Largest request body the admin API reads.
const MAX_BODY: usize = 1024 * 1024;

/// A response of the admin API.
type JsonResponse = Response<Body>;

/// Content type of the metrics exposition (prometheus-client writes OpenMetrics text).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything the admin API serves from.
#[derive(Debug)]
pub struct Admin {
    mesh: Arc<Mesh>,
    registry: Arc<dyn Registry>,
    /// Present when the proxy was started from a file.
    reloader: Option<Arc<Reloader>>,
    token: Option<String>,
}

impl Admin {
    /// An admin API over `mesh`, `registry` and `reloader`, requiring `token` when given.
    pub fn new(
        mesh: Arc<Mesh>,
        registry: Arc<dyn Registry>,
        reloader: Option<Arc<Reloader>>,
        token: Option<String>,
    ) -> Self {
        Self { mesh, registry, reloader, token }
    }

    /// Answers one admin request from `peer`.
    pub async fn handle(&self, req: Request<Body>, peer: SocketAddr) -> Response<Body> {
        if req.method() == Method::GET
            && let Some(page) = dashboard::file(req.uri().path())
        {
            return page;
        }
        if !self.authorized(&req) {
            let mut resp = text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
            resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
        if req.uri().path().starts_with(mesh_api::PREFIX) {
            return self.mesh_api(req, peer).await;
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
            (&Method::POST, "/reload") => self.reload().await,
            (_, "/metrics" | "/ready" | "/config" | "/upstreams" | "/reload") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn authorized(&self, req: &Request<Body>) -> bool {
        let Some(token) = &self.token else { return true };
        let Some(given) = req.headers().get(AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")) else {
            return false;
        };
        constant_time_eq(given, token.as_bytes())
    }

    fn config(&self) -> Response<Body> {
        let snap = self.mesh.snapshot();
        let loaded = snap.loaded_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut body = serde_json::json!({
            "version": snap.version,
            "snapshot_built_at_ms": loaded,
            "listeners": snap.config.listeners.iter().map(|l| &l.name).collect::<Vec<_>>(),
            "routes": snap.config.routes.iter().map(|r| &r.name).collect::<Vec<_>>(),
            "services": snap.services.iter().map(|s| &s.name).collect::<Vec<_>>(),
            "plugins": self.mesh.plugins().iter().map(|p| serde_json::json!({
                "name": p.config.name,
                "kind": p.config.kind.as_str(),
                "path": p.config.path,
                "hash": format!("{:016x}", p.hash),
            })).collect::<Vec<_>>(),
        });
        if let Some(r) = &self.reloader {
            let status = r.status();
            body["path"] = serde_json::json!(status.path);
            body["sources"] = serde_json::json!(status.sources);
            body["loaded_at_ms"] = serde_json::json!(status.loaded_at_ms);
            body["last_error"] = serde_json::json!(status.last_error);
            body["rejections_total"] = serde_json::json!(status.rejections_total);
            body["recent_rejections"] = serde_json::json!(status.recent_rejections);
        }
        json(StatusCode::OK, &body)
    }

    async fn reload(&self) -> Response<Body> {
        let Some(r) = &self.reloader else {
            return error(StatusCode::CONFLICT, "started without a configuration file: nothing to reload".to_owned());
        };
        let outcome = r.reload("api").await;
        let status = match outcome {
            Outcome::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::OK,
        };
        json(status, &serde_json::to_value(&outcome).unwrap_or_default())
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
                            "health_detail": e.stats.health_detail().as_deref(),
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
                    "breaker": s.breaker_label(),
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

/// A JSON error: `{"status": "error", "message": ...}`.
fn error(status: StatusCode, message: String) -> Response<Body> {
    json(status, &serde_json::json!({ "status": "error", "message": message }))
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

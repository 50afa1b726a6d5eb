//! The mesh API, under `/api/v1/mesh/v2/`: register, deregister, discover, call, health and
//! topology, in the JSON shapes our users script against. `openapi.json` describes it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, JsonResponse, error, json};
use crate::body::Body;
use crate::clock::now_millis;
use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::forward::{Downstream, call};
use crate::plugin::Plugin;
use crate::registry::Instance;
use crate::snapshot::{CALL_LISTENER, Service, Snapshot};
use crate::upstream::breaker::BreakerState;
use crate::upstream::endpoint::Health;

/// Path prefix of the mesh API.
pub const PREFIX: &str = "/api/v1/mesh/v2/";

/// Largest response body `call` returns.
const MAX_CALL_RESPONSE: usize = 10 * 1024 * 1024;
/// How long resolving a registered host name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A request the API refuses: the status and the reason, answered as a JSON error.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl Refusal {
    fn response(self) -> JsonResponse {
        error(self.0, self.1)
    }
}

/// `POST register`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    service_name: String,
    address: String,
    port: u64,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// `POST deregister`: by id, or by the fields the id is made of.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeregisterRequest {
    #[serde(default)]
    service_id: Option<String>,
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<u16>,
}

/// `POST call`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallRequest {
    service_name: String,
    #[serde(default = "CallRequest::default_method")]
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

impl CallRequest {
    fn default_method() -> String {
        "GET".to_owned()
    }
}

impl Admin {
    /// Answers a request whose path starts with [`PREFIX`].
    pub(super) async fn mesh_api(&self, req: Request<Body>, peer: SocketAddr) -> JsonResponse {
        let path = req.uri().path()[PREFIX.len()..].to_owned();
        let method = req.method().clone();
        match (&method, path.as_str()) {
            (&Method::POST, "register") => match read_json(req).await {
                Ok(body) => self.register(body).await,
                Err(e) => e.response(),
            },
            (&Method::POST, "deregister") => match read_json(req).await.and_then(deregister_id) {
                Ok(id) => self.deregister(&id).await,
                Err(e) => e.response(),
            },
            (&Method::DELETE, p) if p.starts_with("register/") => self.deregister(&p["register/".len()..]).await,
            (&Method::GET, p) if p.starts_with("discover/") => self.discover(&p["discover/".len()..]),
            (&Method::GET, "services") => json(StatusCode::OK, &self.services()),
            (&Method::POST, "call") => match read_json(req).await {
                Ok(body) => self.call(body, peer).await,
                Err(e) => e.response(),
            },
            (&Method::GET, "health") => json(StatusCode::OK, &self.health()),
            (&Method::GET, "topology") => json(StatusCode::OK, &self.topology()),
            (&Method::GET, "openapi.json") => json(StatusCode::OK, &super::openapi::document()),
            (_, "register" | "deregister" | "services" | "call" | "health" | "topology" | "openapi.json") => {
                error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {PREFIX}{path}"))
            }
            (_, p) if p.starts_with("register/") || p.starts_with("discover/") => {
                error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {PREFIX}{path}"))
            }
            _ => error(StatusCode::NOT_FOUND, format!("no mesh API endpoint at {PREFIX}{path}")),
        }
    }

    async fn register(&self, req: RegisterRequest) -> JsonResponse {
        let instance = match validate_registration(req).await {
            Ok(i) => i,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
        if let Some(name) = instance.health_check.as_ref().and_then(|h| h.plugin.as_deref()) {
            let snap = self.mesh.snapshot();
            if !snap.plugins.iter().any(|(n, p)| n == name && matches!(p, Plugin::HealthCheck(_))) {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("health_check.plugin: no health_check plugin `{name}` is loaded"),
                );
            }
        }
        let (id, name) = (instance.service_id.clone(), instance.service_name.clone());
        match self.registry.register(instance).await {
            Ok(()) => {
                self.apply_registry();
                json(
                    StatusCode::OK,
                    &json!({
                        "service_id": id,
                        "status": "registered",
                        "message": format!("Service {name} registered successfully"),
                    }),
                )
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }

    async fn deregister(&self, id: &str) -> JsonResponse {
        let outcome = self.registry.deregister(id).await;
        self.apply_registry();
        match outcome {
            Ok(true) => json(
                StatusCode::OK,
                &json!({ "service_id": id, "status": "deregistered", "message": format!("Instance {id} deregistered") }),
            ),
            Ok(false) => error(StatusCode::NOT_FOUND, format!("no registered instance `{id}`")),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }

    /// Rebuilds the snapshot from the registry's view now, so that the caller's next request
    /// (a discovery, a call) sees its own change; the background follower then finds nothing
    /// left to do.
    fn apply_registry(&self) {
        let view = self.registry.watch().borrow().clone();
        if *view != *self.mesh.snapshot().instances {
            self.mesh.set_instances(view);
        }
    }

    fn discover(&self, name: &str) -> JsonResponse {
        let snap = self.mesh.snapshot();
        let Some((_, service)) = snap.service(name) else {
            return error(StatusCode::NOT_FOUND, format!("service `{name}` is not registered or configured"));
        };
        let instances: Vec<Value> = service.endpoints.iter().map(|e| endpoint_view(&snap, service, e)).collect();
        json(StatusCode::OK, &json!({ "service_name": name, "instances": instances }))
    }

    fn services(&self) -> Value {
        let snap = self.mesh.snapshot();
        let services: Vec<Value> = snap
            .services
            .iter()
            .map(|s| {
                let now = now_millis();
                json!({
                    "name": s.name,
                    "instances": s.endpoints.len(),
                    "routable": s.routable_count(now),
                    "configured": snap.config.services.iter().any(|c| c.name == s.name),
                    "contracts": s.contracts.iter().flat_map(|c| c.iter()).map(|c| &c.config).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "services": services })
    }

    async fn call(&self, req: CallRequest, peer: SocketAddr) -> JsonResponse {
        let started = Instant::now();
        let request = match build_call(&req) {
            Ok(r) => r,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
        let down = Downstream::new(CALL_LISTENER, peer, "http");
        let exchange = async {
            let resp = call(&self.mesh, &down, &req.service_name, request).await?;
            let (parts, body) = resp.into_parts();
            let bytes = http_body_util::Limited::new(body, MAX_CALL_RESPONSE).collect().await.map(|c| c.to_bytes());
            Some((parts, bytes))
        };
        let outcome = match req.timeout_ms {
            Some(ms) => tokio::time::timeout(Duration::from_millis(ms), exchange).await,
            None => Ok(exchange.await),
        };
        let (parts, bytes) = match outcome {
            Err(_) => {
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("no answer within {} ms", req.timeout_ms.unwrap_or(0)),
                );
            }
            Ok(None) => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("service `{}` is not registered or configured", req.service_name),
                );
            }
            Ok(Some(pair)) => pair,
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_GATEWAY, format!("reading the response body failed: {e}")),
        };
        let mut headers = BTreeMap::<String, String>::new();
        for (name, value) in &parts.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v| *v = format!("{v}, {value}"))
                .or_insert_with(|| value.into_owned());
        }
        let mut answer = json!({
            "service_name": req.service_name,
            "status": parts.status.as_u16(),
            "headers": headers,
            "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
        });
        match std::str::from_utf8(&bytes) {
            Ok(text) => answer["body"] = Value::String(text.to_owned()),
            Err(_) => answer["body_base64"] = Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes)),
        }
        json(StatusCode::OK, &answer)
    }

    fn health(&self) -> Value {
        let snap = self.mesh.snapshot();
        let registry = self.registry.status();
        let now = now_millis();
        let services: Vec<Value> = snap
            .services
            .iter()
            .map(|s| {
                let instances: Vec<Value> = s.endpoints.iter().map(|e| endpoint_view(&snap, s, e)).collect();
                let routable = s.routable_count(now);
                let degraded = s.endpoints.iter().any(|e| e.stats.health() == Health::Degraded);
                // An open breaker refuses every request, whatever the instances' health.
                let status = if s.endpoints.is_empty() || routable == 0 || s.breaker() == Some(BreakerState::Open) {
                    "down"
                } else if routable < s.endpoints.len() || degraded || s.breaker() == Some(BreakerState::HalfOpen) {
                    "degraded"
                } else {
                    "up"
                };
                json!({
                    "name": s.name,
                    "status": status,
                    "breaker": s.breaker_label(),
                    "in_flight": s.state.in_flight(),
                    "instances": instances,
                })
            })
            .collect();
        let all_up = registry.connected && services.iter().all(|s| s["status"] == "up");
        json!({
            "status": if all_up { "healthy" } else { "degraded" },
            "config_version": snap.version,
            "registries": [registry],
            "services": services,
        })
    }

    fn topology(&self) -> Value {
        let snap = self.mesh.snapshot();
        let services: Vec<Value> = snap
            .services
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "breaker": s.breaker_label(),
                    "instances": s.endpoints.iter().map(|e| endpoint_view(&snap, s, e)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let mut routes = Vec::new();
        let mut edges = Vec::new();
        for listener in &snap.listeners {
            let kind = if listener.name == CALL_LISTENER { "call" } else { "route" };
            for route in &listener.routes {
                if kind == "route" {
                    routes.push(json!({
                        "name": route.name,
                        "listener": listener.name,
                        "service": snap.services[route.service].name,
                        "plugins": route.router.iter().map(|r| r.name().to_owned()).chain(route.filters.iter().map(|f| f.name().to_owned())).collect::<Vec<_>>(),
                    }));
                }
                let targets: Vec<usize> =
                    if route.edges.len() == 1 { vec![route.service] } else { (0..snap.services.len()).collect() };
                for target in targets {
                    let r = route.edge(target).read();
                    if r.requests == 0 {
                        continue;
                    }
                    edges.push(json!({
                        "source": route.name,
                        "source_kind": kind,
                        "listener": listener.name,
                        "target": snap.services[target].name,
                        "requests": r.requests,
                        "errors": r.errors,
                        "error_rate": r.errors as f64 / r.requests as f64,
                        "mean_latency_ms": r.mean_latency_ms,
                        "last_seen_ms": r.last_ms,
                    }));
                }
            }
        }
        json!({ "config_version": snap.version, "services": services, "routes": routes, "edges": edges })
    }
}

/// What the API shows of one endpoint: its registration (if any) and live state.
fn endpoint_view(snap: &Snapshot, service: &Service, e: &crate::upstream::Endpoint) -> Value {
    let now = now_millis();
    let registered = snap.instances.values().find(|i| i.service_name == service.name && i.endpoint == e.address);
    let checked = e.health_check.is_some() || service.policy.health_check.is_some();
    let mut view = json!({
        "endpoint": e.address.to_string(),
        "address": registered.map_or_else(|| e.address.ip().to_string(), |i| i.address.clone()),
        "port": e.address.port(),
        "weight": e.weight,
        "metadata": e.metadata,
        "source": if registered.is_some() { "registry" } else { "config" },
        "health": if checked { e.stats.health().as_str() } else { "unchecked" },
        "health_detail": e.stats.health_detail().as_deref(),
        "ejected": e.stats.is_ejected(now),
        "routable": service.routable(e, now),
        "in_flight": e.stats.in_flight(),
    });
    if let Some(i) = registered {
        view["service_id"] = json!(i.service_id);
        view["tags"] = json!(i.tags);
        view["ttl_seconds"] = json!(i.ttl_seconds);
        view["expires_at_ms"] = json!(i.expires_at_ms());
        view["registered_at_ms"] = json!(i.registered_at_ms);
    }
    view
}

/// Reads a JSON body of at most [`super::MAX_BODY`] bytes into `T`, or the 400 to answer.
async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Body>) -> Result<T, Refusal> {
    let bytes = match http_body_util::Limited::new(req.into_body(), super::MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => return Err(Refusal(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))),
    };
    parse_json(&bytes)
}

/// A JSON body into `T`, or the 400 to answer.
fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(bytes).map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// An endpoint of the mesh API that takes a JSON body.
#[cfg(any(test, feature = "fuzzing"))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum BodyEndpoint {
    /// `POST register`.
    Register,
    /// `POST deregister`.
    Deregister,
    /// `POST call`.
    Call,
}

/// Runs `body` through what `endpoint` does with it before anything is stored, resolved or
/// sent: the JSON shape, then the checks; `Err` holds the message a client would be answered.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_body(endpoint: BodyEndpoint, body: &[u8]) -> Result<(), String> {
    let refused = |r: Refusal| r.1;
    match endpoint {
        BodyEndpoint::Register => check_registration(&parse_json(body).map_err(refused)?).map(|_| ()),
        BodyEndpoint::Deregister => parse_json(body).and_then(deregister_id).map(|_| ()).map_err(refused),
        BodyEndpoint::Call => {
            let req: CallRequest = parse_json(body).map_err(refused)?;
            let out = build_call(&req)?;
            // What the routing and the upstream framing rely on.
            assert!(out.headers().contains_key(http::header::HOST), "a call always names its host");
            if let Some(body) = &req.body {
                assert_eq!(out.headers()[http::header::CONTENT_LENGTH], body.len().to_string().as_str());
            }
            Ok(())
        }
    }
}

/// The names services and ids may use: they become keys in etcd and Consul.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks a registration and resolves its address.
async fn validate_registration(req: RegisterRequest) -> Result<Instance, String> {
    let Checked { port, weight, address } = check_registration(&req)?;
    let endpoint = resolve(&address, port).await?;
    // Without a check of its own, an instance gets a TCP connect check, so that the health
    // view shows a real state and a dead instance leaves the balancing set.
    let health_check = req.health_check.or_else(|| {
        Some(HealthCheckConfig { kind: HealthCheckKind::Tcp, ..serde_json::from_value(json!({})).expect("defaults") })
    });
    Ok(Instance {
        service_id: Instance::id_for(&req.service_name, &address, port),
        service_name: req.service_name,
        address,
        port,
        endpoint,
        tags: req.tags,
        metadata: req.metadata,
        weight,
        health_check,
        ttl_seconds: req.ttl_seconds,
        registered_at_ms: now_millis(),
    })
}

/// The fields of a registration that passed its checks, before its address is resolved.
struct Checked {
    port: u16,
    weight: u32,
    /// Trimmed.
    address: String,
}

/// The checks of a registration that need no name lookup.
fn check_registration(req: &RegisterRequest) -> Result<Checked, String> {
    if !valid_name(&req.service_name) {
        return Err(format!(
            "service_name `{}` must be 1-128 characters of letters, digits, `-`, `_` or `.`",
            req.service_name
        ));
    }
    let port = u16::try_from(req.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {} is out of range 1..=65535", req.port))?;
    let weight = req.weight.unwrap_or(1);
    if !(1..=10_000).contains(&weight) {
        return Err(format!("weight {weight} is out of range 1..=10000"));
    }
    if req.ttl_seconds == Some(0) {
        return Err("ttl_seconds must be at least 1".to_owned());
    }
    if let Some(hc) = &req.health_check
        && (hc.interval.is_zero() || hc.timeout.is_zero())
    {
        return Err("health_check interval and timeout must be greater than zero".to_owned());
    }
    let address = req.address.trim().to_owned();
    if address.is_empty() || address.contains(['/', ' ']) {
        return Err(format!("address `{}` is not an IP address or host name", req.address));
    }
    Ok(Checked { port, weight, address })
}

async fn resolve(address: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = address.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((address, port)))
        .await
        .map_err(|_| format!("resolving `{address}` timed out"))?
        .map_err(|e| format!("cannot resolve `{address}`: {e}"))?;
    let found: Vec<SocketAddr> = found.collect();
    found.iter().find(|a| a.is_ipv4()).or(found.first()).copied().ok_or_else(|| format!("`{address}` has no address"))
}

fn deregister_id(req: DeregisterRequest) -> Result<String, Refusal> {
    match req {
        DeregisterRequest { service_id: Some(id), .. } => Ok(id),
        DeregisterRequest { service_name: Some(name), address: Some(address), port: Some(port), .. } => {
            Ok(Instance::id_for(&name, &address, port))
        }
        _ => Err(Refusal(
            StatusCode::BAD_REQUEST,
            "give `service_id`, or `service_name`, `address` and `port`".to_owned(),
        )),
    }
}

/// The request `call` sends through the mesh.
fn build_call(req: &CallRequest) -> Result<Request<Body>, String> {
    let method = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("method `{}` is not an HTTP method", req.method))?;
    if !req.path.starts_with('/') {
        return Err(format!("path `{}` must start with `/`", req.path));
    }
    let uri = http::Uri::try_from(req.path.as_str()).map_err(|e| format!("path `{}`: {e}", req.path))?;
    let mut out = Request::new(Body::full(Bytes::from(req.body.clone().unwrap_or_default())));
    *out.method_mut() = method;
    *out.uri_mut() = uri;
    for (name, value) in &req.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("`{name}` is not a header name"))?;
        let value = HeaderValue::from_str(value).map_err(|_| format!("header `{name}` has an invalid value"))?;
        out.headers_mut().append(name, value);
    }
    if !out.headers().contains_key(http::header::HOST) {
        let host =
            HeaderValue::from_str(&req.service_name).map_err(|_| "service_name is not a valid host".to_owned())?;
        out.headers_mut().insert(http::header::HOST, host);
    }
    if let Some(body) = &req.body {
        out.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(port: u64) -> RegisterRequest {
        serde_json::from_value(json!({ "service_name": "users", "address": "127.0.0.1", "port": port })).expect("shape")
    }

    #[tokio::test]
    async fn registrations_are_checked_before_anything_is_stored() {
        let ok = validate_registration(registration(8080)).await.expect("valid");
        assert_eq!(ok.service_id, "users-127.0.0.1-8080");
        assert_eq!(ok.health_check.map(|h| h.kind), Some(HealthCheckKind::Tcp));
        assert!(validate_registration(registration(70000)).await.expect_err("range").contains("out of range"));
        assert!(validate_registration(registration(0)).await.is_err());
        let mut bad = registration(1);
        bad.service_name = "a/b".into();
        assert!(validate_registration(bad).await.is_err());
    }

    #[test]
    fn deregistration_takes_an_id_or_its_parts() {
        let by_parts: DeregisterRequest =
            serde_json::from_value(json!({ "service_name": "users", "address": "10.0.0.1", "port": 80 }))
                .expect("shape");
        assert_eq!(deregister_id(by_parts).ok().as_deref(), Some("users-10.0.0.1-80"));
        let neither: DeregisterRequest = serde_json::from_value(json!({ "service_name": "users" })).expect("shape");
        assert!(deregister_id(neither).is_err());
    }
}

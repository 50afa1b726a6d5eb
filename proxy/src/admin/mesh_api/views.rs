//! `discover`, `services`, `health` and `topology`: what the mesh holds, as JSON.

use http::StatusCode;
use serde_json::{Value, json};

use crate::admin::{Admin, JsonResponse, error, json};
use crate::clock::now_millis;
use crate::snapshot::{CALL_LISTENER, Service, Snapshot};
use crate::upstream::breaker::BreakerState;
use crate::upstream::endpoint::Health;

impl Admin {
    /// `GET discover/{name}`: a service's endpoints and their state.
    pub(super) fn discover(&self, name: &str) -> JsonResponse {
        let snap = self.mesh.snapshot();
        let Some((_, service)) = snap.service(name) else {
            return error(StatusCode::NOT_FOUND, format!("service `{name}` is not registered or configured"));
        };
        let instances: Vec<Value> = service.endpoints.iter().map(|e| endpoint_view(&snap, service, e)).collect();
        json(StatusCode::OK, &json!({ "service_name": name, "instances": instances }))
    }

    /// `GET services`: every service, configured or registered.
    pub(super) fn services(&self) -> Value {
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

    /// `GET health`: each endpoint's health, breaker and ejection state.
    pub(super) fn health(&self) -> Value {
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

    /// `GET topology`: services, routes and the call edges between them.
    pub(super) fn topology(&self) -> Value {
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

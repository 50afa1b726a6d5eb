//! `register` and `deregister`: checking a registration, resolving its address, storing it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::Refusal;
use crate::admin::{Admin, JsonResponse, error, json};
use crate::clock::now_millis;
use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::plugin::Plugin;
use crate::registry::Instance;

/// How long resolving a registered host name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// `POST register`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RegisterRequest {
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
pub(super) struct DeregisterRequest {
    #[serde(default)]
    service_id: Option<String>,
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<u16>,
}

impl Admin {
    /// `POST register`.
    pub(super) async fn register(&self, req: RegisterRequest) -> JsonResponse {
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

    /// `POST deregister` and `DELETE register/{id}`.
    pub(super) async fn deregister(&self, id: &str) -> JsonResponse {
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
pub(super) struct Checked {
    port: u16,
    weight: u32,
    /// Trimmed.
    address: String,
}

/// The checks of a registration that need no name lookup.
pub(super) fn check_registration(req: &RegisterRequest) -> Result<Checked, String> {
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

pub(super) fn deregister_id(req: DeregisterRequest) -> Result<String, Refusal> {
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

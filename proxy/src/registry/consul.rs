//! The Consul registry: the local agent's service endpoints for writes, blocking queries for
//! discovery.
//!
//! - register: `PUT /v1/agent/service/register`; deregister: `PUT /v1/agent/service/deregister/:id`.
//! - discovery: `GET /v1/catalog/services` and, per service, `GET /v1/health/service/:name?passing`,
//!   both as blocking queries (`index` from the last `X-Consul-Index`, `wait`), with the index
//!   reset to 0 when it goes backwards, as Consul's documentation asks.
//!
//! wasmesh's own fields that Consul has no place for (the health check it runs itself, the TTL,
//! the registration time) travel in the service's `Meta` under `wasmesh_*` keys.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{BoxFuture, Instance, InstanceSet, Link, Registry, RegistryError, RegistryStatus};
use crate::config::ConsulConfig;

/// Wait before retrying after a failed query.
const RETRY: Duration = Duration::from_millis(500);
const META_HEALTH_CHECK: &str = "wasmesh_health_check";
const META_TTL: &str = "wasmesh_ttl_seconds";
const META_REGISTERED: &str = "wasmesh_registered_at_ms";
const META_ADDRESS: &str = "wasmesh_address";

/// Instances in Consul.
#[derive(Debug)]
pub struct ConsulRegistry {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Shared {
    config: ConsulConfig,
    link: Link,
    http: Client<HttpConnector, Full<Bytes>>,
    tx: watch::Sender<Arc<InstanceSet>>,
}

impl ConsulRegistry {
    /// Starts discovery in the background.
    pub fn start(config: ConsulConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout));
        let shared = Arc::new(Shared {
            config,
            link: Link::new("consul"),
            http: Client::builder(TokioExecutor::new()).build(connector),
            tx: watch::Sender::new(Arc::new(InstanceSet::new())),
        });
        let stop = CancellationToken::new();
        tokio::spawn(watch_catalog(shared.clone(), stop.clone()));
        Self { shared, stop }
    }
}

impl Drop for ConsulRegistry {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Shared {
    /// Sends one request to the agent; returns the status, `X-Consul-Index` and body.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Option<u64>, Bytes), RegistryError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path_and_query}", self.config.address))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.config.token {
            req = req.header("x-consul-token", token);
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| self.link.down(e))?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let index = resp.headers().get("x-consul-index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((status, index, body))
        };
        let (status, index, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| self.link.down("request timed out"))?
            .map_err(|e| self.link.down(e))?;
        if status.is_server_error() {
            return Err(self.link.down(format!("agent answered {status}: {}", String::from_utf8_lossy(&body))));
        }
        self.link.up();
        Ok((status, index, body))
    }

    /// A blocking query from `index`; returns the new index (reset to 0 if it went backwards).
    async fn blocking(&self, path: &str, index: u64) -> Result<(u64, Bytes), RegistryError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let wait = self.config.wait.as_secs().max(1);
        let query = format!("{path}{sep}index={index}&wait={wait}s");
        // The agent may hold the request for `wait` plus up to 1/16 of it as jitter.
        let timeout = self.config.wait + self.config.wait / 16 + self.config.timeout;
        let (status, next, body) = self.call(Method::GET, &query, None, timeout).await?;
        if !status.is_success() {
            return Err(self.link.down(format!("{path} answered {status}")));
        }
        let next = next.unwrap_or(0);
        Ok((if next < index { 0 } else { next }, body))
    }
}

impl Registry for ConsulRegistry {
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            let mut meta = instance.metadata.clone();
            meta.insert(META_ADDRESS.into(), instance.address.clone());
            meta.insert(META_REGISTERED.into(), instance.registered_at_ms.to_string());
            if let Some(ttl) = instance.ttl_seconds {
                meta.insert(META_TTL.into(), ttl.to_string());
            }
            if let Some(hc) = &instance.health_check {
                meta.insert(META_HEALTH_CHECK.into(), serde_json::to_string(hc).unwrap_or_default());
            }
            let body = serde_json::json!({
                "ID": instance.service_id,
                "Name": instance.service_name,
                "Address": instance.endpoint.ip().to_string(),
                "Port": instance.port,
                "Tags": instance.tags,
                "Meta": meta,
                "Weights": { "Passing": instance.weight, "Warning": 1 },
            });
            let (status, _, text) = self
                .shared
                .call(
                    Method::PUT,
                    "/v1/agent/service/register",
                    Some(body.to_string().into_bytes()),
                    self.shared.config.timeout,
                )
                .await?;
            if !status.is_success() {
                return Err(self
                    .shared
                    .link
                    .down(format!("register answered {status}: {}", String::from_utf8_lossy(&text))));
            }
            // Seen now, not only after the next blocking query returns.
            self.shared.tx.send_modify(|set| {
                Arc::make_mut(set).insert(instance.service_id.clone(), instance);
            });
            Ok(())
        })
    }

    fn deregister<'a>(&'a self, service_id: &'a str) -> BoxFuture<'a, Result<bool, RegistryError>> {
        Box::pin(async move {
            // Read before the call: the blocking query may drop it from the view as soon as
            // the agent has removed it.
            let known = self.shared.tx.borrow().contains_key(service_id);
            let path = format!("/v1/agent/service/deregister/{service_id}");
            let (status, _, _) = self.shared.call(Method::PUT, &path, None, self.shared.config.timeout).await?;
            self.shared.tx.send_if_modified(|set| Arc::make_mut(set).remove(service_id).is_some());
            Ok(status.is_success() && known)
        })
    }

    fn watch(&self) -> watch::Receiver<Arc<InstanceSet>> {
        self.shared.tx.subscribe()
    }

    fn status(&self) -> RegistryStatus {
        self.shared.link.status()
    }
}

/// Follows the catalog's service list and runs one health watch per service.
async fn watch_catalog(shared: Arc<Shared>, stop: CancellationToken) {
    let mut index = 0;
    let mut watches: HashMap<String, CancellationToken> = HashMap::new();
    loop {
        let result = tokio::select! {
            () = stop.cancelled() => break,
            r = shared.blocking("/v1/catalog/services", index) => r,
        };
        match result.and_then(|(next, body)| {
            let names: BTreeMap<String, Vec<String>> =
                serde_json::from_slice(&body).map_err(|e| shared.link.down(format!("bad catalog answer: {e}")))?;
            Ok((next, names))
        }) {
            Ok((next, names)) => {
                index = next;
                watches.retain(|name, cancel| {
                    let keep = names.contains_key(name);
                    if !keep {
                        cancel.cancel();
                        shared.tx.send_if_modified(|set| drop_service(set, name));
                    }
                    keep
                });
                for name in names.into_keys().filter(|n| n != "consul") {
                    watches.entry(name.clone()).or_insert_with(|| {
                        let cancel = stop.child_token();
                        tokio::spawn(watch_service(shared.clone(), name, cancel.clone()));
                        cancel
                    });
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "consul catalog query failed");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
    for (_, cancel) in watches {
        cancel.cancel();
    }
}

/// Follows the passing instances of one service.
async fn watch_service(shared: Arc<Shared>, name: String, cancel: CancellationToken) {
    let path = format!("/v1/health/service/{name}?passing=1");
    let mut index = 0;
    loop {
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            r = shared.blocking(&path, index) => r,
        };
        match result.and_then(|(next, body)| {
            let entries: Vec<HealthEntry> =
                serde_json::from_slice(&body).map_err(|e| shared.link.down(format!("bad health answer: {e}")))?;
            Ok((next, entries))
        }) {
            Ok((next, entries)) => {
                index = next;
                let instances: Vec<Instance> = entries.into_iter().filter_map(HealthEntry::into_instance).collect();
                shared.tx.send_if_modified(|set| {
                    let mut changed = drop_service(set, &name);
                    let set = Arc::make_mut(set);
                    for i in instances {
                        changed |= set.insert(i.service_id.clone(), i).is_none();
                    }
                    changed
                });
            }
            Err(e) => {
                tracing::debug!(service = %name, error = %e, "consul health query failed");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

fn drop_service(set: &mut Arc<InstanceSet>, name: &str) -> bool {
    if !set.values().any(|i| i.service_name == name) {
        return false;
    }
    Arc::make_mut(set).retain(|_, i| i.service_name != name);
    true
}

/// One element of `/v1/health/service/:name`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    #[serde(default)]
    node: Option<NodeEntry>,
    service: ServiceEntry,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeEntry {
    #[serde(default)]
    address: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceEntry {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    #[serde(default)]
    address: String,
    port: u16,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    weights: Option<Weights>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Weights {
    passing: u32,
}

impl HealthEntry {
    /// The instance this entry describes; `None` (logged) when its address is unusable.
    fn into_instance(self) -> Option<Instance> {
        let s = self.service;
        // Consul's rule: an empty service address means the node's address.
        let ip = if s.address.is_empty() { self.node.map(|n| n.address).unwrap_or_default() } else { s.address };
        let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
            tracing::warn!(service_id = %s.id, address = %ip, "ignoring a Consul instance without an IP address");
            return None;
        };
        let mut meta = s.meta.unwrap_or_default();
        let health_check = meta.remove(META_HEALTH_CHECK).and_then(|v| serde_json::from_str(&v).ok());
        let ttl_seconds = meta.remove(META_TTL).and_then(|v| v.parse().ok());
        let registered_at_ms = meta.remove(META_REGISTERED).and_then(|v| v.parse().ok()).unwrap_or(0);
        let address = meta.remove(META_ADDRESS).unwrap_or_else(|| ip.to_string());
        Some(Instance {
            service_id: s.id,
            service_name: s.service,
            address,
            port: s.port,
            endpoint: SocketAddr::new(ip, s.port),
            tags: s.tags.unwrap_or_default(),
            metadata: meta,
            weight: s.weights.map_or(1, |w| w.passing.clamp(1, 10_000)),
            health_check,
            ttl_seconds,
            registered_at_ms,
        })
    }
}

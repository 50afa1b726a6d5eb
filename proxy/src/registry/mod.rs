//! The service registry: instances registered through the mesh API, stored by one of three
//! backends behind the [`Registry`] trait, and watched by the mesh so that registered
//! instances join their service's balancing set.
//!
//! Every backend publishes its whole view as one [`InstanceSet`] on a watch channel. A backend
//! that loses its store keeps publishing nothing new, so the last known instances keep serving.

mod consul;
mod embedded;
mod etcd;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use consul::ConsulRegistry;
pub use embedded::EmbeddedRegistry;
pub use etcd::EtcdRegistry;

use crate::clock::now_millis;
use crate::config::{HealthCheckConfig, RegistryBackend, RegistryConfig};

/// Every registered instance, by service id.
pub type InstanceSet = BTreeMap<String, Instance>;

/// A boxed future, so that [`Registry`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One registered instance of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// `<service>-<address>-<port>`.
    pub service_id: String,
    /// The service it serves.
    pub service_name: String,
    /// Address as registered (an IP or a host name).
    pub address: String,
    /// Port.
    pub port: u16,
    /// The socket address traffic goes to (`address` resolved at registration).
    pub endpoint: SocketAddr,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Free-form labels that balancers and plugins may read.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Relative share of traffic.
    pub weight: u32,
    /// The instance's own active health check, used instead of its service's.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Seconds the registration lives unless renewed by registering again.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// When it was (last) registered, in Unix milliseconds.
    pub registered_at_ms: u64,
}

impl Instance {
    /// The id the mesh API gives an instance.
    pub fn id_for(service: &str, address: &str, port: u16) -> String {
        format!("{service}-{address}-{port}")
    }

    /// When the registration lapses, in Unix milliseconds.
    pub fn expires_at_ms(&self) -> Option<u64> {
        self.ttl_seconds.map(|ttl| self.registered_at_ms.saturating_add(ttl.saturating_mul(1000)))
    }

    /// Whether the registration has lapsed at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms().is_some_and(|at| at <= now_ms)
    }
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The embedded data file could not be read or written.
    #[error("registry file {path}: {source}")]
    File {
        /// The data file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The embedded data file is not valid.
    #[error("registry file {path} is corrupt: {source}")]
    Corrupt {
        /// The data file.
        path: std::path::PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The remote store (etcd, Consul) could not be reached or refused the request.
    #[error("{backend} unavailable: {message}")]
    Unavailable {
        /// `etcd` or `consul`.
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Whether a backend can reach its store, for the health view.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RegistryStatus {
    /// `embedded`, `etcd` or `consul`.
    pub backend: &'static str,
    /// Whether the last exchange with the store succeeded.
    pub connected: bool,
    /// The last error, if the store is unreachable.
    pub last_error: Option<String>,
}

/// A store of registered instances.
pub trait Registry: Send + Sync + std::fmt::Debug {
    /// Adds or replaces `instance` (registering again renews a TTL). Resolves once stored.
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<(), RegistryError>>;
    /// Removes the instance `service_id`; `Ok(false)` when it was not registered.
    fn deregister<'a>(&'a self, service_id: &'a str) -> BoxFuture<'a, Result<bool, RegistryError>>;
    /// The current view, updated whenever it changes.
    fn watch(&self) -> watch::Receiver<Arc<InstanceSet>>;
    /// Whether the store is reachable.
    fn status(&self) -> RegistryStatus;
}

/// Opens the backend `config` names. Remote backends connect in the background: an
/// unreachable store is an outage shown in the health view, not a failed start.
pub async fn open(config: &RegistryConfig) -> Result<Arc<dyn Registry>, RegistryError> {
    let registry: Arc<dyn Registry> = match config.backend {
        RegistryBackend::Embedded => Arc::new(EmbeddedRegistry::open(&config.path).await?),
        RegistryBackend::Etcd => Arc::new(EtcdRegistry::start(config.etcd.clone())),
        RegistryBackend::Consul => Arc::new(ConsulRegistry::start(config.consul.clone())),
    };
    tokio::spawn(expire(Arc::downgrade(&registry)));
    Ok(registry)
}

/// How often lapsed registrations are removed.
const EXPIRY_PERIOD: Duration = Duration::from_millis(250);

/// Deregisters instances whose TTL lapsed, until the registry is dropped.
async fn expire(registry: std::sync::Weak<dyn Registry>) {
    loop {
        tokio::time::sleep(EXPIRY_PERIOD).await;
        let Some(registry) = registry.upgrade() else { return };
        let now = now_millis();
        let lapsed: Vec<String> =
            registry.watch().borrow().values().filter(|i| i.expired(now)).map(|i| i.service_id.clone()).collect();
        for id in lapsed {
            match registry.deregister(&id).await {
                Ok(_) => tracing::info!(service_id = %id, "registration expired"),
                Err(e) => tracing::warn!(service_id = %id, error = %e, "could not remove an expired registration"),
            }
        }
    }
}

/// Connection state shared by the remote backends' background tasks and `status()`.
#[derive(Debug)]
struct Link {
    backend: &'static str,
    state: Mutex<Option<String>>,
}

impl Link {
    fn new(backend: &'static str) -> Self {
        Self { backend, state: Mutex::new(Some("not connected yet".to_owned())) }
    }

    fn up(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.is_some() {
            tracing::info!(backend = self.backend, "registry connected");
        }
        *state = None;
    }

    fn down(&self, error: impl std::fmt::Display) -> RegistryError {
        let message = error.to_string();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.is_none() {
            tracing::warn!(backend = self.backend, error = %message, "registry unreachable; serving the last known instances");
        }
        *state = Some(message.clone());
        RegistryError::Unavailable { backend: self.backend, message }
    }

    fn status(&self) -> RegistryStatus {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        RegistryStatus { backend: self.backend, connected: state.is_none(), last_error: state.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(ttl: Option<u64>) -> Instance {
        Instance {
            service_id: Instance::id_for("users", "127.0.0.1", 9000),
            service_name: "users".into(),
            address: "127.0.0.1".into(),
            port: 9000,
            endpoint: "127.0.0.1:9000".parse().expect("addr"),
            tags: vec![],
            metadata: BTreeMap::new(),
            weight: 1,
            health_check: None,
            ttl_seconds: ttl,
            registered_at_ms: 10_000,
        }
    }

    #[test]
    fn ids_follow_the_documented_shape() {
        assert_eq!(instance(None).service_id, "users-127.0.0.1-9000");
    }

    #[test]
    fn only_instances_with_a_ttl_expire() {
        assert!(!instance(None).expired(u64::MAX));
        assert!(!instance(Some(5)).expired(14_999));
        assert!(instance(Some(5)).expired(15_000));
    }
}

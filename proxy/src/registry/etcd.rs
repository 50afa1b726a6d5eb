//! The etcd registry: one key per instance, `<prefix><service>/<service_id>`, holding the
//! instance as JSON and attached to a lease.
//!
//! Discovery lists the prefix, then watches it from the next revision; when the watch breaks
//! (etcd restarted, the revision was compacted, the connection dropped) it lists again. The
//! published set is only replaced by a successful listing or watch event, so an outage keeps
//! the last known instances serving.
//!
//! Instances registered through this proxy without a TTL are kept alive by it: a task per
//! instance re-grants the lease and re-writes the key whenever etcd comes back without it.
//! Instances with `ttl_seconds` get a lease of that length that only registering again renews.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{BoxFuture, Instance, InstanceSet, Link, Registry, RegistryError, RegistryStatus};
use crate::config::EtcdConfig;

/// Wait before reconnecting after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// Instances in an etcd cluster.
#[derive(Debug)]
pub struct EtcdRegistry {
    shared: Arc<Shared>,
    /// Keep-alive tasks of instances this proxy registered without a TTL.
    owned: Mutex<HashMap<String, CancellationToken>>,
    stop: CancellationToken,
}

struct Shared {
    config: EtcdConfig,
    link: Link,
    client: tokio::sync::Mutex<Option<Client>>,
    tx: watch::Sender<Arc<InstanceSet>>,
}

impl EtcdRegistry {
    /// Starts discovery in the background; registrations fail until etcd answers.
    pub fn start(config: EtcdConfig) -> Self {
        let shared = Arc::new(Shared {
            config,
            link: Link::new("etcd"),
            client: tokio::sync::Mutex::new(None),
            tx: watch::Sender::new(Arc::new(InstanceSet::new())),
        });
        let stop = CancellationToken::new();
        tokio::spawn(discover(shared.clone(), stop.clone()));
        Self { shared, owned: Mutex::new(HashMap::new()), stop }
    }
}

impl Drop for EtcdRegistry {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("config", &self.config).field("link", &self.link).finish_non_exhaustive()
    }
}

impl Shared {
    fn key(&self, instance: &Instance) -> String {
        format!("{}{}/{}", self.config.prefix, instance.service_name, instance.service_id)
    }

    /// A connected client, connecting first if needed.
    async fn client(&self) -> Result<Client, RegistryError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(self.config.timeout)
            .with_timeout(self.config.timeout)
            .with_keep_alive(Duration::from_secs(1), self.config.timeout);
        let connect = Client::connect(&self.config.endpoints, Some(options));
        let client = tokio::time::timeout(self.config.timeout, connect)
            .await
            .map_err(|_| self.link.down("connect timed out"))?
            .map_err(|e| self.link.down(e))?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Forgets the client after an error, so the next call reconnects.
    async fn failed(&self, error: impl std::fmt::Display) -> RegistryError {
        *self.client.lock().await = None;
        self.link.down(error)
    }

    /// Grants a lease of `ttl` and writes `instance` under it. Returns the lease id.
    async fn put(&self, instance: &Instance, ttl: Duration) -> Result<i64, RegistryError> {
        let mut client = self.client().await?;
        let value = serde_json::to_vec(instance).map_err(|e| self.link.down(e))?;
        let ttl = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = match client.lease_grant(ttl, None).await {
            Ok(l) => l.id(),
            Err(e) => return Err(self.failed(e).await),
        };
        if let Err(e) = client.put(self.key(instance), value, Some(PutOptions::new().with_lease(lease))).await {
            return Err(self.failed(e).await);
        }
        self.link.up();
        Ok(lease)
    }
}

impl Registry for EtcdRegistry {
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            let id = instance.service_id.clone();
            match instance.ttl_seconds {
                Some(ttl) => {
                    self.shared.put(&instance, Duration::from_secs(ttl)).await?;
                    if let Some(keeper) = self.owned.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
                        keeper.cancel();
                    }
                }
                None => {
                    let lease = self.shared.put(&instance, self.shared.config.lease_ttl).await?;
                    let cancel = CancellationToken::new();
                    let previous = self.owned.lock().unwrap_or_else(|e| e.into_inner()).insert(id, cancel.clone());
                    if let Some(p) = previous {
                        p.cancel();
                    }
                    tokio::spawn(keep_alive(self.shared.clone(), instance, lease, cancel));
                }
            }
            Ok(())
        })
    }

    fn deregister<'a>(&'a self, service_id: &'a str) -> BoxFuture<'a, Result<bool, RegistryError>> {
        Box::pin(async move {
            if let Some(keeper) = self.owned.lock().unwrap_or_else(|e| e.into_inner()).remove(service_id) {
                keeper.cancel();
            }
            let Some(instance) = self.shared.tx.borrow().get(service_id).cloned() else { return Ok(false) };
            let mut client = self.shared.client().await?;
            match client.delete(self.shared.key(&instance), None).await {
                Ok(_) => {
                    // The key may already be gone: cancelling the keep-alive revokes its lease.
                    // It was registered, and now it is not. Remove it from the view now rather
                    // than when the watch echoes it, so the caller's next read sees the change.
                    self.shared.tx.send_modify(|set| {
                        Arc::make_mut(set).remove(service_id);
                    });
                    Ok(true)
                }
                Err(e) => Err(self.shared.failed(e).await),
            }
        })
    }

    fn watch(&self) -> watch::Receiver<Arc<InstanceSet>> {
        self.shared.tx.subscribe()
    }

    fn status(&self) -> RegistryStatus {
        self.shared.link.status()
    }
}

/// Keeps `instance`'s lease alive; when the lease is lost (etcd restarted, or was away longer
/// than the TTL), writes the instance again under a new lease.
async fn keep_alive(shared: Arc<Shared>, instance: Instance, mut lease: i64, cancel: CancellationToken) {
    let period = (shared.config.lease_ttl / 3).max(Duration::from_millis(200));
    loop {
        let renewed = async {
            let mut client = shared.client().await?;
            let (mut keeper, mut stream) = client.lease_keep_alive(lease).await.map_err(|e| shared.link.down(e))?;
            loop {
                keeper.keep_alive().await.map_err(|e| shared.link.down(e))?;
                match stream.message().await {
                    Ok(Some(r)) if r.ttl() > 0 => {}
                    Ok(_) => return Err(shared.link.down("lease expired")),
                    Err(e) => return Err(shared.link.down(e)),
                }
                tokio::time::sleep(period).await;
            }
        };
        tokio::select! {
            () = cancel.cancelled() => {
                if let Ok(mut client) = shared.client().await {
                    let _ = client.lease_revoke(lease).await;
                }
                return;
            }
            Err::<(), RegistryError>(e) = renewed => tracing::debug!(id = %instance.service_id, error = %e, "lease lost"),
        }
        // Re-register until etcd takes it again.
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(RETRY) => {}
            }
            match shared.put(&instance, shared.config.lease_ttl).await {
                Ok(l) => {
                    tracing::info!(id = %instance.service_id, "registration restored in etcd");
                    lease = l;
                    break;
                }
                Err(e) => tracing::debug!(id = %instance.service_id, error = %e, "etcd still unavailable"),
            }
        }
    }
}

/// Lists and watches the prefix forever, publishing the set after every change.
async fn discover(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            result = list_and_watch(&shared) => {
                let e = match result { Ok(()) => shared.link.down("watch ended"), Err(e) => e };
                *shared.client.lock().await = None;
                tracing::debug!(error = %e, "etcd discovery interrupted");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// One listing and the watch that follows it; returns when the watch breaks.
async fn list_and_watch(shared: &Shared) -> Result<(), RegistryError> {
    let prefix = shared.config.prefix.as_str();
    let mut client = shared.client().await?;
    let listing = client.get(prefix, Some(GetOptions::new().with_prefix())).await.map_err(|e| shared.link.down(e))?;
    let revision = listing.header().map_or(0, |h| h.revision());
    let set: InstanceSet =
        listing.kvs().iter().filter_map(|kv| decode(kv.value())).map(|i| (i.service_id.clone(), i)).collect();
    shared.tx.send_if_modified(|current| replace(current, set));
    shared.link.up();

    let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1).with_prev_key();
    let mut stream = client.watch(prefix, Some(options)).await.map_err(|e| shared.link.down(e))?;
    while let Some(resp) = stream.message().await.map_err(|e| shared.link.down(e))? {
        if resp.canceled() || resp.compact_revision() > 0 {
            // Compacted past our revision: only a new listing is complete.
            return Err(shared.link.down(format!("watch cancelled: {}", resp.cancel_reason())));
        }
        if resp.events().is_empty() {
            continue;
        }
        shared.tx.send_modify(|set| {
            let set = Arc::make_mut(set);
            for event in resp.events() {
                match (event.event_type(), event.kv()) {
                    (EventType::Put, Some(kv)) => {
                        if let Some(i) = decode(kv.value()) {
                            set.insert(i.service_id.clone(), i);
                        }
                    }
                    (EventType::Delete, Some(kv)) => {
                        let id = kv.key_str().ok().and_then(|k| k.rsplit('/').next()).unwrap_or_default();
                        set.remove(id);
                    }
                    _ => {}
                }
            }
        });
    }
    Ok(())
}

fn replace(current: &mut Arc<InstanceSet>, next: InstanceSet) -> bool {
    if **current == next {
        return false;
    }
    *current = Arc::new(next);
    true
}

fn decode(value: &[u8]) -> Option<Instance> {
    serde_json::from_slice(value)
        .map_err(|e| tracing::warn!(error = %e, "ignoring an etcd record that is not an instance"))
        .ok()
}

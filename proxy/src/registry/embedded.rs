//! The embedded registry: the whole instance set in one JSON file, replaced atomically.
//!
//! Each change writes the set to a temporary file beside the data file, fsyncs it, renames it
//! over the data file and fsyncs the folder, and only then answers. A registration
//! acknowledged with 200 therefore survives `kill -9` and power loss; a crash mid-write leaves
//! the previous file whole. Registries stay small (instances, not requests), so rewriting the
//! file is cheaper and simpler than a log that needs compaction.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Mutex, watch};

use super::{BoxFuture, Instance, InstanceSet, Registry, RegistryError, RegistryStatus};

/// Instances kept in a local file.
#[derive(Debug)]
pub struct EmbeddedRegistry {
    path: PathBuf,
    /// Serialises writers, so the file and the published set change in the same order.
    write: Mutex<()>,
    tx: watch::Sender<Arc<InstanceSet>>,
}

impl EmbeddedRegistry {
    /// Opens (or creates on first write) the data file at `path`.
    pub async fn open(path: &Path) -> Result<Self, RegistryError> {
        let path = path.to_path_buf();
        let set = match tokio::fs::read(&path).await {
            Ok(bytes) if bytes.is_empty() => InstanceSet::new(),
            Ok(bytes) => serde_json::from_slice::<Vec<Instance>>(&bytes)
                .map_err(|source| RegistryError::Corrupt { path: path.clone(), source })?
                .into_iter()
                .map(|i| (i.service_id.clone(), i))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => InstanceSet::new(),
            Err(source) => return Err(RegistryError::File { path, source }),
        };
        tracing::info!(path = %path.display(), instances = set.len(), "embedded registry opened");
        Ok(Self { path, write: Mutex::new(()), tx: watch::Sender::new(Arc::new(set)) })
    }

    /// Applies `change` to a copy of the set, persists it, then publishes it.
    async fn update<T>(&self, change: impl FnOnce(&mut InstanceSet) -> T) -> Result<T, RegistryError> {
        let _writer = self.write.lock().await;
        let mut next = (**self.tx.borrow()).clone();
        let out = change(&mut next);
        let path = self.path.clone();
        let list: Vec<Instance> = next.values().cloned().collect();
        tokio::task::spawn_blocking(move || persist(&path, &list))
            .await
            .map_err(|e| RegistryError::File { path: self.path.clone(), source: std::io::Error::other(e) })??;
        self.tx.send_replace(Arc::new(next));
        Ok(out)
    }
}

impl Registry for EmbeddedRegistry {
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            self.update(|set| {
                set.insert(instance.service_id.clone(), instance);
            })
            .await
        })
    }

    fn deregister<'a>(&'a self, service_id: &'a str) -> BoxFuture<'a, Result<bool, RegistryError>> {
        Box::pin(async move {
            if !self.tx.borrow().contains_key(service_id) {
                return Ok(false);
            }
            self.update(|set| set.remove(service_id).is_some()).await
        })
    }

    fn watch(&self) -> watch::Receiver<Arc<InstanceSet>> {
        self.tx.subscribe()
    }

    fn status(&self) -> RegistryStatus {
        RegistryStatus { backend: "embedded", connected: true, last_error: None }
    }
}

/// Writes `list` to `path` durably: temp file, fsync, rename, fsync of the folder.
fn persist(path: &Path, list: &[Instance]) -> Result<(), RegistryError> {
    use std::io::Write;
    let err = |source| RegistryError::File { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let bytes = serde_json::to_vec_pretty(list).map_err(|e| err(std::io::Error::other(e)))?;
    std::fs::create_dir_all(&dir).map_err(err)?;
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(&bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn instance(port: u16) -> Instance {
        Instance {
            service_id: Instance::id_for("users", "127.0.0.1", port),
            service_name: "users".into(),
            address: "127.0.0.1".into(),
            port,
            endpoint: format!("127.0.0.1:{port}").parse().expect("addr"),
            tags: vec!["v1".into()],
            metadata: BTreeMap::new(),
            weight: 2,
            health_check: None,
            ttl_seconds: None,
            registered_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn registrations_survive_reopening_and_deregistration_is_durable_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The folder is created on first write.
        let path = dir.path().join("state").join("registry.json");
        let reg = EmbeddedRegistry::open(&path).await.expect("open");
        reg.register(instance(1)).await.expect("register");
        reg.register(instance(2)).await.expect("register");
        assert!(reg.deregister("users-127.0.0.1-1").await.expect("deregister"));
        assert!(!reg.deregister("users-127.0.0.1-1").await.expect("deregister again"));
        drop(reg);

        let reopened = EmbeddedRegistry::open(&path).await.expect("reopen");
        let set = reopened.watch().borrow().clone();
        assert_eq!(set.keys().collect::<Vec<_>>(), ["users-127.0.0.1-2"]);
        assert_eq!(set["users-127.0.0.1-2"], instance(2));
    }

    #[tokio::test]
    async fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("registry.json");
        std::fs::write(&path, b"{not json").expect("write");
        let err = EmbeddedRegistry::open(&path).await.expect_err("corrupt");
        assert!(err.to_string().contains("registry.json"), "{err}");
    }
}

//! The mesh: the current snapshot behind an `ArcSwap`, and the state beside it.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::plugin::PluginError;
use crate::snapshot::{self, Carried, Snapshot};
use crate::telemetry::Metrics;

/// Shared by every listener, the admin API and the reloader.
#[derive(Debug)]
pub struct Mesh {
    current: ArcSwap<Snapshot>,
    /// Only touched while a snapshot is built; the request path never locks it.
    carried: Mutex<(u64, Carried)>,
    /// Metric families.
    pub metrics: Metrics,
}

impl Mesh {
    /// Builds the first snapshot from `config`.
    pub fn new(config: Config) -> Result<Arc<Self>, PluginError> {
        let metrics = Metrics::new();
        let mut carried = Carried::default();
        let first = snapshot::build(Arc::new(config), 1, &mut carried, &metrics)?;
        Ok(Arc::new(Self { current: ArcSwap::from_pointee(first), carried: Mutex::new((1, carried)), metrics }))
    }

    /// The snapshot in force, for a request to hold until it finishes.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Builds a snapshot from `config` and makes it current in one store. Returns its version;
    /// on error the current snapshot stays.
    pub fn apply(&self, config: Config) -> Result<u64, PluginError> {
        // A poisoned lock only means an earlier build panicked; the carried maps are still whole.
        let mut guard = self.carried.lock().unwrap_or_else(|e| e.into_inner());
        let (version, carried) = &mut *guard;
        let next = snapshot::build(Arc::new(config), *version + 1, carried, &self.metrics)?;
        *version += 1;
        self.current.store(Arc::new(next));
        Ok(*version)
    }
}

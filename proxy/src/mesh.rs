//! The mesh: the current snapshot behind an `ArcSwap`, the inputs it was built from, and the
//! state that outlives snapshots.
//!
//! A snapshot is a function of four inputs: the configuration, the loaded plugins, the
//! certificates and schemas, and the registered instances. Changing any one rebuilds the snapshot off the request path and
//! swaps it in one store; requests in flight finish on the one they loaded.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::health::HealthSupervisor;
use crate::plugin::{self, HookCounters, PluginCounters, PluginError};
use crate::registry::InstanceSet;
use crate::snapshot::{self, Carried, Snapshot};
pub use crate::snapshot::{Assets, LoadError, LoadedPlugin};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{PluginHookLabels, PluginLabels};

/// Shared by every listener, the admin API and the reloader.
#[derive(Debug)]
pub struct Mesh {
    current: ArcSwap<Snapshot>,
    /// Only touched while a snapshot is built; the request path never locks it.
    inputs: Mutex<Inputs>,
    health: HealthSupervisor,
    /// Metric families.
    pub metrics: Metrics,
}

#[derive(Debug)]
struct Inputs {
    version: u64,
    carried: Carried,
    config: Arc<Config>,
    plugins: Arc<[LoadedPlugin]>,
    assets: Arc<Assets>,
    instances: Arc<InstanceSet>,
}

impl Mesh {
    /// Builds the first snapshot from `config`, with no registered instances yet.
    pub fn new(config: Config) -> Result<Arc<Self>, LoadError> {
        let metrics = Metrics::new();
        let plugins: Arc<[LoadedPlugin]> = load_plugins(&config, &[], &metrics)?.into();
        let assets = Arc::new(Assets::load(&config)?);
        let config = Arc::new(config);
        let instances = Arc::new(InstanceSet::new());
        let mut carried = Carried::default();
        let first = snapshot::build(config.clone(), &plugins, &assets, &instances, 1, &mut carried, &metrics);
        let inputs = Inputs { version: 1, carried, config, plugins, assets, instances };
        let mesh = Arc::new(Self {
            current: ArcSwap::from_pointee(first),
            inputs: Mutex::new(inputs),
            health: HealthSupervisor::default(),
            metrics,
        });
        mesh.start_checks();
        Ok(mesh)
    }

    /// The snapshot in force, for a request to hold until it finishes.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The plugins in force.
    pub fn plugins(&self) -> Arc<[LoadedPlugin]> {
        self.lock().plugins.clone()
    }

    /// Loads `config`'s plugins (reusing unchanged ones), certificates and schemas, builds a snapshot
    /// from them and makes it current in one store. Returns its version; on error the current
    /// snapshot stays. Compiles plugins: call it on a blocking thread.
    pub fn apply(&self, config: Config) -> Result<u64, LoadError> {
        let previous = self.plugins();
        let plugins: Arc<[LoadedPlugin]> = load_plugins(&config, &previous, &self.metrics)?.into();
        let assets = Arc::new(Assets::load(&config)?);
        Ok(self.rebuild(|inputs| {
            inputs.config = Arc::new(config);
            inputs.plugins = plugins;
            inputs.assets = assets;
        }))
    }

    /// Rebuilds the snapshot with a new set of registered instances.
    pub fn set_instances(&self, instances: Arc<InstanceSet>) -> u64 {
        self.rebuild(|inputs| inputs.instances = instances)
    }

    /// Stops every active health check (on shutdown).
    pub fn stop_checks(&self) {
        self.health.stop_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inputs> {
        // A poisoned lock only means an earlier build panicked; the inputs are still whole.
        self.inputs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rebuild(&self, change: impl FnOnce(&mut Inputs)) -> u64 {
        let mut inputs = self.lock();
        change(&mut inputs);
        let Inputs { version, carried, config, plugins, assets, instances } = &mut *inputs;
        *version += 1;
        let next = snapshot::build(config.clone(), plugins, assets, instances, *version, carried, &self.metrics);
        self.current.store(Arc::new(next));
        drop(inputs);
        self.start_checks();
        self.snapshot().version
    }

    /// Matches the running health checks to the current snapshot (outside a runtime, as in
    /// benchmarks, there is nothing to run them on).
    fn start_checks(&self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.health.reconcile(&self.snapshot(), &self.metrics);
        }
    }
}

/// Loads every plugin `config` lists, reusing a `previous` one when its settings and file are
/// unchanged. Fails whole on the first plugin that cannot load.
fn load_plugins(
    config: &Config,
    previous: &[LoadedPlugin],
    metrics: &Metrics,
) -> Result<Vec<LoadedPlugin>, PluginError> {
    config
        .plugins
        .iter()
        .map(|cfg| {
            let bytes = std::fs::read(&cfg.path).map_err(|e| PluginError::new(cfg, format!("cannot read: {e}")))?;
            let hash = xxhash_rust::xxh3::xxh3_64(&bytes);
            if let Some(same) = previous.iter().find(|p| p.hash == hash && p.config == *cfg) {
                return Ok(same.clone());
            }
            let labels = PluginLabels { plugin: cfg.name.clone() };
            let counters = PluginCounters {
                failures: metrics.plugin_failures.get_or_create_owned(&labels),
                instances: metrics.plugin_instances.get_or_create_owned(&labels),
                hooks: cfg
                    .kind
                    .hooks()
                    .iter()
                    .map(|&hook| {
                        let labels = PluginHookLabels { plugin: cfg.name.clone(), hook };
                        HookCounters {
                            calls: metrics.plugin_calls.get_or_create_owned(&labels),
                            durations: metrics.plugin_call_duration.get_or_create_owned(&labels),
                        }
                    })
                    .collect(),
            };
            let plugin = plugin::load(cfg, &bytes, &metrics.plugin_families, counters)?;
            Ok(LoadedPlugin { config: cfg.clone(), hash, plugin })
        })
        .collect()
}

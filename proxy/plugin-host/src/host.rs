//! What a plugin instance may reach: logging and metrics under its name, and a WASI context
//! that grants nothing (no files, sockets, environment or arguments, and a frozen clock).

use std::sync::Arc;
use std::time::Duration;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::router::wasmesh::plugin::{log, metrics};
use wasmesh_telemetry::metrics::{PluginMetricFamilies, PluginMetricLabels};

/// Per-store state of a plugin instance.
pub struct HostState {
    plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory cap, enforced by the store's limiter.
    pub limits: StoreLimits,
    families: PluginMetricFamilies,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState").field("plugin", &self.plugin).finish_non_exhaustive()
    }
}

impl HostState {
    /// State for an instance of `plugin` capped at `memory_bytes` of linear memory.
    pub fn new(plugin: Arc<str>, memory_bytes: usize, families: PluginMetricFamilies) -> Self {
        let wasi = WasiCtx::builder().wall_clock(FrozenClock).monotonic_clock(FrozenClock).build();
        let limits = wasmtime::StoreLimitsBuilder::new().memory_size(memory_bytes).instances(4).build();
        Self { plugin, wasi, table: ResourceTable::new(), limits, families }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A clock that always reads zero: plugins get no time source unless one is granted.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let plugin = &*self.plugin;
        match level {
            log::Level::Trace => tracing::trace!(target: "wasmesh::plugin", plugin, "{message}"),
            log::Level::Debug => tracing::debug!(target: "wasmesh::plugin", plugin, "{message}"),
            log::Level::Info => tracing::info!(target: "wasmesh::plugin", plugin, "{message}"),
            log::Level::Warn => tracing::warn!(target: "wasmesh::plugin", plugin, "{message}"),
            log::Level::Error => tracing::error!(target: "wasmesh::plugin", plugin, "{message}"),
        }
    }
}

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, value: u64) {
        let labels = PluginMetricLabels { plugin: self.plugin.to_string(), name };
        self.families.counters.get_or_create(&labels).inc_by(value);
    }

    fn histogram_record(&mut self, name: String, value: u64) {
        let labels = PluginMetricLabels { plugin: self.plugin.to_string(), name };
        self.families.histograms.get_or_create(&labels).observe(Duration::from_micros(value));
    }
}

impl super::bindings::router::wasmesh::plugin::types::Host for HostState {}

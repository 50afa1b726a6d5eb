//! A plugin's pool of warm instances, and calls on them under its limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use wasmesh_config::FailMode;
use wasmesh_telemetry::metrics::PluginMetricFamilies;
use wasmtime::Store;

use crate::counters::{PluginCounters, time_this_call};
use crate::engine::{Limits, TICKS_PER_SECOND, contained, engine};
use crate::world::World;
use crate::{HeaderInterest, HostState, types};

/// Warm instances kept per plugin.
pub(crate) const POOL_SIZE: usize = 256;

/// A warm instance of world `W`.
pub struct Instance<W: World> {
    store: Store<HostState>,
    bindings: W::Bindings,
}

impl<W: World> std::fmt::Debug for Instance<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").finish_non_exhaustive()
    }
}

/// Everything shared by plugins of every kind.
pub struct Common<W: World> {
    pub(crate) name: Arc<str>,
    pub(crate) pre: W::Pre,
    pub(crate) config_json: String,
    pub(crate) limits: Limits,
    pub(crate) idle: ArrayQueue<Instance<W>>,
    pub(crate) families: PluginMetricFamilies,
    pub(crate) counters: PluginCounters,
    /// Headers passed to the plugin.
    pub(crate) headers: HeaderInterest,
    /// The filter hooks the plugin asked for.
    pub(crate) hooks: types::Hooks,
    /// What a failure means for the request.
    pub fail: FailMode,
    /// Status answered when failing closed.
    pub fail_status: u16,
    pub(crate) logged_failure: AtomicBool,
}

impl<W: World> std::fmt::Debug for Common<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.name).field("idle", &self.idle.len()).finish()
    }
}

/// A call that failed.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}` failed: {reason}")]
pub struct CallError {
    /// Plugin name.
    pub plugin: Arc<str>,
    /// Trap, deadline or limit message.
    pub reason: String,
}

impl<W: World> Common<W> {
    /// A fresh instance with `init` already run on the plugin's configuration, and what the
    /// plugin answered it needs.
    pub(crate) fn instantiate(&self) -> Result<(Instance<W>, types::Interest), String> {
        let mut store =
            Store::new(engine(), HostState::new(self.name.clone(), self.limits.memory_bytes, self.families.clone()));
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.limits.deadline_ticks.max(TICKS_PER_SECOND));
        let bindings = contained(|| W::instantiate(&self.pre, &mut store))?;
        let interest = contained(|| W::init(&bindings, &mut store, &self.config_json))
            .map_err(|e| format!("init trapped: {e}"))?
            .map_err(|msg| format!("init rejected the config: {msg}"))?;
        self.counters.instances.inc();
        Ok((Instance { store, bindings }, interest))
    }

    /// Runs `f` on a warm instance under the call deadline, counted (and, one call in
    /// [`TIMED_CALL_EVERY`](crate::TIMED_CALL_EVERY), timed) as hook number `hook`; a failed instance is dropped.
    pub(crate) fn call<R>(
        &self,
        hook: usize,
        f: impl FnOnce(&W::Bindings, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let Some(counters) = self.counters.hooks.get(hook) else { return self.call_untimed(f) };
        counters.calls.inc();
        if !time_this_call() {
            return self.call_untimed(f);
        }
        let started = Instant::now();
        let result = self.call_untimed(f);
        counters.durations.observe(started.elapsed());
        result
    }

    fn call_untimed<R>(
        &self,
        f: impl FnOnce(&W::Bindings, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let mut inst = match self.idle.pop() {
            Some(i) => i,
            None => self.instantiate().map_err(|e| self.failed(e))?.0,
        };
        inst.store.set_epoch_deadline(self.limits.deadline_ticks);
        match contained(|| f(&inst.bindings, &mut inst.store)) {
            Ok(r) => {
                let _ = self.idle.push(inst);
                Ok(r)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    fn failed(&self, reason: String) -> CallError {
        self.counters.failures.inc();
        // One warning per plugin version is enough; later failures are counted and debug-logged.
        if !self.logged_failure.swap(true, Ordering::Relaxed) {
            tracing::warn!(plugin = %self.name, %reason, "plugin call failed; instance replaced");
        } else {
            tracing::debug!(plugin = %self.name, %reason, "plugin call failed; instance replaced");
        }
        CallError { plugin: self.name.clone(), reason }
    }

    /// The headers passed to this plugin.
    pub fn header_interest(&self) -> &HeaderInterest {
        &self.headers
    }

    /// Whether the plugin asked for `hook` to be called (filters; other kinds have one hook).
    pub fn wants(&self, hook: types::Hooks) -> bool {
        self.hooks.contains(hook)
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

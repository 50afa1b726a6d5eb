//! Wasm plugins: components implementing a world of `wit/plugin.wit`, compiled once per load,
//! kept warm in a pool of instances, and called under an epoch deadline and a memory cap.
//!
//! A plugin that traps, loops past its deadline or exceeds its memory is a failure of that
//! call only: its instance is dropped (the next call gets a fresh one), the failure is counted
//! and logged, and the request gets the plugin's failure mode (`fail = "open"` skips the
//! plugin, `"closed"` answers with `fail_status`). The proxy never goes down with a plugin.

#![deny(missing_docs)]

mod bindings;
mod counters;
mod engine;
pub mod fixture;
mod head;
mod host;
mod kinds;
mod pool;
mod world;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crossbeam_queue::ArrayQueue;
use wasmesh_config::{PluginConfig, PluginKind};
use wasmesh_telemetry::metrics::PluginMetricFamilies;
use wasmtime::component::{Component, HasSelf, Linker};

use balancer_world::BalancerPre;
pub use bindings::types;
use bindings::{
    balancer as balancer_world, filter as filter_world, health_check as health_world, router as router_world,
};
pub use counters::{HookCalls, HookCounters, PluginCounters, TIMED_CALL_EVERY};
pub use engine::engine;
use engine::{Limits, TICKS_PER_SECOND};
use filter_world::FilterPre;
pub use head::{Change, Changes, HeaderInterest, MalformedChanges, RequestView, ResponseView, changes, pack_change};
use health_world::HealthCheckPre;
pub use host::HostState;
pub use kinds::{BalancerPlugin, FilterPlugin, HealthCheckPlugin, PackedRequest, RouterPlugin};
use pool::POOL_SIZE;
pub use pool::{CallError, Common, Instance};
use router_world::RouterPre;
pub use world::{BalancerWorld, FilterWorld, HealthCheckWorld, RouterWorld, World};

/// A plugin that could not be loaded; the message names the plugin, its kind and file.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{name}` ({kind}, {path}): {reason}")]
pub struct PluginError {
    /// Plugin name.
    pub name: String,
    /// Its kind.
    pub kind: &'static str,
    /// Its file.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// A loaded plugin of any kind; cloning shares it.
#[derive(Debug, Clone)]
pub enum Plugin {
    /// A router.
    Router(Arc<RouterPlugin>),
    /// A filter.
    Filter(Arc<FilterPlugin>),
    /// A balancer.
    Balancer(Arc<BalancerPlugin>),
    /// A health check.
    HealthCheck(Arc<HealthCheckPlugin>),
}

/// The headers passed to a plugin: those it declared (`None`: all), narrowed to the ones its
/// TOML entry allows when that lists any.
fn passed_headers(declared: Option<Vec<String>>, allowed: &[String]) -> Option<Vec<String>> {
    let allowed: Vec<String> = allowed.iter().map(|h| h.to_ascii_lowercase()).collect();
    match declared {
        None if allowed.is_empty() => None,
        None => Some(allowed),
        Some(mut names) => {
            names.iter_mut().for_each(|h| h.make_ascii_lowercase());
            if !allowed.is_empty() {
                names.retain(|h| allowed.contains(h));
            }
            Some(names)
        }
    }
}

impl PluginError {
    /// An error about the plugin `cfg` describes.
    pub fn new(cfg: &PluginConfig, reason: String) -> Self {
        Self { name: cfg.name.clone(), kind: cfg.kind.as_str(), path: cfg.path.display().to_string(), reason }
    }
}

/// Links and initialises the plugin `cfg` describes from the component `bytes` (the contents
/// of `cfg.path`). Compiles the component: call it off the request path.
pub fn load(
    cfg: &PluginConfig,
    bytes: &[u8],
    families: &PluginMetricFamilies,
    counters: PluginCounters,
) -> Result<Plugin, PluginError> {
    let err = |reason: String| PluginError::new(cfg, reason);
    let component = Component::new(engine(), bytes).map_err(|e| err(format!("not a valid component: {e:#}")))?;
    let mut linker: Linker<HostState> = Linker::new(engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| err(format!("{e:#}")))?;
    let config_json = serde_json::to_string(&cfg.config).map_err(|e| err(format!("config: {e}")))?;
    let limits = Limits {
        deadline_ticks: (cfg.timeout.as_micros() as u64 * TICKS_PER_SECOND).div_ceil(1_000_000).max(1) + 1,
        memory_bytes: cfg.memory_limit_mib * 1024 * 1024,
    };
    let world = cfg.kind.world();
    let world_err = |e: wasmtime::Error| err(format!("does not implement the `{world}` world: {e:#}"));
    // Links the world's imports, checks the component against its exports, and creates one
    // instance now: it proves the component links and that `init` accepts the config.
    macro_rules! load_world {
        ($bindings:ty, $pre:ident, $variant:ident) => {{
            <$bindings>::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                .map_err(|e| err(format!("{e:#}")))?;
            let pre = linker.instantiate_pre(&component).map_err(world_err)?;
            let pre = $pre::new(pre).map_err(world_err)?;
            let mut plugin = Common {
                name: Arc::from(cfg.name.as_str()),
                pre,
                config_json,
                limits,
                idle: ArrayQueue::new(POOL_SIZE),
                families: families.clone(),
                counters,
                headers: HeaderInterest::All,
                hooks: types::Hooks::all(),
                fail: cfg.fail,
                fail_status: cfg.fail_status,
                logged_failure: AtomicBool::new(false),
            };
            let (first, interest) = plugin.instantiate().map_err(err)?;
            plugin.headers = HeaderInterest::new(passed_headers(interest.headers, &cfg.headers).as_deref());
            plugin.hooks = interest.hooks;
            let _ = plugin.idle.push(first);
            Ok(Plugin::$variant(Arc::new(plugin)))
        }};
    }
    match cfg.kind {
        PluginKind::Router => load_world!(router_world::Router, RouterPre, Router),
        PluginKind::Filter => load_world!(filter_world::Filter, FilterPre, Filter),
        PluginKind::Balancer => load_world!(balancer_world::Balancer, BalancerPre, Balancer),
        PluginKind::HealthCheck => load_world!(health_world::HealthCheck, HealthCheckPre, HealthCheck),
    }
}

#[cfg(test)]
mod tests {
    use super::passed_headers;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_plugin_sees_what_it_declared_narrowed_by_its_toml_entry() {
        assert_eq!(passed_headers(None, &[]), None, "nothing declared, nothing narrowed: all headers");
        assert_eq!(passed_headers(None, &names(&["X-A"])), Some(names(&["x-a"])));
        assert_eq!(passed_headers(Some(names(&["X-A", "x-b"])), &[]), Some(names(&["x-a", "x-b"])));
        assert_eq!(passed_headers(Some(names(&["x-a", "x-b"])), &names(&["x-b", "x-c"])), Some(names(&["x-b"])));
        assert_eq!(passed_headers(Some(vec![]), &names(&["x-a"])), Some(vec![]), "a plugin that reads none gets none");
    }
}

//! Wasm plugins: components implementing a world of `wit/plugin.wit`, compiled once per load,
//! kept warm in a pool of instances, and called under an epoch deadline and a memory cap.
//!
//! A plugin that traps, loops past its deadline or exceeds its memory is a failure of that
//! call only: its instance is dropped (the next call gets a fresh one), the failure is counted
//! and logged, and the request gets the plugin's failure mode (`fail = "open"` skips the
//! plugin, `"closed"` answers with `fail_status`). The proxy never goes down with a plugin.

mod bindings;
pub mod fixture;
mod head;
mod host;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use prometheus_client::metrics::counter::Counter;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

use balancer_world::BalancerPre;
pub use bindings::types;
use bindings::{
    balancer as balancer_world, filter as filter_world, health_check as health_world, router as router_world,
};
use filter_world::FilterPre;
use head::with_scratch;
pub use head::{Change, Changes, HeaderInterest, MalformedChanges, RequestView, ResponseView, changes, pack_change};
use health_world::HealthCheckPre;
pub use host::HostState;
use router_world::RouterPre;
use wasmesh_telemetry::metrics::PluginMetricFamilies;

use wasmesh_config::{FailMode, PluginConfig, PluginKind};
use wasmesh_telemetry::histogram::DurationHistogram;

/// Epoch ticks per second: a plugin's deadline is counted in these, so a call that overruns
/// is stopped within its timeout plus up to two ticks (20 ms). Not finer: the ticker thread
/// wakes on every tick, and a 1 kHz sleeper pinned beside a plugin-free wasmesh cost it 4%
/// and 13% of its throughput in two interleaved runs on the benchmark machine (medians of
/// 6 and 5 pairs), where a 100 Hz one cost nothing measurable.
const TICKS_PER_SECOND: u64 = 100;
/// Warm instances kept per plugin.
const POOL_SIZE: usize = 256;

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

/// The shared wasmtime engine, with epoch interruption driven by a background ticker.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("the wasmtime configuration is valid");
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("wasmesh-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_micros(1_000_000 / TICKS_PER_SECOND));
                    ticker.increment_epoch();
                }
            })
            .expect("spawn the epoch ticker");
        engine
    })
}

/// What calling a plugin may cost it.
#[derive(Debug, Clone)]
struct Limits {
    deadline_ticks: u64,
    memory_bytes: usize,
}

/// Counters of one plugin.
#[derive(Debug, Clone, Default)]
pub struct PluginCounters {
    /// Calls that failed (trap, deadline, memory).
    pub failures: Counter,
    /// Instances created.
    pub instances: Counter,
    /// One entry per hook of the world (see `PluginKind::hooks`).
    pub hooks: Vec<HookCounters>,
}

/// Counters of one hook of a plugin.
#[derive(Debug, Clone, Default)]
pub struct HookCounters {
    /// Every call.
    pub calls: Counter,
    /// Durations of the sampled calls (see [`TIMED_CALL_EVERY`]).
    pub durations: DurationHistogram,
}

/// One plugin call in this many, counted per worker thread across plugins, is timed: two clock
/// reads and their difference cost ~170 instructions a call (callgrind, this machine's
/// virtual clock), a sixth of the host's side of a hook. Prime, so that whatever number of hooks
/// (up to six) a route calls per request, each takes its turn at being timed.
pub const TIMED_CALL_EVERY: u32 = 7;

thread_local! {
    /// Plugin calls made on this thread, modulo [`TIMED_CALL_EVERY`].
    static CALLS_UNTIL_TIMED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this thread's next plugin call is one to time.
fn time_this_call() -> bool {
    CALLS_UNTIL_TIMED.with(|n| {
        let left = n.get();
        n.set(if left == 0 { TIMED_CALL_EVERY - 1 } else { left - 1 });
        left == 0
    })
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

/// A plugin world as the host drives it: how to instantiate it and call its `init`.
pub trait World {
    /// The pre-linked component.
    type Pre;
    /// The instantiated bindings.
    type Bindings;
    /// Instantiates `pre` in `store`.
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self::Bindings>;
    /// Calls the instance's `init` with its configuration.
    fn init(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<types::Interest, String>>;
}

/// Declares a [`World`] for generated bindings `$bindings` (with pre-instance `$pre`).
macro_rules! world {
    ($(#[$doc:meta])* $name:ident, $bindings:ty, $pre:ty) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl World for $name {
            type Pre = $pre;
            type Bindings = $bindings;
            fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self::Bindings> {
                pre.instantiate(store)
            }
            fn init(
                b: &Self::Bindings,
                store: &mut Store<HostState>,
                config: &str,
            ) -> wasmtime::Result<Result<types::Interest, String>> {
                b.wasmesh_plugin_lifecycle().call_init(store, config)
            }
        }
    };
}

world!(
    /// The `router` world.
    RouterWorld, router_world::Router, router_world::RouterPre<HostState>
);
world!(
    /// The `filter` world.
    FilterWorld, filter_world::Filter, filter_world::FilterPre<HostState>
);
world!(
    /// The `balancer` world.
    BalancerWorld, balancer_world::Balancer, balancer_world::BalancerPre<HostState>
);
world!(
    /// The `health-check` world.
    HealthCheckWorld, health_world::HealthCheck, health_world::HealthCheckPre<HostState>
);

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
    name: Arc<str>,
    pre: W::Pre,
    config_json: String,
    limits: Limits,
    idle: ArrayQueue<Instance<W>>,
    families: PluginMetricFamilies,
    counters: PluginCounters,
    /// Headers passed to the plugin.
    headers: HeaderInterest,
    /// The filter hooks the plugin asked for.
    hooks: types::Hooks,
    /// What a failure means for the request.
    pub fail: FailMode,
    /// Status answered when failing closed.
    pub fail_status: u16,
    logged_failure: AtomicBool,
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
    fn instantiate(&self) -> Result<(Instance<W>, types::Interest), String> {
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
    /// [`TIMED_CALL_EVERY`], timed) as hook number `hook`; a failed instance is dropped.
    fn call<R>(
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

/// A router plugin.
pub type RouterPlugin = Common<RouterWorld>;
/// A filter plugin.
pub type FilterPlugin = Common<FilterWorld>;
/// A balancer plugin.
pub type BalancerPlugin = Common<BalancerWorld>;
/// A health-check plugin.
pub type HealthCheckPlugin = Common<HealthCheckWorld>;

impl RouterPlugin {
    /// Decides where `req` goes.
    pub fn route(&self, req: &RequestView<'_>) -> Result<types::RouteDecision, CallError> {
        with_scratch(|buf| {
            req.encode(&self.headers, buf);
            self.call(0, |b, store| b.call_route(store, buf))
        })
    }
}

impl FilterPlugin {
    /// The filter's decision on a request.
    pub fn on_request(&self, req: &RequestView<'_>) -> Result<types::FilterAction, CallError> {
        with_scratch(|buf| {
            req.encode(&self.headers, buf);
            self.call(0, |b, store| b.call_on_request(store, buf))
        })
    }

    /// The filter's decision on a response.
    pub fn on_response(
        &self,
        req: &RequestView<'_>,
        resp: &ResponseView<'_>,
    ) -> Result<types::FilterAction, CallError> {
        with_scratch(|buf| {
            resp.encode(req, &self.headers, buf);
            self.call(1, |b, store| b.call_on_response(store, buf))
        })
    }
}

/// A request packed once for a balancer, which may be asked again on a retry.
#[derive(Debug)]
pub struct PackedRequest(Vec<u8>);

impl BalancerPlugin {
    /// Packs `req` as this balancer is passed it.
    pub fn pack(&self, req: &RequestView<'_>) -> PackedRequest {
        let mut buf = Vec::new();
        req.encode(&self.headers, &mut buf);
        PackedRequest(buf)
    }

    /// The index into `candidates` of the endpoint `req` should go to; `None` declines.
    pub fn pick(&self, req: &PackedRequest, candidates: &[types::Endpoint]) -> Result<Option<u32>, CallError> {
        self.call(0, |b, store| b.call_pick(store, &req.0, candidates))
    }
}

impl HealthCheckPlugin {
    /// The plugin's verdict on `target` given its probe response.
    pub fn judge(&self, target: &types::Endpoint, probe: &types::ProbeResponse) -> Result<types::Health, CallError> {
        self.call(0, |b, store| b.call_judge(store, target, probe))
    }
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

/// Runs plugin hooks on behalf of one request. The request's observer implements it, so that
/// each call a traced request makes becomes an event of its span, whichever module makes it.
pub trait HookCalls {
    /// Runs `call`, hook `hook` of plugin `plugin`, and returns what it returned.
    fn plugin_call<R>(&mut self, plugin: &str, hook: &'static str, call: impl FnOnce() -> R) -> R;
}

/// Runs a plugin call so that nothing it does can unwind into the proxy: a trap is an error,
/// and so is a panic in a host function it called (for instance WASI stdio, which plugins are
/// not granted: its blocking calls cannot run on a proxy worker thread).
fn contained<R>(call: impl FnOnce() -> wasmtime::Result<R>) -> Result<R, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "host function panicked".into());
            Err(format!("host call failed: {}", what.lines().next().unwrap_or_default()))
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

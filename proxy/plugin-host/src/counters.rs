//! What a plugin's calls are counted and timed by, and the trait through which a request
//! makes them.

use prometheus_client::metrics::counter::Counter;
use wasmesh_telemetry::histogram::DurationHistogram;

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
pub(crate) fn time_this_call() -> bool {
    CALLS_UNTIL_TIMED.with(|n| {
        let left = n.get();
        n.set(if left == 0 { TIMED_CALL_EVERY - 1 } else { left - 1 });
        left == 0
    })
}

/// Runs plugin hooks on behalf of one request. The request's observer implements it, so that
/// each call a traced request makes becomes an event of its span, whichever module makes it.
pub trait HookCalls {
    /// Runs `call`, hook `hook` of plugin `plugin`, and returns what it returned.
    fn plugin_call<R>(&mut self, plugin: &str, hook: &'static str, call: impl FnOnce() -> R) -> R;
}

//! The one wasmtime engine, its epoch ticker, and the limits a call runs under.

use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::Engine;

/// Epoch ticks per second: a plugin's deadline is counted in these, so a call that overruns
/// is stopped within its timeout plus up to two ticks (20 ms). Not finer: the ticker thread
/// wakes on every tick, and a 1 kHz sleeper pinned beside a plugin-free wasmesh cost it 4%
/// and 13% of its throughput in two interleaved runs on the benchmark machine (medians of
/// 6 and 5 pairs), where a 100 Hz one cost nothing measurable.
pub(crate) const TICKS_PER_SECOND: u64 = 100;
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
pub(crate) struct Limits {
    /// Epoch ticks a call may run.
    pub(crate) deadline_ticks: u64,
    /// Linear memory an instance may grow to.
    pub(crate) memory_bytes: usize,
}

/// Runs a plugin call so that nothing it does can unwind into the proxy: a trap is an error,
/// and so is a panic in a host function it called (for instance WASI stdio, which plugins are
/// not granted: its blocking calls cannot run on a proxy worker thread).
pub(crate) fn contained<R>(call: impl FnOnce() -> wasmtime::Result<R>) -> Result<R, String> {
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

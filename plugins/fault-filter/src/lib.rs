//! A filter that misbehaves on purpose, to prove the host contains it. Config:
//! `{ mode = "trap" | "loop" | "alloc" | "stdout" | "ok", every = N }`: misbehave on every N-th request
//! (1 = always); otherwise answer `proceed` with an `x-fault-filter: ok` header. The default
//! mode is `ok`, so an empty config makes a well-behaved filter (the reload tests swap it in).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmesh_plugin_sdk::Changes;
use wasmesh_plugin_sdk::filter::exports::wasmesh::plugin::lifecycle;
use wasmesh_plugin_sdk::filter::{FilterAction, Guest, Hooks, Interest, RequestHead, ResponseHead};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "ok")]
    mode: String,
    #[serde(default = "one")]
    every: u64,
}

fn ok() -> String {
    "ok".to_owned()
}

fn one() -> u64 {
    1
}

static CONFIG: OnceLock<Config> = OnceLock::new();
static CALLS: AtomicU64 = AtomicU64::new(0);

struct Fault;

impl lifecycle::Guest for Fault {
    fn init(config_json: String) -> Result<Interest, String> {
        wasmesh_plugin_sdk::init_panic_hook();
        let config: Config = serde_json::from_str(&config_json).map_err(|e| format!("config: {e}"))?;
        if !["trap", "loop", "alloc", "stdout", "ok"].contains(&config.mode.as_str()) {
            return Err(format!("config.mode: unknown mode `{}`", config.mode));
        }
        let _ = CONFIG.set(config);
        Ok(Interest::headers::<String>([]).hooks(Hooks::ON_REQUEST))
    }
}

impl Guest for Fault {
    fn on_request(_req: RequestHead) -> FilterAction {
        let cfg = CONFIG.get().expect("init ran");
        let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(cfg.every.max(1)) {
            match cfg.mode.as_str() {
                "trap" => unreachable!("fault-filter: trap on purpose"),
                "loop" => {
                    let mut x = 0u64;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                // Plugins have no stdio: the host must contain this, not crash.
                "stdout" => println!("fault-filter writes to stdout"),
                "alloc" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                _ => {}
            }
        }
        FilterAction::Mutate(Changes::new().set("x-fault-filter", "ok").into())
    }

    fn on_response(_resp: ResponseHead) -> FilterAction {
        FilterAction::Proceed
    }
}

wasmesh_plugin_sdk::filter::export_filter!(Fault with_types_in wasmesh_plugin_sdk::filter);

//! A filter that misbehaves on purpose, to prove the host contains it. Config:
//! `{ mode = "trap" | "loop" | "alloc" | "stdout" | "ok", every = N }`: misbehave on every N-th request
//! (1 = always); otherwise answer `proceed` with an `x-fault-filter: ok` header. The default
//! mode is `ok`, so an empty config makes a well-behaved filter (the reload tests swap it in).

use wasmesh_plugin_sdk::{Changes, Filter, FilterAction, Hooks, Interest, Request};

#[derive(serde::Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Trap,
    Loop,
    Alloc,
    Stdout,
    #[default]
    Ok,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Fault {
    #[serde(default)]
    mode: Mode,
    #[serde(default = "one")]
    every: u64,
    /// Calls into this instance.
    #[serde(skip)]
    calls: u64,
}

fn one() -> u64 {
    1
}

impl Filter for Fault {
    type Config = Self;

    fn new(config: Self) -> Result<Self, String> {
        Ok(config)
    }

    fn interest(&self) -> Interest {
        Interest::no_headers().hooks(Hooks::ON_REQUEST)
    }

    fn on_request(&mut self, _req: &Request) -> FilterAction {
        self.calls += 1;
        if self.calls.is_multiple_of(self.every.max(1)) {
            match self.mode {
                Mode::Trap => unreachable!("fault-filter: trap on purpose"),
                Mode::Loop => {
                    let mut x = 0u64;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                // Plugins have no stdio: the host must contain this, not crash.
                Mode::Stdout => println!("fault-filter writes to stdout"),
                Mode::Alloc => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                Mode::Ok => {}
            }
        }
        FilterAction::Mutate(Changes::new().set("x-fault-filter", "ok").into())
    }
}

wasmesh_plugin_sdk::export!(Fault);

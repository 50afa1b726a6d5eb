//! The `wasmesh` command: run the proxy, or check a configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wasmesh::config::{self, LogFormat};
use wasmesh::server::{Server, termination_signal};
use wasmesh::telemetry::logging;

/// mimalloc instead of the system allocator: the request path allocates and frees small blocks
/// all the time, and mimalloc's per-thread free lists serve them in fewer instructions.
#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

/// mimalloc, asked for plain `mi_malloc` when every mimalloc block is aligned enough (8 bytes,
/// the word size). The `mimalloc` crate always calls `mi_malloc_aligned`, whose fast path
/// covers blocks under 1 KiB only: above that it over-allocates and marks the page as holding
/// interior pointers, which slows its frees too. A header map's buckets are such a block,
/// allocated several times per request.
struct Allocator;

/// The alignment of every block mimalloc hands out.
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: each call goes to mimalloc, which returns blocks aligned to at least `WORD` from its
// plain functions and to `layout.align()` from its aligned ones; `mi_free` frees either kind.
unsafe impl std::alloc::GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: as above.
            unsafe { libmimalloc_sys::mi_malloc(layout.size()).cast() }
        } else {
            // SAFETY: as above.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: as above.
            unsafe { libmimalloc_sys::mi_zalloc(layout.size()).cast() }
        } else {
            // SAFETY: as above.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: `ptr` came from this allocator; the new block keeps the word alignment.
            unsafe { libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast() }
        } else {
            // SAFETY: as above.
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

#[derive(Parser)]
#[command(name = "wasmesh", version, about = "A service-mesh data plane programmed with WebAssembly")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Log format; overrides `log.format` in the file.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Validate a configuration file, and the certificates and keys it names, without
    /// starting anything.
    Check {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Work with Wasm plugins offline.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Run a plugin against request fixtures and print each decision; exits 1 when an
    /// expectation fails.
    Test {
        /// The `.wasm` component.
        #[arg(long)]
        plugin: PathBuf,
        /// The fixture file (TOML: kind, config, cases).
        #[arg(long)]
        fixture: PathBuf,
    },
}

/// mimalloc's `purge_delay` option.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Has mimalloc give freed memory back to the system as soon as a whole page of it is free,
/// unless `MIMALLOC_PURGE_DELAY` says otherwise. mimalloc's default delay is only acted on at
/// a later allocation by the same thread, so the buffers of connections that went quiet
/// (freed when they park) could stay resident indefinitely on a thread with little else to
/// do. Under steady load pages rarely empty, so this costs next to no system calls.
fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, which it reads atomically; any value is valid.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

fn main() -> ExitCode {
    return_freed_memory_promptly();
    match Cli::parse().command {
        Command::Check { file } => match config::load(&file).map_err(anyhow::Error::from).and_then(|cfg| {
            wasmesh::tls::TlsSet::load(&cfg)?;
            Ok(cfg)
        }) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} listeners, {} routes, {} services)",
                    file.display(),
                    cfg.listeners.len(),
                    cfg.routes.len(),
                    cfg.services.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Plugin { command: PluginCommand::Test { plugin, fixture } } => plugin_test(&plugin, &fixture),
        Command::Run { config, log_format } => match run(config, log_format) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn plugin_test(plugin: &std::path::Path, fixture: &std::path::Path) -> ExitCode {
    let results = match wasmesh::plugin::fixture::run(plugin, fixture) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let failed = results.iter().filter(|r| !r.passed).count();
    for r in &results {
        let verdict = if r.passed { "ok  " } else { "FAIL" };
        match &r.response_decision {
            Some(resp) => println!("{verdict} {}: {} | response: {resp}", r.name, r.decision),
            None => println!("{verdict} {}: {}", r.name, r.decision),
        }
    }
    println!("{} cases, {failed} failed", results.len());
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn run(path: PathBuf, log_format: Option<LogFormat>) -> anyhow::Result<()> {
    let (cfg, _) = wasmesh::reload::load_settled(&path)?;
    logging::init(log_format.unwrap_or(cfg.log.format), &cfg.log.level);
    // Every connection is a file descriptor, and the usual soft limit (1,024) is far below
    // what a proxy holds: raise it to the hard limit, as nginx's `worker_rlimit_nofile` does.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let runtime = match cfg.runtime.workers {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        0 => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    }
    .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let drain = cfg.runtime.drain_timeout;
        let server = Server::start(cfg, Some(path.clone())).await?;
        tracing::info!(config = %path.display(), "wasmesh started");
        termination_signal().await.context("cannot install signal handlers")?;
        if server.shutdown(drain).await {
            tracing::info!("drained; exiting");
        } else {
            tracing::warn!(?drain, "drain timeout reached with requests still in flight; exiting");
        }
        Ok(())
    })
}

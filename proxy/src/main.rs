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
static ALLOCATOR: wasmesh_allocator::Allocator = wasmesh_allocator::Allocator;

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
        /// Log format, `text` or `json`; overrides `log.format` in the file.
        #[arg(long)]
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

fn main() -> ExitCode {
    wasmesh_allocator::return_freed_memory_promptly();
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

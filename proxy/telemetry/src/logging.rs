//! Log set-up: text or JSON lines through `tracing-subscriber`.

use tracing_subscriber::EnvFilter;

use wasmesh_config::LogFormat;

/// Target of the per-request access-log events, so they can be filtered on their own.
pub const ACCESS_LOG_TARGET: &str = "wasmesh::access";

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Colours only on a terminal: a log file or collector gets plain, parseable text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

//! Reloading the configuration: read the file and every plugin it names, build a complete new
//! snapshot off the request path, and swap it in one store; or refuse the change whole and
//! keep serving the old one.
//!
//! Reloads run one at a time, whatever triggered them (a file change, SIGHUP, `POST /reload`).
//! A reload whose files hash the same as those in force is `unchanged` and does nothing, so
//! an editor that writes a file twice causes one reload, not two.
//!
//! The file is read only once its writer is done with it ([`settle`]); an empty file, or one
//! that would remove every listener, is refused.

mod settle;
mod watch;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use settle::{SETTLE, SETTLE_LIMIT, SettleError, read_settled};
pub use watch::watch;

use crate::config::{self, Config, ConfigError};
use crate::listener_set::ListenerSet;
use crate::mesh::Mesh;
use crate::telemetry::metrics::ReloadLabels;

/// A file the configuration in force was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// Path, as the configuration names it.
    pub path: PathBuf,
    /// xxh3-64 of its contents, in hex.
    pub hash: String,
}

/// What one reload did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// A new snapshot is serving.
    Applied {
        /// Its version.
        version: u64,
        /// Changes that need a restart to take effect (admin listener, registry, runtime).
        warnings: Vec<String>,
    },
    /// The files are the ones in force; nothing changed.
    Unchanged {
        /// The version in force.
        version: u64,
    },
    /// The change was refused; the old snapshot keeps serving.
    Rejected {
        /// The version still in force.
        version: u64,
        /// Why, naming the file (and field or plugin).
        error: String,
    },
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Applied { .. } => "applied",
            Self::Unchanged { .. } => "unchanged",
            Self::Rejected { .. } => "rejected",
        }
    }
}

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Unreadable, or still being written.
    #[error(transparent)]
    Settle(#[from] SettleError),
    /// Not text.
    #[error("{}: not UTF-8", .0.display())]
    NotUtf8(PathBuf),
    /// Not a valid configuration (or empty).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Reads the configuration file at `path` once its writer is done with it ([`read_settled`])
/// and parses it; returns the configuration and the bytes it was parsed from.
pub fn load_settled(path: &Path) -> Result<(Config, Vec<u8>), FileError> {
    let bytes = read_settled(path, SETTLE, SETTLE_LIMIT)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| FileError::NotUtf8(path.to_owned()))?;
    let config = config::parse(path, text)?;
    Ok((config, bytes))
}

/// How many refused changes [`Status`] lists.
pub const RECENT_REJECTIONS: usize = 16;

/// A refused change.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    /// Why it was refused.
    pub message: String,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// `watch`, `sighup` or `api`.
    pub trigger: &'static str,
}

/// What `GET /config` reports about reloads.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The configuration file.
    pub path: PathBuf,
    /// The files the snapshot in force was built from.
    pub sources: Vec<Source>,
    /// When the configuration in force was loaded, in Unix milliseconds.
    pub loaded_at_ms: u64,
    /// The last refused change, until a later one is applied.
    pub last_error: Option<Rejection>,
    /// Changes refused since the start.
    pub rejections_total: u64,
    /// The most recent refused changes, oldest first; at most [`RECENT_REJECTIONS`].
    pub recent_rejections: VecDeque<Rejection>,
}

impl Status {
    /// Counts `rejection` and keeps it, forgetting the oldest beyond [`RECENT_REJECTIONS`].
    fn record_rejection(&mut self, rejection: Rejection) {
        self.rejections_total += 1;
        if self.recent_rejections.len() == RECENT_REJECTIONS {
            self.recent_rejections.pop_front();
        }
        self.recent_rejections.push_back(rejection.clone());
        self.last_error = Some(rejection);
    }
}

/// Reloads the mesh from its configuration file.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    mesh: Arc<Mesh>,
    listeners: Arc<ListenerSet>,
    status: Mutex<Status>,
    /// One reload at a time.
    serial: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader for the mesh started from `path`, whose listeners are `listeners`.
    pub fn new(path: PathBuf, mesh: Arc<Mesh>, listeners: Arc<ListenerSet>) -> Self {
        let config = mesh.snapshot().config.clone();
        let sources = std::fs::read(&path).map(|text| sources(&path, &text, &config)).unwrap_or_default();
        let status = Status {
            path: path.clone(),
            sources,
            loaded_at_ms: now_ms(),
            last_error: None,
            rejections_total: 0,
            recent_rejections: VecDeque::with_capacity(RECENT_REJECTIONS),
        };
        Self { path, mesh, listeners, status: Mutex::new(status), serial: tokio::sync::Mutex::new(()) }
    }

    /// The reload status.
    pub fn status(&self) -> Status {
        self.lock().clone()
    }

    /// Every file a change to which should trigger a reload.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let config = self.mesh.snapshot().config.clone();
        std::iter::once(self.path.clone()).chain(config.files()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reloads now; `trigger` says why (`watch`, `sighup`, `api`) in logs and the status.
    pub async fn reload(self: &Arc<Self>, trigger: &'static str) -> Outcome {
        let _one_at_a_time = self.serial.lock().await;
        let started = Instant::now();
        let this = self.clone();
        let outcome = match tokio::task::spawn_blocking(move || this.reload_blocking()).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Rejected { version: self.mesh.snapshot().version, error: format!("reload failed: {e}") },
        };
        let metrics = &self.mesh.metrics;
        metrics.reloads.get_or_create(&ReloadLabels { outcome: outcome.label() }).inc();
        match &outcome {
            Outcome::Applied { version, warnings } => {
                metrics.reload_duration.observe(started.elapsed().as_secs_f64());
                tracing::info!(trigger, version, elapsed = ?started.elapsed(), "configuration reloaded");
                for w in warnings {
                    tracing::warn!(trigger, "{w}");
                }
            }
            Outcome::Unchanged { .. } => tracing::debug!(trigger, "configuration unchanged"),
            Outcome::Rejected { error, .. } => {
                tracing::error!(trigger, %error, "configuration change refused; the previous one keeps serving");
                self.lock().record_rejection(Rejection { message: error.clone(), at_ms: now_ms(), trigger });
            }
        }
        outcome
    }

    /// Reads, validates, loads and applies; runs on a blocking thread because plugins compile.
    fn reload_blocking(&self) -> Outcome {
        let current = self.mesh.snapshot();
        let rejected = |error: String| Outcome::Rejected { version: current.version, error };
        let (config, text) = match load_settled(&self.path) {
            Ok(loaded) => loaded,
            Err(e) => return rejected(e.to_string()),
        };
        if config.listeners.is_empty() && !current.config.listeners.is_empty() {
            return rejected(format!(
                "{}: no [[listeners]]: a reload cannot remove every listener, that takes a restart; \
                 the current ones keep serving",
                self.path.display()
            ));
        }
        let next_sources = sources(&self.path, &text, &config);
        if self.lock().sources == next_sources {
            return Outcome::Unchanged { version: current.version };
        }
        let warnings = restart_only_changes(&current.config, &config);
        let bound = match self.listeners.prepare(&config.listeners) {
            Ok(b) => b,
            Err(e) => return rejected(e.to_string()),
        };
        let listeners = config.listeners.clone();
        let version = match self.mesh.apply(config) {
            Ok(v) => v,
            Err(e) => return rejected(e.to_string()),
        };
        self.listeners.commit(&self.mesh, bound);
        tracing::debug!(listeners = listeners.len(), "listeners reconciled");
        let mut status = self.lock();
        status.sources = next_sources;
        status.loaded_at_ms = now_ms();
        status.last_error = None;
        Outcome::Applied { version, warnings }
    }
}

/// The configuration file and every file it names (plugins, certificates, keys), with their
/// hashes. A file that cannot be read hashes as empty; loading it reports the error.
fn sources(path: &Path, text: &[u8], config: &Config) -> Vec<Source> {
    let hash = |bytes: &[u8]| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes));
    std::iter::once(Source { path: path.to_path_buf(), hash: hash(text) })
        .chain(
            config
                .files()
                .into_iter()
                .map(|file| Source { hash: std::fs::read(&file).map(|b| hash(&b)).unwrap_or_default(), path: file }),
        )
        .collect()
}

/// Settings a reload cannot apply to a running process.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.admin.listen != new.admin.listen || old.admin.token != new.admin.token {
        out.push("admin listener settings change on restart only".to_owned());
    }
    if old.registry != new.registry {
        out.push("registry settings change on restart only".to_owned());
    }
    if old.runtime.workers != new.runtime.workers {
        out.push("runtime.workers changes on restart only".to_owned());
    }
    if old.log.level != new.log.level || old.log.format != new.log.format {
        out.push("log level and format change on restart only".to_owned());
    }
    out
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            path: PathBuf::from("wasmesh.toml"),
            sources: Vec::new(),
            loaded_at_ms: 0,
            last_error: None,
            rejections_total: 0,
            recent_rejections: VecDeque::new(),
        }
    }

    #[test]
    fn every_rejection_is_counted_and_the_most_recent_are_kept_in_order() {
        let mut status = status();
        let count = RECENT_REJECTIONS + 5;
        for i in 0..count {
            status.record_rejection(Rejection { message: format!("refusal {i}"), at_ms: i as u64, trigger: "watch" });
        }
        assert_eq!(status.rejections_total, count as u64);
        let kept: Vec<&str> = status.recent_rejections.iter().map(|r| r.message.as_str()).collect();
        let expected: Vec<String> = (count - RECENT_REJECTIONS..count).map(|i| format!("refusal {i}")).collect();
        assert_eq!(kept, expected);
        assert_eq!(status.last_error.map(|r| r.message), Some(format!("refusal {}", count - 1)));
    }
}

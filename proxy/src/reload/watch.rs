//! Watching the configuration file and the files it names (plugins, certificates, keys).
//!
//! The watcher follows the files' parent folders, not the files: editors save by writing a
//! temporary file and renaming it over the original, which replaces the inode a file watch
//! would follow. Events for other files in those folders are ignored. A burst of events (a
//! truncate and several writes, or a temp file and a rename) is debounced into one reload.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Reloader;

/// Quiet time after the last event before reloading; longer than [`super::SETTLE`], so the
/// reload it starts finds the file settled and reads it at once.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Starts watching `reloader`'s files; reloads on change until `shutdown`.
pub fn watch(reloader: Arc<Reloader>, shutdown: CancellationToken) -> Result<(), notify::Error> {
    let (tx, rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(e) if !e.kind.is_access() => {
            let _ = tx.send(e.paths);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "file watch error"),
    })?;
    let mut follower = Follower { watcher, folders: HashSet::new(), files: HashSet::new() };
    follower.follow(&reloader.watched_files())?;
    tokio::spawn(run(reloader, follower, rx, shutdown));
    Ok(())
}

/// The watcher and what it follows.
struct Follower {
    watcher: notify::RecommendedWatcher,
    folders: HashSet<PathBuf>,
    files: HashSet<PathBuf>,
}

impl Follower {
    /// Follows exactly `files`: watches their folders, unwatches folders no longer needed.
    fn follow(&mut self, files: &[PathBuf]) -> Result<(), notify::Error> {
        self.files = files.iter().map(|f| absolute(f)).collect();
        let wanted: HashSet<PathBuf> = self.files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        for gone in self.folders.difference(&wanted).cloned().collect::<Vec<_>>() {
            let _ = self.watcher.unwatch(&gone);
            self.folders.remove(&gone);
        }
        for folder in wanted {
            if !self.folders.contains(&folder) {
                self.watcher.watch(&folder, RecursiveMode::NonRecursive)?;
                self.folders.insert(folder);
            }
        }
        Ok(())
    }

    fn concerns(&self, paths: &[PathBuf]) -> bool {
        paths.iter().any(|p| self.files.contains(&absolute(p)))
    }
}

async fn run(
    reloader: Arc<Reloader>,
    mut follower: Follower,
    mut events: mpsc::UnboundedReceiver<Vec<PathBuf>>,
    shutdown: CancellationToken,
) {
    loop {
        // Wait for an event about one of our files.
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            e = events.recv() => e,
        };
        let Some(paths) = first else { return };
        if !follower.concerns(&paths) {
            continue;
        }
        // Then for quiet: no event about our files for a while (other files in the same
        // folders, such as a log being written, do not count).
        let mut quiet_at = tokio::time::Instant::now() + DEBOUNCE;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(quiet_at) => break,
                e = events.recv() => match e {
                    None => return,
                    Some(paths) if follower.concerns(&paths) => quiet_at = tokio::time::Instant::now() + DEBOUNCE,
                    Some(_) => {}
                },
            }
        }
        reloader.reload("watch").await;
        // The set of named files may have changed.
        if let Err(e) = follower.follow(&reloader.watched_files()) {
            tracing::warn!(error = %e, "cannot watch a configured file");
        }
    }
}

/// `path` made absolute against the working directory, so event paths and configured paths
/// compare equal.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

//! Reading the configuration file only once its writer is done with it.
//!
//! Writing a file in place (`>` redirection, `cp` over it, editors that rewrite the file)
//! truncates it, then writes it, possibly in several parts: a reload that reads it in between
//! sees it empty or cut short. A reload therefore trusts the file only once it has gone
//! [`SETTLE`] without a write, and refuses a file that is still changing after [`SETTLE_LIMIT`].

use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the file must go unwritten before a reload reads it as final.
///
/// In-place writers finish within milliseconds, so this is short. A change the watcher reports
/// has already been quiet for the watcher's debounce, which is longer: only `SIGHUP` and
/// `POST /reload` sent within this time of a write wait for it.
pub const SETTLE: Duration = Duration::from_millis(100);

/// How long a reload waits for a file that keeps changing before refusing it.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(2);

/// Why the file could not be read as final.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The reason.
        source: std::io::Error,
    },
    /// The file was written to again and again for the whole limit.
    #[error("{}: kept changing for {limit:?} (it must go {settle:?} without a write): refused", path.display())]
    KeptChanging {
        /// The file.
        path: PathBuf,
        /// How long it was watched.
        limit: Duration,
        /// How long it had to stay unwritten.
        settle: Duration,
    },
}

/// How long a file had gone unwritten when it was read, as far as its timestamp can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quiet {
    /// Its size or timestamp changed while it was read.
    Changing,
    /// Unwritten for this long.
    For(Duration),
    /// The timestamp cannot tell: missing, in the future, or whole-second.
    Unknown,
}

/// Reads `path` once it has gone `settle` without a write, waiting at most `limit` for that.
///
/// A trustworthy modification time says how long the file has been quiet, so a file written
/// long ago is read once, without waiting. Without one, the file is read until two reads
/// `settle` apart agree.
pub fn read_settled(path: &Path, settle: Duration, limit: Duration) -> Result<Vec<u8>, SettleError> {
    let started = Instant::now();
    let mut previous: Option<(Vec<u8>, Instant)> = None;
    loop {
        let (bytes, quiet) = look(path).map_err(|source| SettleError::Read { path: path.to_owned(), source })?;
        let agrees = previous.as_ref().is_some_and(|(before, at)| *before == bytes && at.elapsed() >= settle);
        let Some(wait) = wait_before_trusting(quiet, agrees, settle) else {
            return Ok(bytes);
        };
        if started.elapsed() + wait > limit {
            return Err(SettleError::KeptChanging { path: path.to_owned(), limit, settle });
        }
        previous = Some((bytes, Instant::now()));
        std::thread::sleep(wait);
    }
}

/// `None` when a read can be trusted as final; otherwise how long to wait before reading again.
/// `agrees`: the read matches one taken at least `settle` earlier.
fn wait_before_trusting(quiet: Quiet, agrees: bool, settle: Duration) -> Option<Duration> {
    match quiet {
        Quiet::For(age) if age >= settle => None,
        Quiet::For(age) => Some(settle - age),
        Quiet::Unknown if agrees => None,
        Quiet::Unknown | Quiet::Changing => Some(settle),
    }
}

/// Reads the file, with its size and timestamp taken before and after the read.
fn look(path: &Path) -> std::io::Result<(Vec<u8>, Quiet)> {
    let stamp = |m: &Metadata| (m.len(), m.modified().ok());
    let before = std::fs::metadata(path)?;
    let bytes = std::fs::read(path)?;
    let after = std::fs::metadata(path)?;
    if stamp(&before) != stamp(&after) || after.len() != bytes.len() as u64 {
        return Ok((bytes, Quiet::Changing));
    }
    Ok((bytes, quiet_since(after.modified().ok(), SystemTime::now())))
}

/// How long before `now` the file was last written, if `modified` can say. Not when the
/// timestamp is in the future (the clock was set back), nor when it has no sub-second part:
/// FAT, ext3 and some network filesystems round timestamps down to the second or two, which
/// makes a file being written look old.
fn quiet_since(modified: Option<SystemTime>, now: SystemTime) -> Quiet {
    let Some(modified) = modified else { return Quiet::Unknown };
    if modified.duration_since(UNIX_EPOCH).map_or(true, |t| t.subsec_nanos() == 0) {
        return Quiet::Unknown;
    }
    now.duration_since(modified).map_or(Quiet::Unknown, Quiet::For)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_read_is_trusted_once_the_file_has_been_quiet_for_the_settle_time() {
        let settle = 100 * MS;
        assert_eq!(wait_before_trusting(Quiet::For(100 * MS), false, settle), None);
        assert_eq!(wait_before_trusting(Quiet::For(5_000 * MS), false, settle), None);
        assert_eq!(wait_before_trusting(Quiet::For(30 * MS), false, settle), Some(70 * MS), "waits the rest");
        assert_eq!(wait_before_trusting(Quiet::For(30 * MS), true, settle), Some(70 * MS), "the timestamp decides");
        assert_eq!(wait_before_trusting(Quiet::Changing, true, settle), Some(settle));
        assert_eq!(wait_before_trusting(Quiet::Unknown, false, settle), Some(settle), "one read proves nothing");
        assert_eq!(wait_before_trusting(Quiet::Unknown, true, settle), None, "two reads a settle apart agree");
    }

    #[test]
    fn timestamps_that_cannot_tell_the_age_are_not_trusted() {
        let now = UNIX_EPOCH + Duration::new(1_800_000_000, 500_000_000);
        let fresh = now - 20 * MS;
        assert_eq!(quiet_since(Some(fresh), now), Quiet::For(20 * MS));
        assert_eq!(quiet_since(None, now), Quiet::Unknown);
        assert_eq!(quiet_since(Some(now + 20 * MS), now), Quiet::Unknown, "in the future");
        let whole_second = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(quiet_since(Some(whole_second), now), Quiet::Unknown, "rounded down to the second");
    }

    #[test]
    fn a_file_written_long_ago_is_read_as_it_is() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wasmesh.toml");
        std::fs::write(&path, "[admin]\n").expect("write");
        let old = SystemTime::now() - Duration::new(60, 123_456_789);
        std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(old)).expect("set mtime");
        let bytes = read_settled(&path, 100 * MS, 2_000 * MS).expect("settled");
        assert_eq!(bytes, b"[admin]\n");
    }

    #[test]
    fn a_file_read_while_being_written_in_two_parts_is_read_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wasmesh.toml");
        let mut file = std::fs::File::create(&path).expect("truncate");
        file.write_all(b"[admin]\n").expect("first part");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(30 * MS);
            file.write_all(b"listen = \"127.0.0.1:1\"\n").expect("second part");
        });
        // A settle far longer than the writer's pause, so a slow machine cannot split it.
        let bytes = read_settled(&path, 500 * MS, 5_000 * MS).expect("settled");
        writer.join().expect("writer");
        assert_eq!(bytes, b"[admin]\nlisten = \"127.0.0.1:1\"\n");
    }

    #[test]
    fn a_file_that_keeps_changing_is_refused_after_the_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wasmesh.toml");
        let mut file = std::fs::File::create(&path).expect("create");
        let stop = Arc::new(AtomicBool::new(false));
        let writing = stop.clone();
        let writer = std::thread::spawn(move || {
            while !writing.load(Ordering::Relaxed) {
                file.write_all(b"# more\n").expect("append");
                std::thread::sleep(5 * MS);
            }
        });
        // A settle far longer than the writer's pause, so a slow machine does not make it look done.
        let result = read_settled(&path, 400 * MS, 1_200 * MS);
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer");
        let error = result.expect_err("refused").to_string();
        assert!(error.contains("wasmesh.toml") && error.contains("kept changing"), "{error}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gone.toml");
        let error = read_settled(&path, 100 * MS, 2_000 * MS).expect_err("missing").to_string();
        assert!(error.contains("gone.toml") && error.contains("cannot read"), "{error}");
    }
}

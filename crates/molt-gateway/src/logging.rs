//! Logs go to stderr (journald-friendly: no colours) and to `<state>/logs/gateway.log`, the
//! file `logs.tail` serves, rotated by size ([`MAX_LOG_BYTES`], [`KEEP_ROTATED`] old files).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// When `gateway.log` passes this size it is rotated to `gateway.log.1`.
pub const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;
/// How many rotated files are kept (`gateway.log.1` is the newest).
pub const KEEP_ROTATED: usize = 3;

/// A log file that rotates itself by size: `gateway.log` → `.1` → `.2` → … `.KEEP`, the
/// oldest dropped. A long-lived gateway on a small disk must not fill it with its own log.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingFile {
    /// Opens (appends to) `path`, 0600, counting what it already holds.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        let file = open_private(path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            written,
            max_bytes,
            keep,
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        if self.keep > 0 {
            std::fs::rename(&self.path, self.rotated(1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.file = open_private(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // A line is written whole before the check, so no line is split across two files.
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            // A failed rotation must not lose the line: keep appending to the old file.
            if let Err(e) = self.rotate() {
                eprintln!("molt: cannot rotate {}: {e}", self.path.display());
                self.written = 0;
            }
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn open_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    crate::fsutil::make_private_file(path)?;
    Ok(file)
}

#[derive(Clone)]
struct SharedFile(Arc<Mutex<RotatingFile>>);

struct FileGuard<'a>(std::sync::MutexGuard<'a, RotatingFile>);

impl Write for FileGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a> MakeWriter<'a> for SharedFile {
    type Writer = FileGuard<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        FileGuard(self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The gateway's own log file in `state_dir`.
pub fn log_file(state_dir: &Path) -> PathBuf {
    state_dir.join("logs").join("gateway.log")
}

/// Installs the global subscriber. `MOLT_LOG` (or `RUST_LOG`) sets the filter; default `info`.
pub fn init(state_dir: &Path) -> std::io::Result<PathBuf> {
    let path = log_file(state_dir);
    if let Some(dir) = path.parent() {
        crate::fsutil::create_private_dir(dir)?;
    }
    let file = RotatingFile::open(&path, MAX_LOG_BYTES, KEEP_ROTATED)?;
    let filter = || {
        EnvFilter::try_from_env("MOLT_LOG")
            .or_else(|_| EnvFilter::try_from_default_env())
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_filter(filter());
    let file_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(SharedFile(Arc::new(Mutex::new(file))))
        .with_filter(filter());
    use tracing_subscriber::Layer;
    // A second init (tests running two gateways in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init();
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_log_rotates_by_size_keeps_a_few_files_and_splits_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.log");
        std::fs::write(&path, "old line\n").unwrap();
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        let line = format!("{}\n", "x".repeat(39)); // 40 bytes
        for _ in 0..10 {
            f.write_all(line.as_bytes()).unwrap();
        }
        f.flush().unwrap();
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
        let rotated = |n| {
            let mut s = path.clone().into_os_string();
            s.push(format!(".{n}"));
            PathBuf::from(s)
        };
        // 9 + 400 bytes in files of at most 100: the current one and two rotated, no third.
        assert!(size(&path).unwrap() <= 100);
        assert_eq!(size(&rotated(1)), Some(80));
        assert_eq!(size(&rotated(2)), Some(80));
        assert_eq!(size(&rotated(3)), None, "only 2 rotated files are kept");
        for p in [path.clone(), rotated(1), rotated(2)] {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.lines().all(|l| l.len() == 39), "whole lines: {text:?}");
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
}

//! Logs go to stderr (journald-friendly: no colours) and to `<state>/logs/gateway.log`, the
//! file `logs.tail` serves.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone)]
struct SharedFile(Arc<Mutex<File>>);

struct FileGuard<'a>(std::sync::MutexGuard<'a, File>);

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
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    crate::fsutil::make_private_file(&path)?;
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

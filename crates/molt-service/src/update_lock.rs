//! `<state>/update.lock`: held by the updater for its whole life, so one transaction runs at
//! a time, and a journalled job that is `running` while the lock is free had its updater die.

use std::fs::File;
use std::path::Path;

/// The exclusive update lock, `<state>/update.lock`, held for the updater's life.
pub struct UpdateLock(#[allow(dead_code)] File);

impl UpdateLock {
    /// Takes the lock without waiting; `Ok(None)` when another updater holds it.
    pub fn try_acquire(state_dir: &Path) -> Result<Option<Self>, String> {
        use std::os::fd::AsRawFd;
        let path = state_dir.join("update.lock");
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock(2) on an fd we own.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            Ok(Some(Self(f)))
        } else {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                Ok(None)
            } else {
                Err(format!("cannot lock {}: {e}", path.display()))
            }
        }
    }

    /// Whether no updater holds the lock right now.
    pub fn is_free(state_dir: &Path) -> bool {
        matches!(Self::try_acquire(state_dir), Ok(Some(_)))
    }
}

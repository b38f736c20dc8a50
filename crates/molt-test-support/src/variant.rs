use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::poll::poll;

/// The root of this workspace (the directory of its `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Real molt binaries built from this source with `MOLT_BUILD_VERSION=<version>` and, for a
/// fault, `MOLT_BUILD_FAULT=<fault>` (a real broken build: `check-fails`, `exit-at-start`,
/// `never-ready`). Never a copy with a faked version.
///
/// All variants build, one after another, in one shared target dir, so only the final crate
/// recompiles per variant. Each result is copied to
/// `<out_dir>/molt-variant-<version>[-<fault>]/molt` (a copy, renamed into place: a process
/// may still run the previous one).
pub struct Variants {
    /// The cargo target dir all variants share.
    pub target_dir: PathBuf,
    /// Where the copies go.
    pub out_dir: PathBuf,
    /// Build with `--release`.
    pub release: bool,
    /// A molt whose `--version` line stamps each copy: its build id hashes every source file,
    /// so a copy with the same stamp is reused without running cargo, and a source change
    /// rebuilds. `None` runs cargo every time (it rebuilds only what changed).
    pub stamp_from: Option<PathBuf>,
}

impl Variants {
    /// The binary of `version` (with `fault`), built or reused; panics if the build fails or
    /// the binary does not print `molt <version> (`.
    ///
    /// Test binaries run in parallel, so the work is serialised by a mutex (threads) and an
    /// flock (processes).
    pub fn build(&self, version: &str, fault: Option<&str>) -> PathBuf {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::create_dir_all(&self.target_dir).expect("create the variants target dir");
        let _flock = FileLock::acquire(&self.target_dir.join("variants.lock"));

        let name = match fault {
            Some(f) => format!("molt-variant-{version}-{f}"),
            None => format!("molt-variant-{version}"),
        };
        let dir = self.out_dir.join(name);
        let bin = dir.join("molt");
        let stamp_file = dir.join("stamp");
        let stamp = self.stamp_from.as_ref().map(|reference| {
            let out = Command::new(reference)
                .arg("--version")
                .output()
                .expect("run the reference molt --version");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        });
        let fresh =
            stamp.is_some() && bin.exists() && std::fs::read_to_string(&stamp_file).ok() == stamp;
        if !fresh {
            self.cargo_build(version, fault);
            std::fs::create_dir_all(&dir).unwrap();
            let profile = if self.release { "release" } else { "debug" };
            let part = dir.join("molt.part");
            std::fs::copy(self.target_dir.join(profile).join("molt"), &part)
                .expect("copy the variant");
            std::fs::rename(&part, &bin).unwrap();
            if let Some(stamp) = &stamp {
                std::fs::write(&stamp_file, stamp).unwrap();
            }
        }
        let printed = Command::new(&bin)
            .arg("--version")
            .output()
            .expect("run it");
        assert!(
            String::from_utf8_lossy(&printed.stdout).starts_with(&format!("molt {version} (")),
            "{printed:?}"
        );
        bin
    }

    fn cargo_build(&self, version: &str, fault: Option<&str>) {
        let cargo = std::env::var_os("CARGO")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(option_env!("CARGO").unwrap_or("cargo")));
        let mut c = Command::new(cargo);
        // The caller's CARGO_* variables (of `cargo test` or `cargo run`) would make the nested
        // build differ from a plain one.
        for (k, _) in std::env::vars() {
            if k.starts_with("CARGO_") && k != "CARGO_HOME" {
                c.env_remove(k);
            }
        }
        c.env("MOLT_BUILD_VERSION", version);
        match fault {
            Some(f) => c.env("MOLT_BUILD_FAULT", f),
            None => c.env_remove("MOLT_BUILD_FAULT"),
        };
        c.args(["build", "-p", "molt", "--bin", "molt"]);
        if self.release {
            c.arg("--release");
        }
        let t0 = Instant::now();
        let out = c
            .arg("--manifest-path")
            .arg(workspace_root().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&self.target_dir)
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success(),
            "building molt {version} {fault:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("built molt {version} {fault:?} in {:?}", t0.elapsed());
    }
}

/// An exclusive flock(2) on a file, released on drop.
pub struct FileLock(std::fs::File);

impl FileLock {
    /// Waits, up to 30 minutes (a first variant build compiles every dependency), until the
    /// lock is held; panics after that.
    pub fn acquire(path: &Path) -> Self {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .expect("open the lock file");
        let timeout = Duration::from_secs(30 * 60);
        let held = poll(timeout, Duration::from_millis(50), || {
            // SAFETY: flock(2) on a descriptor we own.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                return Some(());
            }
            let e = std::io::Error::last_os_error();
            assert!(
                matches!(e.raw_os_error(), Some(libc::EWOULDBLOCK | libc::EINTR)),
                "flock {}: {e}",
                path.display()
            );
            None
        });
        assert!(
            held.is_some(),
            "{} still locked after {timeout:?}",
            path.display()
        );
        Self(f)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on a descriptor we own.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

//! Fixes the version and build id into the binary.
//!
//! - `MOLT_VERSION`: `MOLT_BUILD_VERSION` if set, else the crate version. Tests build real
//!   v2/v3 binaries this way; only this crate recompiles.
//! - `MOLT_BUILD_ID`: `<git sha>-<hash of the inputs>`, where the inputs are every source file
//!   of the workspace crates, the lock file and the version. Any change to them changes it.
//! - `MOLT_FAULT`: `MOLT_BUILD_FAULT` if set, else empty. Tests build real broken versions
//!   with it: `check-fails` (`molt gateway check` refuses), `exit-at-start` (`molt gateway
//!   run` exits at once), `never-ready` (the gateway never reports ready). A release build
//!   leaves it unset.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=MOLT_BUILD_VERSION");
    println!("cargo:rerun-if-env-changed=MOLT_BUILD_FAULT");
    let fault = std::env::var("MOLT_BUILD_FAULT").unwrap_or_default();
    let version = std::env::var("MOLT_BUILD_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| std::env::var("CARGO_PKG_VERSION").unwrap_or_default());
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest.join("../..");

    let mut files = Vec::new();
    let crates = root.join("crates");
    if let Ok(entries) = std::fs::read_dir(&crates) {
        for e in entries.flatten() {
            collect(&e.path().join("src"), &mut files);
            files.push(e.path().join("Cargo.toml"));
            files.push(e.path().join("build.rs"));
        }
    }
    files.push(root.join("Cargo.lock"));
    files.push(root.join("Cargo.toml"));
    files.sort();

    let mut hash = Fnv::new();
    hash.write(version.as_bytes());
    hash.write(fault.as_bytes());
    for f in &files {
        if let Ok(bytes) = std::fs::read(f) {
            hash.write(
                f.strip_prefix(&root)
                    .unwrap_or(f)
                    .to_string_lossy()
                    .as_bytes(),
            );
            hash.write(&bytes);
        }
    }
    for dir in std::fs::read_dir(&crates).into_iter().flatten().flatten() {
        println!(
            "cargo:rerun-if-changed={}",
            dir.path().join("src").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            dir.path().join("Cargo.toml").display()
        );
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );

    let git = git_sha(&root);
    println!("cargo:rustc-env=MOLT_VERSION={version}");
    println!("cargo:rustc-env=MOLT_FAULT={fault}");
    println!("cargo:rustc-env=MOLT_BUILD_ID={git}-{:016x}", hash.0);
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn git_sha(root: &Path) -> String {
    let head = root.join(".git/HEAD");
    if head.exists() {
        println!("cargo:rerun-if-changed={}", head.display());
        let head_ref = std::fs::read_to_string(&head).ok().and_then(|h| {
            h.trim()
                .strip_prefix("ref: ")
                .map(|r| root.join(".git").join(r))
        });
        if let Some(p) = head_ref.filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "nogit".into())
}

/// FNV-1a, 64 bit: a change detector, not a security hash.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

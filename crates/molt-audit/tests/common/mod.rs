//! Fixture loading shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(name: &str) -> String {
    let path = fixtures_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The sshd fixtures as an in-memory /etc/ssh: `sshd_config` and everything under
/// `sshd_config.d/`, including dot files and the README.
pub fn etc_ssh() -> BTreeMap<String, String> {
    let mut fs = BTreeMap::new();
    fs.insert("/etc/ssh/sshd_config".to_owned(), fixture("sshd_config"));
    fn walk(dir: &Path, under: &str, fs: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let path = entry.path();
            let target = format!("{under}/{name}");
            if path.is_dir() {
                walk(&path, &target, fs);
            } else {
                fs.insert(target, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    walk(
        &fixtures_dir().join("sshd_config.d"),
        "/etc/ssh/sshd_config.d",
        &mut fs,
    );
    fs
}

//! The shared support crate, bound to what only this package's tests know: the `molt` cargo
//! built for them (`CARGO_BIN_EXE_molt`) and their scratch dir (`CARGO_TARGET_TMPDIR`).
#![allow(dead_code)]

use std::path::PathBuf;

pub use molt_test_support::*;

/// The `molt` binary under test, built once by cargo for every integration test.
pub const MOLT: &str = env!("CARGO_BIN_EXE_molt");

/// A real molt binary built from this source with `MOLT_BUILD_VERSION=version`, for tests that
/// need a second installed version. See [`molt_variant`].
pub fn molt_with_version(version: &str) -> PathBuf {
    molt_variant(version, None)
}

/// A real molt binary built from this source with `MOLT_BUILD_VERSION=version` and, when
/// `fault` is given, `MOLT_BUILD_FAULT=fault`; see [`Variants`]. Every test binary shares the
/// target dir `CARGO_TARGET_TMPDIR/molt-variants`; each copy, in
/// `CARGO_TARGET_TMPDIR/molt-variant-<v>[-<fault>]`, is reused while the test's own molt prints
/// the same `--version` line.
pub fn molt_variant(version: &str, fault: Option<&str>) -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    Variants {
        target_dir: tmp.join("molt-variants"),
        out_dir: tmp,
        release: false,
        stamp_from: Some(PathBuf::from(MOLT)),
    }
    .build(version, fault)
}

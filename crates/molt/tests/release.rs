//! `molt release keygen|build|sign` with the real binary, checked by the verifier.

mod common;

use common::*;
use molt_release::keys::PublicKey;
use molt_release::manifest::Manifest;

#[test]
fn keygen_build_sign_then_verify() {
    let home = Home::new(MOLT, "");
    let dir = home.path();
    let version = String::from_utf8(home.cli(&["--version"]).stdout).unwrap();
    let version = version.split_whitespace().nth(1).unwrap().to_owned();
    let out = home.cli_ok(&[
        "release",
        "keygen",
        "--out",
        dir.join("k").to_str().unwrap(),
    ]);
    assert!(out.contains("trusted_keys"), "{out}");
    let rel = dir.join("rel");
    let wrong = home.cli(&[
        "release",
        "build",
        "--binary",
        MOLT,
        "--version",
        "9.9.9",
        "--out",
        rel.to_str().unwrap(),
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("MOLT_BUILD_VERSION=9.9.9"));
    home.cli_ok(&[
        "release",
        "build",
        "--binary",
        MOLT,
        "--version",
        &version,
        "--out",
        rel.to_str().unwrap(),
    ]);
    home.cli_ok(&[
        "release",
        "sign",
        "--key",
        dir.join("k.key").to_str().unwrap(),
        rel.to_str().unwrap(),
    ]);

    let public =
        PublicKey::parse(std::fs::read_to_string(dir.join("k.pub")).unwrap().trim()).unwrap();
    let (m, _) = Manifest::load_verified(&rel, &[public]).unwrap();
    let target = molt_release::host_target();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let e = m
        .select(&target, Some(&version), &version, false, now)
        .unwrap();
    assert_eq!(e.artifact, format!("molt-{version}-{target}.tar.zst"));
    assert!(e.expires > now + 29 * 86_400);
    let (sha, size) = molt_release::artifact::hash_file(&rel.join(&e.artifact)).unwrap();
    assert_eq!((sha.as_str(), size), (e.sha256.as_str(), e.size));
}

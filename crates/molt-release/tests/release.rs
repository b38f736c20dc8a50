//! A release made, signed and checked end to end, and every refusal an updater relies on.

use std::path::Path;

use molt_release::keys::{self, PublicKey, SecretKey};
use molt_release::manifest::{Entry, Manifest};
use molt_release::{ReleaseError, artifact};

const NOW: u64 = 1_800_000_000;

struct Fixture {
    dir: tempfile::TempDir,
    public: PublicKey,
}

impl Fixture {
    fn release(&self) -> std::path::PathBuf {
        self.dir.path().join("release")
    }
}

/// A release dir with 1.1.0 and 2.0.0 of a fake binary, signed.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let public = keys::keygen(&dir.path().join("rel"), "test key").unwrap();
    let bin = dir.path().join("molt-bin");
    std::fs::write(&bin, "#!/bin/sh\necho 'molt 2.0.0 (test)'\n").unwrap();
    let f = Fixture { dir, public };
    let mut m = Manifest::default();
    for (v, min) in [("1.1.0", "0.1.0"), ("2.0.0", "1.0.0")] {
        m.upsert(artifact::build(&bin, v, "x86_64-linux", &f.release(), NOW + 3600, min).unwrap());
    }
    write_signed(&f, &m);
    f
}

fn write_signed(f: &Fixture, m: &Manifest) {
    let bytes = serde_json::to_vec_pretty(m).unwrap();
    std::fs::write(f.release().join("manifest.json"), &bytes).unwrap();
    let key = SecretKey::load(&f.dir.path().join("rel.key")).unwrap();
    std::fs::write(
        f.release().join("manifest.sig"),
        keys::signature_line(&key, &bytes),
    )
    .unwrap();
}

fn load(f: &Fixture) -> Result<Manifest, ReleaseError> {
    Manifest::load_verified(&f.release(), std::slice::from_ref(&f.public)).map(|(m, _)| m)
}

fn fetch(f: &Fixture, e: &Entry) -> Result<std::path::PathBuf, ReleaseError> {
    let src = std::fs::File::open(f.release().join(&e.artifact)).unwrap();
    let dst = f.dir.path().join("download");
    artifact::fetch_verified(src, &dst, e, |_| {})?;
    Ok(dst)
}

#[test]
fn keys_are_private_and_public_lines_parse() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let mode = std::fs::metadata(f.dir.path().join("rel.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let line = std::fs::read_to_string(f.dir.path().join("rel.pub")).unwrap();
    assert_eq!(line.lines().count(), 1);
    assert_eq!(PublicKey::parse(line.trim()).unwrap(), f.public);
    assert!(
        matches!(
            keys::keygen(&f.dir.path().join("rel"), ""),
            Err(ReleaseError::BadKey(_))
        ),
        "no overwrite"
    );
    assert!(PublicKey::parse("ssh-ed25519 AAAA").is_err());
}

#[test]
fn a_good_release_verifies_fetches_and_unpacks() {
    let f = fixture();
    let m = load(&f).unwrap();
    let e = m.select("x86_64-linux", None, "1.5.0", false, NOW).unwrap();
    assert_eq!(e.version, "2.0.0");
    let dl = fetch(&f, e).unwrap();
    let bin = artifact::unpack(&dl, &f.dir.path().join("staging")).unwrap();
    let out = std::process::Command::new(&bin).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "molt 2.0.0 (test)",
        "{out:?} {:?}",
        std::fs::read_to_string(&bin)
    );
}

#[test]
fn no_trusted_key_says_how_to_add_one() {
    let f = fixture();
    let err = Manifest::load_verified(&f.release(), &[]).unwrap_err();
    assert!(matches!(err, ReleaseError::NoTrustedKey));
    assert!(err.to_string().contains("trusted_keys"), "{err}");
}

#[test]
fn bad_signatures_are_refused() {
    let f = fixture();
    // A tampered manifest: the signature no longer covers it.
    let path = f.release().join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"expires\": 1800003600", "\"expires\": 1900003600");
    std::fs::write(&path, text).unwrap();
    assert!(matches!(load(&f), Err(ReleaseError::BadSignature)));
    // Signed by a key nobody trusts.
    let other = tempfile::tempdir().unwrap();
    keys::keygen(&other.path().join("evil"), "").unwrap();
    let evil = SecretKey::load(&other.path().join("evil.key")).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(
        f.release().join("manifest.sig"),
        keys::signature_line(&evil, &bytes),
    )
    .unwrap();
    assert!(matches!(load(&f), Err(ReleaseError::UnknownKey(_))));
}

#[test]
fn tampered_or_oversized_artifacts_are_refused() {
    let f = fixture();
    let m = load(&f).unwrap();
    let e = m
        .select("x86_64-linux", Some("2.0.0"), "1.5.0", false, NOW)
        .unwrap()
        .clone();
    let art = f.release().join(&e.artifact);
    let mut bytes = std::fs::read(&art).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&art, &bytes).unwrap();
    let err = fetch(&f, &e).unwrap_err();
    assert!(matches!(err, ReleaseError::ArtifactMismatch(_)), "{err}");
    bytes[mid] ^= 0xff;
    bytes.extend_from_slice(&[0u8; 100]);
    std::fs::write(&art, &bytes).unwrap();
    let err = fetch(&f, &e).unwrap_err();
    assert!(matches!(err, ReleaseError::TooLarge { .. }), "{err}");
}

#[test]
fn expired_downgrade_and_too_old_are_refused() {
    let f = fixture();
    let m = load(&f).unwrap();
    assert!(matches!(
        m.select("x86_64-linux", None, "1.5.0", false, NOW + 7200),
        Err(ReleaseError::Expired { .. })
    ));
    assert!(matches!(
        m.select("x86_64-linux", Some("1.1.0"), "1.5.0", false, NOW),
        Err(ReleaseError::Downgrade { .. })
    ));
    assert_eq!(
        m.select("x86_64-linux", Some("1.1.0"), "1.5.0", true, NOW)
            .unwrap()
            .version,
        "1.1.0"
    );
    assert!(matches!(
        m.select("x86_64-linux", Some("2.0.0"), "0.9.0", false, NOW),
        Err(ReleaseError::TooOld { .. })
    ));
    assert!(matches!(
        m.select("aarch64-linux", None, "1.0.0", false, NOW),
        Err(ReleaseError::NotFound { .. })
    ));
}

#[test]
fn archives_with_anything_but_molt_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("bad.tar.zst");
    {
        let enc =
            zstd::stream::write::Encoder::new(std::fs::File::create(&art).unwrap(), 3).unwrap();
        let mut tar = tar::Builder::new(enc);
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, "etc-passwd", &b"abc"[..]).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    let err = artifact::unpack(&art, &dir.path().join("s")).unwrap_err();
    assert!(matches!(err, ReleaseError::BadArchive(_)), "{err}");
    assert!(!Path::new(&dir.path().join("s/etc-passwd")).exists());
}

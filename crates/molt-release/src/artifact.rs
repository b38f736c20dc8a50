//! Artifacts: `molt-<version>-<target>.tar.zst` holding one file, `molt`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::manifest::Entry;
use crate::{ReleaseError, io};

/// An unpacked binary may be at most this many times the compressed artifact (and 512 MiB).
const MAX_UNPACKED: u64 = 512 * 1024 * 1024;

/// The artifact file name for a version and target.
pub fn file_name(version: &str, target: &str) -> String {
    format!("molt-{version}-{target}.tar.zst")
}

/// Packs `binary` as `dir/<file_name>` and returns its manifest entry (`expires`,
/// `min_version` as given).
pub fn build(
    binary: &Path,
    version: &str,
    target: &str,
    dir: &Path,
    expires: u64,
    min_version: &str,
) -> Result<Entry, ReleaseError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let name = file_name(version, target);
    let out = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let file =
            std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        let enc = zstd::stream::write::Encoder::new(file, 3).map_err(io("starting zstd"))?;
        let mut tar = tar::Builder::new(enc);
        let mut f =
            std::fs::File::open(binary).map_err(io(format!("opening {}", binary.display())))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(f.metadata().map_err(io("reading the binary's size"))?.len());
        header.set_mode(0o755);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(0);
        tar.append_data(&mut header, "molt", &mut f)
            .map_err(io("writing the archive"))?;
        let enc = tar.into_inner().map_err(io("finishing the archive"))?;
        let file = enc.finish().map_err(io("finishing zstd"))?;
        file.sync_all().map_err(io("syncing the artifact"))?;
    }
    std::fs::rename(&tmp, &out).map_err(io(format!("moving {} into place", out.display())))?;
    let (sha256, size) = hash_file(&out)?;
    Ok(Entry {
        version: version.to_owned(),
        target: target.to_owned(),
        artifact: name,
        sha256,
        size,
        expires,
        min_version: min_version.to_owned(),
    })
}

/// sha256 (hex) and size of a file.
pub fn hash_file(path: &Path) -> Result<(String, u64), ReleaseError> {
    let mut f = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

/// Copies `src` to `dst`, refusing to write more than `entry.size` bytes and checking the
/// hash at the end. This is how every download and copy of an artifact is taken in: the
/// updater runs the two halves, [`copy_capped`] and [`verify_file`], as journalled steps.
pub fn fetch_verified(
    src: impl Read,
    dst: &Path,
    entry: &Entry,
    progress: impl FnMut(u64),
) -> Result<(), ReleaseError> {
    copy_capped(src, dst, entry, progress)?;
    verify_file(dst, entry).map(|_| ())
}

/// Copies `src` to `dst` (synced), refusing to write more than `entry.size` bytes: the
/// excess is never written. `progress` gets the byte count so far. Returns the bytes copied.
pub fn copy_capped(
    mut src: impl Read,
    dst: &Path,
    entry: &Entry,
    mut progress: impl FnMut(u64),
) -> Result<u64, ReleaseError> {
    let mut out = std::fs::File::create(dst).map_err(io(format!("creating {}", dst.display())))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(io("reading the artifact"))?;
        if n == 0 {
            break;
        }
        got += n as u64;
        if got > entry.size {
            return Err(ReleaseError::TooLarge {
                declared: entry.size,
            });
        }
        out.write_all(&buf[..n])
            .map_err(io(format!("writing {}", dst.display())))?;
        progress(got);
    }
    out.sync_all().map_err(io("syncing the download"))?;
    Ok(got)
}

/// Checks a file against its manifest entry: exactly `entry.size` bytes with `entry.sha256`.
/// Returns the sha256.
pub fn verify_file(path: &Path, entry: &Entry) -> Result<String, ReleaseError> {
    let (sha, size) = hash_file(path)?;
    if size != entry.size {
        return Err(ReleaseError::ArtifactMismatch(format!(
            "{size} bytes, the manifest says {}",
            entry.size
        )));
    }
    if sha != entry.sha256 {
        return Err(ReleaseError::ArtifactMismatch(format!(
            "sha256 {sha}, the manifest says {}",
            entry.sha256
        )));
    }
    Ok(sha)
}

/// Unpacks a verified artifact into `staging/molt` (0755). Anything but exactly one regular
/// file named `molt` is refused, and so is an unpacked size over the cap.
pub fn unpack(artifact: &Path, staging: &Path) -> Result<PathBuf, ReleaseError> {
    std::fs::create_dir_all(staging).map_err(io(format!("creating {}", staging.display())))?;
    let file =
        std::fs::File::open(artifact).map_err(io(format!("opening {}", artifact.display())))?;
    let dec = zstd::stream::read::Decoder::new(file).map_err(io("starting zstd"))?;
    let mut tar = tar::Archive::new(dec);
    let dst = staging.join("molt");
    let mut found = false;
    for entry in tar
        .entries()
        .map_err(|e| ReleaseError::BadArchive(e.to_string()))?
    {
        let mut entry = entry.map_err(|e| ReleaseError::BadArchive(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| ReleaseError::BadArchive(e.to_string()))?
            .into_owned();
        if path != Path::new("molt")
            || entry.header().entry_type() != tar::EntryType::Regular
            || found
        {
            return Err(ReleaseError::BadArchive(format!(
                "unexpected entry {}",
                path.display()
            )));
        }
        if entry.size() > MAX_UNPACKED {
            return Err(ReleaseError::BadArchive(format!(
                "molt is {} bytes, over the cap",
                entry.size()
            )));
        }
        let mut out =
            std::fs::File::create(&dst).map_err(io(format!("creating {}", dst.display())))?;
        let copied = std::io::copy(&mut (&mut entry).take(MAX_UNPACKED + 1), &mut out)
            .map_err(io("unpacking"))?;
        if copied > MAX_UNPACKED {
            return Err(ReleaseError::BadArchive("molt is over the size cap".into()));
        }
        out.sync_all().map_err(io("syncing the unpacked binary"))?;
        found = true;
    }
    if !found {
        return Err(ReleaseError::BadArchive("no `molt` in the archive".into()));
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))
        .map_err(io("making molt executable"))?;
    Ok(dst)
}

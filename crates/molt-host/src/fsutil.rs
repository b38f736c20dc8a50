//! Private files and directories: state and credentials are 0600 in 0700 directories.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` and its missing parents; `dir` itself ends up 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Sets `path` to 0600.
pub fn make_private_file(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Writes `data` to `path` atomically (temp file, fsync, rename) with mode 0600.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `bytes` random bytes as hex: ids, nonces, tokens. Fails only when the OS has no entropy
/// source, and then nothing secret may be made up.
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    random_bytes(bytes).map(hex::encode)
}

/// `n` random bytes from the OS; fails only when it has no entropy source.
pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
    Ok(buf)
}

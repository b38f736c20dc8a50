//! Release keys. `PREFIX.key` (0600) holds `molt-release-secret-v1 <base64url secret>`;
//! `PREFIX.pub` holds one line, `molt-ed25519 <base64url public key> [comment]`, which is what
//! goes into `[update] trusted_keys`.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::{ReleaseError, io};

const SECRET_TAG: &str = "molt-release-secret-v1";
const PUBLIC_TAG: &str = "molt-ed25519";

/// A trusted release public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses a `.pub` line.
    pub fn parse(line: &str) -> Result<Self, ReleaseError> {
        let mut parts = line.split_whitespace();
        if parts.next() != Some(PUBLIC_TAG) {
            return Err(ReleaseError::BadKey(format!(
                "expected `{PUBLIC_TAG} <key> [comment]`, got {:?}",
                line.chars().take(40).collect::<String>()
            )));
        }
        let bytes: [u8; 32] = parts
            .next()
            .and_then(|k| B64.decode(k).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ReleaseError::BadKey("the key is not 32 bytes of base64url".into()))?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| ReleaseError::BadKey("not an Ed25519 public key".into()))
    }

    /// A short, stable id: 16 hex digits of the key's sha256.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0.to_bytes())[..8])
    }

    pub fn to_line(&self, comment: &str) -> String {
        format!("{PUBLIC_TAG} {} {comment}", B64.encode(self.0.to_bytes()))
            .trim_end()
            .to_owned()
    }

    pub(crate) fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        self.0
            .verify_strict(msg, &Signature::from_bytes(sig))
            .is_ok()
    }
}

/// A release signing key, as loaded from `PREFIX.key`.
pub struct SecretKey(SigningKey);

impl SecretKey {
    pub fn load(path: &Path) -> Result<Self, ReleaseError> {
        let text =
            std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
        let mut parts = text.split_whitespace();
        if parts.next() != Some(SECRET_TAG) {
            return Err(ReleaseError::BadKey(format!(
                "{} is not a molt release key",
                path.display()
            )));
        }
        let bytes: [u8; 32] = parts
            .next()
            .and_then(|k| B64.decode(k).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ReleaseError::BadKey(format!("{} is corrupt", path.display())))?;
        Ok(Self(SigningKey::from_bytes(&bytes)))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

/// Writes `PREFIX.key` (0600) and `PREFIX.pub`. Refuses to overwrite either.
pub fn keygen(prefix: &Path, comment: &str) -> Result<PublicKey, ReleaseError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key_path = prefix.with_extension("key");
    let pub_path = prefix.with_extension("pub");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(ReleaseError::BadKey(format!(
                "{} exists; refusing to overwrite a key",
                p.display()
            )));
        }
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| ReleaseError::BadKey(format!("no randomness: {e}")))?;
    let key = SecretKey(SigningKey::from_bytes(&secret));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(io(format!("creating {}", key_path.display())))?;
    writeln!(f, "{SECRET_TAG} {}", B64.encode(secret)).map_err(io("writing the secret key"))?;
    f.sync_all().map_err(io("syncing the secret key"))?;
    let public = key.public();
    std::fs::write(&pub_path, public.to_line(comment) + "\n")
        .map_err(io(format!("writing {}", pub_path.display())))?;
    Ok(public)
}

/// `manifest.sig` text for `manifest` bytes.
pub fn signature_line(key: &SecretKey, manifest: &[u8]) -> String {
    format!(
        "molt-sig-v1 {} {}\n",
        key.public().id(),
        B64.encode(key.sign(manifest))
    )
}

/// Checks `manifest.sig` against the trusted keys.
pub fn verify_signature(
    manifest: &[u8],
    sig_line: &str,
    trusted: &[PublicKey],
) -> Result<(), ReleaseError> {
    if trusted.is_empty() {
        return Err(ReleaseError::NoTrustedKey);
    }
    let mut parts = sig_line.split_whitespace();
    if parts.next() != Some("molt-sig-v1") {
        return Err(ReleaseError::BadSignature);
    }
    let id = parts.next().ok_or(ReleaseError::BadSignature)?;
    let sig: [u8; 64] = parts
        .next()
        .and_then(|s| B64.decode(s).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or(ReleaseError::BadSignature)?;
    let key = trusted
        .iter()
        .find(|k| k.id() == id)
        .ok_or_else(|| ReleaseError::UnknownKey(id.to_owned()))?;
    if key.verify(manifest, &sig) {
        Ok(())
    } else {
        Err(ReleaseError::BadSignature)
    }
}

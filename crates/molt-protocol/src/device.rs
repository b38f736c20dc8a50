//! Device identity: an Ed25519 key whose id is the sha256 of its raw public key.
//!
//! A device proves possession of its key by signing, over the challenge nonce, one of:
//! - v2: `v2|deviceId|clientId|clientMode|role|scopesCsv|signedAtMs|token|nonce`
//! - v3: the v2 fields with `v3` first, then `|platform|deviceFamily` appended.
//!
//! Keys and signatures travel as base64url (padding accepted but not required).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD_INDIFFERENT as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::connect::ConnectParams;

/// Why a device proof was refused. The names follow the protocol's `details.code` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAuthError {
    PublicKeyInvalid,
    DeviceIdMismatch,
    NonceMismatch,
    SignatureExpired,
    SignatureInvalid,
}

impl DeviceAuthError {
    /// The `details.code` of the error.
    pub fn detail_code(self) -> &'static str {
        match self {
            Self::PublicKeyInvalid => "DEVICE_AUTH_PUBLIC_KEY_INVALID",
            Self::DeviceIdMismatch => "DEVICE_AUTH_DEVICE_ID_MISMATCH",
            Self::NonceMismatch => "DEVICE_AUTH_NONCE_MISMATCH",
            Self::SignatureExpired => "DEVICE_AUTH_SIGNATURE_EXPIRED",
            Self::SignatureInvalid => "DEVICE_AUTH_SIGNATURE_INVALID",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::PublicKeyInvalid => "device public key is not a valid Ed25519 key",
            Self::DeviceIdMismatch => "device id is not the sha256 of its public key",
            Self::NonceMismatch => "device signature is not over this connection's challenge",
            Self::SignatureExpired => "device signature is outside the allowed clock skew",
            Self::SignatureInvalid => "device signature does not verify",
        }
    }
}

/// The device id of a raw public key: lower-case sha256 hex.
pub fn device_id(public_key: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(public_key))
}

pub fn b64url(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn from_b64url(text: &str) -> Option<Vec<u8>> {
    B64.decode(text).ok()
}

/// The text a device signs. `v3` adds platform and device family.
pub fn signature_payload(
    params: &ConnectParams,
    device_id: &str,
    nonce: &str,
    signed_at: u64,
    v3: bool,
) -> String {
    let scopes = params.scopes.as_deref().unwrap_or_default().join(",");
    let mut s = format!(
        "{}|{}|{}|{}|{}|{}|{}|{}|{}",
        if v3 { "v3" } else { "v2" },
        device_id,
        params.client.id,
        params.client.mode,
        params.role(),
        scopes,
        signed_at,
        params.signed_token(),
        nonce
    );
    if v3 {
        s.push('|');
        s.push_str(&params.client.platform);
        s.push('|');
        s.push_str(params.client.device_family.as_deref().unwrap_or(""));
    }
    s
}

/// A device whose proof checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDevice {
    pub id: String,
    /// base64url of the raw public key.
    pub public_key: String,
}

/// Verifies `params.device` against the challenge `nonce` at time `now_ms`.
/// Accepts a v3 or a v2 signature.
pub fn verify(
    params: &ConnectParams,
    nonce: &str,
    now_ms: u64,
) -> Result<Option<VerifiedDevice>, DeviceAuthError> {
    let Some(proof) = &params.device else {
        return Ok(None);
    };
    let key: [u8; 32] = from_b64url(&proof.public_key)
        .and_then(|k| k.try_into().ok())
        .ok_or(DeviceAuthError::PublicKeyInvalid)?;
    let vk = VerifyingKey::from_bytes(&key).map_err(|_| DeviceAuthError::PublicKeyInvalid)?;
    if !proof.id.eq_ignore_ascii_case(&device_id(&key)) {
        return Err(DeviceAuthError::DeviceIdMismatch);
    }
    if proof.nonce != nonce {
        return Err(DeviceAuthError::NonceMismatch);
    }
    // abs_diff: no sign games with client-chosen u64 timestamps (found by fuzzing).
    if now_ms.abs_diff(proof.signed_at) > crate::SIGNATURE_SKEW_MS as u64 {
        return Err(DeviceAuthError::SignatureExpired);
    }
    let sig_bytes: [u8; 64] = from_b64url(&proof.signature)
        .and_then(|s| s.try_into().ok())
        .ok_or(DeviceAuthError::SignatureInvalid)?;
    let sig = Signature::from_bytes(&sig_bytes);
    let ok = [true, false].into_iter().any(|v3| {
        let payload = signature_payload(params, &proof.id, nonce, proof.signed_at, v3);
        vk.verify_strict(payload.as_bytes(), &sig).is_ok()
    });
    if !ok {
        return Err(DeviceAuthError::SignatureInvalid);
    }
    Ok(Some(VerifiedDevice {
        id: proof.id.to_ascii_lowercase(),
        public_key: proof.public_key.clone(),
    }))
}

/// A device key pair, as a client holds it.
pub struct DeviceKey(SigningKey);

impl DeviceKey {
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&secret))
    }

    pub fn secret(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    pub fn id(&self) -> String {
        device_id(&self.public_key())
    }

    /// Fills `params.device` with a v3 proof over `nonce`.
    pub fn sign_connect(&self, params: &mut ConnectParams, nonce: &str, now_ms: u64) {
        let id = self.id();
        let payload = signature_payload(params, &id, nonce, now_ms, true);
        let sig = self.0.sign(payload.as_bytes());
        params.device = Some(crate::connect::DeviceProof {
            id,
            public_key: b64url(&self.public_key()),
            signature: b64url(&sig.to_bytes()),
            signed_at: now_ms,
            nonce: nonce.to_owned(),
        });
    }
}

/// The stored form of a device token: `sha256:<hex>`. Only this is kept at rest.
pub fn token_digest(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::ClientInfo;

    fn params() -> ConnectParams {
        serde_json::from_value(serde_json::json!({
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "cli", "version": "1", "platform": "linux", "mode": "cli"},
            "scopes": ["operator.read", "operator.write"],
        }))
        .unwrap()
    }

    #[test]
    fn sign_and_verify() {
        let key = DeviceKey::from_secret([7; 32]);
        let mut p = params();
        key.sign_connect(&mut p, "n1", 1_000_000);
        let d = verify(&p, "n1", 1_000_000 + 60_000).unwrap().unwrap();
        assert_eq!(d.id, key.id());
        assert_eq!(d.id.len(), 64);
        assert_eq!(
            verify(&p, "n2", 1_000_000),
            Err(DeviceAuthError::NonceMismatch)
        );
        assert_eq!(
            verify(&p, "n1", 1_000_000 + 121_000),
            Err(DeviceAuthError::SignatureExpired)
        );
        // Extreme clocks and timestamps are refused, not wrapped around (found by fuzzing).
        assert_eq!(
            verify(&p, "n1", u64::MAX),
            Err(DeviceAuthError::SignatureExpired)
        );
        let mut far = p.clone();
        far.device.as_mut().unwrap().signed_at = u64::MAX;
        assert_eq!(
            verify(&far, "n1", 0),
            Err(DeviceAuthError::SignatureExpired)
        );
        let mut tampered = p.clone();
        tampered.scopes = Some(vec!["operator.admin".into()]);
        assert_eq!(
            verify(&tampered, "n1", 1_000_000),
            Err(DeviceAuthError::SignatureInvalid)
        );
        let mut wrong_id = p.clone();
        wrong_id.device.as_mut().unwrap().id = "00".repeat(32);
        assert_eq!(
            verify(&wrong_id, "n1", 1_000_000),
            Err(DeviceAuthError::DeviceIdMismatch)
        );
    }

    #[test]
    fn v2_signatures_verify() {
        let key = DeviceKey::from_secret([9; 32]);
        let mut p = params();
        let id = key.id();
        let payload = signature_payload(&p, &id, "n", 5, false);
        assert!(payload.starts_with(&format!(
            "v2|{id}|cli|cli|operator|operator.read,operator.write|5||n"
        )));
        let sig = key.0.sign(payload.as_bytes());
        p.device = Some(crate::connect::DeviceProof {
            id,
            public_key: b64url(&key.public_key()),
            signature: b64url(&sig.to_bytes()),
            signed_at: 5,
            nonce: "n".into(),
        });
        assert!(verify(&p, "n", 5).unwrap().is_some());
        let _unused: Option<ClientInfo> = None;
    }
}

//! The server side of the handshake: `connect.challenge` → `connect` → `hello-ok`.
//!
//! [`Handshake::on_frame`] takes the client's first frame and decides, without I/O, either to
//! reject (an error response and a close code) or that the connect is well-formed, speaks v4,
//! carries a valid device proof if any, and passes the shared-secret check. Pairing and device
//! tokens need the store, so the gateway finishes those.

use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::connect::ConnectParams;
use crate::device::{self, VerifiedDevice};
use crate::frame::{self, ErrorShape, ResponseFrame};
use crate::{PROTOCOL_VERSION, close};

/// How the gateway authenticates (config `gateway.auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthPolicy {
    None,
    Token(String),
    Password(String),
}

/// The outcome of the shared-secret check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretCheck {
    /// Auth mode `none`.
    NotRequired,
    /// The shared token or password matched.
    Passed,
    /// No shared secret, but a device token for the (verified) device: the gateway checks it.
    DeviceToken(String),
}

/// A connect that passed every check this crate can make.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub request_id: String,
    pub params: ConnectParams,
    pub device: Option<VerifiedDevice>,
    pub secret: SecretCheck,
}

/// A refused handshake: answer `response` (if any), then close with `close_code`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub response: Option<ResponseFrame>,
    pub close_code: u16,
    pub close_reason: String,
    /// A failed secret or signature: counts toward the auth rate limit.
    pub auth_failure: bool,
}

/// What the server does with the first frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Accept(Box<Accepted>),
    Reject(Rejected),
}

/// Handshake state of one connection.
#[derive(Debug, Clone)]
pub struct Handshake {
    nonce: String,
}

fn reject(id: Option<String>, error: ErrorShape, close_code: u16, auth_failure: bool) -> Decision {
    let close_reason = truncate(&error.message, 120);
    Decision::Reject(Rejected {
        response: id.map(|id| ResponseFrame::err(id, error)),
        close_code,
        close_reason,
        auth_failure,
    })
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn auth_error(message: &str, detail: &str) -> ErrorShape {
    ErrorShape::invalid(message).with_details(json!({ "code": detail }))
}

/// Constant-time equality of two secrets, whatever their lengths.
pub fn secret_eq(a: &str, b: &str) -> bool {
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    bool::from(da.as_slice().ct_eq(db.as_slice()))
}

impl Handshake {
    /// Starts a handshake with the nonce the server sends in `connect.challenge`.
    pub fn new(nonce: impl Into<String>) -> Self {
        Self {
            nonce: nonce.into(),
        }
    }

    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// The `connect.challenge` event payload.
    pub fn challenge_payload(&self, now_ms: u64) -> serde_json::Value {
        json!({ "nonce": self.nonce, "ts": now_ms })
    }

    /// Decides on the client's first frame.
    pub fn on_frame(&self, text: &str, policy: &AuthPolicy, now_ms: u64) -> Decision {
        if text.len() > crate::PRE_AUTH_MAX_FRAME {
            return reject(
                None,
                ErrorShape::invalid("frame too large before connect"),
                close::TOO_BIG,
                false,
            );
        }
        let req = match frame::parse_request(text) {
            Ok(r) => r,
            Err(e) => return reject(e.id, ErrorShape::invalid(e.message), close::POLICY, false),
        };
        if req.method != "connect" {
            return reject(
                Some(req.id),
                ErrorShape::invalid("the first request must be connect"),
                close::POLICY,
                false,
            );
        }
        let params: ConnectParams = match req.params.clone().map(serde_json::from_value) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                return reject(
                    Some(req.id),
                    ErrorShape::invalid(format!("invalid connect params: {e}")),
                    close::POLICY,
                    false,
                );
            }
            None => {
                return reject(
                    Some(req.id),
                    ErrorShape::invalid("connect needs params"),
                    close::POLICY,
                    false,
                );
            }
        };
        if let Err(e) = params.validate() {
            return reject(
                Some(req.id),
                ErrorShape::invalid(format!("invalid connect params: {e}")),
                close::POLICY,
                false,
            );
        }
        if params.max_protocol < PROTOCOL_VERSION || params.min_protocol > PROTOCOL_VERSION {
            let err = ErrorShape::invalid("protocol mismatch").with_details(json!({
                "code": "PROTOCOL_MISMATCH",
                "expectedProtocol": PROTOCOL_VERSION,
                "clientMinProtocol": params.min_protocol,
                "clientMaxProtocol": params.max_protocol,
            }));
            return reject(Some(req.id), err, close::PROTOCOL_ERROR, false);
        }
        let device = match device::verify(&params, &self.nonce, now_ms) {
            Ok(d) => d,
            Err(e) => {
                return reject(
                    Some(req.id),
                    auth_error(e.message(), e.detail_code()),
                    close::POLICY,
                    true,
                );
            }
        };
        let auth = params.auth.clone().unwrap_or_default();
        let secret = match policy {
            // A credential that is presented is checked, even when none is required.
            AuthPolicy::None => match (&auth.device_token, &device) {
                (Some(t), Some(_)) => SecretCheck::DeviceToken(t.clone()),
                _ => SecretCheck::NotRequired,
            },
            AuthPolicy::Token(expected) | AuthPolicy::Password(expected) => {
                let is_token = matches!(policy, AuthPolicy::Token(_));
                let given = if is_token {
                    &auth.token
                } else {
                    &auth.password
                };
                let (missing, mismatch, what) = if is_token {
                    ("AUTH_TOKEN_MISSING", "AUTH_TOKEN_MISMATCH", "token")
                } else {
                    (
                        "AUTH_PASSWORD_MISSING",
                        "AUTH_PASSWORD_MISMATCH",
                        "password",
                    )
                };
                match (given, &auth.device_token, &device) {
                    (Some(g), _, _) if secret_eq(g, expected) => SecretCheck::Passed,
                    (Some(_), _, _) => {
                        return reject(
                            Some(req.id),
                            auth_error(&format!("gateway {what} mismatch"), mismatch),
                            close::POLICY,
                            true,
                        );
                    }
                    (None, Some(t), Some(_)) => SecretCheck::DeviceToken(t.clone()),
                    (None, _, _) => {
                        return reject(
                            Some(req.id),
                            auth_error(&format!("gateway {what} missing"), missing),
                            close::POLICY,
                            true,
                        );
                    }
                }
            }
        };
        Decision::Accept(Box::new(Accepted {
            request_id: req.id,
            params,
            device,
            secret,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceKey;

    fn connect(extra: serde_json::Value) -> String {
        let mut params = json!({
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "test", "version": "1", "platform": "linux", "mode": "test"},
        });
        if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        json!({"type": "req", "id": "c1", "method": "connect", "params": params}).to_string()
    }

    fn rejected(d: Decision) -> Rejected {
        match d {
            Decision::Reject(r) => r,
            Decision::Accept(a) => panic!("accepted: {a:?}"),
        }
    }

    fn detail(r: &Rejected) -> String {
        r.response
            .as_ref()
            .unwrap()
            .error
            .as_ref()
            .unwrap()
            .details
            .as_ref()
            .unwrap()["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn happy_path_without_auth() {
        let hs = Handshake::new("n");
        match hs.on_frame(&connect(json!({})), &AuthPolicy::None, 0) {
            Decision::Accept(a) => assert_eq!(a.secret, SecretCheck::NotRequired),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn protocol_mismatch_closes_1002() {
        let hs = Handshake::new("n");
        let r = rejected(hs.on_frame(
            &connect(json!({"minProtocol": 2, "maxProtocol": 3})),
            &AuthPolicy::None,
            0,
        ));
        assert_eq!(r.close_code, 1002);
        assert_eq!(detail(&r), "PROTOCOL_MISMATCH");
    }

    #[test]
    fn first_frame_must_be_connect() {
        let hs = Handshake::new("n");
        let r = rejected(hs.on_frame(
            r#"{"type":"req","id":"1","method":"health"}"#,
            &AuthPolicy::None,
            0,
        ));
        assert_eq!(r.close_code, 1008);
        assert!(r.response.is_some());
        let r = rejected(hs.on_frame(&"x".repeat(70_000), &AuthPolicy::None, 0));
        assert_eq!(r.close_code, 1009);
        let r = rejected(hs.on_frame(&connect(json!({"bogus": 1})), &AuthPolicy::None, 0));
        assert!(r.response.unwrap().error.unwrap().message.contains("bogus"));
        for bad in [json!({"scopes": ["a,b"]}), json!({"role": "operator|x"})] {
            let r = rejected(hs.on_frame(&connect(bad), &AuthPolicy::None, 0));
            assert_eq!(r.close_code, 1008);
        }
    }

    #[test]
    fn token_auth() {
        let hs = Handshake::new("n");
        let policy = AuthPolicy::Token("s3cret".into());
        let r = rejected(hs.on_frame(&connect(json!({})), &policy, 0));
        assert_eq!(detail(&r), "AUTH_TOKEN_MISSING");
        assert!(r.auth_failure);
        let r = rejected(hs.on_frame(&connect(json!({"auth": {"token": "nope"}})), &policy, 0));
        assert_eq!(detail(&r), "AUTH_TOKEN_MISMATCH");
        assert!(matches!(
            hs.on_frame(&connect(json!({"auth": {"token": "s3cret"}})), &policy, 0),
            Decision::Accept(_)
        ));
    }

    #[test]
    fn device_proofs() {
        let hs = Handshake::new("nonce-1");
        let key = DeviceKey::from_secret([3; 32]);
        let mut p: ConnectParams = serde_json::from_value(json!({
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "cli", "version": "1", "platform": "linux", "mode": "cli"},
        }))
        .unwrap();
        key.sign_connect(&mut p, "nonce-1", 10_000_000);
        let text = json!({"type":"req","id":"1","method":"connect","params":p}).to_string();
        match hs.on_frame(&text, &AuthPolicy::None, 10_000_000) {
            Decision::Accept(a) => assert_eq!(a.device.unwrap().id, key.id()),
            other => panic!("{other:?}"),
        }
        let r = rejected(hs.on_frame(&text, &AuthPolicy::None, 10_000_000 + 200_000));
        assert_eq!(detail(&r), "DEVICE_AUTH_SIGNATURE_EXPIRED");
        let r = rejected(Handshake::new("other").on_frame(&text, &AuthPolicy::None, 10_000_000));
        assert_eq!(detail(&r), "DEVICE_AUTH_NONCE_MISMATCH");
    }

    #[test]
    fn presented_device_token_is_checked_even_without_auth() {
        let hs = Handshake::new("n");
        let key = DeviceKey::from_secret([5; 32]);
        let mut p: ConnectParams = serde_json::from_value(json!({
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "cli", "version": "1", "platform": "linux", "mode": "cli"},
            "auth": {"deviceToken": "dt"},
        }))
        .unwrap();
        key.sign_connect(&mut p, "n", 1000);
        let text = json!({"type":"req","id":"1","method":"connect","params":p}).to_string();
        match hs.on_frame(&text, &AuthPolicy::None, 1000) {
            Decision::Accept(a) => assert_eq!(a.secret, SecretCheck::DeviceToken("dt".into())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn secrets_compare() {
        assert!(secret_eq("a", "a"));
        assert!(!secret_eq("a", "ab"));
    }
}

//! Invariants every `Handshake::on_frame` decision must satisfy, whatever the input.
#![allow(dead_code)]

use arbitrary::Arbitrary;
use molt_protocol::connect::ConnectParams;
use molt_protocol::frame::{self, RequestFrame};
use molt_protocol::handshake::{AuthPolicy, Decision, Handshake, SecretCheck};
use molt_protocol::{PRE_AUTH_MAX_FRAME, PROTOCOL_VERSION, SIGNATURE_SKEW_MS, close, device};

/// A fuzz-chosen `gateway.auth`.
#[derive(Debug, Clone, Arbitrary)]
pub enum PolicyIn {
    None,
    Token(String),
    Password(String),
}

impl PolicyIn {
    pub fn policy(&self) -> AuthPolicy {
        match self {
            Self::None => AuthPolicy::None,
            Self::Token(t) => AuthPolicy::Token(t.clone()),
            Self::Password(p) => AuthPolicy::Password(p.clone()),
        }
    }
}

/// A fuzz-chosen clock: mostly a realistic one, sometimes any `u64`.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum NowIn {
    Realistic(u32),
    Any(u64),
}

impl NowIn {
    pub fn ms(self) -> u64 {
        match self {
            Self::Realistic(d) => 1_700_000_000_000 + u64::from(d),
            Self::Any(ms) => ms,
        }
    }
}

/// Checks the invariants of one decision; calls `on_frame` a second time to check determinism.
pub fn check(hs: &Handshake, text: &str, policy: &AuthPolicy, now_ms: u64, d: &Decision) {
    let again = hs.on_frame(text, policy, now_ms);
    assert_eq!(&again, d, "on_frame is not deterministic");

    match d {
        Decision::Reject(r) => {
            assert!(
                [close::PROTOCOL_ERROR, close::POLICY, close::TOO_BIG].contains(&r.close_code),
                "close code {} outside {{1002, 1008, 1009}}",
                r.close_code
            );
            assert!(r.close_reason.len() <= 120, "close reason over 120 bytes");
            assert_eq!(
                r.close_code == close::TOO_BIG,
                text.len() > PRE_AUTH_MAX_FRAME,
                "1009 iff the frame is over the pre-auth limit"
            );
            if r.auth_failure {
                assert_eq!(r.close_code, close::POLICY, "an auth failure closes 1008");
            }
            if let Some(res) = &r.response {
                assert!(!res.ok, "a rejection answered ok");
                assert!(!res.id.is_empty(), "a rejection answered on an empty id");
                assert!(res.payload.is_none());
                let err = res.error.as_ref().expect("a rejection carries an error");
                assert_eq!(err.code, frame::code::INVALID_REQUEST);
                // The text must survive the wire.
                let _ = res.to_text();
            }
            if r.close_code == close::PROTOCOL_ERROR {
                let p = connect_params(text).expect("1002 only for a well-formed connect");
                assert!(
                    p.max_protocol < PROTOCOL_VERSION || p.min_protocol > PROTOCOL_VERSION,
                    "1002 for a connect that speaks v4"
                );
            }
        }
        Decision::Accept(a) => {
            let req = frame::parse_request(text).expect("accepted a frame that does not parse");
            assert_eq!(req.method, "connect", "accepted a non-connect");
            assert_eq!(a.request_id, req.id);
            let p: ConnectParams = serde_json::from_value(
                req.params.clone().expect("accepted a connect without params"),
            )
            .expect("accepted params that do not parse");
            assert_eq!(p, a.params);
            assert!(p.validate().is_ok(), "accepted params that do not validate");
            assert!(
                a.params.max_protocol >= PROTOCOL_VERSION
                    && PROTOCOL_VERSION >= a.params.min_protocol,
                "accepted min {} max {}",
                a.params.min_protocol,
                a.params.max_protocol
            );

            // A verified device: its proof is over this nonce, within the skew, and re-verifies.
            if let Some(dev) = &a.device {
                let proof = a.params.device.as_ref().expect("a device without a proof");
                assert_eq!(dev.id, proof.id.to_ascii_lowercase());
                assert_eq!(dev.public_key, proof.public_key);
                assert_eq!(proof.nonce, hs.nonce(), "device proof over another nonce");
                let skew = now_ms.abs_diff(proof.signed_at);
                assert!(
                    skew <= SIGNATURE_SKEW_MS as u64,
                    "device proof accepted {skew} ms away from now (signedAt {}, now {now_ms})",
                    proof.signed_at
                );
                assert_eq!(device::verify(&a.params, hs.nonce(), now_ms), Ok(Some(dev.clone())));
            } else {
                assert!(a.params.device.is_none(), "a device proof was ignored");
            }

            let auth = a.params.auth.clone().unwrap_or_default();
            let device_token_ok = |t: &String| {
                a.device.is_some() && auth.device_token.as_ref() == Some(t)
            };
            match policy {
                AuthPolicy::None => match &a.secret {
                    SecretCheck::NotRequired => {}
                    SecretCheck::DeviceToken(t) => assert!(device_token_ok(t)),
                    SecretCheck::Passed => panic!("Passed under auth none"),
                },
                AuthPolicy::Token(t) => match &a.secret {
                    SecretCheck::Passed => assert_eq!(auth.token.as_ref(), Some(t), "token"),
                    SecretCheck::DeviceToken(dt) => {
                        assert!(device_token_ok(dt));
                        assert!(auth.token.is_none(), "a wrong token fell back to the device token");
                    }
                    SecretCheck::NotRequired => panic!("NotRequired under auth token"),
                },
                AuthPolicy::Password(pw) => match &a.secret {
                    SecretCheck::Passed => assert_eq!(auth.password.as_ref(), Some(pw), "password"),
                    SecretCheck::DeviceToken(dt) => {
                        assert!(device_token_ok(dt));
                        assert!(auth.password.is_none(), "a wrong password fell back");
                    }
                    SecretCheck::NotRequired => panic!("NotRequired under auth password"),
                },
            }
        }
    }
}

/// The connect params of `text`, when it is a well-formed connect request.
fn connect_params(text: &str) -> Option<ConnectParams> {
    let req: RequestFrame = frame::parse_request(text).ok()?;
    if req.method != "connect" {
        return None;
    }
    serde_json::from_value(req.params?).ok()
}

//! `Handshake::on_frame` on mostly valid `connect` frames built from arbitrary fields, often
//! signed with a real device key (v3 through `DeviceKey::sign_connect`, or v2 by hand) and then
//! sometimes tampered with, so the fuzzer spends its time past parsing: in validation, the
//! protocol range, the device proof and the shared-secret check.
//!
//! Besides the invariants of `common::check`, every input is run against a small model of the
//! handshake written from the protocol (independently of the crate's code), which predicts the
//! decision exactly: the close code, the `details.code`, `auth_failure`, the verified device
//! and the secret check. Any difference is a failure.
#![no_main]

mod common;

use arbitrary::Arbitrary;
use common::{NowIn, PolicyIn};
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use molt_protocol::connect::{
    CLIENT_IDS, CLIENT_MODES, ClientInfo, ConnectAuth, ConnectParams, DeviceProof,
};
use molt_protocol::device::{self, DeviceKey};
use molt_protocol::handshake::{Decision, Handshake, SecretCheck};
use molt_protocol::{PRE_AUTH_MAX_FRAME, PROTOCOL_VERSION, SIGNATURE_SKEW_MS};
use serde_json::{Value, json};

#[derive(Debug, Arbitrary)]
struct Input {
    policy: PolicyIn,
    nonce: String,
    now: NowIn,
    request_id: IdIn,
    method: MethodIn,
    traceparent: Option<String>,
    frame_extra: bool,
    params: ParamsMode,
    params_extra: bool,
    min_protocol: ProtoIn,
    max_protocol: ProtoIn,
    client_id: EnumIn,
    client_mode: EnumIn,
    version: TextIn,
    platform: TextIn,
    device_family: Option<String>,
    display_name: Option<String>,
    locale: Option<String>,
    role: Option<String>,
    scopes: Option<Vec<String>>,
    caps: Option<Vec<String>>,
    auth: Option<AuthIn>,
    device: DeviceIn,
}

#[derive(Debug, Arbitrary)]
enum IdIn {
    Fixed,
    Any(String),
}

#[derive(Debug, Arbitrary)]
enum MethodIn {
    Connect,
    Any(String),
}

#[derive(Debug, Arbitrary)]
enum ParamsMode {
    Object,
    Absent,
    Null,
    NotAnObject(i64),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum ProtoIn {
    Four,
    Small(u8),
    Any(u32),
}

impl ProtoIn {
    fn get(self) -> u32 {
        match self {
            Self::Four => 4,
            Self::Small(v) => u32::from(v % 8),
            Self::Any(v) => v,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum EnumIn {
    Known(u8),
    Any(String),
}

impl EnumIn {
    fn get(&self, known: &[&str]) -> String {
        match self {
            Self::Known(i) => known[usize::from(*i) % known.len()].to_owned(),
            Self::Any(s) => s.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum TextIn {
    Plain,
    Any(String),
}

impl TextIn {
    fn get(&self, plain: &str) -> String {
        match self {
            Self::Plain => plain.to_owned(),
            Self::Any(s) => s.clone(),
        }
    }
}

/// A credential: absent, the policy's secret exactly, or anything.
#[derive(Debug, Arbitrary)]
enum SecretIn {
    Absent,
    PolicySecret,
    Any(String),
}

impl SecretIn {
    fn get(&self, policy: &PolicyIn) -> Option<String> {
        match self {
            Self::Absent => None,
            Self::PolicySecret => Some(match policy {
                PolicyIn::None => String::new(),
                PolicyIn::Token(s) | PolicyIn::Password(s) => s.clone(),
            }),
            Self::Any(s) => Some(s.clone()),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct AuthIn {
    token: SecretIn,
    password: SecretIn,
    device_token: Option<String>,
    bootstrap_token: Option<String>,
}

#[derive(Debug, Arbitrary)]
enum DeviceIn {
    None,
    /// A real key signs; the proof is then maybe tampered with.
    Signed {
        secret: [u8; 32],
        v2: bool,
        /// The proof's nonce: the challenge's, or another.
        other_nonce: Option<String>,
        signed_at: TimeIn,
        tamper: Tamper,
    },
    /// Arbitrary proof fields: never verifiable.
    Raw {
        id: String,
        public_key: String,
        signature: String,
        signed_at: u64,
        nonce_is_challenge: bool,
        nonce: String,
    },
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum TimeIn {
    Now,
    /// `now + offset`, wrapping.
    Offset(i32),
    Any(u64),
}

/// A change after signing.
#[derive(Debug, Arbitrary)]
enum Tamper {
    None,
    FlipSignature { index: u8, xor: u8 },
    Role(Option<String>),
    Scopes(Option<Vec<String>>),
    Token(Option<String>),
    DeviceToken(Option<String>),
    Password(Option<String>),
    Platform(String),
    DeviceFamily(Option<String>),
    /// Not covered by the signature.
    Version(String),
    Locale(Option<String>),
    UppercaseId,
    PadPublicKey,
    Id(String),
    SignedAt(u64),
}

/// What the model predicts.
#[derive(Debug, PartialEq)]
enum Expect {
    Reject {
        close_code: u16,
        response: bool,
        detail: Option<String>,
        auth_failure: bool,
    },
    Accept {
        device: Option<String>,
        secret: SecretCheck,
    },
}

fn reject(close_code: u16, response: bool, detail: Option<&'static str>, auth: bool) -> Expect {
    Expect::Reject {
        close_code,
        response,
        detail: detail.map(str::to_owned),
        auth_failure: auth,
    }
}

/// What one signature version covers, written out as the protocol defines it:
/// `v2|deviceId|clientId|clientMode|role|scopesCsv|signedAtMs|token|nonce`, and for v3 the same
/// with `v3` first and `|platform|deviceFamily` appended. Fields are joined, not escaped, so
/// different params can share a payload (scopes `[""]` and `[]`, say); the model compares the
/// payload text, as a verifier must.
#[derive(Debug, PartialEq)]
struct Signed {
    v3: bool,
    payload: String,
}

fn signed_fields(p: &ConnectParams, v3: bool) -> Signed {
    let proof = p.device.as_ref().unwrap();
    let auth = p.auth.clone().unwrap_or_default();
    let mut fields = vec![
        if v3 { "v3" } else { "v2" }.to_owned(),
        proof.id.clone(),
        p.client.id.clone(),
        p.client.mode.clone(),
        p.role.clone().unwrap_or_else(|| "operator".into()),
        p.scopes.clone().unwrap_or_default().join(","),
        proof.signed_at.to_string(),
        auth.token.or(auth.device_token).unwrap_or_default(),
        proof.nonce.clone(),
    ];
    if v3 {
        fields.push(p.client.platform.clone());
        fields.push(p.client.device_family.clone().unwrap_or_default());
    }
    Signed {
        v3,
        payload: fields.join("|"),
    }
}

/// The device model: `Ok(Some(lowercase id))`, `Ok(None)` or the `details.code`.
/// `signed` is the covered fields at signing time and whether the signature bytes were kept.
fn model_device(
    p: &ConnectParams,
    key_id: Option<&str>,
    signed: Option<(Signed, bool)>,
    nonce: &str,
    now_ms: u64,
) -> Result<Option<String>, &'static str> {
    let Some(proof) = &p.device else {
        return Ok(None);
    };
    let (Some(key_id), Some((at_signing, sig_intact))) = (key_id, signed) else {
        // A raw proof: some DEVICE_AUTH_* error, the model does not say which.
        return Err("DEVICE_AUTH_*");
    };
    if !proof.id.eq_ignore_ascii_case(key_id) {
        return Err("DEVICE_AUTH_DEVICE_ID_MISMATCH");
    }
    if proof.nonce != nonce {
        return Err("DEVICE_AUTH_NONCE_MISMATCH");
    }
    if now_ms.abs_diff(proof.signed_at) > SIGNATURE_SKEW_MS as u64 {
        return Err("DEVICE_AUTH_SIGNATURE_EXPIRED");
    }
    if !sig_intact || signed_fields(p, at_signing.v3) != at_signing {
        return Err("DEVICE_AUTH_SIGNATURE_INVALID");
    }
    Ok(Some(proof.id.to_ascii_lowercase()))
}

fn auth_of(p: &mut ConnectParams) -> &mut ConnectAuth {
    p.auth.get_or_insert_with(ConnectAuth::default)
}

fn model_valid(p: &ConnectParams) -> bool {
    CLIENT_IDS.contains(&p.client.id.as_str())
        && CLIENT_MODES.contains(&p.client.mode.as_str())
        && !p.client.version.is_empty()
        && !p.client.platform.is_empty()
        && p.min_protocol >= 1
        && p.max_protocol >= 1
        && p.role.as_deref() != Some("")
        && p.scopes.as_ref().is_none_or(|s| s.iter().all(|s| !s.is_empty()))
}

/// With the `realistic-clock` feature, times stay below 2^63 (where `u64 as i64` is exact).
fn clock(ms: u64) -> u64 {
    if cfg!(feature = "realistic-clock") {
        ms & (u64::MAX >> 1)
    } else {
        ms
    }
}

fuzz_target!(|input: Input| run(input));

fn run(input: Input) {
    let policy = input.policy.policy();
    let now_ms = clock(input.now.ms());
    let hs = Handshake::new(input.nonce.clone());

    let mut params = ConnectParams {
        min_protocol: input.min_protocol.get(),
        max_protocol: input.max_protocol.get(),
        client: ClientInfo {
            id: input.client_id.get(CLIENT_IDS),
            display_name: input.display_name.clone(),
            version: input.version.get("1.2.3"),
            build_id: None,
            platform: input.platform.get("linux"),
            device_family: input.device_family.clone(),
            model_identifier: None,
            time_zone: None,
            mode: input.client_mode.get(CLIENT_MODES),
            instance_id: None,
        },
        caps: input.caps.clone(),
        commands: None,
        computer_use: None,
        worker_runs: None,
        permissions: None,
        path_env: None,
        role: input.role.clone(),
        scopes: input.scopes.clone(),
        device: None,
        auth: input.auth.as_ref().map(|a| ConnectAuth {
            token: a.token.get(&input.policy),
            bootstrap_token: a.bootstrap_token.clone(),
            device_token: a.device_token.clone(),
            password: a.password.get(&input.policy),
            approval_runtime_token: None,
            agent_runtime_identity_token: None,
        }),
        locale: input.locale.clone(),
        user_agent: None,
    };

    // The device proof, and what the model needs to know about it.
    let mut key_id = None;
    let mut signed = None;
    match &input.device {
        DeviceIn::None => {}
        DeviceIn::Signed {
            secret,
            v2,
            other_nonce,
            signed_at,
            tamper,
        } => {
            let key = DeviceKey::from_secret(*secret);
            let proof_nonce = other_nonce.clone().unwrap_or_else(|| input.nonce.clone());
            let at = match *signed_at {
                TimeIn::Now => now_ms,
                TimeIn::Offset(d) => now_ms.wrapping_add_signed(i64::from(d)),
                TimeIn::Any(t) => t,
            };
            let at = clock(at);
            if *v2 {
                let id = key.id();
                let payload = device::signature_payload(&params, &id, &proof_nonce, at, false);
                let sig = SigningKey::from_bytes(secret).sign(payload.as_bytes());
                params.device = Some(DeviceProof {
                    id,
                    public_key: device::b64url(&key.public_key()),
                    signature: device::b64url(&sig.to_bytes()),
                    signed_at: at,
                    nonce: proof_nonce,
                });
            } else {
                key.sign_connect(&mut params, &proof_nonce, at);
            }
            let at_signing = signed_fields(&params, !*v2);
            let mut sig_intact = true;
            match tamper {
                Tamper::None => {}
                Tamper::FlipSignature { index, xor } => {
                    let proof = params.device.as_mut().unwrap();
                    let mut sig = device::from_b64url(&proof.signature).unwrap();
                    let i = usize::from(*index) % sig.len();
                    let x = if *xor == 0 { 1 } else { *xor };
                    sig[i] ^= x;
                    proof.signature = device::b64url(&sig);
                    sig_intact = false;
                }
                Tamper::Role(r) => params.role = r.clone(),
                Tamper::Scopes(s) => params.scopes = s.clone(),
                Tamper::Token(t) => auth_of(&mut params).token = t.clone(),
                Tamper::DeviceToken(t) => auth_of(&mut params).device_token = t.clone(),
                Tamper::Password(t) => auth_of(&mut params).password = t.clone(),
                Tamper::Platform(s) => params.client.platform = s.clone(),
                Tamper::DeviceFamily(s) => params.client.device_family = s.clone(),
                Tamper::Version(s) => params.client.version = s.clone(),
                Tamper::Locale(s) => params.locale = s.clone(),
                Tamper::UppercaseId => {
                    let proof = params.device.as_mut().unwrap();
                    proof.id = proof.id.to_ascii_uppercase();
                }
                Tamper::PadPublicKey => params.device.as_mut().unwrap().public_key.push('='),
                Tamper::Id(s) => params.device.as_mut().unwrap().id = s.clone(),
                Tamper::SignedAt(t) => params.device.as_mut().unwrap().signed_at = clock(*t),
            }
            key_id = Some(key.id());
            signed = Some((at_signing, sig_intact));
        }
        DeviceIn::Raw {
            id,
            public_key,
            signature,
            signed_at,
            nonce_is_challenge,
            nonce,
        } => {
            params.device = Some(DeviceProof {
                id: id.clone(),
                public_key: public_key.clone(),
                signature: signature.clone(),
                signed_at: *signed_at,
                nonce: if *nonce_is_challenge {
                    input.nonce.clone()
                } else {
                    nonce.clone()
                },
            });
        }
    }

    // The frame.
    let request_id = match &input.request_id {
        IdIn::Fixed => "c1".to_owned(),
        IdIn::Any(s) => s.clone(),
    };
    let method = match &input.method {
        MethodIn::Connect => "connect".to_owned(),
        MethodIn::Any(s) => s.clone(),
    };
    let mut frame = json!({"type": "req", "id": request_id, "method": method});
    match input.params {
        ParamsMode::Object => {
            let mut v = serde_json::to_value(&params).unwrap();
            if input.params_extra {
                v["extraField"] = json!(1);
            }
            frame["params"] = v;
        }
        ParamsMode::Absent => {}
        ParamsMode::Null => frame["params"] = Value::Null,
        ParamsMode::NotAnObject(n) => frame["params"] = json!(n),
    }
    if let Some(t) = &input.traceparent {
        frame["traceparent"] = json!(t);
    }
    if input.frame_extra {
        frame["extra"] = json!(true);
    }
    let text = frame.to_string();

    let d = hs.on_frame(&text, &policy, now_ms);
    common::check(&hs, &text, &policy, now_ms, &d);

    // The model.
    let has_id = !request_id.is_empty();
    let expect = if text.len() > PRE_AUTH_MAX_FRAME {
        reject(1009, false, None, false)
    } else if input.frame_extra
        || request_id.is_empty()
        || method.is_empty()
        || input.traceparent.as_ref().is_some_and(|t| t.len() > 128)
    {
        reject(1008, has_id, None, false)
    } else if method != "connect" {
        reject(1008, true, None, false)
    } else if !matches!(input.params, ParamsMode::Object) || input.params_extra {
        reject(1008, true, None, false)
    } else if !model_valid(&params) {
        reject(1008, true, None, false)
    } else if params.max_protocol < PROTOCOL_VERSION || params.min_protocol > PROTOCOL_VERSION {
        reject(1002, true, Some("PROTOCOL_MISMATCH"), false)
    } else {
        match model_device(&params, key_id.as_deref(), signed, hs.nonce(), now_ms) {
            Err(code) => reject(1008, true, Some(code), true),
            Ok(device) => {
                let auth = params.auth.clone().unwrap_or_default();
                let device_token = match (&auth.device_token, &device) {
                    (Some(t), Some(_)) => Some(SecretCheck::DeviceToken(t.clone())),
                    _ => None,
                };
                let secret = match &input.policy {
                    PolicyIn::None => Ok(device_token.unwrap_or(SecretCheck::NotRequired)),
                    PolicyIn::Token(s) | PolicyIn::Password(s) => {
                        let is_token = matches!(input.policy, PolicyIn::Token(_));
                        let given = if is_token { &auth.token } else { &auth.password };
                        match (given, device_token) {
                            (Some(g), _) if g == s => Ok(SecretCheck::Passed),
                            (Some(_), _) if is_token => Err("AUTH_TOKEN_MISMATCH"),
                            (Some(_), _) => Err("AUTH_PASSWORD_MISMATCH"),
                            (None, Some(dt)) => Ok(dt),
                            (None, None) if is_token => Err("AUTH_TOKEN_MISSING"),
                            (None, None) => Err("AUTH_PASSWORD_MISSING"),
                        }
                    }
                };
                match secret {
                    Ok(secret) => Expect::Accept { device, secret },
                    Err(code) => reject(1008, true, Some(code), true),
                }
            }
        }
    };

    let got = match &d {
        Decision::Accept(a) => {
            assert_eq!(a.params, params, "accepted params differ from those sent");
            Expect::Accept {
                device: a.device.as_ref().map(|d| d.id.clone()),
                secret: a.secret.clone(),
            }
        }
        Decision::Reject(r) => {
            let detail = r
                .response
                .as_ref()
                .and_then(|res| res.error.as_ref())
                .and_then(|e| e.details.as_ref())
                .and_then(|d| d["code"].as_str())
                .map(|c| {
                    // Map onto the model's names (a raw device proof: any DEVICE_AUTH_*).
                    if matches!(input.device, DeviceIn::Raw { .. }) && c.starts_with("DEVICE_AUTH_") {
                        "DEVICE_AUTH_*".to_owned()
                    } else {
                        c.to_owned()
                    }
                });
            Expect::Reject {
                close_code: r.close_code,
                response: r.response.is_some(),
                detail,
                auth_failure: r.auth_failure,
            }
        }
    };
    assert_eq!(
        got, expect,
        "decision differs from the model\nframe: {text}\nnow_ms: {now_ms}\ndecision: {d:?}"
    );
}

//! `Handshake::on_frame` on arbitrary text, under a fuzz-chosen policy, nonce and clock.
//!
//! Input layout (so seeds can be plain JSON after a short header):
//! - byte 0: policy, `% 3`: none, token, password;
//! - byte 1: the policy's secret, `% 4` of [`SECRETS`];
//! - byte 2: the challenge nonce, `% 3` of [`NONCES`];
//! - bytes 3..11: `now_ms`, little-endian;
//! - the rest: the frame text (UTF-8, lossily).
//!
//! The invariants are in `common::check`.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use molt_protocol::handshake::{AuthPolicy, Handshake};

const SECRETS: [&str; 4] = ["s3cret", "", "hunter2", "p\u{e4}ss|w\u{f6}rd"];
const NONCES: [&str; 3] = ["nonce-1", "", "n"];

fuzz_target!(|data: &[u8]| {
    if data.len() < 11 {
        return;
    }
    let secret = SECRETS[usize::from(data[1]) % SECRETS.len()].to_owned();
    let policy = match data[0] % 3 {
        0 => AuthPolicy::None,
        1 => AuthPolicy::Token(secret),
        _ => AuthPolicy::Password(secret),
    };
    let nonce = NONCES[usize::from(data[2]) % NONCES.len()];
    let now_ms = u64::from_le_bytes(data[3..11].try_into().unwrap());
    let text = String::from_utf8_lossy(&data[11..]);

    let hs = Handshake::new(nonce);
    let d = hs.on_frame(&text, &policy, now_ms);
    common::check(&hs, &text, &policy, now_ms, &d);
});

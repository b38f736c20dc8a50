//! The OpenClaw gateway WebSocket protocol, version 4, as molt speaks it.
//!
//! This crate is pure: no I/O, no clock, no randomness of its own. The gateway and the client
//! both build on it, and the fuzz targets drive it directly.
//!
//! - [`frame`]: `req`/`res`/`event` frames, strict parsing, error shapes.
//! - [`connect`]: the `connect` params and the `hello-ok` payload.
//! - [`device`]: Ed25519 device identity and the v2/v3 signature payloads.
//! - [`scope`]: operator scopes and how they imply each other.
//! - [`method`] and [`methods`]: one typed declaration per method (name, scope, params,
//!   result); the gateway routes with them and the client calls with them.
//! - [`handshake`]: the server side of the handshake as a state machine.

pub mod connect;
pub mod device;
pub mod frame;
pub mod handshake;
pub mod method;
pub mod methods;
pub mod scope;
pub mod transcript;

/// The protocol version molt implements.
pub const PROTOCOL_VERSION: u32 = 4;
/// Frames before a successful `connect` are capped at this size.
pub const PRE_AUTH_MAX_FRAME: usize = 64 * 1024;
/// `policy.maxPayload` default: 25 MiB.
pub const MAX_PAYLOAD: usize = 25 * 1024 * 1024;
/// `policy.maxBufferedBytes` default: 50 MiB.
pub const MAX_BUFFERED_BYTES: usize = 50 * 1024 * 1024;
/// `policy.tickIntervalMs` default.
pub const TICK_INTERVAL_MS: u64 = 15_000;
/// A connection that has not completed `connect` by then is closed.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 15_000;
/// Allowed clock skew for a device signature's `signedAt`.
pub const SIGNATURE_SKEW_MS: i64 = 2 * 60 * 1000;

/// WebSocket close codes molt uses.
pub mod close {
    /// Protocol error: a version mismatch.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Policy violation: bad handshake, failed auth.
    pub const POLICY: u16 = 1008;
    /// A frame above the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The gateway restarts or stops; reconnect.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Too many connections waiting to authenticate; this one was shed. Retry.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

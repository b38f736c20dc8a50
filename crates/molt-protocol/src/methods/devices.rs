//! Device pairing: the devices that asked to connect, and the owner's decision on each.

use serde::{Deserialize, Serialize};

use crate::method::NoParams;

crate::declare_methods! {
    /// Pending and paired (approved or rejected) devices.
    PairList = "device.pair.list", Pairing, reads, NoParams => PairListResult;
    /// Approves a device; it gets its device token when it next connects.
    PairApprove = "device.pair.approve", Pairing, mutates, RequestIdParams => PairDecision;
    PairReject = "device.pair.reject", Pairing, mutates, RequestIdParams => PairDecision;
}

crate::word_enum!(
    /// A device's pairing state.
    Pairing {
        Pending = "pending",
        Approved = "approved",
        Rejected = "rejected",
    }
);

/// A device as the owner sees it. Its device token is never part of it: the store keeps
/// only the token's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    pub id: String,
    pub public_key: String,
    pub client_id: Option<String>,
    pub platform: Option<String>,
    pub state: Pairing,
    pub role: String,
    pub scopes: Vec<String>,
    pub remote: Option<String>,
    pub created_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairListResult {
    pub pending: Vec<DeviceRecord>,
    pub paired: Vec<DeviceRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestIdParams {
    pub request_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approved,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairDecision {
    pub request_id: String,
    pub device_id: String,
    pub decision: Decision,
}

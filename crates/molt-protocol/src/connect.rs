//! The `connect` request params and the `hello-ok` payload.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `client.id` values accepted by the protocol (a closed enum in the published schema).
pub const CLIENT_IDS: &[&str] = &[
    "webchat-ui",
    "openclaw-control-ui",
    "openclaw-browser-copilot",
    "openclaw-tui",
    "webchat",
    "cli",
    "gateway-client",
    "openclaw-macos",
    "openclaw-linux",
    "openclaw-ios",
    "openclaw-watchos",
    "openclaw-android",
    "node-host",
    "openclaw-worker",
    "test",
    "fingerprint",
    "openclaw-probe",
];

/// `client.mode` values accepted by the protocol.
pub const CLIENT_MODES: &[&str] = &[
    "webchat", "cli", "ui", "backend", "node", "worker", "probe", "test",
];

/// `connect.params.client`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

/// `connect.params.device`: a signed proof of a device key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceProof {
    pub id: String,
    pub public_key: String,
    pub signature: String,
    pub signed_at: u64,
    pub nonce: String,
}

/// `connect.params.auth`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_runtime_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_runtime_identity_token: Option<String>,
}

/// `connect` params. Fields molt does not use are still accepted, because the schema allows
/// them and real clients send them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectParams {
    pub min_protocol: u32,
    pub max_protocol: u32,
    pub client: ClientInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computer_use: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_runs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceProof>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ConnectAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl ConnectParams {
    /// Checks what serde cannot: the closed enums and non-empty strings.
    pub fn validate(&self) -> Result<(), String> {
        if !CLIENT_IDS.contains(&self.client.id.as_str()) {
            return Err(format!("unknown client.id {:?}", self.client.id));
        }
        if !CLIENT_MODES.contains(&self.client.mode.as_str()) {
            return Err(format!("unknown client.mode {:?}", self.client.mode));
        }
        if self.client.version.is_empty() || self.client.platform.is_empty() {
            return Err("client.version and client.platform must be non-empty".into());
        }
        if self.min_protocol == 0 || self.max_protocol == 0 {
            return Err("minProtocol and maxProtocol must be at least 1".into());
        }
        if self.role.as_deref() == Some("") {
            return Err("role must be non-empty".into());
        }
        // The device signature joins fields with '|' and scopes with ',' unescaped: refusing
        // those characters keeps one signed text from standing for two sets of params.
        if self.role.as_deref().is_some_and(|r| r.contains('|')) {
            return Err("role must not contain '|'".into());
        }
        if self
            .scopes
            .as_ref()
            .is_some_and(|s| s.iter().any(|x| x.contains('|') || x.contains(',')))
        {
            return Err("scopes must not contain '|' or ','".into());
        }
        if self
            .scopes
            .as_ref()
            .is_some_and(|s| s.iter().any(String::is_empty))
        {
            return Err("scopes must be non-empty strings".into());
        }
        Ok(())
    }

    /// `role`, defaulting to `operator`.
    pub fn role(&self) -> &str {
        self.role.as_deref().unwrap_or("operator")
    }

    /// The secret that a device signature covers: the shared token, else the device token.
    pub fn signed_token(&self) -> &str {
        self.auth
            .as_ref()
            .and_then(|a| a.token.as_deref().or(a.device_token.as_deref()))
            .unwrap_or("")
    }
}

/// `hello-ok.server`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerInfo {
    pub version: String,
    pub conn_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// `hello-ok.features`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Features {
    pub methods: Vec<String>,
    pub events: Vec<String>,
}

/// `hello-ok.auth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HelloAuth {
    pub role: String,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at_ms: Option<u64>,
}

/// `hello-ok.policy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    pub max_payload: u64,
    pub max_buffered_bytes: u64,
    pub tick_interval_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_payload: crate::MAX_PAYLOAD as u64,
            max_buffered_bytes: crate::MAX_BUFFERED_BYTES as u64,
            tick_interval_ms: crate::TICK_INTERVAL_MS,
        }
    }
}

/// The `hello-ok` payload. `snapshot` is built by the gateway (presence, health, versions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelloOk {
    #[serde(rename = "type")]
    pub kind: String,
    pub protocol: u32,
    pub server: ServerInfo,
    pub features: Features,
    pub snapshot: Value,
    pub auth: HelloAuth,
    pub policy: Policy,
}

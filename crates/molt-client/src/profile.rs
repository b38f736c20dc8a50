//! Reaching one profile's gateway: its URL from the config, the shared secret from
//! `--token`, the config or the profile's token file, and errors that say what to do when the
//! gateway refuses that secret. What every molt command that talks to a gateway shares.

use std::time::Duration;

use molt_config::{AuthSource, Context};
use molt_protocol::method::Method;
use serde_json::Value;

use crate::{Client, ClientError, ClientOptions};

/// What a command adds to its profile to reach the gateway: `--url`, `--token` (or
/// `MOLT_TOKEN`), and its own version, which the handshake reports.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The gateway's WebSocket URL, instead of the one the profile's config gives.
    pub url: Option<String>,
    /// The shared secret, before the config's and the token file's.
    pub token: Option<String>,
    /// The version the client reports in the handshake and its HTTP user agent.
    pub client_version: String,
}

/// Where a client command's shared secret comes from.
pub enum Credential {
    /// A token, and where it was found.
    Token { value: String, from: String },
    /// `gateway.auth.password`.
    Password { value: String },
    /// `gateway.auth.mode = "none"`.
    NotRequired,
    /// The gateway uses its generated token, and this user cannot read it.
    Unavailable { why: String },
}

impl Credential {
    /// `--token`/`MOLT_TOKEN` first, then the config, then the profile's token file.
    pub fn resolve(access: &Access, ctx: &Context) -> Self {
        if let Some(t) = access.token.clone().filter(|t| !t.is_empty()) {
            return Self::Token {
                value: t,
                from: "--token (or MOLT_TOKEN)".into(),
            };
        }
        match ctx.config.auth_source() {
            AuthSource::None => Self::NotRequired,
            AuthSource::Token(t) => Self::Token {
                value: t.to_owned(),
                from: "gateway.auth.token in the config".into(),
            },
            AuthSource::Password(p) => Self::Password {
                value: p.to_owned(),
            },
            AuthSource::TokenFile => {
                let path = molt_config::token_file(&ctx.state_dir);
                match molt_config::read_token_file(&path) {
                    Ok(value) => Self::Token {
                        value,
                        from: format!("the token file {}", path.display()),
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::Unavailable {
                        why: format!(
                            "no token file at {} (the gateway creates it at its first start)",
                            path.display()
                        ),
                    },
                    Err(e) => Self::Unavailable {
                        why: format!("cannot read {}: {e}", path.display()),
                    },
                }
            }
        }
    }

    /// One line for `molt config show` and for errors; never the secret itself.
    pub fn describe(&self) -> String {
        match self {
            Self::Token { from, .. } => format!("token from {from}"),
            Self::Password { .. } => "password from gateway.auth.password".into(),
            Self::NotRequired => {
                "none (gateway.auth.mode = \"none\": any local user can connect)".into()
            }
            Self::Unavailable { why } => format!("generated token, not readable here: {why}"),
        }
    }
}

/// How to connect to the profile's gateway: `--url`, else its bind and port (a wildcard bind
/// is reached on loopback), with its credential and device identity.
pub fn client_options(ctx: &Context, access: &Access) -> ClientOptions {
    let url = access.url.clone().unwrap_or_else(|| {
        let bind = ctx.config.gateway.bind;
        // A wildcard bind is reachable on loopback; so is loopback itself.
        let host = if bind.is_unspecified() || bind.is_loopback() {
            "127.0.0.1".to_owned()
        } else if bind.is_ipv6() {
            format!("[{bind}]")
        } else {
            bind.to_string()
        };
        format!("ws://{host}:{}", ctx.config.port(&ctx.profile))
    });
    let mut opts = ClientOptions::new(url);
    match Credential::resolve(access, ctx) {
        Credential::Token { value, .. } => opts.token = Some(value),
        Credential::Password { value } => opts.password = Some(value),
        Credential::NotRequired | Credential::Unavailable { .. } => {}
    }
    opts.identity_file = Some(ctx.state_dir.join("identity").join("device.json"));
    opts.client_version = access.client_version.clone();
    opts
}

/// A client error as a message, with what to do next when the gateway refused our
/// credentials.
pub fn client_failure(ctx: &Context, access: &Access, e: ClientError) -> String {
    let ClientError::Handshake(shape) = &e else {
        return e.to_string();
    };
    let code = shape
        .details
        .as_ref()
        .and_then(|d| d.get("code"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !code.starts_with("AUTH_TOKEN") && !code.starts_with("AUTH_PASSWORD") {
        return e.to_string();
    }
    let credential = Credential::resolve(access, ctx);
    let fix = match &credential {
        Credential::Unavailable { why } => format!(
            "this user has no token for it: {why}.\n\
             If you own the gateway, run molt as the user that runs it. Otherwise ask the owner \
             for the token (they print it with `molt config show --reveal-token`) and pass it \
             with --token or MOLT_TOKEN"
        ),
        other => format!(
            "used the {}.\n\
             The gateway may use another config or state dir (see `molt config show`); the \
             owner prints its token with `molt config show --reveal-token`. Pass it with \
             --token or MOLT_TOKEN",
            other.describe()
        ),
    };
    format!(
        "the gateway refused this client: {} ({code})\n{fix}",
        shape.message
    )
}

/// The single-threaded runtime a client command runs on.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Runs `f` on one connection to the profile's gateway, then closes it. The connection
/// reconnects across a restart as [`Client::call`] does.
pub fn with_client<T, E>(
    ctx: &Context,
    access: &Access,
    f: impl AsyncFnOnce(&mut Client) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<String>,
{
    let rt = runtime()?;
    rt.block_on(async {
        let mut client = Client::connect(client_options(ctx, access))
            .await
            .map_err(|e| client_failure(ctx, access, e))?;
        let result = f(&mut client).await;
        client.close().await;
        result
    })
}

/// One call of method `M` to the running gateway: a 60 s timeout, no reconnect.
pub fn request<M: Method>(
    ctx: &Context,
    access: &Access,
    params: &M::Params,
) -> Result<M::Result, String> {
    let rt = runtime()?;
    let mut opts = client_options(ctx, access);
    opts.request_timeout = Duration::from_secs(60);
    rt.block_on(async {
        let mut c = Client::connect(opts)
            .await
            .map_err(|e| client_failure(ctx, access, e))?;
        let r = c.request_once::<M>(params).await;
        c.close().await;
        r.map_err(|e| e.to_string())
    })
}

//! What each `molt` command does. Client commands reach the gateway only over the protocol.

use std::path::PathBuf;

use molt_client::{Client, ClientError, ClientOptions};
use molt_config::{AuthSource, Config, Paths, Profile};
use molt_gateway::{BuildInfo, EXIT_CONFIG, GatewayOptions};
use serde_json::{Value, json};

use crate::{
    Cli, Command, ConfigCommand, DevicesCommand, GatewayCommand, RunCommand, SecurityCommand,
    TasksCommand,
};

/// A command failure: the exit code and what to tell the user.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn config(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_CONFIG,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Self::failed(e.to_string())
    }
}

/// The profile, its paths and its config, resolved once for every command.
pub struct Context {
    pub profile: Profile,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub share_dir: PathBuf,
    pub config: Config,
}

fn resolve(cli: &Cli) -> Result<Context, Failure> {
    match resolve_lenient(cli)? {
        (ctx, None) => Ok(ctx),
        (_, Some(e)) => Err(Failure::config(format!(
            "{e}\nfix the config, then retry; `molt config show` prints what is in effect"
        ))),
    }
}

/// As `resolve`, but a config that does not load gives the defaults plus the error, for the
/// commands that report on a broken install rather than refuse it (doctor, security audit).
pub fn resolve_lenient(cli: &Cli) -> Result<(Context, Option<String>), Failure> {
    let profile =
        Profile::new(cli.profile.as_deref()).map_err(|e| Failure::config(e.to_string()))?;
    let paths = Paths::for_profile(&profile).map_err(|e| Failure::config(e.to_string()))?;
    let config_path = cli.config.clone().unwrap_or(paths.config_file);
    let (config, error) = match Config::load(&config_path) {
        Ok(c) => (c, None),
        Err(e) => (Config::default(), Some(e.to_string())),
    };
    Ok((
        Context {
            profile,
            config_path,
            state_dir: cli.state_dir.clone().unwrap_or(paths.state_dir),
            share_dir: paths.share_dir,
            config,
        },
        error,
    ))
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    // These two diagnose a broken config instead of refusing to start on one.
    match &cli.command {
        Command::Doctor(args) => return crate::doctor::run(&cli, args),
        Command::Security(SecurityCommand::Audit(args)) => return crate::audit::run(&cli, args),
        _ => {}
    }
    let mut ctx = resolve(&cli)?;
    match &cli.command {
        Command::Gateway(GatewayCommand::Run(args)) => {
            if crate::FAULT == "exit-at-start" {
                return Err(Failure::failed(
                    "this build exits at start-up (MOLT_BUILD_FAULT=exit-at-start, a test fault)",
                ));
            }
            if let Some(port) = args.port {
                ctx.config.gateway.port = Some(port);
            }
            if let Some(bind) = args.bind {
                ctx.config.gateway.bind = bind;
            }
            ctx.config
                .validate()
                .map_err(|e| Failure::config(e.to_string()))?;
            molt_gateway::run(GatewayOptions {
                profile: ctx.profile,
                config: ctx.config,
                config_path: ctx.config_path,
                state_dir: ctx.state_dir,
                share_dir: ctx.share_dir,
                build: BuildInfo {
                    version: crate::VERSION.into(),
                    build_id: crate::BUILD_ID.into(),
                },
                never_ready: crate::FAULT == "never-ready",
            })
            .map_err(|e| Failure {
                code: e.exit_code,
                message: e.message,
            })
        }
        Command::Config(ConfigCommand::Show { reveal_token }) => {
            let credential = Credential::resolve(&cli, &ctx);
            if *reveal_token {
                return match credential {
                    Credential::Token { value, .. } => {
                        println!("{value}");
                        Ok(())
                    }
                    other => Err(Failure::failed(format!(
                        "no token to reveal: {}",
                        other.describe()
                    ))),
                };
            }
            println!(
                "# profile: {}\n# config file: {}\n# state dir: {}\n# auth: {}",
                ctx.profile,
                ctx.config_path.display(),
                ctx.state_dir.display(),
                credential.describe()
            );
            print!("{}", ctx.config.to_masked_toml(&ctx.profile));
            Ok(())
        }
        Command::Gateway(GatewayCommand::Check { json }) => gateway_check(&ctx, *json),
        Command::Install { prefix } => crate::service::install(&ctx, prefix.as_ref()),
        Command::Release(cmd) => crate::release::run(cmd),
        Command::Update(args) => crate::update::run(&cli, &ctx, args),
        Command::Service(cmd) => crate::service::run(&cli, &ctx, cmd),
        _ => client_command(&cli, &ctx),
    }
}

/// `molt gateway check`: would this binary start on this config and state? The update
/// preflight runs it with the new binary before anything is switched.
fn gateway_check(ctx: &Context, json: bool) -> Result<(), Failure> {
    if crate::FAULT == "check-fails" {
        return Err(Failure::config(
            "this build refuses every config (MOLT_BUILD_FAULT=check-fails, a test fault)",
        ));
    }
    ctx.config
        .validate()
        .map_err(|e| Failure::config(e.to_string()))?;
    let db = ctx.state_dir.join("molt.db");
    let found = if db.exists() {
        Some(
            molt_store::schema_version_of(&db)
                .map_err(|e| Failure::failed(format!("cannot read {}: {e}", db.display())))?,
        )
    } else {
        None
    };
    let known = molt_store::SCHEMA_VERSION;
    if let Some(found) = found.filter(|f| *f > known) {
        return Err(Failure::config(format!(
            "{} has schema version {found}, newer than this molt knows ({known}); \
             this version cannot run on this state",
            db.display()
        )));
    }
    let port = ctx.config.port(&ctx.profile);
    if json {
        print_json(&json!({
            "ok": true,
            "version": crate::VERSION,
            "buildId": crate::BUILD_ID,
            "config": ctx.config_path.display().to_string(),
            "stateDir": ctx.state_dir.display().to_string(),
            "schema": { "found": found, "known": known },
            "port": port,
        }));
    } else {
        println!(
            "ok: molt {} ({}) accepts {} and {} (schema {} of {known}), port {port}",
            crate::VERSION,
            crate::BUILD_ID,
            ctx.config_path.display(),
            ctx.state_dir.display(),
            found.map(|f| f.to_string()).unwrap_or_else(|| "new".into())
        );
    }
    Ok(())
}

fn client_options(cli: &Cli, ctx: &Context) -> ClientOptions {
    let url = cli.url.clone().unwrap_or_else(|| {
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
    match Credential::resolve(cli, ctx) {
        Credential::Token { value, .. } => opts.token = Some(value),
        Credential::Password { value } => opts.password = Some(value),
        Credential::NotRequired | Credential::Unavailable { .. } => {}
    }
    opts.identity_file = Some(ctx.state_dir.join("identity").join("device.json"));
    opts.client_version = crate::VERSION.into();
    opts
}

/// Where a client command's shared secret comes from.
enum Credential {
    Token {
        value: String,
        from: String,
    },
    Password {
        value: String,
    },
    /// `gateway.auth.mode = "none"`.
    NotRequired,
    /// The gateway uses its generated token, and this user cannot read it.
    Unavailable {
        why: String,
    },
}

impl Credential {
    /// `--token`/`MOLT_TOKEN` first, then the config, then the profile's token file.
    fn resolve(cli: &Cli, ctx: &Context) -> Self {
        if let Some(t) = cli.token.clone().filter(|t| !t.is_empty()) {
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
    fn describe(&self) -> String {
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

/// A client error, with what to do next when the gateway refused our credentials.
fn client_failure(cli: &Cli, ctx: &Context, e: ClientError) -> Failure {
    let ClientError::Handshake(shape) = &e else {
        return Failure::from(e);
    };
    let code = shape
        .details
        .as_ref()
        .and_then(|d| d.get("code"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !code.starts_with("AUTH_TOKEN") && !code.starts_with("AUTH_PASSWORD") {
        return Failure::from(e);
    }
    let credential = Credential::resolve(cli, ctx);
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
    Failure::failed(format!(
        "the gateway refused this client: {} ({code})\n{fix}",
        shape.message
    ))
}

/// The single-threaded runtime a client command runs on.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))
}

/// One call to the running gateway: a short timeout, no reconnect.
pub fn call_gateway(
    cli: &Cli,
    ctx: &Context,
    method: &str,
    params: Option<Value>,
) -> Result<Value, Failure> {
    let rt = runtime()?;
    let mut opts = client_options(cli, ctx);
    opts.request_timeout = std::time::Duration::from_secs(60);
    rt.block_on(async {
        let mut c = Client::connect(opts)
            .await
            .map_err(|e| client_failure(cli, ctx, e))?;
        let r = c.call_once(method, params).await;
        c.close().await;
        Ok(r?)
    })
}

fn client_command(cli: &Cli, ctx: &Context) -> Result<(), Failure> {
    let rt = runtime()?;
    rt.block_on(async {
        let mut client = Client::connect(client_options(cli, ctx))
            .await
            .map_err(|e| client_failure(cli, ctx, e))?;
        let result = client_call(&mut client, &cli.command).await;
        client.close().await;
        result
    })
}

async fn client_call(c: &mut Client, command: &Command) -> Result<(), Failure> {
    match command {
        Command::Status(f) => {
            let s = c.call("status", None).await?;
            if f.json {
                print_json(&s);
            } else {
                let runs = &s["runs"];
                println!(
                    "molt {} ({})",
                    s["version"].as_str().unwrap_or("?"),
                    s["buildId"].as_str().unwrap_or("?")
                );
                println!("  profile   {}", s["profile"].as_str().unwrap_or("?"));
                println!("  state     {}", s["state"].as_str().unwrap_or("?"));
                println!("  pid       {}", s["pid"]);
                println!("  port      {}", s["port"]);
                println!(
                    "  uptime    {}",
                    human_ms(s["uptimeMs"].as_u64().unwrap_or(0))
                );
                println!("  boot      epoch {}", s["bootEpoch"]);
                println!(
                    "  runs      {} queued, {} running, {} succeeded, {} failed, {} cancelled",
                    runs["queued"],
                    runs["running"],
                    runs["succeeded"],
                    runs["failed"],
                    runs["cancelled"]
                );
                let h = &s["lastHandover"];
                if h.is_object() {
                    let to = &h["to"];
                    let target = if to.is_object() {
                        format!(
                            "pid {} ({})",
                            to["pid"],
                            to["version"].as_str().unwrap_or("?")
                        )
                    } else {
                        "no successor".to_owned()
                    };
                    println!(
                        "  handover  {} at {}: pid {} ({}) -> {target} in {} ms{}",
                        h["result"].as_str().unwrap_or("?"),
                        h["startedAtMs"],
                        h["fromPid"],
                        h["fromVersion"].as_str().unwrap_or("?"),
                        h["durationMs"],
                        h["error"]
                            .as_str()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    );
                } else {
                    println!("  handover  none yet");
                }
            }
        }
        Command::Run(RunCommand::Exec {
            title,
            timeout_ms,
            cwd,
            idempotency_key,
            argv,
        }) => {
            let Some((cmd, args)) = argv.split_first() else {
                return Err(Failure::config(
                    "give the command after --, e.g. `molt run exec -- echo hi`",
                ));
            };
            let mut p = json!({ "command": cmd, "args": args });
            for (k, v) in [
                ("title", title.clone().map(Value::from)),
                ("timeoutMs", timeout_ms.map(Value::from)),
                ("cwd", cwd.clone().map(Value::from)),
                ("idempotencyKey", idempotency_key.clone().map(Value::from)),
            ] {
                if let Some(v) = v {
                    p[k] = v;
                }
            }
            let r = c.call("molt.run.exec", Some(p)).await?;
            println!("{}", r["runId"].as_str().unwrap_or_default());
        }
        Command::Tasks(TasksCommand::List {
            json: as_json,
            status,
            limit,
        }) => {
            let mut p = json!({ "limit": limit });
            if let Some(s) = status {
                p["status"] = json!(s);
            }
            let r = c.call("tasks.list", Some(p)).await?;
            if *as_json {
                print_json(&r);
            } else {
                let tasks = r["tasks"].as_array().cloned().unwrap_or_default();
                if tasks.is_empty() {
                    println!("no tasks");
                }
                for t in tasks {
                    println!(
                        "{}  {:<9}  {:<24}  {}",
                        t["id"].as_str().unwrap_or("?"),
                        t["status"].as_str().unwrap_or("?"),
                        t["progressSummary"].as_str().unwrap_or(""),
                        t["title"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Command::Tasks(TasksCommand::Get { id, json: as_json }) => {
            let r = c.call("molt.run.get", Some(json!({ "runId": id }))).await?;
            if *as_json {
                print_json(&r);
            } else {
                println!(
                    "{}  {}  {}",
                    r["id"].as_str().unwrap_or("?"),
                    r["state"].as_str().unwrap_or("?"),
                    r["title"].as_str().unwrap_or("")
                );
                if let Some(e) = r["error"].as_str() {
                    println!("  error: {e}");
                }
                for s in r["steps"].as_array().cloned().unwrap_or_default() {
                    let spec = &s["spec"];
                    let cmdline =
                        std::iter::once(spec["command"].as_str().unwrap_or("?").to_owned())
                            .chain(
                                spec["args"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|a| a.as_str().map(str::to_owned)),
                            )
                            .collect::<Vec<_>>()
                            .join(" ");
                    let exit = s["exitCode"]
                        .as_i64()
                        .map(|c| format!(", exit {c}"))
                        .unwrap_or_default();
                    println!(
                        "  step {}: {} — {}, attempt {}{exit}",
                        s["index"].as_u64().unwrap_or(0) + 1,
                        cmdline,
                        s["state"].as_str().unwrap_or("?"),
                        s["attempts"]
                    );
                    if let Some(e) = s["error"].as_str() {
                        println!("    note: {e}");
                    }
                    if let Some(tail) = s["outputTail"].as_str().filter(|t| !t.is_empty()) {
                        for line in tail
                            .lines()
                            .rev()
                            .take(5)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                        {
                            println!("    | {line}");
                        }
                    }
                }
            }
        }
        Command::Tasks(TasksCommand::Cancel { id, json: as_json }) => {
            let r = c
                .call("tasks.cancel", Some(json!({ "taskId": id })))
                .await?;
            if *as_json {
                print_json(&r);
            } else if r["found"] != json!(true) {
                return Err(Failure::failed(format!("no task with id {id}")));
            } else if r["cancelled"] == json!(true) {
                println!("cancelled {id}");
            } else {
                println!("{id}: {}", r["reason"].as_str().unwrap_or("not cancelled"));
            }
        }
        Command::Devices(DevicesCommand::List { json: as_json }) => {
            let r = c.call("device.pair.list", Some(json!({}))).await?;
            if *as_json {
                print_json(&r);
            } else {
                for (label, key) in [("pending", "pending"), ("paired", "paired")] {
                    let list = r[key].as_array().cloned().unwrap_or_default();
                    println!("{label}: {}", list.len());
                    for d in list {
                        println!(
                            "  {}  {:<8}  {} {}  from {}",
                            d["id"].as_str().unwrap_or("?"),
                            d["state"].as_str().unwrap_or("?"),
                            d["clientId"].as_str().unwrap_or("?"),
                            d["platform"].as_str().unwrap_or(""),
                            d["remote"].as_str().unwrap_or("?")
                        );
                    }
                }
            }
        }
        Command::Devices(DevicesCommand::Approve { id }) => {
            c.call("device.pair.approve", Some(json!({ "requestId": id })))
                .await?;
            println!("approved {id}");
        }
        Command::Devices(DevicesCommand::Reject { id }) => {
            c.call("device.pair.reject", Some(json!({ "requestId": id })))
                .await?;
            println!("rejected {id}");
        }
        Command::Call { method, params } => {
            let p = match params {
                Some(t) => Some(
                    serde_json::from_str(t)
                        .map_err(|e| Failure::config(format!("--params is not valid JSON: {e}")))?,
                ),
                None => None,
            };
            print_json(&c.call(method, p).await?);
        }
        Command::Gateway(GatewayCommand::Restart { json: as_json }) => {
            // No reconnect: the answer comes before this connection is closed with 1012.
            let r = c
                .call_once(
                    "gateway.restart.request",
                    Some(json!({ "reason": "molt gateway restart" })),
                )
                .await?;
            if *as_json {
                print_json(&r);
            } else {
                println!(
                    "handover {}: {}",
                    r["status"].as_str().unwrap_or("?"),
                    describe_handover(&r["handover"])
                );
            }
        }
        Command::Gateway(GatewayCommand::Run(_) | GatewayCommand::Check { .. })
        | Command::Config(_)
        | Command::Install { .. }
        | Command::Release(_)
        | Command::Update(_)
        | Command::Service(_)
        | Command::Doctor(_)
        | Command::Security(_) => {
            unreachable!("handled without a client")
        }
    }
    Ok(())
}

/// `pid A (v1) -> pid B (v2) in N ms`, from the `handover` of a `gateway.restart.request`
/// answer.
pub fn describe_handover(h: &Value) -> String {
    format!(
        "pid {} ({}) -> pid {} ({}) in {} ms",
        h["fromPid"],
        h["fromVersion"].as_str().unwrap_or("?"),
        h["to"]["pid"],
        h["to"]["version"].as_str().unwrap_or("?"),
        h["durationMs"]
    )
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

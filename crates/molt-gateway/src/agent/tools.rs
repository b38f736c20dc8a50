//! The agent's tools: a registry the model sees as function specs, and the tools themselves.
//! This issue ships `exec`; the tools issue adds the rest here.
//!
//! A tool call runs as a step of its turn. Its effect key (`<runId>:<step>`) is stable across
//! attempts and is handed to the command as `MOLT_EFFECT_KEY`, so a call interrupted by a crash
//! and run again (attempt 2) can recognise work it already did.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use molt_model::ToolSpec;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Bytes of output a tool result keeps; more is cut from the middle.
pub const OUTPUT_CAP: usize = 64 * 1024;

/// What a tool call runs with.
pub struct ToolContext {
    pub workspace: PathBuf,
    pub timeout: Duration,
    pub env: Vec<(&'static str, String)>,
    /// Variables of the gateway's own environment that hold secrets (model keys, the
    /// gateway's auth): removed, so a command cannot print them into a transcript.
    pub scrub: Vec<String>,
    /// Output as it is produced (for `command_output` events).
    pub output: mpsc::UnboundedSender<String>,
}

/// Why a tool call was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The person aborted the turn.
    Cancel,
    /// The gateway stops; the call re-runs at the next start.
    Abort,
}

/// How a tool call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolEnd {
    Done {
        text: String,
        details: Value,
        is_error: bool,
    },
    Stopped(Stop),
}

/// One tool.
pub trait Tool: Send + Sync {
    fn spec(&self) -> ToolSpec;
    /// Runs one call. `stop` resolves when the call must end early.
    fn run<'a>(
        &'a self,
        ctx: &'a ToolContext,
        args: &'a Value,
        stop: BoxFuture<'a, Stop>,
    ) -> BoxFuture<'a, ToolEnd>;
}

/// The tools an agent may call, by name.
pub struct Registry {
    tools: BTreeMap<String, Box<dyn Tool>>,
}

impl Registry {
    /// The built-in tools.
    pub fn builtin() -> Self {
        let mut tools: BTreeMap<String, Box<dyn Tool>> = BTreeMap::new();
        let exec = Exec;
        tools.insert(exec.spec().name, Box::new(exec));
        Self { tools }
    }

    pub fn get(&self, name: &str) -> Option<&dyn Tool> {
        self.tools.get(name).map(|t| t.as_ref())
    }

    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.values().map(|t| t.spec()).collect()
    }

    pub fn names(&self) -> Vec<&str> {
        self.tools.keys().map(String::as_str).collect()
    }
}

/// `exec`: runs a shell command line in the workspace (OpenClaw's parameter shape:
/// `{command, workdir?, env?, timeout?}`).
pub struct Exec;

impl Tool for Exec {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "exec".into(),
            description: "Run a shell command (bash -c) in the agent's workspace and return its \
                          combined stdout and stderr with the exit code. Use it for anything \
                          that needs the machine: files, git, builds, system state. Commands \
                          run without a terminal and must finish on their own."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The command line to run."},
                    "workdir": {"type": "string", "description": "Directory, relative to the workspace (default: the workspace)."},
                    "timeout": {"type": "number", "description": "Seconds before the command is killed."},
                },
                "required": ["command"],
            }),
        }
    }

    fn run<'a>(
        &'a self,
        ctx: &'a ToolContext,
        args: &'a Value,
        stop: BoxFuture<'a, Stop>,
    ) -> BoxFuture<'a, ToolEnd> {
        Box::pin(async move {
            let Some(command) = args.get("command").and_then(Value::as_str) else {
                return ToolEnd::Done {
                    text: "exec needs a `command` string".into(),
                    details: json!({"status": "failed"}),
                    is_error: true,
                };
            };
            let cwd = match args.get("workdir").and_then(Value::as_str) {
                Some(w) if !w.starts_with('/') && !w.split('/').any(|p| p == "..") => {
                    ctx.workspace.join(w)
                }
                Some(w) => {
                    return ToolEnd::Done {
                        text: format!("workdir {w:?} must be a path inside the workspace"),
                        details: json!({"status": "failed"}),
                        is_error: true,
                    };
                }
                None => ctx.workspace.clone(),
            };
            let timeout = args
                .get("timeout")
                .and_then(Value::as_f64)
                .filter(|t| *t > 0.0)
                .map(|t| Duration::from_secs_f64(t).min(ctx.timeout))
                .unwrap_or(ctx.timeout);
            run_shell(command, &cwd, ctx, timeout, stop).await
        })
    }
}

async fn run_shell(
    command: &str,
    cwd: &std::path::Path,
    ctx: &ToolContext,
    timeout: Duration,
    stop: BoxFuture<'_, Stop>,
) -> ToolEnd {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("-c")
        .arg(command)
        .current_dir(cwd)
        .env_clear()
        .envs(
            std::env::vars_os()
                .filter(|(k, _)| !k.to_str().is_some_and(|k| ctx.scrub.iter().any(|s| s == k))),
        )
        .envs(ctx.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ToolEnd::Done {
                text: format!("cannot start bash in {}: {e}", cwd.display()),
                details: json!({"status": "failed", "cwd": cwd}),
                is_error: true,
            };
        }
    };
    let pid = child.id();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    for r in [
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut r = r;
            let mut buf = [0u8; 8192];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut output = Vec::new();
    let mut truncated = false;
    let mut collect = |chunk: Vec<u8>, output: &mut Vec<u8>| {
        let _ = ctx
            .output
            .send(String::from_utf8_lossy(&chunk).into_owned());
        if output.len() + chunk.len() > OUTPUT_CAP {
            truncated = true;
            let room = OUTPUT_CAP.saturating_sub(output.len());
            output.extend_from_slice(&chunk[..room.min(chunk.len())]);
        } else {
            output.extend_from_slice(&chunk);
        }
    };
    enum Ended {
        Exited(std::io::Result<std::process::ExitStatus>),
        TimedOut,
        Stopped(Stop),
    }
    let mut stop = stop;
    let wait = child.wait();
    tokio::pin!(wait);
    let sleep = tokio::time::sleep(timeout);
    tokio::pin!(sleep);
    let ended = loop {
        tokio::select! {
            status = &mut wait => break Ended::Exited(status),
            _ = &mut sleep => break Ended::TimedOut,
            s = &mut stop => break Ended::Stopped(s),
            Some(chunk) = rx.recv() => collect(chunk, &mut output),
        }
    };
    if !matches!(ended, Ended::Exited(_)) {
        crate::executor::kill_group(pid);
    }
    // Drain what is left; a grandchild holding the pipes open is not waited for long.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        collect(chunk, &mut output);
    }
    let mut text = String::from_utf8_lossy(&output).into_owned();
    if truncated {
        text.push_str(&format!("\n[output cut at {OUTPUT_CAP} bytes]"));
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    let (status, exit_code, is_error, note) = match ended {
        Ended::Stopped(s) => return ToolEnd::Stopped(s),
        Ended::Exited(Ok(st)) => match st.code() {
            Some(0) => ("completed", Some(0), false, None),
            Some(c) => ("failed", Some(c), true, Some(format!("exit code {c}"))),
            None => ("failed", None, true, Some("killed by a signal".to_owned())),
        },
        Ended::Exited(Err(e)) => ("failed", None, true, Some(format!("cannot wait: {e}"))),
        Ended::TimedOut => (
            "failed",
            None,
            true,
            Some(format!(
                "timed out after {} s and was killed",
                timeout.as_secs()
            )),
        ),
    };
    if let Some(n) = note {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("[{n}]"));
    }
    if text.is_empty() {
        text = "(no output)".into();
    }
    ToolEnd::Done {
        details: json!({
            "status": status,
            "exitCode": exit_code,
            "durationMs": duration_ms,
            "aggregated": text,
            "cwd": cwd,
        }),
        text,
        is_error,
    }
}

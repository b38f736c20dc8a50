//! `exec`: a shell command line in the agent's workspace, under the agent's exec policy
//! (`[tools.exec]`): `security` says which commands may run at all, `ask` which wait for an
//! operator's approval (durably: the approval is recorded under the step's effect key), and
//! the sandbox (no_new_privs, and Landlock where the kernel has it) confines what a command
//! can write, and with `network = "deny"` its TCP connects and binds.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use molt_config::tools::{ExecAsk, ExecNetwork, ExecPolicy, ExecSecurity};
use molt_model::ToolSpec;
use molt_protocol::methods::approvals::REQUESTED_EVENT;
use molt_store::{ApprovalRecord, ApprovalState, NewApproval};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::{Stop, Tool, ToolContext, ToolEnd, ToolOutput, str_arg};
use crate::app::Audience;

/// Bytes of output a tool result keeps; more is cut from the middle.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// How often a call waiting for approval looks for a decision made in another process.
const APPROVAL_POLL: Duration = Duration::from_secs(1);

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
                          run without a terminal and must finish on their own. They may be \
                          sandboxed (writes only inside the workspace and $TMPDIR) and may \
                          wait for an operator's approval."
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
        ctx: &'a ToolContext<'a>,
        args: &'a Value,
        stop: BoxFuture<'a, Stop>,
    ) -> BoxFuture<'a, ToolEnd> {
        Box::pin(async move {
            let command = match str_arg(args, "exec", "command") {
                Ok(c) => c,
                Err(e) => return e.into(),
            };
            let policy = &ctx.agent.tools.exec;
            let mut stop = stop;
            match admit(policy, command) {
                Admission::Refused(why) => return ToolOutput::error(why).into(),
                Admission::Run => {}
                Admission::Ask(reason) => {
                    match wait_for_approval(ctx, command, &reason, &mut stop).await {
                        Ok(()) => {}
                        Err(end) => return end,
                    }
                }
            }
            let ws = &ctx.agent.workspace;
            let cwd = match args.get("workdir").and_then(Value::as_str) {
                None | Some("") | Some(".") => ws.clone(),
                Some(w) => match beneath(ws, w) {
                    Ok(p) => p,
                    Err(e) => return ToolOutput::error(e).into(),
                },
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

/// What the policy says about one command line.
#[derive(Debug, PartialEq, Eq)]
enum Admission {
    Run,
    /// Waits for an operator; the reason is shown to them.
    Ask(String),
    /// Never runs; the text tells the model why.
    Refused(String),
}

fn admit(policy: &ExecPolicy, command: &str) -> Admission {
    if policy.security == ExecSecurity::Deny {
        return Admission::Refused(
            "exec is disabled for this agent (tools.exec.security = \"deny\"); do the task \
             with the other tools, or ask the operator"
                .into(),
        );
    }
    let miss = match policy.security {
        // Programs as written: `./ls` is a file the agent may have written, not the `ls` the
        // allowlist names, so a path-qualified program never matches.
        ExecSecurity::Allowlist => match molt_tools::command::command_programs(command) {
            Ok(programs) => programs
                .into_iter()
                .find(|p| p.contains('/') || !policy.allowlist.iter().any(|a| a == p))
                .map(|p| format!("{p} is not in tools.exec.allowlist")),
            Err(why) => Some(format!("the allowlist cannot vouch for this line: {why}")),
        },
        _ => None,
    };
    match (policy.ask, miss) {
        (ExecAsk::Always, miss) => Admission::Ask(miss.unwrap_or_else(|| "ask = always".into())),
        (ExecAsk::OnMiss, Some(miss)) => Admission::Ask(miss),
        (ExecAsk::Off, Some(miss)) => Admission::Refused(format!(
            "refused: {miss} (allowed: {}); use an allowed program or ask the operator",
            policy.allowlist.join(", ")
        )),
        (_, None) => Admission::Run,
    }
}

/// The approval of this call: recorded under the step's effect key, so a call that runs
/// again after a restart waits on the same approval, and once approved runs once.
async fn wait_for_approval(
    ctx: &ToolContext<'_>,
    command: &str,
    reason: &str,
    stop: &mut BoxFuture<'_, Stop>,
) -> Result<(), ToolEnd> {
    let store = &ctx.host.store;
    let (ek, run, key, agent, cmd, cwd, why) = (
        ctx.effect_key.to_owned(),
        ctx.run_id.to_owned(),
        ctx.session_key.to_owned(),
        ctx.agent.id.clone(),
        command.to_owned(),
        ctx.agent.workspace.display().to_string(),
        reason.to_owned(),
    );
    let mut a = store
        .call(move |s| {
            s.request_approval(&NewApproval {
                effect_key: &ek,
                run_id: &run,
                session_key: &key,
                agent_id: &agent,
                tool: "exec",
                command: &cmd,
                cwd: Some(&cwd),
                reason: &why,
            })
        })
        .await
        .map_err(|e| {
            ToolEnd::from(ToolOutput::error(format!(
                "cannot record the approval: {e}"
            )))
        })?;
    if a.state == ApprovalState::Pending {
        ctx.host
            .app
            .broadcast_to(Audience::Approvers, REQUESTED_EVENT, approval_view(&a));
        let _ = ctx.output.send(format!(
            "[waiting for an operator to approve {}: `molt approvals approve {}` or deny it]\n",
            a.id, a.id
        ));
    }
    loop {
        match a.state {
            ApprovalState::Approved => return Ok(()),
            ApprovalState::Denied => {
                return Err(ToolOutput::error(format!(
                    "the operator denied this command (approval {}); do not retry it, ask \
                     what they want instead",
                    a.id
                ))
                .into());
            }
            ApprovalState::Cancelled => return Err(ToolEnd::Stopped(Stop::Cancel)),
            ApprovalState::Pending => {}
        }
        // Waiting holds nothing but the lease: on a handover or a stop the turn moves on at
        // once instead of keeping the old process alive for an operator.
        let mut admitting = ctx.host.admitting.subscribe();
        tokio::select! {
            s = &mut *stop => return Err(ToolEnd::Stopped(s)),
            _ = admitting.wait_for(|open| !open) => return Err(ToolEnd::Stopped(Stop::Yield)),
            _ = ctx.host.approvals_changed.notified() => {}
            _ = tokio::time::sleep(APPROVAL_POLL) => {}
        }
        let ek = ctx.effect_key.to_owned();
        if let Ok(Some(now)) = store.call(move |s| s.approval_for(&ek)).await {
            a = now;
        }
    }
}

/// An approval as operators see it (`exec.approval.*` results and events).
pub fn approval_view(a: &ApprovalRecord) -> Value {
    serde_json::to_value(approval_of(a)).unwrap_or_default()
}

pub fn approval_of(a: &ApprovalRecord) -> molt_protocol::methods::approvals::Approval {
    molt_protocol::methods::approvals::Approval {
        id: a.id.clone(),
        status: a.state.as_str().into(),
        kind: a.tool.clone(),
        command_text: a.command.clone(),
        cwd: a.cwd.clone(),
        agent_id: a.agent_id.clone(),
        session_key: a.session_key.clone(),
        run_id: a.run_id.clone(),
        reason: a.reason.clone(),
        created_at_ms: a.created_at_ms,
        decided_at_ms: a.decided_at_ms,
        decided_by: a.decided_by.clone(),
    }
}

/// `rel` inside the workspace `ws`, checked by the kernel (it must resolve beneath it).
fn beneath(ws: &Path, rel: &str) -> Result<PathBuf, String> {
    let w = molt_tools::fs::Workspace::open(ws).map_err(|e| e.message)?;
    w.open_dir(rel).map_err(|e| e.message)?;
    Ok(ws.join(rel))
}

async fn run_shell(
    command: &str,
    cwd: &Path,
    ctx: &ToolContext<'_>,
    timeout: Duration,
    stop: BoxFuture<'_, Stop>,
) -> ToolEnd {
    let started = Instant::now();
    let policy = &ctx.agent.tools.exec;
    // A private temp dir per call: the one place besides the workspace a sandboxed command
    // may write. Removed when the call ends.
    let tmp = match tempfile::Builder::new().prefix("molt-exec-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            return ToolOutput::error(format!("cannot create a temp dir for the command: {e}"))
                .into();
        }
    };
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg(command)
        .current_dir(cwd)
        .env_clear()
        .envs(
            std::env::vars_os()
                .filter(|(k, _)| !k.to_str().is_some_and(|k| ctx.scrub.iter().any(|s| s == k))),
        )
        .envs(ctx.env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let sandboxed = match confine(&mut cmd, policy, ctx, tmp.path()) {
        Ok(s) => s,
        Err(e) => return ToolOutput::error(e).into(),
    };
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ToolOutput::error(format!("cannot start bash in {}: {e}", cwd.display()))
                .into();
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
    ToolEnd::Done(ToolOutput {
        details: json!({
            "status": status,
            "exitCode": exit_code,
            "durationMs": duration_ms,
            "aggregated": text,
            "cwd": cwd,
            "sandbox": sandboxed,
        }),
        text,
        is_error,
        then: None,
    })
}

/// Puts the sandbox around `cmd`: always no_new_privs; with `sandbox` on, Landlock rules that
/// let it write only the workspace and `tmp` (and read system directories), and with
/// `network = "deny"` no TCP connect or bind. Returns what was applied, for the details.
fn confine(
    cmd: &mut std::process::Command,
    policy: &ExecPolicy,
    ctx: &ToolContext<'_>,
    tmp: &Path,
) -> Result<&'static str, String> {
    use molt_tools::sandbox;
    if !policy.sandbox {
        return Ok("off");
    }
    let home = &ctx.host.env.home;
    let expand = |p: &String| match p.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => PathBuf::from(p),
    };
    let mut spec = sandbox::SandboxSpec::for_workspace(&ctx.agent.workspace, tmp);
    // Landlock grants only what exists: a configured path that does not is skipped.
    spec.writable
        .extend(policy.allow_write.iter().map(expand).filter(|p| p.exists()));
    spec.readable
        .extend(policy.allow_read.iter().map(expand).filter(|p| p.exists()));
    spec.deny_network = policy.network == ExecNetwork::Deny;
    // The gateway's own state and config (secrets) stay out of reach even when they lie
    // under a readable directory.
    let app = &ctx.host.app;
    let hidden: Vec<PathBuf> = [Some(app.state_dir.as_path()), app.config_path.parent()]
        .into_iter()
        .flatten()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    if let Err(e) = spec.hide_readable(&hidden) {
        return Err(format!("cannot set up the sandbox: {e}"));
    }
    match sandbox::prepare(&spec) {
        Ok(prepared) => {
            prepared.install(cmd);
            Ok("landlock")
        }
        Err(e) if spec.deny_network => Err(format!(
            "refused: tools.exec.network = \"deny\" needs the Landlock sandbox, and it cannot \
             be set up here: {e}"
        )),
        Err(e) => {
            tracing::warn!(error = %e, "exec runs without Landlock (no_new_privs only); `molt doctor` says why");
            sandbox::no_new_privs_only(cmd);
            Ok("no_new_privs")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(security: ExecSecurity, ask: ExecAsk, allow: &[&str]) -> ExecPolicy {
        ExecPolicy {
            security,
            allowlist: allow.iter().map(|s| s.to_string()).collect(),
            ask,
            sandbox: true,
            network: ExecNetwork::Allow,
            allow_read: vec![],
            allow_write: vec![],
        }
    }

    #[test]
    fn the_policy_admits_asks_or_refuses_with_a_reason() {
        let list = policy(ExecSecurity::Allowlist, ExecAsk::Off, &["git", "ls"]);
        assert_eq!(admit(&list, "git status && ls -la | ls"), Admission::Run);
        let Admission::Refused(why) = admit(&list, "git log; rm -rf x") else {
            panic!("rm is not listed");
        };
        assert!(why.contains("rm is not in tools.exec.allowlist"), "{why}");
        assert!(matches!(admit(&list, "./ls"), Admission::Refused(_)));
        assert!(matches!(
            admit(&list, "ls $(rm -rf x)"),
            Admission::Refused(_)
        ));
        let on_miss = policy(ExecSecurity::Allowlist, ExecAsk::OnMiss, &["ls"]);
        assert_eq!(admit(&on_miss, "ls"), Admission::Run);
        assert!(matches!(admit(&on_miss, "curl x"), Admission::Ask(r) if r.contains("curl")));
        let always = policy(ExecSecurity::Full, ExecAsk::Always, &[]);
        assert!(matches!(admit(&always, "true"), Admission::Ask(_)));
        assert_eq!(
            admit(&policy(ExecSecurity::Full, ExecAsk::Off, &[]), "anything"),
            Admission::Run
        );
        let deny = policy(ExecSecurity::Deny, ExecAsk::Always, &[]);
        assert!(matches!(admit(&deny, "true"), Admission::Refused(w) if w.contains("disabled")));
    }
}

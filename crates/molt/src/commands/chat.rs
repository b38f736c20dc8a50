//! `molt chat`: a conversation from the terminal, or from a pipe. Each line is a turn whose
//! reply streams to stdout; lines starting with `/` are commands (`/help`). Ctrl-C aborts the
//! running turn, or at the prompt leaves. Turns ride through a gateway handover as `molt
//! agent`'s do.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Args;
use molt_client::profile::{Access, runtime};
use molt_config::Context;
use molt_protocol::methods::chat::{ChatAbort, ChatAbortParams, ChatHistory, ChatHistoryParams};
use molt_protocol::methods::sessions::{
    SessionKeyParams, SessionsCreate, SessionsCreateParams, SessionsReset,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::agent::{Link, TurnStatus, default_session_key, follow, new_id, send_turn};
use super::sessions::message_lines;
use crate::output::Failure;

/// How long a command (not a turn) may take, reconnects included.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// The agent to talk to (default: main).
    #[arg(long)]
    agent: Option<String>,
    /// The session to talk in (default: agent:<agent>:main).
    #[arg(long)]
    session_key: Option<String>,
    /// Seconds to wait for each reply. The turn itself is not limited by it.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

const HELP: &str = "\
/new      start a new session and talk there
/reset    start this session afresh (its old transcript is kept)
/abort    abort this session's running turns
/history  show the last 20 messages
/quit     leave (so do Ctrl-D, and Ctrl-C at the prompt)
Ctrl-C while a reply comes aborts that turn. Other /commands go to the agent.";

/// What one input line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Input<'a> {
    Nothing,
    Quit,
    Help,
    New,
    Reset,
    Abort,
    History,
    Say(&'a str),
}

fn parse_input(line: &str) -> Input<'_> {
    let t = line.trim();
    match t {
        "" => Input::Nothing,
        "/quit" | "/exit" | "/q" => Input::Quit,
        "/help" | "/?" => Input::Help,
        "/new" => Input::New,
        "/reset" => Input::Reset,
        "/abort" | "/stop" => Input::Abort,
        "/history" => Input::History,
        _ => Input::Say(t),
    }
}

pub fn exec(ctx: &Context, access: &Access, args: &ChatArgs) -> Result<(), Failure> {
    runtime()?.block_on(converse(ctx, access, args))
}

async fn converse(ctx: &Context, access: &Access, args: &ChatArgs) -> Result<(), Failure> {
    let mut link = Link::open(ctx, access).await?;
    // Once this is installed Ctrl-C no longer ends the process: the loop decides.
    let mut interrupt = Some(
        signal(SignalKind::interrupt())
            .map_err(|e| Failure::failed(format!("cannot handle Ctrl-C: {e}")))?,
    );
    let mut lines = stdin_lines()?;
    let interactive = std::io::stdin().is_terminal();
    let agent = args.agent.as_deref();
    let mut key = args
        .session_key
        .clone()
        .unwrap_or_else(|| default_session_key(agent));
    if interactive {
        eprintln!("session {key}; /help lists the commands");
    }
    loop {
        // A Ctrl-C that came while no turn ran (during a command) is not a request to leave.
        while let Ok(Some(())) = tokio::time::timeout(Duration::ZERO, async {
            match interrupt.as_mut() {
                Some(s) => s.recv().await,
                None => None,
            }
        })
        .await
        {}
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let line = tokio::select! {
            l = lines.recv() => l,
            _ = async {
                match interrupt.as_mut() {
                    Some(s) => { s.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => None,
        };
        let Some(line) = line else {
            if interactive {
                eprintln!();
            }
            break;
        };
        let deadline = Instant::now() + COMMAND_DEADLINE;
        let done = match parse_input(&line) {
            Input::Nothing => Ok(()),
            Input::Quit => break,
            Input::Help => {
                eprintln!("{HELP}");
                Ok(())
            }
            Input::New => new_session(&mut link, agent, deadline).await.map(|k| {
                eprintln!("new session {k}");
                key = k;
            }),
            Input::Reset => {
                let p = SessionKeyParams {
                    key: key.clone(),
                    agent_id: args.agent.clone(),
                };
                link.call::<SessionsReset>(&p, deadline)
                    .await
                    .map(|r| eprintln!("session {} starts afresh", r.key))
            }
            Input::Abort => {
                let p = ChatAbortParams {
                    session_key: key.clone(),
                    agent_id: args.agent.clone(),
                    run_id: None,
                };
                link.call::<ChatAbort>(&p, deadline).await.map(|r| {
                    if r.aborted {
                        eprintln!("aborted {}", r.run_ids.join(", "));
                    } else {
                        eprintln!("no turn was running");
                    }
                })
            }
            Input::History => {
                let p = ChatHistoryParams {
                    session_key: key.clone(),
                    agent_id: args.agent.clone(),
                    limit: Some(20),
                    ..Default::default()
                };
                link.call::<ChatHistory>(&p, deadline).await.map(|r| {
                    for m in &r.messages {
                        for line in message_lines(m) {
                            println!("{line}");
                        }
                    }
                })
            }
            Input::Say(text) => turn(&mut link, &key, agent, text, args.timeout, &mut interrupt)
                .await
                .map(|problem| {
                    if let Some(p) = problem {
                        eprintln!("{p}");
                    }
                }),
        };
        // A failed command or turn is reported and the conversation goes on.
        if let Err(e) = done {
            eprintln!("molt: {}", e.message);
        }
    }
    link.close().await;
    Ok(())
}

/// Runs one turn, its reply streaming to stdout; what went wrong, if anything, for stderr.
async fn turn(
    link: &mut Link<'_>,
    key: &str,
    agent: Option<&str>,
    text: &str,
    timeout_secs: u64,
    interrupt: &mut Option<tokio::signal::unix::Signal>,
) -> Result<Option<String>, Failure> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let turn = send_turn(link, key, agent, text, deadline).await?;
    let outcome = follow(link, &turn, true, deadline, interrupt).await?;
    Ok(match outcome.status {
        TurnStatus::Ok => None,
        TurnStatus::Aborted => Some("[aborted]".into()),
        _ => Some(format!("molt: {}", outcome.problem(timeout_secs))),
    })
}

/// Creates a session with a fresh key and returns its full key.
async fn new_session(
    link: &mut Link<'_>,
    agent: Option<&str>,
    deadline: Instant,
) -> Result<String, Failure> {
    let p = SessionsCreateParams {
        key: Some(format!("cli-{}", new_id()?)),
        agent_id: agent.map(str::to_owned),
        ..Default::default()
    };
    Ok(link.call::<SessionsCreate>(&p, deadline).await?.key)
}

/// Lines of stdin, read on a thread of their own: a read of a terminal cannot be cancelled,
/// and leaving must not wait for one. The channel closes at end of input.
fn stdin_lines() -> Result<mpsc::Receiver<String>, Failure> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else {
                    eprintln!("molt: stdin is not readable text; leaving");
                    break;
                };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Failure::failed(format!("cannot start reading stdin: {e}")))?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_commands_are_recognised_and_other_lines_are_said() {
        assert_eq!(parse_input("  "), Input::Nothing);
        assert_eq!(parse_input("/quit"), Input::Quit);
        assert_eq!(parse_input("/new\n"), Input::New);
        assert_eq!(parse_input("/reset"), Input::Reset);
        assert_eq!(parse_input("/abort"), Input::Abort);
        assert_eq!(parse_input("/history"), Input::History);
        assert_eq!(parse_input(" hello "), Input::Say("hello"));
        // Commands the CLI does not know are the agent's to interpret.
        assert_eq!(parse_input("/status"), Input::Say("/status"));
    }
}

//! Handover restart (design §4): the new process inherits the listening socket, so no
//! connection is ever refused, and the restart never waits for a drain.
//!
//! ```text
//! old (serving)                               new (child)
//!   spawn child: fd 3 = listener, fd 4 = control, fd 5 = state lock
//!                                             open config + store, migrate, begin boot
//!                              <── {"ready": {...}}   (or {"error": "..."}, or exit)
//!   stop accepting
//!   ──> {"go": true}                          start accepting; MAINPID=self, READY=1
//!   MAINPID=child
//!   state handing-over: clients get shutdown + 1012 and reconnect to the child
//!   drain in-flight steps (≤ handover_drain_cap_ms), release leases, exit 0
//! ```
//! If the child fails before `ready`, the old process kills it and keeps serving; the
//! requester gets the error.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use molt_protocol::methods::system::{HandoverRecord, HandoverResult};
pub use molt_protocol::methods::system::{HandoverReport, Successor};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::app::{App, Lifecycle, now_ms};
use crate::notify::Notifier;

const FD_LISTENER: RawFd = 3;
const FD_CONTROL: RawFd = 4;
const FD_LOCK: RawFd = 5;
const ENV_HANDOVER: &str = "MOLT_HANDOVER";
const ENV_PARENT_EPOCH: &str = "MOLT_HANDOVER_PARENT_EPOCH";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ChildMsg {
    Ready(Successor),
    Error(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ParentMsg {
    Go(bool),
}

/// The outcome shared by every request that joined one handover.
pub type Outcome = Result<HandoverReport, String>;

// ---------------------------------------------------------------------------------------
// Child side
// ---------------------------------------------------------------------------------------

/// What a handover child inherits from its parent.
pub struct Inherited {
    pub listener: TcpListener,
    /// The parent's open lock file: the `flock` is shared, so the lock never lapses.
    pub lock: std::fs::File,
    /// The parent's boot epoch: its leases stay its own until it releases them.
    pub parent_epoch: i64,
    pub control: Control,
}

/// The child's end of the control socket.
pub struct Control(UnixStream);

/// Takes the inherited fds if this process was started by a handover. Call once, early.
pub fn take_inherited() -> Option<Inherited> {
    std::env::var_os(ENV_HANDOVER)?;
    let parent_epoch = std::env::var(ENV_PARENT_EPOCH).ok()?.parse().ok()?;
    // SAFETY: the parent placed these fds at fixed numbers just before exec (see
    // `run_child`), and nothing in this process has touched them yet.
    unsafe {
        Some(Inherited {
            listener: TcpListener::from_raw_fd(FD_LISTENER),
            lock: std::fs::File::from_raw_fd(FD_LOCK),
            parent_epoch,
            control: Control(UnixStream::from_raw_fd(FD_CONTROL)),
        })
    }
}

impl Control {
    /// Tells the parent we failed; it keeps serving.
    pub fn report_error(&mut self, message: &str) {
        let _ = send_line(&mut self.0, &ChildMsg::Error(message.to_owned()));
    }

    /// Tells the parent we are ready and blocks until it says go. `Ok(())` means take over:
    /// either the parent said go, or it died (nobody else would serve). `Err` means the
    /// parent called it off.
    pub fn ready_and_wait_go(mut self, me: Successor) -> Result<(), String> {
        send_line(&mut self.0, &ChildMsg::Ready(me))
            .map_err(|e| format!("cannot report readiness to the old process: {e}"))?;
        let mut line = String::new();
        match BufReader::new(&self.0).read_line(&mut line) {
            Ok(0) | Err(_) => {
                tracing::warn!("the old process went away before saying go; taking over");
                Ok(())
            }
            Ok(_) => match serde_json::from_str::<ParentMsg>(&line) {
                Ok(ParentMsg::Go(true)) => Ok(()),
                _ => Err("the old process called the handover off".into()),
            },
        }
    }
}

fn send_line<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    let mut text = serde_json::to_string(msg).map_err(std::io::Error::other)?;
    text.push('\n');
    w.write_all(text.as_bytes())?;
    w.flush()
}

// ---------------------------------------------------------------------------------------
// Parent side
// ---------------------------------------------------------------------------------------

/// What the serving process needs to hand over to a successor.
pub struct Handover {
    pub app: Arc<App>,
    pub notifier: Notifier,
    /// `~/.local/share/molt[-P]`: where `current` lives.
    pub share_dir: PathBuf,
    /// A duplicate of the listening socket, kept to pass on to a successor.
    pub listener: TcpListener,
    /// The state lock's fd, passed on to a successor (flock is shared across the fork).
    pub lock_fd: RawFd,
    /// How long a successor has to report ready.
    pub timeout: Duration,
    /// The handover in progress or completed, shared by requests that coalesce into it.
    slot: std::sync::Mutex<Option<watch::Receiver<Option<Outcome>>>>,
}

impl Handover {
    pub fn new(
        app: Arc<App>,
        notifier: Notifier,
        share_dir: PathBuf,
        listener: TcpListener,
        lock_fd: RawFd,
        timeout: Duration,
    ) -> Self {
        Self {
            app,
            notifier,
            share_dir,
            listener,
            lock_fd,
            timeout,
            slot: std::sync::Mutex::new(None),
        }
    }

    /// Starts a handover, or joins the one in progress (or just completed: the old process then
    /// only drains, so every later request gets the same report). Returns the outcome and
    /// whether this request was coalesced into another.
    pub async fn request(self: &Arc<Self>) -> (Outcome, bool) {
        let app = &self.app;
        let (mut rx, coalesced) = {
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(rx) => (rx.clone(), true),
                None if app.state() != Lifecycle::Serving => {
                    return (
                        Err(format!("the gateway is {}", app.state().as_str())),
                        false,
                    );
                }
                None => {
                    let (tx, rx) = watch::channel::<Option<Outcome>>(None);
                    *slot = Some(rx.clone());
                    let me = self.clone();
                    tokio::spawn(async move {
                        let outcome = me.perform().await;
                        if outcome.is_err() {
                            // A failed attempt leaves nothing behind; the next request tries anew.
                            *me.slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        }
                        tx.send_replace(Some(outcome));
                    });
                    (rx, false)
                }
            }
        };
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_else(|| Err("handover vanished".into())),
            Err(_) => Err("the handover task ended without a result".into()),
        };
        (outcome, coalesced)
    }

    /// The binary to hand over to: what `current` points to, else this binary.
    fn successor_binary(&self) -> PathBuf {
        let current = self.share_dir.join("current").join("molt");
        if current.exists() {
            return current;
        }
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
    }

    async fn perform(&self) -> Outcome {
        let app = &self.app;
        let t0 = Instant::now();
        let started_at_ms = now_ms();
        let binary = self.successor_binary();
        tracing::info!(binary = %binary.display(), "handover: spawning the successor");
        let outcome = self.run_child(&binary, t0).await;
        let record = match &outcome {
            Ok(to) => Ok(HandoverReport {
                started_at_ms,
                from_pid: app.pid,
                from_version: app.build.version.clone(),
                from_build_id: app.build.build_id.clone(),
                to: to.clone(),
                duration_ms: t0.elapsed().as_millis() as u64,
            }),
            Err(e) => Err(e.clone()),
        };
        let stored = HandoverRecord {
            started_at_ms,
            from_pid: app.pid,
            from_version: app.build.version.clone(),
            duration_ms: t0.elapsed().as_millis() as u64,
            result: if record.is_ok() {
                HandoverResult::Ok
            } else {
                HandoverResult::Failed
            },
            to: record.as_ref().ok().map(|r| r.to.clone()),
            error: record.as_ref().err().cloned(),
        };
        let text = serde_json::to_string(&stored).unwrap_or_default();
        if let Err(e) = app
            .store
            .call(move |s| s.set_meta("last_handover", &text))
            .await
        {
            tracing::warn!(error = %e, "cannot record the handover");
        }
        match &record {
            Ok(r) => tracing::info!(
                to_pid = r.to.pid,
                to_version = %r.to.version,
                duration_ms = r.duration_ms,
                "handover: the successor serves; draining"
            ),
            Err(e) => tracing::error!(error = %e, "handover failed; still serving"),
        }
        record
    }

    /// Spawns the successor and takes it through ready → go. On any failure the child is killed
    /// and this process goes on serving.
    async fn run_child(&self, binary: &PathBuf, t0: Instant) -> Result<Successor, String> {
        let app = &self.app;
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| format!("cannot create the control socket: {e}"))?;
        let fds = [
            (self.listener.as_raw_fd(), FD_LISTENER),
            (theirs.as_raw_fd(), FD_CONTROL),
            (self.lock_fd, FD_LOCK),
        ];
        let mut cmd = tokio::process::Command::new(binary);
        cmd.args(std::env::args_os().skip(1))
            .env(ENV_HANDOVER, "1")
            .env(ENV_PARENT_EPOCH, app.boot.epoch.to_string())
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            // systemd names our pid here; the successor becomes the main pid and must keep
            // feeding the watchdog.
            .env_remove("WATCHDOG_PID")
            .kill_on_drop(false);
        // SAFETY: the closure only calls fcntl(2), dup2(2), setpgid(2), fork(2) and _exit(2), on
        // fds that stay open in the parent for the whole spawn.
        // - Every source is first copied above the targets, so placing one cannot clobber another
        //   that happens to sit at 3-5; dup2 leaves the placed fds without CLOEXEC, so only these
        //   three reach the successor.
        // - Then it forks once more and the intermediate exits: the successor is re-parented to
        //   the service manager (a child subreaper), so its `MAINPID=` is the manager's own child.
        //   systemd does not wait for an "alien" main pid at stop, and with KillMode=mixed would
        //   go straight to SIGKILL.
        // - The intermediate makes itself a process group the successor inherits, so a successor
        //   that hangs before ready can still be killed: kill(-pgid).
        unsafe {
            cmd.pre_exec(move || {
                let mut high = [0; 3];
                for (i, (from, _)) in fds.iter().enumerate() {
                    high[i] = libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, 10);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, (_, to)) in fds.iter().enumerate() {
                    if libc::dup2(high[i], *to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::setpgid(0, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                match libc::fork() {
                    -1 => Err(std::io::Error::last_os_error()),
                    0 => Ok(()),
                    _ => libc::_exit(0),
                }
            });
        }
        // Returns once the successor has exec'd (or failed to).
        let mut intermediate = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        drop(theirs);
        let pgid = intermediate.id().unwrap_or(0) as i32;
        let kill_successor = || {
            if pgid > 0 {
                // SAFETY: kill(2) has no memory-safety preconditions; the group is the
                // successor's alone.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), intermediate.wait()).await {
            Ok(Ok(s)) if s.success() => {}
            other => {
                kill_successor();
                return Err(format!(
                    "cannot start {}: the spawn helper ended with {other:?}",
                    binary.display()
                ));
            }
        }
        ours.set_nonblocking(true)
            .map_err(|e| format!("control socket: {e}"))?;
        let control =
            tokio::net::UnixStream::from_std(ours).map_err(|e| format!("control socket: {e}"))?;
        let (read_half, mut write_half) = control.into_split();
        let mut lines = tokio::io::BufReader::new(read_half).lines();
        let timeout = self.timeout;
        let what = format!("the new process ({}, group {pgid})", binary.display());

        let ready = tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(l)) => match serde_json::from_str::<ChildMsg>(&l) {
                    Ok(ChildMsg::Ready(s)) => Ok(s),
                    Ok(ChildMsg::Error(e)) => Err(format!("{what} failed its checks: {e}")),
                    Err(e) => Err(format!("{what} sent garbage on the control socket: {e}")),
                },
                // Its end of the control socket closes only when it dies.
                Ok(None) | Err(_) => Err(format!("{what} exited before taking over")),
            },
            _ = tokio::time::sleep(timeout) => Err(format!(
                "{what} did not report ready within {} ms", timeout.as_millis()
            )),
        };
        let successor = match ready {
            Ok(s) => s,
            Err(e) => {
                kill_successor();
                return Err(e);
            }
        };
        // From here the child serves: stop accepting, then tell it to go. Pending connections
        // wait in the shared backlog in between; none is refused.
        app.accepting.send_replace(false);
        let go = serde_json::to_string(&ParentMsg::Go(true)).map_err(|e| e.to_string())? + "\n";
        if let Err(e) = write_half.write_all(go.as_bytes()).await {
            // The child is gone after being ready: take serving back.
            app.accepting.send_replace(true);
            kill_successor();
            return Err(format!("{what} went away before go: {e}"));
        }
        self.notifier.notify(&format!("MAINPID={}", successor.pid));
        tracing::info!(
            child = successor.pid,
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "handover: new process accepting"
        );
        app.lifecycle.send_replace(Lifecycle::HandingOver);
        Ok(successor)
    }
}

//! The lifecycle contract every long-lived part of the gateway keeps.
//!
//! A subsystem owns work that outlives a request: the run executor today; the agent, the
//! scheduler and the chat channels next. The gateway drives all of them through one list:
//!
//! ```text
//! store open ──> start ──> READY=1 ... serving ...
//! stop:      close_admission ─> wait_idle(≤ budget) ─> abort ─> wait_idle(rest)
//! handover:  close_admission ─> wait_idle(≤ drain cap) ─> release_to_successor ─> wait_idle
//! ```
//!
//! The contract that makes this safe: a subsystem's work is durable (checkpointed in the
//! store), so `abort` and `release_to_successor` lose nothing; they hand the work back to
//! the durable queue, and the next process (or the successor) resumes it. No stop and no
//! restart ever waits longer than its budget.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, join_all};
use molt_protocol::methods::system::SubsystemStatus;

/// One long-lived part of the gateway. See the module docs for the order of calls.
pub trait Subsystem: Send + Sync + 'static {
    /// A short name for logs and `status` (`runs`, `agent`, `cron`, ...).
    fn name(&self) -> &'static str;
    /// Starts working. Called once, after the store is open and before `READY=1`.
    fn start(self: Arc<Self>);
    /// Takes no new work. Work under way goes on.
    fn close_admission(&self);
    /// Work started in this process and not finished yet.
    fn in_flight(&self) -> usize;
    /// Resolves to `true` when nothing is in flight, or `false` once `timeout` passes.
    fn wait_idle(&self, timeout: Duration) -> BoxFuture<'_, bool>;
    /// Stops what is in flight now and hands it back to the durable queue; the next
    /// process resumes it.
    fn abort(&self);
    /// A successor serves now: give it what is still in flight. Work that can only be
    /// resumed from the store is aborted; a subsystem that holds a live session (a chat
    /// channel's connection) passes it on here.
    fn release_to_successor(&self) {
        self.abort();
    }
}

/// The gateway's subsystems, in start order.
#[derive(Default)]
pub struct Subsystems(Vec<Arc<dyn Subsystem>>);

impl Subsystems {
    pub fn new(list: Vec<Arc<dyn Subsystem>>) -> Self {
        Self(list)
    }

    pub fn start(&self) {
        for s in &self.0 {
            tracing::debug!(subsystem = s.name(), "starting");
            s.clone().start();
        }
    }

    pub fn close_admission(&self) {
        for s in &self.0 {
            s.close_admission();
        }
    }

    /// Work in flight across all subsystems.
    pub fn in_flight(&self) -> usize {
        self.0.iter().map(|s| s.in_flight()).sum()
    }

    /// Each subsystem's in-flight work, for `status`.
    pub fn status(&self) -> Vec<SubsystemStatus> {
        self.0
            .iter()
            .map(|s| SubsystemStatus {
                name: s.name().to_owned(),
                in_flight: s.in_flight(),
            })
            .collect()
    }

    /// In-flight work of the subsystem called `name` (0 if there is none).
    pub fn in_flight_of(&self, name: &str) -> usize {
        self.0
            .iter()
            .filter(|s| s.name() == name)
            .map(|s| s.in_flight())
            .sum()
    }

    /// Waits, for all subsystems at once, until each is idle or `timeout` passes. Returns
    /// whether all went idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        join_all(self.0.iter().map(|s| s.wait_idle(timeout)))
            .await
            .into_iter()
            .all(|idle| idle)
    }

    pub fn abort(&self) {
        for s in &self.0 {
            s.abort();
        }
    }

    pub fn release_to_successor(&self) {
        for s in &self.0 {
            s.release_to_successor();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use tokio::sync::watch;

    use super::*;

    /// Holds `work` items until aborted; records each call it gets.
    struct Fake {
        name: &'static str,
        work: watch::Sender<usize>,
        started: AtomicBool,
        admitting: AtomicBool,
        aborts: AtomicUsize,
    }

    impl Fake {
        fn new(name: &'static str, work: usize) -> Arc<Self> {
            Arc::new(Self {
                name,
                work: watch::Sender::new(work),
                started: AtomicBool::new(false),
                admitting: AtomicBool::new(true),
                aborts: AtomicUsize::new(0),
            })
        }
    }

    impl Subsystem for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn start(self: Arc<Self>) {
            self.started.store(true, Ordering::SeqCst);
        }
        fn close_admission(&self) {
            self.admitting.store(false, Ordering::SeqCst);
        }
        fn in_flight(&self) -> usize {
            *self.work.borrow()
        }
        fn wait_idle(&self, timeout: Duration) -> BoxFuture<'_, bool> {
            let mut rx = self.work.subscribe();
            Box::pin(async move {
                tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
                    .await
                    .is_ok()
            })
        }
        fn abort(&self) {
            self.aborts.fetch_add(1, Ordering::SeqCst);
            self.work.send_replace(0);
        }
    }

    #[tokio::test]
    async fn the_list_drives_every_subsystem_and_waits_no_longer_than_asked() {
        let (idle, busy) = (Fake::new("idle", 0), Fake::new("busy", 2));
        let list = Subsystems::new(vec![idle.clone(), busy.clone()]);
        list.start();
        assert!(idle.started.load(Ordering::SeqCst) && busy.started.load(Ordering::SeqCst));
        assert_eq!(list.in_flight(), 2);
        assert_eq!(list.in_flight_of("busy"), 2);
        assert_eq!(
            list.status(),
            vec![
                SubsystemStatus {
                    name: "idle".into(),
                    in_flight: 0
                },
                SubsystemStatus {
                    name: "busy".into(),
                    in_flight: 2
                },
            ]
        );

        list.close_admission();
        assert!(!busy.admitting.load(Ordering::SeqCst));
        let t0 = std::time::Instant::now();
        assert!(
            !list.wait_idle(Duration::from_millis(50)).await,
            "busy never idles"
        );
        assert!(t0.elapsed() < Duration::from_secs(5), "the wait is bounded");

        // A handover releases by aborting unless a subsystem says otherwise.
        list.release_to_successor();
        assert_eq!(busy.aborts.load(Ordering::SeqCst), 1);
        assert!(list.wait_idle(Duration::from_secs(5)).await);
        assert_eq!(list.in_flight(), 0);
    }
}

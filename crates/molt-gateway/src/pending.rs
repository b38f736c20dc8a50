//! Connections that have not authenticated yet, capped in total and per client address.
//!
//! Every accepted TCP connection takes a [`Ticket`] and keeps it until its WebSocket handshake
//! succeeds (or it closes). A flood of silent sockets would otherwise hold a file descriptor
//! and a task each until the header timeout, and at the file limit the accept loop could not
//! take the next probe or the owner's CLI. Instead of refusing a newcomer when the pool is
//! full, the pool sheds an old member: first the oldest that has not sent a complete request
//! yet, then the oldest of all. So the newest connection is always admitted, and a client that
//! talks (a probe, the owner's CLI) outlives the silent ones.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use molt_config::GatewayConfig;
use tokio::sync::watch;

/// The caps of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_address: usize,
}

/// The default total cap: a quarter of the open-file limit (the rest is for authenticated
/// clients, the store, logs and children), at most 1024.
const MAX_DEFAULT_TOTAL: u64 = 1024;

impl Limits {
    /// The caps from the config, defaulting to fractions of the open-file limit `nofile`.
    pub fn new(g: &GatewayConfig, nofile: u64) -> Self {
        let total = g
            .max_unauthenticated
            .map(|n| n as usize)
            .unwrap_or_else(|| (nofile / 4).clamp(16, MAX_DEFAULT_TOTAL) as usize);
        let per_address = g
            .max_unauthenticated_per_address
            .map(|n| n as usize)
            .unwrap_or_else(|| (total / 4).max(4))
            .min(total);
        Self { total, per_address }
    }
}

/// The pool of unauthenticated connections.
pub struct Pending {
    limits: Limits,
    inner: Mutex<Pool>,
}

#[derive(Default)]
struct Pool {
    next_id: u64,
    /// Keyed by admission order, so the first entry is the oldest.
    members: BTreeMap<u64, Member>,
    per_address: HashMap<IpAddr, usize>,
    shed_total: u64,
}

struct Member {
    addr: IpAddr,
    engaged: Arc<AtomicBool>,
    shed: watch::Sender<bool>,
}

/// One connection's place in the pool. Leaves the pool on [`Ticket::leave`] or on drop.
pub struct Ticket {
    pool: Arc<Pending>,
    id: u64,
    engaged: Arc<AtomicBool>,
    shed: watch::Receiver<bool>,
}

impl Pending {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            inner: Mutex::new(Pool::default()),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `addr`, shedding older members when a cap is reached.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Ticket {
        let mut pool = self.lock();
        if pool.per_address.get(&addr).copied().unwrap_or(0) >= self.limits.per_address {
            pool.shed_one(Some(addr));
        }
        if pool.members.len() >= self.limits.total {
            pool.shed_one(None);
        }
        let id = pool.next_id;
        pool.next_id += 1;
        let engaged = Arc::new(AtomicBool::new(false));
        let (tx, rx) = watch::channel(false);
        pool.members.insert(
            id,
            Member {
                addr,
                engaged: engaged.clone(),
                shed: tx,
            },
        );
        *pool.per_address.entry(addr).or_insert(0) += 1;
        Ticket {
            pool: self.clone(),
            id,
            engaged,
            shed: rx,
        }
    }

    /// How many connections are waiting to authenticate, and how many were shed so far.
    pub fn counts(&self) -> (usize, u64) {
        let pool = self.lock();
        (pool.members.len(), pool.shed_total)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(id);
    }
}

impl Pool {
    /// Sheds the oldest member that has not sent a complete request (from `addr`, if given),
    /// else the oldest one.
    fn shed_one(&mut self, addr: Option<IpAddr>) {
        let candidates = || {
            self.members
                .iter()
                .filter(|(_, m)| addr.is_none_or(|a| m.addr == a))
        };
        let victim = candidates()
            .find(|(_, m)| !m.engaged.load(Ordering::Relaxed))
            .or_else(|| candidates().next())
            .map(|(id, _)| *id);
        if let Some(m) = victim.and_then(|id| self.remove(id)) {
            m.shed.send_replace(true);
            self.shed_total += 1;
        }
    }

    fn remove(&mut self, id: u64) -> Option<Member> {
        let m = self.members.remove(&id)?;
        if let Some(n) = self.per_address.get_mut(&m.addr) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&m.addr);
            }
        }
        Some(m)
    }
}

impl Ticket {
    /// The connection sent a complete request: it is no longer the first to be shed.
    pub fn engage(&self) {
        self.engaged.store(true, Ordering::Relaxed);
    }

    /// Resolves once the pool has shed this connection; the holder then closes it.
    pub async fn shed(&self) {
        let mut rx = self.shed.clone();
        let _ = rx.wait_for(|shed| *shed).await;
    }

    /// Leaves the pool: the connection authenticated.
    pub fn leave(&self) {
        self.pool.remove(self.id);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.pool.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_address: usize) -> Arc<Pending> {
        Pending::new(Limits { total, per_address })
    }

    fn is_shed(t: &Ticket) -> bool {
        *t.shed.borrow()
    }

    #[test]
    fn the_oldest_silent_member_is_shed_first_and_the_newest_always_admitted() {
        let pool = limits(3, 3);
        let a: IpAddr = [127, 0, 0, 1].into();
        let t1 = pool.admit(a);
        let t2 = pool.admit(a);
        let t3 = pool.admit(a);
        t1.engage();
        let t4 = pool.admit(a);
        assert!(!is_shed(&t1), "an engaged member outlives silent ones");
        assert!(is_shed(&t2));
        assert!(!is_shed(&t3) && !is_shed(&t4));
        assert_eq!(pool.counts(), (3, 1));
        t3.engage();
        t4.engage();
        let t5 = pool.admit(a);
        assert!(is_shed(&t1), "with all engaged, the oldest goes");
        assert!(!is_shed(&t5));
        drop((t2, t3, t4, t5));
        assert_eq!(pool.counts().0, 0);
    }

    #[test]
    fn a_full_address_sheds_its_own_members_not_others() {
        let pool = limits(10, 2);
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let other = pool.admit(b);
        let a1 = pool.admit(a);
        let a2 = pool.admit(a);
        let a3 = pool.admit(a);
        assert!(!is_shed(&other));
        assert!(is_shed(&a1));
        assert!(!is_shed(&a2) && !is_shed(&a3));
        a2.leave();
        let a4 = pool.admit(a);
        assert!(
            !is_shed(&a3) && !is_shed(&a4),
            "a member that left frees its place"
        );
    }

    #[test]
    fn default_caps_follow_the_file_limit() {
        let g = GatewayConfig::default();
        assert_eq!(
            Limits::new(&g, 4096),
            Limits {
                total: 1024,
                per_address: 256
            }
        );
        assert_eq!(Limits::new(&g, 1024).total, 256);
        assert_eq!(Limits::new(&g, 1 << 20).total, 1024);
        let g = GatewayConfig {
            max_unauthenticated: Some(10),
            max_unauthenticated_per_address: Some(50),
            ..GatewayConfig::default()
        };
        assert_eq!(
            Limits::new(&g, 4096),
            Limits {
                total: 10,
                per_address: 10
            }
        );
    }
}

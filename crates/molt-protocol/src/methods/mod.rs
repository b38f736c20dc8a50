//! Every method molt implements, declared once with [`crate::declare_methods`], one file per
//! family. Adding a method means one declaration here (with its param and result types) and
//! one handler registered in the gateway's router; the CLI calls it through the same types.

pub mod agents;
pub mod approvals;
pub mod channels;
pub mod chat;
pub mod cron;
pub mod devices;
pub mod sessions;
pub mod system;
pub mod tasks;
pub mod update;

use crate::method::MethodInfo;

/// Every declared method, family by family.
pub fn all() -> impl Iterator<Item = MethodInfo> {
    [
        system::DECLARED,
        tasks::DECLARED,
        devices::DECLARED,
        update::DECLARED,
        chat::DECLARED,
        sessions::DECLARED,
        agents::DECLARED,
        approvals::DECLARED,
        cron::DECLARED,
        channels::DECLARED,
    ]
    .into_iter()
    .flatten()
    .copied()
}

/// The scope `method` requires, or `None` if molt does not implement it.
pub fn required_scope(method: &str) -> Option<crate::scope::Scope> {
    all().find(|m| m.name == method).map(|m| m.scope)
}

/// Events molt may send.
pub const EVENTS: &[&str] = &[
    "connect.challenge",
    "tick",
    "shutdown",
    "device.pair.requested",
    "device.pair.resolved",
    "molt.update.result",
    "chat",
    "agent",
    "session.message",
    "sessions.changed",
    approvals::REQUESTED_EVENT,
    approvals::RESOLVED_EVENT,
    cron::EVENT,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scope;

    #[test]
    fn names_are_unique_and_scopes_are_found() {
        let mut names: Vec<&str> = all().map(|m| m.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a method is declared twice");
        assert_eq!(required_scope("tasks.cancel"), Some(Scope::Write));
        assert_eq!(required_scope("molt.run.exec"), Some(Scope::Admin));
        assert_eq!(required_scope("sessions.list"), Some(Scope::Read));
        assert_eq!(required_scope("cron.list"), Some(Scope::Read));
        assert_eq!(required_scope("cron.add"), Some(Scope::Admin));
    }
}

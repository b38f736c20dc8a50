//! Operator scopes and the scope each method molt implements requires.

/// An operator scope. `admin` implies all others; `write` implies `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
    Admin,
    Approvals,
    Pairing,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Self::Read,
        Self::Write,
        Self::Admin,
        Self::Approvals,
        Self::Pairing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "operator.read",
            Self::Write => "operator.write",
            Self::Admin => "operator.admin",
            Self::Approvals => "operator.approvals",
            Self::Pairing => "operator.pairing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether holding `self` grants `needed`.
    pub fn grants(self, needed: Scope) -> bool {
        self == needed || self == Self::Admin || (self == Self::Write && needed == Self::Read)
    }
}

/// Whether any scope in `held` grants `needed`.
pub fn allows(held: &[Scope], needed: Scope) -> bool {
    held.iter().any(|s| s.grants(needed))
}

/// Parses requested scope strings, keeping the known operator scopes in order, deduplicated.
pub fn parse_list(requested: &[String]) -> Vec<Scope> {
    let mut out: Vec<Scope> = requested.iter().filter_map(|s| Scope::parse(s)).collect();
    out.sort();
    out.dedup();
    out
}

/// Every method molt implements, with the scope it requires. Scopes of protocol methods come
/// from the published schema's `methods` map; `molt.*` methods are molt's own extensions.
/// `features.methods` in `hello-ok` is derived from this table, so it lists exactly these.
pub const METHODS: &[(&str, Scope)] = &[
    ("health", Scope::Read),
    ("status", Scope::Read),
    ("system-presence", Scope::Read),
    ("gateway.identity.get", Scope::Read),
    ("logs.tail", Scope::Read),
    ("tasks.list", Scope::Read),
    ("tasks.get", Scope::Read),
    ("tasks.cancel", Scope::Write),
    ("device.pair.list", Scope::Pairing),
    ("device.pair.approve", Scope::Pairing),
    ("device.pair.reject", Scope::Pairing),
    ("gateway.restart.request", Scope::Admin),
    ("update.run", Scope::Admin),
    ("update.status", Scope::Admin),
    ("molt.update.notify", Scope::Admin),
    // Creating an exec run runs a command on the host: that is admin, not write.
    ("molt.run.exec", Scope::Admin),
    ("molt.run.get", Scope::Read),
];

/// Events molt may send.
pub const EVENTS: &[&str] = &[
    "connect.challenge",
    "tick",
    "shutdown",
    "device.pair.requested",
    "device.pair.resolved",
    "molt.update.result",
];

/// The scope `method` requires, or `None` if molt does not implement it.
pub fn required(method: &str) -> Option<Scope> {
    METHODS.iter().find(|(m, _)| *m == method).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implication() {
        assert!(allows(&[Scope::Admin], Scope::Pairing));
        assert!(allows(&[Scope::Write], Scope::Read));
        assert!(!allows(&[Scope::Read], Scope::Write));
        assert!(!allows(&[Scope::Write], Scope::Admin));
        assert_eq!(required("tasks.cancel"), Some(Scope::Write));
        assert_eq!(required("sessions.list"), None);
        let parsed = parse_list(&[
            "operator.write".into(),
            "bogus".into(),
            "operator.read".into(),
            "operator.read".into(),
        ]);
        assert_eq!(parsed, vec![Scope::Read, Scope::Write]);
    }
}

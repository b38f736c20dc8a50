//! Operator scopes and how they imply each other. Each method declares the scope it needs
//! ([`crate::method::Method::SCOPE`]).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implication() {
        assert!(allows(&[Scope::Admin], Scope::Pairing));
        assert!(allows(&[Scope::Write], Scope::Read));
        assert!(!allows(&[Scope::Read], Scope::Write));
        assert!(!allows(&[Scope::Write], Scope::Admin));
        let parsed = parse_list(&[
            "operator.write".into(),
            "bogus".into(),
            "operator.read".into(),
            "operator.read".into(),
        ]);
        assert_eq!(parsed, vec![Scope::Read, Scope::Write]);
    }
}

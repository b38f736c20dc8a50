//! Agent gateways: how strong a shared token is, and whether an OpenClaw config sets up auth.
//!
//! OpenClaw keeps its config in `~/.openclaw/openclaw.json`, which is JSON5 (comments, single
//! quotes, unquoted keys, trailing commas), so [`openclaw_auth`] reads it with a small
//! tolerant scanner rather than a JSON parser: it only needs `gateway.auth.mode`, and whether a
//! `token` or `password` is set there.

use serde::Serialize;

/// Tokens shorter than this are guessable by an attacker who can try many (molt rate-limits
/// failures per address, but not across addresses).
pub const MIN_TOKEN_LEN: usize = 24;

/// Placeholders seen in examples and docs, compared case-insensitively.
const PLACEHOLDERS: &[&str] = &[
    "changeme",
    "change-me",
    "replace-me",
    "replaceme",
    "your-token",
    "your-secure-token-here",
    "a-long-random-string",
    "secret",
    "password",
    "token",
    "test",
    "admin",
];

/// How strong a shared secret looks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum TokenStrength {
    /// Long and varied enough.
    Strong,
    /// Guessable; `reason` says why.
    Weak {
        /// Why, in a few words.
        reason: String,
    },
}

/// Judges a token: a known placeholder, fewer than [`MIN_TOKEN_LEN`] characters, or fewer than
/// 10 distinct characters is weak.
pub fn token_strength(token: &str) -> TokenStrength {
    let weak = |reason: String| TokenStrength::Weak { reason };
    let lower = token.trim().to_ascii_lowercase();
    if PLACEHOLDERS.contains(&lower.as_str()) {
        return weak("it is a placeholder from the documentation".into());
    }
    let len = token.chars().count();
    if len < MIN_TOKEN_LEN {
        return weak(format!(
            "it has {len} characters; use at least {MIN_TOKEN_LEN}"
        ));
    }
    let mut distinct: Vec<char> = token.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 10 {
        return weak(format!(
            "it uses only {} distinct characters",
            distinct.len()
        ));
    }
    TokenStrength::Strong
}

/// What an OpenClaw config says about gateway auth.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OpenClawAuth {
    /// `gateway.auth.mode`, when set.
    pub mode: Option<String>,
    /// `gateway.auth.token` is a non-empty string (or a SecretRef object).
    pub token: bool,
    /// `gateway.auth.password` is a non-empty string (or a SecretRef object).
    pub password: bool,
    /// `gateway.bind`, when set (`loopback`, `lan`, `tailnet`, `custom`, ...).
    pub bind: Option<String>,
}

impl OpenClawAuth {
    /// True when clients must present a secret (or come through a trusted proxy).
    pub fn is_configured(&self) -> bool {
        match self.mode.as_deref() {
            Some("none") => false,
            Some("trusted-proxy") => true,
            Some("password") => self.password,
            Some("token") => self.token,
            _ => self.token || self.password,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Str(String),
    Word(String),
    Punct(char),
}

/// Splits JSON5 into strings, bare words and punctuation; skips comments. Never fails:
/// an unterminated string or comment ends the input.
fn tokens(text: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                let mut s = String::new();
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            if let Some(e) = chars.next() {
                                s.push(e);
                            }
                        }
                        d if d == c => break,
                        d => s.push(d),
                    }
                }
                out.push(Tok::Str(s));
            }
            '/' if chars.peek() == Some(&'/') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            '{' | '}' | '[' | ']' | ':' | ',' => out.push(Tok::Punct(c)),
            c if c.is_whitespace() => {}
            c => {
                let mut w = String::from(c);
                while let Some(&d) = chars.peek() {
                    if d.is_whitespace() || "{}[]:,\"'/".contains(d) {
                        break;
                    }
                    w.push(d);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    out
}

/// Reads `gateway.auth.{mode,token,password}` and `gateway.bind` from an OpenClaw config.
/// Unknown structure is ignored; a config it cannot make sense of reads as "no auth".
pub fn openclaw_auth(text: &str) -> OpenClawAuth {
    let toks = tokens(text);
    let mut out = OpenClawAuth::default();
    // The path of object keys to the current position; `None` for array levels.
    let mut path: Vec<Option<String>> = Vec::new();
    let mut pending_key: Option<String> = None;
    let mut i = 0;
    while let Some(t) = toks.get(i) {
        match t {
            Tok::Punct('{') | Tok::Punct('[') => {
                path.push(pending_key.take());
            }
            Tok::Punct('}') | Tok::Punct(']') => {
                path.pop();
                pending_key = None;
            }
            Tok::Str(s) | Tok::Word(s) if toks.get(i + 1) == Some(&Tok::Punct(':')) => {
                pending_key = Some(s.clone());
                i += 1;
            }
            Tok::Str(v) | Tok::Word(v) => {
                if let Some(key) = pending_key.take() {
                    let at: Vec<&str> = path.iter().map(|p| p.as_deref().unwrap_or("")).collect();
                    let value = if matches!(t, Tok::Word(w) if w == "null") {
                        ""
                    } else {
                        v.as_str()
                    };
                    match (at.as_slice(), key.as_str()) {
                        ([_, "gateway", "auth"], "mode") => out.mode = Some(value.to_owned()),
                        ([_, "gateway", "auth"], "token") => out.token = !value.is_empty(),
                        ([_, "gateway", "auth"], "password") => out.password = !value.is_empty(),
                        ([_, "gateway"], "bind") => out.bind = Some(value.to_owned()),
                        _ => {}
                    }
                }
            }
            Tok::Punct(_) => {}
        }
        // A SecretRef (`token: { source: "env", ... }`) counts as set.
        if let (Some(Tok::Punct('{')), [.., Some(g), Some(a), Some(k)]) =
            (toks.get(i), path.as_slice())
            && g == "gateway"
            && a == "auth"
        {
            match k.as_str() {
                "token" => out.token = true,
                "password" => out.password = true,
                _ => {}
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_judged() {
        assert_eq!(
            token_strength("a3f9c2e1b7d04a6f9e8c1b2a3d4e5f60"),
            TokenStrength::Strong
        );
        assert!(matches!(
            token_strength("changeme"),
            TokenStrength::Weak { .. }
        ));
        assert!(matches!(
            token_strength("short-token-1"),
            TokenStrength::Weak { .. }
        ));
        assert!(matches!(
            token_strength("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            TokenStrength::Weak { .. }
        ));
    }

    #[test]
    fn openclaw_json5() {
        let a = openclaw_auth(
            "// OpenClaw\n{\n  gateway: {\n    mode: 'local',\n    bind: \"lan\",\n    auth: { mode: \"token\", token: 'abc', },\n  },\n  agents: { auth: { token: 'x' } },\n}\n",
        );
        assert_eq!(a.mode.as_deref(), Some("token"));
        assert!(a.token && !a.password && a.is_configured());
        assert_eq!(a.bind.as_deref(), Some("lan"));
        let none = openclaw_auth("{ \"gateway\": { \"port\": 57725 } }");
        assert!(!none.is_configured());
        let secret_ref =
            openclaw_auth("{gateway:{auth:{mode:'password',password:{source:'env',id:'PW'}}}}");
        assert!(secret_ref.is_configured(), "{secret_ref:?}");
        assert!(!openclaw_auth("{{{{ ]]] 'unterminated").is_configured());
    }
}

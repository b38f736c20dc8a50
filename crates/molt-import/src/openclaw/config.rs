//! OpenClaw's `openclaw.json`: JSON5 with `$include`, and `${VAR}` references in strings.
//!
//! `$include` is resolved here (an object whose `$include` names a file, or a list of files,
//! is replaced by their deep merge, and sibling keys are merged over it; paths are relative to
//! the including file; at most 10 levels). `${VAR}` references are left in place: the mapping
//! decides per key whether to keep a reference (a secret) or resolve it (a URL).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::ImportError;

/// How deep `$include` may nest, as in OpenClaw.
const MAX_INCLUDE_DEPTH: usize = 10;

/// Reads `path` as JSON5 and resolves its `$include`s.
pub fn load(path: &Path) -> Result<Value, ImportError> {
    load_at(path, &mut Vec::new())
}

fn load_at(path: &Path, chain: &mut Vec<PathBuf>) -> Result<Value, ImportError> {
    if chain.len() > MAX_INCLUDE_DEPTH {
        return Err(ImportError::at(
            path,
            format!(
                "$include nests deeper than {MAX_INCLUDE_DEPTH} levels (included from {})",
                show_chain(chain)
            ),
        ));
    }
    if chain.iter().any(|p| p == path) {
        return Err(ImportError::at(
            path,
            format!(
                "$include loops back to this file (via {})",
                show_chain(chain)
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut err = ImportError::io(path, "cannot read the OpenClaw config", &e);
        if !chain.is_empty() {
            err.message
                .push_str(&format!(" (included from {})", show_chain(chain)));
        }
        err
    })?;
    let value: Value = json5::from_str(&text).map_err(|e| {
        let mut message = format!("not valid JSON5: {e}");
        if !chain.is_empty() {
            message.push_str(&format!(" (included from {})", show_chain(chain)));
        }
        ImportError::at(path, message)
    })?;
    chain.push(path.to_owned());
    let resolved = resolve_includes(value, path, chain);
    chain.pop();
    resolved
}

fn show_chain(chain: &[PathBuf]) -> String {
    chain
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" <- ")
}

fn resolve_includes(
    value: Value,
    file: &Path,
    chain: &mut Vec<PathBuf>,
) -> Result<Value, ImportError> {
    match value {
        Value::Object(mut map) => {
            let include = map.remove("$include");
            let mut out = match include {
                None => Value::Object(Map::new()),
                Some(spec) => {
                    let paths = match spec {
                        Value::String(p) => vec![p],
                        Value::Array(items) => items
                            .into_iter()
                            .map(|i| match i {
                                Value::String(p) => Ok(p),
                                other => Err(ImportError::at(
                                    file,
                                    format!("$include lists {other}, expected a path string"),
                                )),
                            })
                            .collect::<Result<_, _>>()?,
                        other => {
                            return Err(ImportError::at(
                                file,
                                format!("$include is {other}, expected a path or a list of paths"),
                            ));
                        }
                    };
                    let base = file.parent().unwrap_or(Path::new("."));
                    let mut merged = Value::Object(Map::new());
                    for p in paths {
                        let included = load_at(&base.join(&p), chain)?;
                        deep_merge(&mut merged, included);
                    }
                    merged
                }
            };
            let mut rest = Map::new();
            for (k, v) in map {
                rest.insert(k, resolve_includes(v, file, chain)?);
            }
            deep_merge(&mut out, Value::Object(rest));
            Ok(out)
        }
        Value::Array(items) => items
            .into_iter()
            .map(|v| resolve_includes(v, file, chain))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other),
    }
}

/// Merges `over` into `base`: objects key by key, anything else replaced.
fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => deep_merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// A string value as the mapping sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// A literal (after `$${` unescaping).
    Plain(String),
    /// Exactly `${VAR}`: a reference the import keeps as one.
    EnvRef(String),
    /// Text with references inside (`"${BASE}/v1"`), which only resolving can map.
    Template(String),
}

fn is_var_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

impl Text {
    /// Classifies a config string.
    pub fn parse(s: &str) -> Self {
        if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}'))
            && is_var_name(name)
        {
            return Self::EnvRef(name.to_owned());
        }
        let unescaped_refs = s.replace("$${", "");
        if unescaped_refs.contains("${") {
            Self::Template(s.to_owned())
        } else {
            Self::Plain(s.replace("$${", "${"))
        }
    }

    /// Substitutes references from `env`. `Err` names the first variable that is not set.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        match self {
            Self::Plain(s) => Ok(s.clone()),
            Self::EnvRef(name) => env(name).ok_or_else(|| name.clone()),
            Self::Template(s) => {
                let mut out = String::new();
                let mut rest = s.as_str();
                while let Some(i) = rest.find('$') {
                    out.push_str(&rest[..i]);
                    let tail = &rest[i..];
                    if let Some(t) = tail.strip_prefix("$${") {
                        out.push_str("${");
                        rest = t;
                    } else if let Some(t) = tail.strip_prefix("${")
                        && let Some(end) = t.find('}')
                        && is_var_name(&t[..end])
                    {
                        out.push_str(&env(&t[..end]).ok_or_else(|| t[..end].to_owned())?);
                        rest = &t[end + 1..];
                    } else {
                        out.push('$');
                        rest = &tail[1..];
                    }
                }
                out.push_str(rest);
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_merge_in_order_and_siblings_win() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.json5"),
            "// c\n{ a: { $include: ['x.json5', 'y.json5'], k: 3 }, b: [1,], }",
        )
        .unwrap();
        std::fs::write(dir.path().join("x.json5"), "{ k: 1, m: { p: 1, q: 1 } }").unwrap();
        std::fs::write(dir.path().join("y.json5"), "{ m: { q: 2 } }").unwrap();
        let v = load(&dir.path().join("main.json5")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": {"k": 3, "m": {"p": 1, "q": 2}}, "b": [1]})
        );
    }

    #[test]
    fn bad_json5_and_missing_includes_name_the_file_and_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("main.json5");
        std::fs::write(&main, "{ a: { $include: 'sub.json5' } }").unwrap();
        std::fs::write(dir.path().join("sub.json5"), "{ oops: }").unwrap();
        let e = load(&main).unwrap_err().to_string();
        assert!(e.contains("sub.json5") && e.contains("JSON5"), "{e}");
        assert!(
            e.contains("included from") && e.contains("main.json5"),
            "{e}"
        );
        std::fs::write(&main, "{ a: { $include: 'gone.json5' } }").unwrap();
        let e = load(&main).unwrap_err().to_string();
        assert!(e.contains("gone.json5"), "{e}");
        std::fs::write(&main, "{ a: { $include: 'main.json5' } }").unwrap();
        let e = load(&main).unwrap_err().to_string();
        assert!(e.contains("loops"), "{e}");
    }

    #[test]
    fn env_references_are_kept_or_resolved() {
        assert_eq!(Text::parse("${KEY}"), Text::EnvRef("KEY".into()));
        assert_eq!(Text::parse("plain"), Text::Plain("plain".into()));
        assert_eq!(Text::parse("$${KEY}"), Text::Plain("${KEY}".into()));
        let t = Text::parse("${BASE}/v1");
        assert_eq!(t, Text::Template("${BASE}/v1".into()));
        let env = |k: &str| (k == "BASE").then(|| "http://h".to_owned());
        assert_eq!(t.resolve(&env).unwrap(), "http://h/v1");
        assert_eq!(Text::parse("${NOPE}/x").resolve(&env).unwrap_err(), "NOPE");
    }
}

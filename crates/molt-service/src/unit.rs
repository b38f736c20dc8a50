//! The systemd user unit: rendering it, and reading back the labels doctor and update compare.

use std::fmt::Write;
use std::path::Path;

/// Seconds between the stop budget and `TimeoutStopSec`, so molt's own budget always ends
/// first and systemd never has to SIGKILL it.
pub const STOP_MARGIN_SECS: u64 = 5;
/// `WatchdogSec`: the gateway pings at half this.
pub const WATCHDOG_SECS: u64 = 30;

/// What goes into a unit.
#[derive(Debug, Clone)]
pub struct UnitSpec<'a> {
    pub profile: Option<&'a str>,
    /// `<share>/current/molt`: the unit never names a version directory.
    pub exec: &'a Path,
    pub version: &'a str,
    pub build_id: &'a str,
    pub sha256: &'a str,
    pub stop_budget_ms: u64,
    /// Environment the gateway must see to resolve the same paths as the installer.
    pub env: &'a [(String, String)],
}

/// `TimeoutStopSec` for a stop budget.
pub fn timeout_stop_secs(stop_budget_ms: u64) -> u64 {
    stop_budget_ms.div_ceil(1000) + STOP_MARGIN_SECS
}

fn quote(v: &str) -> String {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-:@+,".contains(c))
    {
        v.to_owned()
    } else {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The unit file text.
pub fn render(spec: &UnitSpec<'_>) -> String {
    let profile = spec.profile.unwrap_or("default");
    let mut exec = format!("{} gateway run", quote(&spec.exec.display().to_string()));
    if let Some(p) = spec.profile {
        let _ = write!(exec, " --profile {p}");
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by `molt service install`; re-run it rather than editing."
    );
    let _ = writeln!(s, "[Unit]");
    let _ = writeln!(
        s,
        "Description=molt gateway {} (profile {profile})",
        spec.version
    );
    let _ = writeln!(s, "Documentation=man:molt(1)");
    let _ = writeln!(s);
    let _ = writeln!(s, "[Service]");
    let _ = writeln!(s, "Type=notify");
    // A handover's successor sends READY=1 and MAINPID= itself.
    let _ = writeln!(s, "NotifyAccess=all");
    let _ = writeln!(s, "ExecStart={exec}");
    for (k, v) in spec.env {
        let _ = writeln!(s, "Environment={}", quote(&format!("{k}={v}")));
    }
    let _ = writeln!(s, "Restart=always");
    let _ = writeln!(s, "RestartSec=1");
    let _ = writeln!(s, "RestartPreventExitStatus=78");
    let _ = writeln!(
        s,
        "TimeoutStopSec={}",
        timeout_stop_secs(spec.stop_budget_ms)
    );
    let _ = writeln!(s, "KillMode=mixed");
    let _ = writeln!(s, "WatchdogSec={WATCHDOG_SECS}");
    let _ = writeln!(s, "X-Molt-Version={}", spec.version);
    let _ = writeln!(s, "X-Molt-Build={}", spec.build_id);
    let _ = writeln!(s, "X-Molt-Sha256={}", spec.sha256);
    let _ = writeln!(s);
    let _ = writeln!(s, "[Install]");
    let _ = writeln!(s, "WantedBy=default.target");
    s
}

/// The version facts a unit file states about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitLabels {
    /// The version named in `Description=molt gateway <version> ...`.
    pub description_version: Option<String>,
    pub version: Option<String>,
    pub build_id: Option<String>,
    pub sha256: Option<String>,
    pub exec_start: Option<String>,
}

impl UnitLabels {
    /// One version if the description and the marker agree, else `None`.
    pub fn label(&self) -> Option<&str> {
        match (&self.description_version, &self.version) {
            (Some(d), Some(v)) if d == v => Some(v),
            _ => None,
        }
    }
}

/// Reads the labels from a unit file's text.
pub fn parse_labels(text: &str) -> UnitLabels {
    let mut l = UnitLabels::default();
    for line in text.lines().map(str::trim) {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().to_owned();
        match k.trim() {
            "Description" => {
                l.description_version = v
                    .strip_prefix("molt gateway ")
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_owned)
            }
            "X-Molt-Version" => l.version = Some(v),
            "X-Molt-Build" => l.build_id = Some(v),
            "X-Molt-Sha256" => l.sha256 = Some(v),
            "ExecStart" => l.exec_start = Some(v),
            _ => {}
        }
    }
    l
}

/// The lines that differ between two unit texts, as `-old` / `+new`.
pub fn diff(old: &str, new: &str) -> Vec<String> {
    let olds: Vec<&str> = old.lines().collect();
    let news: Vec<&str> = new.lines().collect();
    let mut out: Vec<String> = olds
        .iter()
        .filter(|l| !news.contains(l))
        .map(|l| format!("-{l}"))
        .collect();
    out.extend(
        news.iter()
            .filter(|l| !olds.contains(l))
            .map(|l| format!("+{l}")),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_read_back() {
        let env = vec![("HOME".to_owned(), "/home/a b".to_owned())];
        let text = render(&UnitSpec {
            profile: Some("work"),
            exec: Path::new("/h/.local/share/molt-work/current/molt"),
            version: "2.0.0",
            build_id: "abc-def",
            sha256: "00ff",
            stop_budget_ms: 10_000,
            env: &env,
        });
        assert!(text.contains(
            "ExecStart=/h/.local/share/molt-work/current/molt gateway run --profile work"
        ));
        assert!(text.contains("TimeoutStopSec=15\n"));
        assert!(text.contains("Environment=\"HOME=/home/a b\""));
        let l = parse_labels(&text);
        assert_eq!(l.label(), Some("2.0.0"));
        assert_eq!(l.build_id.as_deref(), Some("abc-def"));
        let stale = text.replace(
            "Description=molt gateway 2.0.0",
            "Description=molt gateway 1.9.0",
        );
        assert_eq!(parse_labels(&stale).label(), None);
        assert_eq!(diff(&stale, &text).len(), 2);
        assert_eq!(timeout_stop_secs(10_001), 16);
    }
}

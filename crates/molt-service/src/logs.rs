//! `molt service logs`: the unit's journal when there is one, else the gateway's own log file.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::ServiceError;

/// How often a followed log file is read again.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// Writes the last `lines` lines of `unit`'s journal (or, with no journal, of `log_file`) to
/// `out`, and with `follow` goes on writing what is appended until the process is stopped.
pub fn show(
    unit: &str,
    log_file: &Path,
    lines: u32,
    follow: bool,
    out: &mut impl Write,
) -> Result<(), ServiceError> {
    if has_journal(unit) {
        return journal(unit, lines, follow);
    }
    let text = std::fs::read_to_string(log_file).map_err(|source| ServiceError::Io {
        what: format!(
            "no journal for {unit}, and cannot read {}",
            log_file.display()
        ),
        source,
    })?;
    let all: Vec<&str> = text.lines().collect();
    let io = |source| ServiceError::Io {
        what: "cannot write the log".into(),
        source,
    };
    for l in &all[all.len().saturating_sub(lines as usize)..] {
        writeln!(out, "{l}").map_err(io)?;
    }
    if !follow {
        return Ok(());
    }
    let mut offset = text.len() as u64;
    loop {
        std::thread::sleep(FOLLOW_POLL);
        let Ok(mut f) = std::fs::File::open(log_file) else {
            continue;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0; // rotated or truncated
        }
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let mut buf = String::new();
            if f.read_to_string(&mut buf).is_ok() {
                out.write_all(buf.as_bytes()).map_err(io)?;
                out.flush().map_err(io)?;
                offset += buf.len() as u64;
            }
        }
    }
}

/// Whether the user journal holds any line of `unit`.
fn has_journal(unit: &str) -> bool {
    Command::new("journalctl")
        .args(["--user", "-u", unit, "-n", "1", "--no-pager", "-q"])
        .output()
        .map(|o| o.status.success() && !o.stdout.is_empty())
        .unwrap_or(false)
}

fn journal(unit: &str, lines: u32, follow: bool) -> Result<(), ServiceError> {
    let n = lines.to_string();
    let mut args = vec!["--user", "-u", unit, "-n", n.as_str(), "--no-pager"];
    if follow {
        args.push("-f");
    }
    let status = Command::new("journalctl")
        .args(&args)
        .status()
        .map_err(|source| ServiceError::Io {
            what: "cannot run journalctl".into(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(ServiceError::Conflict("journalctl failed".into()))
    }
}

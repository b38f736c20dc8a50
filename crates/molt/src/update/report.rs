//! The update report as text: `Update Result: OK|ROLLED BACK|FAILED`, Before, After, each
//! step with its time. `--json` prints [`Report`] itself, so both forms carry the same data.

pub use molt_store::{UpdateReport as Report, VersionRef};

pub fn print_text(r: &Report) {
    let v = |x: &Option<VersionRef>| {
        x.as_ref()
            .map(|r| format!("{} ({})", r.version, r.build_id))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "Update Result: {}{}",
        r.result,
        if r.dry_run {
            " (dry run: nothing was changed)"
        } else {
            ""
        }
    );
    println!("  Before: {}", v(&r.before));
    println!("  After:  {}", v(&r.after));
    if (r.result != "OK" || r.dry_run) && r.target.is_some() {
        println!("  Target: {}", v(&r.target));
    }
    println!(
        "  Job:    {} ({}, requested by {}{})",
        r.job_id,
        r.kind,
        r.requester,
        r.launcher
            .as_deref()
            .map(|l| format!(", run by {l}"))
            .unwrap_or_default()
    );
    if let Some(reason) = &r.reason {
        println!("  Reason: {reason}");
    }
    println!("Steps:");
    let width = r.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &r.steps {
        let mark = match s.status.as_str() {
            "ok" => "✓",
            "failed" => "✗",
            "skipped" => "-",
            _ => "…",
        };
        let ms =
            s.ms.map(|m| format!("{m} ms"))
                .unwrap_or_else(|| "running".into());
        let detail = s
            .detail
            .as_deref()
            .map(|d| format!("  {d}"))
            .unwrap_or_default();
        println!("  {mark} {:<width$}  {ms:>9}{detail}", s.name);
    }
    if let Some(t) = r.total_ms {
        println!("  Total: {t} ms");
    }
    if let Some(c) = &r.continuation_message {
        println!(
            "Continuation: {c}{}",
            if r.continuation_delivered {
                " (delivered to operators)"
            } else {
                ""
            }
        );
    }
    match r.result.as_str() {
        "FAILED" if !r.steps.iter().any(|s| s.name == "switch") => println!(
            "Nothing was switched: the installed version is unchanged. Fix the cause above and run `molt update` again."
        ),
        "FAILED" => {
            println!("Follow the reason above; `molt doctor` shows what is left to repair.")
        }
        "ROLLED BACK" => println!(
            "The old version serves again. The new one was removed; report the reason above to its publisher."
        ),
        "RUNNING" | "PENDING" => {
            println!("Still running: follow it with `molt update status --follow`.")
        }
        _ => {}
    }
}

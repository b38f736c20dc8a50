//! The system prompt: molt's short preamble, then the agent's workspace files, each capped,
//! all capped together.

use std::path::Path;

use molt_config::AgentProfile;

/// The workspace files injected into the prompt, in this order.
pub const WORKSPACE_FILES: &[&str] = &[
    "AGENTS.md",
    "SOUL.md",
    "IDENTITY.md",
    "USER.md",
    "TOOLS.md",
    "MEMORY.md",
];

/// Builds the system prompt for one model call of `agent` in `session_key`.
pub fn system_prompt(
    agent: &AgentProfile,
    session_key: &str,
    model: &str,
    tools: &[&str],
) -> String {
    let mut out = String::new();
    out.push_str(
        "You are a personal assistant that runs inside molt, a gateway on the user's own \
         machine. Be direct and useful. When a task needs the machine, use a tool rather than \
         guessing; say what you did and what came of it.\n\n",
    );
    if !tools.is_empty() {
        out.push_str("## Tools\n");
        out.push_str(&format!("Available: {}.\n", tools.join(", ")));
        out.push_str(
            "`exec` runs a shell command in your workspace. Commands have a time limit and \
             their output is truncated; prefer short, non-interactive commands.\n\n",
        );
    }
    out.push_str("## Workspace\n");
    out.push_str(&format!(
        "Working directory: {}\nSession: {session_key} (agent {})\nModel: {model}\n\n",
        agent.workspace.display(),
        agent.id
    ));
    let files = workspace_context(
        &agent.workspace,
        agent.prompt_file_max_chars,
        agent.prompt_total_max_chars,
    );
    if !files.is_empty() {
        out.push_str(
            "## Workspace files\nThese files are the user's notes for you. Follow them.\n\n",
        );
        out.push_str(&files);
    }
    out
}

/// The workspace files that exist, each under its own heading, with caps applied. A file cut
/// short says so, so the model knows there is more on disk.
pub fn workspace_context(dir: &Path, per_file: usize, total: usize) -> String {
    let mut out = String::new();
    let mut budget = total;
    for name in WORKSPACE_FILES {
        if budget == 0 {
            break;
        }
        let path = dir.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let cap = per_file.min(budget);
        let (body, cut) = truncate_chars(text.trim_end(), cap);
        budget -= body.chars().count();
        out.push_str(&format!("### {name}\n{body}\n"));
        if cut {
            out.push_str(&format!(
                "[{name} is longer; only its first {cap} characters are shown. Read the file \
                 for the rest.]\n"
            ));
        }
        out.push('\n');
    }
    out
}

fn truncate_chars(s: &str, max: usize) -> (&str, bool) {
    match s.char_indices().nth(max) {
        Some((i, _)) => (&s[..i], true),
        None => (s, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_injected_in_order_and_capped() {
        let dir = std::env::temp_dir().join(format!("molt-prompt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("SOUL.md"), "be kind").unwrap();
        std::fs::write(dir.join("AGENTS.md"), "x".repeat(50)).unwrap();
        std::fs::write(dir.join("USER.md"), "y".repeat(50)).unwrap();
        let ctx = workspace_context(&dir, 20, 45);
        let agents = ctx.find("### AGENTS.md").unwrap();
        let soul = ctx.find("### SOUL.md").unwrap();
        assert!(agents < soul);
        assert!(ctx.contains(&"x".repeat(20)) && !ctx.contains(&"x".repeat(21)));
        assert!(ctx.contains("AGENTS.md is longer"));
        // 20 + 7 used; USER.md gets the 18 left.
        assert!(ctx.contains(&"y".repeat(18)) && !ctx.contains(&"y".repeat(19)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

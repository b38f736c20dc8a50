//! `read`, `write`, `edit` and `ls`: the agent's files, confined to its workspace by the
//! kernel (`molt_tools::fs`: every path resolves beneath the workspace directory, so `..`,
//! absolute paths and symlinks that lead out are refused). OpenClaw's parameter shapes.

use futures_util::future::BoxFuture;
use molt_model::ToolSpec;
use molt_tools::fs::{Edit as EditOp, FsError, Workspace};
use serde_json::{Value, json};

use super::{Stop, Tool, ToolContext, ToolEnd, ToolOutput, str_arg, uint_arg};

/// Runs `f` on the agent's workspace, off the async threads (file I/O blocks).
async fn on_workspace(
    ctx: &ToolContext<'_>,
    f: impl FnOnce(&Workspace) -> Result<ToolOutput, FsError> + Send + 'static,
) -> ToolEnd {
    let root = ctx.agent.workspace.clone();
    let r = tokio::task::spawn_blocking(move || {
        let ws = Workspace::open(&root)?;
        f(&ws)
    })
    .await;
    match r {
        Ok(Ok(out)) => out.into(),
        Ok(Err(e)) => ToolOutput {
            details: json!({"status": "failed", "error": format!("{:?}", e.kind)}),
            ..ToolOutput::error(e.message)
        }
        .into(),
        Err(e) => ToolOutput::error(format!("the file operation did not finish: {e}")).into(),
    }
}

pub struct Read;

impl Tool for Read {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "read".into(),
            description: "Read a text file in your workspace. Paths are relative to the \
                          workspace. Long files come in windows: pass `offset` (first line, \
                          from 1) and `limit` (lines) to read on."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "offset": {"type": "integer", "minimum": 1},
                    "limit": {"type": "number"},
                },
                "required": ["path"],
            }),
        }
    }

    fn run<'a>(
        &'a self,
        ctx: &'a ToolContext<'a>,
        args: &'a Value,
        _stop: BoxFuture<'a, Stop>,
    ) -> BoxFuture<'a, ToolEnd> {
        Box::pin(async move {
            let path = match str_arg(args, "read", "path") {
                Ok(p) => p.to_owned(),
                Err(e) => return e.into(),
            };
            let (offset, limit) = (uint_arg(args, "offset"), uint_arg(args, "limit"));
            on_workspace(ctx, move |ws| {
                let r = ws.read(&path, offset, limit)?;
                let mut text = r.text;
                if r.lossy {
                    text.push_str(
                        "\n[the file is not all valid UTF-8; bad bytes show as \u{fffd}]",
                    );
                }
                if let Some(next) = r.next_offset {
                    let total = r
                        .total_lines
                        .map(|n| format!("{n} lines in all; "))
                        .unwrap_or_default();
                    text.push_str(&format!("\n[{total}more from offset {next}]"));
                }
                Ok(ToolOutput::ok(
                    text,
                    json!({
                        "status": "completed", "path": path, "totalLines": r.total_lines,
                        "truncated": r.truncated, "nextOffset": r.next_offset,
                    }),
                ))
            })
            .await
        })
    }
}

pub struct Write;

impl Tool for Write {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "write".into(),
            description: "Create or replace a file in your workspace with `content`. Missing \
                          directories are created. The file is replaced whole and atomically; \
                          to change part of a file, use edit."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "content": {"type": "string"},
                },
                "required": ["path", "content"],
            }),
        }
    }

    fn run<'a>(
        &'a self,
        ctx: &'a ToolContext<'a>,
        args: &'a Value,
        _stop: BoxFuture<'a, Stop>,
    ) -> BoxFuture<'a, ToolEnd> {
        Box::pin(async move {
            let (path, content) = match (
                str_arg(args, "write", "path"),
                str_arg(args, "write", "content"),
            ) {
                (Ok(p), Ok(c)) => (p.to_owned(), c.to_owned()),
                (Err(e), _) | (_, Err(e)) => return e.into(),
            };
            on_workspace(ctx, move |ws| {
                let w = ws.write(&path, content.as_bytes())?;
                let verb = if w.created { "Created" } else { "Replaced" };
                Ok(ToolOutput::ok(
                    format!("{verb} {path} ({} bytes).", w.bytes),
                    json!({"status": "completed", "path": path, "bytes": w.bytes, "created": w.created}),
                ))
            })
            .await
        })
    }
}

pub struct Edit;

impl Tool for Edit {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "edit".into(),
            description: "Change a file in your workspace by exact replacement. Each edit's \
                          `oldText` must occur exactly once in the file (include enough \
                          surrounding text to make it unique); it is replaced by `newText`. \
                          Edits apply in order, and either all apply or none does."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "edits": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "oldText": {"type": "string"},
                                "newText": {"type": "string"},
                            },
                            "required": ["oldText", "newText"],
                        },
                    },
                },
                "required": ["path", "edits"],
            }),
        }
    }

    fn run<'a>(
        &'a self,
        ctx: &'a ToolContext<'a>,
        args: &'a Value,
        _stop: BoxFuture<'a, Stop>,
    ) -> BoxFuture<'a, ToolEnd> {
        Box::pin(async move {
            let path = match str_arg(args, "edit", "path") {
                Ok(p) => p.to_owned(),
                Err(e) => return e.into(),
            };
            let edits = match parse_edits(args) {
                Ok(e) => e,
                Err(e) => return ToolOutput::error(e).into(),
            };
            on_workspace(ctx, move |ws| {
                let r = ws.edit(&path, &edits)?;
                Ok(ToolOutput::ok(
                    format!("Edited {path}: {} replacement(s).", r.replacements),
                    json!({"status": "completed", "path": path, "replacements": r.replacements}),
                ))
            })
            .await
        })
    }
}

/// `edits: [{oldText, newText}]`; a single `{oldText, newText}` at the top level is taken too.
fn parse_edits(args: &Value) -> Result<Vec<EditOp>, String> {
    let one = |v: &Value| -> Option<EditOp> {
        Some(EditOp {
            old_text: v.get("oldText")?.as_str()?.to_owned(),
            new_text: v.get("newText")?.as_str()?.to_owned(),
        })
    };
    match args.get("edits") {
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|e| one(e).ok_or_else(|| "each edit needs `oldText` and `newText` strings".into()))
            .collect(),
        _ => one(args)
            .map(|e| vec![e])
            .ok_or_else(|| "edit needs `edits`: a list of {oldText, newText}".into()),
    }
}

pub struct Ls;

impl Tool for Ls {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "ls".into(),
            description: "List a directory of your workspace (default: its top), sorted by \
                          name, with each entry's kind and size. Long listings come in pages: \
                          pass the last name you got as `after`."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "limit": {"type": "number"},
                    "after": {"type": "string"},
                },
            }),
        }
    }

    fn run<'a>(
        &'a self,
        ctx: &'a ToolContext<'a>,
        args: &'a Value,
        _stop: BoxFuture<'a, Stop>,
    ) -> BoxFuture<'a, ToolEnd> {
        Box::pin(async move {
            let path = args
                .get("path")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .map(str::to_owned);
            let after = args.get("after").and_then(Value::as_str).map(str::to_owned);
            let limit = uint_arg(args, "limit").map(|l| l as usize);
            on_workspace(ctx, move |ws| {
                let l = ws.list(path.as_deref(), limit, after.as_deref())?;
                let mut text = String::new();
                for e in &l.entries {
                    text.push_str(&format!("{}\t{}\t{}\n", e.name, e.kind.as_str(), e.size));
                }
                if l.entries.is_empty() {
                    text.push_str("(empty)\n");
                }
                if l.more {
                    if let Some(last) = l.entries.last() {
                        text.push_str(&format!("[more: pass after = {:?}]\n", last.name));
                    }
                }
                let entries: Vec<Value> = l
                    .entries
                    .iter()
                    .map(|e| json!({"name": e.name, "kind": e.kind.as_str(), "size": e.size}))
                    .collect();
                Ok(ToolOutput::ok(
                    text,
                    json!({"status": "completed", "path": path.unwrap_or_else(|| ".".into()), "entries": entries, "more": l.more}),
                ))
            })
            .await
        })
    }
}

//! Copying the agents' workspaces (`AGENTS.md`, `SOUL.md`, memory files, ...) into molt's.
//!
//! A file molt already has is never overwritten: an identical one is "unchanged", a different
//! one is kept and reported. New files are copied into a staging directory beside the target
//! first and renamed into place only after the store import commits.

use std::path::{Path, PathBuf};

use molt_config::Config;

use crate::openclaw::Source;
use crate::plan::Items;
use crate::report::Status;
use crate::{ImportError, Options};

/// One agent's workspace copy.
#[derive(Debug)]
pub(crate) struct WorkspaceCopy {
    from: PathBuf,
    to: PathBuf,
    /// Files (relative paths) molt does not have yet.
    new: Vec<PathBuf>,
}

/// What [`stage`] copied, waiting for [`Staged::commit`].
pub(crate) struct Staged(Vec<(WorkspaceCopy, PathBuf)>);

fn walk(
    root: &Path,
    rel: &Path,
    out: &mut Vec<PathBuf>,
    skipped: &mut Vec<String>,
) -> Result<(), ImportError> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| ImportError::io(&dir, "cannot read the workspace", &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| ImportError::io(&dir, "cannot read the workspace", &e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let rel = rel.join(&name);
        let ty = e
            .file_type()
            .map_err(|err| ImportError::io(&e.path(), "cannot read", &err))?;
        if ty.is_dir() {
            if name == ".git" {
                skipped.push(format!(
                    "{} (git history; the files are copied)",
                    rel.display()
                ));
                continue;
            }
            walk(root, &rel, out, skipped)?;
        } else if ty.is_file() {
            out.push(rel);
        } else {
            skipped.push(format!("{} (not a regular file)", rel.display()));
        }
    }
    Ok(())
}

fn same_content(a: &Path, b: &Path) -> Result<bool, ImportError> {
    let x = std::fs::read(a).map_err(|e| ImportError::io(a, "cannot read", &e))?;
    let y = std::fs::read(b).map_err(|e| ImportError::io(b, "cannot read", &e))?;
    Ok(x == y)
}

/// Works out each agent's copy against molt's workspace directories as `config` resolves them.
pub(crate) fn plan(
    src: &Source,
    config: &Config,
    opts: &Options,
    items: &mut Items,
) -> Result<Vec<WorkspaceCopy>, ImportError> {
    const C: &str = "workspaces";
    let mut out = Vec::new();
    for agent in &src.agents {
        if !agent.workspace.is_dir() {
            continue;
        }
        let Some(profile) = config
            .agents
            .resolve(&agent.id, &opts.home, &opts.share_dir)
        else {
            continue;
        };
        let to = profile.workspace;
        if to == agent.workspace {
            items.push(
                C,
                agent.id.clone(),
                Status::Unchanged,
                format!("molt uses {} in place", to.display()),
            );
            continue;
        }
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        walk(&agent.workspace, Path::new(""), &mut files, &mut skipped)?;
        let mut new = Vec::new();
        let (mut same, mut differ) = (0, Vec::new());
        for rel in files {
            let dest = to.join(&rel);
            if !dest.exists() {
                new.push(rel);
            } else if same_content(&agent.workspace.join(&rel), &dest)? {
                same += 1;
            } else {
                differ.push(rel.display().to_string());
            }
        }
        let name = format!("{} -> {}", agent.workspace.display(), to.display());
        let status = if new.is_empty() {
            Status::Unchanged
        } else {
            Status::Imported
        };
        items.push(
            C,
            name.clone(),
            status,
            format!("{} new file(s), {same} already there", new.len()),
        );
        if !differ.is_empty() {
            items.push(
                C,
                name.clone(),
                Status::Kept,
                format!("molt's differing copies kept: {}", differ.join(", ")),
            );
        }
        for s in skipped {
            items.push(C, name.clone(), Status::NotImported, s);
        }
        out.push(WorkspaceCopy {
            from: agent.workspace.clone(),
            to,
            new,
        });
    }
    Ok(out)
}

/// Copies the new files into staging directories beside their targets.
pub(crate) fn stage(copies: Vec<WorkspaceCopy>) -> Result<Staged, ImportError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut staged = Staged(Vec::new());
    for c in copies {
        if c.new.is_empty() {
            continue;
        }
        let parent = c.to.parent().unwrap_or(Path::new("."));
        let name =
            c.to.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
        let dir = parent.join(format!(".{name}.molt-import-{}", std::process::id()));
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| ImportError::io(&dir, "cannot stage the workspace copy", &e));
        if let Err(e) = made {
            staged.discard();
            return Err(e);
        }
        // Recorded first, so a failed copy below discards this directory too.
        staged.0.push((c, dir));
        let Some((c, dir)) = staged.0.last() else {
            continue;
        };
        let copied = c.new.iter().try_for_each(|rel| {
            let dest = dir.join(rel);
            dest.parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::copy(c.from.join(rel), &dest).map(|_| ()))
                .map_err(|e| ImportError::io(&c.from.join(rel), "cannot copy", &e))
        });
        if let Err(e) = copied {
            staged.discard();
            return Err(e);
        }
    }
    Ok(staged)
}

impl Staged {
    /// Removes the staging directories.
    pub(crate) fn discard(self) {
        for (_, dir) in self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Renames the staged files into place (never over a file that appeared meanwhile).
    pub(crate) fn commit(self, items: &mut Items) -> Result<(), ImportError> {
        for (copy, dir) in &self.0 {
            for rel in &copy.new {
                let dest = copy.to.join(rel);
                if dest.exists() {
                    items.push(
                        "workspaces",
                        dest.display().to_string(),
                        Status::Kept,
                        "appeared during the import; not overwritten",
                    );
                    continue;
                }
                if let Some(p) = dest.parent() {
                    std::fs::create_dir_all(p)
                        .map_err(|e| ImportError::io(p, "cannot create the workspace", &e))?;
                }
                std::fs::rename(dir.join(rel), &dest).map_err(|e| {
                    ImportError::io(&dest, "cannot move the copied file into place", &e)
                })?;
            }
        }
        self.discard();
        Ok(())
    }
}

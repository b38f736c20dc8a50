//! File tools confined to the agent's workspace, with the confinement done by the kernel.
//!
//! A [`Workspace`] holds an `O_PATH` descriptor of the workspace directory. Every path a
//! tool is given is resolved with `openat2(root, path, …, RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)`: the kernel walks the path one component at a time, following
//! symlinks, and fails with `EXDEV` the moment the walk would leave the workspace — through
//! `..`, an absolute path, or a symlink anywhere in the path (the last component included)
//! that points outside. There is no string check of the path to get wrong, and no window
//! between checking a path and using it: the descriptor that is checked is the one that
//! is used. Directories that `write` creates are made one component at a time with
//! `mkdirat` on a descriptor that was itself resolved beneath the root, and files are
//! replaced with `renameat` of a temporary file in the same directory, so a reader never
//! sees half a file. If the kernel has no `openat2` (Linux < 5.6), every call fails with
//! [`FsErrorKind::Unsupported`] rather than falling back to weaker checks.
//!
//! Errors are written for the model to act on: they say what went wrong with which
//! workspace-relative path and what to do instead, and never name a host path.
//!
//! Text: `read` refuses a file with a NUL byte in its first 8 KiB as binary
//! ([`FsErrorKind::NotText`]); other invalid UTF-8 is replaced by U+FFFD and reported with
//! [`ReadOut::lossy`]. `edit` refuses files that are not valid UTF-8, since writing back a
//! lossy decoding would corrupt them.

use std::ffi::OsStr;
use std::fmt;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// At most this many bytes of text are returned by one `read`.
pub const READ_MAX_BYTES: usize = 256 * 1024;
/// `read` counts the lines of files up to this size; past it `total_lines` is `None`.
pub const LINE_COUNT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The largest content `write` accepts, and the largest file `edit` reads or produces.
pub const WRITE_MAX_BYTES: usize = 1024 * 1024;
/// Entries `list` returns when no limit is given.
pub const LIST_DEFAULT_LIMIT: usize = 200;
/// The most entries one `list` returns.
pub const LIST_MAX_LIMIT: usize = 1000;
/// A directory with more entries than this is refused by `list`.
pub const LIST_MAX_SCANNED: usize = 100_000;

/// How long the beginning of a file is that is looked at for NUL bytes.
const BINARY_SNIFF_BYTES: usize = 8192;

/// What went wrong, for a caller that reacts differently to different failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsErrorKind {
    /// The path leads outside the workspace (`..`, an absolute path, or a symlink).
    OutsideWorkspace,
    /// The file or a directory on the way does not exist.
    NotFound,
    /// The path names a directory or a special file where a regular file is needed.
    NotAFile,
    /// The path (or a component on the way) is not a directory.
    NotADirectory,
    /// The file, content, or result is larger than the tool's cap.
    TooLarge,
    /// The file is binary (or, for `edit`, not valid UTF-8).
    NotText,
    /// An edit's `old_text` occurs nowhere in the file.
    NoMatch,
    /// An edit's `old_text` occurs more than once in the file.
    AmbiguousMatch,
    /// An argument is malformed (empty path, zero limit, empty `old_text`, …).
    InvalidArgument,
    /// The operating system denied the access.
    PermissionDenied,
    /// The kernel lacks `openat2`, so confinement cannot be guaranteed.
    Unsupported,
    /// Any other I/O failure.
    Io,
}

/// A file tool's failure: a kind and a message for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    /// What went wrong.
    pub kind: FsErrorKind,
    /// What went wrong and what to do, naming only workspace-relative paths.
    pub message: String,
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FsError {}

impl FsError {
    fn new(kind: FsErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The error for an errno from an operation `op` on workspace-relative `rel`.
    fn from_errno(op: &str, rel: &str, e: Errno) -> Self {
        use FsErrorKind as K;
        let (kind, what) = match e {
            Errno::XDEV => (
                K::OutsideWorkspace,
                "the path leads outside the workspace (through `..`, an absolute path or a symlink); use a path relative to the workspace that stays inside it".to_owned(),
            ),
            Errno::NOENT => (
                K::NotFound,
                "no such file or directory; check the name with ls".to_owned(),
            ),
            Errno::NOTDIR => (
                K::NotADirectory,
                "a component of the path is not a directory".to_owned(),
            ),
            Errno::ISDIR => (
                K::NotAFile,
                "the path is a directory, not a file; use ls to list it".to_owned(),
            ),
            Errno::LOOP => (
                K::InvalidArgument,
                "too many levels of symlinks, or a /proc magic link".to_owned(),
            ),
            Errno::NAMETOOLONG => (K::InvalidArgument, "the path is too long".to_owned()),
            Errno::ACCESS | Errno::PERM | Errno::ROFS => (
                K::PermissionDenied,
                format!("permission denied ({e})"),
            ),
            Errno::NOSYS => (
                K::Unsupported,
                "this kernel has no openat2 (Linux 5.6 or later is needed), so paths cannot be confined to the workspace; file tools are off".to_owned(),
            ),
            Errno::NOSPC | Errno::DQUOT => (K::Io, format!("no space left ({e})")),
            other => (K::Io, format!("I/O error: {other}")),
        };
        Self::new(kind, format!("{op} {rel:?}: {what}"))
    }
}

/// One exact replacement for [`Workspace::edit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// Text that must occur exactly once in the file (after the previous edits).
    pub old_text: String,
    /// Its replacement.
    pub new_text: String,
}

/// What [`Workspace::read`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOut {
    /// The lines of the window, with their line endings.
    pub text: String,
    /// The number of lines in the file, or `None` when the file is larger than
    /// [`LINE_COUNT_MAX_BYTES`] and was not read to the end.
    pub total_lines: Option<u64>,
    /// The returned text stops before the end of the file (line limit or byte cap).
    pub truncated: bool,
    /// The 1-based line to pass as `offset` to continue, when there is more.
    pub next_offset: Option<u64>,
    /// Invalid UTF-8 in the window was replaced by U+FFFD.
    pub lossy: bool,
}

/// What [`Workspace::write`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOut {
    /// Bytes written.
    pub bytes: u64,
    /// The file did not exist before.
    pub created: bool,
}

/// What [`Workspace::edit`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EditOut {
    /// Replacements made (one per edit).
    pub replacements: usize,
    /// Size of the file after the edit.
    pub bytes: u64,
}

/// The kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symlink (not followed).
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

impl EntryKind {
    /// `file`, `dir`, `symlink` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Other => "other",
        }
    }
}

/// One entry of [`Workspace::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name (not a path); non-UTF-8 bytes are replaced by U+FFFD.
    pub name: String,
    /// What it is, without following symlinks.
    pub kind: EntryKind,
    /// Size in bytes (of the link itself for a symlink), 0 if it could not be read.
    pub size: u64,
}

/// What [`Workspace::list`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOut {
    /// Entries sorted by name (bytewise), after `after`, at most `limit`.
    pub entries: Vec<Entry>,
    /// More entries follow; pass the last name as `after` to get them.
    pub more: bool,
}

/// The agent's workspace directory, and every file operation confined beneath it.
#[derive(Debug)]
pub struct Workspace {
    root: OwnedFd,
    path: PathBuf,
}

/// Temporary file names must not collide within this process either.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Workspace {
    /// Opens the workspace at `path`, creating it (and missing parents) with mode 0700 if
    /// it is missing. Fails with [`FsErrorKind::Unsupported`] if the kernel has no
    /// `openat2`.
    pub fn open(path: &Path) -> Result<Self, FsError> {
        if !path.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| {
                    FsError::new(
                        FsErrorKind::Io,
                        format!("cannot create the workspace {}: {e}", path.display()),
                    )
                })?;
        }
        let root = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            FsError::new(
                FsErrorKind::Io,
                format!("cannot open the workspace {}: {e}", path.display()),
            )
        })?;
        let ws = Self {
            root,
            path: path.to_path_buf(),
        };
        // Probe openat2 now, so a kernel without it is found at start, not at the first call.
        ws.resolve(".", OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| FsError::from_errno("open workspace", ".", e))?;
        Ok(ws)
    }

    /// The workspace directory as given to [`Workspace::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The workspace's own `O_PATH` descriptor.
    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// `openat2` beneath the root, retrying the `EAGAIN` the kernel returns when a
    /// concurrent rename or mount raced the walk.
    fn resolve(&self, rel: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
        resolve_beneath(self.root.as_fd(), rel, flags)
    }

    /// Reads the text of file `rel`: from 1-based line `offset` (default 1), at most
    /// `limit` lines (default: as many as fit in [`READ_MAX_BYTES`]).
    pub fn read(
        &self,
        rel: &str,
        offset: Option<u64>,
        limit: Option<u64>,
    ) -> Result<ReadOut, FsError> {
        let op = "read";
        check_rel(op, rel)?;
        let first = offset.unwrap_or(1);
        if first == 0 {
            return Err(FsError::new(
                FsErrorKind::InvalidArgument,
                format!("read {rel:?}: offset is 1-based; use 1 for the first line"),
            ));
        }
        if limit == Some(0) {
            return Err(FsError::new(
                FsErrorKind::InvalidArgument,
                format!("read {rel:?}: limit must be at least 1 line"),
            ));
        }
        let last = limit.map(|l| first.saturating_add(l - 1));
        let file = self.open_regular(op, rel)?;
        let mut file = std::fs::File::from(file);

        let mut out: Vec<u8> = Vec::new();
        // The line whose bytes did not all fit under the byte cap, if any.
        let mut cut_line: Option<u64> = None;
        let mut line = 1u64;
        let mut last_was_newline = true;
        let mut scanned: u64 = 0;
        let mut sniffed = 0usize;
        let mut counted_all = true;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(op, rel, &e)),
            };
            let data = &chunk[..n];
            if sniffed < BINARY_SNIFF_BYTES {
                let look = &data[..data.len().min(BINARY_SNIFF_BYTES - sniffed)];
                if look.contains(&0) {
                    return Err(FsError::new(
                        FsErrorKind::NotText,
                        format!(
                            "read {rel:?}: the file is binary (it contains NUL bytes); inspect it with exec tools such as `file` or `xxd` instead"
                        ),
                    ));
                }
                sniffed += look.len();
            }
            scanned += n as u64;
            let mut rest = data;
            while !rest.is_empty() {
                let (seg, ends_line) = match rest.iter().position(|&b| b == b'\n') {
                    Some(p) => (&rest[..=p], true),
                    None => (rest, false),
                };
                rest = &rest[seg.len()..];
                let in_window = line >= first && last.is_none_or(|l| line <= l);
                if in_window && cut_line.is_none() {
                    let room = READ_MAX_BYTES - out.len();
                    if seg.len() <= room {
                        out.extend_from_slice(seg);
                    } else {
                        out.extend_from_slice(&seg[..room]);
                        cut_line = Some(line);
                    }
                }
                last_was_newline = ends_line;
                if ends_line {
                    line += 1;
                }
            }
            let past_window = cut_line.is_some() || last.is_some_and(|l| line > l);
            if past_window && scanned >= LINE_COUNT_MAX_BYTES {
                counted_all = false;
                break;
            }
        }
        let total_lines = if counted_all {
            Some(if last_was_newline { line - 1 } else { line })
        } else {
            None
        };
        if let Some(total) = total_lines
            && first > total.max(1)
        {
            return Err(FsError::new(
                FsErrorKind::InvalidArgument,
                format!("read {rel:?}: offset {first} is past the end; the file has {total} lines"),
            ));
        }

        let next_offset = match cut_line {
            Some(cut) => {
                // Keep whole lines; only a single line longer than the cap is returned cut.
                match out.iter().rposition(|&b| b == b'\n') {
                    Some(p) if cut > first => {
                        out.truncate(p + 1);
                        Some(cut)
                    }
                    _ => Some(cut + 1),
                }
            }
            None => {
                let after = last.map(|l| l.saturating_add(1));
                match (after, total_lines) {
                    (Some(a), Some(total)) if a <= total => Some(a),
                    (Some(a), None) => Some(a),
                    _ => None,
                }
            }
        };
        // A cut in the middle of a multi-byte character is not an encoding error.
        let (text, lossy) = match String::from_utf8(out) {
            Ok(s) => (s, false),
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let incomplete_tail = e.utf8_error().error_len().is_none();
                let mut bytes = e.into_bytes();
                if incomplete_tail && cut_line.is_some() {
                    bytes.truncate(valid);
                }
                match String::from_utf8(bytes) {
                    Ok(s) => (s, false),
                    Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
                }
            }
        };
        let truncated = next_offset.is_some() || (cut_line.is_some());
        Ok(ReadOut {
            text,
            total_lines,
            truncated,
            next_offset: next_offset.filter(|n| total_lines.is_none_or(|t| *n <= t)),
            lossy,
        })
    }

    /// Writes `content` to file `rel`, creating missing parent directories (0755) beneath
    /// the workspace, replacing the file atomically. A new file gets mode 0644; a replaced
    /// one keeps its permission bits. Writing through a symlink that stays in the
    /// workspace updates its target in place (not atomically).
    pub fn write(&self, rel: &str, content: &[u8]) -> Result<WriteOut, FsError> {
        let op = "write";
        check_rel(op, rel)?;
        if content.len() > WRITE_MAX_BYTES {
            return Err(FsError::new(
                FsErrorKind::TooLarge,
                format!(
                    "write {rel:?}: the content is {} bytes, more than the {WRITE_MAX_BYTES}-byte cap; write the file in smaller parts or generate it with exec",
                    content.len()
                ),
            ));
        }
        self.write_bytes(op, rel, content)
    }

    /// Applies `edits` to file `rel` in order: each `old_text` must occur exactly once in
    /// the text as left by the previous edits. All or nothing: if any edit fails, the file
    /// is not touched. The result is written atomically, like [`Workspace::write`].
    pub fn edit(&self, rel: &str, edits: &[Edit]) -> Result<EditOut, FsError> {
        let op = "edit";
        check_rel(op, rel)?;
        if edits.is_empty() {
            return Err(FsError::new(
                FsErrorKind::InvalidArgument,
                format!("edit {rel:?}: no edits were given"),
            ));
        }
        let file = self.open_regular(op, rel)?;
        let size = rustix::fs::fstat(&file)
            .map_err(|e| FsError::from_errno(op, rel, e))?
            .st_size as u64;
        if size > WRITE_MAX_BYTES as u64 {
            return Err(FsError::new(
                FsErrorKind::TooLarge,
                format!(
                    "edit {rel:?}: the file is {size} bytes, more than the {WRITE_MAX_BYTES}-byte cap of edit; change it with exec tools such as sed"
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        std::fs::File::from(file)
            .take(WRITE_MAX_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(op, rel, &e))?;
        if bytes.len() > WRITE_MAX_BYTES {
            return Err(FsError::new(
                FsErrorKind::TooLarge,
                format!("edit {rel:?}: the file grew past the {WRITE_MAX_BYTES}-byte cap"),
            ));
        }
        let mut text = String::from_utf8(bytes).map_err(|_| {
            FsError::new(
                FsErrorKind::NotText,
                format!("edit {rel:?}: the file is not valid UTF-8 text, so it cannot be edited by exact text; use exec tools"),
            )
        })?;
        for (i, e) in edits.iter().enumerate() {
            let n = i + 1;
            if e.old_text.is_empty() {
                return Err(FsError::new(
                    FsErrorKind::InvalidArgument,
                    format!(
                        "edit {rel:?}: edit {n} has an empty old_text; give the exact text to replace"
                    ),
                ));
            }
            let mut found = text.match_indices(e.old_text.as_str());
            let at = match (found.next(), count_overlapping(&text, &e.old_text)) {
                (None, _) => {
                    return Err(FsError::new(
                        FsErrorKind::NoMatch,
                        format!(
                            "edit {rel:?}: the old_text of edit {n} was not found{}; read the file and copy the text exactly, including whitespace. Nothing was changed.",
                            if i > 0 {
                                " (after the earlier edits were applied)"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
                (Some((at, _)), 1) => at,
                (Some(_), count) => {
                    return Err(FsError::new(
                        FsErrorKind::AmbiguousMatch,
                        format!(
                            "edit {rel:?}: the old_text of edit {n} occurs {count} times; include more surrounding text so it matches exactly once. Nothing was changed."
                        ),
                    ));
                }
            };
            text.replace_range(at..at + e.old_text.len(), &e.new_text);
            if text.len() > WRITE_MAX_BYTES {
                return Err(FsError::new(
                    FsErrorKind::TooLarge,
                    format!(
                        "edit {rel:?}: the result would be larger than the {WRITE_MAX_BYTES}-byte cap. Nothing was changed."
                    ),
                ));
            }
        }
        let out = self.write_bytes(op, rel, text.as_bytes())?;
        Ok(EditOut {
            replacements: edits.len(),
            bytes: out.bytes,
        })
    }

    /// Lists directory `rel` (the workspace itself for `None`, `""` or `"."`): entries
    /// sorted by name, those after `after` only, at most `limit` (default
    /// [`LIST_DEFAULT_LIMIT`], at most [`LIST_MAX_LIMIT`]).
    pub fn list(
        &self,
        rel: Option<&str>,
        limit: Option<usize>,
        after: Option<&str>,
    ) -> Result<ListOut, FsError> {
        let op = "ls";
        let rel = match rel {
            None | Some("") => ".",
            Some(r) => r,
        };
        check_rel(op, rel)?;
        let limit = match limit {
            Some(0) => {
                return Err(FsError::new(
                    FsErrorKind::InvalidArgument,
                    format!("ls {rel:?}: limit must be at least 1"),
                ));
            }
            Some(l) => l.min(LIST_MAX_LIMIT),
            None => LIST_DEFAULT_LIMIT,
        };
        let dir = self
            .resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK)
            .map_err(|e| FsError::from_errno(op, rel, e))?;
        let mut names: Vec<(Vec<u8>, FileType)> = Vec::new();
        let entries = Dir::read_from(&dir).map_err(|e| FsError::from_errno(op, rel, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| FsError::from_errno(op, rel, e))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if names.len() >= LIST_MAX_SCANNED {
                return Err(FsError::new(
                    FsErrorKind::TooLarge,
                    format!(
                        "ls {rel:?}: the directory has more than {LIST_MAX_SCANNED} entries; use exec tools such as find"
                    ),
                ));
            }
            names.push((name.to_vec(), entry.file_type()));
        }
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let start = match after {
            Some(a) => names.partition_point(|(n, _)| n.as_slice() <= a.as_bytes()),
            None => 0,
        };
        let end = names.len().min(start.saturating_add(limit));
        let mut entries = Vec::with_capacity(end - start);
        for (name, dtype) in &names[start..end] {
            let stat =
                rustix::fs::statat(&dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW).ok();
            let ftype = match &stat {
                Some(st) => FileType::from_raw_mode(st.st_mode),
                None => *dtype,
            };
            let kind = match ftype {
                FileType::RegularFile => EntryKind::File,
                FileType::Directory => EntryKind::Dir,
                FileType::Symlink => EntryKind::Symlink,
                _ => EntryKind::Other,
            };
            entries.push(Entry {
                name: String::from_utf8_lossy(name).into_owned(),
                kind,
                size: stat.map_or(0, |st| st.st_size as u64),
            });
        }
        Ok(ListOut {
            entries,
            more: end < names.len(),
        })
    }

    /// Opens directory `rel` beneath the workspace (`"."` for the workspace itself), for
    /// use as a command's working directory (e.g. `fchdir` before exec).
    pub fn open_dir(&self, rel: &str) -> Result<OwnedFd, FsError> {
        let rel = if rel.is_empty() { "." } else { rel };
        check_rel("open directory", rel)?;
        self.resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK)
            .map_err(|e| FsError::from_errno("open directory", rel, e))
    }

    /// Opens `rel` for reading and checks that it is a regular file.
    fn open_regular(&self, op: &str, rel: &str) -> Result<OwnedFd, FsError> {
        // O_NONBLOCK: opening a FIFO must not hang the tool.
        let fd = self
            .resolve(rel, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)
            .map_err(|e| FsError::from_errno(op, rel, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| FsError::from_errno(op, rel, e))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Ok(fd),
            FileType::Directory => Err(FsError::from_errno(op, rel, Errno::ISDIR)),
            _ => Err(FsError::new(
                FsErrorKind::NotAFile,
                format!("{op} {rel:?}: not a regular file (a device, FIFO or socket)"),
            )),
        }
    }

    /// The shared writer of `write` and `edit`.
    fn write_bytes(&self, op: &str, rel: &str, content: &[u8]) -> Result<WriteOut, FsError> {
        let (parent, name) = self.parent_dir(op, rel)?;
        let existing = match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(FsError::from_errno(op, rel, e)),
        };
        let mode = match existing
            .as_ref()
            .map(|st| FileType::from_raw_mode(st.st_mode))
        {
            None => 0o644,
            Some(FileType::RegularFile) => existing.as_ref().map_or(0o644, |st| st.st_mode & 0o777),
            Some(FileType::Directory) => return Err(FsError::from_errno(op, rel, Errno::ISDIR)),
            Some(FileType::Symlink) => return self.write_through_symlink(op, rel, content),
            Some(_) => {
                return Err(FsError::new(
                    FsErrorKind::NotAFile,
                    format!("{op} {rel:?}: not a regular file (a device, FIFO or socket)"),
                ));
            }
        };
        let (tmp_name, tmp) = create_temp(&parent).map_err(|e| FsError::from_errno(op, rel, e))?;
        let result = (|| -> Result<(), FsError> {
            rustix::fs::fchmod(&tmp, Mode::from_raw_mode(mode))
                .map_err(|e| FsError::from_errno(op, rel, e))?;
            let mut file = std::fs::File::from(tmp);
            file.write_all(content).map_err(|e| io_error(op, rel, &e))?;
            file.sync_data().map_err(|e| io_error(op, rel, &e))?;
            rustix::fs::renameat(&parent, tmp_name.as_str(), &parent, name)
                .map_err(|e| FsError::from_errno(op, rel, e))
        })();
        if let Err(e) = result {
            let _ = rustix::fs::unlinkat(&parent, tmp_name.as_str(), AtFlags::empty());
            return Err(e);
        }
        Ok(WriteOut {
            bytes: content.len() as u64,
            created: existing.is_none(),
        })
    }

    /// Writes through a symlink: the kernel resolves it beneath the root (so one that leads
    /// out is refused), and the target is rewritten in place.
    fn write_through_symlink(
        &self,
        op: &str,
        rel: &str,
        content: &[u8],
    ) -> Result<WriteOut, FsError> {
        let target = self
            .resolve(rel, OFlags::PATH)
            .map_err(|e| FsError::from_errno(op, rel, e))?;
        let st = rustix::fs::fstat(&target).map_err(|e| FsError::from_errno(op, rel, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(FsError::new(
                FsErrorKind::NotAFile,
                format!("{op} {rel:?}: the symlink does not point at a regular file"),
            ));
        }
        let fd = self
            .resolve(
                rel,
                OFlags::WRONLY | OFlags::TRUNC | OFlags::NONBLOCK | OFlags::NOCTTY,
            )
            .map_err(|e| FsError::from_errno(op, rel, e))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(content).map_err(|e| io_error(op, rel, &e))?;
        file.sync_data().map_err(|e| io_error(op, rel, &e))?;
        Ok(WriteOut {
            bytes: content.len() as u64,
            created: false,
        })
    }

    /// The directory that will hold `rel` (created beneath the root as needed) and the
    /// file's name in it.
    fn parent_dir<'r>(&self, op: &str, rel: &'r str) -> Result<(OwnedFd, &'r str), FsError> {
        let (dir_part, name) = match rel.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", rel),
        };
        if name.is_empty() || name == "." || name == ".." {
            return Err(FsError::new(
                FsErrorKind::InvalidArgument,
                format!("{op} {rel:?}: the path must end in a file name"),
            ));
        }
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY;
        let dir_path = match dir_part {
            "" if rel.starts_with('/') => "/",
            "" => ".",
            d => d,
        };
        // Usually the directory exists already.
        match self.resolve(dir_path, dir_flags) {
            Ok(fd) => return Ok((fd, name)),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(FsError::from_errno(op, rel, e)),
        }
        // Resolve each prefix beneath the root; make a missing component with mkdirat in
        // its parent, which was itself resolved beneath the root.
        let mut current = self
            .resolve(".", dir_flags)
            .map_err(|e| FsError::from_errno(op, rel, e))?;
        let mut offset = 0;
        for component in dir_path.split('/') {
            let end = offset + component.len();
            let prefix = &dir_path[..end];
            offset = end + 1;
            if component.is_empty() {
                continue;
            }
            match self.resolve(prefix, dir_flags) {
                Ok(fd) => current = fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&current, component, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(FsError::from_errno(op, rel, e)),
                    }
                    current = self
                        .resolve(prefix, dir_flags)
                        .map_err(|e| FsError::from_errno(op, rel, e))?;
                }
                Err(e) => return Err(FsError::from_errno(op, rel, e)),
            }
        }
        Ok((current, name))
    }
}

/// `openat2(dirfd, rel, flags | O_CLOEXEC, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`,
/// retried a bounded number of times on `EAGAIN` (a rename or mount raced the walk).
fn resolve_beneath(dirfd: BorrowedFd<'_>, rel: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dirfd, rel, flags | OFlags::CLOEXEC, Mode::empty(), how) {
            Err(Errno::AGAIN) if tries < 8 => tries += 1,
            other => return other,
        }
    }
}

/// Creates a new temporary file in `dir` and returns its name and a writable descriptor.
fn create_temp(dir: &OwnedFd) -> Result<(String, OwnedFd), Errno> {
    let mut tries = 0;
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(".molt-write-{}-{n}.tmp", std::process::id());
        match rustix::fs::openat(
            dir,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => return Ok((name, fd)),
            Err(Errno::EXIST) if tries < 16 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Refuses paths no call can use, before asking the kernel.
fn check_rel(op: &str, rel: &str) -> Result<(), FsError> {
    if rel.is_empty() {
        return Err(FsError::new(
            FsErrorKind::InvalidArgument,
            format!("{op}: the path is empty; give a path relative to the workspace"),
        ));
    }
    if rel.contains('\0') {
        return Err(FsError::new(
            FsErrorKind::InvalidArgument,
            format!("{op} {rel:?}: the path contains a NUL byte"),
        ));
    }
    Ok(())
}

fn io_error(op: &str, rel: &str, e: &std::io::Error) -> FsError {
    match e.raw_os_error() {
        Some(code) => FsError::from_errno(op, rel, Errno::from_raw_os_error(code)),
        None => FsError::new(FsErrorKind::Io, format!("{op} {rel:?}: I/O error: {e}")),
    }
}

/// Occurrences of `needle` in `haystack`, overlapping ones included: `aa` occurs twice
/// in `aaa`, which is ambiguous for a replacement.
fn count_overlapping(haystack: &str, needle: &str) -> usize {
    let mut count = 0;
    let mut from = 0;
    while let Some(p) = haystack[from..].find(needle) {
        count += 1;
        let at = from + p;
        // Advance by one character, not one byte, to stay on a char boundary.
        from = at + haystack[at..].chars().next().map_or(1, char::len_utf8);
        if from > haystack.len() {
            break;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_matches_are_counted() {
        assert_eq!(count_overlapping("aaa", "aa"), 2);
        assert_eq!(count_overlapping("abab", "ab"), 2);
        assert_eq!(count_overlapping("héllo héllo", "é"), 2);
        assert_eq!(count_overlapping("x", "y"), 0);
    }
}

//! The agent's tools, made safe to hand to a model: what each may reach is decided by the
//! kernel, not by string checks that a crafted path, symlink, DNS answer or shell line
//! can slip past. The gateway registers the tools and applies per-agent policy; this
//! crate is the part that touches the filesystem, processes and the network.
//!
//! - [`fs`] — `read`, `write`, `edit`, `ls` inside the agent's workspace. A
//!   [`fs::Workspace`] holds a descriptor of the workspace directory, and every path is
//!   resolved with `openat2(…, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so `..`,
//!   absolute paths and symlinks that lead out fail in the kernel's own path walk, with
//!   no gap between check and use. Writes are atomic (temporary file and `renameat`) and
//!   everything has a size cap. Without `openat2` the tools refuse to run instead of
//!   falling back to weaker checks.
//! - [`sandbox`] — Landlock and `no_new_privs` for `exec`. The ruleset is built in the
//!   gateway ([`sandbox::prepare`]); the child only applies it between fork and exec
//!   ([`sandbox::Prepared::install`]). Writes are confined to the workspace and a private
//!   temp dir, system directories are readable, the gateway's own files are not, and TCP
//!   can be denied. [`sandbox::support`] tells doctor what the kernel offers; what it
//!   cannot enforce is reported, never silently skipped.
//! - [`fetch`] — `web_fetch`. Loopback, private, link-local and other non-public
//!   addresses are refused unless allowed, and the check is on the address the
//!   connection actually uses: the DNS resolver drops such answers, IP-literal hosts are
//!   checked before the request and on every redirect, and the connected peer is checked
//!   again. Bodies are streamed under a byte cap; HTML becomes readable text.
//! - [`html`] — the HTML-to-text converter `fetch` uses: a small hand-written one rather
//!   than a full HTML5 parser (html5ever and its tree would add about a dozen crates for
//!   little gain here); see its docs for what it keeps.
//! - [`command`] — the program names in a shell line, for the exec allowlist; what it
//!   cannot see through (command substitution, `eval`, variable program names, …) is
//!   refused rather than guessed.
//!
//! Linux only: `openat2` needs 5.6, Landlock 5.13 (TCP rules 6.7).

#![deny(missing_docs)]

pub mod command;
pub mod fetch;
pub mod fs;
pub mod html;
pub mod sandbox;

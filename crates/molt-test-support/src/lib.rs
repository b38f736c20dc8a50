//! What molt's integration tests (`crates/molt/tests`) and benchmarks (`bench/`) share: a
//! private HOME per gateway, the real `molt` binary run as a process and talked to over
//! loopback only, polling with deadlines, the systemd user manager, and variant builds of
//! molt itself.
//!
//! The crate never names the binary under test: cargo gives `CARGO_BIN_EXE_molt` only to
//! the `molt` package's own tests, and the benches run a release build. Callers pass the path
//! to [`Home::new`].
//!
//! Every loop here is bounded in count and time; waits poll with a deadline.
#![warn(missing_docs)]

mod browser;
mod gateway;
mod net;
mod poll;
mod procs;
mod systemd;
mod variant;

pub use browser::{Chromium, Page, chromium_path};
pub use gateway::{
    Gateway, Home, attempt_aware, fake_model_agent_config, fake_model_config, run_state,
};
pub use net::{free_port, http_get, http_status, readyz_pid};
pub use poll::{poll, wait_for, wait_for_every};
pub use procs::{
    fd_count, kill_processes_of, pid_alive, proc_status_field, proc_status_kib, procs_with_home,
    raise_nofile_limit,
};
pub use systemd::{
    ServiceHome, systemctl, systemd_available, unit_show, unit_text, user_manager_unit_dir,
    write_unit,
};
pub use variant::{FileLock, Variants, workspace_root};

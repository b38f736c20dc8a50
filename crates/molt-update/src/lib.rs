//! The update transaction (design §5): recording a job, starting the updater outside the
//! gateway's process tree and cgroup, the updater itself (one journalled job taken to a
//! final state, rolling back or recovering on failure), and following a job to its end.
//! It takes a resolved [`molt_config::Context`] and plain flags; the CLI prints.

mod error;
pub mod launch;
pub mod source;
pub mod txn;

pub use error::UpdateError;

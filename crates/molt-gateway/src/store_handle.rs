//! Shares the one SQLite connection between async tasks without blocking the runtime.

use std::sync::{Arc, Mutex};

use molt_store::Store;

/// A cloneable handle; each call runs on the blocking pool, one at a time.
#[derive(Clone)]
pub struct StoreHandle(Arc<Mutex<Store>>);

impl StoreHandle {
    pub fn new(store: Store) -> Self {
        Self(Arc::new(Mutex::new(store)))
    }

    /// Runs `f` with exclusive access to the store on a blocking thread.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> R + Send + 'static,
    ) -> R {
        let inner = self.0.clone();
        let task = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite half-written (transactions
            // roll back on drop), so a poisoned lock is still safe to use.
            let mut guard = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        });
        match task.await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// A store failure as a protocol error: an unknown run is the caller's mistake, anything
/// else is logged and reported as retryable.
pub fn to_error_shape(e: molt_store::StoreError) -> molt_protocol::frame::ErrorShape {
    use molt_protocol::frame::ErrorShape;
    match e {
        molt_store::StoreError::NoSuchRun(id) => {
            ErrorShape::invalid(format!("no task with id {id}"))
        }
        e @ (molt_store::StoreError::NoSuchApproval(_)
        | molt_store::StoreError::AlreadyDecided { .. }) => ErrorShape::invalid(e.to_string()),
        e => {
            tracing::error!(error = %e, "store error");
            ErrorShape::unavailable(format!("store error: {e}"), 1000)
        }
    }
}

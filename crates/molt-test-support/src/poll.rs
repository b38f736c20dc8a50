use std::time::{Duration, Instant};

/// Calls `f` every `every` until it returns `Some` or `timeout` passes; `None` on timeout.
/// `f` runs at least once, whatever `timeout`.
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Polls `f` every 25 ms until it returns `Some`; panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for_every(what, timeout, Duration::from_millis(25), f)
}

/// As [`wait_for`], polling every `every`.
pub fn wait_for_every<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    f: impl FnMut() -> Option<T>,
) -> T {
    poll(timeout, every, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

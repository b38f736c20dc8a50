//! `sd_notify(3)`: tells the service manager about readiness, stopping and the main pid.
//!
//! Written by hand because it is one datagram: the protocol is `KEY=VALUE` lines sent to the
//! socket named by `NOTIFY_SOCKET` (a path, or `@` for the abstract namespace).

use std::os::unix::net::UnixDatagram;

/// A handle on the service manager's notify socket, or a no-op when there is none.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<String>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`. Without it every notification is a no-op.
    pub fn from_env() -> Self {
        Self {
            socket: std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }

    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` pairs). Failures are logged, never fatal:
    /// a lost notification must not take the gateway down.
    pub fn notify(&self, state: &str) {
        let Some(path) = &self.socket else { return };
        if let Err(e) = send(path, state) {
            tracing::warn!(error = %e, socket = %path, "sd_notify failed");
        }
    }

    /// The watchdog interval requested by systemd (`WATCHDOG_USEC`), if it is for us.
    pub fn watchdog_interval() -> Option<std::time::Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        let for_other_pid = std::env::var("WATCHDOG_PID")
            .is_ok_and(|pid| pid.parse::<u32>().ok() != Some(std::process::id()));
        if for_other_pid {
            return None;
        }
        (usec > 0).then(|| std::time::Duration::from_micros(usec))
    }
}

fn send(path: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("molt-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: Some(path.to_string_lossy().into_owned()),
        };
        n.notify("READY=1\nSTATUS=serving");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_socket_is_a_noop() {
        Notifier::default().notify("READY=1");
    }
}

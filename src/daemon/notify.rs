//! systemd's service notification protocol (`sd_notify(3)`): datagrams of `KEY=VALUE`
//! lines to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace), and the watchdog interval from `$WATCHDOG_USEC` / `$WATCHDOG_PID`.
//!
//! Outside systemd (no `$NOTIFY_SOCKET`) every call is a no-op, as with libsystemd.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Errors sending a notification.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {0:?} is neither an absolute path nor an abstract name")]
    Address(String),
    #[error("Cannot send to NOTIFY_SOCKET {0}")]
    Send(String, #[source] std::io::Error),
}

/// Where notifications go; `None` when not started by systemd with `Type=notify`.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(String, SocketAddr)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`.
    pub fn from_env() -> Result<Self, NotifyError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(s) if !s.is_empty() => Self::to(&s),
            _ => Ok(Self { target: None }),
        }
    }

    /// Notifications to `socket` (`/run/...` or `@abstract`).
    pub fn to(socket: &str) -> Result<Self, NotifyError> {
        let addr = if let Some(name) = socket.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        } else if socket.starts_with('/') {
            SocketAddr::from_pathname(socket)
        } else {
            return Err(NotifyError::Address(socket.to_string()));
        }
        .map_err(|_| NotifyError::Address(socket.to_string()))?;
        Ok(Self {
            target: Some((socket.to_string(), addr)),
        })
    }

    /// Whether notifications are sent anywhere.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one datagram of `KEY=VALUE` lines.
    pub fn notify(&self, state: &str) -> Result<(), NotifyError> {
        let Some((name, addr)) = &self.target else {
            return Ok(());
        };
        let send = || -> std::io::Result<()> {
            let sock = UnixDatagram::unbound()?;
            sock.send_to_addr(state.as_bytes(), addr)?;
            Ok(())
        };
        send().map_err(|e| NotifyError::Send(name.clone(), e))
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)))
    }

    /// `STATUS=...`.
    pub fn status(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&format!("STATUS={}", one_line(status)))
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.notify("WATCHDOG=1")
    }

    /// `EXTEND_TIMEOUT_USEC=...`: tells systemd the current start or stop step needs
    /// `by` more time.
    pub fn extend_timeout(&self, by: Duration) -> Result<(), NotifyError> {
        self.notify(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()))
    }
}

/// A status value must not contain a newline (it would start a new assignment).
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// recommends, if the watchdog is meant for this process (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    let usec: u64 = usec?.parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_arrive_on_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::to(path.to_str().expect("utf-8")).expect("notifier");
        assert!(n.enabled());
        n.ready("serving\non 1 port").expect("send");
        n.watchdog().expect("send");
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving on 1 port");
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn abstract_sockets_and_bad_addresses() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("monovirt-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(
            &SocketAddr::from_abstract_name(name.as_bytes()).expect("addr"),
        )
        .expect("bind");
        Notifier::to(&format!("@{name}"))
            .expect("notifier")
            .stopping("bye")
            .expect("send");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=bye");
        assert!(Notifier::to("relative").is_err());
        let off = Notifier { target: None };
        assert!(!off.enabled());
        off.ready("nobody listens").expect("a no-op");
    }

    #[test]
    fn watchdog_interval_is_half_and_for_this_pid() {
        assert_eq!(
            watchdog_interval_from(Some("20000000"), None, 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            watchdog_interval_from(Some("20000000"), Some("7"), 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(watchdog_interval_from(Some("20000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(None, None, 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
    }
}

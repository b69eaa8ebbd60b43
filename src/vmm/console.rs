//! Where COM1 output goes: the process's stdout, a file, or an in-memory ring that the
//! node agent streams from (and tests read).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Console choice for a VM.
#[derive(Clone, Debug, Default)]
pub enum ConsoleConfig {
    /// Output to stdout, input from stdin.
    Stdio,
    /// Output appended to a file; no input.
    File(PathBuf),
    /// Output into a ring buffer; input through the handle.
    Ring(ConsoleRing),
    /// Output discarded.
    #[default]
    Null,
}

impl std::str::FromStr for ConsoleConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdio" => Ok(Self::Stdio),
            "null" => Ok(Self::Null),
            other => match other.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(Self::File(path.into())),
                _ => Err(format!(
                    "invalid console {other:?} (expected stdio, null or file:PATH)"
                )),
            },
        }
    }
}

#[derive(Default)]
struct RingState {
    buf: VecDeque<u8>,
    /// Bytes ever written (so readers can tell what they missed).
    total: u64,
}

/// A bounded byte ring of console output, shared between the VM and readers.
#[derive(Clone)]
pub struct ConsoleRing {
    inner: Arc<(Mutex<RingState>, Condvar)>,
    capacity: usize,
}

impl std::fmt::Debug for ConsoleRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleRing")
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl ConsoleRing {
    /// A ring keeping the last `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// The bytes currently held.
    pub fn contents(&self) -> Vec<u8> {
        let st = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        st.buf.iter().copied().collect()
    }

    /// The held bytes as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.contents()).into_owned()
    }

    /// Total bytes ever written.
    pub fn total(&self) -> u64 {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Waits until at least `total` bytes have ever been written, up to `timeout`.
    pub fn wait_for_total(&self, total: u64, timeout: Duration) -> bool {
        let (lock, cv) = &*self.inner;
        let st = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (st, _) = cv
            .wait_timeout_while(st, timeout, |s| s.total < total)
            .unwrap_or_else(|e| e.into_inner());
        st.total >= total
    }

    /// Waits until the held text contains `needle`, up to `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.inner;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let text: Vec<u8> = st.buf.iter().copied().collect();
            if String::from_utf8_lossy(&text).contains(needle) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Write for ConsoleRing {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let (lock, cv) = &*self.inner;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        st.buf.extend(data);
        let excess = st.buf.len().saturating_sub(self.capacity);
        st.buf.drain(..excess);
        st.total += data.len() as u64;
        cv.notify_all();
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An unbuffered writer on a duplicate of stdout: each guest byte reaches the terminal
/// at once (prompts without a newline included).
fn stdout_writer() -> io::Result<File> {
    // SAFETY: dup of fd 1 returns a new descriptor (or -1, checked); we own it.
    let fd = unsafe { libc::dup(io::stdout().as_raw_fd()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly duplicated, open descriptor nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The writer for COM1 output.
pub fn output(config: &ConsoleConfig) -> io::Result<Box<dyn Write + Send>> {
    Ok(match config {
        ConsoleConfig::Stdio => Box::new(stdout_writer()?),
        ConsoleConfig::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        ConsoleConfig::Ring(ring) => Box::new(ring.clone()),
        ConsoleConfig::Null => Box::new(io::sink()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_tail() {
        let mut r = ConsoleRing::new(4);
        r.write_all(b"hello").expect("write");
        assert_eq!(r.contents(), b"ello");
        assert_eq!(r.total(), 5);
        assert!(r.wait_for("llo", Duration::from_millis(1)));
        assert!(!r.wait_for("xyz", Duration::from_millis(1)));
    }

    #[test]
    fn parse() {
        assert!(matches!("stdio".parse(), Ok(ConsoleConfig::Stdio)));
        assert!(
            matches!("file:/tmp/x".parse(), Ok(ConsoleConfig::File(p)) if p.as_path() == std::path::Path::new("/tmp/x"))
        );
        assert!("file:".parse::<ConsoleConfig>().is_err());
        assert!("tcp:1".parse::<ConsoleConfig>().is_err());
    }
}

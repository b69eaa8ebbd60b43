//! Where COM1 output goes: the process's stdout, a file, or an in-memory ring that the
//! node agent streams from (and tests read). A ring also carries input: bytes queued with
//! [`ConsoleRing::send_input`] reach the guest's COM1 receive FIFO from the VM's event
//! thread.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

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

/// Most input bytes queued for the guest and not yet taken by COM1.
pub const MAX_PENDING_INPUT: usize = 64 << 10;

/// Input waiting for the guest, and the eventfd that wakes the VM's event thread.
struct Input {
    pending: Mutex<VecDeque<u8>>,
    /// `None` if the eventfd could not be created: the ring then takes no input.
    evt: Option<EventFd>,
}

/// A bounded byte ring of console output, shared between the VM and readers, with an
/// input queue towards the guest.
#[derive(Clone)]
pub struct ConsoleRing {
    inner: Arc<(Mutex<RingState>, Condvar)>,
    capacity: usize,
    /// Bytes ever written, for async readers ([`Self::subscribe`]).
    written: Arc<watch::Sender<u64>>,
    input: Arc<Input>,
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
        let evt = match EventFd::new(EFD_NONBLOCK) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!("console input disabled: cannot create an eventfd: {e}");
                None
            }
        };
        Self {
            inner: Arc::default(),
            capacity: capacity.max(1),
            written: Arc::new(watch::channel(0).0),
            input: Arc::new(Input {
                pending: Mutex::new(VecDeque::new()),
                evt,
            }),
        }
    }

    /// The bytes written since byte number `from` that the ring still holds, and the
    /// total written so far (pass it as the next `from`). Bytes that fell out of the ring
    /// are skipped.
    pub fn since(&self, from: u64) -> (Vec<u8>, u64) {
        let st = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        let held = st.buf.len() as u64;
        let first_held = st.total - held;
        let skip = from.saturating_sub(first_held).min(held) as usize;
        (st.buf.iter().skip(skip).copied().collect(), st.total)
    }

    /// A receiver of the total bytes written, changed on every write (for async
    /// streaming: await `changed()`, then read [`Self::since`]).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    /// Queues `bytes` for the guest's COM1 receiver; returns how many were queued
    /// (fewer when [`MAX_PENDING_INPUT`] bytes already wait).
    pub fn send_input(&self, bytes: &[u8]) -> io::Result<usize> {
        let evt = self
            .input
            .evt
            .as_ref()
            .ok_or_else(|| io::Error::other("console input is unavailable"))?;
        let n = {
            let mut q = self.input.pending.lock().unwrap_or_else(|e| e.into_inner());
            let n = bytes.len().min(MAX_PENDING_INPUT.saturating_sub(q.len()));
            q.extend(&bytes[..n]);
            n
        };
        evt.write(1)?;
        Ok(n)
    }

    /// The eventfd signalled when input is queued.
    pub(crate) fn input_event(&self) -> Option<&EventFd> {
        self.input.evt.as_ref()
    }

    /// Hands queued input to `take` (which returns how many bytes it accepted); returns
    /// whether bytes remain queued.
    pub(crate) fn drain_input(&self, take: impl FnOnce(&[u8]) -> usize) -> bool {
        if let Some(evt) = &self.input.evt {
            // Reset the counter; the queue is the source of truth.
            let _ = evt.read();
        }
        let mut q = self.input.pending.lock().unwrap_or_else(|e| e.into_inner());
        if q.is_empty() {
            return false;
        }
        let taken = take(q.make_contiguous()).min(q.len());
        q.drain(..taken);
        !q.is_empty()
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
        let total = st.total;
        cv.notify_all();
        drop(st);
        self.written.send_replace(total);
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
    fn since_and_input() {
        let mut r = ConsoleRing::new(4);
        let rx = r.subscribe();
        r.write_all(b"ab").expect("write");
        assert_eq!(*rx.borrow(), 2);
        assert_eq!(r.since(0), (b"ab".to_vec(), 2));
        r.write_all(b"cdef").expect("write");
        // "ab" fell out of the ring: only what is held comes back.
        assert_eq!(r.since(1), (b"cdef".to_vec(), 6));
        assert_eq!(r.since(5), (b"f".to_vec(), 6));
        assert_eq!(r.since(6), (Vec::new(), 6));

        assert_eq!(r.send_input(b"hello").expect("input"), 5);
        let mut got = Vec::new();
        assert!(r.drain_input(|b| {
            got.extend_from_slice(&b[..3]);
            3
        }));
        assert!(!r.drain_input(|b| {
            got.extend_from_slice(b);
            b.len()
        }));
        assert_eq!(got, b"hello");
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

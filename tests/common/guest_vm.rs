//! One `monovirt run` of the test guest (`tests/guest`) as a child process, its COM1 lines
//! collected by a reader thread with the time each arrived: what the guest tests and the
//! network benchmark boot and read. The child is killed on drop (also when a test fails).
//!
//! ```ignore
//! let mut vm = GuestVm::boot(&[], "net poweroff", &["--net=tap=mvtap0".into()])?;
//! let report = vm.wait_for("net.tcp.listen")?;
//! let report = vm.finish()?;
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use monovirt::network::mac::Mac;
use monovirt::network::node::PreparedNetwork;

use super::guest::{guest_elf, Report};

/// Generous: the guest's ring-0 code may be emulated (nested or PVM). Never a timing
/// assertion.
pub const GUEST_WAIT: Duration = Duration::from_secs(180);

/// A running test guest.
pub struct GuestVm {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    wait: Duration,
}

impl GuestVm {
    /// Boots the test guest with `console=ttyS0 nosmp {cmdline}`, 128 MiB and the console
    /// on stdout, plus `args`; `prefix` runs monovirt under a wrapper (`ip netns exec NS`).
    pub fn boot(prefix: &[&str], cmdline: &str, args: &[String]) -> Result<GuestVm> {
        let monovirt = env!("CARGO_BIN_EXE_monovirt");
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(monovirt);
                c
            }
            None => Command::new(monovirt),
        };
        cmd.arg("run")
            .arg("--kernel")
            .arg(guest_elf()?)
            .arg("--cmdline")
            .arg(format!("console=ttyS0 nosmp {cmdline}"))
            .args(["--memory", "128", "--console", "stdio"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("spawning monovirt run")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock()
                    .expect("lines lock")
                    .push((Instant::now(), line));
            }
        });
        Ok(GuestVm {
            child,
            lines,
            wait: GUEST_WAIT,
        })
    }

    /// Boots the test guest with `cmdline` on the prepared NICs (in order, with their
    /// MACs), plus `extra` arguments.
    pub fn boot_on(cmdline: &str, nets: &PreparedNetwork, extra: &[String]) -> Result<GuestVm> {
        let mut args: Vec<String> = nets
            .nics
            .iter()
            .map(|nic| {
                let mac = nic
                    .mac
                    .map(|m| format!(",mac={}", Mac(m)))
                    .unwrap_or_default();
                format!("--net=tap={}{mac}", nic.tap)
            })
            .collect();
        args.extend_from_slice(extra);
        GuestVm::boot(&[], cmdline, &args)
    }

    /// Waits up to `wait` (instead of [`GUEST_WAIT`]) in [`Self::wait_for`] and
    /// [`Self::finish`].
    pub fn with_wait(mut self, wait: Duration) -> GuestVm {
        self.wait = wait;
        self
    }

    /// Everything the guest printed so far.
    pub fn text(&self) -> String {
        let lines = self.lines.lock().expect("lines lock");
        lines.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    /// The `key=value` lines so far.
    pub fn report(&self) -> Report {
        Report::parse(&self.text())
    }

    /// When the first `key=` line arrived, if it has.
    pub fn arrived(&self, key: &str) -> Option<Instant> {
        let prefix = format!("{key}=");
        self.lines
            .lock()
            .expect("lines lock")
            .iter()
            .find(|(_, l)| l.trim_end_matches('\r').starts_with(&prefix))
            .map(|(t, _)| *t)
    }

    /// Waits until the guest has printed `key=`, or fails with what it printed.
    pub fn wait_for(&mut self, key: &str) -> Result<Report> {
        self.wait_for_line(key)?;
        Ok(self.report())
    }

    /// [`Self::wait_for`], answering when the line arrived.
    pub fn wait_for_line(&mut self, key: &str) -> Result<Instant> {
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(t) = self.arrived(key) {
                return Ok(t);
            }
            if let Some(status) = self.child.try_wait()? {
                // Let the reader thread drain the pipe before the final look.
                thread::sleep(Duration::from_millis(200));
                if let Some(t) = self.arrived(key) {
                    return Ok(t);
                }
                bail!(
                    "monovirt exited ({status}) before the guest printed `{key}=`:\n{}",
                    self.text()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "the guest printed no `{key}=` in time:\n{}",
                self.text()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for monovirt to exit successfully (the guest powers off) and returns the
    /// whole report.
    pub fn finish(&mut self) -> Result<Report> {
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(status) = self.child.try_wait()? {
                thread::sleep(Duration::from_millis(200));
                ensure!(
                    status.success(),
                    "monovirt exited with {status}:\n{}",
                    self.text()
                );
                return Ok(self.report());
            }
            ensure!(
                Instant::now() < deadline,
                "the guest did not power off:\n{}",
                self.text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the VMM process (a forced stop: nothing of it runs afterwards).
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill().context("killing monovirt")?;
        self.child.wait().context("reaping monovirt")?;
        Ok(())
    }
}

/// Sends `data` to a listening guest's TCP service at `addr` (`net`: port 7777), retrying
/// the connection for up to a minute while the guest comes up, closes the sending side
/// and returns the guest's reply (`bytes=N crc32=0x…\n`).
pub fn send_to_guest(addr: SocketAddr, data: &[u8]) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect {addr}: {e}; retrying");
                thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e).context(format!("connecting to {addr}")),
        }
    };
    s.set_read_timeout(Some(GUEST_WAIT))?;
    s.set_write_timeout(Some(GUEST_WAIT))?;
    s.write_all(data)?;
    s.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

/// The reply a listening guest (or a host server imitating one) gives to `len` bytes
/// from a connecting guest: tests/guest's `net::pattern` with `CONNECT_SEED` 7.
pub fn connect_reply(len: usize) -> String {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
        .collect();
    format!("bytes={len} crc32={:#010x}", crc32fast::hash(&data))
}

impl Drop for GuestVm {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

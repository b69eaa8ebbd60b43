//! A network namespace the test (or benchmark) creates, with a tap inside, for guests
//! whose virtio-net is backed by that tap: nothing touches the host's own network.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::thread;

use anyhow::{ensure, Context, Result};

/// A network namespace with a tap in it, both removed on drop (also when the test fails).
pub struct Netns {
    /// The namespace's name (`ip netns`).
    pub name: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {args:?} (is iproute2 installed?)"))?;
    ensure!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Netns {
    /// The tap inside the namespace.
    pub const TAP: &'static str = "mvtap0";
    /// The namespace's address on the tap.
    pub const HOST_IP: &'static str = "192.0.2.1";
    /// The address the guest is given.
    pub const GUEST_IP: &'static str = "192.0.2.2";

    /// Creates the namespace and its tap (up, with [`Netns::HOST_IP`]).
    pub fn create() -> Result<Netns> {
        let ns = Netns {
            name: format!("monovirt-virtio-{}", std::process::id()),
        };
        ip(&["netns", "add", &ns.name])?;
        // From here on, drop cleans up.
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "tuntap", "add", "dev", Self::TAP, "mode", "tap"])?;
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{}/24", Self::HOST_IP),
            "dev",
            Self::TAP,
        ])?;
        ip(&["-n", n, "link", "set", Self::TAP, "up"])?;
        Ok(ns)
    }

    /// Runs a command inside: `ip netns exec NAME`.
    pub fn exec_prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// Runs `f` on a thread that has entered the namespace (sockets it opens live there).
    pub fn run_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let ns = File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: setns on a valid namespace fd; it changes only this thread's namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            ensure!(rc == 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also removes the tap inside it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

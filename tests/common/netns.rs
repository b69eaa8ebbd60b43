//! Network namespaces a test creates, and the tools it drives them with (`ip`, `nft`,
//! busybox): the node networking tests and the network benchmark build their "node",
//! "outside" and peer networks from these, so nothing touches the host's own interfaces,
//! routes or nftables.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::thread;

use anyhow::{ensure, Context, Result};

/// Runs `cmd args`; its stdout, or an error with everything it printed.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd} {args:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd} {args:?} ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip args` (iproute2).
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Whether tool `name` runs (`name arg`). Missing, it fails the test under
/// `MONOVIRT_REQUIRE_KVM=1` and is reported as a skip otherwise.
pub fn tool_present(name: &str, arg: &str) -> bool {
    let found = Command::new(name)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var("MONOVIRT_REQUIRE_KVM").as_deref() == Ok("1") {
            panic!("MONOVIRT_REQUIRE_KVM=1 but `{name}` is not installed");
        }
        eprintln!("NOTICE: skipping: `{name}` is not installed");
    }
    found
}

/// A named network namespace with its loopback up, deleted on drop (with every
/// interface inside it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: String) -> Result<Netns> {
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `f` on a thread inside the namespace (its sockets live there).
    pub fn run_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.spawn_inside(f)?
            .join()
            .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    }

    /// Starts `f` on a thread inside the namespace.
    pub fn spawn_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<thread::JoinHandle<Result<T>>> {
        let ns = File::open(format!("/run/netns/{}", self.name)).context("opening the netns")?;
        Ok(thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd; it changes only this thread's namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            ensure!(rc == 0, "setns: {}", std::io::Error::last_os_error());
            f()
        }))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair: `here` in the current namespace, `there_name` in `peer`, both up.
pub fn veth_to(peer: &Netns, here: &str, there_name: &str) -> Result<()> {
    ip(&[
        "link", "add", here, "type", "veth", "peer", "name", there_name, "netns", &peer.name,
    ])?;
    ip(&["link", "set", here, "up"])?;
    ip(&["-n", &peer.name, "link", "set", there_name, "up"])?;
    Ok(())
}

/// What [`serve_http_once`]'s server saw.
#[derive(Debug)]
pub struct HttpRequest {
    /// The client's address as the server saw it (after any NAT on the way).
    pub peer: SocketAddr,
    /// The request line, e.g. `GET / HTTP/1.0`.
    pub request_line: String,
}

/// An HTTP/1.0 server for one request on `addr` inside `ns`: it answers `body` with 200 and
/// closes. Bound before this returns, so a client may connect at once.
pub fn serve_http_once(
    ns: &Netns,
    addr: SocketAddr,
    body: &'static str,
) -> Result<thread::JoinHandle<Result<HttpRequest>>> {
    let listener = ns.run_inside(move || Ok(TcpListener::bind(addr)?))?;
    Ok(thread::spawn(move || {
        let (mut s, peer) = listener.accept()?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
        // The request's head, up to the blank line.
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf)?;
            ensure!(
                n > 0,
                "the client closed before its request ended: {head:?}"
            );
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head);
        let request_line = head.lines().next().unwrap_or_default().to_string();
        s.write_all(
            format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )?;
        Ok(HttpRequest { peer, request_line })
    }))
}

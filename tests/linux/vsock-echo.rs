//! `vsock-echo`: the vsock checks of the real-Linux tier (tests/linux_tier.rs), one
//! static program that runs in the L2 guest (which has busybox, and busybox has no vsock
//! tool) and in L1 (the host side of monovirt's vsock device: its Unix sockets).
//!
//! `scripts/fetch-guest-artifacts.sh` builds it with rustc alone (std, no crates) for
//! x86_64-unknown-linux-gnu with the C library linked statically, so it needs nothing
//! from either initramfs. The socket calls std does not make for `AF_VSOCK` are declared
//! below from their C prototypes.
//!
//! ```text
//! vsock-echo serve vsock:PORT                  accept one connection, echo it until EOF
//! vsock-echo serve unix:PATH
//! vsock-echo call vsock:CID:PORT BYTES [SECS]  send BYTES, read the echo while sending
//! vsock-echo call unix:PATH:PORT BYTES [SECS]  the same through monovirt's `CONNECT PORT`
//! ```
//!
//! `call` retries a refused connection for up to SECS seconds (the guest's listener may
//! not be up yet), sends a pseudo-random stream, checks the echo byte for byte and prints
//! `sent=N echoed=N intact=yes|no`; `serve` prints `served=N`. Both exit non-zero on any
//! failure.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// <sys/socket.h>, <linux/vm_sockets.h>: x86_64 Linux values.
const AF_VSOCK: i32 = 40;
const SOCK_STREAM: i32 = 1;
const SOCK_CLOEXEC: i32 = 0o2000000;
const SHUT_WR: i32 = 1;
const VMADDR_CID_ANY: u32 = u32::MAX;

/// `struct sockaddr_vm`.
#[repr(C)]
struct SockaddrVm {
    family: u16,
    reserved1: u16,
    port: u32,
    cid: u32,
    flags: u8,
    zero: [u8; 3],
}

extern "C" {
    fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
    fn bind(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn listen(fd: i32, backlog: i32) -> i32;
    fn accept(fd: i32, addr: *mut SockaddrVm, len: *mut u32) -> i32;
    fn connect(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn shutdown(fd: i32, how: i32) -> i32;
}

fn check(ret: i32, what: &str) -> io::Result<i32> {
    if ret < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
    }
    Ok(ret)
}

fn vsock_addr(cid: u32, port: u32) -> SockaddrVm {
    SockaddrVm {
        family: AF_VSOCK as u16,
        reserved1: 0,
        port,
        cid,
        flags: 0,
        zero: [0; 3],
    }
}

const ADDR_LEN: u32 = std::mem::size_of::<SockaddrVm>() as u32;

fn vsock_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers; a non-negative result is a new fd we own.
    let ret = unsafe { socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0) };
    let fd = check(ret, "socket(AF_VSOCK)")?;
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Accepts one vsock connection on `port`.
fn vsock_accept(port: u32) -> io::Result<OwnedFd> {
    let listener = vsock_socket()?;
    let addr = vsock_addr(VMADDR_CID_ANY, port);
    // SAFETY: `addr` is a valid sockaddr_vm of ADDR_LEN bytes that outlives the call.
    let ret = unsafe { bind(listener.as_raw_fd(), &addr, ADDR_LEN) };
    check(ret, "bind")?;
    // SAFETY: plain fd argument.
    check(unsafe { listen(listener.as_raw_fd(), 1) }, "listen")?;
    let mut peer = vsock_addr(0, 0);
    let mut len = ADDR_LEN;
    // SAFETY: `peer` and `len` are valid for writes of ADDR_LEN bytes and a u32.
    let ret = unsafe { accept(listener.as_raw_fd(), &mut peer, &mut len) };
    let fd = check(ret, "accept")?;
    // SAFETY: `fd` was just returned by accept() and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn vsock_connect(cid: u32, port: u32) -> io::Result<OwnedFd> {
    let fd = vsock_socket()?;
    let addr = vsock_addr(cid, port);
    // SAFETY: `addr` is a valid sockaddr_vm of ADDR_LEN bytes that outlives the call.
    let ret = unsafe { connect(fd.as_raw_fd(), &addr, ADDR_LEN) };
    check(ret, "connect")?;
    Ok(fd)
}

/// Connects through the host side of monovirt's vsock: the VM's Unix socket, then
/// `CONNECT <port>\n`, answered by `OK <host port>\n` once the guest has accepted.
fn unix_connect(path: &str, port: u32) -> io::Result<OwnedFd> {
    let mut stream = UnixStream::connect(path)?;
    stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
    // One byte at a time, so that nothing past the line is consumed.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        if stream.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the guest refused the connection",
            ));
        }
        line.push(byte[0]);
    }
    if !line.starts_with(b"OK ") {
        return Err(io::Error::other(format!(
            "handshake answer {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    Ok(stream.into())
}

fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fd argument.
    check(unsafe { shutdown(fd, SHUT_WR) }, "shutdown").map(|_| ())
}

/// Echoes everything read back until EOF; returns the byte count.
fn echo(conn: OwnedFd) -> io::Result<u64> {
    let raw = conn.as_raw_fd();
    let mut file = File::from(conn);
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])?;
        total += n as u64;
    }
    shutdown_write(raw)?;
    Ok(total)
}

/// A xorshift64 stream: the bytes `call` sends and expects back, one 64-bit word at a
/// time (little-endian). A byte stream, not a word stream: `fill` may be called with any
/// length (reads return what arrived) and continues exactly where the last call stopped.
struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    fn new(seed: u64) -> Self {
        Pattern {
            state: seed,
            word: [0; 8],
            used: 8,
        }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            if self.used == 8 {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.word = self.state.to_le_bytes();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }
}

/// Sends `bytes` of the pattern on a thread of its own and checks the echo.
fn call(conn: OwnedFd, bytes: u64) -> io::Result<(u64, bool)> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let writer = File::from(conn.try_clone()?);
    let sender = thread::spawn(move || -> io::Result<()> {
        let mut writer = writer;
        let mut pattern = Pattern::new(seed);
        let mut buf = vec![0u8; 16 << 10];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            pattern.fill(&mut buf[..n]);
            writer.write_all(&buf[..n])?;
            left -= n as u64;
        }
        shutdown_write(writer.as_raw_fd())
    });
    let mut reader = BufReader::new(File::from(conn));
    let mut expected = Pattern::new(seed);
    let mut want = vec![0u8; 16 << 10];
    let mut echoed = 0u64;
    let mut intact = true;
    loop {
        let got = reader.fill_buf()?;
        if got.is_empty() {
            break;
        }
        let n = got.len().min(want.len());
        expected.fill(&mut want[..n]);
        intact &= got[..n] == want[..n];
        reader.consume(n);
        echoed += n as u64;
    }
    sender
        .join()
        .map_err(|_| io::Error::other("the sending thread panicked"))??;
    Ok((echoed, intact && echoed == bytes))
}

/// Retries `connect` while the peer refuses, for up to `secs` seconds.
fn with_retry(secs: u64, connect: impl Fn() -> io::Result<OwnedFd>) -> io::Result<OwnedFd> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match connect() {
            Ok(fd) => return Ok(fd),
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(250)),
            Err(e) => return Err(e),
        }
    }
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> io::Result<T> {
    s.parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("bad {what} {s:?}")))
}

fn run(args: &[String]) -> io::Result<bool> {
    let usage = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: vsock-echo serve vsock:PORT|unix:PATH | \
             call vsock:CID:PORT|unix:PATH:PORT BYTES [SECS]",
        )
    };
    let (mode, target) = match args {
        [mode, target, ..] => (mode.as_str(), target.as_str()),
        _ => return Err(usage()),
    };
    match mode {
        "serve" => {
            let conn = match target.split_once(':') {
                Some(("vsock", port)) => vsock_accept(parse(port, "port")?)?,
                Some(("unix", path)) => {
                    let _ = std::fs::remove_file(path);
                    let (stream, _) = UnixListener::bind(path)?.accept()?;
                    stream.into()
                }
                _ => return Err(usage()),
            };
            println!("served={}", echo(conn)?);
            Ok(true)
        }
        "call" => {
            let bytes: u64 = parse(args.get(2).ok_or_else(usage)?, "byte count")?;
            let secs: u64 = match args.get(3) {
                Some(s) => parse(s, "seconds")?,
                None => 0,
            };
            let conn = match target.split_once(':') {
                Some(("vsock", rest)) => {
                    let (cid, port) = rest.split_once(':').ok_or_else(usage)?;
                    let (cid, port) = (parse(cid, "cid")?, parse(port, "port")?);
                    with_retry(secs, || vsock_connect(cid, port))?
                }
                Some(("unix", rest)) => {
                    let (path, port) = rest.rsplit_once(':').ok_or_else(usage)?;
                    let port = parse(port, "port")?;
                    with_retry(secs, || unix_connect(path, port))?
                }
                _ => return Err(usage()),
            };
            let (echoed, intact) = call(conn, bytes)?;
            let word = if intact { "yes" } else { "no" };
            println!("sent={bytes} echoed={echoed} intact={word}");
            Ok(intact)
        }
        _ => Err(usage()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            println!("error={}", e.to_string().replace(' ', "_"));
            ExitCode::FAILURE
        }
    }
}

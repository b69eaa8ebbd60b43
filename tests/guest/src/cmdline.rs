//! The guest's own command-line words, among whatever else the command line carries
//! (`console=ttyS0` and the like are ignored). The last action word wins.
//!
//! | word | effect after `done=1` |
//! | --- | --- |
//! | `poweroff` (default) | ACPI S5 through the FADT |
//! | `reset` | the FADT reset register, else 0xFE to port 0x64 |
//! | `triplefault` | load an empty IDT and execute `int3` |
//! | `hang` | halt with interrupts off, forever |
//! | `tick` | print `tick=N` (and `tick.ns=` kvmclock time) about every 100 ms, forever |
//! | `wait` | wait for the ACPI power button (an SCI), then power off as `poweroff` does |
//! | `echo` | print `echo.ready=1`, then `echo=<line>` for every line received on COM1, forever |
//! | `nosmp` | do not start the application processors |
//! | `net` | DHCP on the first virtio-net device, then one TCP connection (see [`crate::net`]) |
//! | `guest.ip=A.B.C.D/N`, `guest.gw=A.B.C.D` | with `net`: a static address instead of DHCP |
//! | `net.nic=N` | with `net`: drive the N-th virtio-net device (default 0) |
//! | `cidata` | read `network-config` from the `cidata` disk; with `net`, the entry matching the NIC's MAC gives its static address (see [`crate::cidata`]) |
//! | `net.connect=A.B.C.D:P`, `net.bytes=N` | with `net`: connect to that peer instead of listening, send N bytes (default 65536), read its reply |
//! | `net.http=A.B.C.D:P/PATH` | with `net`: an HTTP/1.0 `GET /PATH` from that server instead of listening; prints its status line and body |
//! | `vsock` | echo over virtio-vsock: connect to the host, then serve one host connection (see [`crate::vsock`]) |
//! | `blkwrite` | write, flush and read back a pattern on every virtio-blk disk (see [`crate::blk`]) |
//! | `blkbench` | time sequential and random I/O on the first virtio-blk disk (see [`crate::blk`]) |
//! | `blkcrc32=N` | print the CRC-32 of the first `N` bytes (decimal) of every virtio-blk disk |

/// What the guest does once it has reported everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Poweroff,
    Reset,
    TripleFault,
    Hang,
    Tick,
    Wait,
    Echo,
}

impl Action {
    /// The value of the `action=` key.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Poweroff => "poweroff",
            Action::Reset => "reset",
            Action::TripleFault => "triplefault",
            Action::Hang => "hang",
            Action::Tick => "tick",
            Action::Wait => "wait",
            Action::Echo => "echo",
        }
    }
}

/// Options parsed from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub action: Action,
    /// Bring up the application processors (off with `nosmp`).
    pub smp: bool,
    /// Write a pattern to the virtio-blk disks (`blkwrite`).
    pub blk_write: bool,
    /// Time I/O on the first virtio-blk disk (`blkbench`).
    pub blk_bench: bool,
    /// CRC-32 of the first this many bytes of every virtio-blk disk (`blkcrc32=N`).
    pub blk_crc32: Option<u64>,
    /// Bring up virtio-net with DHCP and serve one TCP connection (`net`).
    pub net: bool,
    /// Echo over virtio-vsock in both directions (`vsock`, see [`crate::vsock`]).
    pub vsock: bool,
    /// A static address instead of DHCP: `guest.ip=A.B.C.D/N`.
    pub ip: Option<([u8; 4], u8)>,
    /// The default gateway with a static address: `guest.gw=A.B.C.D`.
    pub gateway: Option<[u8; 4]>,
    /// Connect to this peer instead of listening: `net.connect=A.B.C.D:P`.
    pub connect: Option<([u8; 4], u16)>,
    /// Bytes to send on that connection: `net.bytes=N`.
    pub net_bytes: u64,
    /// Which virtio-net device `net` drives: `net.nic=N`.
    pub net_nic: usize,
    /// Fetch a page instead of listening: `net.http=A.B.C.D:P/PATH`.
    pub http: Option<HttpGet>,
    /// Read cloud-init NoCloud `network-config` (`cidata`).
    pub cidata: bool,
}

/// The default of `net.bytes`.
pub const DEFAULT_NET_BYTES: u64 = 64 << 10;

/// The longest path `net.http=` takes.
pub const HTTP_PATH_MAX: usize = 48;

/// An HTTP GET: the server and the path (which starts with `/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpGet {
    pub server: ([u8; 4], u16),
    path: [u8; HTTP_PATH_MAX],
    path_len: usize,
}

impl HttpGet {
    /// Parses `A.B.C.D:P/PATH` (the path may be just `/`). The path is printable ASCII
    /// without spaces, so it fits a request line as it is.
    fn parse(text: &[u8]) -> Option<HttpGet> {
        let slash = text.iter().position(|&b| b == b'/')?;
        let path = &text[slash..];
        if path.len() > HTTP_PATH_MAX || !path.iter().all(u8::is_ascii_graphic) {
            return None;
        }
        let mut get = HttpGet {
            server: endpoint(&text[..slash])?,
            path: [0; HTTP_PATH_MAX],
            path_len: path.len(),
        };
        get.path[..path.len()].copy_from_slice(path);
        Some(get)
    }

    /// The path, `/` first.
    pub fn path(&self) -> &str {
        core::str::from_utf8(&self.path[..self.path_len]).unwrap_or("/")
    }
}

/// Parses `A.B.C.D:P`.
fn endpoint(text: &[u8]) -> Option<([u8; 4], u16)> {
    let colon = text.iter().position(|&b| b == b':')?;
    let port: u16 = core::str::from_utf8(&text[colon + 1..])
        .ok()?
        .parse()
        .ok()?;
    (port != 0).then_some((ipv4(&text[..colon])?, port))
}

/// Parses `A.B.C.D`.
fn ipv4(text: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.');
    for octet in &mut out {
        let part = core::str::from_utf8(parts.next()?).ok()?;
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Parses `A.B.C.D/N`.
fn cidr(text: &[u8]) -> Option<([u8; 4], u8)> {
    let slash = text.iter().position(|&b| b == b'/')?;
    let prefix: u8 = core::str::from_utf8(&text[slash + 1..])
        .ok()?
        .parse()
        .ok()?;
    (prefix <= 32).then_some((ipv4(&text[..slash])?, prefix))
}

impl Options {
    /// Parses the words the guest understands out of `cmdline`.
    pub fn parse(cmdline: &[u8]) -> Options {
        let mut options = Options {
            action: Action::Poweroff,
            smp: true,
            blk_write: false,
            blk_bench: false,
            blk_crc32: None,
            net: false,
            ip: None,
            gateway: None,
            vsock: false,
            connect: None,
            net_bytes: DEFAULT_NET_BYTES,
            net_nic: 0,
            http: None,
            cidata: false,
        };
        for word in cmdline.split(|b| b.is_ascii_whitespace()) {
            match word {
                b"poweroff" => options.action = Action::Poweroff,
                b"reset" | b"reboot" => options.action = Action::Reset,
                b"triplefault" => options.action = Action::TripleFault,
                b"hang" => options.action = Action::Hang,
                b"tick" => options.action = Action::Tick,
                b"wait" => options.action = Action::Wait,
                b"echo" => options.action = Action::Echo,
                b"nosmp" => options.smp = false,
                b"blkwrite" => options.blk_write = true,
                b"blkbench" => options.blk_bench = true,
                b"net" => options.net = true,
                b"vsock" => options.vsock = true,
                b"cidata" => options.cidata = true,
                _ if word.starts_with(b"net.nic=") => {
                    if let Some(n) = core::str::from_utf8(&word[8..])
                        .ok()
                        .and_then(|s| s.parse().ok())
                    {
                        options.net_nic = n;
                    }
                }
                _ if word.starts_with(b"guest.ip=") => options.ip = cidr(&word[9..]),
                _ if word.starts_with(b"guest.gw=") => options.gateway = ipv4(&word[9..]),
                _ if word.starts_with(b"net.connect=") => options.connect = endpoint(&word[12..]),
                _ if word.starts_with(b"net.http=") => options.http = HttpGet::parse(&word[9..]),
                _ if word.starts_with(b"net.bytes=") => {
                    if let Some(n) = core::str::from_utf8(&word[10..])
                        .ok()
                        .and_then(|s| s.parse().ok())
                    {
                        options.net_bytes = n;
                    }
                }
                _ if word.starts_with(b"blkcrc32=") => {
                    options.blk_crc32 = core::str::from_utf8(&word[9..])
                        .ok()
                        .and_then(|n| n.parse().ok())
                }
                _ => {}
            }
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_poweroff_with_smp() {
        assert_eq!(
            Options::parse(b"console=ttyS0"),
            Options {
                action: Action::Poweroff,
                smp: true,
                blk_write: false,
                blk_bench: false,
                blk_crc32: None,
                net: false,
                ip: None,
                gateway: None,
                vsock: false,
                connect: None,
                net_bytes: DEFAULT_NET_BYTES,
                net_nic: 0,
                http: None,
                cidata: false,
            }
        );
    }

    #[test]
    fn last_action_wins_and_other_words_are_ignored() {
        let o = Options::parse(b"console=ttyS0 reset  hang\tnosmp poweroff=1 blkwrite");
        assert_eq!(
            o,
            Options {
                action: Action::Hang,
                smp: false,
                blk_write: true,
                blk_bench: false,
                blk_crc32: None,
                net: false,
                ip: None,
                gateway: None,
                vsock: false,
                connect: None,
                net_bytes: DEFAULT_NET_BYTES,
                net_nic: 0,
                http: None,
                cidata: false,
            }
        );
        assert_eq!(Options::parse(b"triplefault").action, Action::TripleFault);
        assert_eq!(Options::parse(b"wait").action, Action::Wait);
        assert_eq!(Options::parse(b"console=ttyS0 echo").action, Action::Echo);
        assert!(Options::parse(b"vsock").vsock);
        assert_eq!(Options::parse(b"blkcrc32=6291456").blk_crc32, Some(6291456));
        assert_eq!(Options::parse(b"blkcrc32=6M").blk_crc32, None);
    }

    #[test]
    fn static_address_words() {
        let o = Options::parse(b"net guest.ip=10.0.0.2/24 guest.gw=10.0.0.1");
        assert!(o.net);
        assert_eq!(o.ip, Some(([10, 0, 0, 2], 24)));
        assert_eq!(o.gateway, Some([10, 0, 0, 1]));
        assert_eq!(Options::parse(b"guest.ip=10.0.0.256/24").ip, None);
        assert_eq!(Options::parse(b"guest.ip=10.0.0.2/33").ip, None);
        assert_eq!(Options::parse(b"guest.ip=10.0.0.2").ip, None);
        assert_eq!(Options::parse(b"guest.gw=1.2.3.4.5").gateway, None);
    }

    #[test]
    fn connect_words() {
        let o = Options::parse(b"net net.connect=10.0.2.3:7777 net.bytes=1048576");
        assert_eq!(o.connect, Some(([10, 0, 2, 3], 7777)));
        assert_eq!(o.net_bytes, 1 << 20);
        assert_eq!(Options::parse(b"net.connect=10.0.2.3").connect, None);
        assert_eq!(Options::parse(b"net.connect=10.0.2.3:0").connect, None);
        assert_eq!(Options::parse(b"net.bytes=x").net_bytes, DEFAULT_NET_BYTES);
        let o = Options::parse(b"net net.nic=1 cidata");
        assert_eq!((o.net_nic, o.cidata), (1, true));
    }

    #[test]
    fn http_words() {
        let get = Options::parse(b"net net.http=198.51.100.1:8000/from-guest?x=1")
            .http
            .expect("parsed");
        assert_eq!(get.server, ([198, 51, 100, 1], 8000));
        assert_eq!(get.path(), "/from-guest?x=1");
        assert_eq!(
            Options::parse(b"net.http=10.0.0.1:80/")
                .http
                .map(|g| g.path().len()),
            Some(1)
        );
        assert_eq!(Options::parse(b"net.http=10.0.0.1:80").http, None);
        assert_eq!(Options::parse(b"net.http=10.0.0.1/x").http, None);
        let long = [b"net.http=10.0.0.1:80/".as_slice(), &[b'a'; HTTP_PATH_MAX]].concat();
        assert_eq!(Options::parse(&long).http, None);
    }
}

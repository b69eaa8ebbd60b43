//! virtio-net through `virtio-drivers` with `smoltcp` on top: DHCP (or `guest.ip=`) for an
//! address, ARP and ICMP echo answered by the stack, then one TCP connection on port
//! [`TCP_PORT`]: everything the peer sends is counted and CRC-32'd until it closes its side, and the guest answers
//! `bytes=N crc32=0x........\n` and closes. Runs with the `net` command-line word.
//!
//! With `net.connect=A.B.C.D:P` the guest is the client instead (VM→VM traffic): it
//! connects to that peer, sends `net.bytes` bytes of [`pattern`] with seed
//! [`CONNECT_SEED`], closes its side, and prints the peer's reply line
//! (`net.connect.reply`), what it sent (`net.connect.tx=N,0x<crc32>`) and how long
//! connect-to-reply took on the PIT (`net.connect.us`).
//!
//! With `net.http=A.B.C.D:P/PATH` the guest fetches a page instead (a VM reaching a
//! server outside through the node's NAT): one HTTP/1.0 `GET /PATH`, and it prints the
//! response's status line (`net.http.status`), its body's first line (`net.http.body`)
//! and the response's size (`net.http.bytes`).

use crate::cmdline::Options;
use crate::dma::GuestHal;
use crate::kv;
use crate::pit::Stopwatch;
use core::cell::UnsafeCell;
use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::PciTransport;

/// The TCP port the guest listens on.
pub const TCP_PORT: u16 = 7777;
/// Receive buffers posted to the device (and the transmit queue's size).
const QUEUE: usize = 64;
const BUF: usize = 2048;
const MTU: usize = 1514;

struct RxBuffers(UnsafeCell<[[u8; BUF]; QUEUE]>);

// SAFETY: only the boot processor's single `NetDevice` uses the buffers.
unsafe impl Sync for RxBuffers {}

// Not cleared at entry (see link.ld): the device writes a frame before the guest reads it.
#[link_section = ".noinit"]
static RX: RxBuffers = RxBuffers(UnsafeCell::new([[0; BUF]; QUEUE]));

/// The seed of the bytes a connecting guest sends.
pub const CONNECT_SEED: u8 = 7;
/// The guest's local port for `net.connect`.
const LOCAL_PORT: u16 = 49152;

/// Byte `i` of a stream with `seed`: the same formula as the host tests' senders.
pub fn pattern(i: u64, seed: u8) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(seed)
}

/// TCP receive window and send buffer (64 KiB each, so a stream is not throttled by the
/// guest in either direction).
struct TcpBuffers(UnsafeCell<([u8; 65535], [u8; 65535])>);

// SAFETY: only `run`, on the boot processor, borrows them, once.
unsafe impl Sync for TcpBuffers {}

static TCP: TcpBuffers = TcpBuffers(UnsafeCell::new(([0; 65535], [0; 65535])));

/// Transmit buffers (virtio-net header + frame), one per transmit queue entry.
struct TxBuffers(UnsafeCell<[[u8; BUF]; QUEUE]>);

// SAFETY: only the boot processor's single `NetDevice` uses the buffers.
unsafe impl Sync for TxBuffers {}

// Not cleared at entry (see link.ld): a frame is written before it is sent.
#[link_section = ".noinit"]
static TX: TxBuffers = TxBuffers(UnsafeCell::new([[0; BUF]; QUEUE]));

type Raw = VirtIONetRaw<GuestHal, PciTransport, QUEUE>;

/// Frames in flight on the transmit queue: sending does not wait for the device (a
/// synchronous send made every ACK a round trip through the VMM's device thread while
/// the vCPU spun); completed buffers are taken back before a buffer is needed.
struct TxRing {
    bufs: &'static mut [[u8; BUF]; QUEUE],
    /// The token and length of each buffer the device has not completed yet.
    pending: [Option<(u16, usize)>; QUEUE],
}

impl TxRing {
    /// Takes back every buffer the device has finished with.
    fn reclaim(&mut self, raw: &mut Raw) {
        while let Some(token) = raw.poll_transmit() {
            let Some(i) = self
                .pending
                .iter()
                .position(|p| p.is_some_and(|(t, _)| t == token))
            else {
                kv!("net.tx_error", "unknown completion {token}");
                return;
            };
            let (_, len) = self.pending[i].take().unwrap_or_default();
            // SAFETY: `bufs[i][..len]` is the buffer `transmit_begin` returned `token` for.
            if let Err(e) = unsafe { raw.transmit_complete(token, &self.bufs[i][..len]) } {
                kv!("net.tx_error", "{e}");
            }
        }
    }

    /// A buffer the device does not hold, after taking back completed ones.
    fn free_slot(&mut self, raw: &mut Raw) -> Option<usize> {
        self.reclaim(raw);
        self.pending.iter().position(Option::is_none)
    }
}

struct NetDevice {
    raw: Raw,
    rx: &'static mut [[u8; BUF]; QUEUE],
    tokens: [Option<u16>; QUEUE],
    packet: [u8; BUF],
    tx: TxRing,
}

impl NetDevice {
    fn new(raw: VirtIONetRaw<GuestHal, PciTransport, QUEUE>) -> Option<NetDevice> {
        // SAFETY: called once; the buffers are static and owned by this device from now on.
        let rx = unsafe { &mut *RX.0.get() };
        // SAFETY: as above, for the transmit buffers.
        let bufs = unsafe { &mut *TX.0.get() };
        let mut dev = NetDevice {
            raw,
            rx,
            tokens: [None; QUEUE],
            packet: [0; BUF],
            tx: TxRing {
                bufs,
                pending: [None; QUEUE],
            },
        };
        for i in 0..QUEUE {
            // SAFETY: each buffer is static and handed to the device until its completion.
            dev.tokens[i] = Some(unsafe { dev.raw.receive_begin(&mut dev.rx[i]) }.ok()?);
        }
        Some(dev)
    }
}

struct Rx<'a>(&'a [u8]);

impl RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

/// A free transmit buffer (`slot`), handed to smoltcp to fill.
struct Tx<'a> {
    raw: &'a mut Raw,
    ring: &'a mut TxRing,
    slot: usize,
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let buf = &mut self.ring.bufs[self.slot];
        let hdr = match self.raw.fill_buffer_header(buf) {
            Ok(n) => n,
            Err(e) => {
                kv!("net.tx_error", "{e}");
                return f(&mut [0u8; BUF][..len.min(BUF)]);
            }
        };
        let len = len.min(BUF - hdr);
        let r = f(&mut buf[hdr..hdr + len]);
        // SAFETY: the buffer stays untouched in `ring` until `reclaim` completes its token.
        match unsafe { self.raw.transmit_begin(&buf[..hdr + len]) } {
            Ok(token) => self.ring.pending[self.slot] = Some((token, hdr + len)),
            Err(e) => kv!("net.tx_error", "{e}"),
        }
        r
    }
}

impl Device for NetDevice {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        // A reply may be needed: take a frame only when a transmit buffer is free.
        let slot = self.tx.free_slot(&mut self.raw)?;
        let token = self.raw.poll_receive()?;
        let i = self.tokens.iter().position(|&t| t == Some(token))?;
        // SAFETY: `rx[i]` is the buffer posted with `token`, which the device just completed.
        let (hdr, len) = unsafe { self.raw.receive_complete(token, &mut self.rx[i]) }.ok()?;
        let len = len.min(BUF);
        self.packet[..len].copy_from_slice(&self.rx[i][hdr..hdr + len]);
        // SAFETY: as in `new`: re-post the same static buffer.
        self.tokens[i] = unsafe { self.raw.receive_begin(&mut self.rx[i]) }.ok();
        Some((
            Rx(&self.packet[..len]),
            Tx {
                raw: &mut self.raw,
                ring: &mut self.tx,
                slot,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        let slot = self.tx.free_slot(&mut self.raw)?;
        Some(Tx {
            raw: &mut self.raw,
            ring: &mut self.tx,
            slot,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        // The device can hold one frame per posted receive buffer. smoltcp caps the TCP
        // window it advertises at this many segments: at 1 it was one segment, which made
        // every stream stop-and-wait (tens of KiB/s); QUEUE segments are more than the
        // 64 KiB window.
        caps.max_burst_size = Some(QUEUE);
        caps
    }
}

/// Brings the interface up with DHCP and serves one TCP connection. Prints `net.*` keys.
pub fn run<C: ConfigurationAccess>(
    root: &mut PciRoot<C>,
    df: DeviceFunction,
    options: &Options,
    cidata: Option<&crate::cidata::NetworkConfig>,
) {
    let transport = match PciTransport::new::<GuestHal, C>(root, df) {
        Ok(t) => t,
        Err(e) => {
            kv!("virtio.net.0", "{df},transport error: {e}");
            return;
        }
    };
    let raw = match VirtIONetRaw::<GuestHal, _, QUEUE>::new(transport) {
        Ok(r) => r,
        Err(e) => {
            kv!("virtio.net.0", "{df},init error: {e}");
            return;
        }
    };
    let mac = EthernetAddress(raw.mac_address());
    kv!("virtio.net.0", "{df},mac={mac}");
    // The address: the command line's, else cloud-init's entry for this MAC, else DHCP.
    let mut options = *options;
    let from_cidata = cidata
        .and_then(|c| c.for_mac(mac.0))
        .filter(|e| options.ip.is_none() && e.address.is_some());
    if let Some(e) = from_cidata {
        options.ip = e.address;
        options.gateway = e.gateway;
    }
    kv!(
        "net.ip.source",
        "{}",
        match (from_cidata.is_some(), options.ip.is_some()) {
            (true, _) => "cidata",
            (false, true) => "cmdline",
            (false, false) => "dhcp",
        }
    );
    let options = &options;
    let Some(mut dev) = NetDevice::new(raw) else {
        kv!("net", "error: could not post receive buffers");
        return;
    };
    let mut clock = Stopwatch::start();
    let mut now = || Instant::from_micros(clock.elapsed_us() as i64);
    let mut iface = Interface::new(Config::new(HardwareAddress::Ethernet(mac)), &mut dev, now());
    let mut storage = [SocketStorage::EMPTY; 2];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let dhcp = options
        .ip
        .is_none()
        .then(|| sockets.add(dhcpv4::Socket::new()));
    // SAFETY: see `TcpBuffers`: this is the only borrow.
    let (rx_buf, tx_buf) = unsafe { &mut *TCP.0.get() };
    let tcp = sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(&mut rx_buf[..]),
        tcp::SocketBuffer::new(&mut tx_buf[..]),
    ));

    let mut configured = false;
    if let Some((ip, prefix)) = options.ip {
        let address = Ipv4Cidr::new(Ipv4Address::from(ip), prefix);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::Ipv4(address));
        });
        kv!("net.ip", "{address}");
        if let Some(gw) = options.gateway {
            let gw = Ipv4Address::from(gw);
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
            kv!("net.gateway", "{gw}");
        }
        configured = true;
    }
    if let Some(get) = options.http {
        let mut request = Request::new();
        let (a, port) = (Ipv4Address::from(get.server.0), get.server.1);
        let _ = core::fmt::Write::write_fmt(
            &mut request,
            format_args!(
                "GET {} HTTP/1.0\r\nHost: {a}:{port}\r\nUser-Agent: monovirt-test-guest\r\n\r\n",
                get.path()
            ),
        );
        if let Some(done) = connect_loop(
            &mut iface,
            &mut dev,
            &mut sockets,
            tcp,
            dhcp,
            configured,
            get.server,
            Payload::Bytes(request.as_bytes()),
            &mut now,
        ) {
            print_http(done.reply());
            kv!("net.tcp", "closed");
        }
        return;
    }
    if let Some(peer) = options.connect {
        if let Some(done) = connect_loop(
            &mut iface,
            &mut dev,
            &mut sockets,
            tcp,
            dhcp,
            configured,
            peer,
            Payload::Pattern(options.net_bytes),
            &mut now,
        ) {
            let line = core::str::from_utf8(done.reply())
                .unwrap_or("(not UTF-8)")
                .trim_end();
            kv!("net.connect.tx", "{},{:#010x}", done.sent, done.crc);
            kv!("net.connect.reply", "{line}");
            kv!("net.connect.us", "{}", done.us);
            kv!("net.tcp", "closed");
        }
        return;
    }
    let mut listening = false;
    let mut received: u64 = 0;
    let mut crc = crc32fast::Hasher::new();
    let mut replied = false;
    // The deadline moves with every byte received: a long stream on a slow host is fine, a
    // silent peer is not.
    let mut last_activity = now();
    loop {
        let t = now();
        iface.poll(t, &mut dev, &mut sockets);
        let dhcp_event = match dhcp {
            Some(handle) => sockets.get_mut::<dhcpv4::Socket>(handle).poll(),
            None => None,
        };
        if let Some(event) = dhcp_event {
            match event {
                dhcpv4::Event::Configured(cfg) => {
                    iface.update_ip_addrs(|addrs| {
                        addrs.clear();
                        let _ = addrs.push(IpCidr::Ipv4(cfg.address));
                    });
                    if let Some(router) = cfg.router {
                        let _ = iface.routes_mut().add_default_ipv4_route(router);
                        kv!("net.gateway", "{router}");
                    }
                    kv!("net.ip", "{}", cfg.address);
                    configured = true;
                }
                dhcpv4::Event::Deconfigured => configured = false,
            }
        }
        let socket = sockets.get_mut::<tcp::Socket>(tcp);
        if configured && !listening {
            if let Err(e) = socket.listen(TCP_PORT) {
                kv!("net.tcp", "listen error: {e}");
                return;
            }
            listening = true;
            kv!("net.tcp.listen", "{TCP_PORT}");
        }
        while socket.can_recv() {
            last_activity = t;
            let _ = socket.recv(|data| {
                received += data.len() as u64;
                crc.update(data);
                (data.len(), ())
            });
        }
        if listening && !replied && socket.state() == tcp::State::CloseWait {
            let digest = crc.clone().finalize();
            kv!("net.tcp.rx", "{received},{digest:#010x}");
            let mut line = [0u8; 48];
            let n = format_reply(&mut line, received, digest);
            let _ = socket.send_slice(&line[..n]);
            socket.close();
            replied = true;
        }
        if replied && matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait) {
            kv!("net.tcp", "closed");
            return;
        }
        if (t - last_activity).total_millis() > if listening { 120_000 } else { 15_000 } {
            kv!(
                "net",
                "timeout ({})",
                if listening {
                    "no TCP peer"
                } else {
                    "no DHCP lease"
                }
            );
            return;
        }
    }
}

/// What a connecting guest sends.
#[derive(Clone, Copy)]
enum Payload<'a> {
    /// This many bytes of [`pattern`] with [`CONNECT_SEED`].
    Pattern(u64),
    /// These bytes (a request).
    Bytes(&'a [u8]),
}

impl Payload<'_> {
    fn len(&self) -> u64 {
        match self {
            Payload::Pattern(n) => *n,
            Payload::Bytes(b) => b.len() as u64,
        }
    }

    /// Byte `i` of the payload.
    fn at(&self, i: u64) -> u8 {
        match self {
            Payload::Pattern(_) => pattern(i, CONNECT_SEED),
            Payload::Bytes(b) => b[i as usize],
        }
    }
}

/// The most of a peer's reply a connecting guest keeps.
const REPLY_MAX: usize = 1024;

/// A completed client exchange.
struct Exchange {
    /// Bytes sent, and their CRC-32.
    sent: u64,
    crc: u32,
    /// The start of the peer's reply.
    reply: [u8; REPLY_MAX],
    reply_len: usize,
    /// Microseconds from connect to the peer's close (PIT).
    us: u64,
}

impl Exchange {
    fn reply(&self) -> &[u8] {
        &self.reply[..self.reply_len]
    }
}

/// A small request buffer that `core::fmt` writes into.
struct Request {
    buf: [u8; 256],
    len: usize,
}

impl Request {
    fn new() -> Request {
        Request {
            buf: [0; 256],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl core::fmt::Write for Request {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Prints an HTTP response's status line, its body's first line and its size.
fn print_http(response: &[u8]) {
    let text = core::str::from_utf8(response).unwrap_or("");
    let status = text.lines().next().unwrap_or("").trim_end();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.lines().next().unwrap_or("").trim_end());
    kv!("net.http.status", "{status}");
    match body {
        Some(body) => kv!("net.http.body", "{body}"),
        None => kv!("net", "error: no HTTP body in {} bytes", response.len()),
    }
    kv!("net.http.bytes", "{}", response.len());
}

/// The client side: DHCP (or the static address) first, then one connection to `peer`
/// that sends `payload`, closes its side and reads the reply until the peer closes.
/// `Some` when the exchange completed; failures are printed as `net=` lines.
#[allow(clippy::too_many_arguments)]
fn connect_loop(
    iface: &mut Interface,
    dev: &mut NetDevice,
    sockets: &mut SocketSet<'_>,
    tcp: smoltcp::iface::SocketHandle,
    dhcp: Option<smoltcp::iface::SocketHandle>,
    mut configured: bool,
    peer: ([u8; 4], u16),
    payload: Payload<'_>,
    now: &mut impl FnMut() -> Instant,
) -> Option<Exchange> {
    let remote = (Ipv4Address::from(peer.0), peer.1);
    let total = payload.len();
    let mut started: Option<Instant> = None;
    let mut sent: u64 = 0;
    let mut crc = crc32fast::Hasher::new();
    let mut closed_tx = false;
    let mut reply = [0u8; REPLY_MAX];
    let mut reply_len = 0;
    let mut last_activity = now();
    let mut retry_at = last_activity;
    loop {
        let t = now();
        iface.poll(t, dev, sockets);
        if let Some(handle) = dhcp {
            match sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
                Some(dhcpv4::Event::Configured(cfg)) => {
                    iface.update_ip_addrs(|addrs| {
                        addrs.clear();
                        let _ = addrs.push(IpCidr::Ipv4(cfg.address));
                    });
                    if let Some(router) = cfg.router {
                        let _ = iface.routes_mut().add_default_ipv4_route(router);
                        kv!("net.gateway", "{router}");
                    }
                    kv!("net.ip", "{}", cfg.address);
                    configured = true;
                }
                Some(dhcpv4::Event::Deconfigured) => configured = false,
                None => {}
            }
        }
        let socket = sockets.get_mut::<tcp::Socket>(tcp);
        if started.is_some() && !closed_tx && sent == 0 && socket.state() == tcp::State::Closed {
            // Refused (the peer is not listening yet): try again shortly.
            started = None;
            retry_at = t + smoltcp::time::Duration::from_millis(200);
        }
        if configured && started.is_none() && t >= retry_at {
            if let Err(e) = socket.connect(iface.context(), remote, LOCAL_PORT) {
                kv!("net", "error: connect: {e}");
                return None;
            }
            kv!("net.connect", "{}:{}", remote.0, remote.1);
            started = Some(t);
            last_activity = t;
        }
        if started.is_some() {
            while socket.may_send() && sent < total {
                let n = socket
                    .send(|buf| {
                        let n = buf.len().min((total - sent) as usize);
                        for (i, b) in buf[..n].iter_mut().enumerate() {
                            *b = payload.at(sent + i as u64);
                        }
                        crc.update(&buf[..n]);
                        (n, n)
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                sent += n as u64;
                last_activity = t;
            }
            if sent == total && !closed_tx && socket.send_queue() == 0 {
                socket.close();
                closed_tx = true;
            }
            while socket.can_recv() {
                last_activity = t;
                let _ = socket.recv(|data| {
                    let room = reply.len() - reply_len;
                    let n = data.len().min(room);
                    reply[reply_len..reply_len + n].copy_from_slice(&data[..n]);
                    reply_len += n;
                    (data.len(), ())
                });
            }
            if closed_tx && matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait) {
                let us = (t - started.unwrap_or(t)).total_micros();
                // TIME-WAIT: our ACK of the peer's FIN may still wait for smoltcp's ACK delay
                // (10 ms). Keep the interface running a little so it goes out; returning at
                // once (and powering off) left the peer in LAST-ACK, resending its FIN until
                // its own timeout.
                let linger = t + smoltcp::time::Duration::from_millis(100);
                loop {
                    let t = now();
                    if t >= linger {
                        break;
                    }
                    iface.poll(t, dev, sockets);
                }
                return Some(Exchange {
                    sent,
                    crc: crc.clone().finalize(),
                    reply,
                    reply_len,
                    us,
                });
            }
            if !closed_tx && socket.state() == tcp::State::Closed && sent > 0 {
                kv!("net", "error: the peer closed the connection early");
                return None;
            }
        }
        if (t - last_activity).total_millis() > 120_000 {
            kv!(
                "net",
                "timeout ({})",
                if started.is_some() {
                    "connection stalled"
                } else {
                    "no DHCP lease"
                }
            );
            return None;
        }
    }
}

fn format_reply(out: &mut [u8; 48], bytes: u64, crc: u32) -> usize {
    struct W<'a>(&'a mut [u8; 48], usize);
    impl core::fmt::Write for W<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.1 + s.len();
            self.0
                .get_mut(self.1..end)
                .ok_or(core::fmt::Error)?
                .copy_from_slice(s.as_bytes());
            self.1 = end;
            Ok(())
        }
    }
    let mut w = W(out, 0);
    let _ = core::fmt::Write::write_fmt(
        &mut w,
        core::format_args!("bytes={bytes} crc32={crc:#010x}\n"),
    );
    w.1
}

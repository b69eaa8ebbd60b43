//! virtio-net through `virtio-drivers` with `smoltcp` on top: DHCP (or `guest.ip=`) for an
//! address, ARP and ICMP echo answered by the stack, then one TCP connection on port
//! [`TCP_PORT`]: everything the peer sends is counted and CRC-32'd until it closes its side, and the guest answers
//! `bytes=N crc32=0x........\n` and closes. Runs with the `net` command-line word.
//!
//! With `net.connect=A.B.C.D:P` the guest is the client instead (VM→VM traffic): it
//! connects to that peer, sends `net.bytes` bytes of [`pattern`] with seed
//! [`CONNECT_SEED`], closes its side, and prints the peer's reply line
//! (`net.connect.reply`), what it sent (`net.connect.tx=N,0x<crc32>`) and how long
//! connect-to-reply took on kvmclock, else the PIT (`net.connect.us`).
//!
//! With `net.http=A.B.C.D:P/PATH` the guest fetches a page instead (a VM reaching a
//! server outside through the node's NAT): one HTTP/1.0 `GET /PATH`, and it prints the
//! response's status line (`net.http.status`), its body's first line (`net.http.body`)
//! and the response's size (`net.http.bytes`).

use crate::cmdline::Options;
use crate::dma::GuestHal;
use crate::doorbell::Doorbell;
use crate::kv;
use crate::kvmclock::KvmClock;
use crate::pit::Stopwatch;
use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
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
/// Entries of each queue (the device's maximum): as many receive buffers posted, and
/// transmit buffers in flight.
const QUEUE: usize = 256;
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

/// TCP receive window and send buffer. 256 KiB each, with window scaling (smoltcp scales
/// by what the receive buffer needs), so neither direction waits for a window while the
/// other end's ACKs cross the device threads: at 64 KiB a stream stalled on every round
/// trip. The window stays below the receive ring (QUEUE full-sized segments), so the
/// peer never sends more than the guest has buffers posted for.
const TCP_BUFFER: usize = 256 << 10;
struct TcpBuffers(UnsafeCell<([u8; TCP_BUFFER], [u8; TCP_BUFFER])>);

// SAFETY: only `run`, on the boot processor, borrows them, once.
unsafe impl Sync for TcpBuffers {}

// Not cleared at entry (see link.ld): smoltcp's ring buffers never read a byte before
// writing it.
#[link_section = ".noinit"]
static TCP: TcpBuffers = TcpBuffers(UnsafeCell::new(([0; TCP_BUFFER], [0; TCP_BUFFER])));

/// Transmit buffers (virtio-net header + frame), one per transmit queue entry.
struct TxBuffers(UnsafeCell<[[u8; BUF]; QUEUE]>);

// SAFETY: only the boot processor's single `NetDevice` uses the buffers.
unsafe impl Sync for TxBuffers {}

// Not cleared at entry (see link.ld): a frame is written before it is sent.
#[link_section = ".noinit"]
static TX: TxBuffers = TxBuffers(UnsafeCell::new([[0; BUF]; QUEUE]));

type Raw = VirtIONetRaw<GuestHal, Doorbell<PciTransport>, QUEUE>;

/// The time base of the stack's loop: kvmclock where the hypervisor has it (RDTSC and a
/// page the hypervisor keeps: no VM exit per reading), else the PIT (three port accesses,
/// each a VM exit, per reading: once per turn of the loop, they were most of its cost).
enum Clock {
    Kvm { clock: KvmClock, start_ns: u64 },
    Pit(Stopwatch),
}

impl Clock {
    /// kvmclock if registered (see [`KvmClock::enable`], called in ring 0 before the loop
    /// runs at CPL 3), else the PIT.
    fn start() -> Clock {
        match KvmClock::enable() {
            Some(clock) => {
                let start_ns = clock.now_ns().0;
                Clock::Kvm { clock, start_ns }
            }
            None => Clock::Pit(Stopwatch::start()),
        }
    }

    fn now(&mut self) -> Instant {
        let us = match self {
            Clock::Kvm { clock, start_ns } => clock.now_ns().0.saturating_sub(*start_ns) / 1000,
            Clock::Pit(watch) => watch.elapsed_us(),
        };
        Instant::from_micros(us as i64)
    }
}

/// The buffer a descriptor token (the index of the chain's head descriptor, below
/// QUEUE) was posted with.
type Slots = [Option<u16>; QUEUE];

/// Frames in flight on the transmit queue: sending does not wait for the device (a
/// synchronous send made every ACK a round trip through the VMM's device thread while
/// the vCPU spun); completed buffers are taken back before a buffer is needed.
struct TxRing {
    bufs: &'static mut [[u8; BUF]; QUEUE],
    /// The buffer and frame length of each token the device has not completed yet.
    pending: [Option<(u16, u16)>; QUEUE],
    /// Buffers the device does not hold.
    free: [u16; QUEUE],
    free_len: usize,
}

impl TxRing {
    /// Takes back every buffer the device has finished with.
    fn reclaim(&mut self, raw: &mut Raw) {
        while let Some(token) = raw.poll_transmit() {
            let Some((slot, len)) = self
                .pending
                .get_mut(usize::from(token))
                .and_then(Option::take)
            else {
                kv!("net.tx_error", "unknown completion {token}");
                return;
            };
            let buf = &self.bufs[usize::from(slot)][..usize::from(len)];
            // SAFETY: `buf` is the buffer `transmit_begin` returned `token` for.
            if let Err(e) = unsafe { raw.transmit_complete(token, buf) } {
                kv!("net.tx_error", "{e}");
            }
            self.free[self.free_len] = slot;
            self.free_len += 1;
        }
    }

    /// A buffer the device does not hold, after taking back completed ones.
    fn free_slot(&mut self, raw: &mut Raw) -> Option<usize> {
        if self.free_len == 0 {
            self.reclaim(raw);
        }
        self.free_len
            .checked_sub(1)
            .map(|top| usize::from(self.free[top]))
    }

    /// Hands `slot`'s first `len` bytes to the device.
    fn send(&mut self, raw: &mut Raw, slot: usize, len: usize) {
        // SAFETY: the buffer stays untouched in `bufs` until `reclaim` completes its token.
        match unsafe { raw.transmit_begin(&self.bufs[slot][..len]) } {
            Ok(token) => {
                self.free_len -= 1;
                // A slot and a frame length are below QUEUE and BUF.
                self.pending[usize::from(token)] = Some((slot as u16, len as u16));
            }
            Err(e) => kv!("net.tx_error", "{e}"),
        }
    }
}

struct NetDevice {
    raw: Raw,
    rx: &'static mut [[u8; BUF]; QUEUE],
    /// Which receive buffer each posted token holds.
    rx_slots: Slots,
    packet: [u8; BUF],
    tx: TxRing,
}

/// Where the device lives: with QUEUE-entry queues it is too big to be moved around on
/// the 64 KiB boot stack.
struct DeviceSlot(UnsafeCell<MaybeUninit<NetDevice>>);

// SAFETY: only `NetDevice::install`, on the boot processor, touches it, once.
unsafe impl Sync for DeviceSlot {}

// Not cleared at entry (see link.ld): written before it is read.
#[link_section = ".noinit"]
static DEVICE: DeviceSlot = DeviceSlot(UnsafeCell::new(MaybeUninit::uninit()));

impl NetDevice {
    /// Initialises the virtio-net function `df` into [`DEVICE`] (once per boot); prints
    /// `virtio.net.0` if that fails. Not inlined: the driver's queues pass through this
    /// frame, which is gone before the stack runs.
    #[inline(never)]
    fn install<C: ConfigurationAccess>(
        root: &mut PciRoot<C>,
        config: &C,
        df: DeviceFunction,
    ) -> Option<&'static mut NetDevice> {
        let transport = match PciTransport::new::<GuestHal, C>(root, df) {
            Ok(t) => t,
            Err(e) => {
                kv!("virtio.net.0", "{df},transport error: {e}");
                return None;
            }
        };
        let Some(transport) = Doorbell::new(transport, config, df) else {
            kv!("virtio.net.0", "{df},transport error: no notify capability");
            return None;
        };
        let raw = match VirtIONetRaw::<GuestHal, _, QUEUE>::new(transport) {
            Ok(r) => r,
            Err(e) => {
                kv!("virtio.net.0", "{df},init error: {e}");
                return None;
            }
        };
        // SAFETY: called once per boot (one NIC is driven); the buffers are static and
        // owned by this device from now on.
        let rx = unsafe { &mut *RX.0.get() };
        // SAFETY: as above, for the transmit buffers.
        let bufs = unsafe { &mut *TX.0.get() };
        // SAFETY: as above, for the device's own slot.
        let slot = unsafe { &mut *DEVICE.0.get() };
        let mut free = [0u16; QUEUE];
        for (i, f) in free.iter_mut().enumerate() {
            *f = i as u16;
        }
        Some(slot.write(NetDevice {
            raw,
            rx,
            rx_slots: [None; QUEUE],
            packet: [0; BUF],
            tx: TxRing {
                bufs,
                pending: [None; QUEUE],
                free,
                free_len: QUEUE,
            },
        }))
    }

    /// Posts every receive buffer.
    fn post_all(&mut self) -> Option<()> {
        (0..QUEUE).try_for_each(|i| self.post(i))
    }

    /// Posts receive buffer `i`.
    fn post(&mut self, i: usize) -> Option<()> {
        // SAFETY: each buffer is static and handed to the device until its completion.
        let token = unsafe { self.raw.receive_begin(&mut self.rx[i]) }.ok()?;
        *self.rx_slots.get_mut(usize::from(token))? = Some(i as u16);
        Some(())
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
        self.ring.send(self.raw, self.slot, hdr + len);
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
        let i = usize::from(self.rx_slots.get_mut(usize::from(token))?.take()?);
        // SAFETY: `rx[i]` is the buffer posted with `token`, which the device just completed.
        let (hdr, len) = unsafe { self.raw.receive_complete(token, &mut self.rx[i]) }.ok()?;
        let len = len.min(BUF - hdr);
        self.packet[..len].copy_from_slice(&self.rx[i][hdr..hdr + len]);
        // Re-post the same static buffer at once: the device keeps a full ring, and with
        // buffers in hand it asks for no kick (see devices/src/virtio/net).
        self.post(i)?;
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
        // TCP_BUFFER window.
        caps.max_burst_size = Some(QUEUE);
        caps
    }
}

/// The stack [`run`] runs on: the driver's 256-entry queues and the stack's state do not
/// fit the 64 KiB boot stack next to everything that called in.
#[repr(align(16))]
struct NetStack(UnsafeCell<[u8; NET_STACK]>);
const NET_STACK: usize = 256 << 10;

// SAFETY: only `run`, on the boot processor, uses it, and never re-entrantly.
unsafe impl Sync for NetStack {}

// Not cleared at entry (see link.ld): a stack is written before it is read.
#[link_section = ".noinit"]
static STACK: NetStack = NetStack(UnsafeCell::new([0; NET_STACK]));

extern "C" {
    fn net_on_stack(entry: extern "C" fn(*mut u8), arg: *mut u8, stack_top: *mut u8);
}

global_asm!(
    r#"
    .text
    /* net_on_stack(entry: %rdi, arg: %rsi, stack_top: %rdx): entry(arg) on that stack. */
net_on_stack:
    push %rbp
    mov %rsp, %rbp
    mov %rdx, %rsp                 /* 16-byte aligned: the call pushes the return address */
    mov %rdi, %rax
    mov %rsi, %rdi
    call *%rax
    mov %rbp, %rsp
    pop %rbp
    ret
"#,
    options(att_syntax)
);

/// Brings the interface up with DHCP and serves one TCP connection. Prints `net.*` keys.
/// Runs on its own stack ([`STACK`]).
/// `config` reads the function's capabilities (see [`Doorbell::new`]).
pub fn run<C: ConfigurationAccess>(
    root: &mut PciRoot<C>,
    config: &C,
    df: DeviceFunction,
    options: &Options,
    cidata: Option<&crate::cidata::NetworkConfig>,
) {
    let mut call = || serve(root, config, df, options, cidata);
    let mut dynamic: &mut dyn FnMut() = &mut call;

    extern "C" fn trampoline(arg: *mut u8) {
        // SAFETY: `arg` is `&mut dynamic` below, alive for the whole `net_on_stack` call.
        let f = unsafe { &mut *arg.cast::<&mut dyn FnMut()>() };
        f();
    }

    let top = STACK.0.get().cast::<u8>().wrapping_add(NET_STACK);
    // SAFETY: `net_on_stack` calls `trampoline` with %rsp at the top of STACK, which
    // nothing else uses (boot processor, not re-entered), and restores the caller's
    // stack pointer before it returns; callee-saved registers are preserved by the call.
    unsafe {
        net_on_stack(
            trampoline,
            core::ptr::addr_of_mut!(dynamic).cast::<u8>(),
            top,
        )
    };
}

/// [`run`], on whatever stack it is called.
fn serve<C: ConfigurationAccess>(
    root: &mut PciRoot<C>,
    config: &C,
    df: DeviceFunction,
    options: &Options,
    cidata: Option<&crate::cidata::NetworkConfig>,
) {
    let Some(dev) = NetDevice::install(root, config, df) else {
        return;
    };
    let mac = EthernetAddress(dev.raw.mac_address());
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
    if dev.post_all().is_none() {
        kv!("net", "error: could not post receive buffers");
        return;
    }
    let mut clock = Clock::start();
    let mut now = || clock.now();
    let mut iface = Interface::new(
        Config::new(HardwareAddress::Ethernet(mac)),
        &mut *dev,
        now(),
    );
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
            &mut *dev,
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
            &mut *dev,
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
        iface.poll(t, &mut *dev, &mut sockets);
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
    /// Microseconds from connect to the peer's close (kvmclock, else the PIT).
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

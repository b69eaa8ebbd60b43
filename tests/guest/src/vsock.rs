//! virtio-vsock through `virtio-drivers`' connection manager, both directions, with the
//! `vsock` command-line word. Guest to host: connect to CID 2 port [`HOST_PORT`], send
//! [`GREETING`] and print what comes back (`vsock.out`). Host to guest: listen on
//! [`GUEST_PORT`] (`vsock.listen`), echo everything one connection sends until the peer shuts
//! it down, and print what was echoed (`vsock.in`).

use crate::bootinfo::Escaped;
use crate::dma::GuestHal;
use crate::kv;
use crate::pit::Stopwatch;
use virtio_drivers::device::socket::{
    VirtIOSocket, VsockAddr, VsockConnectionManager, VsockEventType,
};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::PciTransport;

/// The host port the guest connects to (the VMM forwards it to `<socket>_1024`).
pub const HOST_PORT: u32 = 1024;
/// The guest port a host `CONNECT 1025` reaches.
pub const GUEST_PORT: u32 = 1025;
/// What the guest sends to the host.
pub const GREETING: &[u8] = b"hello-from-guest";
const LOCAL_PORT: u32 = 50_000;
const HOST_CID: u64 = 2;
/// How long each direction may take, in microseconds.
const TIMEOUT_US: u64 = 60_000_000;

type Manager = VsockConnectionManager<GuestHal, PciTransport>;

/// Runs both directions on the first vsock device; prints `virtio.vsock.0` and `vsock.*`.
pub fn run<C: ConfigurationAccess>(root: &mut PciRoot<C>, df: DeviceFunction) {
    let socket = match PciTransport::new::<GuestHal, C>(root, df)
        .map_err(|_| "transport error")
        .and_then(|t| VirtIOSocket::<GuestHal, _>::new(t).map_err(|_| "init error"))
    {
        Ok(s) => s,
        Err(e) => {
            kv!("virtio.vsock.0", "{df},{e}");
            return;
        }
    };
    let mut vsock = Manager::new(socket);
    kv!("virtio.vsock.0", "{df},cid={}", vsock.guest_cid());
    match to_host(&mut vsock) {
        Ok((buf, n)) => kv!("vsock.out", "{}", Escaped(&buf[..n])),
        Err(e) => kv!("vsock.out", "error: {e}"),
    }
    vsock.listen(GUEST_PORT);
    kv!("vsock.listen", "{GUEST_PORT}");
    match from_host(&mut vsock) {
        Ok((buf, n)) => kv!("vsock.in", "{}", Escaped(&buf[..n])),
        Err(e) => kv!("vsock.in", "error: {e}"),
    }
}

/// Polls for the next event, or fails after the timeout.
fn next_event(
    vsock: &mut Manager,
    clock: &mut Stopwatch,
) -> Result<(VsockAddr, VsockAddr, VsockEventType), &'static str> {
    loop {
        match vsock.poll() {
            Ok(Some(e)) => return Ok((e.source, e.destination, e.event_type)),
            Ok(None) => {}
            Err(_) => return Err("poll error"),
        }
        if clock.elapsed_us() > TIMEOUT_US {
            return Err("timeout");
        }
    }
}

fn to_host(vsock: &mut Manager) -> Result<([u8; 64], usize), &'static str> {
    let host = VsockAddr {
        cid: HOST_CID,
        port: HOST_PORT,
    };
    let mut clock = Stopwatch::start();
    vsock
        .connect(host, LOCAL_PORT)
        .map_err(|_| "connect error")?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    loop {
        let (source, _, event) = next_event(vsock, &mut clock)?;
        if source != host {
            continue;
        }
        match event {
            VsockEventType::Connected => vsock
                .send(host, LOCAL_PORT, GREETING)
                .map_err(|_| "send error")?,
            VsockEventType::Received { .. } => {
                n += vsock
                    .recv(host, LOCAL_PORT, &mut buf[n..])
                    .map_err(|_| "recv error")?;
                if n >= GREETING.len() || n == buf.len() {
                    let _ = vsock.shutdown(host, LOCAL_PORT);
                    return Ok((buf, n));
                }
            }
            VsockEventType::Disconnected { .. } => return Err("refused or reset"),
            _ => {}
        }
    }
}

fn from_host(vsock: &mut Manager) -> Result<([u8; 64], usize), &'static str> {
    let mut clock = Stopwatch::start();
    let mut echoed = [0u8; 64];
    let mut total = 0;
    let mut chunk = [0u8; 64];
    loop {
        let (source, destination, event) = next_event(vsock, &mut clock)?;
        if destination.port != GUEST_PORT {
            continue;
        }
        match event {
            VsockEventType::Received { .. } => {
                let n = vsock
                    .recv(source, GUEST_PORT, &mut chunk)
                    .map_err(|_| "recv error")?;
                vsock
                    .send(source, GUEST_PORT, &chunk[..n])
                    .map_err(|_| "send error")?;
                let keep = n.min(echoed.len() - total);
                echoed[total..total + keep].copy_from_slice(&chunk[..keep]);
                total += keep;
            }
            VsockEventType::Disconnected { .. } => return Ok((echoed, total)),
            _ => {}
        }
    }
}

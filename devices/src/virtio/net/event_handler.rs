//! Moving frames between the rings and the backend, on the device thread.
//!
//! Frames go straight between guest memory and the backend with `readv`/`writev` over the
//! descriptor buffers ([`GuestIoVecs`]): no copy and no allocation per packet. The
//! virtio-net header is the tap's vnet header, passed through unchanged.
//!
//! The backend fd is meant to be polled edge-triggered: receive drains it until it would
//! block or the guest runs out of buffers; in the latter case the frames wait in the
//! backend until the driver adds buffers and kicks the receive queue. While the device
//! still holds receive buffers the driver's kicks stay suppressed (vhost-net's rule): the
//! backend's readiness, not the driver's refill, is what the device waits for, and each
//! kick is a VM exit.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use vm_memory::GuestAddressSpace;

use super::device::{NetDevice, RX_QUEUE, TX_QUEUE};
use super::tap::VNET_HDR_LEN;
use crate::virtio::active_queues::ChainOutcome;
use crate::virtio::iovec::GuestIoVecs;

/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS_OFFSET: u64 = 10;

/// Whether `fd` has input waiting (without consuming it).
fn readable(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout never blocks.
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
}

impl<M> NetDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    /// Moves frames from the backend into the guest's receive buffers.
    pub(super) fn process_rx(&mut self) {
        let fd = self.backend.as_raw_fd();
        let Some(active) = self.core.state.active_mut() else {
            return;
        };
        let mut frame = GuestIoVecs::new();
        let drained = active.drain(RX_QUEUE, |mem, chain| {
            let head = chain.head_index();
            let outcome = if frame.gather(mem, chain, true) && frame.len() >= VNET_HDR_LEN as u64 {
                match frame.read_from(fd) {
                    Ok(n) => {
                        // No VIRTIO_NET_F_MRG_RXBUF: one chain per frame.
                        frame.write_prefix(mem, NUM_BUFFERS_OFFSET, &1u16.to_le_bytes());
                        self.metrics.rx_packets.inc();
                        self.metrics.rx_bytes.add(n as u64);
                        // A frame fits in the chain, whose length is below 4 GiB.
                        ChainOutcome::Used(n as u32)
                    }
                    // Nothing waiting: the buffers go back to the ring for the next frame,
                    // and the driver need not kick when it adds more (the backend's
                    // readiness wakes the device).
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => ChainOutcome::Idle,
                    Err(e) => {
                        self.metrics.rx_errors.inc();
                        if let Some(suppressed) = self.core.log.allow() {
                            tracing::warn!(nic = %self.id, error = %e, suppressed, "virtio-net backend read failed");
                        }
                        ChainOutcome::Stop
                    }
                }
            } else {
                self.metrics.rx_invalid.inc();
                if let Some(suppressed) = self.core.log.allow() {
                    tracing::warn!(nic = %self.id, head, suppressed, "Returning malformed virtio-net receive chain empty");
                }
                ChainOutcome::Used(0)
            };
            frame.clear();
            outcome
        });
        if drained.corrupted.is_none() && drained.starved && readable(fd) {
            self.metrics.rx_no_buffers.inc();
        }
        active.settle(RX_QUEUE, drained, &*self.metrics, &mut self.core.log);
    }

    /// Sends every frame the guest made available on the transmit queue.
    pub(super) fn process_tx(&mut self) {
        let fd = self.backend.as_raw_fd();
        let Some(active) = self.core.state.active_mut() else {
            return;
        };
        let mut frame = GuestIoVecs::new();
        let drained = active.drain(TX_QUEUE, |mem, chain| {
            let head = chain.head_index();
            if frame.gather(mem, chain, false) && frame.len() >= VNET_HDR_LEN as u64 {
                match frame.write_to(fd) {
                    Ok(n) => {
                        self.metrics.tx_packets.inc();
                        self.metrics.tx_bytes.add(n as u64);
                    }
                    Err(e) => {
                        // Full backend or a header the kernel refuses: the frame is
                        // dropped, as a congested or picky link would.
                        self.metrics.tx_errors.inc();
                        if let Some(suppressed) = self.core.log.allow() {
                            tracing::debug!(nic = %self.id, error = %e, suppressed, "virtio-net frame dropped");
                        }
                    }
                }
            } else {
                self.metrics.tx_invalid.inc();
                if let Some(suppressed) = self.core.log.allow() {
                    tracing::warn!(nic = %self.id, head, suppressed, "Dropping malformed virtio-net transmit chain");
                }
            }
            frame.clear();
            ChainOutcome::Used(0)
        });
        active.settle(TX_QUEUE, drained, &*self.metrics, &mut self.core.log);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;
    use std::sync::Arc;

    use super::*;
    use crate::virtio::net::{NetBackend, NetConfig, Tap};
    use crate::virtio::test_driver::{activate, RecordingInterrupt, TestDriver};
    use crate::virtio::VirtioDevice;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    type Mem = Arc<GuestMemoryMmap>;
    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];

    struct Harness {
        net: NetDevice<Mem>,
        rx: TestDriver,
        tx: TestDriver,
        interrupt: Arc<RecordingInterrupt>,
        mem: Mem,
    }

    fn harness(backend: NetBackend) -> Harness {
        harness_with(backend, false)
    }

    fn harness_with(backend: NetBackend, event_idx: bool) -> Harness {
        let mut net = NetDevice::new(NetConfig {
            id: "test".into(),
            mac: MAC,
            backend,
        });
        let setup = activate(&mut net, 2, 16, event_idx);
        let Ok([rx, tx]) = <[TestDriver; 2]>::try_from(setup.queues) else {
            unreachable!("two queues")
        };
        Harness {
            net,
            rx,
            tx,
            interrupt: setup.interrupt,
            mem: setup.mem,
        }
    }

    fn socket_harness() -> (Harness, UnixDatagram) {
        socket_harness_with(false)
    }

    fn socket_harness_with(event_idx: bool) -> (Harness, UnixDatagram) {
        let (ours, peer) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.set_nonblocking(true).unwrap();
        (
            harness_with(NetBackend::Datagram(OwnedFd::from(ours)), event_idx),
            peer,
        )
    }

    /// An Ethernet frame of an experimental ethertype, `len` bytes in all.
    fn ethernet(len: usize, seed: u8) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&MAC);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.extend((0..len - 14).map(|i| (i as u8).wrapping_add(seed)));
        f
    }

    #[test]
    fn transmit_passes_header_and_frame_through() {
        let (mut h, peer) = socket_harness();
        let frame = ethernet(100, 1);
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[0] = 1; // NEEDS_CSUM, passed through untouched
        h.mem.write_slice(&hdr, GuestAddress(0x10_0000)).unwrap();
        h.mem.write_slice(&frame, GuestAddress(0x11_0000)).unwrap();
        let head =
            h.tx.add_chain(&[(0x10_0000, 12, false), (0x11_0000, 100, false)]);
        h.net.process_queue(TX_QUEUE);
        let mut buf = [0u8; 2048];
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..12], &hdr);
        assert_eq!(&buf[12..n], &frame[..]);
        assert_eq!(h.tx.used(0), (u32::from(head), 0));
        assert_eq!(*h.interrupt.queues.lock().unwrap(), vec![1]);
        assert_eq!(h.net.metrics().tx_bytes.get(), 112);
    }

    #[test]
    fn receive_fills_guest_buffers_and_sets_num_buffers() {
        let (mut h, peer) = socket_harness();
        let frame = ethernet(60, 2);
        let mut datagram = vec![0u8; VNET_HDR_LEN];
        datagram[1] = 0x7; // gso_type, passed through
        datagram.extend_from_slice(&frame);
        peer.send(&datagram).unwrap();
        // Header split over two buffers, as a hostile driver may do.
        let head =
            h.rx.add_chain(&[(0x20_0000, 11, true), (0x21_0000, 2048, true)]);
        h.net.process_event(0);
        assert_eq!(h.rx.used(0), (u32::from(head), 72));
        let mut got = [0u8; 72];
        h.mem
            .read_slice(&mut got[..11], GuestAddress(0x20_0000))
            .unwrap();
        h.mem
            .read_slice(&mut got[11..], GuestAddress(0x21_0000))
            .unwrap();
        assert_eq!(got[1], 0x7);
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1);
        assert_eq!(&got[12..], &frame[..]);
        assert_eq!(*h.interrupt.queues.lock().unwrap(), vec![0]);
    }

    #[test]
    fn frames_wait_for_receive_buffers() {
        let (mut h, peer) = socket_harness();
        for seed in [1, 2] {
            let mut d = vec![0u8; VNET_HDR_LEN];
            d.extend(ethernet(64, seed));
            peer.send(&d).unwrap();
        }
        h.net.process_event(0);
        assert_eq!(h.rx.used_idx(), 0);
        assert_eq!(h.net.metrics().rx_no_buffers.get(), 1);
        h.rx.add_chain(&[(0x20_0000, 1526, true)]);
        h.net.process_queue(RX_QUEUE);
        assert_eq!(h.rx.used_idx(), 1);
        h.rx.add_chain(&[(0x30_0000, 1526, true)]);
        h.rx.add_chain(&[(0x30_1000, 1526, true)]);
        h.net.process_queue(RX_QUEUE);
        assert_eq!(h.rx.used_idx(), 2);
        assert_eq!(seed_at(&h, 0x30_0000), 2);
    }

    /// The seed of the [`ethernet`] frame the device delivered into the buffer at `addr`
    /// (its first byte after the virtio-net and Ethernet headers).
    fn seed_at(h: &Harness, addr: u64) -> u8 {
        let mut b = [0u8; 1];
        h.mem
            .read_slice(&mut b, GuestAddress(addr + 12 + 14))
            .unwrap();
        b[0]
    }

    #[test]
    fn the_driver_kicks_receive_only_after_the_device_ran_out_of_buffers() {
        for event_idx in [false, true] {
            let (mut h, peer) = socket_harness_with(event_idx);
            let send = |seed| {
                let mut d = vec![0u8; VNET_HDR_LEN];
                d.extend(ethernet(64, seed));
                peer.send(&d).unwrap();
            };
            // Buffers but no frames: refills need no kick.
            for i in 0..4 {
                h.rx.add_chain(&[(0x20_0000 + i * 0x1000, 1526, true)]);
            }
            h.net.process_queue(RX_QUEUE);
            assert_eq!(h.rx.used_idx(), 0);
            let old = h.rx.avail_idx();
            h.rx.add_chain(&[(0x24_0000, 1526, true)]);
            assert!(!h.rx.kick_needed(old, event_idx), "event_idx {event_idx}");
            // Frames as they arrive, buffers left over: still none.
            send(1);
            h.net.process_event(0);
            assert_eq!(h.rx.used_idx(), 1);
            let old = h.rx.avail_idx();
            h.rx.add_chain(&[(0x25_0000, 1526, true)]);
            assert!(!h.rx.kick_needed(old, event_idx), "event_idx {event_idx}");
            // More frames than buffers: the device asks for the next refill, which
            // delivers the frame that waited.
            for seed in 2..8 {
                send(seed);
            }
            h.net.process_event(0);
            assert_eq!(h.rx.used_idx(), 6);
            assert_eq!(h.net.metrics().rx_no_buffers.get(), 1);
            let old = h.rx.avail_idx();
            h.rx.add_chain(&[(0x26_0000, 1526, true)]);
            assert!(h.rx.kick_needed(old, event_idx), "event_idx {event_idx}");
            h.net.process_queue(RX_QUEUE);
            assert_eq!(h.rx.used_idx(), 7);
            assert_eq!(seed_at(&h, 0x26_0000), 7);
            assert_eq!(h.net.metrics().rx_kicks.get(), 2);
        }
    }

    #[test]
    fn malformed_chains_are_returned_not_sent() {
        let (mut h, peer) = socket_harness();
        // A transmit chain with a device-writable buffer, one shorter than the header,
        // and one outside guest memory.
        h.tx.add_chain(&[(0x10_0000, 12, false), (0x11_0000, 100, true)]);
        h.tx.add_chain(&[(0x10_0000, 8, false)]);
        h.tx.add_chain(&[(0x3f_fff0, 64, false)]);
        h.net.process_queue(TX_QUEUE);
        assert_eq!(h.tx.used_idx(), 3);
        let mut buf = [0u8; 64];
        assert!(peer.recv(&mut buf).is_err());
        assert_eq!(h.net.metrics().tx_invalid.get(), 3);
        // A receive chain with a device-readable buffer is returned empty; the frame
        // waits for a good one.
        let mut d = vec![0u8; VNET_HDR_LEN];
        d.extend(ethernet(64, 3));
        peer.send(&d).unwrap();
        h.rx.add_chain(&[(0x20_0000, 1526, false)]);
        h.rx.add_chain(&[(0x21_0000, 1526, true)]);
        h.net.process_event(0);
        assert_eq!(h.rx.used(0).1, 0);
        assert_eq!(h.rx.used(1).1, 76);
        assert!(!h.interrupt.needs_reset());
    }

    #[test]
    fn corrupted_ring_needs_reset() {
        let (mut h, _peer) = socket_harness();
        h.tx.publish(99);
        h.net.process_queue(TX_QUEUE);
        assert!(h.interrupt.needs_reset());
        assert_eq!(h.net.metrics().needs_reset.get(), 1);
    }

    #[test]
    fn link_status_changes_raise_a_config_interrupt() {
        let (mut h, _peer) = socket_harness();
        let mut status = [0u8; 2];
        h.net.read_config(6, &mut status);
        assert_eq!(u16::from_le_bytes(status), 1);
        h.net.set_link_up(false);
        h.net.read_config(6, &mut status);
        assert_eq!(u16::from_le_bytes(status), 0);
        assert_eq!(*h.interrupt.config.lock().unwrap(), 1);
        let mut past = [0xaau8; 4];
        h.net.read_config(8, &mut past);
        assert_eq!(past, [0; 4]);
    }

    /// Runs `f` on a thread in a network namespace of its own, which disappears with it.
    fn in_new_netns(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(move || {
            // SAFETY: unshare only changes this thread's namespace membership.
            let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                ret,
                0,
                "unshare(CLONE_NEWNET): {}",
                io::Error::last_os_error()
            );
            f();
        })
        .join()
        .unwrap();
    }

    /// `struct ifreq` with flags, for SIOCGIFFLAGS/SIOCSIFFLAGS.
    #[repr(C)]
    struct IfFlags {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }

    fn set_up(name: &str) {
        // SAFETY: plain socket creation.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(sock >= 0);
        let mut req = IfFlags {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: SIOC[GS]IFFLAGS read/write a struct ifreq, which `req` is laid out as.
        unsafe {
            assert_eq!(
                libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut req as *mut IfFlags),
                0
            );
            req.flags |= libc::IFF_UP as libc::c_short;
            assert_eq!(
                libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &mut req as *mut IfFlags),
                0
            );
            libc::close(sock);
        }
    }

    /// A packet socket on interface `name`: what the host stack sees of the tap.
    fn packet_socket(name: &str) -> OwnedFd {
        use std::os::fd::FromRawFd;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket creation; the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(proto),
            )
        };
        assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
        // SAFETY: `fd` is a fresh socket nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let cname = std::ffi::CString::new(name).unwrap();
        // SAFETY: a valid NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        assert_ne!(index, 0);
        // SAFETY: sockaddr_ll is plain data; zero is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = index as i32;
        // SAFETY: binding to a sockaddr_ll of the right size.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(ret, 0);
        fd
    }

    /// Polls `fd` for input for at most `ms` milliseconds.
    fn wait_readable(fd: RawFd, ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
    }

    #[test]
    fn tap_in_a_private_namespace() {
        in_new_netns(|| {
            let tap = Tap::open("mvtest%d").unwrap();
            let name = tap.name().to_string();
            assert!(name.starts_with("mvtest"));
            tap.set_offload(crate::virtio::net::tap::TUN_F_CSUM)
                .unwrap();
            // No IPv6 chatter on the new link (best effort: the frames are filtered anyway).
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
            set_up(&name);
            let host = packet_socket(&name);
            let mut h = harness(NetBackend::Tap(tap));

            // Guest -> host.
            let frame = ethernet(80, 9);
            h.mem
                .write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(0x10_0000))
                .unwrap();
            h.mem.write_slice(&frame, GuestAddress(0x10_000c)).unwrap();
            h.tx.add_chain(&[(0x10_0000, 12 + 80, false)]);
            h.net.process_queue(TX_QUEUE);
            assert_eq!(h.net.metrics().tx_packets.get(), 1);
            let mut buf = [0u8; 2048];
            let mut seen = false;
            for _ in 0..20 {
                if !wait_readable(host.as_raw_fd(), 2000) {
                    break;
                }
                // SAFETY: receiving into a buffer we own.
                let n =
                    unsafe { libc::recv(host.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 14 && buf[12..14] == [0x88, 0xb5] {
                    assert_eq!(&buf[..n as usize], &frame[..]);
                    seen = true;
                    break;
                }
            }
            assert!(seen, "the host never saw the guest's frame");

            // Host -> guest.
            let reply = ethernet(90, 4);
            // SAFETY: sending a buffer we own on the bound packet socket.
            let n = unsafe { libc::send(host.as_raw_fd(), reply.as_ptr().cast(), reply.len(), 0) };
            assert_eq!(n, reply.len() as isize);
            let mut found = false;
            for i in 0..16u64 {
                h.rx.add_chain(&[(0x20_0000 + i * 0x1000, 2048, true)]);
            }
            for _ in 0..20 {
                let fd = h.net.event_fds()[0];
                if !wait_readable(fd, 2000) {
                    break;
                }
                h.net.process_event(0);
                for n in 0..h.rx.used_idx() {
                    let (id, len) = h.rx.used(n);
                    let mut got = vec![0u8; len as usize];
                    h.mem
                        .read_slice(&mut got, GuestAddress(0x20_0000 + u64::from(id) * 0x1000))
                        .unwrap();
                    if got.len() > 26 && got[24..26] == [0x88, 0xb5] {
                        assert_eq!(&got[12..], &reply[..]);
                        found = true;
                    }
                }
                if found {
                    break;
                }
            }
            assert!(found, "the guest never got the host's frame");
        });
    }
}

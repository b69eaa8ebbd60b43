//! Moving vsock packets between the rings and the muxer, on the device thread.
//!
//! Transmit chains are copied once into the device's packet buffer (vsock is a control
//! channel, not a data path), validated, and handed to the muxer; receive chains get the
//! muxer's control packets first, then data from readable connections within the guest's
//! credit.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemory, Permissions};

use super::device::{VsockDevice, MAX_PAYLOAD, RX_QUEUE, TX_QUEUE};
use super::muxer::RxPacket;
use super::packet::{Header, HDR_LEN};
use crate::virtio::active_queues::ChainOutcome;

/// Most buffers of one receive chain.
const MAX_RX_BUFFERS: usize = 16;

/// Copies a device-readable chain into `buf`; the length, or None if malformed (writable
/// buffer, outside guest memory, longer than `buf`, no end).
fn read_chain<G: GuestMemory + ?Sized>(
    mem: &G,
    chain: impl Iterator<Item = Descriptor>,
    buf: &mut [u8],
) -> Option<usize> {
    let mut len = 0usize;
    let mut last_has_next = true;
    for desc in chain {
        last_has_next = desc.has_next();
        let n = desc.len() as usize;
        if desc.is_write_only() || len + n > buf.len() {
            return None;
        }
        mem.read_slice(&mut buf[len..len + n], desc.addr()).ok()?;
        len += n;
    }
    (!last_has_next).then_some(len)
}

/// The buffers of a receive chain: (address, length) pairs, how many, total length.
type RxBuffers = ([(GuestAddress, u32); MAX_RX_BUFFERS], usize, usize);

/// A device-writable chain's buffers, checked against guest memory.
fn writable_buffers<G: GuestMemory + ?Sized>(
    mem: &G,
    chain: impl Iterator<Item = Descriptor>,
) -> Option<RxBuffers> {
    let mut bufs = [(GuestAddress(0), 0u32); MAX_RX_BUFFERS];
    let mut count = 0;
    let mut total = 0usize;
    let mut last_has_next = true;
    for desc in chain {
        last_has_next = desc.has_next();
        if !desc.is_write_only()
            || count == MAX_RX_BUFFERS
            || !mem.check_range(desc.addr(), desc.len() as usize, Permissions::Write)
        {
            return None;
        }
        bufs[count] = (desc.addr(), desc.len());
        count += 1;
        total += desc.len() as usize;
    }
    (!last_has_next).then_some((bufs, count, total))
}

/// Writes `data` across `bufs`.
fn write_buffers<G: GuestMemory + ?Sized>(mem: &G, bufs: &[(GuestAddress, u32)], data: &[u8]) {
    let mut done = 0;
    for (addr, len) in bufs {
        if done == data.len() {
            break;
        }
        let n = (data.len() - done).min(*len as usize);
        // `writable_buffers` checked the ranges.
        let _ = mem.write_slice(&data[done..done + n], *addr);
        done += n;
    }
}

impl<M> VsockDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    /// Packets from the guest.
    pub(super) fn process_tx(&mut self) {
        let Some(active) = self.core.state.active_mut() else {
            return;
        };
        let drained = active.drain(TX_QUEUE, |mem, chain| {
            let head = chain.head_index();
            let packet = read_chain(mem, chain, &mut self.scratch).and_then(|len| {
                let mut raw = [0u8; HDR_LEN];
                raw.copy_from_slice(self.scratch.get(..HDR_LEN)?);
                let hdr = Header::from_bytes(&raw);
                let payload = hdr.len as usize;
                (len >= HDR_LEN && payload <= len - HDR_LEN && payload <= MAX_PAYLOAD)
                    .then_some((hdr, payload))
            });
            match packet {
                Some((hdr, payload)) => {
                    self.metrics.tx_packets.inc();
                    self.metrics.tx_bytes.add(payload as u64);
                    self.muxer
                        .handle_guest_packet(&hdr, &self.scratch[HDR_LEN..HDR_LEN + payload]);
                }
                None => {
                    self.metrics.invalid_packets.inc();
                    if let Some(suppressed) = self.core.log.allow() {
                        tracing::warn!(head, suppressed, "Dropping malformed vsock packet");
                    }
                }
            }
            ChainOutcome::Used(0)
        });
        active.settle(TX_QUEUE, drained, &*self.metrics, &mut self.core.log);
        // Replies (RESPONSE, RST, credit) go out at once (nothing happens on a device the
        // pass found broken).
        self.process_rx();
    }

    /// Packets to the guest: the muxer's next packet goes into the next receive chain, as
    /// long as there are both.
    pub(super) fn process_rx(&mut self) {
        let Some(active) = self.core.state.active_mut() else {
            return;
        };
        let drained = active.drain(RX_QUEUE, |mem, chain| {
            let Some(next) = self.muxer.next_rx() else {
                // Nothing to send: the chain stays with the driver.
                return ChainOutcome::Stop;
            };
            let len = match writable_buffers(mem, chain) {
                // A data packet needs room for a byte of payload at least.
                Some((bufs, count, total))
                    if total > HDR_LEN
                        || (total == HDR_LEN && matches!(next, RxPacket::Control(_))) =>
                {
                    match next {
                        RxPacket::Control(h) => {
                            write_buffers(mem, &bufs[..count], &h.to_bytes());
                            HDR_LEN
                        }
                        RxPacket::Data(key) => {
                            let room = (total - HDR_LEN).min(MAX_PAYLOAD);
                            let (header, body) = self.scratch.split_at_mut(HDR_LEN);
                            match self.muxer.read_data(key, &mut body[..room]) {
                                Some((h, n)) => {
                                    header.copy_from_slice(&h.to_bytes());
                                    write_buffers(
                                        mem,
                                        &bufs[..count],
                                        &self.scratch[..HDR_LEN + n],
                                    );
                                    self.metrics.rx_bytes.add(n as u64);
                                    HDR_LEN + n
                                }
                                // Nothing to send from this connection after all: the chain
                                // goes to the next packet.
                                None => return ChainOutcome::Retry,
                            }
                        }
                    }
                }
                _ => {
                    // A malformed receive chain: returned empty; the packet waits.
                    if let RxPacket::Control(h) = next {
                        self.muxer.unread_control(h);
                    }
                    self.metrics.invalid_packets.inc();
                    0
                }
            };
            if len > 0 {
                self.metrics.rx_packets.inc();
            }
            // A packet is at most HDR_LEN + MAX_PAYLOAD bytes.
            ChainOutcome::Used(len as u32)
        });
        active.settle(RX_QUEUE, drained, &*self.metrics, &mut self.core.log);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::Arc;

    use vm_memory::GuestMemoryMmap;
    use vmm_sys_util::tempdir::TempDir;

    use super::*;
    use crate::virtio::test_driver::{activate, RecordingInterrupt, TestDriver};
    use crate::virtio::vsock::connection::BUF_ALLOC;
    use crate::virtio::vsock::packet::*;
    use crate::virtio::vsock::{VsockConfig, VsockDevice};
    use crate::virtio::VirtioDevice;

    type Mem = Arc<GuestMemoryMmap>;
    const CID: u64 = 3;

    struct Harness {
        vsock: VsockDevice<Mem>,
        rx: TestDriver,
        tx: TestDriver,
        mem: Mem,
        interrupt: Arc<RecordingInterrupt>,
        socket: std::path::PathBuf,
        seen: u16,
        rx_slot: u64,
        _dir: TempDir,
    }

    fn harness() -> Harness {
        let dir = TempDir::new_with_prefix("/tmp/vsock-test").unwrap();
        let socket = dir.as_path().join("vm.sock");
        let mut vsock = VsockDevice::new(VsockConfig {
            cid: CID,
            socket: socket.clone(),
        })
        .unwrap();
        let setup = activate(&mut vsock, 3, 64, false);
        let Ok([rx, tx, _event]) = <[TestDriver; 3]>::try_from(setup.queues) else {
            unreachable!("three queues")
        };
        Harness {
            vsock,
            rx,
            tx,
            mem: setup.mem,
            interrupt: setup.interrupt,
            socket,
            seen: 0,
            rx_slot: 0,
            _dir: dir,
        }
    }

    fn header(op: u16, src_port: u32, dst_port: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            type_: TYPE_STREAM,
            op,
            buf_alloc: 65536,
            ..Header::default()
        }
    }

    impl Harness {
        fn send(&mut self, mut hdr: Header, payload: &[u8]) {
            hdr.len = payload.len() as u32;
            self.mem
                .write_slice(&hdr.to_bytes(), GuestAddress(0x10_0000))
                .unwrap();
            self.mem
                .write_slice(payload, GuestAddress(0x10_0000 + HDR_LEN as u64))
                .unwrap();
            // Header and payload in separate buffers, as Linux sends them.
            self.tx.add_chain(&[
                (0x10_0000, HDR_LEN as u32, false),
                (0x10_0000 + HDR_LEN as u64, payload.len() as u32, false),
            ]);
            self.vsock.process_queue(TX_QUEUE);
        }

        fn give_rx(&mut self, n: u64) {
            for _ in 0..n {
                let addr = 0x20_0000 + (self.rx_slot % 32) * 0x1000;
                self.rx_slot += 1;
                self.rx
                    .add_chain(&[(addr, HDR_LEN as u32, true), (addr + 0x100, 0x800, true)]);
            }
            self.vsock.process_queue(RX_QUEUE);
        }

        fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
            let mut out = Vec::new();
            while self.seen != self.rx.used_idx() {
                let (id, len) = self.rx.used(self.seen);
                self.seen += 1;
                // Chains are two descriptors: head ids are even, one chain per 2 slots.
                let chain = u64::from(id) / 2;
                let addr = 0x20_0000 + (chain % 32) * 0x1000;
                let mut raw = [0u8; HDR_LEN];
                self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
                let hdr = Header::from_bytes(&raw);
                let mut payload = vec![0u8; len as usize - HDR_LEN];
                self.mem
                    .read_slice(&mut payload, GuestAddress(addr + 0x100))
                    .unwrap();
                out.push((hdr, payload));
            }
            out
        }

        fn host_events(&mut self) {
            let fd = self.vsock.event_fds()[0];
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; bounded wait.
            unsafe { libc::poll(&mut pfd, 1, 5000) };
            self.vsock.process_event(0);
        }

        /// A host program connects to guest port `port`, which accepts: the host's
        /// stream and the host port of the connection.
        fn host_connect(&mut self, port: u32) -> (UnixStream, u32) {
            let mut host = UnixStream::connect(&self.socket).unwrap();
            host.write_all(format!("CONNECT {port}\n").as_bytes())
                .unwrap();
            self.give_rx(8);
            self.host_events();
            let got = self.received();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].0.op, OP_REQUEST);
            let local = got[0].0.src_port;
            self.send(header(OP_RESPONSE, port, local), &[]);
            let line = format!("OK {local}\n");
            let mut buf = vec![0u8; line.len()];
            host.read_exact(&mut buf).unwrap();
            assert_eq!(buf, line.as_bytes());
            (host, local)
        }

        /// The guest connects from `src_port` to host port `port`, where a host program
        /// listens: the host program's stream.
        fn guest_connect(&mut self, src_port: u32, port: u32) -> UnixStream {
            let mut target = self.socket.clone().into_os_string();
            target.push(format!("_{port}"));
            let listener = UnixListener::bind(&target).unwrap();
            self.give_rx(8);
            self.send(header(OP_REQUEST, src_port, port), &[]);
            let (host, _) = listener.accept().unwrap();
            assert_eq!(self.received()[0].0.op, OP_RESPONSE);
            host
        }

        /// The ops of what the guest received.
        fn received_ops(&mut self) -> Vec<u16> {
            self.received().iter().map(|(p, _)| p.op).collect()
        }
    }

    /// Reads `want` bytes from the host end of a connection whose guest data the device
    /// still holds: whatever the socket has, then device events, until all are there.
    fn drain_host(h: &mut Harness, host: &mut UnixStream, want: usize) -> Vec<u8> {
        host.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut idle = 0;
        while got.len() < want {
            match host.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    idle = 0;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    idle += 1;
                    assert!(idle < 100, "the device stopped writing after {}", got.len());
                    h.host_events();
                }
                Err(e) => panic!("{e}"),
            }
        }
        host.set_nonblocking(false).unwrap();
        got
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 4093) as u8).collect()
    }

    /// The guest sends `data` in packets of at most MAX_PAYLOAD bytes.
    fn send_all(h: &mut Harness, hdr: Header, data: &[u8]) {
        for chunk in data.chunks(MAX_PAYLOAD) {
            h.send(hdr, chunk);
        }
    }

    #[test]
    fn host_end_of_stream_is_a_half_close() {
        // The host sends a request and shuts its write side, then reads the reply: the
        // guest hears "will not send" only, and its reply still reaches the host.
        let mut h = harness();
        let (mut host, local) = h.host_connect(52);
        host.write_all(b"request").unwrap();
        host.shutdown(std::net::Shutdown::Write).unwrap();
        h.host_events();
        let got = h.received();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0.op, got[0].1.as_slice()), (OP_RW, &b"request"[..]));
        assert_eq!((got[1].0.op, got[1].0.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
        assert_eq!(h.vsock.muxer.connection_count(), 1);

        h.send(header(OP_RW, 52, local), b"reply");
        let mut buf = [0u8; 5];
        host.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"reply");
        assert!(h.received().is_empty());

        // The guest closes too: now the connection goes.
        h.send(
            Header {
                flags: SHUTDOWN_RCV | SHUTDOWN_SEND,
                ..header(OP_SHUTDOWN, 52, local)
            },
            &[],
        );
        assert_eq!(h.received_ops(), vec![OP_RST]);
        assert_eq!(host.read(&mut buf).unwrap(), 0);
        assert_eq!(h.vsock.muxer.connection_count(), 0);
    }

    #[test]
    fn guest_half_close_keeps_the_reply_flowing() {
        // The guest calls the host, sends a request, shuts its write side and waits for
        // the reply: the host reads the end of the request, answers, then closes.
        let mut h = harness();
        let mut host = h.guest_connect(5000, 1234);
        h.send(header(OP_RW, 5000, 1234), b"hello");
        h.send(
            Header {
                flags: SHUTDOWN_SEND,
                ..header(OP_SHUTDOWN, 5000, 1234)
            },
            &[],
        );
        let mut request = Vec::new();
        host.read_to_end(&mut request).unwrap();
        assert_eq!(request, b"hello");
        assert!(h.received().is_empty(), "no RST while the host may answer");

        host.write_all(b"world").unwrap();
        drop(host);
        h.host_events();
        let got = h.received();
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].0.op, got[0].1.as_slice()), (OP_RW, &b"world"[..]));
        assert_eq!((got[1].0.op, got[1].0.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
        assert_eq!(got[2].0.op, OP_RST);
        assert_eq!(h.vsock.muxer.connection_count(), 0);
    }

    #[test]
    fn guest_data_waits_for_a_full_host_socket() {
        // A full window of guest data (BUF_ALLOC) into a host socket that reads nothing
        // yet: what the socket does not take is kept, nothing is reset, every byte arrives
        // in order, and the guest hears of the freed window.
        let mut h = harness();
        let mut host = h.guest_connect(5000, 1234);
        let data = pattern(BUF_ALLOC as usize);
        send_all(&mut h, header(OP_RW, 5000, 1234), &data);
        assert!(!h.received_ops().contains(&OP_RST));
        assert_eq!(h.vsock.muxer.connection_count(), 1);
        let got = drain_host(&mut h, &mut host, data.len());
        assert!(
            got == data,
            "the host got {} bytes, not the stream",
            got.len()
        );
        let updates: Vec<Header> = h
            .received()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p.op == OP_CREDIT_UPDATE)
            .collect();
        let last = updates.last().expect("a credit update");
        assert_eq!(last.fwd_cnt, BUF_ALLOC);
        assert_eq!(last.buf_alloc, BUF_ALLOC);
    }

    #[test]
    fn guest_close_waits_for_its_data_to_reach_the_host() {
        let mut h = harness();
        let mut host = h.guest_connect(5000, 1234);
        let data = pattern(BUF_ALLOC as usize);
        send_all(&mut h, header(OP_RW, 5000, 1234), &data);
        h.received();
        h.send(
            Header {
                flags: SHUTDOWN_RCV | SHUTDOWN_SEND,
                ..header(OP_SHUTDOWN, 5000, 1234)
            },
            &[],
        );
        assert!(
            !h.received_ops().contains(&OP_RST),
            "no RST while guest data waits for the host socket"
        );
        let got = drain_host(&mut h, &mut host, data.len());
        assert!(
            got == data,
            "the host got {} bytes, not the stream",
            got.len()
        );
        // Written out: the host reads the end, the guest gets its RST.
        h.host_events();
        let mut end = [0u8; 1];
        assert_eq!(host.read(&mut end).unwrap(), 0);
        assert!(h.received_ops().contains(&OP_RST));
        assert_eq!(h.vsock.muxer.connection_count(), 0);
    }

    #[test]
    fn a_receive_buffer_without_room_is_no_end_of_stream() {
        let mut h = harness();
        let (mut host, local) = h.host_connect(52);
        // Use up the buffers host_connect gave, then offer one header-sized buffer.
        while h.rx.used_idx() != h.rx.avail_idx() {
            h.send(header(OP_CREDIT_REQUEST, 52, local), &[]);
            h.received();
        }
        let head = h.rx.add_chain(&[(0x30_0000, HDR_LEN as u32, true)]);
        host.write_all(b"data").unwrap();
        h.host_events();
        assert_eq!(h.rx.used(h.seen), (u32::from(head), 0));
        h.seen += 1;
        assert_eq!(h.vsock.metrics().invalid_packets.get(), 1);
        // The connection is intact and the data arrives in a proper buffer.
        h.give_rx(1);
        let got = h.received();
        assert_eq!((got[0].0.op, got[0].1.as_slice()), (OP_RW, &b"data"[..]));
        assert_eq!(h.vsock.muxer.connection_count(), 1);
    }

    #[test]
    fn guest_connects_to_a_host_port() {
        let mut h = harness();
        let mut target = h.socket.clone().into_os_string();
        target.push("_1234");
        let listener = UnixListener::bind(&target).unwrap();
        h.give_rx(8);
        h.send(header(OP_REQUEST, 5000, 1234), &[]);
        let (mut host, _) = listener.accept().unwrap();
        let got = h.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.op, OP_RESPONSE);
        assert_eq!((got[0].0.src_port, got[0].0.dst_port), (1234, 5000));
        assert_eq!((got[0].0.src_cid, got[0].0.dst_cid), (HOST_CID, CID));

        h.send(header(OP_RW, 5000, 1234), b"hello");
        let mut buf = [0u8; 5];
        host.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");

        host.write_all(b"world").unwrap();
        h.host_events();
        let got = h.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.op, OP_RW);
        assert_eq!(got[0].1, b"world");

        h.send(
            Header {
                flags: SHUTDOWN_RCV | SHUTDOWN_SEND,
                ..header(OP_SHUTDOWN, 5000, 1234)
            },
            &[],
        );
        assert_eq!(h.received()[0].0.op, OP_RST);
        assert_eq!(host.read(&mut buf).unwrap(), 0);
        assert_eq!(h.vsock.muxer.connection_count(), 0);
    }

    #[test]
    fn host_connects_to_a_guest_port() {
        let mut h = harness();
        let mut host = UnixStream::connect(&h.socket).unwrap();
        host.write_all(b"CONNECT 52\n").unwrap();
        h.give_rx(8);
        h.host_events();
        let got = h.received();
        assert_eq!(got.len(), 1);
        let request = got[0].0;
        assert_eq!(request.op, OP_REQUEST);
        assert_eq!(request.dst_port, 52);
        let local = request.src_port;
        assert!(local >= 1 << 30);

        h.send(header(OP_RESPONSE, 52, local), &[]);
        let mut line = [0u8; 64];
        let n = host.read(&mut line).unwrap();
        assert_eq!(
            std::str::from_utf8(&line[..n]).unwrap(),
            format!("OK {local}\n")
        );

        host.write_all(b"ping").unwrap();
        h.host_events();
        let got = h.received();
        assert_eq!(got[0].1, b"ping");
        h.send(header(OP_RW, 52, local), b"pong");
        let mut buf = [0u8; 4];
        host.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");

        // The host closes: the guest is told the host sends no more.
        drop(host);
        h.host_events();
        let got = h.received();
        assert_eq!(got[0].0.op, OP_SHUTDOWN);
        assert_eq!(got[0].0.flags, SHUTDOWN_SEND);
        h.send(header(OP_RST, 52, local), &[]);
        assert_eq!(h.vsock.muxer.connection_count(), 0);
    }

    #[test]
    fn refused_and_malformed_packets() {
        let mut h = harness();
        h.give_rx(8);
        // Nobody listens on port 9.
        h.send(header(OP_REQUEST, 5000, 9), &[]);
        // Spoofed source CID.
        h.send(
            Header {
                src_cid: 7,
                ..header(OP_REQUEST, 5000, 9)
            },
            &[],
        );
        // Data on a connection that does not exist.
        h.send(header(OP_RW, 5000, 9), b"x");
        let ops: Vec<u16> = h.received().iter().map(|(p, _)| p.op).collect();
        assert_eq!(ops, vec![OP_RST, OP_RST, OP_RST]);
        // Shorter than a header, and a payload length past the chain.
        h.mem
            .write_slice(&[0u8; 16], GuestAddress(0x10_0000))
            .unwrap();
        h.tx.add_chain(&[(0x10_0000, 16, false)]);
        let mut long = header(OP_RW, 5000, 9);
        long.len = 1000;
        h.mem
            .write_slice(&long.to_bytes(), GuestAddress(0x11_0000))
            .unwrap();
        h.tx.add_chain(&[(0x11_0000, HDR_LEN as u32 + 10, false)]);
        h.vsock.process_queue(TX_QUEUE);
        assert_eq!(h.vsock.metrics().invalid_packets.get(), 2);
        assert!(!h.interrupt.needs_reset());
        // A bad head index in the ring.
        h.tx.publish(200);
        h.vsock.process_queue(TX_QUEUE);
        assert!(h.interrupt.needs_reset());
    }

    #[test]
    fn data_waits_for_guest_credit() {
        let mut h = harness();
        let mut target = h.socket.clone().into_os_string();
        target.push("_77");
        let listener = UnixListener::bind(&target).unwrap();
        h.give_rx(8);
        h.send(
            Header {
                buf_alloc: 0,
                ..header(OP_REQUEST, 6000, 77)
            },
            &[],
        );
        let (mut host, _) = listener.accept().unwrap();
        assert_eq!(h.received()[0].0.op, OP_RESPONSE);
        host.write_all(b"0123456789").unwrap();
        h.host_events();
        // No room: the guest is asked for credit, once.
        let got = h.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.op, OP_CREDIT_REQUEST);
        assert_eq!((got[0].0.src_port, got[0].0.dst_port), (77, 6000));
        host.write_all(b"!").unwrap();
        h.host_events();
        assert!(h.received().is_empty());
        // Four bytes of room.
        h.send(
            Header {
                buf_alloc: 4,
                ..header(OP_CREDIT_UPDATE, 6000, 77)
            },
            &[],
        );
        let got = h.received();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, b"0123");
        // Full again, with more waiting: asked again.
        assert_eq!(got[1].0.op, OP_CREDIT_REQUEST);
        // The guest consumed them and has room for the rest.
        h.send(
            Header {
                buf_alloc: 64,
                fwd_cnt: 4,
                ..header(OP_CREDIT_UPDATE, 6000, 77)
            },
            &[],
        );
        let got = h.received();
        assert_eq!(got[0].1, b"456789!");
    }
}

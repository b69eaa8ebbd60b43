//! Moving console bytes between the rings and the host fds, on the device thread.
//!
//! Input is read straight into the guest's receive buffers until the fd would block or
//! the guest has no buffers left (then the bytes wait in the fd until the driver kicks
//! the receive queue). Output is written straight from the guest's buffers.

use std::io;
use std::os::fd::AsRawFd;

use vm_memory::GuestAddressSpace;

use super::device::{ConsoleDevice, RX_QUEUE, TX_QUEUE};
use crate::virtio::active_queues::ChainOutcome;
use crate::virtio::iovec::GuestIoVecs;

impl<M> ConsoleDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    /// Host input into the guest's receive buffers.
    pub(super) fn process_input(&mut self) {
        let Some(fd) = self.input.as_ref().map(|fd| fd.as_raw_fd()) else {
            return;
        };
        if self.input_closed {
            return;
        }
        let Some(active) = self.core.state.active_mut() else {
            return;
        };
        let mut buffers = GuestIoVecs::new();
        let drained = active.drain(RX_QUEUE, |mem, chain| {
            let outcome = if buffers.gather(mem, chain, true) && !buffers.is_empty() {
                match buffers.read_from(fd) {
                    Ok(0) => {
                        // End of input: the buffers go back to the ring.
                        self.input_closed = true;
                        ChainOutcome::Stop
                    }
                    Ok(n) => {
                        self.metrics.rx_bytes.add(n as u64);
                        // At most the chain's length, which is below 4 GiB.
                        ChainOutcome::Used(n as u32)
                    }
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            if let Some(suppressed) = self.core.log.allow() {
                                tracing::warn!(console = %self.id, error = %e, suppressed, "Console input failed");
                            }
                        }
                        ChainOutcome::Stop
                    }
                }
            } else {
                self.metrics.invalid_requests.inc();
                ChainOutcome::Used(0)
            };
            buffers.clear();
            outcome
        });
        active.settle(RX_QUEUE, drained, &*self.metrics, &mut self.core.log);
    }

    /// Guest output to the host.
    pub(super) fn process_output(&mut self) {
        let fd = self.output.as_raw_fd();
        let Some(active) = self.core.state.active_mut() else {
            return;
        };
        let mut buffers = GuestIoVecs::new();
        let drained = active.drain(TX_QUEUE, |mem, chain| {
            let head = chain.head_index();
            if buffers.gather(mem, chain, false) {
                let written = match buffers.write_to(fd) {
                    Ok(n) => n as u64,
                    Err(_) => 0,
                };
                self.metrics.tx_bytes.add(written);
                self.metrics
                    .tx_dropped_bytes
                    .add(buffers.len().saturating_sub(written));
            } else {
                self.metrics.invalid_requests.inc();
                if let Some(suppressed) = self.core.log.allow() {
                    tracing::warn!(console = %self.id, head, suppressed, "Dropping malformed virtio-console output");
                }
            }
            buffers.clear();
            ChainOutcome::Used(0)
        });
        active.settle(TX_QUEUE, drained, &*self.metrics, &mut self.core.log);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    use super::*;
    use crate::virtio::test_driver::{activate, RecordingInterrupt, TestDriver};
    use crate::virtio::VirtioDevice;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    type Mem = Arc<GuestMemoryMmap>;

    struct Harness {
        console: ConsoleDevice<Mem>,
        rx: TestDriver,
        tx: TestDriver,
        interrupt: Arc<RecordingInterrupt>,
        mem: Mem,
        host: UnixStream,
    }

    fn harness() -> Harness {
        let (ours, host) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        host.set_nonblocking(true).unwrap();
        let input = OwnedFd::from(ours.try_clone().unwrap());
        let mut console = ConsoleDevice::new("hvc0", Some(input), OwnedFd::from(ours));
        let setup = activate(&mut console, 2, 16, false);
        let Ok([rx, tx]) = <[TestDriver; 2]>::try_from(setup.queues) else {
            unreachable!("two queues")
        };
        Harness {
            console,
            rx,
            tx,
            interrupt: setup.interrupt,
            mem: setup.mem,
            host,
        }
    }

    #[test]
    fn output_reaches_the_host() {
        let mut h = harness();
        h.mem
            .write_slice(b"login: ", GuestAddress(0x10_0000))
            .unwrap();
        h.mem
            .write_slice(b"root\n", GuestAddress(0x11_0000))
            .unwrap();
        h.tx.add_chain(&[(0x10_0000, 7, false), (0x11_0000, 5, false)]);
        h.console.process_queue(TX_QUEUE);
        let mut buf = [0u8; 32];
        let n = h.host.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"login: root\n");
        assert_eq!(h.tx.used(0).1, 0);
        assert_eq!(*h.interrupt.queues.lock().unwrap(), vec![1]);
    }

    #[test]
    fn input_reaches_the_guest_when_it_has_buffers() {
        let mut h = harness();
        h.host.write_all(b"uname -a\n").unwrap();
        h.console.process_event(0);
        assert_eq!(h.rx.used_idx(), 0);
        h.rx.add_chain(&[(0x20_0000, 4, true)]);
        h.rx.add_chain(&[(0x21_0000, 64, true)]);
        h.console.process_queue(RX_QUEUE);
        assert_eq!(h.rx.used(0).1, 4);
        assert_eq!(h.rx.used(1).1, 5);
        let mut got = [0u8; 9];
        h.mem
            .read_slice(&mut got[..4], GuestAddress(0x20_0000))
            .unwrap();
        h.mem
            .read_slice(&mut got[4..], GuestAddress(0x21_0000))
            .unwrap();
        assert_eq!(&got, b"uname -a\n");
        assert_eq!(h.console.metrics().rx_bytes.get(), 9);
    }

    #[test]
    fn malformed_chains_and_a_stuck_reader() {
        let mut h = harness();
        // Output in a device-writable buffer is malformed.
        h.tx.add_chain(&[(0x10_0000, 8, true)]);
        // Input into a device-readable buffer too.
        h.rx.add_chain(&[(0x20_0000, 8, false)]);
        h.host.write_all(b"x").unwrap();
        h.console.process_queue(TX_QUEUE);
        h.console.process_queue(RX_QUEUE);
        assert_eq!(h.console.metrics().invalid_requests.get(), 2);
        assert!(!h.interrupt.needs_reset());
        // Nobody reads the host side: output beyond the socket buffer is dropped, the
        // device keeps going.
        h.mem
            .write_slice(&[b'y'; 0x1_0000], GuestAddress(0x12_0000))
            .unwrap();
        for _ in 0..32 {
            h.tx.add_chain(&[(0x12_0000, 0x1_0000, false)]);
            h.console.process_queue(TX_QUEUE);
        }
        let m = h.console.metrics();
        assert_eq!(m.tx_bytes.get() + m.tx_dropped_bytes.get(), 32 * 0x1_0000);
        assert!(m.tx_dropped_bytes.get() > 0);
        assert_eq!(h.tx.used_idx(), 33);
    }

    #[test]
    fn end_of_input_stops_reading() {
        let mut h = harness();
        h.rx.add_chain(&[(0x20_0000, 8, true)]);
        drop(h.host);
        h.console.process_event(0);
        assert!(h.console.input_closed);
        // The buffer stays with the device, unused.
        assert_eq!(h.rx.used_idx(), 0);
    }
}

//! Filling the driver's buffers with host entropy, on the device thread.
//!
//! A request is a chain of device-writable buffers. A chain with a device-readable
//! buffer, a buffer outside guest memory, or no end (a loop, an index outside the table)
//! is returned with nothing written; a corrupted ring sets DEVICE_NEEDS_RESET.

use std::io;

use vm_memory::{Address, Bytes, GuestAddress, GuestAddressSpace, GuestMemory, Permissions};

use super::device::{RngDevice, MAX_REQUEST_BYTES};
use crate::virtio::active_queues::ChainOutcome;

/// Bytes fetched from the host per getrandom call.
const CHUNK: usize = 4096;

/// Fills `buf` from the host's entropy pool (the urandom source, which never blocks once
/// the pool is initialised, as it is long before a VM starts).
fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe the writable tail of `buf`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // n >= 0 and at most rest.len().
        done += n as usize;
    }
    Ok(())
}

/// The writable buffers of a well-formed chain, or None.
fn buffers<G: GuestMemory + ?Sized>(
    mem: &G,
    chain: impl Iterator<Item = virtio_queue::desc::split::Descriptor>,
) -> Option<Vec<(GuestAddress, u32)>> {
    let mut out = Vec::new();
    let mut last_has_next = true;
    for desc in chain {
        last_has_next = desc.has_next();
        if !desc.is_write_only()
            || !mem.check_range(desc.addr(), desc.len() as usize, Permissions::Write)
        {
            return None;
        }
        out.push((desc.addr(), desc.len()));
    }
    // An empty chain, or one the iterator cut short (loop, bad index, 4 GiB overflow).
    (!last_has_next).then_some(out)
}

impl<M> RngDevice<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    /// Serves every request the driver made available on queue `index`.
    pub(super) fn handle_queue(&mut self, index: usize) {
        self.metrics.queue_events.inc();
        let Some(active) = self.core.state.active_mut() else {
            return;
        };
        let mut chunk = [0u8; CHUNK];
        let drained = active.drain(index, |mem, chain| {
            let head = chain.head_index();
            let mut written: u32 = 0;
            match buffers(mem, chain) {
                None => {
                    self.metrics.invalid_requests.inc();
                    if let Some(suppressed) = self.core.log.allow() {
                        tracing::warn!(
                            head,
                            suppressed,
                            "Returning malformed virtio-rng request empty"
                        );
                    }
                }
                Some(bufs) => {
                    'fill: for (addr, len) in bufs {
                        let mut offset = 0u32;
                        while offset < len && written < MAX_REQUEST_BYTES {
                            let n = (len - offset)
                                .min(MAX_REQUEST_BYTES - written)
                                .min(CHUNK as u32) as usize;
                            if let Err(e) = getrandom(&mut chunk[..n]) {
                                self.metrics.entropy_errors.inc();
                                tracing::warn!(error = %e, "Host entropy source failed");
                                break 'fill;
                            }
                            // `buffers` checked the whole range is guest memory.
                            if mem
                                .write_slice(&chunk[..n], addr.unchecked_add(u64::from(offset)))
                                .is_err()
                            {
                                break 'fill;
                            }
                            offset += n as u32;
                            written += n as u32;
                        }
                    }
                    self.metrics.requests.inc();
                    self.metrics.bytes.add(u64::from(written));
                }
            }
            ChainOutcome::Used(written)
        });
        active.settle(index, drained, &*self.metrics, &mut self.core.log);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::virtio::test_driver::{activate, RecordingInterrupt, TestDriver};
    use crate::virtio::VirtioDevice;
    use vm_memory::GuestMemoryMmap;

    type Mem = Arc<GuestMemoryMmap>;

    fn setup() -> (RngDevice<Mem>, TestDriver, Arc<RecordingInterrupt>, Mem) {
        setup_with(false)
    }

    fn setup_with(event_idx: bool) -> (RngDevice<Mem>, TestDriver, Arc<RecordingInterrupt>, Mem) {
        let mut rng = RngDevice::new();
        let setup = activate(&mut rng, 1, 16, event_idx);
        let Ok([driver]) = <[TestDriver; 1]>::try_from(setup.queues) else {
            unreachable!("one queue")
        };
        (rng, driver, setup.interrupt, setup.mem)
    }

    #[test]
    fn fills_buffers_with_entropy() {
        let (mut rng, mut driver, interrupt, mem) = setup();
        let head = driver.add_chain(&[(0x10_0000, 64, true), (0x20_0000, 10_000, true)]);
        rng.process_queue(0);
        assert_eq!(driver.used(0), (u32::from(head), 10_064));
        let mut a = [0u8; 64];
        mem.read_slice(&mut a, GuestAddress(0x10_0000)).unwrap();
        // 64 zero bytes from a working entropy source: 2^-512.
        assert_ne!(a, [0u8; 64]);
        let mut b = vec![0u8; 10_000];
        mem.read_slice(&mut b, GuestAddress(0x20_0000)).unwrap();
        assert_ne!(b[9_936..], [0u8; 64]);
        assert_eq!(*interrupt.queues.lock().unwrap(), vec![0]);
        assert_eq!(rng.metrics().bytes.get(), 10_064);
    }

    #[test]
    fn large_requests_are_capped() {
        let (mut rng, mut driver, _, _) = setup();
        driver.add_chain(&[(0x10_0000, 0x20_0000, true)]);
        rng.process_queue(0);
        assert_eq!(driver.used(0).1, MAX_REQUEST_BYTES);
    }

    #[test]
    fn malformed_requests_come_back_empty() {
        let (mut rng, mut driver, interrupt, mem) = setup();
        // Device-readable buffer.
        driver.add_chain(&[(0x10_0000, 64, false)]);
        // Outside guest memory.
        driver.add_chain(&[(0x3f_fff0, 64, true)]);
        rng.process_queue(0);
        assert_eq!(driver.used_idx(), 2);
        assert_eq!(driver.used(0).1, 0);
        assert_eq!(driver.used(1).1, 0);
        let mut a = [0u8; 64];
        mem.read_slice(&mut a, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(a, [0u8; 64]);
        assert_eq!(rng.metrics().invalid_requests.get(), 2);
        assert!(!interrupt.needs_reset());
    }

    #[test]
    fn event_idx_defers_interrupts() {
        let (mut rng, mut driver, interrupt, _) = setup_with(true);
        driver.set_used_event(1);
        driver.add_chain(&[(0x10_0000, 16, true)]);
        rng.process_queue(0);
        assert!(interrupt.queues.lock().unwrap().is_empty());
        driver.add_chain(&[(0x10_0000, 16, true)]);
        rng.process_queue(0);
        assert_eq!(*interrupt.queues.lock().unwrap(), vec![0]);
    }

    #[test]
    fn bad_head_index_needs_reset() {
        let (mut rng, mut driver, interrupt, _) = setup();
        driver.publish(100);
        rng.process_queue(0);
        assert!(interrupt.needs_reset());
        rng.reset();
        assert!(!rng.is_activated());
    }
}

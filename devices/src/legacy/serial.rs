//! COM1: vm-superio's 16550 UART on the I/O bus. Output goes to any `Write` (the VMM
//! passes stdout, a file or an in-memory ring); input is queued by the VMM's event loop
//! with [`SerialDevice::enqueue_input`].

use std::io::{self, Write};

use vm_superio::serial::NoEvents;
use vm_superio::Serial;

use super::EventFdTrigger;
use crate::bus::BusDevice;

/// Number of I/O ports a 16550 decodes.
pub const SERIAL_PORT_LEN: u64 = 8;

/// A 16550 UART raising its interrupt through an [`EventFdTrigger`].
pub struct SerialDevice<W: Write + Send> {
    serial: Serial<EventFdTrigger, NoEvents, W>,
}

impl<W: Write + Send> SerialDevice<W> {
    /// A UART writing guest output to `out` and interrupting through `irq`.
    pub fn new(irq: EventFdTrigger, out: W) -> Self {
        Self {
            serial: Serial::new(irq, out),
        }
    }

    /// Queues host input for the guest; returns how many bytes fit in the receive FIFO
    /// (the rest is the caller's to drop or retry).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = self.serial.fifo_capacity();
        let n = bytes.len().min(room);
        if n == 0 {
            return Ok(0);
        }
        self.serial
            .enqueue_raw_bytes(&bytes[..n])
            .map_err(|e| io::Error::other(format!("{e:?}")))
    }

    /// The output writer.
    pub fn writer_mut(&mut self) -> &mut W {
        self.serial.writer_mut()
    }
}

impl<W: Write + Send> BusDevice for SerialDevice<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 || offset >= SERIAL_PORT_LEN {
            data.fill(0xff);
            return;
        }
        data[0] = self.serial.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 || offset >= SERIAL_PORT_LEN {
            return;
        }
        // A failing console writer or irqfd must not take the vCPU down; the guest sees
        // its byte as sent either way, as with a disconnected line.
        let _ = self.serial.write(offset as u8, data[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[test]
    fn output_and_interrupt() {
        let irq = EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
        let evt = irq.try_clone().expect("clone");
        let mut s = SerialDevice::new(irq, Vec::new());
        // Enable the "transmitter holding register empty" interrupt, then send.
        s.write(1, &[0x02]);
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(s.writer_mut().as_slice(), b"hi\n");
        assert!(evt.event_fd().read().expect("interrupt raised") >= 1);
        // Receive path: enable RX interrupt, queue, read back from RBR.
        s.write(1, &[0x01]);
        assert_eq!(s.enqueue_input(b"ok").expect("queued"), 2);
        let mut b = [0u8];
        s.read(0, &mut b);
        assert_eq!(b[0], b'o');
        // Wide accesses are not a 16550 thing.
        let mut w = [0u8; 2];
        s.read(0, &mut w);
        assert_eq!(w, [0xff, 0xff]);
    }
}

//! COM1 (16550 UART at I/O port 0x3f8), polled: the guest's only output channel.
//!
//! [`kv!`](crate::kv) prints one `key=value` line under a lock, so lines from several CPUs
//! never interleave.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;
/// Line status register: transmitter holding register empty.
const LSR_THRE: u8 = 0x20;
/// Line status register: a received byte is waiting in the receive buffer.
const LSR_DR: u8 = 0x01;

static LOCK: AtomicBool = AtomicBool::new(false);

/// Programs COM1 for 115200 8N1, FIFOs on, interrupts off.
pub fn init() {
    // SAFETY: the 16550's registers at COM1: the writes configure the UART, the IIR read
    // only reports its state.
    unsafe {
        Port::<u8>::new(COM1 + 1).write(0x00); // IER: no interrupts
        Port::<u8>::new(COM1 + 3).write(0x80); // LCR: DLAB
        Port::<u8>::new(COM1).write(0x01); // DLL: 115200 baud
        Port::<u8>::new(COM1 + 1).write(0x00); // DLM
        Port::<u8>::new(COM1 + 3).write(0x03); // LCR: 8N1
        Port::<u8>::new(COM1 + 2).write(0xc7); // FCR: enable and clear FIFOs
        Port::<u8>::new(COM1 + 4).write(0x03); // MCR: DTR | RTS
                                               // IIR bits 7:6 = 11: FIFOs enabled, a 16550A with a 16-byte transmit FIFO.
        if Port::<u8>::new(COM1 + 2).read() & 0xc0 == 0xc0 {
            TX_BURST.store(16, Ordering::Relaxed);
        }
    }
}

/// Bytes the transmitter takes per THRE: 16 once IIR shows the 16550A's FIFO enabled.
static TX_BURST: AtomicUsize = AtomicUsize::new(1);

/// Writes `bytes`, waiting for THRE before each burst (every byte is a VM exit, so the
/// guest polls once per FIFO load, as Linux's 8250 driver does).
fn put_bytes(bytes: &[u8]) {
    let mut lsr = Port::<u8>::new(COM1 + 5);
    let mut thr = Port::<u8>::new(COM1);
    for burst in bytes.chunks(TX_BURST.load(Ordering::Relaxed)) {
        // Bounded wait: a UART that never drains must not hang the guest forever.
        for _ in 0..1_000_000 {
            // SAFETY: reading the LSR has no side effects.
            if unsafe { lsr.read() } & LSR_THRE != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        for &byte in burst {
            // SAFETY: writing the THR queues one byte for transmission.
            unsafe { thr.write(byte) }
        }
    }
}

/// The next received byte, if one is waiting (polled: the UART's interrupts stay off).
pub fn try_read() -> Option<u8> {
    // SAFETY: reading the LSR has no side effects; reading the RBR takes the received
    // byte that LSR_DR says is there.
    unsafe {
        if Port::<u8>::new(COM1 + 5).read() & LSR_DR == 0 {
            return None;
        }
        Some(Port::<u8>::new(COM1).read())
    }
}

/// A writer straight to COM1; callers hold [`Line`] for whole lines.
pub struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        put_bytes(s.as_bytes());
        Ok(())
    }
}

/// Exclusive access to the port for one line.
pub struct Line(());

impl Line {
    /// Takes the output lock (spins).
    pub fn lock() -> Line {
        while LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        Line(())
    }

    /// Takes the lock without waiting for it: used by the panic path, where the lock may be
    /// held by the code that panicked.
    pub fn force() -> Line {
        LOCK.store(true, Ordering::Release);
        Line(())
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        Serial.write_str(s)
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        LOCK.store(false, Ordering::Release);
    }
}

/// Prints `key=value\n` on COM1: `kv!("cmdline", "{}", text)`.
#[macro_export]
macro_rules! kv {
    ($key:expr, $($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut line = $crate::serial::Line::lock();
        let _ = write!(line, "{}=", $key);
        let _ = write!(line, $($arg)*);
        let _ = line.write_str("\n");
    }};
}

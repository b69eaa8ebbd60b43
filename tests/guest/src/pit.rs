//! The 8254 PIT: channel 0 as the guest's time base (free-running, polled) and channel 2
//! gated through port 0x61, the way Linux calibrates the TSC.
//!
//! Elapsed time is measured by polling channel 0's counter, so waits need no interrupts and
//! no calibrated TSC. Every wait is bounded: a PIT that does not count ends the wait early
//! and the caller reports it.

use x86_64::instructions::port::Port;

/// The PIT's input clock.
pub const HZ: u64 = 1_193_182;

const CH0: u16 = 0x40;
const CH2: u16 = 0x42;
const CMD: u16 = 0x43;
const PORT_B: u16 = 0x61;

fn outb(port: u16, value: u8) {
    // SAFETY: PIT and port-B registers; writes only reprogram the timer (speaker stays off).
    unsafe { Port::<u8>::new(port).write(value) }
}

fn inb(port: u16) -> u8 {
    // SAFETY: reading a latched PIT counter or port B has no other effect.
    unsafe { Port::<u8>::new(port).read() }
}

/// Programs channel 0 as a free-running rate generator (mode 2, period 65536).
pub fn init() {
    outb(CMD, 0x34);
    outb(CH0, 0);
    outb(CH0, 0);
}

fn read_counter(channel: u8) -> u16 {
    outb(CMD, channel << 6); // counter latch command
    let port = CH0 + u16::from(channel);
    let lo = inb(port);
    let hi = inb(port);
    u16::from_le_bytes([lo, hi])
}

/// Measures elapsed time on channel 0; poll it at least every ~50 ms.
pub struct Stopwatch {
    last: u16,
    ticks: u64,
    stuck_polls: u32,
}

impl Stopwatch {
    /// Starts measuring now.
    pub fn start() -> Stopwatch {
        Stopwatch {
            last: read_counter(0),
            ticks: 0,
            stuck_polls: 0,
        }
    }

    /// Microseconds since [`start`](Self::start).
    pub fn elapsed_us(&mut self) -> u64 {
        let now = read_counter(0);
        let delta = self.last.wrapping_sub(now);
        if delta == 0 {
            self.stuck_polls = self.stuck_polls.saturating_add(1);
        } else {
            self.stuck_polls = 0;
        }
        self.ticks += u64::from(delta);
        self.last = now;
        self.ticks * 1_000_000 / HZ
    }

    /// The counter has not moved for a long run of polls: the PIT is not counting.
    pub fn stuck(&self) -> bool {
        self.stuck_polls > 2_000_000
    }
}

/// Busy-waits `us` microseconds; returns false if the PIT stopped counting.
pub fn wait_us(us: u64) -> bool {
    let mut sw = Stopwatch::start();
    while sw.elapsed_us() < us {
        if sw.stuck() {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Spins until `done()` or `timeout_us`; returns whether `done()` became true.
pub fn wait_until(timeout_us: u64, mut done: impl FnMut() -> bool) -> bool {
    let mut sw = Stopwatch::start();
    loop {
        if done() {
            return true;
        }
        if sw.elapsed_us() >= timeout_us || sw.stuck() {
            return done();
        }
        core::hint::spin_loop();
    }
}

/// Whether channel 0's counter moves.
pub fn ch0_counting() -> bool {
    let first = read_counter(0);
    (0..1_000_000).any(|_| read_counter(0) != first)
}

/// Runs channel 2 in mode 0 for 1 ms with its gate opened through port 0x61 and reports
/// whether its counter moved and OUT2 (port 0x61 bit 5) rose at terminal count.
pub fn ch2_one_shot() -> (bool, bool) {
    let port_b = inb(PORT_B);
    outb(PORT_B, (port_b & !0x02) | 0x01); // gate on, speaker off
    outb(CMD, 0xb0); // channel 2, lobyte/hibyte, mode 0, binary
    let count = (HZ / 1000) as u16;
    let [lo, hi] = count.to_le_bytes();
    outb(CH2, lo);
    outb(CH2, hi);
    let mut moved = false;
    let out2 = wait_until(100_000, || {
        moved |= read_counter(2) < count - 1;
        inb(PORT_B) & 0x20 != 0
    });
    outb(PORT_B, port_b & !0x03);
    (moved, out2)
}

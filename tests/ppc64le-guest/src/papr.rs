//! The PAPR interface the guest uses: hypercalls (`sc 1`, in `entry.S`), the hvterm
//! console over H_PUT_TERM_CHAR / H_GET_TERM_CHAR, H_SET_MODE, and RTAS calls through the
//! entry the device tree names.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::rtas_args::ArgBlock;

/// H_SUCCESS.
pub const H_SUCCESS: i64 = 0;
/// H_GET_TERM_CHAR.
pub const H_GET_TERM_CHAR: u64 = 0x54;
/// H_PUT_TERM_CHAR.
pub const H_PUT_TERM_CHAR: u64 = 0x58;
/// H_SET_MODE.
pub const H_SET_MODE: u64 = 0x31c;
/// H_SET_MODE resource 4: the endianness interrupts are taken in (mflags 1 = little).
pub const H_SET_MODE_RESOURCE_LE: u64 = 4;

extern "C" {
    fn hcall(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64, out: *mut [u64; 4]) -> i64;
    fn rtas_call(args: *mut u32, entry: u64);
    fn read_timebase() -> u64;
}

/// Makes hypercall `nr` with arguments r4..r7; returns r3 and r4..r7.
pub fn hypercall(nr: u64, args: [u64; 4]) -> (i64, [u64; 4]) {
    let mut out = [0u64; 4];
    // SAFETY: `hcall` (entry.S) follows the ELFv2 ABI, clobbers only volatile registers
    // and writes exactly the four words of `out`, which lives across the call.
    let ret = unsafe { hcall(nr, args[0], args[1], args[2], args[3], &mut out) };
    (ret, out)
}

/// The timebase register.
pub fn timebase() -> u64 {
    // SAFETY: `read_timebase` only executes mftb.
    unsafe { read_timebase() }
}

/// The hvterm terminal number (`reg` of the console's vty node); 0 until it is known.
static TERMNO: AtomicU64 = AtomicU64::new(0);

/// Sends console output to the vty at `reg`.
pub fn set_console(reg: u64) {
    TERMNO.store(reg, Ordering::Relaxed);
}

/// The hvterm console: bytes go out 16 per H_PUT_TERM_CHAR, packed big-endian in r6/r7.
pub struct Console;

impl Console {
    /// Writes `bytes`; returns the first failing hcall status, if any.
    pub fn put(&mut self, bytes: &[u8]) -> Result<(), i64> {
        let termno = TERMNO.load(Ordering::Relaxed);
        for chunk in bytes.chunks(16) {
            let mut buf = [0u8; 16];
            buf[..chunk.len()].copy_from_slice(chunk);
            let hi = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
            let lo = u64::from_be_bytes(buf[8..].try_into().expect("8 bytes"));
            let (ret, _) = hypercall(H_PUT_TERM_CHAR, [termno, chunk.len() as u64, hi, lo]);
            if ret != H_SUCCESS {
                return Err(ret);
            }
        }
        Ok(())
    }

    /// H_GET_TERM_CHAR: status and the number of bytes that were waiting (dropped).
    pub fn get(&mut self) -> (i64, u64) {
        let (ret, out) = hypercall(H_GET_TERM_CHAR, [TERMNO.load(Ordering::Relaxed), 0, 0, 0]);
        (ret, out[0])
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// Prints one report line.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::papr::Console, $($arg)*);
    }};
}

/// RTAS, entered at `entry` (the device tree's `linux,rtas-entry`).
#[derive(Clone, Copy, Debug)]
pub struct Rtas {
    /// The entry's physical address.
    pub entry: u64,
}

impl Rtas {
    /// Calls the service with `token` and `args`; returns the block with `nret` returns.
    pub fn call(&self, token: u32, args: &[u32], nret: usize) -> Option<ArgBlock> {
        let mut block = ArgBlock::new(token, args, nret)?;
        // SAFETY: the block is a live, 8-byte aligned buffer below 4 GiB (the guest runs
        // with translation off at low addresses) that RTAS reads and writes only within
        // its nargs + nret words; `rtas_call` returns to the caller in 64-bit
        // little-endian mode with the ELFv2 non-volatile registers intact.
        unsafe { rtas_call(block.as_mut_ptr(), self.entry) };
        Some(block)
    }
}

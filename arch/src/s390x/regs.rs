//! The boot vCPU's initial state on s390x: the PSW (z/Architecture program status word)
//! in 64-bit addressing mode at the kernel entry, with DAT, I/O and external
//! interruptions off, as an IPL leaves it (QEMU's s390 IPL uses the same mask).

/// PSW mask bit 31 (EA): extended addressing; with BA, 64-bit mode.
pub const PSW_MASK_EA: u64 = 0x0000_0001_0000_0000;
/// PSW mask bit 32 (BA): basic addressing (31-bit when alone).
pub const PSW_MASK_BA: u64 = 0x0000_0000_8000_0000;
/// PSW mask bit 5 (DAT): dynamic address translation.
pub const PSW_MASK_DAT: u64 = 0x0400_0000_0000_0000;
/// PSW mask bit 6 (IO): I/O interruptions enabled.
pub const PSW_MASK_IO: u64 = 0x0200_0000_0000_0000;
/// PSW mask bit 7 (EXT): external interruptions enabled.
pub const PSW_MASK_EXT: u64 = 0x0100_0000_0000_0000;
/// PSW mask bit 14 (WAIT): wait state.
pub const PSW_MASK_WAIT: u64 = 0x0002_0000_0000_0000;

/// A 16-byte z/Architecture PSW.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Psw {
    /// Bits 0–63.
    pub mask: u64,
    /// Bits 64–127: the instruction address.
    pub addr: u64,
}

impl Psw {
    /// The PSW as stored in memory (lowcore old/new PSW slots): big-endian.
    pub fn to_be_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.mask.to_be_bytes());
        b[8..].copy_from_slice(&self.addr.to_be_bytes());
        b
    }
}

/// The boot PSW: 64-bit addressing at `entry`, everything else off.
pub fn boot_psw(entry: u64) -> Psw {
    Psw {
        mask: PSW_MASK_EA | PSW_MASK_BA,
        addr: entry,
    }
}

/// The boot vCPU's general registers: all zero (the kernel's head sets up its own).
pub const BOOT_GPRS: [u64; 16] = [0; 16];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_psw_is_64_bit_mode_at_0x10000() {
        let psw = boot_psw(0x1_0000);
        // Bits 31 and 32 set (EA and BA): 64-bit addressing mode.
        assert_eq!(psw.mask, 0x0000_0001_8000_0000);
        assert_eq!(
            psw.to_be_bytes(),
            [0, 0, 0, 1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(
            psw.mask & (PSW_MASK_DAT | PSW_MASK_IO | PSW_MASK_EXT | PSW_MASK_WAIT),
            0
        );
    }
}

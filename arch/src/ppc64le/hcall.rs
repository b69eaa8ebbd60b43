//! PAPR hypervisor calls (`sc 1`): the hcall number is in r3, arguments in r4.., and the
//! return code goes back in r3 with outputs in r4... This file implements the console
//! pair Linux's hvc_vio driver uses for `hvterm1` as pure functions over a
//! [`TermConsole`]; the vCPU loop maps registers in and out.
//!
//! LoPAR: H_GET_TERM_CHAR (0x54) takes the terminal number in r4 and returns the byte
//! count in r4 and up to 16 bytes in r5–r6; H_PUT_TERM_CHAR (0x58) takes the terminal
//! number in r4, the count in r5 and the bytes in r6–r7. The bytes are packed
//! big-endian in the registers (the first byte is the most significant byte of r5/r6)
//! whatever the guest's endianness: Linux converts with `cpu_to_be64` before the call.

/// H_SUCCESS.
pub const H_SUCCESS: i64 = 0;
/// H_HARDWARE: the hardware failed.
pub const H_HARDWARE: i64 = -1;
/// H_PARAMETER: a parameter was invalid.
pub const H_PARAMETER: i64 = -4;
/// H_FUNCTION: the hcall is not supported.
pub const H_FUNCTION: i64 = -2;

/// H_GET_TERM_CHAR: read up to 16 bytes from a virtual terminal.
pub const H_GET_TERM_CHAR: u64 = 0x54;
/// H_PUT_TERM_CHAR: write up to 16 bytes to a virtual terminal.
pub const H_PUT_TERM_CHAR: u64 = 0x58;
/// KVMPPC_H_RTAS: the KVM/QEMU private hcall the RTAS blob makes, r4 = argument block.
pub const KVMPPC_H_RTAS: u64 = 0xf000;

/// Most bytes one terminal hcall moves.
pub const TERM_CHARS_MAX: usize = 16;

/// A virtual terminal the guest reads and writes through hcalls.
pub trait TermConsole {
    /// Takes bytes the guest wrote.
    fn write(&mut self, bytes: &[u8]);
    /// Fills `buf` with pending input; returns how many bytes were filled (0 if none).
    fn read(&mut self, buf: &mut [u8]) -> usize;
}

/// What an hcall returns: r3 and the output registers r4–r6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HcallReturn {
    /// r3: the PAPR return code.
    pub ret: i64,
    /// r4, r5, r6.
    pub out: [u64; 3],
}

impl HcallReturn {
    fn code(ret: i64) -> Self {
        Self { ret, out: [0; 3] }
    }
}

/// H_PUT_TERM_CHAR for terminal `termno` (r4) with `len` (r5) bytes in `hi` (r6) and
/// `lo` (r7). Only terminal `vty_reg` exists.
pub fn put_term_char(
    console: &mut dyn TermConsole,
    vty_reg: u32,
    termno: u64,
    len: u64,
    hi: u64,
    lo: u64,
) -> HcallReturn {
    if termno != u64::from(vty_reg) {
        return HcallReturn::code(H_PARAMETER);
    }
    let Ok(len) = usize::try_from(len) else {
        return HcallReturn::code(H_PARAMETER);
    };
    if len > TERM_CHARS_MAX {
        return HcallReturn::code(H_PARAMETER);
    }
    let mut bytes = [0u8; TERM_CHARS_MAX];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    console.write(&bytes[..len]);
    HcallReturn::code(H_SUCCESS)
}

/// H_GET_TERM_CHAR for terminal `termno` (r4): the count in r4, the bytes in r5–r6.
pub fn get_term_char(console: &mut dyn TermConsole, vty_reg: u32, termno: u64) -> HcallReturn {
    if termno != u64::from(vty_reg) {
        return HcallReturn::code(H_PARAMETER);
    }
    let mut bytes = [0u8; TERM_CHARS_MAX];
    let n = console.read(&mut bytes).min(TERM_CHARS_MAX);
    let hi = u64::from_be_bytes(bytes[..8].try_into().expect("8 of 16 bytes"));
    let lo = u64::from_be_bytes(bytes[8..].try_into().expect("8 of 16 bytes"));
    HcallReturn {
        ret: H_SUCCESS,
        out: [n as u64, hi, lo],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ppc64le::layout::VTY_REG;

    #[derive(Default)]
    struct Term {
        out: Vec<u8>,
        input: Vec<u8>,
    }

    impl TermConsole for Term {
        fn write(&mut self, bytes: &[u8]) {
            self.out.extend_from_slice(bytes);
        }
        fn read(&mut self, buf: &mut [u8]) -> usize {
            let n = buf.len().min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input.drain(..n);
            n
        }
    }

    #[test]
    fn hcall_numbers_are_papr_s() {
        assert_eq!(H_GET_TERM_CHAR, 84);
        assert_eq!(H_PUT_TERM_CHAR, 88);
    }

    #[test]
    fn put_term_char_takes_bytes_big_endian_from_r6_r7() {
        let mut term = Term::default();
        // "Hello, POWER!\r\n" as Linux packs it: cpu_to_be64 of the first 8 bytes in r6.
        let r6 = 0x4865_6c6c_6f2c_2050; // "Hello, P"
        let r7 = 0x4f57_4552_210d_0a00; // "OWER!\r\n"
        let r = put_term_char(&mut term, VTY_REG, 0x3000_0000, 15, r6, r7);
        assert_eq!(r.ret, H_SUCCESS);
        assert_eq!(term.out, b"Hello, POWER!\r\n");
    }

    #[test]
    fn put_term_char_rejects_other_terminals_and_long_counts() {
        let mut term = Term::default();
        assert_eq!(
            put_term_char(&mut term, VTY_REG, 0x3000_0001, 1, 0, 0).ret,
            H_PARAMETER
        );
        assert_eq!(
            put_term_char(&mut term, VTY_REG, 0x3000_0000, 17, 0, 0).ret,
            H_PARAMETER
        );
        assert!(term.out.is_empty());
    }

    #[test]
    fn get_term_char_returns_count_and_big_endian_bytes() {
        let mut term = Term {
            input: b"ls\r".to_vec(),
            ..Term::default()
        };
        let r = get_term_char(&mut term, VTY_REG, 0x3000_0000);
        assert_eq!(r.ret, H_SUCCESS);
        assert_eq!(r.out, [3, 0x6c73_0d00_0000_0000, 0]);
        let r = get_term_char(&mut term, VTY_REG, 0x3000_0000);
        assert_eq!(r.out[0], 0, "no pending input reads as zero bytes");
    }
}

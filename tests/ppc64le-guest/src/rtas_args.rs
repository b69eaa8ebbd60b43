//! The RTAS argument block (LoPAR "RTAS Argument Call Buffer"): big-endian 32-bit words
//! whatever the caller's byte order — `token`, `nargs`, `nret`, then the arguments, then
//! room for the returns (the first return is the status).

/// Most arguments plus returns one call carries.
pub const MAX_WORDS: usize = 16;

/// One call's argument block, laid out as RTAS reads it.
#[repr(C, align(8))]
#[derive(Clone, Debug)]
pub struct ArgBlock {
    words: [u32; 3 + MAX_WORDS],
}

impl ArgBlock {
    /// A call of `token` with `args` and room for `nret` returns; `None` if they do not fit.
    pub fn new(token: u32, args: &[u32], nret: usize) -> Option<Self> {
        if args.len() + nret > MAX_WORDS || nret == 0 {
            return None;
        }
        let mut words = [0u32; 3 + MAX_WORDS];
        words[0] = token.to_be();
        words[1] = (args.len() as u32).to_be();
        words[2] = (nret as u32).to_be();
        for (w, a) in words[3..].iter_mut().zip(args) {
            *w = a.to_be();
        }
        Some(Self { words })
    }

    /// The block's address, for the RTAS entry's r3.
    pub fn as_mut_ptr(&mut self) -> *mut u32 {
        self.words.as_mut_ptr()
    }

    /// Return `i` (0 is the status), as RTAS wrote it.
    pub fn ret(&self, i: usize) -> u32 {
        let nargs = u32::from_be(self.words[1]) as usize;
        u32::from_be(self.words[3 + nargs + i])
    }

    /// The status (return 0) as a signed RTAS status.
    pub fn status(&self) -> i32 {
        self.ret(0) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_is_big_endian_with_returns_after_arguments() {
        let mut b = ArgBlock::new(0x2001, &[7, 0x0102_0304], 3).expect("fits");
        let bytes: std::vec::Vec<u8> = b.words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(&bytes[..12], &[0, 0, 0x20, 0x01, 0, 0, 0, 2, 0, 0, 0, 3]);
        assert_eq!(&bytes[12..20], &[0, 0, 0, 7, 1, 2, 3, 4]);
        // RTAS writes status -3 and a value 0xabcd (big-endian) after the arguments.
        b.words[5] = (-3i32 as u32).to_be();
        b.words[6] = 0xabcdu32.to_be();
        assert_eq!(b.status(), -3);
        assert_eq!(b.ret(1), 0xabcd);
        assert!(!b.as_mut_ptr().is_null());
        assert!(ArgBlock::new(1, &[0; 15], 2).is_none());
        assert!(ArgBlock::new(1, &[], 0).is_none());
    }
}

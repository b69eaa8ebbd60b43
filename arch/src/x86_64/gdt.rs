//! The boot GDT: flat code and data segments for the 64-bit Linux entry and the 32-bit
//! PVH entry, as 8-byte descriptors (written little-endian into guest memory) and as
//! the hidden segment state KVM loads.

/// Index of the code segment (selector 0x8).
pub const CODE_INDEX: u16 = 1;
/// Index of the data segment (selector 0x10).
pub const DATA_INDEX: u16 = 2;
/// Index of the TSS descriptor (selector 0x18).
pub const TSS_INDEX: u16 = 3;

/// Segment descriptor flags/access for a 64-bit code segment (L=1, present, ring 0, exec/read).
pub const CODE64_FLAGS: u16 = 0xa09b;
/// Flags for a 32-bit code segment (D=1, G=1).
pub const CODE32_FLAGS: u16 = 0xc09b;
/// Flags for a flat read/write data segment.
pub const DATA_FLAGS: u16 = 0xc093;
/// Flags for a busy 32/64-bit TSS.
pub const TSS_FLAGS: u16 = 0x808b;

/// Builds a segment descriptor from `flags` (access byte in bits 0..8, flags nibble in
/// 12..16), a base and a 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT for the given code segment flags.
pub fn boot_gdt(code_flags: u16) -> [u64; 4] {
    [
        0,
        gdt_entry(code_flags, 0, 0xfffff),
        gdt_entry(DATA_FLAGS, 0, 0xfffff),
        gdt_entry(TSS_FLAGS, 0, 0xfffff),
    ]
}

/// The GDT as the bytes the guest reads.
pub fn gdt_bytes(gdt: &[u64]) -> Vec<u8> {
    gdt.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// The fields of a descriptor as KVM's hidden segment state wants them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Base address.
    pub base: u64,
    /// Limit in bytes (granularity applied).
    pub limit: u32,
    /// Selector.
    pub selector: u16,
    /// Type nibble.
    pub type_: u8,
    /// Present.
    pub present: u8,
    /// Privilege level.
    pub dpl: u8,
    /// Default operand size (32-bit).
    pub db: u8,
    /// Code/data (1) vs system (0).
    pub s: u8,
    /// 64-bit code.
    pub l: u8,
    /// 4 KiB granularity.
    pub g: u8,
    /// Available for software.
    pub avl: u8,
    /// Unusable (null selector).
    pub unusable: u8,
}

/// Decodes `entry` at GDT index `index` into hidden segment state.
pub fn segment_from_gdt(entry: u64, index: u16) -> Segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = ((((entry >> 48) & 0xf) << 16) | (entry & 0xffff)) as u32;
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    Segment {
        base: ((entry >> 16) & 0x00ff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit,
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code64_descriptor_matches_the_known_value() {
        // The value every Linux-booting VMM uses for a flat 64-bit code segment.
        assert_eq!(gdt_entry(CODE64_FLAGS, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(DATA_FLAGS, 0, 0xfffff), 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn decode_round_trips() {
        let s = segment_from_gdt(gdt_entry(CODE64_FLAGS, 0x1234_5678, 0xfffff), CODE_INDEX);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xffff_ffff);
        assert_eq!(s.selector, 8);
        assert_eq!(
            (s.type_, s.present, s.s, s.l, s.db, s.g),
            (0xb, 1, 1, 1, 0, 1)
        );
        let d = segment_from_gdt(gdt_entry(CODE32_FLAGS, 0, 0xfffff), CODE_INDEX);
        assert_eq!((d.l, d.db), (0, 1));
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn bytes_are_little_endian() {
        let b = gdt_bytes(&boot_gdt(CODE64_FLAGS));
        assert_eq!(b.len(), 32);
        assert_eq!(&b[8..16], &0x00af_9b00_0000_ffffu64.to_le_bytes());
    }
}

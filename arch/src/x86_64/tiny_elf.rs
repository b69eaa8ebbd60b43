//! A minimal x86_64 kernel image for tests and benchmarks (the `test-utils` feature):
//! an ELF64 executable whose one PT_LOAD holds the given code at 1 MiB, optionally with
//! the Xen PVH note, so boot paths can be exercised without a real kernel.

/// An ELF64 executable with `code` loaded and entered at 1 MiB, with a Xen PVH note
/// naming the same entry if `pvh`. The same bytes run in 32-bit protected mode (PVH)
/// and in long mode (64-bit boot protocol) as long as they only use instructions that
/// encode alike in both.
pub fn elf(code: &[u8], pvh: bool) -> Vec<u8> {
    const ENTRY: u64 = 0x10_0000;
    let mut note = Vec::new();
    if pvh {
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&(ENTRY as u32).to_le_bytes());
    }
    let phnum: u16 = if pvh { 2 } else { 1 };
    let code_off = 64 + 56 * u64::from(phnum);
    let pad = (4 - code.len() % 4) % 4;
    let mut out = Vec::new();
    out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&0x3eu16.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&ENTRY.to_le_bytes());
    out.extend_from_slice(&64u64.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&64u16.to_le_bytes());
    out.extend_from_slice(&56u16.to_le_bytes());
    out.extend_from_slice(&phnum.to_le_bytes());
    out.extend_from_slice(&[0u8; 6]);
    let ph = |out: &mut Vec<u8>, ty: u32, off: u64, addr: u64, len: u64| {
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&7u32.to_le_bytes());
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&4u64.to_le_bytes());
    };
    ph(&mut out, 1, code_off, ENTRY, code.len() as u64);
    if pvh {
        ph(
            &mut out,
            4,
            code_off + (code.len() + pad) as u64,
            0,
            note.len() as u64,
        );
    }
    out.extend_from_slice(code);
    out.extend(std::iter::repeat_n(0u8, pad));
    out.extend_from_slice(&note);
    out
}

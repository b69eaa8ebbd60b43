//! Loading a ppc64le ELF vmlinux. linux-loader's ELF loader is x86/aarch64/riscv only, so
//! this parses the ELF64 little-endian header and program headers itself (System V gABI
//! and the 64-bit ELF ABI for Power), with every offset and size checked against the
//! file, and copies each `PT_LOAD` segment to its physical address.
//!
//! vmlinux links at 0xc000_0000_0000_0000 (the kernel's linear map) with physical
//! addresses from 0; like QEMU's pseries we strip the top nibble of the entry and of any
//! segment address that carries it, so the kernel lands where it runs with translation
//! off.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// ELF machine number of 64-bit PowerPC.
pub const EM_PPC64: u16 = 21;
/// Segment type: loadable.
pub const PT_LOAD: u32 = 1;
/// Mask that turns a kernel linear-map address into a physical one.
pub const PHYS_MASK: u64 = 0x0fff_ffff_ffff_ffff;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// Errors loading the kernel.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Unknown `--boot` value.
    #[error("Unknown boot protocol {0:?} (expected auto)")]
    UnknownProtocol(String),
    /// Not an ELF64 little-endian ppc64 executable.
    #[error("Kernel is not a 64-bit little-endian PowerPC ELF: {0}")]
    NotPpc64Le(&'static str),
    /// A header points outside the file.
    #[error("Kernel ELF is truncated or malformed: {0}")]
    Malformed(&'static str),
    /// A segment does not fit guest memory.
    #[error("Kernel segment at {addr:#x} ({size} bytes) does not fit guest memory")]
    SegmentOutsideMemory {
        /// Physical load address.
        addr: u64,
        /// Size in memory.
        size: u64,
    },
}

/// Which entry protocol to use. ppc64le has one: the kernel entered directly with a flattened device tree in r3;
/// `auto` is accepted so one command line serves every architecture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BootProtocol {
    /// The only protocol: ELF vmlinux at its physical addresses, FDT in r3, no firmware.
    #[default]
    Auto,
}

impl std::str::FromStr for BootProtocol {
    type Err = BootError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            other => Err(BootError::UnknownProtocol(other.to_string())),
        }
    }
}

/// Smallest guest memory we boot: the kernel from 0, the RTAS blob and the 1 MiB device tree at the top of the real mode area.
pub const MIN_MEMORY: u64 = 16 << 20;

/// Where the loaded kernel starts and ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedKernel {
    /// Physical entry point.
    pub entry: u64,
    /// First byte past the highest loaded segment.
    pub end: u64,
}

fn field<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], BootError> {
    b.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or(BootError::Malformed("header past the end of the file"))
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, BootError> {
    Ok(u16::from_le_bytes(field(b, at)?))
}
fn u32_at(b: &[u8], at: usize) -> Result<u32, BootError> {
    Ok(u32::from_le_bytes(field(b, at)?))
}
fn u64_at(b: &[u8], at: usize) -> Result<u64, BootError> {
    Ok(u64::from_le_bytes(field(b, at)?))
}

/// Loads the ELF `image` into `mem`: each `PT_LOAD` segment's file bytes at its physical
/// address, the rest of its memory size zeroed.
pub fn load_elf<M: GuestMemory>(mem: &M, image: &[u8]) -> Result<LoadedKernel, BootError> {
    if image.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(BootError::NotPpc64Le("no ELF magic"));
    }
    if image.get(4) != Some(&2) {
        return Err(BootError::NotPpc64Le("not ELFCLASS64"));
    }
    if image.get(5) != Some(&1) {
        return Err(BootError::NotPpc64Le("not ELFDATA2LSB"));
    }
    if u16_at(image, 18)? != EM_PPC64 {
        return Err(BootError::NotPpc64Le("e_machine is not EM_PPC64"));
    }
    let entry = u64_at(image, 24)? & PHYS_MASK;
    let phoff = u64_at(image, 32)?;
    let phentsize = u16_at(image, 54)?;
    let phnum = u16_at(image, 56)?;
    if image.len() < EHDR_SIZE || usize::from(phentsize) < PHDR_SIZE {
        return Err(BootError::Malformed("short ELF or program header"));
    }
    let mut end = 0u64;
    for i in 0..u64::from(phnum) {
        let at = phoff
            .checked_add(i * u64::from(phentsize))
            .and_then(|a| usize::try_from(a).ok())
            .ok_or(BootError::Malformed("program header offset"))?;
        if u32_at(image, at)? != PT_LOAD {
            continue;
        }
        let offset = u64_at(image, at + 8)?;
        let paddr = u64_at(image, at + 24)? & PHYS_MASK;
        let filesz = u64_at(image, at + 32)?;
        let memsz = u64_at(image, at + 40)?;
        if filesz > memsz {
            return Err(BootError::Malformed(
                "segment file size exceeds memory size",
            ));
        }
        let data = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(filesz).ok())
            .and_then(|(o, n)| image.get(o..o.checked_add(n)?))
            .ok_or(BootError::Malformed("segment past the end of the file"))?;
        let seg_end = paddr
            .checked_add(memsz)
            .ok_or(BootError::SegmentOutsideMemory {
                addr: paddr,
                size: memsz,
            })?;
        let outside = |_| BootError::SegmentOutsideMemory {
            addr: paddr,
            size: memsz,
        };
        mem.write_slice(data, GuestAddress(paddr))
            .map_err(outside)?;
        let zeros = vec![0u8; (memsz - filesz) as usize];
        mem.write_slice(&zeros, GuestAddress(paddr + filesz))
            .map_err(outside)?;
        end = end.max(seg_end);
    }
    if end == 0 {
        return Err(BootError::Malformed("no loadable segment"));
    }
    Ok(LoadedKernel { entry, end })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    /// A minimal ELF64 LE ppc64 executable written field by field from the gABI layout:
    /// one PT_LOAD of 8 file bytes and 8 bss bytes at 0xc000000000010000.
    fn elf() -> Vec<u8> {
        let mut e = vec![0u8; 0x100];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2; // ELFCLASS64
        e[5] = 1; // ELFDATA2LSB
        e[6] = 1; // EV_CURRENT
        e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        e[18..20].copy_from_slice(&21u16.to_le_bytes()); // EM_PPC64
        e[24..32].copy_from_slice(&0xc000_0000_0001_0000u64.to_le_bytes()); // e_entry
        e[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        e[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        e[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        e[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let p = 64;
        e[p..p + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        e[p + 8..p + 16].copy_from_slice(&0xf0u64.to_le_bytes()); // p_offset
        e[p + 16..p + 24].copy_from_slice(&0xc000_0000_0001_0000u64.to_le_bytes()); // vaddr
        e[p + 24..p + 32].copy_from_slice(&0xc000_0000_0001_0000u64.to_le_bytes()); // paddr
        e[p + 32..p + 40].copy_from_slice(&8u64.to_le_bytes()); // p_filesz
        e[p + 40..p + 48].copy_from_slice(&16u64.to_le_bytes()); // p_memsz
        e[0xf0..0xf8].copy_from_slice(&[0x48, 0, 0, 0x08, 0x60, 0, 0, 0]); // tdi/nop bytes
        e
    }

    #[test]
    fn loads_segment_at_physical_address_and_zeroes_bss() {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x2_0000)]).unwrap();
        mem.write_slice(&[0xaa; 16], GuestAddress(0x1_0000))
            .unwrap();
        let k = load_elf(&mem, &elf()).unwrap();
        assert_eq!(
            k,
            LoadedKernel {
                entry: 0x1_0000,
                end: 0x1_0010
            }
        );
        let mut got = [0u8; 16];
        mem.read_slice(&mut got, GuestAddress(0x1_0000)).unwrap();
        assert_eq!(
            got,
            [0x48, 0, 0, 0x08, 0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn rejects_other_elves_and_truncation() {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x2_0000)]).unwrap();
        let mut be = elf();
        be[5] = 2;
        assert!(matches!(load_elf(&mem, &be), Err(BootError::NotPpc64Le(_))));
        let mut x86 = elf();
        x86[18] = 62;
        assert!(matches!(
            load_elf(&mem, &x86),
            Err(BootError::NotPpc64Le(_))
        ));
        let mut past = elf();
        past[64 + 32] = 0x40; // p_filesz 0x40 runs past the 0x100-byte file
        past[64 + 40] = 0x40;
        assert!(matches!(
            load_elf(&mem, &past),
            Err(BootError::Malformed(_))
        ));
        assert!(load_elf(&mem, &elf()[..60]).is_err());
        let small: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1_0008)]).unwrap();
        assert!(matches!(
            load_elf(&small, &elf()),
            Err(BootError::SegmentOutsideMemory { .. })
        ));
    }
}

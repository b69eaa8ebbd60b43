//! What the VMM handed over at entry, from either boot protocol, copied into one [`BootInfo`].
//!
//! - PVH: `struct hvm_start_info` (Xen's `arch-x86/hvm/start_info.h`): magic `0x336ec578`,
//!   command line, module list (the first module is the initrd), memory map, RSDP address.
//! - 64-bit Linux boot protocol: `struct boot_params` (the zero page, Linux's
//!   `Documentation/arch/x86/boot.rst` and `zero-page.rst`): `e820_table`, `cmd_line_ptr`,
//!   `ramdisk_image`/`ramdisk_size` (with their `ext_` high halves), `acpi_rsdp_addr`.
//!
//! Parsing reads guest-physical memory through [`PhysMem`], so it is unit-tested on a buffer.

use core::fmt;

/// `hvm_start_info.magic`.
pub const PVH_MAGIC: u32 = 0x336e_c578;
/// `setup_header.header`: "HdrS".
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// Room for the command line we copy.
pub const CMDLINE_MAX: usize = 2048;
/// `boot_params.e820_table` has 128 slots; PVH maps are cut to the same.
pub const E820_MAX: usize = 128;
/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;

/// Which protocol entered the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootMode {
    /// PVH: 32-bit entry from the ELF note with `hvm_start_info`.
    Pvh,
    /// 64-bit Linux boot protocol with `boot_params`.
    Linux64,
}

impl BootMode {
    /// The value of the `boot=` key.
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Pvh => "pvh",
            BootMode::Linux64 => "linux64",
        }
    }
}

/// One memory map entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// Everything the guest uses from the boot structures.
pub struct BootInfo {
    pub mode: BootMode,
    /// Physical address of `hvm_start_info` or `boot_params`.
    pub info_addr: u64,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    /// The command line was longer than [`CMDLINE_MAX`] (or unterminated) and was cut.
    pub cmdline_truncated: bool,
    e820: [E820Entry; E820_MAX],
    e820_len: usize,
    /// `(start, size)` of the initrd, if the VMM passed one.
    pub initrd: Option<(u64, u64)>,
    /// RSDP address from the boot structure (0 = not given: search the BIOS areas).
    pub rsdp: u64,
    /// `hvm_start_info.version` or the boot protocol version (`setup_header.version`).
    pub version: u32,
}

/// Read access to guest-physical memory.
pub trait PhysMem {
    /// Fills `buf` from physical address `addr`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), BootInfoError>;
}

/// Why the boot structure could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// `hvm_start_info.magic` is wrong.
    BadPvhMagic(u32),
    /// A pointer in the boot structure points outside what the guest maps.
    Unmapped { what: &'static str, addr: u64 },
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::BadPvhMagic(m) => write!(f, "bad hvm_start_info magic {m:#x}"),
            BootInfoError::Unmapped { what, addr } => {
                write!(f, "{what} at {addr:#x} is not mapped")
            }
        }
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from(u32_at(b, off)) | (u64::from(u32_at(b, off + 4)) << 32)
}

impl BootInfo {
    fn empty(mode: BootMode, info_addr: u64) -> BootInfo {
        BootInfo {
            mode,
            info_addr,
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
            cmdline_truncated: false,
            e820: [E820Entry::default(); E820_MAX],
            e820_len: 0,
            initrd: None,
            rsdp: 0,
            version: 0,
        }
    }

    /// Parses `hvm_start_info` at `addr`.
    pub fn from_pvh(mem: &impl PhysMem, addr: u64) -> Result<BootInfo, BootInfoError> {
        let mut si = [0u8; 56];
        mem.read(addr, &mut si)?;
        let magic = u32_at(&si, 0);
        if magic != PVH_MAGIC {
            return Err(BootInfoError::BadPvhMagic(magic));
        }
        let mut info = BootInfo::empty(BootMode::Pvh, addr);
        info.version = u32_at(&si, 4);
        let nr_modules = u32_at(&si, 12);
        let modlist = u64_at(&si, 16);
        let cmdline = u64_at(&si, 24);
        info.rsdp = u64_at(&si, 32);
        if nr_modules > 0 && modlist != 0 {
            let mut m = [0u8; 32];
            mem.read(modlist, &mut m)?;
            info.initrd = Some((u64_at(&m, 0), u64_at(&m, 8)));
        }
        if cmdline != 0 {
            info.read_cmdline(mem, cmdline, CMDLINE_MAX)?;
        }
        if info.version >= 1 {
            let memmap = u64_at(&si, 40);
            let entries = u32_at(&si, 48) as usize;
            for i in 0..entries.min(E820_MAX) {
                let mut e = [0u8; 24];
                mem.read(memmap + 24 * i as u64, &mut e)?;
                info.push_e820(E820Entry {
                    addr: u64_at(&e, 0),
                    size: u64_at(&e, 8),
                    kind: u32_at(&e, 16),
                });
            }
        }
        Ok(info)
    }

    /// Parses `boot_params` (the zero page) at `addr`.
    pub fn from_boot_params(mem: &impl PhysMem, addr: u64) -> Result<BootInfo, BootInfoError> {
        let mut zp = [0u8; 4096];
        mem.read(addr, &mut zp)?;
        let mut info = BootInfo::empty(BootMode::Linux64, addr);
        let has_header = u32_at(&zp, 0x202) == HDRS_MAGIC;
        info.version = if has_header {
            u32::from(u16::from_le_bytes([zp[0x206], zp[0x207]]))
        } else {
            0
        };
        info.rsdp = u64_at(&zp, 0x070);
        let cmdline = u64::from(u32_at(&zp, 0x228)) | (u64::from(u32_at(&zp, 0x0c8)) << 32);
        // Like Linux's copy_bootdata: up to its own buffer size, whatever `cmdline_size` says
        // (that field is the kernel's advertisement to the loader, not the loader's input).
        if cmdline != 0 {
            info.read_cmdline(mem, cmdline, CMDLINE_MAX)?;
        }
        let rd_start = u64::from(u32_at(&zp, 0x218)) | (u64::from(u32_at(&zp, 0x0c0)) << 32);
        let rd_size = u64::from(u32_at(&zp, 0x21c)) | (u64::from(u32_at(&zp, 0x0c4)) << 32);
        if rd_start != 0 && rd_size != 0 {
            info.initrd = Some((rd_start, rd_size));
        }
        let entries = usize::from(zp[0x1e8]).min(E820_MAX);
        for i in 0..entries {
            let e = &zp[0x2d0 + 20 * i..0x2d0 + 20 * (i + 1)];
            info.push_e820(E820Entry {
                addr: u64_at(e, 0),
                size: u64_at(e, 8),
                kind: u32_at(e, 16),
            });
        }
        Ok(info)
    }

    fn push_e820(&mut self, entry: E820Entry) {
        if self.e820_len < E820_MAX {
            self.e820[self.e820_len] = entry;
            self.e820_len += 1;
        }
    }

    /// Copies a NUL-terminated string of at most `max` bytes (terminator included).
    fn read_cmdline(
        &mut self,
        mem: &impl PhysMem,
        addr: u64,
        max: usize,
    ) -> Result<(), BootInfoError> {
        let max = max.min(CMDLINE_MAX);
        let mut chunk = [0u8; 64];
        let mut len = 0;
        while len < max {
            let n = chunk.len().min(max - len);
            mem.read(addr + len as u64, &mut chunk[..n])?;
            if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
                self.cmdline[len..len + end].copy_from_slice(&chunk[..end]);
                self.cmdline_len = len + end;
                return Ok(());
            }
            self.cmdline[len..len + n].copy_from_slice(&chunk[..n]);
            len += n;
        }
        self.cmdline_len = len;
        self.cmdline_truncated = true;
        Ok(())
    }

    /// The command line's bytes (not necessarily UTF-8).
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline[..self.cmdline_len]
    }

    /// The memory map, in the order the VMM gave it.
    pub fn e820(&self) -> &[E820Entry] {
        &self.e820[..self.e820_len]
    }

    /// Bytes of usable RAM (e820 type 1) in the map.
    pub fn ram_total(&self) -> u64 {
        self.e820()
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum()
    }
}

/// Shows bytes as text, escaping anything that is not printable ASCII as `\xNN` (and `\` as
/// `\\`), so one line stays one line.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            match b {
                b'\\' => f.write_str("\\\\")?,
                0x20..=0x7e => fmt::Write::write_char(f, char::from(b))?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    struct Buf(Vec<u8>);

    impl PhysMem for Buf {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), BootInfoError> {
            let a = addr as usize;
            let src = self
                .0
                .get(a..a + buf.len())
                .ok_or(BootInfoError::Unmapped { what: "test", addr })?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    fn put(mem: &mut [u8], off: usize, bytes: &[u8]) {
        mem[off..off + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn parses_hvm_start_info() {
        let mut m = vec![0u8; 0x10000];
        put(&mut m, 0x1000, &PVH_MAGIC.to_le_bytes());
        put(&mut m, 0x1004, &1u32.to_le_bytes());
        put(&mut m, 0x100c, &1u32.to_le_bytes());
        put(&mut m, 0x1010, &0x2000u64.to_le_bytes());
        put(&mut m, 0x1018, &0x3000u64.to_le_bytes());
        put(&mut m, 0x1020, &0xe0000u64.to_le_bytes());
        put(&mut m, 0x1028, &0x4000u64.to_le_bytes());
        put(&mut m, 0x1030, &2u32.to_le_bytes());
        put(&mut m, 0x2000, &0x800_0000u64.to_le_bytes());
        put(&mut m, 0x2008, &0x1234u64.to_le_bytes());
        put(&mut m, 0x3000, b"console=ttyS0 poweroff\0");
        put(&mut m, 0x4000, &0u64.to_le_bytes());
        put(&mut m, 0x4008, &0x9fc00u64.to_le_bytes());
        put(&mut m, 0x4010, &1u32.to_le_bytes());
        put(&mut m, 0x4018, &0x10_0000u64.to_le_bytes());
        put(&mut m, 0x4020, &0xff0_0000u64.to_le_bytes());
        put(&mut m, 0x4028, &1u32.to_le_bytes());
        let info = BootInfo::from_pvh(&Buf(m), 0x1000).expect("valid start info");
        assert_eq!(info.mode, BootMode::Pvh);
        assert_eq!(info.cmdline(), b"console=ttyS0 poweroff");
        assert_eq!(info.initrd, Some((0x800_0000, 0x1234)));
        assert_eq!(info.rsdp, 0xe0000);
        assert_eq!(info.e820().len(), 2);
        assert_eq!(
            info.e820()[1],
            E820Entry {
                addr: 0x10_0000,
                size: 0xff0_0000,
                kind: 1
            }
        );
        assert_eq!(info.ram_total(), 0x9fc00 + 0xff0_0000);
    }

    #[test]
    fn rejects_bad_pvh_magic() {
        let m = vec![0u8; 0x100];
        assert_eq!(
            BootInfo::from_pvh(&Buf(m), 0).err(),
            Some(BootInfoError::BadPvhMagic(0))
        );
    }

    #[test]
    fn parses_boot_params() {
        let mut m = vec![0u8; 0x40000];
        let zp = 0x7000;
        put(&mut m, zp + 0x202, &HDRS_MAGIC.to_le_bytes());
        put(&mut m, zp + 0x206, &0x20fu16.to_le_bytes());
        put(&mut m, zp + 0x228, &0x20000u32.to_le_bytes());
        put(&mut m, zp + 0x238, &16u32.to_le_bytes());
        put(&mut m, zp + 0x218, &0x30000u32.to_le_bytes());
        put(&mut m, zp + 0x0c0, &1u32.to_le_bytes());
        put(&mut m, zp + 0x21c, &0x100u32.to_le_bytes());
        put(&mut m, zp + 0x070, &0xf0000u64.to_le_bytes());
        m[zp + 0x1e8] = 1;
        put(&mut m, zp + 0x2d0, &0x10_0000u64.to_le_bytes());
        put(&mut m, zp + 0x2d8, &0x100_0000u64.to_le_bytes());
        put(&mut m, zp + 0x2e0, &1u32.to_le_bytes());
        put(&mut m, 0x20000, b"console=ttyS0 reset and more text\0");
        let info = BootInfo::from_boot_params(&Buf(m), zp as u64).expect("valid zero page");
        assert_eq!(info.mode, BootMode::Linux64);
        // cmdline_size is the kernel's limit for loaders; the guest reads up to its own.
        assert_eq!(info.cmdline(), b"console=ttyS0 reset and more text");
        assert!(!info.cmdline_truncated);
        assert_eq!(info.initrd, Some((0x1_0003_0000, 0x100)));
        assert_eq!(info.rsdp, 0xf0000);
        assert_eq!(info.ram_total(), 0x100_0000);
    }

    #[test]
    fn unterminated_cmdline_is_cut_and_flagged() {
        let mut m = vec![0u8; 0x40000];
        put(&mut m, 0x7000 + 0x228, &0x21000u32.to_le_bytes());
        put(&mut m, 0x21000, &[b'x'; CMDLINE_MAX + 10]);
        let info = BootInfo::from_boot_params(&Buf(m), 0x7000).expect("valid zero page");
        assert_eq!(info.cmdline().len(), CMDLINE_MAX);
        assert!(info.cmdline_truncated);
    }

    #[test]
    fn escapes_unprintable_bytes() {
        assert_eq!(
            std::format!("{}", Escaped(b"a b\n\\\xff")),
            "a b\\x0a\\\\\\xff"
        );
    }
}

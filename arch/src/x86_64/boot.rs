//! Direct kernel boot on x86_64: load a bzImage or ELF vmlinux with linux-loader, place
//! the initrd and command line, and write the hand-off the kernel expects: the Linux
//! 64-bit boot protocol (`boot_params` with e820, RSI → zero page) or PVH
//! (`hvm_start_info` with a memory map, EBX → start info, 32-bit protected mode entry).
//! Both get the ACPI tables, the boot GDT and the identity-mapped page tables.

use std::str::FromStr;

use super::acpi;
#[cfg(target_arch = "x86_64")]
use super::{e820, layout};

/// Which entry protocol to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BootProtocol {
    /// PVH if the kernel is an ELF with the Xen PVH note, the 64-bit boot protocol otherwise.
    #[default]
    Auto,
    /// PVH: 32-bit protected mode at the PVH note's entry, `hvm_start_info` in EBX.
    Pvh,
    /// Linux 64-bit boot protocol: long mode, `boot_params` in RSI.
    Linux64,
}

impl FromStr for BootProtocol {
    type Err = BootError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "pvh" => Ok(Self::Pvh),
            "linux64" => Ok(Self::Linux64),
            other => Err(BootError::UnknownProtocol(other.to_string())),
        }
    }
}

/// The protocol actually used, with where the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEntry {
    /// Enter at `entry` in 32-bit protected mode with EBX = `start_info`.
    Pvh {
        /// PVH entry point.
        entry: u64,
        /// Address of `hvm_start_info`.
        start_info: u64,
    },
    /// Enter at `entry` in long mode with RSI = `boot_params`.
    Linux64 {
        /// 64-bit entry point.
        entry: u64,
        /// Address of the zero page.
        boot_params: u64,
    },
}

/// Errors loading or configuring the boot.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Unknown `--boot` value.
    #[error("Unknown boot protocol {0:?} (expected auto, pvh or linux64)")]
    UnknownProtocol(String),
    /// Neither an ELF nor a bzImage.
    #[error("Kernel image is neither an ELF vmlinux nor a bzImage: {0}")]
    BadKernel(String),
    /// PVH asked for, no note.
    #[error("Kernel has no PVH entry note; use --boot linux64")]
    NoPvhNote,
    /// bzImage too old or not 64-bit capable.
    #[error("bzImage does not support the 64-bit boot protocol (version {version:#x}, xloadflags {xloadflags:#x})")]
    NoLinux64 {
        /// Boot protocol version of the header.
        version: u16,
        /// Its xloadflags.
        xloadflags: u16,
    },
    /// The initrd could not be placed.
    #[error("Initrd of {0} bytes does not fit in guest memory")]
    InitrdTooLarge(u64),
    /// Reading the initrd failed.
    #[error("Cannot read initrd")]
    InitrdRead(#[source] std::io::Error),
    /// Command line too long.
    #[error("Command line of {len} bytes exceeds the limit of {max}")]
    CmdlineTooLong {
        /// Its length with the NUL.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Command line contains a NUL.
    #[error("Command line contains a NUL byte")]
    CmdlineNul,
    /// Memory too small for the fixed layout.
    #[error("Guest memory of {0} bytes is too small to boot")]
    MemoryTooSmall(u64),
    /// Too many memory map entries.
    #[error("Memory map has too many entries")]
    MemmapTooLarge,
    /// ACPI tables.
    #[error("Cannot build ACPI tables")]
    Acpi(#[from] acpi::AcpiError),
    /// Writing to guest memory.
    #[error("Cannot write {what} to guest memory")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// The failure.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// Smallest guest memory we boot: the fixed low areas plus a few MiB above 1 MiB.
pub const MIN_MEMORY: u64 = 8 << 20;

/// The highest page-aligned address for an initrd of `size` bytes that ends at or below
/// `limit` (exclusive) and starts at or above `floor`.
///
/// ```
/// use arch::x86_64::boot::initrd_address;
/// assert_eq!(initrd_address(0x1800, 0x20_0000, 0x100_0000), Some(0xff_e000));
/// assert_eq!(initrd_address(0x100_0000, 0x20_0000, 0x100_0000), None);
/// ```
pub fn initrd_address(size: u64, floor: u64, limit: u64) -> Option<u64> {
    let start = limit.checked_sub(size)? & !0xfff;
    (start >= floor).then_some(start)
}

/// Validates a command line against the limit and returns its bytes with a NUL.
pub fn cmdline_bytes(cmdline: &str, max: usize) -> Result<Vec<u8>, BootError> {
    if cmdline.as_bytes().contains(&0) {
        return Err(BootError::CmdlineNul);
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    if bytes.len() > max {
        return Err(BootError::CmdlineTooLong {
            len: bytes.len(),
            max,
        });
    }
    Ok(bytes)
}

#[cfg(target_arch = "x86_64")]
pub use self::loader::*;

#[cfg(target_arch = "x86_64")]
mod loader {
    use std::fs::File;
    use std::io::{Seek, SeekFrom};

    use linux_loader::configurator::pvh::PvhBootConfigurator;
    use linux_loader::configurator::{BootConfigurator, BootParams};
    use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
    use linux_loader::loader::bzimage::BzImage;
    use linux_loader::loader::elf::{self, Elf, PvhBootCapability};
    use linux_loader::loader::{KernelLoader, KernelLoaderResult};
    use linux_loader::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, ReadVolatile};

    use super::super::{gdt, paging};
    use super::*;

    pub(super) const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
    const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
    const KERNEL_LOADER_OTHER: u8 = 0xff;
    const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
    const XLF_KERNEL_64: u16 = 1 << 0;
    pub(super) const PVH_MAGIC: u32 = 0x336e_c578;
    const E820_MAX_ENTRIES_ZEROPAGE: usize = 128;

    /// A kernel in guest memory.
    #[derive(Clone, Copy, Debug)]
    pub struct LoadedKernel {
        /// What linux-loader reported.
        pub result: KernelLoaderResult,
        /// True for a bzImage (entry = load address + 0x200), false for an ELF.
        pub bzimage: bool,
    }

    /// Loads `kernel` (ELF vmlinux or bzImage) into `mem` above 1 MiB.
    pub fn load_kernel<M: GuestMemoryBackend>(
        mem: &M,
        kernel: &mut File,
    ) -> Result<LoadedKernel, BootError> {
        let himem = Some(GuestAddress(layout::HIMEM_START));
        match Elf::load(mem, None, kernel, himem) {
            Ok(result) => Ok(LoadedKernel {
                result,
                bzimage: false,
            }),
            Err(linux_loader::loader::Error::Elf(elf::Error::InvalidElfMagicNumber)) => {
                kernel
                    .seek(SeekFrom::Start(0))
                    .map_err(|e| BootError::BadKernel(e.to_string()))?;
                let result = BzImage::load(mem, None, kernel, himem)
                    .map_err(|e| BootError::BadKernel(format!("not an ELF; as a bzImage: {e}")))?;
                Ok(LoadedKernel {
                    result,
                    bzimage: true,
                })
            }
            Err(e) => Err(BootError::BadKernel(e.to_string())),
        }
    }

    /// Loads an initrd of `size` bytes from `file` at the top of low RAM (and below the
    /// kernel's `initrd_addr_max` for a bzImage). Returns its address.
    pub fn load_initrd<M: GuestMemoryBackend, F: ReadVolatile>(
        mem: &M,
        file: &mut F,
        size: u64,
        kernel: &LoadedKernel,
        mem_size: u64,
    ) -> Result<u64, BootError> {
        let mut limit = layout::low_ram_end(mem_size);
        if let Some(hdr) = kernel.result.setup_header {
            let max = u64::from(hdr.initrd_addr_max);
            if max != 0 {
                limit = limit.min(max + 1);
            }
        }
        // linux-loader reports the end of the kernel as a guest address.
        let floor = kernel.result.kernel_end.max(layout::HIMEM_START);
        let addr = initrd_address(size, floor, limit).ok_or(BootError::InitrdTooLarge(size))?;
        let len = usize::try_from(size).map_err(|_| BootError::InitrdTooLarge(size))?;
        mem.read_exact_volatile_from(GuestAddress(addr), file, len)
            .map_err(|e| match e {
                vm_memory::GuestMemoryError::IOError(io) => BootError::InitrdRead(io),
                other => BootError::GuestMemory {
                    what: "initrd",
                    source: other,
                },
            })?;
        Ok(addr)
    }

    /// What [`configure_system`] needs besides the loaded kernel.
    #[derive(Clone, Debug)]
    pub struct BootConfig<'a> {
        /// Kernel command line.
        pub cmdline: &'a str,
        /// Initrd `(address, size)` if one was loaded.
        pub initrd: Option<(u64, u64)>,
        /// Guest RAM in bytes.
        pub mem_size: u64,
        /// APIC ID of each vCPU in order.
        pub apic_ids: &'a [u32],
        /// Requested protocol.
        pub protocol: BootProtocol,
    }

    fn write<M: GuestMemoryBackend>(
        mem: &M,
        addr: u64,
        bytes: &[u8],
        what: &'static str,
    ) -> Result<(), BootError> {
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|source| BootError::GuestMemory { what, source })
    }

    /// Writes the command line, ACPI tables, GDT, page tables and the protocol's hand-off
    /// into `mem`; returns where the boot vCPU starts.
    pub fn configure_system<M: GuestMemoryBackend>(
        mem: &M,
        kernel: &LoadedKernel,
        cfg: &BootConfig,
    ) -> Result<BootEntry, BootError> {
        if cfg.mem_size < MIN_MEMORY {
            return Err(BootError::MemoryTooSmall(cfg.mem_size));
        }
        let pvh_entry = match kernel.result.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) => Some(addr.0),
            _ => None,
        };
        let use_pvh = match cfg.protocol {
            BootProtocol::Pvh => {
                if pvh_entry.is_none() {
                    return Err(BootError::NoPvhNote);
                }
                true
            }
            BootProtocol::Auto => pvh_entry.is_some(),
            BootProtocol::Linux64 => false,
        };

        let mut cmdline_max = layout::CMDLINE_MAX_SIZE;
        if let Some(hdr) = kernel.result.setup_header.filter(|_| kernel.bzimage) {
            if hdr.cmdline_size != 0 {
                cmdline_max = cmdline_max.min(hdr.cmdline_size as usize + 1);
            }
        }
        let cmdline = cmdline_bytes(cfg.cmdline, cmdline_max)?;
        write(mem, layout::CMDLINE_START, &cmdline, "command line")?;

        let tables = acpi::build_tables(cfg.apic_ids, cfg.mem_size)?;
        for (addr, bytes) in &tables.blobs {
            write(mem, *addr, bytes, "ACPI tables")?;
        }
        for (addr, bytes) in paging::identity_map_tables() {
            write(mem, addr, &bytes, "page tables")?;
        }
        let code = if use_pvh {
            gdt::CODE32_FLAGS
        } else {
            gdt::CODE64_FLAGS
        };
        write(
            mem,
            layout::BOOT_GDT_START,
            &gdt::gdt_bytes(&gdt::boot_gdt(code)),
            "GDT",
        )?;
        write(mem, layout::BOOT_IDT_START, &[0u8; 8], "IDT")?;

        let map = e820::memory_map(cfg.mem_size);
        if use_pvh {
            write_pvh(mem, cfg, &map, tables.rsdp_addr)?;
            Ok(BootEntry::Pvh {
                entry: pvh_entry.expect("use_pvh implies an entry"),
                start_info: layout::PVH_INFO_START,
            })
        } else {
            let entry = write_zero_page(mem, kernel, cfg, &map, tables.rsdp_addr)?;
            Ok(BootEntry::Linux64 {
                entry,
                boot_params: layout::ZERO_PAGE_START,
            })
        }
    }

    fn write_pvh<M: GuestMemoryBackend>(
        mem: &M,
        cfg: &BootConfig,
        map: &[e820::E820Entry],
        rsdp: u64,
    ) -> Result<(), BootError> {
        if map.len() > layout::PVH_MEMMAP_MAX_ENTRIES {
            return Err(BootError::MemmapTooLarge);
        }
        let mut info = hvm_start_info {
            magic: PVH_MAGIC,
            version: 1,
            cmdline_paddr: layout::CMDLINE_START,
            rsdp_paddr: rsdp,
            memmap_paddr: layout::PVH_MEMMAP_START,
            memmap_entries: map.len() as u32,
            ..Default::default()
        };
        let mut params = BootParams::new(&info, GuestAddress(layout::PVH_INFO_START));
        if let Some((addr, size)) = cfg.initrd {
            info.nr_modules = 1;
            info.modlist_paddr = layout::PVH_MODLIST_START;
            params = BootParams::new(&info, GuestAddress(layout::PVH_INFO_START));
            params.set_modules(
                &[hvm_modlist_entry {
                    paddr: addr,
                    size,
                    ..Default::default()
                }],
                GuestAddress(layout::PVH_MODLIST_START),
            );
        }
        let entries: Vec<hvm_memmap_table_entry> = map
            .iter()
            .map(|e| hvm_memmap_table_entry {
                addr: e.addr,
                size: e.size,
                type_: e.kind as u32,
                reserved: 0,
            })
            .collect();
        params.set_sections(&entries, GuestAddress(layout::PVH_MEMMAP_START));
        PvhBootConfigurator::write_bootparams(&params, mem).map_err(|e| BootError::GuestMemory {
            what: "PVH start info",
            source: vm_memory::GuestMemoryError::IOError(std::io::Error::other(e.to_string())),
        })
    }

    fn write_zero_page<M: GuestMemoryBackend>(
        mem: &M,
        kernel: &LoadedKernel,
        cfg: &BootConfig,
        map: &[e820::E820Entry],
        rsdp: u64,
    ) -> Result<u64, BootError> {
        let mut params = boot_params::default();
        let entry = match kernel.result.setup_header.filter(|_| kernel.bzimage) {
            Some(hdr) => {
                if hdr.version < 0x020c || hdr.xloadflags & XLF_KERNEL_64 == 0 {
                    return Err(BootError::NoLinux64 {
                        version: hdr.version,
                        xloadflags: hdr.xloadflags,
                    });
                }
                params.hdr = hdr;
                kernel.result.kernel_load.0 + 0x200
            }
            None => {
                params.hdr = setup_header {
                    boot_flag: KERNEL_BOOT_FLAG_MAGIC,
                    header: KERNEL_HDR_MAGIC,
                    kernel_alignment: KERNEL_MIN_ALIGNMENT_BYTES,
                    ..Default::default()
                };
                kernel.result.kernel_load.0
            }
        };
        params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
        params.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
        params.hdr.cmdline_size = (cfg.cmdline.len() + 1) as u32;
        if let Some((addr, size)) = cfg.initrd {
            params.hdr.ramdisk_image = addr as u32;
            params.hdr.ramdisk_size = size as u32;
            params.ext_ramdisk_image = (addr >> 32) as u32;
            params.ext_ramdisk_size = (size >> 32) as u32;
        }
        params.acpi_rsdp_addr = rsdp;
        if map.len() > E820_MAX_ENTRIES_ZEROPAGE {
            return Err(BootError::MemmapTooLarge);
        }
        for (i, e) in map.iter().enumerate() {
            params.e820_table[i] = boot_e820_entry {
                addr: e.addr,
                size: e.size,
                r#type: e.kind as u32,
            };
        }
        params.e820_entries = map.len() as u8;
        mem.write_obj(params, GuestAddress(layout::ZERO_PAGE_START))
            .map_err(|source| BootError::GuestMemory {
                what: "boot_params",
                source,
            })?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names() {
        assert_eq!("pvh".parse::<BootProtocol>().ok(), Some(BootProtocol::Pvh));
        assert_eq!(
            "linux64".parse::<BootProtocol>().ok(),
            Some(BootProtocol::Linux64)
        );
        assert!("uefi".parse::<BootProtocol>().is_err());
    }

    #[test]
    fn cmdline_limits() {
        assert_eq!(cmdline_bytes("a=b", 8).expect("fits"), b"a=b\0");
        assert!(matches!(
            cmdline_bytes("abcdefgh", 8),
            Err(BootError::CmdlineTooLong { len: 9, max: 8 })
        ));
        assert!(matches!(
            cmdline_bytes("a\0b", 8),
            Err(BootError::CmdlineNul)
        ));
    }

    #[test]
    fn initrd_placement() {
        assert_eq!(initrd_address(4096, 0, 8192), Some(4096));
        assert_eq!(initrd_address(4097, 0, 8192), Some(0));
        assert_eq!(initrd_address(4097, 1, 8192), None);
        assert_eq!(initrd_address(u64::MAX, 0, 8192), None);
    }

    #[cfg(target_arch = "x86_64")]
    mod guest_memory {
        use super::super::loader::{KERNEL_BOOT_FLAG_MAGIC, PVH_MAGIC};
        use super::super::*;
        use linux_loader::loader::bootparam::boot_params;
        use linux_loader::start_info::{hvm_modlist_entry, hvm_start_info};
        use std::io::Write;
        use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

        /// A minimal ELF64 with one PT_LOAD (`hlt`) at 1 MiB and, optionally, a PVH note.
        fn elf(pvh: bool) -> Vec<u8> {
            crate::x86_64::tiny_elf::elf(&[0xf4], pvh)
        }

        fn kernel_file(bytes: &[u8]) -> std::fs::File {
            let mut f = tempfile_in_target();
            f.write_all(bytes).expect("write temp kernel");
            f
        }

        fn tempfile_in_target() -> std::fs::File {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "arch-boot-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .expect("create temp file");
            std::fs::remove_file(&path).expect("unlink temp file");
            f
        }

        fn mem(size: u64) -> GuestMemoryMmap {
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).expect("mmap")
        }

        #[test]
        fn pvh_boot_writes_start_info() {
            let m = mem(64 << 20);
            let mut f = kernel_file(&elf(true));
            let k = load_kernel(&m, &mut f).expect("loads");
            let cfg = BootConfig {
                cmdline: "console=ttyS0",
                initrd: Some((0x200_0000, 0x1000)),
                mem_size: 64 << 20,
                apic_ids: &[0, 1],
                protocol: BootProtocol::Auto,
            };
            let entry = configure_system(&m, &k, &cfg).expect("configures");
            assert_eq!(
                entry,
                BootEntry::Pvh {
                    entry: 0x10_0000,
                    start_info: layout::PVH_INFO_START
                }
            );
            let info: hvm_start_info = m
                .read_obj(GuestAddress(layout::PVH_INFO_START))
                .expect("read");
            assert_eq!({ info.magic }, PVH_MAGIC);
            assert_eq!({ info.nr_modules }, 1);
            assert_eq!(
                { info.memmap_entries } as usize,
                e820::memory_map(64 << 20).len()
            );
            let module: hvm_modlist_entry = m
                .read_obj(GuestAddress(layout::PVH_MODLIST_START))
                .expect("read");
            assert_eq!(({ module.paddr }, { module.size }), (0x200_0000, 0x1000));
            let mut cmd = [0u8; 14];
            m.read_slice(&mut cmd, GuestAddress(layout::CMDLINE_START))
                .expect("read");
            assert_eq!(&cmd, b"console=ttyS0\0");
            let mut sig = [0u8; 8];
            m.read_slice(&mut sig, GuestAddress(info.rsdp_paddr))
                .expect("read");
            assert_eq!(&sig, b"RSD PTR ");
        }

        #[test]
        fn linux64_boot_writes_zero_page() {
            let m = mem(64 << 20);
            let mut f = kernel_file(&elf(true));
            let k = load_kernel(&m, &mut f).expect("loads");
            let cfg = BootConfig {
                cmdline: "quiet",
                initrd: None,
                mem_size: 64 << 20,
                apic_ids: &[0],
                protocol: BootProtocol::Linux64,
            };
            let entry = configure_system(&m, &k, &cfg).expect("configures");
            assert_eq!(
                entry,
                BootEntry::Linux64 {
                    entry: 0x10_0000,
                    boot_params: layout::ZERO_PAGE_START
                }
            );
            let p: boot_params = m
                .read_obj(GuestAddress(layout::ZERO_PAGE_START))
                .expect("read");
            assert_eq!({ p.hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
            assert_eq!({ p.hdr.cmd_line_ptr } as u64, layout::CMDLINE_START);
            assert_eq!(p.e820_entries as usize, e820::memory_map(64 << 20).len());
            assert_eq!({ p.acpi_rsdp_addr }, layout::ACPI_START);
        }

        #[test]
        fn pvh_without_note_is_refused() {
            let m = mem(64 << 20);
            let mut f = kernel_file(&elf(false));
            let k = load_kernel(&m, &mut f).expect("loads");
            let cfg = BootConfig {
                cmdline: "",
                initrd: None,
                mem_size: 64 << 20,
                apic_ids: &[0],
                protocol: BootProtocol::Pvh,
            };
            assert!(matches!(
                configure_system(&m, &k, &cfg),
                Err(BootError::NoPvhNote)
            ));
        }

        #[test]
        fn garbage_is_a_clear_error() {
            let m = mem(64 << 20);
            let mut f = kernel_file(b"this is not a kernel at all, not even close......");
            let err = load_kernel(&m, &mut f).expect_err("garbage");
            assert!(err.to_string().contains("neither an ELF"), "{err}");
        }
    }
}

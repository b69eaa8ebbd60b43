//! Guest RAM: one memfd sized to the VM's memory, mapped shared per region of
//! `arch::layout::ram_regions`. A memfd (not anonymous memory) so snapshots, migration
//! and an in-place upgrade can hand the same pages on. Hugepages come from
//! `MFD_HUGETLB` (the host must have 2 MiB pages reserved).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;

use vm_memory::{
    FileOffset, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MemoryRegionAddress, MmapRegion,
};

/// The mmap flavour used for guest memory.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// memfd_create failed.
    #[error("Cannot create the guest memory memfd")]
    Memfd(#[source] std::io::Error),
    /// Sizing the memfd failed.
    #[error("Cannot size guest memory to {0} bytes")]
    Size(u64, #[source] std::io::Error),
    /// Mapping failed.
    #[error("Cannot map guest memory")]
    Mmap(#[source] vm_memory::mmap::MmapRegionError),
    /// Building the region collection failed.
    #[error("Cannot assemble guest memory regions")]
    Regions(String),
    /// Hugepage-backed memory must be a multiple of 2 MiB.
    #[error("Memory of {0} bytes is not a multiple of the 2 MiB hugepage size")]
    HugepageAlignment(u64),
    /// A region has no host mapping to hand to KVM.
    #[error("Guest region at {0:#x} has no host mapping")]
    Unmapped(u64, #[source] vm_memory::GuestMemoryError),
}

/// Guest memory and the memfd behind it.
pub struct Memory {
    /// The mapped regions.
    pub guest: GuestMemory,
    /// The backing file (keep it to share or snapshot the pages).
    pub file: File,
}

/// One region of guest RAM as a KVM memory slot takes it (each KVM layer builds its own
/// ioctl argument from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySlot {
    /// The slot number: the region's index.
    pub slot: u32,
    /// Where the guest sees the region.
    pub guest_phys_addr: u64,
    /// Its length in bytes.
    pub size: u64,
    /// Where it is mapped in this process.
    pub host_addr: u64,
}

impl Memory {
    /// The guest RAM regions as KVM memory slots, numbered in order from 0.
    pub fn slots(&self) -> impl Iterator<Item = Result<MemorySlot, MemoryError>> + '_ {
        self.guest.iter().enumerate().map(|(slot, region)| {
            let start = region.start_addr().0;
            let host = region
                .get_host_address(MemoryRegionAddress(0))
                .map_err(|e| MemoryError::Unmapped(start, e))?;
            Ok(MemorySlot {
                slot: slot as u32,
                guest_phys_addr: start,
                size: region.len(),
                host_addr: host as u64,
            })
        })
    }
}

/// Creates `mem_size` bytes of guest RAM named `name` (shown in /proc/PID/fd), laid out
/// as the target architecture's `arch::layout::ram_regions` says.
pub fn create(name: &str, mem_size: u64, hugepages: bool) -> Result<Memory, MemoryError> {
    create_regions(name, &arch::layout::ram_regions(mem_size), hugepages)
}

/// Creates guest RAM with the given `(start, size)` regions, backed in order by one memfd.
pub fn create_regions(
    name: &str,
    ram_regions: &[(vm_memory::GuestAddress, u64)],
    hugepages: bool,
) -> Result<Memory, MemoryError> {
    let mem_size: u64 = ram_regions.iter().map(|(_, size)| size).sum();
    if hugepages && mem_size & ((2 << 20) - 1) != 0 {
        return Err(MemoryError::HugepageAlignment(mem_size));
    }
    let cname = CString::new(format!("monovirt-{name}").replace('\0', "_"))
        .map_err(|e| MemoryError::Memfd(std::io::Error::other(e)))?;
    let mut flags = libc::MFD_CLOEXEC;
    if hugepages {
        flags |= libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
    }
    // SAFETY: `cname` is a valid NUL-terminated string; the result is checked.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(mem_size)
        .map_err(|e| MemoryError::Size(mem_size, e))?;

    let mut regions = Vec::new();
    let mut offset = 0u64;
    for &(addr, size) in ram_regions {
        let fo = FileOffset::new(file.try_clone().map_err(MemoryError::Memfd)?, offset);
        let region = MmapRegion::build(
            Some(fo),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
        )
        .map_err(MemoryError::Mmap)?;
        regions.push(
            GuestRegionMmap::new(region, addr)
                .ok_or_else(|| MemoryError::Regions(format!("region at {:#x} wraps", addr.0)))?,
        );
        offset += size;
    }
    let guest =
        GuestMemory::from_regions(regions).map_err(|e| MemoryError::Regions(e.to_string()))?;
    Ok(Memory { guest, file })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn memfd_backed_and_split_around_the_hole() {
        let m = create("test", 64 << 20, false).expect("memory");
        assert_eq!(m.file.metadata().expect("stat").len(), 64 << 20);
        assert_eq!(m.guest.num_regions(), 1);
        m.guest
            .write_obj(0xdead_beefu32, GuestAddress(0x1000))
            .expect("write");
        assert_eq!(
            m.guest.read_obj::<u32>(GuestAddress(0x1000)).expect("read"),
            0xdead_beef
        );
        // Larger than the low window: two regions, no RAM in the hole. MAP_NORESERVE
        // keeps this cheap.
        let big = create("big", 4 << 30, false).expect("memory");
        assert_eq!(big.guest.num_regions(), 2);
        assert!(big
            .guest
            .read_obj::<u8>(GuestAddress(arch::layout::MMIO32_START))
            .is_err());
        assert!(big
            .guest
            .read_obj::<u8>(GuestAddress(arch::layout::FIRST_ADDR_PAST_32BITS))
            .is_ok());
    }

    #[test]
    fn regions_share_one_memfd_in_order() {
        let m = create_regions(
            "two",
            &[(GuestAddress(0), 1 << 20), (GuestAddress(1 << 30), 1 << 20)],
            false,
        )
        .expect("memory");
        assert_eq!(m.file.metadata().expect("stat").len(), 2 << 20);
        m.guest
            .write_obj(0x1234_5678u32, GuestAddress(1 << 30))
            .expect("write");
        assert!(m.guest.read_obj::<u8>(GuestAddress(1 << 20)).is_err());

        let slots: Vec<MemorySlot> = m.slots().collect::<Result<_, _>>().expect("slots");
        assert_eq!(slots.len(), 2);
        for (i, (slot, at)) in slots.iter().zip([0, 1 << 30]).enumerate() {
            assert_eq!(
                (slot.slot, slot.guest_phys_addr, slot.size),
                (i as u32, at, 1 << 20)
            );
            let host = m.guest.get_host_address(GuestAddress(at)).expect("mapped");
            assert_eq!(slot.host_addr, host as u64);
        }
    }

    #[test]
    fn hugepages_need_2m_multiples() {
        assert!(matches!(
            create("h", (2 << 20) + 4096, true),
            Err(MemoryError::HugepageAlignment(_))
        ));
    }
}

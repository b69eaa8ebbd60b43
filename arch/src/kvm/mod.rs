//! Our own KVM ioctl layer for the architectures kvm-ioctls and kvm-bindings do not
//! cover (ppc64le, s390x). It compiles on every Linux host, so its generic half (system,
//! VM and vCPU fds, memory slots, `KVM_RUN` with the mapped `kvm_run`, irqfd, ioeventfd,
//! `KVM_ENABLE_CAP`, ONE_REG, devices) is unit-tested and exercised against the host's
//! own KVM wherever there is one; the architecture-specific ioctls and exit layouts are
//! in `ppc64le::kvm` and `s390x::kvm`.
//!
//! Definitions are written from the Linux uapi headers (`include/uapi/linux/kvm.h`,
//! `arch/{powerpc,s390}/include/uapi/asm/kvm.h`); request numbers come from
//! [`ioctl::Encoding`], because POWER's ioctl layout differs from the asm-generic one
//! that vmm-sys-util's macros assume.

pub mod fd;
pub mod ioctl;

pub use fd::{DeviceAttr, EnableCap, Kvm, UserMemoryRegion, VcpuFd, VmFd};
pub use ioctl::Encoding;

/// `KVM_EXIT_IO`.
pub const EXIT_IO: u32 = 2;
/// `KVM_EXIT_HLT`.
pub const EXIT_HLT: u32 = 5;
/// `KVM_EXIT_MMIO`.
pub const EXIT_MMIO: u32 = 6;
/// `KVM_EXIT_SHUTDOWN`.
pub const EXIT_SHUTDOWN: u32 = 8;
/// `KVM_EXIT_FAIL_ENTRY`.
pub const EXIT_FAIL_ENTRY: u32 = 9;
/// `KVM_EXIT_INTR`.
pub const EXIT_INTR: u32 = 10;
/// `KVM_EXIT_S390_SIEIC`.
pub const EXIT_S390_SIEIC: u32 = 13;
/// `KVM_EXIT_S390_RESET`.
pub const EXIT_S390_RESET: u32 = 14;
/// `KVM_EXIT_INTERNAL_ERROR`.
pub const EXIT_INTERNAL_ERROR: u32 = 17;
/// `KVM_EXIT_PAPR_HCALL`.
pub const EXIT_PAPR_HCALL: u32 = 19;
/// `KVM_EXIT_S390_TSCH`.
pub const EXIT_S390_TSCH: u32 = 22;
/// `KVM_EXIT_SYSTEM_EVENT`.
pub const EXIT_SYSTEM_EVENT: u32 = 24;
/// `KVM_EXIT_S390_STSI`.
pub const EXIT_S390_STSI: u32 = 25;

/// `KVM_SYSTEM_EVENT_SHUTDOWN`.
pub const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
/// `KVM_SYSTEM_EVENT_RESET`.
pub const SYSTEM_EVENT_RESET: u32 = 2;
/// `KVM_SYSTEM_EVENT_CRASH`.
pub const SYSTEM_EVENT_CRASH: u32 = 3;

/// `KVM_CAP_USER_MEMORY`.
pub const CAP_USER_MEMORY: u32 = 3;
/// `KVM_CAP_IRQFD`.
pub const CAP_IRQFD: u32 = 32;
/// `KVM_CAP_IOEVENTFD`.
pub const CAP_IOEVENTFD: u32 = 36;
/// `KVM_CAP_IMMEDIATE_EXIT`.
pub const CAP_IMMEDIATE_EXIT: u32 = 136;

/// An MMIO exit (`kvm_run.mmio`): address, up to 8 data bytes, length, direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioExit {
    /// Guest physical address.
    pub addr: u64,
    /// Data (written bytes, or where read bytes go).
    pub data: [u8; 8],
    /// Access length in bytes (1..=8).
    pub len: usize,
    /// Whether the guest wrote.
    pub is_write: bool,
}

impl MmioExit {
    /// Decodes the exit union of a `KVM_EXIT_MMIO` (host byte order).
    pub fn decode(union: &[u8]) -> Option<Self> {
        let addr = u64::from_ne_bytes(union.get(0..8)?.try_into().ok()?);
        let data: [u8; 8] = union.get(8..16)?.try_into().ok()?;
        let len = u32::from_ne_bytes(union.get(16..20)?.try_into().ok()?) as usize;
        let is_write = *union.get(20)? != 0;
        (1..=8).contains(&len).then_some(Self {
            addr,
            data,
            len,
            is_write,
        })
    }

    /// Stores the bytes of a read back into the exit union.
    pub fn complete_read(union: &mut [u8], data: &[u8]) {
        let n = data.len().min(8);
        if let Some(dst) = union.get_mut(8..8 + n) {
            dst.copy_from_slice(&data[..n]);
        }
    }
}

/// The `type` of a `KVM_EXIT_SYSTEM_EVENT` exit.
pub fn system_event_type(union: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(union.get(0..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmio_exit_decodes_the_uapi_layout() {
        // struct { __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write; }
        let mut u = [0u8; 256];
        u[0..8].copy_from_slice(&0x2_0000_8000_1000u64.to_ne_bytes());
        u[8..12].copy_from_slice(&[1, 2, 3, 4]);
        u[16..20].copy_from_slice(&4u32.to_ne_bytes());
        u[20] = 1;
        let m = MmioExit::decode(&u).unwrap();
        assert_eq!(m.addr, 0x2_0000_8000_1000);
        assert_eq!(&m.data[..m.len], &[1, 2, 3, 4]);
        assert!(m.is_write);
        MmioExit::complete_read(&mut u, &[9, 8]);
        assert_eq!(&u[8..10], &[9, 8]);
        u[16..20].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(
            MmioExit::decode(&u),
            None,
            "a 9-byte access is not an MMIO exit"
        );
    }

    /// Runs a real-mode x86 guest through these wrappers on the host's KVM: the reset
    /// vector's `mov al,0x42; out 0x10,al; out 0x20,al; hlt`, with an ioeventfd on port
    /// 0x20. Proves the generic ioctls, the kvm_run mapping and its exit layout against a
    /// real kernel (the same code paths ppc64le and s390x use, with their numbers).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn generic_wrappers_run_a_guest_on_host_kvm() {
        use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
        let kvm = match Kvm::new() {
            Ok(k) => k,
            Err(e) => {
                if std::env::var("MONOVIRT_REQUIRE_KVM").as_deref() == Ok("1") {
                    panic!("MONOVIRT_REQUIRE_KVM=1 but /dev/kvm is unusable: {e}");
                }
                eprintln!("NOTICE: skipping: /dev/kvm is unusable ({e}); set MONOVIRT_REQUIRE_KVM=1 to fail instead");
                return;
            }
        };
        assert!(kvm.check_extension(CAP_USER_MEMORY) > 0);
        assert!(kvm.check_extension(CAP_IOEVENTFD) > 0);
        let vm = kvm.create_vm(0).unwrap();
        // 4 KiB at the top of the 32-bit space: the reset vector is its last 16 bytes.
        let mem = vm_memory::MmapRegion::<()>::new(0x1000).unwrap();
        let code = [0xb0, 0x42, 0xe6, 0x10, 0xe6, 0x20, 0xf4];
        // SAFETY: the test's own 4 KiB anonymous mapping, alive past the VM (dropped last).
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), mem.as_ptr().add(0xff0), code.len());
            vm.set_user_memory_region(UserMemoryRegion {
                slot: 0,
                flags: 0,
                guest_phys_addr: 0xffff_f000,
                memory_size: 0x1000,
                userspace_addr: mem.as_ptr() as u64,
            })
            .unwrap();
        }
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        vm.register_ioeventfd(&evt, 0x20, 1, fd::IOEVENTFD_FLAG_PIO, None)
            .unwrap();
        let mut vcpu = vm.create_vcpu(0).unwrap();
        assert_eq!(vcpu.run().unwrap(), EXIT_IO);
        // struct { __u8 direction; __u8 size; __u16 port; __u32 count; __u64 data_offset; }
        let io = vcpu.exit_data();
        assert_eq!(io[0], 1, "KVM_EXIT_IO_OUT");
        assert_eq!(io[1], 1, "one byte");
        assert_eq!(u16::from_ne_bytes([io[2], io[3]]), 0x10);
        let off = u64::from_ne_bytes(io[8..16].try_into().unwrap()) as usize;
        assert_eq!(vcpu.run_page()[off], 0x42);
        // The port 0x20 write goes to the ioeventfd without an exit; then HLT.
        assert_eq!(vcpu.run().unwrap(), EXIT_HLT);
        assert_eq!(evt.read().unwrap(), 1);
        drop(vcpu);
        drop(vm);
        drop(mem);
    }
}

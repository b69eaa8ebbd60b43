//! `/dev/kvm`, VM and vCPU file descriptors with the ioctls every architecture shares,
//! for the architectures kvm-ioctls does not cover. Architecture folders add their own
//! ioctls (`ppc64le::kvm`, `s390x::kvm`) through the raw helpers here.
//!
//! Everything here is a thin, checked wrapper: each ioctl's result is turned into an
//! `io::Error`, each argument struct is `repr(C)` with the uapi layout, and the vCPU's
//! `kvm_run` page stays mapped exactly as long as its [`VcpuFd`].

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};

use super::ioctl::Encoding;

const E: Encoding = Encoding::TARGET;

/// `struct kvm_userspace_memory_region`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UserMemoryRegion {
    /// Slot number.
    pub slot: u32,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
    /// Guest physical start.
    pub guest_phys_addr: u64,
    /// Size in bytes.
    pub memory_size: u64,
    /// Host virtual start.
    pub userspace_addr: u64,
}

/// `struct kvm_irqfd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Irqfd {
    fd: u32,
    gsi: u32,
    flags: u32,
    resamplefd: u32,
    pad: [u8; 16],
}

/// `struct kvm_ioeventfd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Ioeventfd {
    datamatch: u64,
    addr: u64,
    len: u32,
    fd: i32,
    flags: u32,
    pad: [u32; 9],
}

/// `struct kvm_enable_cap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EnableCap {
    /// `KVM_CAP_*` number.
    pub cap: u32,
    /// Must be 0.
    pub flags: u32,
    /// Capability-specific arguments.
    pub args: [u64; 4],
    /// Reserved.
    pub pad: [u64; 8],
}

/// `struct kvm_one_reg`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct OneReg {
    id: u64,
    addr: u64,
}

/// `struct kvm_create_device`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct CreateDevice {
    ty: u32,
    fd: u32,
    flags: u32,
}

/// `struct kvm_device_attr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DeviceAttr {
    /// Must be 0.
    pub flags: u32,
    /// Attribute group.
    pub group: u32,
    /// Attribute within the group.
    pub attr: u64,
    /// Userspace address of the value.
    pub addr: u64,
}

const KVM_GET_API_VERSION: u64 = E.io(0x00);
const KVM_CREATE_VM: u64 = E.io(0x01);
const KVM_CHECK_EXTENSION: u64 = E.io(0x03);
const KVM_GET_VCPU_MMAP_SIZE: u64 = E.io(0x04);
const KVM_CREATE_VCPU: u64 = E.io(0x41);
const KVM_SET_USER_MEMORY_REGION: u64 = E.iow::<UserMemoryRegion>(0x46);
const KVM_IRQFD: u64 = E.iow::<Irqfd>(0x76);
const KVM_IOEVENTFD: u64 = E.iow::<Ioeventfd>(0x79);
const KVM_RUN: u64 = E.io(0x80);
const KVM_ENABLE_CAP: u64 = E.iow::<EnableCap>(0xa3);
const KVM_GET_ONE_REG: u64 = E.iow::<OneReg>(0xab);
const KVM_SET_ONE_REG: u64 = E.iow::<OneReg>(0xac);
const KVM_CREATE_DEVICE: u64 = E.iowr::<CreateDevice>(0xe0);
const KVM_SET_DEVICE_ATTR: u64 = E.iow::<DeviceAttr>(0xe1);

/// The KVM API version every kernel since 2.6.22 reports.
pub const KVM_API_VERSION: i32 = 12;

/// `KVM_IOEVENTFD_FLAG_DATAMATCH`.
pub const IOEVENTFD_FLAG_DATAMATCH: u32 = 1 << 0;
/// `KVM_IOEVENTFD_FLAG_PIO`.
pub const IOEVENTFD_FLAG_PIO: u32 = 1 << 1;
/// `KVM_IOEVENTFD_FLAG_DEASSIGN`.
pub const IOEVENTFD_FLAG_DEASSIGN: u32 = 1 << 2;
/// `KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY`: `addr` is a subchannel ID, `datamatch` the
/// queue index of a virtio-ccw notification (DIAGNOSE 0x500).
pub const IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY: u32 = 1 << 3;

fn check(ret: i32) -> io::Result<i32> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a descriptor an ioctl just returned.
fn owned(fd: i32) -> io::Result<File> {
    let fd = check(fd)?;
    // SAFETY: `fd` is a new descriptor the kernel just returned to us; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Calls an ioctl whose argument the kernel only reads.
///
/// # Safety
/// `nr` must be an ioctl that reads exactly a `T` from its argument on `fd`.
pub(crate) unsafe fn write_ioctl<F: AsRawFd, T>(fd: &F, nr: u64, arg: &T) -> io::Result<i32> {
    // SAFETY: the caller guarantees `nr` reads one `T`; `arg` is a valid `T`.
    check(unsafe { ioctl_with_ref(fd, nr, arg) })
}

/// Calls an ioctl that fills its argument.
///
/// # Safety
/// `nr` must be an ioctl that writes at most a `T` to its argument on `fd`.
pub(crate) unsafe fn read_ioctl<F: AsRawFd, T>(fd: &F, nr: u64, arg: &mut T) -> io::Result<i32> {
    // SAFETY: the caller guarantees `nr` writes at most one `T`; `arg` is a valid `T`.
    check(unsafe { ioctl_with_mut_ref(fd, nr, arg) })
}

/// Calls an ioctl with a plain value (or no) argument.
///
/// # Safety
/// `nr` must be an ioctl that takes no pointer argument on `fd`.
pub(crate) unsafe fn value_ioctl<F: AsRawFd>(fd: &F, nr: u64, arg: u64) -> io::Result<i32> {
    // SAFETY: the caller guarantees `nr` does not dereference `arg`.
    check(unsafe { ioctl_with_val(fd, nr, arg as libc::c_ulong) })
}

/// An open `/dev/kvm`.
pub struct Kvm {
    fd: File,
}

impl Kvm {
    /// Opens `/dev/kvm` and checks the API version.
    pub fn new() -> io::Result<Self> {
        let fd = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/kvm")?;
        let kvm = Self { fd };
        // SAFETY: KVM_GET_API_VERSION takes no argument.
        let version = unsafe { value_ioctl(&kvm.fd, KVM_GET_API_VERSION, 0) }?;
        if version != KVM_API_VERSION {
            return Err(io::Error::other(format!(
                "KVM API version {version}, expected {KVM_API_VERSION}"
            )));
        }
        Ok(kvm)
    }

    /// `KVM_CHECK_EXTENSION` on the system fd: 0 if absent, else capability-specific.
    pub fn check_extension(&self, cap: u32) -> i32 {
        // SAFETY: KVM_CHECK_EXTENSION takes the capability number by value.
        unsafe { value_ioctl(&self.fd, KVM_CHECK_EXTENSION, u64::from(cap)) }.unwrap_or(0)
    }

    /// Creates a VM of `machine_type` (0, or the architecture's `KVM_VM_*` type).
    pub fn create_vm(&self, machine_type: u64) -> io::Result<VmFd> {
        // SAFETY: KVM_GET_VCPU_MMAP_SIZE takes no argument.
        let run_size = unsafe { value_ioctl(&self.fd, KVM_GET_VCPU_MMAP_SIZE, 0) }? as usize;
        // SAFETY: KVM_CREATE_VM takes the machine type by value and returns a new fd.
        let fd = owned(unsafe { ioctl_with_val(&self.fd, KVM_CREATE_VM, machine_type as _) })?;
        Ok(VmFd { fd, run_size })
    }
}

/// A KVM VM.
pub struct VmFd {
    fd: File,
    run_size: usize,
}

impl AsRawFd for VmFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl VmFd {
    /// `KVM_CHECK_EXTENSION` on the VM (what this VM type supports).
    pub fn check_extension(&self, cap: u32) -> i32 {
        // SAFETY: KVM_CHECK_EXTENSION takes the capability number by value.
        unsafe { value_ioctl(&self.fd, KVM_CHECK_EXTENSION, u64::from(cap)) }.unwrap_or(0)
    }

    /// `KVM_ENABLE_CAP` on the VM.
    pub fn enable_cap(&self, cap: &EnableCap) -> io::Result<()> {
        // SAFETY: KVM_ENABLE_CAP reads one kvm_enable_cap.
        unsafe { write_ioctl(&self.fd, KVM_ENABLE_CAP, cap) }.map(drop)
    }

    /// Maps guest physical `[guest_phys_addr, +memory_size)` to host memory.
    ///
    /// # Safety
    /// `userspace_addr..+memory_size` must be a mapping that stays valid (and is not
    /// reused for anything else) until the VM is dropped or the slot is removed.
    pub unsafe fn set_user_memory_region(&self, region: UserMemoryRegion) -> io::Result<()> {
        // SAFETY: KVM_SET_USER_MEMORY_REGION reads one region; the caller keeps the
        // memory valid as this function's contract requires.
        unsafe { write_ioctl(&self.fd, KVM_SET_USER_MEMORY_REGION, &region) }.map(drop)
    }

    /// Creates vCPU `id` and maps its `kvm_run` page.
    pub fn create_vcpu(&self, id: u64) -> io::Result<VcpuFd> {
        // SAFETY: KVM_CREATE_VCPU takes the vCPU id by value and returns a new fd.
        let fd = owned(unsafe { ioctl_with_val(&self.fd, KVM_CREATE_VCPU, id as _) })?;
        let run = RunMap::new(&fd, self.run_size)?;
        Ok(VcpuFd { fd, run })
    }

    /// Signals interrupt `gsi` whenever `evt` is written.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> io::Result<()> {
        let irqfd = Irqfd {
            fd: evt.as_raw_fd() as u32,
            gsi,
            ..Default::default()
        };
        // SAFETY: KVM_IRQFD reads one kvm_irqfd.
        unsafe { write_ioctl(&self.fd, KVM_IRQFD, &irqfd) }.map(drop)
    }

    /// Writes `evt` when the guest writes `len` bytes (matching `datamatch` if given) at
    /// `addr` in the space `flags` selects (MMIO when 0).
    pub fn register_ioeventfd(
        &self,
        evt: &EventFd,
        addr: u64,
        len: u32,
        flags: u32,
        datamatch: Option<u64>,
    ) -> io::Result<()> {
        let io = Ioeventfd {
            datamatch: datamatch.unwrap_or(0),
            addr,
            len,
            fd: evt.as_raw_fd(),
            flags: flags | datamatch.map_or(0, |_| IOEVENTFD_FLAG_DATAMATCH),
            ..Default::default()
        };
        // SAFETY: KVM_IOEVENTFD reads one kvm_ioeventfd.
        unsafe { write_ioctl(&self.fd, KVM_IOEVENTFD, &io) }.map(drop)
    }

    /// `KVM_CREATE_DEVICE` of `device_type`; returns the device fd.
    pub fn create_device(&self, device_type: u32) -> io::Result<File> {
        let mut dev = CreateDevice {
            ty: device_type,
            ..Default::default()
        };
        // SAFETY: KVM_CREATE_DEVICE reads and updates one kvm_create_device.
        unsafe { read_ioctl(&self.fd, KVM_CREATE_DEVICE, &mut dev) }?;
        owned(dev.fd as i32)
    }

    /// `KVM_SET_DEVICE_ATTR` on a device fd from [`Self::create_device`].
    ///
    /// # Safety
    /// `attr.addr` must point to a value of the size the attribute defines (or be 0 for
    /// attributes that take none), valid for the call.
    pub unsafe fn set_device_attr(device: &File, attr: &DeviceAttr) -> io::Result<()> {
        // SAFETY: KVM_SET_DEVICE_ATTR reads one kvm_device_attr and the value at its
        // `addr`, which the caller keeps valid.
        unsafe { write_ioctl(device, KVM_SET_DEVICE_ATTR, attr) }.map(drop)
    }
}

/// The mmap of a vCPU's `struct kvm_run`.
struct RunMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by one VcpuFd and only accessed through it (or, for the
// immediate_exit byte, by a signal handler on the thread that runs it).
unsafe impl Send for RunMap {}

impl RunMap {
    fn new(fd: &File, len: usize) -> io::Result<Self> {
        if len < RUN_UNION_OFFSET + RUN_UNION_SIZE {
            return Err(io::Error::other(format!("kvm_run mapping of {len} bytes")));
        }
        // SAFETY: mapping a vCPU fd at offset 0 with KVM's reported size yields its
        // kvm_run page; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for RunMap {
    fn drop(&mut self) {
        // SAFETY: `ptr..+len` is the mapping made in `new`, unmapped once here.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Offset of `exit_reason` in `struct kvm_run`.
pub const RUN_EXIT_REASON_OFFSET: usize = 8;
/// Offset of `immediate_exit` in `struct kvm_run`.
pub const RUN_IMMEDIATE_EXIT_OFFSET: usize = 1;
/// Offset of the exit union in `struct kvm_run`: after `cr8` and `apic_base`, and on
/// s390x also after the PSW (`psw_mask`, `psw_addr`).
#[cfg(target_arch = "s390x")]
pub const RUN_UNION_OFFSET: usize = 48;
/// Offset of the exit union in `struct kvm_run`: after `cr8` and `apic_base`, and on
/// s390x also after the PSW (`psw_mask`, `psw_addr`).
#[cfg(not(target_arch = "s390x"))]
pub const RUN_UNION_OFFSET: usize = 32;
/// Size of the exit union.
pub const RUN_UNION_SIZE: usize = 256;

/// A KVM vCPU with its mapped `kvm_run`.
pub struct VcpuFd {
    fd: File,
    run: RunMap,
}

impl AsRawFd for VcpuFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl VcpuFd {
    /// `KVM_RUN`: runs the guest until an exit; returns the exit reason.
    pub fn run(&mut self) -> io::Result<u32> {
        // SAFETY: KVM_RUN takes no argument; it writes only the kvm_run page, which this
        // VcpuFd owns and nobody reads during the call (`&mut self`).
        unsafe { value_ioctl(&self.fd, KVM_RUN, 0) }?;
        let page = self.run_page();
        let reason = &page[RUN_EXIT_REASON_OFFSET..RUN_EXIT_REASON_OFFSET + 4];
        Ok(u32::from_ne_bytes(
            reason.try_into().expect("a 4-byte slice"),
        ))
    }

    /// The whole `kvm_run` page (host byte order).
    pub fn run_page(&self) -> &[u8] {
        // SAFETY: `ptr..+len` is our live mapping; the kernel writes it only inside
        // KVM_RUN, which needs `&mut self`, so no write races this shared borrow.
        unsafe { std::slice::from_raw_parts(self.run.ptr, self.run.len) }
    }

    /// The whole `kvm_run` page, writable (exit results go back to KVM here).
    pub fn run_page_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `run_page`, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.run.ptr, self.run.len) }
    }

    /// The exit union of the last exit.
    pub fn exit_data(&self) -> &[u8] {
        &self.run_page()[RUN_UNION_OFFSET..RUN_UNION_OFFSET + RUN_UNION_SIZE]
    }

    /// The exit union, writable (hcall returns, MMIO read data).
    pub fn exit_data_mut(&mut self) -> &mut [u8] {
        &mut self.run_page_mut()[RUN_UNION_OFFSET..RUN_UNION_OFFSET + RUN_UNION_SIZE]
    }

    /// Address of `kvm_run.immediate_exit`, for a signal handler that kicks this vCPU
    /// out of the guest. Valid as long as this VcpuFd lives.
    pub fn immediate_exit_ptr(&self) -> *mut u8 {
        // SAFETY: the offset is inside the mapping (checked in RunMap::new).
        unsafe { self.run.ptr.add(RUN_IMMEDIATE_EXIT_OFFSET) }
    }

    /// Clears `immediate_exit` after a kick was taken.
    pub fn clear_immediate_exit(&mut self) {
        self.run_page_mut()[RUN_IMMEDIATE_EXIT_OFFSET] = 0;
    }

    /// `KVM_ENABLE_CAP` on the vCPU.
    pub fn enable_cap(&self, cap: &EnableCap) -> io::Result<()> {
        // SAFETY: KVM_ENABLE_CAP reads one kvm_enable_cap.
        unsafe { write_ioctl(&self.fd, KVM_ENABLE_CAP, cap) }.map(drop)
    }

    /// `KVM_SET_ONE_REG` of a 64-bit register.
    pub fn set_one_reg_u64(&self, id: u64, value: u64) -> io::Result<()> {
        let reg = OneReg {
            id,
            addr: &value as *const u64 as u64,
        };
        // SAFETY: KVM_SET_ONE_REG reads one kvm_one_reg and 8 bytes at `addr` (the id's
        // size field says U64), which `value` provides for the call.
        unsafe { write_ioctl(&self.fd, KVM_SET_ONE_REG, &reg) }.map(drop)
    }

    /// `KVM_SET_ONE_REG` of a 32-bit register.
    pub fn set_one_reg_u32(&self, id: u64, value: u32) -> io::Result<()> {
        let reg = OneReg {
            id,
            addr: &value as *const u32 as u64,
        };
        // SAFETY: as above with a U32-sized id and a 4-byte value.
        unsafe { write_ioctl(&self.fd, KVM_SET_ONE_REG, &reg) }.map(drop)
    }

    /// `KVM_GET_ONE_REG` of a 64-bit register.
    pub fn get_one_reg_u64(&self, id: u64) -> io::Result<u64> {
        let mut value = 0u64;
        let reg = OneReg {
            id,
            addr: &mut value as *mut u64 as u64,
        };
        // SAFETY: KVM_GET_ONE_REG reads one kvm_one_reg and writes 8 bytes at `addr`,
        // which is `value`, live for the call.
        unsafe { write_ioctl(&self.fd, KVM_GET_ONE_REG, &reg) }?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_structs_have_the_uapi_sizes() {
        // linux/kvm.h sizes, the same on every 64-bit architecture.
        assert_eq!(std::mem::size_of::<UserMemoryRegion>(), 32);
        assert_eq!(std::mem::size_of::<Irqfd>(), 32);
        assert_eq!(std::mem::size_of::<Ioeventfd>(), 64);
        assert_eq!(std::mem::size_of::<EnableCap>(), 104);
        assert_eq!(std::mem::size_of::<OneReg>(), 16);
        assert_eq!(std::mem::size_of::<CreateDevice>(), 12);
        assert_eq!(std::mem::size_of::<DeviceAttr>(), 24);
    }
}

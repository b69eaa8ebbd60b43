//! kvmclock: the KVM paravirtual clock. The guest registers a `pvclock_vcpu_time_info` with
//! MSR_KVM_SYSTEM_TIME_NEW (0x4b564d01) and reads nanoseconds since boot from it; the wall
//! clock at boot comes from MSR_KVM_WALL_CLOCK_NEW (0x4b564d00).

use core::cell::UnsafeCell;
use core::sync::atomic::{fence, AtomicBool, Ordering};
use x86_64::registers::model_specific::Msr;

const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// CPUID 0x40000001 EAX bit: the `_NEW` MSRs exist.
pub const KVM_FEATURE_CLOCKSOURCE2: u32 = 3;
/// `pvclock_vcpu_time_info.flags`: the TSC is stable across vCPUs.
pub const PVCLOCK_TSC_STABLE_BIT: u8 = 1;

/// `struct pvclock_vcpu_time_info`.
#[repr(C, align(32))]
struct TimeInfo {
    version: u32,
    pad0: u32,
    tsc_timestamp: u64,
    system_time: u64,
    tsc_to_system_mul: u32,
    tsc_shift: i8,
    flags: u8,
    pad: [u8; 2],
}

/// `struct pvclock_wall_clock`.
#[repr(C, align(4))]
struct WallClock {
    version: u32,
    sec: u32,
    nsec: u32,
}

struct Shared<T>(UnsafeCell<T>);

// SAFETY: only the boot processor registers and reads these; the hypervisor writes them
// under the version protocol the readers follow.
unsafe impl<T> Sync for Shared<T> {}

static TIME: Shared<TimeInfo> = Shared(UnsafeCell::new(TimeInfo {
    version: 0,
    pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    pad: [0; 2],
}));
static WALL: Shared<WallClock> = Shared(UnsafeCell::new(WallClock {
    version: 0,
    sec: 0,
    nsec: 0,
}));

/// Whether the time page is registered.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// A registered kvmclock on the boot processor.
pub struct KvmClock(());

impl KvmClock {
    /// Registers the time page if the hypervisor offers kvmclock. Once registered, later
    /// calls write no MSR, so code at CPL 3 ([`crate::user`]) can call this too.
    pub fn enable() -> Option<KvmClock> {
        if !crate::cpuid::kvm_feature(KVM_FEATURE_CLOCKSOURCE2) {
            return None;
        }
        if !ENABLED.swap(true, Ordering::Relaxed) {
            let addr = TIME.0.get() as u64;
            // SAFETY: the MSR exists (CPUID said so); the address is a 32-byte-aligned
            // static the hypervisor may write at any time, which readers only access
            // volatilely.
            unsafe { Msr::new(MSR_KVM_SYSTEM_TIME_NEW).write(addr | 1) };
        }
        Some(KvmClock(()))
    }

    fn snapshot(&self) -> (u64, u64, u32, i8, u8) {
        let p = TIME.0.get();
        loop {
            // SAFETY: `p` is the registered static; volatile reads see hypervisor updates.
            unsafe {
                let v1 = core::ptr::read_volatile(core::ptr::addr_of!((*p).version));
                fence(Ordering::Acquire);
                let ts = core::ptr::read_volatile(core::ptr::addr_of!((*p).tsc_timestamp));
                let st = core::ptr::read_volatile(core::ptr::addr_of!((*p).system_time));
                let mul = core::ptr::read_volatile(core::ptr::addr_of!((*p).tsc_to_system_mul));
                let shift = core::ptr::read_volatile(core::ptr::addr_of!((*p).tsc_shift));
                let flags = core::ptr::read_volatile(core::ptr::addr_of!((*p).flags));
                fence(Ordering::Acquire);
                let v2 = core::ptr::read_volatile(core::ptr::addr_of!((*p).version));
                if v1 == v2 && v1 & 1 == 0 {
                    return (ts, st, mul, shift, flags);
                }
            }
            core::hint::spin_loop();
        }
    }

    /// Nanoseconds since the VM started, and the pvclock flags.
    pub fn now_ns(&self) -> (u64, u8) {
        let (ts, st, mul, shift, flags) = self.snapshot();
        // SAFETY: RDTSC is available on every x86_64 CPU.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        let mut delta = tsc.wrapping_sub(ts);
        if shift >= 0 {
            delta <<= shift;
        } else {
            delta >>= -shift;
        }
        (
            st.wrapping_add(((u128::from(delta) * u128::from(mul)) >> 32) as u64),
            flags,
        )
    }

    /// Seconds since the Unix epoch at VM start, from the wall-clock MSR.
    pub fn boot_wall_clock(&self) -> u64 {
        let p = WALL.0.get();
        // SAFETY: as in `enable`: the MSR exists and the static is ours.
        unsafe { Msr::new(MSR_KVM_WALL_CLOCK_NEW).write(p as u64) };
        loop {
            // SAFETY: volatile reads of the static the hypervisor just filled in.
            unsafe {
                let v1 = core::ptr::read_volatile(core::ptr::addr_of!((*p).version));
                fence(Ordering::Acquire);
                let sec = core::ptr::read_volatile(core::ptr::addr_of!((*p).sec));
                fence(Ordering::Acquire);
                let v2 = core::ptr::read_volatile(core::ptr::addr_of!((*p).version));
                if v1 == v2 && v1 & 1 == 0 {
                    return u64::from(sec);
                }
            }
            core::hint::spin_loop();
        }
    }

    /// Unregisters the time page, as Linux does before reboot, so the hypervisor stops writing.
    pub fn disable(self) {
        // SAFETY: writing 0 (enable bit clear) turns kvmclock updates off.
        unsafe { Msr::new(MSR_KVM_SYSTEM_TIME_NEW).write(0) };
        ENABLED.store(false, Ordering::Relaxed);
    }
}

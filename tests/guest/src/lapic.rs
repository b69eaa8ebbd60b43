//! The local APIC, in xAPIC (MMIO) or x2APIC (MSR) mode, whichever IA32_APIC_BASE says.

use x86_64::registers::model_specific::Msr;

const IA32_APIC_BASE: u32 = 0x1b;
const BASE_ENABLE: u64 = 1 << 11;
const BASE_X2APIC: u64 = 1 << 10;

pub const REG_ID: u32 = 0x20;
pub const REG_VERSION: u32 = 0x30;
pub const REG_EOI: u32 = 0xb0;
pub const REG_SVR: u32 = 0xf0;
pub const REG_ICR_LOW: u32 = 0x300;
pub const REG_ICR_HIGH: u32 = 0x310;
pub const REG_LVT_TIMER: u32 = 0x320;
pub const REG_TIMER_INITIAL: u32 = 0x380;
pub const REG_TIMER_CURRENT: u32 = 0x390;
pub const REG_TIMER_DIVIDE: u32 = 0x3e0;

/// The spurious-interrupt vector the guest programs.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// ICR delivery modes used to start APs.
pub const ICR_INIT: u32 = 0x0000_4500; // INIT, level assert
pub const ICR_STARTUP: u32 = 0x0000_4600; // start-up, level assert
const ICR_PENDING: u32 = 1 << 12;

/// This CPU's local APIC.
#[derive(Clone, Copy, Debug)]
pub enum Lapic {
    /// Memory-mapped registers at this physical (= virtual) base.
    XApic(u64),
    /// MSRs 0x800 + register / 16.
    X2Apic,
}

impl Lapic {
    /// The current CPU's APIC, globally enabled if firmware left it off.
    pub fn current() -> Lapic {
        let mut msr = Msr::new(IA32_APIC_BASE);
        // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (CPUID.1:EDX.APIC).
        let mut base = unsafe { msr.read() };
        if base & BASE_ENABLE == 0 {
            base |= BASE_ENABLE;
            // SAFETY: setting the global enable bit only turns the APIC on.
            unsafe { msr.write(base) };
        }
        if base & BASE_X2APIC != 0 {
            Lapic::X2Apic
        } else {
            Lapic::XApic(base & 0x000f_ffff_ffff_f000)
        }
    }

    /// The value of the `lapic.mode=` key.
    pub fn mode(self) -> &'static str {
        match self {
            Lapic::XApic(_) => "xapic",
            Lapic::X2Apic => "x2apic",
        }
    }

    pub fn read(self, reg: u32) -> u32 {
        match self {
            // SAFETY: the APIC page is identity-mapped (below 4 GiB, uncached) and `reg` is a
            // register offset inside it.
            Lapic::XApic(base) => unsafe {
                core::ptr::read_volatile((base + u64::from(reg)) as *const u32)
            },
            // SAFETY: x2APIC mode is on, so the MSR range 0x800.. maps the APIC registers.
            Lapic::X2Apic => unsafe { Msr::new(0x800 + (reg >> 4)).read() as u32 },
        }
    }

    pub fn write(self, reg: u32, value: u32) {
        match self {
            // SAFETY: as in `read`; APIC registers are written as aligned 32-bit words.
            Lapic::XApic(base) => unsafe {
                core::ptr::write_volatile((base + u64::from(reg)) as *mut u32, value)
            },
            // SAFETY: as in `read`.
            Lapic::X2Apic => unsafe { Msr::new(0x800 + (reg >> 4)).write(u64::from(value)) },
        }
    }

    /// This CPU's APIC ID.
    pub fn id(self) -> u32 {
        match self {
            Lapic::XApic(_) => self.read(REG_ID) >> 24,
            Lapic::X2Apic => self.read(REG_ID),
        }
    }

    /// Software-enables the APIC with the spurious vector.
    pub fn enable(self) {
        self.write(REG_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    }

    pub fn eoi(self) {
        self.write(REG_EOI, 0);
    }

    /// Sends an IPI with ICR low word `command` to the APIC `dest`; false if the APIC kept it
    /// pending.
    pub fn send_ipi(self, dest: u32, command: u32) -> bool {
        match self {
            Lapic::XApic(_) => {
                self.write(REG_ICR_HIGH, dest << 24);
                self.write(REG_ICR_LOW, command);
                (0..1_000_000).any(|_| self.read(REG_ICR_LOW) & ICR_PENDING == 0)
            }
            Lapic::X2Apic => {
                // SAFETY: the x2APIC ICR is one 64-bit MSR; writing it sends the IPI.
                unsafe { Msr::new(0x830).write((u64::from(dest) << 32) | u64::from(command)) };
                true
            }
        }
    }

    /// Arms a one-shot timer: divide by 16, `count` ticks, then `vector`.
    pub fn one_shot(self, vector: u8, count: u32) {
        self.write(REG_TIMER_DIVIDE, 0x3);
        self.write(REG_LVT_TIMER, u32::from(vector));
        self.write(REG_TIMER_INITIAL, count);
    }
}

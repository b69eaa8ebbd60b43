//! How the guest leaves: ACPI S5 through the FADT, reset through the FADT reset register (or
//! the 8042), a triple fault, or halting forever.

use crate::cmdline::Action;
use crate::kv;
use crate::kvmclock::KvmClock;
use crate::tables::{FadtInfo, Platform};
use acpi::address::{AccessSize, AddressSpace, GenericAddress};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
use x86_64::instructions::port::Port;

struct PlatformCell(UnsafeCell<Option<Platform>>);

// SAFETY: written once by the boot processor (`remember`, before the APs start and before
// interrupts are enabled), then only read; `SET` publishes the write.
unsafe impl Sync for PlatformCell {}

static PLATFORM: PlatformCell = PlatformCell(UnsafeCell::new(None));
static SET: AtomicBool = AtomicBool::new(false);

/// Keeps the platform description for the panic path and interrupt handlers.
pub fn remember(platform: &Platform) {
    if !SET.load(Ordering::Acquire) {
        // SAFETY: see `PlatformCell`: the only write, before any reader can run.
        unsafe { *PLATFORM.0.get() = Some(*platform) };
        SET.store(true, Ordering::Release);
    }
}

/// The remembered platform (empty before the ACPI walk).
pub fn platform() -> Platform {
    if SET.load(Ordering::Acquire) {
        // SAFETY: `SET` is only true after the single write completed.
        unsafe { (*PLATFORM.0.get()).unwrap_or_default() }
    } else {
        Platform::default()
    }
}

const SLP_EN: u64 = 1 << 13;
const SLP_TYP_SHIFT: u32 = 10;
const SLP_TYP_MASK: u64 = 0x7 << SLP_TYP_SHIFT;
const SCI_EN: u64 = 1;
/// Hardware-reduced sleep control register: SLP_TYP in bits 2..4, SLP_EN bit 5.
const HWR_SLP_EN: u64 = 1 << 5;

fn width_bits(g: &GenericAddress) -> u8 {
    match g.access_size {
        AccessSize::ByteAccess => 8,
        AccessSize::WordAccess => 16,
        AccessSize::DWordAccess => 32,
        AccessSize::QWordAccess => 64,
        AccessSize::Undefined => match g.bit_width {
            0..=8 => 8,
            9..=16 => 16,
            17..=32 => 32,
            _ => 64,
        },
    }
}

fn pci_config_address(g: &GenericAddress) -> (u32, u16) {
    // ACPI encodes PCI config space addresses as device << 32 | function << 16 | offset (bus 0).
    let dev = ((g.address >> 32) & 0x1f) as u32;
    let func = ((g.address >> 16) & 0x7) as u32;
    let offset = (g.address & 0xff) as u32;
    (
        0x8000_0000 | (dev << 11) | (func << 8) | (offset & 0xfc),
        0xcfc + (offset & 3) as u16,
    )
}

/// Reads a register described by a generic address (I/O, memory or PCI configuration space).
pub fn gas_read(g: &GenericAddress) -> Option<u64> {
    let bits = width_bits(g);
    // SAFETY: the FADT describes these registers as the platform's ACPI hardware; memory
    // ones lie in the identity map (checked below 4 GiB, non-null).
    unsafe {
        match g.address_space {
            AddressSpace::SystemIo => {
                let port = g.address as u16;
                Some(match bits {
                    8 => u64::from(Port::<u8>::new(port).read()),
                    16 => u64::from(Port::<u16>::new(port).read()),
                    _ => u64::from(Port::<u32>::new(port).read()),
                })
            }
            AddressSpace::SystemMemory if g.address != 0 && g.address < (1 << 32) => {
                let a = g.address as usize;
                Some(match bits {
                    8 => u64::from(core::ptr::read_volatile(a as *const u8)),
                    16 => u64::from(core::ptr::read_volatile(a as *const u16)),
                    32 => u64::from(core::ptr::read_volatile(a as *const u32)),
                    _ => core::ptr::read_volatile(a as *const u64),
                })
            }
            _ => None,
        }
    }
}

/// Writes a register described by a generic address; false if its space is unsupported.
pub fn gas_write(g: &GenericAddress, value: u64) -> bool {
    let bits = width_bits(g);
    // SAFETY: as in `gas_read`; writes to these registers are the documented way to sleep or
    // reset the platform.
    unsafe {
        match g.address_space {
            AddressSpace::SystemIo => {
                let port = g.address as u16;
                match bits {
                    8 => Port::<u8>::new(port).write(value as u8),
                    16 => Port::<u16>::new(port).write(value as u16),
                    _ => Port::<u32>::new(port).write(value as u32),
                }
                true
            }
            AddressSpace::SystemMemory if g.address != 0 && g.address < (1 << 32) => {
                let a = g.address as usize;
                match bits {
                    8 => core::ptr::write_volatile(a as *mut u8, value as u8),
                    16 => core::ptr::write_volatile(a as *mut u16, value as u16),
                    32 => core::ptr::write_volatile(a as *mut u32, value as u32),
                    _ => core::ptr::write_volatile(a as *mut u64, value),
                }
                true
            }
            AddressSpace::PciConfigSpace => {
                let (addr, data) = pci_config_address(g);
                Port::<u32>::new(0xcf8).write(addr);
                Port::<u8>::new(data).write(value as u8);
                true
            }
            _ => false,
        }
    }
}

/// Puts the platform in ACPI mode (SCI_EN) through SMI_CMD if firmware left it in legacy
/// mode, as Linux's `acpi_enable` does. Prints `acpi.sci_en=`.
pub fn enable_acpi_mode(fadt: &FadtInfo) {
    if fadt.hw_reduced {
        return;
    }
    let Some(pm1a) = fadt.pm1a_cnt else { return };
    let sci_en = || gas_read(&pm1a).is_some_and(|v| v & SCI_EN != 0);
    if !sci_en() && fadt.smi_cmd != 0 && fadt.acpi_enable != 0 {
        // SAFETY: SMI_CMD with the FADT's ACPI_ENABLE value is the documented hand-over.
        unsafe { Port::<u8>::new(fadt.smi_cmd as u16).write(fadt.acpi_enable) };
        crate::pit::wait_until(3_000_000, sci_en);
    }
    kv!("acpi.sci_en", "{}", u8::from(sci_en()));
}

/// Enters S5. Returns only if the platform did not power off.
fn acpi_poweroff(platform: &Platform) {
    let Some(fadt) = platform.fadt else {
        kv!("poweroff.error", "no FADT");
        return;
    };
    let Some(s5) = platform.s5 else {
        kv!("poweroff.error", "no \\_S5 object in the DSDT");
        return;
    };
    if let (true, Some(ctl)) = (fadt.hw_reduced, fadt.sleep_control) {
        gas_write(&ctl, (u64::from(s5.a) << 2) | HWR_SLP_EN);
    } else if let Some(pm1a) = fadt.pm1a_cnt {
        // ACPICA's sequence: SLP_TYP first, then SLP_TYP | SLP_EN, to PM1a and PM1b.
        let regs = [(Some(pm1a), s5.a), (fadt.pm1b_cnt, s5.b)];
        for with_enable in [false, true] {
            for (reg, typ) in regs {
                if let Some(reg) = reg {
                    let old = gas_read(&reg).unwrap_or(0) & !(SLP_TYP_MASK | SLP_EN);
                    let value = old
                        | (u64::from(typ) << SLP_TYP_SHIFT)
                        | if with_enable { SLP_EN } else { 0 };
                    gas_write(&reg, value);
                }
            }
        }
    } else {
        kv!(
            "poweroff.error",
            "FADT has neither PM1a_CNT nor a sleep control register"
        );
        return;
    }
    crate::pit::wait_us(1_000_000);
    kv!("poweroff.error", "still running 1 s after S5");
}

/// Resets through the FADT reset register, then the 8042, then a triple fault.
pub fn reset(platform: &Platform) -> ! {
    if let Some((reg, value)) = platform.fadt.and_then(|f| f.reset) {
        gas_write(&reg, u64::from(value));
        crate::pit::wait_us(500_000);
    }
    // SAFETY: 0xFE to the 8042 command port pulses the CPU reset line.
    unsafe { Port::<u8>::new(0x64).write(0xfe) };
    crate::pit::wait_us(500_000);
    triple_fault()
}

/// Loads an empty IDT and raises #BP: #BP → #GP → #DF → shutdown.
pub fn triple_fault() -> ! {
    let empty = x86_64::structures::DescriptorTablePointer {
        limit: 0,
        base: x86_64::VirtAddr::new(0),
    };
    // SAFETY: deliberately making every exception undeliverable; the int3 that follows ends
    // this CPU's execution with a triple fault.
    unsafe {
        x86_64::instructions::tables::lidt(&empty);
        core::arch::asm!("int3", options(nomem, nostack));
    }
    halt_forever()
}

/// Halts with interrupts off.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Carries out the command line's action. `clock` is the boot processor's kvmclock, kept
/// for `tick` and unregistered before the guest leaves.
pub fn perform(action: Action, platform: &Platform, clock: Option<KvmClock>, bsp_id: u32) -> ! {
    match action {
        Action::Poweroff => {
            if let Some(clock) = clock {
                clock.disable();
            }
            acpi_poweroff(platform);
            panic!("ACPI poweroff failed");
        }
        Action::Reset => {
            if let Some(clock) = clock {
                clock.disable();
            }
            reset(platform)
        }
        Action::TripleFault => triple_fault(),
        Action::Hang => halt_forever(),
        Action::Tick => {
            let mut n: u64 = 0;
            loop {
                crate::pit::wait_us(100_000);
                n += 1;
                kv!("tick", "{n}");
                if let Some(clock) = &clock {
                    kv!("tick.ns", "{}", clock.now_ns().0);
                }
            }
        }
        Action::Wait => {
            if !crate::events::arm(platform, bsp_id) {
                kv!("acpi.event", "none can arrive");
                halt_forever()
            }
            let event = crate::events::wait();
            kv!("acpi.event", "{event}");
            perform(Action::Poweroff, platform, clock, bsp_id)
        }
        Action::Echo => echo(),
    }
}

/// Prints `echo=<line>` (escaped like the command line) for every line that arrives on
/// COM1, forever: proof that console input reaches the guest and its answer gets out.
fn echo() -> ! {
    kv!("echo.ready", "1");
    let mut line = [0u8; 256];
    let mut len = 0;
    loop {
        match crate::serial::try_read() {
            Some(b'\r' | b'\n') => {
                if len > 0 {
                    kv!("echo", "{}", crate::bootinfo::Escaped(&line[..len]));
                    len = 0;
                }
            }
            Some(b) => {
                // A longer line is cut at the buffer's size.
                if len < line.len() {
                    line[len] = b;
                    len += 1;
                }
            }
            // Poll about every millisecond rather than spin on the port.
            None => {
                crate::pit::wait_us(1_000);
            }
        }
    }
}

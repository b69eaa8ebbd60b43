//! ACPI events through the SCI, as an OS receives them: the fixed-feature power button
//! (PM1 `PWRBTN_STS`) and general-purpose events that have an `_Exx`/`_Lxx` method (the
//! VMM's control-method power button raises one). The SCI is routed through the I/O APIC
//! as the MADT says; the handler clears and records the event, the waiting loop powers off.

use crate::ioapic::IoApic;
use crate::kv;
use crate::power::{gas_read, gas_write};
use crate::tables::Platform;
use acpi::address::GenericAddress;
use core::sync::atomic::{AtomicU32, Ordering};

/// Vector of the SCI.
pub const SCI_VECTOR: u8 = 0x41;
const PWRBTN: u64 = 1 << 8;
/// Recorded event: none yet.
const NONE: u32 = u32::MAX;
/// Recorded event: the fixed power button (GPEs are recorded by number).
const FIXED_PWRBTN: u32 = 0x1000;

static EVENT: AtomicU32 = AtomicU32::new(NONE);

fn half(g: &GenericAddress, upper: bool, width_bytes: u64, byte: u64) -> GenericAddress {
    let len = u64::from(g.bit_width / 8);
    let mut r = *g;
    r.address = g.address + if upper { len / 2 } else { 0 } + byte;
    r.bit_width = (width_bytes * 8) as u8;
    r.access_size = acpi::address::AccessSize::Undefined;
    r
}

fn gpe_bytes(g: &GenericAddress) -> u64 {
    u64::from(g.bit_width / 8) / 2
}

/// Enables the power button and the GPEs with methods, and routes the SCI to `dest`.
/// Prints `acpi.events=` (what was enabled); returns false if there is nothing to wait for.
pub fn arm(platform: &Platform, dest: u32) -> bool {
    let (Some(fadt), Some((gsi, flags)), Some((base, gsi_base))) =
        (platform.fadt, platform.sci, platform.ioapic)
    else {
        kv!(
            "acpi.events",
            "none: fadt={} sci={} ioapic={}",
            platform.fadt.is_some(),
            platform.sci.is_some(),
            platform.ioapic.is_some()
        );
        return false;
    };
    let mut fixed = false;
    let mut gpes = [0u8; 32];
    if let (true, Some(evt)) = (fadt.fixed_power_button, fadt.pm1a_evt) {
        let (sts, en) = (half(&evt, false, 2, 0), half(&evt, true, 2, 0));
        gas_write(&sts, PWRBTN);
        gas_write(&en, gas_read(&en).unwrap_or(0) | PWRBTN);
        fixed = true;
    }
    if let Some(gpe0) = fadt.gpe0 {
        for byte in 0..gpe_bytes(&gpe0).min(32) {
            let mask = (platform.gpe_methods[(byte / 8) as usize] >> ((byte % 8) * 8)) as u8;
            if mask != 0 {
                let (sts, en) = (half(&gpe0, false, 1, byte), half(&gpe0, true, 1, byte));
                gas_write(&sts, u64::from(mask));
                gas_write(&en, gas_read(&en).unwrap_or(0) | u64::from(mask));
                gpes[byte as usize] = mask;
            }
        }
    }
    {
        use core::fmt::Write as _;
        let mut line = crate::serial::Line::lock();
        let _ = line.write_str("acpi.events=");
        let mut sep = "";
        if fixed {
            let _ = line.write_str("pwrbtn");
            sep = ",";
        }
        for gpe in (0..256usize).filter(|g| gpes[g / 8] & (1 << (g % 8)) != 0) {
            let _ = write!(line, "{sep}gpe:{gpe}");
            sep = ",";
        }
        let _ = line.write_str("\n");
    }
    // SCI: level-triggered, active low unless the MADT overrides it.
    let routed = IoApic { base, gsi_base }.route(gsi, SCI_VECTOR, dest, flags, true, true);
    kv!(
        "acpi.sci_route",
        "gsi={gsi},flags={flags:#x},{}",
        if routed { "ok" } else { "not on the I/O APIC" }
    );
    (fixed || gpes.iter().any(|&m| m != 0)) && routed
}

/// Called from the interrupt dispatcher on [`SCI_VECTOR`]: clears and records what fired.
pub fn on_sci(platform: &Platform) {
    let Some(fadt) = platform.fadt else { return };
    if let (true, Some(evt)) = (fadt.fixed_power_button, fadt.pm1a_evt) {
        let (sts, en) = (half(&evt, false, 2, 0), half(&evt, true, 2, 0));
        let status = gas_read(&sts).unwrap_or(0) & gas_read(&en).unwrap_or(0);
        if status & PWRBTN != 0 {
            gas_write(&sts, PWRBTN);
            EVENT.store(FIXED_PWRBTN, Ordering::Release);
        }
    }
    if let Some(gpe0) = fadt.gpe0 {
        for byte in 0..gpe_bytes(&gpe0).min(32) {
            let (sts, en) = (half(&gpe0, false, 1, byte), half(&gpe0, true, 1, byte));
            let fired = gas_read(&sts).unwrap_or(0) & gas_read(&en).unwrap_or(0);
            if fired != 0 {
                gas_write(&sts, fired);
                EVENT.store(
                    (byte * 8) as u32 + fired.trailing_zeros(),
                    Ordering::Release,
                );
            }
        }
    }
}

/// Halts until an event arrives; returns its name (`pwrbtn` or `gpe:N`).
pub fn wait() -> EventName {
    loop {
        x86_64::instructions::interrupts::enable_and_hlt();
        x86_64::instructions::interrupts::disable();
        let e = EVENT.swap(NONE, Ordering::AcqRel);
        if e != NONE {
            return EventName(e);
        }
    }
}

/// Displays a recorded event.
pub struct EventName(u32);

impl core::fmt::Display for EventName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            FIXED_PWRBTN => f.write_str("pwrbtn"),
            gpe => write!(f, "gpe:{gpe}"),
        }
    }
}

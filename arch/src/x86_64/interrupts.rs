//! Local APIC set-up: LINT0 as ExtINT (the 8259 PIC's output) and LINT1 as NMI, as the
//! MADT's LAPIC NMI entry and a PC's wiring say. Works on the 1 KiB register page KVM
//! hands out (`kvm_lapic_state.regs`), little-endian.

/// Offset of the LVT LINT0 register.
pub const APIC_LVT0: usize = 0x350;
/// Offset of the LVT LINT1 register.
pub const APIC_LVT1: usize = 0x360;
/// Delivery mode NMI.
pub const APIC_MODE_NMI: u32 = 0x4;
/// Delivery mode ExtINT.
pub const APIC_MODE_EXTINT: u32 = 0x7;

fn read(regs: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([regs[at], regs[at + 1], regs[at + 2], regs[at + 3]])
}

fn write(regs: &mut [u8], at: usize, v: u32) {
    regs[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Sets LINT0 to ExtINT and LINT1 to NMI in a LAPIC register page (≥ 0x370 bytes).
///
/// ```
/// let mut page = [0u8; 1024];
/// arch::x86_64::interrupts::set_lint(&mut page);
/// assert_eq!(page[0x351], 0x7);
/// assert_eq!(page[0x361], 0x4);
/// ```
pub fn set_lint(regs: &mut [u8]) {
    let lvt0 = read(regs, APIC_LVT0);
    write(regs, APIC_LVT0, with_delivery_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = read(regs, APIC_LVT1);
    write(regs, APIC_LVT1, with_delivery_mode(lvt1, APIC_MODE_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_other_bits() {
        let mut page = [0u8; 1024];
        write(&mut page, APIC_LVT0, 0x0001_0000 | 0x500);
        set_lint(&mut page);
        assert_eq!(read(&page, APIC_LVT0), 0x0001_0700);
        assert_eq!(read(&page, APIC_LVT1), 0x0000_0400);
    }
}

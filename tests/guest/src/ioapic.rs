//! The I/O APIC's redirection table (IOREGSEL at +0x00, IOWIN at +0x10), enough to route one
//! GSI to a vector on one CPU.

/// An I/O APIC at `base` serving GSIs from `gsi_base`.
#[derive(Clone, Copy, Debug)]
pub struct IoApic {
    pub base: u64,
    pub gsi_base: u32,
}

impl IoApic {
    fn write(self, reg: u32, value: u32) {
        // SAFETY: the I/O APIC window lies in the identity-mapped, uncached 3-4 GiB hole
        // (the MADT says where); IOREGSEL/IOWIN are 32-bit registers.
        unsafe {
            core::ptr::write_volatile(self.base as *mut u32, reg);
            core::ptr::write_volatile((self.base + 0x10) as *mut u32, value);
        }
    }

    fn read(self, reg: u32) -> u32 {
        // SAFETY: as in `write`.
        unsafe {
            core::ptr::write_volatile(self.base as *mut u32, reg);
            core::ptr::read_volatile((self.base + 0x10) as *const u32)
        }
    }

    /// Number of redirection entries.
    pub fn pins(self) -> u32 {
        ((self.read(1) >> 16) & 0xff) + 1
    }

    /// Routes `gsi` to `vector` on the APIC `dest`, fixed delivery, physical destination, with
    /// the MPS INTI `flags` of an interrupt source override (0 = the bus default given by
    /// `default_level`/`default_low`). Returns false if the GSI is not on this I/O APIC.
    pub fn route(
        self,
        gsi: u32,
        vector: u8,
        dest: u32,
        flags: u16,
        default_level: bool,
        default_low: bool,
    ) -> bool {
        let Some(pin) = gsi.checked_sub(self.gsi_base).filter(|&p| p < self.pins()) else {
            return false;
        };
        let low = match flags & 0x3 {
            0b01 => false,
            0b11 => true,
            _ => default_low,
        };
        let level = match (flags >> 2) & 0x3 {
            0b01 => false,
            0b11 => true,
            _ => default_level,
        };
        let entry = u32::from(vector) | (u32::from(low) << 13) | (u32::from(level) << 15);
        self.write(0x11 + 2 * pin, dest << 24);
        self.write(0x10 + 2 * pin, entry);
        true
    }
}

//! The ACPI walk, as Linux does it: RSDP (from the boot structure, else the BIOS areas) →
//! RSDT/XSDT → every table's checksum → FADT, MADT, MCFG, DSDT (and `\_S5` from its AML).
//!
//! Parsing and validation are the `acpi` crate's (rust-osdev); this module only reports what
//! it finds and keeps the few values later steps need in a [`Platform`].

use crate::aml::{self, SleepType};
use crate::kv;
use acpi::address::GenericAddress;
use acpi::fadt::Fadt;
use acpi::madt::{Madt, MadtEntry};
use acpi::mcfg::Mcfg;
use acpi::rsdp::Rsdp;
use acpi::sdt::{SdtHeader, Signature};
use acpi::{AcpiHandler, AcpiTable, AcpiTables, PhysicalMapping};
use core::ptr::NonNull;

/// The most CPUs the guest starts.
pub const MAX_CPUS: usize = 64;
/// The identity map ends here.
const MAPPED_LIMIT: u64 = 1 << 32;

/// Maps ACPI tables through the identity map.
#[derive(Clone, Copy)]
pub struct IdentityMap;

impl AcpiHandler for IdentityMap {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let end = physical_address as u64 + size as u64;
        if physical_address == 0 || end > MAPPED_LIMIT {
            panic!("ACPI structure at {physical_address:#x}+{size:#x} is outside the identity-mapped 4 GiB");
        }
        let ptr = NonNull::new(physical_address as *mut T).expect("checked non-zero above");
        // SAFETY: physical == virtual below 4 GiB (checked above), so the pointer addresses
        // the requested structure; nothing needs unmapping.
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// What later steps use from the tables.
#[derive(Clone, Copy, Debug)]
pub struct Platform {
    pub fadt: Option<FadtInfo>,
    /// `\_S5` from the DSDT or an SSDT.
    pub s5: Option<SleepType>,
    /// MADT local APIC address.
    pub lapic_addr: u64,
    /// APIC IDs of the usable CPUs in MADT order (the boot CPU among them).
    pub cpus: [u32; MAX_CPUS],
    pub cpu_count: usize,
    /// MADT entries that would have exceeded [`MAX_CPUS`].
    pub cpus_dropped: usize,
    /// The first I/O APIC: `(address, GSI base)`.
    pub ioapic: Option<(u64, u32)>,
    /// Where the SCI arrives: `(GSI, MPS INTI flags)` from the MADT's override for the FADT's
    /// SCI_INT, or the identity mapping with flags 0 (ACPI's default: level, active low).
    pub sci: Option<(u32, u16)>,
    /// GPEs that have an `_Exx`/`_Lxx` handler method (bit n of word n / 64).
    pub gpe_methods: [u64; 4],
    /// The first MCFG entry of segment 0: `(ECAM base, first bus, last bus)`.
    pub ecam: Option<(u64, u8, u8)>,
}

/// The FADT fields used for power control and the RTC.
#[derive(Clone, Copy, Debug)]
pub struct FadtInfo {
    pub hw_reduced: bool,
    pub pm1a_cnt: Option<GenericAddress>,
    pub pm1b_cnt: Option<GenericAddress>,
    pub sleep_control: Option<GenericAddress>,
    pub reset: Option<(GenericAddress, u8)>,
    pub smi_cmd: u32,
    pub acpi_enable: u8,
    pub century: u8,
    /// SCI_INT: the ISA IRQ (or GSI) of the SCI.
    pub sci_int: u16,
    pub pm1a_evt: Option<GenericAddress>,
    pub gpe0: Option<GenericAddress>,
    /// The power button is the fixed-feature one (PM1 PWRBTN_STS), not a control method.
    pub fixed_power_button: bool,
}

impl Default for Platform {
    fn default() -> Platform {
        Platform {
            fadt: None,
            s5: None,
            lapic_addr: 0,
            cpus: [0; MAX_CPUS],
            cpu_count: 0,
            cpus_dropped: 0,
            ioapic: None,
            sci: None,
            gpe_methods: [0; 4],
            ecam: None,
        }
    }
}

impl Platform {
    /// The APIC IDs of the usable CPUs.
    pub fn cpus(&self) -> &[u32] {
        &self.cpus[..self.cpu_count]
    }

    fn add_cpu(&mut self, apic_id: u32) {
        if self.cpu_count < MAX_CPUS {
            self.cpus[self.cpu_count] = apic_id;
            self.cpu_count += 1;
        } else {
            self.cpus_dropped += 1;
        }
    }
}

/// Formats a generic address as `io:0x604/16`, `mem:0xfed00000/32`, `pci:…`.
pub struct Gas<'a>(pub &'a GenericAddress);

impl core::fmt::Display for Gas<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use acpi::address::AddressSpace;
        let space = match self.0.address_space {
            AddressSpace::SystemMemory => "mem",
            AddressSpace::SystemIo => "io",
            AddressSpace::PciConfigSpace => "pci",
            _ => "other",
        };
        write!(f, "{space}:{:#x}/{}", self.0.address, self.0.bit_width)
    }
}

fn sum(addr: usize, len: usize) -> u8 {
    // SAFETY: callers pass a range inside the identity map holding a table they just mapped.
    let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, len) };
    bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

fn find_rsdp(hint: u64) -> Option<(usize, &'static str)> {
    if hint != 0 {
        return Some((hint as usize, "bootinfo"));
    }
    // SAFETY: on x86 the BIOS areas (EBDA, 0xE0000-0xFFFFF) are identity-mapped memory; the
    // search only reads them.
    match unsafe { Rsdp::search_for_on_bios(IdentityMap) } {
        Ok(mapping) => Some((mapping.physical_start(), "bios")),
        Err(e) => {
            kv!("acpi.rsdp", "missing {e:?}");
            None
        }
    }
}

/// Walks the tables, printing the `acpi.*` keys.
pub fn walk(rsdp_hint: u64) -> Platform {
    let mut platform = Platform::default();
    let Some((rsdp_addr, source)) = find_rsdp(rsdp_hint) else {
        return platform;
    };
    // SAFETY: the boot structure or the BIOS search named this address as the RSDP; the
    // handler refuses anything outside the identity map.
    let rsdp =
        unsafe { IdentityMap.map_physical_region::<Rsdp>(rsdp_addr, core::mem::size_of::<Rsdp>()) };
    if let Err(e) = rsdp.validate() {
        kv!("acpi.rsdp", "invalid {e:?}");
        return platform;
    }
    // Linux checks the ACPI 1.0 checksum (first 20 bytes) on its own as well.
    if sum(rsdp_addr, 20) != 0 {
        kv!("acpi.rsdp", "invalid v1 checksum");
        return platform;
    }
    kv!("acpi.rsdp", "ok");
    kv!("acpi.rsdp.addr", "{rsdp_addr:#x}");
    kv!("acpi.rsdp.source", "{source}");
    kv!("acpi.rsdp.revision", "{}", rsdp.revision());
    kv!("acpi.rsdp.oem", "{}", rsdp.oem_id());
    let root = if rsdp.revision() == 0 {
        "acpi.rsdt"
    } else {
        "acpi.xsdt"
    };
    // SAFETY: the RSDP was validated above.
    let tables = match unsafe { AcpiTables::from_validated_rsdp(IdentityMap, rsdp) } {
        Ok(t) => t,
        Err(e) => {
            kv!(root, "invalid {e:?}");
            return platform;
        }
    };
    kv!(root, "ok");

    {
        use core::fmt::Write as _;
        let mut line = crate::serial::Line::lock();
        let _ = line.write_str("acpi.tables=");
        for (i, header) in tables.headers().enumerate() {
            let _ = write!(
                line,
                "{}{}",
                if i == 0 { "" } else { "," },
                header.signature
            );
        }
        let _ = line.write_str("\n");
    }

    match tables.find_table::<Fadt>() {
        Ok(fadt) => {
            kv!("acpi.fadt", "ok");
            kv!("acpi.fadt.revision", "{}", fadt.header().revision);
            platform.fadt = Some(fadt_info(&fadt));
            walk_dsdt(&fadt, &tables, &mut platform);
        }
        Err(e) => kv!("acpi.fadt", "missing {e:?}"),
    }

    match tables.find_table::<Madt>() {
        Ok(madt) => walk_madt(&madt, &mut platform),
        Err(e) => kv!("acpi.madt", "missing {e:?}"),
    }

    match tables.find_table::<Mcfg>() {
        Ok(mcfg) => {
            kv!("acpi.mcfg", "ok");
            for (i, e) in mcfg.entries().iter().enumerate() {
                let (base, seg, start, end) = (
                    { e.base_address },
                    { e.pci_segment_group },
                    e.bus_number_start,
                    e.bus_number_end,
                );
                kv!(
                    core::format_args!("acpi.mcfg.{i}"),
                    "{base:#x},{seg},{start}-{end}"
                );
                if seg == 0 && platform.ecam.is_none() {
                    platform.ecam = Some((base, start, end));
                }
            }
        }
        Err(_) => kv!("acpi.mcfg", "none"),
    }

    match platform.s5 {
        Some(s5) => kv!("acpi.s5", "{},{}", s5.a, s5.b),
        None => kv!("acpi.s5", "none"),
    }
    {
        use core::fmt::Write as _;
        let mut line = crate::serial::Line::lock();
        let _ = line.write_str("acpi.gpe_methods=");
        let mut first = true;
        for gpe in 0..=255u8 {
            if platform.gpe_methods[usize::from(gpe / 64)] & (1 << (gpe % 64)) != 0 {
                let _ = write!(line, "{}{gpe}", if first { "" } else { "," });
                first = false;
            }
        }
        let _ = line.write_str("\n");
    }
    platform
}

fn fadt_info(fadt: &Fadt) -> FadtInfo {
    let flags = { fadt.flags };
    let hw_reduced = flags.system_is_hw_reduced_acpi();
    kv!("acpi.fadt.hw_reduced", "{}", u8::from(hw_reduced));
    let nonzero = |g: GenericAddress| (g.address != 0).then_some(g);
    let pm1a_cnt = fadt.pm1a_control_block().ok().and_then(nonzero);
    let pm1b_cnt = fadt.pm1b_control_block().ok().flatten().and_then(nonzero);
    let sleep_control = fadt
        .sleep_control_register()
        .ok()
        .flatten()
        .and_then(nonzero);
    let reset = if flags.supports_system_reset_via_fadt() {
        fadt.reset_register()
            .ok()
            .and_then(nonzero)
            .map(|g| (g, fadt.reset_value))
    } else {
        None
    };
    if let Some(g) = &pm1a_cnt {
        kv!("acpi.fadt.pm1a_cnt", "{}", Gas(g));
    }
    if let Some(g) = &sleep_control {
        kv!("acpi.fadt.sleep_control", "{}", Gas(g));
    }
    match &reset {
        Some((g, v)) => kv!("acpi.fadt.reset", "{},{v:#x}", Gas(g)),
        None => kv!("acpi.fadt.reset", "none"),
    }
    let sci = { fadt.sci_interrupt };
    kv!("acpi.fadt.sci", "{sci}");
    FadtInfo {
        hw_reduced,
        pm1a_cnt,
        pm1b_cnt,
        sleep_control,
        reset,
        smi_cmd: fadt.smi_cmd_port,
        acpi_enable: fadt.acpi_enable,
        century: fadt.century,
        sci_int: sci,
        pm1a_evt: fadt.pm1a_event_block().ok().and_then(nonzero),
        gpe0: fadt.gpe0_block().ok().flatten().and_then(nonzero),
        fixed_power_button: !flags.power_button_is_control_method(),
    }
}

fn walk_dsdt(fadt: &Fadt, tables: &AcpiTables<IdentityMap>, platform: &mut Platform) {
    let addr = match fadt.dsdt_address() {
        Ok(a) => a,
        Err(e) => {
            kv!("acpi.dsdt", "missing {e:?}");
            return;
        }
    };
    // SAFETY: the FADT names this address as the DSDT; the handler bounds-checks it.
    let header = unsafe {
        IdentityMap.map_physical_region::<SdtHeader>(addr, core::mem::size_of::<SdtHeader>())
    };
    let len = header.length as usize;
    if len < core::mem::size_of::<SdtHeader>() {
        kv!("acpi.dsdt", "invalid length {len}");
        return;
    }
    // SAFETY: as above, now covering the whole table so the checksum can be computed.
    let full = unsafe { IdentityMap.map_physical_region::<SdtHeader>(addr, len) };
    match full.validate(Signature::DSDT) {
        Ok(()) => kv!("acpi.dsdt", "ok"),
        Err(e) => {
            kv!("acpi.dsdt", "invalid {e:?}");
            return;
        }
    }
    kv!("acpi.dsdt.addr", "{addr:#x}");
    kv!("acpi.dsdt.len", "{len}");
    let body = |addr: usize, len: usize| {
        let h = core::mem::size_of::<SdtHeader>();
        // SAFETY: the table was mapped and validated over `len` bytes.
        unsafe { core::slice::from_raw_parts((addr + h) as *const u8, len - h) }
    };
    let dsdt = body(addr, len);
    platform.s5 = aml::find_s5(dsdt);
    record_gpe_methods(dsdt, &mut platform.gpe_methods);
    for ssdt in tables.ssdts() {
        // SAFETY: the crate found and validated this SSDT's header and length.
        let aml_bytes =
            unsafe { core::slice::from_raw_parts(ssdt.address as *const u8, ssdt.length as usize) };
        if platform.s5.is_none() {
            platform.s5 = aml::find_s5(aml_bytes);
        }
        record_gpe_methods(aml_bytes, &mut platform.gpe_methods);
    }
}

/// Sets bit n (of word n / 64) for every `_Exx`/`_Lxx` method in `aml_bytes`: the GPEs an
/// OS enables because something handles them.
fn record_gpe_methods(aml_bytes: &[u8], gpes: &mut [u64; 4]) {
    for m in aml::gpe_methods(aml_bytes) {
        gpes[usize::from(m.gpe / 64)] |= 1 << (m.gpe % 64);
    }
}

/// Checks the MADT's entry list is well formed (the crate's iterator trusts entry lengths).
fn madt_entries_well_formed(madt: &PhysicalMapping<IdentityMap, Madt>) -> bool {
    let start = madt.physical_start() + core::mem::size_of::<Madt>();
    let end = madt.physical_start() + madt.get().header().length as usize;
    let mut p = start;
    while p < end {
        if p + 2 > end {
            return false;
        }
        // SAFETY: `p + 1 < end`, inside the mapped table.
        let len = usize::from(unsafe { *((p + 1) as *const u8) });
        if len < 2 || p + len > end {
            return false;
        }
        p += len;
    }
    true
}

fn walk_madt(madt: &PhysicalMapping<IdentityMap, Madt>, platform: &mut Platform) {
    if !madt_entries_well_formed(madt) {
        kv!("acpi.madt", "malformed");
        return;
    }
    kv!("acpi.madt", "ok");
    platform.lapic_addr = u64::from(madt.get().local_apic_address);
    let (mut ioapics, mut isos, mut lapics) = (0, 0, 0);
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(e) => {
                let (id, uid, flags) = (e.apic_id, e.processor_id, { e.flags });
                kv!(
                    core::format_args!("acpi.madt.lapic.{lapics}"),
                    "{id},{uid},{flags:#x}"
                );
                lapics += 1;
                // Enabled (bit 0) or online capable (bit 1): a CPU the OS may start.
                if flags & 0x3 != 0 {
                    platform.add_cpu(u32::from(id));
                }
            }
            MadtEntry::LocalX2Apic(e) => {
                let (id, uid, flags) = ({ e.x2apic_id }, { e.processor_uid }, { e.flags });
                kv!(
                    core::format_args!("acpi.madt.lapic.{lapics}"),
                    "{id},{uid},{flags:#x}"
                );
                lapics += 1;
                if flags & 0x3 != 0 {
                    platform.add_cpu(id);
                }
            }
            MadtEntry::IoApic(e) => {
                let (id, addr, gsi) = (e.io_apic_id, { e.io_apic_address }, {
                    e.global_system_interrupt_base
                });
                kv!(
                    core::format_args!("acpi.madt.ioapic.{ioapics}"),
                    "{id},{addr:#x},{gsi}"
                );
                ioapics += 1;
                if platform.ioapic.is_none() {
                    platform.ioapic = Some((u64::from(addr), gsi));
                }
            }
            MadtEntry::InterruptSourceOverride(e) => {
                let (irq, gsi, flags) = (e.irq, { e.global_system_interrupt }, { e.flags });
                kv!(
                    core::format_args!("acpi.madt.iso.{isos}"),
                    "{irq},{gsi},{flags:#x}"
                );
                isos += 1;
                if platform.fadt.is_some_and(|f| f.sci_int == u16::from(irq)) {
                    platform.sci = Some((gsi, flags));
                }
            }
            _ => {}
        }
    }
    if platform.sci.is_none() {
        platform.sci = platform.fadt.map(|f| (u32::from(f.sci_int), 0));
    }
    kv!("acpi.madt.lapic_addr", "{:#x}", platform.lapic_addr);
    kv!("acpi.madt.lapics", "{}", platform.cpu_count);
    kv!("acpi.madt.ioapics", "{ioapics}");
    if platform.cpus_dropped > 0 {
        kv!("acpi.madt.cpus_dropped", "{}", platform.cpus_dropped);
    }
}

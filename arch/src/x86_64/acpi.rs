//! ACPI tables for the x86_64 platform, built with rust-vmm's `acpi_tables`.
//!
//! RSDP → XSDT → { FADT (→ FACS, DSDT), MADT, MCFG }. The platform is a full (not
//! hardware-reduced) ACPI one with a PM1a event/control block, a GPE0 block and a reset
//! register, all in I/O space (see [`super::layout`]):
//! - poweroff: the DSDT names `\_S5` = 5; the guest writes SLP_TYP=5 | SLP_EN to PM1a_CNT;
//! - reboot: FADT `RESET_REG` (I/O `ACPI_RESET_PORT`, value `ACPI_RESET_VALUE`);
//! - power button: a control-method `PNP0C0C` device; the VMM sets GPE0 bit 0, which
//!   raises the SCI, and `\_GPE._E00` notifies `\_SB.PWRB` (0x80).
//!
//! The DSDT also describes COM1 and the PCI host bridge (`PNP0A08`, ECAM per MCFG, the
//! 32- and 64-bit MMIO windows and the I/O window).

use acpi_tables::aml;
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use zerocopy::byteorder::{LE, U16, U32};
use zerocopy::{Immutable, IntoBytes};

use super::layout;

const OEM_ID: [u8; 6] = *b"MONOVT";
const OEM_TABLE_ID: [u8; 8] = *b"MONOVIRT";
const OEM_REVISION: u32 = 1;

/// I/O port of the GPE0 block (status word, then enable word).
pub const GPE0_PORT: u16 = layout::PM1A_EVT_PORT + 0xc;
/// Length of the GPE0 block in bytes.
pub const GPE0_LEN: u8 = 4;
/// GPE0 bit that carries the power button event.
pub const GPE_POWER_BUTTON: u16 = 1 << 0;
/// Offset of the MADT flags field (after the header and the local APIC address).
const MADT_FLAGS_OFFSET: usize = 40;
/// MADT flag: the platform also has dual 8259 PICs (Linux masks them when set).
const MADT_PCAT_COMPAT: u32 = 1;

/// Errors building the tables.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcpiError {
    /// More vCPUs than xAPIC IDs / MADT entries allow.
    #[error("Too many vCPUs for the MADT: {0}")]
    TooManyVcpus(usize),
    /// The tables do not fit in the BIOS area.
    #[error("ACPI tables need {0} bytes, more than the BIOS area holds")]
    TooLarge(u64),
}

/// The tables, each with the guest physical address it must be written to.
#[derive(Debug, Clone)]
pub struct AcpiTables {
    /// Where the RSDP is (the first blob); boot_params / PVH start_info point here.
    pub rsdp_addr: u64,
    /// `(guest address, bytes)` for every table.
    pub blobs: Vec<(u64, Vec<u8>)>,
}

/// MADT interrupt source override (type 2), which `acpi_tables` does not provide.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct InterruptSourceOverride {
    r#type: u8,
    length: u8,
    bus: u8,
    source: u8,
    gsi: U32<LE>,
    flags: U16<LE>,
}

impl Aml for InterruptSourceOverride {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(self.as_bytes());
    }
}

/// MADT local APIC NMI (type 4): LINT1 of every processor is NMI.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct LocalApicNmi {
    r#type: u8,
    length: u8,
    processor_uid: u8,
    flags: U16<LE>,
    lint: u8,
}

impl Aml for LocalApicNmi {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(self.as_bytes());
    }
}

fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

fn checksum_fixup(table: &mut [u8]) {
    table[9] = 0;
    let sum = table.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    table[9] = 0u8.wrapping_sub(sum);
}

/// The MADT: one enabled local APIC per vCPU (by APIC ID), the IOAPIC, ISA IRQ 0 → GSI 2
/// and the SCI as level/active-high, LINT1 as NMI.
pub fn madt(apic_ids: &[u32]) -> Result<Vec<u8>, AcpiError> {
    if apic_ids.len() > layout::MAX_VCPUS || apic_ids.iter().any(|id| *id >= 0xff) {
        return Err(AcpiError::TooManyVcpus(apic_ids.len()));
    }
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(layout::APIC_START as u32),
    );
    for (uid, id) in apic_ids.iter().enumerate() {
        // Both fit in a byte: checked above.
        madt.add_structure(ProcessorLocalApic::new(
            uid as u8,
            *id as u8,
            EnabledStatus::Enabled,
        ));
    }
    madt.add_structure(IoApic::new(0, layout::IOAPIC_START as u32, 0));
    madt.add_structure(InterruptSourceOverride {
        r#type: 2,
        length: 10,
        bus: 0,
        source: 0,
        gsi: 2.into(),
        flags: 0.into(),
    });
    madt.add_structure(InterruptSourceOverride {
        r#type: 2,
        length: 10,
        bus: 0,
        source: layout::SCI_IRQ as u8,
        gsi: layout::SCI_IRQ.into(),
        // Active high (01), level triggered (11 << 2).
        flags: 0x000d.into(),
    });
    madt.add_structure(LocalApicNmi {
        r#type: 4,
        length: 6,
        processor_uid: 0xff,
        flags: 0.into(),
        lint: 1,
    });
    let mut bytes = to_bytes(&madt);
    bytes[MADT_FLAGS_OFFSET..MADT_FLAGS_OFFSET + 4]
        .copy_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    checksum_fixup(&mut bytes);
    Ok(bytes)
}

/// The MCFG: one ECAM window for segment 0, buses 0..=`PCI_LAST_BUS`.
pub fn mcfg() -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(layout::PCI_ECAM_START, 0, 0, layout::PCI_LAST_BUS);
    to_bytes(&mcfg)
}

/// The DSDT: `\_S5`, the power button and its GPE handler, COM1, the PCI host bridge.
pub fn dsdt(mem_size: u64) -> Vec<u8> {
    let mut sdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    // Each object is serialized in the statement that builds it: the AML builders borrow
    // their children, which are temporaries of that statement.
    aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![
            &layout::S5_SLEEP_TYPE,
            &layout::S5_SLEEP_TYPE,
            &0u8,
            &0u8,
        ]),
    )
    .to_aml_bytes(&mut sdt);

    aml::Device::new(
        "_SB_.PWRB".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C0C")),
            &aml::Name::new("_UID".into(), &0u8),
        ],
    )
    .to_aml_bytes(&mut sdt);
    aml::Scope::new(
        "_GPE".into(),
        vec![&aml::Method::new(
            "_E00".into(),
            0,
            false,
            vec![&aml::Notify::new(&aml::Path::new("\\_SB_.PWRB"), &0x80u8)],
        )],
    )
    .to_aml_bytes(&mut sdt);

    aml::Device::new(
        "_SB_.COM1".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501")),
            &aml::Name::new("_UID".into(), &0u8),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::IO::new(layout::COM1_PORT, layout::COM1_PORT, 1, 8),
                    &aml::Interrupt::new(true, true, false, false, layout::COM1_IRQ),
                ]),
            ),
        ],
    )
    .to_aml_bytes(&mut sdt);

    let mmio64_start = layout::mmio64_start(mem_size);
    aml::Device::new(
        "_SB_.PCI0".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A08")),
            &aml::Name::new("_CID".into(), &aml::EISAName::new("PNP0A03")),
            &aml::Name::new("_ADR".into(), &0u8),
            &aml::Name::new("_SEG".into(), &0u8),
            &aml::Name::new("_UID".into(), &0u8),
            &aml::Name::new("_BBN".into(), &0u8),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::AddressSpace::new_bus_number(0u16, u16::from(layout::PCI_LAST_BUS)),
                    &aml::IO::new(0xcf8, 0xcf8, 1, 8),
                    &aml::AddressSpace::new_io(0x0000u16, 0x0cf7u16, None),
                    &aml::AddressSpace::new_io(0x0d00u16, 0xffffu16, None),
                    &aml::AddressSpace::new_memory(
                        aml::AddressSpaceCacheable::NotCacheable,
                        true,
                        layout::MMIO32_START as u32,
                        (layout::MMIO32_START + layout::MMIO32_SIZE - 1) as u32,
                        None,
                    ),
                    &aml::AddressSpace::new_memory(
                        aml::AddressSpaceCacheable::NotCacheable,
                        true,
                        mmio64_start,
                        mmio64_start + layout::MMIO64_SIZE - 1,
                        None,
                    ),
                ]),
            ),
        ],
    )
    .to_aml_bytes(&mut sdt);

    // `Sdt` keeps its length field current as it grows, but in host byte order
    // (acpi_tables writes it with a native-endian u32); ACPI is little-endian, so write
    // it explicitly. This matters on big-endian hosts (s390x), where the table is still
    // built and tested for an x86 guest. `write_bytes` also fixes the checksum.
    let len = u32::try_from(sdt.len()).expect("a DSDT is far below 4 GiB");
    sdt.write_bytes(4, &len.to_le_bytes());
    sdt.as_slice().to_vec()
}

/// The FADT: PM1a event/control blocks, GPE0, reset register, SCI, i8042 present.
pub fn fadt(dsdt_addr: u64, facs_addr: u64) -> Vec<u8> {
    let mut b = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .firmware_ctrl_64(facs_addr)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        // Power and sleep buttons are control-method devices, not fixed features.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::FixRtc)
        .flag(Flags::ResetRegSup)
        .gpe_info(u32::from(GPE0_PORT), 0, GPE0_LEN, 0, 0);
    b.sci_int = (layout::SCI_IRQ as u16).into();
    b.pm1a_evt_blk = u32::from(layout::PM1A_EVT_PORT).into();
    b.pm1a_cnt_blk = u32::from(layout::PM1A_CNT_PORT).into();
    b.pm1_evt_len = 4;
    b.pm1_cnt_len = 2;
    b.x_pm1a_evt_blk = GAS::new(
        AddressSpace::SystemIo,
        32,
        0,
        AccessSize::WordAccess,
        u64::from(layout::PM1A_EVT_PORT),
    );
    b.x_pm1a_cnt_blk = GAS::new(
        AddressSpace::SystemIo,
        16,
        0,
        AccessSize::WordAccess,
        u64::from(layout::PM1A_CNT_PORT),
    );
    b.x_gpe0_blk = GAS::new(
        AddressSpace::SystemIo,
        GPE0_LEN * 8,
        0,
        AccessSize::ByteAccess,
        u64::from(GPE0_PORT),
    );
    b.reset_reg = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(layout::ACPI_RESET_PORT),
    );
    b.reset_value = layout::ACPI_RESET_VALUE;
    // CMOS century register.
    b.century = 0x32;
    // IA-PC boot architecture: legacy devices, 8042 present, no VGA.
    b.iapc_boot_arch = 0x0007.into();
    to_bytes(&b.finalize())
}

fn align(addr: u64, to: u64) -> u64 {
    addr.div_ceil(to) * to
}

/// All tables for `apic_ids` (one per vCPU, in vCPU order) and `mem_size` bytes of RAM,
/// laid out from [`layout::ACPI_START`].
///
/// ```
/// use arch::x86_64::acpi::build_tables;
/// let t = build_tables(&[0, 1], 256 << 20).unwrap();
/// assert_eq!(&t.blobs[0].1[..8], b"RSD PTR ");
/// ```
pub fn build_tables(apic_ids: &[u32], mem_size: u64) -> Result<AcpiTables, AcpiError> {
    let rsdp_addr = layout::ACPI_START;
    let xsdt_addr = align(rsdp_addr + Rsdp::len() as u64, 16);
    // XSDT: header + 3 entries.
    let facs_addr = align(xsdt_addr + 36 + 3 * 8, 64);
    let facs = to_bytes(&FACS::new());
    let dsdt_addr = align(facs_addr + facs.len() as u64, 16);
    let dsdt = dsdt(mem_size);
    let fadt_addr = align(dsdt_addr + dsdt.len() as u64, 16);
    let fadt = fadt(dsdt_addr, facs_addr);
    let madt_addr = align(fadt_addr + fadt.len() as u64, 16);
    let madt = madt(apic_ids)?;
    let mcfg_addr = align(madt_addr + madt.len() as u64, 16);
    let mcfg = mcfg();
    let end = mcfg_addr + mcfg.len() as u64;
    if end > layout::HIMEM_START {
        return Err(AcpiError::TooLarge(end - layout::ACPI_START));
    }

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for addr in [fadt_addr, madt_addr, mcfg_addr] {
        xsdt.add_entry(addr);
    }
    let xsdt = to_bytes(&xsdt);
    let rsdp = to_bytes(&Rsdp::new(OEM_ID, xsdt_addr));

    Ok(AcpiTables {
        rsdp_addr,
        blobs: vec![
            (rsdp_addr, rsdp),
            (xsdt_addr, xsdt),
            (facs_addr, facs),
            (dsdt_addr, dsdt),
            (fadt_addr, fadt),
            (madt_addr, madt),
            (mcfg_addr, mcfg),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
    }

    /// Walks RSDP → XSDT → FADT → DSDT as an OS does, checking signatures, lengths and
    /// checksums.
    #[test]
    fn tables_walk_and_checksum() {
        let t = build_tables(&[0, 1, 2, 3], 512 << 20).expect("tables");
        let at = |addr: u64| -> &Vec<u8> {
            &t.blobs
                .iter()
                .find(|(a, _)| *a == addr)
                .expect("pointer to a table we produced")
                .1
        };
        let rsdp = at(t.rsdp_addr);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(sum(rsdp), 0);
        assert_eq!(rsdp[15], 2, "ACPI 2.0+ RSDP");
        let xsdt = at(u64_at(rsdp, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!(u32_at(xsdt, 4) as usize, xsdt.len());
        assert_eq!(sum(xsdt), 0);
        let mut sigs = Vec::new();
        for i in 0..(xsdt.len() - 36) / 8 {
            let table = at(u64_at(xsdt, 36 + i * 8));
            assert_eq!(u32_at(table, 4) as usize, table.len());
            assert_eq!(sum(table), 0, "{:?}", &table[..4]);
            sigs.push(table[..4].to_vec());
            if &table[..4] == b"FACP" {
                let dsdt = at(u64_at(table, 140));
                assert_eq!(&dsdt[..4], b"DSDT");
                assert_eq!(sum(dsdt), 0);
                assert_eq!(u32_at(dsdt, 4) as usize, dsdt.len());
                let facs = at(u64_at(table, 132));
                assert_eq!(&facs[..4], b"FACS");
                // SCI, PM1a blocks, reset register.
                assert_eq!(u16::from_le_bytes([table[46], table[47]]), 9);
                assert_eq!(u32_at(table, 56), 0x600);
                assert_eq!(u32_at(table, 64), 0x604);
                assert_eq!(table[88], 4);
                assert_eq!(table[89], 2);
                assert_eq!(u64_at(table, 116 + 4), u64::from(layout::ACPI_RESET_PORT));
                assert_eq!(table[128], layout::ACPI_RESET_VALUE);
                assert_eq!(u32_at(table, 112) & (1 << 20), 0, "not hardware-reduced");
            }
        }
        assert_eq!(
            sigs,
            vec![b"FACP".to_vec(), b"APIC".to_vec(), b"MCFG".to_vec()]
        );
    }

    #[test]
    fn madt_lists_every_apic() {
        let m = madt(&[0, 2, 4]).expect("madt");
        assert_eq!(sum(&m), 0);
        assert_eq!(u32_at(&m, 36), layout::APIC_START as u32);
        assert_eq!(u32_at(&m, 40), MADT_PCAT_COMPAT);
        let mut ids = Vec::new();
        let mut overrides = Vec::new();
        let mut i = 44;
        while i < m.len() {
            match m[i] {
                0 => {
                    assert_eq!(u32_at(&m, i + 4) & 1, 1, "enabled");
                    ids.push(m[i + 3]);
                }
                2 => overrides.push((m[i + 3], u32_at(&m, i + 4))),
                _ => {}
            }
            i += m[i + 1] as usize;
        }
        assert_eq!(i, m.len());
        assert_eq!(ids, vec![0, 2, 4]);
        assert_eq!(overrides, vec![(0, 2), (9, 9)]);
        assert!(madt(&[0xff]).is_err());
    }

    #[test]
    fn mcfg_names_the_ecam_window() {
        let m = mcfg();
        assert_eq!(&m[..4], b"MCFG");
        assert_eq!(sum(&m), 0);
        assert_eq!(u64_at(&m, 44), layout::PCI_ECAM_START);
        assert_eq!(m[55], layout::PCI_LAST_BUS);
    }

    #[test]
    fn dsdt_contains_the_devices() {
        let d = dsdt(256 << 20);
        let has = |needle: &[u8]| d.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"_S5_"));
        assert!(has(b"PWRB"));
        assert!(has(b"_E00"));
        assert!(has(b"COM1"));
        assert!(has(b"PCI0"));
        // EISA ID of PNP0A08, encoded as AML dword.
        assert!(has(&[0x0c, 0x41, 0xd0, 0x0a, 0x08]));
    }
}

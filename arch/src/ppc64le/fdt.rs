//! The flattened device tree a pseries guest boots with (LoPAR / the devicetree
//! specification), built with rust-vmm's vm-fdt: the CPUs with their interrupt server
//! numbers, memory, `/chosen` (command line, initrd range, console), the `/hypervisor`
//! node, the vio bus with the `hvterm1` console, a PCI host bridge for virtio-pci, the
//! XICS interrupt controller and `/rtas` with the service tokens of [`super::rtas`].

use vm_fdt::{FdtReserveEntry, FdtWriter};

use super::{layout, rtas};

/// Phandle of the interrupt controller.
const XICS_PHANDLE: u32 = 0x1111;
/// POWER9's timebase frequency (512 MHz).
pub const TIMEBASE_FREQUENCY: u32 = 512_000_000;

/// The hcall sets the hypervisor offers (LoPAR "ibm,hypertas-functions"). Linux turns on
/// its LPAR code only when this property exists, and uses H_SET_MODE for little-endian
/// interrupts only when `hcall-set-mode` is listed. `hcall-term`: the hvterm console;
/// `hcall-interrupt`: the XICS hcalls (served by KVM's in-kernel XICS); `hcall-splpar`:
/// the VPA and H_CEDE (served by KVM-HV).
pub const HYPERTAS_FUNCTIONS: &[&str] = &[
    "hcall-term",
    "hcall-interrupt",
    "hcall-splpar",
    "hcall-set-mode",
];

/// Option vector 5 as `/chosen/ibm,architecture-vec-5` carries it after client
/// architecture negotiation (LoPAR "ibm,client-architecture-support"; byte 0 holds the
/// vector's length less one, byte N is the architecture's byte N): byte 24 = 0x40, the
/// radix MMU only (KVM-HV runs nested guests in radix mode only); byte 26 = 0x40, guest
/// translation shootdown (the guest's own tlbie) available for radix.
pub fn option_vector_5() -> [u8; 27] {
    let mut v = [0u8; 27];
    v[0] = 26;
    v[24] = 0x40;
    v[26] = 0x40;
    v
}

/// What the device tree describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdtConfig {
    /// vCPU count (one thread per core).
    pub vcpus: u32,
    /// RAM size from address 0.
    pub mem_size: u64,
    /// Kernel command line.
    pub cmdline: String,
    /// The initrd's `[start, end)` in guest physical memory.
    pub initrd: Option<(u64, u64)>,
    /// Guest physical address of the RTAS blob.
    pub rtas_base: u64,
}

/// Errors building the device tree.
#[derive(Debug, thiserror::Error)]
pub enum FdtError {
    /// vm-fdt refused a node or property.
    #[error("Cannot build the device tree")]
    Fdt(#[from] vm_fdt::Error),
    /// The blob is larger than the space reserved for it.
    #[error("Device tree of {0} bytes exceeds its reserved space")]
    TooLarge(usize),
}

/// Builds the device tree blob.
pub fn build(cfg: &FdtConfig) -> Result<Vec<u8>, FdtError> {
    // The RTAS blob must survive the kernel's early allocations (prom_init reserves it the
    // same way); the kernel reserves its own image, the tree and the initrd itself.
    let mut f =
        FdtWriter::new_with_mem_reserv(&[FdtReserveEntry::new(cfg.rtas_base, layout::RTAS_SIZE)?])?;
    let root = f.begin_node("")?;
    f.property_u32("#address-cells", 2)?;
    f.property_u32("#size-cells", 2)?;
    f.property_string("device_type", "chrp")?;
    f.property_string("model", "IBM pSeries (emulated by monovirt)")?;
    f.property_string("compatible", "qemu,pseries")?;

    let chosen = f.begin_node("chosen")?;
    f.property_string("bootargs", &cfg.cmdline)?;
    let vty = format!("/vdevice/vty@{:x}", layout::VTY_REG);
    f.property_string("linux,stdout-path", &vty)?;
    f.property_string("stdout-path", &vty)?;
    if let Some((start, end)) = cfg.initrd {
        f.property_u64("linux,initrd-start", start)?;
        f.property_u64("linux,initrd-end", end)?;
    }
    f.property("ibm,architecture-vec-5", &option_vector_5())?;
    f.end_node(chosen)?;

    let hv = f.begin_node("hypervisor")?;
    f.property_string("compatible", "linux,kvm")?;
    f.end_node(hv)?;

    let mem = f.begin_node("memory@0")?;
    f.property_string("device_type", "memory")?;
    f.property_array_u64("reg", &[0, cfg.mem_size])?;
    f.end_node(mem)?;

    let cpus = f.begin_node("cpus")?;
    f.property_u32("#address-cells", 1)?;
    f.property_u32("#size-cells", 0)?;
    for i in 0..cfg.vcpus {
        let cpu = f.begin_node(&format!("PowerPC,POWER9@{i:x}"))?;
        f.property_string("device_type", "cpu")?;
        f.property_u32("reg", i)?;
        f.property_array_u32("ibm,ppc-interrupt-server#s", &[i])?;
        f.property_u32("timebase-frequency", TIMEBASE_FREQUENCY)?;
        f.property_u32("clock-frequency", 1_000_000_000)?;
        f.property_u32("d-cache-block-size", 128)?;
        f.property_u32("i-cache-block-size", 128)?;
        f.property_u32("ibm,slb-size", 32)?;
        f.property_null("64-bit")?;
        // Vector facilities (PAPR "ibm,vmx": 1 = VMX, 2 = VMX and VSX) and decimal
        // floating point: without them Linux clears its Altivec/VSX features and kills
        // any process that uses them (glibc does) with SIGILL.
        f.property_u32("ibm,vmx", 2)?;
        f.property_u32("ibm,dfp", 1)?;
        f.property_string("status", "okay")?;
        f.end_node(cpu)?;
    }
    f.end_node(cpus)?;

    let xics = f.begin_node("interrupt-controller")?;
    f.property_string("device_type", "PowerPC-External-Interrupt-Presentation")?;
    f.property_string("compatible", "IBM,ppc-xicp")?;
    f.property_null("interrupt-controller")?;
    f.property_array_u32("ibm,interrupt-server-ranges", &[0, cfg.vcpus])?;
    f.property_u32("#interrupt-cells", 2)?;
    f.property_phandle(XICS_PHANDLE)?;
    f.end_node(xics)?;

    let vdev = f.begin_node("vdevice")?;
    f.property_string("device_type", "vdevice")?;
    f.property_string("compatible", "IBM,vdevice")?;
    f.property_u32("#address-cells", 1)?;
    f.property_u32("#size-cells", 0)?;
    f.property_u32("#interrupt-cells", 2)?;
    f.property_null("interrupt-controller")?;
    let vty = f.begin_node(&format!("vty@{:x}", layout::VTY_REG))?;
    f.property_string("name", "vty")?;
    f.property_string("device_type", "serial")?;
    f.property_string("compatible", "hvterm1")?;
    f.property_u32("reg", layout::VTY_REG)?;
    f.end_node(vty)?;
    f.end_node(vdev)?;

    let phb = f.begin_node(&format!("pci@{:x}", layout::PHB_BUID))?;
    f.property_string("device_type", "pci")?;
    f.property_string("compatible", "IBM,Logical_PHB")?;
    f.property_u32("#address-cells", 3)?;
    f.property_u32("#size-cells", 2)?;
    f.property_u32("#interrupt-cells", 1)?;
    f.property_array_u64("reg", &[layout::PHB_BUID, 0])?;
    f.property_array_u32("bus-range", &[0, 0xff])?;
    f.property_u32("ibm,pci-config-space-type", 1)?;
    f.property_u32("interrupt-parent", XICS_PHANDLE)?;
    let (io, m32, m64) = (
        layout::PHB_IO_START,
        layout::PHB_MMIO32_START,
        layout::PHB_MMIO64_START,
    );
    #[rustfmt::skip]
    let ranges = [
        // PCI address (space code, hi, lo), CPU address (hi, lo), size (hi, lo)
        0x0100_0000, 0, 0, (io >> 32) as u32, io as u32, 0, layout::PHB_IO_SIZE as u32,
        0x0200_0000, 0, 0x8000_0000, (m32 >> 32) as u32, m32 as u32, 0, layout::PHB_MMIO32_SIZE as u32,
        0x0300_0000, (m64 >> 32) as u32, m64 as u32, (m64 >> 32) as u32, m64 as u32,
        (layout::PHB_MMIO64_SIZE >> 32) as u32, layout::PHB_MMIO64_SIZE as u32,
    ];
    f.property_array_u32("ranges", &ranges)?;
    f.end_node(phb)?;

    let rtas_node = f.begin_node("rtas")?;
    f.property_string_list(
        "ibm,hypertas-functions",
        HYPERTAS_FUNCTIONS.iter().map(|s| s.to_string()).collect(),
    )?;
    for name in rtas::SERVICES {
        let token = rtas::token(name).expect("every service has a token");
        f.property_u32(name, token)?;
    }
    let base = u32::try_from(cfg.rtas_base).map_err(|_| FdtError::TooLarge(0))?;
    f.property_u32("linux,rtas-base", base)?;
    f.property_u32("linux,rtas-entry", base)?;
    f.property_u32("rtas-size", layout::RTAS_SIZE as u32)?;
    f.end_node(rtas_node)?;

    f.end_node(root)?;
    let blob = f.finish()?;
    if blob.len() as u64 > layout::FDT_MAX_SIZE {
        return Err(FdtError::TooLarge(blob.len()));
    }
    Ok(blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader of the devicetree specification's flattened format (chapter 5), written
    /// for the tests: finds `prop` of the node at `path`.
    fn prop<'a>(blob: &'a [u8], path: &str, prop: &str) -> Option<&'a [u8]> {
        let be = |at: usize| u32::from_be_bytes(blob[at..at + 4].try_into().unwrap());
        assert_eq!(be(0), 0xd00d_feed, "FDT magic");
        assert_eq!(be(20), 17, "version 17");
        let structs = be(8) as usize;
        let strings = be(12) as usize;
        let want: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut stack: Vec<String> = Vec::new();
        let mut at = structs;
        loop {
            match be(at) {
                1 => {
                    let name_end = blob[at + 4..].iter().position(|b| *b == 0).unwrap();
                    let name = std::str::from_utf8(&blob[at + 4..at + 4 + name_end]).unwrap();
                    stack.push(name.to_string());
                    at = (at + 4 + name_end + 1 + 3) & !3;
                }
                2 => {
                    stack.pop();
                    at += 4;
                }
                3 => {
                    let len = be(at + 4) as usize;
                    let nameoff = be(at + 8) as usize;
                    let s = &blob[strings + nameoff..];
                    let pname =
                        std::str::from_utf8(&s[..s.iter().position(|b| *b == 0).unwrap()]).unwrap();
                    let here: Vec<&str> = stack.iter().skip(1).map(String::as_str).collect();
                    if here == want && pname == prop {
                        return Some(&blob[at + 12..at + 12 + len]);
                    }
                    at = (at + 12 + len + 3) & !3;
                }
                4 => at += 4,
                9 => return None,
                t => panic!("bad token {t}"),
            }
        }
    }

    fn cfg() -> FdtConfig {
        FdtConfig {
            vcpus: 2,
            mem_size: 0x2000_0000,
            cmdline: "console=hvc0 root=/dev/vda".into(),
            initrd: Some((0x200_0000, 0x280_0000)),
            rtas_base: 0x1fef_f000,
        }
    }

    #[test]
    fn root_memory_and_chosen() {
        let b = build(&cfg()).unwrap();
        assert_eq!(prop(&b, "/", "device_type"), Some(b"chrp\0".as_slice()));
        assert_eq!(
            prop(&b, "/memory@0", "reg"),
            Some([0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0].as_slice())
        );
        assert_eq!(
            prop(&b, "/chosen", "bootargs"),
            Some(b"console=hvc0 root=/dev/vda\0".as_slice())
        );
        assert_eq!(
            prop(&b, "/chosen", "linux,initrd-start"),
            Some([0u8, 0, 0, 0, 0x02, 0, 0, 0].as_slice())
        );
        assert_eq!(
            prop(&b, "/chosen", "linux,initrd-end"),
            Some([0u8, 0, 0, 0, 0x02, 0x80, 0, 0].as_slice())
        );
        assert_eq!(
            prop(&b, "/chosen", "linux,stdout-path"),
            Some(b"/vdevice/vty@30000000\0".as_slice())
        );
        assert_eq!(
            prop(&b, "/hypervisor", "compatible"),
            Some(b"linux,kvm\0".as_slice())
        );
    }

    #[test]
    fn cpus_carry_interrupt_servers() {
        let b = build(&cfg()).unwrap();
        assert_eq!(
            prop(&b, "/cpus/PowerPC,POWER9@1", "ibm,ppc-interrupt-server#s"),
            Some([0u8, 0, 0, 1].as_slice())
        );
        assert_eq!(
            prop(&b, "/cpus/PowerPC,POWER9@0", "timebase-frequency"),
            Some(512_000_000u32.to_be_bytes().as_slice())
        );
        assert_eq!(prop(&b, "/cpus/PowerPC,POWER9@2", "reg"), None);
        assert_eq!(
            prop(&b, "/cpus/PowerPC,POWER9@0", "ibm,vmx"),
            Some([0u8, 0, 0, 2].as_slice())
        );
    }

    #[test]
    fn vty_phb_and_rtas() {
        let b = build(&cfg()).unwrap();
        assert_eq!(
            prop(&b, "/vdevice/vty@30000000", "compatible"),
            Some(b"hvterm1\0".as_slice())
        );
        assert_eq!(
            prop(&b, "/vdevice/vty@30000000", "reg"),
            Some([0x30u8, 0, 0, 0].as_slice())
        );
        assert_eq!(
            prop(&b, "/pci@800000020000000", "device_type"),
            Some(b"pci\0".as_slice())
        );
        assert_eq!(
            prop(&b, "/rtas", "power-off"),
            Some([0u8, 0, 0x20, 0x02].as_slice())
        );
        assert_eq!(
            prop(&b, "/rtas", "get-time-of-day"),
            Some([0u8, 0, 0x20, 0x01].as_slice())
        );
        assert_eq!(
            prop(&b, "/rtas", "linux,rtas-entry"),
            Some([0x1fu8, 0xef, 0xf0, 0].as_slice())
        );
        assert_eq!(
            prop(&b, "/rtas", "ibm,hypertas-functions"),
            Some(b"hcall-term\0hcall-interrupt\0hcall-splpar\0hcall-set-mode\0".as_slice())
        );
    }

    #[test]
    fn radix_option_vector_and_rtas_reservation() {
        let b = build(&cfg()).unwrap();
        let ov5 = prop(&b, "/chosen", "ibm,architecture-vec-5").unwrap();
        // Linux's OV5_MMU_SUPPORT (0x18C0): byte 24, mask 0xc0; 0x40 = radix only.
        assert_eq!(ov5.len(), 27);
        assert_eq!(ov5[24] & 0xc0, 0x40);
        // OV5_RADIX_GTSE (0x1A40): byte 26, bit 0x40.
        assert_eq!(ov5[26] & 0x40, 0x40);
        // The memory reservation block (devicetree specification 5.3): at off_mem_rsvmap,
        // (address, size) pairs of be64 ending with a zero pair.
        let be32 = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let be64 = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
        let rsv = be32(16);
        assert_eq!((be64(rsv), be64(rsv + 8)), (0x1fef_f000, 0x1000));
        assert_eq!((be64(rsv + 16), be64(rsv + 24)), (0, 0));
    }
}

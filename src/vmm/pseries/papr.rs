//! What the pseries machine does with its vCPUs' exits: PAPR hypercalls (the hvterm
//! console, RTAS through `KVMPPC_H_RTAS`, the radix process table, the interrupt
//! endianness), RTAS services (console, time, power-off, reboot, PCI configuration
//! space through `devices::pci`), and MMIO to the host bridge's windows.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arch::kvm::{self, MmioExit, VcpuFd, VmFd};
use arch::ppc64le::hcall::{self, HcallReturn, TermConsole, H_FUNCTION, H_PARAMETER, H_SUCCESS};
use arch::ppc64le::kvm::{self as ppc, PaprHcall};
use arch::ppc64le::layout;
use arch::ppc64le::rtas::{self, PciConfigAddress, RtasPlatform, TimeOfDay};
use devices::pci::PciBus;
use vm_memory::GuestMemoryMmap;

use crate::vmm::exit::ExitReason;
use crate::vmm::machine::{self, crash, Platform};

/// H_SET_MODE.
pub const H_SET_MODE: u64 = 0x31c;
/// H_SET_MODE resource: the endianness interrupts are taken in.
pub const H_SET_MODE_RESOURCE_LE: u64 = 4;
/// H_REGISTER_PROC_TBL.
pub const H_REGISTER_PROC_TBL: u64 = 0x37c;
/// H_REGISTER_PROC_TBL flags: register a new table (operation bits).
pub const PROC_TABLE_NEW: u64 = 0x18;
/// H_REGISTER_PROC_TBL flags: operation mask.
pub const PROC_TABLE_OP_MASK: u64 = 0x18;
/// H_REGISTER_PROC_TBL flags: radix translation.
pub const PROC_TABLE_RADIX: u64 = 0x04;
/// H_REGISTER_PROC_TBL flags: guest translation shootdown enable.
pub const PROC_TABLE_GTSE: u64 = 0x01;
/// LPCR[ILE]: interrupts are taken in little-endian mode.
pub const LPCR_ILE: u64 = 1 << 25;
/// Partition table entry, second doubleword: guest radix (bit 0).
pub const PATB_GR: u64 = 1 << 63;

/// The hvterm console: output to the VM's console writer, input queued from the host.
pub struct HvTerm {
    out: Box<dyn Write + Send>,
    input: VecDeque<u8>,
}

impl HvTerm {
    /// A console writing to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            input: VecDeque::new(),
        }
    }
}

impl TermConsole for HvTerm {
    fn write(&mut self, bytes: &[u8]) {
        // The guest cannot be told about a failed host write; it is logged instead.
        if let Err(e) = self.out.write_all(bytes).and_then(|()| self.out.flush()) {
            tracing::debug!("hvterm output failed: {e}");
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.input.len());
        for (b, v) in buf.iter_mut().zip(self.input.drain(..n)) {
            *b = v;
        }
        n
    }
}

/// The hypercalls and RTAS services that need no vCPU or VM fd: console, RTAS, PCI
/// configuration space.
pub struct Papr {
    mem: GuestMemoryMmap,
    console: Mutex<HvTerm>,
    pci: Arc<PciBus>,
}

/// The pseries platform of one VM.
pub struct Pseries {
    papr: Papr,
    vm: Arc<VmFd>,
}

/// The RTAS services of one call, with what it decided about the VM.
struct RtasCall<'a> {
    console: &'a mut HvTerm,
    pci: &'a PciBus,
    outcome: Option<ExitReason>,
}

impl RtasPlatform for RtasCall<'_> {
    fn display_character(&mut self, byte: u8) {
        self.console.write(&[byte]);
    }

    fn time_of_day(&mut self) -> TimeOfDay {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        time_of_day(since.as_secs(), since.subsec_nanos())
    }

    fn power_off(&mut self) {
        self.outcome = Some(ExitReason::Shutdown);
    }

    fn reboot(&mut self) {
        self.outcome = Some(ExitReason::Reboot);
    }

    fn pci_config_read(&mut self, buid: u64, at: PciConfigAddress, size: usize) -> Option<u32> {
        if buid != layout::PHB_BUID || !exists(self.pci, at) {
            return None;
        }
        let mut b = [0u8; 4];
        self.pci
            .config_read(at.bus, at.device, at.function, at.register, &mut b[..size]);
        Some(u32::from_le_bytes(b))
    }

    fn pci_config_write(
        &mut self,
        buid: u64,
        at: PciConfigAddress,
        size: usize,
        value: u32,
    ) -> bool {
        if buid != layout::PHB_BUID || !exists(self.pci, at) {
            return false;
        }
        let bytes = value.to_le_bytes();
        let moves =
            self.pci
                .config_write(at.bus, at.device, at.function, at.register, &bytes[..size]);
        if !moves.is_empty() {
            tracing::trace!(?moves, "BARs moved by RTAS config write");
        }
        true
    }
}

/// Whether the PCI function `at` exists on our flat root bus of single-function devices.
fn exists(pci: &PciBus, at: PciConfigAddress) -> bool {
    at.bus == 0 && at.function == 0 && pci.device(at.device).is_some()
}

/// Civil date and time (UTC) of `secs` since the epoch (Howard Hinnant's days-to-civil).
pub fn time_of_day(secs: u64, nanos: u32) -> TimeOfDay {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as u32;
    TimeOfDay {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem / 60 % 60) as u32,
        second: (rem % 60) as u32,
        nanos,
    }
}

impl Pseries {
    /// The platform of VM `vm`.
    pub fn new(papr: Papr, vm: Arc<VmFd>) -> Self {
        Self { papr, vm }
    }
}

impl Papr {
    /// Over guest memory `mem`, console output `out` and PCI bus `pci`.
    pub fn new(mem: GuestMemoryMmap, out: Box<dyn Write + Send>, pci: Arc<PciBus>) -> Self {
        Self {
            mem,
            console: Mutex::new(HvTerm::new(out)),
            pci,
        }
    }

    /// Queues console input for H_GET_TERM_CHAR.
    pub fn console_input(&self, bytes: &[u8]) {
        let mut console = self.console.lock().unwrap_or_else(|e| e.into_inner());
        console.input.extend(bytes);
    }

    /// Serves hcall `nr` with arguments r4..r12 in `args` (outputs go back there), for
    /// the calls that need nothing of the vCPU. Returns r3 and what the call decided about
    /// the VM, or `None` if the hcall needs the vCPU or the VM fd.
    pub fn hcall(&self, nr: u64, args: &mut [u64; 9]) -> Option<(i64, Option<ExitReason>)> {
        let mut console = self.console.lock().unwrap_or_else(|e| e.into_inner());
        let ret = |r: HcallReturn, args: &mut [u64; 9]| {
            args[..3].copy_from_slice(&r.out);
            r.ret
        };
        Some(match nr {
            hcall::H_PUT_TERM_CHAR => {
                let r = hcall::put_term_char(
                    &mut *console,
                    layout::VTY_REG,
                    args[0],
                    args[1],
                    args[2],
                    args[3],
                );
                (ret(r, args), None)
            }
            hcall::H_GET_TERM_CHAR => {
                let r = hcall::get_term_char(&mut *console, layout::VTY_REG, args[0]);
                (ret(r, args), None)
            }
            hcall::KVMPPC_H_RTAS => {
                let mut call = RtasCall {
                    console: &mut console,
                    pci: &self.pci,
                    outcome: None,
                };
                match rtas::dispatch(&self.mem, args[0], layout::PHB_BUID, &mut call) {
                    Ok(_) => (H_SUCCESS, call.outcome),
                    Err(e) => {
                        tracing::trace!("bad RTAS call: {e}");
                        (H_PARAMETER, None)
                    }
                }
            }
            _ => return None,
        })
    }
}

impl Pseries {
    fn vcpu_hcall(&self, vcpu: &mut VcpuFd, nr: u64, args: &[u64; 9]) -> i64 {
        match nr {
            H_SET_MODE if args[1] == H_SET_MODE_RESOURCE_LE => {
                if args[2] != 0 || args[3] != 0 || args[0] > 1 {
                    return H_PARAMETER;
                }
                let update = vcpu.get_one_reg_u64(ppc::REG_LPCR_64).and_then(|lpcr| {
                    let lpcr = if args[0] == 1 {
                        lpcr | LPCR_ILE
                    } else {
                        lpcr & !LPCR_ILE
                    };
                    vcpu.set_one_reg_u64(ppc::REG_LPCR_64, lpcr)
                });
                match update {
                    Ok(()) => H_SUCCESS,
                    Err(e) => {
                        tracing::warn!("cannot set LPCR[ILE]: {e}");
                        hcall::H_HARDWARE
                    }
                }
            }
            H_REGISTER_PROC_TBL => match process_table(args[0], args[1], args[3]) {
                Some((flags, table)) => match ppc::configure_v3_mmu(&self.vm, flags, table) {
                    Ok(()) => H_SUCCESS,
                    Err(e) => {
                        tracing::warn!("cannot configure the radix MMU: {e}");
                        hcall::H_HARDWARE
                    }
                },
                None => H_PARAMETER,
            },
            _ => {
                tracing::trace!(nr = format_args!("{nr:#x}"), "unsupported hcall");
                H_FUNCTION
            }
        }
    }
}

/// The `KVM_PPC_CONFIGURE_V3_MMU` flags and process-table doubleword for an
/// H_REGISTER_PROC_TBL of a new radix table (`flags`, base `table`, size field `size`);
/// `None` for anything else (hash page tables are not offered).
pub fn process_table(flags: u64, table: u64, size: u64) -> Option<(u64, u64)> {
    if flags & PROC_TABLE_OP_MASK != PROC_TABLE_NEW || flags & PROC_TABLE_RADIX == 0 {
        return None;
    }
    let mut mmu = ppc::MMUV3_RADIX;
    if flags & PROC_TABLE_GTSE != 0 {
        mmu |= ppc::MMUV3_GTSE;
    }
    Some((mmu, PATB_GR | table | (size & 0x1f)))
}

impl Platform for Pseries {
    fn handle_exit(&self, index: u32, vcpu: &mut VcpuFd, exit_reason: u32) -> Option<ExitReason> {
        match exit_reason {
            kvm::EXIT_PAPR_HCALL => {
                let Some(mut call) = PaprHcall::decode(vcpu.exit_data()) else {
                    return crash(index, "short PAPR hcall exit");
                };
                let (ret, outcome) = match self.papr.hcall(call.nr, &mut call.args) {
                    Some(r) => r,
                    None => (self.vcpu_hcall(vcpu, call.nr, &call.args), None),
                };
                PaprHcall::complete(vcpu.exit_data_mut(), ret, &call.args);
                outcome
            }
            kvm::EXIT_MMIO => {
                let Some(m) = MmioExit::decode(vcpu.exit_data()) else {
                    return crash(index, "malformed MMIO exit");
                };
                if m.is_write {
                    if !self.papr.pci.mmio_write(m.addr, &m.data[..m.len]) {
                        tracing::trace!(addr = m.addr, "unhandled MMIO write");
                    }
                } else {
                    let mut data = [0xffu8; 8];
                    if !self.papr.pci.mmio_read(m.addr, &mut data[..m.len]) {
                        tracing::trace!(addr = m.addr, "unhandled MMIO read");
                        data = [0xff; 8];
                    }
                    MmioExit::complete_read(vcpu.exit_data_mut(), &data[..m.len]);
                }
                None
            }
            other => machine::other_exit(index, vcpu, other),
        }
    }

    fn power_button(&self) -> std::io::Result<bool> {
        // PAPR delivers it as an EPOW event through RTAS check-exception, which this
        // machine does not offer yet.
        Ok(false)
    }

    fn console_input(&self, bytes: &[u8]) {
        self.papr.console_input(bytes);
    }
}

// Tests may unwrap: a failed unwrap is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::vmm::console::ConsoleRing;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn civil_time_from_epoch_seconds() {
        // 2026-11-25 23:30:05 UTC is 1_795_649_405 s after the epoch.
        let t = time_of_day(1_795_649_405, 9);
        assert_eq!((t.year, t.month, t.day), (2026, 11, 25));
        assert_eq!((t.hour, t.minute, t.second, t.nanos), (23, 30, 5, 9));
        // A leap day.
        let t = time_of_day(951_782_400, 0);
        assert_eq!((t.year, t.month, t.day), (2000, 2, 29));
    }

    #[test]
    fn radix_process_table_registration() {
        // Linux: flags PROC_TABLE_NEW | PROC_TABLE_RADIX | PROC_TABLE_GTSE, the table's
        // physical address, size field order - 12.
        assert_eq!(
            process_table(0x18 | 0x04 | 0x01, 0x1234_0000, 4),
            Some((3, (1 << 63) | 0x1234_0004))
        );
        assert_eq!(
            process_table(0x18 | 0x04, 0x1000, 0),
            Some((1, (1 << 63) | 0x1000))
        );
        // Hash page tables and deregistration are refused.
        assert_eq!(process_table(0x18, 0x1000, 0), None);
        assert_eq!(process_table(0x10 | 0x04, 0x1000, 0), None);
    }

    #[test]
    fn console_and_rtas_pci_config_through_hcalls() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let ring = ConsoleRing::new(64);
        let p = Papr::new(mem.clone(), Box::new(ring.clone()), Arc::new(PciBus::new()));
        p.console_input(b"x");
        let mut args = [0x3000_0000u64, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            p.hcall(hcall::H_GET_TERM_CHAR, &mut args).unwrap().0,
            H_SUCCESS
        );
        assert_eq!((args[0], args[1] >> 56), (1, u64::from(b'x')));
        // H_PUT_TERM_CHAR on vty 0x30000000: "ok\n" packed big-endian in r6.
        let mut args = [0u64; 9];
        args[0] = 0x3000_0000;
        args[1] = 3;
        args[2] = u64::from_be_bytes(*b"ok\n\0\0\0\0\0");
        assert_eq!(
            p.hcall(hcall::H_PUT_TERM_CHAR, &mut args).unwrap().0,
            H_SUCCESS
        );
        assert_eq!(ring.text(), "ok\n");
        // RTAS ibm,read-pci-config of 00:00.0's vendor/device through KVMPPC_H_RTAS:
        // the host bridge devices::pci puts in slot 0 answers.
        let token = rtas::token("ibm,read-pci-config").unwrap();
        let words = [
            token,
            4,
            2,
            0,
            (layout::PHB_BUID >> 32) as u32,
            layout::PHB_BUID as u32,
            4,
            0,
            0,
        ];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        mem.write_slice(&bytes, GuestAddress(0x1000)).unwrap();
        let mut args = [0u64; 9];
        args[0] = 0x1000;
        assert_eq!(
            p.hcall(hcall::KVMPPC_H_RTAS, &mut args).unwrap(),
            (H_SUCCESS, None)
        );
        let status = mem.read_obj::<[u8; 4]>(GuestAddress(0x101c)).unwrap();
        let value = u32::from_be_bytes(mem.read_obj::<[u8; 4]>(GuestAddress(0x1020)).unwrap());
        assert_eq!(status, [0; 4]);
        let mut expect = [0u8; 4];
        PciBus::new().config_read(0, 0, 0, 0, &mut expect);
        assert_eq!(value, u32::from_le_bytes(expect));
        assert_ne!(value, 0xffff_ffff);
        // An empty slot is a hardware error.
        let words = [
            token,
            4,
            2,
            0x0800,
            (layout::PHB_BUID >> 32) as u32,
            layout::PHB_BUID as u32,
            4,
            0,
            0,
        ];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        mem.write_slice(&bytes, GuestAddress(0x1000)).unwrap();
        p.hcall(hcall::KVMPPC_H_RTAS, &mut args).unwrap();
        let status = i32::from_be_bytes(mem.read_obj::<[u8; 4]>(GuestAddress(0x101c)).unwrap());
        assert_eq!(status, rtas::RTAS_OUT_HW_ERROR);
        // power-off ends the VM with Shutdown.
        let off = rtas::token("power-off").unwrap();
        let bytes: Vec<u8> = [off, 2, 1, 0, 0, 0]
            .iter()
            .flat_map(|w: &u32| w.to_be_bytes())
            .collect();
        mem.write_slice(&bytes, GuestAddress(0x1000)).unwrap();
        assert_eq!(
            p.hcall(hcall::KVMPPC_H_RTAS, &mut args).unwrap(),
            (H_SUCCESS, Some(ExitReason::Shutdown))
        );
    }
}

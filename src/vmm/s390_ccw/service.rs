//! What the s390x machine does with its vCPUs' exits: SERVICE CALL (the SCLP console:
//! Write/Read Event Data, Write Event Mask, each completed with a service-signal
//! interrupt), DIAGNOSE (the KVM hypercall, IPL resets), the channel-subsystem
//! instructions and `KVM_EXIT_S390_TSCH` (served by the VM's
//! `devices::virtio::transport::ccw::ChannelSubsystem`, operands through
//! KVM_S390_MEM_OP, interruptions through KVM_S390_INTERRUPT), and the stop and
//! disabled-wait intercepts that end the VM.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use arch::kvm::{self, VcpuFd, VmFd};
use arch::s390x::kvm::{self as s390, Access, Instruction, Sieic, Tsch};
use arch::s390x::sclp;
use devices::virtio::transport::ccw::css::{AccessFault, Operands};
use devices::virtio::transport::ccw::{ChannelSubsystem, IoInstruction, Outcome};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::vmm::exit::ExitReason;
use crate::vmm::machine::{self, crash, Platform};

/// SCLP command word: Read SCP Info (and its forced variant).
pub const SCLP_CMD_READ_SCP_INFO: u32 = 0x0002_0001;
/// SCLP command word: Read SCP Info, forced.
pub const SCLP_CMD_READ_SCP_INFO_FORCED: u32 = 0x0012_0001;
/// SCLP response: the command is not supported.
pub const RC_INVALID_COMMAND: u16 = 0x01f0;
/// Largest SCCB (one 4 KiB page).
pub const SCCB_MAX: usize = 4096;
/// Interception code: the CPU stopped (SIGP stop to itself, the "stop" shutdown action).
pub const ICPT_STOP: u8 = 0x28;
/// Interception code: disabled wait state.
pub const ICPT_WAIT: u8 = 0x1c;
/// DIAGNOSE 0x308: re-IPL and reset.
pub const DIAG_IPL: u16 = 0x308;
/// DIAGNOSE 0x500 subcode `KVM_S390_VIRTIO_CCW_NOTIFY`.
pub const VIRTIO_CCW_NOTIFY: u64 = 3;

/// The outcome of a SERVICE CALL: its condition code and the service-signal parameter
/// to deliver (the SCCB address, bit 31 set if more console input is waiting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceOutcome {
    /// Condition code: 0 initiated, 3 not operational.
    pub cc: u8,
    /// The service-signal interrupt parameter, if one is due.
    pub signal: Option<u32>,
}

struct Console {
    out: Box<dyn Write + Send>,
    input: VecDeque<u8>,
    guest_reads: bool,
}

/// The SCLP of one VM: the console behind its event buffers.
pub struct Sclp {
    mem: GuestMemoryMmap,
    console: Mutex<Console>,
}

impl Sclp {
    /// Over guest memory `mem`, console output going to `out`.
    pub fn new(mem: GuestMemoryMmap, out: Box<dyn Write + Send>) -> Self {
        Self {
            mem,
            console: Mutex::new(Console {
                out,
                input: VecDeque::new(),
                guest_reads: false,
            }),
        }
    }

    /// Queues console input for Read Event Data.
    pub fn console_input(&self, bytes: &[u8]) {
        let mut c = self.console.lock().unwrap_or_else(|e| e.into_inner());
        c.input.extend(bytes);
    }

    /// Serves SERVICE CALL `command` on the SCCB at `addr`.
    pub fn service_call(&self, command: u32, addr: u64) -> ServiceOutcome {
        const NOT_OPERATIONAL: ServiceOutcome = ServiceOutcome {
            cc: 3,
            signal: None,
        };
        // The SCCB is a doubleword-aligned block below 2 GiB (its address goes in a
        // 32-bit interrupt parameter).
        if !addr.is_multiple_of(8) || addr >= 1 << 31 {
            return NOT_OPERATIONAL;
        }
        let Ok(len) = self.mem.read_obj::<[u8; 2]>(GuestAddress(addr)) else {
            return NOT_OPERATIONAL;
        };
        let len = usize::from(u16::from_be_bytes(len)).clamp(8, SCCB_MAX);
        let mut sccb = vec![0u8; len];
        if self.mem.read_slice(&mut sccb, GuestAddress(addr)).is_err() {
            return NOT_OPERATIONAL;
        }
        let mut c = self.console.lock().unwrap_or_else(|e| e.into_inner());
        let c = &mut *c;
        match command {
            sclp::SCLP_CMD_WRITE_EVENT_DATA => {
                sclp::write_event_data(&mut sccb, &mut |bytes| {
                    // A failed host write cannot be reported to the guest; it is logged.
                    if let Err(e) = c.out.write_all(bytes).and_then(|()| c.out.flush()) {
                        tracing::debug!("SCLP console output failed: {e}");
                    }
                });
            }
            sclp::SCLP_CMD_READ_EVENT_DATA => {
                let input: Vec<u8> = c.input.iter().copied().collect();
                let taken = sclp::read_event_data(&mut sccb, &input);
                c.input.drain(..taken);
            }
            sclp::SCLP_CMD_WRITE_EVENT_MASK => {
                if sclp::write_event_mask(&mut sccb) == sclp::RC_NORMAL_COMPLETION {
                    c.guest_reads = sclp::receives_vt220(&sccb);
                }
            }
            _ => sccb[6..8].copy_from_slice(&RC_INVALID_COMMAND.to_be_bytes()),
        }
        if self.mem.write_slice(&sccb, GuestAddress(addr)).is_err() {
            return NOT_OPERATIONAL;
        }
        let pending = c.guest_reads && !c.input.is_empty();
        ServiceOutcome {
            cc: 0,
            signal: Some(addr as u32 & !3 | u32::from(pending)),
        }
    }
}

/// Guest memory as the channel subsystem holds it.
pub type CssMemory = Arc<GuestMemoryMmap>;

/// Instruction operands as the vCPU sees storage.
struct VcpuOperands<'a>(&'a VcpuFd);

impl VcpuOperands<'_> {
    fn outcome(result: std::io::Result<Access>) -> Result<(), AccessFault> {
        match result {
            Ok(Access::Done) => Ok(()),
            // KVM injected the access exception.
            Ok(Access::Exception(_)) => Err(AccessFault),
            Err(e) => {
                tracing::warn!("KVM_S390_MEM_OP failed: {e}");
                Err(AccessFault)
            }
        }
    }
}

impl Operands for VcpuOperands<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), AccessFault> {
        Self::outcome(s390::read_logical(self.0, addr, buf))
    }
    fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), AccessFault> {
        Self::outcome(s390::write_logical(self.0, addr, buf))
    }
}

/// The s390x platform of one VM.
pub struct S390 {
    sclp: Sclp,
    vm: Arc<VmFd>,
    css: ChannelSubsystem<CssMemory>,
}

impl S390 {
    /// The platform of VM `vm` with channel subsystem `css`.
    pub fn new(sclp: Sclp, vm: Arc<VmFd>, css: ChannelSubsystem<CssMemory>) -> Self {
        Self { sclp, vm, css }
    }

    /// Executes a channel-subsystem instruction and applies its outcome to the vCPU:
    /// whether it completed (false: suppressed by an exception).
    fn channel_io(
        &self,
        vcpu: &mut VcpuFd,
        insn: IoInstruction,
        gpr1: u64,
        operand: u64,
    ) -> Result<bool, String> {
        let outcome = self
            .css
            .execute(insn, gpr1, operand, &mut VcpuOperands(vcpu));
        match outcome {
            Outcome::Cc(cc) => {
                s390::set_condition_code(vcpu.run_page_mut(), cc);
                Ok(true)
            }
            Outcome::Done => Ok(true),
            Outcome::Exception(code) => s390::inject_program(vcpu, code as u16)
                .map(|()| false)
                .map_err(|e| format!("cannot inject program exception {code:?}: {e}")),
            Outcome::Faulted => Ok(false),
        }
    }

    /// `KVM_EXIT_S390_TSCH`: KVM dequeued the subchannel's pending I/O interruption (if
    /// any) before exiting; a TEST SUBCHANNEL that does not complete gives it back.
    fn test_subchannel(&self, index: u32, vcpu: &mut VcpuFd) -> Option<ExitReason> {
        let Some(tsch) = Tsch::decode(vcpu.exit_data()) else {
            return crash(index, "short TEST SUBCHANNEL exit");
        };
        let regs = match s390::get_regs(vcpu) {
            Ok(r) => r,
            Err(e) => return crash(index, &format!("cannot read registers: {e}")),
        };
        let operand = tsch.operand(&regs.gprs);
        match self.channel_io(vcpu, IoInstruction::TestSubchannel, regs.gprs[1], operand) {
            Ok(true) => None,
            Ok(false) if tsch.dequeued => {
                let id = u32::from(tsch.subchannel_id);
                let ty = s390::int_io(false, id >> 8, (id >> 1) & 3, u32::from(tsch.subchannel_nr));
                let parm = (id << 16) | u32::from(tsch.subchannel_nr);
                let parm64 = (u64::from(tsch.io_int_parm) << 32) | u64::from(tsch.io_int_word);
                s390::inject(&self.vm, ty, parm, parm64)
                    .err()
                    .and_then(|e| {
                        crash(index, &format!("cannot re-inject an I/O interruption: {e}"))
                    })
            }
            Ok(false) => None,
            Err(e) => crash(index, &e),
        }
    }

    fn instruction(&self, index: u32, vcpu: &mut VcpuFd, sieic: Sieic) -> Option<ExitReason> {
        let regs = match s390::get_regs(vcpu) {
            Ok(r) => r,
            Err(e) => return crash(index, &format!("cannot read registers: {e}")),
        };
        match sieic.instruction() {
            Instruction::ServiceCall { r1, r2 } => {
                let command = regs.gprs[usize::from(r1)] as u32;
                let addr = regs.gprs[usize::from(r2)];
                let outcome = self.sclp.service_call(command, addr);
                s390::set_condition_code(vcpu.run_page_mut(), outcome.cc);
                if let Some(parm) = outcome.signal {
                    if let Err(e) = s390::inject(&self.vm, s390::INT_SERVICE, parm, 0) {
                        return crash(index, &format!("cannot signal SCLP completion: {e}"));
                    }
                }
                None
            }
            Instruction::Diagnose { r3, b2, d2, .. } => {
                let code = s390::effective_address(&regs.gprs, b2, d2) as u16;
                match code {
                    s390::DIAG_KVM_HYPERCALL => {
                        // A virtio-ccw notification no ioeventfd took (r1 = 3, the
                        // subchannel ID in r2, the queue in r3): 0, or -EINVAL for a
                        // subchannel or queue that does not exist (or another subcode).
                        let mut regs = regs;
                        let done = regs.gprs[1] == VIRTIO_CCW_NOTIFY
                            && self.css.notify(regs.gprs[2] as u32, regs.gprs[3]);
                        regs.gprs[2] = if done {
                            0
                        } else {
                            (-i64::from(libc::EINVAL)) as u64
                        };
                        s390::set_regs(vcpu, &regs)
                            .err()
                            .and_then(|e| crash(index, &format!("cannot set registers: {e}")))
                    }
                    DIAG_IPL => match regs.gprs[usize::from(r3)] {
                        0 | 1 | 3 | 4 => Some(ExitReason::Reboot),
                        sub => crash(index, &format!("unsupported DIAGNOSE 0x308 subcode {sub}")),
                    },
                    other => crash(index, &format!("unsupported DIAGNOSE {other:#x}")),
                }
            }
            Instruction::ChannelIo { op, b2, d2 } => {
                let Some(insn) = IoInstruction::from_opcode(op) else {
                    return crash(
                        index,
                        &format!("unknown channel I/O instruction 0xb2{op:02x}"),
                    );
                };
                let operand = s390::effective_address(&regs.gprs, b2, d2);
                self.channel_io(vcpu, insn, regs.gprs[1], operand)
                    .err()
                    .and_then(|e| crash(index, &e))
            }
            Instruction::Chsc { r1 } => {
                let operand = regs.gprs[usize::from(r1 & 0xf)];
                self.channel_io(
                    vcpu,
                    IoInstruction::ChannelSubsystemCall,
                    regs.gprs[1],
                    operand,
                )
                .err()
                .and_then(|e| crash(index, &e))
            }
            other => crash(
                index,
                &format!(
                    "unhandled intercept {:#x} ({other:?}, ipa {:#06x}, ipb {:#010x})",
                    sieic.icptcode, sieic.ipa, sieic.ipb
                ),
            ),
        }
    }
}

impl Platform for S390 {
    fn handle_exit(&self, index: u32, vcpu: &mut VcpuFd, exit_reason: u32) -> Option<ExitReason> {
        match exit_reason {
            kvm::EXIT_S390_SIEIC => {
                let Some(sieic) = Sieic::decode(vcpu.exit_data()) else {
                    return crash(index, "short SIE intercept exit");
                };
                match sieic.icptcode {
                    s390::ICPT_INSTRUCTION => self.instruction(index, vcpu, sieic),
                    ICPT_STOP => Some(ExitReason::Shutdown),
                    ICPT_WAIT => wait_outcome(index, s390::run_psw(vcpu.run_page())),
                    other => crash(index, &format!("unhandled intercept code {other:#x}")),
                }
            }
            kvm::EXIT_S390_TSCH => self.test_subchannel(index, vcpu),
            kvm::EXIT_S390_RESET => Some(ExitReason::Reboot),
            other => machine::other_exit(index, vcpu, other),
        }
    }

    fn power_button(&self) -> std::io::Result<bool> {
        // The s390 power button is the SCLP "signal quiesce" event, not offered yet.
        Ok(false)
    }

    fn console_input(&self, bytes: &[u8]) {
        self.sclp.console_input(bytes);
    }
}

/// A disabled wait: the quiesce address (low 12 bits all ones) is a clean stop, any
/// other a guest that gave up (Linux's `disabled_wait` after a panic).
pub fn wait_outcome(index: u32, psw: Option<(u64, u64)>) -> Option<ExitReason> {
    match psw {
        Some((_, addr)) if addr & 0xfff == 0xfff => Some(ExitReason::Shutdown),
        Some((mask, addr)) => crash(
            index,
            &format!("disabled wait (PSW {mask:#018x} {addr:#018x})"),
        ),
        None => crash(index, "disabled wait"),
    }
}

// Tests may unwrap: a failed unwrap is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::vmm::console::ConsoleRing;

    fn setup() -> (GuestMemoryMmap, ConsoleRing, Sclp) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let ring = ConsoleRing::new(64);
        let sclp = Sclp::new(mem.clone(), Box::new(ring.clone()));
        (mem, ring, sclp)
    }

    #[test]
    fn write_event_data_reaches_the_console_and_signals() {
        let (mem, ring, sclp) = setup();
        // SCCB at 0x2000: header (length 18) and one VT220 event buffer "hi\r\n".
        let sccb = [
            0, 18, 0, 0, 0, 0, 0, 0, 0, 10, 0x1a, 0, 0, 0, b'h', b'i', b'\r', b'\n',
        ];
        mem.write_slice(&sccb, GuestAddress(0x2000)).unwrap();
        let out = sclp.service_call(sclp::SCLP_CMD_WRITE_EVENT_DATA, 0x2000);
        assert_eq!(
            out,
            ServiceOutcome {
                cc: 0,
                signal: Some(0x2000)
            }
        );
        assert_eq!(ring.text(), "hi\r\n");
        let rc = mem.read_obj::<[u8; 2]>(GuestAddress(0x2006)).unwrap();
        assert_eq!(rc, [0x00, 0x20], "normal completion stored in guest memory");
    }

    #[test]
    fn input_is_announced_once_the_guest_listens_and_then_read() {
        let (mem, _ring, sclp) = setup();
        // Write Event Mask with 4-byte masks, guest receives and sends VT220.
        let mut mask = vec![0u8; 28];
        mask[1] = 28;
        mask[11] = 4;
        mask[15] = 0x40;
        mask[19] = 0x40;
        mem.write_slice(&mask, GuestAddress(0x3000)).unwrap();
        sclp.console_input(b"ls\n");
        let out = sclp.service_call(sclp::SCLP_CMD_WRITE_EVENT_MASK, 0x3000);
        assert_eq!(
            out.signal,
            Some(0x3001),
            "event pending bit with input queued"
        );
        // Read Event Data into a 64-byte SCCB.
        let mut read = vec![0u8; 64];
        read[1] = 64;
        mem.write_slice(&read, GuestAddress(0x4000)).unwrap();
        let out = sclp.service_call(sclp::SCLP_CMD_READ_EVENT_DATA, 0x4000);
        assert_eq!(out.signal, Some(0x4000), "nothing more pending");
        let mut got = [0u8; 17];
        mem.read_slice(&mut got, GuestAddress(0x4000)).unwrap();
        assert_eq!(&got[..2], &[0, 17]);
        assert_eq!(&got[8..11], &[0, 9, 0x1a]);
        assert_eq!(&got[14..], b"ls\n");
    }

    #[test]
    fn bad_sccbs_and_unknown_commands() {
        let (mem, _ring, sclp) = setup();
        assert_eq!(
            sclp.service_call(sclp::SCLP_CMD_WRITE_EVENT_DATA, 0x2004)
                .cc,
            3
        );
        assert_eq!(
            sclp.service_call(sclp::SCLP_CMD_WRITE_EVENT_DATA, 0x8000_0000)
                .cc,
            3
        );
        assert_eq!(
            sclp.service_call(sclp::SCLP_CMD_WRITE_EVENT_DATA, 0xf_0000)
                .cc,
            3
        );
        mem.write_slice(&[0, 16, 0, 0, 0, 0, 0, 0], GuestAddress(0x5000))
            .unwrap();
        assert_eq!(sclp.service_call(SCLP_CMD_READ_SCP_INFO, 0x5000).cc, 0);
        let rc = mem.read_obj::<[u8; 2]>(GuestAddress(0x5006)).unwrap();
        assert_eq!(u16::from_be_bytes(rc), RC_INVALID_COMMAND);
    }

    #[test]
    fn disabled_wait_at_the_quiesce_address_is_a_shutdown() {
        assert_eq!(
            wait_outcome(0, Some((0x0002_0001_8000_0000, 0xfff))),
            Some(ExitReason::Shutdown)
        );
        assert!(matches!(
            wait_outcome(0, Some((0x0002_0001_8000_0000, 0x1234))),
            Some(ExitReason::Crash { .. })
        ));
    }
}

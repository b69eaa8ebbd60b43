//! The guest's side of virtio-ccw, for the transport's tests: a driver written from the
//! virtio 1.2 specification (§4.3) and the Principles of Operation, as Linux's
//! `virtio_ccw` and `cio` drive a device. It lays out every ORB, CCW and payload byte by
//! byte in big-endian, issues the channel-subsystem instructions with their subchannel
//! ID in general register 1, takes the I/O interruption the transport makes pending and
//! reads the IRB with TEST SUBCHANNEL — so the expected values here never come from the
//! transport's own encoders.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::css::{AccessFault, ChannelSubsystem, IoInstruction, Operands, Outcome};
use super::interrupt::tests::RecordingSink;

pub(crate) type Mem = Arc<GuestMemoryMmap>;

/// Operands in a guest without DAT: logical = absolute addresses.
pub(crate) struct Identity(pub(crate) Mem);

impl Operands for Identity {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), AccessFault> {
        self.0
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| AccessFault)
    }
    fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), AccessFault> {
        self.0
            .write_slice(buf, GuestAddress(addr))
            .map_err(|_| AccessFault)
    }
}

/// Where the driver keeps its blocks.
pub(crate) const ORB_AT: u64 = 0x1000;
pub(crate) const PROGRAM_AT: u64 = 0x2000;
pub(crate) const DATA_AT: u64 = 0x3000;
pub(crate) const IRB_AT: u64 = 0x4000;
pub(crate) const SCHIB_AT: u64 = 0x5000;

/// The SCSW of an IRB, decoded by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) ctrl: u16,
    pub(crate) cpa: u32,
    pub(crate) dstat: u8,
    pub(crate) cstat: u8,
    pub(crate) count: u16,
}

impl Status {
    /// Channel end + device end, no subchannel status: the command worked.
    pub(crate) fn ok(&self) -> bool {
        self.dstat == 0x0c && self.cstat == 0
    }
}

/// One subchannel's driver.
pub(crate) struct Driver<'a> {
    pub(crate) css: &'a ChannelSubsystem<Mem>,
    pub(crate) mem: Mem,
    pub(crate) sink: Arc<RecordingSink>,
    /// General register 1: the subchannel ID.
    pub(crate) sid: u64,
    pub(crate) intparm: u32,
}

impl Driver<'_> {
    pub(crate) fn insn(&self, insn: IoInstruction, operand: u64) -> Outcome {
        self.css
            .execute(insn, self.sid, operand, &mut Identity(self.mem.clone()))
    }

    /// STORE SUBCHANNEL into SCHIB_AT.
    pub(crate) fn stsch(&self) -> Outcome {
        self.insn(IoInstruction::StoreSubchannel, SCHIB_AT)
    }

    /// What Linux's `cio_enable_subchannel` does: STSCH, set the interruption parameter,
    /// the ISC and the enable bit, MSCH.
    pub(crate) fn enable(&mut self, isc: u8, intparm: u32) {
        assert_eq!(self.stsch(), Outcome::Cc(0));
        let mut schib = [0u8; 52];
        self.mem
            .read_slice(&mut schib, GuestAddress(SCHIB_AT))
            .unwrap();
        schib[0..4].copy_from_slice(&intparm.to_be_bytes());
        // PMCW word 1: ISC in bits 2-4, E (enabled) bit 8.
        schib[4] = (schib[4] & !0x38) | (isc << 3);
        schib[5] |= 0x80;
        self.mem
            .write_slice(&schib, GuestAddress(SCHIB_AT))
            .unwrap();
        assert_eq!(
            self.insn(IoInstruction::ModifySubchannel, SCHIB_AT),
            Outcome::Cc(0)
        );
        self.intparm = intparm;
    }

    /// START SUBCHANNEL on the format-1 channel program at PROGRAM_AT, then the
    /// interruption and TEST SUBCHANNEL.
    pub(crate) fn start(&self) -> Status {
        let mut orb = [0u8; 12];
        orb[0..4].copy_from_slice(&self.intparm.to_be_bytes());
        // Word 1: key 0, F (format-1 CCWs) bit 8, LPM 0x80.
        orb[4..8].copy_from_slice(&[0x00, 0x80, 0x80, 0x00]);
        orb[8..12].copy_from_slice(&(PROGRAM_AT as u32).to_be_bytes());
        self.mem.write_slice(&orb, GuestAddress(ORB_AT)).unwrap();
        let before = self.sink.subchannel.lock().unwrap().len();
        assert_eq!(
            self.insn(IoInstruction::StartSubchannel, ORB_AT),
            Outcome::Cc(0)
        );
        let irqs = self.sink.subchannel.lock().unwrap().clone();
        assert_eq!(
            irqs.len(),
            before + 1,
            "one I/O interruption per START SUBCHANNEL"
        );
        let irq = irqs[before];
        assert_eq!(u64::from(irq.id.word()), self.sid);
        assert_eq!(irq.intparm, self.intparm);
        self.tsch()
    }

    /// TEST SUBCHANNEL into IRB_AT, expecting status pending (cc 0).
    pub(crate) fn tsch(&self) -> Status {
        assert_eq!(
            self.insn(IoInstruction::TestSubchannel, IRB_AT),
            Outcome::Cc(0)
        );
        let mut irb = [0u8; 96];
        self.mem.read_slice(&mut irb, GuestAddress(IRB_AT)).unwrap();
        Status {
            ctrl: u16::from_be_bytes([irb[2], irb[3]]),
            cpa: u32::from_be_bytes([irb[4], irb[5], irb[6], irb[7]]),
            dstat: irb[8],
            cstat: irb[9],
            count: u16::from_be_bytes([irb[10], irb[11]]),
        }
    }

    /// Runs the single CCW `cmd` (SLI as `sli` says) on `payload` placed at DATA_AT,
    /// `count` bytes; returns the status and the data area afterwards.
    pub(crate) fn ccw(&self, cmd: u8, sli: bool, payload: &[u8], count: u16) -> (Status, Vec<u8>) {
        let mut area = vec![0u8; usize::from(count)];
        let n = payload.len().min(area.len());
        area[..n].copy_from_slice(&payload[..n]);
        self.mem.write_slice(&area, GuestAddress(DATA_AT)).unwrap();
        let flags = if sli { 0x20 } else { 0 };
        let mut ccw = [cmd, flags, 0, 0, 0, 0, 0, 0];
        ccw[2..4].copy_from_slice(&count.to_be_bytes());
        ccw[4..8].copy_from_slice(&(DATA_AT as u32).to_be_bytes());
        self.mem
            .write_slice(&ccw, GuestAddress(PROGRAM_AT))
            .unwrap();
        let status = self.start();
        self.mem
            .read_slice(&mut area, GuestAddress(DATA_AT))
            .unwrap();
        (status, area)
    }

    /// A command that must succeed with its exact payload length.
    pub(crate) fn ok(&self, cmd: u8, payload: &[u8]) -> Vec<u8> {
        let (status, data) = self.ccw(cmd, false, payload, payload.len() as u16);
        assert!(status.ok(), "command {cmd:#04x}: {status:x?}");
        assert_eq!(status.count, 0, "command {cmd:#04x} transferred everything");
        data
    }

    /// BASIC SENSE: sense byte 0.
    pub(crate) fn sense0(&self) -> u8 {
        let (status, data) = self.ccw(0x04, true, &[], 32);
        assert!(status.ok());
        data[0]
    }
}

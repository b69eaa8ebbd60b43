//! One subchannel of the channel subsystem: its subchannel-information block (the path
//! management control word and the subchannel status word) and the state changes the
//! channel-subsystem instructions make to it, as the z/Architecture Principles of
//! Operation (chapters 14–16) describe them. The guest-visible blocks — ORB, SCSW,
//! PMCW/SCHIB, IRB — are encoded and decoded here byte by byte, big-endian.

use super::command::{be16, be32};
use super::CcwError;

/// SCSW function control: start function.
pub const SCSW_FCTL_START: u16 = 0x4000;
/// SCSW function control: halt function.
pub const SCSW_FCTL_HALT: u16 = 0x2000;
/// SCSW function control: clear function.
pub const SCSW_FCTL_CLEAR: u16 = 0x1000;
/// SCSW activity control: start pending.
pub const SCSW_ACTL_START_PEND: u16 = 0x0400;
/// SCSW status control: alert status.
pub const SCSW_STCTL_ALERT: u16 = 0x0010;
/// SCSW status control: intermediate status.
pub const SCSW_STCTL_INTERMEDIATE: u16 = 0x0008;
/// SCSW status control: primary status.
pub const SCSW_STCTL_PRIMARY: u16 = 0x0004;
/// SCSW status control: secondary status.
pub const SCSW_STCTL_SECONDARY: u16 = 0x0002;
/// SCSW status control: status pending.
pub const SCSW_STCTL_STATUS_PEND: u16 = 0x0001;
/// SCSW flags: the CCW format of the channel program (the ORB's F bit).
pub const SCSW_FLAGS_FORMAT1: u16 = 0x0080;

/// Device status: channel end.
pub const DEV_STAT_CHANNEL_END: u8 = 0x08;
/// Device status: device end.
pub const DEV_STAT_DEVICE_END: u8 = 0x04;
/// Device status: unit check (sense data describes the error).
pub const DEV_STAT_UNIT_CHECK: u8 = 0x02;

/// Subchannel status: incorrect length.
pub const SCH_STAT_INCORRECT_LENGTH: u8 = 0x40;
/// Subchannel status: program check (a malformed channel program).
pub const SCH_STAT_PROGRAM_CHECK: u8 = 0x20;

/// Sense byte 0 bit 0: command reject.
pub const SENSE_COMMAND_REJECT: u8 = 0x80;
/// Bytes of sense data BASIC SENSE returns.
pub const SENSE_SIZE: usize = 32;

/// PMCW flag: interruption subclass (bits 2–4).
pub const PMCW_FLAGS_ISC: u16 = 0x3800;
/// PMCW flag: subchannel enabled.
pub const PMCW_FLAGS_ENA: u16 = 0x0080;
/// PMCW flag: limit mode.
pub const PMCW_FLAGS_LM: u16 = 0x0060;
/// PMCW flag: measurement mode enable.
pub const PMCW_FLAGS_MME: u16 = 0x0018;
/// PMCW flag: multipath mode.
pub const PMCW_FLAGS_MP: u16 = 0x0004;
/// PMCW flag: device number valid.
pub const PMCW_FLAGS_DNV: u16 = 0x0001;
/// PMCW flag bits that must be zero in MODIFY SUBCHANNEL's SCHIB (bit 1, bits 5–7).
pub const PMCW_FLAGS_INVALID: u16 = 0x4700;
/// PMCW characteristics: measurement block format control.
pub const PMCW_CHARS_MBFC: u32 = 0x0000_0004;
/// PMCW characteristics: extended measurement word mode (not offered).
pub const PMCW_CHARS_XMWME: u32 = 0x0000_0002;
/// PMCW characteristics: concurrent sense.
pub const PMCW_CHARS_CSENSE: u32 = 0x0000_0001;
/// PMCW characteristics bits that must be zero.
pub const PMCW_CHARS_INVALID: u32 = 0xff1f_fff8;

/// Size of the interruption response block TEST SUBCHANNEL stores.
pub const IRB_SIZE: usize = 96;
/// Size of the subchannel information block (PMCW, SCSW, measurement address, model
/// dependent area).
pub const SCHIB_SIZE: usize = 52;
/// Size of the operation request block START SUBCHANNEL reads (the command-mode ORB's
/// first three words; the rest concerns facilities not offered).
pub const ORB_SIZE: usize = 12;

/// A subchannel ID as the guest puts it in general register 1:
/// `cssid(8) | 0000 | m | ssid(2) | 1 | subchannel number(16)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubchannelId {
    /// Channel subsystem image ID (0 without the MCSS-E facility).
    pub cssid: u8,
    /// The `m` bit: the cssid is meaningful (MCSS-E).
    pub m: bool,
    /// Subchannel set ID (0–3).
    pub ssid: u8,
    /// Subchannel number.
    pub number: u16,
}

impl SubchannelId {
    /// A subchannel of subchannel set `ssid` in CSS 0.
    pub fn new(ssid: u8, number: u16) -> Self {
        Self {
            cssid: 0,
            m: false,
            ssid: ssid & 3,
            number,
        }
    }

    /// Decodes general register 1 of a channel-subsystem instruction. The "one" bit must
    /// be set, and without `m` the cssid must be zero: otherwise the instruction gets an
    /// operand exception.
    pub fn from_register(word: u32) -> Result<Self, CcwError> {
        let id = Self {
            cssid: (word >> 24) as u8,
            m: word & 0x0008_0000 != 0,
            ssid: ((word >> 17) & 3) as u8,
            number: word as u16,
        };
        if word & 0x0001_0000 == 0 || (!id.m && id.cssid != 0) {
            return Err(CcwError::InvalidSubchannelId(word));
        }
        Ok(id)
    }

    /// The register form, also the subchannel-identification word of an I/O interruption.
    pub fn word(&self) -> u32 {
        (u32::from(self.cssid) << 24)
            | (u32::from(self.m) << 19)
            | (u32::from(self.ssid & 3) << 17)
            | 0x0001_0000
            | u32::from(self.number)
    }
}

/// The operation request block START SUBCHANNEL takes (command mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Orb {
    /// Interruption parameter, returned in the lowcore on the I/O interruption.
    pub intparm: u32,
    /// Storage key (bits 0–3 of word 1).
    pub key: u8,
    /// Suspend control (S).
    pub suspend: bool,
    /// Format-1 CCWs (F); format 0 otherwise.
    pub format1: bool,
    /// Logical path mask.
    pub lpm: u8,
    /// Channel program address.
    pub cpa: u32,
}

impl Orb {
    /// Decodes the first 12 bytes of an ORB. Reserved bits (word 1 bit 13, bits 26–30)
    /// and bit 0 of the channel program address must be zero: an operand exception
    /// otherwise.
    pub fn decode(b: &[u8]) -> Result<Self, CcwError> {
        let b: &[u8; ORB_SIZE] =
            b.get(..ORB_SIZE)
                .and_then(|s| s.try_into().ok())
                .ok_or(CcwError::Short {
                    what: "ORB",
                    need: ORB_SIZE,
                    got: b.len(),
                })?;
        let w1 = be32(b, 4);
        let cpa = be32(b, 8);
        if w1 & 0x0004_003e != 0 || cpa & 0x8000_0000 != 0 {
            return Err(CcwError::InvalidOrb);
        }
        Ok(Self {
            intparm: be32(b, 0),
            key: (w1 >> 28) as u8,
            suspend: w1 & 0x0800_0000 != 0,
            format1: w1 & 0x0080_0000 != 0,
            lpm: (w1 >> 8) as u8,
            cpa,
        })
    }
}

/// The subchannel status word (12 bytes), the first part of the IRB and of the SCHIB's
/// status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scsw {
    /// Flags half-word (key, suspend control, format, ...).
    pub flags: u16,
    /// Function, activity and status control.
    pub ctrl: u16,
    /// Address of the CCW after the last one executed.
    pub cpa: u32,
    /// Device status.
    pub dstat: u8,
    /// Subchannel status.
    pub cstat: u8,
    /// Residual byte count.
    pub count: u16,
}

impl Scsw {
    /// Encodes the SCSW.
    pub fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0..2].copy_from_slice(&self.flags.to_be_bytes());
        b[2..4].copy_from_slice(&self.ctrl.to_be_bytes());
        b[4..8].copy_from_slice(&self.cpa.to_be_bytes());
        b[8] = self.dstat;
        b[9] = self.cstat;
        b[10..12].copy_from_slice(&self.count.to_be_bytes());
        b
    }

    /// Whether the subchannel is status pending.
    pub fn status_pending(&self) -> bool {
        self.ctrl & SCSW_STCTL_STATUS_PEND != 0
    }

    /// Whether a start, halt or clear function is in progress.
    pub fn function_active(&self) -> bool {
        self.ctrl & (SCSW_FCTL_START | SCSW_FCTL_HALT | SCSW_FCTL_CLEAR) != 0
    }
}

/// The IRB: the SCSW, then the extended status, extended control and extended
/// measurement words (all zero: no concurrent sense, no measurement).
pub fn irb(scsw: &Scsw) -> [u8; IRB_SIZE] {
    let mut b = [0u8; IRB_SIZE];
    b[..12].copy_from_slice(&scsw.encode());
    b
}

/// The path management control word (28 bytes), the first part of the SCHIB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pmcw {
    /// Interruption parameter.
    pub intparm: u32,
    /// Flags: ISC in bits 2–4 ([`PMCW_FLAGS_ISC`]), [`PMCW_FLAGS_ENA`],
    /// [`PMCW_FLAGS_DNV`], ...
    pub flags: u16,
    /// Device number.
    pub devno: u16,
    /// Logical path mask.
    pub lpm: u8,
    /// Path installed mask.
    pub pim: u8,
    /// Measurement block index.
    pub mbi: u16,
    /// Path operational mask.
    pub pom: u8,
    /// Path available mask.
    pub pam: u8,
    /// Channel path IDs.
    pub chpid: [u8; 8],
    /// Characteristics word ([`PMCW_CHARS_CSENSE`], ...).
    pub chars: u32,
}

impl Pmcw {
    /// The PMCW of a virtual device `devno` on one channel path (path 0, CHPID 0), as a
    /// hypervisor presents its devices: installed, available, operational, not enabled.
    pub fn virtual_device(devno: u16) -> Self {
        Self {
            flags: PMCW_FLAGS_DNV,
            devno,
            lpm: 0x80,
            pim: 0x80,
            pom: 0xff,
            pam: 0x80,
            ..Self::default()
        }
    }

    /// The SCHIB for this PMCW and `scsw`, big-endian.
    pub fn schib(&self, scsw: &Scsw) -> [u8; SCHIB_SIZE] {
        let mut b = [0u8; SCHIB_SIZE];
        b[0..4].copy_from_slice(&self.intparm.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.devno.to_be_bytes());
        b[8] = self.lpm;
        b[9] = 0; // path not operational mask
        b[10] = 0; // last path used mask
        b[11] = self.pim;
        b[12..14].copy_from_slice(&self.mbi.to_be_bytes());
        b[14] = self.pom;
        b[15] = self.pam;
        b[16..24].copy_from_slice(&self.chpid);
        b[24..28].copy_from_slice(&self.chars.to_be_bytes());
        b[28..40].copy_from_slice(&scsw.encode());
        // 40..48 measurement block address, 48..52 model dependent: zero.
        b
    }

    /// Checks and applies the program-modifiable fields of MODIFY SUBCHANNEL's SCHIB:
    /// interruption parameter, ISC, enable, limit/measurement/multipath modes, logical
    /// path mask, measurement block index and the MBFC and concurrent-sense bits.
    pub fn modify(&mut self, schib: &[u8]) -> Result<(), CcwError> {
        let b: &[u8; 28] =
            schib
                .get(..28)
                .and_then(|s| s.try_into().ok())
                .ok_or(CcwError::Short {
                    what: "SCHIB",
                    need: SCHIB_SIZE,
                    got: schib.len(),
                })?;
        let flags = be16(b, 4);
        let chars = be32(b, 24);
        if flags & PMCW_FLAGS_INVALID != 0 || chars & (PMCW_CHARS_INVALID | PMCW_CHARS_XMWME) != 0 {
            return Err(CcwError::InvalidSchib);
        }
        let writable =
            PMCW_FLAGS_ISC | PMCW_FLAGS_ENA | PMCW_FLAGS_LM | PMCW_FLAGS_MME | PMCW_FLAGS_MP;
        self.intparm = be32(b, 0);
        self.flags = (self.flags & !writable) | (flags & writable);
        self.lpm = b[8];
        self.mbi = be16(b, 12);
        let chars_writable = PMCW_CHARS_MBFC | PMCW_CHARS_CSENSE;
        self.chars = (self.chars & !chars_writable) | (chars & chars_writable);
        Ok(())
    }

    /// The interruption subclass (0–7).
    pub fn isc(&self) -> u8 {
        ((self.flags & PMCW_FLAGS_ISC) >> 11) as u8
    }

    /// Whether the subchannel is valid and enabled.
    pub fn operational(&self) -> bool {
        self.flags & (PMCW_FLAGS_DNV | PMCW_FLAGS_ENA) == PMCW_FLAGS_DNV | PMCW_FLAGS_ENA
    }
}

/// An I/O interruption the subchannel has made pending: what the VMM injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingInterrupt {
    /// The subchannel.
    pub id: SubchannelId,
    /// Its interruption parameter.
    pub intparm: u32,
    /// Its interruption subclass.
    pub isc: u8,
}

/// How a channel program ended, as its final status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Address of the CCW after the last one executed.
    pub cpa: u32,
    /// Device status.
    pub dstat: u8,
    /// Subchannel status.
    pub cstat: u8,
    /// Residual count of the last CCW.
    pub count: u16,
}

/// The state of one subchannel. Condition codes are the instructions' (0 done, 1 status
/// pending, 2 busy, 3 not operational).
#[derive(Clone, Debug)]
pub struct Subchannel {
    id: SubchannelId,
    pmcw: Pmcw,
    scsw: Scsw,
    sense: [u8; SENSE_SIZE],
}

impl Subchannel {
    /// Subchannel `id` for device number `devno`.
    pub fn new(id: SubchannelId, devno: u16) -> Self {
        Self {
            id,
            pmcw: Pmcw::virtual_device(devno),
            scsw: Scsw::default(),
            sense: [0; SENSE_SIZE],
        }
    }

    /// Its ID.
    pub fn id(&self) -> SubchannelId {
        self.id
    }

    /// Its PMCW.
    pub fn pmcw(&self) -> &Pmcw {
        &self.pmcw
    }

    /// Its current status word.
    pub fn scsw(&self) -> &Scsw {
        &self.scsw
    }

    fn interrupt(&self) -> PendingInterrupt {
        PendingInterrupt {
            id: self.id,
            intparm: self.pmcw.intparm,
            isc: self.pmcw.isc(),
        }
    }

    /// STORE SUBCHANNEL: the SCHIB.
    pub fn store(&self) -> [u8; SCHIB_SIZE] {
        self.pmcw.schib(&self.scsw)
    }

    /// MODIFY SUBCHANNEL with `schib`: condition code, or an operand exception for
    /// reserved bits.
    pub fn modify(&mut self, schib: &[u8]) -> Result<u8, CcwError> {
        let mut pmcw = self.pmcw;
        pmcw.modify(schib)?;
        if self.scsw.status_pending() {
            return Ok(1);
        }
        if self.scsw.function_active() {
            return Ok(2);
        }
        self.pmcw = pmcw;
        Ok(0)
    }

    /// START SUBCHANNEL, first half: the condition code; on 0 the start function is
    /// pending and the channel program at `orb.cpa` must run, then [`Self::complete`].
    pub fn start(&mut self, orb: &Orb) -> u8 {
        if !self.pmcw.operational() {
            return 3;
        }
        if self.scsw.status_pending() {
            return 1;
        }
        if self.scsw.function_active() {
            return 2;
        }
        self.pmcw.intparm = orb.intparm;
        self.scsw = Scsw {
            flags: (u16::from(orb.key & 0xf) << 12)
                | if orb.format1 { SCSW_FLAGS_FORMAT1 } else { 0 },
            ctrl: SCSW_FCTL_START | SCSW_ACTL_START_PEND,
            ..Scsw::default()
        };
        0
    }

    /// The channel program of the start function ended with `done`; a unit check leaves
    /// `sense` for BASIC SENSE. The subchannel is status pending: the returned I/O
    /// interruption is due.
    pub fn complete(
        &mut self,
        done: Completion,
        sense: Option<[u8; SENSE_SIZE]>,
    ) -> PendingInterrupt {
        let mut stctl = SCSW_STCTL_PRIMARY | SCSW_STCTL_SECONDARY | SCSW_STCTL_STATUS_PEND;
        if done.cstat != 0 || done.dstat & DEV_STAT_UNIT_CHECK != 0 {
            stctl |= SCSW_STCTL_ALERT;
        }
        self.scsw.ctrl = (self.scsw.ctrl & SCSW_FCTL_START) | stctl;
        self.scsw.cpa = done.cpa;
        self.scsw.dstat = done.dstat;
        self.scsw.cstat = done.cstat;
        self.scsw.count = done.count;
        if let Some(sense) = sense {
            self.sense = sense;
        }
        self.interrupt()
    }

    /// The sense bytes BASIC SENSE returns.
    pub fn sense(&self) -> [u8; SENSE_SIZE] {
        self.sense
    }

    /// The IRB TEST SUBCHANNEL would store now.
    pub fn irb(&self) -> [u8; IRB_SIZE] {
        irb(&self.scsw)
    }

    /// TEST SUBCHANNEL: the condition code (0 status was pending, 1 not) and the IRB.
    /// Pending status is cleared with the functions it ended.
    pub fn test(&mut self) -> (u8, [u8; IRB_SIZE]) {
        let irb = irb(&self.scsw);
        if !self.scsw.status_pending() {
            return (1, irb);
        }
        let intermediate =
            self.scsw.ctrl & 0x001f == SCSW_STCTL_INTERMEDIATE | SCSW_STCTL_STATUS_PEND;
        if intermediate {
            self.scsw.ctrl &= !0x001f;
        } else {
            self.scsw = Scsw::default();
        }
        (0, irb)
    }

    /// CLEAR SUBCHANNEL: ends every function and makes the subchannel status pending
    /// with the clear function alone.
    pub fn clear(&mut self) -> Result<PendingInterrupt, u8> {
        if !self.pmcw.operational() {
            return Err(3);
        }
        self.scsw = Scsw {
            ctrl: SCSW_FCTL_CLEAR | SCSW_STCTL_STATUS_PEND,
            ..Scsw::default()
        };
        self.sense = [0; SENSE_SIZE];
        Ok(self.interrupt())
    }

    /// HALT SUBCHANNEL. Channel programs here run to completion inside START
    /// SUBCHANNEL, so there is never one to halt: the halt function completes at once.
    pub fn halt(&mut self) -> Result<PendingInterrupt, u8> {
        if !self.pmcw.operational() {
            return Err(3);
        }
        if self.scsw.status_pending() {
            return Err(1);
        }
        if self.scsw.ctrl & (SCSW_FCTL_HALT | SCSW_FCTL_CLEAR) != 0 {
            return Err(2);
        }
        self.scsw = Scsw {
            flags: self.scsw.flags,
            ctrl: SCSW_FCTL_HALT | SCSW_STCTL_STATUS_PEND,
            ..Scsw::default()
        };
        Ok(self.interrupt())
    }

    /// RESUME SUBCHANNEL and CANCEL SUBCHANNEL: their condition code. No channel program
    /// is ever suspended or start-pending when the guest runs (START SUBCHANNEL runs it
    /// to completion), so both find "not applicable" (2) unless the subchannel is not
    /// operational (3) or status pending (1).
    pub fn resume_or_cancel(&self) -> u8 {
        if !self.pmcw.operational() {
            3
        } else if self.scsw.status_pending() {
            1
        } else {
            2
        }
    }

    /// An unsolicited alert (a virtio-ccw classic indicator changed): the subchannel
    /// becomes status pending with alert status unless it is disabled or already status
    /// pending; then an I/O interruption is due.
    pub fn alert(&mut self) -> Option<PendingInterrupt> {
        if self.pmcw.flags & PMCW_FLAGS_ENA == 0 || self.scsw.status_pending() {
            return None;
        }
        self.scsw.ctrl = SCSW_STCTL_ALERT | SCSW_STCTL_STATUS_PEND;
        Some(self.interrupt())
    }
}

// Tests may unwrap: a failed unwrap is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn subchannel_id_register_form() {
        // Linux's struct subchannel_id { cssid:8; :4; m:1; ssid:2; one:1; sch_no:16 }:
        // subchannel 5 of set 1 is 0x0003_0005.
        let id = SubchannelId::from_register(0x0003_0005).unwrap();
        assert_eq!(id, SubchannelId::new(1, 5));
        assert_eq!(id.word(), 0x0003_0005);
        assert_eq!(
            SubchannelId::from_register(0x0000_0005),
            Err(CcwError::InvalidSubchannelId(5)),
            "the one bit is missing"
        );
        assert!(
            SubchannelId::from_register(0xfe01_0000).is_err(),
            "cssid without m"
        );
        let m = SubchannelId::from_register(0xfe09_0000).unwrap();
        assert!(m.m && m.cssid == 0xfe);
    }

    #[test]
    fn orb_fields_and_reserved_bits() {
        // intparm 0x11223344, key 6, F bit (word 1 bit 8), LPM 0x80, CPA 0x2000.
        let orb = [
            0x11, 0x22, 0x33, 0x44, 0x60, 0x80, 0x80, 0x00, 0x00, 0x00, 0x20, 0x00,
        ];
        assert_eq!(
            Orb::decode(&orb).unwrap(),
            Orb {
                intparm: 0x1122_3344,
                key: 6,
                suspend: false,
                format1: true,
                lpm: 0x80,
                cpa: 0x2000
            }
        );
        let mut f0 = orb;
        f0[5] = 0;
        assert!(!Orb::decode(&f0).unwrap().format1);
        let mut bad = orb;
        bad[8] = 0x80;
        assert_eq!(Orb::decode(&bad), Err(CcwError::InvalidOrb), "CPA bit 0");
        let mut bad = orb;
        bad[7] = 0x02;
        assert_eq!(Orb::decode(&bad), Err(CcwError::InvalidOrb), "reserved bit");
        assert!(Orb::decode(&orb[..11]).is_err());
    }

    #[test]
    fn irb_and_schib_layouts() {
        let mut s = Subchannel::new(SubchannelId::new(0, 0), 0x0001);
        let schib = s.store();
        // PMCW word 1: DNV, device number 1; LPM 0x80, PIM 0x80, POM 0xff, PAM 0x80.
        assert_eq!(&schib[4..8], &[0x00, 0x01, 0x00, 0x01]);
        assert_eq!(
            (schib[8], schib[11], schib[14], schib[15]),
            (0x80, 0x80, 0xff, 0x80)
        );
        // MODIFY SUBCHANNEL: intparm 0xcafe0001, ISC 3, enabled.
        let mut m = schib;
        m[0..4].copy_from_slice(&[0xca, 0xfe, 0x00, 0x01]);
        m[4..6].copy_from_slice(&[0x18, 0x80]);
        assert_eq!(s.modify(&m).unwrap(), 0);
        assert_eq!(s.pmcw().intparm, 0xcafe_0001);
        assert_eq!(s.pmcw().isc(), 3);
        assert_eq!(s.pmcw().flags, 0x1881, "DNV kept, ISC and ENA taken");
        // Reserved PMCW bits are an operand exception.
        m[4] = 0x40;
        assert_eq!(s.modify(&m), Err(CcwError::InvalidSchib));

        let orb = Orb::decode(&[0, 0, 0, 7, 0, 0x80, 0xff, 0, 0, 0, 0x20, 0]).unwrap();
        assert_eq!(s.start(&orb), 0);
        assert_eq!(s.start(&orb), 2, "start function in progress");
        let irq = s.complete(
            Completion {
                cpa: 0x2008,
                dstat: DEV_STAT_CHANNEL_END | DEV_STAT_DEVICE_END,
                cstat: 0,
                count: 0,
            },
            None,
        );
        assert_eq!((irq.intparm, irq.isc), (7, 3));
        assert_eq!(s.start(&orb), 1, "status pending");
        let (cc, irb) = s.test();
        assert_eq!(cc, 0);
        // Format 1, start function, primary + secondary + status pending; CE|DE.
        assert_eq!(
            &irb[..12],
            &[0x00, 0x80, 0x40, 0x07, 0, 0, 0x20, 0x08, 0x0c, 0, 0, 0]
        );
        assert!(irb[12..].iter().all(|b| *b == 0));
        assert_eq!(s.test().0, 1, "nothing pending any more");
        // The SCHIB's SCSW is at byte 28.
        assert_eq!(&s.store()[28..40], &[0; 12]);
    }

    #[test]
    fn disabled_subchannels_are_not_operational() {
        let mut s = Subchannel::new(SubchannelId::new(0, 1), 1);
        let orb = Orb::decode(&[0, 0, 0, 0, 0, 0x80, 0xff, 0, 0, 0, 0x20, 0]).unwrap();
        assert_eq!(s.start(&orb), 3);
        assert_eq!(s.clear(), Err(3));
        assert_eq!(s.alert(), None, "no alerts while disabled");
        let mut schib = s.store();
        schib[5] |= 0x80;
        s.modify(&schib).unwrap();
        assert!(s.alert().is_some());
        assert_eq!(s.alert(), None, "already status pending");
        assert_eq!(s.halt(), Err(1));
        assert_eq!(s.test().0, 0);
        assert!(s.halt().is_ok());
        assert_eq!(s.resume_or_cancel(), 1);
        let (_, irb) = s.test();
        assert_eq!(&irb[2..4], &[0x20, 0x01], "halt function, status pending");
        assert_eq!(s.resume_or_cancel(), 2);
        assert!(s.clear().is_ok());
    }
}

//! virtio-ccw (virtio 1.x, "Virtio Over Channel I/O"): how an s390x guest finds and
//! programs virtio devices through channel subsystem subchannels. This file holds the
//! guest-visible structures as pure big-endian encode/decode: format-1 CCWs and their
//! command codes, the ORB the guest passes to START SUBCHANNEL, the SCSW/IRB it reads
//! back with TEST SUBCHANNEL, the PMCW/SCHIB of STORE SUBCHANNEL, and the virtio-ccw
//! payloads of each command. Dispatching commands to a device is the s390x VMM's job
//! (not written yet, see docs/arches.md).

use thiserror::Error;

/// virtio-ccw command: set up a virtqueue (`vq_info_block`).
pub const CCW_CMD_SET_VQ: u8 = 0x13;
/// Reset the device.
pub const CCW_CMD_VDEV_RESET: u8 = 0x33;
/// Set the classic queue indicators' address.
pub const CCW_CMD_SET_IND: u8 = 0x43;
/// Set the configuration change indicator's address.
pub const CCW_CMD_SET_CONF_IND: u8 = 0x53;
/// Set adapter (thin) interrupt indicators (`virtio_thinint_area`).
pub const CCW_CMD_SET_IND_ADAPTER: u8 = 0x73;
/// Read 32 device feature bits (`virtio_feature_desc`).
pub const CCW_CMD_READ_FEAT: u8 = 0x12;
/// Write 32 driver feature bits.
pub const CCW_CMD_WRITE_FEAT: u8 = 0x11;
/// Read the device configuration space.
pub const CCW_CMD_READ_CONF: u8 = 0x22;
/// Write the device configuration space.
pub const CCW_CMD_WRITE_CONF: u8 = 0x21;
/// Write the device status byte.
pub const CCW_CMD_WRITE_STATUS: u8 = 0x31;
/// Read a virtqueue's maximum size (`vq_config_block`).
pub const CCW_CMD_READ_VQ_CONF: u8 = 0x32;
/// Negotiate the virtio-ccw revision.
pub const CCW_CMD_SET_VIRTIO_REV: u8 = 0x83;
/// Read the device status byte (revision 2).
pub const CCW_CMD_READ_STATUS: u8 = 0x72;
/// Channel command: sense ID (identifies a virtio device by control unit type 0x3832).
pub const CCW_CMD_SENSE_ID: u8 = 0xe4;

/// CCW flag: chain data.
pub const CCW_FLAG_DC: u8 = 0x80;
/// CCW flag: chain command.
pub const CCW_FLAG_CC: u8 = 0x40;
/// CCW flag: suppress incorrect length.
pub const CCW_FLAG_SLI: u8 = 0x20;
/// CCW flag: skip (no data transfer).
pub const CCW_FLAG_SKIP: u8 = 0x10;
/// CCW flag: program-controlled interruption.
pub const CCW_FLAG_PCI: u8 = 0x08;
/// CCW flag: indirect data addressing.
pub const CCW_FLAG_IDA: u8 = 0x04;
/// CCW flag: suspend.
pub const CCW_FLAG_SUSPEND: u8 = 0x02;

/// Device status: channel end.
pub const DEV_STAT_CHANNEL_END: u8 = 0x08;
/// Device status: device end.
pub const DEV_STAT_DEVICE_END: u8 = 0x04;
/// Device status: unit check.
pub const DEV_STAT_UNIT_CHECK: u8 = 0x02;

/// SCSW function control: start function.
pub const SCSW_FCTL_START: u16 = 0x4000;
/// SCSW status control: primary status.
pub const SCSW_STCTL_PRIMARY: u16 = 0x0004;
/// SCSW status control: secondary status.
pub const SCSW_STCTL_SECONDARY: u16 = 0x0002;
/// SCSW status control: status pending.
pub const SCSW_STCTL_STATUS_PEND: u16 = 0x0001;
/// SCSW status control: alert status.
pub const SCSW_STCTL_ALERT: u16 = 0x0010;

/// PMCW flag: subchannel enabled.
pub const PMCW_FLAGS_ENA: u16 = 0x0080;
/// PMCW flag: device number valid.
pub const PMCW_FLAGS_DNV: u16 = 0x0001;

/// Errors decoding a guest structure.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CcwError {
    /// Fewer bytes than the structure needs.
    #[error("{what} needs {need} bytes, got {got}")]
    Short {
        /// Which structure.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// The ORB asks for format-0 CCWs, which virtio-ccw does not use.
    #[error("ORB requests format-0 CCWs")]
    Format0,
}

fn take<const N: usize>(b: &[u8], what: &'static str) -> Result<[u8; N], CcwError> {
    b.get(..N)
        .and_then(|s| s.try_into().ok())
        .ok_or(CcwError::Short {
            what,
            need: N,
            got: b.len(),
        })
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

/// A format-1 channel command word (8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ccw1 {
    /// Command code.
    pub cmd: u8,
    /// Flags (`CCW_FLAG_*`).
    pub flags: u8,
    /// Byte count.
    pub count: u16,
    /// 31-bit data address.
    pub cda: u32,
}

impl Ccw1 {
    /// Decodes a CCW from its 8 big-endian bytes.
    pub fn decode(b: &[u8]) -> Result<Self, CcwError> {
        let b = &take::<8>(b, "CCW")?;
        Ok(Self {
            cmd: b[0],
            flags: b[1],
            count: be16(b, 2),
            cda: be32(b, 4),
        })
    }

    /// Encodes the CCW.
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.cmd;
        b[1] = self.flags;
        b[2..4].copy_from_slice(&self.count.to_be_bytes());
        b[4..8].copy_from_slice(&self.cda.to_be_bytes());
        b
    }
}

/// The operation request block START SUBCHANNEL takes (the fields virtio-ccw uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Orb {
    /// Interruption parameter, returned in the lowcore on the I/O interruption.
    pub intparm: u32,
    /// Storage key (bits 0–3 of word 1).
    pub key: u8,
    /// Logical path mask.
    pub lpm: u8,
    /// Channel program address.
    pub cpa: u32,
}

impl Orb {
    /// Decodes the first 12 bytes of an ORB; requires the format-1 CCW bit (F).
    pub fn decode(b: &[u8]) -> Result<Self, CcwError> {
        let b = &take::<12>(b, "ORB")?;
        let w1 = be32(b, 4);
        if w1 & 0x0080_0000 == 0 {
            return Err(CcwError::Format0);
        }
        Ok(Self {
            intparm: be32(b, 0),
            key: (w1 >> 28) as u8,
            lpm: (w1 >> 8) as u8,
            cpa: be32(b, 8) & 0x7fff_ffff,
        })
    }
}

/// The subchannel status word (12 bytes), the first part of the IRB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scsw {
    /// Flags half-word (key, suspend control, ...).
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

    /// The status of a channel program that completed normally at `next_ccw`.
    pub fn completed(next_ccw: u32, residual: u16) -> Self {
        Self {
            flags: 0,
            ctrl: SCSW_FCTL_START
                | SCSW_STCTL_PRIMARY
                | SCSW_STCTL_SECONDARY
                | SCSW_STCTL_STATUS_PEND,
            cpa: next_ccw,
            dstat: DEV_STAT_CHANNEL_END | DEV_STAT_DEVICE_END,
            cstat: 0,
            count: residual,
        }
    }
}

/// Size of the interruption response block TEST SUBCHANNEL stores.
pub const IRB_SIZE: usize = 96;

/// The IRB: the SCSW followed by zeroed extended status, control and measurement words.
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
    /// Flags: ISC in bits 2–4 (mask 0x3800), `PMCW_FLAGS_ENA`, `PMCW_FLAGS_DNV`, ...
    pub flags: u16,
    /// Device number.
    pub devno: u16,
    /// Logical path mask.
    pub lpm: u8,
    /// Path installed mask.
    pub pim: u8,
    /// Path available mask.
    pub pam: u8,
    /// Path operational mask.
    pub pom: u8,
    /// Channel path IDs.
    pub chpid: [u8; 8],
}

/// Size of the subchannel information block (PMCW, SCSW, model-dependent area).
pub const SCHIB_SIZE: usize = 52;

impl Pmcw {
    /// The SCHIB for this PMCW and `scsw`, big-endian.
    pub fn schib(&self, scsw: &Scsw) -> [u8; SCHIB_SIZE] {
        let mut b = [0u8; SCHIB_SIZE];
        b[0..4].copy_from_slice(&self.intparm.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.devno.to_be_bytes());
        b[8] = self.lpm;
        b[9] = 0; // pnom
        b[10] = 0; // lpum
        b[11] = self.pim;
        // 12..14 measurement block index
        b[14] = self.pom;
        b[15] = self.pam;
        b[16..24].copy_from_slice(&self.chpid);
        // 24..28 characteristics
        b[28..40].copy_from_slice(&scsw.encode());
        b
    }

    /// Applies the writable fields of a SCHIB from MODIFY SUBCHANNEL: the interruption
    /// parameter, the ISC and enable bits, and the logical path mask.
    pub fn modify(&mut self, schib: &[u8]) -> Result<(), CcwError> {
        let b = &take::<28>(schib, "SCHIB")?;
        self.intparm = be32(b, 0);
        let writable = 0x3800 | PMCW_FLAGS_ENA;
        self.flags = (self.flags & !writable) | (be16(b, 4) & writable);
        self.lpm = b[8];
        Ok(())
    }

    /// The interruption subclass (0–7).
    pub fn isc(&self) -> u8 {
        ((self.flags >> 11) & 7) as u8
    }
}

/// `struct vq_info_block` (revision 1+): a virtqueue's rings, set by `CCW_CMD_SET_VQ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VqInfoBlock {
    /// Descriptor table address.
    pub desc: u64,
    /// Queue index.
    pub index: u16,
    /// Queue size.
    pub num: u16,
    /// Driver (available) ring address.
    pub driver: u64,
    /// Device (used) ring address.
    pub device: u64,
}

impl VqInfoBlock {
    /// Its size in bytes.
    pub const SIZE: usize = 32;

    /// Decodes it (`be64 desc; be32 res0; be16 index; be16 num; be64 driver; be64 device`).
    pub fn decode(b: &[u8]) -> Result<Self, CcwError> {
        let b = &take::<32>(b, "vq_info_block")?;
        Ok(Self {
            desc: be64(b, 0),
            index: be16(b, 12),
            num: be16(b, 14),
            driver: be64(b, 16),
            device: be64(b, 24),
        })
    }
}

/// `struct vq_config_block` for `CCW_CMD_READ_VQ_CONF`: the guest writes the index, the
/// device answers with the maximum queue size.
pub fn vq_config_block(index: u16, max_num: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&index.to_be_bytes());
    b[2..].copy_from_slice(&max_num.to_be_bytes());
    b
}

/// `struct virtio_feature_desc`: 32 feature bits and which 32 (`index`). Note the
/// feature word is little-endian, the one exception in virtio-ccw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureDesc {
    /// Feature bits `32*index .. 32*index+31`.
    pub features: u32,
    /// Which feature word.
    pub index: u8,
}

impl FeatureDesc {
    /// Decodes `le32 features; u8 index`.
    pub fn decode(b: &[u8]) -> Result<Self, CcwError> {
        let b = &take::<5>(b, "virtio_feature_desc")?;
        Ok(Self {
            features: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            index: b[4],
        })
    }

    /// Encodes it.
    pub fn encode(&self) -> [u8; 5] {
        let f = self.features.to_le_bytes();
        [f[0], f[1], f[2], f[3], self.index]
    }

    /// This word of a 64-bit feature set.
    pub fn from_features(features: u64, index: u8) -> Self {
        let features = match index {
            0 => features as u32,
            1 => (features >> 32) as u32,
            _ => 0,
        };
        Self { features, index }
    }
}

/// `struct virtio_thinint_area` for `CCW_CMD_SET_IND_ADAPTER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThinintArea {
    /// Address of the summary indicator byte.
    pub summary_indicator: u64,
    /// Address of the queue indicator bits.
    pub indicator: u64,
    /// First bit of this device's queue indicators.
    pub bit_nr: u64,
    /// Interruption subclass of the adapter interrupt.
    pub isc: u8,
}

impl ThinintArea {
    /// Decodes `be64 summary_indicator; be64 indicator; be64 bit_nr; u8 isc`.
    pub fn decode(b: &[u8]) -> Result<Self, CcwError> {
        let b = &take::<25>(b, "virtio_thinint_area")?;
        Ok(Self {
            summary_indicator: be64(b, 0),
            indicator: be64(b, 8),
            bit_nr: be64(b, 16),
            isc: b[24],
        })
    }
}

/// `struct virtio_rev_info` for `CCW_CMD_SET_VIRTIO_REV`: the revision (be16) and the
/// length (be16) of revision-specific data.
pub fn decode_rev_info(b: &[u8]) -> Result<(u16, u16), CcwError> {
    let b = &take::<4>(b, "virtio_rev_info")?;
    Ok((be16(b, 0), be16(b, 2)))
}

/// The SENSE ID reply of a virtio device: control unit type 0x3832, model = the virtio
/// device type, device type/model 0.
pub fn sense_id(virtio_device_type: u8) -> [u8; 7] {
    [0xff, 0x38, 0x32, virtio_device_type, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_codes_are_the_virtio_spec_s() {
        // virtio 1.x section 4.3.2 (Virtio Over Channel I/O).
        assert_eq!(
            [
                CCW_CMD_SET_VQ,
                CCW_CMD_VDEV_RESET,
                CCW_CMD_SET_IND,
                CCW_CMD_SET_CONF_IND,
                CCW_CMD_SET_IND_ADAPTER,
                CCW_CMD_READ_FEAT,
                CCW_CMD_WRITE_FEAT,
                CCW_CMD_READ_CONF,
                CCW_CMD_WRITE_CONF,
                CCW_CMD_WRITE_STATUS,
                CCW_CMD_READ_VQ_CONF,
                CCW_CMD_SET_VIRTIO_REV,
                CCW_CMD_READ_STATUS,
            ],
            [0x13, 0x33, 0x43, 0x53, 0x73, 0x12, 0x11, 0x22, 0x21, 0x31, 0x32, 0x83, 0x72]
        );
    }

    #[test]
    fn ccw1_round_trips_big_endian() {
        // SET_VQ, chain command + SLI, 32 bytes at 0x00123450.
        let bytes = [0x13, 0x60, 0x00, 0x20, 0x00, 0x12, 0x34, 0x50];
        let ccw = Ccw1::decode(&bytes).unwrap();
        assert_eq!(
            ccw,
            Ccw1 {
                cmd: CCW_CMD_SET_VQ,
                flags: CCW_FLAG_CC | CCW_FLAG_SLI,
                count: 32,
                cda: 0x0012_3450
            }
        );
        assert_eq!(ccw.encode(), bytes);
        assert!(Ccw1::decode(&bytes[..7]).is_err());
    }

    #[test]
    fn orb_needs_format_1() {
        // intparm 0x11223344, key 0, F bit (word 1 bit 8), LPM 0x80, CPA 0x2000.
        let orb = [
            0x11, 0x22, 0x33, 0x44, 0x00, 0x80, 0x80, 0x00, 0x00, 0x00, 0x20, 0x00,
        ];
        assert_eq!(
            Orb::decode(&orb).unwrap(),
            Orb {
                intparm: 0x1122_3344,
                key: 0,
                lpm: 0x80,
                cpa: 0x2000
            }
        );
        let mut f0 = orb;
        f0[5] = 0;
        assert_eq!(Orb::decode(&f0), Err(CcwError::Format0));
    }

    #[test]
    fn irb_and_schib_layouts() {
        let scsw = Scsw::completed(0x2008, 0);
        let irb = irb(&scsw);
        // start function, primary + secondary + status pending; CE|DE.
        assert_eq!(
            &irb[..12],
            &[0, 0, 0x40, 0x07, 0, 0, 0x20, 0x08, 0x0c, 0, 0, 0]
        );
        assert!(irb[12..].iter().all(|b| *b == 0));
        let mut pmcw = Pmcw {
            devno: 0x0001,
            flags: PMCW_FLAGS_DNV,
            pim: 0x80,
            pam: 0x80,
            pom: 0xff,
            lpm: 0x80,
            ..Pmcw::default()
        };
        let schib = pmcw.schib(&Scsw::default());
        assert_eq!(&schib[4..8], &[0x00, 0x01, 0x00, 0x01]);
        assert_eq!(schib[11], 0x80);
        // MODIFY SUBCHANNEL: intparm 0xcafe0001, ISC 3, enabled.
        let mut m = schib;
        m[0..4].copy_from_slice(&[0xca, 0xfe, 0x00, 0x01]);
        m[4..6].copy_from_slice(&[0x18, 0x80]);
        pmcw.modify(&m).unwrap();
        assert_eq!(pmcw.intparm, 0xcafe_0001);
        assert_eq!(pmcw.isc(), 3);
        assert_eq!(pmcw.flags, 0x1881, "DNV kept, ISC and ENA taken");
    }

    #[test]
    fn virtio_payloads() {
        let mut vq = [0u8; 32];
        vq[0..8].copy_from_slice(&0x1000u64.to_be_bytes());
        vq[12..14].copy_from_slice(&[0, 1]);
        vq[14..16].copy_from_slice(&[1, 0]);
        vq[16..24].copy_from_slice(&0x2000u64.to_be_bytes());
        vq[24..32].copy_from_slice(&0x3000u64.to_be_bytes());
        assert_eq!(
            VqInfoBlock::decode(&vq).unwrap(),
            VqInfoBlock {
                desc: 0x1000,
                index: 1,
                num: 256,
                driver: 0x2000,
                device: 0x3000
            }
        );
        assert_eq!(vq_config_block(2, 128), [0, 2, 0, 128]);
        // VIRTIO_F_VERSION_1 is bit 32: word 1, bit 0, stored little-endian.
        let f = FeatureDesc::from_features(1 << 32, 1);
        assert_eq!(f.encode(), [1, 0, 0, 0, 1]);
        assert_eq!(
            FeatureDesc::decode(&[0, 0, 0, 0x80, 0]).unwrap().features,
            0x8000_0000
        );
        let mut t = [0u8; 25];
        t[7] = 0x10;
        t[15] = 0x20;
        t[23] = 5;
        t[24] = 6;
        assert_eq!(
            ThinintArea::decode(&t).unwrap(),
            ThinintArea {
                summary_indicator: 0x10,
                indicator: 0x20,
                bit_nr: 5,
                isc: 6
            }
        );
        assert_eq!(decode_rev_info(&[0, 1, 0, 0]).unwrap(), (1, 0));
        assert_eq!(sense_id(2), [0xff, 0x38, 0x32, 2, 0, 0, 0]);
    }
}

//! Channel command words and the virtio-ccw command payloads (virtio 1.2 §4.3.2), as the
//! guest lays them out in memory: big-endian, except the feature bits of
//! `virtio_feature_desc`, which are little-endian.

use super::CcwError;

/// Channel command: no operation (the control command every device accepts).
pub const CCW_CMD_NOOP: u8 = 0x03;
/// Channel command: basic sense (the sense bytes after a unit check).
pub const CCW_CMD_BASIC_SENSE: u8 = 0x04;
/// Channel command: transfer in channel (a jump in the channel program).
pub const CCW_CMD_TIC: u8 = 0x08;
/// Channel command: sense ID (identifies a virtio device by control unit type 0x3832).
pub const CCW_CMD_SENSE_ID: u8 = 0xe4;
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

/// The control unit type of virtio devices in SENSE ID.
pub const VIRTIO_CCW_CU_TYPE: u16 = 0x3832;

fn take<const N: usize>(b: &[u8], what: &'static str) -> Result<[u8; N], CcwError> {
    b.get(..N)
        .and_then(|s| s.try_into().ok())
        .ok_or(CcwError::Short {
            what,
            need: N,
            got: b.len(),
        })
}

pub(super) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
pub(super) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(super) fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

/// A channel command word, in its format-1 form (format-0 CCWs are converted on fetch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ccw1 {
    /// Command code.
    pub cmd: u8,
    /// Flags (`CCW_FLAG_*`).
    pub flags: u8,
    /// Byte count.
    pub count: u16,
    /// Data address (31 bits; bit 0 must be zero).
    pub cda: u32,
}

impl Ccw1 {
    /// Decodes a format-1 CCW from its 8 big-endian bytes: command, flags, count, data
    /// address.
    pub fn decode(b: &[u8]) -> Result<Self, CcwError> {
        let b = &take::<8>(b, "CCW")?;
        Ok(Self {
            cmd: b[0],
            flags: b[1],
            count: be16(b, 2),
            cda: be32(b, 4),
        })
    }

    /// Decodes a format-0 CCW (command, 24-bit data address, flags, reserved byte,
    /// count) into the format-1 form.
    pub fn decode_format0(b: &[u8]) -> Result<Self, CcwError> {
        let b = &take::<8>(b, "CCW")?;
        Ok(Self {
            cmd: b[0],
            flags: b[4],
            count: be16(b, 6),
            cda: u32::from_be_bytes([0, b[1], b[2], b[3]]),
        })
    }

    /// Encodes the CCW in format 1.
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.cmd;
        b[1] = self.flags;
        b[2..4].copy_from_slice(&self.count.to_be_bytes());
        b[4..8].copy_from_slice(&self.cda.to_be_bytes());
        b
    }

    /// Whether this is a transfer in channel (low four bits 1000).
    pub fn is_tic(&self) -> bool {
        self.cmd & 0x0f == CCW_CMD_TIC
    }
}

/// `struct vq_info_block` (revision 1+): a virtqueue's rings, set by `CCW_CMD_SET_VQ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VqInfoBlock {
    /// Descriptor table address (0 disables the queue).
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

/// `struct virtio_feature_desc`: 32 feature bits and which 32 (`index`). The feature word
/// is little-endian, the one exception in virtio-ccw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureDesc {
    /// Feature bits `32*index .. 32*index+31`.
    pub features: u32,
    /// Which feature word.
    pub index: u8,
}

impl FeatureDesc {
    /// Its size in bytes.
    pub const SIZE: usize = 5;

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

/// `struct virtio_thinint_area` for `CCW_CMD_SET_IND_ADAPTER` (packed, 25 bytes).
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
    /// Its size in bytes.
    pub const SIZE: usize = 25;

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

/// The SENSE ID reply of a virtio device (`struct senseid` without CIWs): 0xff, control
/// unit type 0x3832, control unit model = the virtio device type, device type and model
/// 0, one unused byte.
pub fn sense_id(virtio_device_type: u8) -> [u8; 8] {
    let cu = VIRTIO_CCW_CU_TYPE.to_be_bytes();
    [0xff, cu[0], cu[1], virtio_device_type, 0, 0, 0, 0]
}

// Tests may unwrap: a failed unwrap is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn command_codes_are_the_virtio_spec_s() {
        // virtio 1.2 section 4.3.2 (Virtio Over Channel I/O).
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
    fn format0_ccw_converts() {
        // Principles of Operation: cmd, 24-bit address, flags, reserved, count.
        let f0 = [0xe4, 0x01, 0x23, 0x45, 0x20, 0x00, 0x00, 0x08];
        assert_eq!(
            Ccw1::decode_format0(&f0).unwrap(),
            Ccw1 {
                cmd: CCW_CMD_SENSE_ID,
                flags: CCW_FLAG_SLI,
                count: 8,
                cda: 0x0001_2345
            }
        );
        assert!(Ccw1::decode(&[0x18, 0, 0, 0, 0, 0, 0, 0]).unwrap().is_tic());
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
        assert_eq!(sense_id(2), [0xff, 0x38, 0x32, 2, 0, 0, 0, 0]);
    }
}

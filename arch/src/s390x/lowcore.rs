//! The architected fields of the z/Architecture prefix area ("lowcore", Principles of
//! Operation, "Assigned Storage Locations"): where the CPU stores old PSWs and
//! interruption codes and fetches new PSWs. All fields are big-endian.

/// Offset of the 8-byte IPL PSW (ESA/390 format) at absolute 0.
pub const IPL_PSW: u64 = 0x00;
/// External-interruption parameter (4 bytes).
pub const EXT_PARAMS: u64 = 0x80;
/// CPU address of the external interruption source (2 bytes).
pub const EXT_CPU_ADDR: u64 = 0x84;
/// External-interruption code (2 bytes).
pub const EXT_INT_CODE: u64 = 0x86;
/// SVC interruption ILC (2 bytes) and code (2 bytes).
pub const SVC_ILC: u64 = 0x88;
/// Program-interruption ILC (2 bytes).
pub const PGM_ILC: u64 = 0x8c;
/// Program-interruption code (2 bytes).
pub const PGM_CODE: u64 = 0x8e;
/// Subsystem-identification word of an I/O interruption (4 bytes).
pub const SUBCHANNEL_ID: u64 = 0xb8;
/// I/O-interruption parameter (4 bytes).
pub const IO_INT_PARM: u64 = 0xbc;
/// I/O-interruption identification word (4 bytes).
pub const IO_INT_WORD: u64 = 0xc0;
/// Facility list stored by STFL (4 bytes).
pub const STFL_FAC_LIST: u64 = 0xc8;
/// Restart old PSW (16 bytes).
pub const RESTART_OLD_PSW: u64 = 0x120;
/// External old PSW.
pub const EXTERNAL_OLD_PSW: u64 = 0x130;
/// Supervisor-call old PSW.
pub const SVC_OLD_PSW: u64 = 0x140;
/// Program old PSW.
pub const PROGRAM_OLD_PSW: u64 = 0x150;
/// Machine-check old PSW.
pub const MCCK_OLD_PSW: u64 = 0x160;
/// I/O old PSW.
pub const IO_OLD_PSW: u64 = 0x170;
/// Restart new PSW.
pub const RESTART_NEW_PSW: u64 = 0x1a0;
/// External new PSW.
pub const EXTERNAL_NEW_PSW: u64 = 0x1b0;
/// Supervisor-call new PSW.
pub const SVC_NEW_PSW: u64 = 0x1c0;
/// Program new PSW.
pub const PROGRAM_NEW_PSW: u64 = 0x1d0;
/// Machine-check new PSW.
pub const MCCK_NEW_PSW: u64 = 0x1e0;
/// I/O new PSW.
pub const IO_NEW_PSW: u64 = 0x1f0;

/// External-interruption code of a service-signal (SCLP command completion).
pub const EXT_CODE_SERVICE_SIGNAL: u16 = 0x2401;

/// The 16 lowcore bytes of an I/O interruption for subchannel `schid` (subsystem ID at
/// 0xb8, interruption parameter at 0xbc, identification word at 0xc0), big-endian, as
/// the CPU stores them; `io_int_word` carries the ISC in bits 2–4 (or the adapter bit).
pub fn io_interruption_fields(schid: u32, parm: u32, io_int_word: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&schid.to_be_bytes());
    b[4..8].copy_from_slice(&parm.to_be_bytes());
    b[8..12].copy_from_slice(&io_int_word.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psw_slots_are_16_bytes_apart_from_the_architected_bases() {
        // Principles of Operation: restart old PSW at 288 (0x120), I/O new at 496 (0x1f0).
        assert_eq!(RESTART_OLD_PSW, 288);
        assert_eq!(IO_OLD_PSW - EXTERNAL_OLD_PSW, 0x40);
        assert_eq!(RESTART_NEW_PSW, 416);
        assert_eq!(IO_NEW_PSW, 496);
        assert_eq!(SUBCHANNEL_ID, 184);
        assert_eq!(IO_INT_WORD, 192);
    }

    #[test]
    fn io_fields_are_big_endian() {
        // Subsystem ID 0x0001_0000 (subchannel set 0, subchannel 0, "one" bit set),
        // parameter 0xdeadbeef, ISC 3 in bits 2-4 of the identification word.
        let b = io_interruption_fields(0x0001_0000, 0xdead_beef, 3 << 27);
        assert_eq!(b, [0, 1, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0x18, 0, 0, 0]);
    }
}

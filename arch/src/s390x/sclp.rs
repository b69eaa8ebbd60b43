//! The SCLP (Service-Call Logical Processor) console: the guest's `ttysclp0` writes and
//! reads ASCII console data (the VT220 event, type 0x1a) through Write Event Data and
//! Read Event Data commands, each on an SCCB (service-call control block) in guest
//! memory. Everything is big-endian:
//!
//! ```text
//! SCCB header:  +0 length (be16)  +2 function code  +3 control mask[3]  +6 response (be16)
//! event buffer: +0 length (be16)  +2 type  +3 flags (0x80 = processed)  +4 reserved (be16)
//!               +6 data
//! ```
//!
//! These functions work on the SCCB's bytes; the VMM copies the block in and out of
//! guest memory around them.

/// SCLP command word: Read Event Data.
pub const SCLP_CMD_READ_EVENT_DATA: u32 = 0x0077_0005;
/// SCLP command word: Write Event Data.
pub const SCLP_CMD_WRITE_EVENT_DATA: u32 = 0x0076_0005;
/// SCLP command word: Write Event Mask.
pub const SCLP_CMD_WRITE_EVENT_MASK: u32 = 0x0078_0005;
/// Event type: VT220 / ASCII console data.
pub const EVENT_TYPE_VT220: u8 = 0x1a;
/// Event buffer flag: processed.
pub const EVENT_PROCESSED: u8 = 0x80;
/// Response: normal completion.
pub const RC_NORMAL_COMPLETION: u16 = 0x0020;
/// Response: the SCCB length is too small.
pub const RC_INSUFFICIENT_SCCB_LENGTH: u16 = 0x0300;
/// Response: an event buffer's length is inconsistent.
pub const RC_INCONSISTENT_LENGTHS: u16 = 0x72f0;
/// Response: an event type is not supported.
pub const RC_INVALID_FUNCTION: u16 = 0x40f0;
/// Response: no event buffers stored (Read Event Data with nothing pending).
pub const RC_NO_EVENT_BUFFERS_STORED: u16 = 0x60f0;

const SCCB_HEADER: usize = 8;
const EVENT_HEADER: usize = 6;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn set_response(sccb: &mut [u8], rc: u16) {
    if let Some(r) = sccb.get_mut(6..8) {
        r.copy_from_slice(&rc.to_be_bytes());
    }
}

/// Write Event Data: passes every VT220 buffer's data to `out`, marks the buffers
/// processed and stores the response code. Returns the response code.
pub fn write_event_data(sccb: &mut [u8], out: &mut dyn FnMut(&[u8])) -> u16 {
    let Some(len) = be16(sccb, 0).map(usize::from) else {
        return RC_INSUFFICIENT_SCCB_LENGTH;
    };
    if len < SCCB_HEADER || len > sccb.len() {
        set_response(sccb, RC_INSUFFICIENT_SCCB_LENGTH);
        return RC_INSUFFICIENT_SCCB_LENGTH;
    }
    let mut at = SCCB_HEADER;
    let mut rc = RC_NORMAL_COMPLETION;
    while at < len {
        let elen = be16(sccb, at).map_or(0, usize::from);
        if elen < EVENT_HEADER || at + elen > len {
            rc = RC_INCONSISTENT_LENGTHS;
            break;
        }
        if sccb[at + 2] == EVENT_TYPE_VT220 {
            out(&sccb[at + EVENT_HEADER..at + elen]);
            sccb[at + 3] |= EVENT_PROCESSED;
        } else {
            rc = RC_INVALID_FUNCTION;
        }
        at += elen;
    }
    set_response(sccb, rc);
    rc
}

/// Read Event Data: stores one VT220 event buffer with as much of `input` as fits the
/// SCCB, sets the SCCB length and response code, and returns how many input bytes were
/// consumed (0 with [`RC_NO_EVENT_BUFFERS_STORED`] when `input` is empty).
pub fn read_event_data(sccb: &mut [u8], input: &[u8]) -> usize {
    let Some(len) = be16(sccb, 0).map(usize::from) else {
        return 0;
    };
    if len < SCCB_HEADER + EVENT_HEADER + 1 || len > sccb.len() {
        set_response(sccb, RC_INSUFFICIENT_SCCB_LENGTH);
        return 0;
    }
    if input.is_empty() {
        set_response(sccb, RC_NO_EVENT_BUFFERS_STORED);
        return 0;
    }
    let n = input.len().min(len - SCCB_HEADER - EVENT_HEADER);
    let elen = (EVENT_HEADER + n) as u16;
    let e = SCCB_HEADER;
    sccb[e..e + 2].copy_from_slice(&elen.to_be_bytes());
    sccb[e + 2] = EVENT_TYPE_VT220;
    sccb[e + 3] = 0;
    sccb[e + 4..e + 6].copy_from_slice(&[0, 0]);
    sccb[e + EVENT_HEADER..e + EVENT_HEADER + n].copy_from_slice(&input[..n]);
    sccb[0..2].copy_from_slice(&((SCCB_HEADER as u16) + elen).to_be_bytes());
    set_response(sccb, RC_NORMAL_COMPLETION);
    n
}

/// The event-type mask bit of the VT220 event (type 0x1a is bit 25 of a 32-bit mask,
/// counting from the most significant bit as 0; Linux's `EVTYP_VT220MSG_MASK`).
pub const VT220_MASK: u32 = 0x0000_0040;

/// Write Event Mask: the guest states which event types it sends and receives
/// (`mask_length` bytes each, at SCCB offset 12); we answer which ones the SCLP side
/// receives and sends (VT220 only) in the next two masks. SCCB layout: header (8),
/// reserved (be16), mask_length (be16), receive mask, send mask, SCLP receive mask, SCLP
/// send mask. Returns the response code.
pub fn write_event_mask(sccb: &mut [u8]) -> u16 {
    let (Some(len), Some(mask_len)) = (be16(sccb, 0), be16(sccb, 10)) else {
        return RC_INSUFFICIENT_SCCB_LENGTH;
    };
    let (len, mask_len) = (usize::from(len), usize::from(mask_len));
    if len > sccb.len() || len < SCCB_HEADER + 4 {
        set_response(sccb, RC_INSUFFICIENT_SCCB_LENGTH);
        return RC_INSUFFICIENT_SCCB_LENGTH;
    }
    if mask_len == 0 || mask_len > 1021 || len < SCCB_HEADER + 4 + 4 * mask_len {
        set_response(sccb, RC_INCONSISTENT_LENGTHS);
        return RC_INCONSISTENT_LENGTHS;
    }
    let ours = VT220_MASK.to_be_bytes();
    for m in [2, 3] {
        let at = SCCB_HEADER + 4 + m * mask_len;
        let dst = &mut sccb[at..at + mask_len];
        dst.fill(0);
        let n = mask_len.min(4);
        dst[..n].copy_from_slice(&ours[..n]);
    }
    set_response(sccb, RC_NORMAL_COMPLETION);
    RC_NORMAL_COMPLETION
}

/// Whether the guest's receive mask (the first mask of a Write Event Mask SCCB) asks
/// for VT220 input.
pub fn receives_vt220(sccb: &[u8]) -> bool {
    let Some(mask_len) = be16(sccb, 10).map(usize::from) else {
        return false;
    };
    let at = SCCB_HEADER + 4;
    let mut mask = [0u8; 4];
    let n = mask_len.min(4);
    match sccb.get(at..at + n) {
        Some(b) => mask[..n].copy_from_slice(b),
        None => return false,
    }
    u32::from_be_bytes(mask) & VT220_MASK != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_event_data_delivers_vt220_text_and_marks_processed() {
        // SCCB of 8 + 6 + 4 bytes: header, one VT220 event buffer holding "hi\r\n".
        let mut sccb = vec![
            0x00, 0x12, 0, 0, 0, 0, 0, 0, // length 18, response 0
            0x00, 0x0a, 0x1a, 0x00, 0, 0, // event length 10, type VT220
            b'h', b'i', b'\r', b'\n',
        ];
        let mut got = Vec::new();
        let rc = write_event_data(&mut sccb, &mut |b| got.extend_from_slice(b));
        assert_eq!(rc, 0x0020);
        assert_eq!(got, b"hi\r\n");
        assert_eq!(&sccb[6..8], &[0x00, 0x20]);
        assert_eq!(sccb[11], 0x80, "processed flag");
    }

    #[test]
    fn write_event_data_rejects_bad_lengths() {
        let mut sccb = vec![
            0x00, 0x10, 0, 0, 0, 0, 0, 0, 0x00, 0x20, 0x1a, 0, 0, 0, 0, 0,
        ];
        assert_eq!(write_event_data(&mut sccb, &mut |_| {}), 0x72f0);
        let mut short = vec![0x00, 0x40, 0, 0, 0, 0, 0, 0];
        assert_eq!(write_event_data(&mut short, &mut |_| {}), 0x0300);
    }

    #[test]
    fn read_event_data_stores_one_vt220_buffer() {
        let mut sccb = vec![0u8; 32];
        sccb[1] = 32;
        let n = read_event_data(&mut sccb, b"root\n");
        assert_eq!(n, 5);
        assert_eq!(
            &sccb[..19],
            &[0, 19, 0, 0, 0, 0, 0x00, 0x20, 0, 11, 0x1a, 0, 0, 0, b'r', b'o', b'o', b't', b'\n']
        );
        let mut empty = vec![0u8; 32];
        empty[1] = 32;
        assert_eq!(read_event_data(&mut empty, b""), 0);
        assert_eq!(&empty[6..8], &[0x60, 0xf0]);
    }

    #[test]
    fn write_event_mask_answers_vt220_both_ways() {
        // Linux's init_sccb with 4-byte masks: length 8 + 4 + 16 = 28; the guest receives
        // and sends VT220 (0x40 in the last mask byte).
        let mut sccb = vec![0u8; 28];
        sccb[1] = 28;
        sccb[11] = 4;
        sccb[12..16].copy_from_slice(&[0, 0, 0, 0x40]);
        sccb[16..20].copy_from_slice(&[0, 0, 0, 0x40]);
        assert_eq!(write_event_mask(&mut sccb), 0x0020);
        assert_eq!(&sccb[20..28], &[0, 0, 0, 0x40, 0, 0, 0, 0x40]);
        assert_eq!(&sccb[6..8], &[0x00, 0x20]);
        assert!(receives_vt220(&sccb));
        // A mask length that overruns the SCCB.
        sccb[11] = 8;
        assert_eq!(write_event_mask(&mut sccb), 0x72f0);
    }
}

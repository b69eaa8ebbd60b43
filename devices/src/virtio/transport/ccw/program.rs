//! The channel program interpreter: what the channel subsystem does between START
//! SUBCHANNEL and the status it leaves for TEST SUBCHANNEL (Principles of Operation,
//! chapter 15 "Basic I/O Functions").
//!
//! CCWs are fetched from guest absolute storage at the ORB's channel program address,
//! doubleword-aligned, in format 1 (or format 0, converted). Command chaining continues
//! with the next CCW; TIC jumps (never twice in a row). NOOP, BASIC SENSE and SENSE ID
//! are the channel's; every other command goes to the [`CcwDevice`] with its data area
//! read from guest memory, and what the device stores goes back. A transfer shorter or
//! longer than the CCW's count is an incorrect length unless the CCW suppresses it (SLI).
//! Data chaining, indirect data addressing, suspend and program-controlled interruptions
//! are not offered: such a CCW ends the program with a program check.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::command::*;
use super::subchannel::{
    Completion, Orb, DEV_STAT_CHANNEL_END, DEV_STAT_DEVICE_END, DEV_STAT_UNIT_CHECK,
    SCH_STAT_INCORRECT_LENGTH, SCH_STAT_PROGRAM_CHECK, SENSE_COMMAND_REJECT, SENSE_SIZE,
};

/// Most CCWs one channel program may execute: a guest looping with TICs ends in a
/// program check instead of holding a vCPU forever.
pub const MAX_CCWS: usize = 1024;

/// How a command moved data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// Nothing.
    None,
    /// The device stored this many bytes at the start of the data area.
    ToGuest(usize),
    /// The device consumed this many bytes of the data area.
    FromGuest(usize),
}

impl Transfer {
    fn len(self) -> usize {
        match self {
            Transfer::None => 0,
            Transfer::ToGuest(n) | Transfer::FromGuest(n) => n,
        }
    }
}

/// Why a device refused a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// Command reject: unit check with sense byte 0 bit 0 (an unknown command, or one
    /// the device's state does not allow).
    Reject,
    /// A malformed request (wrong length, bad payload): channel program check.
    ProgramCheck,
}

/// A device behind a subchannel, executing its device-specific commands.
pub trait CcwDevice: Send {
    /// The SENSE ID data (`struct senseid` without command information words).
    fn sense_id(&self) -> [u8; 8];

    /// Executes `ccw` with its data area `data` (`ccw.count` bytes read from guest
    /// memory); returns what it transferred.
    fn execute(&mut self, ccw: &Ccw1, data: &mut [u8]) -> Result<Transfer, CommandError>;

    /// A virtio-ccw queue notification (DIAGNOSE 0x500 subcode 3) for `queue`, outside
    /// any channel program: whether the device has that queue. Devices without queues
    /// have none.
    fn notify(&self, _queue: u64) -> bool {
        false
    }
}

/// How a channel program ended: its completion and, when it changed, the subchannel's
/// new sense data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    /// The final status.
    pub completion: Completion,
    /// New sense data (BASIC SENSE consumed it, or a unit check set it).
    pub sense: Option<[u8; SENSE_SIZE]>,
}

fn program_check(next: u32, count: u16) -> Ending {
    Ending {
        completion: Completion {
            cpa: next,
            dstat: 0,
            cstat: SCH_STAT_PROGRAM_CHECK,
            count,
        },
        sense: None,
    }
}

fn fetch<G: GuestMemory + ?Sized>(mem: &G, at: u32, format1: bool) -> Option<Ccw1> {
    if !at.is_multiple_of(8) {
        return None;
    }
    let mut b = [0u8; 8];
    mem.read_slice(&mut b, GuestAddress(u64::from(at))).ok()?;
    if format1 {
        Ccw1::decode(&b).ok()
    } else {
        Ccw1::decode_format0(&b).ok()
    }
}

/// Runs the channel program `orb` names against `device`, with the subchannel's current
/// `sense` data for BASIC SENSE.
pub fn run<G: GuestMemory + ?Sized>(
    mem: &G,
    orb: &Orb,
    sense: &[u8; SENSE_SIZE],
    device: &mut dyn CcwDevice,
) -> Ending {
    let mut at = orb.cpa;
    let mut sense_out = None;
    let mut last_was_tic = false;
    for _ in 0..MAX_CCWS {
        let next = at.wrapping_add(8);
        let Some(ccw) = fetch(mem, at, orb.format1) else {
            return program_check(next, 0);
        };
        if ccw.is_tic() {
            // Format 1: flags and count must be zero; the target is a doubleword.
            let bad_fields = orb.format1 && (ccw.flags != 0 || ccw.count != 0);
            if last_was_tic
                || bad_fields
                || !ccw.cda.is_multiple_of(8)
                || ccw.cda & 0x8000_0000 != 0
            {
                return program_check(next, 0);
            }
            last_was_tic = true;
            at = ccw.cda;
            continue;
        }
        last_was_tic = false;
        let unsupported = CCW_FLAG_DC | CCW_FLAG_IDA | CCW_FLAG_SUSPEND | CCW_FLAG_PCI;
        if ccw.cmd & 0x0f == 0
            || ccw.flags & unsupported != 0
            || ccw.cda & 0x8000_0000 != 0
            || (!orb.format1 && ccw.count == 0)
        {
            return program_check(next, ccw.count);
        }
        let count = usize::from(ccw.count);
        let mut data = vec![0u8; count];
        let skip = ccw.flags & CCW_FLAG_SKIP != 0;
        if count > 0
            && !skip
            && mem
                .read_slice(&mut data, GuestAddress(u64::from(ccw.cda)))
                .is_err()
        {
            return program_check(next, ccw.count);
        }
        let result = match ccw.cmd {
            CCW_CMD_NOOP => Ok(Transfer::None),
            CCW_CMD_BASIC_SENSE => {
                let n = count.min(SENSE_SIZE);
                data[..n].copy_from_slice(&sense[..n]);
                sense_out = Some([0; SENSE_SIZE]);
                Ok(Transfer::ToGuest(n))
            }
            CCW_CMD_SENSE_ID => {
                let id = device.sense_id();
                let n = count.min(id.len());
                data[..n].copy_from_slice(&id[..n]);
                Ok(Transfer::ToGuest(n))
            }
            _ => device.execute(&ccw, &mut data),
        };
        let transfer = match result {
            Ok(t) => t,
            Err(CommandError::Reject) => {
                let mut s = [0u8; SENSE_SIZE];
                s[0] = SENSE_COMMAND_REJECT;
                return Ending {
                    completion: Completion {
                        cpa: next,
                        dstat: DEV_STAT_CHANNEL_END | DEV_STAT_DEVICE_END | DEV_STAT_UNIT_CHECK,
                        cstat: 0,
                        count: ccw.count,
                    },
                    sense: Some(s),
                };
            }
            Err(CommandError::ProgramCheck) => return program_check(next, ccw.count),
        };
        let used = transfer.len().min(count);
        if let Transfer::ToGuest(_) = transfer {
            if !skip
                && used > 0
                && mem
                    .write_slice(&data[..used], GuestAddress(u64::from(ccw.cda)))
                    .is_err()
            {
                return program_check(next, ccw.count);
            }
        }
        // `used <= count`, which is a u16.
        let residual = (count - used) as u16;
        let incorrect_length = used != count && ccw.flags & CCW_FLAG_SLI == 0;
        if ccw.flags & CCW_FLAG_CC == 0 || incorrect_length {
            return Ending {
                completion: Completion {
                    cpa: next,
                    dstat: DEV_STAT_CHANNEL_END | DEV_STAT_DEVICE_END,
                    cstat: if incorrect_length {
                        SCH_STAT_INCORRECT_LENGTH
                    } else {
                        0
                    },
                    count: residual,
                },
                sense: sense_out,
            };
        }
        at = next;
    }
    program_check(at, 0)
}

// Tests may unwrap: a failed unwrap is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    /// Echoes command 0x01 (write) into its state and answers 0x02 (read) with it;
    /// rejects everything else.
    #[derive(Default)]
    struct Echo {
        stored: Vec<u8>,
        commands: Vec<u8>,
    }

    impl CcwDevice for Echo {
        fn sense_id(&self) -> [u8; 8] {
            sense_id(4)
        }
        fn execute(&mut self, ccw: &Ccw1, data: &mut [u8]) -> Result<Transfer, CommandError> {
            self.commands.push(ccw.cmd);
            match ccw.cmd {
                0x01 => {
                    self.stored = data.to_vec();
                    Ok(Transfer::FromGuest(data.len()))
                }
                0x02 => {
                    let n = self.stored.len().min(data.len());
                    data[..n].copy_from_slice(&self.stored[..n]);
                    Ok(Transfer::ToGuest(n))
                }
                _ => Err(CommandError::Reject),
            }
        }
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn orb(cpa: u32) -> Orb {
        Orb {
            intparm: 0,
            key: 0,
            suspend: false,
            format1: true,
            lpm: 0x80,
            cpa,
        }
    }

    fn put(mem: &GuestMemoryMmap, at: u64, ccws: &[[u8; 8]]) {
        for (i, c) in ccws.iter().enumerate() {
            mem.write_slice(c, GuestAddress(at + 8 * i as u64)).unwrap();
        }
    }

    #[test]
    fn chained_write_then_read_with_tic() {
        let mem = mem();
        mem.write_slice(b"hello", GuestAddress(0x3000)).unwrap();
        // 0x1000: write 5 bytes from 0x3000 (chain), TIC to 0x1800.
        // 0x1800: read 8 bytes into 0x3100 with SLI.
        put(
            &mem,
            0x1000,
            &[
                [0x01, CCW_FLAG_CC, 0, 5, 0, 0, 0x30, 0x00],
                [0x08, 0, 0, 0, 0, 0, 0x18, 0x00],
            ],
        );
        put(
            &mem,
            0x1800,
            &[[0x02, CCW_FLAG_SLI, 0, 8, 0, 0, 0x31, 0x00]],
        );
        let mut echo = Echo::default();
        let end = run(&mem, &orb(0x1000), &[0; SENSE_SIZE], &mut echo);
        assert_eq!(
            end.completion,
            Completion {
                cpa: 0x1808,
                dstat: 0x0c,
                cstat: 0,
                count: 3
            }
        );
        let mut got = [0u8; 5];
        mem.read_slice(&mut got, GuestAddress(0x3100)).unwrap();
        assert_eq!(&got, b"hello");
        assert_eq!(echo.commands, vec![0x01, 0x02]);
    }

    #[test]
    fn incorrect_length_without_sli_stops_the_chain() {
        let mem = mem();
        put(
            &mem,
            0x1000,
            &[
                [0x02, CCW_FLAG_CC, 0, 8, 0, 0, 0x31, 0x00],
                [0x01, 0, 0, 1, 0, 0, 0x30, 0x00],
            ],
        );
        let mut echo = Echo {
            stored: vec![1, 2],
            ..Echo::default()
        };
        let end = run(&mem, &orb(0x1000), &[0; SENSE_SIZE], &mut echo);
        assert_eq!(end.completion.cstat, SCH_STAT_INCORRECT_LENGTH);
        assert_eq!((end.completion.cpa, end.completion.count), (0x1008, 6));
        assert_eq!(echo.commands, vec![0x02], "chaining suppressed");
    }

    #[test]
    fn command_reject_then_basic_sense() {
        let mem = mem();
        put(&mem, 0x1000, &[[0x07, 0, 0, 0, 0, 0, 0, 0]]);
        let mut echo = Echo::default();
        let end = run(&mem, &orb(0x1000), &[0; SENSE_SIZE], &mut echo);
        assert_eq!(end.completion.dstat, 0x0e, "CE, DE, unit check");
        let sense = end.sense.unwrap();
        assert_eq!(sense[0], 0x80, "command reject");
        // BASIC SENSE (0x04) of 32 bytes hands the sense over and clears it.
        put(&mem, 0x1100, &[[0x04, 0, 0, 32, 0, 0, 0x32, 0x00]]);
        let end = run(&mem, &orb(0x1100), &sense, &mut echo);
        assert_eq!(end.completion.dstat, 0x0c);
        assert_eq!(end.sense, Some([0; SENSE_SIZE]));
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x3200)).unwrap(), 0x80);
    }

    #[test]
    fn sense_id_and_noop() {
        let mem = mem();
        put(
            &mem,
            0x1000,
            &[
                [0x03, CCW_FLAG_CC | CCW_FLAG_SLI, 0, 0, 0, 0, 0, 0],
                [0xe4, CCW_FLAG_SLI, 0, 0xff, 0, 0, 0x30, 0x00],
            ],
        );
        let end = run(&mem, &orb(0x1000), &[0; SENSE_SIZE], &mut Echo::default());
        assert_eq!(end.completion.count, 0xff - 8);
        let mut id = [0u8; 8];
        mem.read_slice(&mut id, GuestAddress(0x3000)).unwrap();
        assert_eq!(id, [0xff, 0x38, 0x32, 4, 0, 0, 0, 0]);
    }

    #[test]
    fn malformed_programs_are_program_checks() {
        let mem = mem();
        let mut echo = Echo::default();
        let check = |mem: &GuestMemoryMmap, cpa: u32, echo: &mut Echo| {
            run(mem, &orb(cpa), &[0; SENSE_SIZE], echo).completion.cstat
        };
        // Misaligned channel program.
        assert_eq!(check(&mem, 0x1004, &mut echo), SCH_STAT_PROGRAM_CHECK);
        // Outside guest memory.
        assert_eq!(check(&mem, 0x10000, &mut echo), SCH_STAT_PROGRAM_CHECK);
        // Command code with low four bits zero.
        put(&mem, 0x1000, &[[0x10, 0, 0, 0, 0, 0, 0, 0]]);
        assert_eq!(check(&mem, 0x1000, &mut echo), SCH_STAT_PROGRAM_CHECK);
        // Indirect data addressing, data chaining.
        put(&mem, 0x1000, &[[0x01, CCW_FLAG_IDA, 0, 1, 0, 0, 0x30, 0]]);
        assert_eq!(check(&mem, 0x1000, &mut echo), SCH_STAT_PROGRAM_CHECK);
        put(&mem, 0x1000, &[[0x01, CCW_FLAG_DC, 0, 1, 0, 0, 0x30, 0]]);
        assert_eq!(check(&mem, 0x1000, &mut echo), SCH_STAT_PROGRAM_CHECK);
        // Data area past the end of memory.
        put(&mem, 0x1000, &[[0x01, 0, 0, 0x10, 0, 0, 0xff, 0xf8]]);
        assert_eq!(check(&mem, 0x1000, &mut echo), SCH_STAT_PROGRAM_CHECK);
        // TIC to a TIC.
        put(
            &mem,
            0x1000,
            &[
                [0x08, 0, 0, 0, 0, 0, 0x10, 0x08],
                [0x08, 0, 0, 0, 0, 0, 0x10, 0x00],
            ],
        );
        assert_eq!(check(&mem, 0x1000, &mut echo), SCH_STAT_PROGRAM_CHECK);
        // An endless loop of chained NOOPs and a TIC back ends after MAX_CCWS.
        put(
            &mem,
            0x1000,
            &[
                [0x03, CCW_FLAG_CC, 0, 0, 0, 0, 0, 0],
                [0x08, 0, 0, 0, 0, 0, 0x10, 0x00],
            ],
        );
        assert_eq!(check(&mem, 0x1000, &mut echo), SCH_STAT_PROGRAM_CHECK);
        assert!(echo.commands.is_empty(), "no device command ran");
    }

    #[test]
    fn format0_programs_run() {
        let mem = mem();
        // Format 0: cmd, 24-bit address, flags, 0, count.
        mem.write_slice(
            &[0x02, 0x00, 0x30, 0x00, 0x20, 0, 0, 4],
            GuestAddress(0x1000),
        )
        .unwrap();
        let mut echo = Echo {
            stored: vec![9, 8, 7, 6],
            ..Echo::default()
        };
        let mut o = orb(0x1000);
        o.format1 = false;
        let end = run(&mem, &o, &[0; SENSE_SIZE], &mut echo);
        assert_eq!(end.completion.dstat, 0x0c);
        assert_eq!(
            mem.read_obj::<[u8; 4]>(GuestAddress(0x3000)).unwrap(),
            [9, 8, 7, 6]
        );
    }
}

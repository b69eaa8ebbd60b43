//! ACPI fixed hardware in I/O space, as the FADT describes it (offsets from the PM base):
//!
//! | offset | register | |
//! | --- | --- | --- |
//! | 0x0 | PM1a_STS (16) | write 1 to clear |
//! | 0x2 | PM1a_EN (16) | |
//! | 0x4 | PM1a_CNT (16) | SCI_EN reads 1; SLP_TYP=`s5_type` with SLP_EN → poweroff |
//! | 0x8 | RESET_REG (8) | `reset_value` → reset |
//! | 0xc | GPE0_STS (16) | write 1 to clear; bit 0 = power button |
//! | 0xe | GPE0_EN (16) | |
//!
//! The SCI is a level interrupt: it is asserted while any enabled status bit is set.

use std::io;

use vm_superio::Trigger;

use super::EventFdTrigger;
use crate::bus::BusDevice;

/// Length of the register block.
pub const ACPI_PM_LEN: u64 = 0x10;

const PM1_STS: u64 = 0x0;
const PM1_EN: u64 = 0x2;
const PM1_CNT: u64 = 0x4;
const RESET: u64 = 0x8;
const GPE0_STS: u64 = 0xc;
const GPE0_EN: u64 = 0xe;

const SCI_EN: u16 = 1 << 0;
const SLP_EN: u16 = 1 << 13;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0x7;
/// GPE0 bit of the power button.
pub const GPE_POWER_BUTTON: u16 = 1 << 0;

/// A level-triggered interrupt line (the SCI).
pub trait IrqLevel: Send {
    /// Drives the line high (asserted) or low.
    fn set_level(&self, high: bool) -> io::Result<()>;
}

/// The ACPI PM/GPE/reset register block.
pub struct AcpiPm<L: IrqLevel> {
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    gpe0_sts: u16,
    gpe0_en: u16,
    sci: L,
    sci_high: bool,
    s5_type: u8,
    reset_value: u8,
    shutdown: EventFdTrigger,
    reset: EventFdTrigger,
}

impl<L: IrqLevel> AcpiPm<L> {
    /// A block that asserts `sci`, signals `shutdown` on an S5 sleep request of type
    /// `s5_type`, and `reset` when `reset_value` is written to the reset register.
    pub fn new(
        sci: L,
        s5_type: u8,
        reset_value: u8,
        shutdown: EventFdTrigger,
        reset: EventFdTrigger,
    ) -> Self {
        Self {
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: SCI_EN,
            gpe0_sts: 0,
            gpe0_en: 0,
            sci,
            sci_high: false,
            s5_type,
            reset_value,
            shutdown,
            reset,
        }
    }

    /// Presses the power button: sets its GPE status bit and raises the SCI if the
    /// guest enabled it. Returns whether the guest had enabled it.
    pub fn press_power_button(&mut self) -> io::Result<bool> {
        self.gpe0_sts |= GPE_POWER_BUTTON;
        self.update_sci()?;
        Ok(self.gpe0_en & GPE_POWER_BUTTON != 0)
    }

    fn update_sci(&mut self) -> io::Result<()> {
        let high = (self.pm1_sts & self.pm1_en) != 0 || (self.gpe0_sts & self.gpe0_en) != 0;
        if high != self.sci_high {
            self.sci.set_level(high)?;
            self.sci_high = high;
        }
        Ok(())
    }

    fn read_byte(&self, offset: u64) -> u8 {
        let word = |w: u16, hi: bool| if hi { (w >> 8) as u8 } else { w as u8 };
        match offset {
            o if o & !1 == PM1_STS => word(self.pm1_sts, o & 1 == 1),
            o if o & !1 == PM1_EN => word(self.pm1_en, o & 1 == 1),
            o if o & !1 == PM1_CNT => word(self.pm1_cnt | SCI_EN, o & 1 == 1),
            o if o & !1 == GPE0_STS => word(self.gpe0_sts, o & 1 == 1),
            o if o & !1 == GPE0_EN => word(self.gpe0_en, o & 1 == 1),
            _ => 0,
        }
    }

    fn write_byte(&mut self, offset: u64, v: u8) {
        let shift = if offset & 1 == 1 { 8 } else { 0 };
        let bits = u16::from(v) << shift;
        let keep = !(0xffu16 << shift);
        match offset & !1 {
            PM1_STS => self.pm1_sts &= !bits,
            PM1_EN => self.pm1_en = (self.pm1_en & keep) | bits,
            PM1_CNT => {
                let cnt = (self.pm1_cnt & keep) | bits;
                if cnt & SLP_EN != 0 {
                    let typ = (cnt >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
                    if typ == u16::from(self.s5_type) {
                        // Failing to signal means the VMM is already stopping.
                        let _ = self.shutdown.trigger();
                    }
                }
                // SLP_EN is write-only.
                self.pm1_cnt = (cnt & !SLP_EN) | SCI_EN;
            }
            GPE0_STS => self.gpe0_sts &= !bits,
            GPE0_EN => self.gpe0_en = (self.gpe0_en & keep) | bits,
            _ if offset == RESET && v == self.reset_value => {
                let _ = self.reset.trigger();
            }
            _ => {}
        }
    }
}

impl<L: IrqLevel> BusDevice for AcpiPm<L> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_byte(offset + i as u64);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            self.write_byte(offset + i as u64, *b);
        }
        // An SCI that cannot be raised leaves the guest without the event; nothing else
        // to do from a vCPU thread.
        let _ = self.update_sci();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[derive(Clone, Default)]
    struct Line(Arc<Mutex<Vec<bool>>>);
    impl IrqLevel for Line {
        fn set_level(&self, high: bool) -> io::Result<()> {
            self.0.lock().expect("lock").push(high);
            Ok(())
        }
    }

    fn trig() -> (EventFdTrigger, EventFdTrigger) {
        let t = EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
        let c = t.try_clone().expect("clone");
        (t, c)
    }

    #[test]
    #[cfg_attr(
        target_arch = "s390x",
        ignore = "qemu-user 7.2 drops eventfd byte-swapping on fcntl(F_DUPFD_CLOEXEC) clones; run with --include-ignored on real s390x"
    )]
    fn s5_sleep_powers_off() {
        let (sd, sd_seen) = trig();
        let (rs, rs_seen) = trig();
        let mut pm = AcpiPm::new(Line::default(), 5, 1, sd, rs);
        let mut cnt = [0u8; 2];
        pm.read(PM1_CNT, &mut cnt);
        assert_eq!(u16::from_le_bytes(cnt) & SCI_EN, SCI_EN, "ACPI mode on");
        // S3 type: not ours, nothing happens.
        pm.write(PM1_CNT, &((3 << 10) | SLP_EN).to_le_bytes());
        assert!(sd_seen.event_fd().read().is_err());
        pm.write(PM1_CNT, &((5 << 10) | SLP_EN | SCI_EN).to_le_bytes());
        assert_eq!(sd_seen.event_fd().read().expect("shutdown"), 1);
        pm.read(PM1_CNT, &mut cnt);
        assert_eq!(u16::from_le_bytes(cnt) & SLP_EN, 0, "SLP_EN reads 0");
        assert!(rs_seen.event_fd().read().is_err());
    }

    #[test]
    #[cfg_attr(
        target_arch = "s390x",
        ignore = "qemu-user 7.2 drops eventfd byte-swapping on fcntl(F_DUPFD_CLOEXEC) clones; run with --include-ignored on real s390x"
    )]
    fn reset_register() {
        let (sd, _sd_seen) = trig();
        let (rs, rs_seen) = trig();
        let mut pm = AcpiPm::new(Line::default(), 5, 1, sd, rs);
        pm.write(RESET, &[2]);
        assert!(rs_seen.event_fd().read().is_err());
        pm.write(RESET, &[1]);
        assert_eq!(rs_seen.event_fd().read().expect("reset"), 1);
    }

    #[test]
    fn power_button_raises_sci_until_cleared() {
        let (sd, _a) = trig();
        let (rs, _b) = trig();
        let line = Line::default();
        let mut pm = AcpiPm::new(line.clone(), 5, 1, sd, rs);
        assert!(!pm.press_power_button().expect("press"), "not enabled yet");
        assert!(line.0.lock().expect("lock").is_empty());
        pm.write(GPE0_EN, &GPE_POWER_BUTTON.to_le_bytes());
        assert_eq!(*line.0.lock().expect("lock"), vec![true]);
        let mut sts = [0u8; 2];
        pm.read(GPE0_STS, &mut sts);
        assert_eq!(u16::from_le_bytes(sts), GPE_POWER_BUTTON);
        pm.write(GPE0_STS, &GPE_POWER_BUTTON.to_le_bytes());
        assert_eq!(*line.0.lock().expect("lock"), vec![true, false]);
        assert!(pm.press_power_button().expect("press"));
        assert_eq!(*line.0.lock().expect("lock"), vec![true, false, true]);
    }
}

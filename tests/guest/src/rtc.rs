//! The CMOS real-time clock (ports 0x70/0x71), read the way Linux's `mc146818_get_time` does:
//! wait out an update in progress, read twice until two reads agree, decode BCD or binary and
//! 12- or 24-hour mode from status register B.

/// A calendar date and time as the RTC holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl core::fmt::Display for DateTime {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Raw CMOS registers: seconds, minutes, hours, day, month, year, century, status B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raw {
    pub regs: [u8; 6],
    pub century: Option<u8>,
    pub status_b: u8,
}

fn bcd(v: u8) -> u8 {
    (v >> 4) * 10 + (v & 0xf)
}

impl Raw {
    /// Decodes the registers; `None` if a field is out of range.
    pub fn decode(&self) -> Option<DateTime> {
        let binary = self.status_b & 0x04 != 0;
        let h24 = self.status_b & 0x02 != 0;
        let conv = |v: u8| if binary { v } else { bcd(v) };
        let [sec, min, hour_raw, day, month, year] = self.regs;
        let pm = !h24 && hour_raw & 0x80 != 0;
        let mut hour = conv(hour_raw & 0x7f);
        if !h24 {
            hour %= 12;
            if pm {
                hour += 12;
            }
        }
        let year = u16::from(conv(year));
        let century = match self.century.map(conv) {
            Some(c @ 19..=99) => u16::from(c),
            _ => 20,
        };
        let dt = DateTime {
            year: century * 100 + year,
            month: conv(month),
            day: conv(day),
            hour,
            minute: conv(min),
            second: conv(sec),
        };
        let valid = (1..=12).contains(&dt.month)
            && (1..=31).contains(&dt.day)
            && dt.hour < 24
            && dt.minute < 60
            && dt.second < 60;
        valid.then_some(dt)
    }
}

#[cfg(not(test))]
fn cmos(reg: u8) -> u8 {
    use x86_64::instructions::port::Port;
    // SAFETY: selecting and reading a CMOS register (NMI stays enabled: bit 7 clear).
    unsafe {
        Port::<u8>::new(0x70).write(reg & 0x7f);
        Port::<u8>::new(0x71).read()
    }
}

/// Reads the clock; `century_reg` is the FADT's CENTURY field (0 = none).
#[cfg(not(test))]
pub fn read(century_reg: u8) -> Option<(Raw, DateTime)> {
    let sample = || {
        // Wait out an update in progress (UIP, status A bit 7), bounded.
        for _ in 0..1_000_000 {
            if cmos(0x0a) & 0x80 == 0 {
                break;
            }
            core::hint::spin_loop();
        }
        Raw {
            regs: [
                cmos(0x00),
                cmos(0x02),
                cmos(0x04),
                cmos(0x07),
                cmos(0x08),
                cmos(0x09),
            ],
            century: (century_reg != 0).then(|| cmos(century_reg)),
            status_b: cmos(0x0b),
        }
    };
    let mut last = sample();
    for _ in 0..10 {
        let next = sample();
        if next == last {
            return last.decode().map(|dt| (last, dt));
        }
        last = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bcd_24h_with_century() {
        let raw = Raw {
            regs: [0x59, 0x30, 0x23, 0x25, 0x11, 0x26],
            century: Some(0x20),
            status_b: 0x02,
        };
        assert_eq!(
            std::format!("{}", raw.decode().expect("valid")),
            "2026-11-25T23:30:59"
        );
    }

    #[test]
    fn decodes_binary_12h_pm() {
        let raw = Raw {
            regs: [5, 4, 0x80 | 12, 1, 2, 99],
            century: None,
            status_b: 0x04,
        };
        let dt = raw.decode().expect("valid");
        assert_eq!((dt.year, dt.hour), (2099, 12));
        let am = Raw {
            regs: [5, 4, 12, 1, 2, 99],
            century: None,
            status_b: 0x04,
        };
        assert_eq!(am.decode().expect("valid").hour, 0);
    }

    #[test]
    fn rejects_garbage() {
        let raw = Raw {
            regs: [0xff; 6],
            century: None,
            status_b: 0x06,
        };
        assert_eq!(raw.decode(), None);
    }
}

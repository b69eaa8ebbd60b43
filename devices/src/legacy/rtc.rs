//! CMOS real-time clock (MC146818) at ports 0x70 (index, bit 7 = NMI mask) and 0x71
//! (data). Time registers report the host's wall-clock time in UTC, BCD, 24-hour mode,
//! so the guest's clock is right at boot. A guest that sets the clock (`hwclock
//! --systohc`) moves it as a real RTC would: the time it wrote goes on ticking with the
//! host's clock (kept as an offset, as QEMU does), while the register B SET bit is on the
//! writes are latched and take effect together when it clears. Other CMOS bytes are plain
//! storage.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;

/// Ports 0x70..=0x71.
pub const RTC_PORT_LEN: u64 = 2;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
/// Century register (named in the FADT).
pub const REG_CENTURY: u8 = 0x32;

/// Seconds since the Unix epoch.
pub type Clock = fn() -> i64;

fn host_clock() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    /// Full year.
    pub year: i64,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
    /// 0..=59.
    pub minute: u32,
    /// 0..=59.
    pub second: u32,
    /// 1 = Sunday .. 7 = Saturday, as the RTC counts.
    pub weekday: u32,
}

/// Converts Unix seconds to UTC calendar time (H. Hinnant's `civil_from_days`).
///
/// ```
/// use devices::legacy::rtc::civil_from_unix;
/// let t = civil_from_unix(951_782_400); // 2000-02-29 00:00:00, a Tuesday
/// assert_eq!((t.year, t.month, t.day, t.weekday), (2000, 2, 29, 3));
/// ```
pub fn civil_from_unix(secs: i64) -> CivilTime {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    CivilTime {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: ((rem % 3600) / 60) as u32,
        second: (rem % 60) as u32,
        // 1970-01-01 was a Thursday (5 in 1 = Sunday numbering).
        weekday: ((days + 4).rem_euclid(7) + 1) as u32,
    }
}

/// Days since the Unix epoch of a UTC date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl CivilTime {
    /// Seconds since the Unix epoch, if every field is in its range.
    ///
    /// ```
    /// use devices::legacy::rtc::civil_from_unix;
    /// assert_eq!(civil_from_unix(951_782_400).to_unix(), Some(951_782_400));
    /// ```
    pub fn to_unix(&self) -> Option<i64> {
        let valid = (1..=12).contains(&self.month)
            && (1..=31).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60;
        valid.then(|| {
            days_from_civil(self.year, self.month, self.day) * 86_400
                + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
        })
    }
}

fn bcd(v: u32) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

fn from_bcd(v: u8) -> u32 {
    u32::from(v >> 4) * 10 + u32::from(v & 0x0f)
}

/// Register B: updates halted while the guest sets the time.
const REG_B_SET: u8 = 0x80;

/// The CMOS RTC.
pub struct Rtc {
    index: u8,
    cmos: [u8; 128],
    clock: Clock,
    /// Guest time minus host time, in seconds: moved by the guest setting the clock.
    offset: i64,
    /// While the SET bit is on: the time being written, committed when it clears.
    staged: Option<CivilTime>,
}

impl Default for Rtc {
    fn default() -> Self {
        Self::new()
    }
}

impl Rtc {
    /// An RTC on the host's clock.
    pub fn new() -> Self {
        Self::with_clock(host_clock)
    }

    /// An RTC on `clock` (for tests).
    pub fn with_clock(clock: Clock) -> Self {
        let mut cmos = [0u8; 128];
        cmos[REG_A as usize] = 0x26; // 32.768 kHz time base, 1024 Hz periodic rate
        cmos[REG_B as usize] = 0x02; // 24-hour, BCD, no interrupts
        Self {
            index: 0,
            cmos,
            clock,
            offset: 0,
            staged: None,
        }
    }

    /// The guest's time: the one being set while SET is on, else the running clock.
    fn now(&self) -> CivilTime {
        self.staged
            .unwrap_or_else(|| civil_from_unix((self.clock)().saturating_add(self.offset)))
    }

    /// Makes `t` the guest's current time; an impossible date (month 13, ...) is ignored.
    fn set_time(&mut self, t: CivilTime) {
        if let Some(secs) = t.to_unix() {
            self.offset = secs - (self.clock)();
        }
    }

    fn read_reg(&self, reg: u8) -> u8 {
        let t = self.now();
        match reg {
            REG_SECONDS => bcd(t.second),
            REG_MINUTES => bcd(t.minute),
            REG_HOURS => bcd(t.hour),
            REG_WEEKDAY => bcd(t.weekday),
            REG_DAY => bcd(t.day),
            REG_MONTH => bcd(t.month),
            REG_YEAR => bcd(t.year.rem_euclid(100) as u32),
            REG_CENTURY => bcd(t.year.div_euclid(100).rem_euclid(100) as u32),
            // No update in progress: the time is computed per read.
            REG_A => self.cmos[REG_A as usize] & 0x7f,
            REG_C => 0,
            REG_D => 0x80, // valid RAM and time (battery good)
            r => self.cmos[usize::from(r & 0x7f)],
        }
    }

    fn write_reg(&mut self, reg: u8, v: u8) {
        let mut t = self.now();
        match reg {
            REG_SECONDS => t.second = from_bcd(v),
            REG_MINUTES => t.minute = from_bcd(v),
            REG_HOURS => t.hour = from_bcd(v),
            REG_DAY => t.day = from_bcd(v),
            REG_MONTH => t.month = from_bcd(v),
            REG_YEAR => t.year = t.year.div_euclid(100) * 100 + i64::from(from_bcd(v) % 100),
            REG_CENTURY => t.year = i64::from(from_bcd(v)) * 100 + t.year.rem_euclid(100),
            // The weekday follows from the date; C and D are read-only.
            REG_WEEKDAY | REG_C | REG_D => return,
            REG_B => {
                // Keep 24-hour BCD mode: the guest reads the format it asked for only if
                // we honoured it, and Linux accepts what is reported.
                self.cmos[REG_B as usize] = (v & !0x06) | 0x02;
                match (self.staged, v & REG_B_SET != 0) {
                    (None, true) => self.staged = Some(t),
                    (Some(staged), false) => {
                        self.staged = None;
                        self.set_time(staged);
                    }
                    _ => {}
                }
                return;
            }
            r => {
                self.cmos[usize::from(r & 0x7f)] = v;
                return;
            }
        }
        if self.staged.is_some() {
            self.staged = Some(t);
        } else {
            self.set_time(t);
        }
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let [b] = data else {
            data.fill(0xff);
            return;
        };
        *b = match offset {
            0 => self.index,
            1 => self.read_reg(self.index & 0x7f),
            _ => 0xff,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let [v] = data else { return };
        match offset {
            0 => self.index = *v,
            1 => self.write_reg(self.index & 0x7f, *v),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    fn read(rtc: &mut Rtc, reg: u8) -> u8 {
        rtc.write(0, &[reg | 0x80]);
        let mut b = [0u8];
        rtc.read(1, &mut b);
        b[0]
    }

    #[test]
    fn reports_the_clock_in_bcd() {
        // 2026-11-25 21:34:04 UTC, a Wednesday.
        let mut rtc = Rtc::with_clock(|| 1_795_642_444);
        assert_eq!(read(&mut rtc, REG_SECONDS), 0x04);
        assert_eq!(read(&mut rtc, REG_MINUTES), 0x34);
        assert_eq!(read(&mut rtc, REG_HOURS), 0x21);
        assert_eq!(read(&mut rtc, REG_DAY), 0x25);
        assert_eq!(read(&mut rtc, REG_MONTH), 0x11);
        assert_eq!(read(&mut rtc, REG_YEAR), 0x26);
        assert_eq!(read(&mut rtc, REG_CENTURY), 0x20);
        assert_eq!(read(&mut rtc, REG_WEEKDAY), 0x04);
        assert_eq!(read(&mut rtc, REG_A) & 0x80, 0, "no update in progress");
        assert_eq!(read(&mut rtc, REG_B), 0x02);
        assert_eq!(read(&mut rtc, REG_D), 0x80);
    }

    fn write(rtc: &mut Rtc, reg: u8, v: u8) {
        rtc.write(0, &[reg]);
        rtc.write(1, &[v]);
    }

    #[test]
    fn cmos_storage_and_read_only_registers() {
        let mut rtc = Rtc::with_clock(|| 0);
        write(&mut rtc, 0x40, 0xab);
        assert_eq!(read(&mut rtc, 0x40), 0xab);
        write(&mut rtc, REG_D, 0);
        write(&mut rtc, REG_WEEKDAY, 0x01);
        assert_eq!(read(&mut rtc, REG_D), 0x80);
        assert_eq!(read(&mut rtc, REG_WEEKDAY), 0x05);
        // Binary or 12-hour mode requests are not honoured.
        write(&mut rtc, REG_B, 0x06);
        assert_eq!(read(&mut rtc, REG_B), 0x02);
    }

    static HOST: AtomicI64 = AtomicI64::new(1_795_642_444);

    fn host() -> i64 {
        HOST.load(Ordering::SeqCst)
    }

    #[test]
    fn the_guest_sets_the_clock_and_it_keeps_ticking() {
        let mut rtc = Rtc::with_clock(host);
        // A single write outside SET takes effect at once: 21:34:04 -> 21:34:59.
        write(&mut rtc, REG_SECONDS, 0x59);
        assert_eq!(read(&mut rtc, REG_SECONDS), 0x59);
        // Linux's mc146818_set_time: SET, all fields, SET off; 1999-12-31 23:59:58.
        write(&mut rtc, REG_B, 0x82);
        for (reg, v) in [
            (REG_SECONDS, 0x58),
            (REG_MINUTES, 0x59),
            (REG_HOURS, 0x23),
            (REG_DAY, 0x31),
            (REG_MONTH, 0x12),
            (REG_YEAR, 0x99),
            (REG_CENTURY, 0x19),
        ] {
            write(&mut rtc, reg, v);
            // Latched while SET is on.
            assert_eq!(read(&mut rtc, reg), v);
        }
        HOST.fetch_add(5, Ordering::SeqCst);
        assert_eq!(read(&mut rtc, REG_SECONDS), 0x58, "halted while SET is on");
        write(&mut rtc, REG_B, 0x02);
        HOST.fetch_add(3, Ordering::SeqCst);
        // Three host seconds later: 2000-01-01 00:00:01, a Saturday.
        assert_eq!(read(&mut rtc, REG_SECONDS), 0x01);
        assert_eq!(read(&mut rtc, REG_MINUTES), 0x00);
        assert_eq!(read(&mut rtc, REG_DAY), 0x01);
        assert_eq!(read(&mut rtc, REG_MONTH), 0x01);
        assert_eq!(read(&mut rtc, REG_YEAR), 0x00);
        assert_eq!(read(&mut rtc, REG_CENTURY), 0x20);
        assert_eq!(read(&mut rtc, REG_WEEKDAY), 0x07);
        // An impossible date is ignored.
        write(&mut rtc, REG_MONTH, 0x13);
        assert_eq!(read(&mut rtc, REG_MONTH), 0x01);
    }

    #[test]
    fn unix_round_trip() {
        for secs in [0, 951_782_400, 1_795_642_444, 4_102_444_799, -86_400] {
            assert_eq!(civil_from_unix(secs).to_unix(), Some(secs));
        }
    }

    #[test]
    fn civil_time_edges() {
        assert_eq!(
            civil_from_unix(0),
            CivilTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                weekday: 5
            }
        );
        let t = civil_from_unix(4_102_444_799); // 2099-12-31 23:59:59
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2099, 12, 31, 23, 59, 59)
        );
    }
}

//! Formatting of the date RTAS `get-time-of-day` returns, checked for range.

/// `YYYY-MM-DDTHH:MM:SS` of the fields, or `None` when any is out of range.
pub fn iso8601(year: u32, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<[u8; 19]> {
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    let mut out = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, digits: usize, mut v: u32| {
        for i in (0..digits).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, hour);
    put(14, 2, min);
    put(17, 2, sec);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_rejects() {
        assert_eq!(
            &iso8601(2026, 11, 26, 4, 5, 9).expect("valid"),
            b"2026-11-26T04:05:09"
        );
        assert!(iso8601(2026, 13, 1, 0, 0, 0).is_none());
        assert!(iso8601(1969, 1, 1, 0, 0, 0).is_none());
        assert!(iso8601(2026, 1, 0, 0, 0, 0).is_none());
    }
}

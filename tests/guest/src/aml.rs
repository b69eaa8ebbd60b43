//! Finds `Name (_S5, Package () { SLP_TYPa, SLP_TYPb, ... })` in AML, the one object the
//! guest needs from the DSDT to power off.
//!
//! A full AML interpreter (the `aml` crate, or `acpi` 6's) needs a nightly compiler, so this
//! matches the byte pattern ACPICA and every table generator emit for a static `_S5_`:
//! `NameOp (0x08) [RootChar] "_S5_" PackageOp (0x12) PkgLength NumElements` followed by
//! integer data objects (`ZeroOp`, `OneOp`, `ByteConst`, `WordConst`, `DWordConst`).
//!
//! [`gpe_methods`] lists the general-purpose events that have a handler method (`_Exx` or
//! `_Lxx`), the GPEs an OS enables: the VMM's power button arrives through one of them.

/// The `SLP_TYPa`/`SLP_TYPb` values of `\_S5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SleepType {
    pub a: u8,
    pub b: u8,
}

/// Reads one integer data object; returns `(value, bytes used)`.
fn integer(aml: &[u8]) -> Option<(u64, usize)> {
    let le = |n: usize| -> Option<u64> {
        let bytes = aml.get(1..1 + n)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
        )
    };
    match *aml.first()? {
        0x00 => Some((0, 1)),
        0x01 => Some((1, 1)),
        0xff => Some((u64::MAX, 1)),
        0x0a => Some((le(1)?, 2)),
        0x0b => Some((le(2)?, 3)),
        0x0c => Some((le(4)?, 5)),
        0x0e => Some((le(8)?, 9)),
        _ => None,
    }
}

/// Bytes used by a PkgLength encoding starting with `lead`.
fn pkg_length_size(lead: u8) -> usize {
    1 + usize::from(lead >> 6)
}

/// Scans an AML byte stream (a DSDT or SSDT body) for a static `_S5_` package.
pub fn find_s5(aml: &[u8]) -> Option<SleepType> {
    let mut i = 0;
    while let Some(pos) = aml.get(i..)?.windows(4).position(|w| w == b"_S5_") {
        let at = i + pos;
        i = at + 1;
        let name_op = match at.checked_sub(1).map(|p| aml[p]) {
            Some(b'\\') => at.checked_sub(2).map(|p| aml[p]),
            other => other,
        };
        if name_op != Some(0x08) || aml.get(at + 4) != Some(&0x12) {
            continue;
        }
        let Some(&lead) = aml.get(at + 5) else {
            continue;
        };
        let mut p = at + 5 + pkg_length_size(lead);
        let Some(&count) = aml.get(p) else { continue };
        p += 1;
        let Some((a, used)) = integer(aml.get(p..)?) else {
            continue;
        };
        p += used;
        let b = if count >= 2 {
            integer(aml.get(p..)?).map_or(0, |(v, _)| v)
        } else {
            0
        };
        return Some(SleepType {
            a: (a & 0x7) as u8,
            b: (b & 0x7) as u8,
        });
    }
    None
}

/// A GPE handler method found in AML.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpeMethod {
    /// GPE number (the `xx` of `_Exx`/`_Lxx`).
    pub gpe: u8,
    /// `_Lxx` (level) rather than `_Exx` (edge).
    pub level: bool,
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The last NameSeg of the NameString at the start of `aml`.
fn last_name_seg(aml: &[u8]) -> Option<&[u8]> {
    let mut p = 0;
    while matches!(aml.get(p), Some(b'\\') | Some(b'^')) {
        p += 1;
    }
    let segs = match *aml.get(p)? {
        0x2e => {
            p += 1;
            2
        }
        0x2f => {
            p += 2;
            usize::from(*aml.get(p - 1)?)
        }
        _ => 1,
    };
    let last = p + 4 * segs.checked_sub(1)?;
    aml.get(last..last + 4)
}

/// Every `Method (_Exx|_Lxx, …)` in an AML byte stream, in order.
pub fn gpe_methods(aml: &[u8]) -> impl Iterator<Item = GpeMethod> + '_ {
    (0..aml.len()).filter_map(move |i| {
        if aml[i] != 0x14 {
            return None;
        }
        let lead = *aml.get(i + 1)?;
        let name = last_name_seg(aml.get(i + 1 + pkg_length_size(lead)..)?)?;
        let level = match name.get(..2)? {
            b"_E" => false,
            b"_L" => true,
            _ => return None,
        };
        let gpe = hex_digit(name[2])? * 16 + hex_digit(name[3])?;
        Some(GpeMethod { gpe, level })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_qemu_style_s5() {
        // Name (_S5, Package (0x04) { Zero, Zero, Zero, Zero })
        let aml = [
            0x10, 0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(find_s5(&aml[1..]), Some(SleepType { a: 0, b: 0 }));
    }

    #[test]
    fn finds_rooted_name_with_byte_consts() {
        // Name (\_S5, Package () { 0x05, 0x05 }), behind an unrelated "_S5_" string.
        let mut aml = std::vec::Vec::new();
        aml.extend_from_slice(&[0x0d, b'_', b'S', b'5', b'_', 0x00]);
        aml.extend_from_slice(&[
            0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x07, 0x02, 0x0a, 0x05, 0x0a, 0x05,
        ]);
        assert_eq!(find_s5(&aml), Some(SleepType { a: 5, b: 5 }));
    }

    #[test]
    fn single_element_package_and_long_pkglength() {
        let aml = [
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x40, 0x00, 0x01, 0x0a, 0x07,
        ];
        assert_eq!(find_s5(&aml), Some(SleepType { a: 7, b: 0 }));
    }

    #[test]
    fn truncated_or_missing() {
        assert_eq!(find_s5(&[0x08, b'_', b'S', b'5', b'_', 0x12]), None);
        assert_eq!(find_s5(b"no sleep states here"), None);
    }

    #[test]
    fn finds_gpe_methods() {
        // Scope (_GPE) { Method (_E00) { Notify (\_SB.PWRB, 0x80) } Method (\_GPE._L1A) {} }
        let aml = [
            0x10, 0x0f, b'_', b'G', b'P', b'E', 0x14, 0x09, b'_', b'E', b'0', b'0', 0x00, 0x86,
            0x5c, 0x00, 0x0a, 0x80, 0x14, 0x0c, b'\\', 0x2e, b'_', b'G', b'P', b'E', b'_', b'L',
            b'1', b'A', 0x00, 0x14, 0x06, b'F', b'O', b'O', b'_', 0x00,
        ];
        let found: std::vec::Vec<_> = gpe_methods(&aml).collect();
        assert_eq!(
            found,
            [
                GpeMethod {
                    gpe: 0,
                    level: false
                },
                GpeMethod {
                    gpe: 0x1a,
                    level: true
                }
            ]
        );
    }
}

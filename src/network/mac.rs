//! MAC addresses of VMI interfaces: `interfaces[].macAddress` when the spec gives one,
//! otherwise one derived deterministically from the VMI's namespace, name and interface
//! name, so a VM restarted (a new VMI of the same name) keeps its MACs and with them its
//! DHCP leases, without any state to lose.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A malformed MAC address.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("Invalid MAC address {0:?}")]
pub struct MacError(pub String);

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The MAC for interface `iface` of VMI `namespace/name`: FNV-1a-64 of the three
    /// names, with the first octet made locally administered and unicast (`x2`, `x6`,
    /// `xa`, `xe`), the range KubeVirt's kubemacpool also allocates from.
    pub fn generated(namespace: &str, name: &str, iface: &str) -> Mac {
        let hash = fnv1a64(&[namespace, name, iface]);
        let b = hash.to_be_bytes();
        Mac([(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]])
    }

    /// The six octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// True for a multicast (or broadcast) address, which a NIC must not have.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

/// FNV-1a over the parts, each followed by a NUL so `("ab","c")` and `("a","bc")` differ.
pub(crate) fn fnv1a64(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.as_bytes().iter().chain(std::iter::once(&0u8)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

impl FromStr for Mac {
    type Err = MacError;

    /// `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`, either case.
    fn from_str(s: &str) -> Result<Self, MacError> {
        let err = || MacError(s.to_string());
        let mut mac = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut mac {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let m: Mac = "DE:AD:00:00:be:af".parse().expect("valid");
        assert_eq!(m.0, [0xde, 0xad, 0, 0, 0xbe, 0xaf]);
        assert_eq!(m.to_string(), "de:ad:00:00:be:af");
        assert_eq!("de-ad-00-00-be-af".parse::<Mac>(), Ok(m));
        for bad in [
            "",
            "de:ad",
            "de:ad:00:00:be:af:00",
            "dead:00:00:be:af",
            "zz:00:00:00:00:00",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_macs_are_stable_unicast_and_local() {
        let a = Mac::generated("default", "vm1", "default");
        assert_eq!(a, Mac::generated("default", "vm1", "default"));
        assert_ne!(a, Mac::generated("default", "vm1", "net1"));
        assert_ne!(a, Mac::generated("default", "vm2", "default"));
        assert_ne!(
            Mac::generated("ab", "c", "x"),
            Mac::generated("a", "bc", "x")
        );
        for m in [a, Mac::generated("x", "y", "z"), Mac::generated("", "", "")] {
            assert!(!m.is_multicast());
            assert_eq!(m.0[0] & 0x02, 0x02, "locally administered: {m}");
        }
    }
}

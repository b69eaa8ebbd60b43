//! Checksums of imported files as CDI's `checksum` field spells them: `ALGORITHM:HEX` with
//! `sha256`, `sha512` or `md5`, computed over the bytes as downloaded (before unpacking).

use md5::Md5;
use sha2::{Digest, Sha256, Sha512};

/// Errors parsing a checksum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    #[error("Checksum {0:?} is not ALGORITHM:HEX")]
    Syntax(String),
    #[error("Checksum algorithm {0:?} is not supported: use sha256, sha512 or md5")]
    Algorithm(String),
    #[error("Checksum {0:?} has {1} hex digits, {2} expects {3}")]
    Length(String, usize, &'static str, usize),
}

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
    Md5,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
            Self::Md5 => "md5",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
            Self::Md5 => 32,
        }
    }
}

/// An expected checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: Algorithm,
    /// Lower-case hex.
    pub hex: String,
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl std::str::FromStr for Checksum {
    type Err = ChecksumError;

    /// Parses `sha256:…`, `sha512:…` or `md5:…` (case-insensitive).
    ///
    /// ```
    /// let c: monovirt::storage::checksum::Checksum =
    ///     "md5:D41D8CD98F00B204E9800998ECF8427E".parse().unwrap();
    /// assert_eq!(c.to_string(), "md5:d41d8cd98f00b204e9800998ecf8427e");
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| ChecksumError::Syntax(s.to_string()))?;
        let algorithm = match alg.to_ascii_lowercase().as_str() {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            "md5" => Algorithm::Md5,
            other => return Err(ChecksumError::Algorithm(other.to_string())),
        };
        let hex = hex.to_ascii_lowercase();
        if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ChecksumError::Syntax(s.to_string()));
        }
        if hex.len() != algorithm.hex_len() {
            return Err(ChecksumError::Length(
                s.to_string(),
                hex.len(),
                algorithm.name(),
                algorithm.hex_len(),
            ));
        }
        Ok(Self { algorithm, hex })
    }
}

/// A running digest.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
    Md5(Md5),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher")
    }
}

impl Hasher {
    /// A fresh digest of `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Self::Sha256(Sha256::new()),
            Algorithm::Sha512 => Self::Sha512(Sha512::new()),
            Algorithm::Md5 => Self::Md5(Md5::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
            Self::Md5(h) => h.update(data),
        }
    }

    /// The digest as lower-case hex.
    pub fn finish_hex(self) -> String {
        match self {
            Self::Sha256(h) => hex(&h.finalize()),
            Self::Sha512(h) => hex(&h.finalize()),
            Self::Md5(h) => hex(&h.finalize()),
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_known_values() {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"abc");
        assert_eq!(
            h.finish_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut h = Hasher::new(Algorithm::Md5);
        h.update(b"abc");
        assert_eq!(h.finish_hex(), "900150983cd24fb0d6963f7d28e17f72");
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"abc");
        assert!(h.finish_hex().starts_with("ddaf35a193617aba"));
    }

    #[test]
    fn bad_checksums_are_refused() {
        assert!(matches!(
            "sha1:abc".parse::<Checksum>(),
            Err(ChecksumError::Algorithm(_))
        ));
        assert!(matches!(
            "sha256:abc".parse::<Checksum>(),
            Err(ChecksumError::Length(..))
        ));
        assert!(matches!(
            "deadbeef".parse::<Checksum>(),
            Err(ChecksumError::Syntax(_))
        ));
    }
}

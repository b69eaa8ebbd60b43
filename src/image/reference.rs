//! Image references: `[registry/]repository[:tag][@digest]`, normalized the way Docker
//! and containerd do it, so `cirros`, `library/cirros:latest` and
//! `docker.io/library/cirros:latest` all name the same image.

use std::fmt;

/// The registry a reference without one means.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    /// Registry host (and port).
    pub registry: String,
    /// Repository path below the registry.
    pub repository: String,
    /// Tag (absent when only a digest is given).
    pub tag: Option<String>,
    /// `sha256:…` digest.
    pub digest: Option<String>,
}

/// Why a reference is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    /// The reference as given.
    pub reference: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
}

impl Reference {
    /// Parses and normalizes `s`.
    ///
    /// ```
    /// let r = monovirt::image::Reference::parse("kubevirt/cirros-container-disk-demo").unwrap();
    /// assert_eq!(r.to_string(), "docker.io/kubevirt/cirros-container-disk-demo:latest");
    /// ```
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let err = |reason| ReferenceError {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() || s.len() > 4096 {
            return Err(err("empty or too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| err("only sha256 digests are supported"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(err("the digest is not 64 hex digits"));
                }
                (r, Some(d.to_ascii_lowercase()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(err("invalid tag"));
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let registry = if parts.len() > 1
            && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
        {
            parts.remove(0).to_string()
        } else {
            DEFAULT_REGISTRY.to_string()
        };
        if parts.iter().any(|c| !valid_component(c)) {
            return Err(err("invalid repository name"));
        }
        if registry == DEFAULT_REGISTRY && parts.len() == 1 {
            parts.insert(0, "library");
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Self {
            registry,
            repository: parts.join("/"),
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        for (input, want) in [
            ("cirros", "docker.io/library/cirros:latest"),
            ("library/cirros:0.6", "docker.io/library/cirros:0.6"),
            (
                "quay.io/kubevirt/cirros-container-disk-demo",
                "quay.io/kubevirt/cirros-container-disk-demo:latest",
            ),
            ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1"),
            ("localhost/guest", "localhost/guest:latest"),
        ] {
            assert_eq!(
                Reference::parse(input).unwrap().to_string(),
                want,
                "{input}"
            );
        }
        let d = format!("registry.example:443/x@sha256:{}", "A".repeat(64));
        let r = Reference::parse(&d).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest, Some(format!("sha256:{}", "a".repeat(64))));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "UPPER/case",
            "a//b",
            "x:",
            "x@md5:00",
            "x@sha256:12",
            "-x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}

//! Object keys: `/{group}/{resource}/{namespace}/{name}`, the core group spelled `core`,
//! cluster-scoped kinds without the namespace segment.

use api::resource::ResourceDef;

/// The key of one stored object, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    /// API group, `""` for core.
    pub group: String,
    /// The plural resource name.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
}

fn group_segment(group: &str) -> &str {
    if group.is_empty() {
        "core"
    } else {
        group
    }
}

impl Key {
    pub fn new(def: &ResourceDef, namespace: Option<&str>, name: &str) -> Self {
        Self {
            group: def.group.to_string(),
            resource: def.plural.to_string(),
            namespace: if def.namespaced {
                namespace.map(str::to_string)
            } else {
                None
            },
            name: name.to_string(),
        }
    }

    /// The stored form.
    pub fn encode(&self) -> String {
        match &self.namespace {
            Some(ns) => format!(
                "/{}/{}/{}/{}",
                group_segment(&self.group),
                self.resource,
                ns,
                self.name
            ),
            None => format!(
                "/{}/{}/{}",
                group_segment(&self.group),
                self.resource,
                self.name
            ),
        }
    }

    /// Parses a stored key (`None` for anything that is not an object key).
    pub fn decode(key: &str) -> Option<Self> {
        let rest = key.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let group = |g: &str| {
            if g == "core" {
                String::new()
            } else {
                g.to_string()
            }
        };
        match parts.as_slice() {
            [g, r, ns, n] => Some(Self {
                group: group(g),
                resource: r.to_string(),
                namespace: Some(ns.to_string()),
                name: n.to_string(),
            }),
            [g, r, n] => Some(Self {
                group: group(g),
                resource: r.to_string(),
                namespace: None,
                name: n.to_string(),
            }),
            _ => None,
        }
    }
}

/// The key prefix of every object of `def` (in `namespace` when given).
pub(crate) fn prefix(def: &ResourceDef, namespace: Option<&str>) -> String {
    match namespace.filter(|_| def.namespaced) {
        Some(ns) => format!("/{}/{}/{}/", group_segment(def.group), def.plural, ns),
        None => format!("/{}/{}/", group_segment(def.group), def.plural),
    }
}

/// Index keys (never exported or watched).
pub(crate) mod index {
    /// `~uid/{uid}` → object key.
    pub fn uid(uid: &str) -> String {
        format!("~uid/{uid}")
    }
    /// `~owner/{owner uid}/{dependent key}` → empty.
    pub fn owner(owner_uid: &str, dependent: &str) -> String {
        format!("~owner/{owner_uid}{dependent}")
    }
    /// Prefix of the dependents of one owner.
    pub fn owner_prefix(owner_uid: &str) -> String {
        format!("~owner/{owner_uid}/")
    }
    /// Prefix of all owner entries.
    pub const OWNERS: &str = "~owner/";
    /// Splits `~owner/{uid}/…` into the owner uid and the dependent key.
    pub fn split_owner(k: &str) -> Option<(&str, &str)> {
        let rest = k.strip_prefix(OWNERS)?;
        let slash = rest.find('/')?;
        Some((&rest[..slash], &rest[slash..]))
    }
    /// `~gc/{object key}`: an object the collector must finish deleting (foreground,
    /// orphan, or a terminating namespace).
    pub fn gc(key: &str) -> String {
        format!("~gc{key}")
    }
    pub const GC: &str = "~gc/";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for k in [
            "/core/namespaces/default",
            "/kubevirt.io/virtualmachines/default/vm1",
            "/core/persistentvolumeclaims/ns/disk",
        ] {
            assert_eq!(Key::decode(k).expect("parses").encode(), k);
        }
        let k = Key::decode("/core/nodes/n1").expect("parses");
        assert_eq!(k.group, "");
        assert_eq!(k.namespace, None);
        assert!(Key::decode("~uid/x").is_none());
        assert_eq!(
            index::split_owner(&index::owner("u-1", "/core/nodes/n1")),
            Some(("u-1", "/core/nodes/n1"))
        );
    }
}

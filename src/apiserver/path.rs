//! Request paths, parsed the way kube-apiserver routes them:
//! `/api/v1/...` (core) and `/apis/{group}/{version}/...`, then
//! `[namespaces/{ns}/]{plural}[/{name}[/{subresource}]]`.

use api::resource::ResourceDef;

/// What a path under `/api` or `/apis` addresses.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `/api`: the core group's versions.
    CoreVersions,
    /// `/apis`: every named group.
    Groups,
    /// `/apis/{group}`: one group.
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`: the resources of one group-version.
    ResourceList { group: String, version: String },
    /// A collection, an object or an object's subresource.
    Resource(Box<ResourcePath>),
}

/// A resource path resolved to its definition.
#[derive(Debug, Clone)]
pub struct ResourcePath {
    pub def: ResourceDef,
    /// `None` for cluster-scoped kinds and for all-namespace lists of namespaced kinds.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl PartialEq for ResourcePath {
    fn eq(&self, other: &Self) -> bool {
        (self.def.group, self.def.version, self.def.plural)
            == (other.def.group, other.def.version, other.def.plural)
            && self.namespace == other.namespace
            && self.name == other.name
            && self.subresource == other.subresource
    }
}

/// Resolves a request path. `None` means nothing is served there (404).
pub fn resolve(path: &str, resources: &[ResourceDef]) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api"] => return Some(Target::CoreVersions),
        ["apis"] => return Some(Target::Groups),
        ["apis", g] => {
            return resources
                .iter()
                .any(|d| d.group == *g)
                .then(|| Target::Group((*g).to_string()))
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let in_gv: Vec<&ResourceDef> = resources
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if in_gv.is_empty() {
        return None;
    }
    if rest.is_empty() {
        return Some(Target::ResourceList {
            group: group.to_string(),
            version: version.to_string(),
        });
    }
    if rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    let find = |plural: &str, namespaced: bool| {
        in_gv
            .iter()
            .find(|d| d.plural == plural && d.namespaced == namespaced)
            .copied()
    };
    // `namespaces/{ns}/{plural}...` when {plural} is a namespaced resource of this
    // group-version; otherwise the path is cluster-level (including `namespaces/{name}`).
    if let ["namespaces", ns, plural, tail @ ..] = rest {
        if let Some(def) = find(plural, true) {
            return object_path(*def, Some(ns), tail);
        }
    }
    let [plural, tail @ ..] = rest else {
        return None;
    };
    if let Some(def) = find(plural, false) {
        return object_path(*def, None, tail);
    }
    // A namespaced resource addressed without a namespace: only its all-namespace list.
    if let (Some(def), []) = (find(plural, true), tail) {
        return object_path(*def, None, tail);
    }
    None
}

fn object_path(def: ResourceDef, namespace: Option<&str>, tail: &[&str]) -> Option<Target> {
    let (name, subresource) = match tail {
        [] => (None, None),
        [name] => (Some(*name), None),
        [name, sub] => (Some(*name), Some(*sub)),
        _ => return None,
    };
    Some(Target::Resource(Box::new(ResourcePath {
        def,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::testing::{test_resources, NODE, VM};

    fn res(path: &str) -> ResourcePath {
        match resolve(path, &test_resources()) {
            Some(Target::Resource(r)) => *r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn discovery_paths() {
        let rs = test_resources();
        assert_eq!(resolve("/api", &rs), Some(Target::CoreVersions));
        assert_eq!(resolve("/apis", &rs), Some(Target::Groups));
        assert_eq!(
            resolve("/apis/kubevirt.io", &rs),
            Some(Target::Group("kubevirt.io".into()))
        );
        assert_eq!(
            resolve("/apis/kubevirt.io/v1", &rs),
            Some(Target::ResourceList {
                group: "kubevirt.io".into(),
                version: "v1".into()
            })
        );
        assert_eq!(resolve("/apis/kubevirt.io/v2", &rs), None);
        assert_eq!(resolve("/apis/nope.io", &rs), None);
    }

    #[test]
    fn namespaced_paths() {
        let r = res("/apis/kubevirt.io/v1/namespaces/default/virtualmachines/vm1/status");
        assert_eq!(r.def.kind, VM.kind);
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.name.as_deref(), Some("vm1"));
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let all = res("/apis/kubevirt.io/v1/virtualmachines");
        assert_eq!(all.namespace, None);
        assert_eq!(all.name, None);
        assert_eq!(
            resolve(
                "/apis/kubevirt.io/v1/virtualmachines/vm1",
                &test_resources()
            ),
            None
        );
    }

    #[test]
    fn cluster_paths_and_namespace_objects() {
        let n = res("/api/v1/nodes/n1");
        assert_eq!(n.def.kind, NODE.kind);
        assert_eq!(n.name.as_deref(), Some("n1"));
        let ns = res("/api/v1/namespaces/default");
        assert_eq!(ns.def.kind, "Namespace");
        assert_eq!(ns.name.as_deref(), Some("default"));
        let st = res("/api/v1/namespaces/default/status");
        assert_eq!(st.def.kind, "Namespace");
        assert_eq!(st.subresource.as_deref(), Some("status"));
        let ev = res("/api/v1/namespaces/default/events");
        assert_eq!(ev.def.kind, "Event");
        assert_eq!(ev.namespace.as_deref(), Some("default"));
    }
}

//! Discovery documents: `/version`, `/api` and `/apis` (aggregated discovery v2 or legacy
//! `APIVersions` / `APIGroupList`), `/apis/{group}` and the per-group-version
//! `APIResourceList`s, all derived from the resource registry.

use api::resource::ResourceDef;
use serde_json::{json, Value};

/// Kubernetes minor version reported by `/version`. kubectl's version dispatcher picks the
/// client binary from it, so it stays on the release whose wire behaviour we follow.
pub const KUBE_MINOR: &str = "32";

/// The verbs of the `/status` subresource.
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0-monovirt.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

/// The architecture as Go (and so Kubernetes) names it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        other => other,
    }
}

/// Group names in registry order, core (`""`) first if present.
fn groups(resources: &[ResourceDef]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for d in resources {
        if !out.contains(&d.group) {
            out.push(d.group);
        }
    }
    out.sort_by_key(|g| !g.is_empty());
    out
}

/// The versions of `group`, preferred (first registered) first.
fn versions(resources: &[ResourceDef], group: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for d in resources.iter().filter(|d| d.group == group) {
        if !out.contains(&d.version) {
            out.push(d.version);
        }
    }
    out
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Legacy `GET /api`.
pub fn core_versions(resources: &[ResourceDef]) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": versions(resources, ""),
        "serverAddressByClientCIDRs": [],
    })
}

fn api_group(resources: &[ResourceDef], group: &str) -> Value {
    let vs: Vec<Value> = versions(resources, group)
        .into_iter()
        .map(|v| json!({"groupVersion": group_version(group, v), "version": v}))
        .collect();
    json!({
        "name": group,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
        "versions": vs,
    })
}

/// Legacy `GET /apis`: every named group.
pub fn group_list(resources: &[ResourceDef]) -> Value {
    let gs: Vec<Value> = groups(resources)
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(|g| api_group(resources, g))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

/// `GET /apis/{group}`.
pub fn group(resources: &[ResourceDef], group: &str) -> Value {
    let mut g = api_group(resources, group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    g
}

/// `GET /api/v1`, `GET /apis/{group}/{version}`.
pub fn resource_list(resources: &[ResourceDef], group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for d in resources
        .iter()
        .filter(|d| d.group == group && d.version == version)
    {
        list.push(json!({
            "name": d.plural,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": d.verbs,
            "shortNames": d.short_names,
            "categories": d.categories,
        }));
        if d.has_status {
            list.push(json!({
                "name": format!("{}/status", d.plural),
                "singularName": "",
                "namespaced": d.namespaced,
                "kind": d.kind,
                "verbs": STATUS_VERBS,
            }));
        }
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": list,
    })
}

/// Aggregated discovery v2 (`APIGroupDiscoveryList`) for `/api` (`core == true`) or `/apis`.
pub fn aggregated(resources: &[ResourceDef], core: bool) -> Value {
    let items: Vec<Value> = groups(resources)
        .into_iter()
        .filter(|g| g.is_empty() == core)
        .map(|g| {
            let versions: Vec<Value> = versions(resources, g)
                .into_iter()
                .map(|v| {
                    let rs: Vec<Value> = resources
                        .iter()
                        .filter(|d| d.group == g && d.version == v)
                        .map(aggregated_resource)
                        .collect();
                    json!({"version": v, "freshness": "Current", "resources": rs})
                })
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

fn aggregated_resource(d: &ResourceDef) -> Value {
    let kind = json!({"group": d.group, "version": d.version, "kind": d.kind});
    let mut r = json!({
        "resource": d.plural,
        "singularResource": d.singular,
        "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
        "responseKind": kind,
        "verbs": d.verbs,
    });
    if !d.short_names.is_empty() {
        r["shortNames"] = json!(d.short_names);
    }
    if !d.categories.is_empty() {
        r["categories"] = json!(d.categories);
    }
    if d.has_status {
        r["subresources"] = json!([{
            "subresource": "status",
            "responseKind": kind,
            "verbs": STATUS_VERBS,
        }]);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::testing::test_resources;

    #[test]
    fn version_is_kube_1_32() {
        let v = version();
        assert_eq!(v["major"], "1");
        assert_eq!(v["minor"], "32");
        assert!(v["gitVersion"]
            .as_str()
            .expect("str")
            .starts_with("v1.32.0-monovirt"));
    }

    #[test]
    fn legacy_lists() {
        let rs = test_resources();
        assert_eq!(core_versions(&rs)["versions"], json!(["v1"]));
        let gl = group_list(&rs);
        assert_eq!(gl["groups"][0]["name"], "kubevirt.io");
        assert_eq!(
            gl["groups"][0]["preferredVersion"]["groupVersion"],
            "kubevirt.io/v1"
        );
        assert_eq!(gl["groups"][1]["name"], "cdi.kubevirt.io");
        let rl = resource_list(&rs, "kubevirt.io", "v1");
        assert_eq!(rl["groupVersion"], "kubevirt.io/v1");
        assert_eq!(rl["resources"][0]["name"], "virtualmachines");
        assert_eq!(rl["resources"][0]["shortNames"], json!(["vm", "vms"]));
        assert_eq!(rl["resources"][1]["name"], "virtualmachines/status");
        let core = resource_list(&rs, "", "v1");
        assert_eq!(core["groupVersion"], "v1");
        assert_eq!(core["resources"][0]["namespaced"], false);
    }

    #[test]
    fn aggregated_has_response_kinds_and_scope() {
        let rs = test_resources();
        let apis = aggregated(&rs, false);
        assert_eq!(apis["items"].as_array().expect("items").len(), 2);
        let vm = &apis["items"][0]["versions"][0]["resources"][0];
        assert_eq!(vm["resource"], "virtualmachines");
        assert_eq!(vm["scope"], "Namespaced");
        assert_eq!(vm["responseKind"]["kind"], "VirtualMachine");
        assert_eq!(vm["subresources"][0]["subresource"], "status");
        let core = aggregated(&rs, true);
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        assert_eq!(
            core["items"][0]["versions"][0]["resources"][0]["scope"],
            "Cluster"
        );
    }
}

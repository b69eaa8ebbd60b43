//! Roles and what they allow, in the spirit of Kubernetes' default `view`, `edit` and
//! `admin` cluster roles (and KubeVirt's aggregation of its verbs into them), plus the
//! node agents' own kind:
//!
//! | grant | allows |
//! | --- | --- |
//! | `view` | `get`, `list`, `watch` on objects and their `status`; no secrets, no console |
//! | `edit` | `view`, plus every verb on namespaced objects and their subresources (start, stop, console, ...); cluster-scoped kinds stay read-only |
//! | `admin` | everything (limited to its namespace when it has one) |
//! | `node` | what a node agent needs: read everything but secrets, write Nodes, VMIs, Events, Leases and any object's `status`, and its own `node-*` Secrets in `monovirt-system` |
//!
//! A token bound to a namespace (`--namespace NS`) is limited to requests in that
//! namespace. `monovirt-system` (the daemon's own objects) is for `admin` and `node`
//! only. Health endpoints and `/version` need no token; discovery and OpenAPI need any
//! valid token; `/metrics` needs one that is not bound to a namespace.

use super::request::{Attributes, ResourceAttributes};
use serde::{Deserialize, Serialize};

/// The namespace of the daemon's own objects.
pub const SYSTEM_NAMESPACE: &str = "monovirt-system";

/// A user role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    View,
    Edit,
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "view" => Ok(Self::View),
            "edit" => Ok(Self::Edit),
            "admin" => Ok(Self::Admin),
            _ => Err(format!("unknown role {s:?} (view, edit or admin)")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::View => "view",
            Self::Edit => "edit",
            Self::Admin => "admin",
        })
    }
}

/// What an authenticated caller was granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Grant {
    /// A user with a role, optionally bound to one namespace.
    User {
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
    },
    /// A node agent.
    Node,
}

impl Grant {
    /// Full access: the Unix socket and trusted loopback listeners.
    pub const ADMIN: Grant = Grant::User {
        role: Role::Admin,
        namespace: None,
    };

    /// Whether the request may go ahead.
    pub fn allows(&self, attrs: &Attributes) -> bool {
        match attrs {
            Attributes::NonResource { path, verb } => self.allows_non_resource(path, verb),
            Attributes::Resource(r) => self.allows_resource(r),
        }
    }

    fn allows_non_resource(&self, path: &str, verb: &str) -> bool {
        if verb != "get" {
            return matches!(
                self,
                Grant::User {
                    role: Role::Admin,
                    namespace: None
                }
            );
        }
        if path == "/metrics" {
            return !matches!(
                self,
                Grant::User {
                    namespace: Some(_),
                    ..
                }
            );
        }
        true
    }

    fn allows_resource(&self, r: &ResourceAttributes) -> bool {
        let read = matches!(r.verb, "get" | "list" | "watch");
        let secrets = r.resource == "secrets" && r.group.is_empty();
        let system = r.namespace.as_deref() == Some(SYSTEM_NAMESPACE);
        let sub = r.subresource.as_deref();
        match self {
            Grant::Node => {
                if secrets {
                    // A create names its object in the body, not the path: allowed in
                    // the system namespace; reads and changes only of `node-*`.
                    return system
                        && (r.verb == "create"
                            || r.name.as_deref().is_some_and(|n| n.starts_with("node-")));
                }
                if read || sub == Some("status") {
                    return true;
                }
                matches!(
                    (r.group.as_str(), r.resource.as_str()),
                    ("", "nodes")
                        | ("kubevirt.io", "virtualmachineinstances")
                        | ("", "events")
                        | ("events.k8s.io", "events")
                        | ("coordination.k8s.io", "leases")
                )
            }
            Grant::User { role, namespace } => {
                if let Some(ns) = namespace {
                    // Bound to one namespace: only requests inside it.
                    if r.namespace.as_deref() != Some(ns.as_str()) {
                        return false;
                    }
                    // The Namespace object itself: read it, never change it.
                    if r.resource == "namespaces" && r.group.is_empty() && !read {
                        return false;
                    }
                }
                match role {
                    Role::Admin => true,
                    _ if system => false,
                    Role::View => read && !secrets && matches!(sub, None | Some("status")),
                    Role::Edit if read => true,
                    // Writes: namespaced objects only (cluster-scoped kinds and
                    // cross-namespace collections stay with admin).
                    Role::Edit => r.namespace.is_some() && r.resource != "namespaces",
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn can(g: &Grant, m: Method, path: &str) -> bool {
        g.allows(&Attributes::from_request(&m, path, None))
    }

    const VM: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/vm1";
    const VMS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";
    const OTHER: &str = "/apis/kubevirt.io/v1/namespaces/other/virtualmachines";
    const START: &str =
        "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/vm1/start";
    const CONSOLE: &str =
        "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/vm1/console";
    const NODES: &str = "/api/v1/nodes";

    fn user(role: Role, ns: Option<&str>) -> Grant {
        Grant::User {
            role,
            namespace: ns.map(str::to_string),
        }
    }

    #[test]
    fn view() {
        let g = user(Role::View, None);
        assert!(can(&g, Method::GET, VM));
        assert!(can(&g, Method::GET, OTHER));
        assert!(can(&g, Method::GET, NODES));
        assert!(can(&g, Method::GET, "/metrics"));
        assert!(!can(&g, Method::POST, VMS));
        assert!(!can(&g, Method::DELETE, VM));
        assert!(!can(&g, Method::PUT, START));
        assert!(!can(&g, Method::GET, CONSOLE));
        assert!(!can(
            &g,
            Method::GET,
            "/api/v1/namespaces/default/secrets/x"
        ));
        assert!(!can(
            &g,
            Method::GET,
            "/api/v1/namespaces/monovirt-system/events"
        ));
    }

    #[test]
    fn edit() {
        let g = user(Role::Edit, None);
        assert!(can(&g, Method::POST, VMS));
        assert!(can(&g, Method::DELETE, VM));
        assert!(can(&g, Method::PUT, START));
        assert!(can(&g, Method::GET, CONSOLE));
        assert!(can(&g, Method::GET, NODES));
        assert!(!can(&g, Method::PATCH, "/api/v1/nodes/n1"));
        assert!(!can(&g, Method::POST, "/api/v1/namespaces"));
        assert!(!can(&g, Method::DELETE, "/api/v1/namespaces/default"));
        assert!(!can(
            &g,
            Method::POST,
            "/api/v1/namespaces/monovirt-system/secrets"
        ));
    }

    #[test]
    fn namespace_bound() {
        let g = user(Role::Edit, Some("default"));
        assert!(can(&g, Method::POST, VMS));
        assert!(can(&g, Method::GET, "/api/v1/namespaces/default"));
        assert!(!can(&g, Method::DELETE, "/api/v1/namespaces/default"));
        assert!(!can(&g, Method::GET, OTHER));
        assert!(!can(
            &g,
            Method::GET,
            "/apis/kubevirt.io/v1/virtualmachines"
        ));
        assert!(!can(&g, Method::GET, NODES));
        assert!(!can(&g, Method::GET, "/metrics"));
        assert!(can(&g, Method::GET, "/apis"));
        let a = user(Role::Admin, Some("default"));
        assert!(can(&a, Method::DELETE, VM));
        assert!(!can(&a, Method::GET, OTHER));
    }

    #[test]
    fn admin_and_node() {
        assert!(can(
            &Grant::ADMIN,
            Method::POST,
            "/api/v1/namespaces/monovirt-system/secrets"
        ));
        assert!(can(&Grant::ADMIN, Method::DELETE, "/api/v1/nodes/n1"));
        let n = Grant::Node;
        assert!(can(&n, Method::GET, VM));
        assert!(can(&n, Method::PUT, "/api/v1/nodes/n1/status"));
        assert!(can(&n, Method::POST, NODES));
        assert!(can(
            &n,
            Method::PATCH,
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances/vm1"
        ));
        assert!(can(
            &n,
            Method::PUT,
            "/api/v1/namespaces/monovirt-system/secrets/node-n1"
        ));
        assert!(!can(
            &n,
            Method::GET,
            "/api/v1/namespaces/monovirt-system/secrets/other"
        ));
        assert!(!can(&n, Method::DELETE, VM));
        assert!(!can(&n, Method::POST, VMS));
    }
}

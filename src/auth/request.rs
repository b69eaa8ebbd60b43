//! The attributes of a request that authorisation looks at, read from its method, path
//! and query the way kube-apiserver's `RequestInfoFactory` reads them:
//!
//! - `/api/v1/namespaces/{ns}/{resource}[/{name}[/{subresource}]]` and the same under
//!   `/apis/{group}/{version}` are namespaced resource requests;
//! - `/api/v1/namespaces[/{name}[/{subresource}]]` addresses Namespace objects;
//! - `/api/v1/{resource}[/{name}...]` is cluster-wide (a cluster-scoped kind, or a list
//!   across namespaces);
//! - everything else (`/version`, discovery, `/openapi`, `/metrics`) is a non-resource
//!   request.
//!
//! The verb follows from the method: GET is `get` with a name, `watch` with
//! `watch=true|1`, else `list`; POST `create`; PUT `update`; PATCH `patch`; DELETE
//! `delete` with a name, else `deletecollection`.

/// What a request does, as far as authorisation is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    /// A path that addresses no stored object.
    NonResource { path: String, verb: &'static str },
    /// A request on objects.
    Resource(ResourceAttributes),
}

/// A request on objects of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceAttributes {
    pub verb: &'static str,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Attributes {
    /// Reads the attributes of `method path?query`.
    pub fn from_request(method: &http::Method, path: &str, query: Option<&str>) -> Self {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest = match segs.as_slice() {
            ["api", _version, rest @ ..] if !rest.is_empty() => Some(("", rest)),
            ["apis", group, _version, rest @ ..] if !rest.is_empty() => Some((*group, rest)),
            _ => None,
        };
        let Some((group, rest)) = rest else {
            return Self::NonResource {
                path: path.to_string(),
                verb: non_resource_verb(method),
            };
        };
        let (namespace, resource, name, subresource) = match rest {
            ["namespaces", ns, resource, tail @ ..] => (
                Some(*ns),
                *resource,
                tail.first().copied(),
                tail.get(1).copied(),
            ),
            [resource, tail @ ..] => (None, *resource, tail.first().copied(), tail.get(1).copied()),
            [] => unreachable!("rest is not empty"),
        };
        // A Namespace object is named by the path; authorise it in its own namespace,
        // as Kubernetes does.
        let namespace = match (resource, name) {
            ("namespaces", Some(n)) if group.is_empty() && namespace.is_none() => Some(n),
            _ => namespace,
        };
        let watch = query.is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
        });
        let verb = match *method {
            http::Method::GET | http::Method::HEAD if name.is_some() => "get",
            http::Method::GET | http::Method::HEAD if watch => "watch",
            http::Method::GET | http::Method::HEAD => "list",
            http::Method::POST => "create",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE if name.is_some() => "delete",
            http::Method::DELETE => "deletecollection",
            _ => "unknown",
        };
        Self::Resource(ResourceAttributes {
            verb,
            group: group.to_string(),
            resource: resource.to_string(),
            subresource: subresource.map(str::to_string),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
        })
    }

    /// The verb.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::NonResource { verb, .. } => verb,
            Self::Resource(r) => r.verb,
        }
    }
}

fn non_resource_verb(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::POST => "post",
        http::Method::PUT => "put",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn res(m: Method, p: &str, q: Option<&str>) -> ResourceAttributes {
        match Attributes::from_request(&m, p, q) {
            Attributes::Resource(r) => r,
            other => panic!("{p}: {other:?}"),
        }
    }

    #[test]
    fn resource_paths() {
        let r = res(
            Method::GET,
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/vm1",
            None,
        );
        assert_eq!(
            (r.verb, r.group.as_str(), r.resource.as_str()),
            ("get", "kubevirt.io", "virtualmachines")
        );
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.name.as_deref(), Some("vm1"));
        let r = res(
            Method::GET,
            "/apis/kubevirt.io/v1/virtualmachines",
            Some("watch=1"),
        );
        assert_eq!((r.verb, r.namespace), ("watch", None));
        let r = res(Method::GET, "/api/v1/nodes", Some("limit=5"));
        assert_eq!((r.verb, r.resource.as_str()), ("list", "nodes"));
        let r = res(
            Method::DELETE,
            "/api/v1/namespaces/ns1/persistentvolumeclaims",
            None,
        );
        assert_eq!(r.verb, "deletecollection");
        let r = res(
            Method::PUT,
            "/apis/subresources.kubevirt.io/v1/namespaces/ns1/virtualmachines/vm/start",
            None,
        );
        assert_eq!(
            (r.verb, r.resource.as_str(), r.subresource.as_deref()),
            ("update", "virtualmachines", Some("start"))
        );
        let r = res(Method::PATCH, "/api/v1/namespaces/ns1", None);
        assert_eq!(
            (r.verb, r.resource.as_str(), r.namespace.as_deref()),
            ("patch", "namespaces", Some("ns1"))
        );
        let r = res(Method::POST, "/api/v1/namespaces", None);
        assert_eq!((r.verb, r.namespace), ("create", None));
    }

    #[test]
    fn non_resource_paths() {
        for p in [
            "/version",
            "/api",
            "/apis",
            "/apis/kubevirt.io",
            "/api/v1",
            "/apis/kubevirt.io/v1",
            "/metrics",
            "/openapi/v3/apis/kubevirt.io/v1",
        ] {
            assert!(
                matches!(
                    Attributes::from_request(&Method::GET, p, None),
                    Attributes::NonResource { verb: "get", .. }
                ),
                "{p}"
            );
        }
    }
}

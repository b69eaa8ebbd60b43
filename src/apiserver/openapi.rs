//! OpenAPI v3 serving: the `/openapi/v3` index and one document per group-version
//! (`/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`), built once at start-up.
//!
//! kubectl reads these to decide that the server validates fields itself (the PATCH
//! operation lists a `fieldValidation` parameter) and for `kubectl explain` (a schema
//! carrying `x-kubernetes-group-version-kind`). Documents are immutable for the life of
//! the process, so the `?hash=` URL is served with an ETag and `Cache-Control: immutable`.

use api::resource::ResourceDef;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// One served document.
#[derive(Debug, Clone)]
struct Document {
    bytes: Bytes,
    hash: String,
}

/// All OpenAPI v3 documents, keyed by their index path (`apis/kubevirt.io/v1`, `api/v1`).
#[derive(Debug, Clone, Default)]
pub struct OpenApi {
    docs: BTreeMap<String, Document>,
}

/// The `components.schemas` name of a kind, as Kubernetes spells it:
/// `io.kubevirt.v1.VirtualMachine`, `io.k8s.api.core.v1.Node`.
pub fn schema_name(def: &ResourceDef, kind: &str) -> String {
    let prefix = if def.group.is_empty() {
        "io.k8s.api.core".to_string()
    } else if let Some(short) = def.group.strip_suffix(".k8s.io") {
        format!("io.k8s.api.{short}")
    } else {
        def.group.rsplit('.').collect::<Vec<_>>().join(".")
    };
    format!("{prefix}.{}.{kind}", def.version)
}

fn gvk(def: &ResourceDef) -> Value {
    json!({"group": def.group, "version": def.version, "kind": def.kind})
}

fn param(name: &str, location: &str, description: &str) -> Value {
    json!({"name": name, "in": location, "description": description,
           "required": location == "path", "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        param("dryRun", "query", "When present, indicates that modifications should not be persisted. Valid value: All."),
        param("fieldManager", "query", "A name associated with the actor or entity that is making these changes."),
        param("fieldValidation", "query", "How the server treats unknown or duplicate fields in the object: Ignore, Warn or Strict (the default)."),
    ]
}

fn list_params() -> Vec<Value> {
    [
        ("labelSelector", "A selector to restrict the list of returned objects by their labels."),
        ("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
        ("limit", "The maximum number of responses to return for a list call."),
        ("continue", "The continue token of a previous paginated list call."),
        ("resourceVersion", "Resource version to list or watch from."),
        ("timeoutSeconds", "Timeout for the list/watch call."),
        ("watch", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
        ("allowWatchBookmarks", "Requests watch events with type BOOKMARK."),
    ]
    .iter()
    .map(|(n, d)| param(n, "query", d))
    .collect()
}

fn operation(
    def: &ResourceDef,
    id: &str,
    action: &str,
    params: Vec<Value>,
    body: Option<&str>,
    response: &str,
    patch: bool,
) -> Value {
    let mut op = json!({
        "operationId": id,
        "description": format!("{action} {}", def.kind),
        "tags": [def.api_version()],
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": response}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(def),
    });
    if let Some(body_ref) = body {
        let types: Vec<&str> = if patch {
            vec![
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/apply-patch+yaml",
            ]
        } else {
            vec!["application/json", "application/yaml"]
        };
        let content: Map<String, Value> = types
            .into_iter()
            .map(|t| (t.to_string(), json!({"schema": {"$ref": body_ref}})))
            .collect();
        op["requestBody"] = json!({"required": true, "content": content});
    }
    op
}

fn paths_for(def: &ResourceDef, paths: &mut Map<String, Value>) {
    let root = if def.group.is_empty() {
        format!("/api/{}", def.version)
    } else {
        format!("/apis/{}/{}", def.group, def.version)
    };
    let kind_ref = format!("#/components/schemas/{}", schema_name(def, def.kind));
    let list_ref = format!("#/components/schemas/{}", schema_name(def, def.list_kind));
    let obj_any = "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
    let (collection, ns_param) = if def.namespaced {
        (
            format!("{root}/namespaces/{{namespace}}/{}", def.plural),
            vec![param("namespace", "path", "object name and auth scope")],
        )
    } else {
        (format!("{root}/{}", def.plural), vec![])
    };
    let id = |verb: &str, suffix: &str| {
        format!(
            "{verb}{}{}{suffix}",
            if def.namespaced { "Namespaced" } else { "" },
            def.kind
        )
    };
    let with =
        |extra: Vec<Value>| -> Vec<Value> { ns_param.iter().cloned().chain(extra).collect() };
    let name_param = param("name", "path", &format!("name of the {}", def.kind));

    paths.insert(collection.clone(), json!({
        "get": operation(def, &id("list", ""), "list", with(list_params()), None, &list_ref, false),
        "post": operation(def, &id("create", ""), "post", with(write_params()), Some(&kind_ref), &kind_ref, false),
    }));
    let item_params = |extra: Vec<Value>| -> Vec<Value> {
        ns_param
            .iter()
            .cloned()
            .chain(std::iter::once(name_param.clone()))
            .chain(extra)
            .collect()
    };
    paths.insert(format!("{collection}/{{name}}"), json!({
        "get": operation(def, &id("read", ""), "get", item_params(vec![]), None, &kind_ref, false),
        "put": operation(def, &id("replace", ""), "put", item_params(write_params()), Some(&kind_ref), &kind_ref, false),
        "patch": operation(def, &id("patch", ""), "patch", item_params(write_params()), Some(obj_any), &kind_ref, true),
        "delete": operation(def, &id("delete", ""), "delete", item_params(vec![param("dryRun", "query", "When present, indicates that modifications should not be persisted."), param("propagationPolicy", "query", "Orphan, Background or Foreground."), param("gracePeriodSeconds", "query", "The duration in seconds before the object should be deleted.")]), None, &kind_ref, false),
    }));
    if def.has_status {
        paths.insert(format!("{collection}/{{name}}/status"), json!({
            "get": operation(def, &id("read", "Status"), "get", item_params(vec![]), None, &kind_ref, false),
            "put": operation(def, &id("replace", "Status"), "put", item_params(write_params()), Some(&kind_ref), &kind_ref, false),
            "patch": operation(def, &id("patch", "Status"), "patch", item_params(write_params()), Some(obj_any), &kind_ref, true),
        }));
    }
    if def.namespaced {
        paths.insert(format!("{root}/{}", def.plural), json!({
            "get": operation(def, &format!("list{}ForAllNamespaces", def.kind), "list", list_params(), None, &list_ref, false),
        }));
    }
}

fn schemas_for(def: &ResourceDef, schemas: &mut Map<String, Value>) {
    let mut schema = (def.schema)();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("x-kubernetes-group-version-kind".into(), json!([gvk(def)]));
    }
    schemas.insert(schema_name(def, def.kind), schema);
    schemas.insert(
        schema_name(def, def.list_kind),
        json!({
            "type": "object",
            "description": format!("A list of {}.", def.kind),
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
                "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
                "metadata": {"type": "object", "description": "Standard list metadata."},
                "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{}", schema_name(def, def.kind))}},
            },
            "x-kubernetes-group-version-kind": [{"group": def.group, "version": def.version, "kind": def.list_kind}],
        }),
    );
}

/// The OpenAPI v3 document of one group-version.
pub fn document(resources: &[ResourceDef], group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(),
        json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}),
    );
    for d in resources
        .iter()
        .filter(|d| d.group == group && d.version == version)
    {
        paths_for(d, &mut paths);
        schemas_for(d, &mut schemas);
    }
    let title = if group.is_empty() {
        "Kubernetes".to_string()
    } else {
        format!("{group} API")
    };
    json!({
        "openapi": "3.0.0",
        "info": {"title": title, "version": format!("v1.{}.0", super::discovery::KUBE_MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn content_hash(bytes: &[u8]) -> String {
    // SipHash with fixed keys: stable for the life of the process, which is all an
    // immutable-by-URL cache key needs.
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016X}", h.finish())
}

impl OpenApi {
    /// Builds every group-version's document from the registry.
    pub fn build(resources: &[ResourceDef]) -> Self {
        let mut docs = BTreeMap::new();
        for d in resources {
            let key = if d.group.is_empty() {
                format!("api/{}", d.version)
            } else {
                format!("apis/{}/{}", d.group, d.version)
            };
            if docs.contains_key(&key) {
                continue;
            }
            let doc = document(resources, d.group, d.version);
            let bytes =
                Bytes::from(serde_json::to_vec(&doc).expect("a JSON value always serializes"));
            let hash = content_hash(&bytes);
            docs.insert(key, Document { bytes, hash });
        }
        Self { docs }
    }

    /// `GET /openapi/v3`.
    pub fn index(&self) -> Value {
        let paths: Map<String, Value> = self
            .docs
            .iter()
            .map(|(k, d)| {
                (
                    k.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={}", d.hash)}),
                )
            })
            .collect();
        json!({"paths": paths})
    }

    /// `GET /openapi/v3/{key}[?hash=]`, honouring `If-None-Match`.
    pub fn serve(&self, key: &str, hash: Option<&str>, headers: &HeaderMap) -> Option<Response> {
        let doc = self.docs.get(key.trim_matches('/'))?;
        let etag = format!("\"{}\"", doc.hash);
        if let Some(h) = hash {
            if h != doc.hash {
                // Like kube-apiserver: send the client to the current URL.
                let location = format!("/openapi/v3/{}?hash={}", key.trim_matches('/'), doc.hash);
                return Some(
                    (
                        StatusCode::MOVED_PERMANENTLY,
                        [(header::LOCATION, location)],
                    )
                        .into_response(),
                );
            }
        }
        let cache = if hash.is_some() {
            "public, immutable, max-age=31536000"
        } else {
            "no-cache, private"
        };
        let not_modified = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        let mut resp = if not_modified {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            (StatusCode::OK, doc.bytes.clone()).into_response()
        };
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        Some(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::testing::{test_resources, VM};

    #[test]
    fn schema_names_follow_kubernetes() {
        assert_eq!(
            schema_name(&VM, "VirtualMachine"),
            "io.kubevirt.v1.VirtualMachine"
        );
        let rs = test_resources();
        let node = rs.iter().find(|d| d.kind == "Node").expect("node");
        assert_eq!(schema_name(node, "Node"), "io.k8s.api.core.v1.Node");
    }

    #[test]
    fn patch_declares_field_validation_and_schema_has_gvk_list() {
        let doc = document(&test_resources(), "kubevirt.io", "v1");
        let patch = &doc["paths"]
            ["/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "VirtualMachine"
        );
        assert!(patch["parameters"]
            .as_array()
            .expect("params")
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        let s = &doc["components"]["schemas"]["io.kubevirt.v1.VirtualMachine"];
        assert_eq!(
            s["x-kubernetes-group-version-kind"][0]["kind"],
            "VirtualMachine"
        );
        assert!(s["properties"]["spec"].is_object());
    }

    #[test]
    fn index_and_caching() {
        let o = OpenApi::build(&test_resources());
        let idx = o.index();
        let url = idx["paths"]["apis/kubevirt.io/v1"]["serverRelativeURL"]
            .as_str()
            .expect("url");
        let hash = url.split("hash=").nth(1).expect("hash");
        assert!(idx["paths"]["api/v1"].is_object());
        let r = o
            .serve("apis/kubevirt.io/v1", Some(hash), &HeaderMap::new())
            .expect("doc");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()[header::CACHE_CONTROL]
            .to_str()
            .expect("cc")
            .contains("immutable"));
        let etag = r.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(
            o.serve("apis/kubevirt.io/v1", Some(hash), &h)
                .expect("doc")
                .status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            o.serve("apis/kubevirt.io/v1", Some("stale"), &HeaderMap::new())
                .expect("doc")
                .status(),
            StatusCode::MOVED_PERMANENTLY
        );
        assert!(o.serve("apis/nope/v1", None, &HeaderMap::new()).is_none());
    }
}

//! The OpenAPI v3 documents the apiserver serves: the `/openapi/v3` index and one document per
//! group-version (`/openapi/v3/apis/kubevirt.io/v1`, `/openapi/v3/api/v1`), with the kinds'
//! schemas under `components.schemas` and an operation per resource path. Each PATCH lists the
//! `fieldValidation` query parameter, which is what makes kubectl leave validation to the
//! server. Built once from [`crate::resources`]; the apiserver only serves them.

use crate::resource::ResourceDef;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// One group-version's document and the hash that versions its URL.
#[derive(Debug)]
pub struct Document {
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// The OpenAPI v3 document.
    pub body: Value,
    /// A hex hash of the body, for `?hash=` (content-addressed, so cacheable forever).
    pub hash: String,
}

impl Document {
    /// The index key and path of this document: `apis/kubevirt.io/v1` or `api/v1`.
    pub fn key(&self) -> String {
        if self.group.is_empty() {
            format!("api/{}", self.version)
        } else {
            format!("apis/{}/{}", self.group, self.version)
        }
    }
}

fn documents() -> &'static [Document] {
    static DOCS: OnceLock<Vec<Document>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut gvs: Vec<(&'static str, &'static str)> = Vec::new();
        for d in crate::resources() {
            if !gvs.contains(&(d.group, d.version)) {
                gvs.push((d.group, d.version));
            }
        }
        gvs.into_iter()
            .map(|(group, version)| {
                let body = build(group, version);
                let hash = fnv1a(body.to_string().as_bytes());
                Document {
                    group,
                    version,
                    body,
                    hash: format!("{hash:016X}"),
                }
            })
            .collect()
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The document of one group-version (`""` for core), if it is served.
///
/// ```
/// let doc = api::openapi::document("kubevirt.io", "v1").unwrap();
/// let patch = &doc.body["paths"]["/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}"]["patch"];
/// assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
/// assert!(doc.body["components"]["schemas"]["io.kubevirt.v1.VirtualMachine"].is_object());
/// ```
pub fn document(group: &str, version: &str) -> Option<&'static Document> {
    documents()
        .iter()
        .find(|d| d.group == group && d.version == version)
}

/// The document served at `path` below `/openapi/v3/` (`apis/kubevirt.io/v1`, `api/v1`).
pub fn document_at(path: &str) -> Option<&'static Document> {
    let path = path.trim_matches('/');
    documents().iter().find(|d| d.key() == path)
}

/// The `/openapi/v3` index: every document's path and hashed URL.
///
/// ```
/// let index = api::openapi::index();
/// let url = index["paths"]["apis/kubevirt.io/v1"]["serverRelativeURL"].as_str().unwrap();
/// assert!(url.starts_with("/openapi/v3/apis/kubevirt.io/v1?hash="));
/// ```
pub fn index() -> Value {
    let mut paths = Map::new();
    for d in documents() {
        paths.insert(
            d.key(),
            json!({"serverRelativeURL": format!("/openapi/v3/{}?hash={}", d.key(), d.hash)}),
        );
    }
    json!({ "paths": paths })
}

/// Built-in kinds (core and `*.k8s.io` groups), which take strategic merge patches, versus
/// custom resources, which do not (the store's rule).
fn is_builtin(def: &ResourceDef) -> bool {
    def.group.is_empty() || def.group.ends_with(".k8s.io") || !def.group.contains('.')
}

fn gvk(def: &ResourceDef) -> Value {
    json!({"group": def.group, "version": def.version, "kind": def.kind})
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        query("dryRun", "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed"),
        query("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."),
        query("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn (the default) - Strict"),
    ]
}

fn ok(reference: &str) -> Value {
    json!({"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": reference}}}},
           "401": {"description": "Unauthorized"}})
}

fn operation(
    def: &ResourceDef,
    action: &str,
    verb_id: &str,
    reference: &str,
    mut params: Vec<Value>,
    body: Option<Value>,
) -> Value {
    let mut op = json!({
        "description": format!("{action} {}", def.kind),
        "operationId": format!("{verb_id}{}", def.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(def),
        "responses": ok(reference),
    });
    if let Some(b) = body {
        op["requestBody"] = b;
    }
    if !params.is_empty() {
        op["parameters"] = Value::Array(std::mem::take(&mut params));
    }
    op
}

fn body(reference: &str, types: &[&str]) -> Value {
    let mut content = Map::new();
    for t in types {
        content.insert((*t).to_string(), json!({"schema": {"$ref": reference}}));
    }
    json!({"required": true, "content": content})
}

fn build(group: &'static str, version: &'static str) -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    for def in crate::resources()
        .iter()
        .filter(|d| d.group == group && d.version == version)
    {
        let name = def.schema_name();
        let reference = format!("#/components/schemas/{name}");
        let list_name = format!("{name}List");
        let list_ref = format!("#/components/schemas/{list_name}");
        schemas.insert(name.clone(), (def.schema)());
        schemas.insert(
            list_name,
            json!({
                "type": "object",
                "description": format!("{} is a list of {}", def.list_kind, def.kind),
                "required": ["items"],
                "properties": {
                    "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
                    "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
                    "items": {"type": "array", "items": {"$ref": reference}, "description": format!("List of {}", def.plural)},
                    "metadata": {"type": "object", "description": "Standard list metadata.", "x-kubernetes-preserve-unknown-fields": true},
                },
                "x-kubernetes-group-version-kind": [{"group": group, "version": version, "kind": def.list_kind}],
            }),
        );
        let collection = if def.namespaced {
            def.collection_path(Some("{namespace}"))
        } else {
            def.collection_path(None)
        };
        let ns_param = || {
            if def.namespaced {
                vec![path_param(
                    "namespace",
                    "object name and auth scope, such as for teams and projects",
                )]
            } else {
                Vec::new()
            }
        };
        let mut collection_ops = Map::new();
        let mut list_params = ns_param();
        list_params.extend([
            query("labelSelector", "A selector to restrict the list of returned objects by their labels."),
            query("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
            query("limit", "limit is a maximum number of responses to return for a list call."),
            query("continue", "The continue option should be set when retrieving more results from the server."),
            query("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from."),
            query("watch", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
        ]);
        collection_ops.insert(
            "get".into(),
            operation(def, "list", "list", &list_ref, list_params, None),
        );
        let mut create_params = ns_param();
        create_params.extend(write_params());
        collection_ops.insert(
            "post".into(),
            operation(
                def,
                "post",
                "create",
                &reference,
                create_params,
                Some(body(&reference, &["application/json", "application/yaml"])),
            ),
        );
        paths.insert(collection.clone(), Value::Object(collection_ops));
        if def.namespaced {
            let all = def.collection_path(None);
            let list_all = vec![
                query(
                    "labelSelector",
                    "A selector to restrict the list of returned objects by their labels.",
                ),
                query(
                    "fieldSelector",
                    "A selector to restrict the list of returned objects by their fields.",
                ),
                query("watch", "Watch for changes to the described resources."),
            ];
            paths.insert(all, json!({"get": operation(def, "list", "listForAllNamespaces", &list_ref, list_all, None)}));
        }

        let item_params = || {
            let mut p = ns_param();
            p.push(path_param("name", &format!("name of the {}", def.kind)));
            p
        };
        // kubectl apply sends a strategic merge patch whenever the PATCH operation lists its
        // media type, so only built-in kinds list it; custom resources (KubeVirt's, CDI's)
        // get JSON merge patches, as against a real CRD (the store answers 415 otherwise).
        let patch_types: &[&str] = if is_builtin(def) {
            &[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml",
            ]
        } else {
            &[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/apply-patch+yaml",
            ]
        };
        let item_ops = |sub: &str| {
            let mut ops = Map::new();
            let id = |verb: &str| format!("{verb}{sub}");
            ops.insert(
                "get".into(),
                operation(def, "get", &id("read"), &reference, item_params(), None),
            );
            let mut put = item_params();
            put.extend(write_params());
            ops.insert(
                "put".into(),
                operation(
                    def,
                    "put",
                    &id("replace"),
                    &reference,
                    put,
                    Some(body(&reference, &["application/json", "application/yaml"])),
                ),
            );
            let mut patch = item_params();
            patch.extend(write_params());
            patch.push(query("force", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people."));
            ops.insert(
                "patch".into(),
                operation(def, "patch", &id("patch"), &reference, patch, Some(json!({"required": true, "content": patch_types.iter().map(|t| ((*t).to_string(), json!({"schema": {"type": "object"}}))).collect::<Map<String, Value>>()}))),
            );
            if sub.is_empty() {
                let mut del = item_params();
                del.push(query(
                    "dryRun",
                    "When present, indicates that modifications should not be persisted.",
                ));
                del.push(query("propagationPolicy", "Whether and how garbage collection will be performed: Orphan, Background or Foreground."));
                del.push(query(
                    "gracePeriodSeconds",
                    "The duration in seconds before the object should be deleted.",
                ));
                ops.insert(
                    "delete".into(),
                    operation(
                        def,
                        "delete",
                        "delete",
                        "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Status",
                        del,
                        None,
                    ),
                );
            }
            Value::Object(ops)
        };
        paths.insert(format!("{collection}/{{name}}"), item_ops(""));
        if def.has_status {
            paths.insert(format!("{collection}/{{name}}/status"), item_ops("Status"));
        }
    }
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status".into(),
        json!({
            "type": "object",
            "description": "Status is a return value for calls that don't return other objects.",
            "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                "code": {"type": "integer", "format": "int32", "description": "Suggested HTTP return code for this status, 0 if not set."},
                "message": {"type": "string", "description": "A human-readable description of the status of this operation."},
                "reason": {"type": "string", "description": "A machine-readable description of why this operation is in the \"Failure\" status."},
                "status": {"type": "string", "description": "Status of the operation. One of: \"Success\" or \"Failure\"."},
                "details": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            },
            "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Status"}],
        }),
    );
    json!({
        "openapi": "3.0.0",
        "info": {"title": "monovirt", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_kind_has_a_schema_and_patch() {
        for def in crate::resources() {
            let doc = document(def.group, def.version).expect("document per group-version");
            let schema = &doc.body["components"]["schemas"][def.schema_name()];
            assert_eq!(
                schema["x-kubernetes-group-version-kind"][0]["kind"],
                def.kind
            );
            let coll = if def.namespaced {
                def.collection_path(Some("{namespace}"))
            } else {
                def.collection_path(None)
            };
            let patch = &doc.body["paths"][format!("{coll}/{{name}}")]["patch"];
            assert_eq!(
                patch["x-kubernetes-group-version-kind"]["kind"], def.kind,
                "{}",
                def.kind
            );
            assert!(patch["parameters"]
                .as_array()
                .expect("params")
                .iter()
                .any(|p| p["name"] == "fieldValidation"));
            assert_eq!(
                document_at(&doc.key()).map(|d| d.hash.as_str()),
                Some(doc.hash.as_str())
            );
        }
    }

    #[test]
    fn strategic_merge_patch_only_for_built_in_kinds() {
        let smp = |group: &str, version: &str, path: &str| {
            let doc = document(group, version).expect("document");
            doc.body["paths"][path]["patch"]["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_some()
        };
        assert!(!smp(
            "kubevirt.io",
            "v1",
            "/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}"
        ));
        assert!(smp("", "v1", "/api/v1/nodes/{name}"));
    }

    #[test]
    fn core_is_api_v1() {
        let doc = document("", "v1").expect("core document");
        assert_eq!(doc.key(), "api/v1");
        assert!(doc.body["paths"]["/api/v1/nodes/{name}"]["patch"].is_object());
        assert!(doc.body["paths"]
            ["/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}/status"]
            .is_object());
    }
}

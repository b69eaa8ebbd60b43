//! `meta.k8s.io/v1` Table responses for `kubectl get`: the columns and cells of
//! [`api::table`] (Name, then the kind's printer columns, ages rendered like apimachinery's
//! `duration.HumanDuration`), each row's `object` as `PartialObjectMetadata` (or the full
//! object, or nothing, as `includeObject` asks) and the list's metadata.

use api::resource::ResourceDef;
use k8s_openapi::chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// `?includeObject=`: what each row carries as its `object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "None" => Some(Self::None),
            "Metadata" | "" => Some(Self::Metadata),
            "Object" => Some(Self::Object),
            _ => None,
        }
    }
}

/// How a Table is produced: the Table's apiVersion and the row objects.
#[derive(Debug, Clone, Copy)]
pub struct TableOptions {
    pub v1beta1: bool,
    pub include: IncludeObject,
}

fn row_object(def: &ResourceDef, obj: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => {
            let mut o = obj.clone();
            if o.get("kind").is_none() {
                o["kind"] = json!(def.kind);
                o["apiVersion"] = json!(def.api_version());
            }
            Some(o)
        }
        IncludeObject::Metadata => Some(api::table::partial_object_metadata(obj)),
    }
}

/// A Table of `objects`. `list_meta` becomes the Table's `metadata` (resourceVersion,
/// continue).
pub fn render(def: &ResourceDef, objects: &[Value], list_meta: Value, opts: TableOptions) -> Value {
    render_at(def, objects, list_meta, opts, now())
}

/// The current time (chrono's clock feature is not enabled in the tree).
fn now() -> DateTime<Utc> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_secs())
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, since_epoch.subsec_nanos()))
        .unwrap_or_default()
}

fn render_at(
    def: &ResourceDef,
    objects: &[Value],
    list_meta: Value,
    opts: TableOptions,
    now: DateTime<Utc>,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": api::table::cells(def, o, now)});
            if let Some(obj) = row_object(def, o, opts.include) {
                row["object"] = obj;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": if opts.v1beta1 { "meta.k8s.io/v1beta1" } else { "meta.k8s.io/v1" },
        "metadata": list_meta,
        "columnDefinitions": api::table::column_definitions(def),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(group: &str, kind: &str) -> &'static ResourceDef {
        api::resource::find_kind(group, kind).expect("registered")
    }

    #[test]
    fn vm_table_rows() {
        let now = "2026-01-01T00:05:00Z".parse().expect("time");
        let vm = json!({"metadata": {"name": "vm1", "namespace": "default", "resourceVersion": "7",
                                     "creationTimestamp": "2026-01-01T00:00:00Z"},
                        "spec": {}, "status": {"printableStatus": "Stopped",
                                               "conditions": [{"type": "Ready", "status": "False"}]}});
        let opts = TableOptions {
            v1beta1: false,
            include: IncludeObject::Metadata,
        };
        let t = render_at(
            def("kubevirt.io", "VirtualMachine"),
            &[vm],
            json!({"resourceVersion": "9"}),
            opts,
            now,
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"]["resourceVersion"], "9");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .expect("cols")
            .iter()
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["Name", "Age", "Status", "Ready"]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["vm1", "5m", "Stopped", "False"])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "default");
    }

    #[test]
    fn include_object_variants() {
        let now = "2026-01-01T02:00:00Z".parse().expect("time");
        let ns = json!({"metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        let d = def("", "Namespace");
        let full = render_at(
            d,
            std::slice::from_ref(&ns),
            json!({}),
            TableOptions {
                v1beta1: true,
                include: IncludeObject::Object,
            },
            now,
        );
        assert_eq!(full["apiVersion"], "meta.k8s.io/v1beta1");
        assert_eq!(full["rows"][0]["cells"][0], "n1");
        assert_eq!(full["rows"][0]["object"]["kind"], "Namespace");
        let none = render_at(
            d,
            &[ns],
            json!({}),
            TableOptions {
                v1beta1: false,
                include: IncludeObject::None,
            },
            now,
        );
        assert!(none["rows"][0].get("object").is_none());
    }
}

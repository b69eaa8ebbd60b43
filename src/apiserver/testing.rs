//! Resource definitions for the apiserver's unit tests, independent of the real registry
//! in `api` so handler tests pin the HTTP behaviour alone.

use api::resource::{PrinterColumn, ResourceDef};
use serde_json::{json, Value};

fn object_schema() -> Value {
    json!({"type": "object", "description": "A test kind.",
           "properties": {"spec": {"type": "object", "description": "The spec."}}})
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub const VM: ResourceDef = ResourceDef {
    group: "kubevirt.io",
    version: "v1",
    kind: "VirtualMachine",
    list_kind: "VirtualMachineList",
    plural: "virtualmachines",
    singular: "virtualmachine",
    short_names: &["vm", "vms"],
    categories: &["all"],
    namespaced: true,
    has_status: true,
    verbs: VERBS,
    columns: &[
        PrinterColumn {
            name: "Age",
            type_: "date",
            format: "",
            description: "Age",
            priority: 0,
            json_path: ".metadata.creationTimestamp",
        },
        PrinterColumn {
            name: "Status",
            type_: "string",
            format: "",
            description: "Human Readable Status",
            priority: 0,
            json_path: ".status.printableStatus",
        },
        PrinterColumn {
            name: "Ready",
            type_: "string",
            format: "",
            description: "Ready",
            priority: 0,
            json_path: ".status.conditions[?(@.type=='Ready')].status",
        },
    ],
    schema: object_schema,
    ..ResourceDef::OPAQUE
};

pub const NODE: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "Node",
    list_kind: "NodeList",
    plural: "nodes",
    singular: "node",
    short_names: &["no"],
    categories: &[],
    namespaced: false,
    has_status: true,
    verbs: VERBS,
    columns: &[],
    schema: object_schema,
    ..ResourceDef::OPAQUE
};

pub const NAMESPACE: ResourceDef = ResourceDef {
    kind: "Namespace",
    list_kind: "NamespaceList",
    plural: "namespaces",
    singular: "namespace",
    short_names: &["ns"],
    ..NODE
};

pub const EVENT: ResourceDef = ResourceDef {
    kind: "Event",
    list_kind: "EventList",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    namespaced: true,
    has_status: false,
    ..NODE
};

pub const DATAVOLUME: ResourceDef = ResourceDef {
    group: "cdi.kubevirt.io",
    version: "v1beta1",
    kind: "DataVolume",
    list_kind: "DataVolumeList",
    plural: "datavolumes",
    singular: "datavolume",
    short_names: &["dv", "dvs"],
    ..VM
};

pub fn test_resources() -> Vec<ResourceDef> {
    vec![NODE, NAMESPACE, EVENT, VM, DATAVOLUME]
}

//! The static list of every resource monovirt serves ([`resources`]), each wired to its
//! schema (generated once from the typed struct), its defaulting and its validation.
//!
//! A kind's `validate` first checks the object against the served schema (JSON types,
//! enums) and then runs the kind's semantic checks; `metadata` (names, labels) is checked by
//! [`crate::validation::validate_metadata`], which the store calls for every kind.

use crate::resource::{PrinterColumn, ResourceDef};
use crate::status::Cause;
use serde_json::Value;

/// One served kind: a module `$m` holding `DEF`, the kind's [`ResourceDef`] (its names,
/// scope and columns as given, wired to the functions below), and those functions, with
/// the signatures [`ResourceDef`] wants, around a schema built once from `$ty` under the
/// group, version and kind `DEF` names.
macro_rules! kind {
    (
        $m:ident: $ty:ty,
        validate: $validate:path,
        default: $default:path,
        ResourceDef { $($field:ident: $value:expr),* $(,)? }
    ) => {
        mod $m {
            use super::*;
            use std::sync::OnceLock;

            pub const DEF: ResourceDef = ResourceDef {
                $($field: $value,)*
                default,
                validate,
                unknown_fields,
                schema,
            };

            fn schema_ref() -> &'static Value {
                static SCHEMA: OnceLock<Value> = OnceLock::new();
                SCHEMA.get_or_init(|| crate::schema::generate::<$ty>(DEF.group, DEF.version, DEF.kind))
            }

            fn schema() -> Value {
                schema_ref().clone()
            }

            fn unknown_fields(obj: &Value) -> Vec<String> {
                crate::schema::unknown_fields(schema_ref(), obj)
            }

            fn validate(obj: &Value) -> Vec<Cause> {
                let causes = crate::schema::type_errors(schema_ref(), obj);
                if !causes.is_empty() {
                    return causes;
                }
                $validate(obj)
            }

            fn default(obj: &mut Value) {
                $default(obj)
            }
        }
    };
}

fn no_defaults(_obj: &mut Value) {}

/// The verbs of a resource with the full set of operations.
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

const READY: &str = ".status.conditions[?(@.type=='Ready')].status";

const VM_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::AGE,
    PrinterColumn::path(
        "Status",
        "string",
        ".status.printableStatus",
        "Human Readable Status",
        0,
    ),
    PrinterColumn::path("Ready", "string", READY, "Ready", 0),
];

const VMI_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::AGE,
    PrinterColumn::path("Phase", "string", ".status.phase", "Phase", 0),
    PrinterColumn::path("IP", "string", ".status.interfaces[0].ipAddress", "IP", 0),
    PrinterColumn::path("NodeName", "string", ".status.nodeName", "NodeName", 0),
    PrinterColumn::path("Ready", "string", READY, "Ready", 0),
    PrinterColumn::path(
        "Live-Migratable",
        "string",
        ".status.conditions[?(@.type=='LiveMigratable')].status",
        "Live-Migratable",
        1,
    ),
    PrinterColumn::path(
        "Paused",
        "string",
        ".status.conditions[?(@.type=='Paused')].status",
        "Paused",
        1,
    ),
];

const VMIM_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::path(
        "Phase",
        "string",
        ".status.phase",
        "The current phase of VM instance migration",
        0,
    ),
    PrinterColumn::path(
        "VMI",
        "string",
        ".spec.vmiName",
        "The name of the VMI to perform the migration on",
        0,
    ),
];

const DV_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::path(
        "Phase",
        "string",
        ".status.phase",
        "The phase the data volume is in",
        0,
    ),
    PrinterColumn::path(
        "Progress",
        "string",
        ".status.progress",
        "Transfer progress in percentage if known, N/A otherwise",
        0,
    ),
    PrinterColumn::path(
        "Restarts",
        "integer",
        ".status.restartCount",
        "The number of times the transfer has been restarted.",
        0,
    ),
    PrinterColumn::AGE,
];

const NS_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::path(
        "Status",
        "string",
        ".status.phase",
        "The status of the namespace",
        0,
    ),
    PrinterColumn::AGE,
];

// For the built-in kinds, some cells are computed (see `core::columns`) as kube-apiserver
// does; their JSONPath is the closest plain reading of the same data, for clients that
// evaluate the path themselves.
const NODE_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::path("Status", "string", ".status.conditions[?(@.type=='Ready')].status", "The status of the node", 0),
    PrinterColumn::path("Roles", "string", ".metadata.labels['kubernetes.io/role']", "The roles of the node", 0),
    PrinterColumn::AGE,
    PrinterColumn::path("Version", "string", ".status.nodeInfo.kubeletVersion", "Kubelet Version reported by the node.", 0),
    PrinterColumn::path("Internal-IP", "string", ".status.addresses[?(@.type=='InternalIP')].address", "List of addresses reachable to the node.", 1),
    PrinterColumn::path("External-IP", "string", ".status.addresses[?(@.type=='ExternalIP')].address", "List of addresses reachable to the node.", 1),
    PrinterColumn::path("OS-Image", "string", ".status.nodeInfo.osImage", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).", 1),
    PrinterColumn::path("Kernel-Version", "string", ".status.nodeInfo.kernelVersion", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", 1),
    PrinterColumn::path("Container-Runtime", "string", ".status.nodeInfo.containerRuntimeVersion", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).", 1),
];

const PVC_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::path("Status", "string", ".status.phase", "Phase represents the current phase of PersistentVolumeClaim.", 0),
    PrinterColumn::path("Volume", "string", ".spec.volumeName", "VolumeName is the binding reference to the PersistentVolume backing this claim.", 0),
    PrinterColumn::path("Capacity", "string", ".status.capacity.storage", "Capacity represents the actual resources of the underlying volume.", 0),
    PrinterColumn::path("Access Modes", "string", ".status.accessModes", "AccessModes contains the actual access modes the volume backing the PVC has.", 0),
    PrinterColumn::path("StorageClass", "string", ".spec.storageClassName", "StorageClassName is the name of the StorageClass required by the claim.", 0),
    PrinterColumn::path("VolumeAttributesClass", "string", ".spec.volumeAttributesClassName", "VolumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim.", 0),
    PrinterColumn::AGE,
    PrinterColumn::path("VolumeMode", "string", ".spec.volumeMode", "volumeMode defines what type of volume is required by the claim.", 1),
];

const PV_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::path("Capacity", "string", ".spec.capacity.storage", "Capacity is the description of the persistent volume's resources and capacity.", 0),
    PrinterColumn::path("Access Modes", "string", ".spec.accessModes", "AccessModes contains all ways the volume can be mounted.", 0),
    PrinterColumn::path("Reclaim Policy", "string", ".spec.persistentVolumeReclaimPolicy", "What happens to a persistent volume when released from its claim.", 0),
    PrinterColumn::path("Status", "string", ".status.phase", "Phase indicates if a volume is available, bound to a claim, or released by a claim.", 0),
    PrinterColumn::path("Claim", "string", ".spec.claimRef.name", "ClaimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.", 0),
    PrinterColumn::path("StorageClass", "string", ".spec.storageClassName", "StorageClassName is the name of StorageClass to which this persistent volume belongs.", 0),
    PrinterColumn::AGE,
];

// kubernetes-nmstate's columns.
const NNCP_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::path(
        "Status",
        "string",
        ".status.conditions[?(@.type=='Available')].status",
        "Status",
        0,
    ),
    PrinterColumn::path(
        "Reason",
        "string",
        ".status.conditions[?(@.type=='Available')].reason",
        "Reason",
        0,
    ),
];

const NNCE_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::path(
        "Status",
        "string",
        ".status.conditions[?(@.status=='True')].type",
        "Status",
        0,
    ),
    PrinterColumn::path(
        "Reason",
        "string",
        ".status.conditions[?(@.status=='True')].reason",
        "Reason",
        0,
    ),
];

const CM_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::path(
        "Data",
        "string",
        ".data",
        "Data contains the configuration data.",
        0,
    ),
    PrinterColumn::AGE,
];

const EVENT_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::path("Last Seen", "date", ".lastTimestamp", "Time when this Event was last observed.", 0),
    PrinterColumn::path("Type", "string", ".type", "Type of this event (Normal, Warning), new types could be added in the future.", 0),
    PrinterColumn::path("Reason", "string", ".reason", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.", 0),
    PrinterColumn::path("Object", "string", ".involvedObject.name", "The object that this event is about.", 0),
    PrinterColumn::path("Message", "string", ".message", "A human-readable description of the status of this operation.", 0),
];

const SECRET_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::path(
        "Type",
        "string",
        ".type",
        "Used to facilitate programmatic handling of secret data.",
        0,
    ),
    PrinterColumn::AGE,
];

const SC_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::path("Provisioner", "string", ".provisioner", "Indicates the type of the provisioner.", 0),
    PrinterColumn::path("ReclaimPolicy", "string", ".reclaimPolicy", "Dynamically provisioned PersistentVolumes of this storage class are created with this reclaimPolicy.", 0),
    PrinterColumn::path("VolumeBindingMode", "string", ".volumeBindingMode", "VolumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.", 0),
    PrinterColumn::path("AllowVolumeExpansion", "string", ".allowVolumeExpansion", "AllowVolumeExpansion shows whether the storage class allow volume expand.", 0),
    PrinterColumn::AGE,
];

const AGE_ONLY: &[PrinterColumn] = &[PrinterColumn::AGE];

kind!(
    vm: crate::kubevirt::virtualmachine::VirtualMachine,
    validate: crate::kubevirt::validation::validate_vm,
    default: crate::kubevirt::defaults::default_vm,
    ResourceDef {
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
        columns: VM_COLUMNS,
    }
);

kind!(
    vmi: crate::kubevirt::virtualmachineinstance::VirtualMachineInstance,
    validate: crate::kubevirt::validation::validate_vmi,
    default: crate::kubevirt::defaults::default_vmi,
    ResourceDef {
        group: "kubevirt.io",
        version: "v1",
        kind: "VirtualMachineInstance",
        list_kind: "VirtualMachineInstanceList",
        plural: "virtualmachineinstances",
        singular: "virtualmachineinstance",
        short_names: &["vmi", "vmis"],
        categories: &["all"],
        namespaced: true,
        has_status: true,
        verbs: VERBS,
        columns: VMI_COLUMNS,
    }
);

kind!(
    vmim: crate::kubevirt::migration::VirtualMachineInstanceMigration,
    validate: crate::kubevirt::validation::validate_migration,
    default: crate::kubevirt::defaults::default_migration,
    ResourceDef {
        group: "kubevirt.io",
        version: "v1",
        kind: "VirtualMachineInstanceMigration",
        list_kind: "VirtualMachineInstanceMigrationList",
        plural: "virtualmachineinstancemigrations",
        singular: "virtualmachineinstancemigration",
        short_names: &["vmim", "vmims"],
        categories: &["all"],
        namespaced: true,
        has_status: true,
        verbs: VERBS,
        columns: VMIM_COLUMNS,
    }
);

kind!(
    dv: crate::cdi::datavolume::DataVolume,
    validate: crate::cdi::validation::validate_dv,
    default: no_defaults,
    ResourceDef {
        group: "cdi.kubevirt.io",
        version: "v1beta1",
        kind: "DataVolume",
        list_kind: "DataVolumeList",
        plural: "datavolumes",
        singular: "datavolume",
        short_names: &["dv", "dvs"],
        categories: &["all"],
        namespaced: true,
        has_status: true,
        verbs: VERBS,
        columns: DV_COLUMNS,
    }
);

kind!(
    ns: crate::core::namespace::Namespace,
    validate: crate::core::namespace::validate,
    default: crate::core::namespace::default,
    ResourceDef {
        group: "",
        version: "v1",
        kind: "Namespace",
        list_kind: "NamespaceList",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        categories: &[],
        namespaced: false,
        has_status: true,
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        columns: NS_COLUMNS,
    }
);

kind!(
    node: crate::core::node::Node,
    validate: crate::core::node::validate,
    default: crate::core::node::default,
    ResourceDef {
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
        columns: NODE_COLUMNS,
    }
);

kind!(
    pvc: crate::core::pvc::PersistentVolumeClaim,
    validate: crate::core::pvc::validate,
    default: crate::core::pvc::default,
    ResourceDef {
        group: "",
        version: "v1",
        kind: "PersistentVolumeClaim",
        list_kind: "PersistentVolumeClaimList",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        short_names: &["pvc"],
        categories: &[],
        namespaced: true,
        has_status: true,
        verbs: VERBS,
        columns: PVC_COLUMNS,
    }
);

kind!(
    pv: crate::core::pv::PersistentVolume,
    validate: crate::core::pv::validate,
    default: crate::core::pv::default,
    ResourceDef {
        group: "",
        version: "v1",
        kind: "PersistentVolume",
        list_kind: "PersistentVolumeList",
        plural: "persistentvolumes",
        singular: "persistentvolume",
        short_names: &["pv"],
        categories: &[],
        namespaced: false,
        has_status: true,
        verbs: VERBS,
        columns: PV_COLUMNS,
    }
);

kind!(
    cm: crate::core::configmap::ConfigMap,
    validate: crate::core::configmap::validate,
    default: crate::core::configmap::default,
    ResourceDef {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        list_kind: "ConfigMapList",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        categories: &[],
        namespaced: true,
        has_status: false,
        verbs: VERBS,
        columns: CM_COLUMNS,
    }
);

kind!(
    event: crate::core::event::Event,
    validate: crate::core::event::validate,
    default: crate::core::event::default,
    ResourceDef {
        group: "",
        version: "v1",
        kind: "Event",
        list_kind: "EventList",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        categories: &[],
        namespaced: true,
        has_status: false,
        verbs: VERBS,
        columns: EVENT_COLUMNS,
    }
);

kind!(
    secret: crate::core::secret::Secret,
    validate: crate::core::secret::validate,
    default: crate::core::secret::default,
    ResourceDef {
        group: "",
        version: "v1",
        kind: "Secret",
        list_kind: "SecretList",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        categories: &[],
        namespaced: true,
        has_status: false,
        verbs: VERBS,
        columns: SECRET_COLUMNS,
    }
);

kind!(
    sc: crate::storage::storageclass::StorageClass,
    validate: crate::storage::storageclass::validate,
    default: crate::storage::storageclass::default,
    ResourceDef {
        group: "storage.k8s.io",
        version: "v1",
        kind: "StorageClass",
        list_kind: "StorageClassList",
        plural: "storageclasses",
        singular: "storageclass",
        short_names: &["sc"],
        categories: &[],
        namespaced: false,
        has_status: false,
        verbs: VERBS,
        columns: SC_COLUMNS,
    }
);

kind!(
    nad: crate::network::attachment::NetworkAttachmentDefinition,
    validate: crate::network::attachment::validate,
    default: crate::network::attachment::default,
    ResourceDef {
        group: "k8s.cni.cncf.io",
        version: "v1",
        kind: "NetworkAttachmentDefinition",
        list_kind: "NetworkAttachmentDefinitionList",
        plural: "network-attachment-definitions",
        singular: "network-attachment-definition",
        short_names: &["net-attach-def"],
        categories: &[],
        namespaced: true,
        has_status: false,
        verbs: VERBS,
        columns: AGE_ONLY,
    }
);

kind!(
    nncp: crate::network::policy::NodeNetworkConfigurationPolicy,
    validate: crate::network::policy::validate,
    default: crate::network::policy::default,
    ResourceDef {
        group: "nmstate.io",
        version: "v1",
        kind: "NodeNetworkConfigurationPolicy",
        list_kind: "NodeNetworkConfigurationPolicyList",
        plural: "nodenetworkconfigurationpolicies",
        singular: "nodenetworkconfigurationpolicy",
        short_names: &["nncp"],
        categories: &[],
        namespaced: false,
        has_status: true,
        verbs: VERBS,
        columns: NNCP_COLUMNS,
    }
);

kind!(
    nnce: crate::network::policy::NodeNetworkConfigurationEnactment,
    validate: crate::network::policy::validate_enactment,
    default: crate::network::policy::default,
    ResourceDef {
        group: "nmstate.io",
        version: "v1",
        kind: "NodeNetworkConfigurationEnactment",
        list_kind: "NodeNetworkConfigurationEnactmentList",
        plural: "nodenetworkconfigurationenactments",
        singular: "nodenetworkconfigurationenactment",
        short_names: &["nnce"],
        categories: &[],
        namespaced: false,
        has_status: true,
        verbs: VERBS,
        columns: NNCE_COLUMNS,
    }
);

kind!(
    hco: crate::hco::hyperconverged::HyperConverged,
    validate: crate::hco::hyperconverged::validate,
    default: crate::hco::hyperconverged::default,
    ResourceDef {
        group: "hco.kubevirt.io",
        version: "v1beta1",
        kind: "HyperConverged",
        list_kind: "HyperConvergedList",
        plural: "hyperconvergeds",
        singular: "hyperconverged",
        short_names: &["hco", "hcos"],
        categories: &[],
        namespaced: true,
        has_status: true,
        verbs: VERBS,
        columns: AGE_ONLY,
    }
);

static RESOURCES: &[ResourceDef] = &[
    vm::DEF,
    vmi::DEF,
    vmim::DEF,
    dv::DEF,
    ns::DEF,
    node::DEF,
    pvc::DEF,
    pv::DEF,
    cm::DEF,
    event::DEF,
    secret::DEF,
    sc::DEF,
    nad::DEF,
    nncp::DEF,
    nnce::DEF,
    hco::DEF,
];

/// Every resource monovirt serves: KubeVirt's VirtualMachine, VirtualMachineInstance and
/// VirtualMachineInstanceMigration; CDI's DataVolume; core Namespace, Node,
/// PersistentVolumeClaim, PersistentVolume, Secret, ConfigMap and Event; StorageClass; multus' NetworkAttachmentDefinition; nmstate's
/// NodeNetworkConfigurationPolicy and NodeNetworkConfigurationEnactment; and
/// the HyperConverged settings singleton.
///
/// ```
/// let kinds: Vec<_> = api::resources().iter().map(|d| d.kind).collect();
/// assert!(kinds.contains(&"VirtualMachine"));
/// assert!(kinds.contains(&"Namespace"));
/// ```
pub fn resources() -> &'static [ResourceDef] {
    RESOURCES
}

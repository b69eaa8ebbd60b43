//! VirtualMachineInstance (`kubevirt.io/v1`): one running virtual machine. Its spec is the
//! hardware (domain), volumes, networks and scheduling constraints; its status is written by
//! the scheduler and the node agent (phase, node, interfaces, guest OS, migration state).

use super::condition::Condition;
use super::domain::{Cpu, DomainSpec, Machine};
use super::network::Network;
use super::volume::Volume;
use crate::unstructured::Unstructured;
use k8s_openapi::api::core::v1::{Affinity, PodDNSConfig, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;
use std::collections::BTreeMap;

/// The grace period KubeVirt applies when `terminationGracePeriodSeconds` is unset
/// (`v1.DefaultGracePeriodSeconds`; the field itself is not defaulted into the object).
pub const DEFAULT_GRACE_PERIOD_SECONDS: i64 = 30;

/// A VirtualMachineInstance: a virtual machine that is (about to be) running.
///
/// ```
/// use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;
/// let vmi: VirtualMachineInstance = serde_json::from_value(serde_json::json!({
///     "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
///     "metadata": {"name": "testvmi"},
///     "spec": {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}},
/// })).unwrap();
/// assert_eq!(vmi.termination_grace_period_seconds(), 30);
/// ```
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(
    description = "VirtualMachineInstance is *the* VirtualMachineInstance Definition. It represents a virtual machine in the runtime environment of kubernetes."
)]
pub struct VirtualMachineInstance {
    /// APIVersion defines the versioned schema of this representation of an object: `kubevirt.io/v1`.
    pub api_version: String,
    /// Kind is a string value representing the REST resource this object represents: `VirtualMachineInstance`.
    pub kind: String,
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// VirtualMachineInstance Spec contains the VirtualMachineInstance specification.
    pub spec: VirtualMachineInstanceSpec,
    /// Status is the high level overview of how the VirtualMachineInstance is doing. It
    /// contains information available to controllers and users.
    pub status: Option<VirtualMachineInstanceStatus>,
}

impl VirtualMachineInstance {
    /// The grace period to give the guest to shut down: the spec's, or KubeVirt's default of 30s.
    pub fn termination_grace_period_seconds(&self) -> i64 {
        self.spec
            .termination_grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS)
    }
}

/// What to do with a VMI when its node is drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EvictionStrategy {
    /// Let the VMI be stopped.
    None,
    /// Live-migrate the VMI; block the drain if it cannot be migrated.
    LiveMigrate,
    /// Live-migrate the VMI if it is migratable, otherwise stop it.
    LiveMigrateIfPossible,
    /// Let an external controller handle the eviction.
    External,
}

/// The specification of a VirtualMachineInstance.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualMachineInstanceSpec {
    /// The priority class of the VMI's pod.
    pub priority_class_name: Option<String>,
    /// Specification of the virtual machine's hardware.
    pub domain: DomainSpec,
    /// Only nodes with all these labels can run the VMI.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Node and pod affinity and anti-affinity scheduling constraints.
    pub affinity: Option<Affinity>,
    /// The scheduler to use; monovirt's when unset.
    pub scheduler_name: Option<String>,
    /// Taints the VMI tolerates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// How VMIs are spread across topology domains.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// What to do when the node is drained: None, LiveMigrate, LiveMigrateIfPossible or External.
    pub eviction_strategy: Option<EvictionStrategy>,
    /// `Paused` starts the VMI paused.
    pub start_strategy: Option<String>,
    /// Seconds the guest gets to shut down after an ACPI power-off before it is stopped.
    /// KubeVirt uses 30 when unset.
    pub termination_grace_period_seconds: Option<i64>,
    /// Volumes that disks can refer to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Periodic probe of guest liveness. Stored as given.
    pub liveness_probe: Option<Unstructured>,
    /// Periodic probe of guest readiness. Stored as given.
    pub readiness_probe: Option<Unstructured>,
    /// The guest's hostname. Defaults to the VMI's name.
    pub hostname: Option<String>,
    /// The DNS subdomain of the guest.
    pub subdomain: Option<String>,
    /// Networks that interfaces can refer to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,
    /// DNS policy: `ClusterFirst`, `Default`, `None`, ...
    pub dns_policy: Option<String>,
    /// DNS configuration of the guest.
    pub dns_config: Option<PodDNSConfig>,
    /// SSH keys and passwords to inject into the guest. Stored as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access_credentials: Vec<Unstructured>,
    /// The CPU architecture: `amd64`, `arm64`, `s390x` or `ppc64le`.
    pub architecture: Option<String>,
    /// Dynamic resource allocation claims. Stored as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_claims: Vec<Unstructured>,
}

/// The phase of a VirtualMachineInstance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum VirtualMachineInstancePhase {
    /// Accepted, not yet scheduled.
    #[default]
    Pending,
    /// Being scheduled onto a node.
    Scheduling,
    /// Bound to a node; the node agent is starting it.
    Scheduled,
    /// The guest is running.
    Running,
    /// The guest stopped cleanly.
    Succeeded,
    /// The guest or its start failed.
    Failed,
    /// The state cannot be obtained.
    Unknown,
}

impl VirtualMachineInstancePhase {
    /// Whether the VMI will never run again (Succeeded or Failed).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// When the VMI entered a phase.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PhaseTransitionTimestamp {
    /// The phase entered.
    pub phase: Option<VirtualMachineInstancePhase>,
    /// When it was entered.
    pub phase_transition_timestamp: Option<Time>,
}

/// The observed state of a VirtualMachineInstance.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualMachineInstanceStatus {
    /// The node the VMI is scheduled on.
    pub node_name: Option<String>,
    /// A brief CamelCase message saying why the VMI is in this state.
    pub reason: Option<String>,
    /// Conditions: Ready, LiveMigratable, Paused, AgentConnected, ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Pending, Scheduling, Scheduled, Running, Succeeded, Failed or Unknown.
    pub phase: Option<VirtualMachineInstancePhase>,
    /// When each phase was entered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phase_transition_timestamps: Vec<PhaseTransitionTimestamp>,
    /// The guest's network interfaces as observed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceStatus>,
    /// The guest operating system, as reported by the guest agent.
    #[serde(rename = "guestOSInfo")]
    pub guest_os_info: Option<GuestOsInfo>,
    /// The state of the last (or current) live migration.
    pub migration_state: Option<MigrationState>,
    /// `BlockMigration` or `LiveMigration`.
    pub migration_method: Option<String>,
    /// How migration traffic is carried (`Unix`).
    pub migration_transport: Option<String>,
    /// The QoS class of the VMI (`Guaranteed`, `Burstable`, `BestEffort`).
    pub qos_class: Option<String>,
    /// The version of the launcher that runs the VMI.
    pub launcher_container_image_version: Option<String>,
    /// The node being evacuated, when the VMI is to be migrated off it.
    pub evacuation_node_name: Option<String>,
    /// Pods running this VMI, by uid, with their node.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub active_pods: BTreeMap<String, String>,
    /// Status of each volume (hotplug, size, ...). Stored as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_status: Vec<Unstructured>,
    /// Status of direct kernel boot. Stored as given.
    pub kernel_boot_status: Option<Unstructured>,
    /// `frozen` while the guest filesystems are frozen.
    pub fs_freeze_status: Option<String>,
    /// Topology hints. Stored as given.
    pub topology_hints: Option<Unstructured>,
    /// The ControllerRevision of the VM spec this VMI was created from.
    pub virtual_machine_revision_name: Option<String>,
    /// The user the VMI runs as.
    pub runtime_user: Option<u64>,
    /// The vsock context id of the guest.
    #[serde(rename = "VSOCKCID")]
    pub vsock_cid: Option<u32>,
    /// The SELinux context of the VMI.
    pub selinux_context: Option<String>,
    /// The machine type the guest runs with.
    pub machine: Option<Machine>,
    /// The current CPU topology (changes with CPU hotplug).
    #[serde(rename = "currentCPUTopology")]
    pub current_cpu_topology: Option<CpuTopology>,
    /// Guest memory at boot, now and requested.
    pub memory: Option<MemoryStatus>,
    /// Volumes migrated to other storage. Stored as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub migrated_volumes: Vec<Unstructured>,
    /// Status of host and GPU devices. Stored as given.
    pub device_status: Option<Unstructured>,
}

impl VirtualMachineInstanceStatus {
    /// The condition of `type_` (`Ready`, `LiveMigratable`, `Paused`, ...), if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        super::condition::find(&self.conditions, type_)
    }

    /// Whether the `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        self.condition("Ready").is_some_and(Condition::is_true)
    }
}

/// Sockets, cores and threads of the running guest.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CpuTopology {
    /// Number of cores.
    pub cores: Option<u32>,
    /// Number of sockets.
    pub sockets: Option<u32>,
    /// Number of threads.
    pub threads: Option<u32>,
}

impl From<&Cpu> for CpuTopology {
    fn from(cpu: &Cpu) -> Self {
        Self {
            cores: cpu.cores,
            sockets: cpu.sockets,
            threads: cpu.threads,
        }
    }
}

/// Guest memory of the running VMI.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MemoryStatus {
    /// Guest memory at boot.
    pub guest_at_boot: Option<Quantity>,
    /// Guest memory now.
    pub guest_current: Option<Quantity>,
    /// Guest memory requested (memory hotplug).
    pub guest_requested: Option<Quantity>,
}

/// A network interface of the guest, as observed.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct InterfaceStatus {
    /// The primary IP address of the interface.
    pub ip_address: Option<String>,
    /// The MAC address of the interface.
    pub mac: Option<String>,
    /// The name of the interface in the VMI spec.
    pub name: Option<String>,
    /// All IP addresses of the interface.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    /// The name of the pod-side interface.
    pub pod_interface_name: Option<String>,
    /// The name of the interface inside the guest, e.g. `eth0`.
    pub interface_name: Option<String>,
    /// Where the information comes from: `domain`, `guest-agent`, `multus-status`.
    pub info_source: Option<String>,
    /// The number of queues of the interface.
    pub queue_count: Option<i32>,
    /// The link state, `up` or `down`.
    pub link_state: Option<String>,
}

/// The guest operating system, as reported by the guest agent.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct GuestOsInfo {
    /// The OS name, e.g. `Fedora Linux`.
    pub name: Option<String>,
    /// The kernel release, e.g. `6.8.5-301.fc40.x86_64`.
    pub kernel_release: Option<String>,
    /// The OS version.
    pub version: Option<String>,
    /// The OS pretty name.
    pub pretty_name: Option<String>,
    /// The OS version id.
    pub version_id: Option<String>,
    /// The kernel version.
    pub kernel_version: Option<String>,
    /// The machine architecture, e.g. `x86_64`.
    pub machine: Option<String>,
    /// The OS id, e.g. `fedora`.
    pub id: Option<String>,
}

/// The state of a live migration of this VMI.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MigrationState {
    /// When the migration started.
    pub start_timestamp: Option<Time>,
    /// When the migration ended.
    pub end_timestamp: Option<Time>,
    /// Whether the target node detected the incoming domain.
    pub target_node_domain_detected: Option<bool>,
    /// When the domain became ready on the target node.
    pub target_node_domain_ready_timestamp: Option<Time>,
    /// The address of the target node's migration endpoint.
    pub target_node_address: Option<String>,
    /// Ports the target node listens on for direct migration, by port and purpose.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub target_direct_migration_node_ports: BTreeMap<String, i64>,
    /// The target node.
    pub target_node: Option<String>,
    /// The target pod.
    pub target_pod: Option<String>,
    /// The source node.
    pub source_node: Option<String>,
    /// The source pod.
    pub source_pod: Option<String>,
    /// Whether the migration completed.
    pub completed: Option<bool>,
    /// Whether the migration failed.
    pub failed: Option<bool>,
    /// Whether an abort was requested.
    pub abort_requested: Option<bool>,
    /// `Succeeded`, `Failed` or `Aborting`.
    pub abort_status: Option<String>,
    /// Why the migration failed.
    pub failure_reason: Option<String>,
    /// The uid of the VirtualMachineInstanceMigration.
    pub migration_uid: Option<String>,
    /// `PreCopy`, `PostCopy`.
    pub mode: Option<String>,
    /// The MigrationPolicy applied.
    pub migration_policy_name: Option<String>,
    /// The migration configuration applied. Stored as given.
    pub migration_configuration: Option<Unstructured>,
    /// The CPUs the target pod got.
    #[serde(rename = "targetCPUSet", skip_serializing_if = "Vec::is_empty")]
    pub target_cpu_set: Vec<i64>,
    /// The NUMA topology of the target node.
    pub target_node_topology: Option<String>,
}

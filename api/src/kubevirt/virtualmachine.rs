//! VirtualMachine (`kubevirt.io/v1`): a stateful virtual machine whose VirtualMachineInstance
//! the VM controller creates and deletes as `runStrategy` (or the older `running`) says.

use super::condition::Condition;
use super::virtualmachineinstance::VirtualMachineInstanceSpec;
use crate::cdi::datavolume::{DataVolumeSpec, DataVolumeStatus};
use crate::unstructured::Unstructured;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;
use std::collections::BTreeMap;

/// A VirtualMachine: the definition of a virtual machine and whether it should run.
///
/// ```
/// use api::kubevirt::virtualmachine::{RunStrategy, VirtualMachine};
/// let vm: VirtualMachine = serde_json::from_value(serde_json::json!({
///     "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
///     "metadata": {"name": "vm-cirros"},
///     "spec": {"running": true, "template": {"spec": {"domain": {"devices": {}}}}},
/// })).unwrap();
/// assert_eq!(vm.spec.run_strategy(), RunStrategy::Always);
/// ```
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(
    description = "VirtualMachine handles the VirtualMachines that are not running or are in a stopped state. The VirtualMachine contains the template to create the VirtualMachineInstance. It also mirrors the running state of the created VirtualMachineInstance in its status."
)]
pub struct VirtualMachine {
    /// APIVersion defines the versioned schema of this representation of an object: `kubevirt.io/v1`.
    pub api_version: String,
    /// Kind is a string value representing the REST resource this object represents: `VirtualMachine`.
    pub kind: String,
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// Spec contains the specification of VirtualMachineInstance created.
    pub spec: VirtualMachineSpec,
    /// Status holds the current state of the controller and brief information about its
    /// associated VirtualMachineInstance.
    pub status: Option<VirtualMachineStatus>,
}

/// When the VM controller runs the VM's VirtualMachineInstance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RunStrategy {
    /// Keep a VMI running at all times; restart it whenever it stops.
    Always,
    /// Restart the VMI only if it failed; a clean guest shutdown stops the VM.
    RerunOnFailure,
    /// Run the VMI once; do not restart it when it stops.
    Once,
    /// The VMI is started and stopped only by explicit start/stop requests.
    Manual,
    /// Keep no VMI running.
    Halted,
    /// Create a VMI waiting to receive a migration from another cluster.
    WaitAsReceiver,
}

impl RunStrategy {
    /// The strategy's name as it appears in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::RerunOnFailure => "RerunOnFailure",
            Self::Once => "Once",
            Self::Manual => "Manual",
            Self::Halted => "Halted",
            Self::WaitAsReceiver => "WaitAsReceiver",
        }
    }
}

/// The specification of a VirtualMachine.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualMachineSpec {
    /// Running controls whether the associated VirtualMachineInstance is created or not.
    /// Mutually exclusive with runStrategy. Deprecated: use runStrategy.
    pub running: Option<bool>,
    /// Running state of the VirtualMachineInstance: Always, RerunOnFailure, Once, Manual
    /// or Halted. Mutually exclusive with running.
    pub run_strategy: Option<RunStrategy>,
    /// An instancetype to take CPU and memory from. Stored as given.
    pub instancetype: Option<Unstructured>,
    /// A preference to take device defaults from. Stored as given.
    pub preference: Option<Unstructured>,
    /// Template is the direct specification of the VirtualMachineInstance.
    pub template: Option<VirtualMachineInstanceTemplateSpec>,
    /// DataVolumes to create with the VM, and delete with it; volumes refer to them by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data_volume_templates: Vec<DataVolumeTemplateSpec>,
    /// How volume updates are rolled out: `Replacement` or `Migration`.
    pub update_volumes_strategy: Option<String>,
}

impl VirtualMachineSpec {
    /// The run strategy in effect: `runStrategy` if set, else `Always` for `running: true`
    /// and `Halted` for `running: false` or neither (as KubeVirt's VM controller derives it).
    pub fn run_strategy(&self) -> RunStrategy {
        match (self.run_strategy, self.running) {
            (Some(s), _) => s,
            (None, Some(true)) => RunStrategy::Always,
            (None, _) => RunStrategy::Halted,
        }
    }
}

/// The template a VMI is created from: its metadata (labels, annotations) and spec.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualMachineInstanceTemplateSpec {
    /// Labels and annotations given to the VMI.
    pub metadata: Option<ObjectMeta>,
    /// VirtualMachineInstance Spec contains the VirtualMachineInstance specification.
    pub spec: Option<VirtualMachineInstanceSpec>,
}

/// A DataVolume the VM owns (`spec.dataVolumeTemplates[]`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVolumeTemplateSpec {
    /// `cdi.kubevirt.io/v1beta1`, optional.
    pub api_version: Option<String>,
    /// `DataVolume`, optional.
    pub kind: Option<String>,
    /// The DataVolume's metadata; `name` is required.
    pub metadata: Option<ObjectMeta>,
    /// DataVolumeSpec contains the DataVolume specification.
    pub spec: DataVolumeSpec,
    /// DataVolumeTemplateDummyStatus is here simply for backwards compatibility.
    pub status: Option<DataVolumeStatus>,
}

impl VirtualMachineStatus {
    /// The condition of `type_` (`Ready`, `Failure`, `Paused`, ...), if present.
    ///
    /// ```
    /// use api::kubevirt::{condition::Condition, virtualmachine::VirtualMachineStatus};
    /// let s = VirtualMachineStatus { conditions: vec![Condition::new("Ready", true)], ..Default::default() };
    /// assert!(s.condition("Ready").unwrap().is_true());
    /// ```
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        super::condition::find(&self.conditions, type_)
    }
}

/// The VM's status as `kubectl get vm` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PrintableStatus {
    /// The VM is not running.
    Stopped,
    /// Resources for the VM (DataVolumes) are being provisioned.
    Provisioning,
    /// The VM is being prepared for running.
    Starting,
    /// The VM is running.
    Running,
    /// The VM is paused.
    Paused,
    /// The VM is being stopped.
    Stopping,
    /// The VM is being deleted.
    Terminating,
    /// The VM's VMI keeps failing and is being restarted with a back-off.
    CrashLoopBackOff,
    /// The VM is being migrated to another node.
    Migrating,
    /// The state of the VM could not be obtained.
    Unknown,
    /// The VMI could not be scheduled.
    #[serde(rename = "ErrorUnschedulable")]
    Unschedulable,
    /// A container disk image could not be pulled.
    ErrImagePull,
    /// A container disk image pull is being retried with a back-off.
    ImagePullBackOff,
    /// A PVC the VM refers to does not exist.
    #[serde(rename = "ErrorPvcNotFound")]
    PvcNotFound,
    /// A DataVolume the VM refers to failed.
    DataVolumeError,
    /// A PVC is waiting for its volume to be bound.
    WaitingForVolumeBinding,
    /// The VM waits to receive a migration from another cluster.
    WaitingForReceiver,
}

/// A request to start or stop the VM's VMI (from the start/stop subresources).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct StateChangeRequest {
    /// `Start` or `Stop`.
    pub action: String,
    /// Extra data for the request.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// The uid of the VMI the request applies to (for Stop).
    pub uid: Option<String>,
}

/// Failed start attempts, for the CrashLoopBackOff back-off.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct StartFailure {
    /// How many starts failed in a row.
    pub consecutive_fail_count: Option<i64>,
    /// The uid of the VMI that failed last.
    #[serde(rename = "lastFailedVMIUID")]
    pub last_failed_vmi_uid: Option<String>,
    /// No new VMI is created before this time.
    pub retry_after_timestamp: Option<Time>,
}

/// The observed state of a VirtualMachine.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualMachineStatus {
    /// The name of the snapshot in progress, if any.
    pub snapshot_in_progress: Option<String>,
    /// The name of the restore in progress, if any.
    pub restore_in_progress: Option<String>,
    /// Created indicates if the virtual machine is created in the cluster.
    pub created: Option<bool>,
    /// Ready indicates if the virtual machine is running and ready.
    pub ready: Option<bool>,
    /// PrintableStatus is a human readable, high-level representation of the status of the
    /// virtual machine.
    pub printable_status: Option<PrintableStatus>,
    /// The run strategy in effect.
    pub run_strategy: Option<RunStrategy>,
    /// Hold the state information of the VirtualMachine and its VirtualMachineInstance.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// StateChangeRequests indicates a list of actions that should be taken on a VMI, e.g.
    /// stop a specific VMI then start a new one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub state_change_requests: Vec<StateChangeRequest>,
    /// Volume hotplug requests. Stored as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_requests: Vec<Unstructured>,
    /// Which volumes can be snapshotted. Stored as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_snapshot_statuses: Vec<Unstructured>,
    /// Failed start attempts.
    pub start_failure: Option<StartFailure>,
    /// A memory dump request. Stored as given.
    pub memory_dump_request: Option<Unstructured>,
    /// The generation of the VM spec the VMI was created from.
    pub observed_generation: Option<i64>,
    /// The generation of the VM spec wanted.
    pub desired_generation: Option<i64>,
    /// The instancetype revision in use. Stored as given.
    pub instancetype_ref: Option<Unstructured>,
    /// The preference revision in use. Stored as given.
    pub preference_ref: Option<Unstructured>,
}

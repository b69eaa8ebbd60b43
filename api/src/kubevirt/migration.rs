//! VirtualMachineInstanceMigration (`kubevirt.io/v1`): a request to live-migrate one VMI to
//! another node, and the migration's progress.

use super::condition::Condition;
use super::virtualmachineinstance::MigrationState;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;
use std::collections::BTreeMap;

/// A live migration of the VMI named in `spec.vmiName`.
///
/// ```
/// use api::kubevirt::migration::VirtualMachineInstanceMigration;
/// let m: VirtualMachineInstanceMigration = serde_json::from_value(serde_json::json!({
///     "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
///     "metadata": {"name": "migration-job"}, "spec": {"vmiName": "vmi-fedora"},
/// })).unwrap();
/// assert_eq!(m.spec.vmi_name, "vmi-fedora");
/// ```
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(
    description = "VirtualMachineInstanceMigration represents the object tracking a VMI's migration to another host in the cluster"
)]
pub struct VirtualMachineInstanceMigration {
    /// APIVersion defines the versioned schema of this representation of an object: `kubevirt.io/v1`.
    pub api_version: String,
    /// Kind is a string value representing the REST resource this object represents.
    pub kind: String,
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// What to migrate.
    pub spec: VirtualMachineInstanceMigrationSpec,
    /// How the migration is going.
    pub status: Option<VirtualMachineInstanceMigrationStatus>,
}

/// What to migrate.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualMachineInstanceMigrationSpec {
    /// The name of the VMI to migrate (in the migration's namespace).
    pub vmi_name: String,
    /// Extra node labels the target node must have.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub added_node_selector: BTreeMap<String, String>,
}

/// The phase of a migration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum MigrationPhase {
    /// Accepted, not started.
    #[default]
    Pending,
    /// The target is being scheduled.
    Scheduling,
    /// The target node is chosen.
    Scheduled,
    /// The target is being prepared.
    PreparingTarget,
    /// The target is ready to receive the guest.
    TargetReady,
    /// Guest state is being transferred.
    Running,
    /// The guest runs on the target.
    Succeeded,
    /// The migration failed; the guest still runs on the source.
    Failed,
}

/// When the migration entered a phase.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MigrationPhaseTransitionTimestamp {
    /// The phase entered.
    pub phase: Option<MigrationPhase>,
    /// When it was entered.
    pub phase_transition_timestamp: Option<Time>,
}

/// How a migration is going.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualMachineInstanceMigrationStatus {
    /// Pending, Scheduling, Scheduled, PreparingTarget, TargetReady, Running, Succeeded or Failed.
    pub phase: Option<MigrationPhase>,
    /// Conditions of the migration.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When each phase was entered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phase_transition_timestamps: Vec<MigrationPhaseTransitionTimestamp>,
    /// The migration state, as also mirrored into the VMI's status.
    pub migration_state: Option<MigrationState>,
}

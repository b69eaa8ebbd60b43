//! HyperConverged (`hco.kubevirt.io/v1beta1`): cluster-wide settings. As with the
//! HyperConverged Cluster Operator, there is exactly one, named `kubevirt-hyperconverged`.

use crate::kubevirt::virtualmachineinstance::EvictionStrategy;
use crate::status::Cause;
use crate::unstructured::Unstructured;
use crate::validation::{invalid, not_supported};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;

/// The only name a HyperConverged may have.
pub const SINGLETON_NAME: &str = "kubevirt-hyperconverged";

/// The cluster-wide virtualization settings.
///
/// ```
/// use api::hco::hyperconverged::HyperConverged;
/// let hc: HyperConverged = serde_json::from_value(serde_json::json!({
///     "apiVersion": "hco.kubevirt.io/v1beta1", "kind": "HyperConverged",
///     "metadata": {"name": "kubevirt-hyperconverged"},
///     "spec": {"liveMigrationConfig": {"parallelMigrationsPerCluster": 5}}})).unwrap();
/// assert_eq!(hc.spec.live_migration_config.unwrap().parallel_migrations_per_cluster, Some(5));
/// ```
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(description = "HyperConverged is the Schema for the hyperconvergeds API")]
pub struct HyperConverged {
    /// APIVersion defines the versioned schema of this representation of an object: `hco.kubevirt.io/v1beta1`.
    pub api_version: String,
    /// Kind is a string value representing the REST resource this object represents.
    pub kind: String,
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// HyperConvergedSpec defines the desired state of HyperConverged.
    pub spec: HyperConvergedSpec,
    /// HyperConvergedStatus defines the observed state of HyperConverged.
    pub status: Option<Unstructured>,
}

/// Cluster-wide settings.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HyperConvergedSpec {
    /// Placement of infrastructure components. Stored as given.
    pub infra: Option<Unstructured>,
    /// Placement of workloads (VMs). Stored as given.
    pub workloads: Option<Unstructured>,
    /// Feature gates to enable. Stored as given.
    pub feature_gates: Option<Unstructured>,
    /// Live migration limits and timeouts.
    pub live_migration_config: Option<LiveMigrationConfig>,
    /// The default eviction strategy of VMIs that set none.
    pub eviction_strategy: Option<EvictionStrategy>,
    /// The CPU model of VMIs that set none.
    #[serde(rename = "defaultCPUModel")]
    pub default_cpu_model: Option<String>,
    /// The StorageClass for persistent VM state (TPM, EFI).
    pub vm_state_storage_class: Option<String>,
    /// Certificate rotation settings. Stored as given.
    pub cert_config: Option<Unstructured>,
    /// How VMs are updated when monovirt is. Stored as given.
    pub workload_update_strategy: Option<Unstructured>,
    /// Resource requirements of the platform components. Stored as given.
    pub resource_requirements: Option<Unstructured>,
    /// Image import settings. Stored as given.
    pub storage_import: Option<Unstructured>,
    /// Host devices VMs may use. Stored as given.
    pub permitted_host_devices: Option<Unstructured>,
    /// Mediated device configuration. Stored as given.
    pub mediated_devices_configuration: Option<Unstructured>,
    /// Obsolete CPU models. Stored as given.
    #[serde(rename = "obsoleteCPUs")]
    pub obsolete_cpus: Option<Unstructured>,
    /// Log verbosity of the components. Stored as given.
    pub log_verbosity_config: Option<Unstructured>,
    /// Options for virtual machines. Stored as given.
    pub virtual_machine_options: Option<Unstructured>,
    /// Memory overcommit, percent of guest memory requested from the node (100: none).
    pub higher_workload_density: Option<Unstructured>,
}

/// Live migration limits and timeouts.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LiveMigrationConfig {
    /// The most migrations running at once in the cluster (default 5).
    pub parallel_migrations_per_cluster: Option<u32>,
    /// The most outbound migrations per node (default 2).
    pub parallel_outbound_migrations_per_node: Option<u32>,
    /// Bandwidth limit of each migration, e.g. `64Mi` (0: unlimited).
    pub bandwidth_per_migration: Option<Quantity>,
    /// Seconds per GiB of guest memory before a migration is cancelled (default 150).
    #[serde(rename = "completionTimeoutPerGiB")]
    pub completion_timeout_per_gib: Option<i64>,
    /// Seconds without progress before a migration is cancelled (default 150).
    pub progress_timeout: Option<i64>,
    /// A NetworkAttachmentDefinition to carry migration traffic.
    pub network: Option<String>,
    /// Allow auto-converge (throttling the guest) to finish a migration.
    pub allow_auto_converge: Option<bool>,
    /// Allow post-copy migration.
    pub allow_post_copy: Option<bool>,
}

/// Defaults a HyperConverged as the HCO CRD's schema defaults do for live migration:
/// 5 migrations per cluster, 2 outbound per node, 150 s per GiB to complete, 150 s without
/// progress, no auto-converge and no post-copy. Values given are kept.
///
/// ```
/// let mut hc = serde_json::json!({"metadata": {"name": "kubevirt-hyperconverged"},
///     "spec": {"liveMigrationConfig": {"parallelMigrationsPerCluster": 10}}});
/// api::hco::hyperconverged::default(&mut hc);
/// let lm = &hc["spec"]["liveMigrationConfig"];
/// assert_eq!(lm["parallelMigrationsPerCluster"], 10);
/// assert_eq!(lm["parallelOutboundMigrationsPerNode"], 2);
/// ```
pub fn default(obj: &mut Value) {
    crate::overlay::apply_typed::<HyperConverged>(obj, |hc| {
        let lm = hc
            .spec
            .live_migration_config
            .get_or_insert_with(LiveMigrationConfig::default);
        lm.parallel_migrations_per_cluster.get_or_insert(5);
        lm.parallel_outbound_migrations_per_node.get_or_insert(2);
        lm.completion_timeout_per_gib.get_or_insert(150);
        lm.progress_timeout.get_or_insert(150);
        lm.allow_auto_converge.get_or_insert(false);
        lm.allow_post_copy.get_or_insert(false);
    });
}

/// Validates the singleton: its name, and the live migration settings.
///
/// ```
/// let causes = api::hco::hyperconverged::validate(&serde_json::json!({"metadata": {"name": "other"}, "spec": {}}));
/// assert_eq!(causes[0].field, "metadata.name");
/// ```
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !name.is_empty() && name != SINGLETON_NAME {
        causes.push(not_supported(
            "metadata.name",
            &Value::from(name),
            &[SINGLETON_NAME],
        ));
    }
    let hc: HyperConverged = match crate::schema::decode(obj) {
        Ok(h) => h,
        Err(c) => return vec![c],
    };
    if let Some(lm) = &hc.spec.live_migration_config {
        for (f, v) in [
            (
                "parallelMigrationsPerCluster",
                lm.parallel_migrations_per_cluster,
            ),
            (
                "parallelOutboundMigrationsPerNode",
                lm.parallel_outbound_migrations_per_node,
            ),
        ] {
            if v == Some(0) {
                causes.push(invalid(
                    format!("spec.liveMigrationConfig.{f}"),
                    &Value::from(0),
                    "must be greater than 0",
                ));
            }
        }
        if let Some(b) = &lm.bandwidth_per_migration {
            if let Err(e) = crate::quantity::parse(&b.0) {
                causes.push(invalid(
                    "spec.liveMigrationConfig.bandwidthPerMigration",
                    &Value::from(b.0.as_str()),
                    &e.to_string(),
                ));
            }
        }
    }
    causes
}

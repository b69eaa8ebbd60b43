//! Volumes of a VirtualMachineInstance (`spec.volumes[]`): where each disk's data comes from
//! (containerDisk, dataVolume, persistentVolumeClaim, cloud-init, emptyDisk, hostDisk, ...).

use crate::unstructured::Unstructured;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// A named volume with exactly one source.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Volume {
    /// The volume's name; disks refer to it. Must be a DNS-1123 label.
    pub name: String,
    /// An ephemeral disk from a container image; changes are lost when the VMI stops.
    pub container_disk: Option<ContainerDiskSource>,
    /// An ephemeral copy-on-write layer over a PVC. Stored as given.
    pub ephemeral: Option<Unstructured>,
    /// A cloud-init NoCloud data source.
    pub cloud_init_no_cloud: Option<CloudInitSource>,
    /// A cloud-init ConfigDrive data source.
    pub cloud_init_config_drive: Option<CloudInitSource>,
    /// A PersistentVolumeClaim in the VMI's namespace.
    pub persistent_volume_claim: Option<PersistentVolumeClaimSource>,
    /// A DataVolume in the VMI's namespace (its PVC is used once it is ready).
    pub data_volume: Option<DataVolumeSource>,
    /// A sparse, empty, temporary disk that lives as long as the VMI.
    pub empty_disk: Option<EmptyDiskSource>,
    /// A disk image file on the host.
    pub host_disk: Option<HostDiskSource>,
    /// A ConfigMap exposed as a disk or filesystem. Stored as given.
    pub config_map: Option<Unstructured>,
    /// A Secret exposed as a disk or filesystem. Stored as given.
    pub secret: Option<Unstructured>,
    /// A service account token exposed as a disk. Stored as given.
    pub service_account: Option<Unstructured>,
    /// Downward API data exposed as a disk. Stored as given.
    #[serde(rename = "downwardAPI")]
    pub downward_api: Option<Unstructured>,
    /// Sysprep data for Windows guests. Stored as given.
    pub sysprep: Option<Unstructured>,
    /// A PVC to dump guest memory into. Stored as given.
    pub memory_dump: Option<Unstructured>,
    /// Host metrics exposed to the guest. Stored as given.
    pub downward_metrics: Option<Unstructured>,
}

impl Volume {
    /// The names of the sources set on this volume (normally exactly one).
    pub fn sources(&self) -> Vec<&'static str> {
        let pairs: [(&'static str, bool); 15] = [
            ("containerDisk", self.container_disk.is_some()),
            ("ephemeral", self.ephemeral.is_some()),
            ("cloudInitNoCloud", self.cloud_init_no_cloud.is_some()),
            (
                "cloudInitConfigDrive",
                self.cloud_init_config_drive.is_some(),
            ),
            (
                "persistentVolumeClaim",
                self.persistent_volume_claim.is_some(),
            ),
            ("dataVolume", self.data_volume.is_some()),
            ("emptyDisk", self.empty_disk.is_some()),
            ("hostDisk", self.host_disk.is_some()),
            ("configMap", self.config_map.is_some()),
            ("secret", self.secret.is_some()),
            ("serviceAccount", self.service_account.is_some()),
            ("downwardAPI", self.downward_api.is_some()),
            ("sysprep", self.sysprep.is_some()),
            ("memoryDump", self.memory_dump.is_some()),
            ("downwardMetrics", self.downward_metrics.is_some()),
        ];
        pairs.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect()
    }
}

/// A disk image in a container image registry.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerDiskSource {
    /// The image, e.g. `quay.io/kubevirt/cirros-container-disk-demo`.
    pub image: String,
    /// Name of a Secret with the credentials to pull the image.
    pub image_pull_secret: Option<String>,
    /// Path of the disk image inside the container image.
    pub path: Option<String>,
    /// `Always`, `Never` or `IfNotPresent`. Defaults to `Always` for `:latest` or untagged
    /// images, `IfNotPresent` otherwise.
    pub image_pull_policy: Option<String>,
}

/// A reference to a Secret by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalObjectReference {
    /// The name of the referent.
    pub name: String,
}

/// cloud-init user and network data (NoCloud or ConfigDrive).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CloudInitSource {
    /// A Secret holding the user data (key `userdata` or `userData`).
    pub secret_ref: Option<LocalObjectReference>,
    /// The user data, base64-encoded.
    pub user_data_base64: Option<String>,
    /// The user data inline, e.g. a `#cloud-config` document.
    pub user_data: Option<String>,
    /// A Secret holding the network data (key `networkdata` or `networkData`).
    pub network_data_secret_ref: Option<LocalObjectReference>,
    /// The network data, base64-encoded.
    pub network_data_base64: Option<String>,
    /// The network data inline.
    pub network_data: Option<String>,
}

/// A PersistentVolumeClaim volume.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PersistentVolumeClaimSource {
    /// The name of the PVC in the VMI's namespace.
    pub claim_name: String,
    /// Attach the volume read-only.
    pub read_only: Option<bool>,
    /// Whether the volume can be hot-plugged and hot-unplugged.
    pub hotpluggable: Option<bool>,
}

/// A DataVolume volume.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVolumeSource {
    /// The name of the DataVolume in the VMI's namespace.
    pub name: String,
    /// Whether the volume can be hot-plugged and hot-unplugged.
    pub hotpluggable: Option<bool>,
}

/// An empty, temporary disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct EmptyDiskSource {
    /// The size of the disk, e.g. `2Gi`.
    pub capacity: Quantity,
}

/// A disk image on the host's filesystem.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HostDiskSource {
    /// The path of the image file on the host.
    pub path: String,
    /// `Disk` (the file must exist) or `DiskOrCreate` (created with `capacity` if absent).
    #[serde(rename = "type")]
    pub type_: String,
    /// The size of the image to create (`DiskOrCreate`).
    pub capacity: Option<Quantity>,
    /// Whether the disk is shared between VMIs (enables live migration).
    pub shared: Option<bool>,
}

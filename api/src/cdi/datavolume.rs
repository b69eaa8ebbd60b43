//! DataVolume (`cdi.kubevirt.io/v1beta1`): a PVC together with where its content comes from
//! (an HTTP URL, a registry image, another PVC, an upload, or blank), and the import's progress.

use crate::unstructured::Unstructured;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaimSpec, TypedLocalObjectReference, TypedObjectReference,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// A DataVolume: a PVC and the source of its content.
///
/// ```
/// use api::cdi::datavolume::DataVolume;
/// let dv: DataVolume = serde_json::from_value(serde_json::json!({
///     "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
///     "metadata": {"name": "blank"},
///     "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}},
/// })).unwrap();
/// assert!(dv.spec.source.unwrap().blank.is_some());
/// ```
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(
    description = "DataVolume is an abstraction on top of PersistentVolumeClaims to allow easy population of those PersistentVolumeClaims with relation to VirtualMachines"
)]
pub struct DataVolume {
    /// APIVersion defines the versioned schema of this representation of an object: `cdi.kubevirt.io/v1beta1`.
    pub api_version: String,
    /// Kind is a string value representing the REST resource this object represents: `DataVolume`.
    pub kind: String,
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// DataVolumeSpec defines the DataVolume type specification.
    pub spec: DataVolumeSpec,
    /// DataVolumeStatus contains the current status of the DataVolume.
    pub status: Option<DataVolumeStatus>,
}

/// The specification of a DataVolume.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVolumeSpec {
    /// Source is the src of the data for the requested DataVolume.
    pub source: Option<DataVolumeSource>,
    /// SourceRef is an indirect reference to the source of data (a DataSource).
    pub source_ref: Option<DataVolumeSourceRef>,
    /// PVC is the PVC specification (exactly as given to the PVC).
    pub pvc: Option<PersistentVolumeClaimSpec>,
    /// Storage is the requested storage; unset fields are filled from the StorageClass
    /// and its StorageProfile.
    pub storage: Option<StorageSpec>,
    /// The priority class of the importer pod.
    pub priority_class_name: Option<String>,
    /// `kubevirt` (a disk image, the default) or `archive` (a tar to extract).
    pub content_type: Option<String>,
    /// Checkpoints for multi-stage imports. Stored as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<Unstructured>,
    /// Whether the last checkpoint is the final one.
    pub final_checkpoint: Option<bool>,
    /// Preallocate the whole disk image.
    pub preallocation: Option<bool>,
}

/// Where a DataVolume's content comes from; exactly one member is set.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVolumeSource {
    /// Import a disk image (raw, qcow2, optionally compressed) from an HTTP(S) URL.
    pub http: Option<DataVolumeSourceHttp>,
    /// Import from S3. Stored as given.
    pub s3: Option<Unstructured>,
    /// Import from Google Cloud Storage. Stored as given.
    pub gcs: Option<Unstructured>,
    /// Import a containerDisk image from a registry.
    pub registry: Option<DataVolumeSourceRegistry>,
    /// Clone another PVC.
    pub pvc: Option<DataVolumeSourcePvc>,
    /// Wait for an upload through the upload proxy.
    pub upload: Option<Unstructured>,
    /// Create an empty disk image.
    pub blank: Option<Unstructured>,
    /// Import from oVirt imageio. Stored as given.
    pub imageio: Option<Unstructured>,
    /// Import from VMware VDDK. Stored as given.
    pub vddk: Option<Unstructured>,
    /// Clone a VolumeSnapshot. Stored as given.
    pub snapshot: Option<Unstructured>,
}

impl DataVolumeSource {
    /// The names of the members set (normally exactly one).
    pub fn kinds(&self) -> Vec<&'static str> {
        let pairs: [(&'static str, bool); 10] = [
            ("http", self.http.is_some()),
            ("s3", self.s3.is_some()),
            ("gcs", self.gcs.is_some()),
            ("registry", self.registry.is_some()),
            ("pvc", self.pvc.is_some()),
            ("upload", self.upload.is_some()),
            ("blank", self.blank.is_some()),
            ("imageio", self.imageio.is_some()),
            ("vddk", self.vddk.is_some()),
            ("snapshot", self.snapshot.is_some()),
        ];
        pairs.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect()
    }
}

/// An HTTP(S) source.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVolumeSourceHttp {
    /// The URL of the image, e.g. `https://example.org/disk.qcow2`.
    pub url: String,
    /// A Secret with `accessKeyId` and `secretKey` for basic authentication.
    pub secret_ref: Option<String>,
    /// A ConfigMap with CA certificates for the server.
    pub cert_config_map: Option<String>,
    /// Extra request headers, `Name: value`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_headers: Vec<String>,
    /// Secrets holding extra request headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_extra_headers: Vec<String>,
    /// The expected digest of the downloaded file, `ALGORITHM:HEX` with `sha256`, `sha512`
    /// or `md5` (e.g. `sha256:9f86d0…`); the import fails when it does not match.
    pub checksum: Option<String>,
}

/// A registry source.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVolumeSourceRegistry {
    /// The image URL, `docker://registry/image:tag`.
    pub url: Option<String>,
    /// An image stream name (OpenShift).
    pub image_stream: Option<String>,
    /// `pod` (the default) or `node`.
    pub pull_method: Option<String>,
    /// A Secret with the registry credentials.
    pub secret_ref: Option<String>,
    /// A ConfigMap with CA certificates for the registry.
    pub cert_config_map: Option<String>,
    /// The platform of the image to pull. Stored as given.
    pub platform: Option<Unstructured>,
}

/// A PVC to clone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVolumeSourcePvc {
    /// The namespace of the source PVC.
    pub namespace: String,
    /// The name of the source PVC.
    pub name: String,
}

/// An indirect source: a DataSource.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVolumeSourceRef {
    /// `DataSource`.
    pub kind: String,
    /// The namespace of the DataSource; the DataVolume's when unset.
    pub namespace: Option<String>,
    /// The name of the DataSource.
    pub name: String,
}

/// The storage a DataVolume asks for; unset fields come from the StorageClass.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct StorageSpec {
    /// `ReadWriteOnce`, `ReadOnlyMany`, `ReadWriteMany`, `ReadWriteOncePod`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// A label query over volumes to consider for binding.
    pub selector: Option<LabelSelector>,
    /// The size requested (`requests.storage`).
    pub resources: Option<VolumeResourceRequirements>,
    /// The PersistentVolume to bind to.
    pub volume_name: Option<String>,
    /// The StorageClass; the default one when unset.
    pub storage_class_name: Option<String>,
    /// `Filesystem` or `Block`.
    pub volume_mode: Option<String>,
    /// A data source for the PVC.
    pub data_source: Option<TypedLocalObjectReference>,
    /// A data source reference for the PVC.
    pub data_source_ref: Option<TypedObjectReference>,
}

/// The phase of a DataVolume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DataVolumePhase {
    /// The operation has not started.
    Pending,
    /// The PVC is bound.
    #[serde(rename = "PVCBound")]
    PvcBound,
    /// An import is scheduled.
    ImportScheduled,
    /// An import is running.
    ImportInProgress,
    /// A clone is scheduled.
    CloneScheduled,
    /// A clone is running.
    CloneInProgress,
    /// A snapshot for a smart clone is being taken.
    SnapshotForSmartCloneInProgress,
    /// A clone from a snapshot is running.
    CloneFromSnapshotSourceInProgress,
    /// A smart-clone PVC is being created.
    SmartClonePVCInProgress,
    /// A CSI clone is running.
    CSICloneInProgress,
    /// The PVC is being expanded.
    ExpansionInProgress,
    /// The PVC is being moved to another namespace.
    NamespaceTransferInProgress,
    /// An upload is scheduled.
    UploadScheduled,
    /// The upload server is ready for data.
    UploadReady,
    /// The PVC waits for its first consumer (WaitForFirstConsumer binding).
    WaitForFirstConsumer,
    /// The PVC waits for a populator.
    PendingPopulation,
    /// The claim is being prepared.
    PrepClaimInProgress,
    /// The PV is being rebound.
    RebindInProgress,
    /// The content is in place.
    Succeeded,
    /// The operation failed.
    Failed,
    /// The phase cannot be determined.
    Unknown,
    /// A multi-stage import waits for the next checkpoint.
    Paused,
}

/// A condition of a DataVolume (`Bound`, `Ready`, `Running`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVolumeCondition {
    /// `Bound`, `Ready` or `Running`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When the condition last changed status.
    pub last_transition_time: Option<Time>,
    /// When the condition was last updated.
    pub last_heartbeat_time: Option<Time>,
    /// A CamelCase reason.
    pub reason: Option<String>,
    /// A human-readable message.
    pub message: Option<String>,
}

/// The observed state of a DataVolume.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVolumeStatus {
    /// The name of the PVC holding the data.
    pub claim_name: Option<String>,
    /// Phase is the current phase of the data volume.
    pub phase: Option<DataVolumePhase>,
    /// Progress of the transfer, `45.6%`, or `N/A`.
    pub progress: Option<String>,
    /// RestartCount is the number of times the pod populating the DataVolume has restarted.
    pub restart_count: Option<i32>,
    /// Conditions: Bound, Ready, Running.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<DataVolumeCondition>,
}

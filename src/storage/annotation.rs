//! The annotations CDI puts on PVCs (`pkg/controller/common`), which monovirt's populator
//! reads and writes the same way, plus monovirt's own progress annotation.

/// The URL to import from (CDI's `AnnEndpoint`).
pub const ENDPOINT: &str = "cdi.kubevirt.io/storage.import.endpoint";
/// The Secret with `accessKeyId`/`secretKey` for the endpoint (`AnnSecret`).
pub const SECRET: &str = "cdi.kubevirt.io/storage.import.secretName";
/// The ConfigMap with CA certificates for the endpoint (`AnnCertConfigMap`).
pub const CERT_CONFIG_MAP: &str = "cdi.kubevirt.io/storage.import.certConfigMap";
/// The import source kind: `http`, `none` (blank), ... (`AnnSource`).
pub const SOURCE: &str = "cdi.kubevirt.io/storage.import.source";
/// Extra request headers, `Name: value` (`AnnExtraHeaders` prefix, one per annotation).
pub const EXTRA_HEADERS: &str = "cdi.kubevirt.io/storage.import.extraHeaders";
/// The expected checksum of the download, `sha256:HEX` (a DataVolume's `http.checksum`).
pub const CHECKSUM: &str = "cdi.kubevirt.io/storage.import.checksum";
/// The PVC is the target of an upload (`AnnUploadRequest`).
pub const UPLOAD_REQUEST: &str = "cdi.kubevirt.io/storage.upload.target";
/// `namespace/name` of the PVC to clone (`AnnCloneRequest`).
pub const CLONE_REQUEST: &str = "k8s.io/CloneRequest";
/// `image` or `archive` (`AnnContentType`); only `kubevirt` images are supported.
pub const CONTENT_TYPE: &str = "cdi.kubevirt.io/storage.contentType";

/// The populator's phase, in the importer pod's words: `Pending`, `Running`, `Succeeded`,
/// `Failed` (`AnnPodPhase`).
pub const POD_PHASE: &str = "cdi.kubevirt.io/storage.pod.phase";
/// Whether the populator is ready for data (uploads) (`AnnPodReady`).
pub const POD_READY: &str = "cdi.kubevirt.io/storage.pod.ready";
/// How often the transfer was restarted (`AnnPodRestarts`).
pub const POD_RESTARTS: &str = "cdi.kubevirt.io/storage.pod.restarts";
/// The Running condition: `true`/`false`, with reason and message (`AnnRunningCondition`).
pub const RUNNING: &str = "cdi.kubevirt.io/storage.condition.running";
pub const RUNNING_REASON: &str = "cdi.kubevirt.io/storage.condition.running.reason";
pub const RUNNING_MESSAGE: &str = "cdi.kubevirt.io/storage.condition.running.message";
/// The Bound condition as CDI records it (`AnnBoundCondition`).
pub const BOUND: &str = "cdi.kubevirt.io/storage.condition.bound";
pub const BOUND_REASON: &str = "cdi.kubevirt.io/storage.condition.bound.reason";
pub const BOUND_MESSAGE: &str = "cdi.kubevirt.io/storage.condition.bound.message";

/// The transfer's progress, `"45.67%"`: monovirt's own (CDI scrapes its importer's metrics
/// instead); the DataVolume controller copies it into `status.progress`.
pub const PROGRESS: &str = "monovirt.io/storage.progress";

/// Kubernetes: the PV provisioner that made a volume.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Kubernetes: the provisioner a claim waits for.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// Kubernetes: the claim's binding is complete.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Kubernetes: the binding was made by a controller.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Kubernetes: the default StorageClass.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// Kubernetes: the finalizer that keeps a PVC while a VM (a pod, there) uses it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// Kubernetes: the finalizer that keeps a PV while a claim is bound to it.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

//! The local provisioner and binder (the PV controller's and the hostpath provisioner's
//! roles) and the protection controllers:
//!
//! - a Pending claim of a local class gets a PersistentVolume `pvc-<uid>` (a `hostPath`
//!   directory under the class's path) and, unless a populator fills it, a sparse
//!   `disk.img` of the requested size; then the claim is Bound with its capacity;
//! - `kubernetes.io/pvc-protection` keeps a deleted claim while a VMI uses it;
//! - a volume whose claim is gone is reclaimed: `Delete` removes its directory and the PV,
//!   `Retain` marks it Released.

use super::controller::Context;
use super::import::{self, Target};
use super::populator;
use super::{annotation, class};
use crate::client::ClientError;
use crate::controller::event::{EventType, Recorder};
use crate::controller::runtime::Action;
use crate::store::{Patch, WriteOptions};
use api::core::pv::PersistentVolume;
use api::core::pvc::PersistentVolumeClaim;
use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Errors of one provisioner reconcile.
#[allow(clippy::result_large_err)]
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("Writing {0} failed")]
    Write(&'static str, #[source] ClientError),
    #[error("Reading {0} failed")]
    Read(&'static str, #[source] ClientError),
    #[error("Cannot prepare the volume directory {0}")]
    Directory(PathBuf, #[source] std::io::Error),
    #[error("Cannot create the blank disk image")]
    Blank(#[source] import::ImportError),
}

/// The access modes a claim asks for.
fn modes(pvc: &PersistentVolumeClaim) -> Vec<String> {
    pvc.spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default()
}

/// The requested size in bytes, rounded up to whole 512-byte sectors.
pub fn requested_bytes(pvc: &PersistentVolumeClaim) -> Option<u64> {
    let q = pvc
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    let v = u64::try_from(api::quantity::parse(&q.0).ok()?.value()).ok()?;
    Some(v.div_ceil(512) * 512)
}

/// The bytes a bound claim holds (its status capacity, else its request).
pub fn capacity_bytes(pvc: &PersistentVolumeClaim) -> Option<u64> {
    pvc.status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| api::quantity::parse(&q.0).ok())
        .and_then(|p| u64::try_from(p.value()).ok())
        .map(|v| v.div_ceil(512) * 512)
        .or_else(|| requested_bytes(pvc))
}

fn has_finalizer(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    f: &str,
) -> bool {
    meta.finalizers.iter().flatten().any(|x| x == f)
}

/// A merge patch setting `finalizers` (with the resourceVersion it was computed from as a
/// precondition).
fn finalizers_patch(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    list: Vec<String>,
) -> Patch {
    Patch::Merge(
        json!({"metadata": {"finalizers": list, "resourceVersion": meta.resource_version}}),
    )
}

fn without(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    f: &str,
) -> Vec<String> {
    meta.finalizers
        .iter()
        .flatten()
        .filter(|x| *x != f)
        .cloned()
        .collect()
}

/// The `namespace/name` key of the claim a PV is bound to.
pub fn claim_key(pv: &PersistentVolume) -> Option<String> {
    let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some(format!(
        "{}/{}",
        r.namespace.as_deref()?,
        r.name.as_deref()?
    ))
}

/// The PVs (names) bound to `pvc`.
pub fn volumes_of_claim(ctx: &Context, pvc: &PersistentVolumeClaim) -> Vec<String> {
    ctx.pvs
        .list()
        .iter()
        .filter(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|r| r.uid == pvc.metadata.uid)
        })
        .filter_map(|pv| pv.metadata.name.clone())
        .collect()
}

/// The directory of a local PV (its `hostPath` or `local` path).
pub fn volume_dir(pv: &PersistentVolume) -> Option<PathBuf> {
    let spec = pv.spec.as_ref()?;
    spec.host_path
        .as_ref()
        .map(|h| h.path.clone())
        .or_else(|| spec.local.as_ref().map(|l| l.path.clone()))
        .map(PathBuf::from)
}

/// Whether `vmi` still runs (or may start) with its volumes attached.
fn holds_volumes(vmi: &VirtualMachineInstance) -> bool {
    !vmi.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_final())
}

/// The VMI (name) using claim `name` in `ns`, read live from the API (the cache may lag).
pub async fn user_of(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Option<String>, ProvisionError> {
    let vmis: crate::client::Api<VirtualMachineInstance> =
        crate::client::Api::namespaced(ctx.client.clone(), ctx.defs.vmi, ns);
    let list = vmis
        .list(&crate::store::ListOptions::default())
        .await
        .map_err(|e| ProvisionError::Read("VMIs", e))?;
    let key = format!("{ns}/{name}");
    Ok(list
        .items
        .iter()
        .filter(|v| holds_volumes(v))
        .find(|v| super::controller::claims_of(v).contains(&key))
        .and_then(|v| v.metadata.name.clone()))
}

/// The `involvedObject` of Events about a claim.
pub fn involved(pvc: &PersistentVolumeClaim) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "name": pvc.metadata.name, "namespace": pvc.metadata.namespace,
        "uid": pvc.metadata.uid})
}

/// Records an Event about a claim as the storage controllers.
pub async fn record(
    ctx: &Context,
    pvc: &PersistentVolumeClaim,
    type_: EventType,
    reason: &str,
    message: &str,
) {
    Recorder::new(ctx.client.clone(), "monovirt-storage")
        .record(&involved(pvc), type_, reason, message)
        .await;
}

/// Reconciles the claim with key `namespace/name`.
pub async fn reconcile_claim(ctx: Arc<Context>, key: String) -> Result<Action, ProvisionError> {
    let Some(pvc) = ctx.pvcs.get(&key) else {
        ctx.populator.cancel(&key).await;
        return Ok(Action::AwaitChange);
    };
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let api = ctx.api(ctx.defs.pvc, &ns);
    if pvc.metadata.deletion_timestamp.is_some() {
        if !has_finalizer(&pvc.metadata, annotation::PVC_PROTECTION) {
            return Ok(Action::AwaitChange);
        }
        if let Some(vmi) = user_of(&ctx, &ns, &name).await? {
            tracing::info!(pvc = %key, %vmi, "claim in use: deletion waits");
            return Ok(Action::AwaitChange);
        }
        ctx.populator.cancel(&key).await;
        let patch = finalizers_patch(
            &pvc.metadata,
            without(&pvc.metadata, annotation::PVC_PROTECTION),
        );
        return match api.patch(&name, patch, &WriteOptions::default()).await {
            Ok(_) => Ok(Action::AwaitChange),
            Err(e) if matches!(e.code(), Some(404 | 409)) => {
                Ok(Action::Requeue(Duration::from_millis(50)))
            }
            Err(e) => Err(ProvisionError::Write("PVC finalizers", e)),
        };
    }
    if !has_finalizer(&pvc.metadata, annotation::PVC_PROTECTION) {
        let mut list = without(&pvc.metadata, annotation::PVC_PROTECTION);
        list.push(annotation::PVC_PROTECTION.to_string());
        return match api
            .patch(
                &name,
                finalizers_patch(&pvc.metadata, list),
                &WriteOptions::default(),
            )
            .await
        {
            // The watch brings the change back; reconcile on.
            Ok(_) => Ok(Action::AwaitChange),
            Err(e) if matches!(e.code(), Some(404 | 409)) => {
                Ok(Action::Requeue(Duration::from_millis(50)))
            }
            Err(e) => Err(ProvisionError::Write("PVC finalizers", e)),
        };
    }
    let bound = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty());
    if !bound {
        return bind(&ctx, &pvc).await;
    }
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    if phase != Some("Bound") {
        // Bound in spec, status not yet written (a crash in between): finish the binding.
        return bind(&ctx, &pvc).await;
    }
    populator::ensure(&ctx, &pvc).await;
    Ok(Action::AwaitChange)
}

/// Provisions and binds a Pending claim.
async fn bind(ctx: &Arc<Context>, pvc: &PersistentVolumeClaim) -> Result<Action, ProvisionError> {
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let uid = pvc.metadata.uid.clone().unwrap_or_default();
    let requested = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone());
    let Some(sc) = class::pick(&ctx.classes.list(), requested.as_deref()) else {
        let msg = match &requested {
            Some(c) => format!("storageclass.storage.k8s.io \"{c}\" not found"),
            None => "no storage class is set and there is no default class".to_string(),
        };
        record(ctx, pvc, EventType::Warning, "ProvisioningFailed", &msg).await;
        return Ok(Action::AwaitChange);
    };
    if !class::is_ours(&sc) {
        // Another provisioner's class: not ours to bind.
        return Ok(Action::AwaitChange);
    }
    let class_name = sc.metadata.name.clone().unwrap_or_default();
    let modes = modes(pvc);
    if modes.iter().any(|m| m == "ReadWriteMany") && !class::is_shared(&sc) {
        let msg = format!(
            "storage class {class_name} is a node-local directory: ReadWriteMany needs a class with parameters.shared: \"true\""
        );
        record(ctx, pvc, EventType::Warning, "ProvisioningFailed", &msg).await;
        return Ok(Action::AwaitChange);
    }
    let Some(bytes) = requested_bytes(pvc) else {
        // Validation guarantees a request; an unparsable one cannot be provisioned.
        return Ok(Action::AwaitChange);
    };
    let request = pvc
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| bytes.to_string());
    let pv_name = format!("pvc-{uid}");
    let dir = class::directory(&sc, &ctx.data_dir).join(&pv_name);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        let msg = format!("cannot create {}: {e}", dir.display());
        record(ctx, pvc, EventType::Warning, "ProvisioningFailed", &msg).await;
        return Err(ProvisionError::Directory(dir, e));
    }
    let target = Target {
        dir: dir.clone(),
        capacity: bytes,
    };
    if populator::source_of(pvc).is_none() && !target.disk().exists() {
        import::blank(&target)
            .await
            .map_err(ProvisionError::Blank)?;
    }
    let reclaim = sc.reclaim_policy.clone().unwrap_or_else(|| "Delete".into());
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name,
            "annotations": {annotation::PROVISIONED_BY: class::PROVISIONER},
            "finalizers": [annotation::PV_PROTECTION]},
        "spec": {
            "capacity": {"storage": request},
            "accessModes": modes,
            "persistentVolumeReclaimPolicy": reclaim,
            "storageClassName": class_name,
            "volumeMode": "Filesystem",
            "hostPath": {"path": dir.display().to_string(), "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": ns, "name": name, "uid": uid},
        },
    });
    let pvs = crate::client::Api::<Value>::all(ctx.client.clone(), ctx.defs.pv);
    match pvs.create(&pv, &WriteOptions::default()).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(409) => {}
        Err(e) => return Err(ProvisionError::Write("PV", e)),
    }
    let bound_status = json!({"status": {"phase": "Bound"}});
    match pvs.patch_status(&pv_name, Patch::Merge(bound_status)).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(404) => {}
        Err(e) => return Err(ProvisionError::Write("PV status", e)),
    }
    let api = ctx.api(ctx.defs.pvc, &ns);
    let patch = json!({
        "metadata": {"annotations": {
            annotation::BIND_COMPLETED: "yes",
            annotation::BOUND_BY_CONTROLLER: "yes",
            annotation::STORAGE_PROVISIONER: class::PROVISIONER,
        }},
        "spec": {"volumeName": pv_name},
    });
    match api
        .patch(&name, Patch::Merge(patch), &WriteOptions::default())
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() == Some(404) => return Ok(Action::AwaitChange),
        Err(e) => return Err(ProvisionError::Write("PVC", e)),
    }
    let status = json!({"status": {
        "phase": "Bound",
        "capacity": {"storage": request},
        "accessModes": modes,
    }});
    match api.patch_status(&name, Patch::Merge(status)).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(404) => return Ok(Action::AwaitChange),
        Err(e) => return Err(ProvisionError::Write("PVC status", e)),
    }
    tracing::info!(pvc = %format!("{ns}/{name}"), pv = %pv_name, dir = %dir.display(), "provisioned");
    record(
        ctx,
        pvc,
        EventType::Normal,
        "ProvisioningSucceeded",
        &format!(
            "Successfully provisioned volume {pv_name} in {}",
            dir.display()
        ),
    )
    .await;
    Ok(Action::AwaitChange)
}

/// Removes a volume directory this provisioner made (`pvc-<uid>` with at most its image
/// files in it), refusing anything else.
fn remove_volume_dir(dir: &Path) -> std::io::Result<()> {
    let ours = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("pvc-"));
    if !ours {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a volume directory of the local provisioner",
                dir.display()
            ),
        ));
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Reconciles the PV named `key`: reclaims it once its claim is gone.
pub async fn reconcile_volume(ctx: Arc<Context>, key: String) -> Result<Action, ProvisionError> {
    let Some(pv) = ctx.pvs.get(&key) else {
        return Ok(Action::AwaitChange);
    };
    let ours = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation::PROVISIONED_BY))
        .is_some_and(|p| p == class::PROVISIONER);
    if !ours {
        return Ok(Action::AwaitChange);
    }
    let pvs = crate::client::Api::<Value>::all(ctx.client.clone(), ctx.defs.pv);
    let Some(claim) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return Ok(Action::AwaitChange);
    };
    // The claim, read live: the cache may not have caught up at start-up, and deleting
    // data on a stale read is not an option.
    let ns = claim.namespace.clone().unwrap_or_default();
    let claims = ctx.api(ctx.defs.pvc, &ns);
    let live = claims
        .get_opt(claim.name.as_deref().unwrap_or_default())
        .await
        .map_err(|e| ProvisionError::Read("PVC", e))?;
    let claim_alive = live.is_some_and(|c| c["metadata"]["uid"].as_str() == claim.uid.as_deref());
    if claim_alive && pv.metadata.deletion_timestamp.is_none() {
        return Ok(Action::AwaitChange);
    }
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    let name = pv.metadata.name.clone().unwrap_or_default();
    if policy == "Delete" || pv.metadata.deletion_timestamp.is_some() {
        if policy == "Delete" {
            if let Some(dir) = volume_dir(&pv) {
                remove_volume_dir(&dir).map_err(|e| ProvisionError::Directory(dir.clone(), e))?;
                tracing::info!(pv = %name, dir = %dir.display(), "volume deleted");
            }
        }
        if has_finalizer(&pv.metadata, annotation::PV_PROTECTION) {
            let patch = finalizers_patch(
                &pv.metadata,
                without(&pv.metadata, annotation::PV_PROTECTION),
            );
            match pvs.patch(&name, patch, &WriteOptions::default()).await {
                Ok(_) => {}
                Err(e) if e.code() == Some(404) => return Ok(Action::AwaitChange),
                Err(e) if e.code() == Some(409) => {
                    return Ok(Action::Requeue(Duration::from_millis(50)))
                }
                Err(e) => return Err(ProvisionError::Write("PV finalizers", e)),
            }
        }
        if pv.metadata.deletion_timestamp.is_none() {
            match pvs
                .delete(&name, &crate::store::DeleteOptions::default())
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == Some(404) => {}
                Err(e) => return Err(ProvisionError::Write("PV", e)),
            }
        }
        return Ok(Action::AwaitChange);
    }
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    if phase != Some("Released") {
        match pvs
            .patch_status(
                &name,
                Patch::Merge(json!({"status": {"phase": "Released"}})),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some(404) => {}
            Err(e) => return Err(ProvisionError::Write("PV status", e)),
        }
    }
    Ok(Action::AwaitChange)
}

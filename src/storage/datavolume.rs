//! The DataVolume controller (CDI's datavolume controller): creates the DataVolume's claim
//! (same name, owned by it) annotated with the source for the populator, and mirrors the
//! claim's binding and population into the DataVolume's status: phase (Pending →
//! ImportScheduled/CloneScheduled/UploadScheduled → ImportInProgress/CloneInProgress/
//! UploadReady → Succeeded or Failed), progress, restartCount, and the Bound, Running and
//! Ready conditions.

use super::annotation;
use super::controller::Context;
use super::populator::Source;
use crate::client::ClientError;
use crate::controller::runtime::Action;
use crate::store::{Patch, WriteOptions};
use api::cdi::datavolume::{DataVolume, DataVolumeCondition, DataVolumePhase, DataVolumeStatus};
use api::core::pvc::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// CDI's annotation naming the DataVolume a claim was made for.
pub const CREATED_FOR: &str = "cdi.kubevirt.io/createdForDataVolume";

/// Errors of one DataVolume reconcile.
#[allow(clippy::result_large_err)]
#[derive(Debug, thiserror::Error)]
pub enum DataVolumeError {
    #[error("Writing {0} failed")]
    Write(&'static str, #[source] ClientError),
    #[error("Encoding failed")]
    Encode(#[source] serde_json::Error),
}

/// The DataVolume (`namespace/name`) that owns claim `pvc`, if any.
pub fn owner_of(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true) && r.kind == "DataVolume")
        .map(|r| {
            format!(
                "{}/{}",
                pvc.metadata.namespace.as_deref().unwrap_or_default(),
                r.name
            )
        })
}

/// The population source of a DataVolume, or why it cannot be served.
pub fn source(dv: &DataVolume) -> Result<Source, String> {
    let Some(s) = dv.spec.source.as_ref() else {
        return Err("spec.sourceRef (DataSource) is not supported; use spec.source".into());
    };
    if let Some(h) = &s.http {
        return Ok(Source::Http {
            url: h.url.clone(),
            secret: h.secret_ref.clone(),
            cert_config_map: h.cert_config_map.clone(),
            checksum: h.checksum.clone(),
            extra_headers: h.extra_headers.clone(),
        });
    }
    if s.blank.is_some() {
        return Ok(Source::Blank);
    }
    if s.upload.is_some() {
        return Ok(Source::Upload);
    }
    if let Some(p) = &s.pvc {
        let ns = if p.namespace.is_empty() {
            dv.metadata.namespace.clone().unwrap_or_default()
        } else {
            p.namespace.clone()
        };
        return Ok(Source::Clone {
            namespace: ns,
            name: p.name.clone(),
        });
    }
    Err(format!(
        "source {} is not supported: monovirt imports http, blank, pvc and upload sources",
        s.kinds().join(", ")
    ))
}

/// The annotations that tell the populator about `source`.
fn source_annotations(source: &Source) -> Map<String, Value> {
    let mut a = Map::new();
    match source {
        Source::Http {
            url,
            secret,
            cert_config_map,
            checksum,
            extra_headers,
        } => {
            a.insert(annotation::ENDPOINT.into(), url.clone().into());
            a.insert(annotation::SOURCE.into(), "http".into());
            if let Some(s) = secret {
                a.insert(annotation::SECRET.into(), s.clone().into());
            }
            if let Some(c) = cert_config_map {
                a.insert(annotation::CERT_CONFIG_MAP.into(), c.clone().into());
            }
            if let Some(c) = checksum {
                a.insert(annotation::CHECKSUM.into(), c.clone().into());
            }
            for (i, h) in extra_headers.iter().enumerate() {
                a.insert(
                    format!("{}.{i}", annotation::EXTRA_HEADERS),
                    h.clone().into(),
                );
            }
        }
        Source::Blank => {
            a.insert(annotation::SOURCE.into(), "none".into());
        }
        Source::Upload => {
            a.insert(annotation::UPLOAD_REQUEST.into(), "".into());
        }
        Source::Clone { namespace, name } => {
            a.insert(
                annotation::CLONE_REQUEST.into(),
                format!("{namespace}/{name}").into(),
            );
        }
    }
    a.insert(annotation::CONTENT_TYPE.into(), "kubevirt".into());
    a
}

/// The claim spec of a DataVolume: `spec.pvc` as given, or `spec.storage` with its unset
/// fields defaulted (ReadWriteOnce, Filesystem), as CDI's storage profiles would.
pub fn claim_spec(dv: &DataVolume) -> Value {
    if let Some(p) = &dv.spec.pvc {
        return serde_json::to_value(p).unwrap_or(Value::Null);
    }
    let mut s =
        serde_json::to_value(dv.spec.storage.clone().unwrap_or_default()).unwrap_or(json!({}));
    if s.get("accessModes")
        .is_none_or(|m| m.as_array().is_none_or(Vec::is_empty))
    {
        s["accessModes"] = json!(["ReadWriteOnce"]);
    }
    if s.get("volumeMode").is_none_or(Value::is_null) {
        s["volumeMode"] = json!("Filesystem");
    }
    s
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> DataVolumeCondition {
    DataVolumeCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..DataVolumeCondition::default()
    }
}

/// The status of `dv` given its claim (if it exists) and `source` (or why it is
/// unsupported), keeping the transition times of unchanged conditions from `old`.
pub fn status(
    dv: &DataVolume,
    pvc: Option<&PersistentVolumeClaim>,
    source: &Result<Source, String>,
    now: Time,
) -> DataVolumeStatus {
    let name = dv.metadata.name.clone().unwrap_or_default();
    let old = dv.status.clone().unwrap_or_default();
    let mut st = DataVolumeStatus {
        claim_name: Some(name.clone()),
        progress: Some("N/A".into()),
        restart_count: Some(0),
        ..DataVolumeStatus::default()
    };
    let a = pvc
        .and_then(|p| p.metadata.annotations.clone())
        .unwrap_or_default();
    let get = |k: &str| a.get(k).map(String::as_str);
    let bound = pvc
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.phase.as_deref())
        == Some("Bound");
    let (phase, bound_c, running_c, ready_c) = match (source, pvc) {
        (Err(msg), _) => (
            DataVolumePhase::Failed,
            condition("Bound", false, "Unsupported", msg),
            condition("Running", false, "Unsupported", msg),
            condition("Ready", false, "Unsupported", msg),
        ),
        (Ok(_), None) => (
            DataVolumePhase::Pending,
            condition(
                "Bound",
                false,
                "Pending",
                &format!("PVC {name} does not exist yet"),
            ),
            condition("Running", false, "Pending", "Waiting for the PVC"),
            condition("Ready", false, "Pending", "Waiting for the PVC"),
        ),
        (Ok(_), Some(_)) if !bound => (
            DataVolumePhase::Pending,
            condition("Bound", false, "Pending", &format!("PVC {name} Pending")),
            condition(
                "Running",
                false,
                "Pending",
                "Waiting for the PVC to be bound",
            ),
            condition("Ready", false, "Pending", "Waiting for the PVC to be bound"),
        ),
        (Ok(src), Some(_)) => {
            let bound_c = condition("Bound", true, "Bound", &format!("PVC {name} Bound"));
            let verb = src.verb();
            let running = get(annotation::RUNNING) == Some("true");
            let reason = get(annotation::RUNNING_REASON).unwrap_or("Pending");
            let message = get(annotation::RUNNING_MESSAGE).unwrap_or("");
            let running_c = condition("Running", running, reason, message);
            let scheduled = match src {
                Source::Upload => DataVolumePhase::UploadScheduled,
                Source::Clone { .. } => DataVolumePhase::CloneScheduled,
                _ => DataVolumePhase::ImportScheduled,
            };
            match get(annotation::POD_PHASE) {
                Some("Succeeded") => (
                    DataVolumePhase::Succeeded,
                    bound_c,
                    running_c,
                    condition("Ready", true, "Completed", &format!("{verb} Complete")),
                ),
                Some("Failed") => (
                    DataVolumePhase::Failed,
                    bound_c,
                    running_c,
                    condition("Ready", false, reason, message),
                ),
                Some("Running") => (
                    match src {
                        Source::Upload => DataVolumePhase::UploadReady,
                        Source::Clone { .. } => DataVolumePhase::CloneInProgress,
                        _ => DataVolumePhase::ImportInProgress,
                    },
                    bound_c,
                    running_c,
                    condition(
                        "Ready",
                        false,
                        "TransferRunning",
                        &format!("{verb} in progress"),
                    ),
                ),
                _ => (
                    scheduled,
                    bound_c,
                    running_c,
                    condition("Ready", false, "Pending", &format!("{verb} scheduled")),
                ),
            }
        }
    };
    st.phase = Some(phase);
    if let Some(p) = get(annotation::PROGRESS) {
        st.progress = Some(p.to_string());
    }
    if phase == DataVolumePhase::Succeeded {
        st.progress = Some("100.0%".into());
    }
    st.restart_count = Some(
        get(annotation::POD_RESTARTS)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
    );
    for mut c in [bound_c, running_c, ready_c] {
        let prev = old.conditions.iter().find(|o| o.type_ == c.type_);
        match prev {
            Some(p) if p.status == c.status && p.reason == c.reason && p.message == c.message => {
                c = p.clone();
            }
            Some(p) if p.status == c.status => {
                c.last_transition_time = p.last_transition_time.clone();
                c.last_heartbeat_time = Some(now.clone());
            }
            _ => {
                c.last_transition_time = Some(now.clone());
                c.last_heartbeat_time = Some(now.clone());
            }
        }
        st.conditions.push(c);
    }
    st
}

/// Reconciles the DataVolume with key `namespace/name`.
pub async fn reconcile(ctx: Arc<Context>, key: String) -> Result<Action, DataVolumeError> {
    let Some(dv) = ctx.dvs.get(&key) else {
        return Ok(Action::AwaitChange);
    };
    if dv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::AwaitChange);
    }
    let ns = dv.metadata.namespace.clone().unwrap_or_default();
    let name = dv.metadata.name.clone().unwrap_or_default();
    let src = source(&dv);
    let mut pvc = ctx.pvcs.get(&key);
    // A claim of the same name not made for this DataVolume is left alone.
    let foreign = pvc.as_ref().is_some_and(|p| {
        !p.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| Some(&r.uid) == dv.metadata.uid.as_ref())
    });
    if foreign {
        pvc = None;
    }
    if let (Ok(s), None, false) = (&src, &pvc, foreign) {
        let mut annotations = source_annotations(s);
        annotations.insert(
            CREATED_FOR.into(),
            dv.metadata.uid.clone().unwrap_or_default().into(),
        );
        let claim = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations,
                "labels": {"app": "containerized-data-importer"},
                "ownerReferences": [{"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                    "name": name, "uid": dv.metadata.uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": claim_spec(&dv),
        });
        let api = ctx.api(ctx.defs.pvc, &ns);
        match api.create(&claim, &WriteOptions::default()).await {
            Ok(created) => {
                if let Ok(p) = serde_json::from_value::<PersistentVolumeClaim>(created) {
                    ctx.pvcs.insert(key.clone(), p.clone());
                    pvc = Some(Arc::new(p));
                }
            }
            Err(e) if e.code() == Some(409) => {}
            Err(e) => return Err(DataVolumeError::Write("PVC", e)),
        }
    }
    let mut new = status(
        &dv,
        pvc.as_deref(),
        &src,
        Time(crate::controller::clock::now()),
    );
    if foreign {
        let msg = format!("PVC {name} already exists and is not owned by DataVolume {name}");
        new.conditions = vec![condition("Bound", false, "ErrResourceExists", &msg)];
        new.phase = Some(DataVolumePhase::Pending);
    }
    if dv.status.as_ref() != Some(&new) {
        let api = ctx.api(ctx.defs.dv, &ns);
        let body = serde_json::to_value(&new).map_err(DataVolumeError::Encode)?;
        match api
            .patch_status(&name, Patch::Merge(json!({"status": body})))
            .await
        {
            Ok(updated) => {
                if let Ok(d) = serde_json::from_value::<DataVolume>(updated) {
                    ctx.dvs.insert(key, d);
                }
            }
            Err(e) if e.code() == Some(404) => {}
            Err(e) => return Err(DataVolumeError::Write("DataVolume status", e)),
        }
    }
    Ok(Action::AwaitChange)
}

/// Whether a DataVolume finished populating its claim.
pub fn is_ready(dv: &DataVolume) -> bool {
    dv.status.as_ref().and_then(|s| s.phase) == Some(DataVolumePhase::Succeeded)
}

/// Whether a DataVolume failed for good.
pub fn is_failed(dv: &DataVolume) -> bool {
    dv.status.as_ref().and_then(|s| s.phase) == Some(DataVolumePhase::Failed)
}

/// The DataVolume a VM's `dataVolumeTemplates[]` entry asks for: named as the template, in
/// the VM's namespace, owned by the VM (so it goes with it).
pub fn from_template(
    vm: &api::kubevirt::virtualmachine::VirtualMachine,
    t: &api::kubevirt::virtualmachine::DataVolumeTemplateSpec,
) -> DataVolume {
    let mut meta = t.metadata.clone().unwrap_or_default();
    meta.namespace = vm.metadata.namespace.clone();
    meta.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "kubevirt.io/v1".into(),
            kind: "VirtualMachine".into(),
            name: vm.metadata.name.clone().unwrap_or_default(),
            uid: vm.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
    ]);
    DataVolume {
        api_version: "cdi.kubevirt.io/v1beta1".into(),
        kind: "DataVolume".into(),
        metadata: meta,
        spec: t.spec.clone(),
        status: None,
    }
}

/// What a VM whose VMI needs `dvs` (None: not created yet) should report while they are not
/// all populated, as KubeVirt does: `DataVolumeError` when one failed,
/// `WaitingForVolumeBinding` while a claim is unbound, `Provisioning` while data is copied.
/// `None` once every DataVolume succeeded.
pub fn waiting_status(
    dvs: &[Option<Arc<DataVolume>>],
) -> Option<api::kubevirt::virtualmachine::PrintableStatus> {
    use api::kubevirt::virtualmachine::PrintableStatus;
    if dvs.iter().all(|d| d.as_deref().is_some_and(is_ready)) {
        return None;
    }
    if dvs.iter().flatten().any(|d| is_failed(d)) {
        return Some(PrintableStatus::DataVolumeError);
    }
    let unbound = dvs.iter().any(|d| {
        d.as_ref()
            .and_then(|d| d.status.as_ref())
            .and_then(|s| s.phase)
            .is_none_or(|p| p == DataVolumePhase::Pending)
    });
    Some(if unbound {
        PrintableStatus::WaitingForVolumeBinding
    } else {
        PrintableStatus::Provisioning
    })
}

//! The VirtualMachine controller (virt-controller's VM controller): creates the VM's
//! VirtualMachineInstance from `spec.template` when its run strategy (or a start request)
//! says it should run, deletes it when it should stop, and mirrors the VMI into the VM's
//! status (printableStatus, ready, created, conditions, start failures with backoff).
//!
//! [`decide`] is the pure decision of one reconcile; [`reconcile`] applies it through the
//! client; [`run`] feeds keys from the VM and VMI watches into the shared
//! [`super::runtime`].

use super::reflector::{reflect, Cache, Change};
use super::runtime::{self, Action};
use crate::client::{Api, Client, ClientError};
use crate::store::{DeleteOptions, Patch, WriteOptions};
use api::kubevirt::condition::{self, Condition};
use api::kubevirt::virtualmachine::{
    PrintableStatus, RunStrategy, StartFailure, StateChangeRequest, VirtualMachine,
    VirtualMachineStatus,
};
use api::kubevirt::virtualmachineinstance::{VirtualMachineInstance, VirtualMachineInstancePhase};
use api::resource::ResourceDef;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::chrono::{DateTime, Utc};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The label KubeVirt puts on a VM's VMI naming the VM.
pub const VM_NAME_LABEL: &str = "vm.kubevirt.io/name";
/// Longest wait before a crashed VM's VMI is created again (KubeVirt's 300 s).
pub const MAX_START_BACKOFF: Duration = Duration::from_secs(300);
/// How often every VM is reconciled without changes.
pub const RESYNC: Duration = Duration::from_secs(60);

/// Errors of one VM reconcile.
// Carries the client's error (which carries an API `Status`) unboxed, as the client does.
#[allow(clippy::result_large_err)]
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("Writing {0} failed")]
    Write(&'static str, #[source] ClientError),
    #[error("VM {0} has no template")]
    NoTemplate(String),
    #[error("Encoding failed")]
    Encode(#[source] serde_json::Error),
}

/// The delay before the next start after `failures` consecutive failed runs: KubeVirt's
/// `calculateStartBackoffTime` without the jitter (10 s × failures², at most 300 s).
pub fn start_backoff(failures: i64) -> Duration {
    let n = u64::try_from(failures.max(1)).unwrap_or(u64::MAX);
    Duration::from_secs(n.saturating_mul(n).saturating_mul(10)).min(MAX_START_BACKOFF)
}

/// What one reconcile does to the VMI.
#[derive(Debug, Clone, PartialEq)]
pub enum VmiAction {
    /// Leave it as it is.
    None,
    /// Create the VMI from the template.
    Create,
    /// Delete the VMI (with this uid).
    Delete(String),
}

/// The outcome of [`decide`]: what to do with the VMI, the VM's new status, and when to
/// look again without a change.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub vmi: VmiAction,
    pub status: VirtualMachineStatus,
    pub requeue: Option<Duration>,
}

fn phase(vmi: &VirtualMachineInstance) -> Option<VirtualMachineInstancePhase> {
    vmi.status.as_ref().and_then(|s| s.phase)
}

/// Whether `vmi` ever reached Running (KubeVirt's `wasVMIInRunningPhase`).
fn ever_ran(vmi: &VirtualMachineInstance) -> bool {
    vmi.status.as_ref().is_some_and(|s| {
        s.phase == Some(VirtualMachineInstancePhase::Running)
            || s.phase_transition_timestamps
                .iter()
                .any(|t| t.phase == Some(VirtualMachineInstancePhase::Running))
    })
}

fn vmi_condition<'a>(vmi: &'a VirtualMachineInstance, type_: &str) -> Option<&'a Condition> {
    vmi.status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, type_))
}

fn uid_of(vmi: &VirtualMachineInstance) -> String {
    vmi.metadata.uid.clone().unwrap_or_default()
}

/// Whether `vmi` belongs to `vm`: its controller reference names the VM's uid.
pub fn owned_by(vmi: &VirtualMachineInstance, vm: &VirtualMachine) -> bool {
    vmi.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && Some(&r.uid) == vm.metadata.uid.as_ref())
}

/// Decides one reconcile of `vm`, whose VMI (same name) is `vmi`, at `now`.
pub fn decide(
    vm: &VirtualMachine,
    vmi: Option<&VirtualMachineInstance>,
    now: DateTime<Utc>,
) -> Decision {
    let strategy = vm.spec.run_strategy();
    let mut status = vm.status.clone().unwrap_or_default();
    status.run_strategy = Some(strategy);
    let mut requeue = None;
    let deleting_vm = vm.metadata.deletion_timestamp.is_some();
    let vmi = vmi.filter(|v| owned_by(v, vm));
    let vmi_deleting = vmi.is_some_and(|v| v.metadata.deletion_timestamp.is_some());
    let vmi_phase = vmi.and_then(phase);
    let finished = vmi_phase.is_some_and(VirtualMachineInstancePhase::is_final);

    // Start failures, as KubeVirt counts them: a VMI that failed before it ever ran
    // counts once (by uid); one whose phase history shows Running clears the count (its
    // guest started: it is restarted at once). Judged from the VMI's own history, not
    // from whether this controller happened to see it Running, so the backoff does not
    // depend on how reconciles interleave with a fast crash. Only the strategies that
    // start a VMI again back off (`shouldBackoffStart`): a failed Once or Manual VM is
    // Stopped, never CrashLoopBackOff.
    let restarts_failed = matches!(strategy, RunStrategy::Always | RunStrategy::RerunOnFailure);
    if !restarts_failed || vmi.is_some_and(ever_ran) {
        status.start_failure = None;
    } else if let (Some(v), Some(VirtualMachineInstancePhase::Failed)) = (vmi, vmi_phase) {
        let sf = status
            .start_failure
            .get_or_insert_with(StartFailure::default);
        if sf.last_failed_vmi_uid.as_deref() != Some(uid_of(v).as_str()) {
            let count = sf.consecutive_fail_count.unwrap_or(0) + 1;
            let delay = start_backoff(count);
            sf.consecutive_fail_count = Some(count);
            sf.last_failed_vmi_uid = Some(uid_of(v));
            sf.retry_after_timestamp = Some(Time(
                now + k8s_openapi::chrono::Duration::from_std(delay)
                    .unwrap_or(k8s_openapi::chrono::Duration::MAX),
            ));
        }
    }
    let backoff_until = status
        .start_failure
        .as_ref()
        .and_then(|s| s.retry_after_timestamp.as_ref())
        .map(|t| t.0)
        .filter(|t| *t > now);

    // Pending start/stop requests (from the subresources), oldest first.
    let mut requests = std::mem::take(&mut status.state_change_requests);
    let mut action = VmiAction::None;
    let first = requests.first().cloned();
    match first.as_ref().map(|r| r.action.as_str()) {
        Some("Stop") => {
            let req = first.as_ref().expect("matched Some");
            match vmi {
                Some(v) if req.uid.as_deref().is_none_or(|u| u == uid_of(v)) => {
                    if !vmi_deleting {
                        action = VmiAction::Delete(uid_of(v));
                    }
                }
                // The VMI asked to stop is gone (or was replaced): the request is done.
                _ => {
                    requests.remove(0);
                }
            }
        }
        Some("Start") => {
            if vmi.is_none() && !deleting_vm {
                action = VmiAction::Create;
                requests.remove(0);
            } else if vmi.is_some_and(|_| !finished) {
                requests.remove(0);
            } else if let Some(v) = vmi.filter(|_| finished && !vmi_deleting) {
                action = VmiAction::Delete(uid_of(v));
            }
        }
        Some(_) => {
            requests.remove(0);
        }
        None => {}
    }
    status.state_change_requests = requests;

    if action == VmiAction::None && first.is_none() {
        let want_delete = |v: &VirtualMachineInstance| {
            if vmi_deleting {
                VmiAction::None
            } else {
                VmiAction::Delete(uid_of(v))
            }
        };
        action = match (strategy, vmi) {
            _ if deleting_vm => vmi.map_or(VmiAction::None, want_delete),
            (RunStrategy::Halted, Some(v)) => want_delete(v),
            (RunStrategy::Always, None) | (RunStrategy::RerunOnFailure, None) => {
                match backoff_until {
                    Some(until) => {
                        requeue = (until - now).to_std().ok();
                        VmiAction::None
                    }
                    None => VmiAction::Create,
                }
            }
            (RunStrategy::Always, Some(v)) if finished => want_delete(v),
            (RunStrategy::RerunOnFailure, Some(v))
                if vmi_phase == Some(VirtualMachineInstancePhase::Failed) =>
            {
                want_delete(v)
            }
            // Once: a finished VMI is kept (not deleted), so it is never started again.
            (RunStrategy::Once, None) => VmiAction::Create,
            _ => VmiAction::None,
        };
    }

    // The status as it will be once the action is taken.
    let exists_after = match &action {
        VmiAction::Create => true,
        VmiAction::Delete(_) => false,
        VmiAction::None => vmi.is_some(),
    };
    let stopping = vmi_deleting || matches!(action, VmiAction::Delete(_));
    status.created = Some(exists_after);
    let ready = vmi
        .filter(|_| !stopping)
        .and_then(|v| vmi_condition(v, "Ready"))
        .is_some_and(Condition::is_true);
    status.ready = Some(ready);
    status.printable_status = Some(printable(
        vm,
        vmi,
        stopping,
        exists_after,
        backoff_until.is_some(),
    ));

    let mut ready_cond = Condition::new("Ready", ready);
    match vmi.and_then(|v| vmi_condition(v, "Ready")) {
        Some(c) if !stopping => {
            ready_cond.reason = c.reason.clone();
            ready_cond.message = c.message.clone();
        }
        _ if !exists_after => {
            ready_cond.reason = Some("VMINotExists".into());
            ready_cond.message = Some("VMI does not exist".into());
        }
        _ => {}
    }
    set_condition(&mut status.conditions, ready_cond, now);
    match vmi
        .filter(|_| !stopping)
        .and_then(|v| vmi_condition(v, "Paused"))
        .filter(|c| c.is_true())
    {
        Some(c) => set_condition(&mut status.conditions, c.clone(), now),
        None => status.conditions.retain(|c| c.type_ != "Paused"),
    }
    match vmi
        .filter(|_| !stopping)
        .and_then(|v| vmi_condition(v, "PodScheduled"))
        .filter(|c| !c.is_true())
    {
        Some(c) => {
            let mut failure = Condition::new("Failure", true);
            failure.reason = c.reason.clone();
            failure.message = c.message.clone();
            set_condition(&mut status.conditions, failure, now);
        }
        None => status.conditions.retain(|c| c.type_ != "Failure"),
    }
    Decision {
        vmi: action,
        status,
        requeue,
    }
}

fn printable(
    vm: &VirtualMachine,
    vmi: Option<&VirtualMachineInstance>,
    stopping: bool,
    exists_after: bool,
    backing_off: bool,
) -> PrintableStatus {
    if vm.metadata.deletion_timestamp.is_some() {
        return PrintableStatus::Terminating;
    }
    let Some(v) = vmi else {
        if backing_off {
            return PrintableStatus::CrashLoopBackOff;
        }
        return if exists_after {
            PrintableStatus::Starting
        } else {
            PrintableStatus::Stopped
        };
    };
    if stopping {
        return PrintableStatus::Stopping;
    }
    let unschedulable = vmi_condition(v, "PodScheduled")
        .is_some_and(|c| !c.is_true() && c.reason.as_deref() == Some("Unschedulable"));
    match phase(v) {
        None
        | Some(VirtualMachineInstancePhase::Pending | VirtualMachineInstancePhase::Scheduling)
            if unschedulable =>
        {
            PrintableStatus::Unschedulable
        }
        None
        | Some(
            VirtualMachineInstancePhase::Pending
            | VirtualMachineInstancePhase::Scheduling
            | VirtualMachineInstancePhase::Scheduled,
        ) => PrintableStatus::Starting,
        Some(VirtualMachineInstancePhase::Running) => {
            if vmi_condition(v, "Paused").is_some_and(Condition::is_true) {
                PrintableStatus::Paused
            } else {
                PrintableStatus::Running
            }
        }
        Some(VirtualMachineInstancePhase::Succeeded) => PrintableStatus::Stopped,
        Some(VirtualMachineInstancePhase::Failed) => {
            if backing_off {
                PrintableStatus::CrashLoopBackOff
            } else {
                PrintableStatus::Stopped
            }
        }
        Some(VirtualMachineInstancePhase::Unknown) => PrintableStatus::Unknown,
    }
}

/// Replaces the condition of the same type, keeping its transition time when its status is
/// unchanged.
fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition, now: DateTime<Utc>) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            new.last_transition_time = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                Some(Time(now))
            };
            new.last_probe_time = None;
            *old = new;
        }
        None => {
            new.last_transition_time = Some(Time(now));
            conditions.push(new);
        }
    }
}

/// The VMI `vm` runs: the template's metadata and spec, named and namespaced as the VM, owned
/// by it (controller, blockOwnerDeletion).
#[allow(clippy::result_large_err)]
pub fn new_vmi(vm: &VirtualMachine) -> Result<VirtualMachineInstance, VmError> {
    let name = vm.metadata.name.clone().unwrap_or_default();
    let template = vm
        .spec
        .template
        .as_ref()
        .ok_or_else(|| VmError::NoTemplate(name.clone()))?;
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(VM_NAME_LABEL.into(), name.clone());
    Ok(VirtualMachineInstance {
        api_version: "kubevirt.io/v1".into(),
        kind: "VirtualMachineInstance".into(),
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: vm.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "kubevirt.io/v1".into(),
                kind: "VirtualMachine".into(),
                name,
                uid: vm.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone().unwrap_or_default(),
        status: None,
    })
}

/// What the VM controller reads and writes.
#[derive(Debug)]
pub struct Context {
    pub client: Client,
    pub vms: Cache<VirtualMachine>,
    pub vmis: Cache<VirtualMachineInstance>,
    /// DataVolumes (a VM's dataVolumeTemplates are created and waited for).
    pub dvs: Cache<api::cdi::datavolume::DataVolume>,
    pub vm_def: &'static ResourceDef,
    pub vmi_def: &'static ResourceDef,
    pub dv_def: &'static ResourceDef,
}

impl Context {
    /// A context over `client` with empty caches.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            vms: Cache::default(),
            vmis: Cache::default(),
            dvs: Cache::default(),
            vm_def: api::resource::find_kind("kubevirt.io", "VirtualMachine")
                .expect("the registry serves VirtualMachine"),
            vmi_def: api::resource::find_kind("kubevirt.io", "VirtualMachineInstance")
                .expect("the registry serves VirtualMachineInstance"),
            dv_def: api::resource::find_kind("cdi.kubevirt.io", "DataVolume")
                .expect("the registry serves DataVolume"),
        }
    }
}

/// The component named in the VM controller's Events.
pub const COMPONENT: &str = "monovirt-controller";

/// Records a Normal Event about `vm` (as virt-controller does when it creates or deletes
/// the VMI).
async fn record(ctx: &Context, vm: &VirtualMachine, reason: &str, message: &str) {
    let Ok(obj) = serde_json::to_value(vm) else {
        return;
    };
    let involved = super::event::reference("kubevirt.io/v1", "VirtualMachine", &obj);
    super::event::Recorder::new(ctx.client.clone(), COMPONENT)
        .record(&involved, super::event::EventType::Normal, reason, message)
        .await;
}

/// Reconciles the VM with cache key `key` (`namespace/name`).
pub async fn reconcile(ctx: Arc<Context>, key: String) -> Result<Action, VmError> {
    let Some(vm) = ctx.vms.get(&key) else {
        // Gone: the garbage collector removes its VMI through the owner reference.
        return Ok(Action::AwaitChange);
    };
    let vmi = ctx.vmis.get(&key);
    let mut decision = decide(&vm, vmi.as_deref(), super::clock::now());
    let ns = vm.metadata.namespace.clone().unwrap_or_default();
    let name = vm.metadata.name.clone().unwrap_or_default();
    // dataVolumeTemplates: create the VM's DataVolumes; its VMI waits until they are
    // populated, and the VM says why it waits.
    if vm.metadata.deletion_timestamp.is_none() && !vm.spec.data_volume_templates.is_empty() {
        let dvs: Api<api::cdi::datavolume::DataVolume> =
            Api::namespaced(ctx.client.clone(), ctx.dv_def, &ns);
        let mut current = Vec::new();
        for t in &vm.spec.data_volume_templates {
            let dv_name = t
                .metadata
                .as_ref()
                .and_then(|m| m.name.clone())
                .unwrap_or_default();
            let mut dv = ctx.dvs.get(&format!("{ns}/{dv_name}"));
            if dv.is_none() {
                let new = crate::storage::datavolume::from_template(&vm, t);
                tracing::info!(vm = %key, dv = %dv_name, "creating DataVolume");
                match dvs.create(&new, &WriteOptions::default()).await {
                    Ok(created) => dv = Some(Arc::new(created)),
                    Err(e) if e.code() == Some(409) => {}
                    Err(e) => return Err(VmError::Write("DataVolume", e)),
                }
            }
            current.push(dv);
        }
        if let Some(waiting) = crate::storage::datavolume::waiting_status(&current) {
            if decision.vmi == VmiAction::Create {
                decision.vmi = VmiAction::None;
                decision.status.created = Some(false);
                decision.status.printable_status = Some(waiting);
            }
        }
    }
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), ctx.vmi_def, &ns);
    match &decision.vmi {
        VmiAction::None => {}
        VmiAction::Create => {
            let new = new_vmi(&vm)?;
            tracing::info!(vm = %key, "creating VMI");
            match vmis.create(&new, &WriteOptions::default()).await {
                Ok(created) => {
                    ctx.vmis.insert_written(key.clone(), created, |v| {
                        super::reflector::resource_version(&v.metadata)
                    });
                    record(
                        &ctx,
                        &vm,
                        "SuccessfulCreate",
                        &format!("Started the virtual machine by creating the new virtual machine instance {name}"),
                    )
                    .await;
                }
                // The cache lags behind an earlier create: the watch catches up.
                Err(e) if e.code() == Some(409) => {}
                Err(e) => return Err(VmError::Write("VMI", e)),
            }
        }
        VmiAction::Delete(uid) => {
            tracing::info!(vm = %key, "deleting VMI");
            let opts = DeleteOptions {
                preconditions_uid: Some(uid.clone()),
                ..DeleteOptions::default()
            };
            match vmis.delete(&name, &opts).await {
                Ok(_) => {
                    record(
                        &ctx,
                        &vm,
                        "SuccessfulDelete",
                        &format!("Stopped the virtual machine by deleting the virtual machine instance {uid}"),
                    )
                    .await;
                }
                Err(e) if matches!(e.code(), Some(404 | 409)) => {}
                Err(e) => return Err(VmError::Write("VMI", e)),
            }
        }
    }
    if vm.status.as_ref() != Some(&decision.status) {
        let vms: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), ctx.vm_def, &ns);
        let status = serde_json::to_value(&decision.status).map_err(VmError::Encode)?;
        match vms
            .patch_status(&name, Patch::Merge(json!({"status": status})))
            .await
        {
            Ok(updated) => ctx.vms.insert(key, updated),
            Err(e) if e.code() == Some(404) => {}
            Err(e) => return Err(VmError::Write("VM status", e)),
        }
    }
    Ok(decision.requeue.map_or(Action::AwaitChange, |d| {
        Action::Requeue(d + Duration::from_millis(10))
    }))
}

/// The key of the VM a VMI change concerns: its controller owner, by the VMI's own key (a
/// VM's VMI has the VM's name).
fn vm_key_of_vmi(change: &Change<VirtualMachineInstance>) -> Option<String> {
    let owned = change
        .object
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.kind == "VirtualMachine");
    owned.then(|| change.key.clone())
}

/// The key of the VM owning a changed DataVolume (a dataVolumeTemplates entry).
fn vm_key_of_dv(change: &Change<api::cdi::datavolume::DataVolume>) -> Option<String> {
    let meta = &change.object.metadata;
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true) && r.kind == "VirtualMachine")
        .map(|r| {
            format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                r.name
            )
        })
}

/// Runs the VM controller until `shutdown`.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let ctx = Arc::new(Context::new(client.clone()));
    let (vm_tx, mut vm_rx) = mpsc::unbounded_channel::<Change<VirtualMachine>>();
    let (vmi_tx, mut vmi_rx) = mpsc::unbounded_channel::<Change<VirtualMachineInstance>>();
    tokio::spawn(reflect(
        Api::all(client.clone(), ctx.vm_def),
        ctx.vms.clone(),
        vm_tx,
        shutdown.clone(),
    ));
    tokio::spawn(reflect(
        Api::all(client.clone(), ctx.vmi_def),
        ctx.vmis.clone(),
        vmi_tx,
        shutdown.clone(),
    ));
    let (dv_tx, mut dv_rx) = mpsc::unbounded_channel::<Change<api::cdi::datavolume::DataVolume>>();
    tokio::spawn(reflect(
        Api::all(client, ctx.dv_def),
        ctx.dvs.clone(),
        dv_tx,
        shutdown.clone(),
    ));
    let (key_tx, key_rx) = mpsc::unbounded_channel();
    let forward = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let key = tokio::select! {
                () = forward.cancelled() => return,
                Some(c) = vm_rx.recv() => Some(c.key),
                Some(c) = vmi_rx.recv() => vm_key_of_vmi(&c),
                Some(c) = dv_rx.recv() => vm_key_of_dv(&c),
                else => return,
            };
            if let Some(k) = key {
                if key_tx.send(k).is_err() {
                    return;
                }
            }
        }
    });
    runtime::run(
        ctx,
        key_rx,
        |ctx: &Context| {
            ctx.vms
                .list()
                .iter()
                .map(|vm| {
                    format!(
                        "{}/{}",
                        vm.metadata.namespace.as_deref().unwrap_or(""),
                        vm.metadata.name.as_deref().unwrap_or("")
                    )
                })
                .collect()
        },
        reconcile,
        RESYNC,
        shutdown,
    )
    .await;
}

/// A start or stop request as the subresources append them.
pub fn state_change(action: &str, uid: Option<String>) -> StateChangeRequest {
    StateChangeRequest {
        action: action.to_string(),
        uid,
        ..StateChangeRequest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn vm(spec: Value) -> VirtualMachine {
        let mut v = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "namespace": "default", "uid": "vm-uid"},
            "spec": {"template": {"metadata": {"labels": {"app": "x"}},
                     "spec": {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}},
        });
        json_patch::merge(&mut v["spec"], &spec);
        serde_json::from_value(v).unwrap()
    }

    fn with_status(mut vm: VirtualMachine, status: Value) -> VirtualMachine {
        vm.status = Some(serde_json::from_value(status).unwrap());
        vm
    }

    fn vmi_of(vm: &VirtualMachine, uid: &str, status: Value) -> VirtualMachineInstance {
        let mut v = new_vmi(vm).unwrap();
        v.metadata.uid = Some(uid.into());
        v.status = Some(serde_json::from_value(status).unwrap());
        v
    }

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn printable_of(d: &Decision) -> PrintableStatus {
        d.status.printable_status.unwrap()
    }

    #[test]
    fn new_vmi_copies_the_template_and_is_owned() {
        let v = vm(json!({"runStrategy": "Always"}));
        let vmi = new_vmi(&v).unwrap();
        assert_eq!(vmi.metadata.name.as_deref(), Some("vm1"));
        assert_eq!(vmi.metadata.namespace.as_deref(), Some("default"));
        let labels = vmi.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app"], "x");
        assert_eq!(labels[VM_NAME_LABEL], "vm1");
        let owner = &vmi.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.uid.as_str(),
                owner.controller,
                owner.block_owner_deletion
            ),
            ("VirtualMachine", "vm-uid", Some(true), Some(true))
        );
        assert!(owned_by(&vmi, &v));
        assert_eq!(vmi.spec, v.spec.template.unwrap().spec.unwrap());
        assert!(matches!(
            new_vmi(&vm(json!({"template": null}))),
            Err(VmError::NoTemplate(_))
        ));
    }

    #[test]
    fn always_creates_and_replaces_finished_vmis() {
        let v = vm(json!({"runStrategy": "Always"}));
        let d = decide(&v, None, now());
        assert_eq!(d.vmi, VmiAction::Create);
        assert_eq!(printable_of(&d), PrintableStatus::Starting);
        assert_eq!(d.status.created, Some(true));
        let running = vmi_of(
            &v,
            "u1",
            json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        let d = decide(&v, Some(&running), now());
        assert_eq!(d.vmi, VmiAction::None);
        assert_eq!(printable_of(&d), PrintableStatus::Running);
        assert_eq!(d.status.ready, Some(true));
        let done = vmi_of(&v, "u1", json!({"phase": "Succeeded"}));
        assert_eq!(
            decide(&v, Some(&done), now()).vmi,
            VmiAction::Delete("u1".into())
        );
        // `running: true` is Always.
        assert_eq!(
            decide(&vm(json!({"running": true})), None, now()).vmi,
            VmiAction::Create
        );
    }

    #[test]
    fn halted_and_running_false_delete_and_stay_stopped() {
        for spec in [
            json!({"runStrategy": "Halted"}),
            json!({"running": false}),
            json!({}),
        ] {
            let v = vm(spec);
            let d = decide(&v, None, now());
            assert_eq!(d.vmi, VmiAction::None);
            assert_eq!(printable_of(&d), PrintableStatus::Stopped);
            assert_eq!(d.status.created, Some(false));
            let ready = d
                .status
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .unwrap();
            assert_eq!(ready.reason.as_deref(), Some("VMINotExists"));
            let running = vmi_of(&v, "u1", json!({"phase": "Running"}));
            let d = decide(&v, Some(&running), now());
            assert_eq!(d.vmi, VmiAction::Delete("u1".into()));
            assert_eq!(printable_of(&d), PrintableStatus::Stopping);
        }
    }

    #[test]
    fn rerun_on_failure_restarts_failures_only() {
        let v = vm(json!({"runStrategy": "RerunOnFailure"}));
        assert_eq!(decide(&v, None, now()).vmi, VmiAction::Create);
        let ok = vmi_of(&v, "u1", json!({"phase": "Succeeded"}));
        let d = decide(&v, Some(&ok), now());
        assert_eq!(d.vmi, VmiAction::None);
        assert_eq!(printable_of(&d), PrintableStatus::Stopped);
        let failed = vmi_of(&v, "u1", json!({"phase": "Failed"}));
        let d = decide(&v, Some(&failed), now());
        assert_eq!(d.vmi, VmiAction::Delete("u1".into()));
    }

    #[test]
    fn once_never_restarts() {
        let v = vm(json!({"runStrategy": "Once"}));
        assert_eq!(decide(&v, None, now()).vmi, VmiAction::Create);
        for phase in ["Succeeded", "Failed"] {
            let done = vmi_of(&v, "u1", json!({"phase": phase}));
            let d = decide(&v, Some(&done), now());
            assert_eq!(d.vmi, VmiAction::None);
            // Nothing will start again, so there is no backoff to show.
            assert_eq!(printable_of(&d), PrintableStatus::Stopped);
            assert!(d.status.start_failure.is_none());
            assert_eq!(d.requeue, None);
        }
    }

    #[test]
    fn manual_follows_start_and_stop_requests() {
        let v = vm(json!({"runStrategy": "Manual"}));
        assert_eq!(decide(&v, None, now()).vmi, VmiAction::None);
        let start = with_status(
            v.clone(),
            json!({"stateChangeRequests": [{"action": "Start"}]}),
        );
        let d = decide(&start, None, now());
        assert_eq!(d.vmi, VmiAction::Create);
        assert!(d.status.state_change_requests.is_empty());
        let running = vmi_of(&v, "u1", json!({"phase": "Running"}));
        let stop = with_status(
            v.clone(),
            json!({"stateChangeRequests": [{"action": "Stop", "uid": "u1"}]}),
        );
        let d = decide(&stop, Some(&running), now());
        assert_eq!(d.vmi, VmiAction::Delete("u1".into()));
        // The request stays until the VMI is gone.
        assert_eq!(d.status.state_change_requests.len(), 1);
        let d = decide(&stop, None, now());
        assert_eq!(d.vmi, VmiAction::None);
        assert!(d.status.state_change_requests.is_empty());
        // A finished VMI does not stop Manual from staying down.
        let done = vmi_of(&v, "u1", json!({"phase": "Succeeded"}));
        assert_eq!(decide(&v, Some(&done), now()).vmi, VmiAction::None);
    }

    #[test]
    fn restart_is_stop_then_start() {
        let v = with_status(
            vm(json!({"runStrategy": "Always"})),
            json!({"stateChangeRequests": [{"action": "Stop", "uid": "u1"}, {"action": "Start"}]}),
        );
        let running = vmi_of(&v, "u1", json!({"phase": "Running"}));
        let d = decide(&v, Some(&running), now());
        assert_eq!(d.vmi, VmiAction::Delete("u1".into()));
        let mut after = v.clone();
        after.status = Some(d.status.clone());
        let d = decide(&after, None, now());
        // Stop is done; Start creates in the same pass once the VMI is gone.
        assert_eq!(d.status.state_change_requests.len(), 1);
        after.status = Some(d.status);
        let d = decide(&after, None, now());
        assert_eq!(d.vmi, VmiAction::Create);
        assert!(d.status.state_change_requests.is_empty());
    }

    #[test]
    fn failures_back_off_into_crash_loop() {
        let v = vm(json!({"runStrategy": "Always"}));
        let failed = vmi_of(&v, "u1", json!({"phase": "Failed"}));
        let d = decide(&v, Some(&failed), now());
        assert_eq!(d.vmi, VmiAction::Delete("u1".into()));
        let sf = d.status.start_failure.clone().unwrap();
        assert_eq!(sf.consecutive_fail_count, Some(1));
        assert_eq!(sf.last_failed_vmi_uid.as_deref(), Some("u1"));
        // The same failed VMI seen again counts once.
        let again = decide(
            &with_status(v.clone(), serde_json::to_value(&d.status).unwrap()),
            Some(&failed),
            now(),
        );
        assert_eq!(
            again.status.start_failure.unwrap().consecutive_fail_count,
            Some(1)
        );
        // Gone, within the backoff: no VMI, CrashLoopBackOff, a requeue at its end.
        let waiting = with_status(v.clone(), serde_json::to_value(&d.status).unwrap());
        let d2 = decide(&waiting, None, now());
        assert_eq!(d2.vmi, VmiAction::None);
        assert_eq!(printable_of(&d2), PrintableStatus::CrashLoopBackOff);
        assert_eq!(d2.requeue, Some(start_backoff(1)));
        let later = now() + k8s_openapi::chrono::Duration::seconds(11);
        assert_eq!(decide(&waiting, None, later).vmi, VmiAction::Create);
        // A second failure squares the delay; a VMI that ran clears the count.
        let failed2 = vmi_of(&v, "u2", json!({"phase": "Failed"}));
        let d3 = decide(&waiting, Some(&failed2), later);
        assert_eq!(
            d3.status
                .start_failure
                .as_ref()
                .unwrap()
                .consecutive_fail_count,
            Some(2)
        );
        let running = vmi_of(&v, "u3", json!({"phase": "Running"}));
        let d4 = decide(
            &with_status(v.clone(), serde_json::to_value(&d3.status).unwrap()),
            Some(&running),
            later,
        );
        assert!(d4.status.start_failure.is_none());
        // A VMI that failed after it ran is not a start failure, whether or not this
        // controller saw it Running: it clears the count and is replaced at once.
        let ran_then_crashed = vmi_of(
            &v,
            "u4",
            json!({"phase": "Failed", "phaseTransitionTimestamps": [
                {"phase": "Scheduled", "phaseTransitionTimestamp": "2026-01-01T00:00:00Z"},
                {"phase": "Running", "phaseTransitionTimestamp": "2026-01-01T00:00:01Z"},
                {"phase": "Failed", "phaseTransitionTimestamp": "2026-01-01T00:00:02Z"}]}),
        );
        let d5 = decide(
            &with_status(v.clone(), serde_json::to_value(&d3.status).unwrap()),
            Some(&ran_then_crashed),
            later,
        );
        assert!(d5.status.start_failure.is_none());
        assert_eq!(d5.vmi, VmiAction::Delete("u4".into()));
        let gone = with_status(v, serde_json::to_value(&d5.status).unwrap());
        assert_eq!(decide(&gone, None, later).vmi, VmiAction::Create);
    }

    #[test]
    fn start_backoff_grows_and_caps() {
        assert_eq!(start_backoff(1), Duration::from_secs(10));
        assert_eq!(start_backoff(2), Duration::from_secs(40));
        assert_eq!(start_backoff(3), Duration::from_secs(90));
        assert_eq!(start_backoff(10), MAX_START_BACKOFF);
    }

    #[test]
    fn printable_status_follows_the_vmi() {
        let v = vm(json!({"runStrategy": "Always"}));
        let cases = [
            (json!({}), PrintableStatus::Starting),
            (json!({"phase": "Scheduled"}), PrintableStatus::Starting),
            (
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient memory."}]}),
                PrintableStatus::Unschedulable,
            ),
            (
                json!({"phase": "Running", "conditions": [{"type": "Paused", "status": "True"}]}),
                PrintableStatus::Paused,
            ),
            (json!({"phase": "Unknown"}), PrintableStatus::Unknown),
        ];
        for (status, want) in cases {
            let vmi = vmi_of(&v, "u1", status.clone());
            assert_eq!(
                printable_of(&decide(&v, Some(&vmi), now())),
                want,
                "{status}"
            );
        }
        let unsched = vmi_of(
            &v,
            "u1",
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable", "message": "m"}]}),
        );
        let d = decide(&v, Some(&unsched), now());
        let failure = d
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Failure")
            .unwrap();
        assert_eq!(failure.message.as_deref(), Some("m"));
        let mut deleting = v.clone();
        deleting.metadata.deletion_timestamp = Some(Time(now()));
        let running = vmi_of(&v, "u1", json!({"phase": "Running"}));
        let d = decide(&deleting, Some(&running), now());
        assert_eq!(printable_of(&d), PrintableStatus::Terminating);
        assert_eq!(d.vmi, VmiAction::Delete("u1".into()));
    }

    #[test]
    fn a_vmi_of_someone_else_is_left_alone() {
        let v = vm(json!({"runStrategy": "Halted"}));
        let mut foreign = vmi_of(&v, "u1", json!({"phase": "Running"}));
        foreign.metadata.owner_references = None;
        assert_eq!(decide(&v, Some(&foreign), now()).vmi, VmiAction::None);
    }

    /// reconcile against an in-memory store: creates the owned VMI, then stops it.
    #[tokio::test]
    async fn reconcile_writes_through_the_client() {
        let objects = crate::store::Objects::in_memory().unwrap();
        let client = Client::local(objects);
        let ctx = Arc::new(Context::new(client.clone()));
        let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ctx.vm_def, "default");
        let vmis: Api<VirtualMachineInstance> =
            Api::namespaced(client.clone(), ctx.vmi_def, "default");
        let mut spec = vm(json!({"runStrategy": "Always"}));
        spec.metadata.uid = None;
        let created = vms.create(&spec, &WriteOptions::default()).await.unwrap();
        ctx.vms.insert("default/vm1".into(), created);
        let action = reconcile(ctx.clone(), "default/vm1".into()).await.unwrap();
        assert_eq!(action, Action::AwaitChange);
        let vmi = vmis.get("vm1").await.unwrap();
        assert!(owned_by(&vmi, &ctx.vms.get("default/vm1").unwrap()));
        let vm_now = vms.get("vm1").await.unwrap();
        let status = vm_now.status.clone().unwrap();
        assert_eq!(status.printable_status, Some(PrintableStatus::Starting));
        assert_eq!(status.created, Some(true));
        // Halt it: the VMI is deleted and the VM says Stopping, then Stopped.
        let halted = vms
            .patch(
                "vm1",
                Patch::Merge(json!({"spec": {"runStrategy": "Halted"}})),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        ctx.vms.insert("default/vm1".into(), halted);
        reconcile(ctx.clone(), "default/vm1".into()).await.unwrap();
        assert!(vmis.get_opt("vm1").await.unwrap().is_none());
        assert_eq!(
            vms.get("vm1")
                .await
                .unwrap()
                .status
                .unwrap()
                .printable_status,
            Some(PrintableStatus::Stopping)
        );
        ctx.vmis.remove("default/vm1");
        ctx.vms
            .insert("default/vm1".into(), vms.get("vm1").await.unwrap());
        reconcile(ctx.clone(), "default/vm1".into()).await.unwrap();
        assert_eq!(
            vms.get("vm1")
                .await
                .unwrap()
                .status
                .unwrap()
                .printable_status,
            Some(PrintableStatus::Stopped)
        );
        // The VMI's creation and deletion are Events about the VM.
        let events: Api<serde_json::Value> = Api::namespaced(
            client,
            api::resource::find_kind("", "Event").unwrap(),
            "default",
        );
        let mut reasons: Vec<String> = events
            .list(&crate::store::ListOptions::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|e| e["involvedObject"]["name"] == "vm1")
            .map(|e| e["reason"].as_str().unwrap().to_string())
            .collect();
        reasons.sort();
        assert_eq!(reasons, ["SuccessfulCreate", "SuccessfulDelete"]);
    }
}

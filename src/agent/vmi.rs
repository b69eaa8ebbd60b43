//! Reconciling one VMI bound to this node (virt-handler's VMI loop): start its VM when it
//! is Scheduled, report Running (with conditions, interfaces, topology and memory), turn
//! the VM's end into Succeeded or Failed, and on deletion power the guest off within its
//! grace period before letting the VMI go (the agent's finalizer). A VMI this process
//! has no VM for while it says Running (the agent restarted) is Failed: the guest is gone.

use super::domain::{Domain, CONSOLE_RING_BYTES};
use super::event::record;
use super::prepare::{self, PrepareError, Prepared};
use super::{Agent, FINALIZER};
use crate::client::{Api, ClientError};
use crate::controller::clock;
use crate::controller::event::EventType;
use crate::controller::runtime::Action;
use crate::scheduler::cluster::node_of;
use crate::scheduler::request;
use crate::scheduler::runner::set_condition;
use crate::store::{Patch, WriteOptions};
use crate::vmm::{self, Command, ConsoleConfig, ConsoleRing, ExitReason, VmConfig};
use api::kubevirt::condition::Condition;
use api::kubevirt::virtualmachineinstance::{
    CpuTopology, MemoryStatus, PhaseTransitionTimestamp, VirtualMachineInstance,
    VirtualMachineInstancePhase as Phase, VirtualMachineInstanceStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// KubeVirt's default terminationGracePeriodSeconds.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Errors of one VMI reconcile (retried with backoff).
#[allow(clippy::result_large_err)]
#[derive(Debug, thiserror::Error)]
pub enum VmiError {
    #[error("Writing VMI {0} failed")]
    Write(String, #[source] ClientError),
    #[error("VMI status does not encode")]
    Encode(#[source] serde_json::Error),
}

/// Why a VM could not be started (the VMI fails with this message).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error("Invalid VM for this node: {0}")]
    Spec(String),
    #[error(transparent)]
    Vm(#[from] vmm::VmError),
    #[error("Starting the VM failed: {0}")]
    Start(#[from] vmm::CommandError),
    #[error("The VM set-up task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Volumes(#[from] crate::storage::volume::VolumeError),
}

/// The NetworkAttachmentDefinitions the VMI's multus networks name; one that cannot be
/// read is left out, and preparing the VMI then says which is missing.
async fn network_attachments(
    client: &crate::client::Client,
    vmi: &VirtualMachineInstance,
) -> prepare::Nads {
    let mut nads = prepare::Nads::new();
    let Some(def) = api::resource::find_kind("k8s.cni.cncf.io", "NetworkAttachmentDefinition")
    else {
        return nads;
    };
    for (ns, name) in crate::network::plan::nad_refs(vmi) {
        let api: Api<api::network::attachment::NetworkAttachmentDefinition> =
            Api::namespaced(client.clone(), def, &ns);
        match api.get_opt(&name).await {
            Ok(Some(nad)) => {
                nads.insert((ns, name), nad);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("reading NetworkAttachmentDefinition {ns}/{name}: {e}"),
        }
    }
    nads
}

fn uid_of(vmi: &VirtualMachineInstance) -> String {
    vmi.metadata.uid.clone().unwrap_or_default()
}

fn phase_of(vmi: &VirtualMachineInstance) -> Option<Phase> {
    vmi.status.as_ref().and_then(|s| s.phase)
}

/// The grace period of `vmi`.
pub fn grace_of(vmi: &VirtualMachineInstance) -> Duration {
    vmi.spec
        .termination_grace_period_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(DEFAULT_GRACE, Duration::from_secs)
}

/// The VM configuration for `vmi` on `prepared`, with COM1 in `console`.
pub fn vm_config(
    vmi: &VirtualMachineInstance,
    prepared: &Prepared,
    console: &ConsoleRing,
) -> Result<VmConfig, StartError> {
    let ns = vmi.metadata.namespace.as_deref().unwrap_or("default");
    let name = vmi.metadata.name.as_deref().unwrap_or("vmi");
    let mut config = VmConfig::new(format!("{ns}.{name}"), &prepared.kernel);
    let cpu = vmi.spec.domain.cpu.clone().unwrap_or_default();
    let topology = arch::cpu::Topology {
        sockets: cpu.sockets.unwrap_or(1).max(1),
        cores: cpu.cores.unwrap_or(1).max(1),
        threads: cpu.threads.unwrap_or(1).max(1),
    };
    config.vcpus = topology.vcpus();
    config.topology = Some(topology);
    let memory = request::guest_memory(vmi);
    if memory <= 0 {
        return Err(StartError::Spec(
            "no guest memory (spec.domain.memory.guest or resources.requests.memory)".into(),
        ));
    }
    config.memory_mib = u64::try_from(memory).unwrap_or(0).div_ceil(1 << 20);
    config.hugepages = vmi
        .spec
        .domain
        .memory
        .as_ref()
        .and_then(|m| m.hugepages.as_ref())
        .is_some();
    if let Some(model) = cpu.model.as_deref() {
        config.cpu.model = model
            .parse()
            .map_err(|e| StartError::Spec(format!("cpu model: {e}")))?;
    }
    for f in &cpu.features {
        let policy = match &f.policy {
            Some(p) => serde_json::to_value(p)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
                .parse()
                .map_err(|e| StartError::Spec(format!("cpu feature {}: {e}", f.name)))?,
            None => arch::cpu::FeaturePolicy::default(),
        };
        config.cpu.features.push((f.name.clone(), policy));
    }
    config.initrd = prepared.initrd.clone();
    config.cmdline = prepared.cmdline.clone();
    config.console = ConsoleConfig::Ring(console.clone());
    config.disks = prepared.disks.clone();
    config.nics = prepared.nics.clone();
    Ok(config)
}

/// Creates the VM for `config` off the async runtime (KVM ioctls, kernel loading) and
/// starts its vCPUs.
pub async fn boot(config: VmConfig) -> Result<vmm::VmHandle, StartError> {
    let handle = tokio::task::spawn_blocking(move || vmm::create(config))
        .await
        .map_err(|e| StartError::Task(e.to_string()))??;
    handle.call_async(Command::Start).await?;
    Ok(handle)
}

fn set_phase(s: &mut VirtualMachineInstanceStatus, phase: Phase) {
    if s.phase != Some(phase) {
        s.phase = Some(phase);
        s.phase_transition_timestamps
            .push(PhaseTransitionTimestamp {
                phase: Some(phase),
                phase_transition_timestamp: Some(Time(clock::now())),
            });
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> Condition {
    let mut c = Condition::new(type_, status);
    c.reason = reason.map(str::to_string);
    c.message = message;
    c
}

/// The status of a VMI whose VM runs in `d`.
fn running_status(vmi: &VirtualMachineInstance, d: &Domain) -> VirtualMachineInstanceStatus {
    let mut s = vmi.status.clone().unwrap_or_default();
    set_phase(&mut s, Phase::Running);
    set_condition(&mut s.conditions, condition("Ready", true, None, None));
    if d.state().paused {
        set_condition(
            &mut s.conditions,
            condition(
                "Paused",
                true,
                Some("PausedByUser"),
                Some("VMI was paused by user".into()),
            ),
        );
    } else {
        s.conditions.retain(|c| c.type_ != "Paused");
    }
    s.interfaces = d.prepared.interfaces.clone();
    let t = d.config.topology();
    s.current_cpu_topology = Some(CpuTopology {
        sockets: Some(t.sockets),
        cores: Some(t.cores),
        threads: Some(t.threads),
    });
    let mem = Quantity(format!("{}Mi", d.config.memory_mib));
    s.memory = Some(MemoryStatus {
        guest_at_boot: Some(mem.clone()),
        guest_current: Some(mem.clone()),
        guest_requested: Some(mem),
    });
    s
}

/// The status of a VMI whose VM ended (or never started) for `why`.
fn final_status(
    vmi: &VirtualMachineInstance,
    phase: Phase,
    reason: &str,
    message: String,
) -> VirtualMachineInstanceStatus {
    let mut s = vmi.status.clone().unwrap_or_default();
    set_phase(&mut s, phase);
    s.conditions.retain(|c| c.type_ != "Paused");
    set_condition(
        &mut s.conditions,
        condition("Ready", false, Some(reason), Some(message)),
    );
    s
}

/// The phase a VM's end gives its VMI: a poweroff succeeded, anything else failed.
pub fn phase_for(exit: &ExitReason) -> Phase {
    match exit {
        ExitReason::Shutdown => Phase::Succeeded,
        _ => Phase::Failed,
    }
}

/// The final phase and Ready reason of a VMI whose VM ended with `exit`.
fn ended(exit: &ExitReason) -> (Phase, &'static str) {
    match phase_for(exit) {
        Phase::Succeeded => (Phase::Succeeded, "Succeeded"),
        phase => (phase, "Failed"),
    }
}

impl Agent {
    fn vmi_api(&self, vmi: &VirtualMachineInstance) -> Api<VirtualMachineInstance> {
        Api::namespaced(
            self.client.clone(),
            self.vmi_def,
            vmi.metadata.namespace.as_deref().unwrap_or_default(),
        )
    }

    /// Writes `status` unless it is what the VMI already says; the VMI's resourceVersion
    /// is the precondition (a conflict retries the reconcile on fresher data).
    async fn write_status(
        &self,
        vmi: &VirtualMachineInstance,
        status: VirtualMachineInstanceStatus,
    ) -> Result<VirtualMachineInstance, VmiError> {
        if vmi.status.as_ref() == Some(&status) {
            return Ok(vmi.clone());
        }
        let name = vmi.metadata.name.clone().unwrap_or_default();
        let status = serde_json::to_value(&status).map_err(VmiError::Encode)?;
        let written = self
            .vmi_api(vmi)
            .patch_status(
                &name,
                Patch::Merge(json!({
                    "metadata": {"resourceVersion": vmi.metadata.resource_version},
                    "status": status,
                })),
            )
            .await
            .map_err(|e| VmiError::Write(name, e))?;
        self.vmis
            .insert_written(super::key_of(&written), written.clone(), |v| {
                crate::controller::reflector::resource_version(&v.metadata)
            });
        Ok(written)
    }

    /// Sets or clears the agent's finalizer.
    async fn set_finalizer(
        &self,
        vmi: &VirtualMachineInstance,
        present: bool,
    ) -> Result<VirtualMachineInstance, VmiError> {
        let mut finalizers = vmi.metadata.finalizers.clone().unwrap_or_default();
        let has = finalizers.iter().any(|f| f == FINALIZER);
        if has == present {
            return Ok(vmi.clone());
        }
        if present {
            finalizers.push(FINALIZER.to_string());
        } else {
            finalizers.retain(|f| f != FINALIZER);
        }
        let name = vmi.metadata.name.clone().unwrap_or_default();
        let patched = self
            .vmi_api(vmi)
            .patch(
                &name,
                Patch::Merge(json!({"metadata": {
                    "resourceVersion": vmi.metadata.resource_version,
                    "finalizers": finalizers}})),
                &WriteOptions::default(),
            )
            .await;
        match patched {
            Ok(v) => Ok(v),
            // Removing the last finalizer of a deleted VMI removes it; a 404 means gone.
            Err(e) if !present && e.code() == Some(404) => Ok(vmi.clone()),
            Err(e) => Err(VmiError::Write(name, e)),
        }
    }

    /// Kills `d` if it still runs, waits for its threads, releases what was prepared
    /// for it and forgets it.
    pub(crate) async fn destroy(&self, d: &Arc<Domain>) {
        let handle = d.handle();
        if d.state().exit.is_none() {
            if let Err(e) = handle.call_async(Command::Kill).await {
                tracing::debug!(vmi = %d.key, "kill: {e}");
            }
        }
        let reason = handle.exited().await;
        d.state().exit.get_or_insert(reason);
        self.forget(d);
    }

    /// Releases an ended domain and removes it from the table.
    fn forget(&self, d: &Domain) {
        if let Err(e) = prepare::release(&self.node, &d.uid) {
            tracing::warn!(vmi = %d.key, "releasing the VM's resources: {e}");
        }
        self.domains.remove(&d.key, &d.uid);
        if let Some(r) = &self.config.vm_stats {
            r.remove(&self.stats_key(d));
        }
    }

    /// The key of `d` in the `/metrics` registry.
    fn stats_key(&self, d: &Domain) -> crate::vmm::stats::VmKey {
        let (namespace, name) = d.key.split_once('/').unwrap_or(("", d.key.as_str()));
        crate::vmm::stats::VmKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
            node: self.config.node_name.clone(),
        }
    }

    /// Registers `d`'s current VM for `/metrics`.
    fn register_stats(&self, d: &Domain) {
        if let Some(r) = &self.config.vm_stats {
            r.insert(self.stats_key(d), d.handle().stats());
        }
    }

    /// Watches `d`'s VM: an in-place reboot when the guest asks for one (unless it is
    /// being stopped), else records the exit and requeues the VMI.
    fn watch_exit(self: &Arc<Self>, d: Arc<Domain>) {
        let agent = self.clone();
        tokio::spawn(async move {
            loop {
                let reason = d.handle().exited().await;
                if reason == ExitReason::Reboot && !d.state().stopping {
                    tracing::info!(vmi = %d.key, "guest rebooted; starting it again");
                    match boot(d.config.clone()).await {
                        Ok(h) => {
                            d.replace_handle(h);
                            agent.register_stats(&d);
                            continue;
                        }
                        Err(e) => {
                            d.state().exit = Some(ExitReason::Crash {
                                detail: format!("restarting after a guest reboot failed: {e}"),
                            });
                            break;
                        }
                    }
                }
                d.state().exit.get_or_insert(reason);
                break;
            }
            let _ = agent.keys.send(d.key.clone());
        });
    }

    /// Prepares and boots the VM of `vmi`.
    async fn start(
        self: &Arc<Self>,
        key: &str,
        vmi: &VirtualMachineInstance,
    ) -> Result<Arc<Domain>, StartError> {
        let node = self.node.clone();
        let v = vmi.clone();
        let nads = network_attachments(&self.client, vmi).await;
        let uid = uid_of(vmi);
        let storage = match &self.node.volumes {
            Some(volumes) => volumes.prepare(vmi).await?,
            None => Vec::new(),
        };
        let prepared = tokio::task::spawn_blocking(move || {
            prepare::prepare_with_volumes(&node, &v, &nads, &storage)
        })
        .await
        .map_err(|e| StartError::Task(e.to_string()));
        let prepared = match prepared {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                let _ = prepare::release(&self.node, &uid);
                return Err(e.into());
            }
            Err(e) => {
                let _ = prepare::release(&self.node, &uid);
                return Err(e);
            }
        };
        let console = ConsoleRing::new(CONSOLE_RING_BYTES);
        let booted = match vm_config(vmi, &prepared, &console) {
            Ok(config) => boot(config.clone()).await.map(|h| (config, h)),
            Err(e) => Err(e),
        };
        let (config, handle) = match booted {
            Ok(b) => b,
            Err(e) => {
                let _ = prepare::release(&self.node, &uid);
                return Err(e);
            }
        };
        for w in &prepared.warnings {
            record(
                &self.events,
                vmi,
                EventType::Warning,
                "InterfaceNotConnected",
                w,
            )
            .await;
        }
        let d = Arc::new(Domain::new(
            key.to_string(),
            uid,
            console,
            prepared,
            config,
            grace_of(vmi),
            handle,
        ));
        self.domains.insert(d.clone());
        self.register_stats(&d);
        self.watch_exit(d.clone());
        Ok(d)
    }
}

/// Reconciles the VMI with cache key `key`.
pub async fn reconcile(agent: Arc<Agent>, key: String) -> Result<Action, VmiError> {
    let vmi = agent.vmis.get(&key);
    let me = agent.config.node_name.as_str();
    // A domain whose VMI is gone, replaced or moved away must not run on.
    if let Some(d) = agent.domains.get(&key) {
        let current = vmi
            .as_deref()
            .is_some_and(|v| uid_of(v) == d.uid && node_of(v) == Some(me));
        if !current {
            tracing::info!(vmi = %key, "VMI gone or moved; stopping its VM");
            agent.destroy(&d).await;
        }
    }
    let Some(vmi) = vmi else {
        return Ok(Action::AwaitChange);
    };
    if node_of(&vmi) != Some(me) {
        return Ok(Action::AwaitChange);
    }
    let uid = uid_of(&vmi);
    let domain = agent.domains.get(&key).filter(|d| d.uid == uid);
    let phase = phase_of(&vmi);

    if vmi.metadata.deletion_timestamp.is_some() {
        // The VMI as last written here (its finalizer is released on that version).
        let mut current = vmi.clone();
        if let Some(d) = &domain {
            if d.state().exit.is_none() {
                let first = !std::mem::replace(&mut d.state().stopping, true);
                if first {
                    tracing::info!(vmi = %key, grace = ?d.grace, "powering the guest off");
                    if let Err(e) = d.handle().request(Command::Stop { timeout: d.grace }) {
                        tracing::debug!(vmi = %key, "stop: {e}");
                    }
                    record(
                        &agent.events,
                        &vmi,
                        EventType::Normal,
                        "ShuttingDown",
                        "Signaled Graceful Shutdown",
                    )
                    .await;
                }
                // The exit watcher requeues as soon as the VM is gone.
                return Ok(Action::Requeue(d.grace + Duration::from_secs(5)));
            }
            // The last status says how the guest ended (powered off within its grace
            // period: Succeeded; forced or crashed: Failed), as virt-handler's does
            // before it lets the VMI go.
            let exit = d.state().exit.clone().unwrap_or(ExitReason::Killed);
            if !phase.is_some_and(Phase::is_final) {
                let (phase, reason) = ended(&exit);
                let status = final_status(&vmi, phase, reason, exit.to_string());
                current = Arc::new(agent.write_status(&vmi, status).await?);
            }
            agent.forget(d);
            record(
                &agent.events,
                &current,
                EventType::Normal,
                "Deleted",
                &format!("Signaled Deletion: {exit}"),
            )
            .await;
        } else if let Err(e) = prepare::release(&agent.node, &uid) {
            tracing::warn!(vmi = %key, "releasing leftovers: {e}");
        }
        agent.set_finalizer(&current, false).await?;
        return Ok(Action::AwaitChange);
    }

    if phase.is_some_and(Phase::is_final) {
        if let Some(d) = &domain {
            if d.state().exit.is_none() {
                agent.destroy(d).await;
            } else {
                agent.forget(d);
            }
        } else if let Err(e) = prepare::release(&agent.node, &uid) {
            tracing::warn!(vmi = %key, "releasing leftovers: {e}");
        }
        agent.set_finalizer(&vmi, false).await?;
        return Ok(Action::AwaitChange);
    }

    match domain {
        Some(d) => {
            let exit = d.state().exit.clone();
            match exit {
                Some(exit) => {
                    let (phase, reason) = ended(&exit);
                    let (event_type, event) = match phase {
                        Phase::Succeeded => (EventType::Normal, "Stopped"),
                        _ => (EventType::Warning, "Failed"),
                    };
                    tracing::info!(vmi = %key, %exit, "VM ended");
                    let status = final_status(&vmi, phase, reason, exit.to_string());
                    agent.write_status(&vmi, status).await?;
                    record(&agent.events, &vmi, event_type, event, &exit.to_string()).await;
                    // The next reconcile (on the status change) releases and forgets it.
                }
                None => {
                    agent.write_status(&vmi, running_status(&vmi, &d)).await?;
                }
            }
            Ok(Action::AwaitChange)
        }
        None if phase == Some(Phase::Running) => {
            let message =
                "The VM is not running on this node: the node agent restarted and the guest is gone";
            tracing::warn!(vmi = %key, "{message}");
            agent
                .write_status(
                    &vmi,
                    final_status(&vmi, Phase::Failed, "Failed", message.into()),
                )
                .await?;
            record(&agent.events, &vmi, EventType::Warning, "Failed", message).await;
            Ok(Action::AwaitChange)
        }
        None if phase == Some(Phase::Scheduled) => {
            let vmi = agent.set_finalizer(&vmi, true).await?;
            match agent.start(&key, &vmi).await {
                Ok(d) => {
                    tracing::info!(vmi = %key, "VM started");
                    record(
                        &agent.events,
                        &vmi,
                        EventType::Normal,
                        "Started",
                        "VirtualMachineInstance started.",
                    )
                    .await;
                    agent.write_status(&vmi, running_status(&vmi, &d)).await?;
                }
                Err(StartError::Volumes(e)) if e.is_transient() => {
                    // A claim still being populated or held elsewhere: wait, as a pod
                    // waits for its volumes.
                    let message = e.to_string();
                    tracing::info!(vmi = %key, "volumes not ready: {message}");
                    record(
                        &agent.events,
                        &vmi,
                        EventType::Warning,
                        "VolumesNotReady",
                        &message,
                    )
                    .await;
                    return Ok(Action::Requeue(Duration::from_secs(5)));
                }
                Err(e) => {
                    let message = format!("{e}");
                    tracing::warn!(vmi = %key, "starting the VM failed: {message}");
                    record(
                        &agent.events,
                        &vmi,
                        EventType::Warning,
                        "SyncFailed",
                        &message,
                    )
                    .await;
                    agent
                        .write_status(&vmi, final_status(&vmi, Phase::Failed, "Failed", message))
                        .await?;
                }
            }
            Ok(Action::AwaitChange)
        }
        // Bound but not yet Scheduled (the scheduler writes the label first): wait.
        None => Ok(Action::AwaitChange),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vmi(spec: serde_json::Value) -> VirtualMachineInstance {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "v", "namespace": "ns", "uid": "u"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn config_follows_the_spec() {
        let v = vmi(json!({"domain": {
            "cpu": {"sockets": 2, "cores": 2, "threads": 1, "model": "host-passthrough",
                "features": [{"name": "x2apic", "policy": "require"}]},
            "memory": {"guest": "96Mi"},
            "devices": {}},
            "terminationGracePeriodSeconds": 7}));
        let p = Prepared {
            kernel: "/k".into(),
            cmdline: "console=ttyS0".into(),
            ..Prepared::default()
        };
        let c = vm_config(&v, &p, &ConsoleRing::new(16)).unwrap();
        assert_eq!(c.name, "ns.v");
        assert_eq!(c.vcpus, 4);
        assert_eq!(c.topology().sockets, 2);
        assert_eq!(c.memory_mib, 96);
        assert_eq!(c.cpu.features.len(), 1);
        assert_eq!(c.cmdline, "console=ttyS0");
        assert!(matches!(c.console, ConsoleConfig::Ring(_)));
        assert_eq!(grace_of(&v), Duration::from_secs(7));
        assert_eq!(
            grace_of(&vmi(json!({"domain": {"devices": {}}}))),
            DEFAULT_GRACE
        );
        let none = vmi(json!({"domain": {"devices": {}}}));
        assert!(matches!(
            vm_config(&none, &p, &ConsoleRing::new(16)),
            Err(StartError::Spec(_))
        ));
    }

    #[test]
    fn exits_map_to_phases_and_statuses() {
        assert_eq!(phase_for(&ExitReason::Shutdown), Phase::Succeeded);
        assert_eq!(phase_for(&ExitReason::Killed), Phase::Failed);
        assert_eq!(
            phase_for(&ExitReason::Crash { detail: "x".into() }),
            Phase::Failed
        );
        let v = vmi(json!({"domain": {"devices": {}}}));
        let s = final_status(&v, Phase::Failed, "Failed", "boom".into());
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(s.phase_transition_timestamps.len(), 1);
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.message.as_deref(), Some("boom"));
    }
}

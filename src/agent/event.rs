//! Events about VMIs, as virt-handler records them (`Started`, `ShuttingDown`,
//! `Stopped`, `Failed`, `SyncFailed`, ...), through the control plane's one recorder
//! ([`crate::controller::event::Recorder`]) with this node as the source host.
//! Recording is best effort: a failure is logged, never fatal.

use crate::controller::event::{reference_meta, EventType, Recorder};
use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;

/// The component named as the events' source.
pub const COMPONENT: &str = "monovirt-agent";

/// Records an Event of `type_` about `vmi`.
pub async fn record(
    recorder: &Recorder,
    vmi: &VirtualMachineInstance,
    type_: EventType,
    reason: &str,
    message: &str,
) {
    let involved = reference_meta("kubevirt.io/v1", "VirtualMachineInstance", &vmi.metadata);
    recorder.record(&involved, type_, reason, message).await;
}

//! Events about VMIs, as virt-handler records them (`Started`, `ShuttingDown`,
//! `Stopped`, `Failed`, `SyncFailed`, ...). Recording is best effort: a failure is
//! logged, never fatal.

use crate::client::{Api, Client};
use crate::controller::clock;
use crate::store::WriteOptions;
use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};

/// The component named as the events' source.
pub const COMPONENT: &str = "monovirt-agent";

/// Records an Event of `type_` (`Normal` or `Warning`) about `vmi`.
pub async fn record(
    client: &Client,
    vmi: &VirtualMachineInstance,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let Some(def) = api::resource::find_kind("", "Event") else {
        return;
    };
    let ns = vmi.metadata.namespace.clone().unwrap_or_default();
    let name = vmi.metadata.name.clone().unwrap_or_default();
    let now = serde_json::to_value(Time(clock::now())).unwrap_or(Value::Null);
    let node = vmi.status.as_ref().and_then(|s| s.node_name.clone());
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": ns},
        "involvedObject": {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "name": name, "namespace": ns, "uid": vmi.metadata.uid},
        "reason": reason, "message": message, "type": type_,
        "source": {"component": COMPONENT, "host": node},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    });
    let events: Api<Value> = Api::namespaced(client.clone(), def, &ns);
    if let Err(e) = events.create(&event, &WriteOptions::default()).await {
        tracing::debug!(vmi = %name, "recording an event failed: {e}");
    }
}

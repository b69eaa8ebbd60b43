//! Events about storage objects (as the PV controller and CDI record them for PVCs and
//! DataVolumes). Recording is best effort: a failure is logged, never fatal.

use crate::client::{Api, Client};
use crate::store::WriteOptions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};

/// Whether an event reports normal progress or a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

/// The object an event is about.
#[derive(Debug, Clone)]
pub struct Involved<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// Records an event `reason` with `message` about `obj`.
pub async fn record(client: &Client, obj: &Involved<'_>, kind: Kind, reason: &str, message: &str) {
    let Some(def) = api::resource::find_kind("", "Event") else {
        return;
    };
    let now = serde_json::to_value(Time(crate::controller::clock::now())).unwrap_or(Value::Null);
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", obj.name), "namespace": obj.namespace},
        "involvedObject": {"apiVersion": obj.api_version, "kind": obj.kind,
            "name": obj.name, "namespace": obj.namespace, "uid": obj.uid},
        "reason": reason, "message": message,
        "type": match kind { Kind::Normal => "Normal", Kind::Warning => "Warning" },
        "source": {"component": "monovirt-storage"},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    });
    let events: Api<Value> = Api::namespaced(client.clone(), def, obj.namespace);
    if let Err(e) = events.create(&event, &WriteOptions::default()).await {
        tracing::warn!(object = %obj.name, "recording an event failed: {e}");
    }
}

//! A small Event recorder shared by the control-plane roles: core `v1` Events about any
//! object (`kubectl describe` and `monovirt get events` show them), written through the
//! client. Recording is best effort: a failure is logged, never fatal.
//!
//! Every Event is also a log line ([`log`]): the lifecycle steps of VMs and VMIs (created,
//! scheduled, started, stopped, failed, ...) reach journald and log shippers with the
//! object's kind, namespace, name and uid (and the node) as fields, under the target
//! `monovirt::lifecycle` (`RUST_LOG=warn,monovirt::lifecycle=info` shows just them).
//! Events are recorded per control-plane decision, never per guest exit, so a guest
//! cannot flood them.

use crate::client::{Api, Client};
use crate::controller::clock;
use crate::store::WriteOptions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{json, Value};

/// `Normal` or `Warning`, as Kubernetes knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// Records Events as one component (`source.component`), on one host for the node
/// agents (`source.host`).
#[derive(Debug, Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
    host: Option<String>,
}

/// The `involvedObject` reference of `obj` (an API object with apiVersion, kind, metadata).
pub fn reference(api_version: &str, kind: &str, obj: &Value) -> Value {
    let m = &obj["metadata"];
    json!({
        "apiVersion": api_version, "kind": kind,
        "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
        "resourceVersion": m["resourceVersion"],
    })
}

/// The Event object `record` writes (without a name: `generateName` is `<object>.`).
pub fn event(
    involved: &Value,
    type_: EventType,
    reason: &str,
    message: &str,
    component: &str,
    host: Option<&str>,
) -> Value {
    let now = serde_json::to_value(Time(clock::now())).unwrap_or(Value::Null);
    let name = involved["name"].as_str().unwrap_or_default();
    let mut source = json!({"component": component});
    if let Some(host) = host {
        source["host"] = json!(host);
    }
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": involved["namespace"]},
        "involvedObject": involved,
        "reason": reason, "message": message, "type": type_.as_str(),
        "source": source,
        "reportingComponent": component,
        "reportingInstance": host,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    })
}

/// The `involvedObject` reference of a typed object of `kind` in `api_version` with
/// metadata `meta`.
pub fn reference_meta(api_version: &str, kind: &str, meta: &ObjectMeta) -> Value {
    let metadata = serde_json::to_value(meta).unwrap_or(Value::Null);
    reference(api_version, kind, &json!({ "metadata": metadata }))
}

/// The `tracing` target of lifecycle lines.
pub const LIFECYCLE_TARGET: &str = "monovirt::lifecycle";

/// Logs the Event `reason` about `involved` (see [`reference`]) as one structured line:
/// `Normal` at info, `Warning` at warn, with `node` when the step happened on (or chose)
/// a node.
pub fn log(
    involved: &Value,
    type_: EventType,
    reason: &str,
    message: &str,
    component: &str,
    node: Option<&str>,
) {
    let field = |k: &str| involved[k].as_str().unwrap_or_default().to_string();
    let (kind, namespace, name, uid) = (
        field("kind"),
        field("namespace"),
        field("name"),
        field("uid"),
    );
    match type_ {
        EventType::Normal => tracing::info!(
            target: LIFECYCLE_TARGET,
            %kind, %namespace, %name, %uid, node, reason, component, "{message}"
        ),
        EventType::Warning => tracing::warn!(
            target: LIFECYCLE_TARGET,
            %kind, %namespace, %name, %uid, node, reason, component, "{message}"
        ),
    }
}

impl Recorder {
    pub fn new(client: Client, component: &'static str) -> Self {
        Self {
            client,
            component,
            host: None,
        }
    }

    /// The same recorder, naming `host` as the events' source host.
    pub fn on_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Records an Event about `involved` (see [`reference`]) in its namespace, and logs it
    /// ([`log`]) with the recorder's host as the node.
    pub async fn record(&self, involved: &Value, type_: EventType, reason: &str, message: &str) {
        self.record_on(involved, type_, reason, message, self.host.as_deref())
            .await;
    }

    /// [`Recorder::record`], logging `node` as the node the step concerns (the scheduler's
    /// choice, say).
    pub async fn record_on(
        &self,
        involved: &Value,
        type_: EventType,
        reason: &str,
        message: &str,
        node: Option<&str>,
    ) {
        log(involved, type_, reason, message, self.component, node);
        let Some(def) = api::resource::find_kind("", "Event") else {
            return;
        };
        let ns = involved["namespace"].as_str().unwrap_or("default");
        let ev = event(
            involved,
            type_,
            reason,
            message,
            self.component,
            self.host.as_deref(),
        );
        let events: Api<Value> = Api::namespaced(self.client.clone(), def, ns);
        if let Err(e) = events.create(&ev, &WriteOptions::default()).await {
            tracing::warn!(reason, object = %involved["name"], "recording an event failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ListOptions, Objects};

    #[tokio::test]
    async fn records_an_event_about_the_object() {
        let objects = Objects::in_memory().unwrap();
        let client = Client::local(objects);
        let vm = json!({"metadata": {"name": "vm1", "namespace": "default", "uid": "u-1"}});
        let r = Recorder::new(client.clone(), "monovirt-api");
        let involved = reference("kubevirt.io/v1", "VirtualMachine", &vm);
        r.record(
            &involved,
            EventType::Normal,
            "StartRequested",
            "VM start requested",
        )
        .await;
        let def = api::resource::find_kind("", "Event").unwrap();
        let events: Api<Value> = Api::namespaced(client.clone(), def, "default");
        let list = events.list(&ListOptions::default()).await.unwrap();
        assert_eq!(list.items.len(), 1);
        let ev = &list.items[0];
        assert_eq!(ev["reason"], "StartRequested");
        assert_eq!(ev["type"], "Normal");
        assert_eq!(ev["involvedObject"]["kind"], "VirtualMachine");
        assert_eq!(ev["involvedObject"]["uid"], "u-1");
        assert_eq!(ev["source"]["component"], "monovirt-api");
        assert_eq!(ev["source"]["host"], Value::Null);
        assert!(ev["metadata"]["name"].as_str().unwrap().starts_with("vm1."));

        let agent = Recorder::new(client, "monovirt-agent").on_host("node-a");
        agent
            .record(&involved, EventType::Warning, "Failed", "guest crashed")
            .await;
        let list = events.list(&ListOptions::default()).await.unwrap();
        let ev = list.items.iter().find(|e| e["reason"] == "Failed").unwrap();
        assert_eq!(ev["source"]["host"], "node-a");
        assert_eq!(ev["reportingInstance"], "node-a");
        assert_eq!(ev["type"], "Warning");
    }
}

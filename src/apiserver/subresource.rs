//! KubeVirt's `subresources.kubevirt.io/v1` API: `PUT
//! /apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}/start|stop|restart`,
//! as virt-api answers it: a VM whose run strategy is Always/Halted is switched by patching
//! `spec.runStrategy`; Manual (and restarts) get `status.stateChangeRequests` that the VM
//! controller carries out. `virtualmachineinstances/{name}/pause|unpause` (PUT) and
//! `console` (a WebSocket) are checked here and carried out by the agent of the VMI's node
//! through its [`node_endpoint`]. Each accepted request is recorded as an Event. Plus the
//! group's discovery documents.

use super::error::status_response;
use super::node_endpoint::{self, unavailable, NodeEndpoint};
use super::AppState;
use crate::client::{Api, Client, ClientError};
use crate::controller::event::{self, EventType, Recorder};
use crate::controller::vm::state_change;
use crate::store::{Patch, WriteOptions};
use api::kubevirt::virtualmachine::{RunStrategy, VirtualMachine};
use api::kubevirt::virtualmachineinstance::{VirtualMachineInstance, VirtualMachineInstancePhase};
use api::status::ApiError;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// The group and version of KubeVirt's subresources.
pub const GROUP_VERSION: &str = "subresources.kubevirt.io/v1";

/// The group of KubeVirt's subresources.
pub const GROUP: &str = "subresources.kubevirt.io";

/// One subresource served: (parent resource, parent kind, subresource, verb).
const SUBRESOURCES: &[(&str, &str, &str, &str)] = &[
    ("virtualmachines", "VirtualMachine", "start", "update"),
    ("virtualmachines", "VirtualMachine", "stop", "update"),
    ("virtualmachines", "VirtualMachine", "restart", "update"),
    (
        "virtualmachineinstances",
        "VirtualMachineInstance",
        "pause",
        "update",
    ),
    (
        "virtualmachineinstances",
        "VirtualMachineInstance",
        "unpause",
        "update",
    ),
    (
        "virtualmachineinstances",
        "VirtualMachineInstance",
        "console",
        "get",
    ),
];

/// `GET /apis/subresources.kubevirt.io/v1`: the subresources served (as virt-api lists them).
pub async fn discovery() -> Json<Value> {
    let resources: Vec<Value> = SUBRESOURCES
        .iter()
        .map(|(parent, kind, sub, verb)| {
            json!({"name": format!("{parent}/{sub}"), "singularName": "", "namespaced": true,
                   "kind": kind, "verbs": [verb]})
        })
        .collect();
    Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
        "resources": resources,
    }))
}

/// The group in a legacy `APIGroupList` (`GET /apis`).
pub fn api_group() -> Value {
    let version = json!({"groupVersion": GROUP_VERSION, "version": "v1"});
    json!({"name": GROUP, "versions": [version], "preferredVersion": version})
}

/// The group in aggregated discovery (`APIGroupDiscovery`): each parent resource with no
/// verbs of its own and its subresources, as kube-apiserver converts a legacy list whose
/// resources are all subresources.
pub fn aggregated_group() -> Value {
    let mut parents: Vec<(&str, &str)> = Vec::new();
    for (parent, kind, _, _) in SUBRESOURCES {
        if !parents.iter().any(|(p, _)| p == parent) {
            parents.push((parent, kind));
        }
    }
    let resources: Vec<Value> = parents
        .iter()
        .map(|(parent, kind)| {
            let response_kind = json!({"group": GROUP, "version": "v1", "kind": kind});
            let subs: Vec<Value> = SUBRESOURCES
                .iter()
                .filter(|(p, _, _, _)| p == parent)
                .map(|(_, _, sub, verb)| {
                    json!({"subresource": sub, "responseKind": response_kind, "verbs": [verb]})
                })
                .collect();
            json!({"resource": parent, "responseKind": response_kind, "scope": "Namespaced",
                   "singularResource": "", "verbs": [], "subresources": subs})
        })
        .collect();
    json!({
        "metadata": {"name": GROUP, "creationTimestamp": null},
        "versions": [{"version": "v1", "freshness": "Current", "resources": resources}],
    })
}

/// `GET /apis/subresources.kubevirt.io`: the group.
pub async fn group() -> Json<Value> {
    let mut g = api_group();
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Json(g)
}

fn error(e: ClientError) -> ApiError {
    match e {
        ClientError::Api(a) => a,
        other => ApiError::internal(other.to_string()),
    }
}

fn conflict(message: &str) -> ApiError {
    ApiError::new(409, "Conflict", message)
}

/// `PUT .../virtualmachines/{name}/{action}`.
pub async fn vm_action(
    State(state): State<AppState>,
    Path((ns, name, action)): Path<(String, String, String)>,
) -> Response {
    match act(&state, &ns, &name, &action).await {
        Ok(vm) => {
            let reason = match action.as_str() {
                "start" => "StartRequested",
                "stop" => "StopRequested",
                _ => "RestartRequested",
            };
            let involved = event::reference("kubevirt.io/v1", "VirtualMachine", &vm);
            recorder(&state)
                .record(
                    &involved,
                    EventType::Normal,
                    reason,
                    &format!("VM {action} was requested"),
                )
                .await;
            StatusCode::ACCEPTED.into_response()
        }
        Err(e) => status_response(&e),
    }
}

/// The recorder of the API server's own Events.
fn recorder(state: &AppState) -> Recorder {
    Recorder::new(Client::local(state.objects().clone()), COMPONENT)
}

/// The component named in the API server's Events.
pub const COMPONENT: &str = "monovirt-api";

/// Carries out `action` on the VM; its state before as JSON (for the Event).
async fn act(state: &AppState, ns: &str, name: &str, action: &str) -> Result<Value, ApiError> {
    let client = Client::local(state.objects().clone());
    let vm_def = api::resource::find_kind("kubevirt.io", "VirtualMachine")
        .ok_or_else(|| ApiError::internal("VirtualMachine is not served"))?;
    let vmi_def = api::resource::find_kind("kubevirt.io", "VirtualMachineInstance")
        .ok_or_else(|| ApiError::internal("VirtualMachineInstance is not served"))?;
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), vm_def, ns);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client, vmi_def, ns);
    let vm = vms.get(name).await.map_err(error)?;
    let vmi = vmis.get_opt(name).await.map_err(error)?;
    let running = vmi.as_ref().is_some_and(|v| {
        v.metadata.deletion_timestamp.is_none()
            && !v
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_final())
    });
    let vmi_uid = vmi.as_ref().and_then(|v| v.metadata.uid.clone());
    let strategy = vm.spec.run_strategy();
    let set_strategy = |s: RunStrategy| {
        // `running` and `runStrategy` are exclusive: the subresource moves to runStrategy.
        Patch::Merge(json!({"spec": {"running": null, "runStrategy": s.as_str()}}))
    };
    let mut requests = vm
        .status
        .as_ref()
        .map(|s| s.state_change_requests.clone())
        .unwrap_or_default();
    let (spec_patch, new_requests) = match (action, strategy) {
        ("start", _) if running => return Err(conflict("VM is already running")),
        ("start", RunStrategy::Once) => {
            return Err(conflict(
                "runStrategy Once does not support manual start requests",
            ))
        }
        ("start", RunStrategy::Halted) => (Some(set_strategy(RunStrategy::Always)), None),
        ("start", _) => (None, Some(vec![state_change("Start", None)])),
        ("stop", _) if !running && strategy != RunStrategy::Always => {
            return Err(conflict("VM is not running"))
        }
        ("stop", RunStrategy::Halted) => return Err(conflict("VM is not running")),
        ("stop", RunStrategy::Manual) => (None, Some(vec![state_change("Stop", vmi_uid)])),
        ("stop", _) => (Some(set_strategy(RunStrategy::Halted)), None),
        ("restart", RunStrategy::Halted) => return Err(conflict("VM is not running")),
        ("restart", RunStrategy::Once) => {
            return Err(conflict(
                "runStrategy Once does not support manual restart requests",
            ))
        }
        ("restart", _) => (
            None,
            Some(vec![
                state_change("Stop", vmi_uid),
                state_change("Start", None),
            ]),
        ),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource (subresource {action})"),
            ))
        }
    };
    if let Some(patch) = spec_patch {
        vms.patch(name, patch, &WriteOptions::default())
            .await
            .map_err(error)?;
    }
    if let Some(new) = new_requests {
        if !requests.is_empty() {
            return Err(conflict("VM has pending state change requests"));
        }
        requests.extend(new);
        let value =
            serde_json::to_value(&requests).map_err(|e| ApiError::internal(e.to_string()))?;
        vms.patch_status(
            name,
            Patch::Merge(json!({
                "metadata": {"resourceVersion": vm.metadata.resource_version},
                "status": {"stateChangeRequests": value},
            })),
        )
        .await
        .map_err(error)?;
    }
    serde_json::to_value(&vm).map_err(|e| ApiError::internal(e.to_string()))
}

/// 409 as virt-api words it: `Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "x": why`.
fn vmi_conflict(name: &str, why: &str) -> ApiError {
    let mut e = ApiError::new(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"{name}\": {why}"
        ),
    );
    e.details = Some(api::status::Details {
        name: Some(name.to_string()),
        group: Some("kubevirt.io".into()),
        kind: Some("virtualmachineinstance".into()),
        ..Default::default()
    });
    e
}

/// A VMI as the VMI subresources see it.
struct RunningVmi {
    object: Value,
    node: String,
    paused: bool,
}

/// The VMI `name` if it runs on a node: 404 when absent, `not_running` otherwise.
async fn running_vmi(
    state: &AppState,
    ns: &str,
    name: &str,
    not_running: impl FnOnce() -> ApiError,
) -> Result<RunningVmi, ApiError> {
    let def = api::resource::find_kind("kubevirt.io", "VirtualMachineInstance")
        .ok_or_else(|| ApiError::internal("VirtualMachineInstance is not served"))?;
    let object = state.objects().get(def, Some(ns), name)?;
    let vmi: VirtualMachineInstance =
        serde_json::from_value(object.clone()).map_err(|e| ApiError::internal(e.to_string()))?;
    let status = vmi.status.unwrap_or_default();
    let running = vmi.metadata.deletion_timestamp.is_none()
        && status.phase == Some(VirtualMachineInstancePhase::Running);
    let node = status.node_name.clone().filter(|n| !n.is_empty());
    let (true, Some(node)) = (running, node) else {
        return Err(not_running());
    };
    let paused = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Paused" && c.is_true());
    Ok(RunningVmi {
        object,
        node,
        paused,
    })
}

/// A node endpoint's failure as the API server reports it: the endpoint's own `Status`
/// passes through (404, 409), a refused token or an unreachable node is 503.
fn node_error(ep: &NodeEndpoint, e: ClientError) -> ApiError {
    match e {
        ClientError::Api(a) if a.code == 401 || a.code == 403 => unavailable(format!(
            "the agent of node {} refused the API server's endpoint token",
            ep.node
        )),
        ClientError::Api(a) if a.code >= 500 => unavailable(format!(
            "the agent of node {} failed: {}",
            ep.node, a.message
        )),
        ClientError::Api(a) => a,
        // The client words its errors for the API server; here the peer is the node.
        ClientError::Connect(io) => unavailable(format!(
            "cannot reach the agent of node {} at {}: {io}",
            ep.node, ep.address
        )),
        other => {
            let mut msg = other.to_string();
            let mut src = std::error::Error::source(&other);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            unavailable(format!(
                "the connection to the agent of node {} at {} failed: {msg}",
                ep.node, ep.address
            ))
        }
    }
}

/// The node endpoint's path of a VMI subresource (see CONTRACTS: the agent's routes).
pub fn node_path(ns: &str, name: &str, sub: &str) -> String {
    format!("/v1/namespaces/{ns}/virtualmachineinstances/{name}/{sub}")
}

/// `PUT .../virtualmachineinstances/{name}/pause|unpause`: checked as virt-api checks it,
/// then proxied to the node's agent.
pub async fn vmi_action(
    State(state): State<AppState>,
    Path((ns, name, action)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Response {
    match pause(&state, &ns, &name, &action, body).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => status_response(&e),
    }
}

async fn pause(
    state: &AppState,
    ns: &str,
    name: &str,
    action: &str,
    body: axum::body::Bytes,
) -> Result<(), ApiError> {
    if action != "pause" && action != "unpause" {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource (subresource {action})"),
        ));
    }
    let vmi = running_vmi(state, ns, name, || vmi_conflict(name, "VMI is not running")).await?;
    match (action, vmi.paused) {
        ("pause", true) => return Err(vmi_conflict(name, "VMI is already paused")),
        ("unpause", false) => return Err(vmi_conflict(name, "VMI is not paused")),
        _ => {}
    }
    let ep = node_endpoint::resolve(state.objects(), &vmi.node)?;
    let body = if body.is_empty() {
        axum::body::Bytes::from_static(b"{}")
    } else {
        body
    };
    ep.client
        .request(
            hyper::Method::PUT,
            &node_path(ns, name, action),
            "application/json",
            Some(("application/json", body)),
        )
        .await
        .map_err(|e| node_error(&ep, e))?;
    let (reason, message) = if action == "pause" {
        ("Paused", "VMI was paused by user")
    } else {
        ("Unpaused", "VMI was unpaused by user")
    };
    let involved = event::reference("kubevirt.io/v1", "VirtualMachineInstance", &vmi.object);
    recorder(state)
        .record(&involved, EventType::Normal, reason, message)
        .await;
    Ok(())
}

/// `GET .../virtualmachineinstances/{name}/console`: a WebSocket bridged to the node
/// agent's console WebSocket. Checks and the node connection happen before the upgrade,
/// so every failure is a plain `Status` response.
pub async fn console(
    State(state): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let result = async {
        let vmi = running_vmi(&state, &ns, &name, || {
            ApiError::bad_request("VMI is not running")
        })
        .await?;
        let upgrade = upgrade
            .map_err(|r| ApiError::bad_request(format!("the console is a WebSocket: {r}")))?;
        let ep = node_endpoint::resolve(state.objects(), &vmi.node)?;
        let node = ep
            .client
            .websocket(&node_path(&ns, &name, "console"))
            .await
            .map_err(|e| node_error(&ep, e))?;
        Ok::<_, ApiError>((upgrade, node))
    }
    .await;
    match result {
        Ok((upgrade, node)) => upgrade
            .on_upgrade(move |client| super::console::bridge(client, node, state.shutdown_token())),
        Err(e) => status_response(&e),
    }
}

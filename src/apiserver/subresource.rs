//! KubeVirt's `subresources.kubevirt.io/v1` API: `PUT
//! /apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}/start|stop|restart`,
//! as virt-api answers it: a VM whose run strategy is Always/Halted is switched by patching
//! `spec.runStrategy`; Manual (and restarts) get `status.stateChangeRequests` that the VM
//! controller carries out. Plus the group's discovery document.

use super::error::status_response;
use super::AppState;
use crate::client::{Api, Client, ClientError};
use crate::controller::vm::state_change;
use crate::store::{Patch, WriteOptions};
use api::kubevirt::virtualmachine::{RunStrategy, VirtualMachine};
use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;
use api::status::ApiError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// The group and version of KubeVirt's subresources.
pub const GROUP_VERSION: &str = "subresources.kubevirt.io/v1";

/// `GET /apis/subresources.kubevirt.io/v1`: the subresources served.
pub async fn discovery() -> Json<Value> {
    let res = |name: &str, kind: &str| json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": ["update"]});
    Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
        "resources": [
            res("virtualmachines/start", "VirtualMachine"),
            res("virtualmachines/stop", "VirtualMachine"),
            res("virtualmachines/restart", "VirtualMachine"),
        ],
    }))
}

/// `GET /apis/subresources.kubevirt.io`: the group.
pub async fn group() -> Json<Value> {
    let version = json!({"groupVersion": GROUP_VERSION, "version": "v1"});
    Json(json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": "subresources.kubevirt.io",
        "versions": [version], "preferredVersion": version,
    }))
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
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => status_response(&e),
    }
}

async fn act(state: &AppState, ns: &str, name: &str, action: &str) -> Result<(), ApiError> {
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
    Ok(())
}

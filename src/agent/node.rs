//! The agent's Node: what the host offers (cpu, memory, `devices.kubevirt.io/kvm`), who it
//! is (architecture, kernel, OS), where its endpoint listens, and the Ready condition
//! whose `lastHeartbeatTime` the agent renews (the node lifecycle controller marks the
//! node Unknown when it goes stale).

use crate::client::{Api, ClientError};
use crate::controller::clock;
use crate::store::{Patch, WriteOptions};
use api::core::node::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;

/// The device resource KubeVirt's device plugin advertises for `/dev/kvm`.
pub const KVM_RESOURCE: &str = "devices.kubevirt.io/kvm";
/// How many VMs may share `/dev/kvm` (KubeVirt's device plugin advertises 1000).
pub const KVM_SLOTS: &str = "1k";
/// Memory kept back from allocatable for the host and the daemon itself.
pub const SYSTEM_RESERVED_BYTES: u64 = 256 << 20;

/// What the host is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub cpus: u64,
    pub memory_bytes: u64,
    pub kvm: bool,
    pub architecture: &'static str,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `MemTotal` of `/proc/meminfo` in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `PRETTY_NAME` of an os-release file.
pub fn pretty_name(os_release: &str) -> Option<String> {
    let v = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(v.trim_matches('"').to_string())
}

impl Host {
    /// Probes this host.
    pub fn probe() -> Self {
        let kvm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(Path::new("/dev/kvm"))
            .is_ok();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            memory_bytes: mem_total(&read_trimmed("/proc/meminfo")).unwrap_or(0),
            kvm,
            architecture: api::kubevirt::defaults::host_architecture(),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            os_image: pretty_name(&read_trimmed("/etc/os-release"))
                .unwrap_or_else(|| "Linux".into()),
            machine_id: read_trimmed("/etc/machine-id"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// The node's hostname: `/proc/sys/kernel/hostname`, lower-cased (node names are DNS
/// subdomains).
pub fn hostname() -> String {
    let h = read_trimmed("/proc/sys/kernel/hostname").to_ascii_lowercase();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

/// The Ready condition saying the agent is alive now.
fn ready_condition(now: &Value, since: &Value) -> Value {
    json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "monovirt node agent is posting ready status",
        "lastHeartbeatTime": now, "lastTransitionTime": since})
}

fn now_value() -> Value {
    serde_json::to_value(Time(clock::now())).unwrap_or(Value::Null)
}

/// The Node object the agent registers: labels, capacity, allocatable, nodeInfo,
/// addresses, endpoint port and a fresh Ready condition.
pub fn desired(name: &str, host: &Host, endpoint: SocketAddr) -> Value {
    let now = now_value();
    let cpu = host.cpus.to_string();
    let kvm = if host.kvm { KVM_SLOTS } else { "0" };
    let allocatable_memory = host.memory_bytes.saturating_sub(SYSTEM_RESERVED_BYTES);
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/arch": host.architecture,
            "kubernetes.io/os": "linux",
            "kubernetes.io/hostname": name,
            crate::scheduler::filter::SCHEDULABLE_LABEL: if host.kvm { "true" } else { "false" },
        }},
        "status": {
            "capacity": {"cpu": cpu, "memory": host.memory_bytes.to_string(), KVM_RESOURCE: kvm},
            "allocatable": {"cpu": cpu, "memory": allocatable_memory.to_string(), KVM_RESOURCE: kvm},
            "addresses": [
                {"type": "InternalIP", "address": endpoint.ip().to_string()},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": endpoint.port()}},
            "nodeInfo": {
                "architecture": host.architecture,
                "operatingSystem": "linux",
                "kernelVersion": host.kernel,
                "osImage": host.os_image,
                "machineID": host.machine_id,
                "systemUUID": host.machine_id,
                "bootID": host.boot_id,
                "kubeletVersion": concat!("monovirt-", env!("CARGO_PKG_VERSION")),
                "kubeProxyVersion": "",
                "containerRuntimeVersion": concat!("monovirt://", env!("CARGO_PKG_VERSION")),
            },
            "conditions": [ready_condition(&now, &now)],
        },
    })
}

/// Creates the Node or brings an existing one up to date (its labels merged, so labels
/// and the cordon an operator set are kept), and reports it Ready.
pub async fn register(nodes: &Api<Node>, desired: &Value) -> Result<(), ClientError> {
    let name = desired["metadata"]["name"].as_str().unwrap_or_default();
    if nodes.get_opt(name).await?.is_none() {
        let node: Node = serde_json::from_value(desired.clone()).map_err(ClientError::Decode)?;
        match nodes.create(&node, &WriteOptions::default()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some(409) => {}
            Err(e) => return Err(e),
        }
    }
    nodes
        .patch(
            name,
            Patch::Merge(json!({"metadata": {"labels": desired["metadata"]["labels"]}})),
            &WriteOptions::default(),
        )
        .await?;
    nodes
        .patch_status(name, Patch::Merge(json!({"status": desired["status"]})))
        .await?;
    Ok(())
}

/// Renews the Ready condition's heartbeat (keeping its transition time while it stays
/// True; a node the lifecycle controller marked Unknown transitions back now).
pub async fn heartbeat(nodes: &Api<Node>, name: &str) -> Result<(), ClientError> {
    let now = now_value();
    let current = nodes.get(name).await?;
    let conditions = current
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let since = conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .and_then(|c| c.last_transition_time.clone())
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or_else(|| now.clone());
    let mut list: Vec<Value> = conditions
        .iter()
        .filter(|c| c.type_ != "Ready")
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    list.push(ready_condition(&now, &since));
    nodes
        .patch_status(
            name,
            Patch::Merge(json!({
                "metadata": {"resourceVersion": current.metadata.resource_version},
                "status": {"conditions": list},
            })),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_files() {
        assert_eq!(
            mem_total("MemTotal:        8023456 kB\nMemFree: 1 kB\n"),
            Some(8_023_456 * 1024)
        );
        assert_eq!(mem_total("nothing"), None);
        assert_eq!(
            pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }

    #[test]
    fn desired_node_is_a_valid_node() {
        let host = Host {
            cpus: 2,
            memory_bytes: 4 << 30,
            kvm: true,
            architecture: "amd64",
            kernel: "6.1.0".into(),
            os_image: "Debian".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
        };
        let v = desired("n1", &host, "127.0.0.1:4242".parse().unwrap());
        let node: Node = serde_json::from_value(v).unwrap();
        let status = node.status.unwrap();
        assert_eq!(status.allocatable.unwrap()[KVM_RESOURCE].0, "1k");
        assert_eq!(
            status
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            4242
        );
        assert_eq!(status.node_info.unwrap().kernel_version, "6.1.0");
        assert_eq!(
            node.metadata.labels.unwrap()["kubevirt.io/schedulable"],
            "true"
        );
    }
}

//! The node endpoint behind a VMI (the kubelet's role, `:10250` in Kubernetes): the Node
//! named by the VMI's `status.nodeName` publishes its address (`status.addresses`,
//! InternalIP first) and port (`status.daemonEndpoints.kubeletEndpoint.Port`); its agent's
//! bearer token is in Secret `monovirt-system/node-<node>` (key `token`). The result is
//! an HTTP [`Client`] the subresources proxy through. Anything missing is 503: the VMI
//! exists, but its node cannot be reached now.

use crate::client::Client;
use crate::store::Objects;
use api::status::ApiError;
use serde_json::Value;

/// The namespace of the node endpoint tokens.
pub const SYSTEM_NAMESPACE: &str = "monovirt-system";

/// A node's endpoint: where it listens and a client that authenticates to it.
#[derive(Debug, Clone)]
pub struct NodeEndpoint {
    pub node: String,
    /// `http://IP:PORT`.
    pub address: String,
    pub client: Client,
}

/// 503 ServiceUnavailable with `message` (a message for the client: no internals).
pub fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(503, "ServiceUnavailable", message)
}

/// The endpoint address a Node publishes.
pub fn address_of(node: &Value) -> Option<String> {
    let status = &node["status"];
    let port = status["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| (1..=u64::from(u16::MAX)).contains(p))?;
    let addrs = status["addresses"].as_array()?;
    let pick = |t: &str| {
        addrs
            .iter()
            .find(|a| a["type"] == t)
            .and_then(|a| a["address"].as_str())
    };
    let ip = pick("InternalIP")
        .or_else(|| pick("ExternalIP"))
        .or_else(|| pick("Hostname"))?;
    Some(if ip.contains(':') {
        format!("http://[{ip}]:{port}")
    } else {
        format!("http://{ip}:{port}")
    })
}

/// The `token` of a Secret: `data.token` (base64), or `stringData.token`.
pub fn token_of(secret: &Value) -> Option<String> {
    use base64::Engine;
    if let Some(b64) = secret["data"]["token"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        return String::from_utf8(bytes).ok().filter(|t| !t.is_empty());
    }
    secret["stringData"]["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// The endpoint of `node`, read from the store.
pub fn resolve(objects: &Objects, node: &str) -> Result<NodeEndpoint, ApiError> {
    let node_def = api::resource::find_kind("", "Node")
        .ok_or_else(|| ApiError::internal("Node is not served"))?;
    let node_obj = match objects.get(node_def, None, node) {
        Ok(n) => n,
        Err(e) if e.code == 404 => {
            return Err(unavailable(format!("node {node} is not registered")))
        }
        Err(e) => return Err(e),
    };
    let address = address_of(&node_obj).ok_or_else(|| {
        unavailable(format!(
            "node {node} publishes no endpoint (status.addresses and daemonEndpoints.kubeletEndpoint.Port)"
        ))
    })?;
    let secret_name = format!("node-{node}");
    let no_token = || {
        unavailable(format!(
            "node {node} has no endpoint token (Secret {SYSTEM_NAMESPACE}/{secret_name})"
        ))
    };
    let secret_def = api::resource::find_kind("", "Secret").ok_or_else(no_token)?;
    let secret = match objects.get(secret_def, Some(SYSTEM_NAMESPACE), &secret_name) {
        Ok(s) => s,
        Err(e) if e.code == 404 => return Err(no_token()),
        Err(e) => return Err(e),
    };
    let token = token_of(&secret).ok_or_else(no_token)?;
    let client = Client::http_with_token(&address, Some(&token))
        .map_err(|e| unavailable(format!("node {node}: {e}")))?;
    Ok(NodeEndpoint {
        node: node.to_string(),
        address,
        client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses_prefer_internal_ip() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": "10.0.0.2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 4242}}}});
        assert_eq!(address_of(&node).as_deref(), Some("http://10.0.0.2:4242"));
        let v6 = json!({"status": {"addresses": [{"type": "InternalIP", "address": "fd00::2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 1}}}});
        assert_eq!(address_of(&v6).as_deref(), Some("http://[fd00::2]:1"));
        let no_port =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}});
        assert_eq!(address_of(&no_port), None);
        let zero = json!({"status": {"addresses": [{"type": "InternalIP", "address": "a"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}}}});
        assert_eq!(address_of(&zero), None);
    }

    #[test]
    fn tokens_from_data_or_string_data() {
        assert_eq!(
            token_of(&json!({"data": {"token": "c2VjcmV0"}})).as_deref(),
            Some("secret")
        );
        assert_eq!(
            token_of(&json!({"stringData": {"token": "plain"}})).as_deref(),
            Some("plain")
        );
        assert_eq!(token_of(&json!({"data": {"token": "!!"}})), None);
        assert_eq!(token_of(&json!({"data": {}})), None);
    }
}

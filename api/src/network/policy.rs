//! NodeNetworkConfigurationPolicy and NodeNetworkConfigurationEnactment (`nmstate.io/v1`,
//! the kubernetes-nmstate operator's API): the node networks (Linux bridges with ports,
//! VLAN interfaces, static addresses) that node agents set up on the nodes a policy's
//! `nodeSelector` picks, and each node's report of how applying it went.
//!
//! `desiredState` is nmstate's own state document (kebab-case keys); monovirt serves the
//! subset it applies:
//!
//! | `interfaces[].type` | applied as |
//! | --- | --- |
//! | `linux-bridge` | a bridge, with `bridge.port[].name` as its ports |
//! | `vlan` | an 802.1Q interface on `vlan.base-iface` with `vlan.id` |
//! | `ethernet` | an existing NIC: brought up, addressed |
//!
//! plus `state` (`up`, `down`, `absent`), `mtu`, and static `ipv4`/`ipv6` addresses
//! (`address[].ip`, `prefix-length`). DHCP on node interfaces is not supported.

use crate::status::Cause;
use crate::validation::{
    invalid, label_value, not_supported, qualified_name, required, unless_one_of,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The API group.
pub const GROUP: &str = "nmstate.io";
/// The served version.
pub const VERSION: &str = "v1";
/// The label on an enactment naming its policy (kubernetes-nmstate's).
pub const POLICY_LABEL: &str = "nmstate.io/policy";
/// The label on an enactment naming its node.
pub const NODE_LABEL: &str = "nmstate.io/node";

/// kubernetes-nmstate's default rollout limit: half of the selected nodes at once.
pub const DEFAULT_MAX_UNAVAILABLE: &str = "50%";

/// The enactment condition reason of a node waiting for its turn under `maxUnavailable`.
pub const MAX_UNAVAILABLE_LIMIT_REACHED: &str = "MaxUnavailableLimitReached";

/// How many of `matching` selected nodes may apply a policy at once, from its
/// `spec.maxUnavailable` (an integer, or a percentage string rounded up as Kubernetes
/// rounds an IntOrString of unavailable replicas); never less than one, so a rollout
/// always moves.
///
/// ```
/// use api::network::policy::max_unavailable_nodes;
/// use serde_json::json;
/// assert_eq!(max_unavailable_nodes(None, 5), Ok(3));
/// assert_eq!(max_unavailable_nodes(Some(&json!("10%")), 5), Ok(1));
/// assert_eq!(max_unavailable_nodes(Some(&json!(2)), 5), Ok(2));
/// assert!(max_unavailable_nodes(Some(&json!("two")), 5).is_err());
/// ```
pub fn max_unavailable_nodes(value: Option<&Value>, matching: usize) -> Result<usize, String> {
    let scaled = match value {
        None | Some(Value::Null) => percent_of(DEFAULT_MAX_UNAVAILABLE, matching)?,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => return Err("must be a non-negative integer or a percentage".to_string()),
        },
        Some(Value::String(s)) => percent_of(s, matching)?,
        Some(_) => return Err("must be an integer or a percentage string".to_string()),
    };
    Ok(scaled.max(1))
}

fn percent_of(s: &str, matching: usize) -> Result<usize, String> {
    let digits = s
        .strip_suffix('%')
        .ok_or_else(|| format!("a string must be a percentage like \"50%\", not {s:?}"))?;
    let percent: usize =
        digits.parse().ok().filter(|p| *p <= 100).ok_or_else(|| {
            format!("the percentage must be a whole number from 0 to 100, not {s:?}")
        })?;
    Ok((percent * matching).div_ceil(100))
}

/// The interface types monovirt applies.
pub const INTERFACE_TYPES: &[&str] = &["linux-bridge", "vlan", "ethernet"];
/// The interface states.
pub const INTERFACE_STATES: &[&str] = &["up", "down", "absent"];

/// A node network configuration, applied by the agents of the nodes it selects.
///
/// ```
/// use api::network::policy::NodeNetworkConfigurationPolicy;
/// let p: NodeNetworkConfigurationPolicy = serde_json::from_value(serde_json::json!({
///     "apiVersion": "nmstate.io/v1", "kind": "NodeNetworkConfigurationPolicy",
///     "metadata": {"name": "br1-eth1"},
///     "spec": {"desiredState": {"interfaces": [{"name": "br1", "type": "linux-bridge",
///         "state": "up", "bridge": {"port": [{"name": "eth1"}]}}]}}})).unwrap();
/// assert_eq!(p.spec.desired_state.interfaces[0].bridge.as_ref().unwrap().port[0].name, "eth1");
/// ```
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(
    description = "NodeNetworkConfigurationPolicy is the Schema for the nodenetworkconfigurationpolicies API"
)]
pub struct NodeNetworkConfigurationPolicy {
    /// `nmstate.io/v1`.
    pub api_version: String,
    /// `NodeNetworkConfigurationPolicy`.
    pub kind: String,
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// What the selected nodes' networks should look like.
    pub spec: PolicySpec,
    /// How applying it went, over all selected nodes.
    pub status: Option<PolicyStatus>,
}

/// The policy's spec.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicySpec {
    /// The labels a node must carry for the policy to apply to it (all nodes if empty).
    pub node_selector: Option<BTreeMap<String, String>>,
    /// nmstate's desired state document.
    pub desired_state: State,
    /// kubernetes-nmstate's rollout limit: how many of the selected nodes may apply the
    /// policy at once, a count (`2`) or a share of them (`"30%"`, rounded up); at least
    /// one, [`DEFAULT_MAX_UNAVAILABLE`] when unset. See [`max_unavailable_nodes`].
    pub max_unavailable: Option<Value>,
}

/// An nmstate state document (the subset monovirt applies).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct State {
    /// The interfaces, applied in order.
    pub interfaces: Vec<Interface>,
}

/// One interface of the desired state.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct Interface {
    /// The kernel interface name (1 to 15 bytes).
    pub name: String,
    /// `linux-bridge`, `vlan` or `ethernet`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// `up` (the default), `down` or `absent`.
    pub state: Option<String>,
    /// The MTU.
    pub mtu: Option<u32>,
    /// IPv4 addresses.
    pub ipv4: Option<IpConfig>,
    /// IPv6 addresses.
    pub ipv6: Option<IpConfig>,
    /// Bridge ports and options (`linux-bridge`).
    pub bridge: Option<BridgeConfig>,
    /// The parent and id (`vlan`).
    pub vlan: Option<VlanConfig>,
    /// A free-form description.
    pub description: Option<String>,
}

impl Interface {
    /// The state, `up` when not given.
    pub fn state(&self) -> &str {
        self.state.as_deref().unwrap_or("up")
    }
}

/// Static addressing of one IP family.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct IpConfig {
    /// Whether the family is enabled on the interface (`false` removes its addresses).
    pub enabled: Option<bool>,
    /// DHCP (IPv4) — not supported on node interfaces.
    pub dhcp: Option<bool>,
    /// Autoconfiguration (IPv6) — not supported on node interfaces.
    pub autoconf: Option<bool>,
    /// Static addresses.
    pub address: Vec<Address>,
}

/// One static address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct Address {
    /// The address.
    pub ip: String,
    /// Its prefix length.
    pub prefix_length: u8,
}

/// A Linux bridge's ports and options.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct BridgeConfig {
    /// nmstate's bridge options (STP and the like); kept, not applied.
    pub options: Option<Value>,
    /// The ports (the complete list the policy manages).
    pub port: Vec<BridgePort>,
}

/// One bridge port.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct BridgePort {
    /// The port's interface name.
    pub name: String,
    /// Per-port VLAN filtering; not supported (VLANs are `vlan` interfaces here).
    pub vlan: Option<Value>,
}

/// An 802.1Q interface's parent and id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", default)]
pub struct VlanConfig {
    /// The parent interface.
    pub base_iface: String,
    /// The VLAN id (1 to 4094).
    pub id: u16,
}

/// A condition as kubernetes-nmstate reports them.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NmstateCondition {
    /// `Available`, `Degraded`, `Progressing` (policies); `Available`, `Failing`,
    /// `Progressing`, `Pending`, `Aborted` (enactments).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason (`SuccessfullyConfigured`, `FailedToConfigure`, ...).
    pub reason: Option<String>,
    /// What happened.
    pub message: Option<String>,
    /// When it was last written.
    pub last_heartbeat_time: Option<Time>,
    /// When its status last changed.
    pub last_transition_time: Option<Time>,
}

/// The policy's status: conditions summarising its enactments.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyStatus {
    /// `Available`, `Degraded`, `Progressing`.
    pub conditions: Vec<NmstateCondition>,
    /// How many nodes are applying the policy right now (the `maxUnavailable` count).
    pub unavailable_node_count: Option<u64>,
    /// When that count last changed: a count left behind by a node that died while
    /// applying expires after a while.
    pub last_unavailable_node_count_update: Option<Time>,
}

/// One node's application of one policy, named `<node>.<policy>`.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(
    description = "NodeNetworkConfigurationEnactment is the Schema for the nodenetworkconfigurationenactments API"
)]
pub struct NodeNetworkConfigurationEnactment {
    /// `nmstate.io/v1`.
    pub api_version: String,
    /// `NodeNetworkConfigurationEnactment`.
    pub kind: String,
    /// Standard object metadata (labels [`POLICY_LABEL`] and [`NODE_LABEL`]).
    pub metadata: ObjectMeta,
    /// How applying the policy went on the node.
    pub status: Option<EnactmentStatus>,
}

/// An enactment's status.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct EnactmentStatus {
    /// The state the node was asked to reach.
    pub desired_state: Option<State>,
    /// The policy generation applied.
    pub policy_generation: Option<i64>,
    /// `Available`, `Failing`, `Progressing`, `Pending`, `Aborted`.
    pub conditions: Vec<NmstateCondition>,
}

/// The enactment of `policy` on `node`.
pub fn enactment_name(node: &str, policy: &str) -> String {
    format!("{node}.{policy}")
}

/// Policies get no defaults.
pub fn default(_obj: &mut Value) {}

/// Enactments are written by node agents; nothing to check beyond the schema.
pub fn validate_enactment(_obj: &Value) -> Vec<Cause> {
    Vec::new()
}

fn ifname_errors(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 15 {
        Some("must be 1 to 15 bytes long")
    } else if name == "." || name == ".." {
        Some("must not be . or ..")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        Some("must not contain '/', ':' or whitespace")
    } else {
        None
    }
}

/// Validates a policy: node selector labels, and each interface: a valid, unique name, a
/// supported type and state, VLAN parent and id, bridge ports, static addresses.
///
/// ```
/// use serde_json::json;
/// let causes = api::network::policy::validate(&json!({"spec": {"desiredState": {"interfaces": [
///     {"name": "eth1.5000", "type": "vlan", "vlan": {"base-iface": "eth1", "id": 5000}}]}}}));
/// assert_eq!(causes[0].field, "spec.desiredState.interfaces[0].vlan.id");
/// ```
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(sel) = obj.pointer("/spec/nodeSelector").and_then(Value::as_object) {
        for (k, v) in sel {
            for e in qualified_name(k) {
                causes.push(invalid("spec.nodeSelector", &Value::from(k.as_str()), &e));
            }
            for e in label_value(v.as_str().unwrap_or_default()) {
                causes.push(invalid(format!("spec.nodeSelector.{k}"), v, &e));
            }
        }
    }
    let Some(spec) = obj.get("spec") else {
        causes.push(required("spec", "a desiredState is required"));
        return causes;
    };
    if let Some(v) = spec.get("maxUnavailable") {
        if let Err(e) = max_unavailable_nodes(Some(v), 1) {
            causes.push(invalid("spec.maxUnavailable", v, &e));
        }
    }
    let state: State = match spec.get("desiredState") {
        None => {
            causes.push(required("spec.desiredState", "is required"));
            return causes;
        }
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(s) => s,
            // The schema check has reported the shape already.
            Err(_) => return causes,
        },
    };
    let mut names = BTreeSet::new();
    for (i, iface) in state.interfaces.iter().enumerate() {
        let p = format!("spec.desiredState.interfaces[{i}]");
        if let Some(e) = ifname_errors(&iface.name) {
            causes.push(invalid(
                format!("{p}.name"),
                &Value::from(iface.name.as_str()),
                e,
            ));
        }
        if !names.insert(iface.name.as_str()) {
            causes.push(crate::validation::duplicate(
                format!("{p}.name"),
                &iface.name,
            ));
        }
        causes.extend(unless_one_of(
            format!("{p}.state"),
            Some(iface.state()),
            INTERFACE_STATES,
        ));
        let ty = iface.type_.as_deref();
        match ty {
            Some(t) if INTERFACE_TYPES.contains(&t) => {}
            Some(t) => causes.push(not_supported(
                format!("{p}.type"),
                &Value::from(t),
                INTERFACE_TYPES,
            )),
            None if iface.state() == "absent" => {}
            None => causes.push(required(format!("{p}.type"), "is required unless absent")),
        }
        if iface.state() == "absent" {
            continue;
        }
        match (ty, &iface.vlan) {
            (Some("vlan"), None) => {
                causes.push(required(format!("{p}.vlan"), "a vlan interface needs it"))
            }
            (Some("vlan"), Some(v)) => {
                if let Some(e) = ifname_errors(&v.base_iface) {
                    causes.push(invalid(
                        format!("{p}.vlan.base-iface"),
                        &Value::from(v.base_iface.as_str()),
                        e,
                    ));
                }
                if !(1..=4094).contains(&v.id) {
                    causes.push(invalid(
                        format!("{p}.vlan.id"),
                        &Value::from(v.id),
                        "must be between 1 and 4094",
                    ));
                }
            }
            (_, Some(_)) => causes.push(invalid(
                format!("{p}.vlan"),
                &Value::Null,
                "only a vlan interface has vlan settings",
            )),
            _ => {}
        }
        if let Some(b) = &iface.bridge {
            if ty != Some("linux-bridge") {
                causes.push(invalid(
                    format!("{p}.bridge"),
                    &Value::Null,
                    "only a linux-bridge has bridge settings",
                ));
            }
            for (j, port) in b.port.iter().enumerate() {
                let pp = format!("{p}.bridge.port[{j}]");
                if let Some(e) = ifname_errors(&port.name) {
                    causes.push(invalid(
                        format!("{pp}.name"),
                        &Value::from(port.name.as_str()),
                        e,
                    ));
                }
                if port.name == iface.name {
                    causes.push(invalid(
                        format!("{pp}.name"),
                        &Value::from(port.name.as_str()),
                        "a bridge cannot be its own port",
                    ));
                }
                if port.vlan.is_some() {
                    causes.push(invalid(
                        format!("{pp}.vlan"),
                        &Value::Null,
                        "bridge VLAN filtering is not supported; use a vlan interface as the port",
                    ));
                }
            }
        }
        for (family, cfg, v6) in [("ipv4", &iface.ipv4, false), ("ipv6", &iface.ipv6, true)] {
            let Some(cfg) = cfg else { continue };
            let fp = format!("{p}.{family}");
            if cfg.dhcp == Some(true) || cfg.autoconf == Some(true) {
                causes.push(invalid(
                    format!("{fp}.dhcp"),
                    &Value::Bool(true),
                    "DHCP and autoconf on node interfaces are not supported; give static addresses",
                ));
            }
            for (j, a) in cfg.address.iter().enumerate() {
                let ap = format!("{fp}.address[{j}]");
                match a.ip.parse::<IpAddr>() {
                    Ok(ip) if ip.is_ipv6() == v6 => {
                        let max = if v6 { 128 } else { 32 };
                        if a.prefix_length > max {
                            causes.push(invalid(
                                format!("{ap}.prefix-length"),
                                &Value::from(a.prefix_length),
                                &format!("must be at most {max}"),
                            ));
                        }
                    }
                    _ => causes.push(invalid(
                        format!("{ap}.ip"),
                        &Value::from(a.ip.as_str()),
                        &format!("must be an {family} address"),
                    )),
                }
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bridge_with_a_vlan_port_and_addresses_is_valid() {
        let p = json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "node1"},
            "desiredState": {"interfaces": [
                {"name": "eth1.100", "type": "vlan", "state": "up",
                 "vlan": {"base-iface": "eth1", "id": 100}},
                {"name": "br1", "type": "linux-bridge", "state": "up", "mtu": 1500,
                 "ipv4": {"enabled": true, "dhcp": false, "address": [{"ip": "192.0.2.1", "prefix-length": 24}]},
                 "ipv6": {"enabled": true, "address": [{"ip": "2001:db8::1", "prefix-length": 64}]},
                 "bridge": {"options": {"stp": {"enabled": false}}, "port": [{"name": "eth1.100"}]}},
                {"name": "old", "state": "absent"}]}}});
        assert_eq!(validate(&p), Vec::new());
        let typed: NodeNetworkConfigurationPolicy = serde_json::from_value(p).expect("decodes");
        assert_eq!(
            typed.spec.desired_state.interfaces[0].vlan,
            Some(VlanConfig {
                base_iface: "eth1".into(),
                id: 100
            })
        );
        assert_eq!(
            typed.spec.desired_state.interfaces[1]
                .ipv4
                .as_ref()
                .map(|c| c.address[0].prefix_length),
            Some(24)
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let p = json!({"spec": {"nodeSelector": {"bad key!": "x"}, "desiredState": {"interfaces": [
            {"name": "a-name-that-is-too-long", "type": "linux-bridge"},
            {"name": "b", "type": "bond"},
            {"name": "b", "type": "linux-bridge", "state": "sideways"},
            {"name": "v", "type": "vlan"},
            {"name": "br", "type": "linux-bridge", "bridge": {"port": [{"name": "br"}, {"name": "p", "vlan": {"mode": "trunk"}}]}},
            {"name": "e", "type": "ethernet", "ipv4": {"dhcp": true, "address": [{"ip": "2001:db8::1", "prefix-length": 24}]},
             "ipv6": {"address": [{"ip": "2001:db8::1", "prefix-length": 129}]}}]}}});
        let fields: Vec<String> = validate(&p).into_iter().map(|c| c.field).collect();
        for f in [
            "spec.nodeSelector",
            "spec.desiredState.interfaces[0].name",
            "spec.desiredState.interfaces[1].type",
            "spec.desiredState.interfaces[2].name",
            "spec.desiredState.interfaces[2].state",
            "spec.desiredState.interfaces[3].vlan",
            "spec.desiredState.interfaces[4].bridge.port[0].name",
            "spec.desiredState.interfaces[4].bridge.port[1].vlan",
            "spec.desiredState.interfaces[5].ipv4.dhcp",
            "spec.desiredState.interfaces[5].ipv4.address[0].ip",
            "spec.desiredState.interfaces[5].ipv6.address[0].prefix-length",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
        assert_eq!(validate(&json!({"spec": {}}))[0].field, "spec.desiredState");
    }

    #[test]
    fn max_unavailable_is_a_count_or_a_rounded_up_share_and_at_least_one() {
        let m = |v: Value, n| max_unavailable_nodes(Some(&v), n);
        assert_eq!(max_unavailable_nodes(None, 4), Ok(2));
        assert_eq!(max_unavailable_nodes(None, 3), Ok(2));
        assert_eq!(max_unavailable_nodes(None, 0), Ok(1));
        assert_eq!(m(json!("50%"), 1), Ok(1));
        assert_eq!(m(json!("30%"), 10), Ok(3));
        assert_eq!(m(json!("31%"), 10), Ok(4));
        assert_eq!(m(json!("100%"), 7), Ok(7));
        assert_eq!(m(json!("0%"), 7), Ok(1));
        assert_eq!(m(json!(0), 7), Ok(1));
        assert_eq!(m(json!(3), 2), Ok(3));
        for bad in [
            json!("101%"),
            json!("-5%"),
            json!("5"),
            json!("x%"),
            json!(-1),
            json!(1.5),
            json!(true),
        ] {
            assert!(m(bad.clone(), 4).is_err(), "{bad} accepted");
            let p = json!({"spec": {"maxUnavailable": bad, "desiredState": {"interfaces": []}}});
            let causes = validate(&p);
            assert_eq!(causes.len(), 1, "{causes:?}");
            assert_eq!(causes[0].field, "spec.maxUnavailable");
        }
    }
}

//! A VMI's interfaces resolved into what the node must plumb, in declared order: for
//! each `spec.domain.devices.interfaces[i]` its network (`spec.networks[]` of the same
//! name), its binding, its MAC and the host link the VMM attaches to.
//!
//! | network | binding | plumbing |
//! | --- | --- | --- |
//! | `pod: {}` | `masquerade` (the default) or `bridge` | a tap on the node's default bridge, DHCP, NAT; `ports` of a masquerade interface become node port forwards |
//! | `multus` → CNI `bridge` | `bridge` | a tap on the NAD's bridge (access VLAN if set); IPAM addresses are reported in status |
//! | `multus` → CNI `macvtap` | `macvtap` or `bridge` | a macvtap on the NAD's master NIC |

use std::collections::BTreeMap;

use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;
use api::network::attachment::NetworkAttachmentDefinition;
use thiserror::Error;

use super::cni::{BridgeConfig, CniConfig, CniError, MacvtapConfig};
use super::mac::{fnv1a64, Mac, MacError};
use super::nat::Protocol;

/// The most interfaces one VMI may have (PCI slots are shared with disks and devices).
pub const MAX_INTERFACES: usize = 16;

/// Why a VMI's networks cannot be plumbed.
#[derive(Debug, Error)]
pub enum PlanError {
    /// An interface names a network the VMI does not declare.
    #[error("Interface {0:?} has no network of the same name")]
    NoNetwork(String),
    /// A binding monovirt does not implement, or one that does not fit the network.
    #[error("Interface {iface:?}: binding {binding:?} is not supported on a {network} network")]
    UnsupportedBinding {
        iface: String,
        binding: String,
        network: &'static str,
    },
    /// A network is neither `pod` nor `multus`.
    #[error("Network {0:?} has no source (pod or multus)")]
    NoSource(String),
    /// The NetworkAttachmentDefinition does not exist.
    #[error("NetworkAttachmentDefinition {0} not found")]
    NadNotFound(String),
    /// Its configuration cannot be used.
    #[error("NetworkAttachmentDefinition {0}")]
    Cni(String, #[source] CniError),
    /// `macAddress` is malformed or multicast.
    #[error("Interface {0:?}")]
    Mac(String, #[source] MacError),
    /// Two interfaces have the same MAC.
    #[error("Interfaces {0:?} and {1:?} have the same MAC address")]
    DuplicateMac(String, String),
    /// Too many interfaces.
    #[error("{0} interfaces (at most {MAX_INTERFACES})")]
    TooMany(usize),
}

/// How one interface is plumbed on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A tap on the default bridge; `ports` are forwarded from the node (masquerade).
    Default { ports: Vec<(Protocol, u16)> },
    /// A tap on a NAD's bridge.
    Bridge(BridgeConfig),
    /// A macvtap on a NAD's master NIC.
    Macvtap(MacvtapConfig),
}

/// One interface, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfacePlan {
    /// The interface (and network) name in the spec.
    pub name: String,
    /// The NAD (`namespace/name`) for multus networks.
    pub nad: Option<String>,
    /// The guest MAC.
    pub mac: Mac,
    /// The host link: a tap or macvtap name.
    pub link: String,
    /// What to plumb.
    pub backend: Backend,
}

/// Prefix of the taps monovirt creates (clean-up finds them by it).
pub const TAP_PREFIX: &str = "mvt";
/// Prefix of the macvtaps monovirt creates.
pub const MACVTAP_PREFIX: &str = "mvm";

/// The host link names of interface number `index` of the VMI with `uid`: a tap and a
/// macvtap name (15 bytes at most), so a restarted agent finds a VMI's links by its uid.
pub fn link_names(uid: &str, index: usize) -> (String, String) {
    let h = fnv1a64(&[uid]) as u32;
    (
        format!("{TAP_PREFIX}{h:08x}{index}"),
        format!("{MACVTAP_PREFIX}{h:08x}{index}"),
    )
}

/// The VMI's uid (`namespace/name` for one not stored yet).
pub fn vmi_uid(vmi: &VirtualMachineInstance) -> String {
    match vmi.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_string(),
        _ => format!(
            "{}/{}",
            vmi.metadata.namespace.as_deref().unwrap_or("default"),
            vmi.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

/// The NADs (`namespace`, `name`) a VMI's multus networks refer to.
pub fn nad_refs(vmi: &VirtualMachineInstance) -> Vec<(String, String)> {
    let ns = vmi.metadata.namespace.as_deref().unwrap_or("default");
    vmi.spec
        .networks
        .iter()
        .filter_map(|n| n.multus.as_ref())
        .map(|m| split_nad(ns, &m.network_name))
        .collect()
}

fn split_nad(ns: &str, network_name: &str) -> (String, String) {
    match network_name.split_once('/') {
        Some((n, name)) => (n.to_string(), name.to_string()),
        None => (ns.to_string(), network_name.to_string()),
    }
}

/// Resolves the VMI's interfaces (as stored: defaults applied) against `nads`.
pub fn plan(
    vmi: &VirtualMachineInstance,
    nads: &BTreeMap<(String, String), NetworkAttachmentDefinition>,
) -> Result<Vec<InterfacePlan>, PlanError> {
    let ns = vmi.metadata.namespace.as_deref().unwrap_or("default");
    let name = vmi.metadata.name.as_deref().unwrap_or_default();
    let interfaces = &vmi.spec.domain.devices.interfaces;
    if interfaces.len() > MAX_INTERFACES {
        return Err(PlanError::TooMany(interfaces.len()));
    }
    let mut out: Vec<InterfacePlan> = Vec::with_capacity(interfaces.len());
    for (index, iface) in interfaces.iter().enumerate() {
        let network = vmi
            .spec
            .networks
            .iter()
            .find(|n| n.name == iface.name)
            .ok_or_else(|| PlanError::NoNetwork(iface.name.clone()))?;
        let binding = iface.bindings().first().copied().unwrap_or("masquerade");
        let unsupported = |network: &'static str| PlanError::UnsupportedBinding {
            iface: iface.name.clone(),
            binding: binding.to_string(),
            network,
        };
        let (tap, macvtap) = link_names(&vmi_uid(vmi), index);
        let (backend, nad, link) = if network.pod.is_some() {
            let ports = match binding {
                "masquerade" => iface
                    .ports
                    .iter()
                    .filter_map(|p| {
                        let proto = match p.protocol.as_deref() {
                            Some("UDP") => Protocol::Udp,
                            _ => Protocol::Tcp,
                        };
                        u16::try_from(p.port).ok().map(|port| (proto, port))
                    })
                    .collect(),
                "bridge" => Vec::new(),
                _ => return Err(unsupported("pod")),
            };
            (Backend::Default { ports }, None, tap)
        } else if let Some(multus) = &network.multus {
            let key = split_nad(ns, &multus.network_name);
            let full = format!("{}/{}", key.0, key.1);
            let nad = nads
                .get(&key)
                .ok_or_else(|| PlanError::NadNotFound(full.clone()))?;
            let config = nad
                .spec
                .as_ref()
                .and_then(|s| s.config.as_deref())
                .unwrap_or_default();
            let cni = CniConfig::parse(config).map_err(|e| PlanError::Cni(full.clone(), e))?;
            match (cni, binding) {
                (CniConfig::Bridge(b), "bridge") => (Backend::Bridge(b), Some(full), tap),
                (CniConfig::Macvtap(m), "bridge" | "macvtap") => {
                    (Backend::Macvtap(m), Some(full), macvtap)
                }
                (CniConfig::Bridge(_), _) => return Err(unsupported("multus bridge")),
                (CniConfig::Macvtap(_), _) => return Err(unsupported("multus macvtap")),
            }
        } else {
            return Err(PlanError::NoSource(network.name.clone()));
        };
        let mac = match iface.mac_address.as_deref() {
            Some(s) => {
                let mac: Mac = s
                    .parse()
                    .map_err(|e| PlanError::Mac(iface.name.clone(), e))?;
                if mac.is_multicast() {
                    return Err(PlanError::Mac(iface.name.clone(), MacError(s.to_string())));
                }
                mac
            }
            None => Mac::generated(ns, name, &iface.name),
        };
        if let Some(other) = out.iter().find(|p| p.mac == mac) {
            return Err(PlanError::DuplicateMac(
                other.name.clone(),
                iface.name.clone(),
            ));
        }
        out.push(InterfacePlan {
            name: iface.name.clone(),
            nad,
            mac,
            link,
            backend,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vmi(spec: serde_json::Value) -> VirtualMachineInstance {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "vm1", "namespace": "ns1"},
            "spec": spec
        }))
        .expect("valid VMI")
    }

    fn nads() -> BTreeMap<(String, String), NetworkAttachmentDefinition> {
        let mut m = BTreeMap::new();
        for (ns, name, config) in [
            (
                "ns1",
                "br1",
                r#"{"type":"bridge","bridge":"br1","vlan":10,"ipam":{"type":"static","addresses":[{"address":"192.0.2.10/24"}]}}"#,
            ),
            ("other", "mv", r#"{"type":"macvtap","master":"eth0"}"#),
        ] {
            let nad: NetworkAttachmentDefinition = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"config": config}
            }))
            .expect("nad");
            m.insert((ns.to_string(), name.to_string()), nad);
        }
        m
    }

    #[test]
    fn three_interfaces_in_declared_order() {
        let v = vmi(json!({
            "domain": {"devices": {"interfaces": [
                {"name": "default", "masquerade": {}, "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]},
                {"name": "lan", "bridge": {}, "macAddress": "de:ad:00:00:be:af"},
                {"name": "direct", "macvtap": {}}
            ]}},
            "networks": [
                {"name": "direct", "multus": {"networkName": "other/mv"}},
                {"name": "lan", "multus": {"networkName": "br1"}},
                {"name": "default", "pod": {}}
            ]
        }));
        assert_eq!(
            nad_refs(&v),
            vec![("other".into(), "mv".into()), ("ns1".into(), "br1".into())]
        );
        let p = plan(&v, &nads()).expect("plan");
        assert_eq!(
            p.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["default", "lan", "direct"]
        );
        assert_eq!(
            p[0].backend,
            Backend::Default {
                ports: vec![(Protocol::Tcp, 80), (Protocol::Udp, 53)]
            }
        );
        assert_eq!(p[0].mac, Mac::generated("ns1", "vm1", "default"));
        assert_eq!(p[1].mac.to_string(), "de:ad:00:00:be:af");
        assert_eq!(p[1].nad.as_deref(), Some("ns1/br1"));
        assert!(matches!(&p[1].backend, Backend::Bridge(b) if b.vlan == Some(10)));
        assert!(matches!(&p[2].backend, Backend::Macvtap(m) if m.master == "eth0"));
        let (tap, macvtap) = link_names("ns1/vm1", 2);
        assert_eq!(p[2].link, macvtap);
        assert_eq!(p[0].link, link_names("ns1/vm1", 0).0);
        assert!(tap.len() <= 15 && macvtap.len() <= 15);
        // The same VM planned again (a restart) gets the same MACs and links.
        assert_eq!(plan(&v, &nads()).expect("plan"), p);
    }

    #[test]
    fn errors_name_the_interface() {
        let no_net =
            vmi(json!({"domain": {"devices": {"interfaces": [{"name": "x", "masquerade": {}}]}}}));
        assert!(matches!(plan(&no_net, &nads()), Err(PlanError::NoNetwork(n)) if n == "x"));
        let missing = vmi(json!({
            "domain": {"devices": {"interfaces": [{"name": "a", "bridge": {}}]}},
            "networks": [{"name": "a", "multus": {"networkName": "nope"}}]
        }));
        assert!(
            matches!(plan(&missing, &nads()), Err(PlanError::NadNotFound(n)) if n == "ns1/nope")
        );
        let masq_multus = vmi(json!({
            "domain": {"devices": {"interfaces": [{"name": "a", "masquerade": {}}]}},
            "networks": [{"name": "a", "multus": {"networkName": "br1"}}]
        }));
        assert!(matches!(
            plan(&masq_multus, &nads()),
            Err(PlanError::UnsupportedBinding { .. })
        ));
        let sriov = vmi(json!({
            "domain": {"devices": {"interfaces": [{"name": "a", "sriov": {}}]}},
            "networks": [{"name": "a", "pod": {}}]
        }));
        assert!(matches!(
            plan(&sriov, &nads()),
            Err(PlanError::UnsupportedBinding { .. })
        ));
        let dup = vmi(json!({
            "domain": {"devices": {"interfaces": [
                {"name": "a", "masquerade": {}, "macAddress": "02:00:00:00:00:01"},
                {"name": "b", "bridge": {}, "macAddress": "02:00:00:00:00:01"}]}},
            "networks": [{"name": "a", "pod": {}}, {"name": "b", "multus": {"networkName": "br1"}}]
        }));
        assert!(matches!(
            plan(&dup, &nads()),
            Err(PlanError::DuplicateMac(..))
        ));
        let mcast = vmi(json!({
            "domain": {"devices": {"interfaces": [{"name": "a", "masquerade": {}, "macAddress": "01:00:00:00:00:01"}]}},
            "networks": [{"name": "a", "pod": {}}]
        }));
        assert!(matches!(plan(&mcast, &nads()), Err(PlanError::Mac(..))));
    }
}

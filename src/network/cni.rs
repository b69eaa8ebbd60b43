//! The CNI configurations of NetworkAttachmentDefinitions that monovirt plumbs itself:
//! the `bridge` plugin (bridge name, VLAN, IPAM `none` / `static` / `host-local`) and the
//! `macvtap` plugin (master NIC, mode). A `plugins` list (a conflist) is read by its
//! first plugin, as multus' delegate does.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

/// Errors reading a CNI configuration.
#[derive(Debug, Error)]
pub enum CniError {
    /// Not JSON, or a field has the wrong shape.
    #[error("Invalid CNI configuration")]
    Json(#[source] serde_json::Error),
    /// No `type`, or one monovirt does not implement.
    #[error("Unsupported CNI plugin type {0:?} (bridge and macvtap are supported)")]
    UnsupportedType(String),
    /// An IPAM type monovirt does not implement.
    #[error("Unsupported IPAM type {0:?} (static and host-local are supported)")]
    UnsupportedIpam(String),
    /// A field's value is out of range or malformed.
    #[error("Invalid CNI configuration: {0}")]
    Invalid(String),
}

/// A parsed NetworkAttachmentDefinition configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CniConfig {
    /// Attach the VM's tap to a Linux bridge on the node.
    Bridge(BridgeConfig),
    /// A macvtap on a node NIC.
    Macvtap(MacvtapConfig),
}

/// The `bridge` plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The node bridge (`bridge`, CNI's default `cni0`).
    pub bridge: String,
    /// The access VLAN of the VM's port (`vlan`), untagged towards the guest.
    pub vlan: Option<u16>,
    /// MTU of the VM's port.
    pub mtu: Option<u32>,
    /// Where the guest's address comes from.
    pub ipam: Ipam,
}

/// The `macvtap` plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MacvtapConfig {
    /// The node NIC the macvtap sits on (`master`).
    pub master: String,
    /// `bridge` (the default), `vepa`, `private` or `passthru`.
    pub mode: MacvtapMode,
    /// MTU of the macvtap.
    pub mtu: Option<u32>,
}

/// macvtap modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacvtapMode {
    Bridge,
    Vepa,
    Private,
    Passthru,
}

/// IP address management of a secondary network. The address is reported in the VMI's
/// status; the guest configures it itself (cloud-init networkData), as with KubeVirt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipam {
    /// No address management (`ipam: {}` or none).
    None,
    /// Fixed addresses (`type: static`, `addresses: [{address, gateway}]`).
    Static(Vec<StaticAddress>),
    /// A range to allocate from (`type: host-local`).
    HostLocal(HostLocalRange),
}

/// One static address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticAddress {
    /// Address with prefix length, e.g. `192.0.2.10/24`.
    pub address: IpNet,
    /// The gateway, if any.
    pub gateway: Option<IpAddr>,
}

/// A host-local IPv4 range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLocalRange {
    /// The subnet.
    pub subnet: Ipv4Net,
    /// First address handed out (default: the subnet's second host).
    pub range_start: Option<Ipv4Addr>,
    /// Last address handed out (default: the last host).
    pub range_end: Option<Ipv4Addr>,
    /// The gateway (default: the subnet's first host).
    pub gateway: Option<Ipv4Addr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(rename = "type")]
    kind: Option<String>,
    bridge: Option<String>,
    vlan: Option<u32>,
    mtu: Option<u32>,
    master: Option<String>,
    mode: Option<String>,
    ipam: Option<RawIpam>,
    plugins: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    addresses: Vec<RawAddress>,
    subnet: Option<String>,
    range_start: Option<Ipv4Addr>,
    range_end: Option<Ipv4Addr>,
    gateway: Option<Ipv4Addr>,
    /// host-local's newer form: `ranges: [[{subnet, rangeStart, rangeEnd, gateway}]]`.
    #[serde(default)]
    ranges: Vec<Vec<RawRange>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAddress {
    address: String,
    gateway: Option<IpAddr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    subnet: String,
    range_start: Option<Ipv4Addr>,
    range_end: Option<Ipv4Addr>,
    gateway: Option<Ipv4Addr>,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::Invalid(msg.into())
}

impl CniConfig {
    /// Parses a NetworkAttachmentDefinition's `spec.config`.
    pub fn parse(config: &str) -> Result<CniConfig, CniError> {
        let mut raw: RawConfig = serde_json::from_str(config).map_err(CniError::Json)?;
        if raw.kind.is_none() {
            if let Some(first) = raw.plugins.as_mut().and_then(|p| p.first().cloned()) {
                raw = serde_json::from_value(first).map_err(CniError::Json)?;
            }
        }
        match raw.kind.as_deref() {
            Some("bridge") => {
                let vlan = match raw.vlan {
                    None | Some(0) => None,
                    Some(v @ 1..=4094) => Some(v as u16),
                    Some(v) => return Err(invalid(format!("vlan {v} is not in 1..4094"))),
                };
                let bridge = raw.bridge.unwrap_or_else(|| "cni0".to_string());
                check_ifname(&bridge)?;
                Ok(CniConfig::Bridge(BridgeConfig {
                    bridge,
                    vlan,
                    mtu: raw.mtu,
                    ipam: parse_ipam(raw.ipam)?,
                }))
            }
            Some("macvtap") => {
                let master = raw
                    .master
                    .ok_or_else(|| invalid("macvtap needs a master interface"))?;
                check_ifname(&master)?;
                let mode = match raw.mode.as_deref() {
                    None | Some("bridge") => MacvtapMode::Bridge,
                    Some("vepa") => MacvtapMode::Vepa,
                    Some("private") => MacvtapMode::Private,
                    Some("passthru") => MacvtapMode::Passthru,
                    Some(m) => return Err(invalid(format!("unknown macvtap mode {m:?}"))),
                };
                Ok(CniConfig::Macvtap(MacvtapConfig {
                    master,
                    mode,
                    mtu: raw.mtu,
                }))
            }
            Some(other) => Err(CniError::UnsupportedType(other.to_string())),
            None => Err(CniError::UnsupportedType(String::new())),
        }
    }
}

/// Linux interface names: 1 to 15 bytes, no `/`, whitespace or NUL.
pub fn check_ifname(name: &str) -> Result<(), CniError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace() || b == b':');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{name:?} is not a valid interface name")))
    }
}

fn parse_ipam(raw: Option<RawIpam>) -> Result<Ipam, CniError> {
    let Some(raw) = raw else {
        return Ok(Ipam::None);
    };
    match raw.kind.as_deref() {
        None | Some("") => Ok(Ipam::None),
        Some("static") => {
            let addresses = raw
                .addresses
                .into_iter()
                .map(|a| {
                    let address = a.address.parse::<IpNet>().map_err(|_| {
                        invalid(format!("static address {:?} is not a CIDR", a.address))
                    })?;
                    Ok(StaticAddress {
                        address,
                        gateway: a.gateway,
                    })
                })
                .collect::<Result<Vec<_>, CniError>>()?;
            if addresses.is_empty() {
                return Err(invalid("static IPAM needs at least one address"));
            }
            Ok(Ipam::Static(addresses))
        }
        Some("host-local") => {
            let (subnet, range_start, range_end, gateway) =
                match raw.ranges.first().and_then(|r| r.first()) {
                    Some(r) => (r.subnet.clone(), r.range_start, r.range_end, r.gateway),
                    None => (
                        raw.subnet
                            .ok_or_else(|| invalid("host-local IPAM needs a subnet"))?,
                        raw.range_start,
                        raw.range_end,
                        raw.gateway,
                    ),
                };
            let subnet: Ipv4Net = subnet.parse().map_err(|_| {
                invalid(format!("host-local subnet {subnet:?} is not an IPv4 CIDR"))
            })?;
            for ip in [range_start, range_end, gateway].into_iter().flatten() {
                if !subnet.contains(&ip) {
                    return Err(invalid(format!("{ip} is outside {subnet}")));
                }
            }
            Ok(Ipam::HostLocal(HostLocalRange {
                subnet: subnet.trunc(),
                range_start,
                range_end,
                gateway,
            }))
        }
        Some(other) => Err(CniError::UnsupportedIpam(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_with_vlan_and_static_ipam() {
        let c = CniConfig::parse(
            r#"{"cniVersion":"0.3.1","name":"br1","type":"bridge","bridge":"br1","vlan":100,
                "ipam":{"type":"static","addresses":[{"address":"192.0.2.10/24","gateway":"192.0.2.1"}]}}"#,
        )
        .expect("valid");
        let CniConfig::Bridge(b) = c else {
            panic!("bridge")
        };
        assert_eq!(b.bridge, "br1");
        assert_eq!(b.vlan, Some(100));
        let Ipam::Static(a) = b.ipam else {
            panic!("static")
        };
        assert_eq!(a[0].address.to_string(), "192.0.2.10/24");
        assert_eq!(a[0].gateway, Some("192.0.2.1".parse().expect("ip")));
    }

    #[test]
    fn bridge_defaults_and_host_local_forms() {
        let c = CniConfig::parse(r#"{"type":"bridge","ipam":{}}"#).expect("valid");
        assert_eq!(
            c,
            CniConfig::Bridge(BridgeConfig {
                bridge: "cni0".into(),
                vlan: None,
                mtu: None,
                ipam: Ipam::None
            })
        );
        let c = CniConfig::parse(
            r#"{"plugins":[{"type":"bridge","bridge":"b","ipam":{"type":"host-local",
                "ranges":[[{"subnet":"198.51.100.0/24","rangeStart":"198.51.100.50"}]]}}]}"#,
        )
        .expect("valid");
        let CniConfig::Bridge(b) = c else {
            panic!("bridge")
        };
        let Ipam::HostLocal(r) = b.ipam else {
            panic!("host-local")
        };
        assert_eq!(r.subnet.to_string(), "198.51.100.0/24");
        assert_eq!(r.range_start, Some(Ipv4Addr::new(198, 51, 100, 50)));
        let c = CniConfig::parse(
            r#"{"type":"bridge","ipam":{"type":"host-local","subnet":"10.9.0.0/16","gateway":"10.9.0.1"}}"#,
        )
        .expect("valid");
        let CniConfig::Bridge(b) = c else {
            panic!("bridge")
        };
        assert!(matches!(
            b.ipam,
            Ipam::HostLocal(HostLocalRange {
                gateway: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn macvtap_and_errors() {
        let c = CniConfig::parse(r#"{"type":"macvtap","master":"eth0"}"#).expect("valid");
        assert_eq!(
            c,
            CniConfig::Macvtap(MacvtapConfig {
                master: "eth0".into(),
                mode: MacvtapMode::Bridge,
                mtu: None
            })
        );
        assert!(matches!(
            CniConfig::parse(r#"{"type":"macvtap"}"#),
            Err(CniError::Invalid(_))
        ));
        assert!(matches!(
            CniConfig::parse(r#"{"type":"macvtap","master":"eth0","mode":"x"}"#),
            Err(CniError::Invalid(_))
        ));
        assert!(matches!(
            CniConfig::parse(r#"{"type":"sriov"}"#),
            Err(CniError::UnsupportedType(_))
        ));
        assert!(matches!(CniConfig::parse("nope"), Err(CniError::Json(_))));
        assert!(matches!(
            CniConfig::parse(r#"{"type":"bridge","vlan":5000}"#),
            Err(CniError::Invalid(_))
        ));
        assert!(matches!(
            CniConfig::parse(r#"{"type":"bridge","bridge":"a/b"}"#),
            Err(CniError::Invalid(_))
        ));
        assert!(matches!(
            CniConfig::parse(r#"{"type":"bridge","ipam":{"type":"dhcp"}}"#),
            Err(CniError::UnsupportedIpam(_))
        ));
        assert!(matches!(
            CniConfig::parse(
                r#"{"type":"bridge","ipam":{"type":"host-local","subnet":"10.0.0.0/24","gateway":"10.1.0.1"}}"#
            ),
            Err(CniError::Invalid(_))
        ));
    }
}

//! One node's VMI networking: the default network (a bridge with the gateway address,
//! the DHCP server, masquerade NAT) and each VMI's interfaces, prepared before the VMM
//! starts and released after it stops.
//!
//! Everything the node creates is named deterministically (see [`super::plan::link_names`])
//! so [`NodeNetwork::reconcile`] can tell, after a restart, which taps and macvtaps belong
//! to VMIs that still exist and delete the rest; NAT is one table rendered from the
//! prepared VMIs, so it can neither leak nor duplicate.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::kubevirt::virtualmachineinstance::{InterfaceStatus, VirtualMachineInstance};
use api::network::attachment::NetworkAttachmentDefinition;
use ipnet::Ipv4Net;
use thiserror::Error;

use super::cni::{Ipam, MacvtapMode};
use super::dhcp::{DhcpConfig, DhcpError, DhcpServer};
use super::lease::{LeaseError, LeaseTable};
use super::link::{LinkError, Links};
use super::mac::Mac;
use super::nat::{self, NatError, NatRules, PortForward, Protocol};
use super::plan::{
    self, Backend, InterfacePlan, PlanError, MACVTAP_PREFIX, MAX_INTERFACES, TAP_PREFIX,
};
use super::tap::{self, TapCreateError};
use crate::vmm::device_config::NicConfig;

/// Errors of node networking.
#[derive(Debug, Error)]
pub enum NetworkError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Tap(#[from] TapCreateError),
    #[error(transparent)]
    Nat(#[from] NatError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Dhcp(#[from] DhcpError),
    /// Another VMI already forwards this node port.
    #[error("Node port {protocol:?}/{port} is already forwarded to {owner}")]
    PortInUse {
        protocol: Protocol,
        port: u16,
        owner: String,
    },
    /// The macvtap's character device could not be found or made.
    #[error("No character device for macvtap {0}")]
    MacvtapDevice(String, #[source] std::io::Error),
    /// The default subnet is too small for a gateway and a guest.
    #[error("Default network subnet {0} is too small")]
    Subnet(Ipv4Net),
}

/// Settings of a node's default network.
#[derive(Clone, Debug)]
pub struct NodeNetworkConfig {
    /// Where the lease file lives (`<data_dir>/network/leases.json`).
    pub data_dir: PathBuf,
    /// The default bridge.
    pub bridge: String,
    /// The default network's subnet; the bridge takes its first host address (the
    /// guests' gateway), the guests the rest.
    pub subnet: Ipv4Net,
    /// DNS servers handed to guests. Default: the node's non-loopback resolvers.
    pub dns: Vec<Ipv4Addr>,
    /// DHCP lease time.
    pub lease_time: Duration,
}

/// The default bridge's name.
pub const DEFAULT_BRIDGE: &str = "mvbr0";
/// The default subnet, KubeVirt's masquerade subnet. Here all of a node's VMs share it
/// (one bridge per node), so each guest gets its own address in it.
pub const DEFAULT_SUBNET: &str = "10.0.2.0/24";

impl NodeNetworkConfig {
    /// Defaults: bridge `mvbr0`, subnet 10.0.2.0/24, the node's resolvers, 1 h leases.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodeNetworkConfig {
            data_dir: data_dir.into(),
            bridge: DEFAULT_BRIDGE.to_string(),
            subnet: DEFAULT_SUBNET.parse().expect("a valid constant"),
            dns: host_resolvers(),
            lease_time: Duration::from_secs(3600),
        }
    }

    /// The gateway: the subnet's first host address.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        let mut hosts = self.subnet.hosts();
        let gw = hosts.next()?;
        hosts.next().map(|_| gw)
    }
}

/// Name servers of /etc/resolv.conf that a guest can reach (not loopback stubs).
pub fn host_resolvers() -> Vec<Ipv4Addr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback())
        .collect()
}

/// What the VMM and the VMI's status get from [`NodeNetwork::prepare`].
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedNetwork {
    /// virtio-net NICs, in interface order.
    pub nics: Vec<NicConfig>,
    /// `status.interfaces`, in interface order.
    pub interfaces: Vec<InterfaceStatus>,
}

#[derive(Clone, Debug)]
struct Prepared {
    macs: Vec<Mac>,
    forwards: Vec<PortForward>,
}

/// A node's networking state.
pub struct NodeNetwork {
    config: NodeNetworkConfig,
    gateway: Ipv4Addr,
    links: Links,
    leases: Arc<Mutex<LeaseTable>>,
    prepared: Mutex<BTreeMap<String, Prepared>>,
    /// Serialises NAT rewrites (each renders the whole table).
    nat: tokio::sync::Mutex<()>,
    _dhcp: DhcpServer,
}

impl std::fmt::Debug for NodeNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeNetwork")
            .field("bridge", &self.config.bridge)
            .field("subnet", &self.config.subnet)
            .finish_non_exhaustive()
    }
}

impl NodeNetwork {
    /// Sets up the default network (bridge, gateway address, DHCP, masquerade) in the
    /// calling thread's network namespace. Must run inside a tokio runtime.
    pub async fn start(config: NodeNetworkConfig) -> Result<Self, NetworkError> {
        let gateway = config
            .gateway()
            .ok_or(NetworkError::Subnet(config.subnet))?;
        let links = Links::connect()?;
        let bridge = links.ensure_bridge(&config.bridge).await?;
        links
            .ensure_address(bridge, IpAddr::V4(gateway), config.subnet.prefix_len())
            .await?;
        let leases = LeaseTable::open(
            config.subnet,
            gateway,
            &config.data_dir.join("network").join("leases.json"),
        )?;
        let leases = Arc::new(Mutex::new(leases));
        let dhcp = DhcpServer::start(
            DhcpConfig {
                interface: config.bridge.clone(),
                dns: config.dns.clone(),
                lease_time: config.lease_time,
            },
            Arc::clone(&leases),
        )?;
        let node = NodeNetwork {
            config,
            gateway,
            links,
            leases,
            prepared: Mutex::new(BTreeMap::new()),
            nat: tokio::sync::Mutex::new(()),
            _dhcp: dhcp,
        };
        node.apply_nat().await?;
        tracing::info!(
            bridge = %node.config.bridge,
            subnet = %node.config.subnet,
            "default network ready"
        );
        Ok(node)
    }

    /// The settings in effect.
    pub fn config(&self) -> &NodeNetworkConfig {
        &self.config
    }

    /// The default network's gateway (the bridge's address).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The netlink connection (for node-level reconcilers).
    pub fn links(&self) -> &Links {
        &self.links
    }

    async fn apply_nat(&self) -> Result<(), NetworkError> {
        let _guard = self.nat.lock().await;
        let forwards = {
            let prepared = self.prepared.lock().expect("not poisoned");
            let mut f: Vec<PortForward> =
                prepared.values().flat_map(|p| p.forwards.clone()).collect();
            f.sort();
            f
        };
        let rules = NatRules {
            masquerade: vec![(self.config.subnet, self.config.bridge.clone())],
            forwards,
        };
        // `nft` is a short-lived child process; keep it off the async workers.
        tokio::task::spawn_blocking(move || rules.apply())
            .await
            .map_err(|e| NatError::Spawn(std::io::Error::other(e)))??;
        Ok(())
    }

    /// Plumbs the VMI's interfaces: taps on bridges, macvtaps, DHCP addresses, port
    /// forwards. On failure everything it created is removed again.
    pub async fn prepare(
        &self,
        vmi: &VirtualMachineInstance,
        nads: &BTreeMap<(String, String), NetworkAttachmentDefinition>,
    ) -> Result<PreparedNetwork, NetworkError> {
        let uid = plan::vmi_uid(vmi);
        let plans = plan::plan(vmi, nads)?;
        match self.plumb(&uid, &plans).await {
            Ok(p) => Ok(p),
            Err(e) => {
                if let Err(cleanup) = self.release(&uid).await {
                    tracing::warn!(%uid, "rolling back network set-up: {cleanup}");
                }
                Err(e)
            }
        }
    }

    async fn plumb(
        &self,
        uid: &str,
        plans: &[InterfacePlan],
    ) -> Result<PreparedNetwork, NetworkError> {
        let mut nics = Vec::with_capacity(plans.len());
        let mut interfaces = Vec::with_capacity(plans.len());
        let mut forwards = Vec::new();
        for p in plans {
            let mut status = InterfaceStatus {
                name: Some(p.name.clone()),
                mac: Some(p.mac.to_string()),
                pod_interface_name: Some(p.link.clone()),
                info_source: Some("domain".to_string()),
                queue_count: Some(1),
                link_state: Some("up".to_string()),
                ..Default::default()
            };
            let tap_name = match &p.backend {
                Backend::Default { ports } => {
                    let bridge = self.links.require(&self.config.bridge).await?.index;
                    self.plug_tap(&p.link, bridge, None).await?;
                    let ip = {
                        let mut leases = self.leases.lock().expect("not poisoned");
                        leases.activate(p.mac);
                        leases.address_for(p.mac)?
                    };
                    for &(protocol, port) in ports {
                        self.check_port_free(uid, protocol, port, &forwards)?;
                        forwards.push(PortForward {
                            protocol,
                            node_port: port,
                            guest: ip,
                            guest_port: port,
                        });
                    }
                    status.ip_address = Some(ip.to_string());
                    status.ip_addresses = vec![ip.to_string()];
                    p.link.clone()
                }
                Backend::Bridge(b) => {
                    // Like the CNI bridge plugin: the bridge is created if missing.
                    let bridge = self.links.ensure_bridge(&b.bridge).await?;
                    if b.vlan.is_some() {
                        self.links.set_vlan_filtering(&b.bridge, true).await?;
                    }
                    let tap = self.plug_tap(&p.link, bridge, b.vlan).await?;
                    if let Some(mtu) = b.mtu {
                        self.links.set_mtu(tap, mtu).await?;
                    }
                    let ips =
                        ipam_addresses(&b.ipam, &self.config.data_dir, p.nad.as_deref(), p.mac)?;
                    status.ip_address = ips.first().cloned();
                    status.ip_addresses = ips;
                    p.link.clone()
                }
                Backend::Macvtap(m) => {
                    let index = self
                        .links
                        .ensure_macvtap(&p.link, &m.master, m.mode, p.mac)
                        .await?;
                    if let Some(mtu) = m.mtu {
                        self.links.set_mtu(index, mtu).await?;
                    }
                    if m.mode == MacvtapMode::Passthru {
                        tracing::info!(link = %p.link, "macvtap passthru takes over {}", m.master);
                    }
                    macvtap_device(&p.link, index)?
                }
            };
            nics.push(NicConfig {
                tap: tap_name,
                mac: Some(p.mac.octets()),
            });
            interfaces.push(status);
        }
        self.prepared.lock().expect("not poisoned").insert(
            uid.to_string(),
            Prepared {
                macs: plans.iter().map(|p| p.mac).collect(),
                forwards: forwards.clone(),
            },
        );
        if !forwards.is_empty() {
            self.apply_nat().await?;
        }
        Ok(PreparedNetwork { nics, interfaces })
    }

    fn check_port_free(
        &self,
        uid: &str,
        protocol: Protocol,
        port: u16,
        mine: &[PortForward],
    ) -> Result<(), NetworkError> {
        let me = uid.to_string();
        let in_use = |owner: String| NetworkError::PortInUse {
            protocol,
            port,
            owner,
        };
        if mine
            .iter()
            .any(|f| f.protocol == protocol && f.node_port == port)
        {
            return Err(in_use(me));
        }
        let prepared = self.prepared.lock().expect("not poisoned");
        for (owner, p) in prepared.iter() {
            if *owner != me
                && p.forwards
                    .iter()
                    .any(|f| f.protocol == protocol && f.node_port == port)
            {
                return Err(in_use(owner.clone()));
            }
        }
        Ok(())
    }

    /// Creates the tap (if missing), makes it a port of `bridge`, sets its access VLAN
    /// and brings it up. Returns its index.
    async fn plug_tap(
        &self,
        name: &str,
        bridge: u32,
        vlan: Option<u16>,
    ) -> Result<u32, NetworkError> {
        if self.links.get(name).await?.is_none() {
            let owned = name.to_string();
            tokio::task::spawn_blocking(move || tap::create_persistent(&owned))
                .await
                .map_err(|e| LinkError::Connect(std::io::Error::other(e)))??;
        }
        let tap = self.links.require(name).await?;
        if tap.master != Some(bridge) {
            self.links.set_master(tap.index, bridge).await?;
        }
        if let Some(vid) = vlan {
            self.links.set_access_vlan(tap.index, vid).await?;
        }
        self.links.set_up(tap.index).await?;
        Ok(tap.index)
    }

    /// Removes the taps, macvtaps and port forwards of the VMI with `uid`. Safe to
    /// repeat, and works without any memory of the VMI (after a restart).
    pub async fn release(&self, uid: &str) -> Result<(), NetworkError> {
        let removed = self.prepared.lock().expect("not poisoned").remove(uid);
        for index in 0..MAX_INTERFACES {
            let (tap, macvtap) = plan::link_names(uid, index);
            if let Some(link) = self.links.get(&macvtap).await? {
                // The character device node goes with it (where udev did not make it).
                let _ = std::fs::remove_file(format!("/dev/tap{}", link.index));
            }
            self.links.delete(&tap).await?;
            self.links.delete(&macvtap).await?;
        }
        if let Some(p) = removed {
            {
                let mut leases = self.leases.lock().expect("not poisoned");
                for mac in &p.macs {
                    leases.deactivate(mac);
                }
            }
            if !p.forwards.is_empty() {
                self.apply_nat().await?;
            }
        }
        Ok(())
    }

    /// After a restart: deletes taps and macvtaps of VMIs whose uid is not in `active`
    /// and rewrites NAT from what is prepared now.
    pub async fn reconcile(&self, active: &BTreeSet<String>) -> Result<(), NetworkError> {
        let mut expected = BTreeSet::new();
        for uid in active {
            for index in 0..MAX_INTERFACES {
                let (tap, macvtap) = plan::link_names(uid, index);
                expected.insert(tap);
                expected.insert(macvtap);
            }
        }
        for link in self.links.list().await? {
            let ours = (link.name.starts_with(TAP_PREFIX) && link.kind == "tun")
                || (link.name.starts_with(MACVTAP_PREFIX) && link.kind == "macvtap");
            if ours && !expected.contains(&link.name) {
                tracing::info!(link = %link.name, "removing a leftover VMI link");
                self.links.delete(&link.name).await?;
            }
        }
        self.apply_nat().await
    }

    /// Removes everything this node set up: VMI links, the default bridge and our NAT
    /// table (an uninstall, or the end of a test).
    pub async fn teardown(self) -> Result<(), NetworkError> {
        self.prepared.lock().expect("not poisoned").clear();
        self.reconcile(&BTreeSet::new()).await?;
        self.links.delete(&self.config.bridge).await?;
        tokio::task::spawn_blocking(nat::delete_table)
            .await
            .map_err(|e| NatError::Spawn(std::io::Error::other(e)))??;
        Ok(())
    }
}

/// The addresses IPAM gives a secondary interface: static ones as they are; host-local
/// ones from a per-network lease file keyed by MAC (stable across restarts, like CNI's
/// host-local store under /var/lib/cni/networks).
fn ipam_addresses(
    ipam: &Ipam,
    data_dir: &Path,
    nad: Option<&str>,
    mac: Mac,
) -> Result<Vec<String>, NetworkError> {
    match ipam {
        Ipam::None => Ok(Vec::new()),
        Ipam::Static(addrs) => Ok(addrs.iter().map(|a| a.address.addr().to_string()).collect()),
        Ipam::HostLocal(r) => {
            let mut hosts = r.subnet.hosts();
            let default_gw = hosts.next().unwrap_or(r.subnet.network());
            let gateway = r.gateway.unwrap_or(default_gw);
            let first = r
                .range_start
                .unwrap_or_else(|| hosts.next().unwrap_or(gateway));
            let last = r
                .range_end
                .unwrap_or_else(|| r.subnet.hosts().last().unwrap_or(gateway));
            let file = format!(
                "hostlocal-{}.json",
                nad.unwrap_or("unnamed").replace('/', "_")
            );
            let path = data_dir.join("network").join(file);
            let mut table = LeaseTable::open(r.subnet, gateway, &path)?.with_range(first, last);
            Ok(vec![table.address_for(mac)?.to_string()])
        }
    }
}

/// The macvtap's character device (`/dev/tap<ifindex>`), created from sysfs' major:minor
/// when udev has not made it (containers, network namespaces).
fn macvtap_device(link: &str, index: u32) -> Result<String, NetworkError> {
    use std::os::unix::fs::FileTypeExt;
    let path = format!("/dev/tap{index}");
    let err = |e| NetworkError::MacvtapDevice(link.to_string(), e);
    let sys = format!("/sys/class/net/{link}/macvtap/tap{index}/dev");
    let devno = std::fs::read_to_string(&sys).map_err(err)?;
    let (major, minor) = devno
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| err(std::io::Error::other(format!("{sys}: {devno:?}"))))?;
    let want = libc::makedev(major, minor);
    match std::fs::metadata(&path) {
        Ok(m)
            if m.file_type().is_char_device() && {
                use std::os::unix::fs::MetadataExt;
                m.rdev() == want
            } =>
        {
            return Ok(path)
        }
        Ok(_) => std::fs::remove_file(&path).map_err(err)?,
        Err(_) => {}
    }
    let c_path = std::ffi::CString::new(path.clone()).expect("no NUL in a formatted path");
    // SAFETY: mknod reads the NUL-terminated path; the mode and device number are plain values.
    let rc = unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFCHR | 0o600, want) };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::cni::HostLocalRange;

    #[test]
    fn gateway_is_the_first_host() {
        let mut c = NodeNetworkConfig::new("/tmp/x");
        assert_eq!(c.gateway(), Some(Ipv4Addr::new(10, 0, 2, 1)));
        c.subnet = "10.9.0.0/32".parse().expect("cidr");
        assert_eq!(c.gateway(), None);
    }

    #[test]
    fn host_local_addresses_are_stable_and_in_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = Ipam::HostLocal(HostLocalRange {
            subnet: "198.51.100.0/24".parse().expect("cidr"),
            range_start: Some(Ipv4Addr::new(198, 51, 100, 100)),
            range_end: Some(Ipv4Addr::new(198, 51, 100, 109)),
            gateway: Some(Ipv4Addr::new(198, 51, 100, 1)),
        });
        let m1 = Mac([2, 0, 0, 0, 0, 1]);
        let m2 = Mac([2, 0, 0, 0, 0, 2]);
        let a = ipam_addresses(&ipam, dir.path(), Some("ns/br"), m1).expect("ipam");
        assert_eq!(a, vec!["198.51.100.100".to_string()]);
        let b = ipam_addresses(&ipam, dir.path(), Some("ns/br"), m2).expect("ipam");
        assert_eq!(b, vec!["198.51.100.101".to_string()]);
        assert_eq!(
            ipam_addresses(&ipam, dir.path(), Some("ns/br"), m1).expect("ipam"),
            a
        );
        assert!(ipam_addresses(&Ipam::None, dir.path(), None, m1)
            .expect("ipam")
            .is_empty());
    }
}

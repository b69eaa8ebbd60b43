//! Host links through route netlink (rtnetlink): bridges, veth pairs, VLANs, macvtaps,
//! bridge ports and their VLANs, addresses, up/down and deletion. Every call is
//! idempotent where the operation allows (an existing bridge or address is not an
//! error), so reconcilers can repeat themselves after a crash.
//!
//! Taps are not created here: the kernel refuses tun/tap creation over rtnetlink, so
//! [`super::tap`] creates them through /dev/net/tun; they are plugged and deleted here.

use std::io;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use netlink_packet_route::link::{
    BridgeVlanInfoFlags, InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVtapMode,
};
use rtnetlink::{Handle, LinkBridge, LinkBridgeVlan, LinkMacVtap, LinkUnspec, LinkVeth, LinkVlan};
use thiserror::Error;

use super::cni::MacvtapMode as CniMacvtapMode;
use super::mac::Mac;

/// Errors of link operations.
#[derive(Debug, Error)]
pub enum LinkError {
    /// The route netlink socket could not be opened.
    #[error("Failed to open a route netlink socket")]
    Connect(#[source] io::Error),
    /// The kernel refused a request.
    #[error("Netlink {op} failed")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// A link that must exist does not.
    #[error("No link named {0:?}")]
    NotFound(String),
    /// A link exists under the name but is of another kind.
    #[error("Link {name:?} exists but is a {found}, not a {want}")]
    WrongKind {
        name: String,
        found: String,
        want: &'static str,
    },
}

/// What the kernel says about one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfoSummary {
    /// ifindex.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `bridge`, `veth`, `vlan`, `macvtap`, `tun`, ... (empty for a plain NIC).
    pub kind: String,
    /// The bridge (or other controller) it is a port of.
    pub master: Option<u32>,
    /// Its MAC address.
    pub mac: Option<Mac>,
    /// Administratively up.
    pub up: bool,
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let op = op.into();
    move |source| LinkError::Netlink { op, source }
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Vlan => "vlan".into(),
        InfoKind::MacVtap => "macvtap".into(),
        InfoKind::MacVlan => "macvlan".into(),
        InfoKind::Tun => "tun".into(),
        InfoKind::Dummy => "dummy".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn summary(msg: &LinkMessage) -> LinkInfoSummary {
    let mut s = LinkInfoSummary {
        index: msg.header.index,
        name: String::new(),
        kind: String::new(),
        master: None,
        mac: None,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Controller(m) => s.master = Some(*m),
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(a);
                s.mac = Some(Mac(mac));
            }
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        s.kind = kind_name(k);
                    }
                }
            }
            _ => {}
        }
    }
    s
}

/// A route netlink connection (in the network namespace of the thread that opened it).
#[derive(Clone)]
pub struct Links {
    handle: Handle,
}

impl Links {
    /// Opens a connection; its driver runs as a task on the current tokio runtime.
    pub fn connect() -> Result<Links, LinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Connect)?;
        tokio::spawn(conn);
        Ok(Links { handle })
    }

    /// Every link.
    pub async fn list(&self) -> Result<Vec<LinkInfoSummary>, LinkError> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links.try_next().await.map_err(nl("get links"))? {
            out.push(summary(&msg));
        }
        Ok(out)
    }

    /// The link named `name`, if it exists.
    pub async fn get(&self, name: &str) -> Result<Option<LinkInfoSummary>, LinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(summary(&msg))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(nl(format!("get link {name}"))(e)),
        }
    }

    /// The link named `name`, which must exist.
    pub async fn require(&self, name: &str) -> Result<LinkInfoSummary, LinkError> {
        self.get(name)
            .await?
            .ok_or_else(|| LinkError::NotFound(name.to_string()))
    }

    async fn require_kind(
        &self,
        name: &str,
        want: &'static str,
    ) -> Result<Option<LinkInfoSummary>, LinkError> {
        match self.get(name).await? {
            Some(l) if l.kind == want => Ok(Some(l)),
            Some(l) => Err(LinkError::WrongKind {
                name: name.to_string(),
                found: if l.kind.is_empty() {
                    "device".into()
                } else {
                    l.kind
                },
                want,
            }),
            None => Ok(None),
        }
    }

    /// Creates the bridge `name` unless it exists, and sets it up. Returns its index.
    pub async fn ensure_bridge(&self, name: &str) -> Result<u32, LinkError> {
        if self.require_kind(name, "bridge").await?.is_none() {
            let res = self
                .handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await;
            match res {
                Err(e) if errno(&e) != Some(libc::EEXIST) => {
                    return Err(nl(format!("create bridge {name}"))(e))
                }
                _ => {}
            }
        }
        let link = self.require(name).await?;
        self.set_up(link.index).await?;
        Ok(link.index)
    }

    /// Creates a veth pair unless `name` exists. Returns the index of `name`.
    pub async fn ensure_veth(&self, name: &str, peer: &str) -> Result<u32, LinkError> {
        if self.require_kind(name, "veth").await?.is_none() {
            self.handle
                .link()
                .add(LinkVeth::new(name, peer).build())
                .execute()
                .await
                .map_err(nl(format!("create veth {name}")))?;
        }
        Ok(self.require(name).await?.index)
    }

    /// Creates the 802.1Q interface `name` on `parent` with `id` unless it exists.
    pub async fn ensure_vlan(&self, name: &str, parent: u32, id: u16) -> Result<u32, LinkError> {
        if self.require_kind(name, "vlan").await?.is_none() {
            self.handle
                .link()
                .add(LinkVlan::new(name, parent, id).build())
                .execute()
                .await
                .map_err(nl(format!("create vlan {name}")))?;
        }
        Ok(self.require(name).await?.index)
    }

    /// Creates a macvtap `name` on `master` with `mac`, up. Returns its index (the
    /// character device is `/dev/tap<index>`). An existing one is kept.
    pub async fn ensure_macvtap(
        &self,
        name: &str,
        master: &str,
        mode: CniMacvtapMode,
        mac: Mac,
    ) -> Result<u32, LinkError> {
        if self.require_kind(name, "macvtap").await?.is_none() {
            let master = self.require(master).await?;
            let mode = match mode {
                CniMacvtapMode::Bridge => MacVtapMode::Bridge,
                CniMacvtapMode::Vepa => MacVtapMode::Vepa,
                CniMacvtapMode::Private => MacVtapMode::Private,
                CniMacvtapMode::Passthru => MacVtapMode::Passthrough,
            };
            let msg = LinkMacVtap::new(name, master.index, mode)
                .address(mac.octets().to_vec())
                .build();
            self.handle
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(nl(format!("create macvtap {name}")))?;
        }
        let index = self.require(name).await?.index;
        self.set_up(index).await?;
        Ok(index)
    }

    /// Sets a link up.
    pub async fn set_up(&self, index: u32) -> Result<(), LinkError> {
        self.handle
            .link()
            .change(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl(format!("set link {index} up")))
    }

    /// Sets a link up or down.
    pub async fn set_updown(&self, index: u32, up: bool) -> Result<(), LinkError> {
        let msg = LinkUnspec::new_with_index(index);
        let msg = if up { msg.up() } else { msg.down() };
        self.handle
            .link()
            .change(msg.build())
            .execute()
            .await
            .map_err(nl(format!(
                "set link {index} {}",
                if up { "up" } else { "down" }
            )))
    }

    /// A link's MTU.
    pub async fn mtu(&self, index: u32) -> Result<Option<u32>, LinkError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let msg = match links.try_next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(nl(format!("get link {index}"))(e)),
        };
        Ok(msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        }))
    }

    /// Sets a link's MTU.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), LinkError> {
        self.handle
            .link()
            .change(LinkUnspec::new_with_index(index).mtu(mtu).build())
            .execute()
            .await
            .map_err(nl(format!("set link {index} mtu")))
    }

    /// Makes `index` a port of the bridge `master`.
    pub async fn set_master(&self, index: u32, master: u32) -> Result<(), LinkError> {
        self.handle
            .link()
            .change(LinkUnspec::new_with_index(index).controller(master).build())
            .execute()
            .await
            .map_err(nl(format!("attach link {index} to {master}")))
    }

    /// Takes `index` off its bridge.
    pub async fn set_nomaster(&self, index: u32) -> Result<(), LinkError> {
        self.handle
            .link()
            .change(LinkUnspec::new_with_index(index).nocontroller().build())
            .execute()
            .await
            .map_err(nl(format!("detach link {index}")))
    }

    /// Turns VLAN filtering on for the bridge `index` (needed for per-port VLANs).
    pub async fn set_vlan_filtering(&self, bridge_name: &str, on: bool) -> Result<(), LinkError> {
        let msg = LinkBridge::new(bridge_name).vlan_filtering(on).build();
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(nl(format!("set vlan_filtering on {bridge_name}")))
    }

    /// Makes `vid` the port's only untagged access VLAN (PVID, egress untagged) and
    /// removes the default VLAN 1, as the CNI bridge plugin does for `vlan`.
    pub async fn set_access_vlan(&self, port: u32, vid: u16) -> Result<(), LinkError> {
        let flags = BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged;
        self.handle
            .link()
            .set(LinkBridgeVlan::new(port).vlan(vid, flags).build())
            .execute()
            .await
            .map_err(nl(format!("add vlan {vid} on port {port}")))?;
        if vid != 1 {
            let res = self
                .handle
                .link()
                .del_with_message(
                    LinkBridgeVlan::new(port)
                        .vlan(1, BridgeVlanInfoFlags::empty())
                        .build(),
                )
                .execute()
                .await;
            match res {
                Err(e) if errno(&e) != Some(libc::ENOENT) && errno(&e) != Some(libc::EINVAL) => {
                    return Err(nl(format!("remove vlan 1 from port {port}"))(e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Lets `vid` pass tagged through the port (a trunk towards the uplink).
    pub async fn add_trunk_vlan(&self, port: u32, vid: u16) -> Result<(), LinkError> {
        self.handle
            .link()
            .set(
                LinkBridgeVlan::new(port)
                    .vlan(vid, BridgeVlanInfoFlags::empty())
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("add vlan {vid} on port {port}")))
    }

    /// Adds `addr/prefix` to the link unless it is there already.
    pub async fn ensure_address(
        &self,
        index: u32,
        addr: IpAddr,
        prefix: u8,
    ) -> Result<(), LinkError> {
        match self
            .handle
            .address()
            .add(index, addr, prefix)
            .execute()
            .await
        {
            Err(e) if errno(&e) != Some(libc::EEXIST) => Err(nl(format!(
                "add address {addr}/{prefix} to link {index}"
            ))(e)),
            _ => Ok(()),
        }
    }

    /// Removes `addr` (any prefix) from the link `name` (index `index`) if it is there.
    ///
    /// Deleting an interface's primary IPv4 address makes the kernel delete every secondary
    /// address of the same subnet with it, unless the interface promotes secondaries: when
    /// a policy moves a bridge from 192.0.2.1/24 to 192.0.2.3/24 (the new one is added
    /// first, so it is a secondary), removing the old one would take the new one too. So
    /// the interface is switched to promoting secondaries first (NetworkManager does the
    /// same for the devices it manages).
    pub async fn remove_address(
        &self,
        name: &str,
        index: u32,
        addr: IpAddr,
    ) -> Result<(), LinkError> {
        if addr.is_ipv4() {
            let knob = format!("/proc/sys/net/ipv4/conf/{name}/promote_secondaries");
            if let Err(e) = std::fs::write(&knob, "1") {
                tracing::warn!(%name, "cannot promote secondary addresses ({knob}): {e}");
            }
        }
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr)
            .execute();
        while let Some(msg) = addrs.try_next().await.map_err(nl("get addresses"))? {
            match self.handle.address().del(msg).execute().await {
                Err(e) if errno(&e) != Some(libc::EADDRNOTAVAIL) => {
                    return Err(nl(format!("remove address {addr}"))(e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The IPv4/IPv6 addresses of a link with their prefix lengths.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, LinkError> {
        use netlink_packet_route::address::AddressAttribute;
        let mut out = Vec::new();
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = addrs.try_next().await.map_err(nl("get addresses"))? {
            for attr in &msg.attributes {
                if let AddressAttribute::Address(ip) = attr {
                    out.push((*ip, msg.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// Deletes the link `name`; a missing one is fine.
    pub async fn delete(&self, name: &str) -> Result<(), LinkError> {
        let Some(link) = self.get(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(link.index).execute().await {
            Err(e) if errno(&e) != Some(libc::ENODEV) => Err(nl(format!("delete link {name}"))(e)),
            _ => Ok(()),
        }
    }
}

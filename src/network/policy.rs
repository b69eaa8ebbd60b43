//! Node network policies applied on this node (nmstate's role): an nmstate
//! [`State`] — Linux bridges with ports, 802.1Q VLAN interfaces, existing NICs, static
//! addresses, `absent` interfaces — made real over route netlink, with rollback.
//!
//! Applying one policy runs in phases, each step recorded before it is taken:
//!
//! 1. create the missing bridges and VLAN interfaces (an `ethernet` must exist);
//! 2. configure: MTU, addresses, bridge ports, up/down;
//! 3. verify that the kernel now shows the desired state, and run the caller's probe
//!    (the agent checks that the API server still answers, as nmstate does);
//! 4. undo what an earlier generation of the policy did that the new one no longer wants;
//! 5. delete the `absent` interfaces.
//!
//! A failure in 1–3 rolls every step of this attempt back in reverse order (created links
//! deleted, ports put back on their old bridge, addresses removed, MTU and up/down
//! restored) and leaves the previous generation in place.
//!
//! What a policy created (interfaces, ports it attached, addresses it added) is kept per
//! policy in `<data_dir>/network/policies.json`, written *before* each creation, so after a
//! crash a restarted agent still knows what is its to remove: [`PolicyApplier::revert`]
//! undoes exactly that when the policy is deleted or stops selecting the node, and
//! re-applying after a restart finds everything in place and duplicates nothing.
//! Unlike nmstate, which leaves interfaces behind when a policy is deleted, monovirt
//! removes what the policy created; MTU and up/down changes to pre-existing interfaces
//! are not reverted then.
//!
//! VLANs are 802.1Q sub-interfaces (nmstate's `type: vlan`), usually made a bridge's port;
//! per-port bridge VLAN filtering is not offered (some kernels are built without it).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use api::network::policy::{Interface, State};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::link::{LinkError, LinkInfoSummary, Links};

/// Why a policy could not be applied (after which it was rolled back) or reverted.
#[derive(Debug, Error)]
pub enum PolicyError {
    #[error(transparent)]
    Link(#[from] LinkError),
    /// An `ethernet` interface, a VLAN's base or a bridge port does not exist.
    #[error("Interface {0:?} does not exist on this node")]
    Missing(String),
    /// The kernel does not show what was applied.
    #[error("Verification failed: {0}")]
    Verify(String),
    /// The caller's probe failed after applying.
    #[error("Probe failed after applying: {0}")]
    Probe(String),
    /// The record of applied policies could not be read or written.
    #[error("Policy record {0}")]
    Record(PathBuf, #[source] std::io::Error),
}

/// An address a policy added.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AddedAddress {
    pub interface: String,
    pub ip: IpAddr,
    pub prefix: u8,
}

/// A port a policy put on a bridge.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttachedPort {
    pub port: String,
    pub bridge: String,
}

/// What one policy did on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The policy generation last applied successfully (0: none yet).
    pub generation: i64,
    /// Interfaces it created, in creation order.
    pub created: Vec<String>,
    /// Ports it attached.
    pub ports: Vec<AttachedPort>,
    /// Addresses it added.
    pub addresses: Vec<AddedAddress>,
}

/// One undo step of an attempt.
#[derive(Debug)]
enum Undo {
    Delete(String),
    Restore { port: String, master: Option<u32> },
    RemoveAddress(AddedAddress),
    Mtu(String, u32),
    Up(String, bool),
}

/// Applies and reverts node network policies; one at a time.
pub struct PolicyApplier {
    links: Links,
    path: PathBuf,
    record: tokio::sync::Mutex<BTreeMap<String, Applied>>,
}

impl std::fmt::Debug for PolicyApplier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyApplier")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn addresses_of(iface: &Interface) -> Vec<(IpAddr, u8)> {
    [&iface.ipv4, &iface.ipv6]
        .into_iter()
        .flatten()
        .filter(|c| c.enabled != Some(false))
        .flat_map(|c| &c.address)
        .filter_map(|a| Some((a.ip.parse().ok()?, a.prefix_length)))
        .collect()
}

fn kind_of(iface: &Interface) -> &str {
    match iface.type_.as_deref() {
        Some("linux-bridge") => "bridge",
        Some("vlan") => "vlan",
        _ => "",
    }
}

impl PolicyApplier {
    /// Opens the record under `data_dir` (`network/policies.json`).
    pub fn open(links: Links, data_dir: &Path) -> Result<Self, PolicyError> {
        let path = data_dir.join("network").join("policies.json");
        let record = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| PolicyError::Record(path.clone(), e.into()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(PolicyError::Record(path, e)),
        };
        Ok(PolicyApplier {
            links,
            path,
            record: tokio::sync::Mutex::new(record),
        })
    }

    /// The policies this node has a record of (applied, or partly applied before a crash).
    pub async fn recorded(&self) -> BTreeMap<String, Applied> {
        self.record.lock().await.clone()
    }

    fn save(&self, record: &BTreeMap<String, Applied>) -> Result<(), PolicyError> {
        let err = |e| PolicyError::Record(self.path.clone(), e);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| err(e.into()))?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        std::io::Write::write_all(&mut f, &bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }

    async fn need(&self, name: &str) -> Result<LinkInfoSummary, PolicyError> {
        self.links
            .get(name)
            .await?
            .ok_or_else(|| PolicyError::Missing(name.to_string()))
    }

    /// Applies `state` as generation `generation` of `policy`, then runs `probe`. On any
    /// failure this attempt is rolled back and the error returned (with what the rollback
    /// could not undo logged).
    pub async fn apply<P, F>(
        &self,
        policy: &str,
        generation: i64,
        state: &State,
        probe: P,
    ) -> Result<(), PolicyError>
    where
        P: FnOnce() -> F,
        F: std::future::Future<Output = Result<(), String>>,
    {
        let mut record = self.record.lock().await;
        let prev = record.get(policy).cloned().unwrap_or_default();
        let mut undo = Vec::new();
        let result = match self.steps(policy, state, &mut record, &mut undo).await {
            Ok(()) => probe().await.map_err(PolicyError::Probe),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(%policy, "applying failed, rolling back: {e}");
            self.rollback(undo).await;
            record.insert(policy.to_string(), prev.clone());
            if prev == Applied::default() {
                record.remove(policy);
            }
            self.save(&record)?;
            return Err(e);
        }
        // 4. What the earlier generation did that this one no longer wants.
        let entry = record.entry(policy.to_string()).or_default();
        let wanted_ifaces: Vec<&str> = state
            .interfaces
            .iter()
            .filter(|i| i.state() != "absent")
            .map(|i| i.name.as_str())
            .collect();
        let wanted_ports: Vec<AttachedPort> = state
            .interfaces
            .iter()
            .filter(|i| i.state() != "absent")
            .flat_map(|i| {
                i.bridge.iter().flat_map(|b| &b.port).map(|p| AttachedPort {
                    port: p.name.clone(),
                    bridge: i.name.clone(),
                })
            })
            .collect();
        let wanted_addrs: Vec<AddedAddress> = state
            .interfaces
            .iter()
            .filter(|i| i.state() != "absent")
            .flat_map(|i| {
                addresses_of(i)
                    .into_iter()
                    .map(|(ip, prefix)| AddedAddress {
                        interface: i.name.clone(),
                        ip,
                        prefix,
                    })
            })
            .collect();
        let stale = Applied {
            generation: 0,
            created: entry
                .created
                .iter()
                .filter(|c| !wanted_ifaces.contains(&c.as_str()))
                .cloned()
                .collect(),
            ports: entry
                .ports
                .iter()
                .filter(|p| !wanted_ports.contains(p))
                .cloned()
                .collect(),
            addresses: entry
                .addresses
                .iter()
                .filter(|a| !wanted_addrs.contains(a))
                .cloned()
                .collect(),
        };
        entry.generation = generation;
        entry.created.retain(|c| !stale.created.contains(c));
        entry.ports.retain(|p| !stale.ports.contains(p));
        entry.addresses.retain(|a| !stale.addresses.contains(a));
        if stale != Applied::default() {
            tracing::info!(%policy, generation, ?stale, "undoing what the policy no longer wants");
        }
        self.undo_applied(&stale).await?;
        // 5. Absent interfaces.
        for iface in state.interfaces.iter().filter(|i| i.state() == "absent") {
            self.links.delete(&iface.name).await?;
            entry.created.retain(|c| *c != iface.name);
            entry
                .ports
                .retain(|p| p.bridge != iface.name && p.port != iface.name);
            entry.addresses.retain(|a| a.interface != iface.name);
        }
        self.save(&record)?;
        tracing::info!(%policy, generation, "node network policy applied");
        Ok(())
    }

    /// Phases 1 to 3.
    async fn steps(
        &self,
        policy: &str,
        state: &State,
        record: &mut BTreeMap<String, Applied>,
        undo: &mut Vec<Undo>,
    ) -> Result<(), PolicyError> {
        let present = state.interfaces.iter().filter(|i| i.state() != "absent");
        // 1. Create.
        for iface in present.clone() {
            match (self.links.get(&iface.name).await?, kind_of(iface)) {
                (Some(l), want) if l.kind == want || (want.is_empty() && l.kind.is_empty()) => {}
                (Some(l), want) => {
                    return Err(LinkError::WrongKind {
                        name: iface.name.clone(),
                        found: if l.kind.is_empty() {
                            "device".into()
                        } else {
                            l.kind
                        },
                        want: if want.is_empty() {
                            "ethernet"
                        } else {
                            "vlan or bridge"
                        },
                    }
                    .into())
                }
                (None, "") => return Err(PolicyError::Missing(iface.name.clone())),
                (None, kind) => {
                    // Recorded before it exists: a crash right after still finds it ours.
                    let entry = record.entry(policy.to_string()).or_default();
                    entry.created.push(iface.name.clone());
                    self.save(record)?;
                    undo.push(Undo::Delete(iface.name.clone()));
                    if kind == "bridge" {
                        self.links.ensure_bridge(&iface.name).await?;
                    } else {
                        let vlan = iface.vlan.as_ref().ok_or_else(|| {
                            PolicyError::Verify(format!("{} has no vlan settings", iface.name))
                        })?;
                        let base = self.need(&vlan.base_iface).await?;
                        self.links
                            .ensure_vlan(&iface.name, base.index, vlan.id)
                            .await?;
                    }
                }
            }
        }
        // 2. Configure.
        for iface in present.clone() {
            let link = self.need(&iface.name).await?;
            if let Some(mtu) = iface.mtu {
                let old = self.links.mtu(link.index).await?;
                if old != Some(mtu) {
                    if let Some(old) = old {
                        undo.push(Undo::Mtu(iface.name.clone(), old));
                    }
                    self.links.set_mtu(link.index, mtu).await?;
                }
            }
            let have = self.links.addresses(link.index).await?;
            for (ip, prefix) in addresses_of(iface) {
                if have.contains(&(ip, prefix)) {
                    continue;
                }
                let added = AddedAddress {
                    interface: iface.name.clone(),
                    ip,
                    prefix,
                };
                let entry = record.entry(policy.to_string()).or_default();
                if !entry.addresses.contains(&added) {
                    entry.addresses.push(added.clone());
                    self.save(record)?;
                }
                undo.push(Undo::RemoveAddress(added));
                self.links.ensure_address(link.index, ip, prefix).await?;
            }
            for port in iface.bridge.iter().flat_map(|b| &b.port) {
                let p = self.need(&port.name).await?;
                if p.master != Some(link.index) {
                    let attached = AttachedPort {
                        port: port.name.clone(),
                        bridge: iface.name.clone(),
                    };
                    let entry = record.entry(policy.to_string()).or_default();
                    if !entry.ports.contains(&attached) {
                        entry.ports.push(attached);
                        self.save(record)?;
                    }
                    undo.push(Undo::Restore {
                        port: port.name.clone(),
                        master: p.master,
                    });
                    self.links.set_master(p.index, link.index).await?;
                }
                if !p.up {
                    undo.push(Undo::Up(port.name.clone(), false));
                    self.links.set_up(p.index).await?;
                }
            }
            let want_up = iface.state() == "up";
            if link.up != want_up {
                undo.push(Undo::Up(iface.name.clone(), link.up));
                self.links.set_updown(link.index, want_up).await?;
            }
        }
        // 3. Verify.
        for iface in present {
            let link = self.need(&iface.name).await?;
            let want_up = iface.state() == "up";
            if link.up != want_up {
                return Err(PolicyError::Verify(format!(
                    "{} is {} instead of {}",
                    iface.name,
                    if link.up { "up" } else { "down" },
                    iface.state()
                )));
            }
            if let Some(mtu) = iface.mtu {
                let have = self.links.mtu(link.index).await?;
                if have != Some(mtu) {
                    return Err(PolicyError::Verify(format!(
                        "{} has MTU {have:?}, not {mtu}",
                        iface.name
                    )));
                }
            }
            let have = self.links.addresses(link.index).await?;
            for (ip, prefix) in addresses_of(iface) {
                if !have.contains(&(ip, prefix)) {
                    return Err(PolicyError::Verify(format!(
                        "{} lacks {ip}/{prefix}",
                        iface.name
                    )));
                }
            }
            for port in iface.bridge.iter().flat_map(|b| &b.port) {
                if self.need(&port.name).await?.master != Some(link.index) {
                    return Err(PolicyError::Verify(format!(
                        "{} is not a port of {}",
                        port.name, iface.name
                    )));
                }
            }
        }
        Ok(())
    }

    async fn rollback(&self, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            let result: Result<(), PolicyError> = async {
                match &step {
                    Undo::Delete(name) => self.links.delete(name).await?,
                    Undo::Restore { port, master } => {
                        if let Some(l) = self.links.get(port).await? {
                            match master {
                                Some(m) => self.links.set_master(l.index, *m).await?,
                                None => self.links.set_nomaster(l.index).await?,
                            }
                        }
                    }
                    Undo::RemoveAddress(a) => {
                        if let Some(l) = self.links.get(&a.interface).await? {
                            self.links
                                .remove_address(&a.interface, l.index, a.ip)
                                .await?;
                        }
                    }
                    Undo::Mtu(name, mtu) => {
                        if let Some(l) = self.links.get(name).await? {
                            self.links.set_mtu(l.index, *mtu).await?;
                        }
                    }
                    Undo::Up(name, up) => {
                        if let Some(l) = self.links.get(name).await? {
                            self.links.set_updown(l.index, *up).await?;
                        }
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(?step, "rollback step failed: {e}");
            }
        }
    }

    /// Removes what `applied` records, newest first: addresses, ports (only from the bridge
    /// they were put on), created interfaces.
    async fn undo_applied(&self, applied: &Applied) -> Result<(), PolicyError> {
        for a in applied.addresses.iter().rev() {
            if let Some(l) = self.links.get(&a.interface).await? {
                self.links
                    .remove_address(&a.interface, l.index, a.ip)
                    .await?;
            }
        }
        for p in applied.ports.iter().rev() {
            let (Some(port), Some(bridge)) = (
                self.links.get(&p.port).await?,
                self.links.get(&p.bridge).await?,
            ) else {
                continue;
            };
            if port.master == Some(bridge.index) {
                self.links.set_nomaster(port.index).await?;
            }
        }
        for name in applied.created.iter().rev() {
            self.links.delete(name).await?;
        }
        Ok(())
    }

    /// Undoes everything `policy` did on this node and forgets it (the policy was deleted
    /// or no longer selects the node). A policy with no record is a no-op.
    pub async fn revert(&self, policy: &str) -> Result<(), PolicyError> {
        let mut record = self.record.lock().await;
        let Some(applied) = record.get(policy).cloned() else {
            return Ok(());
        };
        tracing::info!(%policy, ?applied, "reverting the node network policy");
        self.undo_applied(&applied).await?;
        record.remove(policy);
        self.save(&record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::network::policy::{Address, IpConfig};

    #[test]
    fn addresses_skip_disabled_families() {
        let mut i = Interface {
            name: "br1".into(),
            ipv4: Some(IpConfig {
                address: vec![Address {
                    ip: "192.0.2.1".into(),
                    prefix_length: 24,
                }],
                ..IpConfig::default()
            }),
            ipv6: Some(IpConfig {
                enabled: Some(false),
                address: vec![Address {
                    ip: "2001:db8::1".into(),
                    prefix_length: 64,
                }],
                ..IpConfig::default()
            }),
            ..Interface::default()
        };
        assert_eq!(
            addresses_of(&i),
            vec![("192.0.2.1".parse().expect("ip"), 24)]
        );
        i.type_ = Some("linux-bridge".into());
        assert_eq!(kind_of(&i), "bridge");
    }

    #[test]
    fn the_record_round_trips() {
        let a = Applied {
            generation: 3,
            created: vec!["br1".into()],
            ports: vec![AttachedPort {
                port: "eth1".into(),
                bridge: "br1".into(),
            }],
            addresses: vec![AddedAddress {
                interface: "br1".into(),
                ip: "192.0.2.1".parse().expect("ip"),
                prefix: 24,
            }],
        };
        let s = serde_json::to_string(&a).expect("encodes");
        assert_eq!(serde_json::from_str::<Applied>(&s).expect("decodes"), a);
    }
}

//! Node networking for VMIs (KubeVirt's virt-handler network setup, Multus' and the CNI
//! plugins' roles, and nmstate's for node bridges), all in-process:
//!
//! - [`link`]: bridges, veths, VLANs, macvtaps, bridge ports and addresses over route
//!   netlink; [`tap`]: persistent taps the VMM attaches to by name.
//! - [`nat`]: masquerade and port forwards in one nftables table of our own.
//! - [`lease`] and [`dhcp`]: the default network's stable addresses and its DHCP server.
//! - [`mac`]: interface MACs (given or derived); [`cni`]: NetworkAttachmentDefinition
//!   configurations (`bridge`, `macvtap`).
//! - [`plan`]: a VMI's interfaces and networks resolved into what to plumb, in order.
//! - [`policy`]: node network policies (nmstate's role): bridges, VLANs, addresses,
//!   applied with rollback and reverted when the policy goes.
//! - [`node`]: the per-node state: the default bridge, the DHCP server, NAT, and the
//!   prepare/release of each VMI's interfaces; reconciliation after a restart.

pub mod cni;
pub mod dhcp;
pub mod lease;
pub mod link;
pub mod mac;
pub mod nat;
pub mod node;
pub mod plan;
pub mod policy;
pub mod tap;

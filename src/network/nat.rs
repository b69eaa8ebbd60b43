//! Masquerade NAT and port forwards with nftables, in one table of our own
//! (`table inet monovirt`). The whole table is rendered from the desired state and
//! replaced in one atomic `nft -f` transaction (declare, delete, recreate), so applying
//! twice never duplicates a rule, a restarted daemon converges by applying once, and
//! clean-up is deleting the table. Rules of other tables are never touched.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;
use thiserror::Error;

/// The nftables table monovirt owns.
pub const TABLE: &str = "monovirt";

/// Errors applying rules.
#[derive(Debug, Error)]
pub enum NatError {
    /// `nft` could not be run.
    #[error("Failed to run nft (is nftables installed?)")]
    Spawn(#[source] io::Error),
    /// `nft` rejected the ruleset.
    #[error("nft failed: {0}")]
    Nft(String),
    /// `/proc/sys/net/ipv4/ip_forward` could not be set.
    #[error("Failed to enable IPv4 forwarding")]
    Forwarding(#[source] io::Error),
}

/// Transport protocol of a port forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Node port → guest address and port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortForward {
    pub protocol: Protocol,
    /// The port on the node's addresses.
    pub node_port: u16,
    /// The guest's address on the default network.
    pub guest: Ipv4Addr,
    /// The port in the guest.
    pub guest_port: u16,
}

/// The desired NAT state of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatRules {
    /// Guest subnets masqueraded behind the node, with the bridge they live on.
    pub masquerade: Vec<(Ipv4Net, String)>,
    /// Inbound port forwards.
    pub forwards: Vec<PortForward>,
}

fn quote(ifname: &str) -> String {
    // Interface names are checked (no quotes, no whitespace) before they get here.
    format!("\"{}\"", ifname.replace('"', ""))
}

impl NatRules {
    /// The nft script that replaces our table with this state atomically.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Declaring first makes the delete succeed when the table does not exist yet.
        let _ = writeln!(s, "table inet {TABLE}");
        let _ = writeln!(s, "delete table inet {TABLE}");
        let _ = writeln!(s, "table inet {TABLE} {{");

        let _ = writeln!(s, "  chain prerouting {{");
        let _ = writeln!(
            s,
            "    type nat hook prerouting priority dstnat; policy accept;"
        );
        self.render_dnat(&mut s);
        let _ = writeln!(s, "  }}");

        // Connections the node itself opens to its own addresses.
        let _ = writeln!(s, "  chain output {{");
        let _ = writeln!(s, "    type nat hook output priority -100; policy accept;");
        self.render_dnat(&mut s);
        let _ = writeln!(s, "  }}");

        let _ = writeln!(s, "  chain postrouting {{");
        let _ = writeln!(
            s,
            "    type nat hook postrouting priority srcnat; policy accept;"
        );
        for (subnet, bridge) in &self.masquerade {
            // Leaving the guest subnet through anything but its own bridge.
            let _ = writeln!(
                s,
                "    ip saddr {subnet} ip daddr != {subnet} oifname != {} masquerade",
                quote(bridge)
            );
        }
        let _ = writeln!(s, "  }}");

        // Accept our traffic even where a filter's forward policy drops.
        let _ = writeln!(s, "  chain forward {{");
        let _ = writeln!(
            s,
            "    type filter hook forward priority filter; policy accept;"
        );
        for (subnet, bridge) in &self.masquerade {
            let _ = writeln!(s, "    iifname {} ip saddr {subnet} accept", quote(bridge));
            let _ = writeln!(
                s,
                "    oifname {} ct state established,related accept",
                quote(bridge)
            );
            let _ = writeln!(s, "    oifname {} ct status dnat accept", quote(bridge));
        }
        let _ = writeln!(s, "  }}");
        let _ = writeln!(s, "}}");
        s
    }

    /// The port forwards' DNAT rules, one line each: the same in `prerouting` (traffic from
    /// outside) and `output` (the node's own connections).
    fn render_dnat(&self, s: &mut String) {
        for f in &self.forwards {
            let _ = writeln!(
                s,
                "    fib daddr type local {} dport {} dnat ip to {}:{}",
                f.protocol.as_str(),
                f.node_port,
                f.guest,
                f.guest_port
            );
        }
    }

    /// Replaces the table with this state, and enables IPv4 forwarding when anything is
    /// masqueraded.
    pub fn apply(&self) -> Result<(), NatError> {
        if !self.masquerade.is_empty() {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1").map_err(NatError::Forwarding)?;
        }
        nft(&self.render())
    }
}

/// Deletes our table (all our NAT and forward rules); a missing table is fine.
pub fn delete_table() -> Result<(), NatError> {
    nft(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n"))
}

/// Our table as `nft list` prints it, or `None` if it does not exist.
pub fn list_table() -> Result<Option<String>, NatError> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", TABLE])
        .stdin(Stdio::null())
        .output()
        .map_err(NatError::Spawn)?;
    if out.status.success() {
        Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
    } else {
        Ok(None)
    }
}

fn nft(script: &str) -> Result<(), NatError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NatError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(NatError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NatError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NatError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_table_replaced_atomically() {
        let rules = NatRules {
            masquerade: vec![("10.0.2.0/24".parse().expect("cidr"), "mvbr0".into())],
            forwards: vec![PortForward {
                protocol: Protocol::Tcp,
                node_port: 8080,
                guest: Ipv4Addr::new(10, 0, 2, 2),
                guest_port: 7777,
            }],
        };
        let s = rules.render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "table inet monovirt");
        assert_eq!(lines[1], "delete table inet monovirt");
        assert_eq!(lines[2], "table inet monovirt {");
        assert!(s.contains(
            "ip saddr 10.0.2.0/24 ip daddr != 10.0.2.0/24 oifname != \"mvbr0\" masquerade"
        ));
        assert_eq!(
            s.matches("fib daddr type local tcp dport 8080 dnat ip to 10.0.2.2:7777")
                .count(),
            2
        );
        assert_eq!(s.matches("type nat hook").count(), 3);
    }
}

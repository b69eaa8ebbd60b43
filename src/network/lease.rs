//! The default network's address book: one stable IPv4 address per MAC, persisted as JSON
//! under the agent's data directory so a daemon restart hands every guest the address it
//! had. Addresses are taken lowest-first from the subnet (the network address, the
//! gateway and the broadcast address excluded); when the pool is full, the lease of a MAC
//! that is not in use now and was seen longest ago is reused.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::mac::Mac;

/// Errors of the lease table.
#[derive(Debug, Error)]
pub enum LeaseError {
    /// Every address of the subnet is leased to a MAC in use.
    #[error("No free address in {0}")]
    Exhausted(Ipv4Net),
    /// The lease file could not be read or written.
    #[error("Lease file {0}")]
    Io(PathBuf, #[source] io::Error),
    /// The lease file is not what this code writes.
    #[error("Lease file {0} is corrupt")]
    Corrupt(PathBuf, #[source] serde_json::Error),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    ip: Ipv4Addr,
    /// Unix seconds of the last DHCP exchange or allocation.
    last_seen: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LeaseFile {
    subnet: String,
    leases: BTreeMap<String, Lease>,
}

/// MAC → address for one subnet, optionally backed by a file.
#[derive(Debug)]
pub struct LeaseTable {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    path: Option<PathBuf>,
    /// Only addresses in this inclusive range are handed out (host-local's range).
    range: Option<(Ipv4Addr, Ipv4Addr)>,
    leases: BTreeMap<Mac, Lease>,
    /// MACs of interfaces that exist now (their leases are never reused).
    active: BTreeSet<Mac>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl LeaseTable {
    /// An in-memory table.
    pub fn new(subnet: Ipv4Net, gateway: Ipv4Addr) -> Self {
        LeaseTable {
            subnet: subnet.trunc(),
            gateway,
            path: None,
            range: None,
            leases: BTreeMap::new(),
            active: BTreeSet::new(),
        }
    }

    /// A table persisted at `path`, loaded if it exists. Leases outside `subnet` (the
    /// subnet was reconfigured) are dropped.
    pub fn open(subnet: Ipv4Net, gateway: Ipv4Addr, path: &Path) -> Result<Self, LeaseError> {
        let mut table = LeaseTable::new(subnet, gateway);
        table.path = Some(path.to_path_buf());
        match fs::read(path) {
            Ok(bytes) => {
                let file: LeaseFile = serde_json::from_slice(&bytes)
                    .map_err(|e| LeaseError::Corrupt(path.to_path_buf(), e))?;
                for (mac, lease) in file.leases {
                    let Ok(mac) = mac.parse::<Mac>() else {
                        continue;
                    };
                    if table.usable(lease.ip) {
                        table.leases.insert(mac, lease);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(LeaseError::Io(path.to_path_buf(), e)),
        }
        Ok(table)
    }

    /// Restricts allocation to `first..=last` (both inside the subnet); leases outside
    /// it are dropped.
    pub fn with_range(mut self, first: Ipv4Addr, last: Ipv4Addr) -> Self {
        self.range = Some((first, last));
        let keep: Vec<Mac> = self
            .leases
            .iter()
            .filter(|(_, l)| self.usable(l.ip))
            .map(|(m, _)| *m)
            .collect();
        self.leases.retain(|m, _| keep.contains(m));
        self
    }

    /// The subnet served.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The gateway (the bridge's own address).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(&ip)
            && ip != self.subnet.network()
            && ip != self.subnet.broadcast()
            && ip != self.gateway
            && self.range.is_none_or(|(a, b)| a <= ip && ip <= b)
    }

    /// The address leased to `mac`, if any (no allocation).
    pub fn lookup(&self, mac: &Mac) -> Option<Ipv4Addr> {
        self.leases.get(mac).map(|l| l.ip)
    }

    /// Marks `mac` as belonging to an interface that exists now, so its lease is kept.
    pub fn activate(&mut self, mac: Mac) {
        self.active.insert(mac);
    }

    /// The interface with `mac` is gone; its lease stays (for the next VMI of the same VM)
    /// until the pool runs out.
    pub fn deactivate(&mut self, mac: &Mac) {
        self.active.remove(mac);
    }

    /// The address of `mac`: its existing lease, else a new one (persisted).
    pub fn address_for(&mut self, mac: Mac) -> Result<Ipv4Addr, LeaseError> {
        let t = now();
        if let Some(lease) = self.leases.get_mut(&mac) {
            lease.last_seen = t;
            return Ok(lease.ip);
        }
        let taken: BTreeSet<Ipv4Addr> = self.leases.values().map(|l| l.ip).collect();
        let free = self
            .subnet
            .hosts()
            .find(|ip| self.usable(*ip) && !taken.contains(ip));
        let ip = match free {
            Some(ip) => ip,
            None => {
                // Reuse the stalest lease of a MAC that is not in use.
                let (victim, lease) = self
                    .leases
                    .iter()
                    .filter(|(m, _)| !self.active.contains(m))
                    .min_by_key(|(_, l)| l.last_seen)
                    .map(|(m, l)| (*m, l.ip))
                    .ok_or(LeaseError::Exhausted(self.subnet))?;
                self.leases.remove(&victim);
                lease
            }
        };
        self.leases.insert(mac, Lease { ip, last_seen: t });
        self.save()?;
        Ok(ip)
    }

    /// Refreshes `mac`'s last-seen time (a renewal), without writing the file.
    pub fn touch(&mut self, mac: &Mac) {
        if let Some(lease) = self.leases.get_mut(mac) {
            lease.last_seen = now();
        }
    }

    fn save(&self) -> Result<(), LeaseError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = LeaseFile {
            subnet: self.subnet.to_string(),
            leases: self
                .leases
                .iter()
                .map(|(m, l)| (m.to_string(), l.clone()))
                .collect(),
        };
        let io_err = |e| LeaseError::Io(path.clone(), e);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&file).expect("plain data serialises");
        fs::write(&tmp, bytes).map_err(io_err)?;
        // Durable before it is visible under the real name.
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err)?;
        fs::rename(&tmp, path).map_err(io_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        Mac([0x02, 0, 0, 0, 0, n])
    }

    #[test]
    fn addresses_are_stable_and_skip_reserved_ones() {
        let mut t = LeaseTable::new("10.0.2.0/24".parse().expect("cidr"), [10, 0, 2, 1].into());
        assert_eq!(
            t.address_for(mac(1)).expect("free"),
            Ipv4Addr::new(10, 0, 2, 2)
        );
        assert_eq!(
            t.address_for(mac(2)).expect("free"),
            Ipv4Addr::new(10, 0, 2, 3)
        );
        assert_eq!(
            t.address_for(mac(1)).expect("kept"),
            Ipv4Addr::new(10, 0, 2, 2)
        );
        assert_eq!(t.lookup(&mac(2)), Some(Ipv4Addr::new(10, 0, 2, 3)));
        assert_eq!(t.lookup(&mac(3)), None);
    }

    #[test]
    fn a_full_pool_reuses_only_inactive_leases() {
        // /29: .1 gateway, .2-.6 usable, .7 broadcast.
        let mut t = LeaseTable::new("192.0.2.0/29".parse().expect("cidr"), [192, 0, 2, 1].into());
        for n in 1..=5 {
            t.activate(mac(n));
            t.address_for(mac(n)).expect("free");
        }
        assert!(matches!(
            t.address_for(mac(6)),
            Err(LeaseError::Exhausted(_))
        ));
        t.deactivate(&mac(3));
        assert_eq!(
            t.address_for(mac(6)).expect("reused"),
            Ipv4Addr::new(192, 0, 2, 4)
        );
        assert_eq!(t.lookup(&mac(3)), None);
    }

    #[test]
    fn a_range_limits_allocation() {
        let mut t = LeaseTable::new(
            "198.51.100.0/24".parse().expect("cidr"),
            [198, 51, 100, 1].into(),
        )
        .with_range([198, 51, 100, 50].into(), [198, 51, 100, 51].into());
        assert_eq!(
            t.address_for(mac(1)).expect("free"),
            Ipv4Addr::new(198, 51, 100, 50)
        );
        t.activate(mac(1));
        assert_eq!(
            t.address_for(mac(2)).expect("free"),
            Ipv4Addr::new(198, 51, 100, 51)
        );
        t.activate(mac(2));
        assert!(matches!(
            t.address_for(mac(3)),
            Err(LeaseError::Exhausted(_))
        ));
    }

    #[test]
    fn leases_survive_a_reopen_and_a_changed_subnet_drops_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("network/leases.json");
        let subnet: Ipv4Net = "10.0.2.0/24".parse().expect("cidr");
        let gw = Ipv4Addr::new(10, 0, 2, 1);
        {
            let mut t = LeaseTable::open(subnet, gw, &path).expect("open");
            t.address_for(mac(9)).expect("free");
            t.address_for(mac(7)).expect("free");
        }
        let t = LeaseTable::open(subnet, gw, &path).expect("reopen");
        assert_eq!(t.lookup(&mac(9)), Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(t.lookup(&mac(7)), Some(Ipv4Addr::new(10, 0, 2, 3)));
        let other = LeaseTable::open(
            "10.1.0.0/16".parse().expect("cidr"),
            Ipv4Addr::new(10, 1, 0, 1),
            &path,
        )
        .expect("reopen");
        assert_eq!(other.lookup(&mac(9)), None);
        fs::write(&path, b"not json").expect("write");
        assert!(matches!(
            LeaseTable::open(subnet, gw, &path),
            Err(LeaseError::Corrupt(..))
        ));
    }
}

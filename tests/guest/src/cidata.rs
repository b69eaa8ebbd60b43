//! cloud-init's NoCloud data as far as the test guest needs it (`cidata` word): the
//! `network-config` file of a FAT12/FAT16 volume labelled `cidata`, and from it netplan
//! v2 `ethernets` entries with a `match.macaddress`, a static address and a gateway.
//!
//! This is not cloud-init: it reads one file by its long name from the root directory and
//! understands only this subset of netplan (block or flow `addresses`, `gateway4`,
//! `dhcp4`), which is what the host's tests write; anything else is ignored. It lets the
//! fast tier prove that a VMI's `cloudInitNoCloud.networkData` reaches the guest on the
//! disk the agent builds and that the static address in it is the one the guest uses.

/// The most `ethernets` entries kept.
pub const MAX_ETHERNETS: usize = 4;

/// One `ethernets` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ethernet {
    /// `match.macaddress`.
    pub mac: Option<[u8; 6]>,
    /// The first of `addresses` (`A.B.C.D/N`).
    pub address: Option<([u8; 4], u8)>,
    /// `gateway4`.
    pub gateway: Option<[u8; 4]>,
    /// `dhcp4: true`.
    pub dhcp: bool,
}

impl Ethernet {
    const EMPTY: Ethernet = Ethernet {
        mac: None,
        address: None,
        gateway: None,
        dhcp: false,
    };
}

/// The parsed `network-config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    pub ethernets: [Ethernet; MAX_ETHERNETS],
    pub count: usize,
}

impl NetworkConfig {
    /// The entry matching `mac`.
    pub fn for_mac(&self, mac: [u8; 6]) -> Option<&Ethernet> {
        self.ethernets[..self.count]
            .iter()
            .find(|e| e.mac == Some(mac))
    }
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v)
}

fn ipv4(text: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut out {
        *octet = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn cidr(text: &str) -> Option<([u8; 4], u8)> {
    let (ip, prefix) = unquote(text).split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some((ipv4(ip)?, prefix))
}

fn mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = unquote(text).split([':', '-']);
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Parses the netplan v2 subset described in the module documentation.
pub fn parse_netplan(text: &str) -> NetworkConfig {
    let mut cfg = NetworkConfig {
        ethernets: [Ethernet::EMPTY; MAX_ETHERNETS],
        count: 0,
    };
    // Indentation of the `ethernets:` key and of its entries.
    let mut ethernets_indent: Option<usize> = None;
    let mut entry_indent: Option<usize> = None;
    let mut in_addresses: Option<usize> = None;
    for raw in text.lines() {
        let line = raw.split(" #").next().unwrap_or("").trim_end();
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = line.len() - content.len();
        if let Some(ai) = in_addresses {
            if indent > ai && content.starts_with('-') {
                let current = cfg.count.checked_sub(1);
                if let Some(e) = current.map(|i| &mut cfg.ethernets[i]) {
                    if e.address.is_none() {
                        e.address = cidr(content[1..].trim());
                    }
                }
                continue;
            }
            in_addresses = None;
        }
        let (key, value) = match content.split_once(':') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => continue,
        };
        match ethernets_indent {
            None => {
                if key == "ethernets" {
                    ethernets_indent = Some(indent);
                }
                continue;
            }
            Some(ei) if indent <= ei => {
                ethernets_indent = (key == "ethernets").then_some(indent);
                entry_indent = None;
                continue;
            }
            Some(_) => {}
        }
        let ei = *entry_indent.get_or_insert(indent);
        if indent == ei {
            if cfg.count == MAX_ETHERNETS {
                break;
            }
            cfg.count += 1;
            continue;
        }
        let Some(e) = cfg.count.checked_sub(1).map(|i| &mut cfg.ethernets[i]) else {
            continue;
        };
        match key {
            "macaddress" => e.mac = mac(value),
            "gateway4" => e.gateway = ipv4(unquote(value)),
            "dhcp4" => e.dhcp = matches!(value, "true" | "yes" | "on"),
            "addresses" if value.is_empty() => in_addresses = Some(indent),
            "addresses" => {
                let list = value.trim_start_matches('[').trim_end_matches(']');
                e.address = list.split(',').find_map(cidr);
            }
            _ => {}
        }
    }
    cfg
}

/// Why the volume's `network-config` could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatError {
    /// Not a FAT12/16 volume (bad boot sector, or FAT32).
    NotFat,
    /// The volume label is not `cidata`.
    Label,
    /// No `network-config` in the root directory.
    NoFile,
    /// A read failed.
    Io,
    /// The file is larger than the buffer.
    TooLarge,
}

fn le16(b: &[u8], at: usize) -> u32 {
    u32::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads `network-config` from the FAT12/16 volume `read` gives 512-byte sectors of into
/// `out`; returns its length.
pub fn read_network_config(
    mut read: impl FnMut(u32, &mut [u8; 512]) -> bool,
    out: &mut [u8],
) -> Result<usize, FatError> {
    let mut bs = [0u8; 512];
    if !read(0, &mut bs) {
        return Err(FatError::Io);
    }
    if bs[510] != 0x55 || bs[511] != 0xaa || le16(&bs, 11) != 512 {
        return Err(FatError::NotFat);
    }
    let per_cluster = u32::from(bs[13]);
    let reserved = le16(&bs, 14);
    let fats = u32::from(bs[16]);
    let root_entries = le16(&bs, 17);
    let total = match le16(&bs, 19) {
        0 => le32(&bs, 32),
        n => n,
    };
    let fat_size = le16(&bs, 22);
    if per_cluster == 0 || fat_size == 0 || root_entries == 0 {
        // FAT32 keeps its FAT size elsewhere and has no fixed root directory.
        return Err(FatError::NotFat);
    }
    if bs[38] == 0x29 && &bs[43..49] != b"cidata" {
        return Err(FatError::Label);
    }
    let root_start = reserved + fats * fat_size;
    let root_sectors = (root_entries * 32).div_ceil(512);
    let data_start = root_start + root_sectors;
    let clusters = total.saturating_sub(data_start) / per_cluster;
    let fat12 = clusters < 4085;

    // The root directory: long-name entries precede their short entry, last part first.
    let want: &[u8] = b"network-config";
    let mut name = [0u16; 26];
    let mut found = None;
    'dir: for s in 0..root_sectors {
        let mut sec = [0u8; 512];
        if !read(root_start + s, &mut sec) {
            return Err(FatError::Io);
        }
        for e in sec.chunks_exact(32) {
            match e[0] {
                0 => break 'dir,
                0xe5 => continue,
                _ => {}
            }
            if e[11] == 0x0f {
                let seq = usize::from(e[0] & 0x1f);
                if seq == 0 || seq > 2 {
                    continue;
                }
                let base = (seq - 1) * 13;
                let spans = [(1usize, 5usize), (14, 6), (28, 2)];
                let mut k = base;
                for (off, n) in spans {
                    for j in 0..n {
                        name[k] = u16::from_le_bytes([e[off + 2 * j], e[off + 2 * j + 1]]);
                        k += 1;
                    }
                }
                continue;
            }
            let matches = want
                .iter()
                .enumerate()
                .all(|(i, &c)| name[i] == u16::from(c))
                && matches!(name[want.len()], 0 | 0xffff);
            name = [0; 26];
            if matches && e[11] & 0x18 == 0 {
                found = Some((le16(e, 26), le32(e, 28) as usize));
                break 'dir;
            }
        }
    }
    let (mut cluster, size) = found.ok_or(FatError::NoFile)?;
    if size > out.len() {
        return Err(FatError::TooLarge);
    }
    let mut done = 0;
    while done < size {
        if cluster < 2 {
            return Err(FatError::NotFat);
        }
        let first = data_start + (cluster - 2) * per_cluster;
        for s in 0..per_cluster {
            let mut sec = [0u8; 512];
            if !read(first + s, &mut sec) {
                return Err(FatError::Io);
            }
            let n = (size - done).min(512);
            out[done..done + n].copy_from_slice(&sec[..n]);
            done += n;
            if done == size {
                return Ok(size);
            }
        }
        // The next cluster from the first FAT.
        let offset = if fat12 {
            cluster + cluster / 2
        } else {
            cluster * 2
        };
        let mut sec = [0u8; 512];
        let fat_sector = reserved + offset / 512;
        if !read(fat_sector, &mut sec) {
            return Err(FatError::Io);
        }
        let at = (offset % 512) as usize;
        let lo = sec[at];
        let hi = if at == 511 {
            let mut next = [0u8; 512];
            if !read(fat_sector + 1, &mut next) {
                return Err(FatError::Io);
            }
            next[0]
        } else {
            sec[at + 1]
        };
        let raw = u32::from(u16::from_le_bytes([lo, hi]));
        cluster = match (fat12, cluster & 1) {
            (true, 0) => raw & 0xfff,
            (true, _) => raw >> 4,
            (false, _) => raw,
        };
        let end = if fat12 { 0xff8 } else { 0xfff8 };
        if cluster >= end {
            break;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netplan_block_and_flow_forms() {
        let c = parse_netplan(
            "version: 2\nethernets:\n  default:\n    dhcp4: true\n    match:\n      macaddress: '02:00:00:00:00:01'\n  lan:\n    match:\n      macaddress: \"02:AA:bb:cc:dd:01\"\n    addresses:\n      - 192.0.2.10/24\n      - 192.0.2.11/24\n    gateway4: 192.0.2.1 # the router\n",
        );
        assert_eq!(c.count, 2);
        assert!(c.ethernets[0].dhcp);
        assert_eq!(c.ethernets[0].address, None);
        let lan = c.for_mac([2, 0xaa, 0xbb, 0xcc, 0xdd, 1]).expect("lan");
        assert_eq!(lan.address, Some(([192, 0, 2, 10], 24)));
        assert_eq!(lan.gateway, Some([192, 0, 2, 1]));
        let f = parse_netplan(
            "network:\n  version: 2\n  ethernets:\n    eth1:\n      match: {}\n      macaddress: 02:00:00:00:00:09\n      addresses: [10.1.0.5/16]\n",
        );
        assert_eq!(f.count, 1);
        assert_eq!(f.ethernets[0].address, Some(([10, 1, 0, 5], 16)));
        assert_eq!(f.ethernets[0].mac, Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(parse_netplan("version: 1\nconfig: []\n").count, 0);
    }
}

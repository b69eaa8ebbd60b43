//! The report: what the device tree says, what RTAS and the hypercalls answer.

use fdt::node::FdtNode;
use fdt::Fdt;

use crate::cmdline::Action;
use crate::papr::{self, Console, Rtas};
use crate::{civil, say};

/// The RTAS services the report calls.
const SERVICES: [&str; 6] = [
    "display-character",
    "get-time-of-day",
    "ibm,read-pci-config",
    "power-off",
    "system-reboot",
    "ibm,os-term",
];

fn be_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        4 => be_u32(bytes).map(u64::from),
        8 => Some(u64::from_be_bytes(bytes.try_into().ok()?)),
        _ => None,
    }
}

fn prop_u64(node: FdtNode, name: &str) -> Option<u64> {
    be_u64(node.property(name)?.value)
}

fn prop_str<'a>(node: FdtNode<'_, 'a>, name: &str) -> &'a str {
    node.property(name)
        .and_then(|p| p.as_str())
        .unwrap_or("none")
}

fn token(rtas: FdtNode, name: &str) -> Option<u32> {
    rtas.property(name).and_then(|p| be_u32(p.value))
}

/// Prints the report and does what the command line asks; returns only if that failed.
pub fn run(fdt_addr: u64, r4: u64, r5: u64, msr: u64) {
    // H_SET_MODE first: until interrupts are little-endian, a fault would run the
    // vectors in the wrong byte order.
    let (set_mode, _) = papr::hypercall(papr::H_SET_MODE, [1, papr::H_SET_MODE_RESOURCE_LE, 0, 0]);

    // SAFETY: r3 at entry is the device tree's physical address (PAPR); the guest runs with
    // translation off, so it is also a valid pointer. `from_ptr` checks the header's magic
    // and reads only within the total size the header gives.
    let tree = unsafe { Fdt::from_ptr(fdt_addr as *const u8) };
    // The console is the device tree's stdout: find it before printing anything.
    if let Ok(tree) = &tree {
        if let Some(reg) = tree.chosen().stdout().and_then(|n| prop_u64(n, "reg")) {
            papr::set_console(reg);
        }
    }

    say!(
        "guest=monovirt-ppc64le-test-guest {}",
        env!("CARGO_PKG_VERSION")
    );
    say!("entry.fdt={fdt_addr:#x}");
    say!("entry.r4={r4:#x}");
    say!("entry.r5={r5:#x}");
    say!("msr={msr:#x}");
    say!("hcall.set_mode_le={set_mode}");
    let tree = match tree {
        Ok(tree) => tree,
        Err(e) => {
            say!("fdt={e:?}");
            return;
        }
    };
    say!("fdt=ok");
    say!("fdt.size={}", tree.total_size());
    let root = tree.find_node("/");
    say!("fdt.model={}", tree.root().model());
    say!("fdt.compatible={}", tree.root().compatible().first());
    say!(
        "fdt.device_type={}",
        root.map_or("none", |n| prop_str(n, "device_type"))
    );

    let chosen = tree.chosen();
    match chosen.stdout() {
        Some(node) => {
            say!("console={}", node.name);
            say!("console.reg={:#x}", prop_u64(node, "reg").unwrap_or(0));
            say!("console.compatible={}", prop_str(node, "compatible"));
        }
        None => say!("console=none"),
    }
    let cmdline = chosen.bootargs().unwrap_or("");
    say!("cmdline={cmdline}");
    report_initrd(&tree);

    let mut total = 0u64;
    for (i, region) in tree.memory().regions().enumerate() {
        let size = region.size.unwrap_or(0) as u64;
        say!("mem.{i}={:#x},{size:#x}", region.starting_address as u64);
        total += size;
    }
    say!("mem.total={total}");

    // PAPR names CPU nodes after the processor ("PowerPC,POWER9@0"), not "cpu@0": find
    // them by device_type.
    let mut cpus = 0;
    let cpu_nodes = tree
        .find_node("/cpus")
        .into_iter()
        .flat_map(|n| n.children());
    for cpu in cpu_nodes.filter(|n| prop_str(*n, "device_type") == "cpu") {
        let reg = prop_u64(cpu, "reg").map_or(-1, |r| r as i64);
        let server = cpu
            .property("ibm,ppc-interrupt-server#s")
            .and_then(|p| be_u32(p.value));
        say!("cpu.{cpus}={reg},{}", server.map_or(-1, i64::from));
        if cpus == 0 {
            say!(
                "cpu.timebase={}",
                prop_u64(cpu, "timebase-frequency").unwrap_or(0)
            );
        }
        cpus += 1;
    }
    say!("cpus={cpus}");
    say!(
        "hypervisor={}",
        tree.find_node("/hypervisor")
            .map_or("none", |n| prop_str(n, "compatible"))
    );
    match tree.find_node("/interrupt-controller") {
        Some(xics) => {
            let ranges = xics
                .property("ibm,interrupt-server-ranges")
                .map(|p| p.value);
            let (first, count) = ranges
                .and_then(|r| Some((be_u32(r)?, be_u32(r.get(4..)?)?)))
                .unwrap_or((0, 0));
            say!("xics={},{first},{count}", prop_str(xics, "compatible"));
        }
        None => say!("xics=none"),
    }
    let phb = tree.find_compatible(&["IBM,Logical_PHB"]);
    let buid = phb
        .and_then(|n| n.property("reg"))
        .and_then(|p| be_u64(p.value.get(..8)?));
    match (phb, buid) {
        (Some(phb), Some(buid)) => {
            say!("pci.buid={buid:#x}");
            // Each range: 3 cells of PCI address, 2 of CPU address, 2 of size.
            let entries = phb.property("ranges").map_or(0, |p| p.value.len() / 28);
            say!("pci.ranges={entries}");
        }
        _ => say!("pci.buid=none"),
    }

    let Some(rtas_node) = tree.find_node("/rtas") else {
        say!("rtas=none");
        return;
    };
    let Some(entry) = prop_u64(rtas_node, "linux,rtas-entry") else {
        say!("rtas.entry=none");
        return;
    };
    say!("rtas.entry={entry:#x}");
    say!(
        "rtas.size={:#x}",
        prop_u64(rtas_node, "rtas-size").unwrap_or(0)
    );
    let mut found = 0;
    for name in SERVICES {
        if token(rtas_node, name).is_some() {
            found += 1;
        } else {
            say!("rtas.missing={name}");
        }
    }
    say!("rtas.services={found}");
    let rtas = Rtas { entry };
    if let Some(off) = token(rtas_node, "power-off") {
        crate::set_power_off(entry, off);
    }

    if let Some(t) = token(rtas_node, "display-character") {
        let mut ok = true;
        for byte in b"rtas.display=ok\n" {
            ok &= rtas
                .call(t, &[u32::from(*byte)], 1)
                .is_some_and(|b| b.status() == 0);
        }
        if !ok {
            say!("rtas.display=failed");
        }
    }
    if let Some(t) = token(rtas_node, "get-time-of-day") {
        match rtas.call(t, &[], 8) {
            Some(b) if b.status() == 0 => {
                match civil::iso8601(b.ret(1), b.ret(2), b.ret(3), b.ret(4), b.ret(5), b.ret(6)) {
                    Some(text) => {
                        say!("rtas.time={}", core::str::from_utf8(&text).unwrap_or("?"))
                    }
                    None => say!("rtas.time=invalid"),
                }
            }
            Some(b) => say!("rtas.time=status {}", b.status()),
            None => say!("rtas.time=failed"),
        }
    }
    if let (Some(t), Some(buid)) = (token(rtas_node, "ibm,read-pci-config"), buid) {
        let mut count = 0;
        let mut empty_status = None;
        for dev in 0..32u32 {
            // Config address: bus 0, devfn = dev << 3, register 0 (vendor and device id).
            let addr = dev << 11;
            let Some(b) = rtas.call(t, &[addr, (buid >> 32) as u32, buid as u32, 4], 2) else {
                continue;
            };
            if b.status() == 0 && b.ret(1) != 0xffff_ffff {
                let id = b.ret(1);
                say!("pci.00:{dev:02x}.0={:04x}:{:04x}", id & 0xffff, id >> 16);
                count += 1;
            } else if empty_status.is_none() {
                empty_status = Some(b.status());
            }
        }
        say!("pci.count={count}");
        say!("pci.empty_slot={}", empty_status.unwrap_or(0));
    }

    let (status, waiting) = Console.get();
    say!("hvterm.get={status},{waiting}");
    let t0 = papr::timebase();
    let mut t1 = t0;
    for _ in 0..1_000_000 {
        t1 = papr::timebase();
        if t1 != t0 {
            break;
        }
    }
    say!("timebase={}", if t1 > t0 { "advancing" } else { "stuck" });

    let action = Action::parse(cmdline);
    say!("action={}", action.name());
    say!("done=1");
    let (name, args): (&str, &[u32]) = match action {
        Action::Poweroff => ("power-off", &[0, 0]),
        Action::Reboot => ("system-reboot", &[]),
        // ibm,os-term takes the address of a message; none here.
        Action::OsTerm => ("ibm,os-term", &[0]),
    };
    match token(rtas_node, name).and_then(|t| rtas.call(t, args, 1)) {
        Some(b) => say!("end.error={name} returned {}", b.status()),
        None => say!("end.error={name} has no token"),
    }
}

fn report_initrd(tree: &Fdt) {
    let chosen = tree.find_node("/chosen");
    let start = chosen.and_then(|n| prop_u64(n, "linux,initrd-start"));
    let end = chosen.and_then(|n| prop_u64(n, "linux,initrd-end"));
    match (start, end) {
        (Some(start), Some(end)) if end >= start => {
            say!("initrd={start:#x},{end:#x}");
            // SAFETY: the device tree says RAM holds the initrd there; translation is off, so
            // physical addresses are pointers. Only read.
            let bytes =
                unsafe { core::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
            say!("initrd.crc32={:#010x}", crc32fast::hash(bytes));
        }
        (None, None) => say!("initrd=none"),
        _ => say!("initrd=invalid"),
    }
}

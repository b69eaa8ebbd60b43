//! Network benchmark (`cargo bench --bench network`): node networking as the agent sets it
//! up — the default network (bridge `mvbr0`, DHCP, NAT) and a bridge
//! NetworkAttachmentDefinition — with test guests (smoltcp over virtio-net) on /dev/kvm,
//! all inside a network namespace this benchmark creates (it re-runs itself there with
//! `ip netns exec`).
//!
//! Per run: the time `NodeNetwork::prepare` takes for a VMI on each network (tap created,
//! plugged, lease or IPAM) and `release`; the guest's DHCP exchange (from its NIC being
//! reported to its lease, on COM1 timestamps); and TCP streams VM→VM on the default
//! network and across the bridge, host→VM and VM→host on the default network, with the
//! packets/s the receiving side's tap carried. VM→VM and VM→host times are the sending
//! guest's own (kvmclock) connect-to-reply; host→VM is the host's.
//!
//! Prints min/median/max tables. `MONOVIRT_BENCH_RUNS` sets the run count (default 5),
//! `MONOVIRT_BENCH_NET_MIB` the stream size (default 4). A benchmark measures; nothing
//! here asserts a speed.

#[path = "../tests/common/guest.rs"]
#[allow(dead_code, unused_imports)]
mod guest;
#[path = "../tests/common/guest_vm.rs"]
#[allow(dead_code)]
mod guest_vm;
#[path = "../tests/common/netns.rs"]
#[allow(dead_code)]
mod netns;
#[path = "../tests/vmm_support/mod.rs"]
mod vmm_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use guest::guest_elf;
use guest_vm::{connect_reply, GuestVm};
use monovirt::network::node::{NodeNetwork, NodeNetworkConfig, PreparedNetwork};
use netns::{ip, Netns};
use serde_json::json;

const INNER_ENV: &str = "MONOVIRT_BENCH_NETNS";
const WAIT: Duration = Duration::from_secs(300);

/// Boots the test guest on `nets` with `cmdline`.
fn boot(cmdline: &str, nets: &PreparedNetwork) -> Result<GuestVm> {
    Ok(GuestVm::boot_on(cmdline, nets, &[])?.with_wait(WAIT))
}

/// Packets link `name` has sent (`TX`, towards a tap's guest) or received (`RX`, a
/// bridge's host side, from the guests).
fn link_packets(name: &str, direction: &str) -> Result<u64> {
    let text = ip(&["-s", "link", "show", name])?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with(&format!("{direction}:")) {
            let values = lines.next().context("statistics values")?;
            return Ok(values
                .split_whitespace()
                .nth(1)
                .context("packets")?
                .parse()?);
        }
    }
    bail!("no {direction} statistics for {name}")
}

/// A guest (client) streams `len` bytes to `target`; returns (MiB/s, packets/s into the
/// receiving tap `rx_tap`), timed by the sending guest.
fn guest_stream(
    client: &PreparedNetwork,
    client_args: &str,
    target: &str,
    len: usize,
    rx_tap: &str,
) -> Result<(f64, f64)> {
    let before = link_packets(rx_tap, "TX")?;
    let mut c = boot(
        &format!("net {client_args} net.connect={target} net.bytes={len} poweroff"),
        client,
    )?;
    let r = c.finish()?;
    let packets = link_packets(rx_tap, "TX")? - before;
    let want = connect_reply(len);
    ensure!(
        r.get("net.connect.reply") == Some(want.as_str()),
        "reply {:?}, expected {want}",
        r.get("net.connect.reply")
    );
    let secs = r
        .get("net.connect.us")
        .context("net.connect.us")?
        .parse::<f64>()?
        / 1e6;
    Ok((
        len as f64 / secs / f64::from(1 << 20),
        packets as f64 / secs,
    ))
}

/// Boots a listening guest; returns it and its DHCP time (NIC reported → lease), if any.
fn listener(nets: &PreparedNetwork, args: &str) -> Result<(GuestVm, Option<f64>)> {
    let mut vm = boot(&format!("net {args} poweroff"), nets)?;
    let nic = vm.wait_for_line("virtio.net.0")?;
    let dhcp = if args.contains("guest.ip=") {
        None
    } else {
        Some(
            vm.wait_for_line("net.ip")?
                .duration_since(nic)
                .as_secs_f64()
                * 1e3,
        )
    };
    vm.wait_for("net.tcp.listen")?;
    Ok((vm, dhcp))
}

#[derive(Default)]
struct Table(BTreeMap<&'static str, Vec<f64>>);

impl Table {
    fn add(&mut self, row: &'static str, v: f64) {
        self.0.entry(row).or_default().push(v);
    }
}

fn vmi(
    name: &str,
    spec: serde_json::Value,
) -> Result<api::kubevirt::virtualmachineinstance::VirtualMachineInstance> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": spec
    }))?)
}

fn one_run(
    rt: &tokio::runtime::Runtime,
    network: &NodeNetwork,
    len: usize,
    t: &mut Table,
) -> Result<()> {
    let nad: api::network::attachment::NetworkAttachmentDefinition = serde_json::from_value(
        json!({
            "metadata": {"name": "lan", "namespace": "default"},
            "spec": {"config": json!({"cniVersion": "0.3.1", "type": "bridge", "bridge": "br-bench", "ipam": {}}).to_string()}
        }),
    )?;
    let nads = BTreeMap::from([(("default".to_string(), "lan".to_string()), nad)]);
    let default_vmi = |n: &str| {
        vmi(
            n,
            json!({"domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}}]}},
                      "networks": [{"name": "default", "pod": {}}]}),
        )
    };
    let lan_vmi = |n: &str| {
        vmi(
            n,
            json!({"domain": {"devices": {"interfaces": [{"name": "lan", "bridge": {}}]}},
                      "networks": [{"name": "lan", "multus": {"networkName": "lan"}}]}),
        )
    };
    let timed = |v: &api::kubevirt::virtualmachineinstance::VirtualMachineInstance| -> Result<(PreparedNetwork, f64)> {
        let start = Instant::now();
        let p = rt.block_on(network.prepare(v, &nads))?;
        Ok((p, start.elapsed().as_secs_f64() * 1e3))
    };
    let (srv, ms) = timed(&default_vmi("srv")?)?;
    t.add("prepare, default network (ms)", ms);
    let (cl, _) = timed(&default_vmi("cl")?)?;
    let (lsrv, ms) = timed(&lan_vmi("lsrv")?)?;
    t.add("prepare, bridge network (ms)", ms);
    let (lcl, _) = timed(&lan_vmi("lcl")?)?;
    let srv_ip = srv.interfaces[0].ip_address.clone().context("address")?;

    // VM → VM, default network.
    let (mut s, dhcp) = listener(&srv, "")?;
    t.add("DHCP lease in the guest (ms)", dhcp.context("DHCP time")?);
    let (mib, pps) = guest_stream(&cl, "", &format!("{srv_ip}:7777"), len, &srv.nics[0].tap)?;
    s.finish()?;
    t.add("VM→VM default network (MiB/s)", mib);
    t.add("VM→VM default network (packets/s)", pps);

    // VM → VM across the bridge.
    let (mut s, _) = listener(&lsrv, "guest.ip=192.0.2.11/24")?;
    let (mib, pps) = guest_stream(
        &lcl,
        "guest.ip=192.0.2.12/24",
        "192.0.2.11:7777",
        len,
        &lsrv.nics[0].tap,
    )?;
    s.finish()?;
    t.add("VM→VM bridge network (MiB/s)", mib);
    t.add("VM→VM bridge network (packets/s)", pps);

    // Host → VM, default network (the host is the bridge's gateway address).
    let (mut s, _) = listener(&srv, "")?;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + 5) as u8).collect();
    let want = format!("bytes={len} crc32={:#010x}\n", crc32fast::hash(&data));
    let before = link_packets(&srv.nics[0].tap, "TX")?;
    let addr: SocketAddr = format!("{srv_ip}:7777").parse()?;
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(30))?;
    sock.set_read_timeout(Some(WAIT))?;
    let start = Instant::now();
    sock.write_all(&data)?;
    sock.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    sock.read_to_string(&mut reply)?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(reply == want, "guest replied {reply:?}");
    let packets = link_packets(&srv.nics[0].tap, "TX")? - before;
    s.finish()?;
    t.add(
        "host→VM default network (MiB/s)",
        len as f64 / secs / f64::from(1 << 20),
    );
    t.add("host→VM default network (packets/s)", packets as f64 / secs);

    // VM → host: a listener on the gateway address answers like the guest does.
    let gw = network.gateway();
    let l = TcpListener::bind((gw, 0))?;
    let port = l.local_addr()?.port();
    let server = thread::spawn(move || -> Result<()> {
        let (mut c, _) = l.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let (mut n, mut crc) = (0usize, crc32fast::Hasher::new());
        loop {
            let k = c.read(&mut buf)?;
            if k == 0 {
                break;
            }
            n += k;
            crc.update(&buf[..k]);
        }
        c.write_all(format!("bytes={n} crc32={:#010x}\n", crc.finalize()).as_bytes())?;
        Ok(())
    });
    let rx_before = link_packets("mvbr0", "RX")?;
    let mut c = boot(
        &format!("net net.connect={gw}:{port} net.bytes={len} poweroff"),
        &cl,
    )?;
    let r = c.finish()?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("host server panicked"))??;
    let rx_after = link_packets("mvbr0", "RX")?;
    ensure!(
        r.get("net.connect.reply") == Some(connect_reply(len).as_str()),
        "VM→host reply {:?}",
        r.get("net.connect.reply")
    );
    let secs = r.get("net.connect.us").context("us")?.parse::<f64>()? / 1e6;
    t.add(
        "VM→host default network (MiB/s)",
        len as f64 / secs / f64::from(1 << 20),
    );
    t.add(
        "VM→host default network (packets/s)",
        (rx_after - rx_before) as f64 / secs,
    );

    for uid in ["uid-srv", "uid-cl", "uid-lsrv", "uid-lcl"] {
        let start = Instant::now();
        rt.block_on(network.release(uid))?;
        if uid == "uid-srv" {
            t.add(
                "release, default network (ms)",
                start.elapsed().as_secs_f64() * 1e3,
            );
        }
    }
    Ok(())
}

fn inner(runs: usize) -> Result<()> {
    let mib: usize = std::env::var("MONOVIRT_BENCH_NET_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
        .max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let network = rt.block_on(NodeNetwork::start(NodeNetworkConfig::new(dir.path())))?;
    let mut table = Table::default();
    let load_before = vmm_support::load_average();
    for _ in 0..runs {
        one_run(&rt, &network, mib << 20, &mut table)?;
    }
    rt.block_on(network.teardown())?;
    println!(
        "node networking: test guests (smoltcp) on /dev/kvm, {mib} MiB TCP streams, {runs} runs \
         (load average {load_before} before, {} after)",
        vmm_support::load_average()
    );
    println!("| metric | min | median | max |");
    println!("| --- | --- | --- | --- |");
    let order = [
        "prepare, default network (ms)",
        "prepare, bridge network (ms)",
        "release, default network (ms)",
        "DHCP lease in the guest (ms)",
        "VM→VM default network (MiB/s)",
        "VM→VM default network (packets/s)",
        "VM→VM bridge network (MiB/s)",
        "VM→VM bridge network (packets/s)",
        "host→VM default network (MiB/s)",
        "host→VM default network (packets/s)",
        "VM→host default network (MiB/s)",
        "VM→host default network (packets/s)",
    ];
    for name in order {
        let mut v = table.0.get(name).cloned().unwrap_or_default();
        if v.is_empty() {
            continue;
        }
        v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
        let digits = if name.ends_with("(packets/s)") { 0 } else { 2 };
        println!(
            "| {name} | {:.*} | {:.*} | {:.*} |",
            digits,
            v[0],
            digits,
            v[v.len() / 2],
            digits,
            v[v.len() - 1]
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let Some(runs) = vmm_support::bench_runs("network", 5)? else {
        return Ok(());
    };
    if std::env::var_os(INNER_ENV).is_some() {
        return inner(runs);
    }
    for tool in ["ip", "nft"] {
        if Command::new(tool).arg("-V").output().is_err() {
            ensure!(
                std::env::var("MONOVIRT_REQUIRE_KVM").as_deref() != Ok("1"),
                "`{tool}` is not installed"
            );
            eprintln!("NOTICE: skipping the network benchmark: `{tool}` is not installed");
            return Ok(());
        }
    }
    // Built outside the namespace: cargo must not run in there.
    guest_elf()?;
    // Deleted on drop, with everything the benchmark made inside.
    let ns = Netns::create(format!("mvbench{}", std::process::id()))?;
    let status = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(std::env::current_exe()?)
        .args(std::env::args().skip(1))
        .env(INNER_ENV, &ns.name)
        .env("MONOVIRT_BENCH_RUNS", runs.to_string())
        .status()?;
    ensure!(
        status.success(),
        "the benchmark inside {} failed: {status}",
        ns.name
    );
    Ok(())
}

//! Node networking end to end, entirely inside network namespaces the test creates: each
//! test makes a "node" namespace and re-runs this test binary inside it (`ip netns exec`,
//! which also gives it the namespace's own /sys), where the inner half sets up the
//! default network (bridge, DHCP, nftables NAT), plugs taps and boots the test guest with
//! `monovirt run` on /dev/kvm. Peers are further namespaces joined by veth pairs: an
//! "outside" network behind the node's uplink, a DHCP client (busybox udhcpc) on the
//! default bridge, an L2 peer on a bridge NetworkAttachmentDefinition and on a macvtap's
//! master. Nothing touches the host's own interfaces, routes or nftables.
//!
//! With MONOVIRT_REQUIRE_KVM=1 a missing /dev/kvm, `ip`, `nft` or `busybox` fails the
//! test instead of skipping it.

mod common;
mod vmm_support;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;
use api::network::attachment::NetworkAttachmentDefinition;
use common::guest::{guest_elf, Report};
use monovirt::network::mac::Mac;
use monovirt::network::nat;
use monovirt::network::node::{NodeNetwork, NodeNetworkConfig, PreparedNetwork};
use monovirt::network::tap;
use serde_json::json;
use vmm_support::kvm_available;

/// Generous: the guest's ring-0 code may be emulated. Never a timing assertion.
const WAIT: Duration = Duration::from_secs(180);
/// Set (to the node namespace's name) for the inner half.
const INNER_ENV: &str = "MONOVIRT_NETNS_NODE";
/// The outer test's own namespace, which the inner half must not be in.
const OUTER_NS_ENV: &str = "MONOVIRT_NETNS_OUTER";

// ---------------------------------------------------------------- namespaces and tools

fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd} {args:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd} {args:?} ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// A named network namespace, deleted on drop (with every interface inside it).
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: String) -> Result<Netns> {
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `f` on a thread inside the namespace (its sockets live there).
    fn run_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.spawn_inside(f)?
            .join()
            .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    }

    fn spawn_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<thread::JoinHandle<Result<T>>> {
        let ns = File::open(format!("/run/netns/{}", self.name)).context("opening the netns")?;
        Ok(thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd; it changes only this thread's namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            ensure!(rc == 0, "setns: {}", std::io::Error::last_os_error());
            f()
        }))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn tool_present(name: &str, arg: &str) -> bool {
    let found = Command::new(name)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var("MONOVIRT_REQUIRE_KVM").as_deref() == Ok("1") {
            panic!("MONOVIRT_REQUIRE_KVM=1 but `{name}` is not installed");
        }
        eprintln!("NOTICE: skipping: `{name}` is not installed");
    }
    found
}

fn prerequisites() -> bool {
    kvm_available()
        && tool_present("ip", "-V")
        && tool_present("nft", "-v")
        && tool_present("busybox", "--help")
}

/// The outer half: a fresh node namespace, and this binary's `inner` test run inside it.
fn outer(tag: &str, inner: &str) -> Result<()> {
    if !prerequisites() {
        return Ok(());
    }
    // Build the guest before entering the namespace (cargo must not run in there).
    guest_elf()?;
    let node = Netns::create(format!("mvn{tag}{}", std::process::id()))?;
    let exe = std::env::current_exe()?;
    let out = Command::new("ip")
        .args(["netns", "exec", &node.name])
        .arg(&exe)
        .args([
            inner,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER_ENV, &node.name)
        .env(OUTER_NS_ENV, fs::read_link("/proc/self/ns/net")?)
        .stdin(Stdio::null())
        .output()
        .context("running the inner test")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && stdout.contains("1 passed"),
        "inner test {inner} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Everything the inner half made lived in namespaces that now go; its peers are
    // named after the node and removed too.
    for peer in ["out", "cl", "lan"] {
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("{}{peer}", node.name)])
            .stderr(Stdio::null())
            .status();
    }
    Ok(())
}

/// The inner half's guard: the node namespace's name, or `None` when run directly.
fn inner_node() -> Result<Option<String>> {
    let Ok(node) = std::env::var(INNER_ENV) else {
        eprintln!("NOTICE: this is the inner half of a namespace test; its outer test runs it");
        return Ok(None);
    };
    let mine = fs::read_link("/proc/self/ns/net")?;
    let outer = std::env::var_os(OUTER_NS_ENV).context("the outer test's namespace")?;
    ensure!(
        mine.as_os_str() != outer,
        "refusing to run outside a test network namespace"
    );
    Ok(Some(node))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A veth pair: `here` in the current (node) namespace, `there` as `there_name` in `peer`.
fn veth_to(peer: &Netns, here: &str, there_name: &str) -> Result<()> {
    ip(&[
        "link", "add", here, "type", "veth", "peer", "name", there_name, "netns", &peer.name,
    ])?;
    ip(&["link", "set", here, "up"])?;
    ip(&["-n", &peer.name, "link", "set", there_name, "up"])?;
    Ok(())
}

// ---------------------------------------------------------------- the guest

/// One `monovirt run` child with its COM1 collected.
struct Vm {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Vm {
    fn boot(cmdline: &str, nets: &PreparedNetwork) -> Result<Vm> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_monovirt"));
        cmd.arg("run")
            .arg("--kernel")
            .arg(guest_elf()?)
            .arg("--cmdline")
            .arg(format!("console=ttyS0 nosmp {cmdline}"))
            .args(["--memory", "128", "--console", "stdio"]);
        for nic in &nets.nics {
            let mac = nic
                .mac
                .map(|m| format!(",mac={}", Mac(m)))
                .unwrap_or_default();
            cmd.arg(format!("--net=tap={}{mac}", nic.tap));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning monovirt run")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let output = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&output);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut out = sink.lock().expect("output lock");
                out.push_str(&line);
                out.push('\n');
            }
        });
        Ok(Vm { child, output })
    }

    fn text(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    fn wait_for(&mut self, key: &str) -> Result<Report> {
        let deadline = Instant::now() + WAIT;
        loop {
            let report = Report::parse(&self.text());
            if report.get(key).is_some() {
                return Ok(report);
            }
            if let Some(status) = self.child.try_wait()? {
                thread::sleep(Duration::from_millis(200));
                let report = Report::parse(&self.text());
                if report.get(key).is_some() {
                    return Ok(report);
                }
                bail!(
                    "monovirt exited ({status}) before `{key}=`:\n{}",
                    self.text()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "no `{key}=` in time:\n{}",
                self.text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn finish(&mut self) -> Result<Report> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                thread::sleep(Duration::from_millis(200));
                ensure!(
                    status.success(),
                    "monovirt exited with {status}:\n{}",
                    self.text()
                );
                return Ok(Report::parse(&self.text()));
            }
            ensure!(
                Instant::now() < deadline,
                "the guest did not power off:\n{}",
                self.text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Streams `len` bytes to the guest's TCP 7777 service at `addr` and checks its
/// `bytes=N crc32=…` answer.
fn stream_to_guest(addr: SocketAddr, seed: u8, len: usize) -> Result<()> {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let want = format!("bytes={len} crc32={:#010x}\n", crc32fast::hash(&data));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect {addr}: {e}; retrying");
                thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e).context(format!("connecting to {addr}")),
        }
    };
    s.set_read_timeout(Some(WAIT))?;
    s.set_write_timeout(Some(WAIT))?;
    s.write_all(&data)?;
    s.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    ensure!(
        reply == want,
        "guest at {addr} replied {reply:?}, expected {want:?}"
    );
    Ok(())
}

fn vmi(name: &str, spec: serde_json::Value) -> Result<VirtualMachineInstance> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": spec
    }))?)
}

fn nad(
    name: &str,
    config: serde_json::Value,
) -> Result<((String, String), NetworkAttachmentDefinition)> {
    let nad = serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"config": config.to_string()}
    }))?;
    Ok((("default".to_string(), name.to_string()), nad))
}

fn our_links() -> Result<Vec<String>> {
    let out = ip(&["-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("mvt") || n.starts_with("mvm"))
        .collect())
}

// ---------------------------------------------------------------- default network

#[test]
fn default_network_dhcp_nat_port_forward_and_cleanup() -> Result<()> {
    outer("d", "inner_default_network")
}

#[test]
#[ignore = "the inner half of default_network_dhcp_nat_port_forward_and_cleanup"]
fn inner_default_network() -> Result<()> {
    let Some(node) = inner_node()? else {
        return Ok(());
    };
    let rt = runtime()?;
    let dir = tempfile::tempdir()?;
    let mut config = NodeNetworkConfig::new(dir.path());
    config.dns = vec![Ipv4Addr::new(192, 0, 2, 53)];

    // The node's uplink to an "outside" network with an HTTP server.
    let outside = Netns::create(format!("{node}out"))?;
    veth_to(&outside, "uplink0", "eth0")?;
    ip(&["addr", "add", "198.51.100.2/24", "dev", "uplink0"])?;
    ip(&[
        "-n",
        &outside.name,
        "addr",
        "add",
        "198.51.100.1/24",
        "dev",
        "eth0",
    ])?;

    let network = rt.block_on(NodeNetwork::start(config.clone()))?;
    ensure!(ip(&["-o", "addr", "show", "dev", "mvbr0"])?.contains("10.0.2.1/24"));

    // 1. busybox udhcpc in a client namespace on the default bridge.
    let client = Netns::create(format!("{node}cl"))?;
    veth_to(&client, "mvclient", "eth0")?;
    ip(&["link", "set", "mvclient", "master", "mvbr0"])?;
    let script = dir.path().join("udhcpc.sh");
    let record = dir.path().join("lease.env");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\n\
             echo \"ip=$ip router=$router dns=$dns mask=$mask\" > {}\n\
             ip addr add $ip/$mask dev $interface\nip route add default via $router\n",
            record.display()
        ),
    )?;
    run("chmod", &["+x", &script.to_string_lossy()])?;
    run(
        "ip",
        &[
            "netns",
            "exec",
            &client.name,
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-f",
            "-q",
            "-n",
            "-t",
            "10",
            "-T",
            "2",
            "-s",
            &script.to_string_lossy(),
        ],
    )?;
    let lease = fs::read_to_string(&record)?;
    let client_mac = ip(&["-n", &client.name, "-o", "link", "show", "eth0"])?;
    let leases = fs::read_to_string(dir.path().join("network/leases.json"))?;
    let client_ip = lease
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("ip="))
        .context("udhcpc reported no ip")?
        .to_string();
    ensure!(
        lease.contains("router=10.0.2.1 dns=192.0.2.53 mask=24")
            && client_ip.starts_with("10.0.2."),
        "udhcpc got {lease}"
    );
    ensure!(
        leases.contains(&client_ip),
        "lease file {leases} lacks {client_ip}"
    );
    ensure!(!client_mac.is_empty());

    // 2. Masquerade: the client reaches the outside server, which sees the node's uplink address.
    let listener = outside.run_inside(|| Ok(TcpListener::bind("198.51.100.1:8000")?))?;
    let server = thread::spawn(move || -> Result<String> {
        let (mut s, peer) = listener.accept()?;
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf)?;
        s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 18\r\n\r\nhello-from-outside")?;
        Ok(peer.ip().to_string())
    });
    let body = run(
        "ip",
        // (`timeout` rather than wget's own -T, which crashes some busybox builds.)
        &[
            "netns",
            "exec",
            &client.name,
            "timeout",
            "60",
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            "http://198.51.100.1:8000/",
        ],
    )
    .with_context(|| {
        format!(
            "client routes: {:?}\nnode ruleset: {:?}\nip_forward: {:?}",
            ip(&["-n", &client.name, "route"]),
            run("nft", &["list", "ruleset"]),
            fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        )
    })?;
    ensure!(body == "hello-from-outside", "wget got {body:?}");
    let seen = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    ensure!(
        seen == "198.51.100.2",
        "the outside saw {seen}, not the node's address"
    );

    // 3. Two VMs on the default network get leases. VM a forwards node port 7777.
    let nads = BTreeMap::new();
    let a = vmi(
        "a",
        json!({"domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}, "ports": [{"port": 7777}]}]}},
               "networks": [{"name": "default", "pod": {}}]}),
    )?;
    let b = vmi(
        "b",
        json!({"domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}}]}},
               "networks": [{"name": "default", "pod": {}}]}),
    )?;
    let pa = rt.block_on(network.prepare(&a, &nads))?;
    let pb = rt.block_on(network.prepare(&b, &nads))?;
    let ip_a = pa.interfaces[0]
        .ip_address
        .clone()
        .context("a has an address")?;
    let ip_b = pb.interfaces[0]
        .ip_address
        .clone()
        .context("b has an address")?;
    ensure!(
        ip_a != ip_b && ip_a != client_ip && ip_b != client_ip,
        "{ip_a} {ip_b} {client_ip}"
    );
    ensure!(
        pa.interfaces[0].mac.as_deref()
            == Some(
                Mac::generated("default", "a", "default")
                    .to_string()
                    .as_str()
            )
    );
    // A second VMI may not take a forwarded port another one holds.
    let c = vmi(
        "c",
        json!({"domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}, "ports": [{"port": 7777}]}]}},
               "networks": [{"name": "default", "pod": {}}]}),
    )?;
    ensure!(
        rt.block_on(network.prepare(&c, &nads)).is_err(),
        "port 7777 was handed out twice"
    );
    ensure!(!our_links()?
        .iter()
        .any(|l| *l == monovirt::network::plan::link_names("uid-c", 0).0));

    let mut vm_a = Vm::boot("net poweroff", &pa)?;
    let mut vm_b = Vm::boot("net poweroff", &pb)?;
    let ra = vm_a.wait_for("net.tcp.listen")?;
    let rb = vm_b.wait_for("net.tcp.listen")?;
    ensure!(
        ra.get("net.ip") == Some(format!("{ip_a}/24").as_str()),
        "a: {:?} vs {ip_a}",
        ra.get("net.ip")
    );
    ensure!(
        rb.get("net.ip") == Some(format!("{ip_b}/24").as_str()),
        "b: {:?} vs {ip_b}",
        rb.get("net.ip")
    );
    ensure!(ra.get("net.gateway") == Some("10.0.2.1"));
    let mac_a = pa.interfaces[0]
        .mac
        .clone()
        .context("mac")?
        .replace(':', "-");
    ensure!(ra
        .get("virtio.net.0")
        .is_some_and(|v| v.ends_with(&format!("mac={mac_a}"))));

    // 4. The forwarded node port reaches a's TCP service from the outside network.
    outside.run_inside(|| stream_to_guest("198.51.100.2:7777".parse()?, 1, 64 << 10))?;
    // 5. b is reachable across the bridge from the client namespace.
    let addr: SocketAddr = format!("{ip_b}:7777").parse()?;
    client.run_inside(move || stream_to_guest(addr, 2, 64 << 10))?;
    ensure!(vm_a.finish()?.get("net.tcp") == Some("closed"));
    ensure!(vm_b.finish()?.get("net.tcp") == Some("closed"));

    // 6. Release: taps and the forward go; restarting the VM gives the same address.
    rt.block_on(network.release("uid-a"))?;
    rt.block_on(network.release("uid-b"))?;
    ensure!(our_links()?.is_empty(), "left behind: {:?}", our_links()?);
    let table = nat::list_table()?.context("our table exists")?;
    ensure!(
        !table.contains("dnat ip to"),
        "forward left behind:\n{table}"
    );
    let again = rt.block_on(network.prepare(&a, &nads))?;
    ensure!(again.interfaces[0].ip_address.as_deref() == Some(ip_a.as_str()));
    ensure!(
        nat::list_table()?
            .unwrap_or_default()
            .matches("dnat ip to")
            .count()
            == 2
    );

    // 7. A daemon restart: the old state is dropped without clean-up, a stray tap is
    //    left; the new instance removes what no VMI owns and writes NAT once.
    drop(network);
    tap::create_persistent("mvt0badcafe0")?;
    let network = rt.block_on(NodeNetwork::start(config.clone()))?;
    rt.block_on(network.reconcile(&["uid-a".to_string()].into()))?;
    let left = our_links()?;
    ensure!(
        left == [again.nics[0].tap.clone()],
        "after reconcile: {left:?}"
    );
    let table = nat::list_table()?.context("table")?;
    ensure!(
        table.matches("masquerade").count() == 1,
        "duplicated rules:\n{table}"
    );
    let pa2 = rt.block_on(network.prepare(&a, &nads))?;
    ensure!(
        pa2.interfaces[0].ip_address.as_deref() == Some(ip_a.as_str()),
        "lease not kept across restart"
    );

    // 8. Teardown leaves nothing.
    rt.block_on(network.release("uid-a"))?;
    rt.block_on(network.teardown())?;
    ensure!(our_links()?.is_empty());
    ensure!(
        nat::list_table()?.is_none(),
        "our nftables table is still there"
    );
    ensure!(
        !ip(&["-o", "link", "show"])?.contains("mvbr0"),
        "bridge left behind"
    );
    Ok(())
}

// ---------------------------------------------------------------- secondary networks

#[test]
fn bridge_nad_static_ip_macvtap_and_interface_order() -> Result<()> {
    outer("s", "inner_secondary_networks")
}

#[test]
#[ignore = "the inner half of bridge_nad_static_ip_macvtap_and_interface_order"]
fn inner_secondary_networks() -> Result<()> {
    let Some(node) = inner_node()? else {
        return Ok(());
    };
    let rt = runtime()?;
    let dir = tempfile::tempdir()?;
    let network = rt.block_on(NodeNetwork::start(NodeNetworkConfig::new(dir.path())))?;

    // An L2 peer namespace; its veth's node end is plugged into the NAD's bridge, which
    // the first VMI creates (as the CNI bridge plugin does).
    let lan = Netns::create(format!("{node}lan"))?;
    veth_to(&lan, "lanport", "eth0")?;
    ip(&[
        "-n",
        &lan.name,
        "addr",
        "add",
        "192.0.2.1/24",
        "dev",
        "eth0",
    ])?;
    let nads: BTreeMap<_, _> = [
        nad(
            "lan",
            json!({"cniVersion": "0.3.1", "type": "bridge", "bridge": "br-lan",
                   "ipam": {"type": "static", "addresses": [{"address": "192.0.2.10/24", "gateway": "192.0.2.1"}]}}),
        )?,
        nad("direct", json!({"cniVersion": "0.3.1", "type": "macvtap", "master": "uplink0", "mode": "bridge"}))?,
    ]
    .into();

    // Two NICs, the bridge one first with a fixed MAC, then the default network.
    let v = vmi(
        "two",
        json!({"domain": {"devices": {"interfaces": [
                    {"name": "lan", "bridge": {}, "macAddress": "02:aa:bb:cc:dd:01"},
                    {"name": "default", "masquerade": {}}]}},
               "networks": [{"name": "default", "pod": {}},
                            {"name": "lan", "multus": {"networkName": "default/lan"}}]}),
    )?;
    let p = rt.block_on(network.prepare(&v, &nads))?;
    let names: Vec<_> = p
        .interfaces
        .iter()
        .map(|i| i.name.clone().unwrap_or_default())
        .collect();
    ensure!(names == ["lan", "default"], "status order {names:?}");
    ensure!(p.interfaces[0].mac.as_deref() == Some("02:aa:bb:cc:dd:01"));
    ensure!(p.interfaces[0].ip_address.as_deref() == Some("192.0.2.10"));
    ensure!(p.interfaces[1]
        .ip_address
        .as_deref()
        .is_some_and(|a| a.starts_with("10.0.2.")));
    ensure!(p.nics.len() == 2 && p.nics[0].mac == Some([2, 0xaa, 0xbb, 0xcc, 0xdd, 1]));
    ip(&["link", "set", "lanport", "master", "br-lan"])?;
    ensure!(ip(&["-o", "link", "show", &p.nics[0].tap])?.contains("master br-lan"));
    ensure!(ip(&["-o", "link", "show", &p.nics[1].tap])?.contains("master mvbr0"));

    // The guest's first NIC is the bridge one: the static address (cloud-init's role
    // here is the command line) and the peer reaches it over L2.
    let mut vm = Vm::boot("net guest.ip=192.0.2.10/24 poweroff", &p)?;
    let r = vm.wait_for("net.tcp.listen")?;
    ensure!(
        r.get("virtio.net.0")
            .is_some_and(|v| v.ends_with("mac=02-aa-bb-cc-dd-01")),
        "first NIC: {:?}",
        r.get("virtio.net.0")
    );
    lan.run_inside(|| stream_to_guest("192.0.2.10:7777".parse()?, 3, 64 << 10))?;
    ensure!(vm.finish()?.get("net.tcp") == Some("closed"));
    let neigh = ip(&["-n", &lan.name, "neigh", "show", "192.0.2.10"])?;
    ensure!(
        neigh.contains("02:aa:bb:cc:dd:01"),
        "peer learned {neigh:?}"
    );
    rt.block_on(network.release("uid-two"))?;
    ensure!(our_links()?.is_empty(), "left behind: {:?}", our_links()?);

    // A macvtap on the node NIC uplink0, whose other end is in the peer namespace.
    ip(&["link", "set", "lanport", "nomaster"])?;
    ip(&["link", "set", "lanport", "down"])?;
    ip(&["link", "set", "lanport", "name", "uplink0"])?;
    ip(&["link", "set", "uplink0", "up"])?;
    let m = vmi(
        "mv",
        json!({"domain": {"devices": {"interfaces": [{"name": "direct", "macvtap": {}}]}},
               "networks": [{"name": "direct", "multus": {"networkName": "direct"}}]}),
    )?;
    let pm = rt.block_on(network.prepare(&m, &nads))?;
    ensure!(
        pm.nics[0].tap.starts_with("/dev/tap"),
        "macvtap device {:?}",
        pm.nics[0].tap
    );
    let mut vm = Vm::boot("net guest.ip=192.0.2.20/24 poweroff", &pm)?;
    vm.wait_for("net.tcp.listen")?;
    lan.run_inside(|| stream_to_guest("192.0.2.20:7777".parse()?, 4, 64 << 10))?;
    ensure!(vm.finish()?.get("net.tcp") == Some("closed"));
    rt.block_on(network.release("uid-mv"))?;
    ensure!(our_links()?.is_empty(), "left behind: {:?}", our_links()?);
    rt.block_on(network.teardown())?;
    Ok(())
}

// ---------------------------------------------------------------- through the agent

#[test]
fn serve_with_network_runs_a_vmi_on_the_default_network() -> Result<()> {
    outer("a", "inner_serve_with_network")
}

/// `monovirt ARGS --server URL` with `input` on stdin: stdout, or the failure.
fn cli(server: &str, args: &[&str], input: &str) -> Result<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_monovirt"))
        .args(args)
        .args(["--server", server])
        .env_remove("MONOVIRT_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "monovirt {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
#[ignore = "the inner half of serve_with_network_runs_a_vmi_on_the_default_network"]
fn inner_serve_with_network() -> Result<()> {
    let Some(node) = inner_node()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let outside = Netns::create(format!("{node}out"))?;
    veth_to(&outside, "uplink0", "eth0")?;
    ip(&["addr", "add", "198.51.100.2/24", "dev", "uplink0"])?;
    ip(&[
        "-n",
        &outside.name,
        "addr",
        "add",
        "198.51.100.1/24",
        "dev",
        "eth0",
    ])?;

    let import = Command::new(env!("CARGO_BIN_EXE_monovirt"))
        .args(["image", "import", "--data-dir"])
        .arg(dir.path())
        .arg("test-guest:1")
        .arg(guest_elf()?)
        .args(["--dest", "/boot/vmlinux"])
        .output()?;
    ensure!(import.status.success(), "image import: {import:?}");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_monovirt"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--node-name",
            "net-node",
            "--network",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let serve_guard = scopeguard(serve.id());
    let mut line = String::new();
    BufReader::new(serve.stdout.take().context("stdout")?).read_line(&mut line)?;
    let server = format!(
        "http://{}",
        line.trim()
            .strip_prefix("listening on http://")
            .context("serve's first line")?
    );

    let vmi = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "domain": {
                "memory": {"guest": "128Mi"},
                "firmware": {"kernelBoot": {"kernelArgs": "console=ttyS0 nosmp net poweroff",
                    "container": {"image": "test-guest:1", "kernelPath": "/boot/vmlinux"}}},
                "devices": {"interfaces": [{"name": "default", "masquerade": {}, "ports": [{"port": 7777}]}]}},
            "networks": [{"name": "default", "pod": {}}]}
    });
    cli(&server, &["apply", "-f", "-"], &vmi.to_string())?;
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let v: serde_json::Value =
            serde_json::from_str(&cli(&server, &["get", "vmi", "web", "-o", "json"], "")?)?;
        if v["status"]["phase"] == "Running"
            && v["status"]["interfaces"][0]["ipAddress"].is_string()
        {
            break v["status"].clone();
        }
        ensure!(
            Instant::now() < deadline,
            "VMI not running with an address: {v}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    let iface = &status["interfaces"][0];
    ensure!(iface["name"] == "default", "{iface}");
    ensure!(
        iface["mac"]
            == Mac::generated("default", "web", "default")
                .to_string()
                .as_str(),
        "{iface}"
    );
    ensure!(
        iface["ipAddress"]
            .as_str()
            .is_some_and(|a| a.starts_with("10.0.2.")),
        "{iface}"
    );

    // The forwarded node port reaches the guest from outside; then the guest powers off
    // and the agent releases its tap and forward.
    outside.run_inside(|| stream_to_guest("198.51.100.2:7777".parse()?, 5, 64 << 10))?;
    let deadline = Instant::now() + WAIT;
    loop {
        let table = nat::list_table()?.unwrap_or_default();
        if our_links()?.is_empty() && !table.contains("dnat ip to") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not released: {:?}\n{table}",
            our_links()?
        );
        thread::sleep(Duration::from_millis(200));
    }
    drop(serve_guard);
    let _ = serve.wait();
    Ok(())
}

/// SIGTERMs a process on drop (also when the test fails).
struct Terminate(u32);

fn scopeguard(pid: u32) -> Terminate {
    Terminate(pid)
}

impl Drop for Terminate {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .status();
    }
}

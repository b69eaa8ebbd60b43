//! The real-Linux test tier: the unmodified Debian cloud kernel booted by `monovirt run`
//! on a real kvm_amd, inside an emulator.
//!
//! `/dev/kvm` on the development machines is PVM, which cannot run an unmodified Linux
//! kernel. So QEMU in TCG mode, with an EPYC CPU that has SVM and nested paging, boots the
//! Debian cloud kernel as L1; L1's init (`tests/linux/l1-init.sh`) loads that kernel's own
//! `irqbypass`, `kvm` and `kvm_amd` modules, which gives a real kvm_amd `/dev/kvm`, and then
//! runs the scenarios this test writes into `/etc/scenarios.sh`: each one a `monovirt run`
//! of the same Debian kernel as L2 with the project's initramfs (`tests/linux/l2-init.sh`).
//! Every scenario runs in one L1 boot, since L1 is emulated.
//!
//! The kernel, busybox and both initramfs bases come from
//! `scripts/fetch-guest-artifacts.sh` (cached under `target/guest-artifacts`); this test
//! adds monovirt itself (with its shared libraries and loader) and the L2 images to L1's
//! initramfs as a second cpio archive. The serial output goes to a log under
//! `target/tmp/linux-tier/`. This tier is functional proof, never a timing source.
//!
//! Without QEMU or the artifacts the tests print why and skip; with
//! `MONOVIRT_REQUIRE_KVM=1` they fail instead.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

mod l1_support;
use l1_support::{
    check_l1, copy_into, fail_if_any, fetch_guest_artifacts, find, hang_report, pack_l1_initrd,
    prepare_or_skip, repo, run_qemu, scenario_run, work_dir, Marker, QemuRun,
};

/// The tier's name in logs and its work folder under target/tmp.
const TIER: &str = "linux-tier";

/// A QEMU boot without scenarios must end within this (L1 takes 5 to 10 s).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// L1's init kills one `monovirt run` after this many seconds. An L2 boot with a quiet
/// console took 40 s, with the whole boot log 80 s (every byte is an exit), on a machine
/// whose two cores were loaded four times over; the serve scenario (daemon, cloud-init
/// disks, default network, DHCP, NAT, console) took 125 s at a load of 11. A test's QEMU
/// bound (120 s plus this per scenario, three at most) stays inside nextest's 15 minutes
/// for this binary (`.config/nextest.toml`), so a hang is reported by the test itself,
/// with the hung VMM's threads (l1-init.sh's `hang_report`).
const SCENARIO_TIMEOUT_SECS: u64 = 240;
/// The exit code of a `monovirt run` that L1's init killed (128 + SIGKILL).
const SCENARIO_TIMED_OUT_RC: i32 = 137;
/// How far below its configured memory an L2 guest's MemTotal may be: what the firmware
/// map reserves and what the kernel keeps for its image, page structs and early
/// allocations (about 42 MiB for this kernel under QEMU, at 384 and 512 MiB alike).
const MEMTOTAL_SLACK_MIB: u64 = 64;

/// The kernel command line of every L2 guest, before `quiet` (unless the scenario wants
/// the boot log) and its `monovirt.task=`.
const L2_CMDLINE: &str = "console=ttyS0 panic=-1";
/// Where L1's initramfs holds the L2 images.
const L2_BZIMAGE: &str = "/l2/vmlinuz";
const L2_VMLINUX: &str = "/l2/vmlinux";
const L2_INITRD: &str = "/l2/initrd.cpio.gz";

/// What L1 was given (`-smp`, `-m`).
const L1_CPUS: u32 = 2;
const L1_MEMORY_MIB: u64 = 2048;

/// The prepared artifacts of the tier.
struct Tier {
    bzimage: PathBuf,
    vmlinux: PathBuf,
    l2_initrd: PathBuf,
    l1_base: PathBuf,
}

impl Tier {
    /// Checks QEMU is there and runs the (cached, idempotent) fetch script.
    fn prepare() -> Result<Self> {
        let dir = fetch_guest_artifacts("qemu-system-x86_64", "qemu-system-x86", &[])?;
        let tier = Tier {
            bzimage: dir.join("vmlinuz"),
            vmlinux: dir.join("vmlinux"),
            l2_initrd: dir.join("l2-initrd.cpio.gz"),
            l1_base: dir.join("l1-base.cpio"),
        };
        for file in [&tier.bzimage, &tier.vmlinux, &tier.l2_initrd, &tier.l1_base] {
            ensure!(
                file.is_file(),
                "{} is missing after the fetch script",
                file.display()
            );
        }
        Ok(tier)
    }

    /// The tier, or `None` after printing why it cannot run (a panic under
    /// `MONOVIRT_REQUIRE_KVM=1`).
    fn or_skip(test: &str) -> Option<Self> {
        prepare_or_skip(test, "the real-Linux tier", Self::prepare)
    }
}

/// One `monovirt run` of an L2 guest inside L1.
struct Scenario {
    name: &'static str,
    kernel: &'static str,
    task: &'static str,
    cpus: u32,
    memory_mib: u64,
    /// Without `quiet`: the kernel's whole boot log goes to the console (slower: every
    /// byte is an exit) and the test checks it is there.
    boot_log: bool,
}

impl Scenario {
    /// The L2 kernel's command line.
    fn cmdline(&self) -> String {
        let quiet = if self.boot_log { "" } else { " quiet" };
        format!("{L2_CMDLINE}{quiet} monovirt.task={}", self.task)
    }

    /// Its line in `/etc/scenarios.sh`, a call of l1-init.sh's `scenario` function, or of
    /// its `devices_scenario` for the `devices` task, which needs the host side of every
    /// virtio device set up in L1.
    fn shell_line(&self) -> String {
        let function = if self.task == "devices" {
            "devices_scenario"
        } else {
            "scenario"
        };
        format!(
            "{function} {} --kernel {} --initrd {L2_INITRD} --cmdline \"{}\" --cpus {} --memory {}\n",
            self.name,
            self.kernel,
            self.cmdline(),
            self.cpus,
            self.memory_mib
        )
    }
}

/// Where L1's initramfs holds `tests/linux/l1-serve.sh`, and the serve scenarios' VM
/// manifests (`<name>.yaml`).
const L1_SERVE_SCRIPT: &str = "/usr/share/monovirt/l1-serve.sh";
const L1_SERVE_MANIFESTS: &str = "/usr/share/monovirt/vms";

/// The orchestrated path inside L1 (`tests/linux/l1-serve.sh`): `monovirt serve`, the L2
/// kernel and initramfs imported as an image, a VM POSTed over the API booting them by
/// kernelBoot, Running, its console read and written through the console subresource.
struct ServeScenario {
    name: &'static str,
    cpus: u32,
    memory_mib: u64,
    /// The L2 init's task; it must end in l2-init.sh's shell (`shell`, `cloudinit`), which
    /// answers the command l1-serve.sh types.
    task: &'static str,
    /// Volumes besides the kernelBoot image, each attached as a virtio disk of its name.
    volumes: Vec<serde_json::Value>,
    /// On the default network (`serve --network`): before its shell, the L2 guest takes
    /// a DHCP lease with udhcpc, pings its gateway and fetches pages with wget across the
    /// node's NAT from a server behind L1's uplink ([`check_serve_network`]).
    network: bool,
}

/// The HTTP server l1-serve.sh runs behind L1's uplink, and the uplink's own address
/// (what the server sees through the masquerade NAT).
const L1_OUTSIDE_SERVER: &str = "198.51.100.1";
const L1_UPLINK: &str = "198.51.100.2";
/// The default network's subnet and gateway (src/network/node.rs's defaults).
const DEFAULT_SUBNET_PREFIX: &str = "10.0.2.";
const DEFAULT_GATEWAY: &str = "10.0.2.1";
/// Where L1's initramfs holds the nft tool (on L1's PATH; monovirt runs it for its NAT).
const L1_NFT: &str = "/usr/bin/nft";

impl ServeScenario {
    /// The L2 kernel's command line.
    fn cmdline(&self) -> String {
        let http = if self.network {
            format!(" monovirt.http={L1_OUTSIDE_SERVER}")
        } else {
            String::new()
        };
        format!("{L2_CMDLINE} quiet monovirt.task={}{http}", self.task)
    }

    /// The VirtualMachine l1-serve.sh applies, as YAML.
    fn manifest(&self) -> Result<String> {
        let disks: Vec<serde_json::Value> = self
            .volumes
            .iter()
            .map(|v| serde_json::json!({"name": v["name"], "disk": {"bus": "virtio"}}))
            .collect();
        let mut vm = serde_json::json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": self.name, "namespace": "default"},
            "spec": {"runStrategy": "Always", "template": {"spec": {
                "terminationGracePeriodSeconds": 5,
                "domain": {
                    "cpu": {"cores": self.cpus},
                    "memory": {"guest": format!("{}Mi", self.memory_mib)},
                    "firmware": {"kernelBoot": {
                        "kernelArgs": self.cmdline(),
                        "container": {"image": "monovirt/debian-l2:1",
                            "kernelPath": "/boot/vmlinuz",
                            "initrdPath": "/boot/initrd.cpio.gz"}}},
                    "devices": {"autoattachPodInterface": false, "disks": disks}},
                "volumes": self.volumes}}},
        });
        if self.network {
            let spec = &mut vm["spec"]["template"]["spec"];
            spec["domain"]["devices"] = serde_json::json!({
                "disks": spec["domain"]["devices"]["disks"].take(),
                "interfaces": [{"name": "default", "masquerade": {}}]});
            spec["networks"] = serde_json::json!([{"name": "default", "pod": {}}]);
        }
        serde_yaml_ng::to_string(&vm).context("cannot write the VM manifest as YAML")
    }

    /// Its lines in `/etc/scenarios.sh`: framed like l1-init.sh's `scenario` function
    /// frames a `monovirt run`, so [`scenario_run`] slices it the same way.
    fn shell_line(&self) -> String {
        format!(
            r#"echo "MONOVIRT-L1-SCENARIO-BEGIN name={name}"
start=$(cut -d' ' -f1 /proc/uptime)
timeout -s KILL "$SCENARIO_TIMEOUT" sh {L1_SERVE_SCRIPT} {name} {L1_SERVE_MANIFESTS}/{name}.yaml {network} </dev/null
rc=$?
end=$(cut -d' ' -f1 /proc/uptime)
printf '\nMONOVIRT-L1-SCENARIO-END name=%s rc=%s start=%s end=%s\n' {name} "$rc" "$start" "$end"
"#,
            name = self.name,
            network = if self.network { "network" } else { "" },
        )
    }
}

/// What the serve scenario's cloud-init volumes carry (issue 6): a cloudInitNoCloud
/// volume (userData, networkData as netplan v2) and a cloudInitConfigDrive volume
/// (userDataBase64, networkData as OpenStack network_data.json). The L2 guest mounts both
/// disks and must print exactly this back.
const NOCLOUD_USER_DATA: &str =
    "#cloud-config\nhostname: l2-nocloud\nruncmd:\n- [sh, -c, 'echo nocloud user-data']\n";
const NOCLOUD_NETWORK_DATA: &str = concat!(
    "version: 2\n",
    "ethernets:\n",
    "  enp0s3:\n",
    "    addresses:\n",
    "    - 10.0.78.2/24\n",
    "    gateway4: 10.0.78.1\n",
);
const CONFIGDRIVE_USER_DATA: &str = "#cloud-config\nhostname: l2-configdrive\n";
const CONFIGDRIVE_NETWORK_DATA: &str = r#"{"links": [{"id": "eth0", "type": "phy", "ethernet_mac_address": "52:54:00:4d:56:03"}], "networks": [{"id": "net0", "link": "eth0", "type": "ipv4", "ip_address": "10.0.79.2", "netmask": "255.255.255.0"}]}"#;

/// The two cloud-init volumes of the serve scenario, carrying the data above.
fn cloud_init_volumes() -> Vec<serde_json::Value> {
    use base64::Engine;
    vec![
        serde_json::json!({"name": "cloudinitdisk", "cloudInitNoCloud": {
            "userData": NOCLOUD_USER_DATA, "networkData": NOCLOUD_NETWORK_DATA}}),
        serde_json::json!({"name": "configdrive", "cloudInitConfigDrive": {
            "userDataBase64": base64::engine::general_purpose::STANDARD
                .encode(CONFIGDRIVE_USER_DATA),
            "networkData": CONFIGDRIVE_NETWORK_DATA}}),
    ]
}

/// A file l2-init.sh's `cloudinit` task printed: the size and sha256 its FILE line gives,
/// and the lines between its BEGIN and END lines.
#[derive(Debug)]
struct PrintedFile {
    bytes: Option<u64>,
    sha256: Option<String>,
    lines: Vec<String>,
}

impl PrintedFile {
    /// File `name` of data source `source` (`nocloud`, `configdrive`) in `console`, or
    /// `None` when it was not printed whole.
    fn find(console: &[&str], source: &str, name: &str) -> Option<Self> {
        let is = |line: &str, marker: &str| {
            Marker::parse(line).is_some_and(|m| {
                m.name == marker
                    && m.field("source") == Some(source)
                    && m.field("name") == Some(name)
            })
        };
        let file = console
            .iter()
            .find_map(|l| Marker::parse(l).filter(|_| is(l, "MONOVIRT-L2-CLOUDINIT-FILE")))?;
        let begin = console
            .iter()
            .position(|l| is(l, "MONOVIRT-L2-CLOUDINIT-BEGIN"))?;
        let len = console[begin + 1..]
            .iter()
            .position(|l| is(l, "MONOVIRT-L2-CLOUDINIT-END"))?;
        Some(Self {
            bytes: file.field("bytes").and_then(|b| b.parse().ok()),
            sha256: file.field("sha256").map(str::to_string),
            lines: console[begin + 1..begin + 1 + len]
                .iter()
                .map(|l| l.to_string())
                .collect(),
        })
    }

    /// Whether this is exactly `want`: size, hash and the text itself.
    fn is(&self, want: &str) -> bool {
        let sha = monovirt::storage::checksum::hex(&<sha2::Sha256 as sha2::Digest>::digest(
            want.as_bytes(),
        ));
        self.bytes == Some(want.len() as u64)
            && self.sha256.as_deref() == Some(sha.as_str())
            && self.lines.join("\n") == want.strip_suffix('\n').unwrap_or(want)
    }
}

/// Checks the L2 `cloudinit` task's report on `console`: both cloud-init disks found by
/// label and mounted as vfat with the kernel's own modules, and every file as the VM's
/// spec said (user and network data byte for byte; the meta-data naming the VMI `uid`
/// and the VM `vm`).
fn check_cloudinit(name: &str, console: &[&str], uid: &str, failures: &mut Vec<String>) {
    let markers: Vec<Marker> = console.iter().filter_map(|l| Marker::parse(l)).collect();
    match find(&markers, "MONOVIRT-L2-MODULES") {
        Some(m) if m.field("failed") == Some("") => {}
        other => failures.push(format!(
            "{name}: L2 could not load its modules (failed {:?})",
            other.and_then(|m| m.field("failed"))
        )),
    }
    for (source, label) in [("nocloud", "cidata"), ("configdrive", "config-2")] {
        let mounted = markers.iter().find(|m| {
            m.name == "MONOVIRT-L2-CLOUDINIT-MOUNTED" && m.field("source") == Some(source)
        });
        match mounted {
            None => failures.push(format!(
                "{name}: L2 did not mount the disk labelled {label} (no MOUNTED line)"
            )),
            Some(m) if m.field("label") != Some(label) || m.field("fstype") != Some("vfat") => {
                failures.push(format!(
                    "{name}: the {source} disk mounted as {:?}",
                    m.fields
                ))
            }
            Some(_) => {}
        }
    }
    let exact = [
        ("nocloud", "user-data", NOCLOUD_USER_DATA),
        ("nocloud", "network-config", NOCLOUD_NETWORK_DATA),
        (
            "configdrive",
            "openstack/latest/user_data",
            CONFIGDRIVE_USER_DATA,
        ),
        (
            "configdrive",
            "openstack/latest/network_data.json",
            CONFIGDRIVE_NETWORK_DATA,
        ),
    ];
    for (source, file, want) in exact {
        match PrintedFile::find(console, source, file) {
            None => failures.push(format!("{name}: L2 did not print {source} {file}")),
            Some(got) if !got.is(want) => failures.push(format!(
                "{name}: {source} {file} in L2 is {got:?}, the VM's spec says {want:?}"
            )),
            Some(_) => {}
        }
    }
    // The meta-data is monovirt's: the instance is the VMI (its uid), the host name the VM's.
    match PrintedFile::find(console, "nocloud", "meta-data") {
        Some(got)
            if got.lines.contains(&format!("instance-id: {uid}"))
                && got.lines.contains(&format!("local-hostname: {name}")) => {}
        other => failures.push(format!(
            "{name}: the NoCloud meta-data in L2 is {other:?}, expected instance-id {uid} \
             and local-hostname {name}"
        )),
    }
    let meta = PrintedFile::find(console, "configdrive", "openstack/latest/meta_data.json");
    let parsed = meta
        .as_ref()
        .and_then(|m| serde_json::from_str::<serde_json::Value>(&m.lines.join("\n")).ok());
    match parsed {
        Some(v) if v["uuid"] == uid && v["hostname"] == name => {}
        _ => failures.push(format!(
            "{name}: the ConfigDrive meta_data.json in L2 is {meta:?}, expected uuid {uid} \
             and hostname {name}"
        )),
    }
    if find(&markers, "MONOVIRT-L2-CLOUDINIT-DONE").is_none() {
        failures.push(format!("{name}: L2's cloudinit task did not finish"));
    }
}

/// Checks a `monovirt serve` scenario: every step's marker, the VMI on L1's node, the L2
/// init's marker and the shell's answer on the console, a clean daemon exit.
fn check_serve(scenario: &ServeScenario, serial: &str, failures: &mut Vec<String>) {
    let name = scenario.name;
    let Some(run) = scenario_run(serial, name) else {
        failures.push(format!("{name}: L1 never started this scenario"));
        return;
    };
    eprintln!(
        "linux tier: scenario {name}: rc {:?}, {} s on L1's clock",
        run.rc,
        run.seconds.map_or("?".into(), |s| format!("{s:.1}"))
    );
    if let Some(m) = find(&run.markers, "MONOVIRT-L1-SERVE-FAILED") {
        failures.push(format!("{name}: failed at step {:?}", m.field("step")));
    }
    for step in [
        "MONOVIRT-L1-SERVE-LISTENING",
        "MONOVIRT-L1-SERVE-POSTED",
        "MONOVIRT-L1-SERVE-DELETED",
    ] {
        if find(&run.markers, step).is_none() {
            failures.push(format!("{name}: no {step}"));
        }
    }
    let running = find(&run.markers, "MONOVIRT-L1-SERVE-RUNNING");
    match running {
        None => failures.push(format!("{name}: the VMI never ran")),
        Some(m) if m.field("node") != Some("l1") => failures.push(format!(
            "{name}: the VMI ran on {:?}, not L1's node",
            m.field("node")
        )),
        Some(_) => {}
    }
    let console: Vec<&str> = run
        .text
        .iter()
        .copied()
        .skip_while(|l| !l.contains("MONOVIRT-L1-SERVE-CONSOLE-BEGIN"))
        .take_while(|l| !l.contains("MONOVIRT-L1-SERVE-CONSOLE-END"))
        .collect();
    match console
        .iter()
        .filter_map(|l| Marker::parse(l))
        .find(|m| m.name == "MONOVIRT-L2-INIT-OK")
    {
        None => failures.push(format!(
            "{name}: the console subresource did not show the L2 init's marker"
        )),
        Some(m) if m.field("task") != Some(scenario.task) => failures.push(format!(
            "{name}: L2 runs task {:?}, not {}",
            m.field("task"),
            scenario.task
        )),
        Some(_) => {}
    }
    if scenario.task == "cloudinit" {
        match running
            .and_then(|m| m.field("uid"))
            .filter(|u| !u.is_empty())
        {
            Some(uid) => check_cloudinit(name, &console, uid, failures),
            None => failures.push(format!("{name}: L1 did not report the VMI's uid")),
        }
    }
    if scenario.network {
        let l2: Vec<Marker> = console.iter().filter_map(|l| Marker::parse(l)).collect();
        check_serve_network(name, &run.markers, &l2, failures);
    }
    // The typed line echoes as `$((6 * 7))`; only the shell's answer says 42.
    if !console.iter().any(|l| l.contains("MONOVIRT-L2-ECHO-42")) {
        failures.push(format!(
            "{name}: the L2 shell's answer did not come back through the console"
        ));
    }
    match find(&run.markers, "MONOVIRT-L1-SERVE-STOPPED") {
        Some(m) if m.field("rc") == Some("0") => {}
        other => failures.push(format!(
            "{name}: monovirt serve did not stop cleanly on SIGTERM ({:?})",
            other.and_then(|m| m.field("rc"))
        )),
    }
    match run.rc {
        Some(0) => {}
        Some(SCENARIO_TIMED_OUT_RC) => failures.push(format!(
            "{name}: did not finish within {SCENARIO_TIMEOUT_SECS} s and was killed; {}",
            hang_report(&run)
        )),
        other => failures.push(format!("{name}: ended with rc {other:?}")),
    }
}

/// Checks the default network of a serve scenario, from L1's markers and the L2 guest's
/// (on its console): the lease udhcpc got is in the default subnet, is the address the
/// VMI's status shows and names the bridge as gateway; the gateway answers pings; the
/// outside server's page (this run's token) came back through the NAT, and the server saw
/// the connection from L1's uplink address; deleting the VM released its tap.
fn check_serve_network(name: &str, l1: &[Marker], l2: &[Marker], failures: &mut Vec<String>) {
    let mut expect = |what: &str, got: Option<&str>, want: &str| {
        if got != Some(want) {
            failures.push(format!("{name}: {what} is {got:?}, expected {want:?}"));
        }
    };
    let lease = find(l2, "MONOVIRT-L2-NET-LEASE");
    expect("udhcpc's exit code", lease.and_then(|m| m.field("rc")), "0");
    expect(
        "the lease's mask",
        lease.and_then(|m| m.field("mask")),
        "24",
    );
    expect(
        "the lease's router",
        lease.and_then(|m| m.field("router")),
        DEFAULT_GATEWAY,
    );
    let status_ip = find(l1, "MONOVIRT-L1-SERVE-RUNNING").and_then(|m| m.field("ip"));
    expect(
        "the address udhcpc leased (the VMI status's)",
        lease.and_then(|m| m.field("ip")),
        status_ip.unwrap_or("(none in the VMI's status)"),
    );
    let token = find(l1, "MONOVIRT-L1-SERVE-NET-OUTSIDE").and_then(|m| m.field("token"));
    let wget = find(l2, "MONOVIRT-L2-NET-WGET");
    expect(
        "the page wget fetched",
        wget.and_then(|m| m.field("page")),
        &format!("monovirt-page-{}", token.unwrap_or("(no token from L1)")),
    );
    expect(
        "the client address the outside server saw",
        wget.and_then(|m| m.field("remote")),
        L1_UPLINK,
    );
    expect(
        "the VMI's taps left after its deletion",
        find(l1, "MONOVIRT-L1-SERVE-NET-RELEASED").and_then(|m| m.field("taps")),
        "0",
    );
    if !status_ip.is_some_and(|ip| ip.starts_with(DEFAULT_SUBNET_PREFIX)) {
        failures.push(format!(
            "{name}: the VMI's address {status_ip:?} is not in {DEFAULT_SUBNET_PREFIX}0/24"
        ));
    }
    match find(l2, "MONOVIRT-L2-NET-PING") {
        Some(m) if m.field("received").is_some_and(|n| n != "0") => {}
        other => failures.push(format!(
            "{name}: the gateway did not answer pings ({:?})",
            other.and_then(|m| m.field("received"))
        )),
    }
    if let Some(m) = find(l2, "MONOVIRT-L2-NET-FAILED") {
        failures.push(format!(
            "{name}: L2's network checks failed: {:?}",
            m.field("reason")
        ));
    }
    if find(l2, "MONOVIRT-L2-NET-DONE").is_none() {
        failures.push(format!("{name}: L2's network checks did not finish"));
    }
}

/// Where `tool` is on this host's PATH (or in /usr/sbin and /sbin, which a user's PATH
/// may lack).
fn find_tool(tool: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .with_context(|| format!("{tool} not found (scripts/setup.sh installs nftables)"))
}

/// The shared libraries and loader a dynamic executable needs, as `ldd` resolves them.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static executable: ldd says so and fails, and nothing is needed.
        ensure!(
            text.contains("not a dynamic executable")
                || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable"),
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", the loader as
        // "/lib64/ld-linux-x86-64.so.2 (0x...)", and the vDSO with no path at all.
        let path = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                ensure!(
                    !target.starts_with("not found"),
                    "ldd: {} not found",
                    name.trim()
                );
                target.split_whitespace().next().unwrap_or_default()
            }
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    ensure!(!libs.is_empty(), "ldd found no libraries in:\n{text}");
    Ok(libs)
}

/// Builds L1's initramfs into `work`: the fetch script's base archive (busybox, the kvm
/// modules, l1-init.sh as /init) followed by a second archive with monovirt, its shared
/// libraries and loader, the L2 images and the scenarios. The kernel unpacks both.
fn build_l1_initrd(tier: &Tier, work: &Path, scenarios: &[Scenario]) -> Result<PathBuf> {
    build_l1_initrd_with(tier, work, scenarios, &[])
}

/// [`build_l1_initrd`] with the `monovirt serve` scenarios `served` after the others.
fn build_l1_initrd_with(
    tier: &Tier,
    work: &Path,
    scenarios: &[Scenario],
    served: &[ServeScenario],
) -> Result<PathBuf> {
    let stage = work.join("l1-overlay");
    fs::create_dir_all(&stage)?;

    let monovirt = Path::new(env!("CARGO_BIN_EXE_monovirt"));
    copy_into(&stage, monovirt, "/usr/bin/monovirt")?;
    // The debug build's symbols are most of its size; L1 unpacks every byte under TCG.
    let strip = Command::new("strip")
        .arg("--strip-debug")
        .arg(stage.join("usr/bin/monovirt"))
        .status()
        .context("cannot run strip (package binutils)")?;
    ensure!(strip.success(), "strip of the monovirt binary failed");
    for lib in shared_libraries(monovirt)? {
        copy_into(&stage, &lib, &lib.to_string_lossy())?;
    }

    let mut script = None;
    if !scenarios.is_empty() || !served.is_empty() {
        let mut lines = format!("SCENARIO_TIMEOUT={SCENARIO_TIMEOUT_SECS}\n");
        copy_into(&stage, &tier.bzimage, L2_BZIMAGE)?;
        copy_into(&stage, &tier.vmlinux, L2_VMLINUX)?;
        copy_into(&stage, &tier.l2_initrd, L2_INITRD)?;
        for scenario in scenarios {
            lines.push_str(&scenario.shell_line());
        }
        if !served.is_empty() {
            copy_into(
                &stage,
                &repo().join("tests/linux/l1-serve.sh"),
                L1_SERVE_SCRIPT,
            )?;
        }
        if served.iter().any(|s| s.network) {
            // This host's nft tool with its libraries: monovirt writes its NAT table with it.
            let nft = find_tool("nft")?;
            copy_into(&stage, &nft, L1_NFT)?;
            for lib in shared_libraries(&nft)? {
                copy_into(&stage, &lib, &lib.to_string_lossy())?;
            }
        }
        for scenario in served {
            let manifest = stage
                .join(L1_SERVE_MANIFESTS.trim_start_matches('/'))
                .join(format!("{}.yaml", scenario.name));
            fs::create_dir_all(manifest.parent().expect("a manifest has a folder"))?;
            fs::write(&manifest, scenario.manifest()?)?;
            lines.push_str(&scenario.shell_line());
        }
        script = Some(lines);
    }
    pack_l1_initrd(work, &stage, script.as_deref(), &tier.l1_base)
}

/// A QEMU boot of a Debian kernel under TCG.
struct Boot<'a> {
    kernel: &'a Path,
    initrd: &'a Path,
    cmdline: &'a str,
    cpus: u32,
    memory_mib: u64,
    /// QEMU is killed after this.
    timeout: Duration,
}

/// Boots L1 with `initrd`: an EPYC CPU with SVM and nested paging, so that kvm_amd loads.
/// It gets the time its init may spend on `scenarios` scenarios, and more.
fn boot_l1(tier: &Tier, work: &Path, initrd: &Path, scenarios: usize) -> Result<QemuRun> {
    let scenario_time = Duration::from_secs(SCENARIO_TIMEOUT_SECS) * scenarios as u32;
    let boot = Boot {
        kernel: &tier.bzimage,
        initrd,
        cmdline: "console=ttyS0 quiet panic=-1",
        cpus: L1_CPUS,
        memory_mib: L1_MEMORY_MIB,
        timeout: BOOT_TIMEOUT + scenario_time,
    };
    boot_qemu(&boot, work, "serial.log")
}

/// Runs QEMU (TCG) bounded by its timeout; the serial console goes to `work/log_name`,
/// QEMU's own messages to `work/log_name.qemu`.
fn boot_qemu(boot: &Boot, work: &Path, log_name: &str) -> Result<QemuRun> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-cpu", "EPYC-v3,+svm,+npt"])
        .args([
            "-smp",
            &boot.cpus.to_string(),
            "-m",
            &boot.memory_mib.to_string(),
        ])
        .args(["-nographic", "-nic", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(boot.kernel)
        .arg("-initrd")
        .arg(boot.initrd)
        .args(["-append", boot.cmdline]);
    run_qemu(TIER, qemu, work, log_name, boot.timeout)
}

/// Checks what every L1 boot must show: its init ran on every CPU, kvm_amd gave a
/// `/dev/kvm` with nested paging, and the monovirt binary runs there.
fn check_x86_l1(run: &QemuRun, markers: &[Marker], failures: &mut Vec<String>) {
    check_l1(run, markers, "kvm_amd", failures);
    if let Some(m) = find(markers, "MONOVIRT-L1-INIT-OK") {
        if m.field("cpus") != Some(&L1_CPUS.to_string()) {
            failures.push(format!(
                "L1 sees {:?} CPUs, expected {L1_CPUS}",
                m.field("cpus")
            ));
        }
    }
    if let Some(m) = find(markers, "MONOVIRT-L1-KVM-OK") {
        if m.field("npt") != Some("Y") {
            failures.push(format!(
                "kvm_amd in L1 runs without nested paging (npt={:?})",
                m.field("npt")
            ));
        }
    }
}

/// L1 (the Debian cloud kernel under TCG) loads its own kvm modules, has a kvm_amd
/// `/dev/kvm` with nested paging, and runs the monovirt binary with its libraries.
#[test]
fn l1_host_has_kvm_amd_and_runs_monovirt() -> Result<()> {
    const TEST: &str = "l1_host_has_kvm_amd_and_runs_monovirt";
    let Some(tier) = Tier::or_skip(TEST) else {
        return Ok(());
    };
    let work = work_dir(TIER, TEST)?;
    let initrd = build_l1_initrd(&tier, &work, &[])?;
    let run = boot_l1(&tier, &work, &initrd, 0)?;
    let markers = run.markers();
    let mut failures = Vec::new();
    check_x86_l1(&run, &markers, &mut failures);
    fail_if_any(TEST, &run, &failures);
    Ok(())
}

/// Checks an L2 guest's own report: it reached its init with the right task, saw every
/// vCPU and its memory, and did what the task says.
fn check_l2(scenario: &Scenario, text: &[&str], failures: &mut Vec<String>) {
    let name = scenario.name;
    let markers: Vec<Marker> = text.iter().filter_map(|line| Marker::parse(line)).collect();
    let markers = markers.as_slice();
    if scenario.boot_log {
        // The kernel's banner, and its echo of the command line the VMM passed.
        let want = format!("Command line: {}", scenario.cmdline());
        if !text.iter().any(|line| line.contains("Linux version")) {
            failures.push(format!(
                "{name}: no kernel boot log (no \"Linux version\" line)"
            ));
        }
        if !text.iter().any(|line| line.contains(&want)) {
            failures.push(format!("{name}: the kernel never echoed \"{want}\""));
        }
    }
    match find(markers, "MONOVIRT-L2-INIT-OK") {
        None => failures.push(format!(
            "{name}: the L2 kernel ({}) never reached its init marker",
            scenario.kernel
        )),
        Some(m) if m.field("task") != Some(scenario.task) => {
            failures.push(format!("{name}: L2 init got task {:?}", m.field("task")))
        }
        Some(_) => {}
    }
    if find(markers, "MONOVIRT-L2-RESULT").is_some()
        && find(markers, "MONOVIRT-L2-TIMER-OK").is_none()
    {
        let clockevent = find(markers, "MONOVIRT-L2-RESULT").and_then(|m| m.field("clockevent"));
        failures.push(format!(
            "{name}: L2 never woke from a 0.1 s sleep (no MONOVIRT-L2-TIMER-OK; its clock \
             event device is {clockevent:?})"
        ));
    }
    match find(markers, "MONOVIRT-L2-RESULT") {
        None => failures.push(format!("{name}: no MONOVIRT-L2-RESULT line")),
        Some(m) => {
            let want_online = match scenario.cpus {
                1 => "0".to_string(),
                n => format!("0-{}", n - 1),
            };
            if m.field("cpus") != Some(&scenario.cpus.to_string())
                || m.field("online") != Some(want_online.as_str())
            {
                failures.push(format!(
                    "{name}: L2 sees cpus={:?} online={:?}, expected {} vCPUs ({want_online})",
                    m.field("cpus"),
                    m.field("online"),
                    scenario.cpus
                ));
            }
            // MemTotal is the RAM the kernel manages: the configured memory less what the
            // firmware map reserves and what the kernel keeps for its image and page tables.
            let configured_kb = scenario.memory_mib * 1024;
            let lowest_kb = configured_kb.saturating_sub(MEMTOTAL_SLACK_MIB * 1024);
            match m.field("memtotal_kb").and_then(|v| v.parse::<u64>().ok()) {
                Some(kb) if (lowest_kb..=configured_kb).contains(&kb) => {}
                other => failures.push(format!(
                    "{name}: L2 MemTotal {other:?} kB, expected {lowest_kb}..={configured_kb} \
                     for {} MiB",
                    scenario.memory_mib
                )),
            }
        }
    }
    let ending = match scenario.task {
        "poweroff" => "MONOVIRT-L2-POWEROFF",
        "reboot" => "MONOVIRT-L2-REBOOT",
        "modules" | "devices" => {
            match find(markers, "MONOVIRT-L2-MODULES") {
                None => failures.push(format!("{name}: no MONOVIRT-L2-MODULES line")),
                Some(m) if m.field("failed") != Some("") || m.field("loaded") == Some("0") => {
                    failures.push(format!(
                        "{name}: L2 loaded {:?} modules, failed {:?}",
                        m.field("loaded"),
                        m.field("failed")
                    ))
                }
                Some(_) => {}
            }
            "MONOVIRT-L2-POWEROFF"
        }
        task => {
            failures.push(format!("{name}: the test has no check for task {task}"));
            return;
        }
    };
    if find(markers, ending).is_none() {
        failures.push(format!("{name}: L2 never reached {ending}"));
    }
}

/// What the `devices` scenario's host side (l1-init.sh's `devices_scenario`) gave the
/// guest, as l2-init.sh's `devices` task expects it.
const DEV_RW_SERIAL: &str = "mvdisk0rw";
const DEV_RO_SERIAL: &str = "mvdisk1ro";
/// 4 MiB and 1 MiB images, in 512-byte sectors.
const DEV_RW_SECTORS: &str = "8192";
const DEV_RO_SECTORS: &str = "2048";
const DEV_MAC: &str = "52:54:00:4d:56:02";
/// Each TCP transfer, and each vsock echo, in bytes.
const DEV_TCP_BYTES: &str = "2097152";
const DEV_VSOCK_BYTES: &str = "1048576";

/// Checks a field has the value it must have.
fn expect(failures: &mut Vec<String>, what: &str, got: Option<&str>, want: &str) {
    if got != Some(want) {
        failures.push(format!("devices: {what} is {got:?}, expected {want:?}"));
    }
}

/// Compares two fields that must be equal and present, naming both sides.
fn same(
    failures: &mut Vec<String>,
    what: &str,
    (left_name, left): (&str, Option<&str>),
    (right_name, right): (&str, Option<&str>),
) {
    match (left, right) {
        (Some(l), Some(r)) if l == r && !l.is_empty() => {}
        _ => failures.push(format!(
            "{what}: {left_name} is {left:?} but {right_name} is {right:?}"
        )),
    }
}

/// Checks the `devices` scenario: the guest's own report (`l2`, its markers) against
/// what L1's host side saw (`l1`, every marker of the boot): each virtio driver bound, the
/// disks' data, serials, read-only state and discard, ping and TCP both ways over the
/// tap, the hardware RNG, hvc0's output in the host's file, and a vsock echo each way.
fn check_devices(l2: &[Marker], l1: &[Marker], failures: &mut Vec<String>) {
    let l2_field = |marker: &str, key: &str| find(l2, marker).and_then(|m| m.field(key));
    let l1_field = |marker: &str, key: &str| find(l1, marker).and_then(|m| m.field(key));

    // Each virtio device bound to the Linux driver of its type (virtio device IDs).
    let bound = l2_field("MONOVIRT-L2-VIRTIO", "bound").unwrap_or_default();
    let mut bound: Vec<&str> = bound.split(',').filter(|b| !b.is_empty()).collect();
    bound.sort_unstable();
    let mut want_bound = vec![
        "1:virtio_net",
        "2:virtio_blk",
        "2:virtio_blk",
        "3:virtio_console",
        "4:virtio_rng",
        "19:vmw_vsock_virtio_transport",
    ];
    want_bound.sort_unstable();
    let bound_ok = want_bound.iter().all(|want| {
        bound.iter().filter(|b| *b == want).count()
            >= want_bound.iter().filter(|w| *w == want).count()
    });
    if !bound_ok {
        failures.push(format!(
            "devices: virtio drivers bound {bound:?}, expected at least {want_bound:?}"
        ));
    }

    // The disks, told apart by their serials.
    let disk = |serial: &str| {
        l2.iter()
            .find(|m| m.name == "MONOVIRT-L2-DISK" && m.field("serial") == Some(serial))
    };
    match disk(DEV_RW_SERIAL) {
        None => failures.push(format!("devices: no disk with serial {DEV_RW_SERIAL}")),
        Some(d) => {
            expect(failures, "the read-write disk's ro", d.field("ro"), "0");
            expect(
                failures,
                "the read-write disk's sectors",
                d.field("sectors"),
                DEV_RW_SECTORS,
            );
            for limit in ["discard_max", "write_zeroes_max"] {
                if d.field(limit)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    == 0
                {
                    failures.push(format!(
                        "devices: the read-write disk's {limit} is {:?}: the feature was not \
                         negotiated",
                        d.field(limit)
                    ));
                }
            }
        }
    }
    match disk(DEV_RO_SERIAL) {
        None => failures.push(format!("devices: no disk with serial {DEV_RO_SERIAL}")),
        Some(d) => {
            expect(failures, "the read-only disk's ro", d.field("ro"), "1");
            expect(
                failures,
                "the read-only disk's sectors",
                d.field("sectors"),
                DEV_RO_SECTORS,
            );
        }
    }
    let blk = |key| l2_field("MONOVIRT-L2-BLK", key);
    same(
        failures,
        "devices: the data L1 put on vda",
        ("the guest's read", blk("read_sha")),
        ("L1's", l1_field("MONOVIRT-L1-DEV-DISKS", "vda_first_sha")),
    );
    expect(failures, "the guest's write to vda", blk("write"), "ok");
    same(
        failures,
        "devices: the MiB the guest wrote",
        ("its read-back from the device", blk("readback_sha")),
        ("what it wrote", blk("written_sha")),
    );
    same(
        failures,
        "devices: the MiB the guest wrote",
        (
            "the image file in L1",
            l1_field("MONOVIRT-L1-DEV-DISKS-AFTER", "vda_written_sha"),
        ),
        ("what it wrote", blk("written_sha")),
    );
    same(
        failures,
        "devices: vda's first MiB",
        (
            "after the run",
            l1_field("MONOVIRT-L1-DEV-DISKS-AFTER", "vda_first_sha"),
        ),
        ("before", l1_field("MONOVIRT-L1-DEV-DISKS", "vda_first_sha")),
    );
    expect(failures, "the guest's discard on vda", blk("discard"), "ok");
    let zeros = l1_field("MONOVIRT-L1-DEV-DISKS-AFTER", "zero_mib_sha");
    same(
        failures,
        "devices: the MiB the guest discarded (a hole reads as zeros)",
        ("its read-back from the device", blk("discarded_sha")),
        ("a MiB of zeros", zeros),
    );
    same(
        failures,
        "devices: the MiB the guest discarded (a hole reads as zeros)",
        (
            "the image file in L1",
            l1_field("MONOVIRT-L1-DEV-DISKS-AFTER", "vda_discarded_sha"),
        ),
        ("a MiB of zeros", zeros),
    );
    expect(
        failures,
        "a write to the read-only disk",
        l2_field("MONOVIRT-L2-BLK-RO", "write"),
        "refused",
    );
    same(
        failures,
        "devices: the read-only disk",
        ("the guest's read", l2_field("MONOVIRT-L2-BLK-RO", "sha")),
        ("L1's", l1_field("MONOVIRT-L1-DEV-DISKS", "vdb_sha")),
    );
    same(
        failures,
        "devices: the read-only disk's image",
        (
            "after the run",
            l1_field("MONOVIRT-L1-DEV-DISKS-AFTER", "vdb_sha"),
        ),
        ("before", l1_field("MONOVIRT-L1-DEV-DISKS", "vdb_sha")),
    );

    // The NIC: its MAC and link, ping (ARP first) and a TCP transfer each way.
    if find(l1, "MONOVIRT-L1-DEV-TAP-FAILED").is_some() {
        failures.push("devices: L1 could not set up the tap".into());
    }
    let net = |key| l2_field("MONOVIRT-L2-NET", key);
    expect(failures, "the NIC's MAC", net("mac"), DEV_MAC);
    expect(failures, "the NIC's carrier", net("carrier"), "1");
    expect(
        failures,
        "ping replies from L1 (of 3)",
        net("ping_received"),
        "3",
    );
    expect(failures, "the upload to L1", net("upload"), "ok");
    same(
        failures,
        "devices: the TCP upload",
        (
            "L1's copy",
            l1_field("MONOVIRT-L1-DEV-NET-AFTER", "upload_sha"),
        ),
        ("the guest's", net("upload_sha")),
    );
    expect(
        failures,
        "the upload's size in L1",
        l1_field("MONOVIRT-L1-DEV-NET-AFTER", "upload_bytes"),
        DEV_TCP_BYTES,
    );
    expect(failures, "the download from L1", net("download"), "ok");
    expect(
        failures,
        "the download's size",
        net("download_bytes"),
        DEV_TCP_BYTES,
    );
    same(
        failures,
        "devices: the TCP download",
        ("the guest's copy", net("download_sha")),
        ("L1's", l1_field("MONOVIRT-L1-DEV-NET", "download_sha")),
    );

    // virtio-rng is the kernel's hardware RNG and gives 32 bytes, not all zero.
    let current = l2_field("MONOVIRT-L2-RNG", "current").unwrap_or_default();
    if !current.starts_with("virtio_rng") {
        failures.push(format!(
            "devices: the guest's hardware RNG is {current:?}, expected virtio_rng"
        ));
    }
    let hex = l2_field("MONOVIRT-L2-RNG", "hex").unwrap_or_default();
    if hex.len() != 64
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
        || hex.bytes().all(|b| b == b'0')
    {
        failures.push(format!(
            "devices: 32 bytes from /dev/hwrng read as {hex:?}, expected 64 hex digits"
        ));
    }

    // hvc0: the guest's line, with its random token, is in the host's file.
    expect(
        failures,
        "the guest's write to /dev/hvc0",
        l2_field("MONOVIRT-L2-HVC0", "state"),
        "written",
    );
    same(
        failures,
        "devices: the line on hvc0",
        ("the host's file", l1_field("MONOVIRT-L1-DEV-HVC0", "token")),
        ("the guest's", l2_field("MONOVIRT-L2-HVC0", "token")),
    );

    // vsock, guest to host (the guest calls, L1 echoes) and host to guest.
    for (what, caller, server) in [
        (
            "guest-to-host vsock echo",
            ("the guest", find(l2, "MONOVIRT-L2-VSOCK-CALL")),
            ("L1", find(l1, "MONOVIRT-L1-DEV-VSOCK-SERVED")),
        ),
        (
            "host-to-guest vsock echo",
            ("L1", find(l1, "MONOVIRT-L1-DEV-VSOCK-CALL")),
            ("the guest", find(l2, "MONOVIRT-L2-VSOCK-SERVED")),
        ),
    ] {
        let (caller_name, caller) = caller;
        let (server_name, server) = server;
        let field =
            |m: Option<&Marker>, key: &str| m.and_then(|m| m.field(key)).map(str::to_string);
        let call_ok = field(caller, "intact").as_deref() == Some("yes")
            && field(caller, "sent").as_deref() == Some(DEV_VSOCK_BYTES)
            && field(caller, "echoed").as_deref() == Some(DEV_VSOCK_BYTES);
        let served_ok = field(server, "served").as_deref() == Some(DEV_VSOCK_BYTES);
        if !call_ok || !served_ok {
            failures.push(format!(
                "devices: {what} of {DEV_VSOCK_BYTES} bytes: {caller_name} reported {:?}, \
                 {server_name} {:?}",
                caller.map(|m| &m.fields),
                server.map(|m| &m.fields)
            ));
        }
    }
}

/// Checks one scenario run by L1: its L2 guest's report, and how `monovirt run` ended.
fn check_scenario(scenario: &Scenario, serial: &str, failures: &mut Vec<String>) {
    let name = scenario.name;
    let Some(run) = scenario_run(serial, name) else {
        failures.push(format!("{name}: L1 never started it"));
        return;
    };
    println!(
        "linux tier: scenario {name}: rc {:?}, {} s on L1's clock",
        run.rc,
        run.seconds.map_or("?".into(), |s| format!("{s:.1}"))
    );
    // The guest's own report first: with it, a hang below says how far the guest got.
    check_l2(scenario, &run.text, failures);
    if scenario.task == "devices" {
        let l1: Vec<Marker> = serial.lines().filter_map(Marker::parse).collect();
        check_devices(&run.markers, &l1, failures);
    }
    let rc = match run.rc {
        None => {
            failures.push(format!("{name}: did not finish (L1 stopped first)"));
            return;
        }
        Some(SCENARIO_TIMED_OUT_RC) => {
            failures.push(format!(
                "{name}: monovirt run did not exit within {SCENARIO_TIMEOUT_SECS} s and was \
                 killed; {}",
                hang_report(&run)
            ));
            return;
        }
        Some(rc) => rc,
    };
    if scenario.task == "reboot" {
        // monovirt names the exit reason on a line of its own; the guest's lines that
        // mention a reboot are its markers and the kernel's "reboot: Restarting system".
        let reported = run.text.iter().any(|line| {
            !line.contains("MONOVIRT-L2-")
                && !line.contains("reboot: ")
                && line.to_ascii_lowercase().contains("reboot")
        });
        if rc == 0 || !reported {
            failures.push(format!(
                "{name}: monovirt run exited {rc} and {} the reason Reboot; expected a \
                 non-zero exit that names it",
                if reported { "printed" } else { "did not print" }
            ));
        }
    } else if rc != 0 {
        failures.push(format!(
            "{name}: monovirt run exited {rc} after the guest powered off, expected 0"
        ));
    }
}

/// The L2 images are right, checked without monovirt: QEMU itself (TCG) boots the same
/// kernel and initramfs, from the bzImage (loading every packaged module) and from the
/// extracted ELF vmlinux (through its PVH note), and they report as the L2 scenarios
/// expect. When an L2 scenario fails while this passes, the fault is monovirt's.
#[test]
fn l2_images_boot_under_qemu() -> Result<()> {
    const TEST: &str = "l2_images_boot_under_qemu";
    let Some(tier) = Tier::or_skip(TEST) else {
        return Ok(());
    };
    let work = work_dir(TIER, TEST)?;
    let references = [
        (
            Scenario {
                name: "qemu-bzimage-modules",
                kernel: "vmlinuz",
                task: "modules",
                cpus: 2,
                memory_mib: 512,
                boot_log: true,
            },
            &tier.bzimage,
        ),
        (
            Scenario {
                name: "qemu-vmlinux-poweroff",
                kernel: "vmlinux",
                task: "poweroff",
                cpus: 2,
                memory_mib: 384,
                boot_log: false,
            },
            &tier.vmlinux,
        ),
    ];
    let mut failures = Vec::new();
    for (scenario, kernel) in &references {
        let cmdline = scenario.cmdline();
        let boot = Boot {
            kernel,
            initrd: &tier.l2_initrd,
            cmdline: &cmdline,
            cpus: scenario.cpus,
            memory_mib: scenario.memory_mib,
            timeout: BOOT_TIMEOUT,
        };
        let run = boot_qemu(&boot, &work, &format!("{}.log", scenario.name))?;
        let text: Vec<&str> = run.serial.lines().collect();
        check_l2(scenario, &text, &mut failures);
        match run.status {
            Some(status) if status.success() => {}
            other => failures.push(format!("{}: QEMU ended with {other:?}", scenario.name)),
        }
        fail_if_any(TEST, &run, &failures);
    }
    Ok(())
}

/// The unmodified Debian cloud kernel boots under `monovirt run` on kvm_amd (inside L1):
/// from the bzImage and from the ELF vmlinux (PVH), sees every vCPU and the configured
/// memory, and its poweroff and reboot end `monovirt run` as they should.
#[test]
fn l2_debian_kernel_boots_under_monovirt() -> Result<()> {
    run_l2_scenarios(
        "l2_debian_kernel_boots_under_monovirt",
        &[
            Scenario {
                name: "bzimage-poweroff",
                kernel: L2_BZIMAGE,
                task: "poweroff",
                cpus: 2,
                memory_mib: 512,
                boot_log: true,
            },
            Scenario {
                name: "vmlinux-poweroff",
                kernel: L2_VMLINUX,
                task: "poweroff",
                cpus: 2,
                memory_mib: 384,
                boot_log: false,
            },
            Scenario {
                name: "bzimage-reboot",
                kernel: L2_BZIMAGE,
                task: "reboot",
                cpus: 1,
                memory_mib: 256,
                boot_log: false,
            },
        ],
    )
}

/// With every virtio device attached, the Debian kernel in L2 loads its own virtio_pci,
/// virtio_blk, virtio_net, virtio_console, virtio_rng and vsock modules and passes the
/// device checks of [`check_devices`] with busybox tools and `vsock-echo`.
#[test]
fn l2_debian_kernel_drives_virtio_devices() -> Result<()> {
    run_l2_scenarios(
        "l2_debian_kernel_drives_virtio_devices",
        &[Scenario {
            name: "virtio-devices",
            kernel: L2_BZIMAGE,
            task: "devices",
            cpus: 2,
            memory_mib: 512,
            boot_log: false,
        }],
    )
}

/// Runs `scenarios` in one L1 boot and checks each of them.
fn run_l2_scenarios(test: &str, scenarios: &[Scenario]) -> Result<()> {
    let Some(tier) = Tier::or_skip(test) else {
        return Ok(());
    };
    let work = work_dir(TIER, test)?;
    let initrd = build_l1_initrd(&tier, &work, scenarios)?;
    let run = boot_l1(&tier, &work, &initrd, scenarios.len())?;
    let markers = run.markers();
    let mut failures = Vec::new();
    check_x86_l1(&run, &markers, &mut failures);
    for scenario in scenarios {
        check_scenario(scenario, &run.serial, &mut failures);
    }
    fail_if_any(test, &run, &failures);
    Ok(())
}

/// The orchestrated path on real Linux: `monovirt serve` inside L1 takes a VM POSTed over
/// the API, booting the unmodified Debian kernel by kernelBoot from an imported image, to
/// Running on L1's kvm_amd; its console subresource shows the L2 init's marker and carries
/// a command to the L2 shell and its answer back. The VM carries a cloudInitNoCloud and a
/// cloudInitConfigDrive volume: the Debian kernel mounts both disks with its own vfat
/// module and prints their files, which match the VM's spec ([`check_cloudinit`]). The
/// daemon runs with `--network` and the VM is on the default network: busybox's udhcpc
/// gets the lease the VMI's status shows, ping reaches the gateway and wget fetches a page
/// through the masquerade NAT from a server behind L1's uplink, which sees L1's address;
/// deleting the VM releases its tap ([`check_serve_network`]).
#[test]
fn l2_debian_kernel_runs_through_monovirt_serve() -> Result<()> {
    const TEST: &str = "l2_debian_kernel_runs_through_monovirt_serve";
    let served = [ServeScenario {
        name: "serve-kernelboot",
        cpus: 1,
        memory_mib: 256,
        task: "cloudinit",
        volumes: cloud_init_volumes(),
        network: true,
    }];
    let Some(tier) = Tier::or_skip(TEST) else {
        return Ok(());
    };
    let work = work_dir(TIER, TEST)?;
    let initrd = build_l1_initrd_with(&tier, &work, &[], &served)?;
    let run = boot_l1(&tier, &work, &initrd, served.len())?;
    let markers = run.markers();
    let mut failures = Vec::new();
    check_x86_l1(&run, &markers, &mut failures);
    for scenario in &served {
        check_serve(scenario, &run.serial, &mut failures);
    }
    fail_if_any(TEST, &run, &failures);
    Ok(())
}

/// The marker parser and the scenario slicer, on a log shaped like a real one.
#[test]
fn serial_log_parsing() {
    let serial = "\x1b[2JMONOVIRT-L1-INIT-OK kernel=6.1 cpus=2\n\
        MONOVIRT-L1-SCENARIO-BEGIN name=a\n\
        [    0.1] Linux version 6.1\n\
        MONOVIRT-L2-INIT-OK kernel=6.1 task=poweroff\n\
        MONOVIRT-L2-RESULT cpus=2 online=0-1 memtotal_kb=480000 clockevent=lapic-deadline\n\
        MONOVIRT-L2-TIMER-OK\n\
        MONOVIRT-L2-POWEROFF\n\
        MONOVIRT-L1-SCENARIO-END name=a rc=0 start=1.50 end=4.00\n\
        MONOVIRT-L1-SCENARIO-BEGIN name=b\n\
        MONOVIRT-L2-INIT-OK kernel=6.1 task=reboot\n";
    let first = Marker::parse("\x1b[2JMONOVIRT-L1-INIT-OK kernel=6.1 cpus=2").expect("marker");
    assert_eq!(first.name, "MONOVIRT-L1-INIT-OK");
    assert_eq!(first.field("cpus"), Some("2"));
    assert!(Marker::parse("no marker here").is_none());

    let a = scenario_run(serial, "a").expect("scenario a");
    assert_eq!(a.rc, Some(0));
    assert_eq!(a.seconds, Some(2.5));
    assert_eq!(a.markers.len(), 4);
    assert_eq!(a.text.len(), 5);

    let b = scenario_run(serial, "b").expect("scenario b");
    assert_eq!(b.rc, None, "an unfinished scenario has no exit code");
    assert_eq!(b.markers.len(), 1);
    assert!(scenario_run(serial, "c").is_none());

    let scenario = Scenario {
        name: "a",
        kernel: L2_BZIMAGE,
        task: "poweroff",
        cpus: 2,
        memory_mib: 512,
        boot_log: false,
    };
    let mut failures = Vec::new();
    check_scenario(&scenario, serial, &mut failures);
    assert_eq!(failures, Vec::<String>::new());

    let wrong = Scenario {
        name: "a",
        kernel: L2_BZIMAGE,
        task: "poweroff",
        cpus: 4,
        memory_mib: 1024,
        boot_log: false,
    };
    check_scenario(&wrong, serial, &mut failures);
    assert_eq!(failures.len(), 2, "{failures:?}");

    // A guest whose timer never fires stops at its first sleep.
    let stuck = serial.replace("MONOVIRT-L2-TIMER-OK\n", "");
    let mut failures = Vec::new();
    check_scenario(&scenario, &stuck, &mut failures);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("lapic-deadline"), "{failures:?}");
}

/// The cloud-init check on a console shaped like the L2 `cloudinit` task's: it passes on
/// the right files and names each wrong or missing one.
#[test]
fn cloudinit_report_checks() {
    fn file(source: &str, name: &str, content: &str) -> String {
        let sha = monovirt::storage::checksum::hex(&<sha2::Sha256 as sha2::Digest>::digest(
            content.as_bytes(),
        ));
        format!(
            "MONOVIRT-L2-CLOUDINIT-FILE source={source} name={name} bytes={} sha256={sha}\n\
             MONOVIRT-L2-CLOUDINIT-BEGIN source={source} name={name}\n\
             {}\n\
             MONOVIRT-L2-CLOUDINIT-END source={source} name={name}\n",
            content.len(),
            content.strip_suffix('\n').unwrap_or(content)
        )
    }
    let report =
        |nocloud_user: &str| {
            [
            "MONOVIRT-L2-MODULES loaded=14 failed=\n".to_string(),
            "MONOVIRT-L2-CLOUDINIT-MOUNTED source=nocloud label=cidata dev=/dev/vda fstype=vfat\n"
                .to_string(),
            file("nocloud", "meta-data", "instance-id: u-1\nlocal-hostname: vm\n"),
            file("nocloud", "user-data", nocloud_user),
            file("nocloud", "network-config", NOCLOUD_NETWORK_DATA),
            "MONOVIRT-L2-CLOUDINIT-MOUNTED source=configdrive label=config-2 dev=/dev/vdb \
             fstype=vfat\n"
                .to_string(),
            file(
                "configdrive",
                "openstack/latest/meta_data.json",
                r#"{"hostname":"vm","instance_id":"u-1","name":"vm","uuid":"u-1"}"#,
            ),
            file("configdrive", "openstack/latest/user_data", CONFIGDRIVE_USER_DATA),
            file(
                "configdrive",
                "openstack/latest/network_data.json",
                CONFIGDRIVE_NETWORK_DATA,
            ),
            "MONOVIRT-L2-CLOUDINIT-DONE\n".to_string(),
        ]
        .concat()
        };
    let failures_of = |text: &str, uid: &str| {
        let console: Vec<&str> = text.lines().collect();
        let mut failures = Vec::new();
        check_cloudinit("vm", &console, uid, &mut failures);
        failures
    };
    let good = report(NOCLOUD_USER_DATA);
    assert_eq!(failures_of(&good, "u-1"), Vec::<String>::new());
    // Another instance's meta-data: both sources say so.
    assert_eq!(failures_of(&good, "u-2").len(), 2);
    // One byte off (a lost trailing newline changes size and hash, not the lines).
    let short = report(NOCLOUD_USER_DATA.trim_end());
    assert_eq!(failures_of(&short, "u-1").len(), 1);
    // A disk not found: its MOUNTED line and every file of it missing.
    let no_drive: String = good
        .lines()
        .filter(|l| !l.contains("source=configdrive"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(failures_of(&no_drive, "u-1").len(), 4);
}

/// A reboot counts only when monovirt itself names it and exits non-zero: the guest's
/// own "reboot: Restarting system" is not monovirt's report.
#[test]
fn reboot_report_checks() {
    let reboot = Scenario {
        name: "r",
        kernel: L2_BZIMAGE,
        task: "reboot",
        cpus: 1,
        memory_mib: 256,
        boot_log: false,
    };
    let section = |report: &str, rc: i32| {
        format!(
            "MONOVIRT-L1-SCENARIO-BEGIN name=r\n\
             MONOVIRT-L2-INIT-OK kernel=6.1 task=reboot\n\
             MONOVIRT-L2-RESULT cpus=1 online=0 memtotal_kb=220000 clockevent=pit\n\
             MONOVIRT-L2-TIMER-OK\n\
             MONOVIRT-L2-REBOOT\n\
             [    2.5] reboot: Restarting system\n\
             {report}\n\
             MONOVIRT-L1-SCENARIO-END name=r rc={rc} start=1 end=2\n"
        )
    };
    let failures_of = |serial: &str| {
        let mut failures = Vec::new();
        check_scenario(&reboot, serial, &mut failures);
        failures
    };
    assert!(failures_of(&section("Error: guest requested a reboot", 2)).is_empty());
    assert!(failures_of(&section("monovirt: exit reason Reboot", 3)).is_empty());
    assert_eq!(
        failures_of(&section("", 2)).len(),
        1,
        "the kernel's line is no report"
    );
    assert_eq!(
        failures_of(&section("guest requested a reboot", 0)).len(),
        1,
        "exit 0"
    );
    assert_eq!(
        failures_of(&section("guest requested a reboot", SCENARIO_TIMED_OUT_RC)).len(),
        1,
        "a timeout"
    );
}

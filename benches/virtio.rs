//! Virtio benchmark (`cargo bench --bench virtio`): the test guest on /dev/kvm, booted by
//! the real `monovirt run`, times its virtio-blk disk (the `blkbench` word: sequential
//! 64 KiB reads and writes and 4 KiB random reads, one request at a time, through
//! `virtio-drivers`' `VirtIOBlk`; 4 KiB random reads at queue depth 1 and 32 through the
//! same crate's `VirtQueue` at 128 entries, one notification per batch where the device
//! asks for it; both over the guest's `Doorbell` transport, see
//! `tests/guest/src/doorbell.rs`) and streams TCP over
//! virtio-net and a tap in a network namespace this benchmark creates; the host does the
//! same disk operations on the same image file in the same run, opened as the disk's cache
//! mode opens it (one table per mode: the guest's `cache=none` against the host's
//! `O_DIRECT`, `cache=writeback` against the host's page cache), at the same queue depth
//! (N threads with one read each in flight).
//!
//! The network part streams both ways: host -> guest (the guest's TCP service) and
//! guest -> host (the guest's `net.connect` client to a listener in the namespace).
//!
//! The guest runs its device loops at CPL 3 (`tests/guest/src/user.rs`): on PVM, the
//! development machines' /dev/kvm, ring-0 guest code runs in an instruction emulator.
//!
//! Prints min/median/max tables. `MONOVIRT_BENCH_RUNS` sets the run count (default 5),
//! `MONOVIRT_BENCH_NET_MIB` the stream size (default 16), `MONOVIRT_BENCH_ONLY=disk` or
//! `net` one half. A benchmark measures; nothing here asserts a speed.

#[path = "../tests/common/guest.rs"]
#[allow(dead_code, unused_imports)]
mod guest;
#[path = "../tests/vmm_support/mod.rs"]
mod vmm_support;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use guest::{guest_elf, Report};
use vmm_support::netns::Netns;

/// Image size; the guest's sequential passes cover all of it.
const IMAGE: usize = 64 << 20;
const SEQ_CHUNK: usize = 64 << 10;
const RANDOM_OPS: usize = 2048;
/// The queue depth the guest keeps besides 1 (its deep queue).
const DEPTH: usize = 32;

/// One row: values per run, higher is better.
struct Row {
    name: &'static str,
    guest: Vec<f64>,
    host: Vec<f64>,
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// Starts `monovirt run` on the test guest with `cmdline` and `args`, COM1 piped;
/// `prefix` runs it under a wrapper (`ip netns exec`).
fn boot(prefix: &[&str], cmdline: &str, args: &[String]) -> Result<std::process::Child> {
    let bin = env!("CARGO_BIN_EXE_monovirt");
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("run")
        .arg("--kernel")
        .arg(guest_elf()?)
        .args(["--cmdline", &format!("console=ttyS0 nosmp {cmdline}")])
        .args(["--memory", "128"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd.spawn().context("spawn monovirt run")
}

/// The numbers of `key`'s `count,ns[,...]` value.
fn fields(report: &Report, key: &str) -> Result<Vec<f64>> {
    let value = report.get(key).with_context(|| {
        format!(
            "guest printed no {key}: blkbench={:?} blkbench.deep={:?}",
            report.get("blkbench"),
            report.get("blkbench.deep")
        )
    })?;
    let numbers = value
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<f64>, _>>()
        .with_context(|| format!("{key}={value}"))?;
    ensure!(numbers.len() >= 2, "{key}={value}: want count,ns");
    Ok(numbers)
}

/// `bytes,ns` or `ops,ns` as a rate per second.
fn rate(report: &Report, key: &str) -> Result<f64> {
    let f = fields(report, key)?;
    Ok(f[0] / (f[1] / 1e9))
}

/// The disk cache modes compared, and how the host opens the image for each.
const MODES: [(&str, &str, libc::c_int); 2] = [
    ("none", "O_DIRECT", libc::O_DIRECT),
    ("writeback", "page cache", 0),
];

/// What one guest run measured besides the rows.
struct GuestExtra {
    /// Notifications per request at queue depth 32.
    kicks: f64,
    /// At queue depth 1 (deep-queue pass), per request: µs the driver spun waiting for the
    /// completion, and µs of its own work (the rest).
    waiting_us: f64,
    own_us: f64,
}

/// The guest's rows (see [`ROWS`]) and the rest it measured.
fn guest_disk(image: &Path, cache: &str) -> Result<([f64; 5], GuestExtra)> {
    let child = boot(
        &[],
        "blkbench poweroff",
        &[format!("--disk={},cache={cache}", image.display())],
    )?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "monovirt run: {}", out.status);
    let report = Report::parse(&String::from_utf8_lossy(&out.stdout));
    let deep = fields(&report, "blkbench.deep.qd32")?;
    let qd1 = fields(&report, "blkbench.deep.qd1")?;
    let waiting = qd1.get(3).copied().unwrap_or(f64::NAN);
    let extra = GuestExtra {
        kicks: deep.get(2).copied().unwrap_or(f64::NAN) / deep[0],
        waiting_us: waiting / qd1[0] / 1e3,
        own_us: (qd1[1] - waiting) / qd1[0] / 1e3,
    };
    Ok((
        [
            rate(&report, "blkbench.seqread")? / f64::from(1 << 20),
            rate(&report, "blkbench.seqwrite")? / f64::from(1 << 20),
            rate(&report, "blkbench.randread.qd1")?,
            rate(&report, "blkbench.deep.qd1")?,
            rate(&report, "blkbench.deep.qd32")?,
        ],
        extra,
    ))
}

/// The blocks the guest reads (its xorshift64* sequence), as byte offsets.
fn random_offsets(count: usize) -> Vec<u64> {
    let blocks = (IMAGE / 4096) as u64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..count)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % blocks) * 4096
        })
        .collect()
}

/// A zeroed buffer of `len` bytes at a 4 KiB-aligned address (what O_DIRECT needs).
struct Aligned(Vec<u8>, usize, usize);

impl Aligned {
    fn new(len: usize) -> Self {
        let v = vec![0u8; len + 4096];
        let start = v.as_ptr().align_offset(4096);
        Aligned(v, start, len)
    }

    fn get(&mut self) -> &mut [u8] {
        &mut self.0[self.1..self.1 + self.2]
    }
}

/// 4 KiB reads at `offsets` by `depth` threads (the host's queue depth `depth`), in IOPS.
fn host_random(file: &File, offsets: &[u64], depth: usize) -> Result<f64> {
    let t = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = offsets
            .chunks(offsets.len().div_ceil(depth))
            .map(|part| {
                s.spawn(move || -> std::io::Result<()> {
                    let mut page = Aligned::new(4096);
                    for &o in part {
                        file.read_exact_at(page.get(), o)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
        }
        Ok(())
    })?;
    Ok(offsets.len() as f64 / t.elapsed().as_secs_f64())
}

/// The host's rows: the same operations on the same file, `pread`/`pwrite` on an fd opened
/// with `flags`; queue depth 32 is 32 threads with one read each in flight.
fn host_disk(image: &Path, flags: libc::c_int) -> Result<[f64; 5]> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(image)?;
    let mut aligned = Aligned::new(SEQ_CHUNK);
    let buf = aligned.get();
    let t = Instant::now();
    for offset in (0..IMAGE).step_by(SEQ_CHUNK) {
        file.read_exact_at(buf, offset as u64)?;
    }
    let seq_read = IMAGE as f64 / t.elapsed().as_secs_f64() / f64::from(1 << 20);
    let t = Instant::now();
    for offset in (0..IMAGE).step_by(SEQ_CHUNK) {
        file.write_all_at(buf, offset as u64)?;
    }
    file.sync_data()?;
    let seq_write = IMAGE as f64 / t.elapsed().as_secs_f64() / f64::from(1 << 20);
    let offsets = random_offsets(RANDOM_OPS);
    let qd1 = host_random(&file, &offsets, 1)?;
    let qd32 = host_random(&file, &offsets, DEPTH)?;
    // The guest's deep-queue QD1 pass is the same operation as its VirtIOBlk one.
    Ok([seq_read, seq_write, qd1, qd1, qd32])
}

/// The device-thread settings the guest ran with (the VMM's tuning variables, if set).
fn device_settings() -> String {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| "default".into());
    use monovirt::vmm::virtio_devices::{IO_POLL_MAX_ENV, IO_URING_ENV, POLL_MAX_ENV};
    [POLL_MAX_ENV, IO_POLL_MAX_ENV, IO_URING_ENV]
        .map(|name| format!("{name}={}", var(name)))
        .join(", ")
}

/// The rows of a disk table.
const ROWS: [&str; 5] = [
    "sequential read, 64 KiB, QD1 (MiB/s)",
    "sequential write, 64 KiB, QD1, then one flush (MiB/s)",
    "random read 4 KiB, QD1, VirtIOBlk (IOPS)",
    "random read 4 KiB, QD1, 128-entry VirtQueue (IOPS)",
    "random read 4 KiB, QD32, 128-entry VirtQueue (IOPS)",
];

fn disk_table(runs: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let image = dir.path().join("bench.img");
    let mut seed = 0x1234_5678_u32;
    let data: Vec<u8> = (0..IMAGE)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 24) as u8
        })
        .collect();
    let mut file = File::create(&image)?;
    file.write_all(&data)?;
    // On the disk before the first run: an O_DIRECT pass over dirty page-cache pages would
    // first write them back, for whichever side goes first.
    file.sync_all()?;
    drop(file);
    let mut extras: Vec<Vec<GuestExtra>> = MODES.iter().map(|_| Vec::new()).collect();
    let mut tables: Vec<Vec<Row>> = MODES
        .iter()
        .map(|_| {
            ROWS.iter()
                .map(|&name| Row {
                    name,
                    guest: Vec::new(),
                    host: Vec::new(),
                })
                .collect()
        })
        .collect();
    let load_before = vmm_support::load_average();
    // Runs interleave the modes, so a change in the machine's load hits all alike, and
    // alternate which side goes first, so neither always finds the host disk as the other
    // left it.
    for run in 0..runs {
        for (((cache, _, flags), rows), extras) in MODES.iter().zip(&mut tables).zip(&mut extras) {
            // With the page cache, both sides start with the image cached (the other
            // mode's O_DIRECT writes dropped it): what a page-cache mode is for.
            let warm = || -> Result<()> {
                if *flags & libc::O_DIRECT == 0 {
                    std::fs::read(&image)?;
                }
                Ok(())
            };
            let guest = || -> Result<_> {
                warm()?;
                guest_disk(&image, cache)
            };
            let host = || -> Result<_> {
                warm()?;
                host_disk(&image, *flags)
            };
            let ((g, extra), h) = if run % 2 == 0 {
                let g = guest()?;
                (g, host()?)
            } else {
                let h = host()?;
                (guest()?, h)
            };
            extras.push(extra);
            for (i, row) in rows.iter_mut().enumerate() {
                row.guest.push(g[i]);
                row.host.push(h[i]);
            }
        }
    }
    let load_after = vmm_support::load_average();
    for (((cache, host, _), rows), extras) in MODES.iter().zip(&tables).zip(&extras) {
        println!(
            "virtio-blk cache={cache}: test guest (virtio-drivers at CPL 3, polling; the device \
             opens the image as cache={cache} says) vs host (pread/pwrite, {host}; QD32 = 32 \
             threads) on the same {} MiB image, {runs} runs (load average {load_before} \
             before, {load_after} after; {})",
            IMAGE >> 20,
            device_settings()
        );
        println!("| metric | guest min | guest median | guest max | host median | guest/host |");
        println!("| --- | --- | --- | --- | --- | --- |");
        for row in rows {
            let (a, b, c) = stats(&row.guest);
            let (_, h, _) = stats(&row.host);
            println!(
                "| {} | {a:.1} | {b:.1} | {c:.1} | {h:.1} | {:.3} |",
                row.name,
                b / h
            );
        }
        let median = |f: fn(&GuestExtra) -> f64| stats(&extras.iter().map(f).collect::<Vec<_>>()).1;
        println!(
            "guest notifications per request at QD32 (median): {:.3}",
            median(|e| e.kicks)
        );
        let (_, host_qd1, _) = stats(&rows[3].host);
        println!(
            "per request at QD1 (medians): the guest spins {:.1} µs for the completion and \
             spends {:.1} µs on its own work; the host's read takes {:.1} µs",
            median(|e| e.waiting_us),
            median(|e| e.own_us),
            1e6 / host_qd1
        );
        println!();
    }
    Ok(())
}

/// Packets the tap in `ns` has sent (`"TX:"`, host -> guest) or received (`"RX:"`).
fn tap_packets(ns: &Netns, direction: &str) -> Result<u64> {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-s", "link", "show", Netns::TAP])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The line after the "TX:"/"RX:" header holds bytes, packets, ...
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with(direction) {
            let values = lines.next().context("tap statistics")?;
            return Ok(values
                .split_whitespace()
                .nth(1)
                .context("tap packets")?
                .parse()?);
        }
    }
    bail!("no {direction} statistics for {}", Netns::TAP)
}

/// The guest's `net.connect` stream of `len` bytes (byte `i` is `i*31+7`), as the reply
/// it expects: `bytes=N crc32=0x........`.
fn connect_reply(len: usize) -> String {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
        .collect();
    format!("bytes={len} crc32={:#010x}", crc32fast::hash(&data))
}

/// Guest -> host: the guest connects to a listener in the namespace and streams `mib` MiB;
/// (MiB/s, packets/s into the host) from the first byte to the guest's end of stream.
fn net_to_host_once(mib: usize) -> Result<(f64, f64)> {
    const PORT: u16 = 7000;
    let ns = Netns::create()?;
    let listener = ns.run_inside(|| Ok(std::net::TcpListener::bind((Netns::HOST_IP, PORT))?))?;
    let len = mib << 20;
    let mut child = boot(
        &ns.exec_prefix(),
        &format!(
            "net guest.ip={}/24 net.connect={}:{PORT} net.bytes={len} poweroff",
            Netns::GUEST_IP,
            Netns::HOST_IP
        ),
        &[format!("--net=tap={},mac=52:54:00:12:34:56", Netns::TAP)],
    )?;
    let (mut sock, _) = listener.accept()?;
    sock.set_read_timeout(Some(Duration::from_secs(600)))?;
    let before = tap_packets(&ns, "RX:")?;
    let mut buf = vec![0u8; 64 << 10];
    let mut crc = crc32fast::Hasher::new();
    let mut got = 0usize;
    let mut start = None;
    loop {
        let n = sock.read(&mut buf)?;
        if n == 0 {
            break;
        }
        start.get_or_insert_with(Instant::now);
        crc.update(&buf[..n]);
        got += n;
    }
    let secs = start.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let packets = tap_packets(&ns, "RX:")? - before;
    let reply = format!("bytes={got} crc32={:#010x}", crc.finalize());
    ensure!(
        reply == connect_reply(len),
        "the host got {reply}, expected {}",
        connect_reply(len)
    );
    sock.write_all(format!("{reply}\n").as_bytes())?;
    drop(sock);
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut text = String::new();
    stdout.read_to_string(&mut text)?;
    let status = child.wait()?;
    ensure!(status.success(), "monovirt run: {status}");
    ensure!(
        Report::parse(&text).get("net.connect.reply") == Some(reply.as_str()),
        "the guest did not see the reply:\n{text}"
    );
    Ok((
        len as f64 / secs / f64::from(1 << 20),
        packets as f64 / secs,
    ))
}

fn net_once(mib: usize) -> Result<(f64, f64)> {
    let ns = Netns::create()?;
    let mut child = boot(
        &ns.exec_prefix(),
        &format!("net guest.ip={}/24 poweroff", Netns::GUEST_IP),
        &[format!("--net=tap={},mac=52:54:00:12:34:56", Netns::TAP)],
    )?;
    let mut stdout = child.stdout.take().context("stdout")?;
    // Wait for the guest's listener.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("net.tcp.listen=") {
        let n = stdout.read(&mut buf)?;
        ensure!(
            n > 0,
            "guest ended before listening:\n{}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let len = mib << 20;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + 5) as u8).collect();
    let want = format!("bytes={len} crc32={:#010x}\n", crc32fast::hash(&data));
    let before = tap_packets(&ns, "TX:")?;
    let (reply, elapsed) = ns.run_inside(move || {
        let addr: SocketAddr = format!("{}:7777", Netns::GUEST_IP).parse()?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30))?;
        s.set_read_timeout(Some(Duration::from_secs(600)))?;
        let t = Instant::now();
        s.write_all(&data)?;
        s.shutdown(Shutdown::Write)?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok((reply, t.elapsed()))
    })?;
    let packets = tap_packets(&ns, "TX:")? - before;
    ensure!(reply == want, "guest replied {reply:?}, expected {want:?}");
    let status = child.wait()?;
    ensure!(status.success(), "monovirt run: {status}");
    let secs = elapsed.as_secs_f64();
    Ok((
        len as f64 / secs / f64::from(1 << 20),
        packets as f64 / secs,
    ))
}

fn net_table(runs: usize) -> Result<()> {
    let mib: usize = std::env::var("MONOVIRT_BENCH_NET_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
        .max(1);
    let (mut rates, mut packets) = (Vec::new(), Vec::new());
    let (mut out_rates, mut out_packets) = (Vec::new(), Vec::new());
    let load_before = vmm_support::load_average();
    for _ in 0..runs {
        let (r, p) = net_once(mib)?;
        rates.push(r);
        packets.push(p);
        let (r, p) = net_to_host_once(mib)?;
        out_rates.push(r);
        out_packets.push(p);
    }
    println!(
        "virtio-net: {mib} MiB TCP streams between the host and the test guest (smoltcp) over \
         a tap, {runs} runs (load average {load_before} before, {} after)",
        vmm_support::load_average()
    );
    println!("| metric | min | median | max |");
    println!("| --- | --- | --- | --- |");
    for (name, values) in [
        ("host -> guest throughput (MiB/s)", &rates),
        ("host -> guest packets to the guest (/s)", &packets),
        ("guest -> host throughput (MiB/s)", &out_rates),
        ("guest -> host packets from the guest (/s)", &out_packets),
    ] {
        let (a, b, c) = stats(values);
        println!("| {name} | {a:.1} | {b:.1} | {c:.1} |");
    }
    Ok(())
}

fn main() -> Result<()> {
    let Some(runs) = vmm_support::bench_runs("virtio", 5)? else {
        return Ok(());
    };
    // `MONOVIRT_BENCH_ONLY=disk|net` runs one half.
    let only = std::env::var("MONOVIRT_BENCH_ONLY").unwrap_or_default();
    if only != "net" {
        disk_table(runs)?;
    }
    if only != "disk" {
        net_table(runs)?;
    }
    Ok(())
}

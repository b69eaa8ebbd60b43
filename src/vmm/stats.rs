//! Read-only statistics of running VMs for `/metrics`: vCPU time per vCPU thread
//! (`/proc/self/task/<tid>/stat`, user plus system time), guest memory resident in the
//! memfd (its allocated blocks: pages the guest touched), and the virtio-net and
//! virtio-blk devices' own counters. Reading them never touches the VM's threads.
//!
//! A [`VmStats`] belongs to one VM (the VMM fills it as threads start and devices are
//! made); a [`Registry`] maps the VMs an agent runs to their VMI's identity.

use devices::virtio::block::BlockMetrics;
use devices::virtio::net::NetMetrics;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The statistics sources of one VM.
#[derive(Debug, Default)]
pub struct VmStats {
    /// (vCPU index, thread id).
    vcpu_threads: Mutex<Vec<(u32, i32)>>,
    /// The guest memory's memfd.
    memory: Mutex<Option<std::fs::File>>,
    nets: Mutex<Vec<(String, Arc<NetMetrics>)>>,
    drives: Mutex<Vec<(String, Arc<BlockMetrics>)>>,
}

/// One network interface's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSample {
    pub interface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// One drive's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveSample {
    pub drive: String,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ops: u64,
    pub write_ops: u64,
}

/// A VM's statistics at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmSample {
    /// (vCPU index, seconds on a host CPU).
    pub vcpu_seconds: Vec<(u32, f64)>,
    pub memory_resident_bytes: u64,
    pub nets: Vec<NetSample>,
    pub drives: Vec<DriveSample>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The sections below never panic while holding these locks.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// CPU seconds (user + system) of thread `tid` of this process, if it still runs.
pub fn thread_cpu_seconds(tid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: skip past it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the name: field 3 is at index 0, so utime (14) is 11 and stime (15) is 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks() as f64)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant of the C library; it touches no memory of ours.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// The calling thread's id.
pub fn current_tid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

impl VmStats {
    /// Statistics whose memory figure comes from `memfd`.
    pub fn new(memfd: Option<std::fs::File>) -> Self {
        Self {
            memory: Mutex::new(memfd),
            ..Self::default()
        }
    }

    /// Called on vCPU `index`'s own thread when it starts.
    pub fn vcpu_started(&self, index: u32) {
        let tid = current_tid();
        let mut v = lock(&self.vcpu_threads);
        v.retain(|(i, _)| *i != index);
        v.push((index, tid));
        v.sort_unstable();
    }

    /// Adds a network interface's counters.
    pub fn add_net(&self, interface: &str, metrics: Arc<NetMetrics>) {
        lock(&self.nets).push((interface.to_string(), metrics));
    }

    /// Adds a drive's counters.
    pub fn add_drive(&self, drive: &str, metrics: Arc<BlockMetrics>) {
        lock(&self.drives).push((drive.to_string(), metrics));
    }

    /// The statistics now.
    pub fn sample(&self) -> VmSample {
        let vcpu_seconds = lock(&self.vcpu_threads)
            .iter()
            .filter_map(|(i, tid)| thread_cpu_seconds(*tid).map(|s| (*i, s)))
            .collect();
        let memory_resident_bytes = lock(&self.memory)
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.blocks() * 512
            })
            .unwrap_or(0);
        let nets = lock(&self.nets)
            .iter()
            .map(|(name, m)| NetSample {
                interface: name.clone(),
                rx_bytes: m.rx_bytes.get(),
                tx_bytes: m.tx_bytes.get(),
                rx_packets: m.rx_packets.get(),
                tx_packets: m.tx_packets.get(),
            })
            .collect();
        let drives = lock(&self.drives)
            .iter()
            .map(|(name, m)| DriveSample {
                drive: name.clone(),
                read_bytes: m.read_bytes.get(),
                write_bytes: m.write_bytes.get(),
                read_ops: m.read_ops.get(),
                write_ops: m.write_ops.get(),
            })
            .collect();
        VmSample {
            vcpu_seconds,
            memory_resident_bytes,
            nets,
            drives,
        }
    }
}

/// Which VMI a VM runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VmKey {
    pub namespace: String,
    pub name: String,
    pub node: String,
}

/// The VMs a node runs, for `/metrics`. The agent inserts a VM when it starts it and
/// removes it when it ends.
#[derive(Debug, Default)]
pub struct Registry {
    vms: Mutex<BTreeMap<VmKey, Arc<VmStats>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) a VM.
    pub fn insert(&self, key: VmKey, stats: Arc<VmStats>) {
        lock(&self.vms).insert(key, stats);
    }

    /// Forgets a VM.
    pub fn remove(&self, key: &VmKey) {
        lock(&self.vms).remove(key);
    }

    /// Every VM's statistics now.
    pub fn samples(&self) -> Vec<(VmKey, VmSample)> {
        let vms: Vec<(VmKey, Arc<VmStats>)> = lock(&self.vms)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vms.into_iter().map(|(k, v)| (k, v.sample())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_accumulates_cpu_time() {
        let stats = Arc::new(VmStats::new(None));
        let s = stats.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            s.vcpu_started(0);
            tx.send(()).expect("send");
            let mut x = 0u64;
            // Spin until told to stop, so the thread has CPU time to report.
            while stop_rx.try_recv().is_err() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                std::hint::black_box(x);
            }
        });
        rx.recv().expect("started");
        let mut seconds = 0.0;
        // Ticks are 10 ms; wait (bounded) until at least one has been charged.
        for _ in 0..500 {
            seconds = stats
                .sample()
                .vcpu_seconds
                .first()
                .map(|v| v.1)
                .unwrap_or(0.0);
            if seconds > 0.0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        stop_tx.send(()).expect("stop");
        t.join().expect("join");
        assert!(seconds > 0.0);
        assert!(thread_cpu_seconds(current_tid()).is_some());
    }

    #[test]
    fn memory_counts_touched_memfd_pages_and_devices_are_read() {
        let f = tempfile::tempfile().expect("file");
        f.set_len(1 << 20).expect("len");
        let stats = VmStats::new(Some(f.try_clone().expect("clone")));
        assert_eq!(stats.sample().memory_resident_bytes, 0);
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[1u8; 8192], 0).expect("write");
        assert!(stats.sample().memory_resident_bytes >= 8192);
        let net = Arc::new(NetMetrics::default());
        net.rx_bytes.add(100);
        stats.add_net("default", net.clone());
        let disk = Arc::new(BlockMetrics::default());
        disk.read_ops.inc();
        stats.add_drive("rootdisk", disk);
        let s = stats.sample();
        assert_eq!(s.nets[0].rx_bytes, 100);
        assert_eq!(s.drives[0].read_ops, 1);
        let reg = Registry::new();
        let key = VmKey {
            namespace: "default".into(),
            name: "vm1".into(),
            node: "n1".into(),
        };
        reg.insert(key.clone(), Arc::new(stats));
        assert_eq!(reg.samples().len(), 1);
        reg.remove(&key);
        assert!(reg.samples().is_empty());
    }
}

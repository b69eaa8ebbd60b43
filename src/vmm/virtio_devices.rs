//! The virtio devices of a VM, whatever their transport: [`build`] makes the device
//! models a [`VmConfig`] names (disks, NICs, vsock, rng, console), and [`spawn`] runs
//! them on one thread `virtio-<vm>` that polls every queue eventfd and device fd and
//! calls the device, until its [`DeviceThread`] is dropped. Between waits the thread
//! busy-polls the devices that allow it (disks) for an adaptive window
//! ([`PollWindow`], at most [`POLL_MAX`]; while a disk has I/O at the host, at most
//! [`IO_POLL_MAX`]) with the driver's notifications off, so a guest issuing request after
//! request neither exits to kick nor waits for a wake-up, and a completion is seen without
//! one. The x86_64 machine puts the devices on PCI (`device_manager`), the s390x machine on channel-subsystem subchannels
//! (`s390_ccw::virtio_ccw`); both hand the transports' queue eventfds to this thread.

use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::virtio::block::{BlockConfig, BlockDevice, ThreadInit, DEFAULT_WORKERS};
use devices::virtio::console::ConsoleDevice;
use devices::virtio::net::{NetBackend, NetConfig, NetDevice, Tap};
use devices::virtio::rng::RngDevice;
use devices::virtio::transport::SharedVirtioDevice;
use devices::virtio::vsock::VsockDevice;
use devices::virtio::Progress;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::config::VmConfig;
use super::device_config::VirtioConsoleConfig;
use super::poll_window::PollWindow;
use super::stats::VmStats;

/// Guest memory as the devices hold it.
pub type Mem = Arc<GuestMemoryMmap>;

/// Reports a failure of a device thread (the VM then ends with a crash).
pub type Crash = Arc<dyn Fn(String) + Send + Sync>;

/// Errors creating the devices or their thread.
#[derive(Debug, thiserror::Error)]
pub enum VirtioDevicesError {
    /// A virtio device could not be created.
    #[error("Cannot create {0}")]
    Device(String, #[source] Box<dyn std::error::Error + Send + Sync>),
    /// Eventfd, epoll or thread set-up.
    #[error("Cannot set up {0}")]
    Io(&'static str, #[source] std::io::Error),
}

fn device_err<E: std::error::Error + Send + Sync + 'static>(
    what: String,
) -> impl FnOnce(E) -> VirtioDevicesError {
    move |e| VirtioDevicesError::Device(what, Box::new(e))
}

/// Builds the virtio device models `config` asks for, named `disk0`, `net0`, `vsock`,
/// `rng`, `console`, registering their metrics with `stats`. `crash` reports a failure
/// of a disk I/O worker.
pub fn build(
    config: &VmConfig,
    stats: &VmStats,
    crash: Crash,
) -> Result<Vec<(String, SharedVirtioDevice<Mem>)>, VirtioDevicesError> {
    let mut devices: Vec<(String, SharedVirtioDevice<Mem>)> = Vec::new();
    // Disk I/O workers are device threads: the same filter, installed on each as it starts.
    let worker_init = ThreadInit(Arc::new(move || {
        super::seccomp::apply(super::seccomp::ThreadKind::Device).map_err(|e| {
            crash(e.to_string());
            e.to_string()
        })
    }));
    for (i, disk) in config.disks.iter().enumerate() {
        let name = format!("disk{i}");
        let dev = BlockDevice::<Mem>::new(BlockConfig {
            id: name.clone(),
            path: disk.path.clone(),
            read_only: disk.read_only,
            serial: disk.serial.clone(),
            cache: disk.cache,
            workers: DEFAULT_WORKERS,
            worker_init: Some(worker_init.clone()),
            io_uring: io_uring_wanted(),
        })
        .map_err(device_err(format!("disk {}", disk.path.display())))?;
        tracing::debug!(disk = %name, path = %disk.path.display(), cache = %dev.cache_mode(), "virtio-blk disk");
        stats.add_drive(disk.serial.as_deref().unwrap_or(&name), dev.metrics());
        devices.push((name, Arc::new(Mutex::new(dev))));
    }
    for (i, nic) in config.nics.iter().enumerate() {
        let tap = if nic.tap.starts_with('/') {
            Tap::open_macvtap(std::path::Path::new(&nic.tap))
        } else {
            Tap::open(&nic.tap)
        }
        .map_err(device_err(format!("tap {}", nic.tap)))?;
        let mac = match nic.mac {
            Some(m) => m,
            None => random_mac().map_err(|e| VirtioDevicesError::Io("a MAC address", e))?,
        };
        let dev = NetDevice::<Mem>::new(NetConfig {
            id: format!("net{i}"),
            mac,
            backend: NetBackend::Tap(tap),
        });
        stats.add_net(&format!("net{i}"), dev.metrics());
        devices.push((format!("net{i}"), Arc::new(Mutex::new(dev))));
    }
    if let Some(v) = &config.vsock {
        let dev = VsockDevice::<Mem>::new(devices::virtio::vsock::VsockConfig {
            cid: v.cid,
            socket: v.socket.clone(),
        })
        .map_err(device_err(format!("vsock {}", v.socket.display())))?;
        devices.push(("vsock".into(), Arc::new(Mutex::new(dev))));
    }
    if config.rng {
        devices.push(("rng".into(), Arc::new(Mutex::new(RngDevice::<Mem>::new()))));
    }
    if let Some(VirtioConsoleConfig::File(path)) = &config.virtio_console {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(device_err(format!("virtio console {}", path.display())))?;
        let dev = ConsoleDevice::<Mem>::new("hvc0", None, OwnedFd::from(file));
        devices.push(("console".into(), Arc::new(Mutex::new(dev))));
    }
    Ok(devices)
}

/// Environment variable that turns the disks' io_uring off (`0`): every read and write
/// then goes to the disk's worker threads, as on kernels without io_uring. For comparisons
/// (the virtio benchmark) and for hosts that must not use io_uring.
pub const IO_URING_ENV: &str = "MONOVIRT_BLK_IO_URING";

fn io_uring_wanted() -> bool {
    std::env::var(IO_URING_ENV).map_or(true, |v| v.trim() != "0")
}

/// What the device thread polls for one device.
pub struct Polled {
    /// The device model.
    pub device: SharedVirtioDevice<Mem>,
    /// Its queue notification eventfds, by queue index (the transport's, cloned).
    pub queue_events: Vec<EventFd>,
}

/// The device thread of a VM; dropping it stops and joins the thread.
pub struct DeviceThread {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Drop for DeviceThread {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            // A panic in it was caught and reported already.
            let _ = t.join();
        }
    }
}

/// Starts the thread `virtio-<vm>` over `polled` (none if there are no devices).
pub fn spawn(
    vm: &str,
    polled: Vec<Polled>,
    crash: Crash,
) -> Result<DeviceThread, VirtioDevicesError> {
    let stop = EventFd::new(EFD_NONBLOCK).map_err(|e| VirtioDevicesError::Io("an eventfd", e))?;
    if polled.is_empty() {
        return Ok(DeviceThread { stop, thread: None });
    }
    let epoll =
        build_epoll(&polled, &stop).map_err(|e| VirtioDevicesError::Io("the device epoll", e))?;
    let poll_max = PollMax {
        driver: poll_max_from(POLL_MAX_ENV, POLL_MAX),
        io: poll_max_from(IO_POLL_MAX_ENV, IO_POLL_MAX),
    };
    let thread = std::thread::Builder::new()
        .name(format!("virtio-{vm}"))
        .spawn(move || {
            if let Err(e) = super::seccomp::apply(super::seccomp::ThreadKind::Device) {
                crash(e.to_string());
                return;
            }
            match catch_unwind(AssertUnwindSafe(|| device_loop(&epoll, &polled, poll_max))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => crash(format!("virtio device loop failed: {e}")),
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    crash(format!("virtio device thread panicked: {msg}"));
                }
            }
        })
        .map_err(|e| VirtioDevicesError::Io("the device thread", e))?;
    Ok(DeviceThread {
        stop,
        thread: Some(thread),
    })
}

/// Token of the stop eventfd.
const STOP: u64 = u64::MAX;
/// Token bit marking a device's own fd (else a queue eventfd).
const DEVICE_FD: u64 = 1 << 31;

fn token(device: usize, fd: u64) -> u64 {
    (device as u64) << 32 | fd
}

fn build_epoll(polled: &[Polled], stop: &EventFd) -> std::io::Result<Epoll> {
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        stop.as_raw_fd(),
        EpollEvent::new(EventSet::IN, STOP),
    )?;
    for (i, p) in polled.iter().enumerate() {
        for (q, evt) in p.queue_events.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                evt.as_raw_fd(),
                EpollEvent::new(EventSet::IN, token(i, q as u64)),
            )?;
        }
        let fds = p
            .device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .event_fds();
        for (k, fd) in fds.into_iter().enumerate() {
            // Devices drain their fds until they would block (or cannot progress and
            // wait for a queue kick): edge-triggered, so a stalled one does not spin.
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(
                    EventSet::IN | EventSet::EDGE_TRIGGERED,
                    token(i, DEVICE_FD | k as u64),
                ),
            )?;
        }
    }
    Ok(epoll)
}

/// Locks a device (a panic while it was locked was reported already; its state is still
/// the best there is).
fn lock(p: &Polled) -> std::sync::MutexGuard<'_, dyn devices::virtio::VirtioDevice<Mem> + 'static> {
    p.device.lock().unwrap_or_else(|e| e.into_inner())
}

/// The longest the device thread busy-polls before blocking unless [`POLL_MAX_ENV`] says
/// otherwise, waiting for the driver's next request; see [`PollWindow`]. Twice QEMU's
/// `poll-max-ns` default (32 µs, chosen for guests on hardware virtualization): a Linux
/// guest goes through its interrupt handler and block layer between a completion and its
/// next request, longer where it runs nested. (The polling test guest takes under 1 µs;
/// the window adapts down to what a driver needs.)
pub const POLL_MAX: Duration = Duration::from_micros(64);

/// Environment variable with the polling maximum in microseconds (`0` turns polling for
/// the driver off; [`IO_POLL_MAX_ENV`] sets the one for completions), read when a VM's
/// device thread starts: a tuning knob like QEMU's `poll-max-ns`, and what the benchmarks
/// use to compare with and without polling.
pub const POLL_MAX_ENV: &str = "MONOVIRT_VIRTIO_POLL_US";

/// The longest the device thread busy-polls for completions while the disks have I/O at
/// the host, unless [`IO_POLL_MAX_ENV`] says otherwise; see `device_loop`. A completion
/// is then certain to come, and a thread that blocks for it pays a wake-up (13 µs on the
/// development machines, against 4 µs for a polled one), while a 64 KiB `O_DIRECT`
/// transfer there takes 100-250 µs and a 4 KiB one 30-60 µs: past the driver's window.
/// This window adapts to the completions' pace as the driver's does to the driver's, so
/// a slow disk (milliseconds per request) is not polled for.
pub const IO_POLL_MAX: Duration = Duration::from_micros(256);

/// Environment variable with the completion-polling maximum in microseconds (`0`: poll
/// for completions only within the driver's window).
pub const IO_POLL_MAX_ENV: &str = "MONOVIRT_VIRTIO_IO_POLL_US";

/// A polling maximum: `env` if it holds a number of microseconds, else `default`.
fn poll_max_from(env: &str, default: Duration) -> Duration {
    std::env::var(env)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map_or(default, Duration::from_micros)
}

/// The polling maxima of a device thread.
#[derive(Clone, Copy, Debug)]
struct PollMax {
    /// For the driver's next request.
    driver: Duration,
    /// For completions of I/O at the host.
    io: Duration,
}

/// Runs until the stop eventfd fires: waits for queue kicks and device fds, and in
/// between busy-polls the pollable devices for as long as the adaptive windows say: the
/// driver's window ([`PollWindow`] over the waits for the driver's next request), or while
/// a disk has I/O at the host, the longer of it and the disk window (over the waits for
/// completions).
fn device_loop(epoll: &Epoll, polled: &[Polled], poll_max: PollMax) -> std::io::Result<()> {
    let mut events = vec![EpollEvent::default(); 64];
    let pollable_index: Vec<bool> = polled.iter().map(|p| lock(p).pollable()).collect();
    let pollable: Vec<&Polled> = polled
        .iter()
        .zip(&pollable_index)
        .filter_map(|(p, &yes)| yes.then_some(p))
        .collect();
    let (driver_max, io_max) = if pollable.is_empty() {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (poll_max.driver, poll_max.io)
    };
    let mut window = PollWindow::new(driver_max);
    let mut io_window = PollWindow::new(io_max);
    // Whether the pollable devices keep the driver's notifications off.
    let mut polling = false;
    // Whether the last look found I/O at the host.
    let mut in_flight = false;
    loop {
        let wait_start = Instant::now();
        let waiting_for_io = in_flight;
        let limit = |in_flight: bool| {
            if in_flight {
                window.current().max(io_window.current())
            } else {
                window.current()
            }
        };
        let mut found = Progress::default();
        if !limit(in_flight).is_zero() {
            if !polling {
                polling = true;
                for p in &pollable {
                    lock(p).set_polling(true);
                }
            }
            loop {
                let mut look = Progress::default();
                for p in &pollable {
                    look |= lock(p).poll();
                }
                found |= look;
                in_flight = look.in_flight;
                if found.any() || wait_start.elapsed() >= limit(in_flight) {
                    break;
                }
                // Spin, not sched_yield: on a busy host a yield hands the CPU to any
                // runnable task (a niced batch job) for a whole slice, which measured far
                // worse than the bounded spin.
                std::hint::spin_loop();
            }
        }
        if polling && !found.any() {
            // Nothing came: notifications back on before blocking, and one more look for
            // what arrived while they were off.
            polling = false;
            for p in &pollable {
                let mut device = lock(p);
                if device.set_polling(false) {
                    found |= device.poll();
                }
            }
        }
        // Having found work, only look at the fds (the stop event, other devices) before
        // polling again; otherwise block.
        let timeout = if found.any() { 0 } else { -1 };
        let n = match epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let (mut kicked, mut completed) = (false, false);
        for ev in &events[..n] {
            let data = ev.data();
            if data == STOP {
                return Ok(());
            }
            let index = (data >> 32) as usize;
            let Some(p) = polled.get(index) else {
                continue;
            };
            let is_pollable = pollable_index.get(index).copied().unwrap_or(false);
            let low = data & 0xffff_ffff;
            let mut device = lock(p);
            if low & DEVICE_FD != 0 {
                // A pollable device's own fds are its I/O completions.
                completed |= is_pollable;
                device.process_event((low & !DEVICE_FD) as usize);
            } else if let Some(evt) = p.queue_events.get(low as usize) {
                // Consume the kick before processing: a kick arriving meanwhile is seen.
                let _ = evt.read();
                kicked |= is_pollable;
                device.process_queue(low as usize);
            }
        }
        if completed || kicked {
            // Blocked until an event: what the disks have at the host now is unknown
            // until the next look; assume some, so that look may poll for them.
            in_flight = true;
        }
        let waited = wait_start.elapsed();
        // The wait ended with the driver's next request: tune the window to it.
        if found.requests || kicked {
            window.waited(waited);
        }
        // The wait for I/O ended with a completion: tune the disk window to it.
        if waiting_for_io && (found.completions || completed) {
            io_window.waited(waited);
        }
    }
}

/// A random locally administered unicast MAC in QEMU's 52:54:00 prefix.
fn random_mac() -> std::io::Result<[u8; 6]> {
    let mut tail = [0u8; 3];
    // SAFETY: getrandom writes at most 3 bytes into `tail`.
    let n = unsafe { libc::getrandom(tail.as_mut_ptr().cast(), tail.len(), 0) };
    if n != 3 {
        return Err(std::io::Error::last_os_error());
    }
    Ok([0x52, 0x54, 0x00, tail[0], tail[1], tail[2]])
}

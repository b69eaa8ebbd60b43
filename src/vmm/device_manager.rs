//! The PCI root complex and the virtio devices of one VM, wired to KVM.
//!
//! - configuration space: ports 0xCF8..=0xCFF and the ECAM window on the VM's buses;
//! - BARs: the 32-bit PCI MMIO window on the MMIO bus, routed by [`PciBus`] to whichever
//!   function's BAR holds the address (BARs come from a [`BarAllocator`] over that window);
//! - queue notifications: each queue's eventfd is a KVM ioeventfd at its notify address,
//!   so a kick does not exit to userspace (re-registered when the guest moves a BAR);
//! - interrupts: MSI-X vectors through KVM irqfds and GSI routes ([`super::msi`]);
//! - processing: one thread `virtio-<vm>` polls every queue eventfd and device fd and
//!   calls the device; it stops (and is joined) when the manager is dropped.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arch::layout;
use devices::bus::{Bus, BusDevice};
use devices::pci::{BarAllocator, PciBus, PciConfigIo, PciConfigMmio, SlotBarMove};
use devices::virtio::block::{BlockConfig, BlockDevice, ThreadInit, DEFAULT_WORKERS};
use devices::virtio::console::ConsoleDevice;
use devices::virtio::net::{NetBackend, NetConfig, NetDevice, Tap};
use devices::virtio::rng::RngDevice;
use devices::virtio::transport::pci::{BAR_SIZE, NOTIFY_OFFSET, NOTIFY_OFF_MULTIPLIER};
use devices::virtio::transport::{SharedVirtioDevice, VirtioPciDevice};
use devices::virtio::vsock::VsockDevice;
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::config::VmConfig;
use super::device_config::VirtioConsoleConfig;
use super::msi::MsiRouting;

// The devices crate and the arch layout describe the same root complex.
const _: () = assert!(devices::pci::layout::ECAM_BASE == layout::PCI_ECAM_START);
const _: () = assert!(devices::pci::layout::ECAM_SIZE == layout::PCI_ECAM_SIZE);
const _: () = assert!(devices::pci::layout::MMIO32_BASE == layout::MMIO32_START);
const _: () = assert!(devices::pci::layout::MMIO32_SIZE == layout::MMIO32_SIZE);
const _: () = assert!(devices::pci::layout::MMIO64_SIZE == layout::MMIO64_SIZE);

type Mem = Arc<GuestMemoryMmap>;

/// Errors setting up devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A virtio device could not be created.
    #[error("Cannot create {0}")]
    Device(String, #[source] Box<dyn std::error::Error + Send + Sync>),
    /// A KVM ioctl failed.
    #[error("KVM failed to {0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// Placing a device on a bus failed.
    #[error("Cannot place {0} on its bus")]
    Bus(&'static str, #[source] devices::bus::BusError),
    /// Eventfd, epoll or thread set-up.
    #[error("Cannot set up {0}")]
    Io(&'static str, #[source] std::io::Error),
}

fn device_err<E: std::error::Error + Send + Sync + 'static>(
    what: String,
) -> impl FnOnce(E) -> DeviceError {
    move |e| DeviceError::Device(what, Box::new(e))
}

/// The queue eventfds registered with KVM, by slot, to follow BAR moves.
struct IoEvents {
    vm: Arc<VmFd>,
    slots: Mutex<HashMap<u8, Vec<EventFd>>>,
}

fn notify_address(bar: u64, queue: usize) -> u64 {
    bar + NOTIFY_OFFSET + queue as u64 * u64::from(NOTIFY_OFF_MULTIPLIER)
}

impl IoEvents {
    fn moved(&self, moves: Vec<SlotBarMove>) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for m in moves {
            let Some(events) = slots.get(&m.slot).filter(|_| m.bar_move.bar == 0) else {
                continue;
            };
            for (q, evt) in events.iter().enumerate() {
                let old = IoEventAddress::Mmio(notify_address(m.bar_move.old, q));
                let new = IoEventAddress::Mmio(notify_address(m.bar_move.new, q));
                let _ = self.vm.unregister_ioevent(evt, &old, NoDatamatch);
                if let Err(e) = self.vm.register_ioevent(evt, &new, NoDatamatch) {
                    // Kicks then exit to userspace and still reach the queue.
                    tracing::warn!(slot = m.slot, queue = q, error = %e, "cannot move ioeventfd");
                }
            }
        }
    }
}

/// Ports 0xCF8..=0xCFF on the port bus.
struct ConfigPorts {
    io: PciConfigIo,
    ioevents: Arc<IoEvents>,
}

impl BusDevice for ConfigPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.io.read(offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let moves = self.io.write(offset, data);
        if !moves.is_empty() {
            self.ioevents.moved(moves);
        }
    }
}

/// The ECAM window on the MMIO bus.
struct Ecam {
    ecam: PciConfigMmio,
    ioevents: Arc<IoEvents>,
}

impl BusDevice for Ecam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.ecam.read(offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let moves = self.ecam.write(offset, data);
        if !moves.is_empty() {
            self.ioevents.moved(moves);
        }
    }
}

/// A PCI MMIO window on the MMIO bus: accesses go to the BAR that holds the address.
struct BarWindow {
    base: u64,
    pci: Arc<PciBus>,
}

impl BusDevice for BarWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if !self.pci.mmio_read(self.base + offset, data) {
            data.fill(0xff);
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.pci.mmio_write(self.base + offset, data);
    }
}

/// What the device thread polls for one device.
struct Polled {
    device: SharedVirtioDevice<Mem>,
    queue_events: Vec<EventFd>,
}

/// The devices of a VM and their thread.
pub struct DeviceManager {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    _pci: Arc<PciBus>,
}

impl Drop for DeviceManager {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            // A panic in it was caught and reported already.
            let _ = t.join();
        }
    }
}

/// Builds the PCI root complex and the virtio devices `config` asks for, puts them on
/// the buses, and starts their thread. `crash` reports a failure of that thread.
pub fn create(
    vm: &Arc<VmFd>,
    guest: &GuestMemoryMmap,
    pio: &Bus,
    mmio: &Bus,
    config: &VmConfig,
    crash: Arc<dyn Fn(String) + Send + Sync>,
    stats: &super::stats::VmStats,
) -> Result<DeviceManager, DeviceError> {
    let mem: Mem = Arc::new(guest.clone());
    let mut devices: Vec<(String, SharedVirtioDevice<Mem>)> = Vec::new();
    // Disk I/O workers are device threads: the same filter, installed on each as it starts.
    let worker_init = {
        let crash = crash.clone();
        ThreadInit(Arc::new(move || {
            super::seccomp::apply(super::seccomp::ThreadKind::Device).map_err(|e| {
                crash(e.to_string());
                e.to_string()
            })
        }))
    };
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
            None => random_mac().map_err(|e| DeviceError::Io("a MAC address", e))?,
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

    let routing = Arc::new(MsiRouting::new(vm.clone()));
    let mut allocator = BarAllocator::new(layout::MMIO32_START, layout::MMIO32_SIZE)
        .map_err(device_err("the PCI MMIO window".into()))?;
    let mut pci = PciBus::new();
    let ioevents = Arc::new(IoEvents {
        vm: vm.clone(),
        slots: Mutex::new(HashMap::new()),
    });
    let mut polled = Vec::with_capacity(devices.len());
    for (name, device) in devices {
        let bar = allocator
            .allocate(BAR_SIZE)
            .map_err(device_err(format!("BAR of {name}")))?;
        let queues = device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queue_max_sizes()
            .len();
        // One vector per queue and one for configuration changes.
        let msi = routing
            .group(queues as u16 + 1)
            .map_err(|e| DeviceError::Io("MSI-X vectors", e))?;
        let transport = VirtioPciDevice::new(device.clone(), mem.clone(), Arc::new(msi), bar)
            .map_err(device_err(format!("virtio-pci function of {name}")))?;
        let mut registered = Vec::with_capacity(queues);
        let mut thread_events = Vec::with_capacity(queues);
        for (q, evt) in transport.queue_events().iter().enumerate() {
            vm.register_ioevent(
                evt,
                &IoEventAddress::Mmio(transport.notify_address(q)),
                NoDatamatch,
            )
            .map_err(|e| DeviceError::Kvm("register a queue ioeventfd", e))?;
            registered.push(
                evt.try_clone()
                    .map_err(|e| DeviceError::Io("an eventfd", e))?,
            );
            thread_events.push(
                evt.try_clone()
                    .map_err(|e| DeviceError::Io("an eventfd", e))?,
            );
        }
        let slot = pci
            .add_device(Arc::new(Mutex::new(transport)))
            .map_err(device_err(format!("PCI slot for {name}")))?;
        tracing::debug!(device = %name, slot, bar = format_args!("{bar:#x}"), "virtio-pci device");
        ioevents
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot, registered);
        polled.push(Polled {
            device,
            queue_events: thread_events,
        });
    }

    let pci = Arc::new(pci);
    pio.insert(
        Arc::new(Mutex::new(ConfigPorts {
            io: PciConfigIo::new(pci.clone()),
            ioevents: ioevents.clone(),
        })),
        u64::from(devices::pci::layout::CONFIG_ADDRESS_PORT),
        u64::from(devices::pci::layout::CONFIG_IO_PORT_COUNT),
    )
    .map_err(|e| DeviceError::Bus("PCI configuration ports", e))?;
    mmio.insert(
        Arc::new(Mutex::new(Ecam {
            ecam: PciConfigMmio::new(pci.clone()),
            ioevents,
        })),
        layout::PCI_ECAM_START,
        layout::PCI_ECAM_SIZE,
    )
    .map_err(|e| DeviceError::Bus("PCI ECAM", e))?;
    mmio.insert(
        Arc::new(Mutex::new(BarWindow {
            base: layout::MMIO32_START,
            pci: pci.clone(),
        })),
        layout::MMIO32_START,
        layout::MMIO32_SIZE,
    )
    .map_err(|e| DeviceError::Bus("PCI MMIO window", e))?;

    let stop = EventFd::new(EFD_NONBLOCK).map_err(|e| DeviceError::Io("an eventfd", e))?;
    let thread = if polled.is_empty() {
        None
    } else {
        let epoll =
            build_epoll(&polled, &stop).map_err(|e| DeviceError::Io("the device epoll", e))?;
        let name = format!("virtio-{}", config.name);
        Some(
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    if let Err(e) = super::seccomp::apply(super::seccomp::ThreadKind::Device) {
                        crash(e.to_string());
                        return;
                    }
                    match catch_unwind(AssertUnwindSafe(|| device_loop(&epoll, &polled))) {
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
                .map_err(|e| DeviceError::Io("the device thread", e))?,
        )
    };
    Ok(DeviceManager {
        stop,
        thread,
        _pci: pci,
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

/// Runs until the stop eventfd fires.
fn device_loop(epoll: &Epoll, polled: &[Polled]) -> std::io::Result<()> {
    let mut events = vec![EpollEvent::default(); 64];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for ev in &events[..n] {
            let data = ev.data();
            if data == STOP {
                return Ok(());
            }
            let Some(p) = polled.get((data >> 32) as usize) else {
                continue;
            };
            let low = data & 0xffff_ffff;
            let mut device = p.device.lock().unwrap_or_else(|e| e.into_inner());
            if low & DEVICE_FD != 0 {
                device.process_event((low & !DEVICE_FD) as usize);
            } else if let Some(evt) = p.queue_events.get(low as usize) {
                // Consume the kick before processing: a kick arriving meanwhile is seen.
                let _ = evt.read();
                device.process_queue(low as usize);
            }
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

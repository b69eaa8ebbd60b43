//! The PCI root complex and the virtio devices of one VM, wired to KVM.
//!
//! - configuration space: ports 0xCF8..=0xCFF and the ECAM window on the VM's buses;
//! - BARs: the 32-bit PCI MMIO window on the MMIO bus, routed by [`PciBus`] to whichever
//!   function's BAR holds the address (BARs come from a [`BarAllocator`] over that window);
//! - queue notifications: each queue's eventfd is a KVM ioeventfd at its notify address,
//!   so a kick does not exit to userspace (re-registered when the guest moves a BAR);
//! - interrupts: MSI-X vectors through KVM irqfds and GSI routes ([`super::msi`]);
//! - processing: the device thread of [`super::virtio_devices`], stopped (and joined)
//!   when the manager is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arch::layout;
use devices::bus::{Bus, BusDevice};
use devices::pci::{BarAllocator, PciBus, PciConfigIo, PciConfigMmio, SlotBarMove};
use devices::virtio::transport::pci::{BAR_SIZE, NOTIFY_OFFSET, NOTIFY_OFF_MULTIPLIER};
use devices::virtio::transport::VirtioPciDevice;
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::config::VmConfig;
use super::msi::MsiRouting;
use super::virtio_devices::{self, DeviceThread, Mem, Polled, VirtioDevicesError};

// The devices crate and the arch layout describe the same root complex.
const _: () = assert!(devices::pci::layout::ECAM_BASE == layout::PCI_ECAM_START);
const _: () = assert!(devices::pci::layout::ECAM_SIZE == layout::PCI_ECAM_SIZE);
const _: () = assert!(devices::pci::layout::MMIO32_BASE == layout::MMIO32_START);
const _: () = assert!(devices::pci::layout::MMIO32_SIZE == layout::MMIO32_SIZE);
const _: () = assert!(devices::pci::layout::MMIO64_SIZE == layout::MMIO64_SIZE);

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
    /// The device models or their thread.
    #[error(transparent)]
    Virtio(#[from] VirtioDevicesError),
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

/// The devices of a VM and their thread.
pub struct DeviceManager {
    _thread: DeviceThread,
    _pci: Arc<PciBus>,
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
    let devices = virtio_devices::build(config, stats, crash.clone())?;

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

    let thread = virtio_devices::spawn(&config.name, polled, crash)?;
    Ok(DeviceManager {
        _thread: thread,
        _pci: pci,
    })
}

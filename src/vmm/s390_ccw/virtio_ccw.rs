//! The virtio devices of an s390x VM as virtio-ccw devices on KVM on Z, the counterpart
//! of the x86_64 machine's `device_manager`:
//!
//! - each device model ([`super::super::virtio_devices::build`]) gets a subchannel of
//!   the VM's channel subsystem ([`ChannelSubsystem::attach_virtio`]);
//! - queue notifications (DIAGNOSE 0x500 subcode 3: subchannel ID in r2, queue in r3)
//!   go to each queue's eventfd in the kernel: a KVM ioeventfd with
//!   `KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY`, address = subchannel ID, datamatch = queue;
//!   one that reaches userspace anyway is served by [`ChannelSubsystem::notify`];
//! - the device thread of `virtio_devices` polls those eventfds;
//! - interrupts ([`KvmIoInterrupts`]): adapter indicators through an irqfd per queue on
//!   a `KVM_IRQ_ROUTING_S390_ADAPTER` GSI route, on the FLIC adapter registered for the
//!   driver's ISC (the kernel sets indicator and summary bits and makes the adapter
//!   interruption pending); classic indicators, configuration changes and channel
//!   program completions as I/O interruptions with `KVM_S390_INTERRUPT`.
//!
//! [`AdapterRoutes`] (the GSI table) is pure and tested on every host; the KVM calls
//! need KVM on Z.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::{Arc, Mutex};

use arch::kvm::{fd::IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY, VmFd};
use arch::s390x::flic::{self, RoutingEntry};
use arch::s390x::kvm as s390;
use devices::virtio::transport::ccw::command::ThinintArea;
use devices::virtio::transport::ccw::SubchannelId;
use devices::virtio::transport::ccw::{ChannelSubsystem, IoInterruptSink, PendingInterrupt};
use devices::virtio::transport::SharedVirtioDevice;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::vmm::virtio_devices::{Mem, Polled};

/// Errors wiring the devices to KVM.
#[derive(Debug, thiserror::Error)]
pub enum CcwDevicesError {
    /// A KVM ioctl.
    #[error("KVM failed to {0}")]
    Kvm(&'static str, #[source] std::io::Error),
    /// Eventfds.
    #[error("Cannot set up the queue eventfds of {0}")]
    Io(String, #[source] std::io::Error),
}

/// The adapter-interrupt GSI routes of the VM's devices, by subchannel.
#[derive(Debug, Default)]
pub struct AdapterRoutes {
    by_subchannel: BTreeMap<u32, Vec<RoutingEntry>>,
    free: Vec<u32>,
    next: u32,
}

impl AdapterRoutes {
    fn gsi(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Routes the `queues` queues of `subchannel` for its driver's `area` (replacing its
    /// earlier routes): the entries, one per queue. `None` (nothing changed) if the ISC
    /// has no adapter or an indicator bit is outside its page.
    pub fn set(
        &mut self,
        subchannel: SubchannelId,
        area: &ThinintArea,
        queues: usize,
    ) -> Option<Vec<RoutingEntry>> {
        if area.isc > flic::MAX_ISC {
            return None;
        }
        let routes = (0..queues)
            .map(|q| {
                flic::virtio_queue_route(
                    flic::virtio_adapter(area.isc).id,
                    area.summary_indicator,
                    area.indicator,
                    area.bit_nr,
                    u16::try_from(q).ok()?,
                )
            })
            .collect::<Option<Vec<_>>>()?;
        self.remove(subchannel);
        let entries: Vec<RoutingEntry> = routes
            .into_iter()
            .map(|r| RoutingEntry::adapter(self.gsi(), r))
            .collect();
        self.by_subchannel
            .insert(subchannel.word(), entries.clone());
        Some(entries)
    }

    /// Drops the routes of `subchannel`; whether it had any.
    pub fn remove(&mut self, subchannel: SubchannelId) -> bool {
        match self.by_subchannel.remove(&subchannel.word()) {
            Some(old) => {
                self.free.extend(old.iter().map(|e| e.gsi));
                true
            }
            None => false,
        }
    }

    /// The whole routing table.
    pub fn table(&self) -> Vec<RoutingEntry> {
        self.by_subchannel.values().flatten().copied().collect()
    }
}

/// The FLIC with one virtio adapter per ISC, and the routes on it.
struct Adapters {
    flic: File,
    routes: Mutex<AdapterRoutes>,
}

/// The VM's I/O interruptions on KVM on Z.
pub struct KvmIoInterrupts {
    vm: Arc<VmFd>,
    adapters: Option<Adapters>,
}

impl KvmIoInterrupts {
    /// Interruptions of `vm` through `KVM_S390_INTERRUPT` only (no devices with adapter
    /// indicators).
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self { vm, adapters: None }
    }

    /// Also routes adapter indicators: turns on the in-kernel irqchip, creates the FLIC
    /// and registers the virtio adapter of every ISC.
    pub fn with_adapter_routes(vm: Arc<VmFd>) -> Result<Self, CcwDevicesError> {
        flic::create_irqchip(&vm).map_err(|e| CcwDevicesError::Kvm("create the irqchip", e))?;
        let flic_fd =
            flic::create_flic(&vm).map_err(|e| CcwDevicesError::Kvm("create the FLIC", e))?;
        for isc in 0..=flic::MAX_ISC {
            flic::register_adapter(&flic_fd, &flic::virtio_adapter(isc))
                .map_err(|e| CcwDevicesError::Kvm("register an I/O adapter", e))?;
        }
        Ok(Self {
            vm,
            adapters: Some(Adapters {
                flic: flic_fd,
                routes: Mutex::new(AdapterRoutes::default()),
            }),
        })
    }
}

impl IoInterruptSink for KvmIoInterrupts {
    fn subchannel(&self, irq: PendingInterrupt) -> std::io::Result<()> {
        let id = irq.id;
        let ty = s390::int_io(
            false,
            u32::from(id.cssid),
            u32::from(id.ssid),
            u32::from(id.number),
        );
        let word = s390::io_interruption_word(irq.isc, false);
        s390::inject(
            &self.vm,
            ty,
            id.word(),
            (u64::from(irq.intparm) << 32) | u64::from(word),
        )
    }

    fn adapter(&self, isc: u8) -> std::io::Result<()> {
        // Only when the indicators could not be routed (see `route_adapter`).
        let word = s390::io_interruption_word(isc, true);
        s390::inject(&self.vm, s390::int_io(true, 0, 0, 0), 0, u64::from(word))
    }

    fn route_adapter(
        &self,
        subchannel: SubchannelId,
        area: &ThinintArea,
        queues: usize,
    ) -> std::io::Result<Option<Vec<EventFd>>> {
        let Some(adapters) = &self.adapters else {
            return Ok(None);
        };
        let mut routes = adapters.routes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entries) = routes.set(subchannel, area, queues) else {
            return Ok(None);
        };
        let id = flic::virtio_adapter(area.isc).id;
        let apply = || -> std::io::Result<Vec<EventFd>> {
            // What QEMU does; kernels since 5.x pin the pages when routing instead.
            for addr in [area.indicator, area.summary_indicator] {
                flic::modify_adapter(&adapters.flic, id, flic::IO_ADAPTER_MAP, addr)?;
            }
            flic::set_gsi_routing(&self.vm, &routes.table())?;
            entries
                .iter()
                .map(|e| {
                    let evt = EventFd::new(EFD_NONBLOCK)?;
                    self.vm.register_irqfd(&evt, e.gsi)?;
                    Ok(evt)
                })
                .collect()
        };
        match apply() {
            Ok(notifiers) => Ok(Some(notifiers)),
            Err(e) => {
                routes.remove(subchannel);
                Err(e)
            }
        }
    }

    fn unroute_adapter(&self, subchannel: SubchannelId) {
        let Some(adapters) = &self.adapters else {
            return;
        };
        let mut routes = adapters.routes.lock().unwrap_or_else(|e| e.into_inner());
        // The transport dropped the notifiers, which releases their irqfds.
        if routes.remove(subchannel) {
            if let Err(e) = flic::set_gsi_routing(&self.vm, &routes.table()) {
                tracing::warn!("Cannot drop adapter routes: {e}");
            }
        }
    }
}

/// Where the queue notification eventfds are registered.
pub trait NotifyRegistry {
    /// Writes `evt` when the guest notifies queue `queue` of subchannel `subchannel`.
    fn register(&self, evt: &EventFd, subchannel: u32, queue: u16) -> std::io::Result<()>;
}

impl NotifyRegistry for VmFd {
    fn register(&self, evt: &EventFd, subchannel: u32, queue: u16) -> std::io::Result<()> {
        // The kernel compares the 8-byte r3 with the datamatch.
        self.register_ioeventfd(
            evt,
            u64::from(subchannel),
            8,
            IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY,
            Some(u64::from(queue)),
        )
    }
}

/// Puts each named device on a subchannel of `css` and registers its queue eventfds
/// with `registry`; returns what the device thread polls.
pub fn attach(
    css: &mut ChannelSubsystem<Mem>,
    registry: &dyn NotifyRegistry,
    devices: Vec<(String, SharedVirtioDevice<Mem>)>,
) -> Result<Vec<Polled>, CcwDevicesError> {
    let mut polled = Vec::with_capacity(devices.len());
    for (name, device) in devices {
        let io_err = |e| CcwDevicesError::Io(name.clone(), e);
        let (id, ccw) = css.attach_virtio(device.clone()).map_err(io_err)?;
        let ccw = ccw.lock().unwrap_or_else(|e| e.into_inner());
        let mut queue_events = Vec::with_capacity(ccw.queue_events().len());
        for (q, evt) in ccw.queue_events().iter().enumerate() {
            let queue = u16::try_from(q).expect("virtio devices have fewer than 65536 queues");
            registry
                .register(evt, id.word(), queue)
                .map_err(|e| CcwDevicesError::Kvm("register a queue ioeventfd", e))?;
            queue_events.push(evt.try_clone().map_err(io_err)?);
        }
        tracing::debug!(device = %name, subchannel = format_args!("0.0.{:04x}", id.number), "virtio-ccw device");
        polled.push(Polled {
            device,
            queue_events,
        });
    }
    Ok(polled)
}

// Tests may unwrap: a failed unwrap is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn area(isc: u8, bit_nr: u64) -> ThinintArea {
        ThinintArea {
            summary_indicator: 0x6000,
            indicator: 0x6100,
            bit_nr,
            isc,
        }
    }

    #[test]
    fn adapter_routes_take_one_gsi_per_queue_and_give_them_back() {
        let mut r = AdapterRoutes::default();
        let a = SubchannelId::new(0, 0);
        let b = SubchannelId::new(0, 1);
        let ea = r.set(a, &area(3, 0), 2).unwrap();
        let eb = r.set(b, &area(5, 2), 3).unwrap();
        assert_eq!(ea.iter().map(|e| e.gsi).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(eb.iter().map(|e| e.gsi).collect::<Vec<_>>(), [2, 3, 4]);
        // Queue n of b: bit 2 + n from 0x6100 on the ISC 5 adapter.
        assert_eq!(eb[2].ty, flic::IRQ_ROUTING_S390_ADAPTER);
        assert_eq!(eb[2].adapter.ind_offset, 4);
        assert_eq!(eb[2].adapter.adapter_id, 5);
        assert_eq!(eb[2].adapter.summary_addr, 0x6000);
        assert_eq!(r.table().len(), 5);
        // Re-registering replaces a's routes; their GSIs are reused.
        let ea2 = r.set(a, &area(3, 8), 2).unwrap();
        let mut gsis: Vec<u32> = ea2.iter().map(|e| e.gsi).collect();
        gsis.sort();
        assert_eq!(gsis, [0, 1]);
        assert_eq!(r.table().len(), 5);
        assert!(r.remove(b));
        assert!(!r.remove(b));
        assert_eq!(r.table(), ea2);
        // An ISC above 7 or a bit outside the indicator page is not routed, and the
        // earlier routes stay.
        assert_eq!(r.set(a, &area(8, 0), 1), None);
        assert_eq!(r.set(a, &area(3, 4096 * 8), 1), None);
        assert_eq!(r.table(), ea2);
    }

    /// Records the registrations KVM would get.
    #[derive(Default)]
    struct Registry(Mutex<Vec<(u32, u16)>>);

    impl NotifyRegistry for Registry {
        fn register(&self, _evt: &EventFd, subchannel: u32, queue: u16) -> std::io::Result<()> {
            self.0.lock().unwrap().push((subchannel, queue));
            Ok(())
        }
    }

    struct NoInterrupts;

    impl IoInterruptSink for NoInterrupts {
        fn subchannel(&self, _: PendingInterrupt) -> std::io::Result<()> {
            Ok(())
        }
        fn adapter(&self, _: u8) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_device_gets_a_subchannel_and_its_queues_notify_ioeventfds() {
        use devices::virtio::rng::RngDevice;
        use devices::virtio::vsock::{VsockConfig, VsockDevice};
        use vm_memory::{GuestAddress, GuestMemoryMmap};

        let mem: Mem =
            Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap());
        let mut css = ChannelSubsystem::new(mem, Arc::new(NoInterrupts));
        let dir = std::env::temp_dir().join(format!("ccw-attach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vsock = VsockDevice::<Mem>::new(VsockConfig {
            cid: 3,
            socket: dir.join("v.sock"),
        })
        .unwrap();
        let devices: Vec<(String, SharedVirtioDevice<Mem>)> = vec![
            ("rng".into(), Arc::new(Mutex::new(RngDevice::<Mem>::new()))),
            ("vsock".into(), Arc::new(Mutex::new(vsock))),
        ];
        let registry = Registry::default();
        let polled = attach(&mut css, &registry, devices).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // Subchannel IDs as DIAGNOSE 0x500 passes them in r2: the "one" bit (15) and the
        // subchannel number; rng has one queue, vsock three (rx, tx, event).
        assert_eq!(
            *registry.0.lock().unwrap(),
            vec![
                (0x0001_0000, 0),
                (0x0001_0001, 0),
                (0x0001_0001, 1),
                (0x0001_0001, 2)
            ]
        );
        assert_eq!(polled.len(), 2);
        assert_eq!(polled[1].queue_events.len(), 3);
        // A notification that reaches the VMM lands on the polled eventfd.
        assert!(css.notify(0x0001_0001, 2));
        assert!(polled[1].queue_events[2].read().is_ok());
        assert!(!css.notify(0x0001_0002, 0), "no third subchannel");
    }
}

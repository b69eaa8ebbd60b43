//! MSI-X delivery through KVM: each vector of a PCI function gets a GSI, an irqfd bound to
//! it, and an MSI route carrying the message the guest programmed into the vector's table
//! entry. Firing a vector is one eventfd write; KVM injects the interrupt.
//!
//! KVM_SET_GSI_ROUTING replaces the whole table, so [`MsiRouting`] keeps the in-kernel
//! irqchip's default routes (GSIs 0-23 to the PIC and IOAPIC pins, which the legacy
//! devices' irqfds use) and every MSI route, and installs them all on each change.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use devices::pci::{MsiMessage, MsiNotifier};
use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// GSIs below this are the IOAPIC's pins.
const IOAPIC_PINS: u32 = 24;
/// GSIs below this also reach the PIC pair.
const PIC_PINS: u32 = 16;

fn irqchip_route(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

fn msi_route(gsi: u32, message: MsiMessage) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = message.address as u32;
    e.u.msi.address_hi = (message.address >> 32) as u32;
    e.u.msi.data = message.data;
    e
}

/// The routing table of one VM.
pub struct MsiRouting {
    vm: Arc<VmFd>,
    state: Mutex<RoutingState>,
}

struct RoutingState {
    next_gsi: u32,
    msi: BTreeMap<u32, MsiMessage>,
}

impl MsiRouting {
    /// The routing of `vm`; MSI GSIs are handed out above the IOAPIC's.
    pub fn new(vm: Arc<VmFd>) -> Self {
        MsiRouting {
            vm,
            state: Mutex::new(RoutingState {
                next_gsi: IOAPIC_PINS,
                msi: BTreeMap::new(),
            }),
        }
    }

    /// Allocates `vectors` GSIs with an irqfd each, for one PCI function.
    pub fn group(self: &Arc<Self>, vectors: u16) -> io::Result<MsiGroup> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let first = state.next_gsi;
        let mut irqfds = Vec::with_capacity(usize::from(vectors));
        for i in 0..u32::from(vectors) {
            let evt = EventFd::new(EFD_NONBLOCK)?;
            self.vm
                .register_irqfd(&evt, first + i)
                .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
            irqfds.push(evt);
        }
        state.next_gsi += u32::from(vectors);
        Ok(MsiGroup {
            routing: self.clone(),
            first_gsi: first,
            irqfds,
        })
    }

    fn set(&self, gsi: u32, message: Option<MsiMessage>) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match message {
            Some(m) => state.msi.insert(gsi, m),
            None => state.msi.remove(&gsi),
        };
        let mut routes = Vec::with_capacity(40 + state.msi.len());
        for gsi in 0..IOAPIC_PINS {
            if gsi < PIC_PINS {
                let chip = if gsi < 8 {
                    KVM_IRQCHIP_PIC_MASTER
                } else {
                    KVM_IRQCHIP_PIC_SLAVE
                };
                routes.push(irqchip_route(gsi, chip, gsi % 8));
            }
            routes.push(irqchip_route(gsi, KVM_IRQCHIP_IOAPIC, gsi));
        }
        routes.extend(state.msi.iter().map(|(gsi, m)| msi_route(*gsi, *m)));
        let table = KvmIrqRouting::from_entries(&routes)
            .map_err(|e| io::Error::other(format!("routing table: {e:?}")))?;
        self.vm
            .set_gsi_routing(&table)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

/// The vectors of one PCI function: what its MSI-X capability delivers through.
pub struct MsiGroup {
    routing: Arc<MsiRouting>,
    first_gsi: u32,
    irqfds: Vec<EventFd>,
}

impl MsiNotifier for MsiGroup {
    fn notify(&self, vector: u16) -> io::Result<()> {
        self.irqfds
            .get(usize::from(vector))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?
            .write(1)
    }

    fn update(&self, vector: u16, message: MsiMessage, _masked: bool) -> io::Result<()> {
        if usize::from(vector) >= self.irqfds.len() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // A masked vector never fires (MsixConfig holds it pending), so its route can
        // stay; a vector without a programmed address has none.
        let route = (message.address != 0).then_some(message);
        self.routing.set(self.first_gsi + u32::from(vector), route)
    }
}

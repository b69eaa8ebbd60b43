//! Adapter (thin) interrupts on KVM on Z without a userspace exit per interrupt: the
//! floating interrupt controller device (`KVM_DEV_TYPE_FLIC`) with one registered I/O
//! adapter per interruption subclass, the in-kernel irqchip
//! (`KVM_CAP_S390_IRQCHIP`, `KVM_CREATE_IRQCHIP`), and GSI routes of type
//! `KVM_IRQ_ROUTING_S390_ADAPTER` that an irqfd triggers. On such a trigger the kernel
//! sets the route's indicator bit and summary bit in guest memory and, if the summary
//! bit was clear, makes an adapter interruption on the adapter's ISC pending
//! (`arch/s390/kvm/interrupt.c`: `set_adapter_int`).
//!
//! Layouts are `struct kvm_s390_io_adapter`, `struct kvm_s390_io_adapter_req`
//! (arch/s390/include/uapi/asm/kvm.h), `struct kvm_irq_routing_s390_adapter`,
//! `struct kvm_irq_routing_entry` and `struct kvm_irq_routing` (include/uapi/linux/kvm.h);
//! the tests check their sizes and offsets against those headers.

use std::fs::File;
use std::io;

use crate::kvm::fd::{value_ioctl, write_ioctl};
use crate::kvm::{DeviceAttr, EnableCap, Encoding, VmFd};

use super::kvm::CAP_S390_IRQCHIP;

const G: Encoding = Encoding::Generic;
const PAGE_SIZE: u64 = 4096;

/// `KVM_DEV_TYPE_FLIC`.
pub const DEV_TYPE_FLIC: u32 = 6;
/// `KVM_DEV_FLIC_ADAPTER_REGISTER`.
pub const FLIC_ADAPTER_REGISTER: u32 = 6;
/// `KVM_DEV_FLIC_ADAPTER_MODIFY`.
pub const FLIC_ADAPTER_MODIFY: u32 = 7;
/// `KVM_S390_IO_ADAPTER_MAP`.
pub const IO_ADAPTER_MAP: u8 = 2;
/// `KVM_S390_IO_ADAPTER_UNMAP`.
pub const IO_ADAPTER_UNMAP: u8 = 3;
/// `KVM_IRQ_ROUTING_S390_ADAPTER`.
pub const IRQ_ROUTING_S390_ADAPTER: u32 = 3;
/// `KVM_CAP_IRQ_ROUTING`.
pub const CAP_IRQ_ROUTING: u32 = 25;
/// Highest interruption subclass.
pub const MAX_ISC: u8 = 7;
/// The summary indicator bit virtio-ccw uses: the least significant bit of the summary
/// byte, which is bit 7 counted from the most significant bit of a swapped adapter.
pub const VIRTIO_SUMMARY_OFFSET: u32 = 7;

/// `struct kvm_s390_io_adapter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoAdapter {
    /// Adapter ID, chosen by userspace.
    pub id: u32,
    /// Interruption subclass of its interruptions.
    pub isc: u8,
    /// Whether the guest can mask it.
    pub maskable: u8,
    /// Bit numbers count from the most significant bit (virtio-ccw's order).
    pub swap: u8,
    /// `KVM_S390_ADAPTER_*` flags.
    pub flags: u8,
}

/// `struct kvm_s390_io_adapter_req`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoAdapterReq {
    /// Adapter ID.
    pub id: u32,
    /// `KVM_S390_IO_ADAPTER_{MASK,MAP,UNMAP}`.
    pub ty: u8,
    /// Mask state for `MASK`.
    pub mask: u8,
    /// Padding.
    pub pad0: u16,
    /// Guest address for `MAP`/`UNMAP`.
    pub addr: u64,
}

/// `struct kvm_irq_routing_s390_adapter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdapterRoute {
    /// Guest address of the indicator bits.
    pub ind_addr: u64,
    /// Guest address of the summary indicator.
    pub summary_addr: u64,
    /// Indicator bit number, from `ind_addr`.
    pub ind_offset: u64,
    /// Summary bit number, from `summary_addr`.
    pub summary_offset: u32,
    /// The registered adapter whose interruption is made pending.
    pub adapter_id: u32,
}

/// `struct kvm_irq_routing_entry` of type [`IRQ_ROUTING_S390_ADAPTER`] (the adapter
/// route is the union's largest member, 32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoutingEntry {
    /// The GSI an irqfd names.
    pub gsi: u32,
    /// `KVM_IRQ_ROUTING_*`.
    pub ty: u32,
    /// Must be 0.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
    /// The route.
    pub adapter: AdapterRoute,
}

impl RoutingEntry {
    /// An adapter route for `gsi`.
    pub fn adapter(gsi: u32, adapter: AdapterRoute) -> Self {
        Self {
            gsi,
            ty: IRQ_ROUTING_S390_ADAPTER,
            flags: 0,
            pad: 0,
            adapter,
        }
    }
}

/// `struct kvm_irq_routing` without its flexible array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RoutingHeader {
    nr: u32,
    flags: u32,
}

const KVM_CREATE_IRQCHIP: u64 = G.io(0x60);
const KVM_SET_GSI_ROUTING: u64 = G.iow::<RoutingHeader>(0x6a);

/// The route of virtio-ccw queue `queue` for a driver's `virtio_thinint_area`
/// (summary byte at `summary`, indicator bits at `indicator` from bit `bit_nr`), on the
/// adapter registered for its ISC. `None` if the bit is not in the 4 KiB page of
/// `indicator`: the kernel pins only that page and would set a bit past it.
pub fn virtio_queue_route(
    adapter_id: u32,
    summary: u64,
    indicator: u64,
    bit_nr: u64,
    queue: u16,
) -> Option<AdapterRoute> {
    let ind_offset = bit_nr.checked_add(u64::from(queue))?;
    let page_bit = (indicator % PAGE_SIZE) * 8;
    if page_bit.checked_add(ind_offset)? >= PAGE_SIZE * 8 {
        return None;
    }
    Some(AdapterRoute {
        ind_addr: indicator,
        summary_addr: summary,
        ind_offset,
        summary_offset: VIRTIO_SUMMARY_OFFSET,
        adapter_id,
    })
}

/// The adapter virtio-ccw devices on interruption subclass `isc` use: ID = ISC, bit
/// numbers from the most significant bit, not maskable.
pub fn virtio_adapter(isc: u8) -> IoAdapter {
    IoAdapter {
        id: u32::from(isc),
        isc,
        maskable: 0,
        swap: 1,
        flags: 0,
    }
}

/// Turns on the in-kernel irqchip: `KVM_ENABLE_CAP(KVM_CAP_S390_IRQCHIP)`, then
/// `KVM_CREATE_IRQCHIP`, which installs an empty GSI routing table.
pub fn create_irqchip(vm: &VmFd) -> io::Result<()> {
    vm.enable_cap(&EnableCap {
        cap: CAP_S390_IRQCHIP,
        ..Default::default()
    })?;
    // SAFETY: KVM_CREATE_IRQCHIP takes no argument.
    unsafe { value_ioctl(vm, KVM_CREATE_IRQCHIP, 0) }.map(drop)
}

/// Creates the VM's FLIC device.
pub fn create_flic(vm: &VmFd) -> io::Result<File> {
    vm.create_device(DEV_TYPE_FLIC)
}

/// Registers an I/O adapter with the FLIC.
pub fn register_adapter(flic: &File, adapter: &IoAdapter) -> io::Result<()> {
    let attr = DeviceAttr {
        flags: 0,
        group: FLIC_ADAPTER_REGISTER,
        attr: 0,
        addr: adapter as *const IoAdapter as u64,
    };
    // SAFETY: KVM_DEV_FLIC_ADAPTER_REGISTER reads one struct kvm_s390_io_adapter at
    // `addr`, which `adapter` is for the duration of the call.
    unsafe { VmFd::set_device_attr(flic, &attr) }
}

/// Maps (`ty` [`IO_ADAPTER_MAP`]) or unmaps the guest page at `addr` holding indicators
/// of adapter `id`.
pub fn modify_adapter(flic: &File, id: u32, ty: u8, addr: u64) -> io::Result<()> {
    let req = IoAdapterReq {
        id,
        ty,
        mask: 0,
        pad0: 0,
        addr,
    };
    let attr = DeviceAttr {
        flags: 0,
        group: FLIC_ADAPTER_MODIFY,
        attr: 0,
        addr: &req as *const IoAdapterReq as u64,
    };
    // SAFETY: KVM_DEV_FLIC_ADAPTER_MODIFY reads one struct kvm_s390_io_adapter_req at
    // `addr`, which `req` is for the duration of the call.
    unsafe { VmFd::set_device_attr(flic, &attr) }
}

/// The argument of `KVM_SET_GSI_ROUTING`: the header and the entries, in u64 words so
/// the buffer has the structures' alignment.
pub fn routing_table(entries: &[RoutingEntry]) -> Vec<u64> {
    const ENTRY: usize = std::mem::size_of::<RoutingEntry>();
    let mut bytes = Vec::with_capacity(8 + ENTRY * entries.len());
    let nr = u32::try_from(entries.len()).expect("fewer than 2^32 routes");
    bytes.extend_from_slice(&nr.to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    for e in entries {
        bytes.extend_from_slice(&e.gsi.to_ne_bytes());
        bytes.extend_from_slice(&e.ty.to_ne_bytes());
        bytes.extend_from_slice(&e.flags.to_ne_bytes());
        bytes.extend_from_slice(&e.pad.to_ne_bytes());
        bytes.extend_from_slice(&e.adapter.ind_addr.to_ne_bytes());
        bytes.extend_from_slice(&e.adapter.summary_addr.to_ne_bytes());
        bytes.extend_from_slice(&e.adapter.ind_offset.to_ne_bytes());
        bytes.extend_from_slice(&e.adapter.summary_offset.to_ne_bytes());
        bytes.extend_from_slice(&e.adapter.adapter_id.to_ne_bytes());
    }
    bytes
        .chunks_exact(8)
        .map(|w| u64::from_ne_bytes(w.try_into().expect("chunks of 8")))
        .collect()
}

/// Replaces the VM's whole GSI routing table with `entries`.
pub fn set_gsi_routing(vm: &VmFd, entries: &[RoutingEntry]) -> io::Result<()> {
    let table = routing_table(entries);
    // SAFETY: KVM_SET_GSI_ROUTING reads a struct kvm_irq_routing and its `nr` entries:
    // `table` holds exactly that, 8-byte aligned, for the duration of the call.
    unsafe { write_ioctl(vm, KVM_SET_GSI_ROUTING, &table[0]) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_and_numbers_are_the_uapi_headers() {
        // struct kvm_s390_io_adapter { __u32 id; __u8 isc, maskable, swap, flags; }
        assert_eq!(size_of::<IoAdapter>(), 8);
        assert_eq!(offset_of!(IoAdapter, isc), 4);
        assert_eq!(offset_of!(IoAdapter, swap), 6);
        assert_eq!(offset_of!(IoAdapter, flags), 7);
        // struct kvm_s390_io_adapter_req { __u32 id; __u8 type, mask; __u16 pad0; __u64 addr; }
        assert_eq!(size_of::<IoAdapterReq>(), 16);
        assert_eq!(offset_of!(IoAdapterReq, ty), 4);
        assert_eq!(offset_of!(IoAdapterReq, mask), 5);
        assert_eq!(offset_of!(IoAdapterReq, addr), 8);
        // struct kvm_irq_routing_s390_adapter: 3 x __u64, 2 x __u32.
        assert_eq!(size_of::<AdapterRoute>(), 32);
        assert_eq!(offset_of!(AdapterRoute, summary_addr), 8);
        assert_eq!(offset_of!(AdapterRoute, ind_offset), 16);
        assert_eq!(offset_of!(AdapterRoute, summary_offset), 24);
        assert_eq!(offset_of!(AdapterRoute, adapter_id), 28);
        // struct kvm_irq_routing_entry: 4 x __u32, then a 32-byte union (u32 pad[8]).
        assert_eq!(size_of::<RoutingEntry>(), 48);
        assert_eq!(offset_of!(RoutingEntry, adapter), 16);
        // _IO(KVMIO, 0x60) and _IOW(KVMIO, 0x6a, struct kvm_irq_routing) (8 bytes).
        assert_eq!(KVM_CREATE_IRQCHIP, 0xae60);
        assert_eq!(KVM_SET_GSI_ROUTING, 0x4008_ae6a);
        // enum kvm_device_type: FSL_MPIC_20 = 1, FSL_MPIC_42, XICS, VFIO, ARM_VGIC_V2,
        // FLIC = 6.
        assert_eq!(DEV_TYPE_FLIC, 6);
    }

    #[test]
    fn routing_table_is_header_then_entries_in_host_order() {
        let route = virtio_queue_route(3, 0x6000, 0x6100, 8, 2).unwrap();
        let t = routing_table(&[RoutingEntry::adapter(5, route)]);
        assert_eq!(t.len(), (8 + 48) / 8);
        let b: Vec<u8> = t.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(&b[0..4], &1u32.to_ne_bytes(), "nr");
        assert_eq!(&b[8..12], &5u32.to_ne_bytes(), "gsi");
        assert_eq!(
            &b[12..16],
            &3u32.to_ne_bytes(),
            "KVM_IRQ_ROUTING_S390_ADAPTER"
        );
        assert_eq!(&b[24..32], &0x6100u64.to_ne_bytes(), "ind_addr");
        assert_eq!(&b[32..40], &0x6000u64.to_ne_bytes(), "summary_addr");
        assert_eq!(
            &b[40..48],
            &10u64.to_ne_bytes(),
            "ind_offset = bit_nr + queue"
        );
        assert_eq!(&b[48..52], &7u32.to_ne_bytes(), "summary_offset");
        assert_eq!(&b[52..56], &3u32.to_ne_bytes(), "adapter_id");
    }

    /// What the kernel does with a route (arch/s390/kvm/interrupt.c, `get_ind_bit` and
    /// `set_bit` on the indicator page, s390's bitops): bit `offset + (addr % 4096) * 8`
    /// of the page, XORed with 63 for a swapped adapter, where bit `b` of an unsigned long
    /// is `1 << (b % 64)` of the big-endian long `b / 64`. Returns (page offset, mask) of
    /// the byte that changes.
    fn kernel_sets(addr: u64, offset: u64, swap: bool) -> (u64, u8) {
        let mut bit = offset + (addr % 4096) * 8;
        if swap {
            bit ^= 63;
        }
        let long = bit / 64;
        let within = bit % 64;
        // Big-endian long: value bit `within` lives in byte 7 - within / 8.
        (long * 8 + 7 - within / 8, 1 << (within % 8))
    }

    #[test]
    fn routes_set_the_bits_virtio_ccw_names() {
        // virtio 1.2 §4.3.3.2.2: queue n's indicator is bit bit_nr + n counted from the
        // most significant bit of the byte at `indicator`; the summary indicator is the
        // byte at `summary_indicator`, set to 0x01.
        for (indicator, bit_nr, queue) in [
            (0x6100u64, 0u64, 0u16),
            (0x6100, 8, 0),
            (0x6100, 3, 2),
            (0x6105, 13, 7),
            (0x7ff8, 56, 1),
            (0x6003, 200, 3),
        ] {
            let route = virtio_queue_route(0, 0x5007, indicator, bit_nr, queue).unwrap();
            let adapter = virtio_adapter(0);
            let (byte, mask) = kernel_sets(route.ind_addr, route.ind_offset, adapter.swap != 0);
            let spec_bit = bit_nr + u64::from(queue);
            let spec_byte = indicator % 4096 + spec_bit / 8;
            let spec_mask = 0x80u8 >> (spec_bit % 8);
            assert_eq!(
                (byte, mask),
                (spec_byte, spec_mask),
                "indicator {indicator:#x} bit_nr {bit_nr} queue {queue}"
            );
            let (sbyte, smask) = kernel_sets(
                route.summary_addr,
                u64::from(route.summary_offset),
                adapter.swap != 0,
            );
            assert_eq!((sbyte, smask), (0x007, 0x01), "the summary byte's 0x01");
        }
        assert_eq!(virtio_queue_route(0, 0, 0, u64::MAX, 1), None);
        // Bit 64 from 0x7ff8 is in the next page.
        assert_eq!(virtio_queue_route(0, 0, 0x7ff8, 63, 1), None);
    }
}

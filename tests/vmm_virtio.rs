//! The PCI root complex and virtio devices as a VM's vCPUs see them: the device manager
//! is built on a real KVM VM (irqchip, ioeventfds, irqfds, GSI routes) and driven the way
//! a guest driver would, through the same port and MMIO buses the vCPU exits use:
//! enumeration through ECAM and 0xCF8/0xCFC, BAR sizing, the virtio-pci handshake, MSI-X
//! set-up, a request on a queue, and its completion by the device thread.

mod vmm_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use arch::layout;
use devices::bus::Bus;
use devices::virtio::transport::pci::{MSIX_TABLE_OFFSET, NOTIFY_OFFSET};
use kvm_ioctls::Kvm;
use monovirt::vmm::device_config::{DiskConfig, VirtioConsoleConfig};
use monovirt::vmm::{device_manager, VmConfig};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_support::kvm_available;

struct Machine {
    pio: Bus,
    mmio: Bus,
    mem: GuestMemoryMmap,
}

impl Machine {
    fn ecam(dev: u64, reg: u64) -> u64 {
        layout::PCI_ECAM_START + (dev << 15) + reg
    }
    fn cfg_read(&self, dev: u64, reg: u64) -> u32 {
        let mut d = [0u8; 4];
        assert!(self.mmio.read(Self::ecam(dev, reg), &mut d));
        u32::from_le_bytes(d)
    }
    fn cfg_write(&self, dev: u64, reg: u64, value: u32) {
        assert!(self.mmio.write(Self::ecam(dev, reg), &value.to_le_bytes()));
    }
    fn read(&self, addr: u64, len: usize) -> u64 {
        let mut d = [0u8; 8];
        assert!(self.mmio.read(addr, &mut d[..len]));
        u64::from_le_bytes(d)
    }
    fn write(&self, addr: u64, len: usize, value: u64) {
        assert!(self.mmio.write(addr, &value.to_le_bytes()[..len]));
    }

    /// BAR 0 of `dev`, with memory decoding enabled.
    fn bar(&self, dev: u64) -> u64 {
        let bar =
            u64::from(self.cfg_read(dev, 0x10) & !0xf) | u64::from(self.cfg_read(dev, 0x14)) << 32;
        self.cfg_write(dev, 0x04, 0x6);
        bar
    }

    /// The virtio handshake, with queue `q` (size 16) at `rings`, `rings + 0x1000`,
    /// `rings + 0x2000`, ending in DRIVER_OK.
    fn activate(&self, bar: u64, q: u64, rings: u64) {
        self.write(bar + 0x14, 1, 1);
        self.write(bar + 0x14, 1, 3);
        self.write(bar, 4, 1);
        assert_eq!(self.read(bar + 4, 4) & 1, 1, "VERSION_1 offered");
        self.write(bar + 8, 4, 1);
        self.write(bar + 0xc, 4, 1);
        self.write(bar + 0x14, 1, 0xb);
        assert_eq!(self.read(bar + 0x14, 1), 0xb);
        self.write(bar + 0x16, 2, q);
        self.write(bar + 0x18, 2, 16);
        self.write(bar + 0x20, 8, rings);
        self.write(bar + 0x28, 8, rings + 0x1000);
        self.write(bar + 0x30, 8, rings + 0x2000);
        self.write(bar + 0x1c, 2, 1);
        self.write(bar + 0x14, 1, 0xf);
        assert_eq!(self.read(bar + 0x14, 1), 0xf);
    }

    /// Makes one buffer available on the queue at `rings` and kicks queue `q`.
    fn submit(
        &self,
        bar: u64,
        q: u64,
        rings: u64,
        buf: u64,
        len: u32,
        writable: bool,
    ) -> Result<()> {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&buf.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&(if writable { 2u16 } else { 0 }).to_le_bytes());
        self.mem.write_slice(&d, GuestAddress(rings))?;
        self.mem.write_obj(0u16, GuestAddress(rings + 0x1004))?;
        self.mem.write_obj(1u16, GuestAddress(rings + 0x1002))?;
        self.write(bar + NOTIFY_OFFSET + 4 * q, 2, q);
        Ok(())
    }

    /// Waits (bounded) for the first used entry of the queue at `rings`; its length.
    fn wait_used(&self, rings: u64) -> Result<u32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.mem.read_obj::<u16>(GuestAddress(rings + 0x2002))? == 0 {
            ensure!(
                Instant::now() < deadline,
                "the device thread never completed the request"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(self.mem.read_obj(GuestAddress(rings + 0x2008))?)
    }
}

#[test]
fn guest_view_of_virtio_pci_devices() -> Result<()> {
    if !kvm_available() {
        return Ok(());
    }
    let kvm = Kvm::new()?;
    let vm = Arc::new(kvm.create_vm()?);
    vm.create_irq_chip()?;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)])?;
    let image = vmm_sys_util::tempfile::TempFile::new()?;
    image.as_file().set_len(1 << 20)?;
    let mut config = VmConfig::new("pci-test", "/nonexistent");
    config.disks.push(DiskConfig {
        path: image.as_path().to_path_buf(),
        read_only: true,
        serial: Some("SERIAL1".into()),
        cache: None,
    });
    config.rng = true;
    let hvc0 = vmm_sys_util::tempfile::TempFile::new()?;
    config.virtio_console = Some(VirtioConsoleConfig::File(hvc0.as_path().to_path_buf()));
    let m = Machine {
        pio: Bus::new(),
        mmio: Bus::new(),
        mem,
    };
    let manager = device_manager::create(
        &vm,
        &m.mem,
        &m.pio,
        &m.mmio,
        &config,
        std::sync::Arc::new(|e: String| panic!("{e}")),
        &monovirt::vmm::stats::VmStats::default(),
    )
    .context("device manager")?;

    // Enumeration: host bridge, virtio-blk, virtio-rng, virtio-console, then nothing.
    assert_eq!(m.cfg_read(0, 0), 0x0d57_8086);
    assert_eq!(m.cfg_read(1, 0), 0x1042_1af4);
    assert_eq!(m.cfg_read(2, 0), 0x1044_1af4);
    assert_eq!(m.cfg_read(3, 0), 0x1043_1af4);
    assert_eq!(m.cfg_read(4, 0), 0xffff_ffff);
    // The same through the legacy ports.
    assert!(m
        .pio
        .write(0xcf8, &(0x8000_0000u32 | 2 << 11).to_le_bytes()));
    let mut d = [0u8; 4];
    assert!(m.pio.read(0xcfc, &mut d));
    assert_eq!(u32::from_le_bytes(d), 0x1044_1af4);

    // BAR 0 of the rng: its address, then sizing, then restore and enable decoding.
    let rng = 2;
    let bar = u64::from(m.cfg_read(rng, 0x10) & !0xf) | u64::from(m.cfg_read(rng, 0x14)) << 32;
    ensure!(
        (layout::MMIO32_START..layout::MMIO32_START + layout::MMIO32_SIZE).contains(&bar),
        "BAR {bar:#x} outside the PCI window"
    );
    m.cfg_write(rng, 0x10, 0xffff_ffff);
    assert_eq!(m.cfg_read(rng, 0x10), 0xffff_0004);
    m.cfg_write(rng, 0x10, bar as u32);
    m.cfg_write(rng, 0x04, 0x6);

    // MSI-X on (the capability is the first one), vector 1 unmasked.
    let msix = u64::from(m.cfg_read(rng, 0x34) & 0xff);
    assert_eq!(m.cfg_read(rng, msix) & 0xff, 0x11);
    m.cfg_write(rng, msix, m.cfg_read(rng, msix) | 1 << 31);
    m.write(bar + MSIX_TABLE_OFFSET + 16, 4, 0xfee0_0000);
    m.write(bar + MSIX_TABLE_OFFSET + 16 + 8, 4, 0x30);
    m.write(bar + MSIX_TABLE_OFFSET + 16 + 12, 4, 0);

    // The virtio handshake.
    m.write(bar + 0x14, 1, 1);
    m.write(bar + 0x14, 1, 3);
    m.write(bar, 4, 1);
    assert_eq!(m.read(bar + 4, 4) & 1, 1, "VERSION_1 offered");
    m.write(bar + 8, 4, 1);
    m.write(bar + 0xc, 4, 1);
    m.write(bar + 0x14, 1, 0xb);
    assert_eq!(m.read(bar + 0x14, 1), 0xb);
    m.write(bar + 0x16, 2, 0);
    m.write(bar + 0x18, 2, 16);
    m.write(bar + 0x1a, 2, 1);
    assert_eq!(m.read(bar + 0x1a, 2), 1);
    m.write(bar + 0x20, 8, 0x1_0000);
    m.write(bar + 0x28, 8, 0x1_1000);
    m.write(bar + 0x30, 8, 0x1_2000);
    m.write(bar + 0x1c, 2, 1);
    m.write(bar + 0x14, 1, 0xf);
    assert_eq!(m.read(bar + 0x14, 1), 0xf);

    // One 64-byte buffer, made available and kicked.
    let desc: [u8; 16] = {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&0x2_0000u64.to_le_bytes());
        d[8..12].copy_from_slice(&64u32.to_le_bytes());
        d[12..14].copy_from_slice(&2u16.to_le_bytes()); // VRING_DESC_F_WRITE
        d
    };
    m.mem.write_slice(&desc, GuestAddress(0x1_0000))?;
    m.mem.write_obj(0u16, GuestAddress(0x1_1004))?;
    m.mem.write_obj(1u16, GuestAddress(0x1_1002))?;
    m.write(bar + NOTIFY_OFFSET, 2, 0);

    let deadline = Instant::now() + Duration::from_secs(10);
    while m.mem.read_obj::<u16>(GuestAddress(0x1_2002))? == 0 {
        ensure!(
            Instant::now() < deadline,
            "the device thread never completed the request"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let used_len: u32 = m.mem.read_obj(GuestAddress(0x1_2008))?;
    assert_eq!(used_len, 64);
    let mut entropy = [0u8; 64];
    m.mem.read_slice(&mut entropy, GuestAddress(0x2_0000))?;
    assert_ne!(entropy, [0u8; 64]);

    // hvc0: output on the transmit queue (1) lands in the file.
    let console = m.bar(3);
    m.activate(console, 1, 0x4_0000);
    m.mem
        .write_slice(b"hello from hvc0\n", GuestAddress(0x5_0000))?;
    m.submit(console, 1, 0x4_0000, 0x5_0000, 16, false)?;
    assert_eq!(m.wait_used(0x4_0000)?, 0);
    assert_eq!(std::fs::read(hvc0.as_path())?, b"hello from hvc0\n");
    drop(manager);
    Ok(())
}

#[test]
fn msi_routes_are_accepted_by_kvm() -> Result<()> {
    use devices::pci::{MsiMessage, MsiNotifier};
    use monovirt::vmm::msi::MsiRouting;
    if !kvm_available() {
        return Ok(());
    }
    let kvm = Kvm::new()?;
    let vm = Arc::new(kvm.create_vm()?);
    vm.create_irq_chip()?;
    let routing = Arc::new(MsiRouting::new(vm));
    let a = routing.group(3)?;
    let b = routing.group(2)?;
    let message = MsiMessage {
        address: 0xfee0_0000,
        data: 0x41,
    };
    // Each update installs the whole table (legacy irqchip routes plus every MSI route).
    a.update(0, message, false)?;
    a.update(2, message, true)?;
    b.update(1, message, false)?;
    // Removing a route (an unprogrammed vector) and firing vectors.
    a.update(2, MsiMessage::default(), true)?;
    a.notify(0)?;
    b.notify(1)?;
    assert!(a.notify(3).is_err());
    assert!(b.update(2, message, false).is_err());
    Ok(())
}

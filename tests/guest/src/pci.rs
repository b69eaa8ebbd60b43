//! PCI enumeration through ECAM (the MCFG's window) with `virtio-drivers`' PCI root: prints
//! every function on the first bus, enables memory decoding and bus mastering on the virtio
//! ones (no firmware did), and runs the device checks of [`crate::blk`] on each
//! virtio-blk function.

use crate::cmdline::Options;
use crate::tables::Platform;
use crate::{blk, console, kv, net, paging, rng, user, vsock};
use virtio_drivers::transport::pci::bus::{Cam, Command, DeviceFunction, MmioCam, PciRoot};
use virtio_drivers::transport::pci::virtio_device_type;
use virtio_drivers::transport::DeviceType;

/// The most virtio-blk functions the guest checks.
const MAX_BLK: usize = 32;

/// Enumerates the first bus and checks the virtio devices found there.
pub fn report(platform: &Platform, options: &Options) {
    let Some((base, first_bus, last_bus)) = platform.ecam else {
        kv!("pci", "none: no MCFG");
        return;
    };
    let buses = u64::from(last_bus) + 1;
    paging::identity_map(base, buses << 20, false);
    // SAFETY: the MCFG names this window as ECAM for buses up to `last_bus`; it is
    // identity-mapped (uncached) and nothing else in the guest touches it.
    let cam = unsafe { MmioCam::new(base as *mut u8, Cam::Ecam) };
    let mut root = PciRoot::new(cam);
    // SAFETY: the same window; this handle only reads configuration space (capabilities
    // and BARs for `blk`'s doorbells), on this CPU, between the root's own accesses.
    let reader = unsafe { MmioCam::new(base as *mut u8, Cam::Ecam) };
    let mut blk_devices = [None::<DeviceFunction>; MAX_BLK];
    let mut count = 0;
    let mut blk_count = 0;
    let mut net_devices = [None::<DeviceFunction>; 4];
    let mut net_count = 0;
    let mut vsock_device = None;
    let mut others = [None::<(DeviceFunction, DeviceType)>; MAX_BLK];
    let mut other_count = 0;
    for (df, info) in root.enumerate_bus(first_bus) {
        count += 1;
        kv!(
            core::format_args!("pci.{df}"),
            "{:04x}:{:04x},class={:02x}.{:02x}.{:02x}",
            info.vendor_id,
            info.device_id,
            info.class,
            info.subclass,
            info.prog_if
        );
        if let Some(kind) = virtio_device_type(&info) {
            kv!(core::format_args!("virtio.{df}"), "{kind:?}");
            // What an OS does before using a device (Linux's pci_enable_device and
            // pci_set_master): without firmware nobody else turns on memory decoding, and a
            // function must not answer its BARs nor DMA before that.
            let (_, command) = root.get_status_command(df);
            root.set_command(df, command | Command::MEMORY_SPACE | Command::BUS_MASTER);
            if matches!(kind, DeviceType::EntropySource | DeviceType::Console)
                && other_count < MAX_BLK
            {
                others[other_count] = Some((df, kind));
                other_count += 1;
            }
            if kind == DeviceType::Socket && vsock_device.is_none() {
                vsock_device = Some(df);
            }
            if kind == DeviceType::Network && net_count < net_devices.len() {
                net_devices[net_count] = Some(df);
                net_count += 1;
            }
            if kind == DeviceType::Block && blk_count < MAX_BLK {
                blk_devices[blk_count] = Some(df);
                blk_count += 1;
            }
        }
    }
    kv!("pci.count", "{count}");
    let mut network_config = None;
    for (index, df) in blk_devices.iter().flatten().enumerate() {
        let bench = options.blk_bench && index == 0;
        if bench {
            // Timed at CPL 3, where PVM runs the guest natively (see `user`); the clock's
            // MSR is written here, in ring 0.
            let _ = crate::kvmclock::KvmClock::enable();
        }
        let mut check = || {
            blk::check(
                &mut root,
                &reader,
                *df,
                index,
                options.blk_write,
                bench,
                options.cidata,
                options.blk_crc32,
            )
        };
        let found = if bench { user::run(check) } else { check() };
        if bench {
            // After the sequential and QD1 passes, in the order the host's baseline runs
            // them (the image's page-cache state then matches). `check`'s transport reset
            // the device when it was dropped.
            user::run(|| blk::bench_deep(&mut root, &reader, *df));
        }
        network_config = network_config.or(found);
    }
    if options.cidata && network_config.is_none() {
        kv!("cidata", "none: no cidata disk with a network-config");
    }
    let (mut rngs, mut consoles) = (0, 0);
    for (df, kind) in others.iter().flatten() {
        if *kind == DeviceType::EntropySource {
            rng::check(&mut root, *df, rngs);
            rngs += 1;
        } else {
            console::check(&mut root, *df, consoles);
            consoles += 1;
        }
    }
    if options.vsock {
        match vsock_device {
            Some(df) => vsock::run(&mut root, df),
            None => kv!("vsock", "none: no virtio-vsock device"),
        }
    }
    if options.net {
        kv!("net.nics", "{net_count}");
        match net_devices.get(options.net_nic).copied().flatten() {
            // At CPL 3 (see `user`): the guest's TCP/IP stack polls the device there, on
            // kvmclock, whose MSR is written here, in ring 0.
            Some(df) => {
                let _ = crate::kvmclock::KvmClock::enable();
                user::run(|| net::run(&mut root, &reader, df, options, network_config.as_ref()))
            }
            None => kv!("net", "none: no virtio-net device {}", options.net_nic),
        }
    }
}

//! virtio-blk through `virtio-drivers`' driver: capacity, read-only flag, serial (the device
//! ID), a CRC of the first 4 KiB, and with `blkwrite` a write/flush/read-back of a known
//! pattern at bytes 4096..8192 — byte at disk offset `o` is `(o % 251) ^ 0x5a` — that the host
//! then finds in the image. A read-only disk must refuse that write.

use crate::bootinfo::Escaped;
use crate::dma::GuestHal;
use crate::kv;
use virtio_drivers::device::blk::{VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::PciTransport;

/// First byte and length of the pattern `blkwrite` writes.
pub const PATTERN_OFFSET: usize = 4096;
pub const PATTERN_LEN: usize = 4096;

/// The pattern byte at disk offset `offset`.
pub fn pattern_byte(offset: usize) -> u8 {
    (offset % 251) as u8 ^ 0x5a
}

/// Checks one virtio-blk function; prints `virtio.blk.<index>*` keys.
pub fn check<C: ConfigurationAccess>(
    root: &mut PciRoot<C>,
    df: DeviceFunction,
    index: usize,
    write: bool,
) {
    let transport = match PciTransport::new::<GuestHal, C>(root, df) {
        Ok(t) => t,
        Err(e) => {
            kv!(
                core::format_args!("virtio.blk.{index}"),
                "{df},transport error: {e}"
            );
            return;
        }
    };
    let mut blk = match VirtIOBlk::<GuestHal, _>::new(transport) {
        Ok(b) => b,
        Err(e) => {
            kv!(
                core::format_args!("virtio.blk.{index}"),
                "{df},init error: {e}"
            );
            return;
        }
    };
    let readonly = blk.readonly();
    kv!(
        core::format_args!("virtio.blk.{index}"),
        "{df},sectors={},ro={}",
        blk.capacity(),
        u8::from(readonly)
    );
    let mut id = [0u8; 20];
    match blk.device_id(&mut id) {
        Ok(len) => kv!(
            core::format_args!("virtio.blk.{index}.serial"),
            "{}",
            Escaped(&id[..len])
        ),
        Err(e) => kv!(
            core::format_args!("virtio.blk.{index}.serial"),
            "error: {e}"
        ),
    }
    let mut buf = [0u8; PATTERN_LEN];
    match blk.read_blocks(0, &mut buf) {
        Ok(()) => kv!(
            core::format_args!("virtio.blk.{index}.crc32.0"),
            "{:#010x}",
            crc32fast::hash(&buf)
        ),
        Err(e) => kv!(
            core::format_args!("virtio.blk.{index}.crc32.0"),
            "error: {e}"
        ),
    }
    if !write {
        return;
    }
    if blk.capacity() < ((PATTERN_OFFSET + PATTERN_LEN) / SECTOR_SIZE) as u64 {
        kv!(core::format_args!("virtio.blk.{index}.write"), "too-small");
        return;
    }
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(PATTERN_OFFSET + i);
    }
    let sector = PATTERN_OFFSET / SECTOR_SIZE;
    let result = match blk.write_blocks(sector, &buf) {
        Err(_) if readonly => "refused",
        Ok(()) if readonly => "accepted-on-readonly",
        Err(virtio_drivers::Error::IoError) => "io-error",
        Err(_) => "error",
        Ok(()) => {
            let flushed = blk.flush().is_ok();
            let mut back = [0u8; PATTERN_LEN];
            match blk.read_blocks(sector, &mut back) {
                Ok(()) if back == buf && flushed => "ok",
                Ok(()) if back == buf => "ok-flush-failed",
                Ok(()) => "mismatch",
                Err(_) => "read-back-error",
            }
        }
    };
    kv!(core::format_args!("virtio.blk.{index}.write"), "{result}");
}

//! Booting an s390x Linux kernel image (`arch/s390/boot/bzImage`, the "image" file):
//! copied to absolute 0, with the initrd address and size and the command line written
//! into its parameter area, the way a disk IPL's loader leaves them.

use vm_memory::{Be64, Bytes, GuestAddress, GuestMemory};

use super::layout;

/// Errors loading the kernel or writing its parameters.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Unknown `--boot` value.
    #[error("Unknown boot protocol {0:?} (expected auto)")]
    UnknownProtocol(String),
    /// The image is too short to hold its parameter area.
    #[error("Kernel image of {0} bytes is too short (it must reach past the command line area)")]
    ImageTooShort(usize),
    /// The command line does not fit what the kernel accepts.
    #[error("Kernel command line of {len} bytes exceeds the kernel's limit of {max}")]
    CmdlineTooLong {
        /// Length including the NUL.
        len: usize,
        /// The kernel's limit.
        max: u64,
    },
    /// The command line has a NUL byte.
    #[error("Kernel command line contains a NUL byte")]
    CmdlineNul,
    /// Writing to guest memory.
    #[error("Cannot write {what} to guest memory")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// The failure.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// Which entry protocol to use. s390x has one: the kernel entered directly at 0x10000 with its parameter area filled in;
/// `auto` is accepted so one command line serves every architecture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BootProtocol {
    /// The only protocol: the image at 0 in 64-bit mode, parameters at 0x10400.
    #[default]
    Auto,
}

impl std::str::FromStr for BootProtocol {
    type Err = BootError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            other => Err(BootError::UnknownProtocol(other.to_string())),
        }
    }
}

/// Smallest guest memory we boot: the image from 0 and the initrd at its default 8 MiB.
pub const MIN_MEMORY: u64 = 16 << 20;

/// The command line limit the image declares at `MAX_COMMAND_LINE_SIZE_OFFSET` (0 means
/// an old kernel with the legacy 896-byte limit).
pub fn max_cmdline_size(image: &[u8]) -> u64 {
    let at = layout::MAX_COMMAND_LINE_SIZE_OFFSET as usize;
    match image.get(at..at + 8) {
        Some(b) => match u64::from_be_bytes(b.try_into().expect("8-byte slice")) {
            0 => layout::LEGACY_COMMAND_LINE_SIZE,
            n => n,
        },
        None => layout::LEGACY_COMMAND_LINE_SIZE,
    }
}

/// Copies `image` to absolute 0 and writes the parameter area: `initrd` as
/// (start, size), and `cmdline` NUL-terminated at 0x10480.
pub fn load_kernel<M: GuestMemory>(
    mem: &M,
    image: &[u8],
    cmdline: &str,
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    if (image.len() as u64) < layout::COMMAND_LINE_OFFSET {
        return Err(BootError::ImageTooShort(image.len()));
    }
    if cmdline.as_bytes().contains(&0) {
        return Err(BootError::CmdlineNul);
    }
    let max = max_cmdline_size(image);
    let len = cmdline.len() + 1;
    if len as u64 > max {
        return Err(BootError::CmdlineTooLong { len, max });
    }
    let wr = |what| move |source| BootError::GuestMemory { what, source };
    mem.write_slice(image, GuestAddress(layout::KERNEL_LOAD))
        .map_err(wr("kernel image"))?;
    let (start, size) = initrd.unwrap_or((0, 0));
    mem.write_obj(Be64::from(start), GuestAddress(layout::INITRD_START_OFFSET))
        .map_err(wr("initrd start"))?;
    mem.write_obj(Be64::from(size), GuestAddress(layout::INITRD_SIZE_OFFSET))
        .map_err(wr("initrd size"))?;
    let mut line = vec![0u8; max.min(4096) as usize];
    line[..cmdline.len()].copy_from_slice(cmdline.as_bytes());
    mem.write_slice(&line, GuestAddress(layout::COMMAND_LINE_OFFSET))
        .map_err(wr("command line"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn parameter_area_is_big_endian_at_the_abi_offsets() {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let mut image = vec![0u8; 0x2_0000];
        image[0x1_0000] = 0xeb; // first byte of the entry code, carried over as is
                                // The kernel declares a 4096-byte command line limit at 0x10430.
        image[0x1_0430..0x1_0438].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0x10, 0]);
        load_kernel(
            &mem,
            &image,
            "console=ttysclp0",
            Some((0x80_0000, 0x12_3456)),
        )
        .unwrap();
        let mut p = [0u8; 16];
        mem.read_slice(&mut p, GuestAddress(0x1_0408)).unwrap();
        assert_eq!(
            p,
            [0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56]
        );
        let mut c = [0u8; 17];
        mem.read_slice(&mut c, GuestAddress(0x1_0480)).unwrap();
        assert_eq!(&c, b"console=ttysclp0\0");
        let mut e = [0u8; 1];
        mem.read_slice(&mut e, GuestAddress(0x1_0000)).unwrap();
        assert_eq!(e, [0xeb]);
    }

    #[test]
    fn legacy_kernels_take_896_bytes() {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let image = vec![0u8; 0x2_0000];
        assert_eq!(max_cmdline_size(&image), 896);
        let long = "x".repeat(896);
        assert!(matches!(
            load_kernel(&mem, &image, &long, None),
            Err(BootError::CmdlineTooLong { len: 897, max: 896 })
        ));
        assert!(load_kernel(&mem, &image, &"x".repeat(895), None).is_ok());
        assert!(matches!(
            load_kernel(&mem, &image[..0x100], "", None),
            Err(BootError::ImageTooShort(0x100))
        ));
    }
}

//! RTAS (Run-Time Abstraction Services, LoPAR chapter 7): the firmware calls Linux makes
//! for the time of day, console characters, power-off and reboot.
//!
//! The guest finds each service's token as a property of the `/rtas` device tree node
//! (see [`SERVICES`]) and calls the RTAS blob at `linux,rtas-entry` with r3 = the
//! physical address of an argument block. The blob ([`RTAS_BLOB`]) turns that into the
//! KVMPPC_H_RTAS hypercall, which [`dispatch`] serves. The argument block is big-endian
//! whatever the guest's byte order (LoPAR "RTAS Argument Call Buffer"):
//!
//! ```text
//! +0  token   (be32)
//! +4  nargs   (be32)
//! +8  nret    (be32)
//! +12 args[nargs] then rets[nret] (be32 each)
//! ```

use vm_memory::{Be32, Bytes, GuestAddress, GuestMemory};

/// RTAS status: success.
pub const RTAS_OUT_SUCCESS: i32 = 0;
/// RTAS status: hardware error.
pub const RTAS_OUT_HW_ERROR: i32 = -1;
/// RTAS status: parameter error.
pub const RTAS_OUT_PARAM_ERROR: i32 = -3;

/// The first token number; tokens are this plus the service's index.
pub const TOKEN_BASE: u32 = 0x2000;
/// Most arguments plus returns we accept in one call.
pub const MAX_ARGS: u32 = 32;

/// The RTAS services we provide, in token order (token = [`TOKEN_BASE`] + index).
pub const SERVICES: &[&str] = &[
    "display-character",
    "get-time-of-day",
    "power-off",
    "system-reboot",
    "set-time-of-day",
    "event-scan",
    "ibm,os-term",
    "ibm,read-pci-config",
    "ibm,write-pci-config",
    "read-pci-config",
    "write-pci-config",
];

/// The RTAS entry code: `mr r4,r3; lis r3,0; ori r3,r3,0xf000; sc 1; blr` in
/// big-endian instruction words (the guest enters RTAS in big-endian mode).
pub const RTAS_BLOB: [u32; 5] = [
    0x7c64_1b78,
    0x3c60_0000,
    0x6063_f000,
    0x4400_0022,
    0x4e80_0020,
];

/// The token of the service named `name`.
pub fn token(name: &str) -> Option<u32> {
    SERVICES
        .iter()
        .position(|s| *s == name)
        .map(|i| TOKEN_BASE + i as u32)
}

/// The time of day as `get-time-of-day` returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeOfDay {
    /// Full year, e.g. 2026.
    pub year: u32,
    /// 1–12.
    pub month: u32,
    /// 1–31.
    pub day: u32,
    /// 0–23.
    pub hour: u32,
    /// 0–59.
    pub minute: u32,
    /// 0–59.
    pub second: u32,
    /// Nanoseconds.
    pub nanos: u32,
}

/// What the platform does for RTAS calls.
pub trait RtasPlatform {
    /// `display-character`: one console byte.
    fn display_character(&mut self, byte: u8);
    /// `get-time-of-day`.
    fn time_of_day(&mut self) -> TimeOfDay;
    /// `power-off`, `ibm,os-term`: the guest asks to stop.
    fn power_off(&mut self);
    /// `system-reboot`.
    fn reboot(&mut self);
    /// `ibm,read-pci-config` / `read-pci-config`: `size` (1, 2 or 4) bytes of the
    /// configuration space of `at` on the host bridge `buid`, or `None` if there is no
    /// such bridge or function.
    fn pci_config_read(&mut self, buid: u64, at: PciConfigAddress, size: usize) -> Option<u32>;
    /// `ibm,write-pci-config` / `write-pci-config`; returns whether the function exists.
    fn pci_config_write(
        &mut self,
        buid: u64,
        at: PciConfigAddress,
        size: usize,
        value: u32,
    ) -> bool;
}

/// The PCI configuration address of the RTAS PCI calls (LoPAR "Configuration Address"
/// and Linux's `rtas_config_addr`): register bits 0-7 and 28-31 (the extended register
/// number), device/function bits 8-15, bus bits 16-23.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciConfigAddress {
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0-31.
    pub device: u8,
    /// Function number, 0-7.
    pub function: u8,
    /// Register offset, 0-4095.
    pub register: u16,
}

impl PciConfigAddress {
    /// Decodes the RTAS configuration address word.
    pub fn decode(addr: u32) -> Self {
        let devfn = (addr >> 8) as u8;
        Self {
            bus: (addr >> 16) as u8,
            device: devfn >> 3,
            function: devfn & 7,
            register: ((addr & 0xff) | ((addr >> 20) & 0xf00)) as u16,
        }
    }

    /// Whether a `size`-byte access here is one the PCI specification allows: 1, 2 or 4
    /// bytes, naturally aligned, inside the 4 KiB configuration space.
    pub fn valid_access(&self, size: usize) -> bool {
        matches!(size, 1 | 2 | 4)
            && usize::from(self.register) % size == 0
            && usize::from(self.register) + size <= 4096
    }
}

/// Errors reading or writing the argument block (the guest gave a bad address).
#[derive(Debug, thiserror::Error)]
pub enum RtasError {
    /// The argument block is not in guest memory.
    #[error("RTAS argument block at {addr:#x} is not in guest memory")]
    Memory {
        /// Guest physical address of the block.
        addr: u64,
        /// The failure.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// nargs + nret is larger than we accept.
    #[error("RTAS call with {nargs} arguments and {nret} returns is too large")]
    TooManyArgs {
        /// Arguments.
        nargs: u32,
        /// Returns.
        nret: u32,
    },
}

/// Serves the RTAS call whose argument block is at `args` in `mem`: reads the token and
/// arguments, calls `platform`, writes the status (and any further returns) back.
/// Returns the status written, or an error if the block itself is unusable. The
/// PCI calls without a BUID argument address `default_buid`, the only host bridge.
pub fn dispatch<M: GuestMemory>(
    mem: &M,
    args: u64,
    default_buid: u64,
    platform: &mut dyn RtasPlatform,
) -> Result<i32, RtasError> {
    let read = |off: u64| -> Result<u32, RtasError> {
        mem.read_obj::<Be32>(GuestAddress(args.wrapping_add(off)))
            .map(u32::from)
            .map_err(|source| RtasError::Memory { addr: args, source })
    };
    let token = read(0)?;
    let nargs = read(4)?;
    let nret = read(8)?;
    if nargs.saturating_add(nret) > MAX_ARGS {
        return Err(RtasError::TooManyArgs { nargs, nret });
    }
    let arg = |i: u32| read(12 + 4 * u64::from(i));
    let rets_at = 12 + 4 * u64::from(nargs);
    let mut rets: Vec<u32> = Vec::new();
    let name = token
        .checked_sub(TOKEN_BASE)
        .and_then(|i| SERVICES.get(i as usize).copied());
    let status = match (name, nargs, nret) {
        (Some("display-character"), 1, 1) => {
            platform.display_character(arg(0)? as u8);
            RTAS_OUT_SUCCESS
        }
        (Some("get-time-of-day"), 0, 8) => {
            let t = platform.time_of_day();
            rets = vec![t.year, t.month, t.day, t.hour, t.minute, t.second, t.nanos];
            RTAS_OUT_SUCCESS
        }
        (Some("power-off"), 2, 1) | (Some("ibm,os-term"), 1, 1) => {
            platform.power_off();
            RTAS_OUT_SUCCESS
        }
        (Some("system-reboot"), 0, 1) => {
            platform.reboot();
            RTAS_OUT_SUCCESS
        }
        (Some("ibm,read-pci-config"), 4, 2) | (Some("read-pci-config"), 2, 2) => {
            let at = PciConfigAddress::decode(arg(0)?);
            let (buid, size) = if nargs == 4 {
                ((u64::from(arg(1)?) << 32) | u64::from(arg(2)?), arg(3)?)
            } else {
                (default_buid, arg(1)?)
            };
            let size = size as usize;
            if !at.valid_access(size) {
                RTAS_OUT_PARAM_ERROR
            } else if let Some(v) = platform.pci_config_read(buid, at, size) {
                rets = vec![v];
                RTAS_OUT_SUCCESS
            } else {
                RTAS_OUT_HW_ERROR
            }
        }
        (Some("ibm,write-pci-config"), 5, 1) | (Some("write-pci-config"), 3, 1) => {
            let at = PciConfigAddress::decode(arg(0)?);
            let (buid, size, value) = if nargs == 5 {
                let buid = (u64::from(arg(1)?) << 32) | u64::from(arg(2)?);
                (buid, arg(3)?, arg(4)?)
            } else {
                (default_buid, arg(1)?, arg(2)?)
            };
            let size = size as usize;
            if !at.valid_access(size) {
                RTAS_OUT_PARAM_ERROR
            } else if platform.pci_config_write(buid, at, size, value) {
                RTAS_OUT_SUCCESS
            } else {
                RTAS_OUT_HW_ERROR
            }
        }
        // Setting the clock is refused (the host owns it); event-scan finds no events.
        (Some("set-time-of-day"), 7, 1) => RTAS_OUT_HW_ERROR,
        (Some("event-scan"), 4, 1) => 1,
        _ => RTAS_OUT_PARAM_ERROR,
    };
    if nret == 0 {
        return Ok(status);
    }
    let write = |off: u64, v: u32| {
        mem.write_obj(Be32::from(v), GuestAddress(args.wrapping_add(off)))
            .map_err(|source| RtasError::Memory { addr: args, source })
    };
    write(rets_at, status as u32)?;
    for (i, v) in rets.iter().enumerate().take(nret as usize - 1) {
        write(rets_at + 4 * (i as u64 + 1), *v)?;
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    struct Platform {
        chars: Vec<u8>,
        off: bool,
        reboot: bool,
        config: Vec<u8>,
    }

    impl Default for Platform {
        fn default() -> Self {
            let mut config = vec![0u8; 4096];
            // Vendor 0x1af4 (Red Hat, virtio), device 0x1041 (virtio-net, modern).
            config[..4].copy_from_slice(&[0xf4, 0x1a, 0x41, 0x10]);
            Self {
                chars: Vec::new(),
                off: false,
                reboot: false,
                config,
            }
        }
    }

    impl RtasPlatform for Platform {
        fn display_character(&mut self, byte: u8) {
            self.chars.push(byte);
        }
        fn time_of_day(&mut self) -> TimeOfDay {
            TimeOfDay {
                year: 2026,
                month: 11,
                day: 25,
                hour: 23,
                minute: 30,
                second: 5,
                nanos: 7,
            }
        }
        fn power_off(&mut self) {
            self.off = true;
        }
        fn reboot(&mut self) {
            self.reboot = true;
        }
        fn pci_config_read(&mut self, buid: u64, at: PciConfigAddress, size: usize) -> Option<u32> {
            // One function, 00:01.0, whose config space is `config`.
            if buid != BUID || (at.bus, at.device, at.function) != (0, 1, 0) {
                return None;
            }
            let r = usize::from(at.register);
            let mut b = [0u8; 4];
            b[..size].copy_from_slice(&self.config[r..r + size]);
            Some(u32::from_le_bytes(b))
        }
        fn pci_config_write(
            &mut self,
            buid: u64,
            at: PciConfigAddress,
            size: usize,
            value: u32,
        ) -> bool {
            if buid != BUID || (at.bus, at.device, at.function) != (0, 1, 0) {
                return false;
            }
            let r = usize::from(at.register);
            self.config[r..r + size].copy_from_slice(&value.to_le_bytes()[..size]);
            true
        }
    }

    const BUID: u64 = 0x800_0000_2000_0000;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap()
    }

    #[test]
    fn get_time_of_day_writes_big_endian_returns() {
        let m = mem();
        // token 0x2001, nargs 0, nret 8.
        call(&m, 0x100, &[0x2001, 0, 8]);
        let mut p = Platform::default();
        assert_eq!(dispatch(&m, 0x100, BUID, &mut p).unwrap(), RTAS_OUT_SUCCESS);
        let mut rets = [0u8; 32];
        m.read_slice(&mut rets, GuestAddress(0x10c)).unwrap();
        assert_eq!(
            rets,
            [
                0, 0, 0, 0, // status
                0, 0, 0x07, 0xea, // 2026
                0, 0, 0, 11, 0, 0, 0, 25, 0, 0, 0, 23, 0, 0, 0, 30, 0, 0, 0, 5, 0, 0, 0, 7,
            ]
        );
    }

    #[test]
    fn power_off_and_display_character() {
        let m = mem();
        // power-off: token 0x2002, nargs 2, nret 1, args 0xffffffff 0xffffffff.
        call(
            &m,
            0x200,
            &[0x2002, 2, 1, 0xffff_ffff, 0xffff_ffff, 0xaaaa_aaaa],
        );
        let mut p = Platform::default();
        assert_eq!(dispatch(&m, 0x200, BUID, &mut p).unwrap(), 0);
        assert!(p.off);
        assert_eq!(word(&m, 0x214), 0, "status");
        // display-character 'A'.
        call(&m, 0x300, &[0x2000, 1, 1, 0x41]);
        dispatch(&m, 0x300, BUID, &mut p).unwrap();
        assert_eq!(p.chars, b"A");
    }

    #[test]
    fn unknown_token_and_wrong_arity_are_parameter_errors() {
        let m = mem();
        call(&m, 0x400, &[0x3000, 0, 1]);
        let mut p = Platform::default();
        assert_eq!(
            dispatch(&m, 0x400, BUID, &mut p).unwrap(),
            RTAS_OUT_PARAM_ERROR
        );
        assert_eq!(word(&m, 0x40c), 0xffff_fffd, "-3 as be32");
        // system-reboot with one argument is malformed and does not reboot.
        call(&m, 0x500, &[0x2003, 1, 1, 0]);
        assert_eq!(
            dispatch(&m, 0x500, BUID, &mut p).unwrap(),
            RTAS_OUT_PARAM_ERROR
        );
        assert!(!p.reboot);
        // A block off the end of memory is an error, not a panic.
        assert!(dispatch(&m, 0xffc, BUID, &mut p).is_err());
    }

    #[test]
    fn blob_is_the_h_rtas_trampoline() {
        // sc 1 is 0x44000022; ori r3,r3,0xf000 loads KVMPPC_H_RTAS.
        assert_eq!(RTAS_BLOB[3], 0x4400_0022);
        assert_eq!(RTAS_BLOB[2] & 0xffff, 0xf000);
        assert_eq!(token("power-off"), Some(0x2002));
    }

    /// Writes an argument block as the guest does: big-endian words.
    fn call(m: &GuestMemoryMmap, at: u64, words: &[u32]) {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        m.write_slice(&bytes, GuestAddress(at)).unwrap();
    }

    fn word(m: &GuestMemoryMmap, at: u64) -> u32 {
        u32::from_be_bytes(m.read_obj::<[u8; 4]>(GuestAddress(at)).unwrap())
    }

    #[test]
    fn pci_config_address_is_linux_rtas_config_addr() {
        // rtas_config_addr(bus 1, devfn 0x0a = 01.2, reg 0x104):
        // ((0x104 & 0xf00) << 20) | (1 << 16) | (0x0a << 8) | 0x04.
        let a = PciConfigAddress::decode(0x1001_0a04);
        assert_eq!(
            a,
            PciConfigAddress {
                bus: 1,
                device: 1,
                function: 2,
                register: 0x104
            }
        );
        assert!(a.valid_access(4));
        assert!(!a.valid_access(8));
        assert!(
            !PciConfigAddress::decode(0x0000_0802).valid_access(4),
            "unaligned"
        );
    }

    #[test]
    fn ibm_read_pci_config_reads_the_function_little_endian() {
        let m = mem();
        let p = &mut Platform::default();
        let read = token("ibm,read-pci-config").unwrap();
        // 00:01.0 register 0 (devfn 0x08), BUID hi/lo, 4 bytes.
        call(
            &m,
            0x100,
            &[read, 4, 2, 0x0800, 0x0800_0000, 0x2000_0000, 4, 0, 0],
        );
        assert_eq!(dispatch(&m, 0x100, BUID, p).unwrap(), RTAS_OUT_SUCCESS);
        assert_eq!(word(&m, 0x11c), 0, "status");
        assert_eq!(word(&m, 0x120), 0x1041_1af4, "device << 16 | vendor");
        // 2 bytes at register 2: the device ID alone.
        call(
            &m,
            0x100,
            &[read, 4, 2, 0x0802, 0x0800_0000, 0x2000_0000, 2, 0, 0],
        );
        dispatch(&m, 0x100, BUID, p).unwrap();
        assert_eq!(word(&m, 0x120), 0x1041);
        // An empty slot is a hardware error; an odd size a parameter error.
        call(
            &m,
            0x100,
            &[read, 4, 2, 0x1000, 0x0800_0000, 0x2000_0000, 4, 0, 0],
        );
        assert_eq!(dispatch(&m, 0x100, BUID, p).unwrap(), RTAS_OUT_HW_ERROR);
        call(
            &m,
            0x100,
            &[read, 4, 2, 0x0800, 0x0800_0000, 0x2000_0000, 3, 0, 0],
        );
        assert_eq!(dispatch(&m, 0x100, BUID, p).unwrap(), RTAS_OUT_PARAM_ERROR);
    }

    #[test]
    fn write_pci_config_without_buid_goes_to_the_default_bridge() {
        let m = mem();
        let p = &mut Platform::default();
        let write = token("write-pci-config").unwrap();
        // Command register (offset 4), 2 bytes: memory space | bus master.
        call(&m, 0x100, &[write, 3, 1, 0x0804, 2, 0x0006, 0]);
        assert_eq!(dispatch(&m, 0x100, BUID, p).unwrap(), RTAS_OUT_SUCCESS);
        assert_eq!(&p.config[4..6], &[0x06, 0x00]);
        let read = token("read-pci-config").unwrap();
        call(&m, 0x100, &[read, 2, 2, 0x0804, 2, 0, 0]);
        dispatch(&m, 0x100, BUID, p).unwrap();
        assert_eq!(word(&m, 0x114), 0, "status");
        assert_eq!(word(&m, 0x118), 0x0006);
    }
}

//! PC legacy devices, each a [`crate::bus::BusDevice`] on the I/O port bus:
//! - [`serial`]: 16550 UART (vm-superio) for COM1, interrupt through an [`EventFdTrigger`]
//!   (an irqfd in the VMM);
//! - [`i8042`]: the keyboard controller's CPU reset line (command 0xFE to port 0x64);
//! - [`rtc`]: CMOS real-time clock at 0x70/0x71 reporting the host's wall-clock time;
//! - [`acpi_pm`]: ACPI PM1 event/control, GPE0 and reset registers: poweroff, reset and
//!   the power button's SCI.

pub mod acpi_pm;
pub mod i8042;
pub mod rtc;
pub mod serial;
pub mod trigger;

pub use trigger::EventFdTrigger;

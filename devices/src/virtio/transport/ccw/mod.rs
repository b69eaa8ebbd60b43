//! virtio-ccw (virtio 1.2 §4.3, "Virtio Over Channel I/O"): how an s390x guest finds
//! and programs virtio devices through the channel subsystem.
//!
//! Layout, from the bytes up:
//! - [`command`]: channel command words and the virtio-ccw command payloads.
//! - [`subchannel`]: a subchannel's state (PMCW, SCSW, sense) and the ORB, SCHIB and IRB
//!   the channel-subsystem instructions exchange with the guest.
//! - [`program`]: the channel program interpreter — CCW fetch, command chaining, TIC,
//!   data transfer, incorrect length, unit check and program check — over a
//!   [`program::CcwDevice`].
//! - [`device`]: [`VirtioCcwDevice`], a [`crate::virtio::VirtioDevice`] behind the
//!   virtio-ccw commands (revision, features, status, queues, configuration,
//!   indicators).
//! - [`interrupt`]: [`CcwInterrupt`], the device's [`crate::virtio::VirtioInterrupt`]:
//!   classic indicators with a subchannel I/O interruption, or adapter (thin) interrupt
//!   indicators with a summary byte and an adapter interruption, through the VMM's
//!   [`IoInterruptSink`].
//! - [`css`]: [`ChannelSubsystem`], the instructions the s390x VMM receives from KVM
//!   (START/TEST/STORE/MODIFY/CLEAR/HALT SUBCHANNEL, STORE CHANNEL REPORT WORD, CHSC),
//!   with their operands in guest memory, condition codes and program exceptions.
//!
//! Every guest structure is big-endian (`virtio_feature_desc`'s feature word excepted);
//! the virtqueues themselves are virtio 1.x little-endian rings. Channel programs run to
//! completion inside START SUBCHANNEL, so HALT, RESUME and CANCEL SUBCHANNEL never find
//! one running.

pub mod command;
pub mod css;
pub mod device;
pub mod interrupt;
pub mod program;
pub mod subchannel;
#[cfg(test)]
mod test_driver;

use thiserror::Error;

pub use css::{ChannelSubsystem, IoInstruction, Operands, Outcome, ProgramException};
pub use device::VirtioCcwDevice;
pub use interrupt::{CcwInterrupt, IoInterruptSink};
pub use subchannel::{PendingInterrupt, SubchannelId};

/// Errors decoding a guest structure, each the reason for a program exception.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CcwError {
    /// Fewer bytes than the structure needs.
    #[error("{what} needs {need} bytes, got {got}")]
    Short {
        /// Which structure.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// Reserved ORB bits are set, or the channel program address has bit 0 set.
    #[error("Invalid ORB")]
    InvalidOrb,
    /// Reserved PMCW bits are set in a MODIFY SUBCHANNEL operand.
    #[error("Invalid SCHIB")]
    InvalidSchib,
    /// General register 1 does not hold a subchannel ID.
    #[error("Invalid subchannel ID {0:#010x}")]
    InvalidSubchannelId(u32),
}

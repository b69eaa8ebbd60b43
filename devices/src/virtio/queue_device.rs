//! The plumbing every virtio device here shares, in one place: its type, offered features,
//! queue sizes and configuration space ([`DeviceCore`]), the `Inactive` / `Activated`
//! lifecycle over `ActiveQueues`, dropped configuration writes, and the
//! [`VirtioDevice`] implementation the transports call. A device keeps a `DeviceCore` and
//! implements [`QueueDevice`]: what its queues and its own fds mean, and what activation
//! and reset do to its backend.

use std::os::fd::RawFd;

use vm_memory::GuestAddressSpace;

use super::active_queues::ActiveQueues;
use super::device::{ActivateError, Activation, DeviceState, Progress, VirtioDevice};
use super::features as virtio_features;
use super::log_limiter::LogLimiter;

/// What every device has: identity, offer, configuration space and lifecycle.
pub struct DeviceCore<M: GuestAddressSpace> {
    /// The device's name in log lines (`virtio-blk`).
    name: &'static str,
    device_type: u32,
    features: u64,
    queue_sizes: Vec<u16>,
    /// The device-specific configuration structure, little-endian as the driver reads it.
    config: Vec<u8>,
    /// Inactive, or the queues the driver handed over.
    pub(crate) state: DeviceState<ActiveQueues<M>>,
    /// Rate limit of the device's guest-triggered log lines.
    pub(crate) log: LogLimiter,
}

impl<M: GuestAddressSpace> DeviceCore<M> {
    /// An inactive device of `device_type` offering `features` and the ring features every
    /// device here offers (VERSION_1, indirect descriptors, EVENT_IDX), with one queue per
    /// entry of `queue_sizes` and `config` as its configuration space.
    pub(crate) fn new(
        name: &'static str,
        device_type: u32,
        features: u64,
        queue_sizes: &[u16],
        config: Vec<u8>,
    ) -> Self {
        DeviceCore {
            name,
            device_type,
            features: features
                | virtio_features::VERSION_1
                | virtio_features::RING_INDIRECT_DESC
                | virtio_features::RING_EVENT_IDX,
            queue_sizes: queue_sizes.to_vec(),
            config,
            state: DeviceState::Inactive,
            log: LogLimiter::default(),
        }
    }

    /// The configuration space, for devices whose configuration changes (link status).
    pub(crate) fn config_mut(&mut self) -> &mut [u8] {
        &mut self.config
    }

    /// Whether the driver has activated the device.
    pub fn is_activated(&self) -> bool {
        self.state.is_activated()
    }

    /// Copies configuration bytes at `offset` into `data`; zeros for whatever lies outside
    /// the structure (the guest picks any offset and length).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if let Some(src) = start
            .checked_add(data.len())
            .and_then(|end| self.config.get(start..end))
        {
            data.copy_from_slice(src);
        }
    }
}

/// A virtio device built on a [`DeviceCore`]; [`VirtioDevice`] comes with it.
pub trait QueueDevice<M: GuestAddressSpace>: Send {
    /// The shared part.
    fn core(&self) -> &DeviceCore<M>;

    /// The shared part, mutably.
    fn core_mut(&mut self) -> &mut DeviceCore<M>;

    /// The driver notified queue `index`.
    fn queue_notified(&mut self, index: usize);

    /// The device's own event sources; see [`VirtioDevice::event_fds`].
    fn own_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    /// Event source `index` of [`QueueDevice::own_fds`] is readable.
    fn fd_ready(&mut self, _index: usize) {}

    /// See [`VirtioDevice::pollable`].
    fn pollable(&self) -> bool {
        false
    }

    /// See [`VirtioDevice::set_polling`].
    fn set_polling(&mut self, _on: bool) -> bool {
        false
    }

    /// See [`VirtioDevice::poll`].
    fn poll(&mut self) -> Progress {
        Progress::default()
    }

    /// Runs once the queues are taken over, with the features the driver accepted; an
    /// error undoes the activation (the transport then sets DEVICE_NEEDS_RESET).
    fn activated(&mut self, _acked_features: u64) -> Result<(), ActivateError> {
        Ok(())
    }

    /// Runs on reset before the activation is dropped: when it returns, nothing the
    /// device started may still touch guest memory.
    fn resetting(&mut self) {}
}

impl<M, T> VirtioDevice<M> for T
where
    M: GuestAddressSpace + 'static,
    T: QueueDevice<M>,
{
    fn device_type(&self) -> u32 {
        self.core().device_type
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.core().queue_sizes
    }

    fn features(&self) -> u64 {
        self.core().features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.core().read_config(offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // No device here has a writable configuration field (none offers a feature that
        // makes one writable).
        let core = self.core_mut();
        if let Some(suppressed) = core.log.allow() {
            tracing::debug!(
                device = core.name,
                offset,
                len = data.len(),
                suppressed,
                "Dropped configuration write"
            );
        }
    }

    fn activate(&mut self, activation: Activation<M>) -> Result<(), ActivateError> {
        let acked = activation.acked_features;
        let core = self.core_mut();
        let queues = core.queue_sizes.len();
        core.state.activate(activation, queues, core.name)?;
        if let Err(e) = self.activated(acked) {
            self.core_mut().state = DeviceState::Inactive;
            return Err(e);
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.resetting();
        self.core_mut().state = DeviceState::Inactive;
    }

    fn is_activated(&self) -> bool {
        self.core().is_activated()
    }

    fn event_fds(&self) -> Vec<RawFd> {
        self.own_fds()
    }

    fn process_queue(&mut self, index: usize) {
        self.queue_notified(index);
    }

    fn process_event(&mut self, index: usize) {
        self.fd_ready(index);
    }

    fn pollable(&self) -> bool {
        QueueDevice::pollable(self)
    }

    fn set_polling(&mut self, on: bool) -> bool {
        QueueDevice::set_polling(self, on)
    }

    fn poll(&mut self) -> Progress {
        QueueDevice::poll(self)
    }
}

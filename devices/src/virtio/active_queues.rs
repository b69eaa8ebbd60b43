//! The queues of an activated device, and the one loop every device runs over them.
//!
//! Each device's event handler does the same around its own request logic: skip a broken
//! or unready queue; pop chains with notifications suppressed, re-enabling them and
//! looking again when the ring ran dry (EVENT_IDX races); put answered chains in the used
//! ring; then either flag DEVICE_NEEDS_RESET (the ring turned out corrupted) or interrupt
//! the driver if it asked to hear about the new used buffers. [`ActiveQueues`] holds that
//! shared part; the device supplies only what one chain means ([`ChainOutcome`]).
//!
//! A device whose thread busy-polls its rings ([`ActiveQueues::set_polling`]) keeps the
//! driver's notifications suppressed between passes: the thread finds new chains by
//! looking, so the driver's kicks (each one an exit from the guest) are not needed until
//! the thread stops polling and turns them back on.

use std::num::Wrapping;
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestAddressSpace, GuestMemory};

use super::counter::Counter;
use super::device::{ActivateError, Activation, DeviceState};
use super::interrupt::{VirtioInterrupt, VirtioInterruptType};
use super::log_limiter::LogLimiter;

/// The counters every device keeps about its rings.
pub(crate) trait RingCounters {
    /// Interrupts sent to the driver.
    fn interrupts(&self) -> &Counter;
    /// Times the device flagged DEVICE_NEEDS_RESET.
    fn needs_reset(&self) -> &Counter;
}

/// What became of one chain the device popped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChainOutcome {
    /// Answered: goes into the used ring with this many bytes written.
    Used(u32),
    /// Kept by the device, which completes it later (asynchronous I/O).
    Kept,
    /// Not consumed: back to the ring, and the device has nothing more to do now (its
    /// backend would block).
    Stop,
    /// Not consumed by this piece of work: back to the ring, and the next piece of work
    /// tries again.
    Retry,
    /// Not consumed: back to the ring, and the device has nothing to put into it now; its
    /// own event source (a backend fd) wakes it when it has. The driver's notifications
    /// stay suppressed: a device that still holds buffers needs no kick when more arrive
    /// (a receive queue: vhost-net's rule). Only a pass that runs out of chains asks for
    /// one.
    Idle,
}

/// How a pass over a queue ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Drained {
    /// Chains went into the used ring.
    pub(crate) used: bool,
    /// The pass ended because the driver had no more chains (not because the device had
    /// no more work).
    pub(crate) starved: bool,
    /// The pass ended on [`ChainOutcome::Idle`]: notifications stay suppressed.
    pub(crate) idle: bool,
    /// The device took at least one chain off the ring (used or kept).
    pub(crate) took: bool,
    /// The ring turned out corrupted: what was wrong.
    pub(crate) corrupted: Option<&'static str>,
}

/// The activated device: guest memory, the interrupt, the queues, and whether a ring
/// turned out corrupted (DEVICE_NEEDS_RESET is then set and nothing more is processed).
pub(crate) struct ActiveQueues<M: GuestAddressSpace> {
    pub(crate) mem: M,
    pub(crate) interrupt: Arc<dyn VirtioInterrupt>,
    pub(crate) queues: Vec<Queue>,
    pub(crate) broken: bool,
    /// The device thread is polling the rings: passes leave notifications suppressed.
    polling: bool,
    /// The device's name in log lines (`virtio-blk`).
    device: &'static str,
}

/// Keeps the driver from notifying `queue` while the device holds its chains: the used
/// ring's NO_NOTIFY flag, which `disable_notification` set at the start of the
/// pass, or with EVENT_IDX an `avail_event` one ring ahead of the next chain the device
/// takes. A driver cannot make that entry available before the device takes more chains
/// (the ring holds `size` of them), so the driver's `vring_need_event` never fires, and a
/// driver that compares indices without wrapping (virtio-drivers) sees an event above its
/// index except near the wrap (a spurious kick is harmless). The next pass that runs out
/// of chains writes the real `next_avail` back.
fn suppress_notifications<G: GuestMemory>(
    queue: &mut Queue,
    mem: &G,
) -> Result<(), vm_memory::GuestMemoryError> {
    if !queue.event_idx_enabled() {
        return Ok(());
    }
    let size = queue.size();
    let event = queue.next_avail().wrapping_add(size);
    // The used ring: flags, idx, `size` elements of 8 bytes, then avail_event. The
    // transport checked the ring lies in guest memory (virtio-queue's `is_valid`).
    let offset = 4 + 8 * u64::from(size);
    let addr = GuestAddress(queue.used_ring()).checked_add(offset).ok_or(
        vm_memory::GuestMemoryError::InvalidGuestAddress(GuestAddress(queue.used_ring())),
    )?;
    mem.store(event.to_le(), addr, std::sync::atomic::Ordering::Release)
}

impl<M: GuestAddressSpace> DeviceState<ActiveQueues<M>> {
    /// Takes over what the transport handed over on DRIVER_OK, if the device is inactive
    /// and the driver set up its `queue_count` queues; `device` names it in log lines.
    pub(crate) fn activate(
        &mut self,
        activation: Activation<M>,
        queue_count: usize,
        device: &'static str,
    ) -> Result<(), ActivateError> {
        if self.is_activated() {
            return Err(ActivateError::AlreadyActive);
        }
        if activation.queues.len() != queue_count {
            return Err(ActivateError::InvalidQueue {
                index: activation.queues.len(),
                reason: "wrong number of queues".into(),
            });
        }
        *self = DeviceState::Activated(ActiveQueues {
            mem: activation.mem,
            interrupt: activation.interrupt,
            queues: activation.queues,
            broken: false,
            polling: false,
            device,
        });
        Ok(())
    }
}

impl<M: GuestAddressSpace> ActiveQueues<M> {
    /// Pops every chain the driver made available on queue `index` and hands it to
    /// `handle` with guest memory, until the ring is empty or `handle` says
    /// [`ChainOutcome::Stop`] or [`ChainOutcome::Idle`]. Nothing happens on a broken device
    /// or a missing or unready queue. The caller then calls [`ActiveQueues::settle`].
    pub(crate) fn drain<F>(&mut self, index: usize, mut handle: F) -> Drained
    where
        F: FnMut(&M::M, DescriptorChain<&M::M>) -> ChainOutcome,
    {
        let mut drained = Drained::default();
        if self.broken {
            return drained;
        }
        let mem = self.mem.memory();
        let Some(queue) = self.queues.get_mut(index) else {
            return drained;
        };
        if !queue.ready() {
            return drained;
        }
        'notifications: loop {
            // While polling, notifications are off already (`set_polling`).
            if !self.polling && queue.disable_notification(&*mem).is_err() {
                drained.corrupted = Some("avail_event unwritable");
                break;
            }
            drained.starved = false;
            loop {
                let chain = match queue.iter(&*mem) {
                    Ok(mut iter) => iter.next(),
                    Err(_) => {
                        drained.corrupted = Some("avail index beyond queue size");
                        break 'notifications;
                    }
                };
                let Some(chain) = chain else {
                    drained.starved = true;
                    break;
                };
                let head = chain.head_index();
                match handle(&*mem, chain) {
                    ChainOutcome::Used(len) => {
                        if queue.add_used(&*mem, head, len).is_err() {
                            drained.corrupted = Some("used ring unwritable or head out of range");
                            break 'notifications;
                        }
                        drained.used = true;
                        drained.took = true;
                    }
                    ChainOutcome::Kept => drained.took = true,
                    ChainOutcome::Retry => queue.go_to_previous_position(),
                    ChainOutcome::Stop => {
                        queue.go_to_previous_position();
                        break;
                    }
                    ChainOutcome::Idle => {
                        queue.go_to_previous_position();
                        drained.idle = true;
                        break;
                    }
                }
            }
            // Idle, or polling: the driver need not kick; the next pass (or the thread's
            // next look) takes what it adds.
            if drained.idle || self.polling {
                if suppress_notifications(queue, &*mem).is_err() {
                    drained.corrupted = Some("avail_event unwritable");
                }
                break;
            }
            match queue.enable_notification(&*mem) {
                // New chains arrived while the device still has work.
                Ok(true) if drained.starved => continue,
                Ok(_) => break,
                Err(_) => {
                    drained.corrupted = Some("avail ring unreadable");
                    break;
                }
            }
        }
        drained
    }

    /// Whether any ready queue has chains the device has not taken yet (a cheap look at the
    /// available index; a ring that cannot be read counts as having some, so the next pass
    /// finds out what is wrong with it).
    pub(crate) fn pending(&self) -> bool {
        if self.broken {
            return false;
        }
        let mem = self.mem.memory();
        self.queues.iter().filter(|q| q.ready()).any(|q| {
            q.avail_idx(&*mem, std::sync::atomic::Ordering::Acquire)
                .map_or(true, |idx| idx != Wrapping(q.next_avail()))
        })
    }

    /// Starts (`true`) or stops busy polling. Starting suppresses the driver's
    /// notifications on every ready queue (NO_NOTIFY, or with EVENT_IDX an `avail_event`
    /// out of the driver's reach); stopping asks for them again, as a pass that ran out of
    /// chains does, and returns whether chains arrived meanwhile (the caller then makes a
    /// pass: the driver may not have kicked for them). A ring that cannot be written
    /// breaks the device.
    pub(crate) fn set_polling(
        &mut self,
        on: bool,
        counters: &impl RingCounters,
        log: &mut LogLimiter,
    ) -> bool {
        if self.polling == on {
            return false;
        }
        self.polling = on;
        if self.broken {
            return false;
        }
        let mem = self.mem.memory();
        let mut pending = false;
        let mut corrupted = false;
        for queue in self.queues.iter_mut().filter(|q| q.ready()) {
            if on {
                corrupted |= queue.disable_notification(&*mem).is_err()
                    || suppress_notifications(queue, &*mem).is_err();
            } else {
                match queue.enable_notification(&*mem) {
                    Ok(more) => pending |= more,
                    Err(_) => corrupted = true,
                }
            }
        }
        drop(mem);
        if corrupted {
            self.needs_reset("notification fields unwritable", counters, log);
            return false;
        }
        pending
    }

    /// Ends a pass over queue `index`: DEVICE_NEEDS_RESET if the ring was corrupted,
    /// otherwise an interrupt if chains were used and the driver wants one.
    pub(crate) fn settle(
        &mut self,
        index: usize,
        drained: Drained,
        counters: &impl RingCounters,
        log: &mut LogLimiter,
    ) {
        if let Some(what) = drained.corrupted {
            self.needs_reset(what, counters, log);
        } else if drained.used {
            self.notify(index, counters, log);
        }
    }

    /// Marks the device broken: the rings cannot be trusted any more.
    pub(crate) fn needs_reset(
        &mut self,
        what: &str,
        counters: &impl RingCounters,
        log: &mut LogLimiter,
    ) {
        if !self.broken {
            self.broken = true;
            counters.needs_reset().inc();
            if let Some(suppressed) = log.allow() {
                tracing::warn!(
                    device = self.device,
                    what,
                    suppressed,
                    "Virtio ring corrupted, device needs reset"
                );
            }
            self.interrupt.set_needs_reset();
        }
    }

    /// Signals queue `index` if the driver wants to hear about its new used buffers
    /// (EVENT_IDX aware).
    pub(crate) fn notify(
        &mut self,
        index: usize,
        counters: &impl RingCounters,
        log: &mut LogLimiter,
    ) {
        let mem = self.mem.memory();
        let Some(queue) = self.queues.get_mut(index) else {
            return;
        };
        match queue.needs_notification(&*mem) {
            Ok(false) => {}
            Ok(true) => {
                counters.interrupts().inc();
                // A queue index is below the queue count, which is below 2^16.
                if let Err(e) = self
                    .interrupt
                    .trigger(VirtioInterruptType::Queue(index as u16))
                {
                    tracing::warn!(device = self.device, error = %e, "Failed to signal a virtio queue");
                }
            }
            Err(_) => {
                drop(mem);
                self.needs_reset("used_event unreadable", counters, log);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vm_memory::GuestMemoryMmap;

    use super::*;
    use crate::virtio::features;
    use crate::virtio::test_driver::{test_memory, RecordingInterrupt, TestDriver};

    #[derive(Default)]
    struct Counters {
        interrupts: Counter,
        needs_reset: Counter,
    }

    impl RingCounters for Counters {
        fn interrupts(&self) -> &Counter {
            &self.interrupts
        }
        fn needs_reset(&self) -> &Counter {
            &self.needs_reset
        }
    }

    type Mem = Arc<GuestMemoryMmap>;

    fn active() -> (ActiveQueues<Mem>, TestDriver, Arc<RecordingInterrupt>) {
        let mem = test_memory();
        let driver = TestDriver::new(&mem, 16, 0);
        let interrupt = Arc::new(RecordingInterrupt::default());
        let irq: Arc<dyn VirtioInterrupt> = interrupt.clone();
        let activation = || Activation {
            mem: mem.clone(),
            interrupt: irq.clone(),
            queues: vec![driver.queue(false)],
            acked_features: features::VERSION_1,
        };
        let mut state = DeviceState::<ActiveQueues<Mem>>::Inactive;
        assert!(matches!(
            state.activate(activation(), 2, "virtio-test"),
            Err(ActivateError::InvalidQueue { index: 1, .. })
        ));
        state.activate(activation(), 1, "virtio-test").unwrap();
        assert!(matches!(
            state.activate(activation(), 1, "virtio-test"),
            Err(ActivateError::AlreadyActive)
        ));
        let DeviceState::Activated(active) = state else {
            unreachable!("activated above")
        };
        (active, driver, interrupt)
    }

    #[test]
    fn used_chains_are_published_and_signalled() {
        let (mut active, mut driver, interrupt) = active();
        let counters = Counters::default();
        let mut log = LogLimiter::default();
        let a = driver.add_chain(&[(0x10_0000, 8, true)]);
        let b = driver.add_chain(&[(0x11_0000, 8, true)]);
        let drained = active.drain(0, |_, chain| {
            ChainOutcome::Used(u32::from(chain.head_index()) + 1)
        });
        assert_eq!(
            drained,
            Drained {
                used: true,
                starved: true,
                idle: false,
                took: true,
                corrupted: None
            }
        );
        active.settle(0, drained, &counters, &mut log);
        assert_eq!(driver.used(0), (u32::from(a), u32::from(a) + 1));
        assert_eq!(driver.used(1), (u32::from(b), u32::from(b) + 1));
        assert_eq!(*interrupt.queues.lock().unwrap(), vec![0]);
        assert_eq!(counters.interrupts.get(), 1);
        // A queue that does not exist is skipped.
        assert_eq!(
            active.drain(7, |_, _| ChainOutcome::Used(0)),
            Drained::default()
        );
    }

    #[test]
    fn stopped_retried_and_kept_chains_stay_out_of_the_used_ring() {
        let (mut active, mut driver, interrupt) = active();
        let counters = Counters::default();
        let mut log = LogLimiter::default();
        driver.add_chain(&[(0x10_0000, 8, true)]);
        driver.add_chain(&[(0x11_0000, 8, true)]);
        // Stop: the first chain goes back, the second is not looked at.
        let mut seen = 0;
        let drained = active.drain(0, |_, _| {
            seen += 1;
            ChainOutcome::Stop
        });
        assert_eq!((seen, drained.used, drained.starved), (1, false, false));
        // Retry: the same chain comes again until the work runs out.
        let mut work = 3;
        let mut seen = Vec::new();
        active.drain(0, |_, chain| {
            seen.push(chain.head_index());
            work -= 1;
            if work > 0 {
                ChainOutcome::Retry
            } else {
                ChainOutcome::Stop
            }
        });
        assert_eq!(seen, vec![0, 0, 0]);
        // Kept: both chains taken, none used, no interrupt.
        let drained = active.drain(0, |_, _| ChainOutcome::Kept);
        active.settle(0, drained, &counters, &mut log);
        assert!(drained.starved && !drained.used);
        assert_eq!(driver.used_idx(), 0);
        assert!(interrupt.queues.lock().unwrap().is_empty());
        // Taken chains are not offered again.
        let drained = active.drain(0, |_, _| ChainOutcome::Used(0));
        assert!(!drained.used);
    }

    /// An activated device with one 16-entry queue, and its driver.
    fn one_queue(event_idx: bool) -> (ActiveQueues<Mem>, TestDriver) {
        let mem = test_memory();
        let driver = TestDriver::new(&mem, 16, 0);
        let active = ActiveQueues {
            mem: mem.clone(),
            interrupt: Arc::new(RecordingInterrupt::default()),
            queues: vec![driver.queue(event_idx)],
            broken: false,
            polling: false,
            device: "virtio-test",
        };
        (active, driver)
    }

    #[test]
    fn idle_passes_keep_kicks_suppressed_until_the_chains_run_out() {
        for event_idx in [false, true] {
            let (mut active, mut driver) = one_queue(event_idx);
            for i in 0..3 {
                driver.add_chain(&[(0x10_0000 + i * 0x1000, 8, true)]);
            }
            // One chain used per pass, then nothing more to do: the next goes back to the
            // ring. Meanwhile the driver adds chains without kicking.
            for pass in 0..40 {
                let mut first = true;
                let drained = active.drain(0, |_, _| {
                    if std::mem::take(&mut first) {
                        ChainOutcome::Used(1)
                    } else {
                        ChainOutcome::Idle
                    }
                });
                assert!(drained.used && drained.idle && !drained.starved);
                let old = driver.avail_idx();
                driver.add_chain(&[(0x20_0000, 8, true)]);
                assert!(
                    !driver.kick_needed(old, event_idx),
                    "event_idx {event_idx}, pass {pass}"
                );
            }
            // Every chain used: the next one the driver adds needs a kick.
            let drained = active.drain(0, |_, _| ChainOutcome::Used(1));
            assert!(drained.starved && !drained.idle);
            assert_eq!(driver.used_idx(), 43);
            let old = driver.avail_idx();
            driver.add_chain(&[(0x20_0000, 8, true)]);
            assert!(driver.kick_needed(old, event_idx), "event_idx {event_idx}");
        }
    }

    #[test]
    fn polling_keeps_kicks_suppressed_until_it_stops() {
        for event_idx in [false, true] {
            let (mut active, mut driver) = one_queue(event_idx);
            let counters = Counters::default();
            let mut log = LogLimiter::default();
            assert!(!active.pending());
            // Starting to poll turns kicks off at once, before any pass.
            assert!(!active.set_polling(true, &counters, &mut log));
            let old = driver.avail_idx();
            driver.add_chain(&[(0x10_0000, 8, true)]);
            assert!(!driver.kick_needed(old, event_idx), "event_idx {event_idx}");
            // The thread finds the chain by looking; passes that run out of chains keep
            // kicks off, across more than a ring's worth of chains (the index wraps the
            // ring, and with EVENT_IDX the driver's avail index passes the first
            // avail_event written).
            for pass in 0..40 {
                assert!(active.pending(), "pass {pass}");
                let drained = active.drain(0, |_, _| ChainOutcome::Used(1));
                assert!(drained.took && drained.starved && drained.used);
                assert!(!active.pending());
                let old = driver.avail_idx();
                driver.add_chain(&[(0x10_0000, 8, true)]);
                assert!(
                    !driver.kick_needed(old, event_idx),
                    "event_idx {event_idx}, pass {pass}"
                );
            }
            // Stopping turns kicks back on and reports the chain that came meanwhile.
            assert!(active.set_polling(false, &counters, &mut log));
            assert!(!active.set_polling(false, &counters, &mut log));
            let drained = active.drain(0, |_, _| ChainOutcome::Used(1));
            assert!(drained.took);
            assert_eq!(driver.used_idx(), 41);
            let old = driver.avail_idx();
            driver.add_chain(&[(0x10_0000, 8, true)]);
            assert!(driver.kick_needed(old, event_idx), "event_idx {event_idx}");
            // Nothing new since the last pass: stopping finds nothing.
            active.drain(0, |_, _| ChainOutcome::Used(1));
            assert!(!active.set_polling(true, &counters, &mut log));
            assert!(!active.set_polling(false, &counters, &mut log));
            assert_eq!(counters.needs_reset.get(), 0);
        }
    }

    #[test]
    fn a_corrupted_ring_breaks_the_device_once() {
        let (mut active, mut driver, interrupt) = active();
        let counters = Counters::default();
        let mut log = LogLimiter::default();
        driver.publish(100);
        let drained = active.drain(0, |_, _| ChainOutcome::Used(0));
        assert!(drained.corrupted.is_some());
        active.settle(0, drained, &counters, &mut log);
        active.settle(0, drained, &counters, &mut log);
        assert!(active.broken);
        assert!(interrupt.needs_reset());
        assert_eq!(counters.needs_reset.get(), 1);
        // A broken device processes nothing.
        driver.add_chain(&[(0x10_0000, 8, true)]);
        assert_eq!(
            active.drain(0, |_, _| ChainOutcome::Used(0)),
            Drained::default()
        );
    }
}

//! The channel subsystem of an s390x VM: its subchannels (one per virtio-ccw device, in
//! subchannel set 0 of CSS 0, numbered from 0, device number = subchannel number) and
//! the channel-subsystem instructions KVM passes to userspace once
//! `KVM_CAP_S390_CSS_SUPPORT` is enabled.
//!
//! [`ChannelSubsystem::execute`] takes an instruction with general register 1 and its
//! operand address and reads or writes the operand through [`Operands`] (the vCPU's view
//! of storage: KVM_S390_MEM_OP on KVM on Z). It answers with the condition code, a
//! program exception (operand: bad subchannel ID, ORB or SCHIB; specification: a
//! misaligned operand) or nothing when the operand access itself faulted (the accessor
//! has delivered that exception). START SUBCHANNEL runs the channel program to
//! completion at once and makes the subchannel's I/O interruption pending through the
//! [`IoInterruptSink`].
//!
//! CHANNEL SUBSYSTEM CALL answers every command with response code 0x0004 ("command not
//! provided"); SET CHANNEL MONITOR and SET ADDRESS LIMIT are accepted and do nothing
//! (no measurement); RESET CHANNEL PATH, STORE CHANNEL PATH STATUS and TEST PENDING
//! INTERRUPTION (which KVM handles itself) get an operation exception.

use std::sync::{Arc, Mutex, MutexGuard};

use vm_memory::GuestAddressSpace;

use super::device::VirtioCcwDevice;
use super::interrupt::{CcwInterrupt, IoInterruptSink};
use super::program::{self, CcwDevice};
use super::subchannel::{Orb, PendingInterrupt, Subchannel, SubchannelId, ORB_SIZE, SCHIB_SIZE};
use crate::virtio::transport::SharedVirtioDevice;

/// The channel-subsystem instructions (opcode 0xB2 and this second byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoInstruction {
    /// CSCH.
    ClearSubchannel,
    /// HSCH.
    HaltSubchannel,
    /// MSCH.
    ModifySubchannel,
    /// SSCH.
    StartSubchannel,
    /// STSCH.
    StoreSubchannel,
    /// TSCH.
    TestSubchannel,
    /// TPI (handled by KVM).
    TestPendingInterruption,
    /// SAL.
    SetAddressLimit,
    /// RSCH.
    ResumeSubchannel,
    /// STCRW.
    StoreChannelReportWord,
    /// STCPS.
    StoreChannelPathStatus,
    /// RCHP.
    ResetChannelPath,
    /// SCHM.
    SetChannelMonitor,
    /// CHSC.
    ChannelSubsystemCall,
    /// XSCH.
    CancelSubchannel,
}

impl IoInstruction {
    /// The instruction `0xB2 op`, if it is one.
    pub fn from_opcode(op: u8) -> Option<Self> {
        Some(match op {
            0x30 => Self::ClearSubchannel,
            0x31 => Self::HaltSubchannel,
            0x32 => Self::ModifySubchannel,
            0x33 => Self::StartSubchannel,
            0x34 => Self::StoreSubchannel,
            0x35 => Self::TestSubchannel,
            0x36 => Self::TestPendingInterruption,
            0x37 => Self::SetAddressLimit,
            0x38 => Self::ResumeSubchannel,
            0x39 => Self::StoreChannelReportWord,
            0x3a => Self::StoreChannelPathStatus,
            0x3b => Self::ResetChannelPath,
            0x3c => Self::SetChannelMonitor,
            0x5f => Self::ChannelSubsystemCall,
            0x76 => Self::CancelSubchannel,
            _ => return None,
        })
    }
}

/// Program-interruption codes the instructions raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ProgramException {
    /// Operation exception.
    Operation = 0x01,
    /// Specification exception (misaligned operand).
    Specification = 0x06,
    /// Operand exception (invalid subchannel ID, ORB, SCHIB or CHSC request).
    Operand = 0x15,
}

/// What an instruction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Completed with this condition code.
    Cc(u8),
    /// Completed without setting the condition code.
    Done,
    /// Suppressed with this program exception.
    Exception(ProgramException),
    /// Accessing the operand raised an exception, already delivered by [`Operands`].
    Faulted,
}

/// An operand access raised an exception the accessor delivered to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessFault;

/// The vCPU's view of storage for instruction operands (logical addresses: DAT and
/// prefixing apply, unlike the absolute addresses of channel programs).
pub trait Operands {
    /// Reads `buf.len()` bytes at `addr`.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), AccessFault>;
    /// Writes `buf` at `addr`.
    fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), AccessFault>;
}

struct Entry {
    subchannel: Arc<Mutex<Subchannel>>,
    device: Arc<Mutex<dyn CcwDevice>>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Subchannel state is plain values, consistent across a panic; a device's own
    // invariants are checked by its commands.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The channel subsystem.
pub struct ChannelSubsystem<M: GuestAddressSpace> {
    mem: M,
    sink: Arc<dyn IoInterruptSink>,
    subchannels: Vec<Entry>,
}

impl<M: GuestAddressSpace> std::fmt::Debug for ChannelSubsystem<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelSubsystem")
            .field("subchannels", &self.subchannels.len())
            .finish_non_exhaustive()
    }
}

const NOT_OPERATIONAL: Outcome = Outcome::Cc(3);

impl<M> ChannelSubsystem<M>
where
    M: GuestAddressSpace + Send + Sync + 'static,
{
    /// A channel subsystem without subchannels over guest memory `mem`.
    pub fn new(mem: M, sink: Arc<dyn IoInterruptSink>) -> Self {
        Self {
            mem,
            sink,
            subchannels: Vec::new(),
        }
    }

    /// Adds a subchannel for `device`: its ID.
    pub fn attach(
        &mut self,
        make: impl FnOnce(Arc<Mutex<Subchannel>>) -> Arc<Mutex<dyn CcwDevice>>,
    ) -> SubchannelId {
        // More than 65536 devices cannot be configured (one per tap, disk, ...).
        let number = u16::try_from(self.subchannels.len()).expect("at most 65536 subchannels");
        let id = SubchannelId::new(0, number);
        let subchannel = Arc::new(Mutex::new(Subchannel::new(id, number)));
        let device = make(subchannel.clone());
        self.attach_subchannel(subchannel, device)
    }

    /// Adds a subchannel for the virtio device `device`: its ID and its virtio-ccw side
    /// (whose queue eventfds the VMM registers and polls).
    pub fn attach_virtio(
        &mut self,
        device: SharedVirtioDevice<M>,
    ) -> std::io::Result<(SubchannelId, Arc<Mutex<VirtioCcwDevice<M>>>)> {
        let number = u16::try_from(self.subchannels.len()).expect("at most 65536 subchannels");
        let subchannel = Arc::new(Mutex::new(Subchannel::new(
            SubchannelId::new(0, number),
            number,
        )));
        let interrupt = Arc::new(CcwInterrupt::new(
            self.mem.clone(),
            subchannel.clone(),
            self.sink.clone(),
        ));
        let ccw = Arc::new(Mutex::new(VirtioCcwDevice::new(
            device,
            self.mem.clone(),
            interrupt,
        )?));
        let id = self.attach_subchannel(subchannel, ccw.clone());
        Ok((id, ccw))
    }

    fn attach_subchannel(
        &mut self,
        subchannel: Arc<Mutex<Subchannel>>,
        device: Arc<Mutex<dyn CcwDevice>>,
    ) -> SubchannelId {
        let id = lock(&subchannel).id();
        self.subchannels.push(Entry { subchannel, device });
        id
    }

    /// A virtio-ccw notification that reached the VMM (DIAGNOSE 0x500 subcode 3 with the
    /// subchannel ID in general register 2 and the queue index in register 3, when no
    /// ioeventfd took it): whether that subchannel and queue exist (the guest gets 0,
    /// else a negative errno, in register 2).
    pub fn notify(&self, subchannel: u32, queue: u64) -> bool {
        self.entry(subchannel)
            .is_some_and(|e| lock(&e.device).notify(queue))
    }

    /// The subchannel with register form `word`, if it exists.
    pub fn subchannel(&self, word: u32) -> Option<Arc<Mutex<Subchannel>>> {
        self.entry(word).map(|e| e.subchannel.clone())
    }

    fn entry(&self, word: u32) -> Option<&Entry> {
        let id = SubchannelId::from_register(word).ok()?;
        if id.m || id.cssid != 0 || id.ssid != 0 {
            return None;
        }
        self.subchannels.get(usize::from(id.number))
    }

    fn inject(&self, irq: PendingInterrupt) {
        if let Err(e) = self.sink.subchannel(irq) {
            tracing::warn!(
                subchannel = format_args!("{:#x}", irq.id.word()),
                "Cannot inject an I/O interruption: {e}"
            );
        }
    }

    /// Executes `insn` with general register 1 `gpr1` and its operand at `operand`.
    pub fn execute(
        &self,
        insn: IoInstruction,
        gpr1: u64,
        operand: u64,
        ops: &mut dyn Operands,
    ) -> Outcome {
        use IoInstruction::*;
        match insn {
            StoreChannelReportWord => {
                if !operand.is_multiple_of(4) {
                    return Outcome::Exception(ProgramException::Specification);
                }
                // No channel reports are ever pending: zeros and cc 1.
                match ops.write(operand, &[0; 4]) {
                    Ok(()) => Outcome::Cc(1),
                    Err(AccessFault) => Outcome::Faulted,
                }
            }
            ChannelSubsystemCall => Self::chsc(operand, ops),
            SetChannelMonitor | SetAddressLimit => Outcome::Done,
            TestPendingInterruption | StoreChannelPathStatus | ResetChannelPath => {
                Outcome::Exception(ProgramException::Operation)
            }
            _ => {
                // The rest name a subchannel in general register 1 (its low word).
                let word = gpr1 as u32;
                if SubchannelId::from_register(word).is_err() {
                    return Outcome::Exception(ProgramException::Operand);
                }
                let needs_word_operand = matches!(
                    insn,
                    StartSubchannel | TestSubchannel | StoreSubchannel | ModifySubchannel
                );
                if needs_word_operand && !operand.is_multiple_of(4) {
                    return Outcome::Exception(ProgramException::Specification);
                }
                let Some(entry) = self.entry(word) else {
                    return NOT_OPERATIONAL;
                };
                self.subchannel_instruction(insn, entry, operand, ops)
            }
        }
    }

    fn subchannel_instruction(
        &self,
        insn: IoInstruction,
        entry: &Entry,
        operand: u64,
        ops: &mut dyn Operands,
    ) -> Outcome {
        use IoInstruction::*;
        match insn {
            StartSubchannel => {
                let mut orb = [0u8; ORB_SIZE];
                if ops.read(operand, &mut orb).is_err() {
                    return Outcome::Faulted;
                }
                let Ok(orb) = Orb::decode(&orb) else {
                    return Outcome::Exception(ProgramException::Operand);
                };
                let sense = {
                    let mut sub = lock(&entry.subchannel);
                    let cc = sub.start(&orb);
                    if cc != 0 {
                        return Outcome::Cc(cc);
                    }
                    sub.sense()
                };
                // The subchannel lock is not held while the device runs: the device's
                // own interrupts (on the device thread) take it.
                let ending = {
                    let mem = self.mem.memory();
                    let mut device = lock(&entry.device);
                    program::run(&*mem, &orb, &sense, &mut *device)
                };
                let irq = lock(&entry.subchannel).complete(ending.completion, ending.sense);
                self.inject(irq);
                Outcome::Cc(0)
            }
            TestSubchannel => {
                let mut sub = lock(&entry.subchannel);
                // Store first, then change state: an access exception suppresses TSCH.
                if ops.write(operand, &sub.irb()).is_err() {
                    return Outcome::Faulted;
                }
                Outcome::Cc(sub.test().0)
            }
            StoreSubchannel => {
                let schib = lock(&entry.subchannel).store();
                match ops.write(operand, &schib) {
                    Ok(()) => Outcome::Cc(0),
                    Err(AccessFault) => Outcome::Faulted,
                }
            }
            ModifySubchannel => {
                let mut schib = [0u8; SCHIB_SIZE];
                if ops.read(operand, &mut schib).is_err() {
                    return Outcome::Faulted;
                }
                match lock(&entry.subchannel).modify(&schib) {
                    Ok(cc) => Outcome::Cc(cc),
                    Err(_) => Outcome::Exception(ProgramException::Operand),
                }
            }
            ClearSubchannel | HaltSubchannel => {
                let result = {
                    let mut sub = lock(&entry.subchannel);
                    if insn == ClearSubchannel {
                        sub.clear()
                    } else {
                        sub.halt()
                    }
                };
                match result {
                    Ok(irq) => {
                        self.inject(irq);
                        Outcome::Cc(0)
                    }
                    Err(cc) => Outcome::Cc(cc),
                }
            }
            ResumeSubchannel | CancelSubchannel => {
                Outcome::Cc(lock(&entry.subchannel).resume_or_cancel())
            }
            _ => Outcome::Exception(ProgramException::Operation),
        }
    }

    /// CHSC: a request block (`be16 length; be16 command; ...`) at a page boundary, the
    /// response block right after it.
    fn chsc(operand: u64, ops: &mut dyn Operands) -> Outcome {
        if !operand.is_multiple_of(4096) {
            return Outcome::Exception(ProgramException::Specification);
        }
        let mut header = [0u8; 4];
        if ops.read(operand, &mut header).is_err() {
            return Outcome::Faulted;
        }
        let len = u16::from_be_bytes([header[0], header[1]]);
        if !(16..=4088).contains(&len) || !len.is_multiple_of(8) {
            return Outcome::Exception(ProgramException::Operand);
        }
        // Response: length 8, code 0x0004 (command not provided), parameter 0.
        let response = [0, 8, 0, 4, 0, 0, 0, 0];
        match ops.write(operand + u64::from(len), &response) {
            Ok(()) => Outcome::Cc(0),
            Err(AccessFault) => Outcome::Faulted,
        }
    }
}

// Tests may unwrap: a failed unwrap is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::virtio::features;
    use crate::virtio::interrupt::VirtioInterruptType;
    use crate::virtio::rng::RngDevice;
    use crate::virtio::test_driver::{test_memory, RecordingDevice, TestDriver};
    use crate::virtio::transport::ccw::command::ThinintArea;
    use crate::virtio::transport::ccw::interrupt::tests::RecordingSink;
    use crate::virtio::transport::ccw::test_driver::{Driver, Identity, Mem, SCHIB_AT};

    fn css(
        devices: Vec<SharedVirtioDevice<Mem>>,
    ) -> (ChannelSubsystem<Mem>, Mem, Arc<RecordingSink>) {
        let mem = test_memory();
        let sink = Arc::new(RecordingSink::default());
        let mut css = ChannelSubsystem::new(mem.clone(), sink.clone());
        for d in devices {
            css.attach_virtio(d).unwrap();
        }
        (css, mem, sink)
    }

    fn driver<'a>(
        css: &'a ChannelSubsystem<Mem>,
        mem: &Mem,
        sink: &Arc<RecordingSink>,
        number: u16,
    ) -> Driver<'a> {
        Driver {
            css,
            mem: mem.clone(),
            sink: sink.clone(),
            // One bit set (bit 15), subchannel set 0, subchannel `number`.
            sid: 0x0001_0000 | u64::from(number),
            intparm: 0,
        }
    }

    fn be64(v: u64) -> [u8; 8] {
        v.to_be_bytes()
    }

    #[test]
    fn linux_driver_brings_up_virtio_rng_with_adapter_interrupts() {
        let rng: SharedVirtioDevice<Mem> = Arc::new(Mutex::new(RngDevice::<Mem>::new()));
        let (css, mem, sink) = css(vec![rng.clone()]);
        let mut d = driver(&css, &mem, &sink, 0);

        // Enumeration: subchannel 0 has a valid device number 0; subchannel 1 is not
        // there; a register without the "one" bit is an operand exception.
        assert_eq!(d.stsch(), Outcome::Cc(0));
        let schib = mem.read_obj::<[u8; 8]>(GuestAddress(SCHIB_AT)).unwrap();
        assert_eq!(schib[5] & 0x01, 0x01, "device number valid");
        assert_eq!(&schib[6..8], &[0, 0], "device number 0");
        let mut other = driver(&css, &mem, &sink, 1);
        assert_eq!(other.stsch(), Outcome::Cc(3));
        other.sid = 5;
        assert_eq!(other.stsch(), Outcome::Exception(ProgramException::Operand));

        // Before MODIFY SUBCHANNEL enables it, the subchannel is not operational.
        assert_eq!(
            d.insn(IoInstruction::StartSubchannel, 0x1000),
            Outcome::Cc(3)
        );
        d.enable(3, 0x0bad_cafe);

        // SENSE ID: control unit type 0x3832, model = virtio device type 4 (rng).
        let (status, id) = d.ccw(0xe4, true, &[], 12);
        assert!(status.ok());
        assert_eq!(&id[..4], &[0xff, 0x38, 0x32, 4]);
        assert_eq!(status.count, 4, "8 of 12 bytes stored");

        // Anything but SET_VIRTIO_REV first is rejected (a virtio 1 device).
        let (status, _) = d.ccw(0x31, false, &[1], 1);
        assert_eq!(status.dstat, 0x0e, "unit check");
        assert_eq!(d.sense0(), 0x80, "command reject");
        // Revision 3 is not offered, revision 2 is (virtio_rev_info: be16 rev, be16 len).
        let (status, _) = d.ccw(0x83, false, &[0, 3, 0, 0], 4);
        assert_eq!(status.dstat, 0x0e);
        d.ok(0x83, &[0, 2, 0, 0]);

        // Status ACKNOWLEDGE | DRIVER, then the features: word 0 has INDIRECT_DESC (28)
        // and EVENT_IDX (29), word 1 VERSION_1 (32) — little-endian feature words.
        d.ok(0x31, &[0x03]);
        let f0 = d.ok(0x12, &[0, 0, 0, 0, 0]);
        assert_eq!(f0, vec![0x00, 0x00, 0x00, 0x30, 0]);
        let f1 = d.ok(0x12, &[0, 0, 0, 0, 1]);
        assert_eq!(f1, vec![0x01, 0x00, 0x00, 0x00, 1]);
        d.ok(0x11, &[0x00, 0x00, 0x00, 0x20, 0]);
        d.ok(0x11, &[0x01, 0x00, 0x00, 0x00, 1]);
        d.ok(0x31, &[0x0b]);
        assert_eq!(d.ok(0x72, &[0]), vec![0x0b], "FEATURES_OK kept");

        // Adapter interrupts: summary byte at 0x6000, indicator bits at 0x6100 from bit
        // 8, ISC 3; the configuration indicator at 0x6200.
        let mut thinint = Vec::new();
        thinint.extend_from_slice(&be64(0x6000));
        thinint.extend_from_slice(&be64(0x6100));
        thinint.extend_from_slice(&be64(8));
        thinint.push(3);
        d.ok(0x73, &thinint);
        d.ok(0x53, &be64(0x6200));
        // Classic indicators cannot be mixed in.
        let (status, _) = d.ccw(0x43, false, &be64(0x6300), 8);
        assert_eq!(status.dstat, 0x0e);

        // Queue 0: its maximum size, then its rings where TestDriver keeps them.
        assert_eq!(
            d.ok(0x32, &[0, 0, 0, 0]),
            vec![0, 0, 0x01, 0x00],
            "256 entries"
        );
        let mut vq = Vec::new();
        vq.extend_from_slice(&be64(0x10_0000)); // desc
        vq.extend_from_slice(&[0, 0, 0, 0]); // res0
        vq.extend_from_slice(&[0, 0]); // index 0
        vq.extend_from_slice(&[0, 16]); // num 16
        vq.extend_from_slice(&be64(0x10_1000)); // driver (avail)
        vq.extend_from_slice(&be64(0x10_2000)); // device (used)
        d.ok(0x13, &vq);
        d.ok(0x31, &[0x0f]);
        assert!(rng.lock().unwrap().is_activated());
        assert_eq!(d.ok(0x72, &[0]), vec![0x0f]);

        // A request: the device fills 64 bytes, marks them used and raises queue 0's
        // adapter indicator (bit 8 = byte 1, MSB) and the summary byte.
        let mut ring = TestDriver::new(&mem, 16, 0x10_0000);
        ring.add_chain(&[(0x20_0000, 64, true)]);
        rng.lock().unwrap().process_queue(0);
        assert_eq!(ring.used_idx(), 1);
        assert_eq!(ring.used(0).1, 64);
        assert_eq!(
            mem.read_obj::<[u8; 2]>(GuestAddress(0x6100)).unwrap(),
            [0, 0x80]
        );
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x6000)).unwrap(), 1);
        assert_eq!(*sink.adapter.lock().unwrap(), vec![3]);

        // A device reset (status 0) stops the device and forgets the indicators.
        d.ok(0x31, &[0]);
        assert!(!rng.lock().unwrap().is_activated());
        assert_eq!(d.ok(0x72, &[0]), vec![0]);
    }

    /// The machine's fast paths: adapter indicators handed to the VMM (irqfd routes on
    /// KVM on Z) and queue notifications through the device's queue eventfds, which a
    /// DIAGNOSE 0x500 that reaches the VMM also writes.
    #[test]
    fn routed_adapter_indicators_and_notifications_bypass_guest_memory() {
        let rng: SharedVirtioDevice<Mem> = Arc::new(Mutex::new(RngDevice::<Mem>::new()));
        let mem = test_memory();
        let sink = Arc::new(RecordingSink {
            route: true,
            ..RecordingSink::default()
        });
        let mut css = ChannelSubsystem::new(mem.clone(), sink.clone());
        let (id, ccw) = css.attach_virtio(rng.clone()).unwrap();
        assert_eq!(id.word(), 0x0001_0000);
        let mut d = driver(&css, &mem, &sink, 0);
        d.enable(2, 1);
        d.ok(0x83, &[0, 2, 0, 0]);
        d.ok(0x31, &[0x03]);
        d.ok(0x11, &[0x01, 0x00, 0x00, 0x00, 1]); // VERSION_1
        d.ok(0x31, &[0x0b]);
        // Summary byte at 0x6000, indicators at 0x6100 from bit 3, ISC 2.
        let mut thinint = Vec::new();
        thinint.extend_from_slice(&be64(0x6000));
        thinint.extend_from_slice(&be64(0x6100));
        thinint.extend_from_slice(&be64(3));
        thinint.push(2);
        d.ok(0x73, &thinint);
        {
            let routes = sink.routes.lock().unwrap();
            assert_eq!(routes.len(), 1);
            assert_eq!(routes[0].0, id);
            assert_eq!(
                routes[0].1,
                ThinintArea {
                    summary_indicator: 0x6000,
                    indicator: 0x6100,
                    bit_nr: 3,
                    isc: 2
                }
            );
            assert_eq!(routes[0].2.len(), 1, "virtio-rng has one queue");
        }
        let mut vq = Vec::new();
        vq.extend_from_slice(&be64(0x10_0000));
        vq.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 16]);
        vq.extend_from_slice(&be64(0x10_1000));
        vq.extend_from_slice(&be64(0x10_2000));
        d.ok(0x13, &vq);
        d.ok(0x31, &[0x0f]);

        // DIAGNOSE 0x500 subcode 3 for queue 0 of this subchannel reaches its eventfd;
        // another queue or subchannel does not exist.
        let queue_event = ccw.lock().unwrap().queue_events()[0].try_clone().unwrap();
        assert!(queue_event.read().is_err(), "no kick yet");
        assert!(css.notify(0x0001_0000, 0));
        assert!(
            queue_event.read().is_ok(),
            "the kick reached the queue eventfd"
        );
        assert!(!css.notify(0x0001_0000, 1));
        assert!(!css.notify(0x0001_0001, 0));
        assert!(!css.notify(0x0000_0000, 0), "not a subchannel ID");

        // The used buffer signals through the route's notifier, not guest memory.
        let mut ring = TestDriver::new(&mem, 16, 0x10_0000);
        ring.add_chain(&[(0x20_0000, 32, true)]);
        rng.lock().unwrap().process_queue(0);
        assert_eq!(ring.used_idx(), 1);
        let notifier = sink.routes.lock().unwrap()[0].2[0].try_clone().unwrap();
        assert!(notifier.read().is_ok(), "queue 0's notifier written");
        assert_eq!(
            mem.read_obj::<[u8; 2]>(GuestAddress(0x6000)).unwrap(),
            [0, 0]
        );
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x6100)).unwrap(), 0);
        assert!(sink.adapter.lock().unwrap().is_empty());

        // A reset gives the routes back.
        d.ok(0x31, &[0]);
        assert_eq!(*sink.unrouted.lock().unwrap(), vec![id]);
    }

    #[test]
    fn classic_indicators_configuration_space_and_revision_1() {
        let dev = Arc::new(Mutex::new(RecordingDevice {
            config: [1, 2, 3, 4, 5, 6, 7, 8],
            ..RecordingDevice::default()
        }));
        let (css, mem, sink) = css(vec![dev.clone()]);
        let mut d = driver(&css, &mem, &sink, 0);
        d.enable(2, 0x77);
        let (status, id) = d.ccw(0xe4, true, &[], 8);
        assert!(status.ok());
        assert_eq!(id[3], 2, "block device");
        d.ok(0x83, &[0, 1, 0, 0]);
        // Revision 1 has no READ_STATUS.
        let (status, _) = d.ccw(0x72, false, &[0], 1);
        assert_eq!(status.dstat, 0x0e);
        // Renegotiating the revision is refused.
        let (status, _) = d.ccw(0x83, false, &[0, 1, 0, 0], 4);
        assert_eq!(status.dstat, 0x0e);

        // The configuration space from offset 0.
        assert_eq!(d.ok(0x22, &[0; 8]), vec![1, 2, 3, 4, 5, 6, 7, 8]);
        d.ok(0x21, &[9, 9, 9, 9]);
        assert_eq!(dev.lock().unwrap().config, [9, 9, 9, 9, 5, 6, 7, 8]);

        d.ok(0x31, &[0x03]);
        d.ok(0x11, &[0x00, 0x00, 0x00, 0x20, 0]);
        d.ok(0x11, &[0x01, 0x00, 0x00, 0x00, 1]);
        d.ok(0x31, &[0x0b]);
        d.ok(0x43, &be64(0x7000));
        d.ok(0x53, &be64(0x7100));
        d.ok(0x31, &[0x0f]);
        assert_eq!(
            dev.lock().unwrap().activated.as_ref().unwrap().2,
            features::VERSION_1 | features::RING_EVENT_IDX
        );
        let interrupt = dev.lock().unwrap().interrupt.clone().unwrap();
        let before = sink.subchannel.lock().unwrap().len();
        interrupt.trigger(VirtioInterruptType::Queue(1)).unwrap();
        // Bit 1 of the big-endian doubleword at 0x7000, and an unsolicited interruption
        // with alert status.
        assert_eq!(
            mem.read_obj::<[u8; 8]>(GuestAddress(0x7000)).unwrap(),
            [0, 0, 0, 0, 0, 0, 0, 2]
        );
        assert_eq!(sink.subchannel.lock().unwrap().len(), before + 1);
        let status = d.tsch();
        assert_eq!(status.ctrl, 0x0011, "alert + status pending, no function");
        interrupt.trigger(VirtioInterruptType::Config).unwrap();
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x7107)).unwrap(), 1);
        assert_eq!(d.tsch().ctrl, 0x0011);
    }

    #[test]
    fn payload_lengths_and_queue_checks() {
        let dev = Arc::new(Mutex::new(RecordingDevice::default()));
        let (css, mem, sink) = css(vec![dev]);
        let mut d = driver(&css, &mem, &sink, 0);
        d.enable(0, 1);
        d.ok(0x83, &[0, 2, 0, 0]);
        // Without VERSION_1 the device refuses FEATURES_OK.
        d.ok(0x31, &[0x03]);
        d.ok(0x31, &[0x0b]);
        assert_eq!(d.ok(0x72, &[0]), vec![0x03]);
        // READ_FEAT needs 5 bytes: 4 is a program check, 8 without SLI too.
        let (status, _) = d.ccw(0x12, true, &[0; 4], 4);
        assert_eq!(status.cstat, 0x20);
        let (status, _) = d.ccw(0x12, false, &[0; 8], 8);
        assert_eq!(status.cstat, 0x20);
        // With SLI an 8-byte area is fine: 3 bytes residual.
        let (status, _) = d.ccw(0x12, true, &[0; 8], 8);
        assert!(status.ok());
        assert_eq!(status.count, 3);
        // SET_VQ: a queue the device does not have, a size above the maximum, a size that
        // is not a power of two.
        let vq = |index: u16, num: u16| {
            let mut b = Vec::new();
            b.extend_from_slice(&be64(0x10_0000));
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&index.to_be_bytes());
            b.extend_from_slice(&num.to_be_bytes());
            b.extend_from_slice(&be64(0x10_1000));
            b.extend_from_slice(&be64(0x10_2000));
            b
        };
        for (index, num) in [(2, 16), (1, 64), (0, 24), (0, 0)] {
            let (status, _) = d.ccw(0x13, false, &vq(index, num), 32);
            assert_eq!(status.cstat, 0x20, "queue {index} size {num}");
        }
        d.ok(0x13, &vq(1, 32));
        // READ_VQ_CONF of a queue that does not exist answers 0.
        assert_eq!(d.ok(0x32, &[0, 5, 0, 0]), vec![0, 5, 0, 0]);
        // An unknown command is rejected.
        let (status, _) = d.ccw(0x99, true, &[], 0);
        assert_eq!(status.dstat, 0x0e);
    }

    #[test]
    fn instruction_checks() {
        let (css, mem, sink) = css(vec![Arc::new(Mutex::new(RecordingDevice::default()))]);
        let d = driver(&css, &mem, &sink, 0);
        let mut ops = Identity(mem.clone());
        // Misaligned operands.
        for insn in [
            IoInstruction::StartSubchannel,
            IoInstruction::TestSubchannel,
            IoInstruction::StoreSubchannel,
            IoInstruction::ModifySubchannel,
            IoInstruction::StoreChannelReportWord,
        ] {
            assert_eq!(
                css.execute(insn, d.sid, 0x1002, &mut ops),
                Outcome::Exception(ProgramException::Specification),
                "{insn:?}"
            );
        }
        // Subchannel set 1 and a cssid with the m bit do not exist here.
        assert_eq!(
            css.execute(
                IoInstruction::StoreSubchannel,
                0x0003_0000,
                0x1000,
                &mut ops
            ),
            Outcome::Cc(3)
        );
        assert_eq!(
            css.execute(
                IoInstruction::StoreSubchannel,
                0x0109_0000,
                0x1000,
                &mut ops
            ),
            Outcome::Cc(3)
        );
        // A cssid without m is an operand exception.
        assert_eq!(
            css.execute(IoInstruction::TestSubchannel, 0x0101_0000, 0x1000, &mut ops),
            Outcome::Exception(ProgramException::Operand)
        );
        // TSCH with nothing pending: cc 1 and an IRB of zeros.
        mem.write_slice(&[0xff; 96], GuestAddress(0x4000)).unwrap();
        assert_eq!(
            d.insn(IoInstruction::TestSubchannel, 0x4000),
            Outcome::Cc(1)
        );
        assert_eq!(
            mem.read_obj::<[u8; 12]>(GuestAddress(0x4000)).unwrap(),
            [0; 12]
        );
        // STCRW: no report pending.
        mem.write_slice(&[0xff; 4], GuestAddress(0x4100)).unwrap();
        assert_eq!(
            d.insn(IoInstruction::StoreChannelReportWord, 0x4100),
            Outcome::Cc(1)
        );
        assert_eq!(
            mem.read_obj::<[u8; 4]>(GuestAddress(0x4100)).unwrap(),
            [0; 4]
        );
        // CHSC: request of 16 bytes at a page; the response after it says "command
        // not provided".
        mem.write_slice(&[0, 16, 0, 0x10], GuestAddress(0x8000))
            .unwrap();
        assert_eq!(
            d.insn(IoInstruction::ChannelSubsystemCall, 0x8000),
            Outcome::Cc(0)
        );
        assert_eq!(
            mem.read_obj::<[u8; 8]>(GuestAddress(0x8010)).unwrap(),
            [0, 8, 0, 4, 0, 0, 0, 0]
        );
        mem.write_slice(&[0, 12, 0, 0x10], GuestAddress(0x8000))
            .unwrap();
        assert_eq!(
            d.insn(IoInstruction::ChannelSubsystemCall, 0x8000),
            Outcome::Exception(ProgramException::Operand)
        );
        assert_eq!(
            d.insn(IoInstruction::ChannelSubsystemCall, 0x8008),
            Outcome::Exception(ProgramException::Specification)
        );
        // Operands outside memory fault, and a faulted TSCH keeps the status pending.
        assert_eq!(
            d.insn(IoInstruction::StoreSubchannel, 0x1000_0000),
            Outcome::Faulted
        );
        assert_eq!(
            IoInstruction::from_opcode(0x33),
            Some(IoInstruction::StartSubchannel)
        );
        assert_eq!(IoInstruction::from_opcode(0x20), None);
    }

    #[test]
    fn clear_halt_and_faulted_test_subchannel() {
        let (css, mem, sink) = css(vec![Arc::new(Mutex::new(RecordingDevice::default()))]);
        let mut d = driver(&css, &mem, &sink, 0);
        d.enable(5, 0x55);
        assert_eq!(d.insn(IoInstruction::ClearSubchannel, 0), Outcome::Cc(0));
        assert_eq!(sink.subchannel.lock().unwrap().last().unwrap().isc, 5);
        // HSCH while the clear status is pending: cc 1. TSCH to an address outside
        // memory faults and leaves it pending.
        assert_eq!(d.insn(IoInstruction::HaltSubchannel, 0), Outcome::Cc(1));
        assert_eq!(
            d.insn(IoInstruction::TestSubchannel, 0x1000_0000),
            Outcome::Faulted
        );
        let status = d.tsch();
        assert_eq!(status.ctrl, 0x1001, "clear function, status pending");
        assert_eq!(d.insn(IoInstruction::ResumeSubchannel, 0), Outcome::Cc(2));
        assert_eq!(d.insn(IoInstruction::CancelSubchannel, 0), Outcome::Cc(2));
        assert_eq!(d.insn(IoInstruction::HaltSubchannel, 0), Outcome::Cc(0));
        assert_eq!(d.tsch().ctrl, 0x2001, "halt function, status pending");
    }
}

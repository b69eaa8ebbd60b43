//! Building a VM (KVM VM, in-kernel irqchip and PIT, memfd guest memory, legacy devices,
//! vCPUs with their CPUID, kernel and boot hand-off) and its event thread `vmm-<vm>`:
//! an epoll loop over the command kick, the vCPUs' exit event, the guest's poweroff and
//! reset events and console input, which owns the vCPU threads and tears everything down
//! when the VM ends.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arch::boot::{BootConfig, BootEntry};
use arch::layout;
use devices::bus::Bus;
use devices::legacy::acpi_pm::{AcpiPm, IrqLevel, ACPI_PM_LEN};
use devices::legacy::i8042::{I8042, I8042_PORT_LEN};
use devices::legacy::rtc::{Rtc, RTC_PORT_LEN};
use devices::legacy::serial::{SerialDevice, SERIAL_PORT_LEN};
use devices::legacy::EventFdTrigger;
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use tokio::sync::watch;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::config::VmConfig;
use super::console::{self, ConsoleConfig};
use super::device_manager::{self, DeviceError, DeviceManager};
use super::exit::{panic_message, ExitReason, ExitSlot};
use super::handle::{CommandError, Request, VmHandle};
use super::lifecycle::{self, Commanded, Commands, Lifecycle};
use super::memory::{self, Memory};
use super::vcpu::{self, RunState, VcpuContext, VcpuControl};

/// Errors creating a VM. Each names what the operator must fix.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Invalid configuration.
    #[error("Invalid VM configuration: {0}")]
    Config(String),
    /// Kernel file.
    #[error("Cannot open kernel {}", .0.display())]
    KernelOpen(PathBuf, #[source] std::io::Error),
    /// Initrd file.
    #[error("Cannot open initrd {}", .0.display())]
    InitrdOpen(PathBuf, #[source] std::io::Error),
    /// /dev/kvm.
    #[error("Cannot open /dev/kvm")]
    KvmOpen(#[source] kvm_ioctls::Error),
    /// A KVM capability we need.
    #[error("KVM lacks {0}")]
    KvmCap(&'static str),
    /// A KVM VM ioctl.
    #[error("KVM failed to {0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// Guest memory.
    #[error("Cannot create guest memory")]
    Memory(#[from] memory::MemoryError),
    /// An eventfd, epoll or thread.
    #[error("Cannot set up {0}")]
    Io(&'static str, #[source] std::io::Error),
    /// A device could not be placed on its bus.
    #[error("Cannot register device {0}")]
    Bus(&'static str, #[source] devices::bus::BusError),
    /// CPU model or features.
    #[error("Invalid CPU configuration")]
    Cpuid(#[from] arch::cpuid::CpuidError),
    /// vCPU register set-up.
    #[error("Cannot configure vCPU")]
    Regs(#[from] arch::regs::RegsError),
    /// Kernel, initrd or boot hand-off.
    #[error("Cannot boot {}", .0.display())]
    Boot(PathBuf, #[source] arch::boot::BootError),
    /// Console output.
    #[error("Cannot open console")]
    Console(#[source] std::io::Error),
    /// PCI and virtio devices.
    #[error("Cannot set up devices")]
    Devices(#[from] DeviceError),
}

/// The SCI as a level line on the in-kernel IOAPIC/PIC.
struct SciLine {
    vm: Arc<VmFd>,
}

impl IrqLevel for SciLine {
    fn set_level(&self, high: bool) -> std::io::Result<()> {
        self.vm
            .set_irq_line(layout::SCI_IRQ, high)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

type Serial = SerialDevice<Box<dyn std::io::Write + Send>>;
type Pm = AcpiPm<SciLine>;

/// Everything the event thread owns.
struct VmParts {
    name: Arc<str>,
    /// Created (vCPUs parked) or already Running.
    initial: Lifecycle,
    // The vCPU threads own their fds; they are joined (Drop, or `teardown`) before what
    // they use goes.
    vcpu_threads: Vec<JoinHandle<()>>,
    /// Taken by `teardown` before the exit is published.
    keep_alive: Option<KeepAlive>,
    serial: Arc<Mutex<Serial>>,
    pm: Arc<Mutex<Pm>>,
    control: Arc<VcpuControl>,
    exit: Arc<ExitSlot>,
    exit_tx: watch::Sender<Option<ExitReason>>,
    exit_evt: Arc<EventFd>,
    shutdown_evt: EventFd,
    reset_evt: EventFd,
    cmd_evt: Arc<EventFd>,
    rx: mpsc::Receiver<Request>,
    console: ConsoleConfig,
}

/// What the vCPUs use, released in this order (field order is drop order) once they are
/// joined: the device thread stops and the devices close their files (a disk's image
/// lock goes with its fd), then the VM fd goes before guest memory is unmapped. All of it
/// is released before the exit is published, so whoever restarts the VM on its exit finds
/// its disks free.
struct KeepAlive {
    _devices: DeviceManager,
    _vm: Arc<VmFd>,
    _memory: Memory,
}

impl Drop for VmParts {
    fn drop(&mut self) {
        // Only when the event thread never ran; `teardown` has joined them otherwise.
        self.control.stop(&mut self.vcpu_threads);
    }
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |e| VmError::Kvm(what, e)
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |e| VmError::Io(what, e)
}

fn open(path: &Path) -> std::io::Result<File> {
    let f = File::open(path)?;
    if f.metadata()?.is_dir() {
        return Err(std::io::Error::other("is a directory"));
    }
    Ok(f)
}

/// Creates a VM from `config` and its event thread; the vCPUs start on
/// [`VmHandle::start`].
pub fn create(config: VmConfig) -> Result<VmHandle, VmError> {
    build(config, Lifecycle::Created)
}

/// Creates a VM from `config` that runs at once: [`create`] and [`VmHandle::start`]
/// without the round trip through the event thread, so the guest's first instruction
/// does not wait for that thread to be scheduled (`monovirt run`).
pub fn create_running(config: VmConfig) -> Result<VmHandle, VmError> {
    build(config, Lifecycle::Running)
}

/// Builds the VM; its vCPU threads park until Start (`Created`) or run (`Running`).
fn build(config: VmConfig, initial: Lifecycle) -> Result<VmHandle, VmError> {
    let topo = config.topology();
    if config.vcpus == 0 || config.vcpus as usize > layout::MAX_VCPUS {
        return Err(VmError::Config(format!(
            "vCPUs must be 1..={}, not {}",
            layout::MAX_VCPUS,
            config.vcpus
        )));
    }
    if topo.vcpus() != config.vcpus {
        return Err(VmError::Config(format!(
            "topology {}x{}x{} does not make {} vCPUs",
            topo.sockets, topo.cores, topo.threads, config.vcpus
        )));
    }
    let mem_size = config
        .memory_mib
        .checked_mul(1 << 20)
        .filter(|m| *m >= arch::boot::MIN_MEMORY)
        .ok_or_else(|| {
            VmError::Config(format!(
                "memory must be at least {} MiB",
                arch::boot::MIN_MEMORY >> 20
            ))
        })?;
    let kernel = open(&config.kernel).map_err(|e| VmError::KernelOpen(config.kernel.clone(), e))?;
    let initrd = match &config.initrd {
        Some(p) => Some(open(p).map_err(|e| VmError::InitrdOpen(p.clone(), e))?),
        None => None,
    };
    let name: Arc<str> = config.name.as_str().into();

    let kvm = Kvm::new().map_err(VmError::KvmOpen)?;
    for (cap, what) in [
        (Cap::Irqchip, "an in-kernel irqchip"),
        (Cap::Irqfd, "irqfd"),
        (Cap::ImmediateExit, "immediate_exit"),
        (Cap::UserMemory, "user memory regions"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(VmError::KvmCap(what));
        }
    }
    let vm = Arc::new(kvm.create_vm().map_err(kvm_err("create a VM"))?);
    let apic_ids: Vec<u32> = (0..config.vcpus).map(|i| topo.apic_id(i)).collect();

    // Guest memory and its slots first: KVM's first memslot, registered before any
    // irqchip, PIT or vCPU exists, ends on an expedited SRCU grace period that is over
    // in ~0.2 ms; registered after them (or concurrently), the same ioctl waits one or
    // two timer ticks (4-8 ms at HZ=250) for its grace period, and KVM_CREATE_PIT2
    // waits for it on kvm->slots_lock (ftrace of `monovirt run`; benches/boot.rs).
    let memory = memory::create(&config.name, mem_size, config.hugepages)?;
    register_memory(&vm, &memory)?;
    // Then two halves at once: the kernel, initrd and boot hand-off written into guest
    // memory on a `boot-<vm>` thread (file reads), the irqchip, vCPUs and PIT here
    // (kvm->lock; KVM_CREATE_PIT2 waits for its kernel thread to be created).
    let (entry, built) = std::thread::scope(|scope| {
        let boot = std::thread::Builder::new()
            .name(format!("boot-{name}"))
            .stack_size(HELPER_STACK)
            .spawn_scoped(scope, || {
                load_guest(&memory, &config, mem_size, kernel, initrd, &apic_ids)
            })
            .map_err(io_err("the boot thread"))?;
        let built = build_platform(&kvm, &vm, &config, &topo)?;
        let entry = boot.join().map_err(|panic| {
            let msg = format!("it panicked: {}", panic_message(&*panic));
            VmError::Io("the boot thread", std::io::Error::other(msg))
        })??;
        Ok::<_, VmError>((entry, built))
    })?;
    let Platform {
        base_cpuid,
        vcpu_fds,
        pio,
        mmio,
        serial,
        pm,
        reset_evt,
        shutdown_evt,
    } = built;
    // The boot vCPU's entry is known now; the others were configured meanwhile.
    if let Some(bsp) = vcpu_fds.first() {
        let cpuid = arch::cpuid::for_vcpu(&base_cpuid, 0, &topo)?;
        arch::regs::configure_vcpu(bsp, &cpuid, Some(&entry))?;
    }

    // The PCI root complex and virtio devices; their thread reports a failure as a crash.
    let exit = Arc::new(ExitSlot::default());
    let exit_evt = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(io_err("exit event"))?);
    let crash = {
        let exit = exit.clone();
        let exit_evt = exit_evt.clone();
        Arc::new(move |detail: String| {
            exit.report(ExitReason::Crash { detail });
            let _ = exit_evt.write(1);
        })
    };
    // Read-only statistics for /metrics: vCPU threads, the memfd, device counters.
    let stats = Arc::new(super::stats::VmStats::new(memory.file.try_clone().ok()));
    let devices = device_manager::create(&vm, &memory.guest, &pio, &mmio, &config, crash, &stats)?;

    // The vCPU threads start now; for a VM that is only created they park until Start,
    // with their thread creation and seccomp set-up done before the guest is asked to run.
    vcpu::install_kick_handler().map_err(io_err("the vCPU kick signal"))?;
    let (tx, rx) = mpsc::channel();
    let cmd_evt = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(io_err("command event"))?);
    let (exit_tx, exit_rx) = watch::channel(None);
    // Nothing fails after the vCPU threads start but the event thread's spawn, and
    // dropping its parts then stops and joins them.
    let control = Arc::new(match initial {
        Lifecycle::Created => VcpuControl::parked(),
        _ => VcpuControl::default(),
    });
    let ctx = VcpuContext {
        vm: name.clone(),
        pio: pio.clone(),
        mmio: mmio.clone(),
        control: control.clone(),
        exit: exit.clone(),
        exit_evt: exit_evt.clone(),
        stats: stats.clone(),
    };
    let mut vcpu_threads = Vec::with_capacity(vcpu_fds.len());
    for (i, fd) in vcpu_fds.into_iter().enumerate() {
        match vcpu::spawn(i as u32, fd, ctx.clone()) {
            Ok(t) => vcpu_threads.push(t),
            Err(e) => {
                control.stop(&mut vcpu_threads);
                return Err(VmError::Io("a vCPU thread", e));
            }
        }
    }
    let parts = VmParts {
        name: name.clone(),
        initial,
        vcpu_threads,
        keep_alive: Some(KeepAlive {
            _devices: devices,
            _vm: vm,
            _memory: memory,
        }),
        serial,
        pm,
        control,
        exit: exit.clone(),
        exit_tx,
        exit_evt,
        shutdown_evt,
        reset_evt,
        cmd_evt: cmd_evt.clone(),
        rx,
        console: config.console.clone(),
    };
    std::thread::Builder::new()
        .name(format!("vmm-{name}"))
        .spawn(move || event_thread(parts))
        .map_err(io_err("the VM event thread"))?;
    Ok(VmHandle::new(name, tx, cmd_evt, exit, exit_rx, stats))
}

/// Stack of the short-lived `boot-<vm>` thread: ELF headers, boot tables on the heap.
const HELPER_STACK: usize = 256 << 10;

/// Registers every region of `memory` as a KVM memory slot of `vm`.
fn register_memory(vm: &VmFd, memory: &Memory) -> Result<(), VmError> {
    for slot in memory.slots() {
        let slot = slot?;
        let r = kvm_userspace_memory_region {
            slot: slot.slot,
            flags: 0,
            guest_phys_addr: slot.guest_phys_addr,
            memory_size: slot.size,
            userspace_addr: slot.host_addr,
        };
        // SAFETY: the region is a live mapping of `memory.guest`. vCPUs run only while
        // the event thread owns it, and it drops the VM fd before the memory; until they
        // run KVM does not touch guest memory (and its MMU notifier forgets a mapping
        // that goes away, as on an error return from `create`).
        unsafe { vm.set_user_memory_region(r) }.map_err(kvm_err("register guest memory"))?;
    }
    Ok(())
}

/// The kernel and initrd loaded into guest memory and the boot hand-off (e820, ACPI
/// tables, boot_params or PVH start_info) written: the `boot-<vm>` thread.
fn load_guest(
    memory: &Memory,
    config: &VmConfig,
    mem_size: u64,
    mut kernel: File,
    initrd: Option<File>,
    apic_ids: &[u32],
) -> Result<BootEntry, VmError> {
    let boot_err = |e| VmError::Boot(config.kernel.clone(), e);
    let loaded = arch::boot::load_kernel(&memory.guest, &mut kernel).map_err(boot_err)?;
    let initrd = match initrd {
        Some(mut f) => {
            let path = config.initrd.clone().unwrap_or_default();
            let size = f
                .metadata()
                .map_err(|e| VmError::InitrdOpen(path.clone(), e))?
                .len();
            let addr = arch::boot::load_initrd(&memory.guest, &mut f, size, &loaded, mem_size)
                .map_err(|e| VmError::Boot(path, e))?;
            Some((addr, size))
        }
        None => None,
    };
    arch::boot::configure_system(
        &memory.guest,
        &loaded,
        &BootConfig {
            cmdline: &config.cmdline,
            initrd,
            mem_size,
            apic_ids,
            protocol: config.boot,
        },
    )
    .map_err(boot_err)
}

/// The VM's platform apart from guest memory: what [`create`] builds while the
/// `boot-<vm>` thread loads the guest.
struct Platform {
    base_cpuid: Vec<arch::cpuid::CpuidEntry>,
    /// Every vCPU; all but the boot vCPU are configured.
    vcpu_fds: Vec<VcpuFd>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    serial: Arc<Mutex<Serial>>,
    pm: Arc<Mutex<Pm>>,
    reset_evt: EventFd,
    shutdown_evt: EventFd,
}

/// The in-kernel irqchip, the vCPUs with their CPUID and registers (but the boot vCPU's
/// entry), the PIT, and the legacy devices on the port bus.
fn build_platform(
    kvm: &Kvm,
    vm: &Arc<VmFd>,
    config: &VmConfig,
    topo: &arch::cpu::Topology,
) -> Result<Platform, VmError> {
    vm.set_tss_address(layout::KVM_TSS_START as usize)
        .map_err(kvm_err("set the TSS address"))?;
    if kvm.check_extension(Cap::SetIdentityMapAddr) {
        vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_START)
            .map_err(kvm_err("set the identity map address"))?;
    }
    vm.create_irq_chip()
        .map_err(kvm_err("create the irqchip"))?;
    // vCPUs before the PIT: both take kvm->lock, which KVM_CREATE_PIT2 holds while it
    // waits for its kernel thread to be scheduled (QEMU orders them the same way).
    let mut vcpu_fds = Vec::with_capacity(config.vcpus as usize);
    for i in 0..config.vcpus {
        vcpu_fds.push(
            vm.create_vcpu(u64::from(i))
                .map_err(kvm_err("create a vCPU"))?,
        );
    }
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .map_err(kvm_err("create the PIT"))?;
    let mut base_cpuid = arch::regs::supported_cpuid(kvm)?;
    arch::cpuid::apply_template(&mut base_cpuid, &config.cpu)?;
    for (i, fd) in vcpu_fds.iter().enumerate().skip(1) {
        let cpuid = arch::cpuid::for_vcpu(&base_cpuid, i as u32, topo)?;
        arch::regs::configure_vcpu(fd, &cpuid, None)?;
    }

    let pio = Arc::new(Bus::new());
    let mmio = Arc::new(Bus::new());
    let com1_evt = EventFd::new(EFD_NONBLOCK).map_err(io_err("COM1 irqfd"))?;
    vm.register_irqfd(&com1_evt, layout::COM1_IRQ)
        .map_err(kvm_err("register the COM1 irqfd"))?;
    let out = console::output(&config.console).map_err(VmError::Console)?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        EventFdTrigger::new(com1_evt),
        out,
    )));
    pio.insert(
        serial.clone(),
        u64::from(layout::COM1_PORT),
        SERIAL_PORT_LEN,
    )
    .map_err(|e| VmError::Bus("COM1", e))?;

    let reset_evt = EventFd::new(EFD_NONBLOCK).map_err(io_err("reset event"))?;
    let shutdown_evt = EventFd::new(EFD_NONBLOCK).map_err(io_err("poweroff event"))?;
    let trigger = |e: &EventFd, what| e.try_clone().map(EventFdTrigger::new).map_err(io_err(what));
    pio.insert(
        Arc::new(Mutex::new(I8042::new(trigger(&reset_evt, "i8042")?))),
        u64::from(layout::I8042_DATA_PORT),
        I8042_PORT_LEN,
    )
    .map_err(|e| VmError::Bus("i8042", e))?;
    pio.insert(
        Arc::new(Mutex::new(Rtc::new())),
        u64::from(layout::RTC_PORT),
        RTC_PORT_LEN,
    )
    .map_err(|e| VmError::Bus("RTC", e))?;
    let pm = Arc::new(Mutex::new(AcpiPm::new(
        SciLine { vm: vm.clone() },
        layout::S5_SLEEP_TYPE,
        layout::ACPI_RESET_VALUE,
        trigger(&shutdown_evt, "ACPI PM")?,
        trigger(&reset_evt, "ACPI PM")?,
    )));
    pio.insert(pm.clone(), u64::from(layout::PM1A_EVT_PORT), ACPI_PM_LEN)
        .map_err(|e| VmError::Bus("ACPI PM", e))?;
    Ok(Platform {
        base_cpuid,
        vcpu_fds,
        pio,
        mmio,
        serial,
        pm,
        reset_evt,
        shutdown_evt,
    })
}

const TOKEN_CMD: u64 = 0;
const TOKEN_EXIT: u64 = 1;
const TOKEN_SHUTDOWN: u64 = 2;
const TOKEN_RESET: u64 = 3;
const TOKEN_STDIN: u64 = 4;
const TOKEN_RING_INPUT: u64 = 5;

/// How soon input that did not fit the COM1 FIFO is offered again.
const INPUT_RETRY: Duration = Duration::from_millis(5);

fn event_thread(mut parts: VmParts) {
    // Its seccomp filter first; the vCPU threads it starts inherit it and add their own.
    if let Err(e) = super::seccomp::apply(super::seccomp::ThreadKind::Event) {
        tracing::error!(vm = %parts.name, "{e}");
        parts.exit.report(ExitReason::Crash {
            detail: e.to_string(),
        });
        teardown(&mut parts);
        return;
    }
    let (name, exit) = (parts.name.clone(), parts.exit.clone());
    lifecycle::run_guarded(&name, &exit, || event_loop(&mut parts));
    teardown(&mut parts);
}

fn teardown(parts: &mut VmParts) {
    parts.control.stop(&mut parts.vcpu_threads);
    parts.keep_alive.take();
    lifecycle::finish(&parts.name, &parts.exit, &parts.exit_tx, &parts.rx);
}

fn add(epoll: &Epoll, fd: RawFd, token: u64) -> std::io::Result<()> {
    epoll.ctl(
        ControlOperation::Add,
        fd,
        EpollEvent::new(EventSet::IN, token),
    )
}

/// Runs until the VM ends; the exit reason is in `parts.exit` when it returns.
fn event_loop(parts: &mut VmParts) {
    let setup = || -> std::io::Result<Epoll> {
        let epoll = Epoll::new()?;
        add(&epoll, parts.cmd_evt.as_raw_fd(), TOKEN_CMD)?;
        add(&epoll, parts.exit_evt.as_raw_fd(), TOKEN_EXIT)?;
        add(&epoll, parts.shutdown_evt.as_raw_fd(), TOKEN_SHUTDOWN)?;
        add(&epoll, parts.reset_evt.as_raw_fd(), TOKEN_RESET)?;
        match &parts.console {
            ConsoleConfig::Stdio => {
                // stdin may be closed or not pollable (a regular file): then no input.
                if let Err(e) = add(&epoll, libc::STDIN_FILENO, TOKEN_STDIN) {
                    tracing::debug!(vm = %parts.name, "console input disabled: {e}");
                }
            }
            ConsoleConfig::Ring(ring) => {
                if let Some(evt) = ring.input_event() {
                    add(&epoll, evt.as_raw_fd(), TOKEN_RING_INPUT)?;
                }
            }
            ConsoleConfig::File(_) | ConsoleConfig::Null => {}
        }
        Ok(epoll)
    };
    let epoll = match setup() {
        Ok(e) => e,
        Err(e) => {
            parts.exit.report(ExitReason::Crash {
                detail: format!("cannot set up the VM event loop: {e}"),
            });
            return;
        }
    };
    let mut commands = Commands::new(parts.initial, &parts.name, &parts.control, &parts.exit);
    let mut events = vec![EpollEvent::default(); 8];
    let mut input_pending = false;
    loop {
        let mut timeout = commands.timeout_ms();
        if input_pending {
            let retry = INPUT_RETRY.as_millis() as i32;
            timeout = if timeout < 0 {
                retry
            } else {
                timeout.min(retry)
            };
        }
        let Some(n) = commands.wait(&epoll, timeout, &mut events) else {
            return;
        };
        if let (true, ConsoleConfig::Ring(ring)) = (input_pending || n > 0, &parts.console) {
            input_pending = ring.drain_input(|bytes| {
                let mut serial = parts.serial.lock().unwrap_or_else(|e| e.into_inner());
                serial.enqueue_input(bytes).unwrap_or(0)
            });
        }
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_CMD if commands.drain(parts) => return,
                TOKEN_EXIT => return,
                TOKEN_SHUTDOWN => {
                    parts.exit.report(ExitReason::Shutdown);
                    return;
                }
                TOKEN_RESET => {
                    parts.exit.report(ExitReason::Reboot);
                    return;
                }
                TOKEN_STDIN => {
                    let mut buf = [0u8; 64];
                    match std::io::stdin().lock().read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = epoll.ctl(
                                ControlOperation::Delete,
                                libc::STDIN_FILENO,
                                EpollEvent::default(),
                            );
                        }
                        Ok(k) => {
                            let mut serial = parts.serial.lock().unwrap_or_else(|e| e.into_inner());
                            if let Ok(taken) = serial.enqueue_input(&buf[..k]) {
                                if taken < k {
                                    tracing::debug!(vm = %parts.name, dropped = k - taken, "console input overrun");
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

impl Commanded for VmParts {
    fn vcpu_threads(&self) -> &[JoinHandle<()>] {
        &self.vcpu_threads
    }

    fn start_vcpus(&mut self) -> Result<(), CommandError> {
        // The vCPU threads are parked since `create`.
        self.control.set(RunState::Running);
        Ok(())
    }

    fn power_button(&self) -> std::io::Result<bool> {
        let mut pm = self.pm.lock().unwrap_or_else(|e| e.into_inner());
        pm.press_power_button()
    }

    fn command_queue(&self) -> (&EventFd, &mpsc::Receiver<Request>) {
        (&self.cmd_evt, &self.rx)
    }
}

//! Per-thread seccomp filters for a VM's threads, built with rust-vmm's `seccompiler`.
//!
//! Each kind of thread installs its own filter on itself as its first action
//! ([`apply`]), so a filter never reaches the control plane's threads:
//!
//! | [`ThreadKind`] | thread | needs |
//! | --- | --- | --- |
//! | `Vcpu` | `vcpu-<vm>-<n>` | `KVM_RUN` and the vCPU's other KVM ioctls, eventfd writes, futexes, memory for the exit handlers, the kick signal |
//! | `Event` | `vmm-<vm>` | the vCPUs' ones, plus epoll, console and command I/O, signalling vCPU threads, joining and tearing down; no thread creation |
//! | `Device` | `virtio-<vm>`, `blk-disk<n>-<m>` | epoll over ioeventfds, disk I/O (`preadv`/`pwritev`, `RWF_NOWAIT`'s `preadv2`/`pwritev2`, `fdatasync`/`fallocate`, `io_uring_enter` on the disk's confined ring: every kind of thread may enter it, as resets run on vCPU threads), tap I/O, irqfd writes, starting more disk I/O workers (`clone` with exactly a thread's flags) |
//!
//! `ioctl` is allowed only with KVM's ioctl type (`0xAE`) in its request number, plus the
//! few terminal and tap requests a thread needs; `flock` only to unlock (a disk gives up
//! its image lock on whichever thread drops it last). Whatever is not listed gets the
//! [`Mode`]'s action: `deny` (the default) fails the call with `EPERM` (the thread sees
//! an error and its VM fails, the daemon and its other VMs go on), `kill` kills the
//! process with SIGSYS (Firecracker's stance: systemd restarts the daemon), `log` allows
//! it and has the kernel log it (to find what a list misses), `off` installs nothing.
//!
//! A `Device` thread also gets a second filter that answers `clone3` with `ENOSYS`: its
//! flags sit in a struct a filter cannot read, and glibc's `pthread_create` then falls
//! back to `clone`, whose flags the first filter checks (a disk's worker pool grows from
//! its device thread as requests queue up).
//!
//! seccompiler builds filters for x86_64, aarch64 and riscv64 only. monovirt's VMM on
//! s390x and ppc64le runs without filters: [`apply`] logs that once and returns `Ok`.

use std::sync::OnceLock;

/// What a filtered thread is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// A `vcpu-<vm>-<n>` thread.
    Vcpu,
    /// A VM's `vmm-<vm>` event thread.
    Event,
    /// A `virtio-<vm>` device thread or a `blk-disk<n>-<m>` disk I/O worker.
    Device,
}

/// What a syscall outside a thread's list gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Fails with `EPERM`.
    #[default]
    Deny,
    /// Kills the process (SIGSYS).
    Kill,
    /// Allowed, and logged by the kernel.
    Log,
    /// No filters.
    Off,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "deny" => Ok(Self::Deny),
            "kill" => Ok(Self::Kill),
            "log" => Ok(Self::Log),
            "off" => Ok(Self::Off),
            _ => Err(format!(
                "unknown seccomp mode {s:?} (deny, kill, log or off)"
            )),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Deny => "deny",
            Self::Kill => "kill",
            Self::Log => "log",
            Self::Off => "off",
        })
    }
}

#[cfg(target_arch = "x86_64")]
use seccompiler::{BackendError as FilterBuildError, Error as FilterInstallError};
// No filters are built elsewhere (and seccompiler is empty on big-endian s390x): these
// errors cannot happen there.
#[cfg(not(target_arch = "x86_64"))]
use std::convert::{Infallible as FilterBuildError, Infallible as FilterInstallError};

/// Errors building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("Cannot build the {0:?} thread's seccomp filter")]
    Build(ThreadKind, #[source] FilterBuildError),
    #[error("Cannot install the {0:?} thread's seccomp filter")]
    Install(ThreadKind, #[source] FilterInstallError),
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Sets the process's mode (once, at start-up, before any VM; later calls are ignored).
/// Unset, VM threads use [`Mode::default`].
pub fn set_mode(mode: Mode) {
    if MODE.set(mode).is_err() && MODE.get() != Some(&mode) {
        tracing::warn!(%mode, "the seccomp mode was already set; keeping the first one");
    }
}

/// The process's mode.
pub fn mode() -> Mode {
    MODE.get().copied().unwrap_or_default()
}

/// Installs the filter of `kind` in the process's [`mode`] on the calling thread.
pub fn apply(kind: ThreadKind) -> Result<(), SeccompError> {
    apply_mode(kind, mode())
}

#[cfg(target_arch = "x86_64")]
pub use filter::{apply_mode, program};

#[cfg(not(target_arch = "x86_64"))]
/// Filters are not built on this architecture (see the module doc): logs that once.
pub fn apply_mode(_kind: ThreadKind, mode: Mode) -> Result<(), SeccompError> {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if mode != Mode::Off {
        WARNED.call_once(|| {
            tracing::warn!(
                arch = std::env::consts::ARCH,
                "VM threads run without seccomp filters on this architecture"
            );
        });
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod filter {
    use super::{Mode, SeccompError, ThreadKind};
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    use std::collections::BTreeMap;
    use std::sync::OnceLock;

    /// KVM's ioctl type (`KVMIO`), bits 8..16 of every KVM request number.
    const KVMIO: u64 = 0xAE;

    /// Every thread: memory, futexes, signals (the vCPU kick), time, eventfd reads and
    /// writes, dropping fds, logging to stderr, and thread start and exit (a thread
    /// started from a filtered one runs its start-up under the parent's filter).
    const COMMON: &[libc::c_long] = &[
        libc::SYS_brk,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_close,
        libc::SYS_exit,
        libc::SYS_fcntl,
        libc::SYS_futex,
        libc::SYS_getrandom,
        libc::SYS_gettid,
        // A disk's io_uring: submitted and reaped on the device thread, waited idle where
        // a reset (a vCPU thread writing the status) or the teardown runs. The rings are
        // set up before any filter, confined to reading and writing their own image
        // (`devices::virtio::block::uring`), and no filtered thread may make another.
        libc::SYS_io_uring_enter,
        libc::SYS_madvise,
        libc::SYS_mmap,
        libc::SYS_mprotect,
        libc::SYS_mremap,
        libc::SYS_munmap,
        libc::SYS_nanosleep,
        libc::SYS_prctl,
        libc::SYS_read,
        // A virtio-net device activated on a vCPU thread drains its tap there.
        libc::SYS_readv,
        libc::SYS_rseq,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sched_getaffinity,
        libc::SYS_sched_yield,
        libc::SYS_set_robust_list,
        libc::SYS_sigaltstack,
        libc::SYS_write,
        libc::SYS_writev,
    ];

    /// vCPU threads, beside [`COMMON`] and KVM ioctls: nothing else. Exits are handled
    /// on guest memory and device state already in place.
    const VCPU: &[libc::c_long] = &[];

    /// The event thread, beside [`COMMON`] and KVM ioctls: its epoll, kicking the vCPU
    /// threads (`tgkill`), console sockets. It starts no threads (the vCPU threads are
    /// started by the thread that creates the VM, before the event thread) and installs
    /// no filters, so `clone`, `clone3` and `seccomp` fail in it.
    const EVENT: &[libc::c_long] = &[
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_wait,
        libc::SYS_eventfd2,
        libc::SYS_getpid,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_tgkill,
    ];

    /// Device workers, beside [`COMMON`] and KVM ioctls: epoll, disk I/O, tap I/O and the
    /// vsock muxer's Unix sockets (`socket` for `AF_UNIX` only).
    const DEVICE: &[libc::c_long] = &[
        libc::SYS_accept4,
        // Only ever ENOSYS: see `CLONE3_GUARD`.
        libc::SYS_clone3,
        libc::SYS_connect,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_wait,
        libc::SYS_fallocate,
        libc::SYS_fdatasync,
        libc::SYS_fsync,
        libc::SYS_lseek,
        libc::SYS_pread64,
        libc::SYS_preadv,
        libc::SYS_preadv2,
        libc::SYS_pwrite64,
        libc::SYS_pwritev,
        libc::SYS_pwritev2,
        libc::SYS_recvfrom,
        // The disk I/O workers a device thread starts install their own filter (seccomp
        // can only narrow what a thread may do).
        libc::SYS_seccomp,
        libc::SYS_sendto,
        libc::SYS_shutdown,
    ];

    /// The flags glibc's `pthread_create` passes to `clone`: a thread of this process
    /// (the only `clone` a `Device` thread may make).
    const THREAD_CLONE_FLAGS: u64 = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID) as u64;

    /// `TUNSETOFFLOAD` (`_IOW('T', 208, unsigned int)`): a virtio-net device is activated
    /// on the vCPU thread that wrote DRIVER_OK, and tells its tap the offloads then.
    const TUNSETOFFLOAD: u64 = 0x4004_54d0;

    /// Non-KVM ioctls: the terminal (the event thread's stdin console), FIONBIO and the
    /// tap's offloads.
    const OTHER_IOCTLS: &[u64] = &[libc::TCGETS, libc::TCSETS, libc::FIONBIO, TUNSETOFFLOAD];

    fn rules(
        kind: ThreadKind,
    ) -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
        let extra = match kind {
            ThreadKind::Vcpu => VCPU,
            ThreadKind::Event => EVENT,
            ThreadKind::Device => DEVICE,
        };
        let mut map: BTreeMap<i64, Vec<SeccompRule>> = COMMON
            .iter()
            .chain(extra)
            .map(|&nr| (nr, Vec::new()))
            .collect();
        // ioctl: any KVM request (type byte 0xAE), or one of the few others.
        let mut ioctl = vec![SeccompRule::new(vec![SeccompCondition::new(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(0xff00),
            KVMIO << 8,
        )?])?];
        for &req in OTHER_IOCTLS {
            ioctl.push(SeccompRule::new(vec![SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                req,
            )?])?);
        }
        map.insert(libc::SYS_ioctl, ioctl);
        // flock: only to give up a disk image's lock when its device goes, which happens
        // on whichever thread drops the device last (`DiskFile::unlock`). Taking a lock
        // stays refused: images are opened and locked before any filter.
        map.insert(
            libc::SYS_flock,
            vec![SeccompRule::new(vec![SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                libc::LOCK_UN as u64,
            )?])?],
        );
        if kind == ThreadKind::Device {
            map.insert(
                libc::SYS_clone,
                vec![SeccompRule::new(vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::Eq,
                    THREAD_CLONE_FLAGS,
                )?])?],
            );
            map.insert(
                libc::SYS_socket,
                vec![SeccompRule::new(vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    libc::AF_UNIX as u64,
                )?])?],
            );
        }
        Ok(map)
    }

    fn mismatch(mode: Mode) -> SeccompAction {
        match mode {
            Mode::Deny | Mode::Off => SeccompAction::Errno(libc::EPERM as u32),
            Mode::Kill => SeccompAction::KillProcess,
            Mode::Log => SeccompAction::Log,
        }
    }

    /// The BPF program of `kind` in `mode`.
    pub fn program(kind: ThreadKind, mode: Mode) -> Result<BpfProgram, SeccompError> {
        let filter = rules(kind)
            .and_then(|rules| {
                SeccompFilter::new(
                    rules,
                    mismatch(mode),
                    SeccompAction::Allow,
                    TargetArch::x86_64,
                )
            })
            .map_err(|e| SeccompError::Build(kind, e))?;
        BpfProgram::try_from(filter).map_err(|e| SeccompError::Build(kind, e))
    }

    /// The `Device` threads' second filter: `clone3` fails with `ENOSYS` (so that glibc
    /// uses `clone`, whose flags the first filter checks); everything else is left to the
    /// first filter.
    pub fn clone3_guard() -> Result<BpfProgram, SeccompError> {
        let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            TargetArch::x86_64,
        )
        .map_err(|e| SeccompError::Build(ThreadKind::Device, e))?;
        BpfProgram::try_from(filter).map_err(|e| SeccompError::Build(ThreadKind::Device, e))
    }

    /// Installs the filter of `kind` in `mode` on the calling thread (nothing for
    /// [`Mode::Off`]), for `Device` threads with [`clone3_guard`] on top. Programs are
    /// built once per kind and mode.
    pub fn apply_mode(kind: ThreadKind, mode: Mode) -> Result<(), SeccompError> {
        if mode == Mode::Off {
            return Ok(());
        }
        if kind == ThreadKind::Device {
            static GUARD: OnceLock<BpfProgram> = OnceLock::new();
            let guard = match GUARD.get() {
                Some(g) => g,
                None => {
                    let g = clone3_guard()?;
                    GUARD.get_or_init(|| g)
                }
            };
            seccompiler::apply_filter(guard).map_err(|e| SeccompError::Install(kind, e))?;
        }
        type Cache = std::sync::Mutex<BTreeMap<(u8, u8), std::sync::Arc<BpfProgram>>>;
        static PROGRAMS: OnceLock<Cache> = OnceLock::new();
        let key = (kind as u8, mode as u8);
        let cached = PROGRAMS
            .get_or_init(Cache::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned();
        let prog = match cached {
            Some(p) => p,
            None => {
                let p = std::sync::Arc::new(program(kind, mode)?);
                PROGRAMS
                    .get_or_init(Cache::default)
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(key, p.clone());
                p
            }
        };
        seccompiler::apply_filter(&prog).map_err(|e| SeccompError::Install(kind, e))
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Runs `f` on a fresh thread with `kind`'s filter in `mode` (the filter dies with it).
    fn filtered<T: Send + 'static>(
        kind: ThreadKind,
        mode: Mode,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        std::thread::spawn(move || {
            apply_mode(kind, mode).expect("install the filter");
            f()
        })
        .join()
        .expect("the filtered thread")
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn every_kind_builds() {
        for kind in [ThreadKind::Vcpu, ThreadKind::Event, ThreadKind::Device] {
            for mode in [Mode::Deny, Mode::Kill, Mode::Log] {
                assert!(!program(kind, mode).expect("builds").is_empty());
            }
        }
    }

    #[test]
    fn a_forbidden_syscall_is_denied_and_allowed_ones_work() {
        let (socket, open, ioctl, write) = filtered(ThreadKind::Vcpu, Mode::Deny, || {
            // SAFETY: plain syscalls with valid arguments; results are only inspected.
            let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            let socket = (socket, errno());
            // SAFETY: as above; a NUL-terminated path.
            let open = unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
            let open = (open, errno());
            // SAFETY: a non-KVM ioctl on stdin with a valid out pointer.
            let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
            // SAFETY: TIOCGWINSZ writes one winsize into `ws`.
            let ioctl = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
            let ioctl = (ioctl, errno());
            // An allowed call still works: a zero-length write to stderr.
            // SAFETY: a zero-length write reads nothing from the pointer.
            let write = unsafe { libc::write(2, std::ptr::null(), 0) };
            (socket, open, ioctl, write)
        });
        assert_eq!(socket, (-1, libc::EPERM));
        assert_eq!(open, (-1, libc::EPERM));
        assert_eq!(ioctl, (-1, libc::EPERM));
        assert_eq!(write, 0);
    }

    #[test]
    fn device_threads_may_do_disk_io_vcpu_threads_may_not() {
        let file = tempfile::tempfile().expect("tempfile");
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        let pwrite = |kind| {
            filtered(kind, Mode::Deny, move || {
                let buf = [7u8; 16];
                // SAFETY: writes 16 bytes from a live buffer into an open file.
                let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), 0) };
                (n, errno())
            })
        };
        assert_eq!(pwrite(ThreadKind::Device), (16, 0));
        assert_eq!(pwrite(ThreadKind::Vcpu), (-1, libc::EPERM));
    }

    #[test]
    fn device_threads_may_start_threads_and_nothing_else() {
        let (spawned, clone3, fork) = filtered(ThreadKind::Device, Mode::Deny, || {
            // What a disk's worker pool does when it grows (pthread_create: clone3, then
            // clone with a thread's flags); the worker installs its own filter.
            let spawned =
                std::thread::spawn(|| apply_mode(ThreadKind::Device, Mode::Deny).map(|()| 7).ok())
                    .join()
                    .ok()
                    .flatten();
            // SAFETY: clone3 with a null argument; the filter answers before the kernel
            // would read it.
            let clone3 = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) };
            let clone3 = (clone3, errno());
            // A new process (fork's flags) is not a thread: refused. The child would
            // exit at once if the call were allowed.
            // SAFETY: a plain clone with SIGCHLD and no new stack: fork.
            let fork = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as u64, 0, 0, 0, 0) };
            if fork == 0 {
                // SAFETY: the child of an allowed fork leaves at once.
                unsafe { libc::_exit(0) };
            }
            (spawned, clone3, (fork, errno()))
        });
        assert_eq!(spawned, Some(7));
        assert_eq!(clone3, (-1, libc::ENOSYS));
        assert_eq!(fork, (-1, libc::EPERM));
    }

    #[test]
    fn event_and_vcpu_threads_cannot_start_threads() {
        for kind in [ThreadKind::Event, ThreadKind::Vcpu] {
            let spawned = filtered(kind, Mode::Deny, || {
                std::thread::Builder::new()
                    .spawn(|| ())
                    .map(|t| t.join().is_ok())
                    .map_err(|e| e.raw_os_error())
            });
            assert_eq!(spawned, Err(Some(libc::EPERM)), "{kind:?}");
        }
    }

    #[test]
    fn mode_names_parse() {
        for m in [Mode::Deny, Mode::Kill, Mode::Log, Mode::Off] {
            assert_eq!(m.to_string().parse::<Mode>(), Ok(m));
        }
        assert!("strict".parse::<Mode>().is_err());
    }
}

//! `run-order OUT -- PROGRAM ARGS…`: runs PROGRAM under ptrace with a one-shot breakpoint
//! (`int3`) on the entry of every function in its symbol table and writes the functions
//! it executed, in the order of their first call, to OUT: one hash-free key
//! ([`run_order::key`]), size and name per line, which the monovirt build's link step
//! ([`run_order::link`]) maps onto the names of whatever build it links.
//!
//! Linked in that order, the code one run executes sits together instead of spread over
//! the whole text segment, so it is paged in through a few fault-around windows instead
//! of one per function cluster (scripts/run-order.sh, build.rs). Every thread is traced
//! (`PTRACE_O_TRACECLONE`); a breakpoint is removed at its first hit, so each function
//! costs one stop. Symbols that share an address (folded identical code) are all
//! listed. The thread that ends the process (`exit_group`) is held until the others
//! have ended, so what they run last (a VM's teardown) is recorded too. PROGRAM must be
//! a position-independent or fixed-address ELF executable with its symbol table (`nm`
//! reads it).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use run_order::key::key;

/// Function symbols by address (relative to the executable's load base), each with its
/// size in bytes.
fn functions(program: &Path) -> Result<HashMap<u64, Vec<(String, u64)>>> {
    let out = Command::new("nm")
        .args(["-P", "-S", "--defined-only"])
        .arg(program)
        .output()
        .context("cannot run nm")?;
    ensure!(out.status.success(), "nm {} failed", program.display());
    let mut by_addr: HashMap<u64, Vec<(String, u64)>> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "name type value size"
        let mut f = line.split_whitespace();
        let (Some(name), Some(kind), Some(value), Some(size)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if !matches!(kind, "t" | "T" | "w" | "W") {
            continue;
        }
        let addr = u64::from_str_radix(value, 16).with_context(|| format!("nm line {line:?}"))?;
        let size = u64::from_str_radix(size, 16).with_context(|| format!("nm line {line:?}"))?;
        by_addr
            .entry(addr)
            .or_default()
            .push((name.to_string(), size));
    }
    ensure!(
        !by_addr.is_empty(),
        "{} has no function symbols",
        program.display()
    );
    Ok(by_addr)
}

/// The executable's mappings in the stopped child: (load base, text start, text end).
fn text_mapping(pid: libc::pid_t, program: &Path) -> Result<(u64, u64, u64)> {
    let program = fs::canonicalize(program)?;
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mut base = None;
    let mut text = None;
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || Path::new(f[5]) != program {
            continue;
        }
        let (start, end) = f[0].split_once('-').context("maps range")?;
        let start = u64::from_str_radix(start, 16)?;
        let end = u64::from_str_radix(end, 16)?;
        let offset = u64::from_str_radix(f[2], 16)?;
        if offset == 0 && base.is_none() {
            base = Some(start);
        }
        if f[1].contains('x') {
            ensure!(
                text.is_none(),
                "more than one executable mapping of the program"
            );
            text = Some((start, end));
        }
    }
    let base = base.context("the program's first mapping")?;
    let (start, end) = text.context("the program's text mapping")?;
    // A fixed-address executable is linked at its load address: nm's values are absolute.
    let pie = fs::read(&program)?.get(16..18) == Some(&[3, 0][..]); // e_type == ET_DYN
    Ok((if pie { base } else { 0 }, start, end))
}

fn ptrace(req: libc::c_uint, pid: libc::pid_t, data: usize) -> Result<()> {
    // SAFETY: the requests used here take no pointer in `addr`, and `data` is either a
    // number or a pointer to a live `user_regs_struct` for GETREGS/SETREGS or to a live
    // `c_ulong` for GETEVENTMSG.
    let rc = unsafe { libc::ptrace(req, pid, std::ptr::null_mut::<libc::c_void>(), data) };
    if rc < 0 {
        bail!("ptrace({req}, {pid}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn regs(pid: libc::pid_t) -> Result<libc::user_regs_struct> {
    // SAFETY: all-zero is a valid user_regs_struct; GETREGS fills it.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    ptrace(
        libc::PTRACE_GETREGS,
        pid,
        &mut r as *mut libc::user_regs_struct as usize,
    )?;
    Ok(r)
}

/// How long the thread that ends the process is held for the others to end first.
const EXIT_HOLD: Duration = Duration::from_secs(5);

struct Breakpoint {
    original: u8,
    armed: bool,
}

fn main() -> Result<()> {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let (out, program, program_args) = match args.as_slice() {
        [out, sep, program, rest @ ..] if sep == "--" => (PathBuf::from(out), program, rest),
        _ => bail!("usage: run-order OUT -- PROGRAM [ARGS...]"),
    };
    let program = PathBuf::from(program);
    let functions = functions(&program)?;

    let mut cmd = Command::new(&program);
    cmd.args(program_args);
    // SAFETY: PTRACE_TRACEME is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: waiting for our own child; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    ensure!(waited == pid, "waitpid");
    ensure!(
        libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == libc::SIGTRAP,
        "the child did not stop at exec"
    );

    // Plant the breakpoints through /proc/PID/mem: the whole text in one read and write.
    let (base, start, end) = text_mapping(pid, &program)?;
    let mem = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/mem"))?;
    let mut text = vec![0u8; (end - start) as usize];
    mem.read_exact_at(&mut text, start)?;
    let mut bps: HashMap<u64, Breakpoint> = HashMap::new();
    for &addr in functions.keys() {
        let at = base + addr;
        if (start..end).contains(&at) {
            let i = (at - start) as usize;
            bps.insert(
                at,
                Breakpoint {
                    original: text[i],
                    armed: true,
                },
            );
            text[i] = 0xcc;
        }
    }
    mem.write_all_at(&text, start)?;
    drop(text);
    eprintln!("run-order: {} breakpoints", bps.len());

    // Syscall stops too (marked by TRACESYSGOOD), to see `exit_group` coming.
    ptrace(
        libc::PTRACE_SETOPTIONS,
        pid,
        (libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACESYSGOOD)
            as usize,
    )?;
    ptrace(libc::PTRACE_SYSCALL, pid, 0)?;
    let mut order: Vec<u64> = Vec::new();
    let mut exit_status = None;
    // Every thread alive, and the one held at its `exit_group` with when it got there.
    let mut threads: HashSet<libc::pid_t> = HashSet::from([pid]);
    let mut exiting: Option<(libc::pid_t, Instant)> = None;
    loop {
        // The process ends when one thread calls exit_group, which kills the others
        // wherever they are. `monovirt run` returns from main once its VM's exit is
        // published, while the VM's event thread still drops what it kept for after that
        // (its console, command queue and exit channel): run alone, either comes first.
        // Traced, the other threads are slowed by their breakpoints and would always be
        // cut off, so what they run last would never be recorded and would sit outside
        // the laid-out code.
        // So the exiting thread is held until the others have ended (or EXIT_HOLD).
        if let Some((held, since)) = exiting {
            if threads.len() == 1 || since.elapsed() > EXIT_HOLD {
                exiting = None;
                ptrace(libc::PTRACE_CONT, held, 0)?;
            }
        }
        let flags = if exiting.is_some() {
            libc::__WALL | libc::WNOHANG
        } else {
            libc::__WALL
        };
        // SAFETY: waiting for any traced thread; `status` is a valid out-pointer.
        let tid = unsafe { libc::waitpid(-1, &mut status, flags) };
        if tid == 0 {
            // Holding an exit, and no other thread has news yet.
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if tid < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ECHILD) {
                break;
            }
            bail!("waitpid: {e}");
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            threads.remove(&tid);
            if tid == pid {
                exit_status = Some(status);
            }
            continue;
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        threads.insert(tid);
        let sig = libc::WSTOPSIG(status);
        let mut deliver = 0;
        if sig == libc::SIGTRAP | 0x80 {
            // A syscall stop. exit_group never returns, so this is its entry.
            if regs(tid)?.orig_rax == libc::SYS_exit_group as u64 && exiting.is_none() {
                exiting = Some((tid, Instant::now()));
                continue;
            }
        } else if status >> 16 != 0 {
            // A clone event: the new thread is traced and reports its own stop; it
            // counts as alive from now, before that stop is seen.
            let mut new_tid: libc::c_ulong = 0;
            ptrace(
                libc::PTRACE_GETEVENTMSG,
                tid,
                &mut new_tid as *mut libc::c_ulong as usize,
            )?;
            threads.insert(new_tid as libc::pid_t);
        } else if sig == libc::SIGTRAP {
            let mut r = regs(tid)?;
            let at = r.rip - 1;
            match bps.get_mut(&at) {
                Some(bp) => {
                    if bp.armed {
                        bp.armed = false;
                        mem.write_all_at(&[bp.original], at)?;
                        order.push(at - base);
                    }
                    // Another thread may have hit it before it was removed: rewind too.
                    r.rip = at;
                    ptrace(
                        libc::PTRACE_SETREGS,
                        tid,
                        &mut r as *mut libc::user_regs_struct as usize,
                    )?;
                }
                None => deliver = sig,
            }
        } else if sig != libc::SIGSTOP {
            // The program's own signals (vCPU kicks, SIGCHLD...) go on to it.
            deliver = sig;
        }
        // A thread that exited meanwhile cannot be continued; nothing to do then.
        let _ = ptrace(libc::PTRACE_SYSCALL, tid, deliver as usize);
    }
    let status = exit_status.context("the program's exit was not seen")?;
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{} failed (wait status {status:#x})",
        program.display()
    );

    let mut file =
        File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // One line per function: its key, its size and its name in this build (the link step
    // takes the names if it has them, and otherwise tells apart the instances of a
    // generic function, which share a key, by their size).
    let mut written = 0;
    for addr in &order {
        let mut aliases = functions[addr].clone();
        aliases.sort();
        for (name, size) in aliases {
            writeln!(file, "{} {size} {name}", key(&name))?;
            written += 1;
        }
    }
    eprintln!(
        "run-order: {} functions executed ({} symbols) written to {}",
        order.len(),
        written,
        out.display()
    );
    Ok(())
}

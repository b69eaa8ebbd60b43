//! Ring 3 for the device loops the benchmarks time: [`run`] calls a closure at CPL 3 and
//! comes back to ring 0 through an exception: a `ud2` at a known address, whose #UD the
//! handler here turns into a return (PVM answers both `syscall` and `int n` from CPL 3 of
//! a guest that is not PVM-aware with faults of its own; exceptions it delivers as the
//! CPU does). Any other #UD goes to the usual handler.
//!
//! Why: the development machines' `/dev/kvm` is PVM, which runs the ring-0 code of a guest
//! that is not PVM-aware in the host kernel's instruction emulator and CPL-3 code natively.
//! Timed from ring 0, the guest's smoltcp loop and virtio-drivers' queue handling ran a few
//! hundred times slower than at CPL 3 (ping 150 ms against 0.45 ms; a 1 MiB TCP stream
//! 0.024 MiB/s against several MiB/s) (a `perf` profile of the vCPU thread is
//! `x86_emulate_insn`, `paging64_walk_addr_generic` and the like), so the benchmarks
//! measured PVM's emulator, not the devices. On hardware KVM both rings run natively and a
//! call here costs one `iretq` and one exception.
//!
//! At CPL 3 the closure may touch all memory (every entry of the identity map gets U/S),
//! do port I/O (RFLAGS.IOPL = 3 and an all-allowing I/O bitmap: COM1, the PIT, the PCI
//! configuration ports), RDTSC and CPUID. It must not write MSRs or control registers, halt, or change mappings in a way
//! that needs INVLPG: callers do those before (see [`crate::kvmclock::KvmClock::enable`],
//! which is idempotent). Interrupts stay off (IF = 0); an exception at CPL 3 switches to
//! the TSS's ring-0 stack and is reported as `panic=` like one in ring 0.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::control::{Cr3, Cr4, Cr4Flags};
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::paging::{PageTable, PageTableFlags as F};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

extern "C" {
    static mut boot_pml4: PageTable;
    fn user_enter(entry: extern "C" fn(*mut u8), arg: *mut u8);
    fn user_ud();
}

/// The boot GDT's entries (see [`crate::boot`]), the two CPL-3 segments (data at 0x20,
/// 64-bit code at 0x28, as `sysret` would want them), and the TSS at 0x30 (filled in by
/// [`prepare`]).
static mut GDT: [u64; 8] = [
    0,
    0x00af_9a00_0000_ffff, // 0x08: 64-bit code
    0x00cf_9200_0000_ffff, // 0x10: flat data
    0x00cf_9a00_0000_ffff, // 0x18: flat 32-bit code
    0x00cf_f200_0000_ffff, // 0x20: flat data, DPL 3
    0x00af_fa00_0000_ffff, // 0x28: 64-bit code, DPL 3
    0,                     // 0x30: TSS (two entries)
    0,
];
const TSS_SELECTOR: u16 = 0x30;

/// The TSS: RSP0, the stack an exception at CPL 3 switches to (the IDT's handlers then
/// report it as `panic=`, as in ring 0), and an I/O bitmap that allows every port (PVM
/// consults it at CPL 3 even with IOPL 3).
#[repr(C)]
struct Tss {
    tss: TaskStateSegment,
    /// One bit per port, 0 = allowed, and the all-ones byte the CPU needs past the end.
    io_bitmap: [u8; 8193],
}

static mut TSS: Tss = Tss {
    tss: TaskStateSegment::new(),
    io_bitmap: {
        let mut b = [0u8; 8193];
        b[8192] = 0xff;
        b
    },
};

/// RSP0's stack (only its address is used).
#[allow(dead_code)]
#[repr(align(16))]
struct Stack([u8; 16384]);
static mut RING0_STACK: Stack = Stack([0; 16384]);

/// The invalid-opcode exception, #UD.
const UD_VECTOR: u8 = 6;

static READY: AtomicBool = AtomicBool::new(false);

global_asm!(
    r#"
    .section .bss.user, "aw", @nobits
    .p2align 3
user_kernel_rsp:
    .skip 8
user_kernel_rflags:
    .skip 8

    .text
    .global user_enter
    /* user_enter(entry: %rdi, arg: %rsi): calls entry(arg) at CPL 3 on this stack. */
user_enter:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    pushfq
    pop %rax
    mov %rax, user_kernel_rflags(%rip)
    mov %rsp, user_kernel_rsp(%rip)
    mov %rsp, %rcx
    pushq $0x23                    /* SS: CPL-3 data */
    push %rcx                      /* RSP: this stack, below what is saved above */
    and $~0x200, %rax              /* IF = 0 */
    or $0x3000, %rax               /* IOPL = 3 */
    push %rax
    pushq $0x2b                    /* CS: CPL-3 64-bit code */
    lea user_start(%rip), %rax
    push %rax
    iretq
user_start:
    sub $8, %rsp                   /* 16-byte alignment at the call */
    mov %rdi, %rax
    mov %rsi, %rdi
    call *%rax
user_exit:
    ud2                            /* back to ring 0: user_ud */

    .global user_ud
user_ud:                           /* #UD, CPL 0 (on the TSS's stack if it came from CPL 3) */
    push %rax
    lea user_exit(%rip), %rax
    cmp %rax, 8(%rsp)              /* the faulting RIP */
    pop %rax
    je user_return
    jmp isr_stubs + 16 * 6         /* any other #UD: the usual stub (interrupts.rs) */
user_return:                       /* drop the exception frame, restore the caller's state */
    mov user_kernel_rsp(%rip), %rsp
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov user_kernel_rflags(%rip), %rax
    push %rax
    popfq
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret
"#,
    options(att_syntax)
);

/// Sets U/S on every present entry of the identity map (2 MiB pages: three levels).
///
/// # Safety
/// Boot processor only, with nothing else changing the page tables meanwhile.
unsafe fn open_identity_map() {
    // SAFETY: `boot_pml4` is the active, identity-mapped PML4 (the caller's contract).
    let pml4 = unsafe { &mut *core::ptr::addr_of_mut!(boot_pml4) };
    for e4 in pml4.iter_mut().filter(|e| !e.is_unused()) {
        e4.set_flags(e4.flags() | F::USER_ACCESSIBLE);
        // SAFETY: a present PML4 entry points to an identity-mapped page table.
        let pdpt = unsafe { &mut *(e4.addr().as_u64() as *mut PageTable) };
        for e3 in pdpt.iter_mut().filter(|e| !e.is_unused()) {
            e3.set_flags(e3.flags() | F::USER_ACCESSIBLE);
            if e3.flags().contains(F::HUGE_PAGE) {
                continue;
            }
            // SAFETY: as above, one level down.
            let pd = unsafe { &mut *(e3.addr().as_u64() as *mut PageTable) };
            for e2 in pd.iter_mut().filter(|e| !e.is_unused()) {
                e2.set_flags(e2.flags() | F::USER_ACCESSIBLE);
            }
        }
    }
    // Reloading CR3 drops the TLB entries made without U/S.
    let (frame, flags) = Cr3::read();
    // SAFETY: the same PML4 and flags.
    unsafe { Cr3::write(frame, flags) };
}

/// Makes ring 3 usable: the GDT with CPL-3 segments and a TSS, the #UD handler that is the
/// way back ([`user_ud`]), U/S on the identity map. False where it cannot be (SMEP or SMAP on would forbid ring 0
/// the pages ring 3 may use).
fn prepare() -> bool {
    if READY.load(Ordering::Relaxed) {
        return true;
    }
    if Cr4::read().intersects(
        Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION
            | Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION,
    ) {
        return false;
    }
    let gdt = DescriptorTablePointer {
        limit: (core::mem::size_of::<[u64; 8]>() - 1) as u16,
        base: VirtAddr::new(core::ptr::addr_of!(GDT) as u64),
    };
    // SAFETY: boot processor, before ring 3 is ever entered: nothing else uses the TSS, its
    // stack or the GDT. The new GDT keeps every selector in use (0x08 code, 0x10 data) with
    // the same descriptors, and is a static that lives forever.
    unsafe {
        let stack_top = core::ptr::addr_of!(RING0_STACK) as u64 + 16384;
        let tss = &mut *core::ptr::addr_of_mut!(TSS);
        tss.tss.privilege_stack_table[0] = VirtAddr::new(stack_top);
        tss.tss.iomap_base = core::mem::size_of::<TaskStateSegment>() as u16;
        let base = core::ptr::addr_of!(TSS) as u64;
        let limit = core::mem::size_of::<Tss>() as u64 - 1;
        let gdt_entries = &mut *core::ptr::addr_of_mut!(GDT);
        // An available 64-bit TSS, present, DPL 0.
        gdt_entries[6] = (limit & 0xffff)
            | (base & 0xff_ffff) << 16
            | 0x89 << 40
            | (limit >> 16 & 0xf) << 48
            | (base >> 24 & 0xff) << 56;
        gdt_entries[7] = base >> 32;
        x86_64::instructions::tables::lgdt(&gdt);
        load_tss(SegmentSelector(TSS_SELECTOR));
        open_identity_map();
    }
    crate::interrupts::set_handler(UD_VECTOR, user_ud as *const () as u64);
    READY.store(true, Ordering::Relaxed);
    true
}

/// Runs `f` at CPL 3 (in ring 0 where ring 3 cannot be set up) and returns its result.
/// Boot processor only.
pub fn run<R>(f: impl FnOnce() -> R) -> R {
    if !prepare() {
        return f();
    }
    let mut f = Some(f);
    let mut out = None;
    let mut call = || out = f.take().map(|f| f());
    let mut dynamic: &mut dyn FnMut() = &mut call;

    extern "C" fn trampoline(arg: *mut u8) {
        // SAFETY: `arg` is `&mut dynamic` below, alive for the whole `user_enter` call.
        let f = unsafe { &mut *arg.cast::<&mut dyn FnMut()>() };
        f();
    }

    // SAFETY: `user_enter` returns to this frame with callee-saved registers, the stack
    // and RFLAGS restored; the closure runs on this stack below the saved state, at CPL 3
    // with every page it may touch user-accessible (`prepare`).
    unsafe { user_enter(trampoline, core::ptr::addr_of_mut!(dynamic).cast::<u8>()) };
    out.expect("the closure ran")
}

//! The IDT: 256 assembly stubs that push the vector (and a dummy error code where the CPU
//! pushes none) and call [`interrupt_dispatch`]. Exceptions are fatal and reported as
//! `panic=`; other vectors are counted and acknowledged at the local APIC.

use crate::lapic::{Lapic, SPURIOUS_VECTOR};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};
use x86_64::instructions::port::Port;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

/// Vector of the LAPIC timer test.
pub const TIMER_VECTOR: u8 = 0x40;

core::arch::global_asm!(
    r#"
    .section .text.isr, "ax"
    .p2align 4
    .global isr_stubs
isr_stubs:
    .set isr_vector, 0
    .rept 256
    .p2align 4
    .if (isr_vector == 8) || (isr_vector == 10) || (isr_vector == 11) || (isr_vector == 12) || (isr_vector == 13) || (isr_vector == 14) || (isr_vector == 17) || (isr_vector == 21) || (isr_vector == 29) || (isr_vector == 30)
    .else
    pushq $0
    .endif
    pushq $isr_vector
    jmp isr_common
    .set isr_vector, isr_vector + 1
    .endr

isr_common:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    mov %rsp, %rdi
    cld
    call interrupt_dispatch
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    add $16, %rsp
    iretq
    .text
"#,
    options(att_syntax)
);

extern "C" {
    static isr_stubs: u8;
}

/// What the stubs leave on the stack, lowest address first.
#[repr(C)]
pub struct Frame {
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

struct Idt(UnsafeCell<[u64; 512]>);

// SAFETY: written by the boot processor in `init` before any other CPU runs or any
// interrupt is enabled, and in `set_handler` with interrupts off; otherwise only read (by
// the CPU).
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([0; 512]));

static COUNTS: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];

/// Fills the IDT, loads it, and masks the legacy PICs (their vectors would alias exceptions).
pub fn init() {
    // `isr_stubs` is the first of 256 16-byte-aligned stubs emitted above.
    let stubs = core::ptr::addr_of!(isr_stubs) as u64;
    // SAFETY: single-threaded boot; see `Idt`'s Sync impl.
    let idt = unsafe { &mut *IDT.0.get() };
    for vector in 0..256u64 {
        let handler = stubs + 16 * vector;
        // 64-bit interrupt gate, present, DPL 0, selector KERNEL_CS, no IST.
        idt[2 * vector as usize] = (handler & 0xffff)
            | (u64::from(crate::boot::KERNEL_CS) << 16)
            | (0x8e << 40)
            | ((handler >> 16) & 0xffff) << 48;
        idt[2 * vector as usize + 1] = handler >> 32;
    }
    // SAFETY: masking every line of both 8259s only stops legacy interrupts.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
    load();
}

/// Loads the IDT on this CPU.
pub fn load() {
    let ptr = DescriptorTablePointer {
        limit: (256 * 16 - 1) as u16,
        base: VirtAddr::new(IDT.0.get() as u64),
    };
    // SAFETY: the IDT is static, complete (every vector has a stub) and never changes after
    // `init`.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}

/// Points `vector` at `handler` instead of its stub: how ring 3 comes back
/// ([`crate::user`]). Boot processor, with interrupts off.
pub fn set_handler(vector: u8, handler: u64) {
    let v = usize::from(vector);
    // SAFETY: the boot processor alone writes the IDT, with interrupts off; see `Idt`.
    let idt = unsafe { &mut *IDT.0.get() };
    // 64-bit interrupt gate, present, DPL 0, selector KERNEL_CS, no IST.
    idt[2 * v] = (handler & 0xffff)
        | (u64::from(crate::boot::KERNEL_CS) << 16)
        | (0x8e << 40)
        | ((handler >> 16) & 0xffff) << 48;
    idt[2 * v + 1] = handler >> 32;
}

/// How many times `vector` was delivered.
pub fn count(vector: u8) -> u32 {
    COUNTS[usize::from(vector)].load(Ordering::Acquire)
}

const EXCEPTIONS: [&str; 32] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#MF9", "#TS", "#NP", "#SS",
    "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25",
    "#26", "#27", "#HV", "#VC", "#SX", "#31",
];

/// Called by `isr_common` with interrupts off.
#[no_mangle]
extern "C" fn interrupt_dispatch(frame: &Frame) {
    let vector = frame.vector as usize;
    if vector < 32 {
        let cr2 = x86_64::registers::control::Cr2::read_raw();
        panic!(
            "exception {} vector={} error={:#x} rip={:#x} rsp={:#x} cr2={:#x} apic={}",
            EXCEPTIONS[vector],
            vector,
            frame.error,
            frame.rip,
            frame.rsp,
            cr2,
            Lapic::current().id()
        );
    }
    COUNTS[vector].fetch_add(1, Ordering::AcqRel);
    if vector == usize::from(crate::events::SCI_VECTOR) {
        // The SCI is level-triggered: clear its source before the EOI.
        crate::events::on_sci(&crate::power::platform());
    }
    if vector != usize::from(SPURIOUS_VECTOR) {
        Lapic::current().eoi();
    }
}

//! Entry points, written in assembly: everything from the VMM's hand-off to the first Rust call.
//!
//! - `pvh_start32`: the PVH entry named by the `XEN_ELFNOTE_PHYS32_ENTRY` note. 32-bit protected
//!   mode, paging off, `%ebx` = physical address of `hvm_start_info`. Loads our GDT, enables PAE,
//!   long mode and paging with our identity map, and continues in 64-bit code.
//! - `linux64_start`: the ELF entry point, entered as Linux's `startup_64` (64-bit boot
//!   protocol): long mode, paging on with the VMM's tables, `%rsi` = physical address of
//!   `boot_params`. Switches to our GDT and page tables.
//! - `ap_tramp_start..ap_tramp_end`: the real-mode start-up code for application processors,
//!   copied below 1 MiB by [`crate::smp`]. It enters protected mode and joins the PVH path.
//!
//! All of them reach `common64`, which calls `guest_main(mode, info)` on the boot processor
//! (`mode` 1 = PVH, 2 = linux64) or `ap_main()` on the stack `AP_STACK_TOP` names.
//!
//! The page tables identity-map the low 4 GiB with 2 MiB pages (the top GiB, the MMIO hole
//! with the LAPIC, IOAPIC and PCI windows, uncached). They are initialised data, so they are
//! valid before any code runs.

/// `guest_main`'s `mode` argument when entered through PVH.
pub const MODE_PVH: u64 = 1;
/// `guest_main`'s `mode` argument when entered through the 64-bit Linux boot protocol.
pub const MODE_LINUX64: u64 = 2;

/// Selector of the 64-bit code segment in our GDT.
pub const KERNEL_CS: u16 = 0x08;

extern "C" {
    /// First byte of the AP real-mode trampoline (copied to a page below 1 MiB).
    pub static ap_tramp_start: u8;
    /// One past the last byte of the AP real-mode trampoline.
    pub static ap_tramp_end: u8;
    /// First byte of the loaded image.
    pub static __image_start: u8;
    /// One past the last byte of the image, `.bss` included.
    pub static __image_end: u8;
}

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4                  /* namesz: "Xen\0" */
    .long 8                  /* descsz */
    .long 18                 /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .quad pvh_start32
    .p2align 2

    .section .data.pagetables, "aw"
    .p2align 12
    .global boot_pml4
boot_pml4:
    .quad boot_pdpt + 0x3
    .fill 511, 8, 0
boot_pdpt:
    .quad boot_pd + 0x3
    .quad boot_pd + 0x1000 + 0x3
    .quad boot_pd + 0x2000 + 0x3
    .quad boot_pd + 0x3000 + 0x3
    .fill 508, 8, 0
boot_pd:
    .set pde_index, 0
    .rept 1536
    .quad (pde_index << 21) | 0x83          /* present, writable, 2 MiB */
    .set pde_index, pde_index + 1
    .endr
    .rept 512
    .quad (pde_index << 21) | 0x9b          /* ... and PCD|PWT for the 3-4 GiB hole */
    .set pde_index, pde_index + 1
    .endr

    .section .data.gdt, "aw"
    .p2align 4
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff                /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff                /* 0x10: flat data */
    .quad 0x00cf9a000000ffff                /* 0x18: flat 32-bit code */
boot_gdt_end:
    .p2align 3
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi
    mov $1, %edi
    lgdt boot_gdt_ptr
    ljmp $0x18, $enter_long32

    .global ap_start32
ap_start32:
    xor %edi, %edi
    xor %esi, %esi

enter_long32:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov %cr4, %eax
    or $0x20, %eax                          /* CR4.PAE */
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx                   /* IA32_EFER */
    rdmsr
    or $0x100, %eax                         /* EFER.LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax                    /* CR0.PG | CR0.PE */
    mov %eax, %cr0
    ljmp $0x08, $long64_from32

    .code64
long64_from32:
    mov %edi, %edi                          /* upper halves are undefined after the switch */
    mov %esi, %esi
    jmp common64

    .global linux64_start
linux64_start:
    cli
    cld
    lea boot_stack_top(%rip), %rsp
    mov $2, %edi
    lgdt boot_gdt_ptr(%rip)
    lea boot_pml4(%rip), %rax
    mov %rax, %cr3
    pushq $0x08
    lea common64(%rip), %rax
    push %rax
    lretq

common64:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    test %edi, %edi
    jz 1f
    mov %rdi, %r12
    mov %rsi, %r13
    lea __bss_start(%rip), %rdi
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    xor %eax, %eax
    rep stosb
    lea boot_stack_top(%rip), %rsp
    mov %r12, %rdi
    mov %r13, %rsi
    call guest_main
    ud2
1:
    mov AP_STACK_TOP(%rip), %rsp
    call ap_main
    ud2

    .code16
    .global ap_tramp_start
    .global ap_tramp_end
ap_tramp_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl ap_tramp_gdt_ptr - ap_tramp_start
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x18, $ap_start32
    .p2align 3
ap_tramp_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
ap_tramp_end:
    .code64

    .section .bss.boot_stack, "aw", @nobits
    .p2align 4
boot_stack:
    .skip 65536
boot_stack_top:
    .text
"#,
    options(att_syntax)
);

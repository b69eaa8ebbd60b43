/*
 * Entry, exception vectors and the two trampolines of the ppc64le test guest (ELFv2 ABI).
 *
 * The VMM enters at _start as PAPR/Linux's head_64.S expects: translation and interrupts
 * off, 64-bit mode, r3 = physical address of the flattened device tree, r4 = where the
 * image was loaded, r5 = 0 (no Open Firmware). It may enter in either byte order (MSR[LE]
 * is the VMM's choice), so _start begins with FIXUP_ENDIAN: a sequence that is valid in
 * both orders and switches the CPU to little-endian when it is not already.
 */

/*
 * FIXUP_ENDIAN. In little-endian mode the first word is `tdi 0,0,0x48` (a trap that
 * never traps) and the branch skips the rest. Read big-endian, the same bytes are
 * `b .+8`, which lands on the byte-swapped instructions below: mfmsr r11; xori r11,r11,1
 * (MSR[LE]); li r10,0; mtmsrd r10,1 (clear EE and RI); bcl 20,31,$+4; mflr r10;
 * addi r10,r10,20; mtsrr0 r10; mtsrr1 r11; rfid -- which resumes after the sequence in
 * little-endian mode. Clobbers r10 and r11.
 */
#define FIXUP_ENDIAN \
    tdi 0, 0, 0x48; \
    b 191f; \
    .long 0xa600607d; \
    .long 0x01006b69; \
    .long 0x00004039; \
    .long 0x6401417d; \
    .long 0x05009f42; \
    .long 0xa602487d; \
    .long 0x14004a39; \
    .long 0xa6035a7d; \
    .long 0xa6037b7d; \
    .long 0x2400004c; \
191:

/* r2 = the TOC, r12 = scratch, position-independent (used on entry and in vectors). */
#define LOAD_TOC \
    bcl 20, 31, 192f; \
192: \
    mflr r12; \
    addis r2, r12, (.TOC. - 192b)@ha; \
    addi r2, r2, (.TOC. - 192b)@l

    .abiversion 2

/*
 * Exception vectors at their real addresses (LPCR[ILE] is set with H_SET_MODE before
 * anything can fault, so they run little-endian). Each passes its vector to the common
 * handler, which reports it and powers off. The guest never enables external or
 * decrementer interrupts, so any interrupt here is a failure.
 */
    .section .text.vectors, "ax"
    .globl __vectors
__vectors:
    .irp vec, 0x100, 0x200, 0x300, 0x380, 0x400, 0x480, 0x500, 0x600, 0x700, 0x800, 0x900, 0x980, 0xa00, 0xb00, 0xc00, 0xd00, 0xe00, 0xe20, 0xe40, 0xe60, 0xe80, 0xea0, 0xf00, 0xf20, 0xf40, 0xf60
    .org __vectors + \vec
    li r3, \vec
    b exception_common
    .endr
    .org __vectors + 0x1000

    .section .text.entry, "ax"
    .globl _start
_start:
    FIXUP_ENDIAN
    LOAD_TOC
    /* The stack (in .bss, which the ELF loader zeroed) with a null back chain. */
    addis r1, r12, (__stack_top - 192b)@ha
    addi r1, r1, (__stack_top - 192b)@l
    li r0, 0
    stdu r0, -64(r1)
    /* guest_main(fdt = r3, load address = r4, r5, msr as entered) */
    mfmsr r6
    /* Compiled code uses floating-point, VMX and VSX registers (the target's baseline is
       POWER8): enable them, or their first use traps (as Linux does lazily). */
    oris r0, r6, 0x0280   /* MSR[VEC] (bit 25) | MSR[VSX] (bit 23) */
    ori r0, r0, 0x2000    /* MSR[FP] (bit 13) */
    mtmsrd r0
    bl guest_main
    nop
1:  b 1b

exception_common:
    mfsrr0 r4
    mfsrr1 r5
    mfdar r6
    mfmsr r0
    oris r0, r0, 0x0280
    ori r0, r0, 0x2000
    mtmsrd r0
    LOAD_TOC
    addis r1, r12, (__exception_stack_top - 192b)@ha
    addi r1, r1, (__exception_stack_top - 192b)@l
    li r0, 0
    stdu r0, -64(r1)
    /* guest_exception(vector, srr0, srr1, dar) does not return. */
    bl guest_exception
    nop
2:  b 2b

/*
 * long hcall(u64 nr, u64 a0, u64 a1, u64 a2, u64 a3, u64 out[4]):
 * `sc 1` with r3 = nr and r4..r7 = arguments; PAPR returns the status in r3 and outputs
 * in r4..r7 (it may clobber r0 and r3..r12, all volatile in ELFv2). out = r8, kept in the
 * red zone across the call.
 */
    .text
    .globl hcall
    .type hcall, @function
hcall:
    std r8, -8(r1)
    sc 1
    ld r8, -8(r1)
    std r4, 0(r8)
    std r5, 8(r8)
    std r6, 16(r8)
    std r7, 24(r8)
    blr
    .size hcall, . - hcall

/*
 * void rtas_call(u32 *args, u64 entry): enters RTAS at `entry` with r3 = the argument
 * block, as Linux's enter_rtas does: big-endian, 32-bit, translation and interrupts off
 * (SRR1 = MSR[ME] only), returning to rtas_return, where FIXUP_ENDIAN brings the CPU back
 * to little-endian and an rfid restores the saved MSR (64-bit mode).
 */
    .globl rtas_call
    .type rtas_call, @function
rtas_call:
    mflr r0
    std r0, 16(r1)
    stdu r1, -64(r1)
    std r2, 24(r1)
    mfmsr r5
    std r5, 32(r1)
    mtsrr0 r4
    li r6, 0x1000
    mtsrr1 r6
    bcl 20, 31, 3f
3:  mflr r7
    addi r7, r7, rtas_return - 3b
    mtlr r7
    rfid
rtas_return:
    FIXUP_ENDIAN
    ld r5, 32(r1)
    bcl 20, 31, 4f
4:  mflr r7
    addi r7, r7, 5f - 4b
    mtsrr0 r7
    mtsrr1 r5
    rfid
5:  ld r2, 24(r1)
    addi r1, r1, 64
    ld r0, 16(r1)
    mtlr r0
    blr
    .size rtas_call, . - rtas_call

/* u64 read_timebase(void) */
    .globl read_timebase
    .type read_timebase, @function
read_timebase:
    mftb r3
    blr
    .size read_timebase, . - read_timebase

/*
 * The memory routines compiled code calls (the C library provides them on this target;
 * the guest has none). Byte loops: the guest copies little, and written in Rust the
 * compiler would turn the loops back into calls of these very functions.
 */

/* void *memcpy(void *dst, const void *src, size_t n); also memmove (copies backwards
   when dst is above src). */
    .globl memcpy
    .globl memmove
    .type memcpy, @function
    .type memmove, @function
memcpy:
memmove:
    cmpdi r5, 0
    beqlr
    mr r6, r3
    cmpld r3, r4
    bgt 2f
    mtctr r5
1:  lbz r7, 0(r4)
    stb r7, 0(r6)
    addi r4, r4, 1
    addi r6, r6, 1
    bdnz 1b
    blr
2:  add r4, r4, r5
    add r6, r6, r5
    mtctr r5
3:  lbzu r7, -1(r4)
    stbu r7, -1(r6)
    bdnz 3b
    blr
    .size memcpy, . - memcpy

/* void *memset(void *dst, int c, size_t n) */
    .globl memset
    .type memset, @function
memset:
    cmpdi r5, 0
    beqlr
    mr r6, r3
    mtctr r5
1:  stb r4, 0(r6)
    addi r6, r6, 1
    bdnz 1b
    blr
    .size memset, . - memset

/* int memcmp(const void *a, const void *b, size_t n); bcmp is the same */
    .globl memcmp
    .globl bcmp
    .type memcmp, @function
    .type bcmp, @function
memcmp:
bcmp:
    cmpdi r5, 0
    beq 2f
    mtctr r5
1:  lbz r6, 0(r3)
    lbz r7, 0(r4)
    subf. r8, r7, r6
    bne 3f
    addi r3, r3, 1
    addi r4, r4, 1
    bdnz 1b
2:  li r3, 0
    blr
3:  mr r3, r8
    blr
    .size memcmp, . - memcmp

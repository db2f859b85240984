/*
 * ek_startup.c: reset entry and trap reporting for edgekit's bare-metal RV32 firmware (QEMU's virt machine; see
 * targets/mcu/platforms/riscv/boards.toml). Same contract as the Cortex-M board support (ek_board.h): the shared
 * ek_crt.c paints the stack, copies .data, zeroes .bss and runs main(), whose return value is the exit status
 * (semihosting); a trap prints one "EK_FAULT ..." line and exits with EK_FAULT_EXIT_CODE.
 *
 * Layout from link.ld.j2: RAM starts with the stack (an overflow runs off the bottom of RAM into unmapped memory and
 * traps instead of silently overwriting data), then .data, .bss and free RAM. CSR numbers are from the RISC-V
 * privileged specification (machine mode: mtvec, mcause, mepc, mtval).
 */
#include <stddef.h>
#include <stdint.h>

#include "ek_board.h"
#include "ek_semihost.h"

void ek_reset_handler(void) __attribute__((naked, noreturn, section(".text.ek_reset_handler")));
void ek_crt_start(void) __attribute__((noreturn));
void ek_trap_entry(void) __attribute__((naked, aligned(4)));
void ek_trap_report(void) __attribute__((noreturn, used));

static uint32_t ek_trap_stack[128] __attribute__((aligned(16), used)); /* used: only the asm names it */

/* QEMU's virt machine with -bios none starts the hart at the first byte of DRAM: this function, placed first. */
void ek_reset_handler(void)
{
    __asm__ volatile(".option push\n"
                     ".option norelax\n"
                     ".option arch, +zicsr\n" /* binutils 2.40 wants zicsr for CSR access; adding _zicsr to
                                                  -march breaks picolibc's multilib selection (FIELD_NOTES) */
#ifdef EK_BOOT_ALIAS
                     /* the core starts in an alias of flash at 0 (GD32VF103): jump to the linked address first,
                      * so that the PC-relative addresses below point at the real RAM and flash */
                     "lui t0, %hi(1f)\n"
                     "addi t0, t0, %lo(1f)\n"
                     "jr t0\n"
                     "1:\n"
#endif
                     "la sp, __ek_stack_top\n"
                     "la t0, ek_trap_entry\n"
                     "csrw mtvec, t0\n"
#ifdef __riscv_flen
                     "li t0, 0x2000\n" /* mstatus.FS = Initial: without it every FP instruction traps */
                     "csrs mstatus, t0\n"
#endif
                     ".option pop\n"
                     "j ek_crt_start\n"); /* ek_crt.c: .data, .bss, constructors, main, exit */
}

/* ---- traps -------------------------------------------------------------------------------------------------- */

/* On a trap (illegal instruction, misaligned or faulting access, ecall, breakpoint outside semihosting): switch to
 * a stack of its own (the trap may be a stack overflow) and report. */
void ek_trap_entry(void)
{
    __asm__ volatile(".option push\n"
                     ".option norelax\n"
                     "la sp, ek_trap_stack + 512\n"
                     ".option pop\n"
                     "j ek_trap_report\n");
}

void ek_trap_report(void)
{
    uint32_t mcause, mepc, mtval;
    __asm__ volatile(".option push\n.option arch, +zicsr\ncsrr %0, mcause\ncsrr %1, mepc\ncsrr %2, mtval\n"
                     ".option pop" : "=r"(mcause), "=r"(mepc), "=r"(mtval));
    ek_print("\nEK_FAULT Trap");
    ek_print_hex32(" pc=", mepc);
    ek_print_hex32(" mcause=", mcause);
    ek_print_hex32(" mtval=", mtval);
    ek_print("\n");
    ek_exit(EK_FAULT_EXIT_CODE);
}

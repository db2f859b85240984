/*
 * ek_startup.c: vector table, reset handler, core set-up and fault reporting for edgekit's
 * bare-metal Cortex-M firmware (M4, M7, M33, M55 under QEMU; see targets/mcu/platforms/cortex_m/boards.toml).
 *
 * Memory layout comes from link.ld.j2: RAM starts with the stack (so an overflow runs off the bottom of RAM, and on
 * v8-M trips the MSPLIM stack limit, instead of silently overwriting data), then .data, .bss and free RAM.
 * System register addresses are from the Armv7-M / Armv8-M Architecture Reference Manuals (System Control Block).
 */
#include <stddef.h>
#include <stdint.h>

#include "ek_board.h"
#include "ek_semihost.h"

#if defined(__ARM_ARCH_8M_MAIN__) || defined(__ARM_ARCH_8_1M_MAIN__)
#define EK_V8M_MAIN 1 /* has MSPLIM and the Security Extension registers (SFSR/SFAR) */
#else
#define EK_V8M_MAIN 0
#endif

#define REG32(addr) (*(volatile uint32_t *)(addr))
#define SCB_CCR REG32(0xE000ED14u)
#define SCB_SHCSR REG32(0xE000ED24u)
#define SCB_CFSR REG32(0xE000ED28u)
#define SCB_HFSR REG32(0xE000ED2Cu)
#define SCB_MMFAR REG32(0xE000ED34u)
#define SCB_BFAR REG32(0xE000ED38u)
#define SCB_CPACR REG32(0xE000ED88u)
#define SCB_SFSR REG32(0xE000EDE4u)
#define SCB_SFAR REG32(0xE000EDE8u)

#define CCR_DIV_0_TRP (1u << 4)
#define SHCSR_FAULT_ENABLES ((1u << 16) | (1u << 17) | (1u << 18) | (EK_V8M_MAIN ? (1u << 19) : 0u))
#define CPACR_CP10_CP11_FULL (0xFu << 20) /* FPU (and MVE on M55) */

#define EK_NUM_IRQ 32 /* interrupts with a vector; none is enabled, a stray one is reported as a fault */

/* From link.ld.j2 */
extern uint32_t __ek_stack_bottom[], __ek_stack_top[];
extern uint32_t __ek_ram_start[], __ek_ram_end[];

void ek_crt_start(void) __attribute__((noreturn));

void ek_reset_handler(void) __attribute__((naked, noreturn));
void ek_start(void) __attribute__((noreturn, used));
void ek_fault_entry(void) __attribute__((naked));
void ek_fault_report(const uint32_t *frame, uint32_t exc_return) __attribute__((noreturn, used));

/* CMSIS names, so a program can override a handler by defining it. */
void NMI_Handler(void) __attribute__((weak, alias("ek_fault_entry")));
void HardFault_Handler(void) __attribute__((weak, alias("ek_fault_entry")));
void MemManage_Handler(void) __attribute__((weak, alias("ek_fault_entry")));
void BusFault_Handler(void) __attribute__((weak, alias("ek_fault_entry")));
void UsageFault_Handler(void) __attribute__((weak, alias("ek_fault_entry")));
void SecureFault_Handler(void) __attribute__((weak, alias("ek_fault_entry")));
void SVC_Handler(void) __attribute__((weak, alias("ek_fault_entry")));
void DebugMon_Handler(void) __attribute__((weak, alias("ek_fault_entry")));
void PendSV_Handler(void) __attribute__((weak, alias("ek_fault_entry")));
void SysTick_Handler(void) __attribute__((weak, alias("ek_fault_entry")));

__attribute__((used, section(".ek_vectors"))) const uintptr_t ek_vector_table[16 + EK_NUM_IRQ] = {
    [0] = (uintptr_t)__ek_stack_top,
    [1] = (uintptr_t)ek_reset_handler,
    [2] = (uintptr_t)NMI_Handler,
    [3] = (uintptr_t)HardFault_Handler,
    [4] = (uintptr_t)MemManage_Handler,
    [5] = (uintptr_t)BusFault_Handler,
    [6] = (uintptr_t)UsageFault_Handler,
    [7] = (uintptr_t)SecureFault_Handler, /* reserved on v7-M */
    [11] = (uintptr_t)SVC_Handler,
    [12] = (uintptr_t)DebugMon_Handler,
    [14] = (uintptr_t)PendSV_Handler,
    [15] = (uintptr_t)SysTick_Handler,
    [16 ... 16 + EK_NUM_IRQ - 1] = (uintptr_t)ek_fault_entry,
};

/* Sets the stack pointer (the core also loads it from the vector table) before any C code runs. */
void ek_reset_handler(void)
{
    __asm__ volatile("movw r0, #:lower16:__ek_stack_top\n"
                     "movt r0, #:upper16:__ek_stack_top\n"
                     "mov sp, r0\n"
                     "b ek_start\n");
}

void ek_start(void)
{
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    /* First, before the compiler can emit any FP/MVE instruction: without this they fault (UsageFault NOCP). */
    SCB_CPACR |= CPACR_CP10_CP11_FULL;
    __asm__ volatile("dsb\n isb" ::: "memory");
#endif
    /* Report MemManage/BusFault/UsageFault (and SecureFault) as themselves instead of escalating to HardFault,
     * and trap integer division by zero instead of returning 0. */
    SCB_SHCSR |= SHCSR_FAULT_ENABLES;
    SCB_CCR |= CCR_DIV_0_TRP;
#if EK_V8M_MAIN
    __asm__ volatile("msr msplim, %0" : : "r"(__ek_stack_bottom)); /* stack overflow -> UsageFault STKOF */
#endif
    ek_crt_start(); /* ek_crt.c: .data, .bss, constructors, main, exit */
}

/* ---- faults ------------------------------------------------------------------------------------------------- */

/* The handler runs on its own stack: the fault may be a stack overflow, or the stack may be corrupt. */
uint64_t ek_fault_stack[64] __attribute__((used));

void ek_fault_entry(void)
{
    __asm__ volatile("tst lr, #4\n"
                     "ite eq\n"
                     "mrseq r0, msp\n"
                     "mrsne r0, psp\n"
                     "mov r1, lr\n"
#if EK_V8M_MAIN
                     "movs r2, #0\n"
                     "msr msplim, r2\n"
#endif
                     "movw r2, #:lower16:ek_fault_stack+512\n"
                     "movt r2, #:upper16:ek_fault_stack+512\n"
                     "mov sp, r2\n"
                     "b ek_fault_report\n");
}

static const char *exception_name(uint32_t number)
{
    switch (number) {
    case 2: return "NMI";
    case 3: return "HardFault";
    case 4: return "MemManage";
    case 5: return "BusFault";
    case 6: return "UsageFault";
    case 7: return "SecureFault";
    case 11: return "SVCall";
    case 12: return "DebugMonitor";
    case 14: return "PendSV";
    case 15: return "SysTick";
    default: return number >= 16 ? "IRQ" : "Exception";
    }
}

/* One line, parsed by runtimes/qemu.py:
 *   EK_FAULT <name> exception=<n> pc=0x... lr=0x... cfsr=0x... hfsr=0x... mmfar=0x... bfar=0x... [sfsr= sfar=] */
void ek_fault_report(const uint32_t *frame, uint32_t exc_return)
{
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    uint32_t number = ipsr & 0x1ffu;
    /* The stacked frame is r0-r3, r12, lr, pc, xpsr; only read it if it lies in RAM. */
    int frame_ok = ((uintptr_t)frame & 3u) == 0 && (uintptr_t)frame >= (uintptr_t)__ek_ram_start &&
                   (uintptr_t)frame + 32u <= (uintptr_t)__ek_ram_end;

    ek_print("\nEK_FAULT ");
    ek_print(exception_name(number));
    ek_print(" exception=");
    ek_print_u32(number);
    if (frame_ok) {
        ek_print_hex32(" pc=", frame[6]);
        ek_print_hex32(" lr=", frame[5]);
    } else {
        ek_print_hex32(" pc=unknown sp=", (uint32_t)(uintptr_t)frame);
    }
    ek_print_hex32(" cfsr=", SCB_CFSR);
    ek_print_hex32(" hfsr=", SCB_HFSR);
    ek_print_hex32(" mmfar=", SCB_MMFAR);
    ek_print_hex32(" bfar=", SCB_BFAR);
#if EK_V8M_MAIN
    ek_print_hex32(" sfsr=", SCB_SFSR);
    ek_print_hex32(" sfar=", SCB_SFAR);
#endif
    ek_print_hex32(" exc_return=", exc_return);
    ek_print("\n");
    ek_exit(EK_FAULT_EXIT_CODE);
}

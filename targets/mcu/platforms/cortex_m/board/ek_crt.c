/*
 * ek_crt.c: the ISA-neutral half of edgekit's bare-metal start-up, shared by the Cortex-M and RISC-V board support:
 * stack painting, .data copy, .bss zeroing, constructors, main() and exit; ek_marker for the instruction counter;
 * the stack high-water mark and the free RAM (ek_board.h). Each platform's ek_startup.c sets up the core (stack
 * pointer, FPU, fault/trap handling) and then calls ek_crt_start().
 *
 * Memory layout comes from the platform's link.ld.j2: RAM starts with the stack, then .data, .bss and free RAM.
 */
#include <stddef.h>
#include <stdint.h>

#include "ek_board.h"
#include "ek_semihost.h"

#define EK_STACK_PAINT 0xDEADBEEFu

/* From link.ld.j2 */
extern uint32_t __ek_stack_bottom[], __ek_stack_top[];
extern uint32_t __ek_data_start[], __ek_data_end[], __ek_data_load[];
extern uint32_t __ek_bss_start[], __ek_bss_end[];
extern uint32_t __ek_ram_end[];
extern void (*__ek_init_array_start[])(void);
extern void (*__ek_init_array_end[])(void);

int main(void);

void ek_crt_start(void) __attribute__((noreturn, used));

static void paint_stack(void)
{
    uint32_t *p = __ek_stack_bottom;
    uint32_t *sp;
#if defined(__riscv)
    __asm__ volatile("mv %0, sp" : "=r"(sp));
#else
    __asm__ volatile("mov %0, sp" : "=r"(sp));
#endif
    while (p < sp) { /* everything below the live frame */
        *p++ = EK_STACK_PAINT;
    }
}

void ek_crt_start(void)
{
    paint_stack();
    for (uint32_t *src = __ek_data_load, *dst = __ek_data_start; dst < __ek_data_end;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = __ek_bss_start; dst < __ek_bss_end;) {
        *dst++ = 0;
    }
    for (void (**init)(void) = __ek_init_array_start; init < __ek_init_array_end; init++) {
        (*init)();
    }
    ek_exit(main());
}

#ifdef EK_DEVICE
void ek_device_mark(void); /* ek_device.h: the device harness records the cycle counter here */
#endif

__attribute__((noinline, noipa, used, section(".text.ek_marker"))) void ek_marker(void)
{
#ifdef EK_DEVICE
    ek_device_mark();
#endif
    __asm__ volatile("" ::: "memory");
}

uint32_t ek_stack_high_water(void)
{
    const volatile uint32_t *p = __ek_stack_bottom;
    while (p < __ek_stack_top && *p == EK_STACK_PAINT) {
        p++;
    }
    return (uint32_t)((uintptr_t)__ek_stack_top - (uintptr_t)p);
}

uint32_t ek_stack_size(void)
{
    return (uint32_t)((uintptr_t)__ek_stack_top - (uintptr_t)__ek_stack_bottom);
}

uint8_t *ek_free_ram_start(void)
{
    return (uint8_t *)__ek_bss_end;
}

uint8_t *ek_free_ram_end(void)
{
    return (uint8_t *)__ek_ram_end;
}

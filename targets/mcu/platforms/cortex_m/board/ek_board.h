/*
 * ek_board.h: what edgekit's bare-metal Cortex-M board support (ek_startup.c + link.ld.j2) offers a program.
 *
 * The program provides `int main(void)`; the reset handler enables the FPU, paints the stack, copies .data, zeroes
 * .bss, runs main and exits (semihosting) with main's return value. A fault prints one "EK_FAULT ..." line and exits
 * with EK_FAULT_EXIT_CODE; runtimes/qemu.py turns that into a FirmwareError.
 */
#ifndef EK_BOARD_H
#define EK_BOARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exit status of a firmware that faulted (HardFault, MemManage, BusFault, UsageFault, SecureFault, stray IRQ). */
#define EK_FAULT_EXIT_CODE 0xFA

/* Does nothing. The instruction counter (runtimes/qemu_plugin) records its count each time this is entered, so
 * calls placed around a region measure that region: QemuRun.between_markers(). Never inlined or removed. */
void ek_marker(void);

/* Bytes of stack used so far (deepest point reached since reset), found by scanning the painted stack. */
uint32_t ek_stack_high_water(void);

/* Size of the stack reserved by the linker script, in bytes. */
uint32_t ek_stack_size(void);

/* First free byte of RAM after .data and .bss, and the end of RAM: the space a program may use for its own arena. */
uint8_t *ek_free_ram_start(void);
uint8_t *ek_free_ram_end(void);

#ifdef __cplusplus
}
#endif

#endif /* EK_BOARD_H */

/*
 * ek_device.h: what edgekit's device firmware (a board on the user's desk, or an emulated board behind a serial
 * port) needs from its board: a UART and a cycle counter. Shared by the Cortex-M and RISC-V board support.
 *
 * Which UART and counter are compiled in comes from the board profile (targets/mcu/platforms/<platform>/
 * devboards.toml), as -D flags the device build passes: EK_UART_CMSDK / EK_UART_STM32 / EK_UART_GD32 /
 * EK_UART_NS16550 with EK_UART_BASE, EK_UART_CLOCK_HZ and EK_UART_BAUD; EK_BOARD_<NAME> for the board's pin and
 * clock-gate set-up; EK_CYCLES_DWT (Cortex-M3 and up), EK_CYCLES_MCYCLE (RISC-V) or EK_CYCLES_NONE.
 */
#ifndef EK_DEVICE_H
#define EK_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Clocks, pins and the UART (8 data bits, no parity, 1 stop bit, EK_UART_BAUD); starts the cycle counter and
 * checks that it advances (ek_device_has_cycles). Call once, first thing in main(). */
void ek_device_init(void);

/* Blocking byte I/O on the UART. */
void ek_device_putc(uint8_t byte);
uint8_t ek_device_getc(void);

/* The free-running cycle counter (DWT CYCCNT, RISC-V mcycle), wrapping at 2^32; 0 without one. */
uint32_t ek_device_cycles(void);

/* 1 when the counter advanced while ek_device_init ran a short loop: QEMU's Cortex-M models have no DWT (it
 * reads 0), and an emulated RISC-V board's mcycle counts host time, so the profile compiles it out there. */
int ek_device_has_cycles(void);

/* Called by ek_marker() in a device build: records the counter at each marker of the current inference (the
 * markers the model driver places after every kernel call with EDGEKIT_PROFILE_STEPS, see ek_board.h). */
void ek_device_mark(void);

#ifdef __cplusplus
}
#endif

#endif /* EK_DEVICE_H */

/*
 * ek_semihost.h: text and hex output and exit over Arm semihosting, for firmware run under QEMU.
 *
 * Part of edgekit's bare-metal Cortex-M board support (targets/mcu/platforms/cortex_m/board/). Each call traps into the debugger
 * (QEMU) with `bkpt 0xab`; runtimes/qemu.py collects everything written here and the exit status. Nothing here
 * needs a C library.
 */
#ifndef EK_SEMIHOST_H
#define EK_SEMIHOST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Write len bytes (any values, NUL included) to the semihosting console. */
void ek_write(const void *buf, size_t len);

/* Write a NUL-terminated string, without a newline. */
void ek_print(const char *s);

/* Write a NUL-terminated string and a newline, like puts(). */
void ek_puts(const char *s);

/* Write a number in decimal, without a newline. */
void ek_print_u32(uint32_t value);
void ek_print_i32(int32_t value);

/* Write `label` and then `value` as 0x followed by 8 lowercase hex digits, without a newline (fault reports). */
void ek_print_hex32(const char *label, uint32_t value);

/* Write len bytes of memory as lowercase hex, two digits per byte in memory order, no separators, no newline
 * (for dumping tensors that the host compares byte for byte). */
void ek_print_hex(const void *data, size_t len);

/* End the program: QEMU exits with `status` as its own exit status (SYS_EXIT_EXTENDED). */
void ek_exit(int status) __attribute__((noreturn));

#ifdef __cplusplus
}
#endif

#endif /* EK_SEMIHOST_H */

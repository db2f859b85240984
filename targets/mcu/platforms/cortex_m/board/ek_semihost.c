/*
 * ek_semihost.c: semihosting calls: Arm (bkpt 0xab; operation in r0, argument in r1, result in r0) and RISC-V
 * (the same operations through an ebreak sequence, see below). Shared by the Cortex-M and RISC-V board support.
 *
 * Operation numbers are from Arm's "Semihosting for AArch32 and AArch64" specification.
 */
#include "ek_semihost.h"

#ifdef EK_DEVICE
/* A device build (a board behind a serial port, no debugger): text goes to the host in the link's text frames and
 * exit stops the core (ek_link.c); the formatting helpers below are shared. */
#include "ek_link.h"

void ek_write(const void *buf, size_t len)
{
    ek_link_text(buf, len);
}

void ek_print(const char *s)
{
    size_t n = 0;
    while (s[n]) {
        n++;
    }
    ek_link_text(s, n);
}

void ek_exit(int status)
{
    ek_link_halt(status);
}
#else

/* SYS_WRITEC/SYS_WRITE0 always go to the debugger's console, which QEMU routes to the semihosting chardev
 * (-semihosting-config chardev=...). SYS_WRITE on an opened ":tt" would go to QEMU's own stdout instead. */
#define SYS_WRITEC 0x03
#define SYS_WRITE0 0x04
#define SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

#if defined(__riscv)
/* RISC-V semihosting (the RISC-V semihosting spec, on top of Arm's operations): operation in a0, argument in a1,
 * result in a0; the trap is the uncompressed sequence slli x0,x0,0x1f / ebreak / srai x0,x0,7, which must not
 * cross a page, hence the alignment. */
static int semihost_call(int op, const void *arg)
{
    register int a0 __asm__("a0") = op;
    register const void *a1 __asm__("a1") = arg;
    __asm__ volatile(".option push\n"
                     ".option norvc\n"
                     ".balign 16\n"
                     "slli x0, x0, 0x1f\n"
                     "ebreak\n"
                     "srai x0, x0, 7\n"
                     ".option pop\n"
                     : "+r"(a0) : "r"(a1) : "memory");
    return a0;
}
#else
static int semihost_call(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}
#endif

void ek_write(const void *buf, size_t len)
{
    const char *bytes = buf;
    char chunk[128]; /* SYS_WRITE0 takes a NUL-terminated string: copy runs of non-NUL bytes into it */
    size_t used = 0;
    for (size_t i = 0; i < len; i++) {
        if (bytes[i] != '\0') {
            chunk[used++] = bytes[i];
        }
        if (used == sizeof chunk - 1 || bytes[i] == '\0' || i + 1 == len) {
            chunk[used] = '\0';
            if (used) {
                semihost_call(SYS_WRITE0, chunk);
            }
            used = 0;
            if (bytes[i] == '\0') {
                semihost_call(SYS_WRITEC, &bytes[i]);
            }
        }
    }
}

void ek_print(const char *s)
{
    if (*s) {
        semihost_call(SYS_WRITE0, s);
    }
}

#endif /* EK_DEVICE */

void ek_puts(const char *s)
{
    ek_print(s);
    ek_write("\n", 1);
}

void ek_print_u32(uint32_t value)
{
    char digits[10];
    size_t n = 0;
    do {
        digits[sizeof digits - 1 - n] = (char)('0' + value % 10u);
        value /= 10u;
        n++;
    } while (value);
    ek_write(digits + sizeof digits - n, n);
}

void ek_print_i32(int32_t value)
{
    if (value < 0) {
        ek_write("-", 1);
        ek_print_u32(0u - (uint32_t)value); /* also right for INT32_MIN */
    } else {
        ek_print_u32((uint32_t)value);
    }
}

void ek_print_hex(const void *data, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *bytes = data;
    char chunk[256]; /* one semihosting call per 128 bytes */
    size_t used = 0;
    for (size_t i = 0; i < len; i++) {
        chunk[used++] = hex[bytes[i] >> 4];
        chunk[used++] = hex[bytes[i] & 0xfu];
        if (used == sizeof chunk) {
            ek_write(chunk, used);
            used = 0;
        }
    }
    ek_write(chunk, used);
}

void ek_print_hex32(const char *label, uint32_t value)
{
    static const char hex[] = "0123456789abcdef";
    char text[11] = {'0', 'x'};
    for (int i = 0; i < 8; i++) {
        text[2 + i] = hex[(value >> (28 - 4 * i)) & 0xfu];
    }
    ek_print(label);
    ek_write(text, 10);
}

#ifndef EK_DEVICE
void ek_exit(int status)
{
    const uint32_t args[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    for (;;) {
        semihost_call(SYS_EXIT_EXTENDED, args);
    }
}
#endif

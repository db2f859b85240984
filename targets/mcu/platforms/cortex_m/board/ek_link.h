/*
 * ek_link.h: edgekit's framed serial protocol, the device side (the host side is runtimes/devlink.py, which also
 * documents the messages). Shared by the Cortex-M and RISC-V board support; runs on ek_device.h's UART.
 *
 * A frame: 0xE5 0x4B, type (1 byte), sequence number (u32), payload length (u32), payload, CRC-32 (u32; the
 * zlib/IEEE 802.3 polynomial) of everything from the type to the end of the payload. Numbers little-endian.
 */
#ifndef EK_LINK_H
#define EK_LINK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EK_LINK_SYNC0 0xE5u
#define EK_LINK_SYNC1 0x4Bu

/* Outcome of ek_link_recv. */
#define EK_LINK_OK 0
#define EK_LINK_BAD_CRC (-1)
#define EK_LINK_TOO_LONG (-2)

/* The start of a frame: send the header, then the payload in any number of ek_link_send_part calls (exactly
 * `len` bytes in all), then ek_link_end. */
void ek_link_begin(uint8_t type, uint32_t seq, uint32_t len);
void ek_link_send_part(const void *data, uint32_t len);
void ek_link_end(void);

/* A whole frame in one call. */
void ek_link_send(uint8_t type, uint32_t seq, const void *data, uint32_t len);

/* Wait for the next frame and read its payload into buf (at most cap bytes). Bytes before a frame's sync are
 * skipped. A header announcing more than cap bytes gives EK_LINK_TOO_LONG at once (the payload is left to the next
 * sync hunt, so noise cannot make it wait for gigabytes), one whose checksum is wrong EK_LINK_BAD_CRC; *type, *seq
 * and *len are set in every case. */
int ek_link_recv(uint8_t *type, uint32_t *seq, uint8_t *buf, uint32_t cap, uint32_t *len);

/* Text for the host ('T' frames, sent at each newline and when 120 bytes are waiting): what ek_print & co. write in
 * a device build (fault reports). */
void ek_link_text(const void *text, size_t len);

/* Send what text is waiting, tell the host the firmware stopped ('Z' frame with the status) and stop the core. */
void ek_link_halt(int status) __attribute__((noreturn));

#ifdef __cplusplus
}
#endif

#endif /* EK_LINK_H */

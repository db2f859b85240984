/*
 * ek_link.c: the device side of edgekit's framed serial protocol (ek_link.h; host side runtimes/devlink.py).
 */
#include "ek_link.h"

#include "ek_device.h"

/* CRC-32 (reflected polynomial 0xEDB88320, as zlib.crc32), four bits at a time from a 16-entry table. */
static const uint32_t ek_crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

static uint32_t ek_crc_byte(uint32_t crc, uint8_t byte)
{
    crc ^= byte;
    crc = (crc >> 4) ^ ek_crc_nibble[crc & 15u];
    return (crc >> 4) ^ ek_crc_nibble[crc & 15u];
}

static uint32_t ek_tx_crc;

static void ek_put_counted(uint8_t byte)
{
    ek_tx_crc = ek_crc_byte(ek_tx_crc, byte);
    ek_device_putc(byte);
}

static void ek_put_u32(uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        ek_put_counted((uint8_t)(v >> (8 * i)));
    }
}

void ek_link_begin(uint8_t type, uint32_t seq, uint32_t len)
{
    ek_device_putc(EK_LINK_SYNC0);
    ek_device_putc(EK_LINK_SYNC1);
    ek_tx_crc = 0xFFFFFFFFu;
    ek_put_counted(type);
    ek_put_u32(seq);
    ek_put_u32(len);
}

void ek_link_send_part(const void *data, uint32_t len)
{
    const uint8_t *p = data;
    for (uint32_t i = 0; i < len; i++) {
        ek_put_counted(p[i]);
    }
}

void ek_link_end(void)
{
    uint32_t crc = ~ek_tx_crc;
    for (int i = 0; i < 4; i++) {
        ek_device_putc((uint8_t)(crc >> (8 * i)));
    }
}

void ek_link_send(uint8_t type, uint32_t seq, const void *data, uint32_t len)
{
    ek_link_begin(type, seq, len);
    ek_link_send_part(data, len);
    ek_link_end();
}

static uint32_t ek_get_u32(uint32_t *crc)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t b = ek_device_getc();
        if (crc) {
            *crc = ek_crc_byte(*crc, b);
        }
        v |= (uint32_t)b << (8 * i);
    }
    return v;
}

int ek_link_recv(uint8_t *type, uint32_t *seq, uint8_t *buf, uint32_t cap, uint32_t *len)
{
    uint8_t prev = 0;
    for (;;) { /* hunt for the sync pair */
        uint8_t b = ek_device_getc();
        if (prev == EK_LINK_SYNC0 && b == EK_LINK_SYNC1) {
            break;
        }
        prev = b;
    }
    uint32_t crc = 0xFFFFFFFFu;
    *type = ek_device_getc();
    crc = ek_crc_byte(crc, *type);
    *seq = ek_get_u32(&crc);
    *len = ek_get_u32(&crc);
    if (*len > cap) { /* (noise that looked like a header, or a request for another model): resync at once */
        return EK_LINK_TOO_LONG;
    }
    for (uint32_t i = 0; i < *len; i++) {
        buf[i] = ek_device_getc();
        crc = ek_crc_byte(crc, buf[i]);
    }
    uint32_t sent = ek_get_u32(0);
    return sent == ~crc ? EK_LINK_OK : EK_LINK_BAD_CRC;
}

static char ek_text[120];
static uint32_t ek_text_used;

static void ek_text_flush(void)
{
    if (ek_text_used) {
        ek_link_send('T', 0, ek_text, ek_text_used);
        ek_text_used = 0;
    }
}

void ek_link_text(const void *text, size_t len)
{
    const char *p = text;
    for (size_t i = 0; i < len; i++) {
        ek_text[ek_text_used++] = p[i];
        if (p[i] == '\n' || ek_text_used == sizeof ek_text) {
            ek_text_flush();
        }
    }
}

void ek_link_halt(int status)
{
    int32_t s = status;
    ek_text_flush();
    ek_link_send('Z', 0, &s, 4);
    for (;;) {
        __asm__ volatile("wfi"); /* the same mnemonic on Arm and RISC-V */
    }
}

/*
 * nn_kernels_main.c: runs the cases of tests/kernel_harness.py through edgekit's int8 kernels (ek_nn_s8.c) and
 * prints each output buffer as hex, with ek_marker() right around every kernel call so the instruction counter
 * measures the call alone. The same source builds bare metal (QEMU, board files of targets/mcu/platforms/cortex_m/board) and
 * for the host (-DEK_HOST: the blob file is argv[1]), which checks the portable C path.
 *
 * Blob (little-endian int32 words): magic, case count, max scratch bytes, max output bytes, then per case 12 words:
 * op (0 conv2d, 1 depthwise, 2 fully connected, 3 add: the input holds a's rows then b's, 4 pooling,
 * 5 table lookup: the weights are the table, 6 product: the input holds a then b, 7 transpose), number of int fields, then byte offsets in the blob of the int
 * fields, weights, bias (-1 = NULL), requant table and input, output buffer bytes, scratch bytes, 3 unused.
 */
#include <stdint.h>
#include <string.h>

#include "ek_nn_s8.h"

#ifdef EK_HOST
#include <stdio.h>
#include <stdlib.h>
static void ek_marker(void) {}
static void ek_puts(const char *s) { puts(s); }
static void ek_print(const char *s) { fputs(s, stdout); }
static void ek_print_i32(int32_t v) { printf("%ld", (long)v); }
static void ek_print_hex(const void *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        printf("%02x", ((const uint8_t *)d)[i]);
    }
}
static const uint8_t *ek_cases;
static uint8_t *ram;
#else
#include "ek_board.h"
#include "ek_semihost.h"
extern const uint8_t ek_cases[]; /* cases_blob.S */
#endif

#define EK_SENTINEL 0x5A
#define WORDS_PER_CASE 12

static const void *at(int32_t off) { return off < 0 ? NULL : (const void *)(ek_cases + off); }

#ifdef EK_HOST
int main(int argc, char **argv)
{
    if (argc < 2) {
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *blob = aligned_alloc(8, (size_t)(size + 8) & ~(size_t)7);
    if (fread(blob, 1, (size_t)size, f) != (size_t)size) {
        return 2;
    }
    fclose(f);
    ek_cases = blob;
#else
int main(void)
{
#endif
    const int32_t *head = (const int32_t *)ek_cases;
    if (head[0] != 0x4E4E4B45) {
        ek_puts("bad blob");
        return 3;
    }
    const int32_t n_cases = head[1];
    const size_t max_scratch = (size_t)head[2], max_out = (size_t)head[3];
#ifdef EK_HOST
    ram = aligned_alloc(8, ((max_out + 7) & ~(size_t)7) + ((max_scratch + 15) & ~(size_t)7));
    uint8_t *out = ram;
#else
    uint8_t *out = (uint8_t *)(((uintptr_t)ek_free_ram_start() + 7u) & ~(uintptr_t)7u);
    if (out + max_out + max_scratch + 16 > ek_free_ram_end()) {
        ek_puts("cases need more RAM than the board has");
        return 4;
    }
#endif
    void *scratch = (void *)(((uintptr_t)out + max_out + 7u) & ~(uintptr_t)7u);
/* A kernel taking its parameter struct (the case's fields), one input and the output: the timed call. */
#define EK_CALL_IN_OUT(type, fn)                                                                                   \
    do {                                                                                                           \
        type p;                                                                                                    \
        memset(&p, 0, sizeof p);                                                                                   \
        memcpy(&p, at(c[2]), (size_t)nfields * 4);                                                                 \
        ek_marker();                                                                                               \
        rc = fn(&p, at(c[6]), (int8_t *)out);                                                                      \
        ek_marker();                                                                                               \
    } while (0)
    for (int32_t i = 0; i < n_cases; i++) {
        const int32_t *c = head + 4 + WORDS_PER_CASE * i;
        const int32_t op = c[0], nfields = c[1];
        const size_t out_bytes = (size_t)c[7];
        memset(out, EK_SENTINEL, out_bytes);
        int rc;
        if (op == 0 || op == 1) {
            ek_conv_params_t p;
            memset(&p, 0, sizeof p);
            memcpy(&p, at(c[2]), (size_t)nfields * 4);
            p.weights = at(c[3]);
            p.bias = at(c[4]);
            p.requant = at(c[5]);
            size_t need = op == 0 ? ek_conv2d_s8_scratch_bytes(&p) : ek_depthwise_conv2d_s8_scratch_bytes(&p);
            if (need != (size_t)c[8]) {
                ek_print("scratch size mismatch C=");
                ek_print_i32((int32_t)need);
                ek_puts("");
                return 5;
            }
            ek_marker();
            rc = op == 0 ? ek_conv2d_s8(&p, at(c[6]), (int8_t *)out, scratch)
                         : ek_depthwise_conv2d_s8(&p, at(c[6]), (int8_t *)out, scratch);
            ek_marker();
        } else if (op == 3) {
            ek_add_params_t p;
            memset(&p, 0, sizeof p);
            memcpy(&p, at(c[2]), (size_t)nfields * 4);
            const int8_t *a = at(c[6]);
            ek_marker();
            rc = ek_add_s8(&p, a, a + p.rows * p.a_row_stride, (int8_t *)out);  /* b after a's rows */
            ek_marker();
        } else if (op == 4) {
            EK_CALL_IN_OUT(ek_pool_params_t, ek_pool_s8);
        } else if (op == 5) {
            ek_lut_params_t p;
            memset(&p, 0, sizeof p);
            memcpy(&p, at(c[2]), (size_t)nfields * 4);
            p.table = at(c[3]);
            ek_marker();
            rc = ek_lut_s8(&p, at(c[6]), (int8_t *)out);
            ek_marker();
        } else if (op == 6) {
            ek_mul_params_t p;
            memset(&p, 0, sizeof p);
            memcpy(&p, at(c[2]), (size_t)nfields * 4);
            const int8_t *a = at(c[6]);
            ek_marker();
            rc = ek_mul_s8(&p, a, a + p.rows * p.channels, (int8_t *)out);  /* b after a */
            ek_marker();
        } else if (op == 7) {
            EK_CALL_IN_OUT(ek_transpose_params_t, ek_transpose_s8);
        } else if (op == 8) {
            EK_CALL_IN_OUT(ek_upsample_params_t, ek_upsample_s8);
        } else {
            ek_fc_params_t p;
            memset(&p, 0, sizeof p);
            memcpy(&p, at(c[2]), (size_t)nfields * 4);
            p.weights = at(c[3]);
            p.bias = at(c[4]);
            p.requant = at(c[5]);
            size_t need = ek_fully_connected_s8_scratch_bytes(&p);
            if (need != (size_t)c[8]) {
                ek_print("scratch size mismatch C=");
                ek_print_i32((int32_t)need);
                ek_puts("");
                return 5;
            }
            ek_marker();
            rc = ek_fully_connected_s8(&p, at(c[6]), (int8_t *)out, scratch);
            ek_marker();
        }
        ek_print("case ");
        ek_print_i32(i);
        ek_print(" rc ");
        ek_print_i32(rc);
        ek_print(" out ");
        ek_print_hex(out, out_bytes);
        ek_puts("");
    }
    ek_puts("done");
    return 0;
}

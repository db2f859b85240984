/*
 * ek_sparse_s8.c: int8 kernels for compressed (pruned) weights on Cortex-M; API, format and arithmetic in
 * ek_sparse_s8.h.
 *
 * How the time goes (executed instructions on Cortex-M7, the measure edgekit optimises):
 *
 * Convolution = sparse matrix x im2col tile. Eight output pixels at a time are copied into scratch as int16 with the
 * input zero point subtracted (padding becomes 0), laid out [K][8]: the 8 pixels' values of one reduction column are
 * 16 contiguous bytes. Then per output channel and per stored entry the DSP loop does LDRB (delta), LDRSB (value),
 * ADD (column pointer += 16 * delta), two LDRD (the 8 pixels) and eight SMLABB/SMLATB into eight register
 * accumulators: 13 instructions for 8 MACs, unrolled 4 times. The weights are never expanded; each entry is read
 * once per 8 output pixels. Requantisation is the SMMLA form of ek_nn_s8.c, per channel for its 8 pixels, derived
 * from mult and shift so that it also covers multipliers too large for the table's form (see ek__sconv_tile8).
 * Building the tile costs ~2 instructions per element (pairs of pixels, 4 columns at a time: SXTAB16 subtracts the
 * zero point from two bytes at once, PKHBT/PKHTB interleave the two pixels); it is shared by all output channels.
 *
 * Fully connected (one input row reused by no other pixel): per entry UXTAB (column += delta), LDRSB (input),
 * SMLABB/SMLABT (one MAC with a value unpacked two at a time by SXTB16): ~4 instructions per MAC. The input zero
 * point is folded into the packed bias offline (sum over the channel's weights), so the loop reads raw inputs.
 *
 * The portable build runs the same data layout with plain C loops, so both compute the same integers.
 */
#include "ek_sparse_s8.h"

#include <string.h>

#if defined(__ARM_FEATURE_DSP) && !defined(EK_NN_PORTABLE)
#define EK_SP_DSP 1
#include <arm_acle.h>
#else
#define EK_SP_DSP 0
#endif

#define EK_SP_P EK_SPARSE_TILE_PIXELS

/* ---------------------------------------------------------------------------------------------------------------
 * Small helpers. A word holding two int16 keeps the lower-indexed element in its low half.
 * ------------------------------------------------------------------------------------------------------------- */
static inline uint32_t ek_sp__read_u32(const void *p) /* any alignment */
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint32_t ek_sp__pack16(int32_t lo, int32_t hi)
{
    return (uint32_t)(uint16_t)lo | ((uint32_t)(uint16_t)hi << 16);
}

#if EK_SP_DSP
static inline int32_t ek_sp__smmla(int32_t a, int32_t b, int32_t c)
{
    int32_t r;
    __asm__("smmla %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
#endif

static int ek_sp__aligned(const void *p) { return ((uintptr_t)p & 3u) == 0; }

/* ---------------------------------------------------------------------------------------------------------------
 * Requantisation: the contract of edgekit/qmath.py, and with EK_SPARSE_FLAG_FAST_REQUANT the SMMLA form that
 * kernel_pack.requant_table prepared (see ek_nn_s8.c for the derivation).
 * ------------------------------------------------------------------------------------------------------------- */
typedef struct {
    int fast;
    int32_t out_zp, lo, hi; /* generic form */
    int32_t upper, back;    /* fast form: act_max - act_min - 128, act_min + 128 */
} ek_sp__rq_t;

static void ek_sp__rq_init(ek_sp__rq_t *r, int32_t flags, int32_t out_zp, int32_t act_min, int32_t act_max)
{
    r->fast = EK_SP_DSP && (flags & EK_SPARSE_FLAG_FAST_REQUANT);
    r->out_zp = out_zp;
    r->lo = act_min;
    r->hi = act_max;
    r->upper = act_max - act_min - 128;
    r->back = act_min + 128;
}

static inline int8_t ek_sp__requant(const ek_sp__rq_t *r, int32_t acc, const int32_t *q)
{
#if EK_SP_DSP
    if (r->fast) {
        int32_t v = __ssat(ek_sp__smmla(acc, q[0], q[1]) >> q[2], 8);
        if (v > r->upper) {
            v = r->upper;
        }
        return (int8_t)(v + r->back);
    }
#endif
    const int32_t shift = q[3];
    int64_t v = ((int64_t)acc * q[0] + ((int64_t)1 << (shift - 1))) >> shift;
    v += r->out_zp;
    if (v < r->lo) {
        v = r->lo;
    }
    if (v > r->hi) {
        v = r->hi;
    }
    return (int8_t)v;
}

static int ek_sp__counts_ok(const int16_t *counts, int32_t n, int32_t entries)
{
    int32_t total = 0;
    for (int32_t c = 0; c < n; c++) {
        if (counts[c] < 0) {
            return 0;
        }
        total += counts[c];
    }
    return total == entries;
}

/* ===============================================================================================================
 * Convolution
 * ============================================================================================================= */

static int32_t ek_sp__conv_k(const ek_sconv_params_t *p) { return p->kernel_h * p->kernel_w * p->in_c; }

/* Bytes of the zero-point run: the kernel row (or tap) a pixel reads where its window leaves the input. */
static size_t ek_sp__zp_run_bytes(const ek_sconv_params_t *p)
{
    return ((size_t)(p->kernel_w * p->in_c) + 3u) & ~(size_t)3u;
}

size_t ek_sparse_conv2d_s8_scratch_bytes(const ek_sconv_params_t *p)
{
    return (size_t)ek_sp__conv_k(p) * EK_SP_P * sizeof(int16_t) + ek_sp__zp_run_bytes(p);
}

/* Pixel pair (a, b), len bytes each: tile words {a[k] - zp, b[k] - zp} at dst[4 * k] (16 bytes per column). */
#if EK_SP_DSP
void ek__sp_cvt4(const int8_t *a, const int8_t *b, int32_t groups, uint32_t off2, uint32_t *dst);
/* groups >= 1 of 4 columns: 2 LDR, 4 SXTAB16, 2 PKHBT, 2 PKHTB, 4 STR, loop = 16 instructions per 8 values. */
__asm__(
    "   .syntax unified\n"
    "   .pushsection .text.ek__sp_cvt4, \"ax\", %progbits\n"
    "   .balign 4\n"
    "   .global ek__sp_cvt4\n"
    "   .type ek__sp_cvt4, %function\n"
    "   .thumb_func\n"
    "ek__sp_cvt4:\n"                        /* r0 a, r1 b, r2 groups, r3 off2, [sp] dst */
    "   push    {r4-r9}\n"
    "   ldr     r12, [sp, #24]\n"
    "1: ldr     r4, [r0], #4\n"
    "   ldr     r5, [r1], #4\n"
    "   sxtab16 r6, r3, r4\n"               /* (a0, a2) */
    "   sxtab16 r7, r3, r5\n"               /* (b0, b2) */
    "   sxtab16 r8, r3, r4, ror #8\n"       /* (a1, a3) */
    "   sxtab16 r9, r3, r5, ror #8\n"       /* (b1, b3) */
    "   pkhbt   r4, r6, r7, lsl #16\n"      /* (a0, b0) */
    "   pkhtb   r5, r7, r6, asr #16\n"      /* (a2, b2) */
    "   pkhbt   r6, r8, r9, lsl #16\n"      /* (a1, b1) */
    "   pkhtb   r7, r9, r8, asr #16\n"      /* (a3, b3) */
    "   str     r6, [r12, #16]\n"
    "   str     r5, [r12, #32]\n"
    "   str     r7, [r12, #48]\n"
    "   str     r4, [r12], #64\n"
    "   subs    r2, r2, #1\n"
    "   bne     1b\n"
    "   pop     {r4-r9}\n"
    "   bx      lr\n"
    "   .size ek__sp_cvt4, . - ek__sp_cvt4\n"
    "   .popsection\n");
#endif

static void ek_sp__cvt_pair(const int8_t *a, const int8_t *b, int32_t len, uint32_t off2, uint32_t *dst)
{
#if EK_SP_DSP
    const int32_t groups = len >> 2;
    if (groups) {
        ek__sp_cvt4(a, b, groups, off2, dst);
        a += 4 * groups;
        b += 4 * groups;
        dst += 16 * groups;
        len &= 3;
    }
#endif
    const int32_t off = (int16_t)off2;
    for (; len > 0; len--, dst += 4) {
        dst[0] = ek_sp__pack16(*a++ + off, *b++ + off);
    }
}

typedef struct {
    int32_t iy, ix;    /* input position of the first kernel tap (may lie in the padding) */
    int32_t out_off;   /* byte offset of the pixel in the output */
} ek_sp__pix_t;

/* The window of pixel q lies inside the input (no padding read). */
static int ek_sp__inside(const ek_sconv_params_t *p, const ek_sp__pix_t *q)
{
    return q->iy >= 0 && q->ix >= 0 && q->iy + (p->kernel_h - 1) * p->dilation_h < p->in_h &&
           q->ix + (p->kernel_w - 1) * p->dilation_w < p->in_w;
}

/* Where kernel row ky of pixel q comes from when dilation_w == 1: the input itself when the whole row is inside,
 * the zero-point run when the row is outside, else NULL (the row is partly in the padding: tap by tap). */
static const int8_t *ek_sp__row_src(const ek_sconv_params_t *p, const int8_t *in, const ek_sp__pix_t *q, int32_t ky,
                                    const int8_t *zp_run)
{
    const int32_t iy = q->iy + ky * p->dilation_h;
    if ((uint32_t)iy >= (uint32_t)p->in_h || q->ix >= p->in_w || q->ix + p->kernel_w <= 0) {
        return zp_run;
    }
    if (q->ix >= 0 && q->ix + p->kernel_w <= p->in_w) {
        return in + iy * p->in_row_stride + q->ix * p->in_c;
    }
    return NULL;
}

static const int8_t *ek_sp__tap_src(const ek_sconv_params_t *p, const int8_t *in, const ek_sp__pix_t *q, int32_t ky,
                                    int32_t kx, const int8_t *zp_run)
{
    const int32_t iy = q->iy + ky * p->dilation_h, ix = q->ix + kx * p->dilation_w;
    if ((uint32_t)iy >= (uint32_t)p->in_h || (uint32_t)ix >= (uint32_t)p->in_w) {
        return zp_run;
    }
    return in + iy * p->in_row_stride + ix * p->in_c;
}

/* The 8 pixels of a tile ([K][8] int16, zero point subtracted, padding 0): pairs of pixels, a kernel row at a time
 * where both rows are contiguous (or all padding), else tap by tap. */
static void ek_sp__im2col_tile(const ek_sconv_params_t *p, const int8_t *in, const ek_sp__pix_t *pix, uint32_t *tile,
                               const int8_t *zp_run)
{
    const uint32_t off2 = ek_sp__pack16(p->input_offset, p->input_offset);
    const int32_t c = p->in_c, run = p->kernel_w * c;
    const int32_t step = p->dilation_h * p->in_row_stride;
    for (int32_t pp = 0; pp < EK_SP_P / 2; pp++) {
        const ek_sp__pix_t *a = &pix[2 * pp], *b = &pix[2 * pp + 1];
        uint32_t *dst = tile + pp;
        if (p->dilation_w == 1 && ek_sp__inside(p, a) && ek_sp__inside(p, b)) {
            const int8_t *sa = in + a->iy * p->in_row_stride + a->ix * c;
            const int8_t *sb = in + b->iy * p->in_row_stride + b->ix * c;
            for (int32_t ky = 0; ky < p->kernel_h; ky++, sa += step, sb += step, dst += 4 * run) {
                ek_sp__cvt_pair(sa, sb, run, off2, dst);
            }
            continue;
        }
        for (int32_t ky = 0; ky < p->kernel_h; ky++) {
            const int8_t *sa = p->dilation_w == 1 ? ek_sp__row_src(p, in, a, ky, zp_run) : NULL;
            const int8_t *sb = p->dilation_w == 1 ? ek_sp__row_src(p, in, b, ky, zp_run) : NULL;
            if (sa && sb) {
                ek_sp__cvt_pair(sa, sb, run, off2, dst);
                dst += 4 * run;
                continue;
            }
            for (int32_t kx = 0; kx < p->kernel_w; kx++, dst += 4 * c) {
                ek_sp__cvt_pair(ek_sp__tap_src(p, in, a, ky, kx, zp_run), ek_sp__tap_src(p, in, b, ky, kx, zp_run), c,
                                off2, dst);
            }
        }
    }
}

#if EK_SP_DSP
/* What ek__sconv_tile8 reads (offsets are fixed in its asm). */
typedef struct {
    const uint8_t *pairs;     /*  0: entries of the next channel */
    const int16_t *counts;    /*  4: count of the next channel */
    const int32_t *bias;      /*  8: bias of the next channel */
    const int32_t *requant;   /* 12: requant entry of the next channel */
    const int16_t *tile;      /* 16 */
    int8_t *out;              /* 20: output of the next channel, first pixel */
    int32_t step_pixel;       /* 24: bytes from one pixel's output to the next (out_c) */
    int32_t channels;         /* 28: channels left */
    int32_t upper;            /* 32: act_max - act_min - 128 */
    int32_t back;             /* 36: act_min + 128 */
    int32_t bias_step;        /* 40: 4, or 0 when there is no bias (bias points at a zero) */
    int32_t clamp;            /* 44: 0 when [act_min, act_max] is all of int8 (upper = 127, back = 0) */
    int32_t a_pre;            /* 48: 1 + 2 * (out_zp - act_min - 128) */
} ek__sconv_tile_args_t;

_Static_assert(sizeof(ek__sconv_tile_args_t) == 52, "ek__sconv_tile8 reads these offsets");

void ek__sconv_tile8(ek__sconv_tile_args_t *a);
#endif

#if EK_SP_DSP
/*
 * Per stored entry: the column pointer moves by 16 bytes x delta, two LDRD read the 8 pixels of that column and
 * eight SMLABB/SMLATB multiply them by the value: r0-r7 accumulators, r8/r9 pixels, r10 value, r11 entries, r12
 * column pointer, lr entries left.
 */
__asm__(
    "   .syntax unified\n"
    "   .macro EK_SP_STEP\n"
    "   ldrb    r8, [r11], #1\n"
    "   ldrsb   r10, [r11], #1\n"
    "   add     r12, r12, r8, lsl #4\n"
    "   ldrd    r8, r9, [r12]\n"
    "   smlabb  r0, r8, r10, r0\n"
    "   smlatb  r1, r8, r10, r1\n"
    "   smlabb  r2, r9, r10, r2\n"
    "   smlatb  r3, r9, r10, r3\n"
    "   ldrd    r8, r9, [r12, #8]\n"
    "   smlabb  r4, r8, r10, r4\n"
    "   smlatb  r5, r8, r10, r5\n"
    "   smlabb  r6, r9, r10, r6\n"
    "   smlatb  r7, r9, r10, r7\n"
    "   .endm\n"
    "   .macro EK_SP_MAC\n"                 /* lr entries (>= 0) */
    "   tst     lr, #1\n"
    "   beq     81f\n"
    "   EK_SP_STEP\n"
    "81: tst    lr, #2\n"
    "   beq     82f\n"
    "   EK_SP_STEP\n"
    "   EK_SP_STEP\n"
    "82: lsrs   lr, lr, #2\n"
    "   beq     84f\n"
    "83: EK_SP_STEP\n"
    "   EK_SP_STEP\n"
    "   EK_SP_STEP\n"
    "   EK_SP_STEP\n"
    "   subs    lr, lr, #1\n"
    "   bne     83b\n"
    "84:\n"
    "   .endm\n"
    "   .macro EK_SP_OUT r, clamp\n"        /* requantise, clamp, store one output: r8 step, r9 mult, r10 a,
                                               r11 b, r12 upper, r0 back, lr output pointer (advanced) */
    "   smmla   \\r, \\r, r9, r10\n"
    "   asr     \\r, \\r, r11\n"
    "   ssat    \\r, #8, \\r\n"
    "   .if \\clamp\n"
    "   cmp     \\r, r12\n"
    "   it      gt\n"
    "   movgt   \\r, r12\n"
    "   add     \\r, \\r, r0\n"
    "   .endif\n"
    "   strb    \\r, [lr]\n"
    "   add     lr, lr, r8\n"
    "   .endm\n");

/* acc[0..7] = bias + the channel's `count` entries times tile columns (the portable path's job, in asm). */
const uint8_t *ek__sconv_mac8(const uint8_t *pairs, int32_t count, const int16_t *tile, int32_t bias, int32_t *acc);
__asm__(
    "   .syntax unified\n"
    "   .pushsection .text.ek__sconv_mac8, \"ax\", %progbits\n"
    "   .balign 4\n"
    "   .global ek__sconv_mac8\n"
    "   .type ek__sconv_mac8, %function\n"
    "   .thumb_func\n"
    "ek__sconv_mac8:\n"
    "   push    {r4-r11, lr}\n"
    "   mov     r11, r0\n"
    "   mov     lr, r1\n"
    "   mov     r12, r2\n"
    "   mov     r0, r3\n"
    "   mov     r1, r3\n"
    "   mov     r2, r3\n"
    "   mov     r4, r3\n"
    "   mov     r5, r3\n"
    "   mov     r6, r3\n"
    "   mov     r7, r3\n"
    "   EK_SP_MAC\n"
    "   ldr     r8, [sp, #36]\n"
    "   stm     r8, {r0-r7}\n"
    "   mov     r0, r11\n"
    "   pop     {r4-r11, pc}\n"
    "   .size ek__sconv_mac8, . - ek__sconv_mac8\n"
    "   .popsection\n");

/*
 * All channels of one tile whose 8 pixels are step_pixel bytes apart in the output, requantised with the SMMLA form:
 * per channel, load count and bias, accumulate (EK_SP_MAC), then per output SMMLA, ASR, SSAT (the lower clamp), with
 * clamp the upper clamp and + back, and STRB: 5 instructions per output without clamp, 9 with. [sp] holds the args
 * pointer, [sp, #4] back. A channel without entries requantises its bias once and stores it 8 times.
 *
 * The SMMLA form is derived per channel from mult and shift (the table's a and b are not read), so that it covers
 * every channel: with off = out_zp - act_min - 128 and a_pre = 1 + 2 * off,
 *   shift >= 33: b = shift - 32, a = a_pre * 2^(b-1) (the table's form, ek_nn_s8.c);
 *   shift <= 32: QADD doubles each accumulator k = 33 - shift times, then b = 1, a = a_pre:
 *     SMMLA(acc * 2^k, mult, a_pre) >> 1 = floor((acc * mult + 2^(shift-1)) / 2^shift) + off.
 *   A doubling that saturates leaves |acc * mult / 2^shift| >= 2^28, which the 8-bit clamp maps to the same output.
 *   Channels with mult = 0 skip the doubling (their output is out_zp either way).
 * ek_sparse_conv2d_s8 checks |a| < 2^30 for every channel before it calls this (else C requantises).
 */
__asm__(
    "   .syntax unified\n"
    "   .macro EK_SP_RQ_LOAD all\n"         /* r8 args -> r9 mult, r10 a, r11 b, the accumulators r0 (all:
                                               r0-r7) doubled k times; clobbers r12, lr */
    "   ldr     r12, [r8, #12]\n"
    "   ldm     r12!, {r9, r10, r11, lr}\n" /* mult, (a), (b), shift */
    "   str     r12, [r8, #12]\n"
    "   ldr     r10, [r8, #48]\n"           /* a_pre */
    "   subs    r11, lr, #32\n"             /* b = shift - 32 */
    "   ble     91f\n"
    "   sub     r12, r11, #1\n"
    "   lsl     r10, r10, r12\n"            /* a = a_pre * 2^(b-1) */
    "   b       93f\n"
    "91: mov    r11, #1\n"
    "   cmp     r9, #0\n"
    "   beq     93f\n"
    "   rsb     lr, lr, #33\n"              /* k */
    "92: qadd   r0, r0, r0\n"
    "   .if \\all\n"
    "   qadd    r1, r1, r1\n"
    "   qadd    r2, r2, r2\n"
    "   qadd    r3, r3, r3\n"
    "   qadd    r4, r4, r4\n"
    "   qadd    r5, r5, r5\n"
    "   qadd    r6, r6, r6\n"
    "   qadd    r7, r7, r7\n"
    "   .endif\n"
    "   subs    lr, lr, #1\n"
    "   bne     92b\n"
    "93:\n"
    "   .endm\n"
    "   .pushsection .text.ek__sconv_tile8, \"ax\", %progbits\n"
    "   .balign 4\n"
    "   .global ek__sconv_tile8\n"
    "   .type ek__sconv_tile8, %function\n"
    "   .thumb_func\n"
    "ek__sconv_tile8:\n"
    "   push    {r4-r11, lr}\n"
    "   sub     sp, sp, #8\n"
    "   str     r0, [sp]\n"
    "   ldr     r1, [r0, #36]\n"
    "   str     r1, [sp, #4]\n"
    "1: ldr     lr, [sp]\n"
    "   ldr     r11, [lr, #0]\n"            /* entries */
    "   ldr     r12, [lr, #4]\n"
    "   ldrsh   r8, [r12], #2\n"            /* count */
    "   str     r12, [lr, #4]\n"
    "   ldr     r12, [lr, #8]\n"
    "   ldr     r9, [lr, #40]\n"
    "   ldr     r0, [r12]\n"                /* bias */
    "   add     r12, r12, r9\n"
    "   str     r12, [lr, #8]\n"
    "   ldr     r12, [lr, #16]\n"           /* column pointer = tile */
    "   movs    lr, r8\n"
    "   beq     5f\n"
    "   mov     r1, r0\n"
    "   mov     r2, r0\n"
    "   mov     r3, r0\n"
    "   mov     r4, r0\n"
    "   mov     r5, r0\n"
    "   mov     r6, r0\n"
    "   mov     r7, r0\n"
    "   EK_SP_MAC\n"
    "   ldr     r8, [sp]\n"
    "   str     r11, [r8, #0]\n"
    "   EK_SP_RQ_LOAD 1\n"
    "   ldr     lr, [r8, #20]\n"
    "   add     r12, lr, #1\n"
    "   str     r12, [r8, #20]\n"           /* next channel's output */
    "   ldr     r12, [r8, #44]\n"
    "   cmp     r12, #0\n"
    "   ldr     r12, [r8, #32]\n"           /* upper */
    "   ldr     r8, [r8, #24]\n"            /* step */
    "   add     lr, lr, r8\n"               /* pixel 1 */
    "   bne     3f\n"
    "   EK_SP_OUT r1, 0\n"
    "   EK_SP_OUT r2, 0\n"
    "   EK_SP_OUT r3, 0\n"
    "   EK_SP_OUT r4, 0\n"
    "   EK_SP_OUT r5, 0\n"
    "   EK_SP_OUT r6, 0\n"
    "   EK_SP_OUT r7, 0\n"
    "   sub     lr, lr, r8, lsl #3\n"       /* back to pixel 0 */
    "   smmla   r0, r0, r9, r10\n"
    "   asr     r0, r0, r11\n"
    "   ssat    r0, #8, r0\n"
    "   strb    r0, [lr]\n"
    "   b       7f\n"
    "3: push    {r0}\n"                     /* free r0 for back */
    "   ldr     r0, [sp, #8]\n"
    "   EK_SP_OUT r1, 1\n"
    "   EK_SP_OUT r2, 1\n"
    "   EK_SP_OUT r3, 1\n"
    "   EK_SP_OUT r4, 1\n"
    "   EK_SP_OUT r5, 1\n"
    "   EK_SP_OUT r6, 1\n"
    "   EK_SP_OUT r7, 1\n"
    "   sub     lr, lr, r8, lsl #3\n"
    "   mov     r1, r0\n"
    "   pop     {r0}\n"
    "   smmla   r0, r0, r9, r10\n"
    "   asr     r0, r0, r11\n"
    "   ssat    r0, #8, r0\n"
    "   cmp     r0, r12\n"
    "   it      gt\n"
    "   movgt   r0, r12\n"
    "   add     r0, r0, r1\n"
    "   strb    r0, [lr]\n"
    "7: ldr     r0, [sp]\n"
    "   ldr     r1, [r0, #28]\n"
    "   subs    r1, r1, #1\n"
    "   str     r1, [r0, #28]\n"
    "   bne     1b\n"
    "   add     sp, sp, #8\n"
    "   pop     {r4-r11, pc}\n"
    "5: ldr     r8, [sp]\n"                 /* a channel without entries: every output is requant(bias) */
    "   EK_SP_RQ_LOAD 0\n"
    "   ldr     lr, [r8, #20]\n"
    "   add     r12, lr, #1\n"
    "   str     r12, [r8, #20]\n"
    "   ldr     r12, [r8, #32]\n"
    "   ldr     r1, [sp, #4]\n"
    "   ldr     r8, [r8, #24]\n"
    "   smmla   r0, r0, r9, r10\n"
    "   asr     r0, r0, r11\n"
    "   ssat    r0, #8, r0\n"
    "   cmp     r0, r12\n"                  /* without clamp: upper = 127, back = 0 */
    "   it      gt\n"
    "   movgt   r0, r12\n"
    "   add     r0, r0, r1\n"
    "   .rept 8\n"
    "   strb    r0, [lr]\n"
    "   add     lr, lr, r8\n"
    "   .endr\n"
    "   b       7b\n"
    "   .size ek__sconv_tile8, . - ek__sconv_tile8\n"
    "   .popsection\n");
#else
static const uint8_t *ek__sconv_mac8(const uint8_t *pairs, int32_t count, const int16_t *tile, int32_t bias,
                                     int32_t *acc)
{
    uint32_t a[EK_SP_P];
    for (int32_t i = 0; i < EK_SP_P; i++) {
        a[i] = (uint32_t)bias;
    }
    const int16_t *col = tile;
    for (int32_t e = 0; e < count; e++, pairs += 2) {
        col += EK_SP_P * pairs[0];
        const int32_t w = (int8_t)pairs[1];
        for (int32_t i = 0; i < EK_SP_P; i++) {
            a[i] += (uint32_t)(col[i] * w); /* wraps like the int32 register */
        }
    }
    for (int32_t i = 0; i < EK_SP_P; i++) {
        acc[i] = (int32_t)a[i];
    }
    return pairs;
}
#endif

static int ek_sp__conv_check(const ek_sconv_params_t *p, const void *scratch)
{
    if (p->in_h < 1 || p->in_w < 1 || p->in_c < 1 || p->out_h < 1 || p->out_w < 1 || p->out_c < 1 ||
        p->kernel_h < 1 || p->kernel_w < 1 || p->stride_h < 1 || p->stride_w < 1 || p->dilation_h < 1 ||
        p->dilation_w < 1 || p->pad_top < 0 || p->pad_left < 0 || p->pad_bottom < 0 || p->pad_right < 0 ||
        p->in_row_stride < p->in_w * p->in_c || p->out_row_stride < p->out_w * p->out_c || p->entries < 0) {
        return EK_SPARSE_ERR_ARG;
    }
    if ((p->out_h - 1) * p->stride_h + (p->kernel_h - 1) * p->dilation_h + 1 > p->in_h + p->pad_top + p->pad_bottom ||
        (p->out_w - 1) * p->stride_w + (p->kernel_w - 1) * p->dilation_w + 1 > p->in_w + p->pad_left + p->pad_right) {
        return EK_SPARSE_ERR_ARG;
    }
    if (!ek_sp__aligned(p->counts) || !ek_sp__aligned(p->requant) || (p->bias && !ek_sp__aligned(p->bias)) ||
        !ek_sp__aligned(scratch)) {
        return EK_SPARSE_ERR_ALIGN;
    }
    if (!ek_sp__counts_ok(p->counts, p->out_c, p->entries)) {
        return EK_SPARSE_ERR_ARG;
    }
    return EK_SPARSE_OK;
}

int ek_sparse_conv2d_s8(const ek_sconv_params_t *p, const int8_t *input, int8_t *output, void *scratch)
{
    const int rc = ek_sp__conv_check(p, scratch);
    if (rc != EK_SPARSE_OK) {
        return rc;
    }
    ek_sp__rq_t rq;
    ek_sp__rq_init(&rq, p->flags, p->output_offset, p->act_min, p->act_max);
    uint32_t *tile = (uint32_t *)scratch;
    int8_t *zp_run = (int8_t *)scratch + (size_t)ek_sp__conv_k(p) * EK_SP_P * sizeof(int16_t);
    memset(zp_run, -p->input_offset, ek_sp__zp_run_bytes(p));
    const int32_t npix = p->out_h * p->out_w;
    ek_sp__pix_t pix[EK_SP_P];
    int32_t acc[EK_SP_P];
    int32_t oy = 0, ox = 0;
#if EK_SP_DSP
    /* the asm derives the SMMLA form of every channel (see ek__sconv_tile8); it needs |a_pre * 2^(b-1)| < 2^30 */
    const int32_t a_pre = 1 + 2 * (p->output_offset - p->act_min - 128);
    int asm_ok = 1;
    for (int32_t c = 0; c < p->out_c && asm_ok; c++) {
        const int32_t mult = p->requant[4 * c], shift = p->requant[4 * c + 3];
        if (mult != 0 && shift > 32) {
            asm_ok = shift - 32 <= 30 && ((a_pre < 0 ? -(int64_t)a_pre : a_pre) << (shift - 33)) < ((int64_t)1 << 30);
        }
    }
#endif
    for (int32_t pix0 = 0; pix0 < npix; pix0 += EK_SP_P) {
        const int32_t n = npix - pix0 < EK_SP_P ? npix - pix0 : EK_SP_P;
        int uniform = n == EK_SP_P;  /* the 8 outputs of a channel are out_c bytes apart */
        for (int32_t i = 0; i < EK_SP_P; i++) {
            if (i < n) {
                pix[i].iy = oy * p->stride_h - p->pad_top;
                pix[i].ix = ox * p->stride_w - p->pad_left;
                pix[i].out_off = oy * p->out_row_stride + ox * p->out_c;
                uniform &= pix[i].out_off == pix[0].out_off + i * p->out_c;
                if (++ox == p->out_w) {
                    ox = 0;
                    oy++;
                }
            } else {
                pix[i] = pix[n - 1];
            }
        }
        ek_sp__im2col_tile(p, input, pix, tile, zp_run);
#if EK_SP_DSP
        if (uniform && asm_ok) {
            static const int32_t zero = 0;
            ek__sconv_tile_args_t a = {p->pairs, p->counts, p->bias ? p->bias : &zero, p->requant,
                                       (const int16_t *)tile, output + pix[0].out_off, p->out_c, p->out_c, rq.upper,
                                       rq.back, p->bias ? 4 : 0, !(p->act_min == -128 && p->act_max == 127), a_pre};
            ek__sconv_tile8(&a);
            continue;
        }
#endif
        const uint8_t *pairs = p->pairs;
        const int32_t *q = p->requant;
        for (int32_t c = 0; c < p->out_c; c++, q += 4) {
            pairs = ek__sconv_mac8(pairs, p->counts[c], (const int16_t *)tile, p->bias ? p->bias[c] : 0, acc);
            int8_t *out = output + c;
            for (int32_t i = 0; i < n; i++) {
                out[pix[i].out_off] = ek_sp__requant(&rq, acc[i], q);
            }
        }
    }
    return EK_SPARSE_OK;
}

/* ===============================================================================================================
 * Fully connected
 * ============================================================================================================= */

size_t ek_sparse_fully_connected_s8_scratch_bytes(const ek_sfc_params_t *p)
{
    (void)p;
    return 0;
}

/* bias + sum over `count` entries of x[column] * value. */
static inline int32_t ek_sp__fc_dot(const uint8_t *pairs, int32_t count, const int8_t *x, int32_t acc)
{
#if EK_SP_DSP
    /* A word holds two entries (delta0, value0, delta1, value1): UXTAB moves the column, LDRSB reads the input, and
     * SMLABB / SMLABT multiply by the values that one SXTB16 unpacked: 4.5 instructions per entry, 4 per loop. */
    uint32_t k = 0, w, v, t;
    int32_t n4 = count >> 2;
    if (n4) {
        __asm__ volatile(
            "1: ldr     %[w], [%[p]], #4\n"
            "   uxtab   %[k], %[k], %[w]\n"
            "   sxtb16  %[v], %[w], ror #8\n"
            "   ldrsb   %[t], [%[x], %[k]]\n"
            "   smlabb  %[acc], %[t], %[v], %[acc]\n"
            "   uxtab   %[k], %[k], %[w], ror #16\n"
            "   ldrsb   %[t], [%[x], %[k]]\n"
            "   smlabt  %[acc], %[t], %[v], %[acc]\n"
            "   ldr     %[w], [%[p]], #4\n"
            "   uxtab   %[k], %[k], %[w]\n"
            "   sxtb16  %[v], %[w], ror #8\n"
            "   ldrsb   %[t], [%[x], %[k]]\n"
            "   smlabb  %[acc], %[t], %[v], %[acc]\n"
            "   uxtab   %[k], %[k], %[w], ror #16\n"
            "   ldrsb   %[t], [%[x], %[k]]\n"
            "   smlabt  %[acc], %[t], %[v], %[acc]\n"
            "   subs    %[n], %[n], #1\n"
            "   bne     1b\n"
            : [w] "=&r"(w), [v] "=&r"(v), [t] "=&r"(t), [k] "+r"(k), [p] "+r"(pairs), [acc] "+r"(acc),
              [n] "+r"(n4)
            : [x] "r"(x)
            : "cc", "memory");
    }
    for (count &= 3; count > 0; count--, pairs += 2) {
        k += pairs[0];
        acc = __smlabb(x[k], (int8_t)pairs[1], acc);
    }
    return acc;
#else
    uint32_t a = (uint32_t)acc;
    const int8_t *xp = x;
    for (int32_t e = 0; e < count; e++, pairs += 2) {
        xp += pairs[0];
        a += (uint32_t)(*xp * (int8_t)pairs[1]); /* wraps like the int32 register */
    }
    return (int32_t)a;
#endif
}

int ek_sparse_fully_connected_s8(const ek_sfc_params_t *p, const int8_t *input, int8_t *output, void *scratch)
{
    (void)scratch;
    if (p->batch < 1 || p->in_features < 1 || p->out_features < 1 || p->in_row_stride < p->in_features ||
        p->out_row_stride < p->out_features || p->entries < 0 || p->bias == NULL) {
        return EK_SPARSE_ERR_ARG;
    }
    if (!ek_sp__aligned(p->counts) || !ek_sp__aligned(p->requant) || !ek_sp__aligned(p->bias)) {
        return EK_SPARSE_ERR_ALIGN;
    }
    if (!ek_sp__counts_ok(p->counts, p->out_features, p->entries)) {
        return EK_SPARSE_ERR_ARG;
    }
    ek_sp__rq_t rq;
    ek_sp__rq_init(&rq, p->flags, p->output_offset, p->act_min, p->act_max);
    for (int32_t b = 0; b < p->batch; b++) {
        const int8_t *x = input + b * p->in_row_stride;
        int8_t *out = output + b * p->out_row_stride;
        const uint8_t *pairs = p->pairs;
        for (int32_t o = 0; o < p->out_features; o++) {
            const int32_t count = p->counts[o];
            const int32_t acc = ek_sp__fc_dot(pairs, count, x, p->bias[o]);
            pairs += 2 * count;
            out[o] = ek_sp__requant(&rq, acc, p->requant + 4 * o);
        }
    }
    return EK_SPARSE_OK;
}

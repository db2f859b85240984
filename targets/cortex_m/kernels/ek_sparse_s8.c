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
 * once per 8 output pixels. Requantisation is the SMMLA form of ek_nn_s8.c, per channel for its 8 pixels.
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
 * Small helpers (DSP instructions and their C equivalents). A word holding two int16 keeps the lower-indexed
 * element in its low half.
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
static inline uint32_t ek_sp__sxtab16(uint32_t a, uint32_t x) { return (uint32_t)__sxtab16((int32_t)a, (int32_t)x); }
static inline uint32_t ek_sp__sxtab16_ror8(uint32_t a, uint32_t x)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
static inline int32_t ek_sp__smmla(int32_t a, int32_t b, int32_t c)
{
    int32_t r;
    __asm__("smmla %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
#else
static inline uint32_t ek_sp__sxtab16(uint32_t a, uint32_t x)
{
    return ek_sp__pack16((int16_t)a + (int8_t)x, (int16_t)(a >> 16) + (int8_t)(x >> 16));
}
static inline uint32_t ek_sp__sxtab16_ror8(uint32_t a, uint32_t x)
{
    return ek_sp__pack16((int16_t)a + (int8_t)(x >> 8), (int16_t)(a >> 16) + (int8_t)(x >> 24));
}
#endif

/* Low halves of a and b -> (a.lo, b.lo) (PKHBT); high halves -> (a.hi, b.hi) (PKHTB). */
static inline uint32_t ek_sp__lo_lo(uint32_t a, uint32_t b) { return (a & 0xFFFFu) | (b << 16); }
static inline uint32_t ek_sp__hi_hi(uint32_t a, uint32_t b) { return (b & 0xFFFF0000u) | (a >> 16); }

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

size_t ek_sparse_conv2d_s8_scratch_bytes(const ek_sconv_params_t *p)
{
    return (size_t)ek_sp__conv_k(p) * EK_SP_P * sizeof(int16_t);
}

/* Pixel pair (a, b), len bytes each, both inside the input: tile words {a[k] - zp, b[k] - zp} at dst[4 * k]. */
static void ek_sp__cvt_pair(const int8_t *a, const int8_t *b, int32_t len, uint32_t off2, uint32_t *dst)
{
    for (; len >= 4; len -= 4, a += 4, b += 4, dst += 16) {
        const uint32_t xa = ek_sp__read_u32(a), xb = ek_sp__read_u32(b);
        const uint32_t ae = ek_sp__sxtab16(off2, xa), ao = ek_sp__sxtab16_ror8(off2, xa); /* (a0,a2), (a1,a3) */
        const uint32_t be = ek_sp__sxtab16(off2, xb), bo = ek_sp__sxtab16_ror8(off2, xb);
        dst[0] = ek_sp__lo_lo(ae, be);
        dst[4] = ek_sp__lo_lo(ao, bo);
        dst[8] = ek_sp__hi_hi(ae, be);
        dst[12] = ek_sp__hi_hi(ao, bo);
    }
    const int32_t off = (int16_t)off2;
    for (; len > 0; len--, dst += 4) {
        dst[0] = ek_sp__pack16(*a++ + off, *b++ + off);
    }
}

/* One pixel's len bytes (src NULL: padding, zeros) into tile slot dst[8 * k] (int16). */
static void ek_sp__cvt_one(const int8_t *src, int32_t len, int32_t off, int16_t *dst)
{
    if (src == NULL) {
        for (int32_t k = 0; k < len; k++, dst += EK_SP_P) {
            dst[0] = 0;
        }
        return;
    }
    for (int32_t k = 0; k < len; k++, dst += EK_SP_P) {
        dst[0] = (int16_t)(src[k] + off);
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

/* One pixel into tile slot `slot`, tap by tap (edges, dilation_w > 1). */
static void ek_sp__im2col_one(const ek_sconv_params_t *p, const int8_t *in, const ek_sp__pix_t *q, int16_t *tile,
                              int32_t slot)
{
    const int32_t c = p->in_c;
    int16_t *dst = tile + slot;
    for (int32_t ky = 0; ky < p->kernel_h; ky++) {
        const int32_t iy = q->iy + ky * p->dilation_h;
        const int row_ok = (uint32_t)iy < (uint32_t)p->in_h;
        for (int32_t kx = 0; kx < p->kernel_w; kx++, dst += c * EK_SP_P) {
            const int32_t ix = q->ix + kx * p->dilation_w;
            const int ok = row_ok && (uint32_t)ix < (uint32_t)p->in_w;
            ek_sp__cvt_one(ok ? in + iy * p->in_row_stride + ix * c : NULL, c, p->input_offset, dst);
        }
    }
}

/* The 8 pixels of a tile ([K][8] int16). Pixels past n repeat the last one (their results are not stored). */
static void ek_sp__im2col_tile(const ek_sconv_params_t *p, const int8_t *in, const ek_sp__pix_t *pix, int16_t *tile)
{
    const uint32_t off2 = ek_sp__pack16(p->input_offset, p->input_offset);
    const int32_t run = p->kernel_w * p->in_c, step = p->dilation_h * p->in_row_stride;
    for (int32_t pp = 0; pp < EK_SP_P / 2; pp++) {
        const ek_sp__pix_t *a = &pix[2 * pp], *b = &pix[2 * pp + 1];
        if (p->dilation_w == 1 && ek_sp__inside(p, a) && ek_sp__inside(p, b)) {
            const int8_t *sa = in + a->iy * p->in_row_stride + a->ix * p->in_c;
            const int8_t *sb = in + b->iy * p->in_row_stride + b->ix * p->in_c;
            uint32_t *dst = (uint32_t *)tile + pp;
            for (int32_t ky = 0; ky < p->kernel_h; ky++, sa += step, sb += step, dst += 4 * run) {
                ek_sp__cvt_pair(sa, sb, run, off2, dst);
            }
        } else {
            ek_sp__im2col_one(p, in, a, tile, 2 * pp);
            ek_sp__im2col_one(p, in, b, tile, 2 * pp + 1);
        }
    }
}

#if EK_SP_DSP
/*
 * acc[0..7] = bias + sum over the channel's `count` entries of tile[column][0..7] * value; returns the pairs pointer
 * after them. r0-r7 accumulators, r8/r9 two words of pixels, r10 the value, r11 the pairs, r12 the column pointer,
 * lr the count.
 */
const uint8_t *ek__sconv_mac8(const uint8_t *pairs, int32_t count, const int16_t *tile, int32_t bias, int32_t *acc);
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
    "   tst     lr, #1\n"
    "   beq     1f\n"
    "   EK_SP_STEP\n"
    "1: tst     lr, #2\n"
    "   beq     2f\n"
    "   EK_SP_STEP\n"
    "   EK_SP_STEP\n"
    "2: lsrs    lr, lr, #2\n"
    "   beq     4f\n"
    "3: EK_SP_STEP\n"
    "   EK_SP_STEP\n"
    "   EK_SP_STEP\n"
    "   EK_SP_STEP\n"
    "   subs    lr, lr, #1\n"
    "   bne     3b\n"
    "4: ldr     r8, [sp, #36]\n"
    "   stm     r8, {r0-r7}\n"
    "   mov     r0, r11\n"
    "   pop     {r4-r11, pc}\n"
    "   .size ek__sconv_mac8, . - ek__sconv_mac8\n"
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
    int16_t *tile = (int16_t *)scratch;
    const int32_t npix = p->out_h * p->out_w;
    ek_sp__pix_t pix[EK_SP_P];
    int32_t acc[EK_SP_P];
    int32_t oy = 0, ox = 0;
    for (int32_t pix0 = 0; pix0 < npix; pix0 += EK_SP_P) {
        const int32_t n = npix - pix0 < EK_SP_P ? npix - pix0 : EK_SP_P;
        for (int32_t i = 0; i < EK_SP_P; i++) {
            if (i < n) {
                pix[i].iy = oy * p->stride_h - p->pad_top;
                pix[i].ix = ox * p->stride_w - p->pad_left;
                pix[i].out_off = oy * p->out_row_stride + ox * p->out_c;
                if (++ox == p->out_w) {
                    ox = 0;
                    oy++;
                }
            } else {
                pix[i] = pix[n - 1];
            }
        }
        ek_sp__im2col_tile(p, input, pix, tile);
        const uint8_t *pairs = p->pairs;
        const int32_t *q = p->requant;
        for (int32_t c = 0; c < p->out_c; c++, q += 4) {
            pairs = ek__sconv_mac8(pairs, p->counts[c], tile, p->bias ? p->bias[c] : 0, acc);
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
    /* two entries per word (delta0, value0, delta1, value1): UXTAB, LDRSB, SMLABB / UXTAB, LDRSB, SMLABT and one
     * SXTB16 for both values */
    uint32_t k = 0;
    for (; count >= 2; count -= 2, pairs += 4) {
        const uint32_t word = ek_sp__read_u32(pairs);
        uint32_t w2;
        __asm__("sxtb16 %0, %1, ror #8" : "=r"(w2) : "r"(word));
        k += word & 0xFFu; /* UXTAB */
        acc = __smlabb(x[k], (int32_t)w2, acc);
        k += (word >> 16) & 0xFFu; /* UXTAB ..., ROR #16 */
        acc = __smlabt(x[k], (int32_t)w2, acc);
    }
    if (count) {
        k += pairs[0];
        acc = __smlabb(x[k], (int8_t)pairs[1], acc);
    }
    return acc;
#else
    uint32_t a = (uint32_t)acc;
    const int8_t *xp = x;
    for (int32_t e = 0; e < count; e++, pairs += 2) {
        xp += pairs[0];
        a += (uint32_t)(*xp * (int8_t)pairs[1]);
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

/*
 * ek_nn_s8_mve.c: the Helium (M-profile Vector Extension, MVE) paths of edgekit's int8 kernels, for Cortex-M55 and
 * Cortex-M85. The API, the arithmetic contract and the parameter structs are those of ek_nn_s8.h; ek_nn_s8.c calls
 * these when a layer was packed for Helium (EK_NN_FLAG_MVE, set by targets/mcu/kernel_pack.py with isa="mve").
 * Built without MVE this file is empty, and a Helium-packed layer is refused (EK_NN_ERR_ARG).
 *
 * How the time goes (executed instructions on the emulated Cortex-M55; most MVE instructions take two beats, so
 * these are not cycles):
 *
 * Convolution and fully connected = dot products over the reduction axis K (kernel_h * kernel_w * in_c, in the
 * order ky, kx, c) of raw int8 inputs and weights: VMLADAVA.S8 (GCC writes VMLAVA.S8) multiplies 16 int8 pairs and
 * adds them to a 32-bit scalar accumulator in one instruction. Per 16 reduction elements and block of 4 output
 * channels: one load of the input, four of the weights, four VMLAVA (~0.16 instructions per MAC). The input zero
 * point is not subtracted: kernel_pack folds -x_zp * sum(w) into the packed bias, and padded positions read as
 * x_zp, so they add x_zp * w, which that term cancels (all modulo 2^32, like the accumulator). A convolution that
 * is not a 1x1 without padding copies each output pixel's window into scratch first (im2col, 16 bytes per vector
 * copy); a 1x1 reads the pixel in place. K need not be a multiple of 16: the last partial vector is a predicated
 * load (VCTP.8), so nothing beyond the data is read and nothing is padded in flash.
 * Weights of a full block: per 16 reduction elements [4 channels][16 bytes], then the K % 16 remaining ones as
 * [4 channels][K % 16]; a last block of 1-3 channels is stored channel after channel ([nc][K]).
 *
 * Depthwise = 16 channels per vector, channels-last as stored: per pair of taps two input and two weight loads,
 * VMULLB/VMULLT.S8 (int8 x int8 -> the 8 even and the 8 odd channels' int16 products), one int16 add per half (a
 * pair of products fits int16: |x w| <= 128 * 127, twice that < 2^15), then VMOVLB/VMOVLT widen to the four int32
 * accumulator vectors, which hold the channels {0,4,8,12}, {2,6,10,14}, {1,5,9,13}, {3,7,11,15}; the packed bias and
 * requantization table use the same order, and the saturating narrows (VQMOVNB/VQMOVNT, 32 -> 16 -> 8 bits) put the
 * 16 results back in channel order. Weights [groups of 16 channels][taps][16] (zero-padded to 16 channels), padding
 * taps read a row of x_zp from scratch.
 *
 * Requantization (4 channels per vector): VMULH (the high word of acc * mult, floored), add a, VSHL by -b (an
 * arithmetic shift right, floored) = floor((acc * mult + 2^(shift-1) + out_zp * 2^shift) / 2^shift), exactly the
 * contract's value before the clamp (shift = 32 + b, a = 2^(b-1) + out_zp * 2^b, kernel_pack checks both ranges);
 * then the clamp and a byte store. Layers whose scales do not allow that form keep the scalar 64-bit path.
 */
#include "ek_nn_s8.h"

#if defined(__ARM_FEATURE_MVE) && !defined(EK_NN_PORTABLE)
#include <arm_mve.h>

int ek__mve_conv2d_s8(const ek_conv_params_t *p, const int8_t *input, int8_t *output, void *scratch);
int ek__mve_fully_connected_s8(const ek_fc_params_t *p, const int8_t *input, int8_t *output);
int ek__mve_depthwise_conv2d_s8(const ek_conv_params_t *p, const int8_t *input, int8_t *output, void *scratch);

/* The contract's requantization on 64 bits, for tables without the vector form (requant row {mult, shift}). */
static int8_t ek__mve_requant_scalar(int32_t acc, int32_t mult, int32_t shift, int32_t out_zp, int32_t lo, int32_t hi)
{
    int64_t v = ((int64_t)acc * mult + ((int64_t)1 << (shift - 1))) >> shift;
    v += out_zp;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (int8_t)v;
}

/* One vector of 4 accumulators -> 4 int32 results in [lo, hi]; q = {mult[4], a[4], -b[4]}. */
static inline int32x4_t ek__mve_requant4(int32x4_t acc, const int32_t *q, int32x4_t lo, int32x4_t hi)
{
    int32x4_t v = vmulhq_s32(acc, vld1q_s32(q));
    v = vshlq_s32(vaddq_s32(v, vld1q_s32(q + 4)), vld1q_s32(q + 8));
    return vminq_s32(vmaxq_s32(v, lo), hi);
}

/* Copy n bytes / fill n bytes with v, 16 at a time (the last vector predicated). */
static inline int8_t *ek__mve_copy(int8_t *dst, const int8_t *src, int32_t n)
{
    for (; n > 0; n -= 16, src += 16, dst += 16) {
        const mve_pred16_t pr = vctp8q((uint32_t)n);
        vst1q_p_s8(dst, vld1q_z_s8(src, pr), pr);
    }
    return dst + n; /* n <= 0 here: back to the end of the copied bytes */
}

static inline int8_t *ek__mve_fill(int8_t *dst, int8x16_t v, int32_t n)
{
    for (; n > 0; n -= 16, dst += 16) {
        vst1q_p_s8(dst, v, vctp8q((uint32_t)n));
    }
    return dst + n;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Dot products of one input vector x[0..K) with every output channel (conv pixel or fully connected row).
 * ------------------------------------------------------------------------------------------------------------- */
typedef struct {
    const int8_t *weights;
    const int32_t *bias;    /* [ceil4(out_c)], zero-point term folded in */
    const int32_t *requant; /* [ceil4(out_c) / 4][3][4] (vector form) or [..][{mult[4], shift[4], 0[4]}] */
    int32_t k, out_c, fast, out_zp, act_min, act_max;
} ek__mve_gemv_t;

static void ek__mve_store4(const ek__mve_gemv_t *g, int32x4_t acc, const int32_t *q, int8_t *out, int32_t nc)
{
    if (g->fast) {
        const int32x4_t v = ek__mve_requant4(acc, q, vdupq_n_s32(g->act_min), vdupq_n_s32(g->act_max));
        vstrbq_p_s32(out, v, vctp32q((uint32_t)nc));
        return;
    }
    int32_t a[4];
    vst1q_s32(a, acc);
    for (int32_t c = 0; c < nc; c++) {
        out[c] = ek__mve_requant_scalar(a[c], q[c], q[4 + c], g->out_zp, g->act_min, g->act_max);
    }
}

static void ek__mve_gemv(const ek__mve_gemv_t *g, const int8_t *x, int8_t *out)
{
    const int32_t k = g->k, chunks = k >> 4, rem = k & 15;
    const mve_pred16_t prem = vctp8q((uint32_t)rem);
    const int8_t *w = g->weights;
    const int32_t *bias = g->bias, *q = g->requant;
    int32_t c = 0;
    for (; c + 4 <= g->out_c; c += 4, w += 4 * k, bias += 4, q += 12, out += 4) {
        int32_t a0 = bias[0], a1 = bias[1], a2 = bias[2], a3 = bias[3];
        const int8_t *xp = x, *wp = w;
        for (int32_t j = 0; j < chunks; j++) {
            const int8x16_t u = vld1q_s8(xp);
            xp += 16;
            a0 = vmladavaq_s8(a0, u, vld1q_s8(wp));
            a1 = vmladavaq_s8(a1, u, vld1q_s8(wp + 16));
            a2 = vmladavaq_s8(a2, u, vld1q_s8(wp + 32));
            a3 = vmladavaq_s8(a3, u, vld1q_s8(wp + 48));
            wp += 64;
        }
        if (rem) {
            const int8x16_t u = vld1q_z_s8(xp, prem);
            a0 = vmladavaq_s8(a0, u, vld1q_z_s8(wp, prem));
            a1 = vmladavaq_s8(a1, u, vld1q_z_s8(wp + rem, prem));
            a2 = vmladavaq_s8(a2, u, vld1q_z_s8(wp + 2 * rem, prem));
            a3 = vmladavaq_s8(a3, u, vld1q_z_s8(wp + 3 * rem, prem));
        }
        int32x4_t acc = vdupq_n_s32(a0);
        acc = vsetq_lane_s32(a1, acc, 1);
        acc = vsetq_lane_s32(a2, acc, 2);
        acc = vsetq_lane_s32(a3, acc, 3);
        ek__mve_store4(g, acc, q, out, 4);
    }
    if (c < g->out_c) { /* a last block of 1-3 channels, [nc][K] */
        const int32_t nc = g->out_c - c;
        int32_t a[4] = {0, 0, 0, 0};
        for (int32_t i = 0; i < nc; i++, w += k) {
            int32_t s = bias[i];
            const int8_t *xp = x, *wp = w;
            for (int32_t n = k; n > 0; n -= 16, xp += 16, wp += 16) {
                const mve_pred16_t pr = vctp8q((uint32_t)n);
                s = vmladavaq_s8(s, vld1q_z_s8(xp, pr), vld1q_z_s8(wp, pr));
            }
            a[i] = s;
        }
        ek__mve_store4(g, vld1q_s32(a), q, out, nc);
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Convolution
 * ------------------------------------------------------------------------------------------------------------- */
static int ek__mve_conv_direct(const ek_conv_params_t *p)
{
    return p->kernel_h == 1 && p->kernel_w == 1 && !(p->pad_top | p->pad_bottom | p->pad_left | p->pad_right);
}

/* One output pixel's window, K bytes in the order (ky, kx, c), padding as x_zp. */
static void ek__mve_im2col(const ek_conv_params_t *p, const int8_t *input, int32_t oy, int32_t ox, int8x16_t zp,
                           int8_t *col)
{
    const int32_t cin = p->in_c, run = p->kernel_w * cin;
    const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    for (int32_t ky = 0; ky < p->kernel_h; ky++) {
        const int32_t iy = iy0 + ky * p->dilation_h;
        if (iy < 0 || iy >= p->in_h) {
            col = ek__mve_fill(col, zp, run);
            continue;
        }
        const int8_t *row = input + iy * p->in_row_stride;
        if (p->dilation_w == 1) { /* the valid taps of a kernel row are one contiguous run */
            int32_t lo = ix0 < 0 ? -ix0 : 0, hi = p->in_w - ix0 < p->kernel_w ? p->in_w - ix0 : p->kernel_w;
            lo = lo > p->kernel_w ? p->kernel_w : lo;
            if (hi < lo) {
                hi = lo;
            }
            col = ek__mve_fill(col, zp, lo * cin);
            col = ek__mve_copy(col, row + (ix0 + lo) * cin, (hi - lo) * cin);
            col = ek__mve_fill(col, zp, (p->kernel_w - hi) * cin);
            continue;
        }
        for (int32_t kx = 0; kx < p->kernel_w; kx++) {
            const int32_t ix = ix0 + kx * p->dilation_w;
            col = (ix < 0 || ix >= p->in_w) ? ek__mve_fill(col, zp, cin) : ek__mve_copy(col, row + ix * cin, cin);
        }
    }
}

int ek__mve_conv2d_s8(const ek_conv_params_t *p, const int8_t *input, int8_t *output, void *scratch)
{
    const ek__mve_gemv_t g = {p->weights, p->bias, p->requant, p->kernel_h * p->kernel_w * p->in_c, p->out_c,
                              (p->flags & EK_NN_FLAG_FAST_REQUANT) != 0, p->output_offset, p->act_min, p->act_max};
    if (!p->bias) {
        return EK_NN_ERR_ARG; /* the packed bias carries the zero-point term */
    }
    const int direct = ek__mve_conv_direct(p);
    const int8x16_t zp = vdupq_n_s8((int8_t)-p->input_offset);
    int8_t *col = (int8_t *)scratch;
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        int8_t *orow = output + oy * p->out_row_stride;
        const int8_t *irow = input + oy * p->stride_h * p->in_row_stride;
        for (int32_t ox = 0; ox < p->out_w; ox++) {
            const int8_t *x = irow + ox * p->stride_w * p->in_c;
            if (!direct) {
                ek__mve_im2col(p, input, oy, ox, zp, col);
                x = col;
            }
            ek__mve_gemv(&g, x, orow + ox * p->out_c);
        }
    }
    return EK_NN_OK;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Fully connected
 * ------------------------------------------------------------------------------------------------------------- */
int ek__mve_fully_connected_s8(const ek_fc_params_t *p, const int8_t *input, int8_t *output)
{
    const ek__mve_gemv_t g = {p->weights, p->bias, p->requant, p->in_features, p->out_features,
                              (p->flags & EK_NN_FLAG_FAST_REQUANT) != 0, p->output_offset, p->act_min, p->act_max};
    for (int32_t b = 0; b < p->batch; b++, input += p->in_row_stride, output += p->out_row_stride) {
        ek__mve_gemv(&g, input, output);
    }
    return EK_NN_OK;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Depthwise convolution
 * ------------------------------------------------------------------------------------------------------------- */
#define EK_MVE_DW_MAX_TAPS 64 /* kernel_pack keeps larger kernels on the DSP layout */

int ek__mve_depthwise_conv2d_s8(const ek_conv_params_t *p, const int8_t *input, int8_t *output, void *scratch)
{
    const int32_t c_all = p->in_c, taps = p->kernel_h * p->kernel_w, groups = (c_all + 15) / 16;
    if (taps > EK_MVE_DW_MAX_TAPS || !p->bias) {
        return EK_NN_ERR_ARG;
    }
    int8_t *zprow = (int8_t *)scratch; /* what padding taps read: ceil16(C) bytes of x_zp */
    ek__mve_fill(zprow, vdupq_n_s8((int8_t)-p->input_offset), groups * 16);
    const int fast = (p->flags & EK_NN_FLAG_FAST_REQUANT) != 0;
    const int full_range = p->act_min == -128 && p->act_max == 127;
    const int8x16_t lo8 = vdupq_n_s8((int8_t)p->act_min), hi8 = vdupq_n_s8((int8_t)p->act_max);
    const int8_t *tap[EK_MVE_DW_MAX_TAPS];
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        int8_t *orow = output + oy * p->out_row_stride;
        for (int32_t ox = 0; ox < p->out_w; ox++) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            int32_t t = 0;
            for (int32_t ky = 0; ky < p->kernel_h; ky++) {
                const int32_t iy = iy0 + ky * p->dilation_h;
                const int8_t *row = input + iy * p->in_row_stride;
                for (int32_t kx = 0; kx < p->kernel_w; kx++, t++) {
                    const int32_t ix = ix0 + kx * p->dilation_w;
                    tap[t] = (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) ? zprow : row + ix * c_all;
                }
            }
            const int8_t *w = p->weights;
            const int32_t *bias = p->bias, *q = p->requant;
            int8_t *out = orow + ox * c_all;
            for (int32_t c0 = 0; c0 < c_all; c0 += 16, bias += 16, q += 48) {
                const mve_pred16_t pr = vctp8q((uint32_t)(c_all - c0));
                int32x4_t a0 = vld1q_s32(bias), a1 = vld1q_s32(bias + 4), a2 = vld1q_s32(bias + 8),
                          a3 = vld1q_s32(bias + 12);
                t = 0;
                for (; t + 2 <= taps; t += 2, w += 32) {
                    const int8x16_t x0 = vld1q_z_s8(tap[t] + c0, pr), x1 = vld1q_z_s8(tap[t + 1] + c0, pr);
                    const int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16);
                    const int16x8_t e = vaddq_s16(vmullbq_int_s8(x0, w0), vmullbq_int_s8(x1, w1));
                    const int16x8_t o = vaddq_s16(vmulltq_int_s8(x0, w0), vmulltq_int_s8(x1, w1));
                    a0 = vaddq_s32(a0, vmovlbq_s16(e));
                    a1 = vaddq_s32(a1, vmovltq_s16(e));
                    a2 = vaddq_s32(a2, vmovlbq_s16(o));
                    a3 = vaddq_s32(a3, vmovltq_s16(o));
                }
                if (t < taps) {
                    const int8x16_t x0 = vld1q_z_s8(tap[t] + c0, pr), w0 = vld1q_s8(w);
                    const int16x8_t e = vmullbq_int_s8(x0, w0), o = vmulltq_int_s8(x0, w0);
                    a0 = vaddq_s32(a0, vmovlbq_s16(e));
                    a1 = vaddq_s32(a1, vmovltq_s16(e));
                    a2 = vaddq_s32(a2, vmovlbq_s16(o));
                    a3 = vaddq_s32(a3, vmovltq_s16(o));
                    w += 16;
                }
                if (!fast) { /* scalar 64-bit path; lanes in the accumulators' channel order */
                    static const uint8_t order[16] = {0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15};
                    int32_t acc[16];
                    vst1q_s32(acc, a0);
                    vst1q_s32(acc + 4, a1);
                    vst1q_s32(acc + 8, a2);
                    vst1q_s32(acc + 12, a3);
                    for (int32_t i = 0; i < 16; i++) {
                        const int32_t c = c0 + order[i], v = i >> 2, lane = i & 3;
                        if (c < c_all) {
                            out[c] = ek__mve_requant_scalar(acc[i], q[12 * v + lane], q[12 * v + 4 + lane],
                                                            p->output_offset, p->act_min, p->act_max);
                        }
                    }
                    continue;
                }
                a0 = vshlq_s32(vaddq_s32(vmulhq_s32(a0, vld1q_s32(q)), vld1q_s32(q + 4)), vld1q_s32(q + 8));
                a1 = vshlq_s32(vaddq_s32(vmulhq_s32(a1, vld1q_s32(q + 12)), vld1q_s32(q + 16)), vld1q_s32(q + 20));
                a2 = vshlq_s32(vaddq_s32(vmulhq_s32(a2, vld1q_s32(q + 24)), vld1q_s32(q + 28)), vld1q_s32(q + 32));
                a3 = vshlq_s32(vaddq_s32(vmulhq_s32(a3, vld1q_s32(q + 36)), vld1q_s32(q + 40)), vld1q_s32(q + 44));
                const int16x8_t ne = vqmovntq_s32(vqmovnbq_s32(vdupq_n_s16(0), a0), a1);
                const int16x8_t no = vqmovntq_s32(vqmovnbq_s32(vdupq_n_s16(0), a2), a3);
                int8x16_t r = vqmovntq_s16(vqmovnbq_s16(vdupq_n_s8(0), ne), no);
                if (!full_range) {
                    r = vminq_s8(vmaxq_s8(r, lo8), hi8);
                }
                vst1q_p_s8(out + c0, r, pr);
            }
        }
    }
    return EK_NN_OK;
}

#endif /* __ARM_FEATURE_MVE */

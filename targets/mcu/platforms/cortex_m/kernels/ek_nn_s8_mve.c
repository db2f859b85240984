/*
 * ek_nn_s8_mve.c: the Helium (M-profile Vector Extension, MVE) paths of edgekit's int8 kernels, for Cortex-M55 and
 * Cortex-M85. The API, the arithmetic contract and the parameter structs are those of ek_nn_s8.h; ek_nn_s8.c calls
 * these when a layer was packed for Helium (EK_NN_FLAG_MVE, set by targets/mcu/kernel_pack.py with isa="mve").
 * Built without MVE (or with EK_NN_NO_MVE, which the code generator defines when no call is packed for Helium) this
 * file is empty, and a Helium-packed layer is refused (EK_NN_ERR_ARG).
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
 * is not a 1x1 without padding copies the windows of a tile of up to tile_pixels output pixels of one row into
 * scratch first (im2col; a pixel whose window is inside the map as kernel_h runs of 16-byte vector copies); a 1x1
 * reads its pixels in place, a whole output row per call. K need not be a multiple of 16: the last partial vector is
 * a predicated load (VCTP.8), so nothing beyond the data is read and nothing is padded in flash. The block loop is
 * hand-scheduled assembly (ek__mve_blk4; ek__mve_blk4_k16 keeps the block's weights in registers when K <= 16), with
 * the block's bias and requantization vectors loaded once per tile.
 * Weights of a block: per 16 reduction elements [4 channels][16 bytes], then the K % 16 remaining ones as
 * [4 channels][K % 16]; a last block of 1-3 channels is stored as a full one with zero rows after its channels, and
 * the block kernels store only its lanes (a predicated store; before, a C loop per channel took ~50 instructions a
 * pixel and channel: a U-Net's 8 -> 2 output conv 99 a pixel, 26 now).
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
 * then the clamp and a byte store. Depthwise saves the per-channel a: VRSHL by -b (a rounding shift right) of the
 * VMULH result, then + out_zp (one scalar for all lanes), is the same value; its saturating narrows are the int8
 * clamp. Layers whose scales do not allow the vector form keep the scalar 64-bit path.
 */
#include "ek_nn_s8.h"

#if defined(__ARM_FEATURE_MVE) && !defined(EK_NN_PORTABLE) && !EK_NN_NO_MVE
#include <arm_mve.h>

/* 1: the block kernels' loops for a last block of 1-3 channels left out (pipeline.firmware_cflags defines it when no
 * call has one; such a block then takes the C loop, the same integers) */
#ifndef EK_NN_NO_MVE_PART
#define EK_NN_NO_MVE_PART 0
#endif

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
 * GEMM: n input vectors x + i * x_step (K bytes each) times every output channel, outputs at out + i * out_step.
 * Blocks of 4 channels outer (their weights' addresses, bias and requantization vectors loaded once), vectors inner.
 * ------------------------------------------------------------------------------------------------------------- */
typedef struct {
    const int8_t *weights;
    const int32_t *bias;    /* [ceil4(out_c)], zero-point term folded in */
    const int32_t *requant; /* [ceil4(out_c) / 4][3][4]: {mult, a, -b} (vector form) or {mult, shift, 0} */
    int32_t k, out_c, fast, out_zp, act_min, act_max;
} ek__mve_gemm_t;

static inline __attribute__((always_inline)) int32x4_t ek__mve_vec4(int32_t a0, int32_t a1, int32_t a2, int32_t a3)
{
    int32x4_t v = vdupq_n_s32(a0);
    v = vsetq_lane_s32(a1, v, 1);
    v = vsetq_lane_s32(a2, v, 2);
    return vsetq_lane_s32(a3, v, 3);
}

/* Requantize 4 accumulators of channels whose table row is q and store nc (1-4) bytes. */
static inline __attribute__((always_inline)) void ek__mve_out4(const ek__mve_gemm_t *g, int32x4_t acc,
                                                               const int32_t *q, int32x4_t mq, int32x4_t aq,
                                                               int32x4_t bq, int32x4_t lo, int32x4_t hi,
                                                               int8_t *out, int32_t nc)
{
    if (g->fast) {
        int32x4_t v = vshlq_s32(vaddq_s32(vmulhq_s32(acc, mq), aq), bq);
        v = vminq_s32(vmaxq_s32(v, lo), hi);
        if (nc == 4) {
            vstrbq_s32(out, v);
        } else {
            vstrbq_p_s32(out, v, vctp32q((uint32_t)nc));
        }
        return;
    }
    int32_t a[4];
    vst1q_s32(a, acc);
    for (int32_t c = 0; c < nc; c++) {
        out[c] = ek__mve_requant_scalar(a[c], q[c], q[4 + c], g->out_zp, g->act_min, g->act_max);
    }
}

/* Arguments of the hand-scheduled block kernel below (offsets in its comments). */
typedef struct {
    const int8_t *x;   /*  0: first input vector */
    int32_t x_step;    /*  4: bytes from one input vector to the next */
    int32_t n;         /*  8: input vectors, >= 1 */
    int8_t *out;       /* 12: first output of the block */
    int32_t out_step;  /* 16: bytes from one output pixel to the next */
    const int8_t *w;   /* 20: the block's weights */
    int32_t chunks;    /* 24: K / 16 */
    int32_t rem;       /* 28: K % 16 */
    int32_t bias[4];   /* 32 */
    const int32_t *q;  /* 48: {mult[4], a[4], -b[4]} */
    int32_t act_min;   /* 52 */
    int32_t act_max;   /* 56 */
    uint32_t part;     /* 60: the _part kernels (a last block of nc = 1-3 channels): the VPR.P0 mask of its lanes,
                        * (1 << 4 nc) - 1 (as VCTP.32 nc sets it), so that only they are stored */
} ek__mve_blk_t;

void ek__mve_blk4(const ek__mve_blk_t *a);
void ek__mve_blk4_part(const ek__mve_blk_t *a); /* a last block of 1-3 channels: only its lanes stored */

/*
 * One block of 4 output channels over n input vectors, vector form of the requantization. r0/r2/r4/r6 the four
 * accumulators (VMLAVA takes even registers), r1 the input cursor, r3 the weight cursor, r5 the output (VSTRB.32
 * takes a low register), r7 the current input vector, r8 vectors left, r9 the arguments, r10/r12 the input/output
 * steps, r11 K / 16, lr the low-overhead loop (WLS/LE) over 16 reduction elements: 1 input load, 4 weight loads,
 * 4 VMLAVA. q4-q6 hold the requantization vectors, q7/q3 the clamp, q2 the 4 results.
 */
__asm__(
    "   .syntax unified\n"
    "   .macro EK_BLK4_LOOP tail, part\n" /* every input vector of the block */
    "ekpx\\@:\n"
    "   ldrd    r0, r2, [r9, #32]\n"
    "   ldrd    r4, r6, [r9, #40]\n"
    "   mov     r1, r7\n"
    "   ldr     r3, [r9, #20]\n"
    "   wls     lr, r11, ekrem\\@\n"
    "ekk\\@:\n"
    "   vldrb.u8 q0, [r1], #16\n"
    "   vldrb.u8 q1, [r3], #16\n"
    "   vmlava.s8 r0, q0, q1\n"
    "   vldrb.u8 q1, [r3], #16\n"
    "   vmlava.s8 r2, q0, q1\n"
    "   vldrb.u8 q1, [r3], #16\n"
    "   vmlava.s8 r4, q0, q1\n"
    "   vldrb.u8 q1, [r3], #16\n"
    "   vmlava.s8 r6, q0, q1\n"
    "   le      lr, ekk\\@\n"
    "ekrem\\@:\n"
    "   .if \\tail\n"
    "   ldr     lr, [r9, #28]\n"
    "   vctp.8  lr\n"
    "   vpstt\n"
    "   vldrbt.u8 q0, [r1]\n"
    "   vldrbt.u8 q1, [r3]\n"
    "   vmlava.s8 r0, q0, q1\n"
    "   add     r3, lr\n"
    "   vpst\n"
    "   vldrbt.u8 q1, [r3]\n"
    "   vmlava.s8 r2, q0, q1\n"
    "   add     r3, lr\n"
    "   vpst\n"
    "   vldrbt.u8 q1, [r3]\n"
    "   vmlava.s8 r4, q0, q1\n"
    "   add     r3, lr\n"
    "   vpst\n"
    "   vldrbt.u8 q1, [r3]\n"
    "   vmlava.s8 r6, q0, q1\n"
    "   .endif\n"
    "   vmov    q2[2], q2[0], r0, r4\n"
    "   vmov    q2[3], q2[1], r2, r6\n"
    "   vmulh.s32 q2, q2, q4\n"
    "   vadd.i32 q2, q2, q5\n"
    "   vshl.s32 q2, q2, q6\n"
    "   vmax.s32 q2, q2, q7\n"
    "   vmin.s32 q2, q2, q3\n"
    "   .if \\part\n"                   /* a last block of 1-3 channels: only its lanes (P0 from the arguments) */
    "   vldr    P0, [r9, #60]\n"
    "   vpst\n"
    "   vstrbt.32 q2, [r5]\n"
    "   .else\n"
    "   vstrb.32 q2, [r5]\n"
    "   .endif\n"
    "   add     r5, r12\n"
    "   add     r7, r10\n"
    "   subs    r8, #1\n"
    "   bne     ekpx\\@\n"
    "   .endm\n"
    "   .macro EK_BLK4_FN name, part\n"  /* the function: its loops store 4 lanes, or (part) a last block's */
    "   .pushsection .text.\\name, \"ax\", %progbits\n"
    "   .balign 4\n"
    "   .global \\name\n"
    "   .type \\name, %function\n"
    "   .thumb_func\n"
    "\\name:\n"
    "   push    {r4-r11, lr}\n"
    "   vpush   {d8-d15}\n"
    "   mov     r9, r0\n"
    "   ldr     r10, [r9, #48]\n"
    "   vldrw.u32 q4, [r10]\n"
    "   vldrw.u32 q5, [r10, #16]\n"
    "   vldrw.u32 q6, [r10, #32]\n"
    "   ldr     r10, [r9, #52]\n"
    "   vdup.32 q7, r10\n"
    "   ldr     r10, [r9, #56]\n"
    "   vdup.32 q3, r10\n"
    "   ldr     r7, [r9, #0]\n"
    "   ldr     r10, [r9, #4]\n"
    "   ldr     r8, [r9, #8]\n"
    "   ldr     r5, [r9, #12]\n"
    "   ldr     r12, [r9, #16]\n"
    "   ldr     r11, [r9, #24]\n"
    "   ldr     lr, [r9, #28]\n"          /* K % 16: the loop with or without the predicated tail */
    "   cmp     lr, #0\n"
    "   beq     5f\n"
    "   EK_BLK4_LOOP 1, \\part\n"
    "   b       6f\n"
    "5: EK_BLK4_LOOP 0, \\part\n"
    "6:\n"
    "   vpop    {d8-d15}\n"
    "   pop     {r4-r11, pc}\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
    "   EK_BLK4_FN ek__mve_blk4, 0\n"
#if !EK_NN_NO_MVE_PART
    "   EK_BLK4_FN ek__mve_blk4_part, 1\n"
#endif
    "   .purgem EK_BLK4_FN\n"
    "   .purgem EK_BLK4_LOOP\n");

void ek__mve_blk4_k16(const ek__mve_blk_t *a);
void ek__mve_blk4_k16_part(const ek__mve_blk_t *a); /* a last block of 1-3 channels: only its lanes stored */

/*
 * The same for K <= 16 (one vector per channel): the block's four weight vectors stay in q0-q3, each input vector is
 * one predicated load (VCTP.8 K once per call) and four VMLAVA; q4 the input, then the requantization vectors in turn,
 * q5 the results, q6/q7 the clamp. r0/r2/r4/r6 accumulators, r1 input, r3 input step, r5 output, r7 output step,
 * r8 vectors left, r9 the arguments, r10 the requantization table.
 */
__asm__(
    "   .syntax unified\n"
    "   .macro EK_K16_LOOP part\n"
    "ekq\\@:\n"
    "   ldrd    r0, r2, [r9, #32]\n"
    "   ldrd    r4, r6, [r9, #40]\n"
    "   .if \\part\n"                   /* (P0 holds the store's lanes after the last pixel) */
    "   vctp.8  r11\n"
    "   .endif\n"
    "   vpst\n"
    "   vldrbt.u8 q4, [r1]\n"
    "   vmlava.s8 r0, q4, q0\n"
    "   vmlava.s8 r2, q4, q1\n"
    "   vmlava.s8 r4, q4, q2\n"
    "   vmlava.s8 r6, q4, q3\n"
    "   vmov    q5[2], q5[0], r0, r4\n"
    "   vmov    q5[3], q5[1], r2, r6\n"
    "   vldrw.u32 q4, [r10]\n"
    "   vmulh.s32 q5, q5, q4\n"
    "   vldrw.u32 q4, [r10, #16]\n"
    "   vadd.i32 q5, q5, q4\n"
    "   vldrw.u32 q4, [r10, #32]\n"
    "   vshl.s32 q5, q5, q4\n"
    "   vmax.s32 q5, q5, q6\n"
    "   vmin.s32 q5, q5, q7\n"
    "   .if \\part\n"                   /* a last block of 1-3 channels: only its lanes */
    "   vldr    P0, [r9, #60]\n"
    "   vpst\n"
    "   vstrbt.32 q5, [r5]\n"
    "   .else\n"
    "   vstrb.32 q5, [r5]\n"
    "   .endif\n"
    "   add     r1, r3\n"
    "   add     r5, r7\n"
    "   subs    r8, #1\n"
    "   bne     ekq\\@\n"
    "   .endm\n"
    "   .macro EK_K16_FN name, part\n"
    "   .pushsection .text.\\name, \"ax\", %progbits\n"
    "   .balign 4\n"
    "   .global \\name\n"
    "   .type \\name, %function\n"
    "   .thumb_func\n"
    "\\name:\n"
    "   push    {r4-r11, lr}\n"
    "   vpush   {d8-d15}\n"
    "   mov     r9, r0\n"
    "   ldr     r11, [r9, #28]\n"         /* K = 16 * chunks + rem */
    "   ldr     r12, [r9, #24]\n"
    "   add     r11, r11, r12, lsl #4\n"
    "   ldr     r3, [r9, #20]\n"          /* weights of channel i at w + i * K */
    "   vctp.8  r11\n"
    "   vpst\n"
    "   vldrbt.u8 q0, [r3]\n"
    "   add     r3, r11\n"
    "   vpst\n"
    "   vldrbt.u8 q1, [r3]\n"
    "   add     r3, r11\n"
    "   vpst\n"
    "   vldrbt.u8 q2, [r3]\n"
    "   add     r3, r11\n"
    "   vpst\n"
    "   vldrbt.u8 q3, [r3]\n"
    "   ldr     r10, [r9, #52]\n"
    "   vdup.32 q6, r10\n"
    "   ldr     r10, [r9, #56]\n"
    "   vdup.32 q7, r10\n"
    "   ldr     r10, [r9, #48]\n"
    "   ldr     r1, [r9, #0]\n"
    "   ldr     r3, [r9, #4]\n"
    "   ldr     r8, [r9, #8]\n"
    "   ldr     r5, [r9, #12]\n"
    "   ldr     r7, [r9, #16]\n"
    "   EK_K16_LOOP \\part\n"
    "   vpop    {d8-d15}\n"
    "   pop     {r4-r11, pc}\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
    "   EK_K16_FN ek__mve_blk4_k16, 0\n"
#if !EK_NN_NO_MVE_PART
    "   EK_K16_FN ek__mve_blk4_k16_part, 1\n"
#endif
    "   .purgem EK_K16_FN\n"
    "   .purgem EK_K16_LOOP\n");

/* One block in C (tables without the vector form: the same dot products, the scalar 64-bit requantization; or a last
 * block of nc = 1-3 channels where its block kernels were left out), nc of its 4 channels stored. */
static void ek__mve_block_c(const ek__mve_gemm_t *g, const int8_t *x, int32_t x_step, int32_t n, int8_t *out,
                            int32_t out_step, const int8_t *w, const int32_t *bias, const int32_t *q, int32_t nc)
{
    const int32_t k = g->k, chunks = k >> 4, rem = k & 15;
    const mve_pred16_t prem = vctp8q((uint32_t)rem);
    const int32x4_t lo = vdupq_n_s32(g->act_min), hi = vdupq_n_s32(g->act_max);
    const int32x4_t mq = vld1q_s32(q), aq = vld1q_s32(q + 4), bq = vld1q_s32(q + 8);
    const int32_t b0 = bias[0], b1 = bias[1], b2 = bias[2], b3 = bias[3];
    const int8_t *wt = w + 64 * chunks; /* the K % 16 remaining elements, [4][rem] */
    for (int32_t i = 0; i < n; i++, x += x_step, out += out_step) {
        int32_t a0 = b0, a1 = b1, a2 = b2, a3 = b3;
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
            a0 = vmladavaq_s8(a0, u, vld1q_z_s8(wt, prem));
            a1 = vmladavaq_s8(a1, u, vld1q_z_s8(wt + rem, prem));
            a2 = vmladavaq_s8(a2, u, vld1q_z_s8(wt + 2 * rem, prem));
            a3 = vmladavaq_s8(a3, u, vld1q_z_s8(wt + 3 * rem, prem));
        }
        ek__mve_out4(g, ek__mve_vec4(a0, a1, a2, a3), q, mq, aq, bq, lo, hi, out, nc);
    }
}

/* One block on the asm kernels (the vector form of the requantization): ``part`` 0, 4 channels; else a last block's
 * VPR.P0 lane mask (its _part kernels). Inlined: direct calls, K's chunks from the caller's loop. */
static inline __attribute__((always_inline)) void ek__mve_block_asm(const ek__mve_gemm_t *g, const int8_t *x,
                                                                    int32_t x_step, int32_t n, int8_t *out,
                                                                    int32_t out_step, const int8_t *w,
                                                                    int32_t chunks, int32_t rem, const int32_t *bias,
                                                                    const int32_t *q, uint32_t part)
{
    const ek__mve_blk_t a = {x, x_step, n, out, out_step, w, chunks, rem, {bias[0], bias[1], bias[2], bias[3]},
                             q, g->act_min, g->act_max, part};
#if !EK_NN_NO_MVE_PART
    if (part) {
        if (g->k <= 16) {
            ek__mve_blk4_k16_part(&a);
        } else {
            ek__mve_blk4_part(&a);
        }
        return;
    }
#endif
    if (g->k <= 16) {
        ek__mve_blk4_k16(&a);
    } else {
        ek__mve_blk4(&a);
    }
}

static void ek__mve_gemm(const ek__mve_gemm_t *g, const int8_t *x, int32_t x_step, int32_t n, int8_t *out,
                         int32_t out_step)
{
    const int32_t k = g->k, chunks = k >> 4, rem = k & 15;
    const int8_t *w = g->weights;
    const int32_t *bias = g->bias, *q = g->requant;
    int32_t c = 0;
    for (; c + 4 <= g->out_c; c += 4, w += 4 * k, bias += 4, q += 12, out += 4) {
        if (g->fast) {
            ek__mve_block_asm(g, x, x_step, n, out, out_step, w, chunks, rem, bias, q, 0);
        } else {
            ek__mve_block_c(g, x, x_step, n, out, out_step, w, bias, q, 4);
        }
    }
    if (c < g->out_c) { /* a last block of 1-3 channels (its weights a full block's, zero rows after them) */
        const int32_t nc = g->out_c - c;
        if (g->fast && !EK_NN_NO_MVE_PART) {
            ek__mve_block_asm(g, x, x_step, n, out, out_step, w, chunks, rem, bias, q, (1u << (4 * nc)) - 1u);
        } else {
            ek__mve_block_c(g, x, x_step, n, out, out_step, w, bias, q, nc);
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Convolution
 * ------------------------------------------------------------------------------------------------------------- */
static int ek__mve_conv_direct(const ek_conv_params_t *p)
{
    return p->kernel_h == 1 && p->kernel_w == 1 && !(p->pad_top | p->pad_bottom | p->pad_left | p->pad_right);
}

/* A direct 1x1 at stride 1 whose input and output rows follow each other (a whole map, not a patch tile's window):
 * every pixel is in_c bytes after the last. */
static int ek__mve_conv_contiguous(const ek_conv_params_t *p)
{
    return p->stride_h == 1 && p->stride_w == 1 && p->in_row_stride == p->in_w * p->in_c &&
           p->out_row_stride == p->out_w * p->out_c && p->out_w == p->in_w;
}

/* A window inside the map: ``rows`` runs of 16 * full + rem bytes, ``step`` apart in the input, one after the other
 * in ``dst``. */
static inline void ek__mve_copy_runs(int8_t *dst, const int8_t *src, int32_t rows, int32_t step, int32_t full,
                                     int32_t rem, mve_pred16_t pred)
{
    for (int32_t ky = 0; ky < rows; ky++, src += step) {
        const int8_t *sp = src;
        for (int32_t j = 0; j < full; j++, sp += 16, dst += 16) {
            vst1q_s8(dst, vld1q_s8(sp));
        }
        if (rem) {
            vst1q_p_s8(dst, vld1q_z_s8(sp, pred), pred);
            dst += rem;
        }
    }
}

/* An im2col conv whose output rows are one pixel each, stored one after the other (a Conv1d's [L, 1, C] map). */
static int ek__mve_conv_column(const ek_conv_params_t *p)
{
    return p->out_w == 1 && p->out_row_stride == p->out_c;
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
    const int32_t k = p->kernel_h * p->kernel_w * p->in_c;
    const ek__mve_gemm_t g = {p->weights, p->bias, p->requant, k, p->out_c,
                              (p->flags & EK_NN_FLAG_FAST_REQUANT) != 0, p->output_offset, p->act_min, p->act_max};
    if (!p->bias || p->tile_pixels < 1) {
        return EK_NN_ERR_ARG; /* the packed bias carries the zero-point term */
    }
    const int direct = ek__mve_conv_direct(p);
    if (direct && ek__mve_conv_contiguous(p)) { /* a 1x1 over whole rows: the map is one GEMM (a Conv1d's [L, 1, C]
                                                * map is L rows of one pixel: one call instead of L) */
        ek__mve_gemm(&g, input, p->in_c, p->out_h * p->out_w, output, p->out_c);
        return EK_NN_OK;
    }
    const int8x16_t zp = vdupq_n_s8((int8_t)-p->input_offset);
    int8_t *col = (int8_t *)scratch;
    const int32_t span_h = (p->kernel_h - 1) * p->dilation_h, run = p->kernel_w * p->in_c;
    const int32_t row_step = p->dilation_h * p->in_row_stride, run_full = run >> 4, run_rem = run & 15;
    const mve_pred16_t run_pred = vctp8q((uint32_t)run_rem);
    if (ek__mve_conv_column(p)) { /* one output pixel a row (a Conv1d's [L, 1, C] map): tiles across the rows, not a
                                   * GEMM call per pixel */
        for (int32_t oy0 = 0; oy0 < p->out_h; oy0 += p->tile_pixels) {
            const int32_t n = p->out_h - oy0 < p->tile_pixels ? p->out_h - oy0 : p->tile_pixels;
            for (int32_t i = 0; i < n; i++) {
                const int32_t iy0 = (oy0 + i) * p->stride_h - p->pad_top, ix0 = -p->pad_left;
                if (p->dilation_w == 1 && iy0 >= 0 && iy0 + span_h < p->in_h && ix0 >= 0 &&
                    ix0 + p->kernel_w <= p->in_w) { /* inside: kernel_h contiguous runs */
                    ek__mve_copy_runs(col + i * k, input + iy0 * p->in_row_stride + ix0 * p->in_c, p->kernel_h,
                                      row_step, run_full, run_rem, run_pred);
                    continue;
                }
                ek__mve_im2col(p, input, oy0 + i, 0, zp, col + i * k);
            }
            ek__mve_gemm(&g, col, k, n, output + oy0 * p->out_c, p->out_c);
        }
        return EK_NN_OK;
    }
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        int8_t *orow = output + oy * p->out_row_stride;
        if (direct) { /* a 1x1 reads each pixel in place: the whole output row is one GEMM */
            ek__mve_gemm(&g, input + oy * p->stride_h * p->in_row_stride, p->stride_w * p->in_c, p->out_w, orow,
                         p->out_c);
            continue;
        }
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        const int rows_in = p->dilation_w == 1 && iy0 >= 0 && iy0 + span_h < p->in_h;
        for (int32_t ox0 = 0; ox0 < p->out_w; ox0 += p->tile_pixels) { /* tiles of pixels of one output row */
            const int32_t n = p->out_w - ox0 < p->tile_pixels ? p->out_w - ox0 : p->tile_pixels;
            for (int32_t i = 0; i < n; i++) {
                const int32_t ix0 = (ox0 + i) * p->stride_w - p->pad_left;
                if (rows_in && ix0 >= 0 && ix0 + p->kernel_w <= p->in_w) { /* inside: kernel_h contiguous runs */
                    ek__mve_copy_runs(col + i * k, input + iy0 * p->in_row_stride + ix0 * p->in_c, p->kernel_h,
                                      row_step, run_full, run_rem, run_pred);
                    continue;
                }
                ek__mve_im2col(p, input, oy, ox0 + i, zp, col + i * k);
            }
            ek__mve_gemm(&g, col, k, n, orow + ox0 * p->out_c, p->out_c);
        }
    }
    return EK_NN_OK;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Fully connected
 * ------------------------------------------------------------------------------------------------------------- */
int ek__mve_fully_connected_s8(const ek_fc_params_t *p, const int8_t *input, int8_t *output)
{
    const ek__mve_gemm_t g = {p->weights, p->bias, p->requant, p->in_features, p->out_features,
                              (p->flags & EK_NN_FLAG_FAST_REQUANT) != 0, p->output_offset, p->act_min, p->act_max};
    ek__mve_gemm(&g, input, p->in_row_stride, p->batch, output, p->out_row_stride);
    return EK_NN_OK;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Depthwise convolution
 * ------------------------------------------------------------------------------------------------------------- */
#define EK_MVE_DW_MAX_TAPS 64 /* kernel_pack keeps larger kernels on the DSP layout */

/* Arguments of the hand-scheduled depthwise pixel kernel below (offsets in its comments). */
typedef struct {
    const void *taps;         /*  0: per tap a word added to base: pointers (base 0) or offsets (base a pixel) */
    int32_t pairs;            /*  4: taps / 2 */
    int32_t odd;              /*  8: taps % 2 */
    const int8_t *w;          /* 12: [groups][taps][16] */
    const int32_t *bias;      /* 16: [groups][16], lane order */
    const int32_t *q;         /* 20: [groups][4][2][4] {mult, -b}, lane order */
    int8_t *out;              /* 24: the pixel's channel 0 */
    int32_t channels;         /* 28 */
    int32_t out_zp;           /* 32 */
    int32_t act_min;          /* 36 */
    int32_t act_max;          /* 40 */
    int32_t full_range;       /* 44: act_min == -128 && act_max == 127: the saturating narrows are the clamp */
    const int8_t *base;       /* 48: the window's corner pixel with offsets, NULL with pointers */
} ek__mve_dw_t;

void ek__mve_dw_px(const ek__mve_dw_t *a);

/*
 * One output pixel, all channels, 16 at a time (the last group predicated by VCTP.8 on the channels left). q0-q3
 * the accumulators, q4/q5 input and weights, q6/q7 the int16 sums of a pair of taps (even / odd channels); r1 the
 * base plus the group's byte offset, r2 the tap cursor (an offset from the window's corner pixel for a pixel whose
 * taps are all inside the input, else a pointer), r3/r11 the pair's input addresses, r4 weights, r5 bias, r6 the table,
 * r7 the output, r8 channels left, r9 the arguments, lr the loop over pairs (WLS/LE). Per pair of taps: 2 tap
 * loads and 2 adds, 3 input loads (the second tap's reloaded after its even products overwrote it), 2 weight loads,
 * 4 VMULL, 2 int16 adds, 4 VMOVL + 4 VADD into the accumulators; per group: the bias, VMULH/VRSHL/+out_zp per
 * vector (the table's two vectors each), three pairs of saturating narrows back to channel order, a predicated store.
 */
__asm__(
    "   .syntax unified\n"
    "   .macro EK_DW_LD dst, addr, pred\n" /* an input load, predicated on the last, partial group */
    "   .ifnb \\pred\n"
    "   vpst\n"
    "   vldrbt.u8 \\dst, [\\addr]\n"
    "   .else\n"
    "   vldrb.u8 \\dst, [\\addr]\n"
    "   .endif\n"
    "   .endm\n"
    "   .macro EK_DW_WIDEN\n"             /* q0..q3 += widened q6 (even channels), q7 (odd) */
    "   vmovlb.s16 q4, q6\n"
    "   vadd.i32 q0, q0, q4\n"
    "   vmovlt.s16 q4, q6\n"
    "   vadd.i32 q1, q1, q4\n"
    "   vmovlb.s16 q4, q7\n"
    "   vadd.i32 q2, q2, q4\n"
    "   vmovlt.s16 q4, q7\n"
    "   vadd.i32 q3, q3, q4\n"
    "   .endm\n"
    "   .macro EK_DW_TAPS pred\n"         /* all taps of the group into q0..q3 */
    "   wls     lr, r10, 3f\n"
    "2: ldr     r3, [r2], #4\n"
    "   ldr     r11, [r2], #4\n"
    "   add     r3, r1\n"
    "   add     r11, r1\n"
    "   EK_DW_LD q4, r3, \\pred\n"
    "   vldrb.u8 q5, [r4], #16\n"
    "   vmullb.s8 q6, q4, q5\n"
    "   vmullt.s8 q7, q4, q5\n"
    "   EK_DW_LD q4, r11, \\pred\n"
    "   vldrb.u8 q5, [r4], #16\n"
    "   vmullb.s8 q4, q4, q5\n"
    "   vadd.i16 q6, q6, q4\n"
    "   EK_DW_LD q4, r11, \\pred\n"
    "   vmullt.s8 q4, q4, q5\n"
    "   vadd.i16 q7, q7, q4\n"
    "   EK_DW_WIDEN\n"
    "   le      lr, 2b\n"
    "3: ldr     r10, [r9, #8]\n"
    "   cmp     r10, #0\n"
    "   beq     4f\n"
    "   ldr     r3, [r2]\n"
    "   add     r3, r1\n"
    "   EK_DW_LD q4, r3, \\pred\n"
    "   vldrb.u8 q5, [r4], #16\n"
    "   vmullb.s8 q6, q4, q5\n"
    "   vmullt.s8 q7, q4, q5\n"
    "   EK_DW_WIDEN\n"
    "4:\n"
    "   .endm\n"
    "   .macro EK_DW_RQ acc, off\n"      /* floor(acc * mult / 2^32), rounding shift right by b, + out_zp */
    "   vldrw.u32 q4, [r6, #\\off]\n"
    "   vmulh.s32 \\acc, \\acc, q4\n"
    "   vldrw.u32 q4, [r6, #\\off + 16]\n"
    "   vrshl.s32 \\acc, \\acc, q4\n"
    "   vadd.i32 \\acc, \\acc, r10\n"
    "   .endm\n"
    "   .pushsection .text.ek__mve_dw_px, \"ax\", %progbits\n"
    "   .balign 4\n"
    "   .global ek__mve_dw_px\n"
    "   .type ek__mve_dw_px, %function\n"
    "   .thumb_func\n"
    "ek__mve_dw_px:\n"
    "   push    {r4-r11, lr}\n"
    "   vpush   {d8-d15}\n"
    "   mov     r9, r0\n"
    "   ldr     r4, [r9, #12]\n"
    "   ldr     r5, [r9, #16]\n"
    "   ldr     r6, [r9, #20]\n"
    "   ldr     r7, [r9, #24]\n"
    "   ldr     r8, [r9, #28]\n"
    "   ldr     r1, [r9, #48]\n"          /* base the tap words are added to (+ 16 per group) */
    "1: vldrw.u32 q0, [r5]\n"             /* next group of 16 channels: accumulators = bias */
    "   vldrw.u32 q1, [r5, #16]\n"
    "   vldrw.u32 q2, [r5, #32]\n"
    "   vldrw.u32 q3, [r5, #48]\n"
    "   adds    r5, #64\n"
    "   ldr     r2, [r9, #0]\n"
    "   ldr     r10, [r9, #4]\n"
    "   cmp     r8, #16\n"
    "   blt     6f\n"
    "   EK_DW_TAPS\n"
    "   b       7f\n"
    "6: vctp.8  r8\n"
    "   EK_DW_TAPS t\n"
    "7: ldr     r10, [r9, #32]\n"
    "   EK_DW_RQ q0, 0\n"
    "   EK_DW_RQ q1, 32\n"
    "   EK_DW_RQ q2, 64\n"
    "   EK_DW_RQ q3, 96\n"
    "   adds    r6, #128\n"
    "   vqmovnb.s32 q4, q0\n"             /* channels 0, 2, .., 14 as int16 */
    "   vqmovnt.s32 q4, q1\n"
    "   vqmovnb.s32 q5, q2\n"             /* channels 1, 3, .., 15 */
    "   vqmovnt.s32 q5, q3\n"
    "   vqmovnb.s16 q6, q4\n"             /* all 16 in order, saturated to int8 */
    "   vqmovnt.s16 q6, q5\n"
    "   ldr     r10, [r9, #44]\n"
    "   cmp     r10, #0\n"
    "   bne     5f\n"
    "   ldr     r10, [r9, #36]\n"
    "   vdup.8  q7, r10\n"
    "   vmax.s8 q6, q6, q7\n"
    "   ldr     r10, [r9, #40]\n"
    "   vdup.8  q7, r10\n"
    "   vmin.s8 q6, q6, q7\n"
    "5: cmp     r8, #16\n"
    "   blt     8f\n"
    "   vstrb.8 q6, [r7]\n"
    "   adds    r7, #16\n"
    "   adds    r1, #16\n"
    "   subs    r8, #16\n"
    "   bgt     1b\n"
    "   b       9f\n"
    "8: vpst\n"                           /* the last, partial group (VPR still holds its VCTP) */
    "   vstrbt.8 q6, [r7]\n"
    "9: vpop    {d8-d15}\n"
    "   pop     {r4-r11, pc}\n"
    "   .size ek__mve_dw_px, . - ek__mve_dw_px\n"
    "   .popsection\n"
    "   .purgem EK_DW_LD\n"
    "   .purgem EK_DW_WIDEN\n"
    "   .purgem EK_DW_TAPS\n"
    "   .purgem EK_DW_RQ\n");

/* The 64-bit path for tables without the vector form ({mult, shift} per lane), same accumulation. */
static void ek__mve_dw_group_scalar(const ek_conv_params_t *p, const int8_t *const *tap, int32_t taps, int32_t c0,
                                    const int8_t *w, const int32_t *bias, const int32_t *q, int8_t *out,
                                    mve_pred16_t pr)
{
    static const uint8_t order[16] = {0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15};
    int32x4_t a0 = vld1q_s32(bias), a1 = vld1q_s32(bias + 4), a2 = vld1q_s32(bias + 8), a3 = vld1q_s32(bias + 12);
    for (int32_t t = 0; t < taps; t++, w += 16) {
        const int8x16_t x0 = vld1q_z_s8(tap[t] + c0, pr), w0 = vld1q_s8(w);
        const int16x8_t e = vmullbq_int_s8(x0, w0), o = vmulltq_int_s8(x0, w0);
        a0 = vaddq_s32(a0, vmovlbq_s16(e));
        a1 = vaddq_s32(a1, vmovltq_s16(e));
        a2 = vaddq_s32(a2, vmovlbq_s16(o));
        a3 = vaddq_s32(a3, vmovltq_s16(o));
    }
    int32_t acc[16];
    vst1q_s32(acc, a0);
    vst1q_s32(acc + 4, a1);
    vst1q_s32(acc + 8, a2);
    vst1q_s32(acc + 12, a3);
    for (int32_t i = 0; i < 16; i++) {
        const int32_t c = c0 + order[i], v = i >> 2, lane = i & 3;
        if (c < p->in_c) {
            out[c] = ek__mve_requant_scalar(acc[i], q[8 * v + lane], q[8 * v + 4 + lane], p->output_offset,
                                            p->act_min, p->act_max);
        }
    }
}

int ek__mve_depthwise_conv2d_s8(const ek_conv_params_t *p, const int8_t *input, int8_t *output, void *scratch)
{
    const int32_t c_all = p->in_c, taps = p->kernel_h * p->kernel_w;
    if (taps > EK_MVE_DW_MAX_TAPS || !p->bias) {
        return EK_NN_ERR_ARG;
    }
    int8_t *zprow = (int8_t *)scratch; /* what padding taps read: ceil16(C) bytes of x_zp */
    ek__mve_fill(zprow, vdupq_n_s8((int8_t)-p->input_offset), (c_all + 15) & ~15);
    const int fast = (p->flags & EK_NN_FLAG_FAST_REQUANT) != 0;
    const int8_t *tap[EK_MVE_DW_MAX_TAPS];
    int32_t rel[EK_MVE_DW_MAX_TAPS]; /* tap offsets from the window's corner pixel */
    for (int32_t ky = 0, t = 0; ky < p->kernel_h; ky++) {
        for (int32_t kx = 0; kx < p->kernel_w; kx++, t++) {
            rel[t] = ky * p->dilation_h * p->in_row_stride + kx * p->dilation_w * c_all;
        }
    }
    const int full_range = p->act_min == -128 && p->act_max == 127;
    ek__mve_dw_t d = {tap, taps / 2, taps % 2, p->weights, p->bias, p->requant, 0, c_all, p->output_offset,
                      p->act_min, p->act_max, full_range, 0};
    const int32_t span_h = (p->kernel_h - 1) * p->dilation_h, span_w = (p->kernel_w - 1) * p->dilation_w;
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        const int rows_in = iy0 >= 0 && iy0 + span_h < p->in_h;
        int8_t *orow = output + oy * p->out_row_stride;
        for (int32_t ox = 0; ox < p->out_w; ox++) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            const int inside = rows_in && ix0 >= 0 && ix0 + span_w < p->in_w;
            if (inside && fast) { /* every tap inside the input: offsets from the corner pixel */
                d.taps = rel;
                d.base = input + iy0 * p->in_row_stride + ix0 * c_all;
                d.out = orow + ox * c_all;
                ek__mve_dw_px(&d);
                continue;
            }
            for (int32_t ky = 0, t = 0; ky < p->kernel_h; ky++) {
                const int32_t iy = iy0 + ky * p->dilation_h;
                for (int32_t kx = 0; kx < p->kernel_w; kx++, t++) {
                    const int32_t ix = ix0 + kx * p->dilation_w;
                    tap[t] = (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w)
                                 ? zprow : input + iy * p->in_row_stride + ix * c_all;
                }
            }
            int8_t *out = orow + ox * c_all;
            if (fast) {
                d.taps = tap;
                d.base = 0;
                d.out = out;
                ek__mve_dw_px(&d);
                continue;
            }
            const int8_t *w = p->weights;
            const int32_t *bias = p->bias, *q = p->requant;
            for (int32_t c0 = 0; c0 < c_all; c0 += 16, bias += 16, q += 32, w += 16 * taps) {
                ek__mve_dw_group_scalar(p, tap, taps, c0, w, bias, q, out, vctp8q((uint32_t)(c_all - c0)));
            }
        }
    }
    return EK_NN_OK;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Elementwise add. With m = m_hi * 2^15 + m_lo (both multipliers), acc = 2^15 * H + L where H = A m_hi + B m'_hi
 * and L = A m_lo + B m'_lo fit int32 (|A|, |B| <= 255, m_hi < 2^16, m_lo < 2^15), and for 16 <= shift <= 46
 * floor((acc + 2^(shift-1)) / 2^shift) = floor((H + (L >> 15) + 2^(shift-16)) / 2^(shift-15)) exactly: a rounding
 * shift right (VRSHL) of H + (L >> 15). The zero points are folded into h_const / l_const; 4 elements per vector
 * (two widening byte loads, two VMUL + two VMLA by the scalar multipliers, the shifts, the clamp, a narrowing store).
 * ------------------------------------------------------------------------------------------------------------- */
int ek__mve_add_s8(const ek_add_params_t *p, const int8_t *a, const int8_t *b, int8_t *out);

int ek__mve_add_s8(const ek_add_params_t *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    const int32x4_t lo = vdupq_n_s32(p->act_min), hi = vdupq_n_s32(p->act_max);
    const int32_t rs = 15 - p->shift, mah = p->a_mult_hi, mal = p->a_mult_lo, mbh = p->b_mult_hi,
                  mbl = p->b_mult_lo, hc = p->h_const, lc = p->l_const, zo = p->out_offset;
    int32_t n = p->n;
    for (; n >= 4; n -= 4, a += 4, b += 4, out += 4) {
        const int32x4_t x = vldrbq_s32(a), y = vldrbq_s32(b);
        const int32x4_t l = vshrq_n_s32(vaddq_n_s32(vmlaq_n_s32(vmulq_n_s32(x, mal), y, mbl), lc), 15);
        const int32x4_t h = vaddq_s32(vaddq_n_s32(vmlaq_n_s32(vmulq_n_s32(x, mah), y, mbh), hc), l);
        vstrbq_s32(out, vminq_s32(vmaxq_s32(vaddq_n_s32(vrshlq_n_s32(h, rs), zo), lo), hi));
    }
    if (n > 0) {
        const mve_pred16_t pr = vctp32q((uint32_t)n);
        const int32x4_t x = vldrbq_z_s32(a, pr), y = vldrbq_z_s32(b, pr);
        const int32x4_t l = vshrq_n_s32(vaddq_n_s32(vmlaq_n_s32(vmulq_n_s32(x, mal), y, mbl), lc), 15);
        const int32x4_t h = vaddq_s32(vaddq_n_s32(vmlaq_n_s32(vmulq_n_s32(x, mah), y, mbh), hc), l);
        vstrbq_p_s32(out, vminq_s32(vmaxq_s32(vaddq_n_s32(vrshlq_n_s32(h, rs), zo), lo), hi), pr);
    }
    return EK_NN_OK;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Pooling, 16 channels per vector: max with VMAX.S8 per tap; average sums the taps' bytes into int16 lanes (even
 * and odd channels, VMOVLB/VMOVLT; at most 255 taps before they are widened into the int32 sums, so int16 never
 * overflows), subtracts taps * x_zp and requantizes 4 lanes at a time: VMULH + VRSHL by -(shift - 32) (VRMULH when
 * shift = 32), + out_zp, saturating narrows. Shifts below 32 keep the scalar path (kernel_pack does not set the flag).
 * ------------------------------------------------------------------------------------------------------------- */
int ek__mve_pool_s8(const ek_pool_params_t *p, const int8_t *input, int8_t *output);

int ek__mve_pool_s8(const ek_pool_params_t *p, const int8_t *input, int8_t *output)
{
    const int32_t c_all = p->channels, row = p->in_w * c_all, zp = -p->input_offset;
    const int avg = p->mode == EK_NN_POOL_AVG;
    const int32x4_t mult = vdupq_n_s32(p->mult);
    const int32_t b = p->shift - 32, zo = p->output_offset;
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        const int32_t y0 = iy0 < 0 ? 0 : iy0, y1 = iy0 + p->kernel_h > p->in_h ? p->in_h : iy0 + p->kernel_h;
        for (int32_t ox = 0; ox < p->out_w; ox++, output += c_all) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            const int32_t x0 = ix0 < 0 ? 0 : ix0, x1 = ix0 + p->kernel_w > p->in_w ? p->in_w : ix0 + p->kernel_w;
            const int32_t taps = (y1 - y0) * (x1 - x0);
            for (int32_t c0 = 0; c0 < c_all; c0 += 16) {
                const mve_pred16_t pr = vctp8q((uint32_t)(c_all - c0));
                const int8_t *src = input + y0 * row + x0 * c_all + c0;
                if (!avg) {
                    int8x16_t m = vdupq_n_s8(-128);
                    for (int32_t y = y0; y < y1; y++, src += row) {
                        const int8_t *s = src;
                        for (int32_t x = x0; x < x1; x++, s += c_all) {
                            m = vmaxq_s8(m, vld1q_z_s8(s, pr));
                        }
                    }
                    vst1q_p_s8(output + c0, m, pr);
                    continue;
                }
                const int32x4_t start = vdupq_n_s32(-taps * zp);
                int32x4_t a0 = start, a1 = start, a2 = start, a3 = start;
                int16x8_t e = vdupq_n_s16(0), o = vdupq_n_s16(0);
                int32_t run = 0;
                for (int32_t y = y0; y < y1; y++, src += row) {
                    const int8_t *s = src;
                    for (int32_t x = x0; x < x1; x++, s += c_all) {
                        const int8x16_t v = vld1q_z_s8(s, pr);
                        e = vaddq_s16(e, vmovlbq_s8(v));
                        o = vaddq_s16(o, vmovltq_s8(v));
                        if (++run == 255) { /* widen before int16 could overflow */
                            a0 = vaddq_s32(a0, vmovlbq_s16(e));
                            a1 = vaddq_s32(a1, vmovltq_s16(e));
                            a2 = vaddq_s32(a2, vmovlbq_s16(o));
                            a3 = vaddq_s32(a3, vmovltq_s16(o));
                            e = o = vdupq_n_s16(0);
                            run = 0;
                        }
                    }
                }
                a0 = vaddq_s32(a0, vmovlbq_s16(e));
                a1 = vaddq_s32(a1, vmovltq_s16(e));
                a2 = vaddq_s32(a2, vmovlbq_s16(o));
                a3 = vaddq_s32(a3, vmovltq_s16(o));
                if (b == 0) {
                    a0 = vrmulhq_s32(a0, mult);
                    a1 = vrmulhq_s32(a1, mult);
                    a2 = vrmulhq_s32(a2, mult);
                    a3 = vrmulhq_s32(a3, mult);
                } else {
                    a0 = vrshlq_n_s32(vmulhq_s32(a0, mult), -b);
                    a1 = vrshlq_n_s32(vmulhq_s32(a1, mult), -b);
                    a2 = vrshlq_n_s32(vmulhq_s32(a2, mult), -b);
                    a3 = vrshlq_n_s32(vmulhq_s32(a3, mult), -b);
                }
                a0 = vaddq_n_s32(a0, zo);
                a1 = vaddq_n_s32(a1, zo);
                a2 = vaddq_n_s32(a2, zo);
                a3 = vaddq_n_s32(a3, zo);
                /* lanes: a0 channels 0,4,8,12 (even of even), a1 2,6,10,14, a2 1,5,9,13, a3 3,7,11,15 */
                const int16x8_t ne = vqmovntq_s32(vqmovnbq_s32(vdupq_n_s16(0), a0), a1);
                const int16x8_t no = vqmovntq_s32(vqmovnbq_s32(vdupq_n_s16(0), a2), a3);
                vst1q_p_s8(output + c0, vqmovntq_s16(vqmovnbq_s16(vdupq_n_s8(0), ne), no), pr);
            }
        }
    }
    return EK_NN_OK;
}

#endif /* __ARM_FEATURE_MVE */

/*
 * ek_nn_s8.c: edgekit's int8 micro-kernels for Cortex-M (see ek_nn_s8.h for the API and the arithmetic).
 *
 * How the time goes (counted in executed instructions on Cortex-M7, the measure edgekit optimises):
 *
 * Convolution = GEMM over output pixels. A tile of output pixels is copied (im2col) into scratch as int16 with the
 * input zero point already subtracted, two pixels interleaved per int16 pair of the reduction axis; the weights of
 * four output channels are widened once per tile (or once per call, EK_NN_FLAG_CACHE_ALL_WEIGHTS) to int16
 * pairs (the weights stay int8 in flash; EK_NN_FLAG_WIDE_WEIGHTS: they are stored widened, twice the flash, and
 * nothing widens them: patch tiles and calls with little scratch). The inner loop then holds a
 * 2 pixel x 4 channel block of accumulators in registers and does, per pair of reduction elements, one LDM of the
 * two pixels' pairs, two LDMs of the four channels' pairs and eight SMLADs: 11 instructions for 16 MACs. It is
 * unrolled 8 times with a Duff's-device entry for the remainder. Requantisation is SMMLA + ASR + SSAT per output
 * (the rounding, output zero point and lower clamp are folded into SMMLA's accumulate operand offline), then four
 * bytes are packed and the upper clamp is one SSUB8/SEL per four outputs (skipped when the range is all of int8).
 * At 3x3x16 -> 32 that is ~0.76 instructions per MAC in the GEMM plus ~0.07 for im2col and widening.
 *
 * Fully connected (weights used once, so never widened): each 32-bit weight word is stored offline so that read as
 * two int16 it is (256*w1 + w0, 256*w3 + w2) exactly (w1, w3 adjusted for the borrow of a negative w0, w2), and
 * SXTB16 of it is (w0, w2). With the input prepared once per row as u = (x1 - 127, x3 - 127) and
 * y = (256*x0 + 127 - x1, 256*x2 + 127 - x3), SMLAD(W, u) + SMLAD(SXTB16(W), y) = 256 * (w0*x0 + w1*(x1 - 127) +
 * w2*x2 + w3*(x3 - 127)): three instructions for four MACs instead of four. The sums carry a factor 256, so they
 * are folded back (>> 8, exact) every 64 words; the -127 terms and the input zero point are in the packed bias.
 * Blocks of 4 output channels run in asm (2 LDM + 12 instructions per 16 MACs); a last block of 1-3 channels in C.
 *
 * Depthwise: four channels at a time are transposed into per-channel int16 rows (zero point subtracted, padding
 * materialised as zeros) held in a ring of kernel_h rows (the one pass over the input, ~2 instructions per element).
 * 3x3 and 1x3 then run a hand-scheduled row kernel, one call per group of 4 channels and output row, four outputs
 * per step: with stride 1 the words A, B, C of a kernel row hold columns x .. x+5 and SMLAD/SMLABT/SMLATB cover the
 * 12 MACs of the four outputs in 8 instructions; with stride 2, SMLAD + SMLABB per output and row. 5x5 (stride 1):
 * 12 SMLAxy per 20 MACs per kernel row. 3x1 is a 1x3 on the transposed map (its rows are the input's columns);
 * other 1xK kernels (K 4-32, stride 1; Kx1, a depthwise Conv1d, on the transposed map) run ek__dw1xk_row: 4 SMLAD
 * per 2 taps of 4 outputs (Conv1d 9x1 3.95 -> 2.49 instructions/MAC, 25x1 3.04 -> 1.48). The
 * first kernel row starts the accumulators from the bias; requantization is SMMLA + ASR + SSAT per output (SSAT
 * alone clamps when the activation range is all of int8, else SSUB8/SEL per 4 outputs). At 3x3 s1 on a wide map
 * that is ~1.6 instructions per MAC in the row kernel plus ~0.25 for the ring. Other kernels, strides and
 * dilations use a plain C loop over the same rows. Outputs of one channel are a pixel apart in NHWC, so they are
 * stored byte by byte.
 *
 * Every data layout is shared by the DSP build and the portable build; the portable build emulates the few DSP
 * instructions in C (ek__smlad & co.), so both compute the same integers by construction.
 */
#include "ek_nn_s8.h"

#include <string.h>

#if defined(__ARM_FEATURE_DSP) && !defined(EK_NN_PORTABLE)
#define EK_NN_DSP 1
#include <arm_acle.h>
#else
#define EK_NN_DSP 0
#endif

#if defined(__ARM_FEATURE_MVE) && !defined(EK_NN_PORTABLE) && !EK_NN_NO_MVE /* (no Helium calls: leave it out) */
#define EK_NN_MVE 1 /* ek_nn_s8_mve.c runs the layers packed with EK_NN_FLAG_MVE */
int ek__mve_conv2d_s8(const ek_conv_params_t *p, const int8_t *input, int8_t *output, void *scratch);
int ek__mve_fully_connected_s8(const ek_fc_params_t *p, const int8_t *input, int8_t *output);
int ek__mve_depthwise_conv2d_s8(const ek_conv_params_t *p, const int8_t *input, int8_t *output, void *scratch);
int ek__mve_add_s8(const ek_add_params_t *p, const int8_t *a, const int8_t *b, int8_t *out);
int ek__mve_pool_s8(const ek_pool_params_t *p, const int8_t *input, int8_t *output);
#else
#define EK_NN_MVE 0
#endif
/* EK_NN_MVE_ONLY (the code generator defines it when every call of a firmware is packed for Helium): the entry
 * points refuse other layouts, so the DSP and portable code is never referenced and the linker drops it. */
#if !EK_NN_MVE
#undef EK_NN_MVE_ONLY
#define EK_NN_MVE_ONLY 0
#elif !defined(EK_NN_MVE_ONLY)
#define EK_NN_MVE_ONLY 0
#endif
/* The entry points' first step: a layer packed for Helium goes to ek_nn_s8_mve.c (`call`), a build without MVE
 * refuses it, and a Helium-only build refuses every other layout. */
#if EK_NN_MVE
#define EK_NN_HELIUM(p, call)                                                                                      \
    do {                                                                                                           \
        if ((p)->flags & EK_NN_FLAG_MVE) {                                                                         \
            return (call);                                                                                         \
        }                                                                                                          \
        if (EK_NN_MVE_ONLY) {                                                                                      \
            return EK_NN_ERR_ARG;                                                                                  \
        }                                                                                                          \
    } while (0)
#else
#define EK_NN_HELIUM(p, call)                                                                                      \
    do {                                                                                                           \
        if ((p)->flags & EK_NN_FLAG_MVE) {                                                                         \
            return EK_NN_ERR_ARG;                                                                                  \
        }                                                                                                          \
    } while (0)
#endif

/* A layer packed for the scalar kernels (EK_NN_FLAG_RV) runs them in a build without the DSP extension; a DSP build
 * refuses it (its own layouts are faster there). EK_NN_SCALAR_ONLY (the code generator defines it when every call of
 * a firmware is packed for them): the entry points refuse the other layouts, so their portable code is left out. */
#if EK_NN_DSP || !defined(EK_NN_SCALAR_ONLY)
#undef EK_NN_SCALAR_ONLY
#define EK_NN_SCALAR_ONLY 0
#endif

/* Depthwise variants a firmware leaves out when none of its calls takes them (pipeline.firmware_cflags decides from
 * the packed calls; kernel_pack.depthwise_code_variants names them): the row kernels (3x3 / 1x3 / 5x5 over a ring of
 * widened rows), within them the 1x3 (and 3x1 through the transposed view) and the 5x5 kernels, and the unrolled
 * channels-last 3x3 pixel. A call whose variant is left out would still compute the same outputs on the generic
 * paths (only slower): leaving code out never changes a result. */
#ifndef EK_NN_NO_DW_ROWS
#define EK_NN_NO_DW_ROWS 0
#endif
/* The channels-last layout's C path and asm dispatch (ek__dw_channels): left out only when no call of the firmware
 * is packed channels-last (its weights are int16 pairs no other path reads; such a call then returns
 * EK_NN_ERR_ARG). */
#ifndef EK_NN_NO_DW_CHANNELS
#define EK_NN_NO_DW_CHANNELS 0
#endif
/* The generic ring path (any kernel, stride, dilation and requantization, the portable build's row layout): left out
 * only in DSP builds whose every depthwise call takes a fast path (pipeline.firmware_cflags; a call that would come
 * to it then returns EK_NN_ERR_ARG). */
#ifndef EK_NN_NO_DW_RING
#define EK_NN_NO_DW_RING 0
#endif
#ifndef EK_NN_NO_DW1X3
#define EK_NN_NO_DW1X3 0
#endif
#ifndef EK_NN_NO_DW5X5
#define EK_NN_NO_DW5X5 0
#endif
#ifndef EK_NN_NO_DW1XK
#define EK_NN_NO_DW1XK 0
#endif
#ifndef EK_NN_NO_DW_CH5X5
#define EK_NN_NO_DW_CH5X5 0
#endif
#ifndef EK_NN_NO_DW_CH3X3
#define EK_NN_NO_DW_CH3X3 0
#endif
#ifndef EK_NN_NO_DW_CHK1
#define EK_NN_NO_DW_CHK1 0
#endif
/* Within the row kernels and the channels-last pixel kernels, each function of the clamp / no-clamp pair ("_NC":
 * the activation range is all of int8, SSAT alone clamps) and each stride is left out apart: a call whose no-clamp
 * function is left out runs the clamp one (exact: a clamp to all of int8 changes nothing), a call whose functions
 * are both left out the generic C loop. */
#ifndef EK_NN_NO_DWR_S1
#define EK_NN_NO_DWR_S1 0
#endif
#ifndef EK_NN_NO_DWR_S1_NC
#define EK_NN_NO_DWR_S1_NC 0
#endif
#ifndef EK_NN_NO_DWR_S2
#define EK_NN_NO_DWR_S2 0
#endif
#ifndef EK_NN_NO_DWR_S2_NC
#define EK_NN_NO_DWR_S2_NC 0
#endif
#ifndef EK_NN_NO_DW_CH3X3_NC
#define EK_NN_NO_DW_CH3X3_NC 0
#endif
#ifndef EK_NN_NO_DW_CH5X5_NC
#define EK_NN_NO_DW_CH5X5_NC 0
#endif
/* the conv's asm block kernels (requantized with the clamp, without, raw accumulators), each left out apart: a call
 * runs the clamp one when the no-clamp one is left out, raw accumulators when both are, the portable C loop for
 * raw accumulators when the raw one is */
#ifndef EK_NN_NO_GEMM_FAST
#define EK_NN_NO_GEMM_FAST 0
#endif
#ifndef EK_NN_NO_GEMM_FAST_NC
#define EK_NN_NO_GEMM_FAST_NC 0
#endif
#ifndef EK_NN_NO_GEMM_RAW
#define EK_NN_NO_GEMM_RAW 0
#endif
/* the FC's raw-accumulator asm block (layers without the fast requantization): left out, the C block loop */
#ifndef EK_NN_NO_FC_RAW
#define EK_NN_NO_FC_RAW 0
#endif
/* the add's SMLAD loops (short multipliers or not, with the clamp or without; left out, the C loop) and the pool's
 * chunked global average (left out, the generic pool loop) */
#ifndef EK_NN_NO_ADD4
#define EK_NN_NO_ADD4 0
#endif
#ifndef EK_NN_NO_ADD4_CLAMP
#define EK_NN_NO_ADD4_CLAMP 0
#endif
#ifndef EK_NN_NO_ADD4S
#define EK_NN_NO_ADD4S 0
#endif
#ifndef EK_NN_NO_ADD4S_CLAMP
#define EK_NN_NO_ADD4S_CLAMP 0
#endif
#ifndef EK_NN_NO_GAP
#define EK_NN_NO_GAP 0
#endif
#ifndef EK_NN_NO_MAXROWS
#define EK_NN_NO_MAXROWS 0
#endif
#ifndef EK_NN_NO_MAXROW1
#define EK_NN_NO_MAXROW1 0
#endif
/* f_nc for a call whose clamp is all of int8 (nc8) unless it is left out, else f unless it is left out, else 0 */
#define EK__PICK_NC(nc8, f, f_nc, no, no_nc) ((nc8) && !(no_nc) ? (f_nc) : !(no) ? (f) : 0)
#ifndef EK_NN_NO_DW_PAIRS
#define EK_NN_NO_DW_PAIRS 0
#endif
/* conv as FC rows (EK_NN_FLAG_CONV_FC): left out of a firmware none of whose conv calls takes it */
#ifndef EK_NN_NO_CONV_FC
#define EK_NN_NO_CONV_FC 0
#endif
/* one-channel convs (EK_NN_FLAG_CONV_C1): the path (_PATH) and its asm channel loop with the clamp and without
 * ("_NC"), each left out apart */
#ifndef EK_NN_NO_CONV_C1_PATH
#define EK_NN_NO_CONV_C1_PATH 0
#endif
#ifndef EK_NN_NO_CONV_C1
#define EK_NN_NO_CONV_C1 0
#endif
#ifndef EK_NN_NO_CONV_C1_NC
#define EK_NN_NO_CONV_C1_NC 0
#endif
#define EK_NN_HAS_CONV_C1 (!EK_NN_NO_CONV_C1_PATH)
/* the pairs layout's four asm functions (stride 1 / 2, with the clamp / without: "_NC"), each left out apart */
#ifndef EK_NN_NO_DWP_S1
#define EK_NN_NO_DWP_S1 0
#endif
#ifndef EK_NN_NO_DWP_S1_NC
#define EK_NN_NO_DWP_S1_NC 0
#endif
#ifndef EK_NN_NO_DWP_S2
#define EK_NN_NO_DWP_S2 0
#endif
#ifndef EK_NN_NO_DWP_S2_NC
#define EK_NN_NO_DWP_S2_NC 0
#endif
#if EK_NN_DSP
#define EK_NN_SCALAR(p, call)                                                                                      \
    do {                                                                                                           \
        if ((p)->flags & EK_NN_FLAG_RV) {                                                                          \
            return EK_NN_ERR_ARG;                                                                                  \
        }                                                                                                          \
    } while (0)
#else
#define EK_NN_SCALAR(p, call)                                                                                      \
    do {                                                                                                           \
        if ((p)->flags & EK_NN_FLAG_RV) {                                                                          \
            return (call);                                                                                         \
        }                                                                                                          \
        if (EK_NN_SCALAR_ONLY) {                                                                                   \
            return EK_NN_ERR_ARG;                                                                                  \
        }                                                                                                          \
    } while (0)
#endif

#define EK_CONV_UNROLL 8   /* reduction pairs per iteration of the conv inner loop (asm below) */
#define EK_FC_UNROLL 16    /* weight words (4 inputs) per iteration of the FC inner loop (asm below) */
#define EK_FC_CHUNK 64     /* FC words between folds: |partial sum| <= 64 * 97282 < 2^23, so (256*sum) >> 8 is exact */

typedef uint32_t __attribute__((may_alias)) ek__word; /* reads int8/int16 arrays as words (4-byte aligned) */

/* ---------------------------------------------------------------------------------------------------------------
 * The DSP instructions the kernels use, and their C equivalents for cores without the DSP extension.
 * A word holding two int16 keeps the lower-indexed element in its low half.
 * ------------------------------------------------------------------------------------------------------------- */
static inline uint32_t ek__pack16(int32_t lo, int32_t hi)
{
    return (uint32_t)(uint16_t)lo | ((uint32_t)(uint16_t)hi << 16);
}

static inline int32_t ek__lo16(uint32_t w) { return (int16_t)(uint16_t)w; }
static inline int32_t ek__hi16(uint32_t w) { return (int16_t)(uint16_t)(w >> 16); }

/* int16 halves of packed pair words, read or written as halfwords (little-endian: a word's low half first) */
typedef int16_t ek__h16 __attribute__((may_alias));

static inline void ek__write_u32(void *p, uint32_t v) { memcpy(p, &v, 4); } /* any alignment */

static inline uint32_t ek__read_u32(const void *p) /* any alignment */
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

#if EK_NN_DSP
static inline uint32_t ek__sxtb16(uint32_t x) { return (uint32_t)__sxtb16((int32_t)x); }
static inline uint32_t ek__sxtb16_ror8(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline uint32_t ek__sxtab16(uint32_t a, uint32_t x) { return (uint32_t)__sxtab16((int32_t)a, (int32_t)x); }
static inline uint32_t ek__sxtab16_ror8(uint32_t a, uint32_t x)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
static inline int32_t ek__smlad(uint32_t a, uint32_t b, int32_t acc) { return __smlad((int32_t)a, (int32_t)b, acc); }
static inline int32_t ek__smlabb(uint32_t a, uint32_t b, int32_t acc) { return __smlabb((int32_t)a, (int32_t)b, acc); }
static inline int32_t ek__smlabt(uint32_t a, uint32_t b, int32_t acc) { return __smlabt((int32_t)a, (int32_t)b, acc); }
static inline int32_t ek__smlatb(uint32_t a, uint32_t b, int32_t acc) { return __smlatb((int32_t)a, (int32_t)b, acc); }
static inline int32_t ek__smlatt(uint32_t a, uint32_t b, int32_t acc) { return __smlatt((int32_t)a, (int32_t)b, acc); }
static inline int32_t ek__smmla(int32_t a, int32_t b, int32_t c)
{
    int32_t r;
    __asm__("smmla %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
static inline uint32_t ek__rev16(uint32_t x)
{
    uint32_t r;
    __asm__("rev16 %0, %1" : "=r"(r) : "r"(x));
    return r;
}
#else
static inline uint32_t ek__sxtb16(uint32_t x) { return ek__pack16((int8_t)x, (int8_t)(x >> 16)); }
static inline uint32_t ek__sxtb16_ror8(uint32_t x) { return ek__pack16((int8_t)(x >> 8), (int8_t)(x >> 24)); }
static inline uint32_t ek__sxtab16(uint32_t a, uint32_t x)
{
    return ek__pack16(ek__lo16(a) + (int8_t)x, ek__hi16(a) + (int8_t)(x >> 16));
}
static inline uint32_t ek__sxtab16_ror8(uint32_t a, uint32_t x)
{
    return ek__pack16(ek__lo16(a) + (int8_t)(x >> 8), ek__hi16(a) + (int8_t)(x >> 24));
}
/* Wrapping int32 arithmetic, as the instructions do (each int16 x int16 product fits int32). */
static inline int32_t ek__smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(ek__lo16(a) * ek__lo16(b)) + (uint32_t)(ek__hi16(a) * ek__hi16(b)));
}
static inline int32_t ek__smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(ek__lo16(a) * ek__lo16(b)));
}
static inline int32_t ek__smlabt(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(ek__lo16(a) * ek__hi16(b)));
}
static inline int32_t ek__smlatb(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(ek__hi16(a) * ek__lo16(b)));
}
static inline int32_t ek__smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(ek__hi16(a) * ek__hi16(b)));
}
static inline uint32_t ek__rev16(uint32_t x) { return ((x & 0x00FF00FFu) << 8) | ((x >> 8) & 0x00FF00FFu); }
#endif

/* ---------------------------------------------------------------------------------------------------------------
 * Requantisation. requant[c] = {mult, a, b, shift}. The generic form is the contract (edgekit/qmath.py). With
 * EK_NN_FLAG_FAST_REQUANT, kernel_pack has checked for every channel that shift = 32 + b with b in [1, 30] (or
 * mult = 0) and that a = 2^(b-1) + (out_zp - act_min - 128) * 2^b fits |a| < 2^30; then
 *   SMMLA(acc, mult, a) >> b = floor((acc*mult + 2^(shift-1) + (out_zp - act_min - 128) * 2^shift) / 2^shift)
 * exactly (no int32 overflow: |acc*mult| < 2^62), i.e. the contract's value minus (act_min + 128), so SSAT to 8
 * bits is the lower clamp, a min with act_max - act_min - 128 the upper one, and adding act_min + 128 back (mod 256)
 * gives the byte.
 * ------------------------------------------------------------------------------------------------------------- */
static inline int8_t ek__requant_generic(int32_t acc, const int32_t *q, int32_t out_zp, int32_t lo, int32_t hi)
{
    const int32_t shift = q[3];
    int64_t v = ((int64_t)acc * q[0] + ((int64_t)1 << (shift - 1))) >> shift;
    v += out_zp;
    if (v < lo) {
        v = lo;
    }
    if (v > hi) {
        v = hi;
    }
    return (int8_t)v;
}

#if EK_NN_DSP
static inline int8_t ek__requant_fast(int32_t acc, const int32_t *q, int32_t upper, int32_t back)
{
    int32_t v = __ssat(ek__smmla(acc, q[0], q[1]) >> q[2], 8);
    if (v > upper) {
        v = upper;
    }
    return (int8_t)(v + back);
}
#else
/* The same form without the DSP extension: SMMLA(acc, mult, a) = a + the high word of the 64-bit product (one
 * MULH on RV32IM), and SSAT's upper bound is implied by the min with upper (<= 127). */
static inline int8_t ek__requant_fast(int32_t acc, const int32_t *q, int32_t upper, int32_t back)
{
    int32_t v = (q[1] + (int32_t)(((int64_t)acc * q[0]) >> 32)) >> q[2];
    v = v < -128 ? -128 : v;
    if (v > upper) {
        v = upper;
    }
    return (int8_t)(v + back);
}
#endif

typedef struct {
    int fast;              /* use the SMMLA form (EK_NN_FLAG_FAST_REQUANT) */
    int32_t out_zp, lo, hi; /* generic form */
    int32_t upper, back;    /* fast form: act_max - act_min - 128, act_min + 128 */
} ek__rq_t;

static void ek__rq_init(ek__rq_t *r, int32_t flags, int32_t out_zp, int32_t act_min, int32_t act_max)
{
    r->fast = (flags & EK_NN_FLAG_FAST_REQUANT) != 0;
    r->out_zp = out_zp;
    r->lo = act_min;
    r->hi = act_max;
    r->upper = act_max - act_min - 128;
    r->back = act_min + 128;
}

static inline int8_t ek__requant(const ek__rq_t *r, int32_t acc, const int32_t *q)
{
    if (r->fast) {
        return ek__requant_fast(acc, q, r->upper, r->back);
    }
    return ek__requant_generic(acc, q, r->out_zp, r->lo, r->hi);
}

static inline uint32_t ek__bytes4(int32_t v) { return 0x01010101u * (uint32_t)(uint8_t)v; }

static int ek__aligned(const void *p) { return ((uintptr_t)p & 3u) == 0; }

/* ===============================================================================================================
 * Scalar kernels for cores without SIMD, such as RV32IM (layers packed with EK_NN_FLAG_RV: kernel_pack isa="rv32")
 *
 * RV32IM has no multiply-accumulate and no packed arithmetic: every MAC is one MUL and one ADD, so what is left to
 * win is the loads and the work per output. These kernels have their own layouts, so that every operand is one
 * sign-extending byte load with an immediate offset:
 *  - the input zero point is folded into the bias offline (bias - x_zp * sum(w), exact in wrapping int32), so raw
 *    int8 inputs are multiplied and padding is the zero point's byte (depthwise folds it at run time, per row);
 *  - requantisation is (a + MULH(acc, mult)) >> b with a = 2^(b-1) + out_zp * 2^b (kernel_pack checks that it is
 *    exact, FAST_REQUANT; else the 64-bit form), then the clamp: MULH, ADD, SRA, two branches and a byte store.
 * conv: a GEMM block of 4 output pixels x 4 output channels, 16 accumulators in registers; per reduction element 4
 *   input bytes (the 4 pixels interleaved in a 4-pixel im2col tile: [K][4]) and 4 weight bytes ([K][4] per block,
 *   read from flash as they are), 16 MUL + 16 ADD: 2.5 instructions per MAC before loop, im2col and requantisation.
 * fully connected: each weight is used once, so one load per MAC; blocks of 16 channels share each input byte. Or
 *   two MACs per MUL (EK_NN_FLAG_RV_PAIRS: two channels' weights in one word as 16-bit lanes, see ek__rv_fc_pairs).
 * depthwise 3x3: one channel at a time with its 9 weights in registers, reading the input in place (NHWC) column by
 *   column along an output row: a column's 3 bytes are loaded once and added into the 3 outputs (2 at stride 2)
 *   that use it.
 * These are plain C: a DSP build refuses such layers (it has faster kernels for its own layouts).
 * ============================================================================================================= */
#if !EK_NN_DSP
#ifndef EK_NN_RV_FC_NO_PAIRS
#define EK_NN_RV_FC_NO_PAIRS 0
#endif
#ifndef EK_NN_RV_FC_NO_BYTES
#define EK_NN_RV_FC_NO_BYTES 0
#endif
static inline __attribute__((always_inline)) int32_t ek__rv_requant(int32_t acc, int32_t mult, int32_t add,
                                                                   int32_t b, int32_t lo, int32_t hi)
{
    int32_t v = (add + (int32_t)(((int64_t)acc * mult) >> 32)) >> b; /* one MULH on RV32IM */
    if (v < lo) {
        v = lo;
    }
    if (v > hi) {
        v = hi;
    }
    return v;
}

/* The 64-bit form (layers without FAST_REQUANT, rare): one out-of-line copy, not one per output of every loop. */
static __attribute__((noinline)) int8_t ek__rv_requant_generic(int32_t acc, const int32_t *q, int32_t out_zp,
                                                              int32_t lo, int32_t hi)
{
    return ek__requant_generic(acc, q, out_zp, lo, hi);
}

/* ---- convolution ---------------------------------------------------------------------------------------------- */

/* n bytes of src into every 4th byte of dst (one pixel's lane of the tile) */
static inline void ek__rv_copy_lane(int8_t *dst, const int8_t *src, int32_t n)
{
    for (; n >= 8; n -= 8, src += 8, dst += 32) {
        const int8_t a = src[0], b = src[1], c = src[2], d = src[3], e = src[4], f = src[5], g = src[6], h = src[7];
        dst[0] = a;
        dst[4] = b;
        dst[8] = c;
        dst[12] = d;
        dst[16] = e;
        dst[20] = f;
        dst[24] = g;
        dst[28] = h;
    }
    for (; n > 0; n--, src++, dst += 4) {
        dst[0] = src[0];
    }
}

static inline void ek__rv_fill_lane(int8_t *dst, int8_t v, int32_t n)
{
    for (; n > 0; n--, dst += 4) {
        dst[0] = v;
    }
}

/* The window of output pixel (oy, ox), K bytes in (ky, kx, c) order, into one lane of the tile; taps in the padding
 * read as the zero point. */
static void ek__rv_im2col_pixel(const ek_conv_params_t *p, const int8_t *in, int32_t oy, int32_t ox, int8_t *dst)
{
    const int32_t C = p->in_c, kw = p->kernel_w, dw = p->dilation_w;
    const int8_t zp = (int8_t)-p->input_offset;
    const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    const int rows_whole = dw == 1 && ix0 >= 0 && ix0 + kw <= p->in_w; /* each kernel row one contiguous run */
    for (int32_t ky = 0; ky < p->kernel_h; ky++) {
        const int32_t iy = iy0 + ky * p->dilation_h;
        if ((uint32_t)iy >= (uint32_t)p->in_h) {
            ek__rv_fill_lane(dst, zp, kw * C);
            dst += 4 * kw * C;
            continue;
        }
        const int8_t *row = in + iy * p->in_row_stride;
        if (rows_whole) {
            ek__rv_copy_lane(dst, row + ix0 * C, kw * C);
            dst += 4 * kw * C;
            continue;
        }
        for (int32_t kx = 0; kx < kw; kx++, dst += 4 * C) {
            const int32_t ix = ix0 + kx * dw;
            if ((uint32_t)ix < (uint32_t)p->in_w) {
                ek__rv_copy_lane(dst, row + ix * C, C);
            } else {
                ek__rv_fill_lane(dst, zp, C);
            }
        }
    }
}

/* Requantise and store one channel's 4 accumulators (one per pixel of the block). */
#define EK__RV_STORE4(c, a0, a1, a2, a3)                                                                           \
    do {                                                                                                           \
        const int32_t *q_ = q + 4 * (c);                                                                           \
        if (__builtin_expect(fast, 1)) {                                                                           \
            const int32_t m_ = q_[0], add_ = q_[1], b_ = q_[2];                                                    \
            o0[c] = (int8_t)ek__rv_requant((int32_t)(a0), m_, add_, b_, lo, hi);                                   \
            o1[c] = (int8_t)ek__rv_requant((int32_t)(a1), m_, add_, b_, lo, hi);                                   \
            o2[c] = (int8_t)ek__rv_requant((int32_t)(a2), m_, add_, b_, lo, hi);                                   \
            o3[c] = (int8_t)ek__rv_requant((int32_t)(a3), m_, add_, b_, lo, hi);                                   \
        } else {                                                                                                   \
            o0[c] = ek__rv_requant_generic((int32_t)(a0), q_, out_zp, lo, hi);                                     \
            o1[c] = ek__rv_requant_generic((int32_t)(a1), q_, out_zp, lo, hi);                                     \
            o2[c] = ek__rv_requant_generic((int32_t)(a2), q_, out_zp, lo, hi);                                     \
            o3[c] = ek__rv_requant_generic((int32_t)(a3), q_, out_zp, lo, hi);                                     \
        }                                                                                                          \
    } while (0)

/* 4 pixels (the tile's lanes) x nc <= 4 channels (weights [K][nc]) over the whole reduction, then requantised into
 * o[pixel] + c0 + channel. Wrapping int32 sums (uint32_t), as the reference. */
static inline __attribute__((always_inline)) void ek__rv_gemm4(const int8_t *tile, const int8_t *w, int32_t k,
                                                              const int32_t nc, const int32_t *bias,
                                                              const int32_t *q, const ek__rq_t *rq,
                                                              int8_t *const o[4], int32_t c0)
{
    const uint32_t b0 = (uint32_t)bias[0], b1 = nc > 1 ? (uint32_t)bias[1] : 0u;
    const uint32_t b2 = nc > 2 ? (uint32_t)bias[2] : 0u, b3 = nc > 3 ? (uint32_t)bias[3] : 0u;
    uint32_t a00 = b0, a01 = b1, a02 = b2, a03 = b3; /* a<pixel><channel> */
    uint32_t a10 = b0, a11 = b1, a12 = b2, a13 = b3;
    uint32_t a20 = b0, a21 = b1, a22 = b2, a23 = b3;
    uint32_t a30 = b0, a31 = b1, a32 = b2, a33 = b3;
#define EK__RV_CH(c, a0, a1, a2, a3)                                                                               \
    do {                                                                                                           \
        const int32_t wc = w[c];                                                                                   \
        a0 += (uint32_t)(x0 * wc);                                                                                 \
        a1 += (uint32_t)(x1 * wc);                                                                                 \
        a2 += (uint32_t)(x2 * wc);                                                                                 \
        a3 += (uint32_t)(x3 * wc);                                                                                 \
    } while (0)
#define EK__RV_STEP()                                                                                              \
    do {                                                                                                           \
        const int32_t x0 = tile[0], x1 = tile[1], x2 = tile[2], x3 = tile[3];                                     \
        EK__RV_CH(0, a00, a10, a20, a30);                                                                          \
        if (nc > 1) {                                                                                              \
            EK__RV_CH(1, a01, a11, a21, a31);                                                                      \
        }                                                                                                          \
        if (nc > 2) {                                                                                              \
            EK__RV_CH(2, a02, a12, a22, a32);                                                                      \
        }                                                                                                          \
        if (nc > 3) {                                                                                              \
            EK__RV_CH(3, a03, a13, a23, a33);                                                                      \
        }                                                                                                          \
    } while (0)
    /* (a counted loop: the compiler's unroll by 8 then enters for the remainder k % 8 directly; the blocks of 1-3
     * channels, one per layer at most, keep the loop short) */
    if (nc == 4) {
#pragma GCC unroll 8
        for (int32_t i = 0; i < k; i++, tile += 4, w += nc) {
            EK__RV_STEP();
        }
    } else {
        for (int32_t i = 0; i < k; i++, tile += 4, w += nc) {
            EK__RV_STEP();
        }
    }
#undef EK__RV_STEP
#undef EK__RV_CH
    /* The stores' pointers and constants are read only now (the barrier keeps the compiler from loading them before
     * the loop, where they would not fit in registers beside the 16 accumulators), into locals: an int8 store may
     * alias any memory, which would reload them. */
    __asm__ volatile("" ::: "memory");
    int8_t *const o0 = o[0] + c0, *const o1 = o[1] + c0, *const o2 = o[2] + c0, *const o3 = o[3] + c0;
    const int fast = rq->fast;
    const int32_t lo = rq->lo, hi = rq->hi, out_zp = rq->out_zp;
    EK__RV_STORE4(0, a00, a10, a20, a30);
    if (nc > 1) {
        EK__RV_STORE4(1, a01, a11, a21, a31);
    }
    if (nc > 2) {
        EK__RV_STORE4(2, a02, a12, a22, a32);
    }
    if (nc > 3) {
        EK__RV_STORE4(3, a03, a13, a23, a33);
    }
}
#undef EK__RV_STORE4

/* Every full block of 4 channels, one after the other (one call per pixel group: the registers are saved once).
 * GCC's scheduling before register allocation would hoist all 8 loads of a step and spill accumulators. */
static __attribute__((noinline, optimize("no-schedule-insns"))) void ek__rv_gemm4x4(
    const int8_t *tile, const int8_t *w, int32_t k, int32_t blocks, const int32_t *bias, const int32_t *q,
    const ek__rq_t *rq, int8_t *const o[4])
{
    for (int32_t b = 0; b < blocks; b++, w += 4 * k, bias += 4, q += 16) {
        ek__rv_gemm4(tile, w, k, 4, bias, q, rq, o, 4 * b);
    }
}

static __attribute__((noinline)) void ek__rv_gemm4_tail(const int8_t *tile, const int8_t *w, int32_t k, int32_t nc,
                                                        const int32_t *bias, const int32_t *q, const ek__rq_t *rq,
                                                        int8_t *const o[4])
{
    if (nc == 1) {
        ek__rv_gemm4(tile, w, k, 1, bias, q, rq, o, 0);
    } else if (nc == 2) {
        ek__rv_gemm4(tile, w, k, 2, bias, q, rq, o, 0);
    } else {
        ek__rv_gemm4(tile, w, k, 3, bias, q, rq, o, 0);
    }
}

/* Weights: per block of 4 output channels [K][4] (K in (ky, kx, c) order), a last block of nc < 4 channels [K][nc];
 * bias [ceil4(out_c)] with the input zero point folded in (required). Pixels go 4 at a time (a last group repeats
 * its last pixel, stored again to the same place). */
static int ek__rv_conv2d(const ek_conv_params_t *p, const int8_t *input, int8_t *output, void *scratch)
{
    if (!p->bias) {
        return EK_NN_ERR_ARG;
    }
    const int32_t k = p->kernel_h * p->kernel_w * p->in_c, out_c = p->out_c, full = out_c / 4;
    const int32_t npix = p->out_h * p->out_w;
    int8_t *tile = (int8_t *)scratch;
    ek__rq_t rq;
    ek__rq_init(&rq, p->flags, p->output_offset, p->act_min, p->act_max);
    for (int32_t pix0 = 0; pix0 < npix; pix0 += 4) {
        int8_t *o[4];
        for (int32_t i = 0; i < 4; i++) {
            const int32_t pix = pix0 + i < npix ? pix0 + i : npix - 1;
            const int32_t oy = pix / p->out_w, ox = pix - oy * p->out_w;
            o[i] = output + oy * p->out_row_stride + ox * out_c;
            ek__rv_im2col_pixel(p, input, oy, ox, tile + i);
        }
        ek__rv_gemm4x4(tile, p->weights, k, full, p->bias, p->requant, &rq, o);
        if (out_c > 4 * full) {
            for (int32_t i = 0; i < 4; i++) {
                o[i] += 4 * full;
            }
            ek__rv_gemm4_tail(tile, p->weights + 4 * full * k, k, out_c - 4 * full, p->bias + 4 * full,
                              p->requant + 16 * full, &rq, o);
        }
    }
    return EK_NN_OK;
}

/* ---- fully connected ------------------------------------------------------------------------------------------ */

/* nc output channels (weights [K][nc]) over one input row; wrapping int32 sums, requantised into out[0..nc). Per
 * input byte: one LB of it, then per channel LB, MUL, ADD: 3 + 1/nc instructions per MAC and the loop's share. */
static inline __attribute__((always_inline)) void ek__rv_fc_block(const int8_t *x, const int8_t *w, int32_t k,
                                                                 const int32_t nc, const int32_t *bias,
                                                                 const int32_t *q, const ek__rq_t *rq, int8_t *out)
{
    uint32_t a[16];
#pragma GCC unroll 16
    for (int32_t c = 0; c < nc; c++) {
        a[c] = (uint32_t)bias[c];
    }
#define EK__RV_FC_STEP()                                                                                           \
    do {                                                                                                           \
        const int32_t xv = x[0];                                                                                   \
        _Pragma("GCC unroll 16") for (int32_t c = 0; c < nc; c++)                                                  \
        {                                                                                                          \
            a[c] += (uint32_t)(xv * w[c]);                                                                         \
        }                                                                                                          \
    } while (0)
    /* unrolled where it pays: the 16-channel blocks carry the layer, the smaller ones its last channels */
    if (nc == 16) {
#pragma GCC unroll 4
        for (int32_t i = 0; i < k; i++, x++, w += nc) {
            EK__RV_FC_STEP();
        }
    } else if (nc >= 4) {
#pragma GCC unroll 2
        for (int32_t i = 0; i < k; i++, x++, w += nc) {
            EK__RV_FC_STEP();
        }
    } else {
#pragma GCC unroll 4
        for (int32_t i = 0; i < k; i++, x++, w += nc) {
            EK__RV_FC_STEP();
        }
    }
#undef EK__RV_FC_STEP
    __asm__ volatile("" ::: "memory"); /* (the requant constants are read after the loop: see ek__rv_gemm4) */
    const int fast = rq->fast;
    const int32_t lo = rq->lo, hi = rq->hi, out_zp = rq->out_zp;
#pragma GCC unroll 16
    for (int32_t c = 0; c < nc; c++, q += 4) {
        out[c] = fast ? (int8_t)ek__rv_requant((int32_t)a[c], q[0], q[1], q[2], lo, hi)
                      : ek__rv_requant_generic((int32_t)a[c], q, out_zp, lo, hi);
    }
}

/* One copy per block size (the channel loops unroll into registers): 16, then 8, 4, 2, 1 for what is left. */
static __attribute__((noinline, optimize("no-schedule-insns"))) void ek__rv_fc_blocks(const int8_t *x, const int8_t *w, int32_t k, int32_t nc,
                                                       const int32_t *bias, const int32_t *q, const ek__rq_t *rq,
                                                       int8_t *out)
{
    switch (nc) {
    case 16:
        ek__rv_fc_block(x, w, k, 16, bias, q, rq, out);
        break;
    case 8:
        ek__rv_fc_block(x, w, k, 8, bias, q, rq, out);
        break;
    case 4:
        ek__rv_fc_block(x, w, k, 4, bias, q, rq, out);
        break;
    case 2:
        ek__rv_fc_block(x, w, k, 2, bias, q, rq, out);
        break;
    default:
        ek__rv_fc_block(x, w, k, 1, bias, q, rq, out);
        break;
    }
}

/* n sums requantised into out[0..n): one loop for every block size (a few instructions per output more than
 * unrolled, a fraction of the K MACs behind each, and one copy of the code). */
static __attribute__((noinline)) void ek__rv_fc_store(const int32_t *a, int32_t n, const int32_t *q,
                                                      const ek__rq_t *rq, int8_t *out)
{
    const int32_t lo = rq->lo, hi = rq->hi, out_zp = rq->out_zp;
    if (rq->fast) {
        for (int32_t c = 0; c < n; c++, q += 4) {
            out[c] = (int8_t)ek__rv_requant(a[c], q[0], q[1], q[2], lo, hi);
        }
    } else {
        for (int32_t c = 0; c < n; c++, q += 4) {
            out[c] = ek__rv_requant_generic(a[c], q, out_zp, lo, hi);
        }
    }
}

/* Two MACs per MUL (EK_NN_FLAG_RV_PAIRS): the weights of channels c, c + 1 at input k are one word
 * W = w0 + 65536 * w1 (w0 signed in the low half, its borrow in the high half), so x * W = x * w0 + 65536 * x * w1.
 * Two inputs' products S = x0 * W0 + x1 * W1 = L + 65536 * H with L, H the two channels' sums of two products:
 * |x * w| <= 128 * 127 (kernel_pack refuses weight -128), so |L| <= 32512 and H = (S + 0x8000) >> 16 exactly. Per
 * channel pair the loop keeps s = sum S and h = sum H (wrapping); after it, channel c's sum is s - 65536 * h (exact
 * mod 2^32, as the reference's wrapping sums) and channel c + 1's is h. Per 2 inputs and pair: 2 LW, 2 MUL, ADD for S,
 * ADD, SRAI, ADD for h, ADD for s = 9 instructions for 4 MACs, and the 2 input LBs shared by the block's pairs. */
static inline __attribute__((always_inline)) void ek__rv_fc_pairs(const int8_t *x, const int32_t *w, int32_t k,
                                                                 const int32_t np, int32_t nout, const int32_t *bias,
                                                                 const int32_t *q, const ek__rq_t *rq, int8_t *out)
{
    uint32_t s[8], h[8];
#pragma GCC unroll 8
    for (int32_t j = 0; j < np; j++) {
        s[j] = 0u;
        h[j] = 0u;
    }
    const uint32_t half = 0x8000u;
    const int8_t *const end = x + (k & ~1);
#define EK__RV_PAIR_STEP(v)                                                                                        \
    do {                                                                                                           \
        s[j] += (v);                                                                                               \
        h[j] += (uint32_t)((int32_t)((v) + half) >> 16);                                                           \
    } while (0)
#pragma GCC unroll 2
    for (; x != end; x += 2, w += 2 * np) {
        const uint32_t x0 = (uint32_t)(int32_t)x[0], x1 = (uint32_t)(int32_t)x[1];
#pragma GCC unroll 8
        for (int32_t j = 0; j < np; j++) {
            const uint32_t v = x0 * (uint32_t)w[j] + x1 * (uint32_t)w[np + j];
            EK__RV_PAIR_STEP(v);
        }
    }
    if (k & 1) { /* the last input alone: |L| <= 16256 */
        const uint32_t x0 = (uint32_t)(int32_t)x[0];
#pragma GCC unroll 8
        for (int32_t j = 0; j < np; j++) {
            const uint32_t v = x0 * (uint32_t)w[j];
            EK__RV_PAIR_STEP(v);
        }
    }
#undef EK__RV_PAIR_STEP
    int32_t a[16];
#pragma GCC unroll 8
    for (int32_t j = 0; j < np; j++) {
        a[2 * j] = (int32_t)((uint32_t)bias[2 * j] + s[j] - (h[j] << 16));
        a[2 * j + 1] = (int32_t)((uint32_t)bias[2 * j + 1] + h[j]);
    }
    ek__rv_fc_store(a, nout, q, rq, out);
}

/* One copy per block size: 8 pairs, then 4, 2, 1 for what is left. */
static __attribute__((noinline, optimize("no-schedule-insns"))) void ek__rv_fc_pair_blocks(
    const int8_t *x, const int32_t *w, int32_t k, int32_t np, int32_t nout, const int32_t *bias, const int32_t *q,
    const ek__rq_t *rq, int8_t *out)
{
    switch (np) {
    case 8:
        ek__rv_fc_pairs(x, w, k, 8, nout, bias, q, rq, out);
        break;
    case 4:
        ek__rv_fc_pairs(x, w, k, 4, nout, bias, q, rq, out);
        break;
    case 2:
        ek__rv_fc_pairs(x, w, k, 2, nout, bias, q, rq, out);
        break;
    default:
        ek__rv_fc_pairs(x, w, k, 1, nout, bias, q, rq, out);
        break;
    }
}

/* The byte layout: blocks of 16 output channels [K][16], then for the channels left one block of each of 8, 4, 2
 * and 1 that their count has (binary). */
static void ek__rv_fc_bytes(const ek_fc_params_t *p, const int8_t *input, int8_t *output, const ek__rq_t *rq)
{
    const int32_t k = p->in_features, n = p->out_features;
    for (int32_t r = 0; r < p->batch; r++, input += p->in_row_stride, output += p->out_row_stride) {
        const int8_t *w = p->weights;
        for (int32_t c = 0, nc = 16; c < n; nc >>= (n - c < nc)) {
            if (n - c >= nc) {
                ek__rv_fc_blocks(input, w, k, nc, p->bias + c, p->requant + 4 * c, rq, output + c);
                c += nc;
                w += nc * k;
            }
        }
    }
}

/* Weights in the byte layout (ek__rv_fc_bytes) or, with EK_NN_FLAG_RV_PAIRS, in channel pairs: blocks of 8 pairs
 * [K][8] words, then one block of each of 4, 2 and 1 pairs that the ceil(n / 2) pairs left have (an odd layer's last
 * pair holds one channel); bias [ceil4(out)] with the input zero point folded in. A firmware whose FC calls all use
 * one layout leaves the other's code out (EK_NN_RV_FC_NO_PAIRS / EK_NN_RV_FC_NO_BYTES: the code generator decides). */
static int ek__rv_fully_connected(const ek_fc_params_t *p, const int8_t *input, int8_t *output)
{
    ek__rq_t rq;
    ek__rq_init(&rq, p->flags, p->output_offset, p->act_min, p->act_max);
    if (!(p->flags & EK_NN_FLAG_RV_PAIRS)) {
        if (EK_NN_RV_FC_NO_BYTES) {
            return EK_NN_ERR_ARG;
        }
        ek__rv_fc_bytes(p, input, output, &rq);
        return EK_NN_OK;
    }
    if (EK_NN_RV_FC_NO_PAIRS) {
        return EK_NN_ERR_ARG;
    }
    const int32_t k = p->in_features, n = p->out_features, pairs = (n + 1) / 2;
    for (int32_t r = 0; r < p->batch; r++, input += p->in_row_stride, output += p->out_row_stride) {
        const int32_t *w = (const int32_t *)p->weights;
        for (int32_t j = 0, np = 8; j < pairs; np >>= (pairs - j < np)) {
            if (pairs - j >= np) {
                const int32_t nout = n - 2 * j < 2 * np ? n - 2 * j : 2 * np;
                ek__rv_fc_pair_blocks(input, w, k, np, nout, p->bias + 2 * j, p->requant + 8 * j, &rq,
                                      output + 2 * j);
                j += np;
                w += np * k;
            }
        }
    }
    return EK_NN_OK;
}

/* ---- depthwise 3x3 -------------------------------------------------------------------------------------------- */

/* Every output row of every channel, one channel at a time. A row reads the 3 input rows at its kernel rows from
 * input column 0 of the channel (a row in the padding points at a real row and gets zero weights); a plane column j
 * is input column j - pad_left, the zero point's value outside the input (the bias folds the zero point of the taps
 * used: bias - x_zp * their weights). Each column read is added into the outputs that use it: at stride 1 it
 * completes output x (taps w2, w5, w8), adds to x + 1 (w1, w4, w7) and starts x + 2 (w0, w3, w6); at stride 2 the
 * odd columns add the middle taps, the even ones complete output x and start x + 1. */
/* The inner loops on RV32 in asm: GCC keeps a pointer per input row and spills a requantisation constant; with
 * the rows rs apart, one pointer does, and the 26 values fit the registers. Per output at stride 1: 3 LB (+ 2 ADD
 * for their addresses, 1 to step), 9 MUL + 9 ADD, MULH + ADD + SRA, two clamp branches, SB, step and loop = 32;
 * at stride 2 (two columns per output) 39. The C loops below compute the same. */
#if defined(__riscv) && __riscv_xlen == 32 && !defined(EK_NN_NO_ASM)
#define EK__RV_ASM 1
#define EK__RV_COLUMN_ASM(w_a, w_b, w_c, acc)                                                                      \
    "   lb      %[xa], 0(%[r0])\n"                                                                                 \
    "   add     %[t], %[r0], %[rs]\n"                                                                              \
    "   lb      %[xb], 0(%[t])\n"                                                                                  \
    "   add     %[t], %[t], %[rs]\n"                                                                               \
    "   lb      %[xc], 0(%[t])\n"                                                                                  \
    "   add     %[r0], %[r0], %[C]\n"                                                                              \
    "   mul     %[t], %[xa], %[" w_a "]\n"                                                                         \
    "   add     %[" acc "], %[" acc "], %[t]\n"                                                                    \
    "   mul     %[t], %[xb], %[" w_b "]\n"                                                                         \
    "   add     %[" acc "], %[" acc "], %[t]\n"                                                                    \
    "   mul     %[t], %[xc], %[" w_c "]\n"                                                                         \
    "   add     %[" acc "], %[" acc "], %[t]\n"
#define EK__RV_TAPS_ASM(w_a, w_b, w_c, dst, src)                                                                   \
    "   mul     %[t], %[xa], %[" w_a "]\n"                                                                         \
    "   add     %[" dst "], %[" src "], %[t]\n"                                                                    \
    "   mul     %[t], %[xb], %[" w_b "]\n"                                                                         \
    "   add     %[" dst "], %[" dst "], %[t]\n"                                                                    \
    "   mul     %[t], %[xc], %[" w_c "]\n"                                                                         \
    "   add     %[" dst "], %[" dst "], %[t]\n"
#define EK__RV_STORE_ASM                                                                                           \
    "   mulh    %[oa], %[oa], %[m]\n"                                                                              \
    "   add     %[oa], %[oa], %[add]\n"                                                                            \
    "   sra     %[oa], %[oa], %[sh]\n"                                                                             \
    "   bge     %[oa], %[lo], 2f\n"                                                                                \
    "   mv      %[oa], %[lo]\n"                                                                                    \
    "2: ble     %[oa], %[hi], 3f\n"                                                                                \
    "   mv      %[oa], %[hi]\n"                                                                                    \
    "3: sb      %[oa], 0(%[out])\n"
#define EK__RV_DW_ASM_OPERANDS                                                                                     \
    : [r0] "+r"(r0), [out] "+r"(out), [oa] "+r"(oa), [ob] "+r"(ob), [xa] "=&r"(xa_), [xb] "=&r"(xb_),             \
      [xc] "=&r"(xc_), [t] "=&r"(t_)                                                                               \
    : [end] "r"(out_b), [rs] "r"(rs), [C] "r"(C), [w0] "r"(w0), [w1] "r"(w1), [w2] "r"(w2), [w3] "r"(w3),         \
      [w4] "r"(w4), [w5] "r"(w5), [w6] "r"(w6), [w7] "r"(w7), [w8] "r"(w8), [b] "r"(b), [m] "r"(m),               \
      [add] "r"(add), [sh] "r"(sh), [lo] "r"(lo), [hi] "r"(hi)                                                     \
    : "memory"
/* stride 1: the column completes oa (output x), adds to ob (x + 1) and starts x + 2 */
#define EK__RV_DW3S1_ASM()                                                                                         \
    do {                                                                                                           \
        int32_t xa_, xb_, xc_, t_;                                                                                 \
        __asm__ volatile("1:\n" EK__RV_COLUMN_ASM("w2", "w5", "w8", "oa") EK__RV_STORE_ASM                       \
                         EK__RV_TAPS_ASM("w1", "w4", "w7", "oa", "ob") EK__RV_TAPS_ASM("w0", "w3", "w6", "ob", "b") \
                         "   add     %[out], %[out], %[C]\n"                                                       \
                         "   bltu    %[out], %[end], 1b\n" EK__RV_DW_ASM_OPERANDS);                                \
    } while (0)
/* stride 2: column 2x + 1 adds the middle taps, column 2x + 2 completes output x and starts x + 1 */
#define EK__RV_DW3S2_ASM()                                                                                         \
    do {                                                                                                           \
        int32_t xa_, xb_, xc_, t_;                                                                                 \
        __asm__ volatile("1:\n" EK__RV_COLUMN_ASM("w1", "w4", "w7", "oa") EK__RV_COLUMN_ASM("w2", "w5", "w8", "oa") \
                         EK__RV_STORE_ASM EK__RV_TAPS_ASM("w0", "w3", "w6", "oa", "b")                             \
                         "   add     %[out], %[out], %[C]\n"                                                       \
                         "   bltu    %[out], %[end], 1b\n" EK__RV_DW_ASM_OPERANDS);                                \
    } while (0)

/* The rows of one channel whose kernel rows are inside the input, at stride_w 1 with one column of left padding
 * (the usual "same" 3x3): the row loop in asm, the channel's weights and constants in registers throughout,
 * so that a row costs its prologue (column 0 is the zero point: b + z0; column 1 loaded), the outputs (32 each) and
 * its right-padding outputs (from z0..z2) — about 50 instructions beside the outputs, where GCC's row set-up
 * around the inner loop took about 110. Registers: w0-w8 s0-s8, b s9, m s10, add s11, sh/lo/hi t0-t2, C a1,
 * rs a2, input a3, output a4, end a5, partials a6/a7, column t3-t5, product t6, rows left ra; a0 the arguments. */
typedef struct {
    int32_t w[9];                  /*   0 */
    int32_t b, m, add, sh, lo, hi; /*  36 */
    int32_t C, rs;                 /*  60 */
    const int8_t *in_row;          /*  68: input row of kernel row 0, column 0, the channel; advanced per row */
    int8_t *out_row;               /*  72: output row, column 0, the channel; advanced per row */
    int32_t rows;                  /*  76 */
    int32_t in_step, out_step;     /*  80: stride_h * rs, out_row_stride */
    int32_t fast_bytes;            /*  88: C * outputs whose last column is inside the input */
    int32_t tail_bytes;            /*  92: C * the others (they read the right padding) */
    int32_t bz0, z1, z2, z0;       /*  96: b + z0; zp * (sum of each kernel column) */
} ek__rv_dw3_rows_t;

void ek__rv_dw3s1_rows(ek__rv_dw3_rows_t *a);
__asm__(
    "   .pushsection .text.ek__rv_dw3s1_rows, \"ax\", @progbits\n"
    "   .balign 4\n"
    "   .globl ek__rv_dw3s1_rows\n"
    "   .type ek__rv_dw3s1_rows, @function\n"
    "ek__rv_dw3s1_rows:\n"
    "   addi    sp, sp, -64\n"
    "   sw      ra, 0(sp)\n"
    "   sw      s0, 4(sp)\n"
    "   sw      s1, 8(sp)\n"
    "   sw      s2, 12(sp)\n"
    "   sw      s3, 16(sp)\n"
    "   sw      s4, 20(sp)\n"
    "   sw      s5, 24(sp)\n"
    "   sw      s6, 28(sp)\n"
    "   sw      s7, 32(sp)\n"
    "   sw      s8, 36(sp)\n"
    "   sw      s9, 40(sp)\n"
    "   sw      s10, 44(sp)\n"
    "   sw      s11, 48(sp)\n"
    "   lw      s0, 0(a0)\n"
    "   lw      s1, 4(a0)\n"
    "   lw      s2, 8(a0)\n"
    "   lw      s3, 12(a0)\n"
    "   lw      s4, 16(a0)\n"
    "   lw      s5, 20(a0)\n"
    "   lw      s6, 24(a0)\n"
    "   lw      s7, 28(a0)\n"
    "   lw      s8, 32(a0)\n"
    "   lw      s9, 36(a0)\n"
    "   lw      s10, 40(a0)\n"
    "   lw      s11, 44(a0)\n"
    "   lw      t0, 48(a0)\n"
    "   lw      t1, 52(a0)\n"
    "   lw      t2, 56(a0)\n"
    "   lw      a1, 60(a0)\n"
    "   lw      a2, 64(a0)\n"
    "   lw      ra, 76(a0)\n"
    "   lw      a3, 68(a0)\n"
    "   lw      a4, 72(a0)\n"
    ".Lek_rv_dw_row:\n"
    "   lw      a6, 96(a0)\n"              /* column 0 (padding): output 0 = b + z0 */
    "   lb      t3, 0(a3)\n"               /* column 1 = input column 0 */
    "   add     t6, a3, a2\n"
    "   lb      t4, 0(t6)\n"
    "   add     t6, t6, a2\n"
    "   lb      t5, 0(t6)\n"
    "   add     a3, a3, a1\n"
    "   mul     t6, t3, s1\n"
    "   add     a6, a6, t6\n"
    "   mul     t6, t4, s4\n"
    "   add     a6, a6, t6\n"
    "   mul     t6, t5, s7\n"
    "   add     a6, a6, t6\n"
    "   mul     t6, t3, s0\n"
    "   add     a7, s9, t6\n"
    "   mul     t6, t4, s3\n"
    "   add     a7, a7, t6\n"
    "   mul     t6, t5, s6\n"
    "   add     a7, a7, t6\n"
    "   lw      t6, 88(a0)\n"
    "   add     a5, a4, t6\n"
    "   bgeu    a4, a5, .Lek_rv_dw_tail\n"
    ".Lek_rv_dw_col:\n"                    /* column x + 2: completes output x */
    "   lb      t3, 0(a3)\n"
    "   add     t6, a3, a2\n"
    "   lb      t4, 0(t6)\n"
    "   add     t6, t6, a2\n"
    "   lb      t5, 0(t6)\n"
    "   add     a3, a3, a1\n"
    "   mul     t6, t3, s2\n"
    "   add     a6, a6, t6\n"
    "   mul     t6, t4, s5\n"
    "   add     a6, a6, t6\n"
    "   mul     t6, t5, s8\n"
    "   add     a6, a6, t6\n"
    "   mulh    a6, a6, s10\n"
    "   add     a6, a6, s11\n"
    "   sra     a6, a6, t0\n"
    "   bge     a6, t1, 2f\n"
    "   mv      a6, t1\n"
    "2: ble     a6, t2, 3f\n"
    "   mv      a6, t2\n"
    "3: sb      a6, 0(a4)\n"
    "   mul     t6, t3, s1\n"
    "   add     a6, a7, t6\n"
    "   mul     t6, t4, s4\n"
    "   add     a6, a6, t6\n"
    "   mul     t6, t5, s7\n"
    "   add     a6, a6, t6\n"
    "   mul     t6, t3, s0\n"
    "   add     a7, s9, t6\n"
    "   mul     t6, t4, s3\n"
    "   add     a7, a7, t6\n"
    "   mul     t6, t5, s6\n"
    "   add     a7, a7, t6\n"
    "   add     a4, a4, a1\n"
    "   bltu    a4, a5, .Lek_rv_dw_col\n"
    ".Lek_rv_dw_tail:\n"                   /* outputs whose last column is padding */
    "   lw      t6, 92(a0)\n"
    "   add     a5, a4, t6\n"
    "   bgeu    a4, a5, .Lek_rv_dw_next\n"
    ".Lek_rv_dw_pad:\n"
    "   lw      t3, 104(a0)\n"
    "   add     a6, a6, t3\n"
    "   mulh    a6, a6, s10\n"
    "   add     a6, a6, s11\n"
    "   sra     a6, a6, t0\n"
    "   bge     a6, t1, 2f\n"
    "   mv      a6, t1\n"
    "2: ble     a6, t2, 3f\n"
    "   mv      a6, t2\n"
    "3: sb      a6, 0(a4)\n"
    "   lw      t3, 100(a0)\n"
    "   add     a6, a7, t3\n"
    "   lw      t3, 108(a0)\n"
    "   add     a7, s9, t3\n"
    "   add     a4, a4, a1\n"
    "   bltu    a4, a5, .Lek_rv_dw_pad\n"
    ".Lek_rv_dw_next:\n"
    "   lw      a3, 68(a0)\n"
    "   lw      t6, 80(a0)\n"
    "   add     a3, a3, t6\n"
    "   sw      a3, 68(a0)\n"
    "   lw      a4, 72(a0)\n"
    "   lw      t6, 84(a0)\n"
    "   add     a4, a4, t6\n"
    "   sw      a4, 72(a0)\n"
    "   addi    ra, ra, -1\n"
    "   bnez    ra, .Lek_rv_dw_row\n"
    "   lw      ra, 0(sp)\n"
    "   lw      s0, 4(sp)\n"
    "   lw      s1, 8(sp)\n"
    "   lw      s2, 12(sp)\n"
    "   lw      s3, 16(sp)\n"
    "   lw      s4, 20(sp)\n"
    "   lw      s5, 24(sp)\n"
    "   lw      s6, 28(sp)\n"
    "   lw      s7, 32(sp)\n"
    "   lw      s8, 36(sp)\n"
    "   lw      s9, 40(sp)\n"
    "   lw      s10, 44(sp)\n"
    "   lw      s11, 48(sp)\n"
    "   addi    sp, sp, 64\n"
    "   ret\n"
    "   .size ek__rv_dw3s1_rows, . - ek__rv_dw3s1_rows\n"
    "   .popsection\n");
#else
#define EK__RV_ASM 0
#endif

static inline __attribute__((always_inline)) void ek__rv_dw3(const ek_conv_params_t *p, const ek__rq_t *rq,
                                                            const int8_t *input, int8_t *output, const int stride2,
                                                            const int fast)
{
    const int32_t C = p->in_c, in_h = p->in_h, in_w = p->in_w, rs = p->in_row_stride, pl = p->pad_left;
    const int32_t ow = p->out_w, zp = -p->input_offset;
    const int32_t lo = rq->lo, hi = rq->hi, out_zp = rq->out_zp;
    /* outputs [xa, xb) read only columns inside the input: the loop without the padding checks */
    int32_t xa, xb;
    if (!stride2) { /* output x is completed by column x + 2 */
        xa = pl - 2 > 0 ? pl - 2 : 0;
        xb = pl + in_w - 2;
    } else {        /* output x by columns 2x + 1 and 2x + 2 */
        xa = pl / 2;
        xb = (pl + in_w - 1) / 2;
    }
    xa = xa < ow ? xa : ow;
    xb = xb < xa ? xa : xb < ow ? xb : ow;
#if EK__RV_ASM
    /* rows whose kernel rows are all inside the input: [oy_in, oy_end) go to ek__rv_dw3s1_rows */
    const int32_t sy = p->stride_h, pt = p->pad_top;
    const int32_t oy_in = (pt + sy - 1) / sy, oy_end = in_h >= 3 ? (in_h - 3 + pt) / sy + 1 : 0;
    const int rows_asm = fast && !stride2 && pl == 1 && oy_end > oy_in;
#endif
    for (int32_t ch = 0; ch < C; ch++) {
        const int8_t *const wq = p->weights + 9 * ch;
        const int32_t *const q = p->requant + 4 * ch;
        const int32_t bias = p->bias ? p->bias[ch] : 0;
        const int32_t m = q[0], add = q[1], sh = q[2];
        for (int32_t oy = 0; oy < p->out_h; oy++) {
#if EK__RV_ASM
            if (rows_asm && oy == oy_in) { /* the rows whose kernel rows are inside the input, in asm */
                ek__rv_dw3_rows_t ra;
                int32_t sum = 0;
                for (int32_t t = 0; t < 9; t++) {
                    ra.w[t] = wq[t];
                    sum += wq[t];
                }
                ra.b = (int32_t)((uint32_t)bias - (uint32_t)(zp * sum));
                ra.m = m, ra.add = add, ra.sh = sh, ra.lo = lo, ra.hi = hi, ra.C = C, ra.rs = rs;
                ra.in_row = input + (oy * sy - pt) * rs + ch;
                ra.out_row = output + oy * p->out_row_stride + ch;
                ra.rows = oy_end - oy_in;
                ra.in_step = sy * rs;
                ra.out_step = p->out_row_stride;
                ra.fast_bytes = xb * C;
                ra.tail_bytes = (ow - xb) * C;
                ra.z0 = zp * (ra.w[0] + ra.w[3] + ra.w[6]);
                ra.z1 = zp * (ra.w[1] + ra.w[4] + ra.w[7]);
                ra.z2 = zp * (ra.w[2] + ra.w[5] + ra.w[8]);
                ra.bz0 = (int32_t)((uint32_t)ra.b + (uint32_t)ra.z0);
                ek__rv_dw3s1_rows(&ra);
                oy += ra.rows - 1;
                continue;
            }
#endif
            const int32_t iy0 = oy * p->stride_h - p->pad_top;
            const int8_t *r0, *r1, *r2;
            int32_t w0 = wq[0], w1 = wq[1], w2 = wq[2], w3 = wq[3], w4 = wq[4], w5 = wq[5], w6 = wq[6], w7 = wq[7],
                    w8 = wq[8];
            if (iy0 >= 0 && iy0 + 2 < in_h) {
                r0 = input + iy0 * rs + ch;
                r1 = r0 + rs;
                r2 = r1 + rs;
            } else if (in_h >= 3) {
                /* A kernel row in the padding: read the 3 input rows from `top` on (inside the input) and give each
                 * the weights of the kernel row that meets it, zeros if none does (so the kernel rows in the
                 * padding add nothing, nor their zero point to the bias); the rows stay rs apart. */
                const int32_t top = iy0 < 0 ? 0 : in_h - 3;
                int32_t wr[9];
                for (int32_t r = 0; r < 3; r++) {
                    const int32_t kr = top + r - iy0;
                    for (int32_t t = 0; t < 3; t++) {
                        wr[3 * r + t] = kr >= 0 && kr < 3 ? wq[3 * kr + t] : 0;
                    }
                }
                w0 = wr[0], w1 = wr[1], w2 = wr[2], w3 = wr[3], w4 = wr[4], w5 = wr[5], w6 = wr[6], w7 = wr[7];
                w8 = wr[8];
                r0 = input + top * rs + ch;
                r1 = r0 + rs;
                r2 = r1 + rs;
            } else { /* fewer than 3 input rows: zero weights, and any real row to read */
                const int8_t *const top = input + ch, *const last = input + (in_h - 1) * rs + ch;
                r0 = iy0 < 0 ? top : iy0 >= in_h ? last : input + iy0 * rs + ch;
                r1 = iy0 + 1 < 0 ? top : iy0 + 1 >= in_h ? last : input + (iy0 + 1) * rs + ch;
                r2 = iy0 + 2 < 0 ? top : iy0 + 2 >= in_h ? last : input + (iy0 + 2) * rs + ch;
                if ((uint32_t)iy0 >= (uint32_t)in_h) {
                    w0 = w1 = w2 = 0;
                }
                if ((uint32_t)(iy0 + 1) >= (uint32_t)in_h) {
                    w3 = w4 = w5 = 0;
                }
                if ((uint32_t)(iy0 + 2) >= (uint32_t)in_h) {
                    w6 = w7 = w8 = 0;
                }
            }
            const uint32_t b = (uint32_t)bias - (uint32_t)(zp * (w0 + w1 + w2 + w3 + w4 + w5 + w6 + w7 + w8));
            int8_t *out = output + oy * p->out_row_stride + ch;
            int8_t *const out_a = out + xa * C, *const out_b = out + xb * C, *const out_end = out + ow * C;
            int32_t j = 0;           /* next plane column */
            uint32_t oa = 0, ob = 0; /* partial sums of the next outputs */
            int32_t a, bb, c;        /* a column's 3 values */
#define EK__RV_DW_COLUMN()                                                                                         \
    do {                                                                                                           \
        if (j >= pl && j < pl + in_w) {                                                                            \
            a = r0[0], bb = r1[0], c = r2[0];                                                                      \
            r0 += C, r1 += C, r2 += C;                                                                             \
        } else {                                                                                                   \
            a = bb = c = zp;                                                                                       \
        }                                                                                                          \
        j++;                                                                                                       \
    } while (0)
#define EK__RV_FAST_COLUMN()                                                                                       \
    do {                                                                                                           \
        a = r0[0], bb = r1[0], c = r2[0];                                                                          \
        r0 += C, r1 += C, r2 += C;                                                                                 \
    } while (0)
#define EK__RV_T(x, y, z) ((uint32_t)(a * (x)) + (uint32_t)(bb * (y)) + (uint32_t)(c * (z)))
#define EK__RV_OUT(v)                                                                                              \
    (out[0] = fast ? (int8_t)ek__rv_requant((int32_t)(v), m, add, sh, lo, hi)                                      \
                   : ek__rv_requant_generic((int32_t)(v), q, out_zp, lo, hi))
#define EK__RV_ZP(x, y, z) ((uint32_t)(zp * ((x) + (y) + (z)))) /* a column in the padding */
            if (!stride2) {
                /* columns 0 and 1: output 0's first two taps, output 1's first */
                if (pl == 1) { /* (the usual padding: a column of the zero point, then input column 0) */
                    oa = b + EK__RV_ZP(w0, w3, w6);
                    EK__RV_FAST_COLUMN();
                    oa += EK__RV_T(w1, w4, w7);
                    ob = b + EK__RV_T(w0, w3, w6);
                    j = 2;
                } else {
                    EK__RV_DW_COLUMN();
                    oa = b + EK__RV_T(w0, w3, w6);
                    EK__RV_DW_COLUMN();
                    oa += EK__RV_T(w1, w4, w7);
                    ob = b + EK__RV_T(w0, w3, w6);
                }
#define EK__RV_S1_STEP(COLUMN)                                                                                     \
    do {                                                                                                           \
        COLUMN();                                                                                                  \
        const uint32_t done = oa + EK__RV_T(w2, w5, w8);                                                           \
        oa = ob + EK__RV_T(w1, w4, w7);                                                                            \
        ob = b + EK__RV_T(w0, w3, w6);                                                                             \
        EK__RV_OUT(done);                                                                                          \
    } while (0)
                for (; out < out_a; out += C) {
                    EK__RV_S1_STEP(EK__RV_DW_COLUMN);
                }
#if EK__RV_ASM
                if (fast && out < out_b && r1 == r0 + rs && r2 == r1 + rs) {
                    EK__RV_DW3S1_ASM();
                    r1 = r0 + rs;
                    r2 = r1 + rs;
                }
#endif
                for (; out < out_b; out += C) {
                    EK__RV_S1_STEP(EK__RV_FAST_COLUMN);
                }
                if (out < out_end) { /* the rest read the right padding only */
                    const uint32_t z0 = EK__RV_ZP(w0, w3, w6), z1 = EK__RV_ZP(w1, w4, w7), z2 = EK__RV_ZP(w2, w5, w8);
                    for (; out < out_end; out += C) {
                        const uint32_t done = oa + z2;
                        oa = ob + z1;
                        ob = b + z0;
                        EK__RV_OUT(done);
                    }
                }
#undef EK__RV_S1_STEP
            } else {
                if (pl == 1) { /* column 0: output 0's first tap */
                    oa = b + EK__RV_ZP(w0, w3, w6);
                    j = 1;
                } else {
                    EK__RV_DW_COLUMN();
                    oa = b + EK__RV_T(w0, w3, w6);
                }
#define EK__RV_S2_STEP(COLUMN)                                                                                     \
    do {                                                                                                           \
        COLUMN();                                                                                                  \
        oa += EK__RV_T(w1, w4, w7);                                                                                \
        COLUMN();                                                                                                  \
        const uint32_t done = oa + EK__RV_T(w2, w5, w8);                                                           \
        oa = b + EK__RV_T(w0, w3, w6);                                                                             \
        EK__RV_OUT(done);                                                                                          \
    } while (0)
                for (; out < out_a; out += C) {
                    EK__RV_S2_STEP(EK__RV_DW_COLUMN);
                }
#if EK__RV_ASM
                if (fast && out < out_b && r1 == r0 + rs && r2 == r1 + rs) {
                    EK__RV_DW3S2_ASM();
                    r1 = r0 + rs;
                    r2 = r1 + rs;
                }
#endif
                for (; out < out_b; out += C) {
                    EK__RV_S2_STEP(EK__RV_FAST_COLUMN);
                }
                j += 2 * (xb - xa);
                for (; out < out_end; out += C) {
                    EK__RV_S2_STEP(EK__RV_DW_COLUMN);
                }
#undef EK__RV_S2_STEP
            }
            (void)ob;
#undef EK__RV_ZP
#undef EK__RV_OUT
#undef EK__RV_T
#undef EK__RV_FAST_COLUMN
#undef EK__RV_DW_COLUMN
        }
    }
}

/* (one copy per stride for the fast requantisation, one for the 64-bit form, rare: compiled for size) */
static __attribute__((noinline, optimize("no-schedule-insns"))) void ek__rv_dw3_s1(const ek_conv_params_t *p, const ek__rq_t *rq,
                                                    const int8_t *input, int8_t *output)
{
    ek__rv_dw3(p, rq, input, output, 0, 1);
}

static __attribute__((noinline, optimize("no-schedule-insns"))) void ek__rv_dw3_s2(const ek_conv_params_t *p, const ek__rq_t *rq,
                                                    const int8_t *input, int8_t *output)
{
    ek__rv_dw3(p, rq, input, output, 1, 1);
}

static __attribute__((noinline, optimize("Os"))) void ek__rv_dw3_generic(const ek_conv_params_t *p, const ek__rq_t *rq,
                                                         const int8_t *input, int8_t *output)
{
    if (p->stride_w == 2) {
        ek__rv_dw3(p, rq, input, output, 1, 0);
    } else {
        ek__rv_dw3(p, rq, input, output, 0, 0);
    }
}

/* 3x3, dilation 1, stride_w 1 or 2 (kernel_pack sets EK_NN_FLAG_RV only then); weights [C][9] as in PyTorch, bias
 * [C] or NULL, as given. */
static int ek__rv_depthwise3x3(const ek_conv_params_t *p, const int8_t *input, int8_t *output)
{
    if (p->kernel_h != 3 || p->kernel_w != 3 || p->dilation_h != 1 || p->dilation_w != 1 ||
        (p->stride_w != 1 && p->stride_w != 2)) {
        return EK_NN_ERR_ARG;
    }
    ek__rq_t rq;
    ek__rq_init(&rq, p->flags, p->output_offset, p->act_min, p->act_max);
    if (!rq.fast) {
        ek__rv_dw3_generic(p, &rq, input, output);
    } else if (p->stride_w == 2) {
        ek__rv_dw3_s2(p, &rq, input, output);
    } else {
        ek__rv_dw3_s1(p, &rq, input, output);
    }
    return EK_NN_OK;
}
#endif

/* ===============================================================================================================
 * Convolution
 * ============================================================================================================= */

/*
 * The reduction axis is cut into runs of input bytes that are contiguous in memory: one run per kernel row
 * (kernel_w * in_c bytes) when dilation_w == 1, else one per kernel tap (in_c bytes). Each run is padded to an even
 * length; within it every group of 4 elements is stored in the order (0, 2, 1, 3), so that SXTAB16 of one input
 * word and of that word rotated by 8 give the two int16 pairs directly. kernel_pack.py applies the same order.
 */
typedef struct {
    int32_t runs, run_len, run_pairs; /* runs per pixel, bytes per run, int16 pairs per run */
    int32_t tail;                     /* 1: odd kernel-row runs, each run's last byte paired after all runs */
    int32_t k_pairs, skip;            /* int16 pairs per pixel; unrolled steps skipped at the loop entry */
    int32_t pair_bytes;               /* tile bytes per pixel pair: k_pairs x 2 words + two output offsets */
    int32_t blocks, full_blocks;      /* groups of 4 output channels */
    int32_t bias_blocks;              /* blocks whose biases sit in scratch at once: all, or 1 (BIAS_PER_BLOCK) */
    size_t tile_bytes, wcache_bytes, accbuf_bytes, runbuf_bytes;
} ek__conv_geom_t;

static void ek__conv_geom(const ek_conv_params_t *p, ek__conv_geom_t *g)
{
    if (p->dilation_w == 1 && !(p->flags & EK_NN_FLAG_TAP_RUNS)) {
        g->runs = p->kernel_h;
        g->run_len = p->kernel_w * p->in_c;
    } else {
        g->runs = p->kernel_h * p->kernel_w;
        g->run_len = p->in_c;
    }
    /* several odd kernel-row runs (first layers: 3x3 x 3 channels) pair their last bytes after all runs instead
     * of padding each run (14 pairs instead of 15); kernel_pack.conv_k_pairs says the same */
    g->tail = p->dilation_w == 1 && !(p->flags & EK_NN_FLAG_TAP_RUNS) && g->runs >= 2 && (g->run_len & 1);
    g->run_pairs = (g->run_len - g->tail + 1) / 2;
    g->k_pairs = g->runs * g->run_pairs + (g->tail ? (g->runs + 1) / 2 : 0);
    g->skip = (EK_CONV_UNROLL - g->k_pairs % EK_CONV_UNROLL) % EK_CONV_UNROLL;
    g->pair_bytes = (g->k_pairs + 1) * 8;
    g->blocks = (p->out_c + 3) / 4;
    g->full_blocks = p->out_c / 4;
    g->bias_blocks = (p->flags & EK_NN_FLAG_BIAS_PER_BLOCK) ? 1 : g->blocks;
    g->tile_bytes = (size_t)(p->tile_pixels / 2) * (size_t)g->pair_bytes;
    g->wcache_bytes = (p->flags & EK_NN_FLAG_WIDE_WEIGHTS) ? 0u :
        (size_t)((p->flags & EK_NN_FLAG_CACHE_ALL_WEIGHTS) ? g->blocks : 1) * (size_t)g->k_pairs * 16u;
    g->accbuf_bytes = (size_t)(p->tile_pixels / 2) * 32u;
    g->runbuf_bytes = 3 * ((size_t)(g->run_len + 3) & ~(size_t)3); /* two pixels' edge runs, one all-padding run */
}

/* 1x1 record stream (EK_NN_FLAG_1X1_STREAM, below): words per output channel, and the scratch it needs */
static int32_t ek__s1x1_record_words(const ek_conv_params_t *p) { return p->in_c / 2 + 4; }

static size_t ek__s1x1_scratch_bytes(const ek_conv_params_t *p)
{ /* the records, then one block's widened weights while they are built */
    return (size_t)p->out_c * (size_t)ek__s1x1_record_words(p) * 4u + (size_t)(p->in_c / 2) * 16u;
}

size_t ek_conv2d_s8_scratch_bytes(const ek_conv_params_t *p)
{
    if (p->flags & EK_NN_FLAG_MVE) { /* tile_pixels windows (im2col), unless a 1x1 without padding reads in place */
        const int direct = p->kernel_h == 1 && p->kernel_w == 1 &&
                           !(p->pad_top | p->pad_bottom | p->pad_left | p->pad_right);
        return direct ? 0u : ((size_t)(p->tile_pixels * p->kernel_h * p->kernel_w * p->in_c) + 3u) & ~(size_t)3;
    }
    if (p->flags & EK_NN_FLAG_RV) { /* one 4-pixel im2col tile */
        return ((size_t)(4 * p->kernel_h * p->kernel_w * p->in_c) + 3u) & ~(size_t)3;
    }
    if (p->flags & EK_NN_FLAG_CONV_C1) { /* taps in registers, records in flash */
        return 0u;
    }
    if (p->flags & EK_NN_FLAG_CONV_FC) { /* the FC kernel's prepared row and the window as bytes: 3 per input */
        return 3u * (((size_t)(p->kernel_h * p->kernel_w * p->in_c) + 3u) & ~(size_t)3);
    }
    ek__conv_geom_t g;
    ek__conv_geom(p, &g);
    const size_t tiles = g.tile_bytes + g.wcache_bytes + g.accbuf_bytes + 32u * (size_t)g.bias_blocks + g.runbuf_bytes;
    if (p->flags & EK_NN_FLAG_1X1_STREAM) { /* kernel_pack keeps the tile layout's size (plans do not see scales) */
        const size_t records = ek__s1x1_scratch_bytes(p);
        return records > tiles ? records : tiles;
    }
    return tiles;
}

static int ek__conv_check(const ek_conv_params_t *p)
{
    if (p->in_h < 1 || p->in_w < 1 || p->in_c < 1 || p->out_h < 1 || p->out_w < 1 || p->out_c < 1 ||
        p->kernel_h < 1 || p->kernel_w < 1 || p->stride_h < 1 || p->stride_w < 1 || p->dilation_h < 1 ||
        p->dilation_w < 1 || p->pad_top < 0 || p->pad_left < 0 || p->pad_bottom < 0 || p->pad_right < 0 ||
        p->in_row_stride < p->in_w * p->in_c || p->out_row_stride < p->out_w * p->out_c) {
        return EK_NN_ERR_ARG;
    }
    /* the output window must be what the input window, padding, kernel, stride and dilation give */
    if ((p->out_h - 1) * p->stride_h + (p->kernel_h - 1) * p->dilation_h + 1 > p->in_h + p->pad_top + p->pad_bottom ||
        (p->out_w - 1) * p->stride_w + (p->kernel_w - 1) * p->dilation_w + 1 > p->in_w + p->pad_left + p->pad_right) {
        return EK_NN_ERR_ARG;
    }
    if (!ek__aligned(p->weights) || !ek__aligned(p->requant) || (p->bias && !ek__aligned(p->bias))) {
        return EK_NN_ERR_ALIGN;
    }
    return EK_NN_OK;
}

/* Tail of a run (len = 1..3 bytes) for both pixels of a pair. */
static void ek__cvt_tail(const int8_t *s0, const int8_t *s1, int32_t len, int32_t off, uint32_t *dst)
{
    if (len == 1) {
        dst[0] = ek__pack16(s0[0] + off, 0);
        dst[1] = ek__pack16(s1[0] + off, 0);
    } else {
        dst[0] = ek__pack16(s0[0] + off, s0[1] + off);
        dst[1] = ek__pack16(s1[0] + off, s1[1] + off);
        if (len == 3) {
            dst[2] = ek__pack16(s0[2] + off, 0);
            dst[3] = ek__pack16(s1[2] + off, 0);
        }
    }
}

/* One run of both pixels of a pair: len int8 each -> int16 (+offset) pairs in the run order above, interleaved
 * {pixel 0, pixel 1} per pair. Writes 2 * ceil(len / 2) words. */
/* (not inlined: its asm claims r4-r11, which would make the callers spill) */
static __attribute__((noinline)) uint32_t *ek__cvt_pair(const int8_t *s0, const int8_t *s1, int32_t len,
                                                         uint32_t off2, uint32_t *dst)
{
#if EK_NN_DSP
    int32_t n8 = len >> 3;
    if (n8) {
        /* 16 bytes in, 8 words out: 4 LDR, 8 SXTAB16, 2 STM, loop = 16 instructions */
        __asm__ volatile(
            "1: ldr     r4, [%[s0]], #4\n"
            "   ldr     r5, [%[s1]], #4\n"
            "   ldr     r6, [%[s0]], #4\n"
            "   ldr     r7, [%[s1]], #4\n"
            "   sxtab16 r8, %[o], r4\n"
            "   sxtab16 r9, %[o], r5\n"
            "   sxtab16 r10, %[o], r4, ror #8\n"
            "   sxtab16 r11, %[o], r5, ror #8\n"
            "   stm     %[d]!, {r8-r11}\n"
            "   sxtab16 r8, %[o], r6\n"
            "   sxtab16 r9, %[o], r7\n"
            "   sxtab16 r10, %[o], r6, ror #8\n"
            "   sxtab16 r11, %[o], r7, ror #8\n"
            "   stm     %[d]!, {r8-r11}\n"
            "   subs    %[n], %[n], #1\n"
            "   bne     1b\n"
            : [s0] "+r"(s0), [s1] "+r"(s1), [d] "+r"(dst), [n] "+r"(n8)
            : [o] "r"(off2)
            : "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "memory", "cc");
    }
    len &= 7;
#else
    /* Without SIMD: one byte load, add and halfword store per element, in SXTAB16's order (bytes 0 and 2 of a
     * word in one pair, 1 and 3 in the next), written through an int16 view of the pair words. */
    const int32_t o = ek__lo16(off2);
    for (; len >= 4; len -= 4, s0 += 4, s1 += 4, dst += 4) {
        ek__h16 *d = (ek__h16 *)dst;
        d[0] = (int16_t)(s0[0] + o);
        d[1] = (int16_t)(s0[2] + o);
        d[2] = (int16_t)(s1[0] + o);
        d[3] = (int16_t)(s1[2] + o);
        d[4] = (int16_t)(s0[1] + o);
        d[5] = (int16_t)(s0[3] + o);
        d[6] = (int16_t)(s1[1] + o);
        d[7] = (int16_t)(s1[3] + o);
    }
#endif
    if (len >= 4) {
        const uint32_t x0 = ek__read_u32(s0), x1 = ek__read_u32(s1);
        dst[0] = ek__sxtab16(off2, x0);
        dst[1] = ek__sxtab16(off2, x1);
        dst[2] = ek__sxtab16_ror8(off2, x0);
        dst[3] = ek__sxtab16_ror8(off2, x1);
        len -= 4;
        s0 += 4;
        s1 += 4;
        dst += 4;
    }
    if (len) {
        ek__cvt_tail(s0, s1, len, ek__lo16(off2), dst);
        dst += len == 3 ? 4 : 2;
    }
    return dst;
}

/* Where run r of the pixel whose first tap is at (iy0, ix0) comes from: the input itself, a copy in runbuf with
 * zero-point bytes where the run leaves the input (they become 0), or zp_run (all padding). */
static const int8_t *ek__run_src(const ek_conv_params_t *p, const ek__conv_geom_t *g, const int8_t *in, int32_t iy0,
                                 int32_t ix0, int32_t r, int8_t *runbuf, const int8_t *zp_run)
{
    const int32_t c = p->in_c;
    if (p->dilation_w == 1 && !(p->flags & EK_NN_FLAG_TAP_RUNS)) {
        const int32_t iy = iy0 + r * p->dilation_h;
        if ((uint32_t)iy >= (uint32_t)p->in_h) {
            return zp_run;
        }
        const int8_t *row = in + iy * p->in_row_stride;
        if (ix0 >= 0 && ix0 + p->kernel_w <= p->in_w) {
            return row + ix0 * c;
        }
        memcpy(runbuf, zp_run, (size_t)g->run_len);
        for (int32_t kx = 0; kx < p->kernel_w; kx++) {
            const int32_t ix = ix0 + kx;
            if ((uint32_t)ix < (uint32_t)p->in_w) {
                memcpy(runbuf + kx * c, row + ix * c, (size_t)c);
            }
        }
        return runbuf;
    }
    const int32_t ky = r / p->kernel_w, kx = r - ky * p->kernel_w;
    const int32_t iy = iy0 + ky * p->dilation_h, ix = ix0 + kx * p->dilation_w;
    if ((uint32_t)iy >= (uint32_t)p->in_h || (uint32_t)ix >= (uint32_t)p->in_w) {
        return zp_run;
    }
    return in + iy * p->in_row_stride + ix * c;
}

#if EK_NN_DSP
/* The header of the Thumb-2 asm functions that use them (each in its own section, for --gc-sections) and the
 * 44-byte frame holding a copy of an 11-word argument struct. */
__asm__(
    "   .syntax unified\n"
    "   .macro EK_FUNC name\n"
    "   .pushsection .text.\\name, \"ax\", %progbits\n"
    "   .balign 4\n"
    "   .global \\name\n"
    "   .type \\name, %function\n"
    "   .thumb_func\n"
    "\\name:\n"
    "   .endm\n"
    "   .macro EK_FRAME44\n"
    "   push    {r4-r11, lr}\n"
    "   sub     sp, sp, #44\n"
    "   ldm     r0, {r1-r11}\n"
    "   stm     sp, {r1-r11}\n"
    "   .endm\n");

/* Three runs of 9 bytes (first layers: 3x3 kernel x 3 channels) of both pixels of a pair, in one call: ek__cvt_pair's
 * words for bytes 0-7 of each run (per 4 bytes (b0, b2), (b1, b3)), then the runs' last bytes t0, t1, t2 as the
 * geometry's tail pairs (t0, t1) and (t2, 0) (SXTAB16 of the zero-extended byte with the offset in the low half
 * only): 67 instructions a pair instead of ~280 with a call per run. ctx = {off2, off2 & 0xFFFF, bytes from one run
 * to the next}. Returns the end of what it wrote (28 words). */
uint32_t *ek__cvt_rows9(const int8_t *s0, const int8_t *s1, uint32_t *dst, const uint32_t *ctx);

/* Three 9-byte kernel rows of two pixels (r0, r1; rows lr bytes apart) widened with the offset (r3, r12) into
 * 14 int16 pairs at r2 (the rows' last bytes paired after them); shared by ek__cvt_rows9 and its span loop. */
#define EK__CVT_ROWS9_BODY \
    "   .rept 3\n" \
    "   ldr     r4, [r0]\n" \
    "   ldr     r5, [r1]\n" \
    "   ldr     r6, [r0, #4]\n" \
    "   ldr     r7, [r1, #4]\n" \
    "   sxtab16 r8, r3, r4\n" \
    "   sxtab16 r9, r3, r5\n" \
    "   sxtab16 r10, r3, r4, ror #8\n" \
    "   sxtab16 r11, r3, r5, ror #8\n" \
    "   stm     r2!, {r8-r11}\n" \
    "   sxtab16 r8, r3, r6\n" \
    "   sxtab16 r9, r3, r7\n" \
    "   sxtab16 r10, r3, r6, ror #8\n" \
    "   sxtab16 r11, r3, r7, ror #8\n" \
    "   stm     r2!, {r8-r11}\n" \
    "   add     r0, r0, lr\n" \
    "   add     r1, r1, lr\n" \
    "   .endr\n" \
    "   sub     r0, r0, lr\n"                /* the last bytes: (run 0, run 1), (run 2, 0) per pixel */ \
    "   sub     r1, r1, lr\n" \
    "   ldrb    r10, [r0, #8]\n" \
    "   ldrb    r11, [r1, #8]\n" \
    "   sub     r0, r0, lr\n" \
    "   sub     r1, r1, lr\n" \
    "   ldrb    r6, [r0, #8]\n" \
    "   ldrb    r7, [r1, #8]\n" \
    "   sub     r0, r0, lr\n" \
    "   sub     r1, r1, lr\n" \
    "   ldrb    r4, [r0, #8]\n" \
    "   ldrb    r5, [r1, #8]\n" \
    "   orr     r4, r4, r6, lsl #16\n" \
    "   orr     r5, r5, r7, lsl #16\n" \
    "   sxtab16 r8, r3, r4\n" \
    "   sxtab16 r9, r3, r5\n" \
    "   sxtab16 r10, r12, r10\n" \
    "   sxtab16 r11, r12, r11\n" \
    "   stm     r2!, {r8-r11}\n"

__asm__(
    "   .syntax unified\n"
    "   EK_FUNC ek__cvt_rows9\n"
    "   push    {r4-r11, lr}\n"
    "   ldm     r3, {r3, r12, lr}\n"
    EK__CVT_ROWS9_BODY
    "   mov     r0, r2\n"
    "   pop     {r4-r11, pc}\n"
    "   .size ek__cvt_rows9, . - ek__cvt_rows9\n"
    "   .popsection\n");

/* m consecutive pairs of one output row, all inside the input (the tile's common case), with their output offsets:
 * pair j = pixels at s + 2j * in_step and s + (2j + 1) * in_step. ctx = {off2, off2 & 0xFFFF, run step, in_step,
 * out_off of the first pixel, out_c}. Each pair's 28 words and 2 offsets are its pair_bytes (k_pairs = 14). */
void ek__cvt_rows9_span(const int8_t *s, uint32_t *dst, int32_t m, const uint32_t *ctx);
__asm__(
    "   .syntax unified\n"
    "   EK_FUNC ek__cvt_rows9_span\n"
    "   push    {r4-r11, lr}\n"
    "   sub     sp, sp, #20\n"               /* frame: s, m, in_step, out_off, out_c */
    "   ldr     r4, [r3, #12]\n"
    "   ldr     r5, [r3, #16]\n"
    "   ldr     r6, [r3, #20]\n"
    "   str     r0, [sp]\n"
    "   str     r2, [sp, #4]\n"
    "   add     r7, sp, #8\n"
    "   stm     r7, {r4-r6}\n"
    "   mov     r2, r1\n"
    "   ldm     r3, {r3, r12, lr}\n"
    "1: ldrd    r0, r1, [sp]\n"              /* s (r1: m, replaced below) */
    "   ldr     r1, [sp, #8]\n"
    "   add     r1, r0, r1\n"
    EK__CVT_ROWS9_BODY
    "   add     r7, sp, #8\n"
    "   ldm     r7, {r4-r6}\n"               /* in_step, out_off, out_c */
    "   add     r7, r5, r6\n"
    "   stm     r2!, {r5, r7}\n"
    "   add     r5, r7, r6\n"
    "   str     r5, [sp, #12]\n"
    "   ldrd    r0, r1, [sp]\n"
    "   add     r0, r0, r4, lsl #1\n"
    "   subs    r1, r1, #1\n"
    "   strd    r0, r1, [sp]\n"
    "   bne     1b\n"
    "   add     sp, sp, #20\n"
    "   pop     {r4-r11, pc}\n"
    "   .size ek__cvt_rows9_span, . - ek__cvt_rows9_span\n"
    "   .popsection\n");
#endif

/* Bytes lo and hi (read unsigned) + the offset as one int16 pair word: a byte OR and one SXTAB16. */
static inline uint32_t ek__pair_u8(uint32_t off2, uint8_t lo, uint8_t hi)
{
    return ek__sxtab16(off2, (uint32_t)lo | ((uint32_t)hi << 16));
}

/* One run of both pixels of a pair whose runs are 2 bytes (after a tail byte: 1-channel 3-wide kernel rows, a 3x3
 * first layer on a grey image): (b0, b1) + the offset per pixel, written in place instead of a call of
 * ek__cvt_pair. */
static inline uint32_t *ek__cvt_pair2(const int8_t *s0, const int8_t *s1, uint32_t off2, uint32_t *dst)
{
    const uint8_t *a = (const uint8_t *)s0, *b = (const uint8_t *)s1;
    dst[0] = ek__pair_u8(off2, a[0], a[1]);
    dst[1] = ek__pair_u8(off2, b[0], b[1]);
    return dst + 2;
}

/* Run r's last bytes b0, b1 (pixels 0 and 1) into the pairs after all runs (geometry tail): runs 2j and 2j + 1
 * share pair j, the low halves from the even run; a last odd run's pair has zero high halves. */
static inline void ek__put_tail(uint32_t *tails, int32_t r, int32_t b0, int32_t b1, int32_t off)
{
    uint32_t *t = tails + 2 * (r >> 1);
    if (r & 1) {
        t[0] |= (uint32_t)(uint16_t)(b0 + off) << 16;
        t[1] |= (uint32_t)(uint16_t)(b1 + off) << 16;
    } else {
        t[0] = (uint16_t)(b0 + off);
        t[1] = (uint16_t)(b1 + off);
    }
}

/* Three runs of 3 bytes (a 3x3 kernel on a 1-channel input) of both pixels of a pair, straight-line: per run the
 * pair (b0, b1), then the tail pairs (t0, t1) and (t2, 0), ~5 instructions a word (~213 a pair with a run at a
 * time). Rows are ``step`` bytes apart. */
static __attribute__((noinline)) uint32_t *ek__cvt_rows3(const int8_t *s0, const int8_t *s1, int32_t step,
                                                          uint32_t off2, uint32_t *dst)
{
    const uint8_t *a0 = (const uint8_t *)s0, *b0 = (const uint8_t *)s1;
    const uint8_t *a1 = a0 + step, *b1 = b0 + step, *a2 = a1 + step, *b2 = b1 + step;
    const uint32_t off_lo = off2 & 0xFFFFu;
    dst[0] = ek__pair_u8(off2, a0[0], a0[1]);
    dst[1] = ek__pair_u8(off2, b0[0], b0[1]);
    dst[2] = ek__pair_u8(off2, a1[0], a1[1]);
    dst[3] = ek__pair_u8(off2, b1[0], b1[1]);
    dst[4] = ek__pair_u8(off2, a2[0], a2[1]);
    dst[5] = ek__pair_u8(off2, b2[0], b2[1]);
    dst[6] = ek__pair_u8(off2, a0[2], a1[2]);
    dst[7] = ek__pair_u8(off2, b0[2], b1[2]);
    dst[8] = ek__sxtab16(off_lo, a2[2]);
    dst[9] = ek__sxtab16(off_lo, b2[2]);
    return dst + 10;
}

/* Both pixels of a pair whose kernel windows are at s0 and s1, dilation_w == 1: the runs are kernel rows, ``step``
 * bytes apart (the input's rows, or a window gathered at the border). */
static inline __attribute__((always_inline)) uint32_t *ek__im2col_pair_rows(const ek__conv_geom_t *g,
    const int8_t *s0, const int8_t *s1, int32_t step, uint32_t off2, uint32_t *dst)
{
#if EK_NN_DSP
    if (g->tail && g->runs == 3 && g->run_len == 9) {
        const uint32_t ctx[3] = {off2, off2 & 0xFFFFu, (uint32_t)step};
        return ek__cvt_rows9(s0, s1, dst, ctx);
    }
#endif
    if (g->tail && g->runs == 3 && g->run_len == 3) {
        return ek__cvt_rows3(s0, s1, step, off2, dst);
    }
    if (!g->tail) {
        for (int32_t r = 0; r < g->runs; r++, s0 += step, s1 += step) {
            dst = ek__cvt_pair(s0, s1, g->run_len, off2, dst);
        }
        return dst;
    }
    const int32_t len = g->run_len - 1;
    uint32_t *tails = dst + 2 * g->run_pairs * g->runs; /* 2 words (pixels 0, 1) per pair */
    for (int32_t r = 0; r < g->runs; r++, s0 += step, s1 += step) {
        dst = len == 2 ? ek__cvt_pair2(s0, s1, off2, dst) : ek__cvt_pair(s0, s1, len, off2, dst);
        ek__put_tail(tails, r, s0[len], s1[len], ek__lo16(off2));
    }
    return tails + 2 * ((g->runs + 1) / 2);
}

/* The window of the pixel whose first tap is at (iy0, ix0) (dilation_w 1, kernel rows dilation_h apart) as its
 * kernel rows back to back, the zero point ``zp`` where it leaves the input. */
#define EK__SMALL_WINDOW 48 /* kernel_pack.SMALL_WINDOW */
static inline void ek__gather_window(const ek_conv_params_t *p, const int8_t *in, int32_t iy0, int32_t ix0,
                                     int8_t zp, int8_t *w)
{
    const int32_t c = p->in_c, run = p->kernel_w * c;
    const int32_t lo = ix0 < 0 ? -ix0 * c : 0; /* bytes of the run left of the input */
    const int32_t end = (p->in_w - ix0) * c;   /* bytes before the right edge */
    const int32_t hi = end < run ? end : run;
    for (int32_t ky = 0; ky < p->kernel_h; ky++, w += run) {
        const int32_t iy = iy0 + ky * p->dilation_h;
        int32_t j = 0;
        if ((uint32_t)iy < (uint32_t)p->in_h) {
            const int8_t *src = in + iy * p->in_row_stride + ix0 * c;
            for (; j < lo; j++) {
                w[j] = zp;
            }
            for (; j < hi; j++) {
                w[j] = src[j];
            }
        }
        for (; j < run; j++) {
            w[j] = zp;
        }
    }
}

/* Both pixels of a pair at the border whose windows are small (first layers): gathered, then widened as if inside
 * (not inlined: a border path, kept out of the tile loop's code). */
static __attribute__((noinline)) uint32_t *ek__im2col_pair_gathered(const ek_conv_params_t *p,
    const ek__conv_geom_t *g, const int8_t *in, int32_t ay, int32_t ax, int32_t by, int32_t bx, int8_t zp,
    uint32_t off2, uint32_t *dst)
{
    int8_t w0[EK__SMALL_WINDOW], w1[EK__SMALL_WINDOW];
    ek__gather_window(p, in, ay, ax, zp, w0);
    ek__gather_window(p, in, by, bx, zp, w1);
    return ek__im2col_pair_rows(g, w0, w1, g->run_len, off2, dst);
}

/* The same with one run per kernel tap (EK_NN_FLAG_TAP_RUNS: nested weights). */
static inline __attribute__((always_inline)) uint32_t *ek__im2col_pair_taps(const ek_conv_params_t *p,
    const ek__conv_geom_t *g, const int8_t *s0, const int8_t *s1, uint32_t off2, uint32_t *dst)
{
    const int32_t step = p->dilation_h * p->in_row_stride;
    for (int32_t ky = 0; ky < p->kernel_h; ky++, s0 += step, s1 += step) {
        for (int32_t kx = 0; kx < p->kernel_w; kx++) {
            dst = ek__cvt_pair(s0 + kx * p->in_c, s1 + kx * p->in_c, g->run_len, off2, dst);
        }
    }
    return dst;
}

/* Pixels pix0 .. pix0+n-1 (row-major over the output window) into the tile. Pair j occupies pair_bytes:
 * k_pairs x {pixel 0 pair, pixel 1 pair}, then the two pixels' byte offsets in the output. An odd last pixel is
 * duplicated (its result is then stored twice, to the same place). */
typedef struct {
    int32_t oy, ox;   /* output position */
    int32_t iy, ix;   /* input position of its first kernel tap (may be in the padding) */
    int32_t in_off;   /* iy * in_row_stride + ix * in_c */
    int32_t out_off;  /* oy * out_row_stride + ox * out_c */
} ek__pix_t;

static inline void ek__pix_next(const ek_conv_params_t *p, ek__pix_t *q)
{
    if (++q->ox < p->out_w) {
        q->ix += p->stride_w;
        q->in_off += p->stride_w * p->in_c;
        q->out_off += p->out_c;
        return;
    }
    q->ox = 0;
    q->oy++;
    q->iy += p->stride_h;
    q->ix = -p->pad_left;
    q->in_off = q->iy * p->in_row_stride + q->ix * p->in_c;
    q->out_off = q->oy * p->out_row_stride;
}

static void ek__im2col_tile(const ek_conv_params_t *p, const ek__conv_geom_t *g, const int8_t *in, uint32_t *tile,
                            int32_t pix0, int32_t n, int8_t *runbuf, const int8_t *zp_run)
{
    const int32_t pw = g->pair_bytes / 4;
    const int no_pad = p->pad_top == 0 && p->pad_left == 0 && p->pad_bottom == 0 && p->pad_right == 0;
    const int is_1x1 = p->kernel_h == 1 && p->kernel_w == 1 && no_pad;
    const uint32_t off2 = ek__pack16(p->input_offset, p->input_offset);
    const int32_t span_h = (p->kernel_h - 1) * p->dilation_h + 1;
    ek__pix_t a;
    a.oy = pix0 / p->out_w;
    a.ox = pix0 - a.oy * p->out_w;
    a.iy = a.oy * p->stride_h - p->pad_top;
    a.ix = a.ox * p->stride_w - p->pad_left;
    a.in_off = a.iy * p->in_row_stride + a.ix * p->in_c;
    a.out_off = a.oy * p->out_row_stride + a.ox * p->out_c;
    /* the common case: both pixels in one output row, their windows inside the input, a's successor in the row */
    const int fast_rows = !is_1x1 && p->dilation_w == 1 && !(p->flags & EK_NN_FLAG_TAP_RUNS);
    const int32_t ix_last = p->in_w - p->kernel_w - p->stride_w; /* the last a.ix with b's window inside */
    const int32_t in_step = p->stride_w * p->in_c;
    const int32_t row_step = p->dilation_h * p->in_row_stride; /* from one kernel row's run to the next */
    /* a pair at the border with a small window (first layers): both windows gathered with the zero point where
     * they leave the input, then widened as if inside (a select a byte instead of a copy call per run) */
    const int small_win = p->dilation_w == 1 && !(p->flags & EK_NN_FLAG_TAP_RUNS) &&
                          g->runs * g->run_len <= EK__SMALL_WINDOW;
    for (int32_t i = 0; i < n; i += 2, tile += pw) {
        if (fast_rows && i + 1 < n && a.ox + 2 < p->out_w && a.ix >= 0 && a.ix <= ix_last && a.iy >= 0 &&
            a.iy + span_h <= p->in_h) {
            int32_t m = 1; /* pairs done here */
            const int rows3 = g->tail && g->runs == 3 && g->run_len == 3;
            if (rows3 || (EK_NN_DSP && g->tail && g->runs == 3 && g->run_len == 9)) {
                /* the pairs of this row whose windows stay inside, in one span */
                const int32_t m1 = (p->out_w - a.ox - 1) / 2, m2 = (ix_last - a.ix) / (2 * p->stride_w) + 1;
                const int32_t m3 = (n - i) / 2;
                m = m1 < m2 ? m1 : m2;
                m = m < m3 ? m : m3;
            }
            if (rows3) {
                const int8_t *s = in + a.in_off;
                uint32_t *d = tile;
                int32_t oo = a.out_off;
                for (int32_t j = 0; j < m; j++, s += 2 * in_step, d += pw, oo += 2 * p->out_c) {
                    uint32_t *e = ek__cvt_rows3(s, s + in_step, row_step, off2, d);
                    e[0] = (uint32_t)oo;
                    e[1] = (uint32_t)(oo + p->out_c);
                }
            } else
#if EK_NN_DSP
            if (g->tail && g->runs == 3 && g->run_len == 9) {
                const uint32_t ctx[6] = {off2, off2 & 0xFFFFu, (uint32_t)row_step, (uint32_t)in_step,
                                         (uint32_t)a.out_off, (uint32_t)p->out_c};
                ek__cvt_rows9_span(in + a.in_off, tile, m, ctx);
            } else
#endif
            {
                uint32_t *dst = ek__im2col_pair_rows(g, in + a.in_off, in + a.in_off + in_step, row_step, off2, tile);
                dst[0] = (uint32_t)a.out_off;
                dst[1] = (uint32_t)(a.out_off + p->out_c);
            }
            a.ox += 2 * m;
            a.ix += 2 * m * p->stride_w;
            a.in_off += 2 * m * in_step;
            a.out_off += 2 * m * p->out_c;
            i += 2 * (m - 1);
            tile += (m - 1) * pw;
            continue;
        }
        ek__pix_t b = a;
        if (i + 1 < n) {
            ek__pix_next(p, &b);
        }
        uint32_t *dst = tile;
        if (is_1x1) { /* one run: the input pixel itself */
            dst = ek__cvt_pair(in + a.in_off, in + b.in_off, p->in_c, off2, dst);
        } else if (p->dilation_w == 1 && a.iy >= 0 && b.iy + span_h <= p->in_h && a.ix >= 0 && b.ix >= 0 &&
                   a.ix + p->kernel_w <= p->in_w && b.ix + p->kernel_w <= p->in_w) {
            dst = (p->flags & EK_NN_FLAG_TAP_RUNS) ? ek__im2col_pair_taps(p, g, in + a.in_off, in + b.in_off, off2, dst)
                                                 : ek__im2col_pair_rows(g, in + a.in_off, in + b.in_off, row_step, off2, dst);
        } else if (small_win) {
            dst = ek__im2col_pair_gathered(p, g, in, a.iy, a.ix, b.iy, b.ix, zp_run[0], off2, dst);
        } else {
            int8_t *const runbuf1 = runbuf + g->runbuf_bytes / 3;
            if (!g->tail) {
                for (int32_t r = 0; r < g->runs; r++) {
                    const int8_t *s0 = ek__run_src(p, g, in, a.iy, a.ix, r, runbuf, zp_run);
                    const int8_t *s1 = ek__run_src(p, g, in, b.iy, b.ix, r, runbuf1, zp_run);
                    dst = ek__cvt_pair(s0, s1, g->run_len, off2, dst);
                }
            } else {
                const int32_t len = g->run_len - 1;
                uint32_t *tails = dst + 2 * g->run_pairs * g->runs; /* 2 words (pixels 0, 1) per pair */
                for (int32_t r = 0; r < g->runs; r++) {
                    const int8_t *s0 = ek__run_src(p, g, in, a.iy, a.ix, r, runbuf, zp_run);
                    const int8_t *s1 = ek__run_src(p, g, in, b.iy, b.ix, r, runbuf1, zp_run);
                    dst = ek__cvt_pair(s0, s1, len, off2, dst);
                    ek__put_tail(tails, r, s0[len], s1[len], p->input_offset);
                }
                dst = tails + 2 * ((g->runs + 1) / 2);
            }
        }
        dst[0] = (uint32_t)a.out_off;
        dst[1] = (uint32_t)b.out_off;
        a = b;
        ek__pix_next(p, &a);
    }
}

/* The packed weights of one block of 4 output channels -> int16 pairs, 4 words (c0..c3) per reduction pair.
 * A last block of nc < 4 channels is stored compactly (per pair: c0k0 c0k1 c1k0 c1k1 ...); its missing channels
 * widen to zeros. */
static void ek__widen_partial(const int8_t *wq, int32_t k_pairs, int32_t nc, uint32_t *dst)
{
    for (int32_t q = 0; q < k_pairs; q++, wq += 2 * nc, dst += 4) {
        for (int32_t c = 0; c < 4; c++) {
            dst[c] = c < nc ? ek__pack16(wq[2 * c], wq[2 * c + 1]) : 0;
        }
    }
}

#if EK_NN_DSP
void ek__widen4(const int8_t *src, uint32_t *dst, int32_t n);
/* n >= 1 reduction pairs of a block: LDRD, 4 SXTB16, STM, loop = 8 instructions per 8 weights. */
__asm__(
    "   .syntax unified\n"
    "   EK_FUNC ek__widen4\n"
    "   push    {r4-r6}\n"
    "1: ldrd    r5, r6, [r0], #8\n"
    "   sxtb16  r3, r5\n"
    "   sxtb16  r4, r5, ror #8\n"
    "   sxtb16  r5, r6\n"
    "   sxtb16  r6, r6, ror #8\n"
    "   stm     r1!, {r3-r6}\n"
    "   subs    r2, r2, #1\n"
    "   bne     1b\n"
    "   pop     {r4-r6}\n"
    "   bx      lr\n"
    "   .size ek__widen4, . - ek__widen4\n"
    "   .popsection\n");
#endif

static void ek__widen_block(const int8_t *wq, int32_t k_pairs, uint32_t *dst)
{
#if EK_NN_DSP
    ek__widen4(wq, dst, k_pairs);
#else
    const ek__word *s = (const ek__word *)wq;
    for (int32_t q = 0; q < k_pairs; q++, s += 2, dst += 4) {
        const uint32_t x = s[0], y = s[1];
        dst[0] = ek__sxtb16(x);
        dst[1] = ek__sxtb16_ror8(x);
        dst[2] = ek__sxtb16(y);
        dst[3] = ek__sxtb16_ror8(y);
    }
#endif
}

/* Block b's packed weights -> int16 pairs in dst. Dense: the block's k_pairs pairs follow each other. Nested (a
 * prefix of a wider layer's weights, kernel_pack.nested_view): blocks weight_block_bytes apart, and each of the
 * call's runs is the first run_pairs of weight_run_pairs stored pairs. */
static void ek__widen_nested(const ek_conv_params_t *p, const ek__conv_geom_t *g, int32_t b, int32_t nc,
                             uint32_t *dst)
{
    const int32_t per_pair = nc == 4 ? 8 : 2 * nc; /* stored bytes per reduction pair */
    const int32_t block_bytes = p->weight_block_bytes ? p->weight_block_bytes : g->k_pairs * 8;
    const int8_t *wq = p->weights + b * block_bytes;
    if (!p->weight_run_pairs || p->weight_run_pairs == g->run_pairs) {
        if (nc == 4) {
            ek__widen_block(wq, g->k_pairs, dst);
        } else {
            ek__widen_partial(wq, g->k_pairs, nc, dst);
        }
        return;
    }
    for (int32_t r = 0; r < g->runs; r++, wq += p->weight_run_pairs * per_pair, dst += 4 * g->run_pairs) {
        if (nc == 4) {
            ek__widen_block(wq, g->run_pairs, dst);
        } else {
            ek__widen_partial(wq, g->run_pairs, nc, dst);
        }
    }
}

#if EK_NN_DSP
typedef struct {
    const uint32_t *act;     /*  0: tile start */
    const uint32_t *act_end; /*  4: after the last pair */
    const uint32_t *w_start; /*  8: widened block */
    uint32_t entry;          /* 12: set by the asm */
    const uint32_t *w_end;   /* 16: end of the widened block */
    const int32_t *bias8;    /* 20: the block's 4 biases, twice */
    const int32_t *qtab;     /* 24: requant entries of the block's 4 channels */
    uint32_t upper4;         /* 28: act_max - act_min - 128, in each byte */
    uint32_t back4;          /* 32: act_min + 128, in each byte */
    int8_t *out;             /* 36: output + 4 * block */
    int32_t *accbuf;         /* 40: raw mode: where the accumulators go, 8 per pair */
    uint32_t skip;           /* 44: pairs skipped at the entry (0 .. EK_CONV_UNROLL - 1) */
} ek__gemm_args_t;

void ek__conv_gemm_2x4_fast(ek__gemm_args_t *a);
void ek__conv_gemm_2x4_fast_noclamp(ek__gemm_args_t *a);
void ek__conv_gemm_2x4_raw(ek__gemm_args_t *a);

/*
 * The 2 pixel x 4 channel GEMM over all pairs of a tile, hand-scheduled: r0-r7 accumulators (pixel 0 channels 0-3,
 * pixel 1 channels 0-3), r8/r9 the two pixels' int16 pairs, r10/r11 two channels' weight pairs, r12 the tile,
 * lr the widened weights; everything else lives in the 48-byte frame (a copy of ek__gemm_args_t). Each unrolled
 * step is 11 32-bit instructions (44 bytes), which the Duff's-device entry relies on.
 */
__asm__(
    "   .syntax unified\n"
    "   .macro EK_KPAIR\n"
    "   ldm.w   r12!, {r8, r9}\n"
    "   ldm.w   lr!, {r10, r11}\n"
    "   smlad   r0, r8, r10, r0\n"
    "   smlad   r4, r9, r10, r4\n"
    "   smlad   r1, r8, r11, r1\n"
    "   smlad   r5, r9, r11, r5\n"
    "   ldm.w   lr!, {r10, r11}\n"
    "   smlad   r2, r8, r10, r2\n"
    "   smlad   r6, r9, r10, r6\n"
    "   smlad   r3, r8, r11, r3\n"
    "   smlad   r7, r9, r11, r7\n"
    "   .endm\n"
    "   .macro EK_RQ2 a, b\n"      /* one channel of both pixels: SMMLA, ASR, SSAT */
    "   ldm     lr!, {r8, r9, r10, r11}\n"
    "   smmla   \\a, \\a, r8, r9\n"
    "   smmla   \\b, \\b, r8, r9\n"
    "   asr     \\a, \\a, r10\n"
    "   asr     \\b, \\b, r10\n"
    "   ssat    \\a, #8, \\a\n"
    "   ssat    \\b, #8, \\b\n"
    "   .endm\n"
    "   .macro EK_GEMM_2X4 name, fast\n"
    "   EK_FUNC \\name\n"
    "   push    {r4-r11, lr}\n"
    "   sub     sp, sp, #48\n"
    "   ldm     r0, {r1-r12}\n"
    "   stm     sp, {r1-r12}\n"
    "   ldr     r1, [sp, #44]\n"          /* entry = body + 44 * skip, Thumb bit set */
    "   add     r3, r1, r1, lsl #1\n"
    "   add     r3, r3, r1, lsl #3\n"
    "   adr     r2, 2f\n"
    "   add     r2, r2, r3, lsl #2\n"
    "   orr     r2, r2, #1\n"
    "   str     r2, [sp, #12]\n"
    "   ldr     r12, [sp, #0]\n"
    "1: ldr     r8, [sp, #20]\n"          /* next pair: accumulators = bias */
    "   ldm     r8, {r0-r7}\n"
    "   ldr     lr, [sp, #8]\n"
    "   ldr     pc, [sp, #12]\n"
    "   .balign 4\n"
    "2:\n"
    "   .rept 8\n"
    "   EK_KPAIR\n"
    "   .endr\n"
    "   ldr     r8, [sp, #16]\n"
    "   cmp     lr, r8\n"
    "   bne     2b\n"
    "   .if \\fast\n"
    "   ldr     lr, [sp, #24]\n"
    "   EK_RQ2  r0, r4\n"
    "   EK_RQ2  r1, r5\n"
    "   EK_RQ2  r2, r6\n"
    "   EK_RQ2  r3, r7\n"
    "   bfi     r0, r1, #8, #8\n"
    "   bfi     r0, r2, #16, #8\n"
    "   bfi     r0, r3, #24, #8\n"
    "   bfi     r4, r5, #8, #8\n"
    "   bfi     r4, r6, #16, #8\n"
    "   bfi     r4, r7, #24, #8\n"
    "   .if \\fast == 1\n"                /* clamp to [act_min, act_max]; fast == 2: the range is all of int8 */
    "   ldrd    r8, r9, [sp, #28]\n"
    "   ssub8   r10, r0, r8\n"
    "   sel     r0, r8, r0\n"
    "   ssub8   r10, r4, r8\n"
    "   sel     r4, r8, r4\n"
    "   uadd8   r0, r0, r9\n"
    "   uadd8   r4, r4, r9\n"
    "   .endif\n"
    "   ldm     r12!, {r8, r9}\n"         /* the two pixels' output offsets */
    "   ldr     r10, [sp, #36]\n"
    "   str     r0, [r10, r8]\n"
    "   str     r4, [r10, r9]\n"
    "   .else\n"
    "   ldr     r8, [sp, #40]\n"
    "   stm     r8!, {r0-r7}\n"
    "   str     r8, [sp, #40]\n"
    "   add     r12, r12, #8\n"
    "   .endif\n"
    "   ldr     r8, [sp, #4]\n"
    "   cmp     r12, r8\n"
    "   bne     1b\n"
    "   add     sp, sp, #48\n"
    "   pop     {r4-r11, pc}\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
    "   EK_GEMM_2X4 ek__conv_gemm_2x4_fast, 1\n"
    "   EK_GEMM_2X4 ek__conv_gemm_2x4_fast_noclamp, 2\n"
    "   EK_GEMM_2X4 ek__conv_gemm_2x4_raw, 0\n");
#endif
#if !EK_NN_DSP || EK_NN_NO_GEMM_RAW
/* Portable GEMM over the same layouts (also a DSP firmware's when it leaves ek__conv_gemm_2x4_raw out): raw
 * accumulators, 8 per pair (2 pixels x 4 channels). The packed int16 pairs
 * of tile and weights are read as int16 arrays (little-endian: a word's low half first), so every operand is one
 * sign-extending halfword load (lh on RV32) instead of shifts: per pair of reduction steps 12 loads, 16 multiplies,
 * 16 adds and 3 loop instructions for 16 MACs on a core without SIMD (RV32IM); 8 accumulators stay in registers.
 * Wrapping int32 sums, as SMLAD. */
#if EK_NN_DSP
__attribute__((noinline)) /* (a fallback there: out of the hot function's registers) */
#endif
static void ek__conv_gemm_portable(const uint32_t *tile, int32_t npairs, const ek__conv_geom_t *g, const uint32_t *w16,
                                   const int32_t *bias8, int32_t *accbuf)
{
    const int32_t pw = g->pair_bytes / 4;
    for (int32_t j = 0; j < npairs; j++, accbuf += 8) {
        const ek__h16 *a = (const ek__h16 *)(tile + j * pw);
        const ek__h16 *w = (const ek__h16 *)w16, *const w_end = w + 8 * g->k_pairs;
        uint32_t p0 = (uint32_t)bias8[0], p1 = (uint32_t)bias8[1], p2 = (uint32_t)bias8[2], p3 = (uint32_t)bias8[3];
        uint32_t r0 = (uint32_t)bias8[4], r1 = (uint32_t)bias8[5], r2 = (uint32_t)bias8[6], r3 = (uint32_t)bias8[7];
        for (; w < w_end; a += 4, w += 8) {
            const int32_t xl = a[0], xh = a[1], yl = a[2], yh = a[3];
#define EK__PORTABLE_CH(k, pk, rk)                                                                             \
    do {                                                                                                       \
        const int32_t wl = w[2 * (k)], wh = w[2 * (k) + 1];                                                    \
        pk += (uint32_t)(xl * wl) + (uint32_t)(xh * wh);                                                       \
        rk += (uint32_t)(yl * wl) + (uint32_t)(yh * wh);                                                       \
    } while (0)
            EK__PORTABLE_CH(0, p0, r0);
            EK__PORTABLE_CH(1, p1, r1);
            EK__PORTABLE_CH(2, p2, r2);
            EK__PORTABLE_CH(3, p3, r3);
#undef EK__PORTABLE_CH
        }
        accbuf[0] = (int32_t)p0;
        accbuf[1] = (int32_t)p1;
        accbuf[2] = (int32_t)p2;
        accbuf[3] = (int32_t)p3;
        accbuf[4] = (int32_t)r0;
        accbuf[5] = (int32_t)r1;
        accbuf[6] = (int32_t)r2;
        accbuf[7] = (int32_t)r3;
    }
}
#endif

/* Requantise raw accumulators of one block for every pair of the tile (the portable path, blocks of fewer than 4
 * channels, and layers whose requant needs the 64-bit form). */
static void ek__conv_store_raw(const ek_conv_params_t *p, const ek__conv_geom_t *g, const ek__rq_t *rq,
                               const uint32_t *tile, int32_t npairs, int32_t block, const int32_t *accbuf, int8_t *out)
{
    const int32_t pw = g->pair_bytes / 4;
    const int32_t c0 = 4 * block;
    const int32_t nc = p->out_c - c0 < 4 ? p->out_c - c0 : 4;
    const int32_t *q = p->requant + 4 * c0;
    for (int32_t j = 0; j < npairs; j++, accbuf += 8) {
        const uint32_t *offs = tile + j * pw + 2 * g->k_pairs;
        for (int r = 0; r < 2; r++) {
            int8_t *o = out + (int32_t)offs[r] + c0;
            for (int32_t c = 0; c < nc; c++) {
                o[c] = ek__requant(rq, accbuf[4 * r + c], q + 4 * c);
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * 1x1 convolutions with 8 or 16 input channels (EK_NN_FLAG_1X1_STREAM; kernel_pack sets it for a 1x1 without
 * padding, in_c 8 or 16, the fast requant form and the full int8 range). With so few inputs per output, the
 * per-output work of the tile GEMM (accumulator set-up, requant table loads, packing) costs as much as the MACs.
 * Here each pixel's in_c inputs are widened once into in_c / 2 registers (no im2col copy: the pixel is contiguous
 * in NHWC), then one pass runs over a per-call record stream, one record per output channel:
 * {bias, in_c / 2 widened weight pairs, mult, a, b} (b's bit 8 marks the last channel: ASR reads only the low byte).
 * in_c = 8: one LDM of the whole record, 4 SMLAD, SMMLA + ASR + SSAT (the SSAT is the clamp), one STRB: 9 instructions
 * per 8 MACs. in_c = 16: 4 LDM + 8 SMLAD + 4 = 16 per 16 MACs. Unrolled 8 channels per end test, with a Duff's-device
 * entry for out_c % 8 (every instruction of a channel is 32-bit: 36 or 64 bytes of code); outputs of a pixel are
 * contiguous, so the byte pointer just runs along the row. M7: 1.20 instructions/MAC at 72x72x8 -> 48, 1.05 at
 * 18x18x16 -> 96 (the tile GEMM: 1.64, 1.15).
 * ------------------------------------------------------------------------------------------------------------- */
#define EK_S1X1_UNROLL 8

static void ek__s1x1_build(const ek_conv_params_t *p, const ek__conv_geom_t *g, uint32_t *rec)
{
    const int32_t kq = g->k_pairs, rw = ek__s1x1_record_words(p);
    uint32_t *w16 = rec + p->out_c * rw;
    for (int32_t b = 0; b < g->blocks; b++) {
        const int32_t nc = b < g->full_blocks ? 4 : p->out_c - 4 * b;
        ek__widen_nested(p, g, b, nc, w16);
        for (int32_t i = 0; i < nc; i++) {
            const int32_t c = 4 * b + i;
            const int32_t *q = p->requant + 4 * c;
            uint32_t *r = rec + c * rw;
            r[0] = (uint32_t)(p->bias ? p->bias[c] : 0);
            for (int32_t j = 0; j < kq; j++) {
                r[1 + j] = w16[4 * j + i];
            }
            r[kq + 1] = (uint32_t)q[0];
            r[kq + 2] = (uint32_t)q[1];
            r[kq + 3] = (uint32_t)q[2] | (c == p->out_c - 1 ? 0x100u : 0u);
        }
    }
}

#if EK_NN_DSP
typedef struct {
    const int8_t *in;       /*  0: the row's first input pixel */
    int32_t in_step;        /*  4: bytes from one input pixel to the next (stride_w * in_c) */
    uint32_t off2;          /*  8: input offset in both halves */
    const uint32_t *rec;    /* 12: the records */
    uint32_t skip;          /* 16: records skipped at the entry (0 .. EK_S1X1_UNROLL - 1); then the entry address */
    int8_t *out;            /* 20: the row's first output */
    int32_t npix;           /* 24: pixels in the row */
    int32_t out_gap;        /* 28: bytes between one pixel's outputs and the next pixel's (0: they follow on) */
} ek__s1x1_args_t;

void ek__s1x1_k8_row(ek__s1x1_args_t *a);
void ek__s1x1_k16_row(ek__s1x1_args_t *a);

__asm__(
    "   .syntax unified\n"
    "   .macro EK_S1X1_ENTRY bytes\n"     /* frame = copy of the args; entry = body + bytes * skip, Thumb bit */
    "   push    {r4-r11, lr}\n"
    "   sub     sp, sp, #32\n"
    "   ldm     r0, {r1-r8}\n"
    "   stm     sp, {r1-r8}\n"
    "   mov     r12, r6\n"                /* the output pointer runs along the row */
    "   adr     r2, 2f\n"
    "   mov     r3, #\\bytes\n"
    "   mla     r2, r3, r5, r2\n"
    "   orr     r2, r2, #1\n"
    "   str     r2, [sp, #16]\n"
    "   .endm\n"
    "   .macro EK_S1X1_EXIT\n"
    "   ldrd    r4, r5, [sp, #24]\n"      /* pixels left, output gap */
    "   add     r12, r12, r5\n"
    "   subs    r4, r4, #1\n"
    "   str     r4, [sp, #24]\n"
    "   bne     1b\n"
    "   add     sp, sp, #32\n"
    "   pop     {r4-r11, pc}\n"
    "   .endm\n"
    "   .macro EK_S1X1_K8\n"              /* x0-x3 in r0-r3; record: bias, w0-w3, mult, a, b -> r4-r11 */
    "   ldmia.w lr!, {r4-r11}\n"
    "   smlad   r4, r0, r5, r4\n"
    "   smlad   r4, r1, r6, r4\n"
    "   smlad   r4, r2, r7, r4\n"
    "   smlad   r4, r3, r8, r4\n"
    "   smmla   r4, r4, r9, r10\n"
    "   asr.w   r4, r4, r11\n"
    "   ssat    r4, #8, r4\n"
    "   strb.w  r4, [r12], #1\n"
    "   .endm\n"
    "   .macro EK_S1X1_K16\n"             /* x0-x7 in r0-r7; the record in 4 LDMs through r8-r11 */
    "   ldmia.w lr!, {r8-r11}\n"          /* bias, w0, w1, w2 */
    "   smlad   r8, r0, r9, r8\n"
    "   smlad   r8, r1, r10, r8\n"
    "   smlad   r8, r2, r11, r8\n"
    "   ldmia.w lr!, {r9-r11}\n"          /* w3, w4, w5 */
    "   smlad   r8, r3, r9, r8\n"
    "   smlad   r8, r4, r10, r8\n"
    "   smlad   r8, r5, r11, r8\n"
    "   ldmia.w lr!, {r9-r11}\n"          /* w6, w7, mult */
    "   smlad   r8, r6, r9, r8\n"
    "   smlad   r8, r7, r10, r8\n"
    "   ldmia.w lr!, {r9, r10}\n"         /* a, b */
    "   smmla   r8, r8, r11, r9\n"
    "   asr.w   r8, r8, r10\n"
    "   ssat    r8, #8, r8\n"
    "   strb.w  r8, [r12], #1\n"
    "   .endm\n"
    "   EK_FUNC ek__s1x1_k8_row\n"
    "   EK_S1X1_ENTRY 36\n"
    "1: ldm     sp, {r8-r11}\n"           /* in, in_step, off2, records */
    "   ldr     r4, [r8]\n"
    "   ldr     r5, [r8, #4]\n"
    "   add     r8, r8, r9\n"
    "   str     r8, [sp]\n"
    "   sxtab16 r0, r10, r4\n"
    "   sxtab16 r1, r10, r4, ror #8\n"
    "   sxtab16 r2, r10, r5\n"
    "   sxtab16 r3, r10, r5, ror #8\n"
    "   mov     lr, r11\n"
    "   ldr     pc, [sp, #16]\n"
    "   .balign 4\n"
    "2:\n"
    "   .rept 8\n"
    "   EK_S1X1_K8\n"
    "   .endr\n"
    "   tst     r11, #256\n"
    "   beq     2b\n"
    "   EK_S1X1_EXIT\n"
    "   .size ek__s1x1_k8_row, . - ek__s1x1_k8_row\n"
    "   .popsection\n"
    "   EK_FUNC ek__s1x1_k16_row\n"
    "   EK_S1X1_ENTRY 64\n"
    "1: ldm     sp, {r8-r10}\n"           /* in, in_step, off2 */
    "   ldr     r4, [r8]\n"
    "   ldr     r5, [r8, #4]\n"
    "   ldr     r6, [r8, #8]\n"
    "   ldr     r7, [r8, #12]\n"
    "   add     r8, r8, r9\n"
    "   str     r8, [sp]\n"
    "   sxtab16 r0, r10, r4\n"
    "   sxtab16 r1, r10, r4, ror #8\n"
    "   sxtab16 r2, r10, r5\n"
    "   sxtab16 r3, r10, r5, ror #8\n"
    "   sxtab16 r4, r10, r6\n"
    "   sxtab16 r5, r10, r6, ror #8\n"
    "   sxtab16 r6, r10, r7\n"
    "   sxtab16 r7, r10, r7, ror #8\n"
    "   ldr     lr, [sp, #12]\n"
    "   ldr     pc, [sp, #16]\n"
    "   .balign 4\n"
    "2:\n"
    "   .rept 8\n"
    "   EK_S1X1_K16\n"
    "   .endr\n"
    "   tst     r10, #256\n"
    "   beq     2b\n"
    "   EK_S1X1_EXIT\n"
    "   .size ek__s1x1_k16_row, . - ek__s1x1_k16_row\n"
    "   .popsection\n");
#endif

/* The pass over the output rows: the asm row kernels with the DSP extension, the same arithmetic in C without. */
static void ek__conv_1x1_stream(const ek_conv_params_t *p, const ek__conv_geom_t *g, const int8_t *in, int8_t *out,
                                uint32_t *rec)
{
    ek__s1x1_build(p, g, rec);
    const int32_t kq = g->k_pairs;
    const int32_t in_step = p->stride_w * p->in_c, row_step = p->stride_h * p->in_row_stride;
#if EK_NN_DSP
    ek__s1x1_args_t a;
    a.in_step = in_step;
    a.off2 = ek__pack16(p->input_offset, p->input_offset);
    a.rec = rec;
    a.out_gap = 0;
    int32_t rows = p->out_h, npix = p->out_w;
    if (npix == 1) { /* rows of one pixel (a grouped 1x1's call: a group's channels of every pixel) in one pass */
        a.in_step = row_step;
        a.out_gap = p->out_row_stride - p->out_c;
        npix = rows;
        rows = 1;
    }
    for (int32_t oy = 0; oy < rows; oy++) {
        a.in = in + oy * row_step;
        a.out = out + oy * p->out_row_stride;
        a.npix = npix;
        a.skip = (uint32_t)((EK_S1X1_UNROLL - p->out_c % EK_S1X1_UNROLL) % EK_S1X1_UNROLL);
        if (kq == 4) {
            ek__s1x1_k8_row(&a);
        } else {
            ek__s1x1_k16_row(&a);
        }
    }
#else
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        const int8_t *x = in + oy * row_step;
        int8_t *o = out + oy * p->out_row_stride;
        const int32_t rw = ek__s1x1_record_words(p);
        for (int32_t ox = 0; ox < p->out_w; ox++, x += in_step) {
            const uint32_t *r = rec;
            for (int32_t c = 0; c < p->out_c; c++, r += rw) {
                int32_t acc = (int32_t)r[0];
                for (int32_t k = 0; k < 2 * kq; k += 4) { /* the pair order of the records: (k, k+2), (k+1, k+3) */
                    const int32_t j = k / 2;
                    acc += (x[k] + p->input_offset) * ek__lo16(r[1 + j]) +
                           (x[k + 2] + p->input_offset) * ek__hi16(r[1 + j]) +
                           (x[k + 1] + p->input_offset) * ek__lo16(r[2 + j]) +
                           (x[k + 3] + p->input_offset) * ek__hi16(r[2 + j]);
                }
                const int32_t q[3] = {(int32_t)r[kq + 1], (int32_t)r[kq + 2], (int32_t)(r[kq + 3] & 0xFFu)};
                *o++ = ek__requant_fast(acc, q, 127, 0);
            }
        }
    }
#endif
}

/* ===============================================================================================================
 * One input channel, 3x3 (EK_NN_FLAG_CONV_C1: first layers of one-channel images, digits-cnn's and U-Net's). The
 * tile GEMM pads such a layer's 9 taps to 5 pairs of its 2 x 4 blocks and pays an im2col pass (border windows
 * gathered) per pixel pair for 9 MACs an output: 2.89 instructions a MAC on digits-cnn's 8x8 map. Here each output
 * pixel's taps, offset and widened, sit in 5 registers as int16 pairs (taps in the padding are 0), and one record
 * per output channel {bias, 5 weight pairs, mult, a, b} (kernel_pack.pack_conv2d) is read with two LDMs: acc = bias
 * + 5 SMLAD, then the fast requantization (SMMLA, ASR, SSAT), 13 instructions a channel; with a clamp (activation
 * range not all of int8) 4 channels a turn and one SIMD clamp of the word. A row's inside windows run in asm
 * (ek__conv_c1_row3: the taps built there, ~34 instructions a pixel besides the channels); small maps get their
 * rows padded on the stack so every window is inside; wider maps' border pixels go one by one. No scratch. Without
 * the fast form (or the DSP extension) the same records run through the C requantization.
 * ============================================================================================================= */
#define EK_CONV_C1_WORDS 9 /* record words per output channel */
#if EK_NN_HAS_CONV_C1
typedef struct {
    uint32_t x[5];           /*  0: the pixel's taps + input_offset, int16 pairs */
    const int32_t *rec;      /* 20: the first channel's record */
    const int32_t *rec_end;  /* 24: past the last */
    int8_t *out;             /* 28: the pixel's first output channel */
    uint32_t upper4, back4;  /* 32: the clamp's act_max - act_min - 128 and act_min + 128, in every byte */
} ek__c1_args_t;

/* A row of output pixels of a 3x3 window (dilation 1) from three rows laid out with their padding: the taps built
 * in asm (9 LDRB, 4 ORR, 5 SXTAB16 a pixel), then the channel loop below, ~34 instructions a pixel besides it. */
typedef struct {
    const int8_t *r0, *r1, *r2; /*  0: the rows at the first output's window */
    int32_t step;               /* 12: stride_w */
    int32_t npix;               /* 16: output pixels (>= 1) */
    uint32_t off2;              /* 20: input_offset in both halves */
    const int32_t *rec;         /* 24 */
    const int32_t *rec_end;     /* 28 */
    int8_t *out;                /* 32: the first pixel's first channel; pixels out_c apart */
    uint32_t upper4, back4;     /* 36: the clamp, in every byte */
} ek__c1_row_args_t;

#if EK_NN_DSP
void ek__conv_c1_px(const ek__c1_args_t *a);
void ek__conv_c1_px_nc(const ek__c1_args_t *a);
void ek__conv_c1_row3(const ek__c1_row_args_t *a);
void ek__conv_c1_row3_nc(const ek__c1_row_args_t *a);
__asm__(
    "   .syntax unified\n"
    "   .macro EK_C1_ONE\n"                /* one channel: acc = bias + 5 SMLAD, requantized, stored */
    "   ldm     r11!, {r5-r10}\n"
    "   smlad   r5, r0, r6, r5\n"
    "   smlad   r5, r1, r7, r5\n"
    "   smlad   r5, r2, r8, r5\n"
    "   smlad   r5, r3, r9, r5\n"
    "   smlad   r5, r4, r10, r5\n"
    "   ldm     r11!, {r6-r8}\n"
    "   smmla   r5, r5, r6, r7\n"
    "   asr     r5, r5, r8\n"
    "   ssat    r5, #8, r5\n"
    "   strb    r5, [lr], #1\n"
    "   .endm\n"
    /* taps r0-r4; records r11 .. r12; output lr. With the clamp: 4 channels a turn (out_c a multiple of 4, the
     * output word-aligned), then the word's 4 bytes clamped at once: SSUB8 / SEL against upper, UADD8 of back
     * (both byte-replicated at [sp, #frame]) */
    "   .macro EK_C1_CHANNELS clamp, frame\n"
    "1: EK_C1_ONE\n"
    "   .if \\clamp\n"
    "   EK_C1_ONE\n"
    "   EK_C1_ONE\n"
    "   EK_C1_ONE\n"
    "   ldr     r5, [lr, #-4]\n"
    "   ldrd    r9, r10, [sp, #\\frame]\n"
    "   ssub8   r6, r5, r9\n"
    "   sel     r5, r9, r5\n"
    "   uadd8   r5, r5, r10\n"
    "   str     r5, [lr, #-4]\n"
    "   .endif\n"
    "   cmp     r11, r12\n"
    "   bne     1b\n"
    "   .endm\n"
    "   .macro EK_C1_ROW3 name, clamp\n"
    "   EK_FUNC \\name\n"
    "   EK_FRAME44\n"
    "2: ldm     sp, {r5-r7}\n"              /* the three rows */
    "   ldr     r8, [sp, #20]\n"
    "   ldrb    r0, [r5]\n"
    "   ldrb    r9, [r5, #1]\n"
    "   orr     r0, r0, r9, lsl #16\n"
    "   sxtab16 r0, r8, r0\n"
    "   ldrb    r1, [r5, #2]\n"
    "   ldrb    r9, [r6]\n"
    "   orr     r1, r1, r9, lsl #16\n"
    "   sxtab16 r1, r8, r1\n"
    "   ldrb    r2, [r6, #1]\n"
    "   ldrb    r9, [r6, #2]\n"
    "   orr     r2, r2, r9, lsl #16\n"
    "   sxtab16 r2, r8, r2\n"
    "   ldrb    r3, [r7]\n"
    "   ldrb    r9, [r7, #1]\n"
    "   orr     r3, r3, r9, lsl #16\n"
    "   sxtab16 r3, r8, r3\n"
    "   ldrb    r4, [r7, #2]\n"
    "   sxtab16 r4, r8, r4\n"
    "   bfc     r4, #16, #16\n"             /* the pad tap: 0 */
    "   ldr     r9, [sp, #12]\n"
    "   add     r5, r5, r9\n"
    "   add     r6, r6, r9\n"
    "   add     r7, r7, r9\n"
    "   stm     sp, {r5-r7}\n"
    "   ldrd    r11, r12, [sp, #24]\n"
    "   ldr     lr, [sp, #32]\n"
    "   EK_C1_CHANNELS \\clamp, 36\n"
    "   str     lr, [sp, #32]\n"
    "   ldr     r9, [sp, #16]\n"
    "   subs    r9, r9, #1\n"
    "   str     r9, [sp, #16]\n"
    "   bne     2b\n"
    "   add     sp, sp, #44\n"
    "   pop     {r4-r11, pc}\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
    "   .macro EK_C1_PX name, clamp\n"
    "   EK_FUNC \\name\n"
    "   push    {r4-r11, lr}\n"
    "   .if \\clamp\n"
    "   ldrd    r4, r5, [r0, #32]\n"
    "   strd    r4, r5, [sp, #-8]!\n"     /* upper4, back4 at [sp] */
    "   .endif\n"
    "   add     r11, r0, #20\n"
    "   ldm     r11, {r11, r12, lr}\n"    /* records, their end, the output */
    "   ldm     r0, {r0-r4}\n"            /* the taps */
    "   EK_C1_CHANNELS \\clamp, 0\n"       /* records: bias, 5 weight pairs; mult, a, b */
    "   .if \\clamp\n"
    "   add     sp, sp, #8\n"
    "   .endif\n"
    "   pop     {r4-r11, pc}\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
#if !EK_NN_NO_CONV_C1
    "   EK_C1_PX ek__conv_c1_px, 1\n"
    "   EK_C1_ROW3 ek__conv_c1_row3, 1\n"
#endif
#if !EK_NN_NO_CONV_C1_NC
    "   EK_C1_PX ek__conv_c1_px_nc, 0\n"
    "   EK_C1_ROW3 ek__conv_c1_row3_nc, 0\n"
#endif
    );
#if !EK_NN_NO_CONV_C1
#define EK__C1_CLAMP ek__conv_c1_px
#define EK__C1_ROW3_CLAMP ek__conv_c1_row3
#else
#define EK__C1_CLAMP 0
#define EK__C1_ROW3_CLAMP 0
#endif
#if !EK_NN_NO_CONV_C1_NC
#define EK__C1_NC ek__conv_c1_px_nc
#define EK__C1_ROW3_NC ek__conv_c1_row3_nc
#else
#define EK__C1_NC 0
#define EK__C1_ROW3_NC 0
#endif
#endif

/* The channels of one pixel in C: the same records, the fast or the generic requantization. */
static void ek__conv_c1_c(const ek_conv_params_t *p, const ek__c1_args_t *a, const ek__rq_t *rq)
{
    const int32_t *r = a->rec;
    int8_t *o = a->out;
    for (int32_t c = 0; r < a->rec_end; c++, r += EK_CONV_C1_WORDS) {
        int32_t acc = r[0];
        for (int32_t j = 0; j < 5; j++) {
            acc += ek__lo16(a->x[j]) * ek__lo16((uint32_t)r[1 + j]) + ek__hi16(a->x[j]) * ek__hi16((uint32_t)r[1 + j]);
        }
        *o++ = ek__requant(rq, acc, rq->fast ? r + 6 : p->requant + 4 * c);
    }
}

/* A 3x3 window (dilation 1) from three rows, offset: 5 pairs, the last one's high half 0. */
static inline void ek__c1_taps3x3(const int8_t *a, const int8_t *b, const int8_t *c, uint32_t off2, uint32_t *x)
{
    x[0] = ek__pair_u8(off2, (uint8_t)a[0], (uint8_t)a[1]);
    x[1] = ek__pair_u8(off2, (uint8_t)a[2], (uint8_t)b[0]);
    x[2] = ek__pair_u8(off2, (uint8_t)b[1], (uint8_t)b[2]);
    x[3] = ek__pair_u8(off2, (uint8_t)c[0], (uint8_t)c[1]);
    x[4] = ek__pair_u8(off2 & 0xFFFFu, (uint8_t)c[2], 0);
}

/* A window partly outside the input: its taps there are 0 (the zero point plus input_offset). ``rows``: the three
 * input rows (0: outside), ``ix0``: the window's first column. */
static void ek__c1_taps_checked(const ek_conv_params_t *p, const int8_t *const *rows, int32_t ix0, uint32_t *x)
{
    int32_t v[10];
    for (int32_t ky = 0, t = 0; ky < 3; ky++) {
        for (int32_t kx = 0; kx < 3; kx++, t++) {
            const int32_t ix = ix0 + kx;
            v[t] = rows[ky] && (uint32_t)ix < (uint32_t)p->in_w ? rows[ky][ix] + p->input_offset : 0;
        }
    }
    v[9] = 0;
    for (int32_t j = 0; j < 5; j++) {
        x[j] = ek__pack16(v[2 * j], v[2 * j + 1]);
    }
}

#define EK_CONV_C1_ROW 64 /* padded input rows up to this wide are laid out on the stack (3 of them) */

#if EK_NN_DSP
/* The fast form's clamp on bytes the no-clamp asm stored (SSAT was the lower bound): min with upper, back added. */
static void ek__c1_clamp(int8_t *o, int32_t n, const ek__rq_t *rq)
{
    for (int32_t i = 0; i < n; i++) {
        const int32_t v = o[i] > rq->upper ? rq->upper : o[i];
        o[i] = (int8_t)(v + rq->back);
    }
}
#endif

static __attribute__((noinline, optimize("no-tree-loop-distribute-patterns")))
int ek__conv_c1(const ek_conv_params_t *p, const int8_t *input, int8_t *output)
{
    if (p->in_c != 1 || p->kernel_h != 3 || p->kernel_w != 3 || p->dilation_h != 1 || p->dilation_w != 1 ||
        p->weight_block_bytes || p->weight_run_pairs) {
        return EK_NN_ERR_ARG;
    }
    ek__rq_t rq;
    ek__rq_init(&rq, p->flags, p->output_offset, p->act_min, p->act_max);
    ek__c1_args_t a;
    a.rec_end = (const int32_t *)(const void *)p->weights + EK_CONV_C1_WORDS * p->out_c;
    a.upper4 = ek__bytes4(rq.upper);
    a.back4 = ek__bytes4(rq.back);
    const uint32_t off2 = ek__pack16(p->input_offset, p->input_offset);
#if EK_NN_DSP
    const int full_range = p->act_min == -128 && p->act_max == 127; /* then SSAT alone is the clamp */
    /* the clamp's asm takes 4 channels a turn and stores them as words; otherwise the no-clamp asm and the clamp
     * on its bytes in C (min with upper, back added) */
    const int words = p->out_c % 4 == 0 && p->out_row_stride % 4 == 0 && ek__aligned(output);
    void (*px)(const ek__c1_args_t *) = 0;
    void (*row3)(const ek__c1_row_args_t *) = 0;
    int fixup = 0;
    if (rq.fast && full_range && !EK_NN_NO_CONV_C1_NC) {
        px = EK__C1_NC, row3 = EK__C1_ROW3_NC;
    } else if (rq.fast && words && !EK_NN_NO_CONV_C1) {
        px = EK__C1_CLAMP, row3 = EK__C1_ROW3_CLAMP;
    } else if (rq.fast && !EK_NN_NO_CONV_C1_NC) {
        px = EK__C1_NC, row3 = EK__C1_ROW3_NC, fixup = 1;
    }
    ek__c1_row_args_t ra;
    ra.step = p->stride_w;
    ra.off2 = off2;
    ra.rec = (const int32_t *)(const void *)p->weights;
    ra.rec_end = a.rec_end;
    ra.upper4 = a.upper4;
    ra.back4 = a.back4;
#endif
    /* small maps (first layers of digits, spectrograms): each output row's input rows padded with the zero point
     * on the stack, so that every pixel's window lies inside; wider maps: the pixels at the border one by one */
    const int32_t pw = p->in_w + p->pad_left + p->pad_right;
    const int padded = pw <= EK_CONV_C1_ROW;
    int8_t pad_rows[3][EK_CONV_C1_ROW] __attribute__((aligned(4)));
    const uint32_t zp4 = ek__bytes4(-p->input_offset);
    int32_t held[3] = {INT32_MIN, INT32_MIN, INT32_MIN}; /* the input row each padded row holds (rows iy0 .. iy0+2
                                                           * go to iy mod 3, kept for the next output rows) */
    const int8_t *rows[3];
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        int rows_inside = 1;
        for (int32_t ky = 0; ky < 3; ky++) {
            const int32_t iy = iy0 + ky;
            const int inside = (uint32_t)iy < (uint32_t)p->in_h;
            rows[ky] = inside ? input + iy * p->in_row_stride : 0;
            rows_inside &= inside;
            if (padded) {
                const int32_t slot = ((iy % 3) + 3) % 3;
                int8_t *d = pad_rows[slot];
                if (held[slot] != iy) { /* (short rows: word stores and a byte loop, no library call) */
                    uint32_t *w = (uint32_t *)(void *)d;
                    for (int32_t k = 0; k < (pw + 3) / 4; k++) {
                        w[k] = zp4;
                    }
                    if (inside) {
                        const int8_t *src = rows[ky];
                        for (int32_t k = 0; k < p->in_w; k++) {
                            d[p->pad_left + k] = src[k];
                        }
                    }
                    held[slot] = iy;
                }
                rows[ky] = d;
            }
        }
        /* [lo, hi): the outputs whose windows lie inside the rows (all of them when padded) */
        const int32_t x_base = padded ? 0 : -p->pad_left; /* the rows' column of the first output's window */
        int32_t lo = 0, hi = p->out_w;
        if (!padded) {
            lo = rows_inside ? (p->pad_left + p->stride_w - 1) / p->stride_w : p->out_w;
            hi = rows_inside && p->in_w - 3 + p->pad_left >= 0 ? (p->in_w - 3 + p->pad_left) / p->stride_w + 1 : 0;
            hi = hi > p->out_w ? p->out_w : hi;
            hi = hi < lo ? lo : hi;
            lo = lo > p->out_w ? p->out_w : lo;
        }
        int8_t *out_row = output + oy * p->out_row_stride;
        for (int32_t ox = 0; ox < p->out_w; ox++) {
            const int32_t ix0 = x_base + ox * p->stride_w;
            if (ox == lo && hi > lo) {
#if EK_NN_DSP
                if (row3) { /* the run of inside windows in asm */
                    ra.r0 = rows[0] + ix0;
                    ra.r1 = rows[1] + ix0;
                    ra.r2 = rows[2] + ix0;
                    ra.npix = hi - lo;
                    ra.out = out_row + lo * p->out_c;
                    row3(&ra);
                    if (fixup) {
                        ek__c1_clamp(ra.out, (hi - lo) * p->out_c, &rq);
                    }
                    ox = hi - 1;
                    continue;
                }
#endif
            }
            if (ox >= lo && ox < hi) {
                ek__c1_taps3x3(rows[0] + ix0, rows[1] + ix0, rows[2] + ix0, off2, a.x);
            } else {
                ek__c1_taps_checked(p, rows, ix0, a.x);
            }
            a.rec = (const int32_t *)(const void *)p->weights;
            a.out = out_row + ox * p->out_c;
#if EK_NN_DSP
            if (px) {
                px(&a);
                if (fixup) {
                    ek__c1_clamp(a.out, p->out_c, &rq);
                }
                continue;
            }
#endif
            ek__conv_c1_c(p, &a, &rq);
        }
    }
    return EK_NN_OK;
}
#endif

#if !EK_NN_NO_CONV_FC
static int ek__conv_fc(const ek_conv_params_t *p, const int8_t *input, int8_t *output, void *scratch);
#endif

int ek_conv2d_s8(const ek_conv_params_t *p, const int8_t *input, int8_t *output, void *scratch)
{
    int err = ek__conv_check(p);
    if (err) {
        return err;
    }
    EK_NN_HELIUM(p, ek__aligned(scratch) ? ek__mve_conv2d_s8(p, input, output, scratch) : EK_NN_ERR_ALIGN);
    EK_NN_SCALAR(p, ek__rv_conv2d(p, input, output, scratch));
    if (p->flags & EK_NN_FLAG_CONV_C1) {
#if EK_NN_HAS_CONV_C1
        return ek__conv_c1(p, input, output);
#else
        return EK_NN_ERR_ARG; /* packed for the one-channel path, built without it */
#endif
    }
#if !EK_NN_NO_CONV_FC
    if (p->flags & EK_NN_FLAG_CONV_FC) {
        return ek__aligned(scratch) ? ek__conv_fc(p, input, output, scratch) : EK_NN_ERR_ALIGN;
    }
#else
    if (p->flags & EK_NN_FLAG_CONV_FC) {
        return EK_NN_ERR_ARG; /* packed for the FC rows, built without them */
    }
#endif
    if (p->tile_pixels < 2 || (p->tile_pixels & 1)) {
        return EK_NN_ERR_ARG;
    }
    if (!ek__aligned(scratch)) {
        return EK_NN_ERR_ALIGN;
    }
    ek__conv_geom_t g;
    ek__conv_geom(p, &g);
    if (p->flags & EK_NN_FLAG_1X1_STREAM) {
        if (p->flags & EK_NN_FLAG_WIDE_WEIGHTS) {
            return EK_NN_ERR_ARG; /* the records are built from the int8 layout */
        }
        ek__conv_1x1_stream(p, &g, input, output, (uint32_t *)scratch);
        return EK_NN_OK;
    }
    uint32_t *tile = (uint32_t *)scratch;
    uint32_t *wcache = tile + g.tile_bytes / 4;
    int32_t *accbuf = (int32_t *)(wcache + g.wcache_bytes / 4);
    int32_t *bias8 = accbuf + g.accbuf_bytes / 4;
    int8_t *runbuf = (int8_t *)(bias8 + 8 * g.bias_blocks);
    int8_t *zp_run = runbuf + 2 * (g.runbuf_bytes / 3);
    memset(zp_run, -p->input_offset, g.runbuf_bytes / 3);
    const int wide = (p->flags & EK_NN_FLAG_WIDE_WEIGHTS) != 0; /* stored widened: read in place */
    const int cache_all = !wide && (p->flags & EK_NN_FLAG_CACHE_ALL_WEIGHTS) != 0;
    const int32_t w16_block_words = g.k_pairs * 4; /* widened words per block */
    if (wide && (p->weight_block_bytes || p->weight_run_pairs)) {
        return EK_NN_ERR_ARG; /* nested prefixes read the int8 layout */
    }
    /* every block's widened weights, w16_block_words apart: stored so, or cached once per call; else one block's
     * widened into wcache per tile */
    const uint32_t *const w16_all = wide ? (const uint32_t *)(const void *)p->weights : wcache;
    const int whole_set = wide || cache_all;
    ek__rq_t rq;
    ek__rq_init(&rq, p->flags, p->output_offset, p->act_min, p->act_max);

    const int32_t tail_nc = p->out_c - 4 * g.full_blocks; /* channels in a last, partial block */
    if (cache_all) {
        for (int32_t b = 0; b < g.blocks; b++) {
            ek__widen_nested(p, &g, b, b < g.full_blocks ? 4 : tail_nc, wcache + b * w16_block_words);
        }
    }
    /* per block: its 4 biases twice (two pixels' accumulators); whole blocks a word group at a time (a patch tile's
     * call lays them out again: ~2 instructions a channel instead of ~10) */
    const int32_t whole = p->bias ? (g.bias_blocks < g.full_blocks ? g.bias_blocks : g.full_blocks) : 0;
    for (int32_t b = 0; b < whole; b++) {
        const int32_t *s = p->bias + 4 * b;
        int32_t *d = bias8 + 8 * b;
        const int32_t x0 = s[0], x1 = s[1], x2 = s[2], x3 = s[3];
        d[0] = d[4] = x0;
        d[1] = d[5] = x1;
        d[2] = d[6] = x2;
        d[3] = d[7] = x3;
    }
    for (int32_t c = 4 * whole; c < 4 * g.bias_blocks; c++) { /* a last block of 1-3 channels, or no bias */
        const int32_t v = (p->bias && c < p->out_c) ? p->bias[c] : 0;
        bias8[(c >> 2) * 8 + (c & 3)] = bias8[(c >> 2) * 8 + 4 + (c & 3)] = v;
    }
    const int bias_per_block = g.bias_blocks == 1 && g.blocks > 1;
#if EK_NN_DSP
    const int full_range = p->act_min == -128 && p->act_max == 127; /* then SSAT alone is the clamp */
    (void)full_range; /* (unused when the no-clamp block kernel is left out) */
    ek__gemm_args_t a;
    a.entry = 0;
    a.upper4 = ek__bytes4(rq.upper);
    a.back4 = ek__bytes4(rq.back);
    a.accbuf = accbuf;
    a.skip = (uint32_t)g.skip;
#endif
    const int32_t npix = p->out_h * p->out_w;
    for (int32_t pix0 = 0; pix0 < npix; pix0 += p->tile_pixels) {
        const int32_t n = npix - pix0 < p->tile_pixels ? npix - pix0 : p->tile_pixels;
        const int32_t npairs = (n + 1) / 2;
        ek__im2col_tile(p, &g, input, tile, pix0, n, runbuf, zp_run);
#if EK_NN_DSP
        a.act = tile;
        a.act_end = tile + npairs * (g.pair_bytes / 4);
#endif
        for (int32_t b = 0; b < g.blocks; b++) {
            const uint32_t *w16 = wcache;
            int32_t *bias_b = bias8 + 8 * b;
            if (bias_per_block) { /* the block's 4 biases, twice, into the one slot (patched programs' small scratch) */
                bias_b = bias8;
                if (p->bias && b < g.full_blocks) {
                    const int32_t *s = p->bias + 4 * b;
                    const int32_t x0 = s[0], x1 = s[1], x2 = s[2], x3 = s[3];
                    bias8[0] = bias8[4] = x0;
                    bias8[1] = bias8[5] = x1;
                    bias8[2] = bias8[6] = x2;
                    bias8[3] = bias8[7] = x3;
                } else {
                    for (int32_t i = 0; i < 4; i++) {
                        const int32_t c = 4 * b + i;
                        bias8[i] = bias8[4 + i] = (p->bias && c < p->out_c) ? p->bias[c] : 0;
                    }
                }
            }
            if (whole_set) {
                w16 = w16_all + b * w16_block_words;
            } else {
                ek__widen_nested(p, &g, b, b < g.full_blocks ? 4 : tail_nc, wcache);
            }
#if EK_NN_DSP
            a.w_start = w16;
            a.w_end = w16 + w16_block_words;
            a.bias8 = bias_b;
            a.qtab = p->requant + 16 * b;
            a.out = output + 4 * b;
            /* a fast block kernel (requantized in asm) for this clamp: the no-clamp one, else the clamp one; neither
             * when the firmware left them out (then raw accumulators and the C requantization) */
            if (rq.fast && b < g.full_blocks) {
#if !EK_NN_NO_GEMM_FAST_NC && !EK_NN_NO_GEMM_FAST
                if (full_range) {
                    ek__conv_gemm_2x4_fast_noclamp(&a);
                } else {
                    ek__conv_gemm_2x4_fast(&a);
                }
                continue;
#elif !EK_NN_NO_GEMM_FAST_NC
                if (full_range) {
                    ek__conv_gemm_2x4_fast_noclamp(&a);
                    continue;
                }
#elif !EK_NN_NO_GEMM_FAST
                ek__conv_gemm_2x4_fast(&a);
                continue;
#endif
            }
#endif
#if EK_NN_DSP && !EK_NN_NO_GEMM_RAW
            a.accbuf = accbuf;
            ek__conv_gemm_2x4_raw(&a);
#else
            ek__conv_gemm_portable(tile, npairs, &g, w16, bias_b, accbuf);
#endif
            ek__conv_store_raw(p, &g, &rq, tile, npairs, b, accbuf, output);
        }
    }
    return EK_NN_OK;
}
/* ===============================================================================================================
 * Fully connected
 * ============================================================================================================= */

/* Input words (4 inputs each), padded to a multiple of 4 inputs; weights in blocks of 4 output channels. */
static int32_t ek__fc_words(const ek_fc_params_t *p) { return (p->in_features + 3) / 4; }

size_t ek_fully_connected_s8_scratch_bytes(const ek_fc_params_t *p)
{
    if (p->flags & (EK_NN_FLAG_MVE | EK_NN_FLAG_RV)) {
        return 0; /* Helium and the scalar kernels read the input row in place */
    }
    return (size_t)ek__fc_words(p) * 8u; /* one prepared input row: {u, y} per 4 inputs */
}

/* One input row -> per 4 inputs x0..x3 the words u = (x1 - 127, x3 - 127) and y = (256*x0 + 127 - x1,
 * 256*x2 + 127 - x3): y's bytes are (127 - x1, x0, 127 - x3, x2) = REV16(x) ^ 0x007F007F. */
static void ek__fc_prepare(const int8_t *x, int32_t n, uint32_t *dst)
{
    for (; n >= 4; n -= 4, x += 4, dst += 2) {
        const uint32_t v = ek__read_u32(x);
        dst[0] = ek__sxtab16_ror8(0xFF81FF81u, v);
        dst[1] = ek__rev16(v) ^ 0x007F007Fu;
    }
    if (n) {
        uint32_t v = 0;
        for (int32_t i = 0; i < n; i++) {
            v |= (uint32_t)(uint8_t)x[i] << (8 * i);
        }
        dst[0] = ek__sxtab16_ror8(0xFF81FF81u, v);
        dst[1] = ek__rev16(v) ^ 0x007F007Fu;
    }
}

#if EK_NN_DSP
typedef struct {
    const uint32_t *x;      /*  0: prepared input row */
    const uint32_t *w;      /*  4: first block's packed weights */
    const int32_t *bias;    /*  8: first block's bias */
    const int32_t *qtab;    /* 12: first block's requant entries */
    void *out;              /* 16: int8 output (fast) or int32 totals (raw) */
    int32_t nblocks;        /* 20 */
    uint32_t upper4;        /* 24 */
    uint32_t back4;         /* 28 */
    int32_t wbytes;         /* 32: packed bytes per block = 16 * words */
    int32_t first_chunk;    /* 36: bytes in the first chunk: 16 * (EK_FC_CHUNK - skip) */
    uint32_t entry;         /* 40: set by the asm */
    uint32_t skip;          /* 44: unrolled steps skipped at the loop entry */
} ek__fc_args_t;

void ek__fc_4ch_fast(ek__fc_args_t *a);
void ek__fc_4ch_raw(ek__fc_args_t *a);

/*
 * Blocks of 4 output channels over one prepared input row. r0-r3 accumulators, r4/r5 the input's u/y words,
 * r6-r9 the 4 channels' weight words, r10 input, r11 weights, r12 end of the current chunk. Per 4 inputs:
 * 2 LDM + 4 x (SMLAD, SXTB16, SMLAD) = 14 32-bit instructions (56 bytes) for 16 MACs. After each chunk of
 * EK_FC_CHUNK words the accumulators (256 x the partial sums) are folded into the totals on the stack with >> 8.
 * Frame: 0-47 a copy of ek__fc_args_t, 48-63 totals, 64 block end.
 */
__asm__(
    "   .syntax unified\n"
    "   .macro EK_FCSTEP\n"
    "   ldm.w   r10!, {r4, r5}\n"
    "   ldm.w   r11!, {r6, r7, r8, r9}\n"
    "   smlad   r0, r6, r4, r0\n"
    "   sxtb16  r6, r6\n"
    "   smlad   r0, r6, r5, r0\n"
    "   smlad   r1, r7, r4, r1\n"
    "   sxtb16  r7, r7\n"
    "   smlad   r1, r7, r5, r1\n"
    "   smlad   r2, r8, r4, r2\n"
    "   sxtb16  r8, r8\n"
    "   smlad   r2, r8, r5, r2\n"
    "   smlad   r3, r9, r4, r3\n"
    "   sxtb16  r9, r9\n"
    "   smlad   r3, r9, r5, r3\n"
    "   .endm\n"
    "   .macro EK_FCRQ v\n"
    "   ldm     lr!, {r0, r1, r2, r3}\n"
    "   smmla   \\v, \\v, r0, r1\n"
    "   asr     \\v, \\v, r2\n"
    "   ssat    \\v, #8, \\v\n"
    "   .endm\n"
    "   .macro EK_FC_4CH name, fast\n"
    "   EK_FUNC \\name\n"
    "   push    {r4-r11, lr}\n"
    "   sub     sp, sp, #72\n"
    "   ldm     r0, {r1-r12}\n"
    "   stm     sp, {r1-r12}\n"
    "   ldr     r1, [sp, #44]\n"          /* entry = body + 56 * skip, Thumb bit set */
    "   rsb     r3, r1, r1, lsl #3\n"
    "   adr     r2, 3f\n"
    "   add     r2, r2, r3, lsl #3\n"
    "   orr     r2, r2, #1\n"
    "   str     r2, [sp, #40]\n"
    "1: ldr     r8, [sp, #8]\n"           /* next block: totals = bias */
    "   ldm     r8!, {r0-r3}\n"
    "   str     r8, [sp, #8]\n"
    "   add     r8, sp, #48\n"
    "   stm     r8, {r0-r3}\n"
    "   ldr     r10, [sp, #0]\n"
    "   ldr     r11, [sp, #4]\n"
    "   ldr     lr, [sp, #32]\n"
    "   add     lr, r11, lr\n"
    "   str     lr, [sp, #64]\n"
    "   ldr     r12, [sp, #36]\n"
    "   add     r12, r11, r12\n"
    "   cmp     r12, lr\n"
    "   it      hi\n"
    "   movhi   r12, lr\n"
    "   movs    r0, #0\n"
    "   movs    r1, #0\n"
    "   movs    r2, #0\n"
    "   movs    r3, #0\n"
    "   ldr     pc, [sp, #40]\n"
    "   .balign 4\n"
    "3:\n"
    "   .rept 16\n"            /* EK_FC_UNROLL */
    "   EK_FCSTEP\n"
    "   .endr\n"
    "   cmp     r11, r12\n"
    "   bne     3b\n"
    "   add     r12, sp, #48\n"           /* fold the chunk: totals += acc >> 8 */
    "   ldm     r12, {r4-r7}\n"
    "   add     r4, r4, r0, asr #8\n"
    "   add     r5, r5, r1, asr #8\n"
    "   add     r6, r6, r2, asr #8\n"
    "   add     r7, r7, r3, asr #8\n"
    "   ldr     lr, [sp, #64]\n"
    "   cmp     r11, lr\n"
    "   beq     4f\n"
    "   stm     r12, {r4-r7}\n"
    "   add     r12, r11, #1024\n"        /* next chunk: EK_FC_CHUNK words of 16 bytes */
    "   cmp     r12, lr\n"
    "   it      hi\n"
    "   movhi   r12, lr\n"
    "   movs    r0, #0\n"
    "   movs    r1, #0\n"
    "   movs    r2, #0\n"
    "   movs    r3, #0\n"
    "   b       3b\n"
    "4:\n"
    "   .if \\fast\n"
    "   ldr     lr, [sp, #12]\n"
    "   EK_FCRQ r4\n"
    "   EK_FCRQ r5\n"
    "   EK_FCRQ r6\n"
    "   EK_FCRQ r7\n"
    "   str     lr, [sp, #12]\n"
    "   bfi     r4, r5, #8, #8\n"
    "   bfi     r4, r6, #16, #8\n"
    "   bfi     r4, r7, #24, #8\n"
    "   ldrd    r0, r1, [sp, #24]\n"
    "   ssub8   r2, r4, r0\n"
    "   sel     r4, r0, r4\n"
    "   uadd8   r4, r4, r1\n"
    "   ldr     r0, [sp, #16]\n"
    "   str     r4, [r0], #4\n"
    "   str     r0, [sp, #16]\n"
    "   .else\n"
    "   ldr     r0, [sp, #16]\n"
    "   stm     r0!, {r4-r7}\n"
    "   str     r0, [sp, #16]\n"
    "   .endif\n"
    "   str     r11, [sp, #4]\n"          /* the next block's weights follow */
    "   ldr     r0, [sp, #20]\n"
    "   subs    r0, r0, #1\n"
    "   str     r0, [sp, #20]\n"
    "   bne     1b\n"
    "   add     sp, sp, #72\n"
    "   pop     {r4-r11, pc}\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
    "   EK_FC_4CH ek__fc_4ch_fast, 1\n"
    "   EK_FC_4CH ek__fc_4ch_raw, 0\n");
#endif

/* Totals of nc <= 4 channels over a prepared input row, weights as nc words per 4 inputs (the same sums as the
 * asm, in C): the portable build's path, and the DSP build's for a last block of fewer than 4 channels. */
static inline __attribute__((always_inline)) void ek__fc_block_n(const uint32_t *x, const ek__word *w,
                                                                  int32_t words, const int32_t nc,
                                                                  const int32_t *bias, int32_t *tot)
{
    for (int32_t c = 0; c < nc; c++) {
        tot[c] = bias[c];
    }
    for (int32_t k0 = 0; k0 < words; k0 += EK_FC_CHUNK) {
        const int32_t k1 = words - k0 < EK_FC_CHUNK ? words : k0 + EK_FC_CHUNK;
        int32_t acc[4] = {0, 0, 0, 0};
#if EK_NN_DSP
        for (int32_t k = k0; k < k1; k++) {
            const uint32_t u = x[2 * k], y = x[2 * k + 1];
            for (int32_t c = 0; c < nc; c++) {
                const uint32_t wv = w[nc * k + c];
                acc[c] = ek__smlad(ek__sxtb16(wv), y, ek__smlad(wv, u, acc[c]));
            }
        }
#else
        /* The same sums without SIMD, every operand one load: SMLAD(wv, u) takes wv's int16 halves (lh), SXTB16(wv)
         * its bytes 0 and 2 (lb); u and y as int16 halves (lh), shared by the channels. */
        const ek__h16 *xh = (const ek__h16 *)(x + 2 * k0);
        const int8_t *wb = (const int8_t *)(w + nc * k0);
#define EK__FC_TERM(c) ((uint32_t)(((const ek__h16 *)(wb + 4 * (c)))[0] * ul) +                                    \
                        (uint32_t)(((const ek__h16 *)(wb + 4 * (c)))[1] * uh) + (uint32_t)(wb[4 * (c)] * yl) +      \
                        (uint32_t)(wb[4 * (c) + 2] * yh))
        if (nc == 4) { /* four accumulators in registers (a loop over c keeps them in memory) */
            uint32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            for (int32_t k = k0; k < k1; k++, xh += 4, wb += 16) {
                const int32_t ul = xh[0], uh = xh[1], yl = xh[2], yh = xh[3];
                a0 += EK__FC_TERM(0);
                a1 += EK__FC_TERM(1);
                a2 += EK__FC_TERM(2);
                a3 += EK__FC_TERM(3);
            }
            acc[0] = (int32_t)a0;
            acc[1] = (int32_t)a1;
            acc[2] = (int32_t)a2;
            acc[3] = (int32_t)a3;
        } else {
            for (int32_t k = k0; k < k1; k++, xh += 4, wb += 4 * nc) {
                const int32_t ul = xh[0], uh = xh[1], yl = xh[2], yh = xh[3];
                for (int32_t c = 0; c < nc; c++) {
                    acc[c] = (int32_t)((uint32_t)acc[c] + EK__FC_TERM(c));
                }
            }
        }
#undef EK__FC_TERM
#endif
        for (int32_t c = 0; c < nc; c++) {
            tot[c] = (int32_t)((uint32_t)tot[c] + (uint32_t)(acc[c] >> 8));
        }
    }
}

static void ek__fc_block_c(const uint32_t *x, const ek__word *w, int32_t words, int32_t nc, const int32_t *bias,
                           int32_t *tot)
{
    switch (nc) { /* a constant channel count per copy, so the channel loop unrolls */
    case 1:
        ek__fc_block_n(x, w, words, 1, bias, tot);
        break;
    case 2:
        ek__fc_block_n(x, w, words, 2, bias, tot);
        break;
    case 3:
        ek__fc_block_n(x, w, words, 3, bias, tot);
        break;
    default:
        ek__fc_block_n(x, w, words, 4, bias, tot);
        break;
    }
}

/* One prepared input row (ek__fc_prepare) through every block of output channels into out. */
static void ek__fc_row(const ek_fc_params_t *p, const ek__rq_t *rq, const uint32_t *x, int8_t *output)
{
    const int32_t words = ek__fc_words(p);
    const int32_t blocks = (p->out_features + 3) / 4;
    /* nested weights (a prefix of a wider layer's): blocks weight_block_bytes apart, one block per asm call */
    const int32_t block_bytes = p->weight_block_bytes ? p->weight_block_bytes : 16 * words;
    int32_t first = 0;
#if EK_NN_DSP
    const int32_t full_blocks = p->out_features / 4;
    ek__fc_args_t a;
    const uint32_t skip = (uint32_t)((EK_FC_UNROLL - words % EK_FC_UNROLL) % EK_FC_UNROLL);
    a.x = x;
    a.w = (const uint32_t *)(const void *)p->weights;
    a.bias = p->bias;
    a.qtab = p->requant;
    a.out = output;
    a.nblocks = full_blocks;
    a.upper4 = ek__bytes4(rq->upper);
    a.back4 = ek__bytes4(rq->back);
    a.wbytes = 16 * words;
    a.first_chunk = 16 * (EK_FC_CHUNK - (int32_t)skip);
    a.entry = 0;
    a.skip = skip;
    if (rq->fast && full_blocks && block_bytes == 16 * words) {
        ek__fc_4ch_fast(&a);
        first = full_blocks;
    } else if (rq->fast) {
        for (; first < full_blocks; first++) {
            a.w = (const uint32_t *)(const void *)(p->weights + first * block_bytes);
            a.bias = p->bias + 4 * first;
            a.qtab = p->requant + 16 * first;
            a.out = output + 4 * first;
            a.nblocks = 1;
            ek__fc_4ch_fast(&a);
        }
    }
#endif
    for (int32_t blk = first; blk < blocks; blk++) {
        const int32_t nc = p->out_features - 4 * blk < 4 ? p->out_features - 4 * blk : 4;
        const int8_t *wb = p->weights + blk * block_bytes;
        int32_t tot[4];
#if EK_NN_DSP && !EK_NN_NO_FC_RAW
        if (nc == 4) {
            a.w = (const uint32_t *)(const void *)wb;
            a.bias = p->bias + 4 * blk;
            a.out = tot;
            a.nblocks = 1;
            ek__fc_4ch_raw(&a);
        } else
#endif
        {
            ek__fc_block_c(x, (const ek__word *)(const void *)wb, words, nc, p->bias + 4 * blk, tot);
        }
        for (int32_t c = 0; c < nc; c++) {
            output[4 * blk + c] = ek__requant(rq, tot[c], p->requant + 4 * (4 * blk + c));
        }
    }
}

int ek_fully_connected_s8(const ek_fc_params_t *p, const int8_t *input, int8_t *output, void *scratch)
{
    if (p->batch < 1 || p->in_features < 1 || p->out_features < 1 || p->in_row_stride < p->in_features ||
        p->out_row_stride < p->out_features || !p->bias) {
        return EK_NN_ERR_ARG;
    }
    if (!ek__aligned(p->weights) || !ek__aligned(p->bias) || !ek__aligned(p->requant) || !ek__aligned(scratch)) {
        return EK_NN_ERR_ALIGN;
    }
    EK_NN_HELIUM(p, ek__mve_fully_connected_s8(p, input, output));
    EK_NN_SCALAR(p, ek__rv_fully_connected(p, input, output));
    uint32_t *x = (uint32_t *)scratch;
    ek__rq_t rq;
    ek__rq_init(&rq, p->flags, p->output_offset, p->act_min, p->act_max);
    for (int32_t b = 0; b < p->batch; b++, input += p->in_row_stride, output += p->out_row_stride) {
        ek__fc_prepare(input, p->in_features, x);
        ek__fc_row(p, &rq, x, output);
    }
    return EK_NN_OK;
}

/* ===============================================================================================================
 * Convolution as a fully connected layer per output pixel (EK_NN_FLAG_CONV_FC)
 *
 * For calls with little scratch or few pixels (patch tiles, small maps): each output pixel's window becomes one
 * prepared FC input row in (kernel row, kernel column, channel) order — straight from the input when the channels
 * come in fours, else gathered as bytes first —, padding holding the input zero point (it adds nothing: the packed
 * bias carries -zp * sum(w)), and the FC kernel runs it against the weights packed in the FC layout
 * (kernel_pack.pack_conv2d). Nothing is widened per call or tile: the FC kernel reads int8 weights (SMLAD on the
 * word, SXTB16, SMLAD: ~0.9 instructions per MAC), where the tile GEMM widens every block's weights again for each
 * im2col tile when it cannot cache them. Scratch: the prepared row and the byte window, 3 bytes per input.
 * ============================================================================================================= */

#if !EK_NN_NO_CONV_FC
/* n (a multiple of 4) prepared inputs of the zero point: the words of one 4-byte group, repeated */
static uint32_t *ek__fc_pad(uint32_t *d, int32_t n, const uint32_t zpw[2])
{
    for (; n > 0; n -= 4, d += 2) {
        d[0] = zpw[0];
        d[1] = zpw[1];
    }
    return d;
}

/* One pixel's window as bytes (channels not in fours), padding = the zero point. The same walk as ek__conv_fc's
 * prepared one, kept apart: one walk for both (a flag per run) measured 3-10 % more instructions per MAC. */
static void ek__conv_fc_gather(const ek_conv_params_t *p, const int8_t *input, int32_t iy0, int32_t ix0,
                               int inside_x, int8_t *d)
{
    const int32_t cin = p->in_c, krow = p->kernel_w * cin;
    const int zp = -p->input_offset;
    for (int32_t ky = 0; ky < p->kernel_h; ky++, d += krow) {
        const int32_t iy = iy0 + ky * p->dilation_h;
        if (iy < 0 || iy >= p->in_h) {
            memset(d, zp, (size_t)krow);
            continue;
        }
        const int8_t *src = input + iy * p->in_row_stride;
        if (inside_x && p->dilation_w == 1) { /* the kernel row is one run of the input row */
            memcpy(d, src + ix0 * cin, (size_t)krow);
            continue;
        }
        for (int32_t kx = 0; kx < p->kernel_w; kx++) {
            const int32_t ix = ix0 + kx * p->dilation_w;
            if (ix < 0 || ix >= p->in_w) {
                memset(d + kx * cin, zp, (size_t)cin);
            } else {
                memcpy(d + kx * cin, src + ix * cin, (size_t)cin);
            }
        }
    }
}

static int ek__conv_fc(const ek_conv_params_t *p, const int8_t *input, int8_t *output, void *scratch)
{
    const int32_t cin = p->in_c, kw = p->kernel_w, kh = p->kernel_h;
    const int32_t k = kh * kw * cin, krow = kw * cin;
    uint32_t *x = (uint32_t *)scratch;                  /* the prepared row: 2 words per 4 inputs */
    int8_t *row = (int8_t *)(x + 2 * ((k + 3) / 4));    /* the window as bytes (channels not in fours) */
    if (!p->bias) {
        return EK_NN_ERR_ARG; /* the packed bias carries the zero-point terms */
    }
    ek_fc_params_t f;
    f.batch = 1;
    f.in_features = k;
    f.out_features = p->out_c;
    f.in_row_stride = k;
    f.out_row_stride = p->out_c;
    f.input_offset = p->input_offset;
    f.output_offset = p->output_offset;
    f.act_min = p->act_min;
    f.act_max = p->act_max;
    f.flags = p->flags & EK_NN_FLAG_FAST_REQUANT;
    f.weight_block_bytes = 0;
    f.weights = p->weights;
    f.bias = p->bias;
    f.requant = p->requant;
    ek__rq_t rq;
    ek__rq_init(&rq, f.flags, f.output_offset, f.act_min, f.act_max);
    const int words_direct = (cin & 3) == 0;
    uint32_t zpw[2];
    const int8_t z4[4] = {(int8_t)-p->input_offset, (int8_t)-p->input_offset, (int8_t)-p->input_offset,
                          (int8_t)-p->input_offset};
    ek__fc_prepare(z4, 4, zpw);
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        int8_t *out = output + oy * p->out_row_stride;
        for (int32_t ox = 0; ox < p->out_w; ox++, out += p->out_c) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            const int inside_x = ix0 >= 0 && ix0 + (kw - 1) * p->dilation_w < p->in_w;
            if (!words_direct) {
                ek__conv_fc_gather(p, input, iy0, ix0, inside_x, row);
                ek__fc_prepare(row, k, x);
                ek__fc_row(&f, &rq, x, out);
                continue;
            }
            uint32_t *d = x;
            for (int32_t ky = 0; ky < kh; ky++) {
                const int32_t iy = iy0 + ky * p->dilation_h;
                if (iy < 0 || iy >= p->in_h) {
                    d = ek__fc_pad(d, krow, zpw);
                    continue;
                }
                const int8_t *src = input + iy * p->in_row_stride;
                if (inside_x && p->dilation_w == 1) { /* the kernel row is one run of the input row */
                    ek__fc_prepare(src + ix0 * cin, krow, d);
                    d += krow / 2;
                    continue;
                }
                for (int32_t kx = 0; kx < kw; kx++) {
                    const int32_t ix = ix0 + kx * p->dilation_w;
                    if (ix < 0 || ix >= p->in_w) {
                        d = ek__fc_pad(d, cin, zpw);
                    } else {
                        ek__fc_prepare(src + ix * cin, cin, d);
                        d += cin / 2;
                    }
                }
            }
            ek__fc_row(&f, &rq, x, out);
        }
    }
    return EK_NN_OK;
}
#endif /* !EK_NN_NO_CONV_FC */

/* ===============================================================================================================
 * Depthwise convolution
 * ============================================================================================================= */

/*
 * Three layouts (kernel_pack picks one per layer by its fitted cost): rows (below: wide maps), channels-last
 * (EK_NN_FLAG_DW_CHANNELS: the smallest maps, other kernels) and pairs (EK_NN_FLAG_DW_PAIRS, ek__dw_pairs: 3x3 on
 * small and mid-sized maps).
 *
 * Rows: four channels at a time are transposed into int16 rows, one ring of kernel rows per channel: plane row pr holds
 * input row pr - pad_top, plane column col holds input column col - pad_left, with the zero point subtracted and
 * padding stored as 0. Row length: the plane columns the outputs read, plus slack for the last word reads.
 */
typedef struct {
    int32_t plane_w, row_words, slots; /* plane columns, words per row, ring slots (kernel rows spanned) */
} ek__dw_geom_t;

static void ek__dw_geom(const ek_conv_params_t *p, ek__dw_geom_t *g)
{
    /* The plane covers the outputs rounded up to 4: the 3x3 row kernels compute 4 outputs at a time, and a row's
     * last 1-3 outputs in a group of 2 (1-2 of them) or 4 (3) whose extra outputs are not stored (their columns are
     * padding). */
    const int32_t out_w4 = (p->out_w + 3) & ~3;
    g->plane_w = (out_w4 - 1) * p->stride_w + (p->kernel_w - 1) * p->dilation_w + 1;
    g->row_words = (g->plane_w + 3) / 2;
    g->slots = (p->kernel_h - 1) * p->dilation_h + 1;
}

/* EK_NN_FLAG_DW_PAIRS (ek__dw_pairs): output pairs per row, column pairs per plane row, plane rows. */
static void ek__dwp_geom(const ek_conv_params_t *p, int32_t *npo, int32_t *pw, int32_t *ph)
{
    *npo = (p->out_w + 1) / 2;                                     /* output pairs per row */
    *pw = p->stride_w == 2 ? 2 * *npo + 1 : *npo + 1;              /* column pairs per plane row */
    *ph = (p->out_h - 1) * p->stride_h + 3;                        /* plane rows */
}

/* A 3x1 kernel (dilation 1, stride_h 1 or 2) is a 1x3 kernel on the transposed map: columns become rows. */
static int ek__dw_columns(const ek_conv_params_t *p)
{
    return p->kernel_h == 3 && p->kernel_w == 1 && p->dilation_h == 1 && p->dilation_w == 1 &&
           (p->stride_h == 1 || p->stride_h == 2);
}

/* The transposed view: rows of t are columns of p (a row step is one pixel, in_c bytes; the bytes per pixel along
 * a row of t, p's row strides, are passed to the kernels apart). */
static void ek__dw_transpose(const ek_conv_params_t *p, ek_conv_params_t *t)
{
    *t = *p;
    t->in_h = p->in_w;
    t->in_w = p->in_h;
    t->in_row_stride = p->in_c;
    t->out_h = p->out_w;
    t->out_w = p->out_h;
    t->out_row_stride = p->out_c;
    t->kernel_h = p->kernel_w;
    t->kernel_w = p->kernel_h;
    t->stride_h = p->stride_w;
    t->stride_w = p->stride_h;
    t->dilation_h = p->dilation_w;
    t->dilation_w = p->dilation_h;
    t->pad_top = p->pad_left;
    t->pad_bottom = p->pad_right;
    t->pad_left = p->pad_top;
    t->pad_right = p->pad_bottom;
}

size_t ek_depthwise_conv2d_s8_scratch_bytes(const ek_conv_params_t *p)
{
    if (p->flags & EK_NN_FLAG_MVE) {
        return ((size_t)p->in_c + 15u) & ~(size_t)15; /* a row of x_zp that padding taps read */
    }
    if (p->flags & (EK_NN_FLAG_DW_CHANNELS | EK_NN_FLAG_RV)) {
        return 0;
    }
    if (p->flags & EK_NN_FLAG_DW_TRANSPOSED) { /* the kernels run on the transposed view */
        ek_conv_params_t t;
        ek__dw_transpose(p, &t);
        t.flags &= ~EK_NN_FLAG_DW_TRANSPOSED;
        return ek_depthwise_conv2d_s8_scratch_bytes(&t);
    }
    size_t plane = 0;
    if (p->flags & EK_NN_FLAG_DW_PAIRS) { /* the padded plane of one group of 4 channels (ek__dw_pairs), or a ring */
        int32_t npo, pw, ph;
        ek__dwp_geom(p, &npo, &pw, &ph);
        plane = (size_t)ph * (size_t)pw * 16u;
    }
    ek__dw_geom_t g;
    ek__dw_geom(p, &g);
    size_t bytes = (size_t)4 * (size_t)g.slots * (size_t)g.row_words * 4u;
    if (ek__dw_columns(p)) { /* the DSP build runs it as a 1x3 down the columns (ek__dw_transpose) */
        ek_conv_params_t t;
        ek__dw_transpose(p, &t);
        ek__dw_geom(&t, &g);
        const size_t tb = (size_t)4 * (size_t)g.slots * (size_t)g.row_words * 4u;
        bytes = tb > bytes ? tb : bytes;
    }
    return plane > bytes ? plane : bytes;
}

#if EK_NN_DSP
typedef struct {
    const int8_t *src; /* 0: input at the first column pair, first of the 4 channels */
    int32_t c;         /* 4: bytes per input pixel */
    uint32_t off2;     /* 8: input offset in both halves */
    uint32_t *d0;      /* 12: the 4 channels' rows at the first word */
    uint32_t *d1;      /* 16 */
    uint32_t *d2;      /* 20 */
    uint32_t *d3;      /* 24 */
    int32_t n;         /* 28: words (column pairs), >= 1 */
} ek__dw_build_args_t;

typedef struct {
    const uint32_t *r0, *r1, *r2; /* 0, 4, 8: the first channel's kernel rows at the first output's first column */
    int8_t *out;                  /* 12: the first channel's first output */
    int32_t span;                 /* 16: bytes from a channel's first output to past its last (4k * stride) */
    int32_t stride;               /* 20: output bytes per pixel */
    int32_t chs;                  /* 24: bytes from one channel's rows in the ring to the next channel's */
    int32_t nc;                   /* 28: channels (>= 1; each the next byte of the output pixel) */
    const struct ek__dw3_ch *ch;  /* 32: their constants */
    int32_t tail;                 /* 36: outputs past the last group of 4 (0-3): one more group, only these stored */
} ek__dw3_args_t;

typedef struct ek__dw3_ch {
    int32_t bias;                 /* 0 */
    int32_t mult, add, shift;     /* 4, 8, 12: the channel's fast requant entry {mult, a, b} */
    uint32_t upper4, back4;       /* 16, 20 */
    uint32_t w[6];                /* 24..: per kernel row (w0, w1), then (w1, w2) (stride 1) or (w2, 0) (stride 2) */
} ek__dw3_ch_t;

void ek__dw_build4(const ek__dw_build_args_t *a);
void ek__dw3x3s1_row(const ek__dw3_args_t *a);
void ek__dw3x3s2_row(const ek__dw3_args_t *a);
void ek__dw3x3s1_row_nc(const ek__dw3_args_t *a); /* the same without the clamp (act range all of int8) */
void ek__dw3x3s2_row_nc(const ek__dw3_args_t *a);
/* 1x3 (one kernel row: r1, r2 and the other rows' weights unused) */
void ek__dw1x3s1_row(const ek__dw3_args_t *a);
void ek__dw1x3s2_row(const ek__dw3_args_t *a);
void ek__dw1x3s1_row_nc(const ek__dw3_args_t *a);
void ek__dw1x3s2_row_nc(const ek__dw3_args_t *a);

typedef struct {
    const uint32_t *rows[5];  /* 0..16: the 5 kernel rows at the first output's first column */
    int8_t *out;              /* 20 */
    int8_t *out_end;          /* 24: out + 4k * stride */
    int32_t stride;           /* 28: output bytes per pixel */
    int32_t bias;             /* 32 */
    int32_t mult, add, shift; /* 36, 40, 44: the channel's fast requant entry {mult, a, b} */
    uint32_t upper4, back4;   /* 48, 52 */
    uint32_t w[25];           /* 56..: per kernel row (w0, w1), (w2, w3), (w4, 0), (w1, w2), (w3, w4) */
    int32_t tail;             /* 156: outputs past out_end (0-3): 2-output steps in the same call, only these stored */
} ek__dw5_args_t;

void ek__dw5x5s1_row(const ek__dw5_args_t *a);
void ek__dw5x5s1_row_nc(const ek__dw5_args_t *a);
/* stride 2 (weights per kernel row (w0, w1), (w2, w3), (w4, 0); the other two words unused) */
void ek__dw5x5s2_row(const ek__dw5_args_t *a);
void ek__dw5x5s2_row_nc(const ek__dw5_args_t *a);

/*
 * ek__dw_build4: n column pairs of 4 channels -> one word per channel: 2 LDR, 4 SXTAB16, 4 PKH, 4 STR per 8
 * elements. ek__dw3x3s1_row: 4 outputs of one channel per step; per kernel row the words A, B, C hold columns
 * x .. x+5 and o0 = SMLAD(A, w01) + SMLABT(B, w12), o1 = SMLATB(A, w01) + SMLAD(B, w12), o2, o3 likewise from B, C.
 * A row's last 1-3 outputs (ek__dw3_args_t.tail) are one more step in the same call, for each channel: o0, o1 alone
 * (EK_DW2ROW*) when 1-2 are left, all four when 3; only those are stored (a call per channel and byte copies
 * before: 3x3 depthwise 6 wide 5.39 -> 3.68 instructions/MAC, 5 wide 6.24 -> 4.28, bench/dw_layout_fit.py).
 */
__asm__(
    "   .syntax unified\n"
    "   EK_FUNC ek__dw_build4\n"
    "   push    {r4-r11, lr}\n"
    "   ldm     r0, {r0-r7}\n"
    "1: ldr     r8, [r0]\n"
    "   ldr     r9, [r0, r1]\n"
    "   add     r0, r0, r1, lsl #1\n"
    "   sxtab16 r10, r2, r8\n"
    "   sxtab16 r8, r2, r8, ror #8\n"
    "   sxtab16 r11, r2, r9\n"
    "   sxtab16 r9, r2, r9, ror #8\n"
    "   pkhbt   r12, r10, r11, lsl #16\n"
    "   pkhtb   r10, r11, r10, asr #16\n"
    "   pkhbt   lr, r8, r9, lsl #16\n"
    "   pkhtb   r8, r9, r8, asr #16\n"
    "   str     r12, [r3], #4\n"
    "   str     lr, [r4], #4\n"
    "   str     r10, [r5], #4\n"
    "   str     r8, [r6], #4\n"
    "   subs    r7, r7, #1\n"
    "   bne     1b\n"
    "   pop     {r4-r11, pc}\n"
    "   .size ek__dw_build4, . - ek__dw_build4\n"
    "   .popsection\n"
    "   .macro EK_DW3ROW off, rp\n"
    "   ldrd    r7, r8, [sp, #\\off]\n"
    "   ldrd    r4, r5, [\\rp], #8\n"
    "   ldr     r6, [\\rp]\n"
    "   smlad   r0, r4, r7, r0\n"
    "   smlabt  r0, r5, r8, r0\n"
    "   smlatb  r1, r4, r7, r1\n"
    "   smlad   r1, r5, r8, r1\n"
    "   smlad   r2, r5, r7, r2\n"
    "   smlabt  r2, r6, r8, r2\n"
    "   smlatb  r3, r5, r7, r3\n"
    "   smlad   r3, r6, r8, r3\n"
    "   .endm\n"
    "   .macro EK_DW3ROW1 off, rp\n"   /* the first kernel row: o1, o2, o3 start from the bias in r0, o0 last */
    "   ldr     r0, [sp, #24]\n"
    "   ldrd    r7, r8, [sp, #\\off]\n"
    "   ldrd    r4, r5, [\\rp], #8\n"
    "   ldr     r6, [\\rp]\n"
    "   smlatb  r1, r4, r7, r0\n"
    "   smlad   r2, r5, r7, r0\n"
    "   smlatb  r3, r5, r7, r0\n"
    "   smlad   r0, r4, r7, r0\n"
    "   smlabt  r0, r5, r8, r0\n"
    "   smlad   r1, r5, r8, r1\n"
    "   smlabt  r2, r6, r8, r2\n"
    "   smlad   r3, r6, r8, r3\n"
    "   .endm\n"
    "   .macro EK_DW3ROW1_S2 off, rp\n"   /* the first kernel row at stride 2, from the bias in r3 */
    "   ldr     r3, [sp, #24]\n"
    "   ldrd    r7, r8, [sp, #\\off]\n"
    "   ldrd    r4, r5, [\\rp], #8\n"
    "   smlad   r0, r4, r7, r3\n"
    "   smlad   r1, r5, r7, r3\n"
    "   smlabb  r0, r5, r8, r0\n"
    "   ldrd    r4, r6, [\\rp], #8\n"
    "   smlad   r2, r4, r7, r3\n"
    "   smlad   r3, r6, r7, r3\n"
    "   smlabb  r1, r4, r8, r1\n"
    "   smlabb  r2, r6, r8, r2\n"
    "   ldr     r4, [\\rp]\n"
    "   smlabb  r3, r4, r8, r3\n"
    "   .endm\n"
    "   .macro EK_DW3ROW_S2 off, rp\n"   /* o_k += SMLAD(W_k, (w0, w1)) + SMLABB(W_k+1, w2) */
    "   ldrd    r7, r8, [sp, #\\off]\n"
    "   ldrd    r4, r5, [\\rp], #8\n"
    "   smlad   r0, r4, r7, r0\n"
    "   smlabb  r0, r5, r8, r0\n"
    "   smlad   r1, r5, r7, r1\n"
    "   ldrd    r4, r6, [\\rp], #8\n"
    "   smlabb  r1, r4, r8, r1\n"
    "   smlad   r2, r4, r7, r2\n"
    "   smlabb  r2, r6, r8, r2\n"
    "   smlad   r3, r6, r7, r3\n"
    "   ldr     r4, [\\rp]\n"
    "   smlabb  r3, r4, r8, r3\n"
    "   .endm\n"
    /* 2 outputs (the last 1-2 of a row): the first two of the 4-output macros' sums */
    "   .macro EK_DW2ROW1 off, rp\n"
    "   ldr     r0, [sp, #24]\n"
    "   ldrd    r7, r8, [sp, #\\off]\n"
    "   ldrd    r4, r5, [\\rp]\n"
    "   smlatb  r1, r4, r7, r0\n"
    "   smlad   r0, r4, r7, r0\n"
    "   smlabt  r0, r5, r8, r0\n"
    "   smlad   r1, r5, r8, r1\n"
    "   .endm\n"
    "   .macro EK_DW2ROW off, rp\n"
    "   ldrd    r7, r8, [sp, #\\off]\n"
    "   ldrd    r4, r5, [\\rp]\n"
    "   smlad   r0, r4, r7, r0\n"
    "   smlabt  r0, r5, r8, r0\n"
    "   smlatb  r1, r4, r7, r1\n"
    "   smlad   r1, r5, r8, r1\n"
    "   .endm\n"
    "   .macro EK_DW2ROW1_S2 off, rp\n"
    "   ldr     r1, [sp, #24]\n"
    "   ldrd    r7, r8, [sp, #\\off]\n"
    "   ldrd    r4, r5, [\\rp]\n"
    "   ldr     r6, [\\rp, #8]\n"
    "   smlad   r0, r4, r7, r1\n"
    "   smlabb  r0, r5, r8, r0\n"
    "   smlad   r1, r5, r7, r1\n"
    "   smlabb  r1, r6, r8, r1\n"
    "   .endm\n"
    "   .macro EK_DW2ROW_S2 off, rp\n"
    "   ldrd    r7, r8, [sp, #\\off]\n"
    "   ldrd    r4, r5, [\\rp]\n"
    "   ldr     r6, [\\rp, #8]\n"
    "   smlad   r0, r4, r7, r0\n"
    "   smlabb  r0, r5, r8, r0\n"
    "   smlad   r1, r5, r7, r1\n"
    "   smlabb  r1, r6, r8, r1\n"
    "   .endm\n"
    "   .macro EK_DW2_RQ mo\n"            /* requantise o0, o1 (r0, r1) */
    "   ldrd    r4, r5, [sp, #\\mo]\n"
    "   smmla   r0, r0, r4, r5\n"
    "   smmla   r1, r1, r4, r5\n"
    "   ldr     r6, [sp, #(\\mo + 8)]\n"
    "   asr     r0, r0, r6\n"
    "   asr     r1, r1, r6\n"
    "   ssat    r0, #8, r0\n"
    "   ssat    r1, #8, r1\n"
    "   .endm\n"
    /* clamp the bytes packed in r0 (upper4 / back4 at [sp, #mo + 12]) and store the first [sp, #108] of them (1 to
     * ``most``) a pixel apart */
    "   .macro EK_DW_TAIL_STORE mo, eo, most, ko=108\n"
    "   ldrd    r4, r5, [sp, #(\\mo + 12)]\n"
    "   ssub8   r6, r0, r4\n"
    "   sel     r0, r4, r0\n"
    "   uadd8   r0, r0, r5\n"
    "   ldr     lr, [sp, #(\\eo + 4)]\n"
    "   ldr     r1, [sp, #\\ko]\n"
    "   strb    r0, [r12]\n"
    "   cmp     r1, #1\n"
    "   beq     5f\n"
    "   lsr     r0, r0, #8\n"
    "   strb    r0, [r12, lr]\n"
    "   .if \\most == 3\n"
    "   cmp     r1, #2\n"
    "   beq     5f\n"
    "   lsr     r0, r0, #8\n"
    "   strb    r0, [r12, lr, lsl #1]\n"
    "   .endif\n"
    "5:\n"
    "   .endm\n"
    "   .macro EK_DW2_TAIL mo, eo\n"      /* requantise o0, o1, clamp, store the first [sp, #108] (1-2) */
    "   EK_DW2_RQ \\mo\n"
    "   bfi     r0, r1, #8, #8\n"
    "   EK_DW_TAIL_STORE \\mo, \\eo, 2\n"
    "   .endm\n"
    /* store the first [sp, #108] of r0, r1 (, r2) (1 to ``most``) a pixel apart: SSAT was the clamp */
    "   .macro EK_DW_TAIL_STORE_NC eo, most, ko=108\n"
    "   ldr     lr, [sp, #(\\eo + 4)]\n"
    "   ldr     r4, [sp, #\\ko]\n"
    "   strb    r0, [r12]\n"
    "   cmp     r4, #1\n"
    "   beq     5f\n"
    "   strb    r1, [r12, lr]\n"
    "   .if \\most == 3\n"
    "   cmp     r4, #2\n"
    "   beq     5f\n"
    "   strb    r2, [r12, lr, lsl #1]\n"
    "   .endif\n"
    "5:\n"
    "   .endm\n"
    "   .macro EK_DW2_TAIL_NC mo, eo\n"
    "   EK_DW2_RQ \\mo\n"
    "   EK_DW_TAIL_STORE_NC \\eo, 2\n"
    "   .endm\n"
    "   .macro EK_DW3_FUNC name, row1, row, store, tail, row1_2, row_2, tail2, nrows=3\n"
    "   EK_FUNC \\name\n"
    /* frame: 0..71 the current channel as the row and store macros read it (16: out_end, 20: stride, 24: bias,
     * 28..: requant, 48..: weights); 72..111 the arguments (rows, out, span, stride, chs, nc, ch, tail) */
    "   push    {r4-r11, lr}\n"
    "   sub     sp, sp, #112\n"
    "   ldm     r0, {r1-r10}\n"
    "   add     r0, sp, #72\n"
    "   stm     r0, {r1-r10}\n"
    "2: ldr     r0, [sp, #104]\n"       /* the channel's constants into the frame */
    "   ldm     r0!, {r1-r12}\n"
    "   str     r0, [sp, #104]\n"
    "   add     r0, sp, #24\n"
    "   stm     r0, {r1-r12}\n"
    "   ldrd    r12, r1, [sp, #84]\n"   /* out, span */
    "   ldr     r2, [sp, #92]\n"
    "   add     r1, r1, r12\n"
    "   strd    r1, r2, [sp, #16]\n"    /* out_end, stride */
    "   add     r0, sp, #72\n"
    "   ldm     r0, {r9-r11}\n"
    "1: \\row1  48, r9\n"
    "   .if \\nrows == 3\n"
    "   \\row   56, r10\n"
    "   \\row   64, r11\n"
    "   .endif\n"
    "   \\store 28, 16\n"
    "   bne     1b\n"
    "   ldr     r0, [sp, #108]\n"      /* the last 1-3 outputs (out of line, below) */
    "   cbnz    r0, 3f\n"
    "4: add     r6, sp, #72\n"          /* the next channel: its rows chs further, its outputs a byte further */
    "   ldm     r6, {r0-r3}\n"
    "   ldr     r5, [sp, #96]\n"
    "   add     r0, r0, r5\n"
    "   add     r1, r1, r5\n"
    "   add     r2, r2, r5\n"
    "   adds    r3, r3, #1\n"
    "   stm     r6, {r0-r3}\n"
    "   ldr     r0, [sp, #100]\n"
    "   subs    r0, r0, #1\n"
    "   str     r0, [sp, #100]\n"
    "   bne     2b\n"
    "   add     sp, sp, #112\n"
    "   pop     {r4-r11, pc}\n"
    "3: cmp     r0, #3\n"              /* 1-2 left: a 2-output step; 3 left: a 4-output one; only they stored */
    "   beq     6f\n"
    "   \\row1_2  48, r9\n"
    "   .if \\nrows == 3\n"
    "   \\row_2   56, r10\n"
    "   \\row_2   64, r11\n"
    "   .endif\n"
    "   \\tail2  28, 16\n"
    "   b       4b\n"
    "6: \\row1  48, r9\n"
    "   .if \\nrows == 3\n"
    "   \\row   56, r10\n"
    "   \\row   64, r11\n"
    "   .endif\n"
    "   \\tail  28, 16\n"
    "   b       4b\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
    "   .macro EK_DW3_RQ4 mo\n"            /* requantise o0..o3 (r0-r3) with the channel's constants at [sp, #mo] */
    "   ldrd    r4, r5, [sp, #\\mo]\n"
    "   smmla   r0, r0, r4, r5\n"
    "   smmla   r1, r1, r4, r5\n"
    "   smmla   r2, r2, r4, r5\n"
    "   smmla   r3, r3, r4, r5\n"
    "   ldr     r6, [sp, #(\\mo + 8)]\n"
    "   asr     r0, r0, r6\n"
    "   asr     r1, r1, r6\n"
    "   asr     r2, r2, r6\n"
    "   asr     r3, r3, r6\n"
    "   ssat    r0, #8, r0\n"
    "   ssat    r1, #8, r1\n"
    "   ssat    r2, #8, r2\n"
    "   ssat    r3, #8, r3\n"
    "   .endm\n"
    "   .macro EK_DW3_STORE4 mo, eo\n"      /* requantise o0..o3, store them a pixel apart, compare with the end */
    "   EK_DW3_RQ4 \\mo\n"
    "   bfi     r0, r1, #8, #8\n"
    "   bfi     r0, r2, #16, #8\n"
    "   bfi     r0, r3, #24, #8\n"
    "   ldrd    r4, r5, [sp, #(\\mo + 12)]\n"
    "   ssub8   r6, r0, r4\n"
    "   sel     r0, r4, r0\n"
    "   uadd8   r0, r0, r5\n"
    "   ldr     lr, [sp, #(\\eo + 4)]\n"
    "   strb    r0, [r12]\n"
    "   lsr     r0, r0, #8\n"
    "   strb    r0, [r12, lr]\n"
    "   add     r12, r12, lr, lsl #1\n"
    "   lsr     r0, r0, #8\n"
    "   strb    r0, [r12]\n"
    "   lsr     r0, r0, #8\n"
    "   strb    r0, [r12, lr]\n"
    "   add     r12, r12, lr, lsl #1\n"
    "   ldr     lr, [sp, #\\eo]\n"
    "   cmp     r12, lr\n"
    "   .endm\n"
    "   .macro EK_DW3_STORE4_NC mo, eo\n"   /* the same when the clamp is all of int8 (upper 127, back 0): SSAT is it */
    "   EK_DW3_RQ4 \\mo\n"
    "   ldrd    r7, lr, [sp, #\\eo]\n"  /* out_end, output stride */
    "   strb    r0, [r12]\n"
    "   strb    r1, [r12, lr]\n"
    "   add     r12, r12, lr, lsl #1\n"
    "   strb    r2, [r12]\n"
    "   strb    r3, [r12, lr]\n"
    "   add     r12, r12, lr, lsl #1\n"
    "   cmp     r12, r7\n"
    "   .endm\n"
    "   .macro EK_DW3_TAIL mo, eo\n"       /* requantise o0..o3, clamp, store the first [sp, #108] (1-3) of them */
    "   EK_DW3_RQ4 \\mo\n"
    "   bfi     r0, r1, #8, #8\n"
    "   bfi     r0, r2, #16, #8\n"
    "   bfi     r0, r3, #24, #8\n"
    "   EK_DW_TAIL_STORE \\mo, \\eo, 3\n"
    "   .endm\n"
    "   .macro EK_DW3_TAIL_NC mo, eo\n"    /* the same when SSAT is the clamp */
    "   EK_DW3_RQ4 \\mo\n"
    "   EK_DW_TAIL_STORE_NC \\eo, 3\n"
    "   .endm\n"
    "   EK_DW3_FUNC ek__dw3x3s1_row, EK_DW3ROW1, EK_DW3ROW, EK_DW3_STORE4, EK_DW3_TAIL, "
    "EK_DW2ROW1, EK_DW2ROW, EK_DW2_TAIL\n"
    "   EK_DW3_FUNC ek__dw3x3s2_row, EK_DW3ROW1_S2, EK_DW3ROW_S2, EK_DW3_STORE4, EK_DW3_TAIL, "
    "EK_DW2ROW1_S2, EK_DW2ROW_S2, EK_DW2_TAIL\n"
    "   EK_DW3_FUNC ek__dw3x3s1_row_nc, EK_DW3ROW1, EK_DW3ROW, EK_DW3_STORE4_NC, EK_DW3_TAIL_NC, "
    "EK_DW2ROW1, EK_DW2ROW, EK_DW2_TAIL_NC\n"
    "   EK_DW3_FUNC ek__dw3x3s2_row_nc, EK_DW3ROW1_S2, EK_DW3ROW_S2, EK_DW3_STORE4_NC, EK_DW3_TAIL_NC, "
    "EK_DW2ROW1_S2, EK_DW2ROW_S2, EK_DW2_TAIL_NC\n"
    "   EK_DW3_FUNC ek__dw1x3s1_row, EK_DW3ROW1, EK_DW3ROW, EK_DW3_STORE4, EK_DW3_TAIL, "
    "EK_DW2ROW1, EK_DW2ROW, EK_DW2_TAIL, 1\n"
    "   EK_DW3_FUNC ek__dw1x3s2_row, EK_DW3ROW1_S2, EK_DW3ROW_S2, EK_DW3_STORE4, EK_DW3_TAIL, "
    "EK_DW2ROW1_S2, EK_DW2ROW_S2, EK_DW2_TAIL, 1\n"
    "   EK_DW3_FUNC ek__dw1x3s1_row_nc, EK_DW3ROW1, EK_DW3ROW, EK_DW3_STORE4_NC, EK_DW3_TAIL_NC, "
    "EK_DW2ROW1, EK_DW2ROW, EK_DW2_TAIL_NC, 1\n"
    "   EK_DW3_FUNC ek__dw1x3s2_row_nc, EK_DW3ROW1_S2, EK_DW3ROW_S2, EK_DW3_STORE4_NC, EK_DW3_TAIL_NC, "
    "EK_DW2ROW1_S2, EK_DW2ROW_S2, EK_DW2_TAIL_NC, 1\n"
    /*
     * ek__dw5x5s1_row: 4 outputs of a 5x5 kernel per step. Per kernel row the words A..D hold columns x .. x+7
     * (the row pointers stay on the stack, r10 is the step's byte offset into them) and the weights are
     * (w0, w1), (w2, w3), (w4, 0), (w1, w2), (w3, w4): o0 = A.w01 + B.w23 + C.lo w4, o1 = A.hi w0 + B.w12 +
     * C.w34, o2 and o3 likewise from B..D: 12 SMLAxy for 20 MACs.
     */
    "   .macro EK_DW5ROW ro, wo\n"
    "   ldr     r11, [sp, #\\ro]\n"
    "   add     r11, r11, r10\n"
    "   ldm     r11, {r4-r7}\n"
    "   ldrd    r8, r9, [sp, #\\wo]\n"
    "   smlad   r0, r4, r8, r0\n"
    "   smlatb  r1, r4, r8, r1\n"
    "   smlad   r0, r5, r9, r0\n"
    "   smlad   r2, r5, r8, r2\n"
    "   smlatb  r3, r5, r8, r3\n"
    "   smlad   r2, r6, r9, r2\n"
    "   ldrd    r8, r9, [sp, #(\\wo + 8)]\n"
    "   smlabb  r0, r6, r8, r0\n"
    "   smlabb  r2, r7, r8, r2\n"
    "   smlad   r1, r5, r9, r1\n"
    "   smlad   r3, r6, r9, r3\n"
    "   ldr     r8, [sp, #(\\wo + 16)]\n"
    "   smlad   r1, r6, r8, r1\n"
    "   smlad   r3, r7, r8, r3\n"
    "   .endm\n"
    /* 2 outputs (a row's last 1-3, two at a time): o0, o1 of EK_DW5ROW / EK_DW5ROW_S2 (below) */
    "   .macro EK_DW5ROW2 ro, wo\n"
    "   ldr     r11, [sp, #\\ro]\n"
    "   add     r11, r11, r10\n"
    "   ldm     r11, {r4-r6}\n"
    "   ldrd    r8, r9, [sp, #\\wo]\n"
    "   smlad   r0, r4, r8, r0\n"
    "   smlatb  r1, r4, r8, r1\n"
    "   smlad   r0, r5, r9, r0\n"
    "   ldrd    r8, r9, [sp, #(\\wo + 8)]\n"
    "   smlabb  r0, r6, r8, r0\n"
    "   smlad   r1, r5, r9, r1\n"
    "   ldr     r8, [sp, #(\\wo + 16)]\n"
    "   smlad   r1, r6, r8, r1\n"
    "   .endm\n"
    /* stride 2: output k reads columns 2k .. 2k+4, so per kernel row the words A..F (columns x .. x+11, two loads)
     * and o0 = A.w01 + B.w23 + C.lo w4, o1 = B.w01 + C.w23 + D.lo w4, o2, o3 likewise from C..F: 12 SMLAxy for 20
     * MACs, the weights in r8, r9, lr; EK_DW5ROW2_S2 is its o0, o1 */
    "   .macro EK_DW5ROW2_S2 ro, wo\n"
    "   ldr     r11, [sp, #\\ro]\n"
    "   add     r11, r11, r10\n"
    "   ldm     r11, {r4-r7}\n"
    "   ldrd    r8, r9, [sp, #\\wo]\n"
    "   ldr     lr, [sp, #(\\wo + 8)]\n"
    "   smlad   r0, r4, r8, r0\n"
    "   smlad   r0, r5, r9, r0\n"
    "   smlabb  r0, r6, lr, r0\n"
    "   smlad   r1, r5, r8, r1\n"
    "   smlad   r1, r6, r9, r1\n"
    "   smlabb  r1, r7, lr, r1\n"
    "   .endm\n"
    "   .macro EK_DW5ROW_S2 ro, wo\n"
    "   EK_DW5ROW2_S2 \\ro, \\wo\n"
    "   smlad   r2, r6, r8, r2\n"
    "   smlad   r2, r7, r9, r2\n"
    "   smlad   r3, r7, r8, r3\n"
    "   ldrd    r4, r5, [r11, #16]\n"
    "   smlabb  r2, r4, lr, r2\n"
    "   smlad   r3, r4, r9, r3\n"
    "   smlabb  r3, r5, lr, r3\n"
    "   .endm\n"
    "   .macro EK_DW5_FUNC name, store, tail2, row=EK_DW5ROW, row2=EK_DW5ROW2, step=8\n"
    "   EK_FUNC \\name\n"
    "   push    {r4-r11, lr}\n"
    "   sub     sp, sp, #160\n"       /* the 40-word argument block */
    "   mov     r1, sp\n"
    "   ldm     r0!, {r2-r12}\n"
    "   stm     r1!, {r2-r12}\n"
    "   ldm     r0!, {r2-r12}\n"
    "   stm     r1!, {r2-r12}\n"
    "   ldm     r0!, {r2-r12}\n"
    "   stm     r1!, {r2-r12}\n"
    "   ldm     r0, {r2-r8}\n"
    "   stm     r1, {r2-r8}\n"
    "   ldr     r12, [sp, #20]\n"     /* out */
    "   movs    r10, #0\n"
    "1: ldr     r0, [sp, #32]\n"      /* bias */
    "   mov     r1, r0\n"
    "   mov     r2, r0\n"
    "   mov     r3, r0\n"
    "   \\row 0, 56\n"
    "   \\row 4, 76\n"
    "   \\row 8, 96\n"
    "   \\row 12, 116\n"
    "   \\row 16, 136\n"
    "   adds    r10, r10, #\\step\n"
    "   \\store 36, 24\n"
    "   bne     1b\n"
    "   ldr     r0, [sp, #156]\n"      /* the last 1-3 outputs (out of line, below) */
    "   cbnz    r0, 3f\n"
    "4: add     sp, sp, #160\n"
    "   pop     {r4-r11, pc}\n"
    "3: ldr     r0, [sp, #32]\n"       /* 2 outputs, the first 1-2 of them stored */
    "   mov     r1, r0\n"
    "   \\row2 0, 56\n"
    "   \\row2 4, 76\n"
    "   \\row2 8, 96\n"
    "   \\row2 12, 116\n"
    "   \\row2 16, 136\n"
    "   \\tail2 36, 24, 156\n"
    "   ldr     r0, [sp, #156]\n"      /* a third: 2 more, the first stored */
    "   subs    r0, r0, #2\n"
    "   ble     4b\n"
    "   str     r0, [sp, #156]\n"
    "   adds    r10, r10, #(\\step / 2)\n"
    "   ldr     lr, [sp, #28]\n"
    "   add     r12, r12, lr, lsl #1\n"
    "   b       3b\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
    "   .macro EK_DW5_TAIL2 mo, eo, ko\n"  /* requantise o0, o1, clamp, store the first [sp, #ko] (1-2) */
    "   EK_DW2_RQ \\mo\n"
    "   bfi     r0, r1, #8, #8\n"
    "   EK_DW_TAIL_STORE \\mo, \\eo, 2, \\ko\n"
    "   .endm\n"
    "   .macro EK_DW5_TAIL2_NC mo, eo, ko\n"
    "   EK_DW2_RQ \\mo\n"
    "   EK_DW_TAIL_STORE_NC \\eo, 2, \\ko\n"
    "   .endm\n"
    "   EK_DW5_FUNC ek__dw5x5s1_row, EK_DW3_STORE4, EK_DW5_TAIL2\n"
    "   EK_DW5_FUNC ek__dw5x5s1_row_nc, EK_DW3_STORE4_NC, EK_DW5_TAIL2_NC\n"
    "   EK_DW5_FUNC ek__dw5x5s2_row, EK_DW3_STORE4, EK_DW5_TAIL2, EK_DW5ROW_S2, EK_DW5ROW2_S2, 16\n"
    "   EK_DW5_FUNC ek__dw5x5s2_row_nc, EK_DW3_STORE4_NC, EK_DW5_TAIL2_NC, EK_DW5ROW_S2, EK_DW5ROW2_S2, 16\n");
#endif

#if EK_NN_DSP
typedef struct {
    const int8_t *ip;       /* 0: the pixel's top-left tap, first channel */
    int32_t c;              /* 4: bytes per input pixel */
    int32_t rs;             /* 8: bytes per input row */
    const uint32_t *wt;     /* 12: the channels-layout weights, 18 words per group of 4 channels */
    const int32_t *bias;    /* 16 */
    const int32_t *q;       /* 20: the fast requant table, 4 words per channel */
    uint32_t off2;          /* 24: input offset in both halves */
    uint32_t upper4, back4; /* 28, 32 */
    int8_t *out;            /* 36 */
    int8_t *out_end;        /* 40: out + 4 x groups */
    int32_t nky;            /* 44: Kx1 kernels: the taps inside the map */
    int32_t skip;           /* 48: Kx1 kernels: bytes of weights of the taps left out (8 each) */
} ek__dwch_args_t;

/* ek__dw_chk1_px[_nc]: a Kx1 kernel (a Conv1d's, [N, L, 1, C]): its nky taps inside the map, a loop over them */
void ek__dw_chk1_px(const ek__dwch_args_t *a);
void ek__dw_chk1_px_nc(const ek__dwch_args_t *a);

/* ek__dw_ch{NKY}x{NKX}_px[_nc]: the NKY x NKX taps of a 3x3 kernel that lie inside the map (3x3 inside, 3x2 / 2x3 on
 * a border, 2x2 in a corner with padding 1); _nc: the clamp is all of int8 */
void ek__dw_ch3x3_px(const ek__dwch_args_t *a);
void ek__dw_ch3x3_px_nc(const ek__dwch_args_t *a);
void ek__dw_ch3x2_px(const ek__dwch_args_t *a);
void ek__dw_ch3x2_px_nc(const ek__dwch_args_t *a);
void ek__dw_ch2x3_px(const ek__dwch_args_t *a);
void ek__dw_ch2x3_px_nc(const ek__dwch_args_t *a);
void ek__dw_ch2x2_px(const ek__dwch_args_t *a);
void ek__dw_ch2x2_px_nc(const ek__dwch_args_t *a);
/* ek__dw_ch5k{NKY}x{NKX}_px[_nc]: the same for the NKY x NKX taps of a 5x5 kernel inside a map at most 3 wide (the
 * channels-last layout's 5x5 maps: kernel_pack.DW5_CHANNELS_MAX_OUT_W), 2 or 3 a side */
void ek__dw_ch5k3x3_px(const ek__dwch_args_t *a);
void ek__dw_ch5k3x3_px_nc(const ek__dwch_args_t *a);
void ek__dw_ch5k3x2_px(const ek__dwch_args_t *a);
void ek__dw_ch5k3x2_px_nc(const ek__dwch_args_t *a);
void ek__dw_ch5k2x3_px(const ek__dwch_args_t *a);
void ek__dw_ch5k2x3_px_nc(const ek__dwch_args_t *a);
void ek__dw_ch5k2x2_px(const ek__dwch_args_t *a);
void ek__dw_ch5k2x2_px_nc(const ek__dwch_args_t *a);

/*
 * ek__dw_ch3x3_px: one output pixel of a channels-layout 3x3 depthwise whose 9 taps lie inside the map, every full
 * group of 4 channels. Per tap: 1 LDR (4 channels), 2 SXTAB16 (with the input offset), 1 LDRD (the tap's weights,
 * w0|w2 and w1|w3), 4 SMLAxy; per group 4 requantizations (each channel its own multiplier) and one word stored.
 * The border variants run only the taps inside the map: ``ip``/``wt`` point at the first of them, the weights of a
 * tap left out of a row (8 bytes) and of a row left out (8 k) are stepped over, so that each group still moves the
 * weight pointer by its 8 k^2 bytes (k = 3, or 5 for the 5x5 variants).
 */
__asm__(
    "   .syntax unified\n"
    "   .macro EK_DWCH_MAC\n"
    "   ldrd    r7, r8, [r11], #8\n"
    "   sxtab16 r5, r12, r4\n"
    "   sxtab16 r6, r12, r4, ror #8\n"
    "   smlabb  r0, r5, r7, r0\n"
    "   smlatt  r2, r5, r7, r2\n"
    "   smlabb  r1, r6, r8, r1\n"
    "   smlatt  r3, r6, r8, r3\n"
    "   .endm\n"
    "   .macro EK_DWCH_ROW nkx, k\n"
    "   ldr     r4, [r9]\n"
    "   EK_DWCH_MAC\n"
    "   ldr     r4, [r9, r10]\n"
    "   EK_DWCH_MAC\n"
    "   .if \\nkx == 3\n"
    "   ldr     r4, [r9, r10, lsl #1]\n"
    "   EK_DWCH_MAC\n"
    "   .endif\n"
    "   .if \\k > \\nkx\n"
    "   add     r11, r11, #(8 * (\\k - \\nkx))\n"  /* the taps left out of the row */
    "   .endif\n"
    "   .endm\n"
    "   .macro EK_DWCH_RQ acc\n"
    "   ldm     r4!, {r5-r8}\n"
    "   smmla   \\acc, \\acc, r5, r6\n"
    "   asr     \\acc, \\acc, r7\n"
    "   .endm\n"
    "   .macro EK_DWCH_FUNC name, clamp, nky=3, nkx=3, k=3\n"
    "   EK_FUNC \\name\n"
    "   EK_FRAME44\n"
    "   mov     r10, r2\n"          /* C */
    "   mov     lr, r3\n"           /* row stride */
    "   mov     r11, r4\n"          /* weights */
    "   mov     r12, r7\n"          /* off2 */
    "   EK_DWCH_GROUP\n"
    "   EK_DWCH_ROW \\nkx, \\k\n"
    "   add     r9, r9, lr\n"
    "   EK_DWCH_ROW \\nkx, \\k\n"
    "   .if \\nky == 3\n"
    "   add     r9, r9, lr\n"
    "   EK_DWCH_ROW \\nkx, \\k\n"
    "   .endif\n"
    "   .if \\k > \\nky\n"
    "   add     r11, r11, #(8 * \\k * (\\k - \\nky))\n"  /* the rows left out */
    "   .endif\n"
    "   EK_DWCH_STORE \\clamp\n"
    "   add     sp, sp, #44\n"
    "   pop     {r4-r11, pc}\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
    "   .macro EK_DWCH_GROUP\n"          /* (label 1) the next group: its input pointer and 4 biases */
    "1: ldr     r9, [sp, #0]\n"
    "   adds    r4, r9, #4\n"
    "   str     r4, [sp, #0]\n"
    "   ldr     r4, [sp, #16]\n"
    "   ldm     r4!, {r0-r3}\n"     /* the group's 4 biases */
    "   str     r4, [sp, #16]\n"
    "   .endm\n"
    "   .macro EK_DWCH_STORE clamp\n"   /* the group's 4 requantized outputs stored; the next group (label 1) */
    "   ldr     r4, [sp, #20]\n"
    "   EK_DWCH_RQ r0\n"
    "   EK_DWCH_RQ r1\n"
    "   EK_DWCH_RQ r2\n"
    "   EK_DWCH_RQ r3\n"
    "   str     r4, [sp, #20]\n"
    "   ssat    r0, #8, r0\n"
    "   ssat    r1, #8, r1\n"
    "   ssat    r2, #8, r2\n"
    "   ssat    r3, #8, r3\n"
    "   bfi     r0, r1, #8, #8\n"
    "   bfi     r0, r2, #16, #8\n"
    "   bfi     r0, r3, #24, #8\n"
    "   .if \\clamp\n"
    "   ldrd    r5, r6, [sp, #28]\n"
    "   ssub8   r7, r0, r5\n"       /* min(v, upper) per byte, then + back */
    "   sel     r0, r5, r0\n"
    "   uadd8   r0, r0, r6\n"
    "   .endif\n"
    "   ldrd    r4, r5, [sp, #36]\n"
    "   str     r0, [r4], #4\n"
    "   str     r4, [sp, #36]\n"
    "   cmp     r4, r5\n"
    "   bne     1b\n"
    "   .endm\n"
    "   EK_DWCH_FUNC ek__dw_ch3x3_px, 1\n"
    "   EK_DWCH_FUNC ek__dw_ch3x3_px_nc, 0\n"
    "   EK_DWCH_FUNC ek__dw_ch3x2_px, 1, 3, 2\n"
    "   EK_DWCH_FUNC ek__dw_ch3x2_px_nc, 0, 3, 2\n"
    "   EK_DWCH_FUNC ek__dw_ch2x3_px, 1, 2, 3\n"
    "   EK_DWCH_FUNC ek__dw_ch2x3_px_nc, 0, 2, 3\n"
    "   EK_DWCH_FUNC ek__dw_ch2x2_px, 1, 2, 2\n"
    "   EK_DWCH_FUNC ek__dw_ch2x2_px_nc, 0, 2, 2\n"
    "   EK_DWCH_FUNC ek__dw_ch5k3x3_px, 1, 3, 3, 5\n"
    "   EK_DWCH_FUNC ek__dw_ch5k3x3_px_nc, 0, 3, 3, 5\n"
    "   EK_DWCH_FUNC ek__dw_ch5k3x2_px, 1, 3, 2, 5\n"
    "   EK_DWCH_FUNC ek__dw_ch5k3x2_px_nc, 0, 3, 2, 5\n"
    "   EK_DWCH_FUNC ek__dw_ch5k2x3_px, 1, 2, 3, 5\n"
    "   EK_DWCH_FUNC ek__dw_ch5k2x3_px_nc, 0, 2, 3, 5\n"
    "   EK_DWCH_FUNC ek__dw_ch5k2x2_px, 1, 2, 2, 5\n"
    "   EK_DWCH_FUNC ek__dw_ch5k2x2_px_nc, 0, 2, 2, 5\n"
    /* Kx1: the same per group, the taps down one column in a loop (r10 counts them; no column offsets) */
    "   .macro EK_DWCHK1_FUNC name, clamp\n"
    "   EK_FUNC \\name\n"
    "   push    {r4-r11, lr}\n"
    "   sub     sp, sp, #52\n"
    "   ldm     r0!, {r1-r11}\n"
    "   stm     sp, {r1-r11}\n"
    "   ldm     r0, {r5, r6}\n"
    "   strd    r5, r6, [sp, #44]\n"   /* nky, skip */
    "   mov     lr, r3\n"           /* row stride */
    "   mov     r11, r4\n"          /* weights */
    "   mov     r12, r7\n"          /* off2 */
    "   EK_DWCH_GROUP\n"
    "   ldr     r10, [sp, #44]\n"
    "2: ldr     r4, [r9]\n"
    "   add     r9, r9, lr\n"
    "   EK_DWCH_MAC\n"
    "   subs    r10, r10, #1\n"
    "   bne     2b\n"
    "   ldr     r4, [sp, #48]\n"
    "   add     r11, r11, r4\n"     /* the taps left out */
    "   EK_DWCH_STORE \\clamp\n"
    "   add     sp, sp, #52\n"
    "   pop     {r4-r11, pc}\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
    "   EK_DWCHK1_FUNC ek__dw_chk1_px, 1\n"
    "   EK_DWCHK1_FUNC ek__dw_chk1_px_nc, 0\n");
#endif

/* Plane row pr of channels c0 .. c0+nc-1 into ring slot pr % slots. Only the words that can hold input columns
 * are written; the caller zeroes the ring once, so the pure-padding words stay 0. */
/* (out of line: the row driver calls it for groups of 1-3 channels; inlined there, it cost that driver's loops
 * their registers, +0.5 % instructions on mbv2-w035's patched depthwise layers) */
static __attribute__((noinline)) void ek__dw_build_row(const ek_conv_params_t *p, const ek__dw_geom_t *g,
                                                       const int8_t *in, int32_t c0, int32_t nc, int32_t pr,
                                                       uint32_t *ring, int32_t pix)
{
    const int32_t rw = g->row_words, C = pix, pl = p->pad_left, iw = p->in_w; /* C: bytes per pixel of a row */
    uint32_t *rows[4];
    rows[0] = ring + (pr % g->slots) * rw;
    for (int32_t ch = 1; ch < 4; ch++) {
        rows[ch] = rows[ch - 1] + g->slots * rw;
    }
    /* word j holds plane columns 2j, 2j+1 = input columns 2j - pad_left, 2j + 1 - pad_left */
    const int32_t j_first = pl / 2;
    const int32_t j_end = (pl + iw + 1) / 2 < rw ? (pl + iw + 1) / 2 : rw;
    const int32_t iy = pr - p->pad_top;
    if ((uint32_t)iy >= (uint32_t)p->in_h) {
        for (int32_t ch = 0; ch < nc; ch++) {
            for (int32_t j = j_first; j < j_end; j++) {
                rows[ch][j] = 0;
            }
        }
        return;
    }
    const int8_t *row = in + iy * p->in_row_stride + c0;
    const int32_t off = p->input_offset;
    const uint32_t off2 = ek__pack16(off, off);
    const int32_t j_lo = (pl + 1) / 2;                         /* first word with both columns in the input */
    const int32_t j_hi = (pl + iw) / 2 < rw ? (pl + iw) / 2 : rw; /* one past the last such word */
    if (nc == 4 && j_lo < j_hi) {
        if (pl & 1) { /* (padding, input column 0) */
            const uint32_t x = ek__read_u32(row);
            const uint32_t a02 = ek__sxtab16(off2, x), a13 = ek__sxtab16_ror8(off2, x);
            rows[0][j_lo - 1] = a02 << 16;
            rows[1][j_lo - 1] = a13 << 16;
            rows[2][j_lo - 1] = a02 & 0xFFFF0000u;
            rows[3][j_lo - 1] = a13 & 0xFFFF0000u;
        }
        const int8_t *src = row + (2 * j_lo - pl) * C;
#if EK_NN_DSP
        const ek__dw_build_args_t ba = {src, C, off2, rows[0] + j_lo, rows[1] + j_lo, rows[2] + j_lo, rows[3] + j_lo,
                                        j_hi - j_lo};
        ek__dw_build4(&ba);
#else
        /* without SIMD: a byte load, add and halfword store per element (word j of channel ch's row holds its
         * columns 2j, 2j+1) */
        ek__h16 *d0 = (ek__h16 *)(rows[0] + j_lo), *d1 = (ek__h16 *)(rows[1] + j_lo);
        ek__h16 *d2 = (ek__h16 *)(rows[2] + j_lo), *d3 = (ek__h16 *)(rows[3] + j_lo);
        for (int32_t j = j_lo; j < j_hi; j++, src += 2 * C, d0 += 2, d1 += 2, d2 += 2, d3 += 2) {
            d0[0] = (int16_t)(src[0] + off);
            d0[1] = (int16_t)(src[C] + off);
            d1[0] = (int16_t)(src[1] + off);
            d1[1] = (int16_t)(src[C + 1] + off);
            d2[0] = (int16_t)(src[2] + off);
            d2[1] = (int16_t)(src[C + 2] + off);
            d3[0] = (int16_t)(src[3] + off);
            d3[1] = (int16_t)(src[C + 3] + off);
        }
#endif
        if (((pl + iw) & 1) && j_hi < rw) { /* (input column in_w - 1, padding) */
            const uint32_t x = ek__read_u32(row + (iw - 1) * C);
            const uint32_t a02 = ek__sxtab16(off2, x), a13 = ek__sxtab16_ror8(off2, x);
            rows[0][j_hi] = a02 & 0xFFFFu;
            rows[1][j_hi] = a13 & 0xFFFFu;
            rows[2][j_hi] = a02 >> 16;
            rows[3][j_hi] = a13 >> 16;
        }
        return;
    }
    for (int32_t j = j_first; j < j_end; j++) {
        const int32_t ix0 = 2 * j - pl, ix1 = ix0 + 1;
        const int v0 = (uint32_t)ix0 < (uint32_t)iw, v1 = (uint32_t)ix1 < (uint32_t)iw;
        for (int32_t ch = 0; ch < nc; ch++) {
            const int32_t e0 = v0 ? row[ix0 * C + ch] + off : 0;
            const int32_t e1 = v1 ? row[ix1 * C + ch] + off : 0;
            rows[ch][j] = ek__pack16(e0, e1);
        }
    }
}

static inline int32_t ek__elem16(const uint32_t *row, int32_t col)
{
    const uint32_t w = row[col >> 1];
    return (col & 1) ? ek__hi16(w) : ek__lo16(w);
}

/* One output row of one channel, in C: the portable build, the 64-bit requantisation, and kernels other than 3x3
 * (the DSP build runs 3x3 with fast requantisation through ek__dw3x3_fast). */
static void ek__dw_row(const ek_conv_params_t *p, const ek__dw_geom_t *g, const uint32_t *ring, const int8_t *wq,
                       int32_t bias, const int32_t *q, const ek__rq_t *rq, int32_t oy, int8_t *out, int32_t opix)
{
    const int32_t kh = p->kernel_h, kw = p->kernel_w, C = opix, ow = p->out_w; /* C: bytes per output pixel */
    const uint32_t *rows[16];
    const int32_t nrows = kh <= 16 ? kh : 16;
    const uint32_t *r0 = NULL, *r1 = NULL, *r2 = NULL;
    for (int32_t ky = 0; ky < nrows; ky++) {
        rows[ky] = ring + ((oy * p->stride_h + ky * p->dilation_h) % g->slots) * g->row_words;
    }
    if (kh == 3) {
        r0 = rows[0];
        r1 = rows[1];
        r2 = rows[2];
    }
#if EK_NN_DSP
    const int fast = rq->fast;
    const int32_t qm = q[0], qa = q[1], qt = q[2], up = rq->upper, back = rq->back;
#define EK_DW_OUT(dst, acc)                                                                                         \
    do {                                                                                                            \
        if (fast) {                                                                                                 \
            int32_t v_ = __ssat(ek__smmla((acc), qm, qa) >> qt, 8);                                                \
            (dst) = (int8_t)((v_ > up ? up : v_) + back);                                                           \
        } else {                                                                                                    \
            (dst) = ek__requant_generic((acc), q, rq->out_zp, rq->lo, rq->hi);                                     \
        }                                                                                                           \
    } while (0)
#else
#define EK_DW_OUT(dst, acc) ((dst) = ek__requant(rq, (acc), q))
    /* Without SIMD (RV32IM): the ring's int16 values read as halfwords, the 9 weights held as scalars; with
     * stride 1 two outputs per step share the 4 values loaded per kernel row (12 loads, 18 multiplies and adds
     * for 18 MACs). Wrapping int32 sums, as SMLAD. */
    if (kh == 3 && kw == 3 && p->dilation_h == 1 && p->dilation_w == 1 && (p->stride_w == 1 || p->stride_w == 2)) {
        const ek__h16 *h0 = (const ek__h16 *)r0, *h1 = (const ek__h16 *)r1, *h2 = (const ek__h16 *)r2;
        const int32_t w0 = wq[0], w1 = wq[1], w2 = wq[2], w3 = wq[3], w4 = wq[4], w5 = wq[5], w6 = wq[6], w7 = wq[7],
                      w8 = wq[8], sw = p->stride_w;
        int32_t ox = 0;
        if (sw == 1) {
            for (; ox + 1 < ow; ox += 2, h0 += 2, h1 += 2, h2 += 2, out += 2 * C) {
                int32_t a = h0[0], b = h0[1], c = h0[2], d = h0[3];
                uint32_t o0 = (uint32_t)bias + (uint32_t)(a * w0) + (uint32_t)(b * w1) + (uint32_t)(c * w2);
                uint32_t o1 = (uint32_t)bias + (uint32_t)(b * w0) + (uint32_t)(c * w1) + (uint32_t)(d * w2);
                a = h1[0], b = h1[1], c = h1[2], d = h1[3];
                o0 += (uint32_t)(a * w3) + (uint32_t)(b * w4) + (uint32_t)(c * w5);
                o1 += (uint32_t)(b * w3) + (uint32_t)(c * w4) + (uint32_t)(d * w5);
                a = h2[0], b = h2[1], c = h2[2], d = h2[3];
                o0 += (uint32_t)(a * w6) + (uint32_t)(b * w7) + (uint32_t)(c * w8);
                o1 += (uint32_t)(b * w6) + (uint32_t)(c * w7) + (uint32_t)(d * w8);
                EK_DW_OUT(out[0], (int32_t)o0);
                EK_DW_OUT(out[C], (int32_t)o1);
            }
        }
        for (; ox < ow; ox++, h0 += sw, h1 += sw, h2 += sw, out += C) {
            const uint32_t o = (uint32_t)bias + (uint32_t)(h0[0] * w0) + (uint32_t)(h0[1] * w1) + (uint32_t)(h0[2] * w2) +
                               (uint32_t)(h1[0] * w3) + (uint32_t)(h1[1] * w4) + (uint32_t)(h1[2] * w5) +
                               (uint32_t)(h2[0] * w6) + (uint32_t)(h2[1] * w7) + (uint32_t)(h2[2] * w8);
            EK_DW_OUT(out[0], (int32_t)o);
        }
        return;
    }
#endif
    if (kh == 3 && kw == 3 && p->dilation_h == 1 && p->dilation_w == 1 && p->stride_w == 1) {
        /* two outputs per step: words A = cols (x, x+1), B = (x+2, x+3) of each kernel row */
        const uint32_t a0 = ek__pack16(wq[0], wq[1]), b0 = ek__pack16(wq[1], wq[2]);
        const uint32_t a1 = ek__pack16(wq[3], wq[4]), b1 = ek__pack16(wq[4], wq[5]);
        const uint32_t a2 = ek__pack16(wq[6], wq[7]), b2 = ek__pack16(wq[7], wq[8]);
        int32_t ox = 0;
        for (; ox + 1 < ow; ox += 2, r0++, r1++, r2++, out += 2 * C) {
            uint32_t A = r0[0], B = r0[1];
            int32_t o0 = ek__smlad(A, a0, bias), o1 = ek__smlatb(A, a0, bias);
            o0 = ek__smlabt(B, b0, o0);
            o1 = ek__smlad(B, b0, o1);
            A = r1[0];
            B = r1[1];
            o0 = ek__smlad(A, a1, o0);
            o1 = ek__smlatb(A, a1, o1);
            o0 = ek__smlabt(B, b1, o0);
            o1 = ek__smlad(B, b1, o1);
            A = r2[0];
            B = r2[1];
            o0 = ek__smlad(A, a2, o0);
            o1 = ek__smlatb(A, a2, o1);
            o0 = ek__smlabt(B, b2, o0);
            o1 = ek__smlad(B, b2, o1);
            EK_DW_OUT(out[0], o0);
            EK_DW_OUT(out[C], o1);
        }
        if (ox < ow) {
            int32_t o0 = ek__smlad(r0[0], a0, bias);
            o0 = ek__smlabt(r0[1], b0, o0);
            o0 = ek__smlad(r1[0], a1, o0);
            o0 = ek__smlabt(r1[1], b1, o0);
            o0 = ek__smlad(r2[0], a2, o0);
            o0 = ek__smlabt(r2[1], b2, o0);
            EK_DW_OUT(out[0], o0);
        }
        return;
    }
    if (kh == 3 && kw == 3 && p->dilation_h == 1 && p->dilation_w == 1 && p->stride_w == 2) {
        /* output x reads cols 2x .. 2x+2: word x and the low half of word x+1 */
        const uint32_t a0 = ek__pack16(wq[0], wq[1]), c0 = (uint16_t)wq[2];
        const uint32_t a1 = ek__pack16(wq[3], wq[4]), c1 = (uint16_t)wq[5];
        const uint32_t a2 = ek__pack16(wq[6], wq[7]), c2 = (uint16_t)wq[8];
        for (int32_t ox = 0; ox < ow; ox++, r0++, r1++, r2++, out += C) {
            int32_t o = ek__smlad(r0[0], a0, bias);
            o = ek__smlabb(r0[1], c0, o);
            o = ek__smlad(r1[0], a1, o);
            o = ek__smlabb(r1[1], c1, o);
            o = ek__smlad(r2[0], a2, o);
            o = ek__smlabb(r2[1], c2, o);
            EK_DW_OUT(out[0], o);
        }
        return;
    }
    /* any kernel, stride and dilation */
    for (int32_t ox = 0; ox < ow; ox++, out += C) {
        uint32_t acc = (uint32_t)bias;
        for (int32_t ky = 0; ky < kh; ky++) {
            const uint32_t *row = ky < 16 ? rows[ky]
                                          : ring + ((oy * p->stride_h + ky * p->dilation_h) % g->slots) * g->row_words;
            const int8_t *wr = wq + ky * kw;
            const ek__h16 *h = (const ek__h16 *)row + ox * p->stride_w; /* (ek__elem16 as a halfword load) */
            for (int32_t kx = 0; kx < kw; kx++, h += p->dilation_w) {
                acc += (uint32_t)(h[0] * wr[kx]);
            }
        }
        EK_DW_OUT(out[0], (int32_t)acc);
    }
#undef EK_DW_OUT
}

#if EK_NN_DSP
/* The 3x3 row kernel of a stride (s2: 2, else 1) and clamp (nc8: all of int8), or 0 when the firmware left both
 * out (the call runs the generic loop). */
static void (*ek__dw3x3_row_fn(int s2, int nc8))(const ek__dw3_args_t *)
{
    (void)nc8;
    return s2 ? EK__PICK_NC(nc8, ek__dw3x3s2_row, ek__dw3x3s2_row_nc, EK_NN_NO_DWR_S2, EK_NN_NO_DWR_S2_NC)
              : EK__PICK_NC(nc8, ek__dw3x3s1_row, ek__dw3x3s1_row_nc, EK_NN_NO_DWR_S1, EK_NN_NO_DWR_S1_NC);
}

/* 3x3 and 1x3 (stride_w 1 or 2), 5x5 (stride_w 1), dilation 1, fast requant: the asm row kernels, with everything
 * per channel prepared once per group of 4 channels and the ring's pure-padding words zeroed once. ``pix`` /
 * ``opix``: bytes from one input / output pixel of a row to the next (in_c, or the row strides for the transposed
 * view of a 3x1). Out of line, so that its loops keep their registers whatever the dispatcher around it does
 * (inlined, a change there moved mbv2-w035's depthwise layers by +0.1-0.2 %). */
static __attribute__((noinline)) void ek__dw_rows_fast(const ek_conv_params_t *p, const ek__rq_t *rq,
                                                       const int8_t *input, int8_t *output, uint32_t *ring,
                                                       int32_t pix, int32_t opix)
{
    ek__dw_geom_t gg;
    ek__dw_geom(p, &gg);
    const ek__dw_geom_t *g = &gg;
    const int32_t C = p->in_c, ow = p->out_w, n4 = ow & ~3, rw = g->row_words, sh = p->stride_h;
    const int32_t kh = p->kernel_h, slots = g->slots, taps = kh * p->kernel_w;
    const int s2 = p->stride_w == 2, k5 = !EK_NN_NO_DW5X5 && p->kernel_w == 5;
    const size_t ring_words = (size_t)4 * (size_t)slots * (size_t)rw;
    /* the clamp is all of int8 (no fused activation, or ReLU6 at scale 6/255): SSAT alone clamps */
    const int nc8 = rq->upper == 127 && rq->back == 0;
    void (*row_fn)(const ek__dw3_args_t *);
    if (!EK_NN_NO_DW1X3 && kh == 1) {
        row_fn = s2 ? (nc8 ? ek__dw1x3s2_row_nc : ek__dw1x3s2_row) : (nc8 ? ek__dw1x3s1_row_nc : ek__dw1x3s1_row);
    } else {
        row_fn = ek__dw3x3_row_fn(s2, nc8); /* (not 0: ek_depthwise_conv2d_s8 checks) */
    }
    void (*const row5_fn)(const ek__dw5_args_t *) = !k5 ? 0 : s2 ? (nc8 ? ek__dw5x5s2_row_nc : ek__dw5x5s2_row)
                                                             : (nc8 ? ek__dw5x5s1_row_nc : ek__dw5x5s1_row);
    /* Building a plane row (as ek__dw_build_row): word j holds plane columns 2j, 2j+1 = input columns
     * 2j - pad_left, 2j + 1 - pad_left; words j_lo .. j_hi - 1 hold two input columns each (ek__dw_build4), the
     * words before and after one column and the padding (left, right). */
    const int32_t pl = p->pad_left, pt = p->pad_top, in_w = p->in_w, in_h = p->in_h, in_rs = p->in_row_stride;
    const int32_t j_lo = (pl + 1) / 2, j_hi = (pl + in_w) / 2 < rw ? (pl + in_w) / 2 : rw, nw = j_hi - j_lo;
    const int left = pl & 1, right = ((pl + in_w) & 1) && j_hi < rw;
    const int32_t j_first = pl / 2, j_end = (pl + in_w + 1) / 2 < rw ? (pl + in_w + 1) / 2 : rw;
    const int32_t colo = (2 * j_lo - pl) * pix, rcol = (in_w - 1) * pix, chs = slots * rw;
    const uint32_t off2 = ek__pack16(p->input_offset, p->input_offset);
    ek__dw_build_args_t ba = {NULL, pix, off2, NULL, NULL, NULL, NULL, nw};
    for (int32_t c0 = 0; c0 < C; c0 += 4) {
        const int32_t nc = C - c0 < 4 ? C - c0 : 4;
        ek__dw3_ch_t cc[4];
        ek__dw5_args_t d5[4];
        for (int32_t ch = 0; ch < nc; ch++) {
            const int32_t c = c0 + ch;
            const int8_t *wq = p->weights + taps * c;
            const int32_t *q = p->requant + 4 * c;
            const int32_t bias = p->bias ? p->bias[c] : 0;
            if (k5) {
                ek__dw5_args_t *d = &d5[ch];
                d->stride = opix;
                d->bias = bias;
                d->mult = q[0];
                d->add = q[1];
                d->shift = q[2];
                d->upper4 = ek__bytes4(rq->upper);
                d->back4 = ek__bytes4(rq->back);
                for (int32_t r = 0; r < 5; r++) {
                    const int8_t *k = wq + 5 * r;
                    d->w[5 * r] = ek__pack16(k[0], k[1]);
                    d->w[5 * r + 1] = ek__pack16(k[2], k[3]);
                    d->w[5 * r + 2] = (uint32_t)(uint16_t)k[4];
                    d->w[5 * r + 3] = ek__pack16(k[1], k[2]);
                    d->w[5 * r + 4] = ek__pack16(k[3], k[4]);
                }
                continue;
            }
            ek__dw3_ch_t *d = &cc[ch];
            d->bias = bias;
            d->mult = q[0];
            d->add = q[1];
            d->shift = q[2];
            d->upper4 = ek__bytes4(rq->upper);
            d->back4 = ek__bytes4(rq->back);
            for (int32_t r = 0; r < 3; r++) {
                const int8_t *k = wq + 3 * (r < kh ? r : 0);
                d->w[2 * r] = ek__pack16(k[0], k[1]);
                d->w[2 * r + 1] = s2 ? (uint32_t)(uint16_t)k[2] : ek__pack16(k[1], k[2]);
            }
        }
        if (c0 == 0) { /* once: the words no plane row writes (the padding beyond both edges) stay 0 */
            for (size_t i = 0; i < ring_words; i++) {
                ring[i] = 0;
            }
        }
        int32_t next_row = 0, next_slot = 0, first_slot = 0; /* ring slots of plane rows next_row and oy * sh */
        for (int32_t oy = 0; oy < p->out_h; oy++, first_slot = (first_slot + sh) % slots) {
            const int32_t first = oy * sh;
            if (next_row < first) {
                next_row = first;
                next_slot = first_slot;
            }
            for (; next_row < first + kh; next_row++, next_slot = next_slot + 1 == slots ? 0 : next_slot + 1) {
                const int32_t iy = next_row - pt;
                uint32_t *d = ring + next_slot * rw;
                if ((uint32_t)iy >= (uint32_t)in_h) { /* a padding row: zeros wherever a row writes */
                    for (int32_t ch = 0; ch < nc; ch++) {
                        for (int32_t j = j_first; j < j_end; j++) {
                            d[ch * chs + j] = 0;
                        }
                    }
                    continue;
                }
                if (nc < 4 || nw <= 0) {
                    ek__dw_build_row(p, g, input, c0, nc, next_row, ring, pix);
                    continue;
                }
                /* a row inside the map, 4 channels: the middle words in asm, the edge words here */
                const int8_t *row = input + iy * in_rs + c0;
                if (left) { /* (padding, input column 0) */
                    const uint32_t x = ek__read_u32(row);
                    const uint32_t a02 = ek__sxtab16(off2, x), a13 = ek__sxtab16_ror8(off2, x);
                    d[j_lo - 1] = a02 << 16;
                    d[chs + j_lo - 1] = a13 << 16;
                    d[2 * chs + j_lo - 1] = a02 & 0xFFFF0000u;
                    d[3 * chs + j_lo - 1] = a13 & 0xFFFF0000u;
                }
                ba.src = row + colo;
                ba.d0 = d + j_lo;
                ba.d1 = ba.d0 + chs;
                ba.d2 = ba.d1 + chs;
                ba.d3 = ba.d2 + chs;
                ek__dw_build4(&ba);
                if (right) { /* (input column in_w - 1, padding) */
                    const uint32_t x = ek__read_u32(row + rcol);
                    const uint32_t a02 = ek__sxtab16(off2, x), a13 = ek__sxtab16_ror8(off2, x);
                    d[j_hi] = a02 & 0xFFFFu;
                    d[chs + j_hi] = a13 & 0xFFFFu;
                    d[2 * chs + j_hi] = a02 >> 16;
                    d[3 * chs + j_hi] = a13 >> 16;
                }
            }
            const uint32_t *slot[5];
            for (int32_t r = 0, sl = first_slot; r < kh; r++, sl = sl + 1 == slots ? 0 : sl + 1) {
                slot[r] = ring + sl * rw;
            }
            int8_t *orow = output + oy * p->out_row_stride;
            if (!k5) {
                if (n4) { /* every channel of the group, the last 1-3 outputs of each included */
                    const ek__dw3_args_t d = {slot[0], slot[kh > 1 ? 1 : 0], slot[kh > 1 ? 2 : 0], orow + c0,
                                              n4 * opix, opix, chs * 4, nc, cc, ow - n4};
                    row_fn(&d);
                    continue;
                }
                for (int32_t ch = 0; ch < nc; ch++) { /* fewer than 4 outputs: a group of 4 per channel into a
                                                       * scratch word, the extra ones dropped */
                    uint32_t last4;
                    const int32_t o = ch * chs;
                    const ek__dw3_args_t t = {slot[0] + o, slot[kh > 1 ? 1 : 0] + o, slot[kh > 1 ? 2 : 0] + o,
                                              (int8_t *)&last4, 4, 1, 0, 1, cc + ch, 0};
                    row_fn(&t);
                    int8_t *dst = orow + c0 + ch;
                    for (int32_t ox = 0; ox < ow; ox++, dst += opix) {
                        *dst = ((const int8_t *)&last4)[ox];
                    }
                }
                continue;
            }
            for (int32_t ch = 0; ch < nc; ch++) {
                const int32_t choff = ch * chs;
                uint32_t last4;
                ek__dw5_args_t *d = &d5[ch];
                for (int32_t r = 0; r < 5; r++) {
                    d->rows[r] = slot[r] + choff;
                }
                d->out = orow + c0 + ch;
                d->out_end = d->out + n4 * opix;
                if (n4) { /* the last 1-3 outputs included (2-output steps) */
                    d->tail = ow - n4;
                    row5_fn(d);
                    continue;
                }
                if (n4 < ow) { /* fewer than 4 outputs: a group of 4 into a scratch word, the extra ones dropped */
                    d->tail = 0;
                    d->out = (int8_t *)&last4;
                    d->out_end = d->out + 4;
                    d->stride = 1;
                    row5_fn(d);
                    d->stride = opix;
                    int8_t *dst = orow + n4 * opix + c0 + ch;
                    const int8_t *src = (const int8_t *)&last4;
                    for (int32_t ox = n4; ox < ow; ox++, dst += opix) {
                        *dst = *src++;
                    }
                }
            }
        }
    }
}
#endif

#if EK_NN_DSP
/*
 * 1xK depthwise, stride 1, dilation 1, 4 <= K <= EK_DW1XK_MAX_TAPS (and Kx1, a depthwise Conv1d over [L, 1, C], as
 * 1xK on the transposed view: FLAG_DW_TRANSPOSED), fast requantization: one channel's output row over its ring row
 * (int16 column pairs, word m = columns 2m, 2m+1), 4 outputs o0..o3 at columns x .. x+3 (x even) a step. With the
 * words X_m = (col x+2m, x+2m+1), the weight pairs We_j = (w_2j, w_2j+1) and Wo_j = (w_2j+1, w_2j+2) (0 past the
 * last tap):
 *     o0 = sum_j SMLAD(X_j, We_j)         o1 = X_0.hi * w0 + sum_j SMLAD(X_j+1, Wo_j)
 *     o2 = sum_j SMLAD(X_j+1, We_j)       o3 = X_1.hi * w0 + sum_j SMLAD(X_j+2, Wo_j)
 * ek__dw1xk_row: two tap pairs a turn (an LDRD of inputs, two LDRDs of weight pairs, 8 SMLAD for 16 MACs; the turns
 * alternate the input registers, so nothing moves), then one more pair (K/2 odd) and the last tap (K odd: o0 and
 * o2 only), SMMLA + ASR + SSAT per output (+ SSUB8/SEL/UADD8 for 4 when the clamp is not all of int8) and 4 byte
 * stores a pixel apart. Steps run to out_end (a multiple of 4 outputs); the driver runs a row's last 1-3 outputs as
 * one more step into a scratch word.
 */
#define EK_DW1XK_MAX_TAPS 32

typedef struct {
    const uint32_t *x;        /* 0: the ring row at the first output's first column */
    const uint32_t *w;        /* 4: We_0, Wo_0, We_1, Wo_1, ..., then an odd K's last (w_K-1, 0) */
    int32_t turns;            /* 8: turns of two tap pairs (K/4, >= 1) */
    int32_t flags;            /* 12: bit 0: one more tap pair (K/2 odd); bit 1: the last tap (K odd) */
    int8_t *out;              /* 16: the first output */
    int8_t *out_end;          /* 20: out + 4k * stride */
    int32_t stride;           /* 24: output bytes per pixel */
    int32_t bias;             /* 28 */
    int32_t mult, add, shift; /* 32, 36, 40: the channel's fast requant entry {mult, a, b} */
    uint32_t upper4, back4;   /* 44, 48 */
} ek__dwk_args_t;

#if !EK_NN_NO_DW1XK
void ek__dw1xk_row(const ek__dwk_args_t *a);
void ek__dw1xk_row_nc(const ek__dwk_args_t *a); /* the same without the clamp (act range all of int8) */

__asm__(
    "   .syntax unified\n"
    "   .macro EK_DWK_PAIR2 a, b, c, d\n"  /* two tap pairs; c, d: the next two input words */
    "   ldrd    \\c, \\d, [r10], #8\n"
    "   ldrd    r8, r12, [r11], #8\n"
    "   smlad   r0, \\a, r8, r0\n"
    "   smlad   r2, \\b, r8, r2\n"
    "   smlad   r1, \\b, r12, r1\n"
    "   smlad   r3, \\c, r12, r3\n"
    "   ldrd    r8, r12, [r11], #8\n"
    "   smlad   r0, \\b, r8, r0\n"
    "   smlad   r2, \\c, r8, r2\n"
    "   smlad   r1, \\c, r12, r1\n"
    "   smlad   r3, \\d, r12, r3\n"
    "   .endm\n"
    "   .macro EK_DWK_FUNC name, clamp\n"
    "   EK_FUNC \\name\n"
    "   push    {r4-r11, lr}\n"
    "   sub     sp, sp, #56\n"
    "   ldm     r0, {r1-r12, lr}\n"
    "   stm     sp, {r1-r12, lr}\n"
    "   mov     lr, r1\n"                 /* lr: the step's first input word */
    "1: ldr     r11, [sp, #4]\n"
    "   ldr     r0, [sp, #28]\n"
    "   ldrd    r4, r5, [lr]\n"           /* X_0, X_1 */
    "   add     r10, lr, #8\n"
    "   ldr     r8, [r11]\n"              /* We_0: w0 in its low half */
    "   mov     r2, r0\n"
    "   smlatb  r1, r4, r8, r0\n"
    "   smlatb  r3, r5, r8, r0\n"
    "   ldr     r9, [sp, #8]\n"
    "2: EK_DWK_PAIR2 r4, r5, r6, r7\n"
    "   subs    r9, r9, #1\n"
    "   beq     3f\n"
    "   EK_DWK_PAIR2 r6, r7, r4, r5\n"
    "   subs    r9, r9, #1\n"
    "   bne     2b\n"
    "   b       4f\n"
    "3: mov     r4, r6\n"
    "   mov     r5, r7\n"
    "4: ldr     r9, [sp, #12]\n"
    "   lsls    r9, r9, #31\n"            /* N: one more pair, C: the last tap */
    "   bpl     5f\n"
    "   ldr     r6, [r10], #4\n"
    "   ldrd    r8, r12, [r11], #8\n"
    "   smlad   r0, r4, r8, r0\n"
    "   smlad   r2, r5, r8, r2\n"
    "   smlad   r1, r5, r12, r1\n"
    "   smlad   r3, r6, r12, r3\n"
    "   mov     r4, r5\n"
    "   mov     r5, r6\n"
    "5: bcc     6f\n"
    "   ldr     r8, [r11]\n"
    "   smlad   r0, r4, r8, r0\n"
    "   smlad   r2, r5, r8, r2\n"
    "6: EK_DW3_RQ4 32\n"                /* requantise o0..o3 with the constants at [sp, #32] */
    "   ldr     r12, [sp, #16]\n"
    "   ldr     r7, [sp, #24]\n"
    "   .if \\clamp\n"
    "   bfi     r0, r1, #8, #8\n"
    "   bfi     r0, r2, #16, #8\n"
    "   bfi     r0, r3, #24, #8\n"
    "   ldrd    r4, r5, [sp, #44]\n"
    "   ssub8   r6, r0, r4\n"
    "   sel     r0, r4, r0\n"
    "   uadd8   r0, r0, r5\n"
    "   lsr     r1, r0, #8\n"
    "   lsr     r2, r0, #16\n"
    "   lsr     r3, r0, #24\n"
    "   .endif\n"
    "   strb    r0, [r12]\n"
    "   strb    r1, [r12, r7]\n"
    "   add     r12, r12, r7, lsl #1\n"
    "   strb    r2, [r12]\n"
    "   strb    r3, [r12, r7]\n"
    "   add     r12, r12, r7, lsl #1\n"
    "   str     r12, [sp, #16]\n"
    "   add     lr, lr, #8\n"
    "   ldr     r7, [sp, #20]\n"
    "   cmp     r12, r7\n"
    "   bne     1b\n"
    "   add     sp, sp, #56\n"
    "   pop     {r4-r11, pc}\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
    "   EK_DWK_FUNC ek__dw1xk_row, 1\n"
    "   EK_DWK_FUNC ek__dw1xk_row_nc, 0\n");
#endif

/* The 1xK driver: per group of 4 channels their weight pairs (We_j, Wo_j interleaved, then an odd K's last We),
 * per output row the group's input row widened into the ring (ek__dw_build_row), then each channel's row: its
 * outputs in fours, a last 1-3 as one more step into a scratch word. */
static __attribute__((noinline)) void ek__dw_rows_k(const ek_conv_params_t *p, const ek__rq_t *rq,
                                                    const int8_t *input, int8_t *output, uint32_t *ring, int32_t pix,
                                                    int32_t opix)
{
#if !EK_NN_NO_DW1XK
    ek__dw_geom_t g;
    ek__dw_geom(p, &g);
    const int32_t K = p->kernel_w, C = p->in_c, ow = p->out_w, n4 = ow & ~3, chs = g.slots * g.row_words;
    void (*const row_fn)(const ek__dwk_args_t *) =
        rq->upper == 127 && rq->back == 0 ? ek__dw1xk_row_nc : ek__dw1xk_row;
    const size_t ring_words = (size_t)4 * (size_t)chs;
    for (size_t i = 0; i < ring_words; i++) { /* the words no row writes (the padding beyond both edges) stay 0 */
        ring[i] = 0;
    }
    uint32_t wp[4][EK_DW1XK_MAX_TAPS + 1];
    ek__dwk_args_t a[4];
    for (int32_t c0 = 0; c0 < C; c0 += 4) {
        const int32_t nc = C - c0 < 4 ? C - c0 : 4;
        for (int32_t ch = 0; ch < nc; ch++) {
            const int32_t c = c0 + ch;
            const int8_t *k = p->weights + K * c;
            const int32_t *q = p->requant + 4 * c;
            int32_t j = 0;
            for (; 2 * j + 1 < K; j++) {
                wp[ch][2 * j] = ek__pack16(k[2 * j], k[2 * j + 1]);
                wp[ch][2 * j + 1] = ek__pack16(k[2 * j + 1], 2 * j + 2 < K ? k[2 * j + 2] : 0);
            }
            if (K & 1) {
                wp[ch][2 * j] = ek__pack16(k[K - 1], 0);
            }
            ek__dwk_args_t *d = &a[ch];
            d->w = wp[ch];
            d->turns = K >> 2;
            d->flags = ((K >> 1) & 1) | ((K & 1) << 1);
            d->stride = opix;
            d->bias = p->bias ? p->bias[c] : 0;
            d->mult = q[0];
            d->add = q[1];
            d->shift = q[2];
            d->upper4 = ek__bytes4(rq->upper);
            d->back4 = ek__bytes4(rq->back);
        }
        for (int32_t oy = 0; oy < p->out_h; oy++) {
            const int32_t pr = oy * p->stride_h;
            ek__dw_build_row(p, &g, input, c0, nc, pr, ring, pix);
            const uint32_t *row = ring + (pr % g.slots) * g.row_words;
            int8_t *orow = output + oy * p->out_row_stride + c0;
            for (int32_t ch = 0; ch < nc; ch++, row += chs) {
                ek__dwk_args_t *d = &a[ch];
                d->x = row;
                d->out = orow + ch;
                if (n4) {
                    d->out_end = d->out + n4 * opix;
                    row_fn(d);
                }
                if (n4 < ow) { /* the last 1-3 outputs: a step of 4 into a scratch word, the extra ones dropped */
                    uint32_t last4;
                    d->x = row + n4 / 2;
                    d->out = (int8_t *)&last4;
                    d->out_end = d->out + 4;
                    d->stride = 1;
                    row_fn(d);
                    d->stride = opix;
                    int8_t *dst = orow + ch + n4 * opix;
                    const int8_t *src = (const int8_t *)&last4;
                    for (int32_t ox = n4; ox < ow; ox++, dst += opix) {
                        *dst = *src++;
                    }
                }
            }
        }
    }
#else
    (void)p, (void)rq, (void)input, (void)output, (void)ring, (void)pix, (void)opix;
#endif
}

/* Whether the 1xK row kernel runs a call (in its view). */
static int ek__dw1xk_applies(const ek_conv_params_t *p)
{
    return p->kernel_h == 1 && p->kernel_w >= 4 && p->kernel_w <= EK_DW1XK_MAX_TAPS &&
           p->stride_w == 1 && p->dilation_w == 1;
}
#endif

/*
 * Depthwise, channels-last (EK_NN_FLAG_DW_CHANNELS): for small maps and kernels other than 3x3, where the row
 * kernels' per-row set-up and the ring would dominate. Per output pixel and group of 4 channels, each valid tap
 * loads the 4 input bytes once (one word), widens them with the input offset (SXTAB16: channels 0/2 and 1/3) and
 * multiplies them with the tap's weights, prepacked as int16 pairs (w0|w2, w1|w3) by kernel_pack: 4 MACs in
 * SMLABB/SMLATT. Taps that fall in the padding are skipped (their (x - zero point) is 0). Any kernel size, stride,
 * dilation and padding; no scratch.
 */
#if EK_NN_DSP && !EK_NN_NO_DW_CH3X3
static void (*const ek__dw_ch_px[4])(const ek__dwch_args_t *) = {ek__dw_ch2x2_px, ek__dw_ch2x3_px, ek__dw_ch3x2_px,
                                                                 ek__dw_ch3x3_px};
#endif
#if EK_NN_DSP && !EK_NN_NO_DW_CH3X3_NC
static void (*const ek__dw_ch_px_nc[4])(const ek__dwch_args_t *) = {ek__dw_ch2x2_px_nc, ek__dw_ch2x3_px_nc,
                                                                    ek__dw_ch3x2_px_nc, ek__dw_ch3x3_px_nc};
#endif
#if EK_NN_DSP && !EK_NN_NO_DW_CH5X5
static void (*const ek__dw_ch5_px[4])(const ek__dwch_args_t *) = {ek__dw_ch5k2x2_px, ek__dw_ch5k2x3_px,
                                                                  ek__dw_ch5k3x2_px, ek__dw_ch5k3x3_px};
#endif
#if EK_NN_DSP && !EK_NN_NO_DW_CH5X5_NC
static void (*const ek__dw_ch5_px_nc[4])(const ek__dwch_args_t *) = {ek__dw_ch5k2x2_px_nc, ek__dw_ch5k2x3_px_nc,
                                                                     ek__dw_ch5k3x2_px_nc, ek__dw_ch5k3x3_px_nc};
#endif

static __attribute__((noinline)) void ek__dw_channels(const ek_conv_params_t *p, const ek__rq_t *rq,
                                                      const int8_t *input, int8_t *output)
{
    /* Every field in a local: the int8 stores below may alias anything, which would reload them per store. */
    const int32_t C = p->in_c, kh = p->kernel_h, kw = p->kernel_w, taps = kh * kw;
    const int32_t full = C / 4, tail = C - 4 * full;
    const int32_t in_h = p->in_h, in_w = p->in_w, in_rs = p->in_row_stride, out_rs = p->out_row_stride;
    const int32_t out_h = p->out_h, out_w = p->out_w, sh = p->stride_h, sw = p->stride_w;
    const int32_t pt = p->pad_top, pl = p->pad_left, x_off = p->input_offset;
    const uint32_t off2 = ek__pack16(x_off, x_off);
    const uint32_t *wp = (const uint32_t *)(const void *)p->weights;
    const int32_t *bias = p->bias, *requant = p->requant;
    const int32_t dh = p->dilation_h, dw = p->dilation_w, dwc = dw * C, dhr = dh * in_rs;
    const ek__rq_t r = *rq;
    /* the asm pixel kernels (3x3, and 5x5 where 2-3 taps a side lie inside the map): fast requantization, biases
     * (they load 4 a group), at least one full group, no dilation; by (rows - 2) * 2 + (columns - 2) of the taps
     * inside the map */
    const int nc8 = r.upper == 127 && r.back == 0, asm_ok = r.fast && bias && full && dh == 1 && dw == 1;
    (void)nc8;
    (void)asm_ok;
#if EK_NN_DSP
    void (*const *px_fn)(const ek__dwch_args_t *) = NULL;
    /* the fields every pixel shares, set once (a pixel sets its input, weights and output) */
    ek__dwch_args_t px_args = {input, C, in_rs, wp, bias, requant, off2, ek__bytes4(r.upper), ek__bytes4(r.back),
                               output, output, 0, 0};
#endif
#if EK_NN_DSP && !EK_NN_NO_DW_CHK1
    /* a Kx1 kernel (Conv1d, dilated too): every pixel's full groups in asm, a loop over its taps inside the map
     * (the tap stride is dilation_h rows) */
    void (*const k1_fn)(const ek__dwch_args_t *) = r.fast && bias && full && kw == 1 && kh > 1 ?
        (nc8 ? ek__dw_chk1_px_nc : ek__dw_chk1_px) : NULL;
    if (k1_fn) {
        px_args.rs = dhr;
    }
#endif
#if EK_NN_DSP
#if EK_NN_NO_DW_CH3X3
#define ek__dw_ch_px ((void (*const *)(const ek__dwch_args_t *))0)
#endif
#if EK_NN_NO_DW_CH3X3_NC
#define ek__dw_ch_px_nc ((void (*const *)(const ek__dwch_args_t *))0)
#endif
#if EK_NN_NO_DW_CH5X5
#define ek__dw_ch5_px ((void (*const *)(const ek__dwch_args_t *))0)
#endif
#if EK_NN_NO_DW_CH5X5_NC
#define ek__dw_ch5_px_nc ((void (*const *)(const ek__dwch_args_t *))0)
#endif
    if (asm_ok && kh == 3 && kw == 3) {
        px_fn = EK__PICK_NC(nc8, ek__dw_ch_px, ek__dw_ch_px_nc, EK_NN_NO_DW_CH3X3, EK_NN_NO_DW_CH3X3_NC);
    }
    if (asm_ok && kh == 5 && kw == 5) {
        px_fn = EK__PICK_NC(nc8, ek__dw_ch5_px, ek__dw_ch5_px_nc, EK_NN_NO_DW_CH5X5, EK_NN_NO_DW_CH5X5_NC);
    }
#undef ek__dw_ch_px
#undef ek__dw_ch_px_nc
#undef ek__dw_ch5_px
#undef ek__dw_ch5_px_nc
#endif
    (void)off2; /* (the portable path adds x_off per byte) */
    for (int32_t oy = 0; oy < out_h; oy++) {
        const int32_t iy0 = oy * sh - pt;
        int32_t ky0 = 0, ky1 = kh;
        while (ky0 < kh && iy0 + ky0 * dh < 0) ky0++;
        while (ky1 > ky0 && iy0 + (ky1 - 1) * dh >= in_h) ky1--;
        int8_t *orow = output + oy * out_rs;
        for (int32_t ox = 0; ox < out_w; ox++) {
            const int32_t ix0 = ox * sw - pl;
            int32_t kx0 = 0, kx1 = kw;
            while (kx0 < kw && ix0 + kx0 * dw < 0) kx0++;
            while (kx1 > kx0 && ix0 + (kx1 - 1) * dw >= in_w) kx1--;
            const int32_t nky = ky1 - ky0, nkx = kx1 - kx0, wskip = 2 * (kw - nkx);
            const int8_t *ipix = input + (iy0 + ky0 * dh) * in_rs + (ix0 + kx0 * dw) * C;
            const uint32_t *wpix = wp + 2 * (ky0 * kw + kx0);
            int8_t *o = orow + ox * C;
            int32_t g = 0;
#if EK_NN_DSP
            if (px_fn && nky >= 2 && nkx >= 2 && nky <= 3 && nkx <= 3) { /* every full group in asm */
                px_args.ip = ipix;
                px_args.wt = wpix;
                px_args.out = o;
                px_args.out_end = o + 4 * full;
                px_fn[(nky - 2) * 2 + (nkx - 2)](&px_args);
                g = full;
                o += 4 * full;
            }
#endif
#if EK_NN_DSP && !EK_NN_NO_DW_CHK1
            else if (k1_fn && nky >= 1 && nkx == 1) {
                px_args.ip = ipix;
                px_args.wt = wpix;
                px_args.out = o;
                px_args.out_end = o + 4 * full;
                px_args.nky = nky;
                px_args.skip = 8 * (kh - nky);
                k1_fn(&px_args);
                g = full;
                o += 4 * full;
            }
#endif
            for (; g < full; g++, o += 4) {
                const int32_t c0 = 4 * g;
                int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                if (bias) {
                    a0 = bias[c0];
                    a1 = bias[c0 + 1];
                    a2 = bias[c0 + 2];
                    a3 = bias[c0 + 3];
                }
                const uint32_t *wt = wpix + 2 * g * taps;
                const int8_t *irow = ipix + c0;
                for (int32_t ky = 0; ky < nky; ky++, irow += dhr, wt += wskip) {
                    const int8_t *ip = irow;
                    for (int32_t kx = 0; kx < nkx; kx++, ip += dwc, wt += 2) {
#if EK_NN_DSP
                        const uint32_t x = ek__read_u32(ip);
                        const uint32_t x02 = ek__sxtab16(off2, x), x13 = ek__sxtab16_ror8(off2, x);
                        a0 = ek__smlabb(x02, wt[0], a0);
                        a2 = ek__smlatt(x02, wt[0], a2);
                        a1 = ek__smlabb(x13, wt[1], a1);
                        a3 = ek__smlatt(x13, wt[1], a3);
#else
                        /* without SIMD: byte loads of the 4 channels, the weight pairs {c0, c2}, {c1, c3} as
                         * halfwords (wrapping sums, as SMLA) */
                        const ek__h16 *wh = (const ek__h16 *)wt;
                        a0 = (int32_t)((uint32_t)a0 + (uint32_t)((ip[0] + x_off) * wh[0]));
                        a2 = (int32_t)((uint32_t)a2 + (uint32_t)((ip[2] + x_off) * wh[1]));
                        a1 = (int32_t)((uint32_t)a1 + (uint32_t)((ip[1] + x_off) * wh[2]));
                        a3 = (int32_t)((uint32_t)a3 + (uint32_t)((ip[3] + x_off) * wh[3]));
#endif
                    }
                }
                const int32_t *q = requant + 4 * c0;
                o[0] = ek__requant(&r, a0, q);
                o[1] = ek__requant(&r, a1, q + 4);
                o[2] = ek__requant(&r, a2, q + 8);
                o[3] = ek__requant(&r, a3, q + 12);
            }
            if (tail) { /* the last 1-3 channels: byte loads (never past the pixel) */
                const int32_t c0 = 4 * full;
                int32_t a[3] = {0, 0, 0};
                const uint32_t *wt = wpix + 2 * full * taps;
                const int8_t *irow = ipix + c0;
                for (int32_t ky = 0; ky < nky; ky++, irow += dhr, wt += wskip) {
                    const int8_t *ip = irow;
                    for (int32_t kx = 0; kx < nkx; kx++, ip += dwc, wt += 2) {
                        a[0] += (ip[0] + x_off) * ek__lo16(wt[0]);
                        if (tail > 1) a[1] += (ip[1] + x_off) * ek__lo16(wt[1]);
                        if (tail > 2) a[2] += (ip[2] + x_off) * ek__hi16(wt[0]);
                    }
                }
                for (int32_t i = 0; i < tail; i++) {
                    o[i] = ek__requant(&r, a[i] + (bias ? bias[c0 + i] : 0), requant + 4 * (c0 + i));
                }
            }
        }
    }
}

/*
 * Depthwise 3x3, column pairs (EK_NN_FLAG_DW_PAIRS): for small maps, where the row kernels' per-row set-up and
 * the channels-last kernel's 4 MAC instructions per 4 MACs dominate. Per group of 4 channels the whole padded input
 * plane is widened once into scratch: plane row pr = input row pr - pad_top, word 4j + ch of it holds channel ch at
 * plane columns 2j, 2j+1 (input columns 2j - pad_left, 2j + 1 - pad_left; zero point subtracted, padding 0). Then
 * every step computes 2 outputs of 2 channels, SMLAD pairing the taps: stride 1, per kernel row the words A (columns
 * x, x+1) and B (x+2, x+3) give o0 = SMLAD(A, w0|w1) + SMLABT(B, w1|w2) and o1 = SMLATB(A, w0|w1) + SMLAD(B, w1|w2);
 * stride 2, A, B, C (columns 2x .. 2x+5) give o0 = SMLAD(A, w0|w1) + SMLABB(B, w2), o1 = SMLAD(B, w0|w1) +
 * SMLABB(C, w2). Weights stay in PyTorch layout (paired once per 2 channels). Any padding, stride_h; stride_w 1 or 2.
 */
#if !EK_NN_NO_DW_PAIRS /* (left out: a pairs call runs the generic ring path, its scratch holds a ring too) */
static int ek__dwp_applies(const ek_conv_params_t *p)
{
    return p->kernel_h == 3 && p->kernel_w == 3 && p->dilation_h == 1 && p->dilation_w == 1 &&
           (p->stride_w == 1 || p->stride_w == 2);
}

#if EK_NN_DSP
typedef struct {
    const uint32_t *src; /* 0: plane word of channel a at (plane row 0, column pair 0) */
    int32_t rw;          /* 4: bytes per plane row */
    int32_t row_step;    /* 8: bytes from one output row's first plane row to the next's (stride_h rows) */
    int8_t *out;         /* 12: channel a's output at pixel (0, 0) */
    int32_t c;           /* 16: bytes per output pixel */
    int32_t out_rs;      /* 20: bytes per output row */
    int32_t pairs_bytes; /* 24: 2 * c * (out_w / 2): output bytes of a row's whole pairs (> 0) */
    int32_t rows;        /* 28: output rows (> 0) */
    int32_t odd;         /* 32: out_w is odd: each row ends with one output more (a pair whose second is dropped) */
    int32_t bias_a, bias_b;     /* 36, 40 */
    int32_t qa[3], qb[3];       /* 44, 56: the channels' fast requant entries {mult, a, b} */
    uint32_t upper4, back4;     /* 68, 72 */
    uint32_t w[12];             /* 76..: per kernel row a (w0|w1, w1|w2 (s1) or w2|0 (s2)), b (the same) */
    const int8_t *wq;           /* 124: the next channel pair's weights (PyTorch layout, 9 bytes per channel) */
    const int32_t *bias;        /* 128: its biases */
    int32_t bias_step;          /* 132: 8 (or 0: bias points at 2 zeros) */
    const int32_t *q;           /* 136: its requant entries (4 words per channel) */
    int32_t npairs;             /* 140: channel pairs (> 0; counted down) */
} ek__dwp_args_t;

typedef struct {
    const int8_t *src;  /* 0: the first input row of the plane at the first whole pair's first column (4 channels) */
    int32_t c;          /* 4: bytes per input pixel */
    uint32_t off2;      /* 8: the input offset in both halves */
    uint32_t *dst;      /* 12: its plane row at the first whole pair */
    int32_t n;          /* 16: whole pairs per row */
    int32_t in_rs, rw;  /* 20, 24: bytes per input row, per plane row */
    int32_t rows;       /* 28: input rows (> 0; counted down) */
    int32_t left, right; /* 32, 36: the pair before the whole pairs holds (padding, column 0); the pair after them
                          * holds (column in_w - 1, padding) */
} ek__dwp_build_args_t;

void ek__dwp_build_rows(ek__dwp_build_args_t *a);
void ek__dwp_s1(ek__dwp_args_t *a);
void ek__dwp_s2(ek__dwp_args_t *a);
void ek__dwp_s1_nc(ek__dwp_args_t *a); /* the same when the clamp is all of int8 */
void ek__dwp_s2_nc(ek__dwp_args_t *a);

/*
 * ek__dwp_s1 / _s2: every output row of 2 channels of a pairs-layout plane, 2 outputs a step. Registers: r0-r3 the
 * accumulators (a0, a1, b0, b1), r4/r5 a column-pair word of both channels, r6-r9 the kernel row's weights, r10 the
 * step's plane word, r11 bytes per plane row, r12 the args, lr the output. Stack: [sp] bytes to the step's second
 * output (c, or 0 for a row's last odd output: its store comes first and the first output's overwrites it), [sp, 4]
 * the end of the row's whole pairs, [sp, 8] / [sp, 12] the row's first plane word / output, [sp, 16] rows left.
 */
__asm__(
    "   .syntax unified\n"
    "   .macro EK_DWP_KROW1 wo\n" /* one kernel row at stride 1: words A (columns x, x+1) and B (x+2, x+3) */
    "   ldrd    r4, r5, [r10]\n"
    "   ldrd    r6, r7, [r12, #\\wo]\n"
    "   ldrd    r8, r9, [r12, #\\wo + 8]\n"
    "   smlad   r0, r4, r6, r0\n"
    "   smlatb  r1, r4, r6, r1\n"
    "   smlad   r2, r5, r8, r2\n"
    "   smlatb  r3, r5, r8, r3\n"
    "   ldrd    r4, r5, [r10, #16]\n"
    "   smlabt  r0, r4, r7, r0\n"
    "   smlad   r1, r4, r7, r1\n"
    "   smlabt  r2, r5, r9, r2\n"
    "   smlad   r3, r5, r9, r3\n"
    "   .endm\n"
    "   .macro EK_DWP_KROW2 wo\n" /* stride 2: words A, B, C (columns 2x .. 2x + 5) */
    "   ldrd    r4, r5, [r10]\n"
    "   ldrd    r6, r7, [r12, #\\wo]\n"
    "   ldrd    r8, r9, [r12, #\\wo + 8]\n"
    "   smlad   r0, r4, r6, r0\n"
    "   smlad   r2, r5, r8, r2\n"
    "   ldrd    r4, r5, [r10, #16]\n"
    "   smlabb  r0, r4, r7, r0\n"
    "   smlabb  r2, r5, r9, r2\n"
    "   smlad   r1, r4, r6, r1\n"
    "   smlad   r3, r5, r8, r3\n"
    "   ldrd    r4, r5, [r10, #32]\n"
    "   smlabb  r1, r4, r7, r1\n"
    "   smlabb  r3, r5, r9, r3\n"
    "   .endm\n"
    "   .macro EK_DWP_PACK ko, wo, step\n" /* a kernel row (bytes ko..ko+2 of the pair's weights) -> 2 words */
    "   ldrsb   r4, [r0, #\\ko]\n"
    "   ldrsb   r5, [r0, #\\ko + 1]\n"
    "   ldrsb   r6, [r0, #\\ko + 2]\n"
    "   pkhbt   r7, r4, r5, lsl #16\n"
    "   .if \\step == 16\n"
    "   pkhbt   r8, r5, r6, lsl #16\n"  /* stride 1: w1|w2 */
    "   .else\n"
    "   uxth    r8, r6\n"               /* stride 2: w2|0 */
    "   .endif\n"
    "   strd    r7, r8, [r12, #\\wo]\n"
    "   .endm\n"
    "   .macro EK_DWP_FUNC name, krow, step, clamp\n"
    "   EK_FUNC \\name\n"
    "   push    {r4-r11, lr}\n"
    "   sub     sp, sp, #20\n"
    "   mov     r12, r0\n"
    "0: ldr     r0, [r12, #124]\n"     /* a channel pair: its weights, paired per kernel row */
    "   EK_DWP_PACK 0, 76, \\step\n"
    "   EK_DWP_PACK 3, 92, \\step\n"
    "   EK_DWP_PACK 6, 108, \\step\n"
    "   EK_DWP_PACK 9, 84, \\step\n"
    "   EK_DWP_PACK 12, 100, \\step\n"
    "   EK_DWP_PACK 15, 116, \\step\n"
    "   adds    r0, r0, #18\n"
    "   str     r0, [r12, #124]\n"
    "   ldrd    r0, r1, [r12, #128]\n"  /* biases */
    "   ldrd    r4, r5, [r0]\n"
    "   add     r0, r0, r1\n"
    "   str     r0, [r12, #128]\n"
    "   strd    r4, r5, [r12, #36]\n"
    "   ldr     r0, [r12, #136]\n"      /* requant entries */
    "   ldm     r0!, {r4-r11}\n"
    "   str     r0, [r12, #136]\n"
    "   add     r0, r12, #44\n"
    "   stm     r0, {r4-r6, r8-r10}\n"
    "   ldrd    r10, r11, [r12]\n"      /* plane, rw */
    "   ldr     lr, [r12, #12]\n"       /* out */
    "   ldr     r4, [r12, #28]\n"
    "   str     r4, [sp, #16]\n"
    "1: str     r10, [sp, #8]\n"        /* a row */
    "   str     lr, [sp, #12]\n"
    "   ldr     r4, [r12, #24]\n"
    "   add     r4, r4, lr\n"
    "   str     r4, [sp, #4]\n"
    "   ldr     r4, [r12, #16]\n"
    "   str     r4, [sp]\n"
    "2: ldrd    r0, r2, [r12, #36]\n"   /* a step: the biases */
    "   mov     r1, r0\n"
    "   mov     r3, r2\n"
    "   \\krow   76\n"
    "   add     r10, r10, r11\n"
    "   \\krow   92\n"
    "   add     r10, r10, r11\n"
    "   \\krow   108\n"
    "   sub     r10, r10, r11, lsl #1\n"
    "   ldrd    r4, r5, [r12, #44]\n"
    "   ldr     r6, [r12, #52]\n"
    "   smmla   r0, r0, r4, r5\n"
    "   smmla   r1, r1, r4, r5\n"
    "   asr     r0, r0, r6\n"
    "   asr     r1, r1, r6\n"
    "   ldrd    r4, r5, [r12, #56]\n"
    "   ldr     r6, [r12, #64]\n"
    "   smmla   r2, r2, r4, r5\n"
    "   smmla   r3, r3, r4, r5\n"
    "   asr     r2, r2, r6\n"
    "   asr     r3, r3, r6\n"
    "   ssat    r0, #8, r0\n"
    "   ssat    r1, #8, r1\n"
    "   ssat    r2, #8, r2\n"
    "   ssat    r3, #8, r3\n"
    "   bfi     r0, r2, #8, #8\n"       /* the first output's 2 channels */
    "   bfi     r1, r3, #8, #8\n"
    "   bfi     r0, r1, #16, #16\n"     /* the second's */
    "   .if \\clamp\n"
    "   ldrd    r4, r5, [r12, #68]\n"
    "   ssub8   r6, r0, r4\n"           /* min(v, upper) per byte, then + back */
    "   sel     r0, r4, r0\n"
    "   uadd8   r0, r0, r5\n"
    "   .endif\n"
    "   ldr     r7, [sp]\n"
    "   lsr     r1, r0, #16\n"
    "   strh    r1, [lr, r7]\n"
    "   strh    r0, [lr]\n"
    "   add     lr, lr, r7, lsl #1\n"
    "   add     r10, r10, #\\step\n"
    "   ldr     r4, [sp, #4]\n"
    "   cmp     lr, r4\n"
    "   blo     2b\n"
    "   cbz     r7, 3f\n"               /* the row's odd last output is done */
    "   ldr     r4, [r12, #32]\n"
    "   cbz     r4, 3f\n"
    "   movs    r4, #0\n"
    "   str     r4, [sp]\n"
    "   b       2b\n"
    "3: ldrd    r10, lr, [sp, #8]\n"    /* the next row */
    "   ldr     r4, [r12, #8]\n"
    "   add     r10, r10, r4\n"
    "   ldr     r4, [r12, #20]\n"
    "   add     lr, lr, r4\n"
    "   ldr     r4, [sp, #16]\n"
    "   subs    r4, r4, #1\n"
    "   str     r4, [sp, #16]\n"
    "   bne     1b\n"
    "   ldr     r0, [r12]\n"            /* the next channel pair: 2 words on in the plane, 2 bytes in the output */
    "   adds    r0, r0, #8\n"
    "   str     r0, [r12]\n"
    "   ldr     r0, [r12, #12]\n"
    "   adds    r0, r0, #2\n"
    "   str     r0, [r12, #12]\n"
    "   ldr     r0, [r12, #140]\n"
    "   subs    r0, r0, #1\n"
    "   str     r0, [r12, #140]\n"
    "   bne     0b\n"
    "   add     sp, sp, #20\n"
    "   pop     {r4-r11, pc}\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
    "   EK_DWP_FUNC ek__dwp_s1, EK_DWP_KROW1, 16, 1\n"
    "   EK_DWP_FUNC ek__dwp_s2, EK_DWP_KROW2, 32, 1\n"
    "   EK_DWP_FUNC ek__dwp_s1_nc, EK_DWP_KROW1, 16, 0\n"
    "   EK_DWP_FUNC ek__dwp_s2_nc, EK_DWP_KROW2, 32, 0\n"
    /* ek__dwp_build_rows(a): the plane rows of 4 channels' input rows: per row the left edge pair (padding, column 0),
     * the whole pairs (2 LDR, 4 SXTAB16, 4 PKH, 1 STM per 8 elements) and the right edge pair (last column,
     * padding) */
    "   EK_FUNC ek__dwp_build_rows\n"
    "   push    {r4-r11, lr}\n"
    "   mov     lr, r0\n"
    "   ldrd    r0, r1, [lr]\n"         /* src, c */
    "   ldrd    r2, r3, [lr, #8]\n"     /* off2, dst */
    "1: push    {r0, r3}\n"             /* a row */
    "   ldr     r4, [lr, #32]\n"
    "   cbz     r4, 2f\n"
    "   sub     r4, r0, r1\n"           /* (padding, column 0) */
    "   ldr     r4, [r4]\n"
    "   sxtab16 r5, r2, r4\n"
    "   sxtab16 r4, r2, r4, ror #8\n"
    "   lsl     r8, r5, #16\n"
    "   lsl     r9, r4, #16\n"
    "   bfc     r5, #0, #16\n"
    "   bfc     r4, #0, #16\n"
    "   str     r8, [r3, #-16]\n"
    "   str     r9, [r3, #-12]\n"
    "   strd    r5, r4, [r3, #-8]\n"
    "2: ldr     r12, [lr, #16]\n"
    "   cmp     r12, #0\n"
    "   beq     4f\n"
    "3: ldr     r4, [r0]\n"
    "   ldr     r5, [r0, r1]\n"
    "   add     r0, r0, r1, lsl #1\n"
    "   sxtab16 r6, r2, r4\n"
    "   sxtab16 r4, r2, r4, ror #8\n"
    "   sxtab16 r7, r2, r5\n"
    "   sxtab16 r5, r2, r5, ror #8\n"
    "   pkhbt   r8, r6, r7, lsl #16\n"
    "   pkhbt   r9, r4, r5, lsl #16\n"
    "   pkhtb   r10, r7, r6, asr #16\n"
    "   pkhtb   r11, r5, r4, asr #16\n"
    "   stmia   r3!, {r8-r11}\n"
    "   subs    r12, r12, #1\n"
    "   bne     3b\n"
    "4: ldr     r4, [lr, #36]\n"
    "   cbz     r4, 5f\n"
    "   ldr     r4, [r0]\n"             /* (column in_w - 1, padding) */
    "   sxtab16 r5, r2, r4\n"
    "   sxtab16 r4, r2, r4, ror #8\n"
    "   uxth    r8, r5\n"
    "   uxth    r9, r4\n"
    "   lsr     r5, r5, #16\n"
    "   lsr     r4, r4, #16\n"
    "   strd    r8, r9, [r3]\n"
    "   strd    r5, r4, [r3, #8]\n"
    "5: pop     {r0, r3}\n"
    "   ldrd    r4, r5, [lr, #20]\n"    /* in_rs, rw */
    "   add     r0, r0, r4\n"
    "   add     r3, r3, r5\n"
    "   ldr     r4, [lr, #28]\n"
    "   subs    r4, r4, #1\n"
    "   str     r4, [lr, #28]\n"
    "   bne     1b\n"
    "   pop     {r4-r11, pc}\n"
    "   .size ek__dwp_build_rows, . - ek__dwp_build_rows\n"
    "   .popsection\n");
#endif

/* Plane rows of channels c0 .. c0 + nc - 1 (the words of pure padding are never written: zeroed once). */
static __attribute__((noinline, optimize("Os"))) void ek__dwp_build(const ek_conv_params_t *p, const int8_t *input,
                                                                    int32_t c0, int32_t nc, uint32_t *plane,
                                                                    int32_t pw, int32_t ph, int32_t pix)
{
    /* Every field in a local: the stores below may alias anything, which would reload them per store. C: bytes per
     * input pixel of a row (in_c, or the row stride on the transposed view). */
    const int32_t C = pix, in_h = p->in_h, in_w = p->in_w, pl = p->pad_left, off = p->input_offset;
    const int32_t pt = p->pad_top, in_rs = p->in_row_stride;
    const uint32_t off2 = ek__pack16(off, off);
    const int32_t j_lo = (pl + 1) / 2, j_hi = (pl + in_w) / 2 < pw ? (pl + in_w) / 2 : pw; /* both columns inside */
    const int32_t j_end = (pl + in_w + 1) / 2 < pw ? (pl + in_w + 1) / 2 : pw;            /* any column inside */
    const int left = (pl & 1) && j_lo - 1 < pw, right = ((pl + in_w) & 1) && j_hi < pw;
    const int32_t first = (2 * j_lo - pl) * C, last = (in_w - 1) * C;
    const int32_t pr0 = pt > 0 ? pt : 0, pr1 = pt + in_h < ph ? pt + in_h : ph; /* plane rows that are input rows */
#if EK_NN_DSP
    if (nc == 4 && pr1 > pr0 && j_hi >= j_lo) {
        ek__dwp_build_args_t a = {input + (pr0 - pt) * in_rs + c0 + first, C, off2, plane + pr0 * 4 * pw + 4 * j_lo,
                                  j_hi - j_lo, in_rs, 16 * pw, pr1 - pr0, left, right};
        ek__dwp_build_rows(&a);
        return;
    }
#endif
    for (int32_t pr = pr0; pr < pr1; pr++) {
        const int8_t *row = input + (pr - pt) * in_rs + c0;
        uint32_t *d = plane + pr * 4 * pw;
        if (nc == 4) {
            if (left) { /* (padding, input column 0) */
                const uint32_t x = ek__read_u32(row);
                const uint32_t a02 = ek__sxtab16(off2, x), a13 = ek__sxtab16_ror8(off2, x);
                uint32_t *o = d + 4 * (j_lo - 1);
                o[0] = a02 << 16;
                o[1] = a13 << 16;
                o[2] = a02 & 0xFFFF0000u;
                o[3] = a13 & 0xFFFF0000u;
            }
            const int8_t *src = row + first;
            for (int32_t j = j_lo; j < j_hi; j++, src += 2 * C) {
                for (int32_t ch = 0; ch < 4; ch++) {
                    d[4 * j + ch] = ek__pack16(src[ch] + off, src[C + ch] + off);
                }
            }
            if (right) { /* (input column in_w - 1, padding) */
                const uint32_t x = ek__read_u32(row + last);
                const uint32_t a02 = ek__sxtab16(off2, x), a13 = ek__sxtab16_ror8(off2, x);
                uint32_t *o = d + 4 * j_hi;
                o[0] = a02 & 0xFFFFu;
                o[1] = a13 & 0xFFFFu;
                o[2] = a02 >> 16;
                o[3] = a13 >> 16;
            }
            continue;
        }
        for (int32_t j = pl / 2; j < j_end; j++) {
            const int32_t ix0 = 2 * j - pl;
            const int v0 = (uint32_t)ix0 < (uint32_t)in_w, v1 = (uint32_t)(ix0 + 1) < (uint32_t)in_w;
            for (int32_t ch = 0; ch < nc; ch++) {
                d[4 * j + ch] = ek__pack16(v0 ? row[ix0 * C + ch] + off : 0, v1 ? row[(ix0 + 1) * C + ch] + off : 0);
            }
        }
    }
}

/* One kernel row of one channel, 2 outputs: the column-pair words t[0], t[4], t[8] (stride 2) and the row's weights
 * w[0] (w0|w1), w[1] (w1|w2, or w2|0 at stride 2) — what ek__dwp_s1 / _s2 do per row. */
static inline void ek__dwp_krow(const uint32_t *t, const uint32_t *w, int32_t *o0, int32_t *o1, int s2)
{
    if (s2) {
        *o0 = ek__smlabb(t[4], w[1], ek__smlad(t[0], w[0], *o0));
        *o1 = ek__smlabb(t[8], w[1], ek__smlad(t[4], w[0], *o1));
    } else {
        *o0 = ek__smlabt(t[4], w[1], ek__smlad(t[0], w[0], *o0));
        *o1 = ek__smlad(t[4], w[1], ek__smlatb(t[0], w[0], *o1));
    }
}

/* Two channels (or the last one) in C: the 64-bit requantisation, maps one output wide and an odd last channel (the
 * DSP build runs the rest in ek__dwp_s1 / _s2). */
static __attribute__((noinline, optimize("Os"))) void ek__dwp_channels(const ek_conv_params_t *p, const ek__rq_t *r,
                                                                       const uint32_t *plane, int32_t pw, int32_t npo,
                                                                       int32_t ca, int32_t two, int32_t cp,
                                                                       int8_t *output, const int s2, int32_t opix)
{
    const int32_t cb = two ? ca + 1 : ca, C = opix, rw = 4 * pw, out_w = p->out_w; /* C: bytes per output pixel */
    uint32_t w[12]; /* per kernel row: channel a (w0|w1, w1|w2 or w2|0), channel b (the same) */
    for (int32_t ky = 0; ky < 3; ky++) {
        const int8_t *ka = p->weights + 9 * ca + 3 * ky, *kb = p->weights + 9 * cb + 3 * ky;
        w[4 * ky] = ek__pack16(ka[0], ka[1]);
        w[4 * ky + 1] = s2 ? (uint32_t)(uint16_t)ka[2] : ek__pack16(ka[1], ka[2]);
        w[4 * ky + 2] = ek__pack16(kb[0], kb[1]);
        w[4 * ky + 3] = s2 ? (uint32_t)(uint16_t)kb[2] : ek__pack16(kb[1], kb[2]);
    }
    const int32_t bias_a = p->bias ? p->bias[ca] : 0, bias_b = p->bias ? p->bias[cb] : 0;
    const int32_t *qa = p->requant + 4 * ca, *qb = p->requant + 4 * cb;
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        const uint32_t *row = plane + oy * p->stride_h * rw + cp;
        int8_t *o = output + oy * p->out_row_stride + ca;
        for (int32_t k = 0; k < npo; k++, o += 2 * C) {
            const uint32_t *s = row + (s2 ? 8 : 4) * k;
            int32_t a0 = bias_a, a1 = bias_a, b0 = bias_b, b1 = bias_b;
            for (int32_t ky = 0; ky < 3; ky++) {
                const uint32_t *t = s + ky * rw, *wk = w + 4 * ky;
                ek__dwp_krow(t, wk, &a0, &a1, s2);         /* channel a */
                ek__dwp_krow(t + 1, wk + 2, &b0, &b1, s2); /* channel b: the next word of each column pair */
            }
            o[0] = ek__requant(r, a0, qa);
            if (two) {
                o[1] = ek__requant(r, b0, qb);
            }
            if (2 * k + 1 < out_w) {
                o[C] = ek__requant(r, a1, qa);
                if (two) {
                    o[C + 1] = ek__requant(r, b1, qb);
                }
            }
        }
    }
}

static __attribute__((noinline, optimize("Os"))) void ek__dw_pairs(const ek_conv_params_t *p, const ek__rq_t *rq,
                                                                   const int8_t *input, int8_t *output,
                                                                   uint32_t *plane, int32_t pix, int32_t opix)
{
    int32_t npo, pw, ph;
    ek__dwp_geom(p, &npo, &pw, &ph);
    const ek__rq_t r = *rq;
    for (int32_t i = 0; i < ph * 4 * pw; i++) {
        plane[i] = 0;
    }
#if EK_NN_DSP
    /* the clamp is all of int8: the no-clamp function, else (left out) the clamp one, exact too; a call whose
     * functions are both left out runs the C loop */
    const int nc8 = r.upper == 127 && r.back == 0;
#define EK__DWP_PICK(f, f_nc, no, no_nc) (nc8 && !(no_nc) ? (f_nc) : !(no) ? (f) : 0)
    void (*const fn)(ek__dwp_args_t *) =
        p->stride_w == 2 ? EK__DWP_PICK(ek__dwp_s2, ek__dwp_s2_nc, EK_NN_NO_DWP_S2, EK_NN_NO_DWP_S2_NC)
                         : EK__DWP_PICK(ek__dwp_s1, ek__dwp_s1_nc, EK_NN_NO_DWP_S1, EK_NN_NO_DWP_S1_NC);
#undef EK__DWP_PICK
    const int asm_ok = r.fast && p->out_w >= 2 && fn;
    static const int32_t zeros[2] = {0, 0};
    ek__dwp_args_t a;
    a.rw = 16 * pw;
    a.row_step = 16 * pw * p->stride_h;
    a.c = opix;
    a.out_rs = p->out_row_stride;
    a.pairs_bytes = 2 * opix * (p->out_w / 2);
    a.rows = p->out_h;
    a.odd = p->out_w & 1;
    a.upper4 = ek__bytes4(r.upper);
    a.back4 = ek__bytes4(r.back);
    a.bias_step = p->bias ? 8 : 0;
#endif
    for (int32_t c0 = 0; c0 < p->in_c; c0 += 4) {
        const int32_t nc = p->in_c - c0 < 4 ? p->in_c - c0 : 4;
        ek__dwp_build(p, input, c0, nc, plane, pw, ph, pix);
        int32_t cp = 0;
#if EK_NN_DSP
        if (asm_ok) {
            if (nc >= 2) {
                a.src = plane;
                a.out = output + c0;
                a.wq = p->weights + 9 * c0;
                a.bias = p->bias ? p->bias + c0 : zeros;
                a.q = p->requant + 4 * c0;
                a.npairs = nc / 2;
                fn(&a);
                cp = 2 * (nc / 2);
            }
        }
#endif
        for (; cp < nc; cp += 2) {
            ek__dwp_channels(p, &r, plane, pw, npo, c0 + cp, cp + 1 < nc, cp, output, p->stride_w == 2, opix);
        }
    }
}
#endif

int ek_depthwise_conv2d_s8(const ek_conv_params_t *p, const int8_t *input, int8_t *output, void *scratch)
{
    int err = ek__conv_check(p);
    if (err) {
        return err;
    }
    if (p->out_c != p->in_c) {
        return EK_NN_ERR_ARG;
    }
    if (!ek__aligned(scratch)) {
        return EK_NN_ERR_ALIGN;
    }
    EK_NN_HELIUM(p, ek__mve_depthwise_conv2d_s8(p, input, output, scratch));
    EK_NN_SCALAR(p, ek__rv_depthwise3x3(p, input, output));
    uint32_t *ring = (uint32_t *)scratch;
    const int32_t khw = p->kernel_h * p->kernel_w;
    ek__rq_t rq;
    ek__rq_init(&rq, p->flags, p->output_offset, p->act_min, p->act_max);
#if !EK_NN_NO_DW_CHANNELS /* (left out when no call is packed channels-last: pipeline.firmware_cflags) */
    if (p->flags & EK_NN_FLAG_DW_CHANNELS) {
        ek__dw_channels(p, &rq, input, output);
        return EK_NN_OK;
    }
#else
    if (p->flags & EK_NN_FLAG_DW_CHANNELS) { /* no other path reads its int16 weight pairs: refused, not wrong */
        return EK_NN_ERR_ARG;
    }
    (void)ek__dw_channels;
#endif
    /* EK_NN_FLAG_DW_TRANSPOSED: every path below runs on the transposed view (its rows are the map's columns; the
     * weights were packed transposed), pix / opix the bytes from one pixel of its rows to the next */
    ek_conv_params_t view;
    int32_t pix = p->in_c, opix = p->out_c;
    if (p->flags & EK_NN_FLAG_DW_TRANSPOSED) {
        ek__dw_transpose(p, &view);
        pix = p->in_row_stride;
        opix = p->out_row_stride;
        p = &view;
    }
    ek__dw_geom_t g;
    ek__dw_geom(p, &g);
#if !EK_NN_NO_DW_PAIRS
    if ((p->flags & EK_NN_FLAG_DW_PAIRS) && ek__dwp_applies(p)) {
        ek__dw_pairs(p, &rq, input, output, ring, pix, opix);
        return EK_NN_OK;
    }
#endif
#if EK_NN_DSP
    if (!EK_NN_NO_DW_ROWS && rq.fast && p->dilation_h == 1 && p->dilation_w == 1) {
        const int32_t kh = p->kernel_h, kw = p->kernel_w, sw = p->stride_w;
        if (!EK_NN_NO_DW1XK && ek__dw1xk_applies(p)) {
            ek__dw_rows_k(p, &rq, input, output, ring, pix, opix);
            return EK_NN_OK;
        }
        if ((kh == 3 && kw == 3 && (sw == 1 || sw == 2) &&
             ek__dw3x3_row_fn(sw == 2, rq.upper == 127 && rq.back == 0)) || (!EK_NN_NO_DW1X3 && kh == 1 && kw == 3 &&
            (sw == 1 || sw == 2)) || (!EK_NN_NO_DW5X5 && kh == 5 && kw == 5 && (sw == 1 || sw == 2))) {
            ek__dw_rows_fast(p, &rq, input, output, ring, pix, opix);
            return EK_NN_OK;
        }
        if (!EK_NN_NO_DW1X3 && ek__dw_columns(p)) {
            ek_conv_params_t t;
            ek__dw_transpose(p, &t);
            ek__dw_rows_fast(&t, &rq, input, output, ring, p->in_row_stride, p->out_row_stride);
            return EK_NN_OK;
        }
    }
#endif
#if EK_NN_NO_DW_RING && EK_NN_DSP /* (the portable build keeps it: its row layout) */
    (void)ek__dw_row;
    (void)khw;
    return EK_NN_ERR_ARG; /* the generic ring path left out: no call of this firmware comes here */
#else
    const size_t ring_words = (size_t)4 * (size_t)g.slots * (size_t)g.row_words;
    for (int32_t c0 = 0; c0 < p->in_c; c0 += 4) {
        const int32_t nc = p->in_c - c0 < 4 ? p->in_c - c0 : 4;
        int32_t next_row = 0; /* first plane row not yet in the ring */
        for (size_t i = 0; i < ring_words; i++) {
            ring[i] = 0;
        }
        for (int32_t oy = 0; oy < p->out_h; oy++) {
            const int32_t first = oy * p->stride_h, end = first + g.slots;
            for (int32_t pr = next_row > first ? next_row : first; pr < end; pr++) {
                ek__dw_build_row(p, &g, input, c0, nc, pr, ring, pix);
            }
            next_row = end;
            int8_t *orow = output + oy * p->out_row_stride;
            for (int32_t ch = 0; ch < nc; ch++) {
                const int32_t c = c0 + ch;
                ek__dw_row(p, &g, ring + ch * g.slots * g.row_words, p->weights + c * khw, p->bias ? p->bias[c] : 0,
                           p->requant + 4 * c, &rq, oy, orow + c, opix);
            }
        }
    }
    return EK_NN_OK;
#endif
}

/* ===============================================================================================================
 * Elementwise add (residual connections)
 * ============================================================================================================= */

#if EK_NN_DSP
static int32_t ek__add_s8_pairs(const ek_add_params_t *p, const int8_t *a, const int8_t *b, int8_t *out);
#endif

/* One row of n elements. */
static int ek__add_s8_row(const ek_add_params_t *p, const int8_t *a, const int8_t *b, int8_t *out)
{
#if EK_NN_MVE
    if ((p->flags & EK_NN_FLAG_MVE) && (p->flags & EK_NN_FLAG_ADD_SPLIT)) {
        return ek__mve_add_s8(p, a, b, out);
    }
#endif
    /* the fields in locals: out may alias *p as far as the compiler knows (int8_t), which would reload them */
    const int32_t n = p->n, zo = p->out_offset, lo = p->act_min, hi = p->act_max;
    int32_t done = 0;
#if EK_NN_DSP
    if (p->flags & EK_NN_FLAG_ADD_PAIRS) { /* 4 elements a turn with SMLAD (defined at the end of the file) */
        done = ek__add_s8_pairs(p, a, b, out);
    }
#endif
    if (p->flags & EK_NN_FLAG_ADD_SPLIT) { /* 32-bit: H + (L >> 15), rounded right by shift - 15 */
        const int32_t rs = p->shift - 15, round = (int32_t)1 << (rs - 1);
        const int32_t mah = p->a_mult_hi, mal = p->a_mult_lo, mbh = p->b_mult_hi, mbl = p->b_mult_lo;
        const int32_t hc = p->h_const, lc = p->l_const;
        for (int32_t i = done; i < n; i++) {
            const int32_t x = a[i], y = b[i];
            const int32_t hsum = x * mah + (y * mbh + hc), lsum = x * mal + (y * mbl + lc);
            int32_t v = ((hsum + (lsum >> 15) + round) >> rs) + zo;
            v = v < lo ? lo : v;
            v = v > hi ? hi : v;
            out[i] = (int8_t)v;
        }
        return EK_NN_OK;
    }
    const int32_t shift = p->shift, ao = p->a_offset, bo = p->b_offset, am = p->a_mult, bm = p->b_mult;
    const int64_t round = (int64_t)1 << (shift - 1);
    for (int32_t i = 0; i < n; i++) {
        const int64_t acc = (int64_t)(a[i] + ao) * am + (int64_t)(b[i] + bo) * bm;
        int64_t v = ((acc + round) >> shift) + zo;
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        out[i] = (int8_t)v;
    }
    return EK_NN_OK;
}

int ek_add_s8(const ek_add_params_t *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    if (p->n < 0 || p->shift < 1 || p->shift > 62 || p->rows < 1) {
        return EK_NN_ERR_ARG;
    }
    const int32_t rows = p->rows, as = p->a_row_stride, bs = p->b_row_stride, os = p->out_row_stride;
    for (int32_t r = 0; r < rows; r++, a += as, b += bs, out += os) {
        (void)ek__add_s8_row(p, a, b, out);
    }
    return EK_NN_OK;
}

/* ===============================================================================================================
 * Pooling
 * ============================================================================================================= */

/* The contract's average requantization: the high word of acc * mult (floored) rounded right by shift - 32 when
 * shift >= 32 (exact: floor((floor(X / 2^32) + 2^(b-1)) / 2^b) = floor((X + 2^(31+b)) / 2^(32+b))), else 64-bit. */
static inline int32_t ek__pool_rq(int32_t acc, int32_t mult, int32_t shift, int32_t zo)
{
    int32_t v;
    if (shift > 32) {
        const int32_t hi = (int32_t)(((int64_t)acc * mult) >> 32), b = shift - 32;
        v = (hi + ((int32_t)1 << (b - 1))) >> b;
    } else {
        v = (int32_t)((((int64_t)acc * mult) + ((int64_t)1 << (shift - 1))) >> shift);
    }
    v += zo;
    return v < -128 ? -128 : v > 127 ? 127 : v;
}

/* The part [*lo, *hi) of a window starting at `start` (kernel `k` wide) that lies inside [0, size). */
static inline void ek__pool_span(int32_t start, int32_t k, int32_t size, int32_t *lo, int32_t *hi)
{
    *lo = start < 0 ? 0 : start;
    *hi = start + k > size ? size : start + k;
}

#if EK_NN_DSP
/* Defined at the end of the file (the SIMD pooling loops). */
static void ek__pool_s8_dsp(const ek_pool_params_t *p, const int8_t *input, int8_t *output);
static void ek__gap_s8_dsp(const ek_pool_params_t *p, const int8_t *input, int8_t *output);
#endif

int ek_pool_s8(const ek_pool_params_t *p, const int8_t *input, int8_t *output)
{
    if (p->in_h < 1 || p->in_w < 1 || p->channels < 1 || p->out_h < 1 || p->out_w < 1 || p->kernel_h < 1 ||
        p->kernel_w < 1 || p->stride_h < 1 || p->stride_w < 1 || (p->mode == EK_NN_POOL_AVG &&
        (p->shift < 1 || p->shift > 62))) {
        return EK_NN_ERR_ARG;
    }
#if EK_NN_MVE
    if (p->flags & EK_NN_FLAG_MVE) {
        return ek__mve_pool_s8(p, input, output);
    }
#endif
    const int32_t c_all = p->channels, row = p->in_w * c_all, zp = -p->input_offset;
    const int32_t mult = p->mult, shift = p->shift, zo = p->output_offset, avg = p->mode == EK_NN_POOL_AVG;
#if EK_NN_DSP
    /* 4 channels per word: max with SSUB8 + SEL (the GE flags pick the larger byte of each lane), sums with
     * SXTAB16 into int16 pairs started at the zero-point offset (exact while taps * (128 + |zp|) < 2^15),
     * requantized with SMLAWB/SMLAWT where 17 <= shift <= 38 (see ek__pool_s8_dsp). */
    if ((c_all & 3) == 0 && (!avg || (p->kernel_h * p->kernel_w * (128 + (zp < 0 ? -zp : zp)) < 32768 &&
                                      shift >= 17 && shift <= 38))) {
        ek__pool_s8_dsp(p, input, output);
        return EK_NN_OK;
    }
    /* a global average pool over more pixels than int16 sums hold: chunks of int16 sums widened to int32 (both
     * functions out of line, so that each loop has the registers to itself: max 3x3 13.46 per output, 13.76 with
     * both inlined) */
    if (!EK_NN_NO_GAP && avg && (c_all & 7) == 0 && p->out_h == 1 && p->out_w == 1 && p->kernel_h == p->in_h &&
        p->kernel_w == p->in_w && p->pad_top == 0 && p->pad_left == 0) {
        ek__gap_s8_dsp(p, input, output);
        return EK_NN_OK;
    }
#endif
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        int32_t y0, y1, x0, x1;
        ek__pool_span(oy * p->stride_h - p->pad_top, p->kernel_h, p->in_h, &y0, &y1);
        for (int32_t ox = 0; ox < p->out_w; ox++, output += c_all) {
            ek__pool_span(ox * p->stride_w - p->pad_left, p->kernel_w, p->in_w, &x0, &x1);
            const int32_t taps = (y1 - y0) * (x1 - x0);
            for (int32_t c = 0; c < c_all; c++) {
                const int8_t *src = input + y0 * row + x0 * c_all + c;
                int32_t acc = avg ? -taps * zp : -128;
                for (int32_t y = y0; y < y1; y++, src += row) {
                    const int8_t *s = src;
                    for (int32_t x = x0; x < x1; x++, s += c_all) {
                        if (avg) {
                            acc += *s;
                        } else if (*s > acc) {
                            acc = *s;
                        }
                    }
                }
                output[c] = (int8_t)(avg ? ek__pool_rq(acc, mult, shift, zo) : acc);
            }
        }
    }
    return EK_NN_OK;
}

/* ===============================================================================================================
 * Elementwise add, DSP path (EK_NN_FLAG_ADD_PAIRS; kernel_pack.pack_add proves the bounds it relies on)
 *
 * The multipliers split at 2^16 into signed halves, a_mult = ah * 2^16 + al with al in [-2^15, 2^15) and
 * ah <= 2^15 - 1 (the same for b), so (a, b) as one int16 pair word gives both partial sums with one SMLAD each:
 * H = a*ah + b*bh + hc, L = a*al + b*bl + lc (hc, lc fold in the zero points). With rs = shift - 16 >= 1,
 * floor((sum + 2^(shift-1)) / 2^shift) = (H0 + (L0 >> 16) + 2^(rs-1)) >> rs exactly (2^(shift-1) is a multiple of
 * 2^16 and nested floors of powers of two compose), so the rounding and the output zero point (zo * 2^rs) go into hc
 * too. The pairs: PKHBT/PKHTB of the two words give (a0 a1 b0 b1) and (a2 a3 b2 b3), whose SXTB16 (ROR 0 / 8) are
 * the four (a_i, b_i) pairs. Per 4 elements: 2 LDR, 2 PKH, 4 SXTB16, 8 SMLAD, 4 ADD, 4 ASR, 4 SSAT, 3 BFI, STR and
 * the loop = 34 instructions (8.5 per element); with an activation clamp, LDRD + 2 SSUB8/SEL more.
 * ============================================================================================================= */
#if EK_NN_DSP
typedef struct {
    const int8_t *a, *b;
    int8_t *out;
    int32_t turns;                     /* groups of 4 elements, >= 1 */
    uint32_t mh, ml;                   /* (ah, bh), (al, bl) as int16 pairs */
    int32_t hc, lc, rs;
    uint32_t lo4, hi4;                 /* the clamp in every byte (clamping loop only) */
} ek__add4_args_t;
void ek__add4(const ek__add4_args_t *args);
void ek__add4_clamp(const ek__add4_args_t *args);
/* The loop head of ek__add4 / ek__add4s: 4 elements of a and b (r0, r1) as the (a_i, b_i) int16 pairs lr, r10, r11,
 * r9 (label 1). */
#define EK__ADD4_PAIRS \
    "1: ldr     r9, [r0], #4\n" \
    "   ldr     r11, [r1], #4\n" \
    "   pkhbt   r10, r9, r11, lsl #16\n"  /* a0 a1 b0 b1 */ \
    "   pkhtb   r9, r11, r9, asr #16\n"   /* a2 a3 b2 b3 */ \
    "   sxtb16  lr, r10\n"                /* (a0, b0) */ \
    "   sxtb16  r10, r10, ror #8\n"       /* (a1, b1) */ \
    "   sxtb16  r11, r9\n"                /* (a2, b2) */ \
    "   sxtb16  r9, r9, ror #8\n"         /* (a3, b3) */

/* Their tail (inside `.if clamp`): the word lr clamped per byte to [lo, hi] (registers holding the clamp in every
 * byte; t scratch), stored at r2, the loop over r3 turns. */
#define EK__ADD4_STORE(t, lo, hi) \
    "   ssub8   " t ", lr, " lo "\n" \
    "   sel     lr, lr, " lo "\n"         /* max(w, lo) per byte */ \
    "   ssub8   " t ", lr, " hi "\n" \
    "   sel     lr, " hi ", lr\n"         /* min(w, hi) per byte */ \
    "   .endif\n" \
    "   str     lr, [r2], #4\n" \
    "   subs    r3, r3, #1\n" \
    "   bne     1b\n"

/* r0 a, r1 b, r2 out, r3 turns, r4 mh, r5 ml, r6 hc, r7 lc, r8 rs; r9-r12, lr scratch (lo4/hi4 on the stack). */
__asm__(
    "   .syntax unified\n"
    "   .macro ek__add4_body name, clamp\n"
    "   EK_FUNC \\name\n"
    "   push    {r4-r11, lr}\n"
    "   ldrd    r9, r10, [r0, #36]\n"
    "   push    {r9, r10}\n"
    "   ldm     r0, {r0-r8}\n"
    EK__ADD4_PAIRS
    "   smlad   r12, lr, r4, r6\n"
    "   smlad   lr, lr, r5, r7\n"
    "   add     r12, r12, lr, asr #16\n"
    "   asr     r12, r12, r8\n"
    "   ssat    lr, #8, r12\n"
    "   smlad   r12, r10, r4, r6\n"
    "   smlad   r10, r10, r5, r7\n"
    "   add     r12, r12, r10, asr #16\n"
    "   asr     r12, r12, r8\n"
    "   ssat    r12, #8, r12\n"
    "   bfi     lr, r12, #8, #8\n"
    "   smlad   r12, r11, r4, r6\n"
    "   smlad   r11, r11, r5, r7\n"
    "   add     r12, r12, r11, asr #16\n"
    "   asr     r12, r12, r8\n"
    "   ssat    r12, #8, r12\n"
    "   bfi     lr, r12, #16, #8\n"
    "   smlad   r12, r9, r4, r6\n"
    "   smlad   r9, r9, r5, r7\n"
    "   add     r12, r12, r9, asr #16\n"
    "   asr     r12, r12, r8\n"
    "   ssat    r12, #8, r12\n"
    "   bfi     lr, r12, #24, #8\n"
    "   .if \\clamp\n"
    "   ldrd    r9, r10, [sp]\n"
    EK__ADD4_STORE("r11", "r9", "r10")
    "   add     sp, sp, #8\n"
    "   pop     {r4-r11, pc}\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
    "   ek__add4_body ek__add4, 0\n"
    "   ek__add4_body ek__add4_clamp, 1\n"
    "   .purgem ek__add4_body\n");

/* Multipliers whose low 16 bits are zero (edgekit/qgraph.py's adds keep 15 significant bits, far below what int8
 * outputs resolve) have L = 0: one SMLAD an element. Per 4 elements: 2 LDR, 2 PKH, 4 SXTB16, 4 SMLAD, 4 ASR, 4 SSAT,
 * 3 BFI, STR and the loop = 26 instructions (6.5 per element); the clamp keeps its bytes in r5 and r7 (4 more).
 * r0 a, r1 b, r2 out, r3 turns, r4 mh, r5 lo4, r6 hc, r7 hi4, r8 rs; r9-r12, lr scratch. */
void ek__add4s(const ek__add4_args_t *args);
void ek__add4s_clamp(const ek__add4_args_t *args);
__asm__(
    "   .syntax unified\n"
    "   .macro ek__add4s_body name, clamp\n"
    "   EK_FUNC \\name\n"
    "   push    {r4-r11, lr}\n"
    "   ldrd    r9, r10, [r0, #36]\n"
    "   ldm     r0, {r0-r8}\n"
    "   mov     r5, r9\n"                 /* lo4 */
    "   mov     r7, r10\n"                /* hi4 */
    EK__ADD4_PAIRS
    "   smlad   lr, lr, r4, r6\n"
    "   smlad   r10, r10, r4, r6\n"
    "   smlad   r11, r11, r4, r6\n"
    "   smlad   r9, r9, r4, r6\n"
    "   asr     lr, lr, r8\n"
    "   asr     r10, r10, r8\n"
    "   asr     r11, r11, r8\n"
    "   asr     r9, r9, r8\n"
    "   ssat    lr, #8, lr\n"
    "   ssat    r10, #8, r10\n"
    "   ssat    r11, #8, r11\n"
    "   ssat    r9, #8, r9\n"
    "   bfi     lr, r10, #8, #8\n"
    "   bfi     lr, r11, #16, #8\n"
    "   bfi     lr, r9, #24, #8\n"
    "   .if \\clamp\n"
    EK__ADD4_STORE("r10", "r5", "r7")
    "   pop     {r4-r11, pc}\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
    "   ek__add4s_body ek__add4s, 0\n"
    "   ek__add4s_body ek__add4s_clamp, 1\n"
    "   .purgem ek__add4s_body\n");

static int32_t ek__add_s8_pairs(const ek_add_params_t *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    ek__add4_args_t g;
    const int32_t rs = p->shift - 16;
    const int32_t ah = (p->a_mult + 0x8000) >> 16, bh = (p->b_mult + 0x8000) >> 16;
    const int32_t al = p->a_mult - ah * 65536, bl = p->b_mult - bh * 65536;
    g.a = a;
    g.b = b;
    g.out = out;
    g.turns = p->n >> 2;
    g.mh = ek__pack16(ah, bh);
    g.ml = ek__pack16(al, bl);
    g.hc = p->a_offset * ah + p->b_offset * bh + ((int32_t)1 << (rs - 1)) + p->out_offset * ((int32_t)1 << rs);
    g.lc = p->a_offset * al + p->b_offset * bl;
    g.rs = rs;
    g.lo4 = ek__bytes4(p->act_min);
    g.hi4 = ek__bytes4(p->act_max);
    const int clamp = p->act_min > -128 || p->act_max < 127;
    /* (a loop the firmware left out: 0 elements done here, the C loop does them all) */
    void (*const fn)(const ek__add4_args_t *) =
        al == 0 && bl == 0 ? (clamp ? (EK_NN_NO_ADD4S_CLAMP ? 0 : ek__add4s_clamp) : (EK_NN_NO_ADD4S ? 0 : ek__add4s))
                           : (clamp ? (EK_NN_NO_ADD4_CLAMP ? 0 : ek__add4_clamp) : (EK_NN_NO_ADD4 ? 0 : ek__add4));
    if (g.turns <= 0 || !fn) {
        return 0;
    }
    fn(&g); /* short multipliers (their low 16 bits 0): one SMLAD an element (ek__add4s), else two */
    return g.turns * 4;
}
#endif

/* ===============================================================================================================
 * Table lookup (an int8 -> int8 unary layer: hardswish, sigmoid, tanh, a lone ReLU, a requantization)
 *
 * The table is indexed by the input byte read as unsigned (kernel_pack.pack_lut rotates the reference's table,
 * which is indexed by x + 128), so a byte load gives the index with no arithmetic. Per 4 elements: one word load,
 * 4 byte extractions, 4 table loads, 3 ORR and one word store; the table is the host reference's own, so the
 * output is bit-exact by construction. Works in place (each word is read before it is written).
 * ============================================================================================================= */
static void ek__lut_run(const uint8_t *t, const uint8_t *in, int8_t *out, int32_t n)
{
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint32_t w = ek__read_u32(in + i);
        const uint32_t v = (uint32_t)t[w & 0xFFu] | ((uint32_t)t[(w >> 8) & 0xFFu] << 8) |
                           ((uint32_t)t[(w >> 16) & 0xFFu] << 16) | ((uint32_t)t[w >> 24] << 24);
        memcpy(out + i, &v, 4);
    }
    for (; i < n; i++) {
        out[i] = (int8_t)t[in[i]];
    }
}

/* (a * b) >> 32 (floor): SMMUL. */
static inline int32_t ek__mulhi(int32_t a, int32_t b)
{
#if EK_NN_DSP
    int32_t r;
    __asm__("smmul %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (int32_t)(((int64_t)a * b) >> 32);
#endif
}

/* (a * b + 2^31) >> 32: SMMULR. */
static inline int32_t ek__mulhi_round(int32_t a, int32_t b)
{
#if EK_NN_DSP
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (int32_t)(((int64_t)a * b + 0x80000000LL) >> 32);
#endif
}

/* One channel's column of a gated product: dst[i C] = clamp((SMMUL(src[i C] * f + fc, mult) + c2) >> rs). Apart so
 * that its loop keeps every value in a register (inlined into ek_mul_s8 it spilled: 20 instructions an element). */
static void __attribute__((noinline)) ek__mul_column(const int8_t *src, int8_t *dst, const int8_t *end, int32_t C,
                                                     int32_t f, int32_t fc, int32_t mult, int32_t c2, int32_t rs,
                                                     int32_t lo, int32_t hi)
{
#if EK_NN_DSP
    if (lo == -128 && hi == 127) { /* the clamp is all of int8: SSAT */
        for (; src < end; src += C, dst += C) {
            *dst = (int8_t)__ssat((ek__mulhi(*src * f + fc, mult) + c2) >> rs, 8);
        }
        return;
    }
#endif
    for (; src < end; src += C, dst += C) {
        int32_t v = (ek__mulhi(*src * f + fc, mult) + c2) >> rs;
        v = v < lo ? lo : v;
        *dst = (int8_t)(v > hi ? hi : v);
    }
}

#if EK_NN_DSP
/* Four channels of a gated product a pixel at a time (a word of the map, whose rows are C bytes apart): the pairs
 * (x0 + ao, x2 + ao) and (x1 + ao, x3 + ao) by two SXTAB16, each channel's (x + ao) * (g + g_off) by one SMULxy of
 * them with the gate pairs, then (shift above 32) SMMLA by the multiplier into the rounding term and >> rs, or
 * (shift 17..32) << k and SMMLAR into the output zero point, SSAT, and the bytes into one word by BFI: 26
 * instructions for 4 elements (ek__mul_column: ~11 an element). |x + ao|, |g + g_off| <= 255 fit the halves, and
 * their product << k stays below 2^31 (as ek_mul_s8 says). Full int8 clamp only. */
typedef struct {
    const int8_t *src;   /* 0: the map at the first of the 4 channels */
    int32_t d;           /* 4: output - input, bytes */
    int32_t rows;        /* 8: pixels, >= 1 */
    int32_t C;           /* 12: bytes from one pixel to the next */
    uint32_t ao2;        /* 16: the input offset in both halves */
    int32_t mult;        /* 20 */
    int32_t c2;          /* 24: rounding term + zo << rs (SMMLA form), or zo (SMMLAR form) */
    int32_t sh;          /* 28: rs (SMMLA form) or k (SMMLAR form) */
    uint32_t g02, g13;   /* 32, 36: (g0 + g_off, g2 + g_off), (g1 + g_off, g3 + g_off) as int16 pairs */
} ek__mul4_args_t;
void ek__mul_gate4_rs(const ek__mul4_args_t *a);
void ek__mul_gate4_k(const ek__mul4_args_t *a);
__asm__(
    "   .syntax unified\n"
    "   .macro EK_MUL4_CH prod, x, g, pos, rs\n"   /* one channel into lr (pos 0: lr = it, else BFI at pos) */
    "   \\prod r12, \\x, \\g\n"
    "   .if \\rs\n"
    "   smmla   r12, r12, r5, r6\n"
    "   asr     r12, r12, r7\n"
    "   .else\n"
    "   lsl     r12, r12, r7\n"
    "   smmlar  r12, r12, r5, r6\n"
    "   .endif\n"
    "   .if \\pos == 0\n"
    "   ssat    lr, #8, r12\n"
    "   .else\n"
    "   ssat    r12, #8, r12\n"
    "   bfi     lr, r12, #\\pos, #8\n"
    "   .endif\n"
    "   .endm\n"
    "   .macro EK_MUL4_FUNC name, rs\n"
    "   EK_FUNC \\name\n"
    "   push    {r4-r11, lr}\n"
    "   ldm     r0, {r0-r9}\n"
    "1: ldr     r10, [r0]\n"
    "   sxtab16 r11, r4, r10\n"
    "   sxtab16 r10, r4, r10, ror #8\n"
    "   EK_MUL4_CH smulbb, r11, r8, 0, \\rs\n"
    "   EK_MUL4_CH smulbb, r10, r9, 8, \\rs\n"
    "   EK_MUL4_CH smultt, r11, r8, 16, \\rs\n"
    "   EK_MUL4_CH smultt, r10, r9, 24, \\rs\n"
    "   str     lr, [r0, r1]\n"
    "   add     r0, r0, r3\n"
    "   subs    r2, r2, #1\n"
    "   bne     1b\n"
    "   pop     {r4-r11, pc}\n"
    "   .size \\name, . - \\name\n"
    "   .popsection\n"
    "   .endm\n"
    "   EK_MUL4_FUNC ek__mul_gate4_rs, 1\n"
    "   EK_MUL4_FUNC ek__mul_gate4_k, 0\n");
#endif

/* Elementwise product. |acc| <= 255 * 255 < 2^16, so for 17 <= shift <= 32 the rounded shift is one SMMULR of
 * acc * 2^(32 - shift) (< 2^31) and mult: floor((acc * mult * 2^(32-shift) + 2^31) / 2^32) = floor((acc * mult +
 * 2^(shift-1)) / 2^shift), exactly; with a per-channel gate 2^(32 - shift) * (b - b_zp) is one factor per channel and
 * the input offset folds into a constant: acc' = a * f + a_offset * f (one MLA). Above 32 the high word (SMMUL)
 * then a rounded shift (floor((floor(X / 2^32) + 2^(r-1)) / 2^r) = floor((X + 2^(31+r)) / 2^(32+r))); below 17 on
 * 64 bits. */
int ek_mul_s8(const ek_mul_params_t *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    if (p->rows < 0 || p->channels < 1 || p->shift < 1 || p->shift > 62) {
        return EK_NN_ERR_ARG;
    }
    const int32_t rows = p->rows, C = p->channels, ao = p->a_offset, bo = p->b_offset, zo = p->out_offset;
    const int32_t lo = p->act_min, hi = p->act_max, mult = p->mult, shift = p->shift;
#if EK_NN_DSP
    /* a gate per channel over all of int8: four channels a word (ek__mul_gate4), the last 1-3 as below */
    const int32_t c4 = p->b_per_channel && lo == -128 && hi == 127 && rows > 0 && shift >= 17 &&
                       (shift <= 32 || shift - 32 <= 22) ? C & ~3 : 0;
    for (int32_t c = 0; c < c4; c += 4) {
        const int32_t rs = shift - 32;
        const ek__mul4_args_t args = {a + c, (int32_t)(out - a), rows, C, ek__pack16(ao, ao), mult,
                                      rs > 0 ? ((int32_t)1 << (rs - 1)) + zo * (1 << rs) : zo, rs > 0 ? rs : -rs,
                                      ek__pack16(b[c] + bo, b[c + 2] + bo), ek__pack16(b[c + 1] + bo, b[c + 3] + bo)};
        if (rs > 0) {
            ek__mul_gate4_rs(&args);
        } else {
            ek__mul_gate4_k(&args);
        }
    }
#else
    const int32_t c4 = 0;
#endif
    if (shift >= 17 && shift <= 32) {
        const int32_t k = 32 - shift;
        if (p->b_per_channel) { /* channel by channel: the gate's factor once, the map's column with stride C */
            for (int32_t c = c4; c < C; c++) {
                const int32_t f = (b[c] + bo) * (1 << k), fc = ao * f;
                const int8_t *src = a + c;
                int8_t *dst = out + c;
                for (int32_t r = 0; r < rows; r++, src += C, dst += C) {
                    int32_t v = ek__mulhi_round(*src * f + fc, mult) + zo;
                    v = v < lo ? lo : v;
                    *dst = (int8_t)(v > hi ? hi : v);
                }
            }
            return EK_NN_OK;
        }
        const int32_t n = rows * C;
        for (int32_t i = 0; i < n; i++) {
            int32_t v = ek__mulhi_round(((a[i] + ao) * (b[i] + bo)) * (1 << k), mult) + zo;
            v = v < lo ? lo : v;
            out[i] = (int8_t)(v > hi ? hi : v);
        }
        return EK_NN_OK;
    }
    if (shift > 32) {
        const int32_t rs = shift - 32, round = (int32_t)1 << (rs - 1);
        if (p->b_per_channel && rs <= 22) { /* zo folded into the rounding: (x + round + zo * 2^rs) >> rs */
            const int32_t c2 = round + zo * (1 << rs);
            for (int32_t c = c4; c < C; c++) {
                const int32_t f = b[c] + bo;
                ek__mul_column(a + c, out + c, a + c + rows * C, C, f, ao * f, mult, c2, rs, lo, hi);
            }
            return EK_NN_OK;
        }
        const int32_t n = rows * C;
        for (int32_t i = 0; i < n; i++) {
            int32_t v = ((ek__mulhi((a[i] + ao) * (b[i] + bo), mult) + round) >> rs) + zo;
            v = v < lo ? lo : v;
            out[i] = (int8_t)(v > hi ? hi : v);
        }
        return EK_NN_OK;
    }
    const int32_t bstep = p->b_per_channel ? 0 : C;  /* shift < 17: on 64 bits */
    const int64_t round = (int64_t)1 << (shift - 1);
    for (int32_t r = 0; r < rows; r++, a += C, b += bstep, out += C) {
        for (int32_t c = 0; c < C; c++) {
            int64_t v = (((int64_t)((a[c] + ao) * (b[c] + bo)) * mult + round) >> shift) + zo;
            v = v < lo ? lo : v;
            out[c] = (int8_t)(v > hi ? hi : v);
        }
    }
    return EK_NN_OK;
}

int ek_lut_s8(const ek_lut_params_t *p, const int8_t *input, int8_t *output)
{
    if (p->n < 0 || !p->table) {
        return EK_NN_ERR_ARG;
    }
    ek__lut_run((const uint8_t *)p->table, (const uint8_t *)input, output, p->n);
    return EK_NN_OK;
}

/* output sample o of an axis of `size` samples upsampled by s: source indices lo, hi (clamped) and hi's weight (of 2s) */
static inline int32_t ek__bilinear_tap(int32_t o, int32_t s, int32_t size, int32_t *lo, int32_t *hi)
{
    const int32_t f = 2 * (o % s) + 1 - s;
    const int32_t l = o / s - (f < 0 ? 1 : 0);
    *lo = l < 0 ? 0 : l;
    *hi = l + 1 > size - 1 ? size - 1 : l + 1;
    return f < 0 ? 2 * s + f : f;
}

int ek_bilinear_s8(const ek_bilinear_params_t *p, const int8_t *input, int8_t *output)
{
    const int32_t H = p->in_h, W = p->in_w, C = p->channels, sh = p->scale_h, sw = p->scale_w;
    if (H < 1 || W < 1 || C < 1 || sh < 1 || sw < 1) {
        return EK_NN_ERR_ARG;
    }
    const int32_t d = 4 * sh * sw, row = W * C;
    const int32_t bias = 128 * d + d / 2; /* the sum made non-negative: division truncates = floors */
    int32_t shift = -1;                   /* d a power of two (factors 1, 2, 4, ...): a shift */
    if ((d & (d - 1)) == 0) {
        shift = 0;
        while ((1 << shift) < d) {
            shift++;
        }
    }
    for (int32_t y = 0; y < H * sh; y++) {
        int32_t r0, r1;
        const int32_t a1 = ek__bilinear_tap(y, sh, H, &r0, &r1), a0 = 2 * sh - a1;
        const int8_t *top = input + r0 * row, *bottom = input + r1 * row;
        for (int32_t x = 0; x < W * sw; x++) {
            int32_t c0, c1;
            const int32_t b1 = ek__bilinear_tap(x, sw, W, &c0, &c1), b0 = 2 * sw - b1;
            const int32_t w00 = a0 * b0, w01 = a0 * b1, w10 = a1 * b0, w11 = a1 * b1;
            const int8_t *p00 = top + c0 * C, *p01 = top + c1 * C, *p10 = bottom + c0 * C, *p11 = bottom + c1 * C;
            if (shift >= 0) {
                for (int32_t c = 0; c < C; c++) {
                    const int32_t acc = w00 * p00[c] + w01 * p01[c] + w10 * p10[c] + w11 * p11[c] + bias;
                    output[c] = (int8_t)((acc >> shift) - 128);
                }
            } else {
                for (int32_t c = 0; c < C; c++) {
                    const int32_t acc = w00 * p00[c] + w01 * p01[c] + w10 * p10[c] + w11 * p11[c] + bias;
                    output[c] = (int8_t)(acc / d - 128);
                }
            }
            output += C;
        }
    }
    return EK_NN_OK;
}

int ek_lut_channels_s8(const ek_lut_channels_params_t *p, const int8_t *input, int8_t *output)
{
    const int32_t pixels = p->pixels, channels = p->channels;
    if (pixels < 0 || channels < 1 || !p->tables) {
        return EK_NN_ERR_ARG;
    }
    const uint8_t *in = (const uint8_t *)input;
    uint8_t *out = (uint8_t *)output;
    const uint8_t *tables = (const uint8_t *)p->tables;
    for (int32_t i = 0; i < pixels; i++) {
        const uint8_t *t = tables;
        int32_t c = 0;
        for (; c + 4 <= channels; c += 4, t += 1024, in += 4, out += 4) { /* 4 channels: loads before stores */
            const uint8_t a = t[in[0]], b = t[256 + in[1]], d = t[512 + in[2]], e = t[768 + in[3]];
            out[0] = a;
            out[1] = b;
            out[2] = d;
            out[3] = e;
        }
        for (; c < channels; c++, t += 256) {
            *out++ = t[*in++];
        }
    }
    return EK_NN_OK;
}

/* ===============================================================================================================
 * Pooling, DSP path: 4 channels a word (ek_pool_s8 sends layers with channels in fours here)
 *
 * Max: SSUB8 + SEL per tap and word (the GE flags pick the larger byte of each lane); windows fully inside the map
 * of 2x2 and 3x3 run an asm loop over the words (LDR per tap, no spills). Average: SXTAB16 sums into int16 pairs started at the window's
 * zero-point offset -taps * in_zp (exact while taps * (128 + |in_zp|) < 2^15), two words (8 channels) per tap when
 * the window's rows are whole map rows (a global pool: the taps are evenly spaced); requantization per output is
 * SMLAWB/SMLAWT + ASR + SSAT (an average comes here only when 17 <= shift <= 38, so K stays inside int32):
 * floor((floor(acc*mult / 2^16) + K) / 2^(shift-16)) with K = 2^(shift-17) + out_zp * 2^(shift-16) is the
 * contract's rounding, zero point included (nested floors of powers of two compose).
 * ============================================================================================================= */
#if EK_NN_DSP
static inline uint32_t ek__max4(uint32_t m, uint32_t v)
{
    uint32_t t;  /* GE[i] = v[i] >= m[i], then each lane from v where set, else m */
    __asm__("ssub8 %0, %1, %2\n\tsel %0, %1, %2" : "=&r"(t) : "r"(v), "r"(m) : "cc");
    return t;
}

static inline int32_t ek__smlawb(int32_t m, uint32_t x, int32_t k) { return __smlawb(m, (int32_t)x, k); }
static inline int32_t ek__smlawt(int32_t m, uint32_t x, int32_t k) { return __smlawt(m, (int32_t)x, k); }

/* the low byte of v into w at bit `pos` */
#define EK__BFI8(w, v, pos) __asm__("bfi %0, %1, #" #pos ", #8" : "+r"(w) : "r"(v))

/* 4 outputs from the int16 pair sums (c0, c2) and (c1, c3) */
static inline __attribute__((always_inline)) uint32_t ek__pool_avg4(uint32_t a02, uint32_t a13, int32_t mult,
                                                                    int32_t k, int32_t rs)
{
    uint32_t w = (uint32_t)__ssat(ek__smlawb(mult, a02, k) >> rs, 8);
    const uint32_t v1 = (uint32_t)__ssat(ek__smlawb(mult, a13, k) >> rs, 8);
    const uint32_t v2 = (uint32_t)__ssat(ek__smlawt(mult, a02, k) >> rs, 8);
    const uint32_t v3 = (uint32_t)__ssat(ek__smlawt(mult, a13, k) >> rs, 8);
    EK__BFI8(w, v1, 8);
    EK__BFI8(w, v2, 16);
    EK__BFI8(w, v3, 24);
    return w;
}

/* acc[0..3] += the int16 pair sums of 8 channels over `taps` >= 1 taps `step` bytes apart (LDR, LDR, 4 SXTAB16,
 * ADD, SUBS, BNE per tap: ~1.1 instructions per input byte) */
static inline void ek__pool_sum8(const int8_t *s, int32_t step, int32_t taps, uint32_t acc[4])
{
    uint32_t a02 = acc[0], a13 = acc[1], b02 = acc[2], b13 = acc[3], t0, t1;
    __asm__("1: ldr     %[t0], [%[s]]\n\t"
            "ldr     %[t1], [%[s], #4]\n\t"
            "add     %[s], %[s], %[step]\n\t"
            "sxtab16 %[a02], %[a02], %[t0]\n\t"
            "sxtab16 %[a13], %[a13], %[t0], ror #8\n\t"
            "sxtab16 %[b02], %[b02], %[t1]\n\t"
            "sxtab16 %[b13], %[b13], %[t1], ror #8\n\t"
            "subs    %[n], %[n], #1\n\t"
            "bne     1b"
            : [a02] "+r"(a02), [a13] "+r"(a13), [b02] "+r"(b02), [b13] "+r"(b13), [s] "+r"(s), [n] "+r"(taps),
              [t0] "=&r"(t0), [t1] "=&r"(t1)
            : [step] "r"(step)
            : "cc", "memory");
    acc[0] = a02;
    acc[1] = a13;
    acc[2] = b02;
    acc[3] = b13;
}

/* The max over 2x2 (3x3) windows, a run of `pixels` windows of one output row: per window `groups` >= 1 words of 4
 * channels, 4 (9) LDR, SSUB8 and SEL per tap after the first (the GE flags pick the larger byte of each lane), the
 * store and the loop; then the next window, `skip` bytes on. A window's taps are its top-left pixel plus the column
 * offsets {0, co1, co2} and row offsets {0, ro1, ro2}: c, 2c and row, 2 row inside the map; a window that the map's
 * edge cuts repeats a tap inside instead of the ones outside (0 or c, row), which leaves the max as it is (padding
 * never wins), so the borders run the same loop, a call each. (A call per window and a C loop at the borders before:
 * max 3x3 s2 pad 1 over 18x18x16 13.5 instructions an output, 2x2 s2 6.9.) */
typedef struct {
    const int8_t *src; /* 0: the first window's top-left tap (inside the map), channel 0 */
    int32_t co1, co2;  /* 4, 8: bytes from the first column's tap to the second's and third's (co2: 3x3 only) */
    int32_t ro1, ro2;  /* 12, 16: from the first row's to the second's and third's */
    int8_t *out;       /* 20: the first window's output (its windows' outputs follow each other) */
    int32_t groups;    /* 24: channels / 4 */
    int32_t pixels;    /* 28: windows, >= 1 */
    int32_t skip;      /* 32: from past a window's last group to the next window's first tap */
} ek__maxrow_args_t;
void ek__max2x2_row(const ek__maxrow_args_t *a);
void ek__max3x3_row(const ek__maxrow_args_t *a);
/* r0 src, r1 co1, r2 co2, r3 ro1, r4 ro2, r5 out, r6 groups, r7 pixels, r8 skip, r9 the max, r10 a tap, r11 the
 * row's taps, r12 groups left, lr SSUB8's (unused) result. */
#define EK__MAXTAP(ld) ld "\n   ssub8   lr, r10, r9\n   sel     r9, r10, r9\n"
/* a window's store and the loops over its groups and the run's windows, the return */
#define EK__MAXROW_END(name) \
    "   str     r9, [r5], #4\n" \
    "   adds    r0, r0, #4\n" \
    "   subs    r12, r12, #1\n" \
    "   bne     1b\n" \
    "   add     r0, r0, r8\n" \
    "   subs    r7, r7, #1\n" \
    "   bne     2b\n" \
    "   pop     {r4-r11, pc}\n" \
    "   .size " name ", . - " name "\n" \
    "   .popsection\n"
__asm__(
    "   .syntax unified\n"
    "   EK_FUNC ek__max2x2_row\n"
    "   push    {r4-r11, lr}\n"
    "   ldm     r0, {r0-r8}\n"
    "2: mov     r12, r6\n"
    "1: add     r11, r0, r3\n"
    "   ldr     r9, [r0]\n"
    EK__MAXTAP("   ldr     r10, [r0, r1]")
    EK__MAXTAP("   ldr     r10, [r11]")
    EK__MAXTAP("   ldr     r10, [r11, r1]")
    EK__MAXROW_END("ek__max2x2_row")
    "   EK_FUNC ek__max3x3_row\n"
    "   push    {r4-r11, lr}\n"
    "   ldm     r0, {r0-r8}\n"
    "2: mov     r12, r6\n"
    "1: ldr     r9, [r0]\n"
    EK__MAXTAP("   ldr     r10, [r0, r1]")
    EK__MAXTAP("   ldr     r10, [r0, r2]")
    "   add     r11, r0, r3\n"
    EK__MAXTAP("   ldr     r10, [r11]")
    EK__MAXTAP("   ldr     r10, [r11, r1]")
    EK__MAXTAP("   ldr     r10, [r11, r2]")
    "   add     r11, r0, r4\n"
    EK__MAXTAP("   ldr     r10, [r11]")
    EK__MAXTAP("   ldr     r10, [r11, r1]")
    EK__MAXTAP("   ldr     r10, [r11, r2]")
    EK__MAXROW_END("ek__max3x3_row"));
#undef EK__MAXTAP
#undef EK__MAXROW_END

/* A global average pool over any number of pixels (the path below sums in int16 pairs from the zero-point offset,
 * at most 32767 / (128 + |zp|) taps): raw int8 sums in int16 pairs over chunks of EK__GAP_CHUNK pixels (|sum| <=
 * 255 * 128 < 2^15, ek__pool_sum8: ~1.1 instructions a byte), widened to int32 after each chunk; the zero point and
 * the contract's requantization (ek__pool_rq) per channel at the end. 8 channels a turn. */
#define EK__GAP_CHUNK 255
static __attribute__((noinline)) void ek__gap_s8_dsp(const ek_pool_params_t *p, const int8_t *input,
                                                    int8_t *output)
{
    const int32_t c_all = p->channels, taps = p->in_h * p->in_w;
    const int32_t off = taps * p->input_offset; /* every tap less the zero point */
    for (int32_t c = 0; c < c_all; c += 8) {
        int32_t s[8] = {off, off, off, off, off, off, off, off};
        for (int32_t t0 = 0; t0 < taps; t0 += EK__GAP_CHUNK) {
            const int32_t n = taps - t0 < EK__GAP_CHUNK ? taps - t0 : EK__GAP_CHUNK;
            uint32_t acc[4] = {0, 0, 0, 0}; /* (c0, c2), (c1, c3), (c4, c6), (c5, c7) */
            ek__pool_sum8(input + t0 * c_all + c, c_all, n, acc);
            for (int32_t j = 0; j < 4; j++) { /* acc[j] = channels (ch, ch + 2), ch = 4 (j / 2) + j % 2 */
                const int32_t ch = 4 * (j >> 1) + (j & 1);
                s[ch] += (int16_t)acc[j];
                s[ch + 2] += (int32_t)acc[j] >> 16;
            }
        }
        for (int32_t j = 0; j < 8; j++) {
            output[c + j] = (int8_t)ek__pool_rq(s[j], p->mult, p->shift, p->output_offset);
        }
    }
}

/* Max 2x2 / 3x3 (any stride and padding): each output row's windows inside the map in one call of the row kernel,
 * the ones the map's edge cuts a call each (out of line, so that the average loops keep their registers). */
static __attribute__((noinline)) void ek__maxpool_rows(const ek_pool_params_t *p, const int8_t *input,
                                                      int8_t *output)
{
    const int32_t c_all = p->channels, row = p->in_w * c_all, k = p->kernel_h;
    const int32_t last = (p->in_w - k + p->pad_left) / p->stride_w; /* the last window ending inside the map */
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        int32_t y0, y1, x0, x1;
        ek__pool_span(oy * p->stride_h - p->pad_top, k, p->in_h, &y0, &y1);
        const int32_t ny = y1 - y0;
        for (int32_t ox = 0; ox < p->out_w; ox++, output += c_all) {
            ek__pool_span(ox * p->stride_w - p->pad_left, k, p->in_w, &x0, &x1);
            const int32_t nx = x1 - x0;
            if (nx <= 0 || ny <= 0) { /* no tap inside (padding never wins): the contract's -128 */
                memset(output, 0x80, (size_t)c_all);
                continue;
            }
            int32_t n = 1;
            if (nx == k && ny == k) {
                n = (last < p->out_w - 1 ? last : p->out_w - 1) - ox + 1;
            }
            const ek__maxrow_args_t a = {input + y0 * row + x0 * c_all, nx > 1 ? c_all : 0,
                                         nx > 2 ? 2 * c_all : (nx > 1 ? c_all : 0), ny > 1 ? row : 0,
                                         ny > 2 ? 2 * row : (ny > 1 ? row : 0), output, c_all >> 2, n,
                                         (p->stride_w - 1) * c_all};
            if (k == 2) {
                ek__max2x2_row(&a);
            } else {
                ek__max3x3_row(&a);
            }
            output += (n - 1) * c_all;
            ox += n - 1;
        }
    }
}

/* Max over 2-8 taps of one row (a 1-D max pool: kernel_pack.pack_pool runs a Kx1 window down one column as a 1xK
 * one along a row, the same bytes): 4 channels a word, 2-4 taps straight-line, more in a loop over the taps inside
 * the row (a window the row's ends cut keeps the ones inside; none inside: the contract's -128, as the generic
 * loops). */
static __attribute__((noinline)) void ek__maxpool_1row(const ek_pool_params_t *p, const int8_t *input,
                                                      int8_t *output)
{
    const int32_t c_all = p->channels, k = p->kernel_w, sw = p->stride_w, in_w = p->in_w;
    for (int32_t ox = 0; ox < p->out_w; ox++, output += c_all) {
        int32_t x0, x1;
        ek__pool_span(ox * sw - p->pad_left, k, in_w, &x0, &x1);
        const int32_t n = x1 - x0;
        const int8_t *a = input + x0 * c_all, *end = a + c_all;
        int8_t *o = output;
        if (n == 2) {
            for (; a < end; a += 4, o += 4) {
                const uint32_t m = ek__max4(ek__read_u32(a), ek__read_u32(a + c_all));
                memcpy(o, &m, 4);
            }
        } else if (n == 3) {
            for (; a < end; a += 4, o += 4) {
                const uint32_t m = ek__max4(ek__max4(ek__read_u32(a), ek__read_u32(a + c_all)),
                                            ek__read_u32(a + 2 * c_all));
                memcpy(o, &m, 4);
            }
        } else if (n == 4) {
            for (; a < end; a += 4, o += 4) {
                const uint32_t m = ek__max4(ek__max4(ek__read_u32(a), ek__read_u32(a + c_all)),
                                            ek__max4(ek__read_u32(a + 2 * c_all), ek__read_u32(a + 3 * c_all)));
                memcpy(o, &m, 4);
            }
        } else { /* one tap or more than four: a loop over them; none inside: the contract's -128 */
            for (; a < end; a += 4, o += 4) {
                uint32_t m = 0x80808080u;
                for (const int8_t *t = a; t < a + n * c_all; t += c_all) {
                    m = ek__max4(m, ek__read_u32(t));
                }
                memcpy(o, &m, 4);
            }
        }
    }
}

static __attribute__((noinline)) void ek__pool_s8_dsp(const ek_pool_params_t *p, const int8_t *input,
                                                     int8_t *output)
{
#if !EK_NN_NO_MAXROWS /* (left out when no call is a 2x2 / 3x3 max: pipeline.firmware_cflags) */
    if (p->mode != EK_NN_POOL_AVG && p->kernel_h == p->kernel_w && (p->kernel_h == 2 || p->kernel_h == 3)) {
        ek__maxpool_rows(p, input, output);
        return;
    }
#else
    (void)ek__maxpool_rows;
#endif
#if !EK_NN_NO_MAXROW1 /* (left out when no call is a one-row max: pipeline.firmware_cflags) */
    if (p->mode != EK_NN_POOL_AVG && p->in_h == 1 && p->out_h == 1 && p->kernel_h == 1 && p->pad_top == 0 &&
        p->kernel_w >= 2 && p->kernel_w <= 8) {
        ek__maxpool_1row(p, input, output);
        return;
    }
#else
    (void)ek__maxpool_1row;
#endif
    const int32_t c_all = p->channels, row = p->in_w * c_all, zp = -p->input_offset;
    const int32_t mult = p->mult, shift = p->shift, zo = p->output_offset, avg = p->mode == EK_NN_POOL_AVG;
    const int32_t rs = shift - 16; /* (an average comes here only when 17 <= shift <= 38) */
    const int32_t k = avg ? ((int32_t)1 << (shift - 17)) + zo * ((int32_t)1 << rs) : 0;
    const int32_t kh = p->kernel_h, kw = p->kernel_w;
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        int32_t y0, y1, x0, x1;
        ek__pool_span(oy * p->stride_h - p->pad_top, kh, p->in_h, &y0, &y1);
        for (int32_t ox = 0; ox < p->out_w; ox++, output += c_all) {
            ek__pool_span(ox * p->stride_w - p->pad_left, kw, p->in_w, &x0, &x1);
            const int32_t ny = y1 - y0, nx = x1 - x0, taps = ny * nx;
            const int8_t *base = input + y0 * row + x0 * c_all;
            if (!avg) {
                for (int32_t c = 0; c < c_all; c += 4) {
                    const int8_t *src = base + c;
                    uint32_t m = 0x80808080u;
                    for (int32_t y = 0; y < ny; y++, src += row) {
                        const int8_t *s = src;
                        for (int32_t x = 0; x < nx; x++, s += c_all) {
                            m = ek__max4(m, ek__read_u32(s));
                        }
                    }
                    memcpy(output + c, &m, 4);
                }
                continue;
            }
            const int32_t off = -taps * zp;
            const uint32_t start = ek__pack16(off, off);
            if (nx == p->in_w && (c_all & 7) == 0) { /* whole rows: the taps are c_all apart, 8 channels a turn */
                for (int32_t c = 0; c < c_all; c += 8) {
                    uint32_t acc[4] = {start, start, start, start};
                    ek__pool_sum8(base + c, c_all, taps, acc);
                    const uint32_t w0 = ek__pool_avg4(acc[0], acc[1], mult, k, rs);
                    const uint32_t w1 = ek__pool_avg4(acc[2], acc[3], mult, k, rs);
                    memcpy(output + c, &w0, 4);
                    memcpy(output + c + 4, &w1, 4);
                }
                continue;
            }
            if (ny == 2 && nx == 2) { /* a 2x2 window (or the part of one inside the map): straight-line */
                for (int32_t c = 0; c < c_all; c += 4) {
                    const int8_t *s0 = base + c, *s1 = s0 + row;
                    const uint32_t v0 = ek__read_u32(s0), v1 = ek__read_u32(s0 + c_all);
                    const uint32_t v2 = ek__read_u32(s1), v3 = ek__read_u32(s1 + c_all);
                    uint32_t a02 = ek__sxtab16(ek__sxtab16(start, v0), v1);
                    uint32_t a13 = ek__sxtab16_ror8(ek__sxtab16_ror8(start, v0), v1);
                    a02 = ek__sxtab16(ek__sxtab16(a02, v2), v3);
                    a13 = ek__sxtab16_ror8(ek__sxtab16_ror8(a13, v2), v3);
                    const uint32_t w = ek__pool_avg4(a02, a13, mult, k, rs);
                    memcpy(output + c, &w, 4);
                }
                continue;
            }
            for (int32_t c = 0; c < c_all; c += 4) {
                const int8_t *src = base + c;
                uint32_t a02 = start, a13 = start;
                for (int32_t y = 0; y < ny; y++, src += row) {
                    const int8_t *s = src;
                    for (int32_t x = 0; x < nx; x++, s += c_all) {
                        const uint32_t v = ek__read_u32(s);
                        a02 = ek__sxtab16(a02, v);
                        a13 = ek__sxtab16_ror8(a13, v);
                    }
                }
                const uint32_t w = ek__pool_avg4(a02, a13, mult, k, rs);
                memcpy(output + c, &w, 4);
            }
        }
    }
}
#endif

/* ===============================================================================================================
 * Concatenation along the last axis (NHWC channels), each input requantized to the output's scale
 *
 * A part's requantization is an int8 -> int8 function, so it is a 256-byte table (kernel_pack.pack_concat builds
 * it from the host reference's own arithmetic: bit-exact by construction), or a plain copy where that function is
 * the identity (same scale and zero point). Part by part: each of its rows (pixels) is out_c bytes apart in the
 * output. Copies move a word at a time (LDR + STR), tables look up 4 bytes per word as ek_lut_s8 does.
 * ============================================================================================================= */
/* rows of ``words`` words from contiguous src to dst rows ``dst_words`` apart (both word-aligned): on Thumb-2 4 words
 * a turn by LDM/STM (a row of 2 or 4 words in one), elsewhere a word at a time */
static void ek__copy_rows_w(const ek__word *src, ek__word *dst, int32_t rows, int32_t words, int32_t dst_words)
{
#if defined(__thumb2__)
    /* the common part widths (8 and 16 channels): a row a turn, no inner loop */
    if (words == 2) {
        for (int32_t r = 0; r < rows; r++, dst += dst_words) {
            __asm__ volatile("ldmia %[s]!, {r3, r4}\n\tstmia %[d], {r3, r4}"
                             : [s] "+r"(src) : [d] "r"(dst) : "r3", "r4", "memory");
        }
        return;
    }
    if (words == 4) {
        for (int32_t r = 0; r < rows; r++, dst += dst_words) {
            __asm__ volatile("ldmia %[s]!, {r3, r4, r5, r6}\n\tstmia %[d], {r3, r4, r5, r6}"
                             : [s] "+r"(src) : [d] "r"(dst) : "r3", "r4", "r5", "r6", "memory");
        }
        return;
    }
#endif
    for (int32_t r = 0; r < rows; r++, dst += dst_words) {
        ek__word *d = dst;
        int32_t n = words;
#if defined(__thumb2__)
        for (; n >= 4; n -= 4) {
            __asm__ volatile("ldmia %[s]!, {r3, r4, r5, r6}\n\tstmia %[d]!, {r3, r4, r5, r6}"
                             : [s] "+r"(src), [d] "+r"(d) : : "r3", "r4", "r5", "r6", "memory");
        }
#endif
        for (; n > 0; n--) {
            *d++ = *src++;
        }
    }
}

int ek_concat_s8(const ek_concat_params_t *p, const int8_t *const *inputs, int8_t *output)
{
    if (p->rows < 0 || p->parts < 1 || p->out_c < 1 || !p->part_info) {
        return EK_NN_ERR_ARG;
    }
    const int32_t rows = p->rows, out_c = p->out_c;
    int32_t at = 0;
    for (int32_t k = 0; k < p->parts; k++) {
        const int32_t c = p->part_info[2 * k], table = p->part_info[2 * k + 1];
        if (c < 0 || at + c > out_c || (table >= 0 && !p->tables)) {
            return EK_NN_ERR_ARG;
        }
        const uint8_t *src = (const uint8_t *)inputs[k];
        int8_t *dst = output + at;
        if (table >= 0) {
            const uint8_t *t = (const uint8_t *)p->tables + 256 * table;
            if (c == out_c) {
                ek__lut_run(t, src, dst, rows * c);
            } else {
                for (int32_t r = 0; r < rows; r++, src += c, dst += out_c) {
                    ek__lut_run(t, src, dst, c);
                }
            }
        } else if ((c & 3) == 0 && (out_c & 3) == 0 && ek__aligned(src) && ek__aligned(dst)) {
            /* aligned rows (a shared-scale concatenation's parts): whole words (on Thumb-2 4 a turn by LDM/STM,
             * ~6 instructions a row of 8 or 16 bytes instead of ~20) */
            ek__copy_rows_w((const ek__word *)(const void *)src, (ek__word *)(void *)dst, rows, c >> 2, out_c >> 2);
        } else if ((c & 3) == 0) {
            const int32_t words = c >> 2;
            for (int32_t r = 0; r < rows; r++, src += c, dst += out_c) {
                for (int32_t w = 0; w < words; w++) {
                    const uint32_t v = ek__read_u32(src + 4 * w);
                    memcpy(dst + 4 * w, &v, 4);
                }
            }
        } else {
            for (int32_t r = 0; r < rows; r++, src += c, dst += out_c) {
                for (int32_t i = 0; i < c; i++) {
                    dst[i] = (int8_t)src[i];
                }
            }
        }
        at += c;
    }
    return EK_NN_OK;
}

/* ===============================================================================================================
 * Batched 2-D transpose of bytes (a layout move: ShuffleNet's channel shuffle per pixel, NHWC -> torch order before a
 * flatten, a Conv1d's [C, L] <-> [L, C])
 *
 * out[b][c][r] = in[b][r][c]. With the DSP extension, blocks of 4 x 4 bytes: 4 LDR (rows r..r+3 at column c), two
 * PKHBT / PKHTB pairs, then each output word from two of those with one AND (the 0xFF00FF00 bytes of one, shifted
 * or not) and one UXTAB16 (adding the other's bytes 0 and 2, or 1 and 3) — 12 data instructions and 4 STR for 16
 * bytes; the edges a byte at a time.
 * ============================================================================================================= */
#if EK_NN_DSP
static inline uint32_t ek__uxtab16_ror8(uint32_t a, uint32_t x)
{
    uint32_t r;
    __asm__("uxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}

static inline void ek__tr4x4(const int8_t *s, int32_t cols, int8_t *d, int32_t rows)
{
    const uint32_t a = ek__read_u32(s), b = ek__read_u32(s + cols), c = ek__read_u32(s + 2 * cols);
    const uint32_t e = ek__read_u32(s + 3 * cols);
    uint32_t m = 0xFF00FF00u;
    __asm__("" : "+r"(m)); /* in a register: each AND then takes its shifted operand (AND Rd, m, t, LSL #8) */
    uint32_t t0, t1, t2, t3;
    __asm__("pkhbt   %[t0], %[a], %[c], lsl #16\n\t" /* a0 a1 c0 c1 */
            "pkhbt   %[t1], %[b], %[e], lsl #16\n\t" /* b0 b1 e0 e1 */
            "pkhtb   %[t2], %[c], %[a], asr #16\n\t" /* a2 a3 c2 c3 */
            "pkhtb   %[t3], %[e], %[b], asr #16"      /* b2 b3 e2 e3 */
            : [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=r"(t3)
            : [a] "r"(a), [b] "r"(b), [c] "r"(c), [e] "r"(e));
    ek__write_u32(d, __uxtab16((t1 << 8) & m, t0));                 /* (0 b0 0 e0) + (a0 c0): a0 b0 c0 e0 */
    ek__write_u32(d + rows, ek__uxtab16_ror8(t1 & m, t0));           /* (0 b1 0 e1) + (a1 c1): a1 b1 c1 e1 */
    ek__write_u32(d + 2 * rows, __uxtab16((t3 << 8) & m, t2));      /* a2 b2 c2 e2 */
    ek__write_u32(d + 3 * rows, ek__uxtab16_ror8(t3 & m, t2));       /* a3 b3 c3 e3 */
}
#endif

#if EK_NN_DSP
/* ek__shuffle4: the transpose of 4 rows (rows == 4, cols a multiple of 4: a channel shuffle of 4 groups) for
 * ``pixels`` batches, as ek__tr4x4 a block but the 4 output words of a block consecutive (one STM), a loop over a
 * pixel's blocks: 20 instructions a block of 16 bytes. r0 input, r1 output, r2 cols, r3 pixels (>= 1). */
void ek__shuffle4(const int8_t *s, int8_t *d, int32_t cols, int32_t pixels);
__asm__(
    "   .syntax unified\n"
    "   EK_FUNC ek__shuffle4\n"
    "   push    {r3-r11, lr}\n"          /* [sp]: pixels left */
    "   mov     r12, #0xFF00FF00\n"
    "   add     r3, r2, r2, lsl #1\n"    /* 3 cols */
    "1: add     lr, r0, r2\n"            /* a pixel: its first row's end */
    "2: ldr     r4, [r0]\n"              /* a block: a, b, c, e = rows 0-3 at 4 columns */
    "   ldr     r5, [r0, r2]\n"
    "   ldr     r6, [r0, r2, lsl #1]\n"
    "   ldr     r7, [r0, r3]\n"
    "   adds    r0, r0, #4\n"
    "   pkhbt   r8, r4, r6, lsl #16\n"   /* a0 a1 c0 c1 */
    "   pkhbt   r9, r5, r7, lsl #16\n"   /* b0 b1 e0 e1 */
    "   pkhtb   r10, r6, r4, asr #16\n"  /* a2 a3 c2 c3 */
    "   pkhtb   r11, r7, r5, asr #16\n"  /* b2 b3 e2 e3 */
    "   and     r4, r12, r9, lsl #8\n"   /* 0 b0 0 e0 */
    "   uxtab16 r4, r4, r8\n"            /* a0 b0 c0 e0 */
    "   and     r5, r9, r12\n"           /* 0 b1 0 e1 */
    "   uxtab16 r5, r5, r8, ror #8\n"    /* a1 b1 c1 e1 */
    "   and     r6, r12, r11, lsl #8\n"
    "   uxtab16 r6, r6, r10\n"           /* a2 b2 c2 e2 */
    "   and     r7, r11, r12\n"
    "   uxtab16 r7, r7, r10, ror #8\n"   /* a3 b3 c3 e3 */
    "   stmia   r1!, {r4-r7}\n"
    "   cmp     r0, lr\n"
    "   bne     2b\n"
    "   add     r0, r0, r3\n"            /* the next pixel's rows */
    "   ldr     r4, [sp]\n"
    "   subs    r4, r4, #1\n"
    "   str     r4, [sp]\n"
    "   bne     1b\n"
    "   pop     {r3-r11, pc}\n"
    "   .size ek__shuffle4, . - ek__shuffle4\n"
    "   .popsection\n");

/* ek__shuffle2: the transpose of 2 rows (rows == 2, cols a multiple of 4: a channel shuffle of 2 groups), 4 columns
 * a turn: a = row 0, e = row 1 at them; (a0 e0 a2 e2) and (a1 e1 a3 e3) with an AND and a UXTAB16 each, then PKHBT /
 * PKHTB to (a0 e0 a1 e1) (a2 e2 a3 e3): 11 instructions a turn of 8 bytes. r0 input, r1 output, r2 cols, r3 pixels
 * (>= 1). */
void ek__shuffle2(const int8_t *s, int8_t *d, int32_t cols, int32_t pixels);
__asm__(
    "   .syntax unified\n"
    "   EK_FUNC ek__shuffle2\n"
    "   push    {r4-r8, lr}\n"
    "   mov     r12, #0xFF00FF00\n"
    "   sub     r8, r2, #4\n"            /* row 1 from past a turn's row-0 word */
    "1: add     lr, r0, r2\n"            /* a pixel: its row 0's end */
    "2: ldr     r4, [r0], #4\n"          /* a */
    "   ldr     r5, [r0, r8]\n"          /* e */
    "   and     r6, r12, r5, lsl #8\n"   /* 0 e0 0 e2 */
    "   and     r5, r5, r12\n"           /* 0 e1 0 e3 */
    "   uxtab16 r6, r6, r4\n"            /* a0 e0 a2 e2 */
    "   uxtab16 r5, r5, r4, ror #8\n"    /* a1 e1 a3 e3 */
    "   pkhbt   r7, r6, r5, lsl #16\n"   /* a0 e0 a1 e1 */
    "   pkhtb   r5, r5, r6, asr #16\n"   /* a2 e2 a3 e3 */
    "   strd    r7, r5, [r1], #8\n"
    "   cmp     r0, lr\n"
    "   bne     2b\n"
    "   add     r0, r0, r2\n"            /* past row 1 */
    "   subs    r3, r3, #1\n"
    "   bne     1b\n"
    "   pop     {r4-r8, pc}\n"
    "   .size ek__shuffle2, . - ek__shuffle2\n"
    "   .popsection\n");
#endif

int ek_transpose_s8(const ek_transpose_params_t *p, const int8_t *input, int8_t *output)
{
    const int32_t rows = p->rows, cols = p->cols;
    if (p->batches < 1 || rows < 1 || cols < 1) {
        return EK_NN_ERR_ARG;
    }
    const int32_t size = rows * cols;
#if EK_NN_DSP
    /* a channel shuffle of 4 groups (one row of blocks a pixel, no edges) or of 2 (the two rows interleaved): their
     * loops store with STM / STRD, so the output must be word-aligned (arena tensors are 8-aligned) */
    if (rows == 4 && (cols & 3) == 0 && ek__aligned(output)) {
        ek__shuffle4(input, output, cols, p->batches);
        return EK_NN_OK;
    }
    if (rows == 2 && (cols & 3) == 0 && ek__aligned(output)) {
        ek__shuffle2(input, output, cols, p->batches);
        return EK_NN_OK;
    }
#endif
    for (int32_t bt = 0; bt < p->batches; bt++, input += size, output += size) {
        int32_t r0 = 0;
#if EK_NN_DSP
        for (; r0 + 4 <= rows; r0 += 4) {
            int32_t c0 = 0;
            for (; c0 + 4 <= cols; c0 += 4) {
                ek__tr4x4(input + r0 * cols + c0, cols, output + c0 * rows + r0, rows);
            }
            for (; c0 < cols; c0++) { /* the last 1-3 columns of these 4 rows */
                for (int32_t r = r0; r < r0 + 4; r++) {
                    output[c0 * rows + r] = input[r * cols + c0];
                }
            }
        }
#endif
        for (; r0 < rows; r0++) { /* the last 1-3 rows (every row without the DSP extension) */
            for (int32_t c = 0; c < cols; c++) {
                output[c * rows + r0] = input[r0 * cols + c];
            }
        }
    }
    return EK_NN_OK;
}

/* ===============================================================================================================
 * Nearest-neighbour upsampling (a layout move: the int8 codes pass through, U-Net's decoder)
 *
 * Each input row is widened once into the first of its scale_h output rows — with 4k channels word by word, each
 * pixel's words read once and stored scale_w times (doubling 8 or 16 channels: one LDM and two STM a pixel, 0.25
 * instructions an output element on U-Net's 16x16x16 by 2 on the M7; 16k channels: LDM / two STM of 4 words a turn)
 * — and that row copied into the other scale_h - 1 (LDM / STM of 4 words); other channel counts and unaligned maps
 * byte by byte and memcpy.
 * ============================================================================================================= */
/* n * 16 bytes between word-aligned buffers (no overlap), n >= 1: LDM / STM of 4 words, 4 instructions a turn on
 * Thumb-2 cores */
static inline void ek__copy16(uint32_t *d, const uint32_t *s, int32_t n)
{
#if defined(__thumb2__)
    __asm__ volatile("1: ldmia   %[s]!, {r4-r7}\n\t"
                     "   subs    %[n], %[n], #1\n\t"
                     "   stmia   %[d]!, {r4-r7}\n\t"
                     "   bne     1b"
                     : [s] "+r"(s), [d] "+r"(d), [n] "+r"(n)
                     :
                     : "r4", "r5", "r6", "r7", "cc", "memory");
#else
    for (; n > 0; n--, s += 4, d += 4) {
        d[0] = s[0];
        d[1] = s[1];
        d[2] = s[2];
        d[3] = s[3];
    }
#endif
}

/* words between word-aligned buffers (no overlap) */
static void ek__copy_words(uint32_t *d, const uint32_t *s, int32_t words)
{
    if (words >= 4) {
        ek__copy16(d, s, words >> 2);
    }
    for (int32_t i = words & ~3; i < words; i++) {
        d[i] = s[i];
    }
}

int ek_upsample_s8(const ek_upsample_params_t *p, const int8_t *input, int8_t *output)
{
    const int32_t in_h = p->in_h, in_w = p->in_w, C = p->channels, sh = p->scale_h, sw = p->scale_w;
    if (in_h < 1 || in_w < 1 || C < 1 || sh < 1 || sw < 1) {
        return EK_NN_ERR_ARG;
    }
    const int32_t in_row = in_w * C, out_row = in_row * sw;
    if ((C & 3) == 0 && ek__aligned(input) && ek__aligned(output)) { /* 4 channels a word */
        const int32_t cw = C >> 2, out_words = out_row >> 2;
        const uint32_t *s = (const uint32_t *)(const void *)input;
        uint32_t *o = (uint32_t *)(void *)output;
        for (int32_t y = 0; y < in_h; y++, o += sh * out_words) {
            uint32_t *d = o;
#if defined(__thumb2__)
/* every pixel of the row (the words in REGS) in one LDM, out in two STM */
#define EK__DOUBLE_PIXELS(REGS, ...)                                                                              \
    __asm__ volatile("1: ldmia   %[s]!, {" REGS "}\n\t"                                                          \
                     "   cmp     %[s], %[se]\n\t"                                                                \
                     "   stmia   %[d]!, {" REGS "}\n\t"                                                          \
                     "   stmia   %[d]!, {" REGS "}\n\t"                                                          \
                     "   bne     1b"                                                                              \
                     : [s] "+r"(s), [d] "+r"(d)                                                                   \
                     : [se] "r"(s + cw * in_w)                                                                    \
                     : __VA_ARGS__, "cc", "memory")
            if (C == 16 && sw == 2) { /* U-Net's */
                EK__DOUBLE_PIXELS("r4-r7", "r4", "r5", "r6", "r7");
            } else if (C == 8 && sw == 2) {
                EK__DOUBLE_PIXELS("r4-r5", "r4", "r5");
            } else if ((C & 15) == 0 && sw == 2) { /* 16 channels a turn, stored at the pixel and C bytes on */
                const uint32_t *se = s + cw * in_w;
                const int32_t cq = cw >> 2;
                int32_t n;
                __asm__ volatile("1: mov     %[n], %[cq]\n\t"
                                 "2: ldmia   %[s]!, {r4-r7}\n\t"
                                 "   add     r8, %[d], %[c]\n\t"
                                 "   stmia   r8, {r4-r7}\n\t"
                                 "   stmia   %[d]!, {r4-r7}\n\t"
                                 "   subs    %[n], %[n], #1\n\t"
                                 "   bne     2b\n\t"
                                 "   add     %[d], %[d], %[c]\n\t"
                                 "   cmp     %[s], %[se]\n\t"
                                 "   bne     1b"
                                 : [s] "+r"(s), [d] "+r"(d), [n] "=&r"(n)
                                 : [se] "r"(se), [cq] "r"(cq), [c] "r"(C)
                                 : "r4", "r5", "r6", "r7", "r8", "cc", "memory");
            } else
#endif
            if (sw == 1) { /* rows only: the input row as it is */
                ek__copy_words(d, s, in_w * cw);
                s += in_w * cw;
            } else if ((C & 15) == 0) { /* 16 channels a turn, each pixel stored scale_w times */
                for (int32_t x = 0; x < in_w; x++, s += cw) {
                    for (int32_t k = 0; k < sw; k++, d += cw) {
                        ek__copy16(d, s, cw >> 2);
                    }
                }
            } else if (sw == 2) { /* each word loaded once, stored twice */
                for (int32_t x = 0; x < in_w; x++, s += cw, d += 2 * cw) {
                    for (int32_t j = 0; j < cw; j++) {
                        const uint32_t v = s[j];
                        d[j] = v;
                        d[cw + j] = v;
                    }
                }
            } else {
                for (int32_t x = 0; x < in_w; x++, s += cw) {
                    for (int32_t k = 0; k < sw; k++) {
                        for (int32_t j = 0; j < cw; j++) {
                            *d++ = s[j];
                        }
                    }
                }
            }
            for (int32_t r = 1; r < sh; r++) { /* the other rows: copies of the first */
                ek__copy_words(o + r * out_words, o, out_words);
            }
        }
        return EK_NN_OK;
    }
    for (int32_t y = 0; y < in_h; y++, input += in_row) {
        int8_t *const o = output + (size_t)y * (size_t)sh * (size_t)out_row;
        int8_t *d = o;
        for (int32_t x = 0; x < in_w; x++) {
            const int8_t *s = input + x * C;
            for (int32_t k = 0; k < sw; k++) {
                for (int32_t c = 0; c < C; c++) {
                    *d++ = s[c];
                }
            }
        }
        for (int32_t r = 1; r < sh; r++) {
            memcpy(o + (size_t)r * (size_t)out_row, o, (size_t)out_row);
        }
    }
    return EK_NN_OK;
}
#undef EK__DOUBLE_PIXELS

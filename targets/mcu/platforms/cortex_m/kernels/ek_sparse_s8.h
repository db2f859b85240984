/*
 * ek_sparse_s8.h: edgekit's int8 kernels for pruned layers on Cortex-M: convolution (groups = 1) and fully connected
 * layers whose weights are stored compressed, so that flash shrinks with sparsity.
 *
 * Where it sits: targets/cortex_m, beside the dense micro-kernels (ek_nn_s8.h). targets/mcu/sparse_pack.py
 * encodes a layer's int8 weights offline and decides per layer whether the compressed form is smaller than the dense
 * one (sparse_pays); ek_kernels.py then emits a call to one of these functions instead of the dense kernel.
 * edgekit/intref.py is the host reference they match bit for bit.
 *
 * Arithmetic and conventions as ek_nn_s8.h (edgekit/qmath.py): NHWC activations with zero point, weights int8 per
 * output channel, acc = bias[c] + sum((x - x_zp) * w) wrapping in int32, the same requantisation table
 * ({mult, a, b, shift} per channel, EK_NN_FLAG_FAST_REQUANT for the SMMLA form), explicit 4-sided padding (padded
 * positions read as the zero point), input and output windows with row strides, nothing written outside the output
 * window.
 *
 * Weight format (CSR with byte deltas), per output channel c of a weight matrix W[out][K] (K = kernel_h * kernel_w *
 * in_c in (ky, kx, ci) order for a convolution, in_features for a fully connected layer):
 *   counts[c]        entries of channel c (int16, <= 32767)
 *   pairs[2 * e]     delta: column of entry e minus the column of the previous entry of the channel (the first entry
 *                    of a channel counts from column 0), as an unsigned byte
 *   pairs[2 * e + 1] value: the int8 weight
 * Channels follow each other in pairs[]. A gap of more than 255 columns is bridged by filler entries (delta 255,
 * value 0), which multiply by zero and need no test in the inner loop. Stored weight bytes: 2 * entries +
 * 2 * out_c, against about K * out_c for the dense layout: it pays below ~45 % density (sparse_pack.sparse_pays).
 *
 * Two implementations compute identical results: Armv7E-M/Armv8-M DSP (used when __ARM_FEATURE_DSP is defined) and
 * portable C (any core or host; forced with EK_NN_PORTABLE, the same switch as ek_nn_s8.c).
 *
 * Buffers: counts, bias, requant and scratch must be 4-byte aligned (pairs may have any alignment); input and output
 * any alignment. Scratch holds no state between calls. No function allocates memory or calls libc beyond memcpy.
 */
#ifndef EK_SPARSE_S8_H
#define EK_SPARSE_S8_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes and flags: the values of ek_nn_s8.h. */
#define EK_SPARSE_OK 0
#define EK_SPARSE_ERR_ALIGN (-1) /* counts, bias, requant or scratch not 4-byte aligned */
#define EK_SPARSE_ERR_ARG (-2)   /* a parameter out of range, or counts that do not add up to entries */
#define EK_SPARSE_FLAG_FAST_REQUANT 1u /* requant table holds the SMMLA form for every channel (sparse_pack decides) */

/* Output pixels per im2col tile of ek_sparse_conv2d_s8 (the DSP inner loop keeps 8 accumulators in registers). */
#define EK_SPARSE_TILE_PIXELS 8

/* A compressed convolution, groups = 1. The int32 fields come first, in the order sparse_pack.SCONV_FIELDS lists. */
typedef struct {
    int32_t in_h, in_w, in_c;       /* input window; in_c = channels per pixel (contiguous bytes) */
    int32_t in_row_stride;          /* bytes from one input row to the next (>= in_w * in_c) */
    int32_t out_h, out_w, out_c;    /* output window */
    int32_t out_row_stride;         /* bytes from one output row to the next (>= out_w * out_c) */
    int32_t kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_bottom, pad_left, pad_right;
    int32_t input_offset;           /* -(input zero point) */
    int32_t output_offset;          /* output zero point */
    int32_t act_min, act_max;       /* fused activation clamp, in the int8 output domain */
    int32_t entries;                /* sum of counts[] (checked) */
    int32_t flags;                  /* EK_SPARSE_FLAG_* */
    const int16_t *counts;          /* [out_c] entries per output channel */
    const uint8_t *pairs;           /* [entries][2] (delta, value) */
    const int32_t *bias;            /* [out_c] or NULL (zeros) */
    const int32_t *requant;         /* [ceil4(out_c)][4] {mult, a, b, shift} (kernel_pack.requant_table) */
} ek_sconv_params_t;

#define EK_SPARSE_CONV_INT_FIELDS 24

/* A compressed fully connected layer: out[b][o] from in[b][0..in_features). */
typedef struct {
    int32_t batch;
    int32_t in_features, out_features;
    int32_t in_row_stride, out_row_stride; /* bytes between batch rows of input and output */
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    int32_t entries;                /* sum of counts[] (checked) */
    int32_t flags;
    const int16_t *counts;          /* [out_features] */
    const uint8_t *pairs;           /* [entries][2] (delta, value) */
    const int32_t *bias;            /* [out_features], required: bias - x_zp * sum(w) (sparse_pack folds x_zp in) */
    const int32_t *requant;         /* [ceil4(out_features)][4] */
} ek_sfc_params_t;

#define EK_SPARSE_FC_INT_FIELDS 11

/* Scratch bytes each call needs (0 = pass NULL); sparse_pack.py computes the same numbers. The convolution's is one
 * im2col tile: kernel_h * kernel_w * in_c x EK_SPARSE_TILE_PIXELS int16. */
size_t ek_sparse_conv2d_s8_scratch_bytes(const ek_sconv_params_t *p);
size_t ek_sparse_fully_connected_s8_scratch_bytes(const ek_sfc_params_t *p);

/* Convolution, groups = 1, any kernel, stride, dilation and padding. Returns EK_SPARSE_OK or an EK_SPARSE_ERR_*. */
int ek_sparse_conv2d_s8(const ek_sconv_params_t *p, const int8_t *input, int8_t *output, void *scratch);

/* Fully connected, batch rows of in_features int8 each. scratch is unused (pass NULL). */
int ek_sparse_fully_connected_s8(const ek_sfc_params_t *p, const int8_t *input, int8_t *output, void *scratch);

#ifdef __cplusplus
}
#endif

#endif /* EK_SPARSE_S8_H */

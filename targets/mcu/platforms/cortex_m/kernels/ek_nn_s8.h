/*
 * ek_nn_s8.h: edgekit's int8 micro-kernels for Cortex-M (convolution, depthwise convolution, fully connected).
 *
 * Where it sits: targets/cortex_m. edgekit's ahead-of-time driver calls these for conv/depthwise/linear layers;
 * targets/mcu/kernel_pack.py prepares, offline, every array and parameter they take (weights reordered for the
 * inner loops, still one byte per weight). edgekit/intref.py is the host reference they match bit for bit.
 *
 * Arithmetic (edgekit/qmath.py): activations int8 with zero point, weights int8 per-channel symmetric in
 * [-127, 127], bias int32, acc = bias[c] + sum((x - x_zp) * w) as a wrapping int32, then
 * out = clamp(out_zp + ((acc * mult[c] + 2^(shift[c]-1)) >> shift[c]), act_min, act_max) on 64 bits.
 *
 * Layout: NHWC. A convolution reads an in_h x in_w window whose rows are in_row_stride bytes apart (pixels of in_c
 * contiguous bytes) and writes an out_h x out_w window whose rows are out_row_stride bytes apart, so a caller can run
 * a layer on a spatial patch of larger tensors. Padding is explicit and 4-sided; padded positions read as the input
 * zero point. Nothing outside the output window is written.
 *
 * Two implementations compute identical results: Armv7E-M/Armv8-M DSP (SMLAD on int16 pairs, register-blocked,
 * used when __ARM_FEATURE_DSP is defined) and portable C (any core, any host; also forced by EK_NN_PORTABLE). A
 * third, Helium (ek_nn_s8_mve.c, Cortex-M55/M85), runs the layers kernel_pack packed for it (EK_NN_FLAG_MVE: their
 * own weight, bias and requantization layouts); a build without MVE returns EK_NN_ERR_ARG for them. A fourth, for
 * cores without SIMD such as RV32IM (EK_NN_FLAG_RV: its own layouts, see ek_nn_s8.c), is in every build without the
 * DSP extension; a DSP build returns EK_NN_ERR_ARG for such layers.
 *
 * Buffers: weights, bias, requant tables and scratch must be 4-byte aligned (the packer's arrays are declared
 * aligned by the code that embeds them); input and output may have any alignment: the DSP build reads and writes
 * them with unaligned word accesses, which Armv7-M/Armv8-M Mainline allow unless CCR.UNALIGN_TRP is set (it is
 * clear after reset). Scratch holds no state between calls; its size is ek_*_scratch_bytes() (kernel_pack.py gives
 * the same number). No function allocates memory or calls libc beyond memcpy/memset.
 *
 * Every array a call reads comes from targets/mcu/kernel_pack.py (pack_conv2d, pack_depthwise_conv2d,
 * pack_fully_connected), which also fills the int32 fields of the parameter structs, in the same order.
 */
#ifndef EK_NN_S8_H
#define EK_NN_S8_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes. */
#define EK_NN_OK 0
#define EK_NN_ERR_ALIGN (-1) /* weights, requant table or scratch not 4-byte aligned */
#define EK_NN_ERR_ARG (-2)   /* a parameter out of range (zero size, bad stride, inconsistent output size) */

/* flags */
#define EK_NN_FLAG_FAST_REQUANT 1u /* requant table holds the SMMLA form for every channel (kernel_pack decides) */
#define EK_NN_FLAG_CACHE_ALL_WEIGHTS 2u /* conv: widen all weights once per call instead of once per pixel tile */
#define EK_NN_FLAG_BIAS_PER_BLOCK 4u /* conv: lay out one block's biases at a time (32 B of scratch, not 32 B per block) */
#define EK_NN_FLAG_DW_CHANNELS 8u /* depthwise: 4 channels per pixel at once, weights as int16 pairs (kernel_pack decides) */
#define EK_NN_FLAG_MVE 16u   /* packed for the Helium kernels of ek_nn_s8_mve.c (M55/M85; kernel_pack isa="mve") */
#define EK_NN_FLAG_ADD_SPLIT 32u /* add: 16 <= shift <= 46, the 32-bit split form of the multipliers is exact */
#define EK_NN_FLAG_TAP_RUNS 64u /* conv: one reduction run per kernel tap even when dilation_w == 1 (nested weights) */
#define EK_NN_FLAG_RV 128u   /* packed for the scalar kernels of cores without SIMD (RV32IM; kernel_pack isa="rv32") */
#define EK_NN_FLAG_RV_PAIRS 256u /* scalar FC: two output channels per 32-bit weight word (kernel_pack decides) */
#define EK_NN_FLAG_1X1_STREAM 4096u /* conv: 1x1, in_c 8 or 16, fast requant, full int8 range: per-channel record stream */
#define EK_NN_FLAG_DW_PAIRS 1024u /* depthwise 3x3: a padded plane of column pairs per 4 channels, 2 outputs x 2 channels a step */
#define EK_NN_FLAG_CONV_FC 2048u /* conv: per output pixel its window as one fully connected row (int8 weights in the FC
                                   * layout: no widened weights, scratch = the window; kernel_pack decides) */
#define EK_NN_FLAG_WIDE_WEIGHTS 8192u /* conv (tile GEMM): weights stored already widened, int16 pairs in the
                                     * weight cache's layout, so no call widens them (kernel_pack decides) */
#define EK_NN_FLAG_ADD_PAIRS 512u /* add: 17 <= shift, multipliers split at 2^16 fit SMLAD (kernel_pack decides) */
#define EK_NN_FLAG_DW_TRANSPOSED 16384u /* depthwise 3x3, rows or pairs layout: run on the transposed map (a tall,
                                         * narrow map as a short, wide one); weights [C][kw][kh] (kernel_pack decides) */
#define EK_NN_FLAG_CONV_C1 32768u /* conv: one input channel, 3x3: the taps of a pixel in registers, a record
                                  * {bias, 5 weight pairs, mult, a, b} per output channel (kernel_pack decides) */

/*
 * Per-layer constants of a convolution or depthwise convolution. All fields are int32 and come first, so the struct
 * is EK_NN_CONV_INT_FIELDS words followed by the pointers; kernel_pack.py lists the same fields in the same order.
 * Generated code declares one `static const` instance per layer (it lives in flash).
 */
typedef struct {
    int32_t in_h, in_w, in_c;       /* input window; in_c = channels per pixel (contiguous bytes) */
    int32_t in_row_stride;          /* bytes from one input row to the next (>= in_w * in_c) */
    int32_t out_h, out_w, out_c;    /* output window; depthwise: out_c == in_c */
    int32_t out_row_stride;         /* bytes from one output row to the next (>= out_w * out_c) */
    int32_t kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_bottom, pad_left, pad_right;
    int32_t input_offset;           /* -(input zero point) */
    int32_t output_offset;          /* output zero point */
    int32_t act_min, act_max;       /* fused activation clamp, in the int8 output domain */
    int32_t tile_pixels;            /* conv: output pixels per im2col tile (even, >= 2); depthwise: unused (0) */
    int32_t flags;                  /* EK_NN_FLAG_* */
    /* Nested weights (one model, several widths: this call reads a prefix of a wider layer's packed weights).
     * conv: bytes from one block of 4 output channels to the next and int16 pairs per run in the stored block;
     * 0: dense, as this call's own sizes give. Depthwise: unused (0; its layout keeps channel prefixes whole). */
    int32_t weight_block_bytes, weight_run_pairs;
    const int8_t *weights;          /* kernel_pack layout, 4-byte aligned */
    const int32_t *bias;            /* [out_c] or NULL (zeros) */
    const int32_t *requant;         /* [ceil4(out_c)][4] from kernel_pack: {mult, a, b, shift} per channel */
} ek_conv_params_t;

#define EK_NN_CONV_INT_FIELDS 26

/* Per-layer constants of a fully connected layer: out[b][o] from in[b][0..in_features). */
typedef struct {
    int32_t batch;
    int32_t in_features, out_features;
    int32_t in_row_stride, out_row_stride; /* bytes between batch rows of input and output */
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    int32_t flags;
    int32_t weight_block_bytes;     /* bytes from one block of 4 output channels to the next; 0: dense (nested) */
    const int8_t *weights;          /* kernel_pack layout, 4-byte aligned */
    const int32_t *bias;            /* [ceil4(out_features)] from kernel_pack: bias plus zero-point terms; required */
    const int32_t *requant;         /* [ceil4(out_features)][4] from kernel_pack */
} ek_fc_params_t;

#define EK_NN_FC_INT_FIELDS 11

/*
 * Elementwise sum of two int8 tensors of the same shape (a residual add), edgekit/qgraph.py's contract:
 * acc = (a - a_zp) * a_mult + (b - b_zp) * b_mult on 64 bits, out = clamp(out_zp + ((acc + 2^(shift-1)) >> shift)).
 * With EK_NN_FLAG_ADD_SPLIT (kernel_pack sets it when 16 <= shift <= 46) the same integers come from 32-bit
 * arithmetic on the multipliers split at 2^15 (a_mult = a_mult_hi * 2^15 + a_mult_lo; ek_nn_s8_mve.c shows why it
 * is exact): 4 lanes at a time in the Helium build (EK_NN_FLAG_MVE too), one element at a time elsewhere; without
 * it, the 64-bit path. `rows` rows of `n` elements with their own strides: windows of larger maps (patch tiles).
 */
typedef struct {
    int32_t n;                      /* elements (of one row) */
    int32_t a_offset, b_offset;     /* -(zero point) of each input */
    int32_t out_offset;             /* output zero point */
    int32_t act_min, act_max;
    int32_t a_mult, b_mult, shift;
    int32_t flags;                  /* EK_NN_FLAG_ADD_SPLIT, EK_NN_FLAG_MVE */
    int32_t a_mult_hi, a_mult_lo, b_mult_hi, b_mult_lo;
    int32_t h_const, l_const;       /* -(a_zp * a_mult_hi + b_zp * b_mult_hi), the same for the _lo halves */
    int32_t rows;                   /* rows of n elements each (a patch tile's window: 1 for a whole tensor) */
    int32_t a_row_stride, b_row_stride, out_row_stride;  /* bytes from one row to the next in a, b and out */
} ek_add_params_t;

#define EK_NN_ADD_INT_FIELDS 20

/*
 * Pooling over NHWC int8 windows (edgekit/qgraph.py's contract): max — the largest value among the window's taps
 * inside the input (padding never wins); average (and global average: the window is the whole map) — acc = the sum
 * of (x - in_zp) over the taps inside the input (padding counts as the zero point, so it adds 0; the divisor is in
 * mult), out = clamp(out_zp + ((acc * mult + 2^(shift-1)) >> shift), -128, 127).
 */
typedef struct {
    int32_t in_h, in_w, channels;   /* input map (dense rows: in_w * channels bytes apart) */
    int32_t out_h, out_w;
    int32_t kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left;
    int32_t mode;                   /* EK_NN_POOL_MAX or EK_NN_POOL_AVG */
    int32_t input_offset;           /* -(input zero point), average */
    int32_t output_offset;          /* output zero point, average */
    int32_t mult, shift;            /* average */
    int32_t flags;                  /* EK_NN_FLAG_MVE: Helium */
} ek_pool_params_t;

#define EK_NN_POOL_INT_FIELDS 17
#define EK_NN_POOL_MAX 0
#define EK_NN_POOL_AVG 1

/* Scratch bytes each call needs (0 = pass NULL). kernel_pack.scratch_bytes() computes the same numbers. */
size_t ek_conv2d_s8_scratch_bytes(const ek_conv_params_t *p);
size_t ek_depthwise_conv2d_s8_scratch_bytes(const ek_conv_params_t *p);
size_t ek_fully_connected_s8_scratch_bytes(const ek_fc_params_t *p);

/* Convolution, groups = 1, any kernel, stride, dilation and padding; 1x1 convolutions without padding take a
 * shorter im2col path (each pixel is one contiguous run). Returns EK_NN_OK or an EK_NN_ERR_* code. */
int ek_conv2d_s8(const ek_conv_params_t *p, const int8_t *input, int8_t *output, void *scratch);

/* Depthwise convolution, channel multiplier 1 (in_c == out_c), any kernel, stride, dilation and padding; 3x3 and 1x3
 * with stride_w 1 or 2, 3x1 with stride_h 1 or 2 and 5x5 with stride_w 1 (dilation 1) take hand-scheduled row
 * kernels. tile_pixels is ignored. */
int ek_depthwise_conv2d_s8(const ek_conv_params_t *p, const int8_t *input, int8_t *output, void *scratch);

/* Fully connected: out[b] = requant(W in[b] + bias) for batch rows of in_features int8 each (W packed from
 * [out_features][in_features]). */
int ek_fully_connected_s8(const ek_fc_params_t *p, const int8_t *input, int8_t *output, void *scratch);

/* out[i] = a[i] + b[i] requantized (see ek_add_params_t); any alignment. Returns EK_NN_OK or EK_NN_ERR_ARG. */
int ek_add_s8(const ek_add_params_t *p, const int8_t *a, const int8_t *b, int8_t *out);

/* Max or average pooling of an NHWC window (see ek_pool_params_t); any alignment. EK_NN_OK or EK_NN_ERR_ARG. */
int ek_pool_s8(const ek_pool_params_t *p, const int8_t *input, int8_t *output);

/*
 * An int8 -> int8 elementwise function as a 256-byte table (hardswish, sigmoid, tanh, ReLU, requantization):
 * out[i] = table[(uint8_t)in[i]] — the table indexed by the input byte read as unsigned (kernel_pack.pack_lut).
 */
typedef struct {
    int32_t n;                      /* elements */
    int32_t flags;                  /* 0 */
    const int8_t *table;            /* [256] */
} ek_lut_params_t;

#define EK_NN_LUT_INT_FIELDS 2

/* out[i] = table[(uint8_t)in[i]]; any alignment, in place allowed. Returns EK_NN_OK or EK_NN_ERR_ARG. */
int ek_lut_s8(const ek_lut_params_t *p, const int8_t *input, int8_t *output);

/*
 * An int8 -> int8 function with its own 256-byte table per channel (a PReLU with a slope per channel) over
 * `pixels` pixels of `channels` channels, channels last: out[i][c] = tables[c * 256 + (uint8_t)in[i][c]]
 * (kernel_pack.pack_lut_channels: the host reference's per-channel tables, rotated by 128).
 */
typedef struct {
    int32_t pixels;                 /* pixels (rows of `channels` values) */
    int32_t channels;               /* values a pixel, one table each */
    int32_t flags;                  /* 0 */
    const int8_t *tables;           /* [channels][256] */
} ek_lut_channels_params_t;

#define EK_NN_LUTC_INT_FIELDS 3

/* out[i][c] = tables[c][(uint8_t)in[i][c]]; any alignment, in place allowed. EK_NN_OK or EK_NN_ERR_ARG. */
int ek_lut_channels_s8(const ek_lut_channels_params_t *p, const int8_t *input, int8_t *output);

/*
 * Bilinear upsampling of an int8 NHWC map by integer factors (PyTorch's align_corners=False; edgekit/qmath.py
 * bilinear_upsample): per output pixel the two source rows and columns (clamped: the border replicates) with integer
 * weights summing to 2·scale each; out = floor((Σ w·x + d/2) / d), d = 4·scale_h·scale_w. The codes keep their
 * quantization.
 */
typedef struct {
    int32_t in_h, in_w, channels;   /* the input map */
    int32_t scale_h, scale_w;       /* integer factors >= 1 */
    int32_t flags;                  /* 0 */
} ek_bilinear_params_t;

#define EK_NN_BILINEAR_INT_FIELDS 6

/* EK_NN_OK or EK_NN_ERR_ARG; any alignment, not in place. */
int ek_bilinear_s8(const ek_bilinear_params_t *p, const int8_t *input, int8_t *output);

/*
 * Elementwise product of two int8 tensors (edgekit/qgraph.py's mul): acc = (a - a_zp) * (b - b_zp) on 64 bits,
 * out = clamp(out_zp + ((acc * mult + 2^(shift-1)) >> shift)). `a` is `rows` rows of `channels`; `b` the same
 * shape, or with b_per_channel one row of `channels` (a squeeze-excite gate, broadcast over every row).
 */
typedef struct {
    int32_t rows, channels;         /* a: rows x channels (NHWC: pixels x C) */
    int32_t b_per_channel;          /* 1: b is one row of channels, 0: b as a */
    int32_t a_offset, b_offset;     /* -(zero point) of each input */
    int32_t out_offset;             /* output zero point */
    int32_t act_min, act_max;
    int32_t mult, shift;
    int32_t flags;                  /* 0 */
} ek_mul_params_t;

#define EK_NN_MUL_INT_FIELDS 11

/* The product above; any alignment. Returns EK_NN_OK or EK_NN_ERR_ARG. */
int ek_mul_s8(const ek_mul_params_t *p, const int8_t *a, const int8_t *b, int8_t *out);

/*
 * Concatenation of int8 tensors along their last axis (NHWC channels): rows of each input, part after part, each
 * part requantized to the output's scale (edgekit/qgraph.py's concat) through a 256-byte table indexed by the input
 * byte read as unsigned, or copied where that requantization is the identity (kernel_pack.pack_concat).
 */
typedef struct {
    int32_t rows;                   /* elements of the output / out_c */
    int32_t out_c;                  /* length of an output row: the sum of the parts' */
    int32_t parts;                  /* inputs */
    int32_t flags;                  /* 0 */
    const int32_t *part_info;       /* [parts][2]: the part's row length, its table (-1: a copy) */
    const int8_t *tables;           /* [tables][256], or NULL when every part is a copy */
} ek_concat_params_t;

#define EK_NN_CONCAT_INT_FIELDS 4

/* Concatenate inputs[0 .. parts-1] into output (see ek_concat_params_t); any alignment, no aliasing of the output
 * with an input. Returns EK_NN_OK or EK_NN_ERR_ARG. */
int ek_concat_s8(const ek_concat_params_t *p, const int8_t *const *inputs, int8_t *output);

/* Batched 2-D transpose of bytes: output[b][c][r] = input[b][r][c] for b < batches, r < rows, c < cols (a layout
 * move: a channel shuffle per pixel, NHWC to torch order, a Conv1d's [C, L] to [L, C]); any alignment, no aliasing. */
typedef struct {
    int32_t batches;
    int32_t rows;
    int32_t cols;
    int32_t flags;                  /* 0 */
} ek_transpose_params_t;

#define EK_NN_TRANSPOSE_INT_FIELDS 4

int ek_transpose_s8(const ek_transpose_params_t *p, const int8_t *input, int8_t *output);

/* Nearest-neighbour upsampling of an NHWC map by integer factors: output[y][x][c] = input[y / scale_h][x / scale_w][c]
 * for y < in_h * scale_h, x < in_w * scale_w (a layout move: the int8 codes keep their quantization); any alignment,
 * no aliasing. */
typedef struct {
    int32_t in_h;
    int32_t in_w;
    int32_t channels;
    int32_t scale_h;
    int32_t scale_w;
    int32_t flags;                  /* 0 */
} ek_upsample_params_t;

#define EK_NN_UPSAMPLE_INT_FIELDS 6

int ek_upsample_s8(const ek_upsample_params_t *p, const int8_t *input, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* EK_NN_S8_H */

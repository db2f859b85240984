"""Sparse (pruned) int8 layers on the Cortex-M target: the compressed weight format round-trips, the kernels of
targets/mcu/platforms/cortex_m/kernels/ek_sparse_s8.c match the host integer reference (edgekit.intref) bit for bit, and a pruned
model compiles with them, runs bit-exact on the emulated board and needs less flash than its dense build.

Kernels run through one firmware per core (tests/firmware/sparse_kernels_main.c, the same blob-of-cases scheme as
tests/kernel_harness.py): Cortex-M7 (QEMU mps2-an500) and Cortex-M4 (an386) through the DSP path, the M7 again with
the portable C path forced (-DEK_NN_PORTABLE), and the portable path built with the host compiler. Output buffers are
pre-filled with a sentinel, so a write outside the output window fails the comparison too.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgekit import intref, qmath
from edgekit.targets.mcu import kernel_pack, sparse_pack as sp
from kernel_harness import FIRMWARE_DIR, KERNEL_DIR, expected_buffer, place_rows

HAVE_ARM = shutil.which("arm-none-eabi-gcc") is not None and shutil.which("qemu-system-arm") is not None
needs_arm = pytest.mark.skipif(not HAVE_ARM, reason="arm-none-eabi-gcc and qemu-system-arm are not installed")
SPARSITIES = (0.5, 0.8, 0.9, 0.95)


# ---- harness: cases -> blob -> firmware (or host build) -> outputs --------------------------------------------------

@dataclass
class SparseCase:
    name: str
    layer: sp.SparseLayer
    input: np.ndarray  # int8, the whole input buffer
    output_bytes: int
    expected: np.ndarray  # int8, the whole output buffer (sentinel outside the window)
    nonzero_macs: int  # entries x output pixels (fillers included) x batch rows


@dataclass
class SparseResult:
    rc: int
    output: np.ndarray
    instructions: int | None


def build_blob(cases: list[SparseCase]) -> bytes:
    """The case table sparse_kernels_main.c reads (format in its header comment)."""
    header_words = 4 + 12 * len(cases)
    blob = bytearray(4 * header_words)
    table = []
    for case in cases:
        def put(data):
            if data is None:
                return -1
            blob.extend(b"\0" * (-len(blob) % 8))
            offset = len(blob)
            blob.extend(np.ascontiguousarray(data).tobytes())
            return offset
        layer = case.layer
        op = 0 if layer.kind == "sparse_conv2d" else 1
        table.append([op, len(layer.params), put(layer.param_words()), put(layer.counts), put(layer.pairs),
                      put(layer.bias), put(layer.requant), put(case.input.astype(np.int8)), case.output_bytes,
                      layer.scratch_bytes, 0, 0])
    words = [0x50534B45, len(cases), max([c.layer.scratch_bytes for c in cases] + [0]),
             max([c.output_bytes for c in cases] + [0])] + [w for e in table for w in e]
    blob[: 4 * header_words] = np.array(words, dtype=np.int32).tobytes()
    blob.extend(b"\0" * (-len(blob) % 8))
    return bytes(blob)


def _parse(output: str, cases, counts) -> list[SparseResult]:
    lines = [line for line in output.splitlines() if line.startswith("case ")]
    if len(lines) != len(cases) or "done" not in output:
        raise RuntimeError(f"runner printed {len(lines)} of {len(cases)} cases; output tail: {output[-500:]}")
    results = []
    for i, line in enumerate(lines):
        parts = line.split()
        out = np.frombuffer(bytes.fromhex(parts[5] if len(parts) > 5 else ""), dtype=np.int8)
        results.append(SparseResult(int(parts[3]), out, counts[2 * i] if counts else None))
    return results


def run_on_qemu(cases: list[SparseCase], board: str, build_dir: Path, opt: str = "-O2",
                extra_cflags: tuple[str, ...] = (), count_instructions: bool = True) -> list[SparseResult]:
    """Build the runner with ek_sparse_s8.c for ``board`` and run all cases under QEMU."""
    from edgekit.runtimes.qemu import run_elf
    from edgekit.targets.mcu.platforms.cortex_m import PLATFORM

    build_dir = Path(build_dir)
    support = PLATFORM.write_board_support(board, build_dir, stack_bytes=16 * 1024)
    (build_dir / "cases.bin").write_bytes(build_blob(cases))
    elf = build_dir / "sparse_kernels.elf"
    cmd = ["arm-none-eabi-gcc", *PLATFORM.cflags(board), opt, "-std=c11", "-Wall", "-Wextra", "-Werror", *extra_cflags,
           f"-I{support.include_dir}", f"-I{KERNEL_DIR}", f"-Wa,-I{build_dir}",
           str(FIRMWARE_DIR / "sparse_kernels_main.c"), str(FIRMWARE_DIR / "cases_blob.S"),
           str(KERNEL_DIR / "ek_sparse_s8.c"), *map(str, support.sources), *PLATFORM.link_flags(support.linker_script),
           "-o", str(elf)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    run = run_elf(elf, board, timeout_s=300, count_instructions=count_instructions)
    return _parse(run.output, cases, run.between_markers() if count_instructions else None)


def run_on_host(cases: list[SparseCase], build_dir: Path) -> list[SparseResult]:
    """Build the runner with the host compiler (portable C) and run all cases natively."""
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    blob = build_dir / "cases.bin"
    blob.write_bytes(build_blob(cases))
    exe = build_dir / "sparse_kernels_host"
    subprocess.run(["gcc", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-DEK_HOST", f"-I{KERNEL_DIR}",
                    str(FIRMWARE_DIR / "sparse_kernels_main.c"), str(KERNEL_DIR / "ek_sparse_s8.c"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    result = subprocess.run([str(exe), str(blob)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"host runner exited {result.returncode}: {result.stdout[-500:]} {result.stderr[-500:]}")
    return _parse(result.stdout, cases, None)


# ---- random sparse layers -------------------------------------------------------------------------------------------

def sparse_weights(rng, shape, sparsity: float, extremes: bool = False) -> np.ndarray:
    """int8 weights with a fraction ``sparsity`` of exact zeros at random places (non-zeros in [-128, 127])."""
    w = rng.integers(-127, 128, shape)
    w = np.where(w == 0, 1, w)
    if extremes:
        w = np.where(rng.random(shape) < 0.05, rng.choice([-128, 127], shape), w)
    keep = rng.random(shape) >= sparsity
    return np.where(keep, w, 0).astype(np.int8)


def _quant(rng, channels: int, fan_in: int, big_mult=False):
    """Zero points and per-channel (mult, shift): typical (real multiplier ~ 1/(40 sqrt(fan_in)), shift > 32: the
    table's SMMLA form), ``big_mult=True`` (real in [0.26, 0.9): shift 31-32) or ``big_mult=(lo, hi)`` (real in
    [lo, hi), e.g. large enough that the doubled accumulators saturate)."""
    x_zp = int(rng.integers(-128, 128))
    out_zp = int(rng.integers(-100, 100))
    if big_mult is True:
        big_mult = (0.26, 0.9)
    real = rng.uniform(*big_mult, channels) if big_mult else rng.uniform(0.3, 1.5, channels) / (np.sqrt(fan_in) * 40)
    mult, shift = qmath.quantize_multipliers(real)
    return x_zp, out_zp, mult, shift


def _act(kind: str, out_zp: int) -> tuple[int, int]:
    return {"relu": (out_zp, 127), "relu6": (out_zp, min(127, out_zp + 90))}.get(kind, (-128, 127))


def conv_case(rng, name, h, w, cin, cout, k, sparsity, *, stride=1, dilation=1, padding=0, in_extra=0, out_extra=0,
              act="none", bias=True, big_mult=False, weights=None, zero_channel=False, probe=False) -> SparseCase:
    """A random sparse convolution and its expected output buffer. ``probe``: inputs within 3 of the zero point and
    weights in [-2, 2], so that accumulators stay small and large multipliers still give mostly unclamped outputs
    (an error of one accumulator unit then shows)."""
    kh, kw = (k, k) if np.isscalar(k) else k
    x = rng.integers(-128, 128, (h, w, cin), dtype=np.int8)
    wt = sparse_weights(rng, (cout, cin, kh, kw), sparsity, extremes=True) if weights is None else weights
    b = rng.integers(-20000, 20000, cout).astype(np.int32) if bias else None
    x_zp, out_zp, mult, shift = _quant(rng, cout, max(1, int(np.count_nonzero(wt)) // cout), big_mult)
    if probe:
        x = np.clip(x_zp + rng.integers(-3, 4, x.shape), -128, 127).astype(np.int8)
        wt = np.sign(wt) * rng.integers(1, 3, wt.shape)
        wt = wt.astype(np.int8)
        b = None if b is None else rng.integers(-20, 20, cout).astype(np.int32)
    if zero_channel:
        mult[0], shift[0] = 0, 1
    act_min, act_max = _act(act, out_zp)
    common = dict(x_zp=x_zp, out_zp=out_zp, act_min=act_min, act_max=act_max, stride=stride, dilation=dilation,
                  padding=padding)
    ref = intref.conv2d(x, wt, b, mult=mult, shift=shift, **common)
    in_rs, out_rs = w * cin + in_extra, ref.shape[1] * cout + out_extra
    layer = sp.pack_sparse_conv2d(wt, b, mult, shift, input_shape=(h, w, cin), in_row_stride=in_rs,
                                  out_row_stride=out_rs, **common)
    out_bytes = out_rs * ref.shape[0]
    return SparseCase(name, layer, place_rows(x, in_rs, in_rs * h, fill=7), out_bytes,
                      expected_buffer(ref, out_rs, out_bytes), layer.entries * ref.shape[0] * ref.shape[1])


def fc_case(rng, name, n_in, n_out, sparsity, *, batch=1, act="none", big_mult=False, in_extra=0, out_extra=0,
            weights=None, bias=True) -> SparseCase:
    x = rng.integers(-128, 128, (batch, n_in), dtype=np.int8)
    wt = sparse_weights(rng, (n_out, n_in), sparsity, extremes=True) if weights is None else weights
    b = rng.integers(-20000, 20000, n_out).astype(np.int32) if bias else None
    x_zp, out_zp, mult, shift = _quant(rng, n_out, max(1, int(np.count_nonzero(wt)) // n_out), big_mult)
    act_min, act_max = _act(act, out_zp)
    q = dict(x_zp=x_zp, out_zp=out_zp, act_min=act_min, act_max=act_max)
    ref = intref.fully_connected(x, wt, b, mult=mult, shift=shift, **q)
    in_rs, out_rs = n_in + in_extra, n_out + out_extra
    layer = sp.pack_sparse_fully_connected(wt, b, mult, shift, batch=batch, in_row_stride=in_rs,
                                           out_row_stride=out_rs, **q)
    out_bytes = out_rs * batch
    return SparseCase(name, layer, place_rows(x, in_rs, in_rs * batch, fill=7), out_bytes,
                      expected_buffer(ref, out_rs, out_bytes), layer.entries * batch)


def _all_cases() -> list[SparseCase]:
    rng = np.random.default_rng(20240612)
    c = []
    for s in SPARSITIES:
        tag = f"{s:.0%}"
        c.append(conv_case(rng, f"conv3x3 16x16x16->32 pad1 {tag}", 16, 16, 16, 32, 3, s, padding=1))
        c.append(conv_case(rng, f"conv3x3 odd 9x11x7->5 s2 asym pad relu {tag}", 9, 11, 7, 5, 3, s, stride=2,
                           padding=(1, 0, 2, 1), act="relu"))
        c.append(conv_case(rng, f"conv1x1 13->22 row strides {tag}", 5, 7, 13, 22, 1, s, in_extra=9, out_extra=6))
        c.append(fc_case(rng, f"fc 256->64 {tag}", 256, 64, s))
        c.append(fc_case(rng, f"fc 333->9 batch 3 relu row strides {tag}", 333, 9, s, batch=3, act="relu",
                         in_extra=5, out_extra=3))
    c.append(conv_case(rng, "conv3x3 3->16 s2 first layer 80%", 21, 20, 3, 16, 3, 0.8, stride=2,
                       padding=(0, 1, 0, 1), act="relu6"))
    c.append(conv_case(rng, "conv5x5 6->9 pad2 no bias 90%", 10, 9, 6, 9, 5, 0.9, padding=2, bias=False))
    c.append(conv_case(rng, "conv3x3 dil2 8->12 90%", 11, 10, 8, 12, 3, 0.9, dilation=2, padding=2))
    c.append(conv_case(rng, "conv3x5 dil(2,3) s(2,1) 5->7 80%", 13, 14, 5, 7, (3, 5), 0.8, dilation=(2, 3),
                       stride=(2, 1), padding=(2, 1, 3, 4), in_extra=3, act="relu"))
    c.append(conv_case(rng, "conv3x3 64-bit requant 8->6 80%", 7, 6, 8, 6, 3, 0.8, padding=1, big_mult=True))
    # multipliers too large for the table's SMMLA form (the asm's preshift form), a mult = 0 channel, saturation
    c.append(conv_case(rng, "conv1x1 preshift 16x8x24->20 90% relu", 16, 8, 24, 20, 1, 0.9, act="relu",
                       big_mult=(0.26, 3.0), zero_channel=True, probe=True))
    c.append(conv_case(rng, "conv3x3 preshift 8x8x6->10 80%", 8, 8, 6, 10, 3, 0.8, padding=1, big_mult=(0.26, 3.0),
                       probe=True))
    c.append(conv_case(rng, "conv3x3 probe 8x8x16->12 90% relu", 8, 8, 16, 12, 3, 0.9, padding=1, act="relu",
                       big_mult=(0.01, 0.2), probe=True))
    c.append(conv_case(rng, "conv1x1 preshift saturating 8x8x40->12 80% relu6", 8, 8, 40, 12, 1, 0.8,
                       act="relu6", big_mult=(100.0, 5000.0)))
    c.append(conv_case(rng, "conv7x1 1->3 tall 50%", 12, 3, 1, 3, (7, 1), 0.5, padding=(3, 3, 0, 0)))
    c.append(conv_case(rng, "conv1x1 1x1 pixel 40->24 95%", 1, 1, 40, 24, 1, 0.95))
    c.append(conv_case(rng, "conv1x1 16x8x12->20 95% relu (many empty channels)", 16, 8, 12, 20, 1, 0.95,
                       act="relu"))
    c.append(conv_case(rng, "conv1x1 16x8x12->20 95% (many empty channels)", 16, 8, 12, 20, 1, 0.95))
    c.append(conv_case(rng, "conv3x3 3x3 pixels (one partial tile) 10->10 90%", 3, 3, 10, 10, 3, 0.9, padding=1))
    # long gaps (filler entries), empty channels, a dense channel
    w = np.zeros((6, 64, 3, 3), dtype=np.int8)  # K = 576
    w[0, 0, 0, 0], w[0, 63, 2, 2] = 5, -7  # gap of 575 columns: two fillers
    w[1, 40, 1, 1] = -128
    w[3] = sparse_weights(rng, (64, 3, 3), 0.0)
    w[5, 5, 2, 2] = 127
    c.append(conv_case(rng, "conv3x3 K=576 fillers, empty and dense channels", 6, 5, 64, 6, 3, 0.0, padding=1,
                       weights=w))
    wf = np.zeros((5, 1000), dtype=np.int8)
    wf[0, 999], wf[1, 0], wf[1, 256], wf[1, 511] = 3, -128, 127, 1  # gaps 999, 256, 255
    wf[3] = sparse_weights(rng, (1000,), 0.0)
    c.append(fc_case(rng, "fc 1000->5 fillers, empty and dense rows batch 2", 1000, 5, 0.0, batch=2, weights=wf))
    c.append(fc_case(rng, "fc 64->10 all zero, no bias", 64, 10, 0.0, weights=np.zeros((10, 64), np.int8),
                     bias=False))
    c.append(fc_case(rng, "fc 333->9 64-bit requant 90%", 333, 9, 0.9, big_mult=True))
    return c


CASES = _all_cases()


def _check(results, cases=CASES):
    bad = []
    for case, result in zip(cases, results):
        if result.rc != 0:
            bad.append(f"{case.name}: returned {result.rc}")
        elif not np.array_equal(result.output, case.expected):
            diff = np.nonzero(result.output != case.expected)[0]
            bad.append(f"{case.name}: {diff.size} bytes differ, first at {diff[0]}")
    assert not bad, "; ".join(bad)


# ---- the format -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sparsity", (0.0,) + SPARSITIES + (0.999,))
def test_format_round_trips(sparsity):
    rng = np.random.default_rng(int(sparsity * 1000))
    for shape in ((7, 3), (16, 300), (5, 2000), (1, 1)):
        m = sparse_weights(rng, shape, sparsity, extremes=True)
        counts, pairs = sp.encode_rows(m)
        assert counts.dtype == np.int16 and pairs.dtype == np.uint8
        assert np.array_equal(sp.decode_rows(counts, pairs, shape[1]), m)
        assert sp.stored_weight_bytes(m) == counts.nbytes + pairs.nbytes


def test_fillers_bridge_long_gaps():
    m = np.zeros((3, 1200), dtype=np.int8)
    m[0, 1199] = 1                       # 1199 = 4 * 255 + 179: four fillers
    m[1, [0, 255, 511]] = [2, 3, 4]      # gaps 255 (no filler) and 256 (one)
    counts, pairs = sp.encode_rows(m)
    assert counts.tolist() == [5, 4, 0]
    assert pairs[0:10:2].tolist() == [255, 255, 255, 255, 179] and pairs[1:10:2].tolist() == [0, 0, 0, 0, 1]
    assert np.array_equal(sp.decode_rows(counts, pairs, 1200), m)


def test_packed_conv_columns_follow_the_nhwc_window():
    rng = np.random.default_rng(3)
    w = sparse_weights(rng, (4, 5, 3, 2), 0.7)
    layer = sp.pack_sparse_conv2d(w, None, [1 << 30] * 4, [40] * 4, input_shape=(6, 6, 5), x_zp=0, out_zp=0)
    dense = sp.decode_rows(layer.counts, layer.pairs, 3 * 2 * 5).reshape(4, 3, 2, 5)
    assert np.array_equal(dense.transpose(0, 3, 1, 2), w)
    assert tuple(layer.params) == sp.SCONV_FIELDS
    assert layer.stored_weight_bytes == 2 * 4 + 2 * layer.entries


def test_dense_byte_count_is_what_the_dense_packer_stores():
    rng = np.random.default_rng(4)
    for shape, dil in (((5, 7, 3, 3), 1), ((4, 3, 3, 3), 2), ((9, 6, 1, 1), 1), ((3, 5, 2, 5), 1)):
        w = sparse_weights(rng, shape, 0.5)
        packed = kernel_pack.pack_conv2d(w, None, [1 << 30] * shape[0], [40] * shape[0], input_shape=(12, 12, shape[1]),
                                         x_zp=0, out_zp=0, dilation=dil, padding=2)
        assert sp.dense_weight_bytes(w, dil, bool(packed.params["flags"] & kernel_pack.FLAG_CONV_FC)) == \
            packed.weights.size
    for shape in ((10, 32), (3, 7), (13, 1000)):
        w = sparse_weights(rng, shape, 0.5)
        packed = kernel_pack.pack_fully_connected(w, None, [1 << 30] * shape[0], [40] * shape[0], x_zp=0, out_zp=0)
        assert sp.dense_weight_bytes(w) == packed.weights.size


def test_sparse_pays_only_when_the_compressed_form_is_smaller():
    rng = np.random.default_rng(5)
    for shape in ((32, 32, 3, 3), (10, 32), (64, 256)):
        assert not sp.sparse_pays(sparse_weights(rng, shape, 0.0))
        assert not sp.sparse_pays(sparse_weights(rng, shape, 0.5))
        for s in (0.8, 0.9, 0.95):
            w = sparse_weights(rng, shape, s)
            assert sp.sparse_pays(w)
            assert sp.stored_weight_bytes(w) <= sp.PAYS_RATIO * sp.dense_weight_bytes(w)
    w90 = sparse_weights(rng, (64, 64, 3, 3), 0.9)
    assert sp.stored_weight_bytes(w90) <= 0.35 * sp.dense_weight_bytes(w90)


def _c_struct_int_fields(struct_name: str) -> list[str]:
    import re

    header = (KERNEL_DIR / "ek_sparse_s8.h").read_text()
    body = re.search(r"typedef struct \{((?:(?!typedef).)*?)\} " + struct_name + ";", header, re.S).group(1)
    fields = []
    for line in body.splitlines():
        line = line.split("/*")[0].strip()
        if line.startswith("int32_t "):
            fields += [f.strip() for f in line[len("int32_t "):].rstrip(";").split(",")]
    return fields


def test_param_fields_match_the_c_structs():
    assert list(sp.SCONV_FIELDS) == _c_struct_int_fields("ek_sconv_params_t")
    assert list(sp.SFC_FIELDS) == _c_struct_int_fields("ek_sfc_params_t")


# ---- the kernels ----------------------------------------------------------------------------------------------------

def test_portable_c_on_host_matches_reference(tmp_path):
    _check(run_on_host(CASES, tmp_path))


@needs_arm
@pytest.mark.parametrize("board, cflags", [
    ("mps2-an500", ()),                       # Cortex-M7, DSP path
    ("mps2-an386", ()),                       # Cortex-M4, DSP path
    ("mps2-an500", ("-DEK_NN_PORTABLE",)),    # Cortex-M7, portable C path
], ids=["m7", "m4", "m7-portable"])
def test_firmware_matches_reference(tmp_path, board, cflags):
    _check(run_on_qemu(CASES, board, tmp_path, extra_cflags=cflags, count_instructions=False))


# ---- end to end: a pruned model on the emulated Cortex-M7 -----------------------------------------------------------

@needs_arm
def test_pruned_model_builds_sparse_runs_bit_exact_and_needs_less_flash(tmp_path):
    from edgekit import api
    from edgekit.converters import prune
    from edgekit.model import Model

    dense_model = Model.load("digits-cnn")
    pruned = prune(dense_model, sparsity=0.9, epochs=2, progress=False)  # short fine-tuning keeps the test fast
    sparse_art = api.compile(pruned, "cortex-m7", tmp_path / "sparse", quantize="int8")
    dense_art = api.compile(dense_model, "cortex-m7", tmp_path / "dense", quantize="int8")

    build = sparse_art.report["build"]
    assert "ek_sconv" in build["step_kernels"]
    assert (tmp_path / "sparse" / "src" / "ek_sparse_s8.c").is_file()
    layers = {w["layer"]: w for w in build["layer_weights"]}
    for name in ("features.1.0", "features.3.0"):  # the pruned convs: compressed, and really smaller
        assert layers[name]["format"] == "sparse"
        assert layers[name]["weights_stored_bytes"] <= sp.PAYS_RATIO * layers[name]["weights_dense_bytes"]
    # the barely pruned first conv (144 weights) and classifier (320) follow: a few bytes more, and the dense
    # kernels' code drops out of the firmware
    assert layers["features.0.0"]["format"] == layers["classifier"]["format"] == "sparse"
    assert "Weights in flash per layer" in (tmp_path / "sparse" / "report.html").read_text()

    measured = api.profile(tmp_path / "sparse").measured
    assert measured["outputs_match"] and measured["max_abs_err_lsb"] == 0
    assert measured["accuracy"] > 0.8
    dense_build = dense_art.report["build"]
    assert not {"ek_sconv", "ek_sfc"} & set(dense_build["step_kernels"])  # an unpruned model stays dense
    assert build["model_flash_bytes"] < dense_build["model_flash_bytes"]
    stored = sum(w["weights_stored_bytes"] for w in build["layer_weights"])
    dense = sum(w["weights_dense_bytes"] for w in dense_build["layer_weights"])
    assert stored <= 0.35 * dense

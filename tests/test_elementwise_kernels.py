"""edgekit's int8 add, pooling and table kernels (ek_add_s8, ek_pool_s8, ek_lut_s8 in
targets/mcu/platforms/cortex_m/kernels/ek_nn_s8.c) match the host integer reference's contracts (edgekit/qgraph.py)
bit for bit on the DSP cores — the M7 (QEMU mps2-an500), the M4 (an386) and the M55's DSP path (an547) — and in the
portable C build (an rv32imc core, the host). Random zero points, multipliers, shifts, clamps, window overhangs and
lengths that are not multiples of 4 cover the SMLAD add (FLAG_ADD_PAIRS) and its tail, the SIMD pooling loops
(2x2 / 3x3 max, 2x2 and global average, the generic windows) and the table lookup; the SMLAD add's 32-bit identity
is also checked in numpy over many random multipliers.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit import qmath
from edgekit.targets.mcu import kernel_pack as kp
from kernel_harness import Case, run_on_host, run_on_qemu

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from elementwise import lut_of, ref_add, ref_pool  # noqa: E402

try:
    import torch
    HAVE_TORCH = True
except ImportError:  # (the kernel cases need numpy only)
    HAVE_TORCH = False

HAVE_ARM = shutil.which("arm-none-eabi-gcc") is not None and shutil.which("qemu-system-arm") is not None
needs_arm = pytest.mark.skipif(not HAVE_ARM, reason="arm-none-eabi-gcc and qemu-system-arm are not installed")
HAVE_RISCV = shutil.which("riscv64-unknown-elf-gcc") is not None and shutil.which("qemu-system-riscv32") is not None
needs_riscv = pytest.mark.skipif(not HAVE_RISCV, reason="riscv64-unknown-elf-gcc and qemu-system-riscv32 are not "
                                                        "installed")


def _cases(seed: int = 7) -> list[tuple[Case, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(8):  # adds: scales near 1 (shift ~30-31) and far from it, clamps, odd lengths
        n = int(rng.integers(1, 700)) if i % 2 else 4 * int(rng.integers(1, 200))
        ratio = rng.uniform(0.2, 3.0, 2)
        if i % 2:  # qgraph's multipliers (15 significant bits: the one-SMLAD path) and full ones (two SMLADs)
            am, bm, shift = qmath.add_multipliers(*(float(r) for r in ratio))
            assert am % (1 << 16) == 0 and bm % (1 << 16) == 0
        else:
            _, shift = qmath.quantize_multiplier(float(ratio.max()))
            am, bm = (int(round(r * 2.0 ** shift)) for r in ratio)
        za, zb, zo = (int(v) for v in rng.integers(-128, 128, 3))
        lo, hi = (-128, 127) if i < 4 else (int(rng.integers(-128, 0)), int(rng.integers(0, 128)))
        q = dict(a_zp=za, b_zp=zb, a_mult=am, b_mult=bm, shift=int(shift), out_zp=zo, act_min=lo, act_max=hi)
        layer = kp.pack_add(n, **q)
        assert layer.params["flags"] & kp.FLAG_ADD_PAIRS  # the path under test
        a = rng.integers(-128, 128, n).astype(np.int8)
        b = rng.integers(-128, 128, n).astype(np.int8)
        out.append((Case(f"add {n}", layer, np.concatenate([a, b]), n), ref_add(a, b, **q)))
        if i < 3:  # the same add on a patch tile's windows: rows of n elements inside wider rows of a and b
            rows, sa, sb = 3 + i, n + 4 * i + 1, n + 7
            layer = kp.pack_add(n, **q, rows=rows, row_strides=(sa, sb, n))
            a2 = rng.integers(-128, 128, (rows, sa)).astype(np.int8)
            b2 = rng.integers(-128, 128, (rows, sb)).astype(np.int8)
            ref = ref_add(a2[:, :n].reshape(-1), b2[:, :n].reshape(-1), **q)
            out.append((Case(f"add {rows}x{n} in rows of {sa} / {sb}", layer,
                             np.concatenate([a2.reshape(-1), b2.reshape(-1)]), rows * n), ref))
    for i, (rows, ch, gate, real, clamp) in enumerate([  # products: a gate per channel or two maps; the requant
            (36, 16, True, 0.004, False), (9, 24, True, 0.01, True),          # forms: shift > 32 (SSAT / a clamp),
            (20, 12, True, 0.3, False), (7, 5, False, 0.02, False),           # 17..32, and below 17 (64 bits)
            (6, 9, False, 3e3, True), (5, 7, True, 4e4, False),
            # gates over all of int8 four channels a word (ek__mul_gate4) and their last 1-3 channels by column
            (11, 6, True, 0.004, False), (8, 20, True, 0.05, False), (3, 8, True, 0.25, False),
            (13, 11, True, 0.0007, False), (4, 8, True, 0.7, False)]):
        mult, shift = qmath.quantize_multiplier(real)
        za, zb, zo = (int(v) for v in rng.integers(-128, 128, 3))
        lo, hi = (int(rng.integers(-128, 0)), int(rng.integers(0, 128))) if clamp else (-128, 127)
        q = dict(a_zp=za, b_zp=zb, mult=int(mult), shift=int(shift), out_zp=zo, act_min=lo, act_max=hi)
        a = rng.integers(-128, 128, (rows, ch)).astype(np.int8)
        b = rng.integers(-128, 128, (1 if gate else rows, ch)).astype(np.int8)
        ref = qmath.requantize((a.astype(np.int64) - za) * (b.astype(np.int64) - zb), mult, shift, zo, lo, hi)
        layer = kp.pack_mul(rows, ch, b_per_channel=gate, **q)
        out.append((Case(f"mul {rows}x{ch} {'gate' if gate else 'map'} shift {shift}", layer,
                         np.concatenate([a.reshape(-1), b.reshape(-1)]), ref.size), ref.reshape(-1)))
    pools = [("max", (9, 10, 8), (2, 2), (2, 2), (0, 0)), ("max", (9, 9, 12), (3, 3), (2, 2), (1, 1)),
             ("max", (7, 7, 4), (3, 2), (1, 2), (1, 0)), ("avg", (10, 8, 8), (2, 2), (2, 2), (0, 0)),
             ("avg", (9, 9, 12), (3, 3), (2, 2), (1, 1)), ("avg", (5, 5, 40), (5, 5), (1, 1), (0, 0)),
             ("avg", (3, 4, 12), (3, 4), (1, 1), (0, 0)), ("max", (6, 6, 6), (2, 2), (2, 2), (0, 0)),
             # runs of windows inside the map in one call (ek__max2x2_row / ek__max3x3_row): stride 1 and 2, a pad
             # on the left only, one group of 4 channels, an odd width whose last window is partly outside
             ("max", (7, 11, 4), (3, 3), (1, 1), (1, 1)), ("max", (8, 13, 16), (2, 2), (1, 1), (0, 0)),
             ("max", (9, 15, 20), (3, 3), (2, 2), (0, 1)), ("max", (6, 9, 8), (2, 2), (2, 2), (1, 1)),
             # global averages over more pixels than int16 sums hold (ek__gap_s8_dsp: chunks of 255, one partial)
             ("avg", (16, 17, 16), (16, 17), (1, 1), (0, 0)), ("avg", (2, 300, 8), (2, 300), (1, 1), (0, 0)),
             # 1-D max pools (a Kx1 window down one column, run as one row: ek__maxpool_1row): 2 and 3 taps, a
             # window the end cuts (padding 1), a stride longer than the window, 4 and 12 channels; an average one
             ("max", (33, 1, 12), (2, 1), (2, 1), (0, 0)), ("max", (17, 1, 4), (3, 1), (2, 1), (1, 0)),
             ("max", (20, 1, 8), (3, 1), (1, 1), (1, 0)), ("max", (25, 1, 16), (2, 1), (3, 1), (0, 0)),
             ("max", (34, 1, 8), (4, 1), (4, 1), (0, 0)), ("max", (30, 1, 4), (5, 1), (2, 1), (2, 0)),
             ("avg", (18, 1, 8), (3, 1), (2, 1), (1, 0))]
    for mode, hwc, k, s, pads in pools:
        h, w, c = hwc
        oh, ow = (h + 2 * pads[0] - k[0]) // s[0] + 1, (w + 2 * pads[1] - k[1]) // s[1] + 1
        x = rng.integers(-128, 128, hwc).astype(np.int8)
        q = {}
        if mode == "avg":
            mult, shift = qmath.quantize_multiplier(float(rng.uniform(0.5, 1.5)) / (k[0] * k[1]))
            q = dict(x_zp=int(rng.integers(-128, 128)), out_zp=int(rng.integers(-128, 128)), mult=int(mult),
                     shift=int(shift))
        layer = kp.pack_pool(mode, in_hwc=hwc, out_hw=(oh, ow), kernel=k, stride=s, pad_top=pads[0],
                             pad_left=pads[1], **q)
        ref = ref_pool(x, mode, k, s, pads, (oh, ow), q.get("x_zp", 0), q.get("mult", 0), q.get("shift", 1),
                       q.get("out_zp", 0))
        out.append((Case(f"{mode} pool {hwc}", layer, x.reshape(-1), ref.size), ref.reshape(-1)))
    for b, r, c in ((3, 4, 8), (2, 4, 4), (1, 4, 20), (3, 2, 8), (2, 2, 4), (1, 9, 6), (2, 7, 13), (5, 1, 3), (1, 16, 12)):  # transposes:
        # 4x4 blocks and edges; 4 or 2 rows (a 4- or 2-group channel shuffle): one to five blocks a pixel
        x = rng.integers(-128, 128, (b, r, c)).astype(np.int8)
        out.append((Case(f"transpose {b}x{r}x{c}", kp.pack_transpose(b, r, c), x.reshape(-1), x.size),
                     x.transpose(0, 2, 1).reshape(-1)))
    # upsampling: 16 / 8 / 48 channels doubled (LDM/STM loops), 32 channels tripled (a copy per pixel), words stored
    # k times, bytes (channels not a multiple of 4), rows only
    for (h, w, c), (sh, sw) in (((5, 7, 16), (2, 2)), ((3, 5, 8), (2, 2)), ((2, 3, 48), (2, 2)), ((3, 2, 32), (2, 3)),
                                ((3, 4, 4), (1, 3)), ((4, 3, 3), (2, 2)), ((2, 5, 12), (3, 1))):
        x = rng.integers(-128, 128, (h, w, c)).astype(np.int8)
        out.append((Case(f"upsample {h}x{w}x{c} by {sh}x{sw}", kp.pack_upsample((h, w, c), (sh, sw)), x.reshape(-1),
                         x.size * sh * sw), x.repeat(sh, 0).repeat(sw, 1).reshape(-1)))
    for fn, n in (("hardswish", 203), ("sigmoid", 64), ("tanh", 7)):
        lut = lut_of(fn, x_scale=float(rng.uniform(0.01, 0.1)), x_zp=int(rng.integers(-20, 20)),
                     out_scale=float(rng.uniform(0.005, 0.05)), out_zp=int(rng.integers(-20, 20)))
        x = rng.integers(-128, 128, n).astype(np.int8)
        out.append((Case(f"{fn} {n}", kp.pack_lut(lut, n), x, n), lut[x.astype(np.int16) + 128]))
    return out


def _check(results, cases):
    for (case, expected), res in zip(cases, results):
        assert res.rc == 0, case.name
        assert np.array_equal(res.output, expected), case.name


@needs_arm
@pytest.mark.parametrize("board, cflags", [
    ("mps2-an500", ()), ("mps2-an386", ()), ("mps3-an547", ()),
    # the add's SMLAD loops and the chunked global pool left out (a firmware none of whose calls runs them): the C
    # loops compute the same outputs
    ("mps2-an500", ("-DEK_NN_NO_ADD4=1", "-DEK_NN_NO_ADD4_CLAMP=1", "-DEK_NN_NO_ADD4S=1", "-DEK_NN_NO_ADD4S_CLAMP=1",
                    "-DEK_NN_NO_GAP=1", "-DEK_NN_NO_MAXROWS=1", "-DEK_NN_NO_MAXROW1=1")),
], ids=["m7", "m4", "m55", "m7-loops-left-out"])
def test_elementwise_kernels_bit_exact_on_dsp_cores(board, cflags, tmp_path):
    cases = _cases()
    _check(run_on_qemu([c for c, _ in cases], board, tmp_path, count_instructions=False, extra_cflags=cflags), cases)


@pytest.mark.skipif(shutil.which("riscv64-unknown-elf-gcc") is None or shutil.which("qemu-system-riscv32") is None,
                    reason="the RISC-V toolchain and QEMU are not installed")
def test_elementwise_kernels_bit_exact_on_rv32(tmp_path):
    # the portable C paths on an rv32imc core (the DSP flags packed for Arm are ignored there)
    cases = _cases()
    _check(run_on_qemu([c for c, _ in cases], "virt-rv32imc", tmp_path, count_instructions=False), cases)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host C compiler")
def test_elementwise_kernels_bit_exact_portable(tmp_path):
    cases = _cases()
    _check(run_on_host([c for c, _ in cases], tmp_path), cases)


def test_a_wrong_table_or_operand_is_caught():
    # the comparison the kernel tests rely on can fail: the reference of a shuffled table or a swapped add differs
    rng = np.random.default_rng(0)
    lut = lut_of("hardswish")
    x = rng.integers(-128, 128, 64).astype(np.int8)
    assert not np.array_equal(np.roll(lut, 1)[x.astype(np.int16) + 128], lut[x.astype(np.int16) + 128])
    table = kp.pack_lut(lut, 64).weights
    assert np.array_equal(table[x.view(np.uint8)], lut[x.astype(np.int16) + 128])  # the kernel's indexing


def test_add_pairs_form_is_exact():
    # ek_add_s8's SMLAD form: multipliers split at 2**16 into int16 halves, int32 sums, against the 64-bit contract
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(300):
        shift = int(rng.integers(17, 40))
        am, bm = (int(v) for v in rng.integers(0, 1 << 31, 2))
        za, zb, zo = (int(v) for v in rng.integers(-128, 128, 3))
        if not kp._add_pairs_exact(za, zb, am, bm, shift, zo):
            continue
        checked += 1
        rs = shift - 16
        ah, bh = (am + 0x8000) >> 16, (bm + 0x8000) >> 16
        al, bl = am - (ah << 16), bm - (bh << 16)
        assert max(ah, bh, abs(al), abs(bl)) <= 1 << 15 and al >= -(1 << 15) and bl >= -(1 << 15)
        a = rng.integers(-128, 128, 256)
        b = rng.integers(-128, 128, 256)
        h = a * ah + b * bh - (za * ah + zb * bh) + (1 << (rs - 1)) + zo * (1 << rs)
        lo = a * al + b * bl - (za * al + zb * bl)
        assert np.abs(h).max() < 2**31 and np.abs(lo).max() < 2**31  # int32 registers
        got = np.clip((h + (lo >> 16)) >> rs, -128, 127)
        want = np.clip(qmath.rshift_round((a - za) * am + (b - zb) * bm, shift) + zo, -128, 127)
        assert np.array_equal(got, want)
    assert checked > 100


class _Net(torch.nn.Module if HAVE_TORCH else object):
    """Every layer the elementwise kernels take in a model: max 3x3 s2 and 2x2 pools, a 2x2 average, a residual add
    with a ReLU clamp, hardswish, sigmoid and ReLU layers of their own, a global average pool, channel concatenations
    (parts of 16 and 8 channels; 6, 2 and 6) — and a max pool over 6 channels, which stays on TVM's kernel (ek_pool_s8's
    SIMD path needs channels in fours)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Hardswish(), nn.MaxPool2d(3, 2, padding=1))
        self.side = nn.Conv2d(16, 8, 1)
        self.body = nn.Conv2d(24, 24, 3, padding=1)
        self.pool = nn.Sequential(nn.AvgPool2d(2), nn.Sigmoid(), nn.Conv2d(24, 6, 1), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Conv2d(14, 24, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5))

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.side(x)], 1)                  # 16 + 8 channels
        x = torch.relu(x + self.body(x))
        y = self.pool(x)
        return self.head(torch.cat([y, torch.relu(y[:, :2]), y], 1))  # 6 + 2 + 6 channels, one tensor twice


def _compile_int8(net, size: int, seed: int, out: Path, target: str = "cortex-m7"):
    """``net()`` (seeded) as an int8 model on 8 random 3 x ``size`` x ``size`` inputs, compiled unpatched for the M7
    (or ``target``)."""
    from edgekit import api
    from edgekit.model import Model

    torch.manual_seed(0)
    module = net().eval()
    x = np.random.default_rng(seed).standard_normal((8, 3, size, size)).astype(np.float32)
    y = module(torch.from_numpy(x)).argmax(-1).numpy()
    m = Model.from_module(module, torch.from_numpy(x[:1]), name=out.name, calib=x, test_x=x[:4], test_y=y[:4])
    return api.compile(m, target, out, quantize="int8", patch="off")


@needs_arm
@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_a_model_with_these_layers_builds_bit_exact_on_the_m7(tmp_path):
    from edgekit import api

    art = _compile_int8(_Net, 16, 0, tmp_path / "m7")
    kinds = art.report["build"]["step_kernels"]
    assert kinds.count("ek_pool") == 3 and kinds.count("ek_lut") == 3 and "ek_add" in kinds  # (a lone ReLU too)
    assert kinds.count("ek_concat") == 2
    meas = api.profile(tmp_path / "m7").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0


class _TableNet(torch.nn.Module if HAVE_TORCH else object):
    """A hardswish (ek_lut), a concatenation of two parts (ek_concat), a channel shuffle of 2 groups (ek_transpose)
    and a squeeze-and-excitation product (ek_mul: an NHWC map by a channel vector)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Hardswish())
        self.side = nn.Conv2d(8, 8, 1)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 16, 1), nn.Sigmoid())
        self.head = nn.Sequential(nn.Conv2d(16, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.side(x)], 1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(x * self.se(x))


@needs_arm
@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_table_rows_of_every_elementwise_kind_stay_bit_exact(tmp_path, monkeypatch):
    """A program run from a call table (targets/mcu/templates/call_table.c.j2) with table lookups, a concatenation
    (its two parts: the row's input and its third offset), a layout move and a product: outputs bit for bit."""
    from edgekit import api
    from edgekit.targets.mcu import cost

    import importlib

    quantize = importlib.import_module("edgekit.converters.quantize")  # (the package re-exports its function)
    monkeypatch.setattr(cost, "call_table_pays", lambda prog, platform: True)
    # each concatenation input at its own scale, so that the row runs a part through its table
    monkeypatch.setattr(quantize, "SHARE_CONCAT_SCALES", False)
    art = _compile_int8(_TableNet, 12, 1, tmp_path / "m7")
    kinds = set(art.report["build"]["step_kernels"])
    assert {"ek_lut", "ek_concat", "ek_transpose", "ek_mul"} <= kinds
    source = (tmp_path / "m7" / "src" / "edgekit_model.c").read_text()
    assert "ek_steps_0[" in source
    assert all(f"case EK_STEP_{k}:" in source for k in ("LUT", "CONCAT", "TRANSPOSE", "MUL"))
    meas = api.profile(tmp_path / "m7").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0


class _ConcatNet(torch.nn.Module if HAVE_TORCH else object):
    """Concatenations: parts of 8, 16 and 12 channels (rows of 2, 4 and 3 words), and the model input with a tensor
    that also feeds the first one (both keep their own scales: tables)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(3, 12, 1)
        self.head = nn.Sequential(nn.Conv2d(36 + 11, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x):
        a = torch.relu(self.a(x))
        y = torch.cat([a, self.b(x), torch.relu(self.c(x))], 1)
        z = torch.cat([x, a], 1)
        return self.head(torch.cat([y, z], 1))


@needs_arm
@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_concatenation_inputs_share_its_scale_where_they_can_and_stay_bit_exact(tmp_path):
    """converters/quantize.concat_shared_ranges: a concatenation's input layers take its range (then its parts are
    copies, 4 words a turn), except the model input, another concatenation and a layer feeding two of them."""
    import importlib

    from edgekit import api

    quantize = importlib.import_module("edgekit.converters.quantize")
    art = _compile_int8(_ConcatNet, 8, 2, tmp_path / "m7")
    assert art.report["build"]["step_kernels"].count("ek_concat") == 3
    meas = api.profile(tmp_path / "m7").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0

    from edgekit.model import Model

    torch.manual_seed(0)
    module = _ConcatNet().eval()
    x = np.random.default_rng(2).standard_normal((8, 3, 8, 8)).astype(np.float32)
    g = Model.from_module(module, torch.from_numpy(x[:1]), name="c").deploy_graph
    q = quantize.calibrate(g, x).activations
    quantize.SHARE_CONCAT_SCALES = False
    try:
        own = quantize.calibrate(g, x).activations  # every layer at its own range
    finally:
        quantize.SHARE_CONCAT_SCALES = True
    first, second = [n for n in g.nodes if n.op == "concat"][:2]
    a, b, c = first.inputs
    # the first concatenation's own input layers take its scale (they had their own), except `a`, which feeds the
    # second one too; the model input keeps its own
    assert q[b] == q[c] == q[first.name] and own[b] != q[first.name] and own[c] != q[first.name]
    assert q[a] == own[a] != q[first.name]
    assert q[second.inputs[0]] == own[second.inputs[0]] and g.nodes[0].name == second.inputs[0]


@needs_riscv
@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_concatenations_run_on_the_scalar_cores_bit_exact(tmp_path):
    """ek_concat_s8's portable C on an rv32imc core (esp32-c3): the shared-scale parts copied word by word, the
    others through their tables; outputs bit for bit."""
    from edgekit import api

    art = _compile_int8(_ConcatNet, 8, 2, tmp_path / "rv", target="esp32-c3")
    assert art.report["build"]["step_kernels"].count("ek_concat") == 3
    meas = api.profile(tmp_path / "rv").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0


class _SwishNet(torch.nn.Module if HAVE_TORCH else object):
    """EfficientNet's and ConvMixer's activations: SiLU (nn.SiLU, F.silu and a hand-written x * sigmoid(x)), GELU
    (exact and tanh) and a BatchNorm after an activation (no conv to fold it into: a depthwise 1x1 conv of its own)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.SiLU())
        self.dw = nn.Conv2d(16, 16, 3, 1, 1, groups=16)
        self.mix = nn.Sequential(nn.Conv2d(16, 16, 1), nn.GELU(), nn.BatchNorm2d(16), nn.Conv2d(16, 8, 1),
                                 nn.GELU(approximate="tanh"))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        x = self.stem(x)
        z = self.mix(torch.nn.functional.silu(self.dw(x)) + x)
        return self.head(z * torch.sigmoid(z))


@needs_arm
@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_silu_gelu_and_a_lone_batchnorm_build_bit_exact_on_the_m7(tmp_path):
    """SiLU and GELU are 256-entry tables in int8 (ek_lut on the M7; x * sigmoid(x) becomes one SiLU), a BatchNorm
    after an activation runs as a depthwise 1x1 conv; the firmware matches the host reference bit for bit and stays
    close to the float model."""
    from edgekit import api
    from edgekit.graph import deployment_graph
    from edgekit.importers.torch_fx import import_module

    torch.manual_seed(0)
    net = _SwishNet().eval()
    with torch.no_grad():
        net.mix[2].running_mean.uniform_(-0.3, 0.3)
        net.mix[2].running_var.uniform_(0.5, 2.0)
    g = deployment_graph(import_module(net, (torch.zeros(1, 3, 16, 16),)))
    ops = [n.op for n in g.nodes]
    assert ops.count("silu") == 3 and ops.count("gelu") == 2 and "batchnorm" not in ops and "sigmoid" not in ops
    bn = g["mix.2"]
    assert bn.op == "conv2d" and bn.attrs["groups"] == 16 and tuple(bn.params["weight"].shape) == (16, 1, 1, 1)
    art = _compile_int8(_SwishNet, 16, 3, tmp_path / "m7")
    assert art.report["build"]["step_kernels"].count("ek_lut") == 5
    meas = api.profile(tmp_path / "m7").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0
    assert meas["fidelity"]["sqnr_db"] > 25


class _ActNet(torch.nn.Module if HAVE_TORCH else object):
    """LeakyReLU, a one-slope PReLU, ELU, a Hardtanh clamp and Mish between convs."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.f = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.LeakyReLU(0.1), nn.Conv2d(8, 8, 3, 1, 1), nn.PReLU(),
                               nn.Conv2d(8, 8, 1), nn.ELU(0.5), nn.Hardtanh(-2.0, 3.0), nn.Conv2d(8, 8, 1), nn.Mish(),
                               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x):
        return self.f(x)


@needs_arm
@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_more_activations_are_tables_bit_exact_on_the_m7_and_per_channel_prelu_runs_too(tmp_path):
    """Each of LeakyReLU, PReLU (one slope), ELU, Hardtanh and Mish is one int8 table (ek_lut), bit-exact on the
    emulated M7; a PReLU with a slope per channel (negative, zero and steep slopes among them) is a layer of its own,
    in int8 a table per channel (ek_lut_channels_s8), bit-exact on the image map and after a linear layer, int8 and
    float32."""
    from edgekit import api
    from edgekit.errors import UnsupportedError
    from edgekit.model import Model

    art = _compile_int8(_ActNet, 16, 5, tmp_path / "m7")
    assert art.report["build"]["step_kernels"].count("ek_lut") == 5
    meas = api.profile(tmp_path / "m7").measured
    assert meas["outputs_match"] and meas["max_abs_err_lsb"] == 0 and meas["fidelity"]["sqnr_db"] > 25
    torch.manual_seed(4)
    per_channel = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.PReLU(4), torch.nn.Flatten(),
                                      torch.nn.Linear(64, 5), torch.nn.PReLU(5)).eval()
    with torch.no_grad():
        per_channel[1].weight.copy_(torch.tensor([0.25, -0.3, 0.0, 1.5]))
    x = np.random.default_rng(4).standard_normal((8, 3, 4, 4)).astype(np.float32)
    m = Model.from_module(per_channel, torch.from_numpy(x[:1]), name="prelu", calib=x, test_x=x)
    assert [n.op for n in m.graph.nodes].count("prelu") == 2
    for quantize in ("int8", None):
        out = tmp_path / f"prelu-{quantize}"
        kernels = api.compile(m, "cortex-m7", out, quantize=quantize).report["build"]["step_kernels"]
        assert kernels.count("ek_lutc") == (2 if quantize else 0)  # int8: a 256-entry table per channel
        meas = api.profile(out).measured
        assert meas["outputs_match"] and (meas["max_abs_err_lsb"] == 0 if quantize else meas["max_abs_err"] < 1e-5)
    with pytest.raises(UnsupportedError, match="PRelu with slopes of shape"):
        _prelu_onnx_with_slope_per_column(tmp_path)


def _prelu_onnx_with_slope_per_column(tmp_path):
    """An ONNX PRelu whose slope broadcasts along the last axis (a slope per column, not per channel)."""
    import onnx

    from edgekit.model import Model

    slope = onnx.numpy_helper.from_array(np.full(4, 0.1, np.float32), "s")
    g = onnx.helper.make_graph([onnx.helper.make_node("PRelu", ["x", "s"], ["y"])], "p",
                               [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 2, 4])],
                               [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 2, 4])], [slope])
    path = tmp_path / "prelu.onnx"
    onnx.save(onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    return Model.load(path).graph

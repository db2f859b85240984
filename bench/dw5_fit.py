"""5x5 depthwise on the emulated Cortex-M7 (QEMU mps2-an500, the DSP build, exact counts): the row kernels
(ek__dw5x5s1_row, ek__dw5x5s2_row) against channels-last by output width, which gives
kernel_pack.DW5_CHANNELS_MAX_OUT_W, and the least-squares fit (non-negative, relative errors) of the row kernels'
cost terms on the shapes they run, per stride (cost._depthwise_terms; the stride-2 one is
``depthwise_5x5_s2_int8_ek`` of the Cortex-M cost profiles). Every output is checked against edgekit.intref.

    .venv/bin/python bench/dw5_fit.py > bench/results/dw5_fit.txt
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from scipy.optimize import nnls

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kernel_harness import run_on_qemu  # noqa: E402
from test_dsp_kernels import _conv_case  # noqa: E402

from edgekit.targets.mcu import cost  # noqa: E402
from edgekit.targets.mcu import kernel_pack as kp  # noqa: E402

# (input h, w, channels, stride): MobileNetV3 / EfficientNet-lite 5x5 layers and patch-tile-sized maps
SHAPES = [(3, 3, 576, 1), (5, 5, 96, 1), (6, 6, 144, 1), (7, 7, 96, 1), (10, 10, 48, 1), (12, 12, 72, 1),
          (24, 24, 32, 1),
          (4, 4, 64, 2), (5, 5, 96, 2), (6, 6, 240, 2), (7, 7, 64, 2), (10, 10, 48, 2), (12, 12, 288, 2),
          (13, 11, 20, 2), (24, 24, 72, 2), (48, 48, 16, 2)]


def main() -> int:
    rng = np.random.default_rng(5)
    cases, meta = [], []
    for h, w, c, s in SHAPES:
        for layout in ("rows", "channels"):
            for act in ("relu6", "none"):
                case, exp = _conv_case(rng, f"{h}x{w}x{c} s{s} {layout} {act}", h, w, c, c, 5, stride=s, padding=2,
                                       depthwise=True, act=act, layout=layout)
                cases.append(case)
                meta.append((h, w, c, s, layout, act, exp))
    with tempfile.TemporaryDirectory() as tmp:
        results = run_on_qemu(cases, "mps2-an500", Path(tmp))
    table, fit_x, fit_y, exact = {}, [], [], True
    for r, (h, w, c, s, layout, act, exp) in zip(results, meta):
        ok = np.array_equal(np.asarray(r.output, np.int8), np.asarray(exp, np.int8))
        exact &= ok
        oh, ow = (h - 1) // s + 1, (w - 1) // s + 1
        macs = oh * ow * c * 25
        table.setdefault((h, w, c, s), {})[(layout, act)] = r.instructions / macs
        if layout == "rows" and kp.depthwise_layout(5, 5, s, 1, 1, ow, c, stride_h=s) == "rows":
            fit_x.append((h, w, c, s, act))
            fit_y.append(r.instructions)
    # the rows' cost terms (the kernel's own view, cost._depthwise_terms) and their least-squares fit per stride
    fits = {}
    for stride in (1, 2):
        rows_x, y = [], []
        for (h, w, c, s, act), count in zip(fit_x, fit_y):
            if s != stride:
                continue
            wt = np.zeros((c, 1, 5, 5), np.int8)
            lo, hi = (0, 6) if act == "relu6" else (-128, 127)
            layer = kp.pack_depthwise_conv2d(wt, None, np.full(c, 1 << 30, np.int64), np.full(c, 8),
                                             input_shape=(h, w, c), x_zp=0, out_zp=0, act_min=lo, act_max=hi,
                                             stride=s, padding=2, layout="rows")
            key, units, outs, ins = cost._depthwise_terms(SimpleNamespace(params=layer.params, macs=0))
            rows_x.append([units, outs, ins, 1.0])
            y.append(count)
        a, y = np.array(rows_x, float), np.array(y, float)
        coef = nnls(a / y[:, None], np.ones_like(y))[0]  # relative errors, no negative cost
        fits[key] = (coef, np.abs((a @ coef - y) / y * 100).max(), len(y))
    print("5x5 depthwise, padding 2, on mps2-an500 (Cortex-M7, -O2): executed instructions per MAC (QEMU count)\n")
    print(f"{'input':>14s} {'stride':>6s} {'out_w':>5s} {'rows ReLU6':>10s} {'rows none':>10s} {'channels':>9s} "
          f"{'auto':>9s}")
    for (h, w, c, s), v in table.items():
        ow = (w - 1) // s + 1
        auto = kp.depthwise_layout(5, 5, s, 1, 1, ow, c, stride_h=s)
        print(f"{f'{h}x{w}x{c}':>14s} {s:6d} {ow:5d} {v[('rows', 'relu6')]:10.2f} {v[('rows', 'none')]:10.2f} "
              f"{v[('channels', 'relu6')]:9.2f} {auto:>9s}")
    print(f"\nchannels-last on outputs at most kernel_pack.DW5_CHANNELS_MAX_OUT_W = {kp.DW5_CHANNELS_MAX_OUT_W} wide")
    for key, (coef, err, n) in fits.items():
        used = "in the profiles" if key.endswith("_s2_int8_ek") else \
            "for comparison: the profiles keep bench/estimators.py's fit over model layers"
        print(f"rows fit ({key}, {used}): per unit {coef[0]:.4f}, per channel row {coef[1]:.2f}, per ring word "
              f"{coef[2]:.2f}, per call {coef[3]:.1f}; max error {err:.1f} % over {n} calls")
    print(f"bit-exact: {'yes' if exact else 'NO'}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())

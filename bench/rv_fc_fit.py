"""Instruction terms of the scalar RV32 fully connected kernels (ek_nn_s8.c: the byte layout and the channel pairs of
FLAG_RV_PAIRS), fitted to single calls on the emulated rv32imc core (QEMU virt, exact counts) — the values of the
``linear_pairs_int8_rv*`` keys in targets/profiles/cost/{esp32-c3,gd32vf103,ch32v307}.toml, and the measurements
behind kernel_pack.rv_fc_pairs_apply (where the pairs pay). Every output is checked against edgekit.intref.

    .venv/bin/python bench/rv_fc_fit.py

Terms as cost._scalar_terms counts them: units = MACs (pairs: of ceil(C / 2) pairs), outputs, inputs = input bytes
per channel block, and one per call. A model's call adds the driver step (the calibrated linear_int8_rv_per_call is
31 above this fit of the byte layout).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kernel_harness import Case, run_on_qemu  # noqa: E402

from edgekit import intref, qmath  # noqa: E402
from edgekit.targets.mcu import kernel_pack as kp  # noqa: E402

SHAPES = [(256, 64), (1280, 10), (64, 16), (100, 33), (512, 128), (48, 10), (1000, 2), (30, 7), (800, 64), (64, 10),
          (320, 10), (7, 5), (2000, 24)]


def _terms(k: int, n: int, pairs: bool) -> tuple[int, int, int, int]:
    if pairs:
        return k * 2 * -(-n // 2), n, k * len(kp.rv_fc_pair_blocks(n)), 1
    return k * n, n, k * len(kp.rv_fc_blocks(n)), 1


def main() -> None:
    rng = np.random.default_rng(1)
    rows = {}
    for pairs in (False, True):
        cases, expected = [], []
        for k, n in SHAPES:
            w = rng.integers(-127, 128, (n, k), dtype=np.int8)
            x = rng.integers(-128, 128, (1, k), dtype=np.int8)
            b = rng.integers(-100, 100, n).astype(np.int32)
            mult, shift = qmath.quantize_multipliers(np.full(n, 1.0 / (128 * np.sqrt(k))))
            layer = kp.pack_fully_connected(w, b, mult, shift, x_zp=3, out_zp=-2, isa="rv32", rv_pairs=pairs)
            cases.append(Case(f"{k}->{n}", layer, x.reshape(-1), n))
            expected.append(intref.fully_connected(x, w, b, x_zp=3, mult=mult, shift=shift, out_zp=-2).reshape(-1))
        with tempfile.TemporaryDirectory() as d:
            results = run_on_qemu(cases, "virt-rv32imc", Path(d))
        for case, want, r in zip(cases, expected, results):
            if r.rc != 0 or not np.array_equal(r.output, want):
                raise SystemExit(f"{case.name} ({'pairs' if pairs else 'bytes'}): output differs from the reference")
        y = np.array([r.instructions for r in results], dtype=float)
        a = np.array([_terms(k, n, pairs) for k, n in SHAPES], dtype=float)
        coef = np.linalg.lstsq(a, y, rcond=None)[0]
        rows[pairs] = y
        print(f"{'pairs' if pairs else 'bytes'}: {coef[0]:.3f} per MAC, {coef[1]:.2f} per output, {coef[2]:.3f} per "
              f"input and block, {coef[3]:.0f} per call (max fit error {np.max(np.abs(a @ coef - y) / y):.1%})")
    print(f"\n{'shape':>12s} {'bytes':>8s} {'pairs':>8s}   instructions/MAC (bit-exact)")
    for (k, n), yb, yp in zip(SHAPES, rows[False], rows[True]):
        print(f"{f'{k} -> {n}':>12s} {yb / (k * n):8.3f} {yp / (k * n):8.3f}")


if __name__ == "__main__":
    main()

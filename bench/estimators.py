"""Estimator accuracy: estimate vs measured for every bundled example and target, and the cost-model fit.

    .venv/bin/python bench/estimators.py              # error table (flash, SRAM, instructions, latency) for all
    .venv/bin/python bench/estimators.py --fit        # also fit the Cortex-M cost model to the emulated runs and
                                                      # print the [cost] lines for targets/profiles/*.toml
    .venv/bin/python bench/estimators.py --fit-code   # fit the Cortex-M code-size model to built ELFs
    .venv/bin/python bench/estimators.py --calibrate-phone   # fit the phone model to ONNX Runtime runs (writes it)
    .venv/bin/python bench/estimators.py --calibrate-cells --cores esp32-c3 gd32vf103 ch32v307
                                                      # fit the recurrent cells' terms per core (writes them)
    .venv/bin/python bench/estimators.py --calibrate-tvm --cores cortex-m7
                                                      # refit TVM's kernels' keys, float32 and int8 (writes them)

The Cortex-M cost model: instructions of a step = a·units + b·outputs + c (units: MACs for conv/linear kernels,
elements for the rest; see targets/mcu/cost.py). ``--fit`` solves for (a, b, c) per kernel family by
non-negative least squares over every measured layer (relative error weighted) and prints them.
Goals (issue "cost models"): flash and peak SRAM within 5 %, instructions within 25 % of the emulated M7.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgekit import api
from edgekit.errors import EdgekitError

CONFIGS = [
    ("digits-cnn", "cortex-m7", "int8", "auto"), ("digits-cnn", "cortex-m7", None, "auto"),
    ("digits-cnn", "cortex-m7", "int8", "tvm"),
    ("mbv2-w035", "cortex-m7", "int8", "auto"), ("mbv2-w035", "cortex-m7", "int8", "tvm"),
    ("digits-cnn", "cortex-m4", "int8", "auto"), ("digits-cnn", "cortex-m33", "int8", "auto"),
    ("digits-cnn", "cortex-m55", "int8", "auto"), ("mbv2-w035", "cortex-m55", "int8", "auto"),
    ("kws-dscnn", "cortex-m55", "int8", "auto"), ("zoo-mobilenet-v1-025", "cortex-m55", "int8", "auto"),
    ("digits-cnn", "cortex-m55", "int8", "dsp"),  # the Cortex-M55 on Helium (auto) and on the SMLAD kernels
    ("digits-cnn", "phone-arm64", "int8", "auto"), ("digits-cnn", "phone-arm64", None, "auto"),
    ("digits-gru", "phone-arm64", None, "auto"), ("mbv2-w035", "phone-arm64", "int8", "auto"),
    # recurrent step programs: instructions per step and state bytes
    ("digits-gru", "cortex-m7", "int8", "auto"), ("digits-lmu", "cortex-m7", "int8", "auto"),
    ("digits-egru", "cortex-m7", "int8", "auto"), ("digits-gru", "cortex-m7", None, "auto"),
    # RISC-V microcontrollers (their own calibrated cost files)
    ("digits-cnn", "esp32-c3", "int8", "auto"), ("digits-cnn", "ch32v307", None, "auto"),
    ("mbv2-w035", "esp32-c3", "int8", "auto"), ("digits-gru", "gd32vf103", "int8", "auto"),
    # neuromorphic: energy from the converter's torch spike counts vs the counts of Lava's run (first 60 inputs)
    ("digits-cnn", "loihi2", None, "spiking=rate"),
]


def run(configs):
    work = Path(tempfile.mkdtemp(prefix="ek-est-"))
    results = []
    try:
        for i, (model, target, q, kernels) in enumerate(configs):
            out = work / str(i)
            label = model if isinstance(model, str) else model.name
            try:
                if kernels.startswith("spiking="):
                    api.compile(model, target, out, spiking=kernels.split("=")[1])
                    rep = api.profile(out, samples=60).report
                else:
                    api.compile(model, target, out, quantize=q, kernels=kernels, allow_oversize=True)
                    rep = api.profile(out, repeat=20).report
            except EdgekitError as e:
                results.append({"model": label, "target": target, "q": q or "float32", "kernels": kernels,
                                "error": str(e)[:100]})
                continue
            results.append({"model": label, "target": target, "q": q or "float32", "kernels": kernels, "rep": rep})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def error_table(results) -> Table:
    t = Table(title="estimate vs measured: (estimate − measured) / measured")
    figures = {"flash": "flash_bytes", "peak SRAM": "peak_sram_bytes", "arena": "arena_bytes",
               "instructions": "instructions", "instr/step": "instructions_per_step", "state": "state_bytes",
               "latency": "latency_ms", "energy": "energy_uj"}
    for col in ("model", "target", "dtype", "build", *figures):
        t.add_column(col, justify="left" if col in ("model", "target", "dtype", "build") else "right")
    for r in results:
        if "error" in r:
            t.add_row(r["model"], r["target"], r["q"], r["kernels"], r["error"], *[""] * (len(figures) - 1))
            continue
        e = r["rep"]["errors"] or {}
        t.add_row(r["model"], r["target"], r["q"], r["kernels"],
                  *["–" if k not in e else f"{e[k]:+.1%}" for k in figures.values()])
    return t


def _layer_rows(rep):
    """(core, key) -> [(terms vector, measured instructions)] for every measured layer of one report."""
    rows = defaultdict(list)
    b = rep["build"]
    layer_terms = defaultdict(lambda: defaultdict(lambda: np.zeros(4)))
    for layer, (key, units, outs, ins) in zip(b["step_layers"], b["step_cost_terms"]):
        layer_terms[layer][key] += np.array([units, outs, ins, 1.0])
    for m in rep["measured"]["layers"]:
        terms = layer_terms[m["name"]]
        if len(terms) == 1:  # a layer whose steps share one kernel family
            (key, vec), = terms.items()
            rows[(rep["target"], key)].append((vec, m["instructions"]))
    return rows


def fit(results):
    """Per core and cost key: NNLS fit of instructions = a·units + b·outputs + d·inputs + c·calls."""
    from scipy.optimize import nnls

    rows = defaultdict(list)
    for r in results:
        rep = r.get("rep")
        if rep and rep["target_kind"] == "mcu":
            for k, v in _layer_rows(rep).items():
                rows[k].extend(v)
    fitted = {}
    for (core, key), data in sorted(rows.items()):
        A = np.array([d[0] for d in data])
        y = np.array([d[1] for d in data], dtype=float)
        w = 1.0 / np.maximum(y, 1.0)  # relative error
        cols = [0, 1, 2, 3] if len(data) >= 6 else ([0, 3] if len(data) >= 2 else [0])
        coef, _ = nnls(A[:, cols] * w[:, None], y * w)
        full = np.zeros(4)
        full[cols] = coef
        pred = A @ full
        err = float(np.max(np.abs(pred - y) / np.maximum(y, 1))) if len(y) else 0.0
        fitted[(core, key)] = (full, len(data), err)
    return fitted


def synthetic_models(seed: int = 0):
    """Small CNNs with varied layer shapes (widths, strides, kernels, residuals) for calibrating the cost model."""
    import torch
    import torch.nn as nn

    from edgekit.model import Model
    from edgekit.zoo.models import InvertedResidual

    rng = np.random.default_rng(seed)
    models = []
    for i in range(4):
        torch.manual_seed(seed + i)
        size = int(rng.choice([16, 24, 32]))
        c0 = int(rng.choice([8, 12, 16]))
        layers: list[nn.Module] = [nn.Conv2d(3, c0, 3, stride=int(rng.choice([1, 2])), padding=1),
                                   nn.BatchNorm2d(c0), nn.ReLU6()]
        c = c0
        for b in range(5):
            out = int(rng.choice([8, 16, 24, 32, 40]))
            stride = int(rng.choice([1, 1, 2])) if b < 3 else 1
            layers.append(InvertedResidual(c, out, stride, int(rng.choice([2, 4, 6]))))
            c = out
        layers += [nn.Conv2d(c, 64, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(64, 48, 3, padding=1),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, int(rng.choice([10, 37, 100])))]
        module = nn.Sequential(*layers).eval()
        with torch.no_grad():
            for mod in module.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.running_mean.uniform_(-0.2, 0.2)
                    mod.running_var.uniform_(0.5, 1.5)
        x = rng.standard_normal((8, 3, size, size)).astype(np.float32)
        models.append(Model.from_module(module, torch.from_numpy(x[:1]), name=f"calib{i}", calib=x, test_x=x[:1]))
    # depthwise beyond 3x3 (5x5, 3x1, 1x3, strided) and small maps, as keyword CNNs and MobileNet tails have them
    torch.manual_seed(seed + 10)
    dw = lambda c, k, s, p: [nn.Conv2d(c, c, k, s, p, groups=c), nn.ReLU()]  # noqa: E731
    module = nn.Sequential(nn.Conv2d(1, 36, (10, 4), 2, (5, 1)), nn.ReLU(), *dw(36, 3, 1, 1), *dw(36, 5, 1, 2),
                           *dw(36, (3, 1), 1, (1, 0)), *dw(36, (1, 3), 1, (0, 1)), *dw(36, 5, 2, 2),
                           nn.Conv2d(36, 128, 1), nn.ReLU(), *dw(128, 3, 2, 1), *dw(128, 3, 1, 1), *dw(128, 5, 1, 2),
                           *dw(128, (3, 1), 1, (1, 0)), *dw(128, (1, 3), 1, (0, 1)), *dw(128, 5, 2, 2),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 12)).eval()
    x = rng.standard_normal((8, 1, 49, 10)).astype(np.float32)
    models.append(Model.from_module(module, torch.from_numpy(x[:1]), name="calib-dw", calib=x, test_x=x[:1]))
    # the depthwise row kernels on wider maps and fewer channels: 3x3 s2, 1x3 / 3x1 (strides 1 and 2) and 5x5
    torch.manual_seed(seed + 11)
    module = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.ReLU(), *dw(16, 5, 1, 2), *dw(16, (1, 3), 1, (0, 1)),
                           *dw(16, (3, 1), 1, (1, 0)), *dw(16, 3, 2, 1), *dw(16, 5, 1, 2), nn.Conv2d(16, 24, 1),
                           nn.ReLU(), *dw(24, (1, 3), 2, (0, 1)), *dw(24, (3, 1), (2, 1), (1, 0)), *dw(24, 5, 1, 2),
                           *dw(24, 3, 2, 1), nn.Conv2d(24, 48, 1), nn.ReLU(), *dw(48, (1, 3), 1, (0, 1)),
                           *dw(48, (3, 1), 1, (1, 0)), *dw(48, 5, 1, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(48, 10)).eval()
    x = rng.standard_normal((8, 1, 32, 32)).astype(np.float32)
    models.append(Model.from_module(module, torch.from_numpy(x[:1]), name="calib-dw2", calib=x, test_x=x[:1]))
    # fully connected layers of every proportion (the CNNs' classifiers alone are all C -> 10..100: their MACs and
    # inputs move together, and the fit once priced a 1280 -> 1000 layer at a sixth of its instructions)
    torch.manual_seed(seed + 12)
    widths = (640, 128, 128, 8, 128, 640, 24, 256)
    fcs = [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())][:-1]
    module = nn.Sequential(nn.Flatten(), *fcs).eval()
    x = rng.standard_normal((8, 640)).astype(np.float32)
    models.append(Model.from_module(module, torch.from_numpy(x[:1]), name="calib-fc", calib=x, test_x=x[:1]))
    return models


def calibrate(cores, write: bool):
    """Build and run the synthetic models, digits-cnn and the zoo ResNet-8 on each core (int8 with edgekit kernels,
    int8 and float32 with TVM kernels), fit the cost model and write targets/profiles/cost/<core>.toml."""
    from edgekit.model import Model

    configs = []
    for m in synthetic_models() + [Model.load("digits-cnn"), Model.load("zoo-resnet8")]:
        for core in cores:
            for q, kernels in (("int8", "auto"), ("int8", "tvm"), (None, "tvm")):
                configs.append((m, core, q, kernels))
    results = run(configs)
    fitted = fit(results)
    if write:
        out_dir = Path(__file__).resolve().parent.parent / "targets" / "profiles" / "cost"
        out_dir.mkdir(exist_ok=True)
        for core in cores:
            lines = [f"# Calibrated cost model of {core}: executed instructions (QEMU, exact) per layer =",
                     "#   key·units + key_per_output·outputs + key_per_input·inputs + key_per_call",
                     "# Written by `bench/estimators.py --calibrate` from synthetic CNNs (see synthetic_models there)",
                     "# and digits-cnn built and run on the emulated board; overrides the initial [cost] of the profile.",
                     "[cost]"]
            # Keys this calibration does not fit (e.g. the sparse kernels', fitted by bench/sparse.py) are kept.
            entries, fitted_keys = _fitted_entries(fitted, core, "--calibrate")
            _write_cost_file(out_dir / f"{core}.toml", lines + entries, fitted_keys)
    return results, fitted


def _fitted_entries(fitted, core: str, how: str) -> tuple[list[str], set[str]]:
    """The cost-file lines of ``core``'s fitted layer keys ({(core, key): (coefficients, layers, max error)}; zero
    terms beyond the first left out) and every key they replace (zero terms too)."""
    from edgekit.targets.mcu.cost import COST_TERMS

    lines, keys = [], set()
    for (c, key), (coef, n, err) in sorted(fitted.items()):
        if c != core:
            continue
        src = f"fitted by bench/estimators.py {how} over {n} layers (max error {err:.0%})"
        for suffix, v in zip(COST_TERMS, coef):
            keys.add(key + suffix)
            if suffix == "" or v > 0:
                lines.append(f'{key}{suffix} = {{ value = {v:.4g}, source = "{src}" }}')
    return lines, keys


def _write_cost_file(path: Path, lines: list[str], replaced: set[str]) -> None:
    """Write ``lines`` (header and fitted values) to the cost file ``path``, keeping its other values: those whose
    key is not in ``replaced``."""
    if path.is_file():
        lines = lines + [ln for ln in path.read_text().splitlines()
                         if " = " in ln and not ln.startswith("#") and ln.split(" = ", 1)[0] not in replaced]
    path.write_text("\n".join(lines) + "\n")


def calibrate_phone(write: bool):
    """Fit the phone model to ONNX Runtime runs (float32 and int8) of the synthetic CNNs and the examples:
    latency = base + per-layer + Σ ns/MAC by family + ns/element; file beyond the weights = bytes per layer, per
    layer with weights, per output channel of those, and a base (both fits weighted for relative error)."""
    from scipy.optimize import nnls

    from edgekit.targets.phone.cost import PHONE_KINDS, phone_terms
    from edgekit.model import Model

    models = synthetic_models(0) + synthetic_models(100) + [Model.load(n) for n in ("digits-cnn", "digits-gru")]
    configs = [(m, "phone-arm64", q, "auto") for m in models for q in (None, "int8")]
    results = run(configs)
    fitted = {}
    for key, q in (("fp32", "float32"), ("int8", "int8")):
        A, y, F, fy = [], [], [], []
        for (m, _, _, _), r in zip(configs, results):
            if r.get("q") != q or "rep" not in r:
                continue
            t = phone_terms(m.deploy_graph)
            # Few models and mostly overhead: one ns/MAC for all kernel families keeps the fit from overfitting.
            A.append([1.0, t["layers"], sum(t[f"macs_{k}"] for k in PHONE_KINDS) * 1e-3, t["elements"] * 1e-3])
            y.append(r["rep"]["measured"]["latency_ms"] * 1e3)
            stored = sum(lay["weight_bytes"] for lay in r["rep"]["estimate"]["layers"])
            F.append(np.array([t["layers"], t["weighted"], t["channels"], 1.0]) / r["rep"]["measured"]["flash_bytes"])
            fy.append((r["rep"]["measured"]["flash_bytes"] - stored) / r["rep"]["measured"]["flash_bytes"])
        A, y = np.array(A), np.array(y)
        w = 1.0 / np.maximum(y, 1e-3)
        coef, _ = nnls(A * w[:, None], y * w)
        err = float(np.max(np.abs(A @ coef - y) / y))
        fcoef, _ = nnls(np.array(F), np.array(fy, dtype=float))
        lat = {"ort_us_per_inference": coef[0], "ort_us_per_layer": coef[1], "ort_ns_per_element": coef[3]}
        lat.update({f"ort_ns_per_mac_{k}": coef[2] for k in PHONE_KINDS})
        fitted[key] = (lat, {"onnx_bytes_per_layer": fcoef[0], "onnx_bytes_per_weighted_layer": fcoef[1],
                             "onnx_bytes_per_channel": fcoef[2], "onnx_bytes_base": fcoef[3]}, len(y), err)
    if write:
        lines = ["# Calibrated phone cost model: ONNX Runtime 1.32 CPU execution provider, one thread, on the x86-64",
                 "# host that runs `edgekit profile` (it stands in for one phone core; not measured on a phone).",
                 "# Written by `bench/estimators.py --calibrate-phone`; latency terms in µs (ns per MAC / element).",
                 "[cost]"]
        for key, (lat, fl, n, err) in fitted.items():
            src = f"fitted by bench/estimators.py --calibrate-phone over {n} models (max latency error {err:.0%})"
            for name, v in list(lat.items()) + list(fl.items()):
                lines.append(f'{name}_{key} = {{ value = {v:.4g}, source = "{src}" }}')
        out = Path(__file__).resolve().parent.parent / "targets" / "profiles" / "cost" / "phone-arm64.toml"
        out.write_text("\n".join(lines) + "\n")
    return results, fitted


CODE_FIT_CASES = [("digits-cnn", "int8", "auto", "auto"), ("digits-cnn", "int8", "tvm", "auto"),
                  ("digits-cnn", "int8", "auto", "off"), ("digits-cnn", None, "auto", "auto"),
                  ("digits-cnn", None, "auto", "off"), (0, "int8", "auto", "auto"), (0, None, "auto", "off"),
                  (1, "int8", "tvm", "off"), (2, None, "auto", "auto"), (3, "int8", "auto", "off"),
                  (1, None, "auto", "auto"), ("mbv2-w035", "int8", "auto", "auto"), ("mbv2-w035", "int8", "tvm", "off")]


def fit_code(console) -> None:
    """Fit the Cortex-M code-size model (the platform's CodeSizeModel, targets/mcu/platforms/cortex_m) to built
    cortex-m7 ELFs: model flash
    minus constants, edgekit kernels and their structs (known) and 150 B per non-conv TVM kernel = base + per step ·
    steps + per descriptor · descriptors + per TVM conv kernel · kernels (NNLS, relative error). Prints the constants
    and each build's error; does not write them."""
    from scipy.optimize import nnls

    import edgekit.targets.mcu.cost as cm
    from edgekit.model import Model
    from edgekit.targets.mcu.platforms.cortex_m import PLATFORM

    size = PLATFORM.code_size
    captured = {}
    original = cm.code_features

    def spy(prog):
        captured["features"], captured["const"] = original(prog), prog.const_bytes
        return captured["features"]

    cm.code_features = spy
    synthetic = synthetic_models(0)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="ek-code-"))
    try:
        for i, (m, q, kernels, patch) in enumerate(CODE_FIT_CASES):
            model = Model.load(synthetic[m] if isinstance(m, int) else m)
            art = api.compile(model, "cortex-m7", work / str(i), quantize=q, kernels=kernels, patch=patch,
                              allow_oversize=True)
            rows.append((f"{model.name} {q or 'float32'} kernels={kernels} patch={patch}",
                         art.report["build"]["model_flash_bytes"], captured["const"], dict(captured["features"])))
    finally:
        cm.code_features = original
        shutil.rmtree(work, ignore_errors=True)
    names = ["steps", "descriptors", "tvm_conv"]
    A = np.array([[1.0] + [f[k] for k in names] for _, _, _, f in rows])
    fixed = np.array([c + sum(size.ek_kernel_bytes.get(k, 0) for k in f["ek_kinds"])
                      + sum(size.ek_struct_bytes.get(k, 0) for k in f["ek_structs"]) + size.per_tvm_kernel * f["tvm_other"]
                      for _, _, c, f in rows], float)
    flash = np.array([r[1] for r in rows], float)
    coef, _ = nnls(A / flash[:, None], (flash - fixed) / flash)
    t = Table(title="Cortex-M code-size fit: " + ", ".join(f"{k} {v:.0f} B" for k, v in zip(["base"] + names, coef)))
    for col in ("build", "model flash B", "fitted B", "error"):
        t.add_column(col, justify="left" if col == "build" else "right")
    for (label, fl, _, _), p in zip(rows, A @ coef + fixed):
        t.add_row(label, f"{fl:,}", f"{p:,.0f}", f"{(p - fl) / fl:+.1%}")
    console.print(t)


def activation_model(seed: int = 0):
    """A float CNN whose layers are newlib's functions per element (tanh, sigmoid, SiLU, GELU, ELU) between 3x3
    convs, inputs spread over the range where tanhf / expf take their different paths."""
    import torch
    import torch.nn as nn

    from edgekit.model import Model

    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 16, 3, padding=1), nn.Tanh(), nn.Conv2d(16, 16, 3, padding=1), nn.Sigmoid(),
              nn.Conv2d(16, 24, 3, padding=1), nn.SiLU(), nn.Conv2d(24, 16, 1), nn.GELU(), nn.Conv2d(16, 8, 1),
              nn.ELU(), nn.Conv2d(8, 8, 3, padding=1), nn.Tanh()]
    x = (np.random.default_rng(seed).standard_normal((4, 3, 16, 16)) * 3).astype(np.float32)
    return Model.from_module(nn.Sequential(*layers).eval(), torch.from_numpy(x[:1]), name="calib-act", calib=x,
                             test_x=x[:1])


FLOAT_ZOO = ("zoo-espcn", "zoo-fsrcnn", "zoo-dcgan", "zoo-unet", "zoo-resnet8", "zoo-squeezenet", "zoo-dscnn-kws",
             "zoo-shufflenet", "zoo-tcn", "digits-cnn")


def is_tvm_key(key: str) -> bool:
    """A cost key of a layer TVM's C kernels run (conv2d_float32, pool_int8, ...), not edgekit's own kernels'
    (``*_ek``, ``*_mve``), copies or the recurrent and state-space cells' (fitted by --calibrate-cells)."""
    return not key.endswith(("_ek", "_mve")) and not key.startswith(
        ("copy_", "pad_", "rnn_", "ssm_", "trace_", "running_"))


def calibrate_tvm(cores, write: bool):
    """Refit the keys of TVM's kernels (is_tvm_key: float32 builds, int8 with --kernels tvm) on the synthetic CNNs,
    an activation model, the zoo's conv nets (FLOAT_ZOO) in float32 and the synthetic CNNs, digits-cnn and the zoo
    ResNet-8 in int8 with TVM's kernels, built for ``cores``; write only those keys into
    targets/profiles/cost/<core>.toml (the other keys stay)."""
    from edgekit.model import Model

    synth = synthetic_models()
    configs = [(m, core, None, "tvm") for m in synth + [activation_model()] + [Model.load(n) for n in FLOAT_ZOO]
               for core in cores]
    configs += [(m, core, "int8", "tvm") for m in synth + [Model.load("digits-cnn"), Model.load("zoo-resnet8")]
                for core in cores]
    results = run(configs)
    fitted = {k: v for k, v in fit(results).items() if is_tvm_key(k[1])}
    if write:
        out_dir = Path(__file__).resolve().parent.parent / "targets" / "profiles" / "cost"
        for core in cores:
            path = out_dir / f"{core}.toml"
            head = [ln for ln in path.read_text().splitlines() if " = " not in ln]
            lines, keys = _fitted_entries(fitted, core, "--calibrate-tvm")
            _write_cost_file(path, head + lines, keys)
    return results, fitted


CELL_MODELS = ("digits-gru", "digits-lmu", "digits-egru", "kws-gru", "kws-lmu", "kws-ssm", "kws-selective")
CELL_TERMS = ("", "_per_gate_input", "_per_unit", "_per_activation", "_per_call")
EVENT_TERMS = ("", "_per_unit", "_per_call")


def calibrate_cells(cores, write: bool, sequences: int = 6):
    """Fit the recurrent-cell cost terms of ``cores`` (targets/mcu/cost.py: per MAC, per gate input, per unit, per
    sigmoid/tanh, per call; the EGRU's event product per active MAC, per unit, per call) to the per-call
    instructions of the bundled recurrent examples (int8 and float32, ``sequences`` test sequences each) run on the
    core's emulated board, and write them into targets/profiles/cost/<core>.toml (``rnn_<dtype>_step...``); the
    state-space kernels (kws-ssm, kws-selective) get one scale each of the M7's fitted formula
    (``ssm_<op>_<dtype>_scale``: two layers a model are too few for their five terms).
    Returns {(core, key): (coefficients, calls, max error)}."""
    from scipy.optimize import nnls

    from edgekit.targets import CompileOptions
    from edgekit.targets.mcu.cost import GATES_PER_PASS

    work = Path(tempfile.mkdtemp(prefix="ek-cells-"))
    rows = defaultdict(list)  # (core, key) -> [(features, measured)]
    try:
        for core in cores:
            for name in CELL_MODELS:
                for q in (None, "int8"):
                    out = work / f"{name}-{core}-{q}"
                    try:
                        art = api.compile(name, core, out, CompileOptions(quantize=q,
                                                                          extra={"test_sequences": sequences}))
                        m = api.profile(out).measured
                    except EdgekitError as e:
                        print(f"{name} {core} {q}: {e}", file=sys.stderr)
                        continue
                    b = art.report["build"]
                    for terms, kernel, measured in zip(b["step_cost_terms"], b["step_kernels"],
                                                       m["step_instructions"]):
                        key, macs, units, acts, calls = terms
                        if key.startswith("ssm_"):  # a state-space kernel: the scale of the M7's formula
                            rows[(core, key)].append(([macs], measured))
                        elif key.startswith("rnn_event_"):
                            rows[(core, key)].append(([macs, units, 1.0], measured))
                        elif key.startswith("rnn_"):
                            op = kernel.split("ek_tvm_")[-1].rsplit("_", 1)[0]
                            rows[(core, key)].append(([macs, macs / GATES_PER_PASS.get(op, 1), units, acts, 1.0],
                                                      measured))
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fitted = {}
    for (core, key), data in rows.items():
        if len(data) < len(data[0][0]):  # fewer calls than terms (one EGRU's event product): keep the defaults
            print(f"{core} {key}: {len(data)} calls for {len(data[0][0])} terms, not fitted", file=sys.stderr)
            continue
        A = np.array([f for f, _ in data], float)
        y = np.array([v for _, v in data], float)
        coef, _ = nnls(A / y[:, None], np.ones(len(y)))  # relative error weighted
        err = float(np.max(np.abs(A @ coef - y) / y))
        fitted[(core, key)] = (coef, len(y), err)
    if write:
        out_dir = Path(__file__).resolve().parent.parent / "targets" / "profiles" / "cost"
        for core in cores:
            path = out_dir / f"{core}.toml"
            head = [ln for ln in path.read_text().splitlines() if " = " not in ln] if path.is_file() else ["[cost]"]
            new = {}
            for (c, key), (coef, n, err) in fitted.items():
                if c != core:
                    continue
                src = (f"fitted by bench/estimators.py --calibrate-cells over {n} recurrent kernel calls "
                       f"(max error {err:.0%})")
                if key.startswith("ssm_"):
                    new[f"{key}_scale"] = f'{key}_scale = {{ value = {coef[0]:.4g}, source = "{src}" }}'
                    continue
                for suffix, v in zip(EVENT_TERMS if key.startswith("rnn_event_") else CELL_TERMS, coef):
                    new[f"{key}_step{suffix}"] = f'{key}_step{suffix} = {{ value = {v:.4g}, source = "{src}" }}'
            _write_cost_file(path, head + sorted(new.values()), set(new))
    return fitted


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--quick", action="store_true", help="digits-cnn on cortex-m7 only")
    ap.add_argument("--calibrate", action="store_true",
                    help="fit the Cortex-M cost model on synthetic CNNs and write targets/profiles/cost/*.toml")
    ap.add_argument("--cores", nargs="+", default=["cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55"])
    ap.add_argument("--fit-code", action="store_true",
                    help="fit the Cortex-M code-size model to built ELFs and print its constants")
    ap.add_argument("--calibrate-cells", action="store_true",
                    help="fit the recurrent-cell cost terms of --cores to the bundled recurrent examples and write "
                         "them into targets/profiles/cost/<core>.toml")
    ap.add_argument("--calibrate-tvm", action="store_true",
                    help="refit the keys of TVM's kernels (float32; int8 with --kernels tvm) of --cores (writes them)")
    ap.add_argument("--calibrate-phone", action="store_true",
                    help="fit the phone model to ONNX Runtime runs and write targets/profiles/cost/phone-arm64.toml")
    args = ap.parse_args(argv)
    console = Console(record=True, width=160)
    if args.calibrate_phone:
        results, fitted = calibrate_phone(write=True)
        console.print(error_table(results))
        for key, (lat, fl, n, err) in fitted.items():
            console.print(f"{key}: {n} models, max latency error {err:.1%}: "
                          + ", ".join(f"{k}={v:.3g}" for k, v in {**lat, **fl}.items()))
        return 0
    if args.calibrate_cells:
        for (core, key), (coef, n, err) in sorted(calibrate_cells(args.cores, write=True).items()):
            console.print(f"{core} {key}: {n} calls, max error {err:.1%}: " + ", ".join(f"{v:.4g}" for v in coef))
        return 0
    if args.calibrate_tvm:
        results, fitted = calibrate_tvm(args.cores, write=True)
        console.print(error_table(results))
        _print_fit(console, fitted)
        return 0
    if args.fit_code:
        fit_code(console)
        return 0
    if args.calibrate:
        results, fitted = calibrate(args.cores, write=True)
        console.print(error_table(results))
        _print_fit(console, fitted)
        return 0
    configs = CONFIGS[:3] if args.quick else CONFIGS
    results = run(configs)
    console.print(error_table(results))
    if args.fit:
        _print_fit(console, fit(results))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "estimators.txt").write_text(console.export_text())
    return 0


def _print_fit(console, fitted):
    t = Table(title="Cortex-M cost model fit: instructions = a·units + b·outputs + d·inputs + c")
    for col in ("core", "key", "a / unit", "b / output", "d / input", "c / call", "layers", "max rel. error"):
        t.add_column(col)
    for (core, key), (coef, n, err) in fitted.items():
        t.add_row(core, key, f"{coef[0]:.3f}", f"{coef[1]:.2f}", f"{coef[2]:.2f}", f"{coef[3]:.0f}", str(n),
                  f"{err:.1%}")
    console.print(t)


if __name__ == "__main__":
    sys.exit(main())

"""Phone target on emulated Arm cores: float32 vs the shipped int8 artifact, per model and core (issue 16).

    .venv/bin/python bench/phone.py                          # every bundled and zoo model on every phone core
    .venv/bin/python bench/phone.py --cores phone-arm64 --models digits-cnn,zoo-resnet8
    .venv/bin/python bench/phone.py --calibrate              # also fit the Arm instruction model (cost files)

For each model and core: ``edgekit compile --quantize int8`` (``--int8-layers auto``: every layer counted int8 and
float on the emulated core, int8 kept only where it pays, float32 shipped if no int8 model is cheaper) and ``edgekit
profile`` (the shipped model.ort on the emulated core). Columns: instructions per batch-1 inference of ONNX
Runtime's float32 model (the plain export), of the all-int8 model and of the shipped one (targets/phone/arm64.py: exact
counts, Python's session.run subtracted); the ratio fp32 / shipped (goal ≥ 2.5 on conv nets on the A76-class core,
never < 1); file sizes (shipped model.onnx / float32 model.onnx, goal ≤ 0.3; in brackets the same for model.ort); fidelity of the shipped model on the
emulated core against the float model (SQNR and top-1 agreement over the host's test inputs; agreement with x86 ORT
on the emulated inputs); the cost model's instruction estimate against the measured count.

Writes bench/results/phone.md. ``--calibrate`` fits, per core and dtype, instructions = base + per layer · layers +
per MAC by kernel family · MACs + per element · elements (NNLS, relative error) to the float32 and all-int8 counts and
writes the ``arm_*`` terms into targets/profiles/cost/<core>.toml (other terms in those files are kept); the terms are
targets/phone/cost.ARM_TERMS (MACs by kernel family, outputs of layers with weights, other elements, layers).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import edgekit  # noqa: E402
from edgekit.targets.profiles import get_profile  # noqa: E402

CORES = ("phone-arm64", "phone-a53", "phone-armv9")
BUNDLED = ("digits-cnn", "mbv2-w035", "kws-dscnn", "digits-gru", "kws-gru")
ZOO = ("zoo-dscnn-kws", "zoo-mobilenet-v1-025", "zoo-mobilenet-v2-035", "zoo-mobilenet-v3-small", "zoo-resnet8",
       "zoo-resnet20", "zoo-squeezenet", "zoo-efficientnet-lite", "zoo-tcn", "zoo-gru-kws", "zoo-unet",
       "zoo-autoencoder", "zoo-shufflenet", "zoo-attention")
RESULTS = ROOT / "bench" / "results" / "phone.md"
CONV_NETS = {"digits-cnn", "mbv2-w035", "kws-dscnn", "zoo-dscnn-kws", "zoo-mobilenet-v1-025", "zoo-mobilenet-v2-035",
             "zoo-mobilenet-v3-small", "zoo-resnet8", "zoo-resnet20", "zoo-squeezenet", "zoo-efficientnet-lite",
             "zoo-unet", "zoo-shufflenet"}


def measure(name: str, core: str, work: Path) -> dict:
    row = {"model": name, "core": core}
    t0 = time.time()
    try:
        f32 = edgekit.compile(name, target=core, out=work / "f32", force=True)
        art = edgekit.compile(name, target=core, out=work / "int8", quantize="int8", force=True)
        m = edgekit.profile(art.path).measured
    except Exception as e:  # noqa: BLE001 - a model a target refuses is a row, not the end of the bench
        row["error"] = str(e).splitlines()[0][:160]
        return row
    rep = art.report
    mixed = ((rep["build"].get("quantization") or {}).get("mixed")) or {}
    whole = mixed.get("whole", {})
    fid = m.get("fidelity") or {}
    arm = m.get("arm") or {}
    row.update(
        fp32=whole.get("float32"), int8_all=min((v for k, v in whole.items() if k in ("int8", "int8-s8")), default=None),
        mixed=whole.get("mixed"), shipped_kind=mixed.get(
            "shipped"), shipped=m.get("instructions"), est_int8=rep["estimate"].get("instructions"),
        est_fp32=f32.report["estimate"].get("instructions"),
        onnx_fp32=(work / "f32" / "model.onnx").stat().st_size, onnx_shipped=(work / "int8" / "model.onnx").stat(
        ).st_size, ort_shipped=(work / "int8" / "model.ort").stat().st_size,
        ort_fp32=(work / "f32" / "model.ort").stat().st_size,
        sqnr=fid.get("sqnr_db"), top1=fid.get("top1_agreement"), arm_vs_host=arm.get("top1_agreement_vs_host"),
        arm_diff=arm.get("max_abs_diff_vs_host"), kept_float=len(mixed.get("excluded", [])),
        layers=len(mixed.get("layers", [])), seconds=time.time() - t0)
    return row


def fmt(v, spec=",") -> str:
    if v is None:
        return "–"
    return format(v, spec)


def _estimate(name: str, core: str, int8: bool) -> int | None:
    """The phone cost model's instructions now (after a --calibrate in this run too)."""
    from edgekit import api
    from edgekit.targets.profiles import all_profiles

    all_profiles.cache_clear()
    est, _, _ = api.estimate(name, core, quantize="int8" if int8 else None)
    return est.instructions


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | core | fp32 instr. | all-int8 | shipped (kind) | fp32 / shipped | layers int8 | file shipped/fp32 "
             "(ORT) | SQNR dB | top-1 agr. | Arm = x86 top-1 | est. error |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['core']} | refused: {r['error']} |  |  |  |  |  |  |  |  |  |")
            continue
        ratio = r["fp32"] / r["shipped"] if r.get("fp32") and r.get("shipped") else None
        est_ref = r["shipped"]
        est = _estimate(r["model"], r["core"], r["shipped_kind"] != "float32")
        err = (est - est_ref) / est_ref if est and est_ref else None
        r["est_error"] = err
        ort = f"{r['ort_shipped'] / r['ort_fp32']:.2f}" if r.get("ort_fp32") else "–"
        int8_layers = 0 if r["shipped_kind"] == "float32" else r["layers"] - r["kept_float"]
        lines.append(
            f"| {r['model']} | {r['core']} | {fmt(r['fp32'])} | {fmt(r['int8_all'])} | {fmt(r['shipped'])} "
            f"({r['shipped_kind']}) | {fmt(ratio, '.2f')}× | {int8_layers}/{r['layers']} | "
            f"{r['onnx_shipped'] / r['onnx_fp32']:.2f} ({ort}) | {fmt(r['sqnr'], '.1f')} | {fmt(r['top1'], '.1%')} | "
            f"{fmt(r['arm_vs_host'], '.0%')} | {fmt(err, '+.1%')} |")
    return lines


def calibrate(rows: list[dict]) -> list[str]:
    """Fit the arm_* terms per core and dtype to the whole-model counts; write them into the cost files."""
    from scipy.optimize import nnls

    from edgekit.model import Model
    from edgekit.targets.phone.cost import ARM_TERMS, arm_terms

    terms = {name: arm_terms(Model.load(name).deploy_graph) for name in {r["model"] for r in rows if "error" not in r}}
    notes = []
    for core in sorted({r["core"] for r in rows}):
        fitted = {}
        for key, col in (("fp32", "fp32"), ("int8", "int8_all")):
            data = [r for r in rows if r["core"] == core and "error" not in r and r.get(col)]
            if len(data) < 4:
                continue
            A = np.array([[1.0, *[terms[r["model"]][k] for k in ARM_TERMS]] for r in data])
            y = np.array([float(r[col]) for r in data])
            w = 1.0 / y
            coef, _ = nnls(A * w[:, None], y * w)
            err = np.abs(A @ coef - y) / y
            src = (f"fitted by bench/phone.py --calibrate to {len(y)} models' instruction counts on the emulated core "
                   f"(max error {err.max():.0%}, median {np.median(err):.0%})")
            names = ["arm_base", *[f"arm_per_{k}" for k in ARM_TERMS]]
            fitted.update({f"{n}_{key}": (v, src) for n, v in zip(names, coef)})
            notes.append(f"{core} {key}: {len(y)} models, max error {err.max():.1%}, median {np.median(err):.1%}")
        if not fitted:
            continue
        path = ROOT / "targets" / "profiles" / "cost" / f"{core}.toml"
        kept = [ln for ln in path.read_text().splitlines() if not ln.startswith("arm_")] if path.is_file() else [
            f"# Calibrated phone cost model of {core}: Arm instructions fitted to the emulated core.", "[cost]"]
        kept += [f'{k} = {{ value = {v:.6g}, source = "{src}" }}' for k, (v, src) in fitted.items()]
        path.write_text("\n".join(kept) + "\n")
    return notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cores", default=",".join(CORES))
    ap.add_argument("--models", default=",".join(BUNDLED + ZOO))
    ap.add_argument("--calibrate", action="store_true", help="fit the arm_* instruction terms and write them")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--from-json", type=Path, nargs="+", help="rows saved by earlier runs (their .json beside the "
                    ".md): table and --calibrate from them, nothing measured")
    args = ap.parse_args()
    rows = []
    if args.from_json:
        for f in args.from_json:
            rows += json.loads(f.read_text())
        args.cores = ",".join(dict.fromkeys(r["core"] for r in rows))
    for core in [] if args.from_json else args.cores.split(","):
        get_profile(core)
        for name in args.models.split(","):
            with tempfile.TemporaryDirectory(prefix="edgekit-bench-phone.") as tmp:
                r = measure(name, core, Path(tmp))
            rows.append(r)
            print(table([r])[-1], flush=True)
    notes = calibrate(rows) if args.calibrate else []
    errors = [abs(r["est_error"]) for r in rows if r.get("est_error") is not None] if table(rows) else []
    if errors:
        notes.append(f"estimate error (instructions of the shipped model): max {max(errors):.1%}, median "
                     f"{float(np.median(errors)):.1%} over {len(errors)} builds")
    lines = ["# Phone target on emulated Arm cores", "",
             "`.venv/bin/python bench/phone.py` (see its docstring). Instructions per batch-1 inference of ONNX "
             "Runtime's aarch64 build under qemu-aarch64 (exact counts; Python's session.run subtracted). "
             "Cores: " + "; ".join(f"{c} = {get_profile(c).core} (`-cpu {get_profile(c).board['qemu_cpu']}`)"
                                   for c in args.cores.split(",")) + ".", ""] + table(rows)
    if notes:
        lines += ["", "Cost model: " + "; ".join(notes) + "."]
    args.out.write_text("\n".join(lines) + "\n")
    (args.out.with_suffix(".json")).write_text(json.dumps(rows, default=float, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

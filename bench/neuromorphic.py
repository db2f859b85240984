"""Neuromorphic benchmark: ANN vs spiking (torch) vs Lava-simulated Loihi 2, spikes, synaptic ops and energy, next to
the int8 ANN measured on the emulated Cortex-M7 and M55 — on the digits and on the spoken keywords.

    .venv/bin/python bench/neuromorphic.py [--cases cnn lmuformer ... kws-egru] [--lava-samples N] [--work DIR]
    .venv/bin/python bench/neuromorphic.py --report-only     # the table from the cases measured in --work

Cases: ``cnn`` / ``kws-cnn`` = digits-cnn / kws-dscnn converted by rate coding (T = 16); ``lmuformer`` / ``l2mu``
(``kws-``) = digits-lmu (kws-lmu) converted to the spiking LMU of LMUFormer / L2MU; ``egru`` / ``kws-egru`` = the
event-based GRUs (to_egru with a sparsity budget and an output trace) on spinnaker2, their "ANN" the GRU they were
made from. For each spiking model: ``to_spiking`` (the shipped conversion of the bundled example, or fine-tuned on
the training split), ``edgekit.compile`` for loihi2 and spinnaker2 (NIR written and read back), ``edgekit.profile``
of the loihi2 build in Lava on the test set (all inputs unless --lava-samples). For every case the int8 ANN (for the
EGRU: the int8 EGRU step program, event-driven) is compiled for cortex-m7 and cortex-m55 and run on the emulated
boards: accuracy, instructions, energy = instructions · the profile's pJ per cycle.

Energy per inference: chip = E_synop · (synaptic + graded ops) + E_neuron · neuron updates (Loihi: 23.6 pJ, 81 pJ,
Davies et al. 2018 — Loihi 1 numbers, none are published for Loihi 2; SpiNNaker 2: 450 pJ, 2.19 nJ, Höppner et al.
2019); "45 nm" = E_MAC · MACs(first layer, graded) + E_AC · SOPs (Horowitz 2014), the convention of SNN papers.
Goals (issue): spiking LMU ≤ 2 points below the ANN LMU; Lava's predicted class = torch's on ≥ 99 % of the test
inputs; NIR files read back unchanged. Converted networks are cached in --work so Lava can be rerun alone.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import edgekit
from edgekit import api
from edgekit.converters import to_spiking
from edgekit.layers.spiking import SpikingClassifier, SpikingNetwork
from edgekit.model import Model

CASES = {"cnn": ("digits-cnn", "rate"), "lmuformer": ("digits-lmu", "lmuformer"), "l2mu": ("digits-lmu", "l2mu"),
         "egru": ("digits-egru", None), "kws-cnn": ("kws-dscnn", "rate"), "kws-lmuformer": ("kws-lmu", "lmuformer"),
         "kws-l2mu": ("kws-lmu", "l2mu"), "kws-egru": ("kws-egru", None)}
RESULTS = Path(__file__).parent / "results" / "neuromorphic.md"
MCU_TARGETS = ("cortex-m7", "cortex-m55")


def converted(ann: Model, kind: str, work: Path) -> Model:
    """to_spiking(ann, kind) — from the cache in ``work`` when present (the shipped conversion of a bundled example
    loads in seconds anyway)."""
    tag = f"{ann.name}-{kind}"
    desc_path, arr_path, meta_path = work / f"{tag}.json", work / f"{tag}.npz", work / f"{tag}.meta.json"
    if desc_path.is_file() and arr_path.is_file() and meta_path.is_file():
        net = SpikingNetwork.from_spec(json.loads(desc_path.read_text()), dict(np.load(arr_path))).eval()
        m = Model.from_module(SpikingClassifier(net), ann.example_inputs, name=f"{ann.name}-snn", calib=ann.calib,
                              test_x=ann.test_x, test_y=ann.test_y, train_x=ann.train_x, train_y=ann.train_y)
        m.meta["spiking"] = json.loads(meta_path.read_text())
        m.meta["spiking"].update(net.activity(ann.test_x, ann.test_y))  # measured by this edgekit, not the cache's
        m.meta["converted_from"] = ann
        return m
    t0 = time.perf_counter()
    m = to_spiking(ann, kind=kind, progress=None)
    m.meta["spiking"]["conversion_s"] = time.perf_counter() - t0
    desc, arrays = m.module.network.spec()
    desc_path.write_text(json.dumps(desc))
    np.savez(arr_path, **arrays)
    meta_path.write_text(json.dumps(m.meta["spiking"], default=float))
    return m


def mcu_int8(ann: Model, work: Path, row: dict, samples: int | None) -> None:
    """The int8 ANN built for each MCU target and run on its emulated board: accuracy, instructions per inference,
    energy = instructions · the profile's pJ per cycle (the estimators' convention: one instruction per cycle)."""
    from edgekit.targets.profiles import get_profile

    for target in MCU_TARGETS:
        tag = target.replace("cortex-", "")
        out = work / f"{ann.name}-int8-{tag}"
        api.compile(ann, target, out, quantize="int8", force=True)
        m = api.profile(out, samples=samples).measured
        prof = get_profile(target)
        pj = prof.number("energy", "run_current_ua_per_mhz") * prof.number("energy", "supply_v")
        row[f"{tag}_int8_accuracy"] = m.get("accuracy")
        row[f"{tag}_int8_instructions"] = m["instructions"]
        row[f"{tag}_int8_uj"] = m["instructions"] * pj * 1e-6
        if "instructions_per_step" in m:
            row[f"{tag}_int8_instructions_per_step"] = m["instructions_per_step"]
        if "activity_sparsity" in m:
            row[f"{tag}_int8_sparsity"] = m["activity_sparsity"]


def bench_spiking(case: str, work: Path, lava_samples: int | None, mcu_samples: int | None) -> dict:
    name, kind = CASES[case]
    ann = edgekit.Model.load(name)
    snn = converted(ann, kind, work)
    sp = snn.meta["spiking"]
    row = {"case": case, "model": name, "kind": kind, "ann_accuracy": ann.accuracy(), "snn_accuracy": sp["accuracy"],
           "steps": sp["steps"], "spikes": sp["spikes_per_inference"], "sops": sp["synaptic_ops_per_inference"],
           "graded_ops": sp["graded_ops_per_inference"], "updates": sp["neuron_updates_per_inference"],
           "conversion_s": sp.get("conversion_s"), "shipped": bool(sp.get("shipped")),
           "test_inputs": len(ann.test_x)}
    mcu_int8(ann, work, row, mcu_samples)
    for target in ("loihi2", "spinnaker2"):
        art = api.compile(snn, target, work / f"{case}-{target}", force=True)
        row[f"{target}_uj"] = art.report["estimate"]["energy_uj"]
        row["nir"] = art.report["build"]["nir"]["round_trip"].split(" ")[0]
        row["nir_nodes"] = art.report["build"]["nir"]["nodes"]
        row["energy_45nm_uj"] = art.report["build"]["energy"]["energy_45nm_uj"]
        if target == "loihi2":
            t0 = time.perf_counter()
            m = api.profile(art.path, samples=lava_samples).measured
            row.update({"lava_accuracy": m["accuracy"], "lava_torch_accuracy": m["reference_accuracy"],
                        "lava_agreement": m["lava_agreement"], "lava_samples": m["samples"],
                        "identical_spike_counts": m["identical_spike_counts"],
                        "lava_spikes": m["spikes_per_inference"], "lava_sops": m["synaptic_ops"],
                        "lava_uj": m["energy_uj"], "lava_s": time.perf_counter() - t0,
                        "lava_ms_per_step": m["simulation_ms_per_step"],
                        "readout_max_abs_diff": m["readout_max_abs_diff"]})
    return row


def bench_egru(case: str, work: Path, mcu_samples: int | None) -> dict | None:
    name = CASES[case][0]
    try:
        ann = edgekit.Model.load(name)
    except edgekit.EdgekitError as e:
        Console(stderr=True).print(f"[yellow]{name} skipped: {e}[/yellow]")
        return None
    gru = edgekit.Model.load(name.replace("egru", "gru"))
    art = api.compile(ann, "spinnaker2", work / f"{case}-spinnaker2", force=True)
    act = art.report["build"]["activity"]
    measured = api.profile(art.path).measured
    row = {"case": case, "model": name, "kind": "egru (events)", "ann_accuracy": gru.accuracy(),
           "snn_accuracy": measured["accuracy"], "steps": int(ann.example_inputs[0].shape[1]),
           "spikes": act["events_per_inference"], "events_per_step": act["events_per_step"],
           "sparsity": act["activity_sparsity"], "sops": act["synaptic_ops_per_inference"],
           "graded_ops": act["graded_ops_per_inference"], "updates": act["neuron_updates_per_inference"],
           "spinnaker2_uj": art.report["estimate"]["energy_uj"],
           "energy_45nm_uj": art.report["build"]["energy"]["energy_45nm_uj"], "test_inputs": len(ann.test_x),
           "nir": "not expressible (egru.json kept)"}
    mcu_int8(ann, work, row, mcu_samples)
    return row


def _pct(v):
    return "–" if v is None else f"{v:.2%}"


def _num(v, fmt="{:,.0f}"):
    return "–" if v is None else fmt.format(v)


COLUMNS = [
    ("case", lambda r: f"{r['model']} ({r['kind']})"),
    ("ANN acc", lambda r: _pct(r["ann_accuracy"])),
    ("SNN acc (torch)", lambda r: _pct(r["snn_accuracy"])),
    ("Lava acc", lambda r: _pct(r.get("lava_accuracy"))),
    ("Lava = torch", lambda r: _pct(r.get("lava_agreement")) + (f" ({r['lava_samples']})" if "lava_samples" in r
                                                               else "")),
    ("same spikes", lambda r: _pct(r.get("identical_spike_counts"))),
    ("steps", lambda r: str(r["steps"])),
    ("spikes (events)/inf", lambda r: _num(r["spikes"])),
    ("zero events", lambda r: _pct(r.get("sparsity"))),
    ("SOPs/inf", lambda r: _num(r["sops"])),
    ("graded ops/inf", lambda r: _num(r["graded_ops"])),
    ("Loihi 2 µJ", lambda r: _num(r.get("loihi2_uj"), "{:.2f}")),
    ("SpiNNaker 2 µJ", lambda r: _num(r.get("spinnaker2_uj"), "{:.2f}")),
    ("45 nm µJ", lambda r: _num(r.get("energy_45nm_uj"), "{:.3f}")),
    ("int8 M7: acc, µJ", lambda r: f"{_pct(r.get('m7_int8_accuracy'))}, {_num(r.get('m7_int8_uj'), '{:.1f}')}"),
    ("int8 M55: acc, µJ", lambda r: f"{_pct(r.get('m55_int8_accuracy'))}, {_num(r.get('m55_int8_uj'), '{:.1f}')}"),
    ("M7 instr/step", lambda r: _num(r.get("m7_int8_instructions_per_step"))),
    ("NIR", lambda r: r.get("nir", "–")),
]


def markdown(rows: list[dict]) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [head, sep] + ["| " + " | ".join(f(r) for _, f in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--lava-samples", type=int, default=None, help="test inputs run in Lava (default: all)")
    ap.add_argument("--mcu-samples", type=int, default=None,
                    help="test inputs run on the emulated Cortex-M7/M55 (default: all)")
    ap.add_argument("--work", type=Path, default=Path("build/bench-neuromorphic"))
    ap.add_argument("--report-only", action="store_true", help="print the table of the cases measured in --work")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    console = Console()
    for case in [] if args.report_only else args.cases:
        console.print(f"[bold]{case}[/bold] ...")
        row = bench_egru(case, args.work, args.mcu_samples) if CASES[case][1] is None else \
            bench_spiking(case, args.work, args.lava_samples, args.mcu_samples)
        if row is not None:
            (args.work / f"{case}.json").write_text(json.dumps(row, indent=1, default=float))
    # the table holds every case measured in --work, this run's and earlier ones'
    rows = [json.loads((args.work / f"{case}.json").read_text()) for case in CASES
            if (args.work / f"{case}.json").is_file()]
    table = Table(title="Spiking conversion and neuromorphic targets (digits: 360 test inputs; keywords: 1,120)")
    for c, _ in COLUMNS:
        table.add_column(c, justify="right" if c != "case" else "left")
    for r in rows:
        table.add_row(*[f(r) for _, f in COLUMNS])
    console.print(table)
    for r in rows:
        if "lava_s" in r:
            console.print(f"  {r['case']}: Lava {r['lava_s']:.0f} s ({r['lava_ms_per_step']:.1f} ms/step), readout "
                          f"max |Lava − torch| {r['readout_max_abs_diff']:.2g}")
    RESULTS.write_text("# bench/neuromorphic.py\n\n" + markdown(rows) + "\n")


if __name__ == "__main__":
    main()

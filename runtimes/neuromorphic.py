"""Neuromorphic runtime: a loihi2 artifact run in Lava's Loihi 2 simulator (fixed point); spinnaker2 reported from the
snntorch run's counts.

Where it sits: runtimes/ (Artifact -> Measured). ``edgekit profile OUT`` calls :func:`profile`. It reads what
targets/neuromorphic wrote — ``loihi_network.json/.npz`` (the network in Loihi's integers) and ``testdata.npz`` — and
builds Lava processes from them; it changes none of it.

The Lava network (lava-nc 0.10, ``Loihi2SimCfg(select_tag="fixed_pt")``, the bit-accurate process models):

* input: ``io.source.RingBuffer`` sending the 8-bit graded input every step
* LIF population: ``LIFReset`` (du = 4095, so the current is this step's input; dv, vth = 4096, bias mantissa and
  exponent per neuron), resetting u and v at the first step of every test input
* graded population (the LMU memory): ``GradedVec`` (sends its summed input each step, no state of its own)
* connection: ``Dense`` (``DelayDense`` for delays > 1) with the 8-bit weights and ``weight_exp`` of the integer
  network; 24-bit graded messages when the source is graded. Their buffer is cleared at the first step of every
  test input (the models below subclass Lava's bit-accurate ones to do that), so inputs run back to back in one
  simulation, each from the zero state as in the torch reference
* readout: the readout connections' output summed by an ``io.sink.RingBuffer`` (the host adds the bias and divides
  by the steps); spike counts from a sink on every population

Agreement with the torch (snntorch) reference: the weights, biases and thresholds are the same numbers (to_spiking
trains on and snaps to Loihi's grid); the torch run floors step sums finer than their target's unit as Lava's right
shift does (loihi_format.floor_sum), decays leaky membranes with the chip's 12-bit multiply truncated toward zero
(Population.step), and measures in float64, where these multiples of the grid add exactly — so it gives Lava's
spikes. What can still differ: a network measured by an older edgekit (before the exact decay) and float32 forward
passes outside ``measure``. Tolerance: the predicted class must match on ≥ 99 % of the inputs
(``AGREEMENT_GOAL``); spike counts are reported, not required to match.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit.errors import FirmwareError, ToolchainError, UsageError

AGREEMENT_GOAL = 0.99
CHUNK = 24                   # test inputs per Lava run call (the sinks hold one chunk)
SECONDS_PER_STEP_LIMIT = 2.0  # time limit of the simulation: generous, Lava takes ~10-100 ms per step here


def profile(out: Path, report: dict, samples: int | None = None, **kw) -> dict:
    """Run OUT on its simulator (loihi2: Lava) or report the build's counts (spinnaker2); returns report['measured'].

    ``samples`` limits the Lava run to the first test inputs (Lava simulates a few ms per step)."""
    from edgekit.targets.neuromorphic import NeuromorphicBuild

    out = Path(out)
    build = NeuromorphicBuild.from_json(report.get("build") or {})
    if not (out / "testdata.npz").is_file():
        raise UsageError(f"{out}: testdata.npz is missing; compile again for {report['target']}")
    if build.simulator == "lava":
        return profile_lava(out, report, samples)
    return _counted(out, report)


def _energy(report: dict, synops: float, graded: float, updates: float) -> dict:
    from edgekit.targets.neuromorphic.cost import neuromorphic_energy
    from edgekit.targets.profiles import get_profile

    return neuromorphic_energy(get_profile(report["target"]), synops, graded, updates)


def _counted(out: Path, report: dict) -> dict:
    """spinnaker2 (no simulator available): the counts of the torch run at build time, as measured values."""
    from edgekit.targets.neuromorphic import NeuromorphicBuild

    act = NeuromorphicBuild.from_json(report.get("build") or {}).activity or {}
    data = np.load(out / "testdata.npz")
    y = data["y"] if "y" in data.files else None
    energy = _energy(report, act.get("synaptic_ops_per_inference", 0.0), act.get("graded_ops_per_inference", 0.0),
                     act.get("neuron_updates_per_inference", 0))
    measured = {"simulator": None, "samples": int(len(data["x"])),
                "accuracy": float((data["reference"].argmax(-1) == y).mean()) if y is not None else None,
                "spikes_per_inference": act.get("spikes_per_inference", act.get("events_per_inference")),
                "synaptic_ops": act.get("synaptic_ops_per_inference"), "graded_ops": act.get("graded_ops_per_inference"),
                "neuron_updates": act.get("neuron_updates_per_inference"), "energy_uj": energy["energy_uj"],
                "energy_formula": energy["formula"],
                "notes": [f"no {report['target']} simulator is available: the numbers are the torch (snntorch/float) "
                          "run's counts on the test inputs, priced with the profile's energy constants"]}
    if "events_per_inference" in act:
        measured["events_per_inference"] = act["events_per_inference"]
        measured["events_per_step"] = act.get("events_per_step")
    return measured


# ---- Lava -------------------------------------------------------------------------------------------------------------


def _lava():
    """Lava's pieces, with the two resetting connection models (imported late: Lava takes seconds to import)."""
    try:
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.dense.models import PyDelayDenseModelBitAcc, PyDenseModelBitAcc
        from lava.proc.dense.process import DelayDense, Dense
        from lava.proc.graded.process import GradedVec
        from lava.proc.io.sink import RingBuffer as Sink
        from lava.proc.io.source import RingBuffer as Source
        from lava.proc.lif.process import LIFReset
    except Exception as e:  # noqa: BLE001
        raise ToolchainError(f"Lava (lava-nc 0.10) cannot be imported ({type(e).__name__}: {str(e)[:120]}); run "
                             "scripts/setup.sh, which installs it and applies scripts/lava_py311_fix.py") from e

    def first_step(model) -> bool:
        interval = int(model.proc_params.get("reset_interval", 0))
        return bool(interval) and model.time_step % interval == 1 % interval

    class ResettingDense(PyDenseModelBitAcc):
        """Loihi's bit-accurate Dense whose one-step buffer is cleared at the first step of every test input."""

        def run_spk(self):
            if first_step(self):
                self.a_buff[:] = 0
            super().run_spk()

    class ResettingDelayDense(PyDelayDenseModelBitAcc):
        """Loihi's bit-accurate DelayDense, its delay buffer cleared at the first step of every test input."""

        def run_spk(self):
            if first_step(self):
                self.a_buff[:] = 0
            super().run_spk()

    return {"RunSteps": RunSteps, "Loihi2SimCfg": Loihi2SimCfg, "Dense": Dense, "DelayDense": DelayDense,
            "GradedVec": GradedVec, "Sink": Sink, "Source": Source, "LIFReset": LIFReset,
            "models": {Dense: ResettingDense, DelayDense: ResettingDelayDense}}


def input_codes(x: np.ndarray, unit_exp: int, steps: int, static: bool) -> np.ndarray:
    """The source's data [input size, len(x) · steps]: 8-bit graded codes, one column per step."""
    q = np.clip(np.round(x.astype(np.float64) * 2.0 ** unit_exp), -127, 127).astype(np.int32)
    n = len(x)
    if static:
        flat = q.reshape(n, -1)
        cols = np.repeat(flat[:, None, :], steps, axis=1)
    else:
        seq = q.reshape(n, q.shape[1], -1)[:, :steps]
        cols = np.zeros((n, steps, seq.shape[2]), np.int32)
        cols[:, :seq.shape[1]] = seq
    return cols.reshape(n * steps, -1).T.copy()


class LavaNetwork:
    """The integer network as Lava processes, for ``chunk`` test inputs per run call."""

    def __init__(self, desc: dict, arrays: dict[str, np.ndarray], codes: np.ndarray, chunk: int):
        lv = _lava()
        self.lv, self.desc, self.chunk = lv, desc, chunk
        steps = desc["steps"]
        self.pops = {p["name"]: p for p in desc["populations"]}
        self.procs = {}
        self.sinks = {}
        for p in desc["populations"]:
            name, size = p["name"], p["size"]
            if p["kind"] == "input":
                self.procs[name] = lv["Source"](data=codes)
            elif p["kind"] == "lif":
                self.procs[name] = lv["LIFReset"](
                    shape=(size,), du=p["du"], dv=p["dv"], vth=p["vth"], bias_mant=arrays[f"{name}.bias_mant"],
                    bias_exp=arrays[f"{name}.bias_exp"], reset_interval=steps, reset_offset=1 % steps, name=name)
            elif p["kind"] == "graded":
                self.procs[name] = lv["GradedVec"](shape=(size,), vth=0, exp=0)
            if p["kind"] in ("lif", "graded", "readout"):
                self.sinks[name] = lv["Sink"](shape=(size,), buffer=chunk * steps)
                if p["kind"] != "readout":
                    self.procs[name].s_out.connect(self.sinks[name].a_in)
        self.fan_out = {}
        for c in desc["connections"]:
            w = arrays[f"{c['name']}.weights"]
            self.fan_out[c["name"]] = (w != 0).sum(0)
            target = self.sinks[c["target"]] if self.pops[c["target"]]["kind"] == "readout" else self.procs[c["target"]]
            for s in c["sources"]:
                kw = dict(weights=w, weight_exp=c["weight_exp"], num_message_bits=24 if c["graded"] else 0,
                          reset_interval=steps)
                conn = lv["Dense"](**kw) if c["delay"] == 1 else lv["DelayDense"](delays=c["delay"] - 1, **kw)
                self.procs[s].s_out.connect(conn.s_in)
                conn.a_out.connect(target.a_in)
        self.cfg = lv["Loihi2SimCfg"](select_tag="fixed_pt", exception_proc_model_map=lv["models"])
        self.any_proc = next(iter(self.sinks.values()))

    def run_chunk(self, n: int) -> dict[str, np.ndarray]:
        """Run n (≤ chunk) test inputs; each sink's data [size, n · steps]."""
        steps = self.desc["steps"]
        self.any_proc.run(condition=self.lv["RunSteps"](num_steps=n * steps), run_cfg=self.cfg)
        return {name: np.asarray(s.data.get())[:, :n * steps] for name, s in self.sinks.items()}

    def stop(self) -> None:
        try:
            self.any_proc.stop()
        except Exception:  # noqa: BLE001  (a failed run may leave nothing to stop)
            pass


def simulate(out: Path, n: int, result: Path) -> None:
    """Run the first ``n`` test inputs of OUT in Lava; save readouts and per-neuron spike counts to ``result``."""
    desc = json.loads((out / "loihi_network.json").read_text())
    arrays = dict(np.load(out / "loihi_network.npz"))
    x = np.load(out / "testdata.npz")["x"][:n]
    steps = desc["steps"]
    inp = next(p for p in desc["populations"] if p["kind"] == "input")
    codes = input_codes(x, inp["unit_exp"], steps, desc["input_mode"] == "static")
    chunk = min(CHUNK, n)
    net = LavaNetwork(desc, arrays, codes, chunk)
    readout = desc["readout"]
    rd = net.pops[readout]
    logits = np.zeros((n, rd["size"]))
    counts = {name: np.zeros((n, net.pops[name]["size"])) for name in net.sinks if name != readout}
    try:
        for i in range(0, n, chunk):
            k = min(chunk, n - i)
            for name, d in net.run_chunk(k).items():
                per = d.reshape(d.shape[0], k, steps)
                if name == readout:
                    window = desc.get("readout_steps", steps)
                    logits[i:i + k] = (per[:, :, steps - window:].sum(2).T * 2.0 ** -rd["unit_exp"] / window
                                       + arrays[f"{readout}.bias"])
                else:
                    counts[name][i:i + k] = (per != 0).sum(2).T
    finally:
        net.stop()
    np.savez(result, logits=logits, **{f"counts.{k}": v for k, v in counts.items()})


def _run_simulator(out: Path, n: int, steps: int) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """:func:`simulate` in its own Python process: Lava fixes the multiprocessing start method when imported and
    forks its process models, which must not depend on (or disturb) the caller's process."""
    with tempfile.TemporaryDirectory(prefix="edgekit-lava.") as tmp:
        result = Path(tmp) / "result.npz"
        t0 = time.perf_counter()
        budget = 600 + n * steps * SECONDS_PER_STEP_LIMIT
        try:
            proc = subprocess.run([sys.executable, "-m", "edgekit.runtimes.neuromorphic", str(out), str(n),
                                   str(result)], capture_output=True, text=True, timeout=budget)
        except subprocess.TimeoutExpired:
            raise FirmwareError(f"the Lava simulation of {n} inputs did not finish in {budget:.0f} s; profile fewer "
                                "samples") from None
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not result.is_file():
            lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
            last = lines[-1] if lines else f"exit status {proc.returncode}"
            if "ToolchainError" in last or "lava" in last.lower() and "import" in last.lower():
                raise ToolchainError(f"Lava failed: {last[:300]}")
            raise FirmwareError(f"the Lava simulation failed: {last[:300]}")
        data = np.load(result)
        counts = {k.split(".", 1)[1]: data[k] for k in data.files if k.startswith("counts.")}
        return data["logits"], counts, wall


def profile_lava(out: Path, report: dict, samples: int | None = None) -> dict:
    """Run the first ``samples`` test inputs (all by default) through Lava and compare with the torch reference."""
    desc = json.loads((out / "loihi_network.json").read_text())
    arrays = dict(np.load(out / "loihi_network.npz"))
    data = np.load(out / "testdata.npz")
    x, reference = data["x"], data["reference"]
    y = data["y"] if "y" in data.files else None
    n = len(x) if samples is None else max(1, min(int(samples), len(x)))
    x, reference = x[:n], reference[:n]
    y = y[:n] if y is not None else None
    steps = desc["steps"]
    inp = next(p for p in desc["populations"] if p["kind"] == "input")
    codes = input_codes(x, inp["unit_exp"], steps, desc["input_mode"] == "static")
    logits, neuron_counts, wall = _run_simulator(out, n, steps)
    fan_out = {c["name"]: (arrays[f"{c['name']}.weights"] != 0).sum(0) for c in desc["connections"]}

    spikes = {name: c.sum(1) for name, c in neuron_counts.items()}
    sops = np.zeros(n)
    graded = np.zeros(n)
    in_counts = (codes.reshape(codes.shape[0], n, steps) != 0).sum(2).T
    for c in desc["connections"]:
        is_graded = c["graded"]
        for s in c["sources"]:
            counts = in_counts if s == inp["name"] else neuron_counts[s]
            ops = counts @ fan_out[c["name"]]
            if is_graded:
                graded += ops
            else:
                sops += ops
    lif = [p["name"] for p in desc["populations"] if p["kind"] == "lif"]
    spikes_per = float(sum(spikes[p].mean() for p in lif))
    updates = sum(p["size"] for p in desc["populations"] if p["kind"] != "input") * steps
    energy = _energy(report, float(sops.mean()), float(graded.mean()), updates)

    pred, ref_pred = logits.argmax(-1), reference.argmax(-1)
    agreement = float((pred == ref_pred).mean())
    torch_spikes = {p: data[f"spikes.{p}"][:n] for p in spikes if f"spikes.{p}" in data.files}
    same_counts = np.ones(n, bool)
    rel = {}
    for p, s in spikes.items():
        if p in torch_spikes:
            same_counts &= s == torch_spikes[p]
            rel[p] = float(np.abs(s - torch_spikes[p]).sum() / max(torch_spikes[p].sum(), 1))
    torch_sops = sum(data[f"sops.{c['name']}"][:n] for c in desc["connections"] if not c["graded"])
    measured = {
        "simulator": "lava-nc 0.10 Loihi2SimCfg, fixed_pt (bit-accurate process models)",
        "samples": n, "test_samples": int(len(data["x"])),
        "accuracy": float((pred == y).mean()) if y is not None else None,
        "reference_accuracy": float((ref_pred == y).mean()) if y is not None else None,
        "lava_agreement": agreement, "outputs_match": agreement >= AGREEMENT_GOAL,
        "agreement_goal": AGREEMENT_GOAL,
        "identical_spike_counts": float(same_counts.mean()),
        "spike_count_difference": rel,
        "readout_max_abs_diff": float(np.abs(logits - reference).max()),
        "spikes_per_inference": spikes_per, "spikes_per_inference_torch": float(sum(torch_spikes[p].mean()
                                                                                   for p in lif if p in torch_spikes)),
        "synaptic_ops": float(sops.mean()), "synaptic_ops_torch": float(np.mean(torch_sops)),
        "graded_ops": float(graded.mean()), "neuron_updates": updates,
        "energy_uj": energy["energy_uj"], "energy_formula": energy["formula"],
        "latency_ms": None, "simulation_s": wall, "simulation_ms_per_step": wall / (n * steps) * 1e3,
        "tolerance": f"predicted class equal to the torch reference on ≥ {AGREEMENT_GOAL:.0%} of the inputs; "
                     "the reference computes Lava's integer arithmetic (floored sums, truncated decays) in float64, "
                     "so spikes are expected to be identical",
    }
    if samples is not None and n < len(data["x"]):
        measured["notes"] = [f"Lava ran the first {n} of {len(data['x'])} test inputs"]
    return measured


if __name__ == "__main__":  # the simulator's own process (see _run_simulator)
    simulate(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))

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
* connection: ``Sparse`` (``DelaySparse`` for delays > 1) with the 8-bit weights and ``weight_exp`` of the integer
  network; 24-bit graded messages when the source is graded. Their buffer is cleared at the first step of every
  test input (the models below subclass Lava's bit-accurate ones to do that), so each input starts from the zero
  state as in the torch reference
* many test inputs at once: the network is instantiated side by side (block-diagonal weights) so that one run of
  ``steps`` steps simulates hundreds of inputs (Lava's cost is per process and step, not per neuron); more inputs
  than fit run in successive windows of ``steps`` steps, resetting between them
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

import contextlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit import fidelity

from edgekit.errors import FirmwareError, ToolchainError, UsageError
from edgekit.runtimes.progress import progress_bar

AGREEMENT_GOAL = 0.99
MAX_SIDE_BY_SIDE_NEURONS = 1_000_000  # neurons of all instances run side by side in one Lava network
MAX_DELAY_MATRIX_BYTES = 512 * 2 ** 20  # dense matrix Lava's DelaySparse makes of one side-by-side connection
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
    if "float_reference" in data.files:
        measured["fidelity"] = fidelity.measure(data["reference"], data["float_reference"], y, scale_free=True)
        measured["fidelity"]["against"] = "the model before conversion (its outputs vs the converted network's)"
    if "events_per_inference" in act:
        measured["events_per_inference"] = act["events_per_inference"]
        measured["events_per_step"] = act.get("events_per_step")
    return measured


# ---- Lava -------------------------------------------------------------------------------------------------------------


def _lava():
    """Lava's pieces, with the two resetting connection models and the recorder (imported late: Lava takes seconds
    to import)."""
    try:
        from lava.magma.core.decorator import implements, requires, tag
        from lava.magma.core.model.py.model import PyLoihiProcessModel
        from lava.magma.core.model.py.ports import PyInPort
        from lava.magma.core.model.py.type import LavaPyType
        from lava.magma.core.process.ports.ports import InPort
        from lava.magma.core.process.process import AbstractProcess
        from lava.magma.core.resources import CPU
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
        from lava.proc.sparse.models import PyDelaySparseModelBitAcc, PySparseModelBitAcc
        from lava.proc.sparse.process import DelaySparse, Sparse
        from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights
        from lava.proc.graded.process import GradedVec
        from lava.proc.io.source import RingBuffer as Source
        from lava.proc.lif.process import LIFReset
    except Exception as e:  # noqa: BLE001
        raise ToolchainError(f"Lava (lava-nc 0.10) cannot be imported ({type(e).__name__}: {str(e)[:120]}); run "
                             "scripts/setup.sh, which installs it and applies scripts/lava_py311_fix.py") from e

    def first_step(model) -> bool:
        interval = int(model.proc_params.get("reset_interval", 0))
        return bool(interval) and model.time_step % interval == 1 % interval

    class ResettingSparse(PySparseModelBitAcc):
        """Loihi's bit-accurate Sparse whose one-step buffer is cleared at the first step of every test input.

        Binary spikes are summed as W · s (a sparse product with the 0/1 spike vector) rather than by selecting the
        active columns of the CSR matrix, as Lava's model does: the same integer sums, but column selection of a
        matrix of several hundred side-by-side networks costs seconds per step."""

        def run_spk(self):
            if first_step(self):
                self.a_buff[:] = 0
            self.weight_exp = self.proc_params.get("weight_exp", 0)
            if not self.weights_set:  # as PySparseModelBitAcc: clip and truncate the weights once
                sign_mode = self.proc_params.get("sign_mode") or determine_sign_mode(self.weights)
                self.weights = clip_weights(self.weights, sign_mode, num_bits=8)
                self.weights = truncate_weights(self.weights, sign_mode,
                                                self.proc_params.get("num_weight_bits", 8)).tocsr()
                self.weights_set = True
            self.a_out.send(self.a_buff)
            s_in = self.s_in.recv()
            if self.num_message_bits.item() == 0:
                s_in = s_in.astype(bool).astype(np.int32)
            a_accum = np.asarray(self.weights.dot(s_in))
            self.a_buff = (np.left_shift(a_accum, self.weight_exp) if self.weight_exp > 0
                           else np.right_shift(a_accum, -self.weight_exp))

    class ResettingDelaySparse(PyDelaySparseModelBitAcc):
        """Loihi's bit-accurate DelaySparse, its delay buffer cleared at the first step of every test input; the
        per-delay weight matrix is built once (Lava's model rebuilds it every step)."""

        def run_spk(self):
            if first_step(self):
                self.a_buff[:] = 0
            super().run_spk()

        def calc_act(self, s_in):
            if getattr(self, "_delay_wgts", None) is None:
                self._delay_wgts = self.get_delay_wgts_mat(self.weights, self.delays, self.a_buff.shape[-1] - 1)
            return np.reshape(self._delay_wgts.dot(s_in), (self.a_buff.shape[-1], self.weights.shape[0])).T

    class Recorder(AbstractProcess):
        """Sums what arrives at ``a_in`` per test input and writes the sums to ``path`` (.npy, [size, windows]) after
        every window of ``steps`` steps: "count" counts non-zero messages (spikes), "sum" adds the values of the last
        ``window`` steps (the readout). Lava's own sinks hand their data back one element per message, which takes
        longer than the simulation itself for hundreds of inputs; a file does not."""

        def __init__(self, *, shape, path: str, steps: int, windows: int, mode: str, window: int):
            super().__init__(shape=shape, path=path, steps=steps, windows=windows, mode=mode, window=window)
            self.a_in = InPort(shape=shape)

    @implements(proc=Recorder, protocol=LoihiProtocol)
    @requires(CPU)
    @tag("fixed_pt")
    class PyRecorderModel(PyLoihiProcessModel):
        a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)

        def __init__(self, proc_params):
            super().__init__(proc_params)
            self.acc = np.zeros(proc_params["shape"] + (proc_params["windows"],), np.int64)

        def run_spk(self):
            x = self.a_in.recv()
            pp = self.proc_params
            steps, t = pp["steps"], self.time_step - 1
            w, k = t // steps, t % steps
            if pp["mode"] == "count":
                self.acc[:, w] += x != 0
            elif k >= steps - pp["window"]:
                self.acc[:, w] += x.astype(np.int64)
            if k == steps - 1:
                np.save(pp["path"] + ".partial.npy", self.acc)
                os.replace(pp["path"] + ".partial.npy", pp["path"])

    return {"RunSteps": RunSteps, "Loihi2SimCfg": Loihi2SimCfg, "Sparse": Sparse, "DelaySparse": DelaySparse,
            "GradedVec": GradedVec, "Recorder": Recorder, "Source": Source, "LIFReset": LIFReset,
            "models": {Sparse: ResettingSparse, DelaySparse: ResettingDelaySparse, Recorder: PyRecorderModel}}


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


def side_by_side(codes: np.ndarray, n: int, steps: int, copies: int) -> np.ndarray:
    """The source's data for ``copies`` networks side by side: input i = c · copies + j is copy j's input in the
    c-th window of ``steps`` columns. ``codes`` [input size, n · steps] (input_codes) -> [copies · input size,
    windows · steps], unused slots zero."""
    size = codes.shape[0]
    windows = -(-n // copies)
    per = np.zeros((windows * copies, size, steps), codes.dtype)
    per[:n] = codes.reshape(size, n, steps).transpose(1, 0, 2)
    return per.reshape(windows, copies * size, steps).transpose(1, 0, 2).reshape(copies * size, windows * steps)


INTEGER_FORMAT = "edgekit-loihi-int/2"


def integer_network(out: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """OUT's loihi_network.json/.npz; a one-line error for a build of another edgekit (an older, dense format)."""
    desc = json.loads((out / "loihi_network.json").read_text())
    if desc.get("format") != INTEGER_FORMAT:
        raise UsageError(f"{out / 'loihi_network.json'} is format {desc.get('format')!r}, this edgekit reads "
                         f"{INTEGER_FORMAT!r}: compile the model again into {out}")
    return desc, dict(np.load(out / "loihi_network.npz"))


def synapses(arrays: dict[str, np.ndarray], conn: dict):
    """A connection's synapse matrix (scipy CSR, int32) from the integer network's arrays (loihi_format)."""
    from scipy.sparse import csr_matrix

    name = conn["name"]
    return csr_matrix((arrays[f"{name}.weights"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"]),
                      shape=tuple(conn["shape"]))


def block_diagonal(w, copies: int):
    """``copies`` of ``w`` on the diagonal, as CSR (what scipy.sparse.block_diag gives, built in one go: its
    generic path takes minutes for hundreds of blocks)."""
    from scipy.sparse import csr_matrix

    one = csr_matrix(w)
    rows, cols = one.shape
    nnz = one.nnz
    k = np.arange(copies)
    data = np.tile(one.data, copies)
    indices = (one.indices[None, :] + cols * k[:, None]).ravel()
    indptr = np.concatenate([(one.indptr[:-1][None, :] + nnz * k[:, None]).ravel(), [nnz * copies]])
    return csr_matrix((data, indices, indptr), shape=(rows * copies, cols * copies))


def _tile(values, size: int, copies: int) -> np.ndarray:
    return np.tile(np.broadcast_to(np.asarray(values), (size,)), copies)


class LavaNetwork:
    """The integer network as Lava processes, ``copies`` instances side by side (block-diagonal Sparse
    connections), so that one run of ``steps`` steps simulates ``copies`` test inputs at once: Lava's cost is per
    process and step, far more than per neuron, so this is what makes a profile of hundreds of inputs take minutes.
    Every instance resets at the first step of each window, as the chip's network does between inputs."""

    def __init__(self, desc: dict, arrays: dict[str, np.ndarray], data: np.ndarray, copies: int, work: Path):
        lv = _lava()
        self.lv, self.desc, self.copies = lv, desc, copies
        steps = desc["steps"]
        self.windows = data.shape[1] // steps
        self.pops = {p["name"]: p for p in desc["populations"]}
        self.procs = {}
        self.sinks = {}
        for p in desc["populations"]:
            name, size = p["name"], p["size"]
            if p["kind"] == "input":
                self.procs[name] = lv["Source"](data=data)
            elif p["kind"] == "lif":
                self.procs[name] = lv["LIFReset"](
                    shape=(copies * size,), du=p["du"], dv=p["dv"], vth=p["vth"],
                    bias_mant=_tile(arrays[f"{name}.bias_mant"], size, copies),
                    bias_exp=_tile(arrays[f"{name}.bias_exp"], size, copies), reset_interval=steps,
                    reset_offset=1 % steps, name=name)
            elif p["kind"] == "graded":
                self.procs[name] = lv["GradedVec"](shape=(copies * size,), vth=0, exp=0)
            if p["kind"] in ("lif", "graded", "readout"):
                readout = p["kind"] == "readout"
                self.sinks[name] = lv["Recorder"](
                    shape=(copies * size,), path=str(work / f"{name}.npy"), steps=steps, windows=self.windows,
                    mode="sum" if readout else "count", window=desc.get("readout_steps", steps))
                if p["kind"] != "readout":
                    self.procs[name].s_out.connect(self.sinks[name].a_in)
        for c in desc["connections"]:
            w = block_diagonal(synapses(arrays, c), copies)
            target = self.sinks[c["target"]] if self.pops[c["target"]]["kind"] == "readout" else self.procs[c["target"]]
            for src in c["sources"]:
                kw = dict(weights=w, weight_exp=c["weight_exp"], num_message_bits=24 if c["graded"] else 0,
                          reset_interval=steps)
                conn = lv["Sparse"](**kw) if c["delay"] == 1 else lv["DelaySparse"](delays=c["delay"] - 1, **kw)
                self.procs[src].s_out.connect(conn.s_in)
                conn.a_out.connect(target.a_in)
        # Lava's compiler looks a process up in this map by instance (before searching modules for models, which
        # finds none for the recorder defined here) and, for the connections, by class
        models = {**lv["models"], **{rec: lv["models"][lv["Recorder"]] for rec in self.sinks.values()}}
        self.cfg = lv["Loihi2SimCfg"](select_tag="fixed_pt", exception_proc_model_map=models)
        self.any_proc = next(iter(self.sinks.values()))

    def run(self, progress=None) -> dict[str, np.ndarray]:
        """Run every window; per population [copies · size, windows]: spike counts, or the readout's summed input
        over its window. ``progress(windows_done)`` after each window."""
        steps = self.desc["steps"]
        for w in range(self.windows):
            self.any_proc.run(condition=self.lv["RunSteps"](num_steps=steps), run_cfg=self.cfg)
            if progress is not None:
                progress(w + 1)
        return {name: np.load(s.proc_params["path"]) for name, s in self.sinks.items()}

    def stop(self) -> None:
        try:
            self.any_proc.stop()
        except Exception:  # noqa: BLE001  (a failed run may leave nothing to stop)
            pass


def copies_for(desc: dict, n: int) -> int:
    """How many instances run side by side: all test inputs, within MAX_SIDE_BY_SIDE_NEURONS neurons, and within
    MAX_DELAY_MATRIX_BYTES for every delayed connection (Lava's DelaySparse keeps a dense [delays, rows, columns]
    matrix of the whole side-by-side connection: 1,120 keyword inputs of a spiking LMU took 12 GB and were killed)."""
    neurons = max(1, sum(p["size"] for p in desc["populations"]))
    copies = max(1, min(n, MAX_SIDE_BY_SIDE_NEURONS // neurons))
    for c in desc["connections"]:
        if c["delay"] > 1:
            rows, cols = c["shape"]
            dense = 4 * c["delay"] * rows * cols  # bytes of one instance's share, times copies² side by side
            copies = min(copies, max(1, int(math.sqrt(MAX_DELAY_MATRIX_BYTES / dense))))
    return copies


def simulate(out: Path, n: int, result: Path) -> None:
    """Run the first ``n`` test inputs of OUT in Lava; save readouts and per-neuron spike counts to ``result``.
    Progress goes to stderr as ``EK_PROGRESS done total`` lines (the parent shows it)."""
    desc, arrays = integer_network(out)
    x = np.load(out / "testdata.npz")["x"][:n]
    steps = desc["steps"]
    inp = next(p for p in desc["populations"] if p["kind"] == "input")
    codes = input_codes(x, inp["unit_exp"], steps, desc["input_mode"] == "static")
    copies = copies_for(desc, n)
    readout = desc["readout"]
    counts = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-lava-rec.") as work:
        net = LavaNetwork(desc, arrays, side_by_side(codes, n, steps, copies), copies, Path(work))
        rd = net.pops[readout]
        try:
            data = net.run(lambda w: print(f"EK_PROGRESS {min(n, w * copies)} {n}", file=sys.stderr, flush=True))
        finally:
            net.stop()
    for name, d in data.items():
        size = net.pops[name]["size"]
        # [copies · size, windows] -> [windows · copies, size]: input i = window · copies + copy
        counts[name] = d.reshape(copies, size, net.windows).transpose(2, 0, 1).reshape(-1, size)[:n].astype(float)
    window = desc.get("readout_steps", steps)
    logits = counts.pop(readout) * 2.0 ** -rd["unit_exp"] / window + arrays[f"{readout}.bias"]
    np.savez(result, logits=logits, **{f"counts.{k}": v for k, v in counts.items()})


def _run_simulator(out: Path, desc: dict, n: int) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """:func:`simulate` in its own Python process: Lava fixes the multiprocessing start method when imported and
    forks its process models, which must not depend on (or disturb) the caller's process."""
    with tempfile.TemporaryDirectory(prefix="edgekit-lava.") as tmp:
        result = Path(tmp) / "result.npz"
        t0 = time.perf_counter()
        windows = -(-n // copies_for(desc, n))  # the instances run side by side: the time goes by windows
        budget = 600 + windows * desc["steps"] * SECONDS_PER_STEP_LIMIT
        lines: list[str] = []
        with progress_bar() as progress, open(Path(tmp) / "stdout.txt", "wb") as stdout:
            step = progress(f"Lava, {n} inputs", n)
            proc = subprocess.Popen([sys.executable, "-m", "edgekit.runtimes.neuromorphic", str(out), str(n),
                                     str(result)], stdout=stdout, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)
            done = 0
            try:
                while True:
                    left = budget - (time.perf_counter() - t0)
                    if left <= 0:
                        raise FirmwareError(f"the Lava simulation of {n} inputs did not finish in {budget:.0f} s; "
                                            "profile fewer samples")
                    ready, _, _ = select.select([proc.stderr], [], [], min(left, 5.0))
                    if not ready:
                        continue
                    line = proc.stderr.readline()
                    if not line:  # the simulator closed stderr: it has ended
                        break
                    if line.startswith("EK_PROGRESS "):
                        now = int(line.split()[1])
                        step(now - done)
                        done = now
                    elif line.strip():
                        lines.append(line.rstrip())
                proc.wait(timeout=max(1.0, budget - (time.perf_counter() - t0)))
            finally:  # also on Ctrl-C or a timeout: never leave the simulator (and its Lava processes) running
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not result.is_file():
            last = lines[-1] if lines else f"exit status {proc.returncode}"
            if "ToolchainError" in last or "lava" in last.lower() and "import" in last.lower():
                raise ToolchainError(f"Lava failed: {last[:300]}")
            raise FirmwareError(f"the Lava simulation failed: {last[:300]}")
        data = np.load(result)
        counts = {k.split(".", 1)[1]: data[k] for k in data.files if k.startswith("counts.")}
        return data["logits"], counts, wall


def profile_lava(out: Path, report: dict, samples: int | None = None) -> dict:
    """Run the first ``samples`` test inputs (all by default) through Lava and compare with the torch reference."""
    desc, arrays = integer_network(out)
    data = np.load(out / "testdata.npz")
    x, reference = data["x"], data["reference"]
    y = data["y"] if "y" in data.files else None
    n = len(x) if samples is None else max(1, min(int(samples), len(x)))
    x, reference = x[:n], reference[:n]
    y = y[:n] if y is not None else None
    steps = desc["steps"]
    inp = next(p for p in desc["populations"] if p["kind"] == "input")
    codes = input_codes(x, inp["unit_exp"], steps, desc["input_mode"] == "static")
    logits, neuron_counts, wall = _run_simulator(out, desc, n)
    fan_out = {c["name"]: np.bincount(arrays[f"{c['name']}.indices"], minlength=c["shape"][1])
               for c in desc["connections"]}

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
    if "float_reference" in data.files:  # the ANN the spiking network was converted from
        measured["fidelity"] = fidelity.measure(logits, data["float_reference"][:n], y, scale_free=True)
        measured["fidelity"]["against"] = "the ANN before spiking conversion (its logits vs Lava's readout)"
    if samples is not None and n < len(data["x"]):
        measured["notes"] = [f"Lava ran the first {n} of {len(data['x'])} test inputs"]
    return measured


if __name__ == "__main__":  # the simulator's own process (see _run_simulator)
    simulate(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))

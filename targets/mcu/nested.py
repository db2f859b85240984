"""One firmware image, several operating points: a nested model (edgekit.converters.nested) on a microcontroller.

Where it sits: targets/mcu, behind :class:`~edgekit.targets.mcu.McuTarget` when the model carries ``meta["nested"]``
(``edgekit convert MODEL --budgets ...``). Each operating point (a width fraction of every sliceable layer) is planned
and built as its own program by the ordinary pipeline (pipeline.py); what this module adds:

* **Weights stored once.** Every point is quantized with the widest point's per-channel weight scales (so its int8
  weights are exactly the first rows/columns of the widest point's), and packed so that prefixes nest: one reduction
  run per kernel tap in conv layers, one depthwise layout per layer (for 3x3 the fewest instructions summed over
  the points, ek_kernels.nested_packing). A narrower point's conv / depthwise / linear call then reads the widest
  point's packed array with strides (``weight_block_bytes``, ``weight_run_pairs``) instead of its own copy —
  checked byte for byte on the host (kernel_pack.nested_view); where a layer does not nest it keeps its own copy,
  and the report says how many bytes.
  By default every point also takes the widest point's activation scales (``options.extra["nested_scales"] =
  "shared"``), so its biases and requantization tables (4 + 16 bytes per channel — on kws-dscnn as much flash as a
  third of the weights) are prefixes of the widest point's too; ``"own"`` calibrates each point's activations
  apart (its tables are then its own). A point trained with its own bias offsets (converters/nested.py,
  ``private="bias"``, the default) stores its own bias arrays (4 bytes per channel); with its own per-channel scales
  (``"affine"``) it takes the widest point's weight scales times them — the same int8 weights — and its own
  requantization tables. Measured with budgets 0.25/0.5/0.75/1 on the M7: kws-dscnn image flash
  82.4 KB own -> 68.8 KB shared, digits-cnn 35.0 -> 32.6 KB, host int8 accuracy of every point within 1.3 points
  of the own-scales build (bench/budgets.py).
* **One arena** sized for the largest point's plan; each point keeps its own schedule inside it.
* **Every point as data** (:func:`call_tables`, templates/nested_table.c.j2): src/edgekit_model.c holds one driver
  loop and, per point, a table of its calls (kernel, arena offsets of input / output / scratch, parameter struct);
  a struct is a base struct — the widest point's of the layer, identical ones stored once — plus the few words in
  which this point's differs (channel counts, row strides, weight-block strides; the weight, bias and
  requantization pointers and the quantization fields are mostly the same). src/op<k>/ then holds only the
  point's constant arrays. An extra point costs 12 B per call (a row: field mask, three arena offsets, the
  struct's index, the kind) plus 2 B per differing field (an int16 value; a pointer by its index in a table of
  pointers) instead of a driver function and full structs (~2.5 KB per point on kws-dscnn before): measured on the
  M7 with budgets 0.25/0.5/0.75/1, kws-dscnn image 68.8 -> 62.7 KB (+6.3 % over the widest point alone),
  digits-cnn 32.6 -> 31.1 KB (+8.1 %), the instructions of a point within 1 % of its own driver's (with 20-byte
  rows and 4-byte values; since then 12-byte rows, int16 values and the bases chosen by flash for every point's
  calls together, :func:`_assign_bases`: kws-dscnn's image 60.8 -> 60.1 KB, +9.9 % over its widest point alone,
  which itself got smaller: bench/budgets.py). A point with a call a table cannot hold (the
  model input read in place, a stream's state, a recurrent cell) makes every point keep its own driver function in
  src/op<k>/ (templates/nested_model.c.j2).
* **A switch at run time**: ``edgekit_model_set_budget(k)`` in the C API selects the table (or the driver) that
  ``edgekit_model_invoke`` runs. The test firmware runs every test input at every point; runtimes/mcu.py checks
  each point's outputs bit for bit against its own host reference (reference_op<k>.npz) and counts its
  instructions.

One-shot int8 models only: a step program (recurrent layers) or a float32 build is refused with what to do instead.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import UnsupportedError, UsageError
from edgekit.estimate import Estimate
from edgekit.stepgraph import is_recurrent
from edgekit.targets import BuildResult, CompileOptions
from edgekit.targets.mcu import codegen, cost, ek_kernels, kernel_pack, pipeline, toolchain
from edgekit.targets.mcu.pipeline import McuPlan
from edgekit.targets.mcu.program import root_of
from edgekit.targets.profiles import TargetProfile

# ek_kernels step kind -> kernel_pack layer kind: the calls whose weights may be read from the widest point's array
_NESTABLE = {"ek_conv": "conv2d", "ek_dw": "depthwise_conv2d", "ek_fc": "fully_connected"}


def is_nested(model) -> bool:
    return bool(model.meta.get("nested"))


@dataclass
class NestedPlan:
    """The operating points' plans (narrowest first; the last is the full width) and the image's estimate: the
    widest point's figures, with the flash of the narrower points' own arrays and drivers added."""

    model: object
    profile: TargetProfile
    options: CompileOptions
    budgets: list[float]
    plans: list[McuPlan]
    estimate: Estimate
    packing: tuple                               # ek_kernels.nested_packing's arguments (see _packing)

    @property
    def program(self):  # what McuTarget.fit_advice reads
        return self.plans[-1].program


def _packing(points) -> tuple[dict[str, int], set[str], dict[str, tuple[int, ...]]]:
    """What ek_kernels.nested_packing needs: output channels of every conv/linear layer at the full width (the
    widest point's packing decisions), the conv layers whose input channels differ between the points and every
    conv layer's output channels at each point (the depthwise layout fewest instructions over all of them)."""
    graphs = [pt.deploy_graph for pt in points]
    full = {n.name: int(n.attrs.get("out_channels", n.attrs.get("out_features", 0)))
            for n in graphs[-1].nodes if n.op in ("conv2d", "linear")}
    inputs: dict[str, set[int]] = {}
    outputs: dict[str, list[int]] = {}
    for g in graphs:
        for n in g.nodes:
            if n.op == "conv2d":
                inputs.setdefault(n.name, set()).add(int(n.attrs["in_channels"]))
                outputs.setdefault(n.name, []).append(int(n.attrs["out_channels"]))
    widths = {name: tuple(c) for name, c in outputs.items() if len(c) == len(graphs)}
    return full, {name for name, seen in inputs.items() if len(seen) > 1}, widths


def plan(model, profile: TargetProfile, options: CompileOptions) -> NestedPlan:
    from edgekit.converters.nested import operating_points

    if options.quantize != "int8":
        raise UsageError(f"model '{model.name}' has nested operating points, which share int8 weights in one image: "
                         "add --quantize int8")
    if options.kernels == "tvm":
        raise UsageError("a nested image reads shared weights through edgekit's int8 kernels: drop --kernels tvm")
    if options.prune:
        raise UnsupportedError(f"model '{model.name}': pruned weights are stored compressed, not as nested prefixes; "
                               "prune before edgekit convert --budgets instead of at compile time")
    points = operating_points(model)
    if is_recurrent(points[-1].deploy_graph):
        raise UnsupportedError(f"model '{model.name}': nested images of step programs (recurrent layers) are not "
                               "built yet; compile each operating point on its own (edgekit.converters.nested."
                               "operating_point) or use a convolutional model")
    # Helium has its own weight layouts, which do not nest: the DSP kernels run a nested image on every core.
    opts = dataclasses.replace(options, kernels="dsp")
    packing = _packing(points)
    with ek_kernels.nested_packing(*packing):
        plans = [pipeline.plan(pt, profile, opts) for pt in points]
    full = plans[-1].estimate
    # Narrower points add their drivers and what they cannot read out of the widest point's arrays.
    shared_scales = options.extra.get("nested_scales", "shared") == "shared"
    widest = plans[-1].program
    tables = all(_tabulable(p.program) for p in plans)
    facts = model.meta["nested"]["operating_points"]
    extra = sum(_own_const_bytes(p.program, shared_scales, facts[k].get("private"))
                + (_table_bytes(p.program, widest) if tables else _driver_bytes(p.program, p.platform))
                for k, p in enumerate(plans[:-1]))
    arena = max(p.program.arena_bytes for p in plans)
    est = dataclasses.replace(full, flash_bytes=full.flash_bytes + int(extra),
                              peak_sram_bytes=full.peak_sram_bytes + arena - full.arena_bytes, arena_bytes=arena)
    budgets = [float(pt.meta["operating_point"]["budget"]) for pt in points]
    return NestedPlan(model, profile, opts, budgets, plans, est, packing)


def _driver_bytes(prog, platform) -> int:
    """Flash of one point's driver and parameter structs: its code estimate without what the points share (start-up,
    the kernel libraries)."""
    m = platform.code_size
    kinds = cost.code_features(prog)["ek_kinds"]
    return cost.code_bytes(prog, platform) - m.base - sum(m.ek_kernel_bytes.get(k, 0) for k in kinds)


# A row of a call table (ek_step_t with 16-bit arena offsets: mask, 3 offsets, parameter index, kind), an entry of
# its table of parameter pointers, a replaced field (one int16 value; wider ints three) and a TVM call's descriptors
# there (templates/call_table.c.j2)
TABLE_STEP_BYTES = 12
TABLE_PARAM_BYTES = 4
TABLE_VALUE_BYTES = 2
TABLE_ESCAPE = -0x8000
TABLE_TVM_CALL_BYTES = 104


def _table_bytes(prog, widest) -> int:
    """Flash of one narrower point as a call table (an estimate before quantization): a row per call, and per
    micro-kernel call the int fields in which it differs from the widest point's call of its layer (all of them
    when that layer has no twin there)."""
    twins = {s.layer: s for s in widest.steps}
    total = 0
    for s in prog.steps:
        total += TABLE_STEP_BYTES
        if s.kind == "tvm":
            total += TABLE_TVM_CALL_BYTES
        elif s.kind in ek_kernels.FUNCTIONS:
            twin = twins.get(s.layer)
            fields = ek_kernels.FUNCTIONS[s.kind][2]
            same = twin is not None and twin.kind == s.kind
            total += TABLE_VALUE_BYTES * sum(1 for f in fields if not same or twin.params.get(f) != s.params.get(f))
    return total


def _own_const_bytes(prog, shared_scales: bool, private: dict | None = None) -> int:
    """Bytes of ``prog``'s constant arrays other than those it can read out of the widest point's (an estimate
    before packing is checked): every conv / depthwise / linear weight array, and with shared activation scales
    their bias and requantization tables too — except a linear layer's bias, which carries its inputs' sums, and
    the bias (with an own scale also the requantization table) of a layer in ``private`` (the point's own
    parameters, converters/nested.py)."""
    shared = set()
    private = private or {}
    for s in prog.steps:
        if s.kind in _NESTABLE:
            shared.update(s.consts if shared_scales else s.consts[:1])
            own = private.get(s.layer, {})
            if s.kind == "ek_fc" or "shift" in own:
                shared.difference_update(c for c in s.consts if c.endswith(".ekb"))
            if "scale" in own:
                shared.difference_update(c for c in s.consts if c.endswith(".ekrq"))
    return sum(c.data.nbytes for name, c in prog.consts.items() if name not in shared)


def _quantized_points(p: NestedPlan) -> list:
    """Every point with int8 parameters: the widest calibrated as usual; each narrower one with the widest point's
    per-channel weight scales (its int8 weights are then exactly a prefix of the widest point's) and activation
    scales (``nested_scales`` "shared", the default; "own": calibrated on its own activations, except the input,
    which every point quantizes alike so that one test input serves all)."""
    from edgekit.converters.nested import private_scales
    from edgekit.converters.quantize import PASS_THROUGH, quantize

    if p.options.qat:
        raise UsageError("--qat fine-tunes each operating point apart, which breaks the shared weights of a nested "
                         "image; quantize with PTQ (drop --qat)")
    scales_mode = p.options.extra.get("nested_scales", "shared")
    if scales_mode not in ("shared", "own"):
        raise UsageError(f"nested_scales {scales_mode!r}: use shared or own")
    widest, _ = pipeline.quantized(p.plans[-1].model, p.options)
    qf = widest.meta["quant"]
    out = []
    for index, pl in enumerate(p.plans[:-1]):
        m = quantize(pl.model, observer=p.options.observer)
        q = m.meta["quant"]
        scales = {}
        own = private_scales(p.model, index)
        for name, s in q.weight_scales.items():
            full = qf.weight_scales.get(name)
            if full is None or np.size(full) < np.size(s):
                raise UnsupportedError(f"model '{m.name}': layer '{name}' has no wider twin in the widest operating "
                                       "point; the operating points must share their layer names (edgekit convert "
                                       "--budgets makes them so)")
            scales[name] = np.asarray(full, dtype=np.float64).ravel()[:np.size(s)] if np.ndim(full) else full
            if name in own:  # the point's own per-channel scale: same int8 weights, its own requantization
                if not np.ndim(full):
                    raise UnsupportedError(f"model '{m.name}': layer '{name}' has its own weight scale at width "
                                           f"{p.budgets[index]:g}, which per-tensor weight scales cannot hold; "
                                           "quantize per channel (the default) or nest with private='bias'")
                scales[name] = scales[name] * own[name]
        acts = dict(q.activations)
        graph = m.deploy_graph
        shared = [node.name for node in graph.inputs]
        if scales_mode == "shared":  # every tensor on the widest point's grid: biases and requant tables nest too
            shared = [name for name in acts if name in qf.activations]
        for name in shared:
            acts[name] = qf.activations[name]
        for n in graph.nodes:  # pass-through layers carry their input's parameters
            if n.op in PASS_THROUGH:
                acts[n.name] = acts[n.inputs[0]]
        m.meta["quant"] = dataclasses.replace(q, activations=acts, weight_scales=scales)
        out.append(m)
    return out + [widest]


def _packed(prog, step) -> kernel_pack.PackedLayer:
    """The packed layer behind an edgekit kernel step (its struct fields and weight array)."""
    return kernel_pack.PackedLayer(kind=_NESTABLE[step.kind], params=dict(step.params),
                                   weights=prog.consts[step.consts[0]].data, bias=None, requant=np.zeros(0, np.int32),
                                   scratch_bytes=step.scratch_bytes, weight_padding_bytes=0)


def _share_weights(prog, widest, last: int) -> tuple[dict[str, str], dict]:
    """Point the weight arrays (and bias / requantization tables) of a narrower point's ``prog`` at the widest
    program's (operating point ``last``) where they nest; returns (const name -> the widest point's C array, what
    was shared and what was not)."""
    count = lambda steps: {s.layer: sum(1 for t in steps if t.layer == s.layer) for s in steps}  # noqa: E731
    mine, theirs = count(prog.steps), count(widest.steps)
    by_layer = {s.layer: s for s in widest.steps if s.kind in _NESTABLE}
    cname = {name: codegen.const_cname(f"ek_op{last}_model", i, name) for i, name in enumerate(widest.consts)}
    external: dict[str, str] = {}
    facts = {"shared_layers": [], "copied_layers": [], "shared_weight_bytes": 0, "own_weight_bytes": 0,
             "shared_table_bytes": 0, "own_table_bytes": 0}
    for s in prog.steps:
        if s.kind not in _NESTABLE:
            continue
        w = by_layer.get(s.layer)
        if w is not None and w.kind == s.kind:  # bias and requantization tables: read by channel, plain prefixes
            for c in s.consts[1:]:
                twin = next((t for t in w.consts[1:] if t.rsplit(".", 1)[-1] == c.rsplit(".", 1)[-1]), None)
                mine_b = prog.consts[c].data.view(np.uint8).ravel()
                if twin is not None and np.array_equal(widest.consts[twin].data.view(np.uint8).ravel()[:mine_b.size],
                                                       mine_b):
                    external[c] = cname[twin]
                    facts["shared_table_bytes"] += int(mine_b.size)
                else:
                    facts["own_table_bytes"] += int(mine_b.size)
        nbytes = int(prog.consts[s.consts[0]].data.nbytes)
        view = None
        if w is not None and w.kind == s.kind and mine[s.layer] == 1 and theirs[s.layer] == 1:
            view = kernel_pack.nested_view(_packed(widest, w), _packed(prog, s))
        if view is None:
            facts["copied_layers"].append(s.layer)
            facts["own_weight_bytes"] += nbytes
            continue
        s.params.update(view)
        s.stored_weight_bytes = 0
        external[s.consts[0]] = cname[w.consts[0]]
        facts["shared_layers"].append(s.layer)
        facts["shared_weight_bytes"] += nbytes
    return external, facts


def _own_facts(widest) -> dict:
    """The widest point's side of the sharing facts: every array is its own."""
    steps = [s for s in widest.steps if s.kind in _NESTABLE]
    return {"shared_layers": [], "copied_layers": [s.layer for s in steps], "shared_weight_bytes": 0,
            "shared_table_bytes": 0, "own_weight_bytes": sum(int(widest.consts[s.consts[0]].data.nbytes) for s in steps),
            "own_table_bytes": sum(int(widest.consts[c].data.nbytes) for s in steps for c in s.consts[1:])}


# ---- every point as data: one driver loop over per-point tables of calls (templates/nested_table.c.j2) ---------------

# step kind -> (C enum, kernel function, parameter struct) of the calls a table holds
_TABLE_KINDS = {"ek_conv": ("EK_STEP_CONV", "ek_conv2d_s8", "ek_conv_params_t"),
                "ek_dw": ("EK_STEP_DW", "ek_depthwise_conv2d_s8", "ek_conv_params_t"),
                "ek_fc": ("EK_STEP_FC", "ek_fully_connected_s8", "ek_fc_params_t"),
                "ek_add": ("EK_STEP_ADD", "ek_add_s8", "ek_add_params_t"),
                "ek_pool": ("EK_STEP_POOL", "ek_pool_s8", "ek_pool_params_t"),
                "ek_upsample": ("EK_STEP_UPSAMPLE", "ek_upsample_s8", "ek_upsample_params_t"),
                "ek_lut": ("EK_STEP_LUT", "ek_lut_s8", "ek_lut_params_t"),
                "ek_lutc": ("EK_STEP_LUTC", "ek_lut_channels_s8", "ek_lut_channels_params_t"),
                "ek_bilinear": ("EK_STEP_BILINEAR", "ek_bilinear_s8", "ek_bilinear_params_t"),
                "ek_transpose": ("EK_STEP_TRANSPOSE", "ek_transpose_s8", "ek_transpose_params_t"),
                "ek_mul": ("EK_STEP_MUL", "ek_mul_s8", "ek_mul_params_t"),
                "ek_concat": ("EK_STEP_CONCAT", "ek_concat_s8", "ek_concat_params_t"),
                "copy": ("EK_STEP_COPY", None, "ek_copy_params_t"),
                "tvm": ("EK_STEP_TVM", None, None)}


def _tabulable(prog) -> bool:
    """Whether every call of ``prog`` can be a row of a call table: edgekit micro-kernels, patch copies and TVM
    kernels on arena tensors and constants, not a stream's state; the model input read in place only as the (first)
    input of a micro-kernel (the row's EK_FROM_INPUT flag)."""
    if prog.streaming:
        return False
    for s in prog.steps:
        if s.kind not in _TABLE_KINDS or s.guard or s.kind == "ek_concat" and len(s.inputs) != 2:
            return False
        names = [n for n in list(s.inputs) + [s.output] if n in prog.tensors]
        if any(prog.tensors[n].state_offset is not None for n in names):
            return False
        in_place = [k for k, n in enumerate(names) if prog.tensors[n].external]
        if in_place and (in_place != [0] or s.kind in ("tvm", "copy")):
            return False
    return True


def _struct_words(prog, s, cnames: dict[str, str]) -> list[tuple[str, object]]:
    """A call's parameter struct as 4-byte words: ("i", int field) ... then ("p", C array or "0") for the pointers
    (weights, bias, requantization table), as ek_kernels.render_call prints its initialiser."""
    if s.kind == "copy":
        _, dst_row, _, src_row, rows, row_bytes = codegen.copy_window(prog, s)
        return [("i", dst_row), ("i", src_row), ("i", rows), ("i", row_bytes)]
    words = [("i", int(s.params[f])) for f in ek_kernels.FUNCTIONS[s.kind][2]]
    if s.kind in ("ek_lut", "ek_lutc"):  # its table(s)
        return words + [("p", cnames[s.consts[0]])]
    if s.kind == "ek_concat":  # its part table, its requantization tables (or none)
        return words + [("p", cnames[s.consts[0]]), ("p", cnames[s.consts[1]] if len(s.consts) > 1 else "0")]
    if s.kind in ek_kernels.ELEMENTWISE_KINDS:
        return words
    by_suffix = {c.rsplit(".", 1)[1]: cnames[c] for c in s.consts}
    return words + [("p", by_suffix.get("ekw") or by_suffix["dw"]), ("p", by_suffix.get("ekb", "0")),
                    ("p", by_suffix["ekrq"])]


def _value_bytes(word: tuple[str, object]) -> int:
    """Bytes of one replaced field: its int16 value, or three for a wider int (:func:`_halfwords`); a pointer its
    index and its entry in the pointer table (counted every time: the calls of one layer's tiles share it)."""
    kind, v = word
    return TABLE_VALUE_BYTES * (1 if kind == "i" and -0x7FFF <= int(v) <= 0x7FFF else 3)


def _assign_bases(bases: list[dict], calls: list[tuple[str, str, list]], base_bytes) -> list[tuple[int, list[int]]]:
    """For calls ``[(layer, struct type, words)]`` in order (one program's, or every point's with the widest first):
    the base struct each is stored against and the words in which it differs, appending the bases it creates to
    ``bases`` (dicts with "struct_type", "words" and "layer"). Greedy, in call order: a call becomes a base of its
    own when the flash that saves on it and on the later calls of its struct type (each stored against the base
    that costs it least: a patch schedule's tiles of one layer, the layer at the narrower points, the layers of
    the same shape) exceeds the base's ``base_bytes(struct type, words)``; the replaced fields cost
    :func:`_value_bytes` each."""
    out: list[tuple[int, list[int]] | None] = [None] * len(calls)
    by_type: dict[tuple[str, int], list[int]] = {}
    for j, (_, struct_type, words) in enumerate(calls):
        by_type.setdefault((struct_type, len(words)), []).append(j)
    for (struct_type, n_words), members in by_type.items():
        ids: list[dict] = [{} for _ in range(n_words)]  # each field's values as small ints, to compare as arrays
        old = [b for b, base in enumerate(bases) if base["struct_type"] == struct_type and len(base["words"]) == n_words]
        rows = [calls[j][2] for j in members] + [bases[b]["words"] for b in old]
        a = np.array([[ids[f].setdefault(w, len(ids[f])) for f, w in enumerate(r)] for r in rows], np.int64)
        c = np.array([[_value_bytes(w) for w in r] for r in rows], np.float64)
        n = len(members)
        best = np.full(n, np.inf)
        base_of = np.full(n, -1)
        for b, row in zip(old, a[n:]):
            cost = (c[:n] * (a[:n] != row)).sum(1)
            better = cost < best
            best[better], base_of[better] = cost[better], b
        for t, j in enumerate(members):
            cost = (c[t:n] * (a[t:n] != a[t])).sum(1)
            if np.maximum(best[t:] - cost, 0).sum() > base_bytes(struct_type, calls[j][2]):
                bases.append({"struct_type": struct_type, "words": calls[j][2], "layer": calls[j][0]})
                better = cost < best[t:]
                best[t:][better], base_of[t:][better] = cost[better], len(bases) - 1
            base_words = bases[int(base_of[t])]["words"]
            out[j] = int(base_of[t]), [f for f, (w, v) in enumerate(zip(calls[j][2], base_words)) if w != v]
    return out


def table_struct_bytes(prog, struct_bytes: dict[str, int]) -> int:
    """Flash of the parameter structs of ``prog`` as one call table (templates/call_table.c.j2), an estimate before
    quantization: a base struct (``struct_bytes`` by kind, 16 B for a tile copy) and its entry in the table of
    parameter pointers for each call unlike the bases before it, an int16 value per word for the others' differing
    words — as :func:`call_tables` lays them out."""
    calls = [(s.layer, s.kind, _struct_words(prog, s, {c: c for c in s.consts}))
             for s in prog.steps if s.kind == "copy" or s.kind in ek_kernels.FUNCTIONS]
    sizes = {"copy": 16}

    def base_bytes(kind: str, words: list) -> int:
        return sizes.get(kind, struct_bytes.get(kind, 4 * len(words))) + TABLE_PARAM_BYTES

    bases: list[dict] = []
    placed = _assign_bases(bases, calls, base_bytes)
    return sum(base_bytes(b["struct_type"], b["words"]) for b in bases) + sum(
        _value_bytes(words[f]) for (_, _, words), (_, diff) in zip(calls, placed) for f in diff)


def call_tables(programs, cnames: list[dict[str, str]], symbols: list[dict[int, str]], const_types: dict[str, str],
                arena_bytes: int) -> dict | None:
    """Every operating point's calls as data for templates/nested_table.c.j2, or None when a point has a call a
    table cannot hold (then each point keeps its own driver function, templates/nested_model.c.j2).

    A call's parameter struct is stored as a base struct plus the words that differ: the widest point's structs
    are the bases (identical ones stored once); a narrower point's call takes the base of the same struct type that
    differs from it in the fewest words (mostly its own layer at the widest point: the channel counts, strides and
    weight-block strides differ, the pointers and quantization fields do not) and lists only those words."""
    if not all(_tabulable(prog) for prog in programs):
        return None
    input_in_place = any(prog.tensors[prog.input].external for prog in programs)
    largest = max([arena_bytes] + [prog.tensors[prog.input].nbytes for prog in programs if input_in_place])
    offset_type = "uint16_t" if largest < 0xFFFF else "uint32_t"
    none = "EK_NONE"
    bases: list[dict] = []          # {"struct_type", "words", "init", "comment"}
    shapes: dict[tuple, int] = {}
    tensors: dict[tuple, int] = {}
    dltensors: list[dict] = []
    tvm_calls: dict[tuple, int] = {}
    tvm_list: list[dict] = []
    arrays: set[str] = set()
    kinds_used: set[str] = set()

    def tensor(prog, name: str, shape, names: dict[str, str]) -> int:
        if name in prog.consts:
            data, dtype, comment = names[name], str(prog.consts[name].data.dtype), f"const {name}"
            arrays.add(names[name])
        else:
            t = prog.tensors[name]
            data, dtype, comment = f"ek_arena + {t.offset}", t.dtype, name
        code, bits = codegen.DL_CODES[dtype]
        shape_index = shapes.setdefault(tuple(int(v) for v in shape), len(shapes))
        key = (data, shape_index, code, bits)
        if key not in tensors:
            tensors[key] = len(dltensors)
            dltensors.append({"data": data, "ndim": len(shape), "code": code, "bits": bits, "shape": shape_index,
                              "comment": comment})
        return tensors[key]

    points: list[dict | None] = [None] * len(programs)
    params: dict[str, int] = {}     # the table of parameter pointers a row indexes: base structs, TVM calls
    ptrs: dict[str, int] = {}       # the pointers the points' values replace (their own bias arrays, ...)

    def param_index(name: str) -> int:
        return params.setdefault(name, len(params))

    # every point's calls placed at once, the widest point's first: a layer's calls at every point are one group
    words_of = {(k, i): _struct_words(programs[k], s, cnames[k])
                for k in reversed(range(len(programs))) for i, s in enumerate(programs[k].steps) if s.kind != "tvm"}
    placed = dict(zip(words_of, _assign_bases(
        bases, [(programs[k].steps[i].layer, _TABLE_KINDS[programs[k].steps[i].kind][2], words)
                for (k, i), words in words_of.items()],
        lambda struct_type, words: 4 * len(words) + TABLE_PARAM_BYTES)))
    for k in reversed(range(len(programs))):  # the widest first: its structs are the bases
        prog, names = programs[k], cnames[k]
        steps, values = [], []
        for i, s in enumerate(prog.steps):
            enum, _, struct_type = _TABLE_KINDS[s.kind]
            kinds_used.add(s.kind)
            io = [none, str(prog.tensors[s.output].offset + s.out_offset), none]  # in, out, scratch / second input
            if s.kind == "tvm":
                args = [tensor(prog, x, prog.tensors[x].shape, names) for x in s.inputs]
                args += [tensor(prog, c, prog.consts[c].data.shape, names) for c in s.consts]
                args.append(tensor(prog, s.output, prog.tensors[s.output].shape, names))
                key = (symbols[k][i], tuple(args))
                if key not in tvm_calls:
                    tvm_calls[key] = len(tvm_list)
                    tvm_list.append({"symbol": symbols[k][i], "args": args, "comment": s.layer})
                steps.append({"params": param_index(f"&ek_tvm_{tvm_calls[key]}"), "mask": 0, "kind": enum,
                              "io": io, "comment": f"{s.layer} (TVM {s.spec.op})"})
                continue
            words = words_of[k, i]
            arrays.update(v for t, v in words if t == "p" and v != "0")
            if s.kind == "copy":
                dst_off, _, src_off, _, _, _ = codegen.copy_window(prog, s)
                io[0], io[1] = str(src_off), str(dst_off)
            elif prog.tensors[s.inputs[0]].external:  # the model input, read in place
                io[0] = str(s.in_offset)
                enum = f"{enum} | EK_FROM_INPUT"
            else:
                io[0] = str(prog.tensors[s.inputs[0]].offset + s.in_offset)
            if len(s.inputs) == 2:  # an add, product or concatenation has no scratch: its row's third offset
                assert not s.scratch_bytes, s.layer  # is the second input
                io[2] = str(prog.tensors[s.inputs[1]].offset + s.in2_offset)
            elif s.kind != "copy" and s.scratch_bytes:
                io[2] = str(prog.plan.offsets[f"{s.layer}#scratch{i}"])
            best, diff = placed[k, i]
            if "init" not in bases[best]:  # a base this point's calls made
                b = bases[best]
                b.update(comment=f"{b['layer']} at point {k}", init=", ".join(str(v) for _, v in b["words"]))
            for f in diff:
                values += _halfwords(*words[f], ptrs)
            steps.append({"params": param_index(f"&ek_base_{best}"), "mask": sum(1 << f for f in diff),
                          "kind": enum, "io": io,
                          "comment": f"{s.layer} ({s.kind}{f', {len(diff)} fields of its own' if diff else ''})"})
        points[k] = {"steps": steps, "values": values,
                     "input_offset": prog.tensors[root_of(prog, prog.input)].offset or 0,
                     "output_offset": prog.tensors[root_of(prog, prog.output)].offset}
    kinds = []
    for kind in _TABLE_KINDS:  # the enum in a fixed order; only the kinds some point calls
        if kind not in kinds_used:
            continue
        enum, function, struct_type = _TABLE_KINDS[kind]
        words = next((b["words"] for b in bases if b["struct_type"] == struct_type), [])
        kinds.append({"enum": enum, "function": function, "struct_type": struct_type, "words": len(words),
                      "int_words": sum(1 for t, _ in words if t == "i")})
    struct_kinds = [k for k in kinds if k["struct_type"]]
    return {"offset_type": offset_type, "index_type": "uint8_t" if len(params) <= 0x100 else "uint16_t",
            "input_in_place": input_in_place, "bases": bases, "params": list(params),
            "pointers": sorted(ptrs, key=ptrs.get), "point_tables": points,
            "kinds": struct_kinds + [k for k in kinds if not k["struct_type"]],
            "shapes": list(shapes), "dltensors": dltensors, "tvm_calls": tvm_list,
            "tvm_symbols": sorted({c["symbol"] for c in tvm_list}),
            "max_tvm_args": max([len(c["args"]) for c in tvm_list], default=1),
            "max_words": max([k["words"] for k in struct_kinds], default=1),
            "arrays": [{"cname": a, "ctype": const_types[a]} for a in sorted(arrays)]}


def _halfwords(kind: str, value, ptrs: dict[str, int]) -> list[int]:
    """One replaced field of a call table's struct as the point's int16 values (templates/call_table.c.j2): an int
    field in -32767..32767 as itself, any other as ESCAPE and its low and high halves; a pointer field as its index
    in the table of pointers (``ptrs``, extended)."""
    if kind == "p":
        index = ptrs.setdefault(str(value), len(ptrs))
        if index > 0x7FFF:
            raise UnsupportedError(f"a call table with more than {0x8000} replaced pointers; build the model "
                                   "without a patch schedule (--patch off) or with fewer operating points")
        return [index]
    v = int(value)
    if -0x7FFF <= v <= 0x7FFF:
        return [v]
    if not -0x80000000 <= v <= 0x7FFFFFFF:
        raise ValueError(f"call-table field {v} does not fit 32 bits")
    lo, hi = v & 0xFFFF, (v >> 16) & 0xFFFF
    return [TABLE_ESCAPE, lo - 0x10000 if lo > 0x7FFF else lo, hi - 0x10000 if hi > 0x7FFF else hi]


def _test_count(p: NestedPlan, per_input_bytes: int, budget_bytes: int) -> int:
    """Test inputs the firmware runs at every point: within the test data's flash budget and the emulator's time
    (``options.extra['test_inputs']`` caps it further)."""
    per_input = max(sum(pl.estimate.instructions or 0 for pl in p.plans), 1)
    n = min(budget_bytes // max(per_input_bytes, 1), int(pipeline.MAX_EMULATED_INSTRUCTIONS // per_input))
    limit = p.options.extra.get("test_inputs")
    return max(1, n if limit is None else min(n, int(limit)))


def build(p: NestedPlan, out: Path) -> BuildResult:
    """Write the nested image: src/ (the switch, op<k>/ per point, shared kernels), the test firmware and one
    reference per point; return the build's record (report["build"]["operating_points"] per point)."""
    from edgekit.analysis import analyze

    widest_plan = p.plans[-1]
    platform, board, cpu = widest_plan.platform, widest_plan.board, widest_plan.cpu
    models = _quantized_points(p)
    with ek_kernels.nested_packing(*p.packing):
        finals = [pipeline.final_program(dataclasses.replace(pl, model=m)) for pl, m in zip(p.plans, models)]
    last = len(finals) - 1
    widest = finals[-1][1]
    shared = [_share_weights(prog, widest, last) for _, prog, _ in finals[:-1]]
    shared.append(({}, _own_facts(widest)))
    kernels_c, per_prog, n_tvm = pipeline.tvm_kernels_of([prog for _, prog, _ in finals], platform, cpu)

    src = out / "src"
    arena = max(prog.arena_bytes for _, prog, _ in finals)
    records = [codegen.const_records(prog, f"ek_op{k}_model", external)
               for k, ((_, prog, _), (external, _)) in enumerate(zip(finals, shared))]
    table = call_tables([prog for _, prog, _ in finals], [names for names, _ in records],
                        [symbols for symbols, _ in per_prog],
                        {c["cname"]: c["ctype"] for _, consts in records for c in consts}, arena)
    if table is not None:  # every point as data: op<k>/ holds its constant arrays only
        point_files = [codegen.write_weights(prog, src / f"op{k}", consts)
                       for k, ((_, prog, _), (_, consts)) in enumerate(zip(finals, records))]
        libraries = sorted({lib for _, prog, _ in finals for lib in codegen.kernel_libraries(prog)})
        tvm_symbols = table["tvm_symbols"]
    else:  # a point with calls a table cannot hold: each point has its own driver in op<k>/
        point_sources = []
        for k, ((m, prog, _), (symbols, arg_shapes), (external, _)) in enumerate(zip(finals, per_prog, shared)):
            point_sources.append(codegen.write_sources(
                prog, None, symbols, arg_shapes, out, cpu, platform.kernel_sources, src=src / f"op{k}",
                operating_point={"prefix": f"ek_op{k}_model", "arena": codegen.SHARED_ARENA_SYMBOL,
                                 "external": external}))
        point_files = [f for s in point_sources for f in s.model_sources]
        libraries = sorted({lib for s in point_sources for lib in s.kernel_libraries})
        tvm_symbols = sorted({x for s in point_sources for x in s.tvm_symbols})

    # one set of test inputs (the points quantize the input alike), one reference per point
    code_size = platform.board_info(board)["code_size"]
    per_input_bytes = int(np.prod(finals[-1][0].input_shapes[0][1:]))
    room = min(pipeline.TEST_DATA_BUDGET, max(0, code_size - sum(prog.const_bytes for _, prog, _ in finals)
                                              - cost.code_bytes(widest, platform) * len(finals) - 128 * 1024))
    n = _test_count(p, per_input_bytes, room)
    refs = [pipeline.one_shot_reference(m, prog, qg, n * per_input_bytes) for m, prog, qg in finals]
    x_dev = refs[-1][0]
    for k, (x_k, _) in enumerate(refs):
        if not np.array_equal(x_k, x_dev):
            raise AssertionError(f"operating point {k} quantizes the test inputs differently from the widest one")
    for k, (_, ref) in enumerate(refs):
        np.savez(out / f"reference_op{k}.npz", **ref)
    np.savez(out / "reference.npz", **refs[-1][1])

    inp, outp = widest.tensors[widest.input], widest.tensors[widest.output]
    points = [{"budget": b, "macs": int(sum(s.macs for s in prog.steps)), "arena_bytes": prog.arena_bytes,
               "instructions": int(pl.estimate.instructions or 0), "output_q": prog.output_q}
              for b, pl, (_, prog, _) in zip(p.budgets, p.plans, finals)]
    common = codegen.write_nested_sources(src, kernels_c, platform.kernel_sources, libraries, dict(
        model_name=p.model.name, cpu=cpu, points=points, arena_bytes=arena,
        arena_symbol=codegen.SHARED_ARENA_SYMBOL,
        kernel_libraries=libraries, input_bytes=inp.nbytes, output_bytes=outp.nbytes, input_shape=list(inp.shape),
        output_shape=list(outp.shape), input_layout="NHWC" if len(inp.shape) == 4 else "as in PyTorch",
        input_q=widest.input_q, output_q=widest.output_q), table=table)
    sources = codegen.Sources(src, out / "firmware", common + point_files, [src, src / "include"], tvm_symbols,
                              libraries)

    cflags = pipeline.firmware_cflags(widest_plan, [prog for _, prog, _ in finals])
    fw_sources = codegen.write_firmware(widest, sources, x_dev, board, platform, cflags,
                                        platform.link_flags("link.ld"), toolchain.OPT_FLAGS, pipeline.STACK_BYTES)
    codegen.write_nested_harness(sources.firmware_dir, board, len(x_dev))
    info = pipeline.build_record(widest_plan, widest, n_tvm, len(x_dev), cflags)
    info.arena_bytes = arena
    info.operating_points = []
    for k, (b, pl, (m, prog, _), (_, facts), (_, ref)) in enumerate(zip(p.budgets, p.plans, finals, shared, refs)):
        est = pl.estimate  # sizes and counts do not depend on the scales (final_program checks the arena)
        info.operating_points.append({
            "index": k, "budget": b, "name": m.name, "macs": points[k]["macs"], "arena_bytes": prog.arena_bytes,
            "params": int(sum(np.size(v) for n in m.deploy_graph.nodes for v in n.params.values())),
            "step_layers": [s.layer for s in prog.steps], "step_macs": [s.macs for s in prog.steps],
            "step_kernels": [s.symbol or s.kind for s in prog.steps],
            "step_estimated_instructions": [round(cost.call_instructions(prog, s, p.profile), 1) for s in prog.steps],
            "const_bytes": int(prog.const_bytes), **facts,
            "estimate": {"instructions": est.instructions, "cycles": est.cycles, "latency_ms": est.latency_ms,
                         "energy_uj": est.energy_uj, "peak_sram_bytes": est.peak_sram_bytes,
                         "flash_bytes_alone": est.flash_bytes},
            "float_accuracy": float(ref["float_accuracy"]) if "float_accuracy" in ref else None,
            "reference_accuracy": float(ref["reference_accuracy"]) if "reference_accuracy" in ref else None,
            "reference": f"reference_op{k}.npz"})
    notes = pipeline.compile_and_measure(info, platform, sources, fw_sources, cflags)
    copied = {k: f["copied_layers"] for k, (_, f) in enumerate(shared[:-1]) if f["copied_layers"]}
    for k, layers in copied.items():
        notes.append(f"operating point {k} (width {p.budgets[k]:g}) keeps its own weights for "
                     f"{', '.join(layers)}: their packed weights are not a prefix of the widest point's")
    notes.append(f"nested image: {len(finals)} operating points (widths "
                 f"{', '.join(f'{b:g}' for b in p.budgets)}) share one arena of {arena:,} B; "
                 f"{sum(f['shared_weight_bytes'] for _, f in shared):,} B of weights read from the widest point's "
                 "arrays instead of copies; edgekit_model_set_budget(k) switches at run time")
    files = [str(f.relative_to(out)) for f in sorted(out.rglob("*")) if f.is_file()]
    full_model = finals[-1][0]
    return BuildResult(files=files, dtype="int8", estimate=p.estimate,
                       analysis=analyze(full_model.deploy_graph, "int8", 1), info=info,
                       notes=notes + widest.notes, schedule=widest.schedule, patch=widest.patch,
                       quant_debug=pipeline.quant_debug_report(full_model, refs[-1][1]))

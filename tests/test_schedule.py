"""`--patch auto` decides for the device: layer by layer when that fits (no time spent on memory nobody needs),
the cheapest patch-based schedule that fits a smaller SRAM budget, and the smallest arena only when asked for
(`--patch min-memory`). Estimates only: nothing is built."""
from __future__ import annotations

import functools

import pytest

from edgekit import api
from edgekit.model import Model
from edgekit.targets import CompileOptions, get_profile
from edgekit.targets.mcu.pipeline import plan as mcu_plan


@pytest.fixture(scope="module")
def cnn():
    return Model.load("digits-cnn")


def _plan(model, **kw):
    return mcu_plan(model, get_profile("cortex-m7"), CompileOptions(quantize="int8", **kw))


def test_auto_keeps_layer_by_layer_when_it_fits(cnn):
    p = _plan(cnn)
    assert p.patch_schedule is None and p.program.patch is None
    considered = p.program.schedule["considered"]
    assert [c["schedule"] for c in considered] == ["layer by layer"] and considered[0]["fits"]
    assert "fits" in p.program.schedule["reason"]


def test_auto_patches_just_enough_for_a_smaller_budget(cnn):
    plain = _plan(cnn, patch="off").estimate
    smallest = _plan(cnn, patch="min-memory").estimate
    assert smallest.peak_sram_bytes < plain.peak_sram_bytes
    budget = plain.peak_sram_bytes - 1  # layer by layer misses it by one byte
    p = _plan(cnn, sram_budget=budget)
    assert p.patch_schedule is not None
    assert p.estimate.peak_sram_bytes <= budget
    # the fastest of the schedules that fit: no other fitting schedule considered is estimated faster
    fitting = [c for c in p.program.schedule["considered"] if c["fits"]]
    assert p.estimate.instructions == min(c["instructions"] for c in fitting)
    # and it never spends more than the memory-first choice
    assert p.estimate.instructions <= _plan(cnn, patch="min-memory").estimate.instructions


def test_budget_is_the_fit_limit(cnn):
    est, fits, reasons = api.estimate(cnn, "cortex-m7", quantize="int8", sram_budget=1024)
    assert not fits
    assert any(r.startswith("SRAM (budget): needs") for r in reasons)


def test_bad_patch_mode_is_one_line(cnn):
    from edgekit.errors import UsageError

    with pytest.raises(UsageError, match="use auto, min-memory, off or a grid size"):
        api.estimate(cnn, "cortex-m7", quantize="int8", patch="smallest")


def _vgg_64() -> Model:
    """bench/patch.py's VGG-style CNN at 64x64: its patched program once ran its last conv on TVM's kernel (10
    instructions/MAC) because another layer's scratch grant grew the arena and every grant was dropped."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from patch import vgg_like

    return vgg_like()


def test_scratch_grants_survive_one_layer_that_grows_the_arena():
    model = _vgg_64()
    for mode in ("off", "min-memory"):
        p = _plan(model, patch=mode)
        prog = p.program
        convs = [s for s in prog.steps if getattr(s.spec, "op", None) == "conv2d" or s.kind == "ek_conv"]
        assert convs and all(s.kind == "ek_conv" for s in convs), \
            f"{mode}: int8 convs on TVM's kernel: {sorted({s.layer for s in convs if s.kind != 'ek_conv'})}"
        # most layers run with more than the default scratch: the grants that fit were kept
        granted = [layer for layer, limit in p.scratch_limits.items() if limit > 8 * 1024]
        assert len(granted) >= 3, (mode, p.scratch_limits)


def test_auto_weighs_each_schedule_with_more_conv_scratch(cnn):
    """Under a budget, every patch schedule is also built with the conv kernels' usual scratch (faster tiles, a
    bigger arena): both are in the report, and the faster one is taken when it fits."""
    budget = _plan(cnn, patch="off").estimate.peak_sram_bytes - 1
    considered = _plan(cnn, sram_budget=budget).program.schedule["considered"][1:]
    plain = [c for c in considered if "conv scratch" not in c["schedule"]]
    wider = [c for c in considered if "conv scratch" in c["schedule"]]
    assert plain and len(wider) == len(plain)
    for a, b in zip(plain, wider):
        assert b["arena_bytes"] >= a["arena_bytes"] and b["instructions"] <= a["instructions"]


@pytest.mark.parametrize("which", ["digits-cnn", "vgg-64", "zoo-squeezenet"])
def test_min_memory_stages_take_the_fewest_tiles_that_keep_the_peak(cnn, which):
    """Tiles cost instructions the MAC budget does not see, so every stage of a min-memory schedule has the fewest
    tiles that plan its arena: each coarser grid within the MAC budget plans a larger one (SqueezeNet's last fire
    module once ran as 8x8 tiles of one pixel where 2x2 planned the same arena)."""
    from edgekit.converters import patch as P
    from edgekit.modelcache import load_graph_only
    from edgekit.targets.mcu import ek_kernels

    model = cnn if which == "digits-cnn" else _vgg_64() if which == "vgg-64" else load_graph_only(which)
    graph = model.deploy_graph
    scratch = functools.partial(ek_kernels.scratch_estimate, isa="dsp")
    with ek_kernels.conv_scratch_limit(ek_kernels.PATCHED_CONV_SCRATCH_LIMIT_BYTES):
        sched = P.schedule(graph, 1, 0.15, scratch=scratch).schedule
        assert sched is not None and sched.stages
        index = {n.name: j for j, n in enumerate(graph.nodes)}
        total = sum(P.macs_of(n, graph) for n in graph.nodes)
        for k, st in enumerate(sched.stages):
            others = sched.stages[:k] + sched.stages[k + 1:]
            a, b = index[st.layers[0]], index[st.layers[-1]]
            rows, cols = graph.nodes[b].shape[2:4]
            for g in P.REFINE_GRIDS:
                if g[0] * g[1] >= len(st.tiles) or g[0] > rows or g[1] > cols:
                    continue
                alt = P.plan_tiles(graph, a, b, g)
                if sum(o.extra_macs for o in others) + alt.extra_macs > 0.15 * total:
                    continue
                trial = P.plan_schedule(graph, others + [alt], 1, scratch)
                assert trial.arena_bytes > sched.peak_bytes, (st.split_after, st.grid, g)


def test_scratch_grants_reach_the_faster_conv_layouts():
    """The grants that keep the arena give convs the layouts that pay: ZOO ResNet-8 patched for min-memory ran its
    32-channel 3x3 conv in row tiles as FC rows (1.05 instructions a MAC) where its room fits the widened weights'
    GEMM (0.81), and its 576-deep conv as FC rows where half its room fell just short of a GEMM that beats them."""
    from edgekit.modelcache import load_graph_only
    from edgekit.targets.mcu import kernel_pack as kp

    model = load_graph_only("zoo-resnet8")
    p = _plan(model, patch="min-memory", max_patch_overhead=0.15)
    steps: dict[str, list] = {}
    for s in p.program.steps:
        steps.setdefault(s.layer, []).append(s)
    tiles = steps["features.2.body.1"]
    assert len(tiles) > 1 and all(s.params["flags"] & kp.FLAG_WIDE_WEIGHTS for s in tiles)
    deep = steps["features.3.body.1"]
    assert len(deep) == 1 and not deep[0].params["flags"] & kp.FLAG_CONV_FC
    # within what the grants allowed (each checked to keep the arena)
    assert all(s.scratch_bytes <= p.scratch_limits["features.2.body.1"] for s in tiles)

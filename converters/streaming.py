"""Conv models over a time axis as streaming step functions with explicit caches (Model -> ConvStreamingModel).

Where it sits: converters/ (Model -> Model). :func:`edgekit.converters.to_streaming` sends models without recurrent
layers here. The plan (which layer keeps which cache, when each fires) is edgekit/convstream.py's; this module turns
it into a PyTorch step function a phone runs (ONNX with the caches as inputs and outputs) and checks it against the
windowed model. The Cortex-M target builds its step program from the same plan (``edgekit compile ... --streaming``).

The step function runs every layer on every frame and keeps what did not fire with ``torch.where`` (no control flow,
so it exports to ONNX as one graph); on a microcontroller the step program skips those layers instead.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekit import convstream
from edgekit.errors import UnsupportedError
from edgekit.graph import Node
from edgekit.model import Model

STREAMING_ATOL = 1e-4


class ConvStreamingModel(nn.Module):
    """``forward(frame, *state) -> (y, *new_state)``: one frame [N, C, 1, F] (or [N, C, 1]) in; ``y`` the model's
    output as of this frame (the last one that fired). ``state`` is, in :attr:`state_names` order: each cache
    ([N, C, rows, F]), each cache's countdown ([N, 1]: arrivals until it fires), each running pool's ring of row sums
    ([N, rows, C]) and the last output; :meth:`initial_state` gives the reset values.

    A model that looks ahead takes one more input, ``pad_into`` ([1]): −1 for a frame; k to push one padding row into
    cache k instead (the frame is ignored) — the flush that ends a window as the windowed model does: for each cache
    in order, ``plan.caches[...].flush_rows`` such steps (:meth:`flush_steps`)."""

    def __init__(self, sp: convstream.StreamPlan, name: str, model: Model):
        super().__init__()
        self.plan, self.name, self.model = sp, name, model
        self._params = nn.ParameterDict()
        for n in sp.step.nodes:
            for k, v in n.params.items():
                self._params[self._key(n, k)] = nn.Parameter(torch.from_numpy(np.ascontiguousarray(v, np.float32)),
                                                             requires_grad=False)
        self.caches = list(sp.caches.values())
        self.pools = list(sp.pools.values())
        self.flushable = not sp.causal
        self.max_abs_error: float | None = None

    @staticmethod
    def _key(n: Node, k: str) -> str:
        return f"{n.name}.{k}".replace(".", "_").replace(":", "_")

    @property
    def state_names(self) -> list[str]:
        return ([c.name.replace(":", "_") for c in self.caches] + [f"{c.layer}_countdown" for c in self.caches]
                + [f"{p.name}_ring" for p in self.pools] + ["y_last"])

    @property
    def state_bytes(self) -> int:
        """Float32 bytes one stream keeps between frames (caches and rings)."""
        return 4 * sum(self.plan.state_elements().values())

    def initial_state(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        sp = self.plan
        caches = [torch.full((batch_size,) + sp.step[c.name].shape[1:], -torch.inf if c.max_pool else 0.0)
                  for c in self.caches]
        counts = [torch.full((batch_size, 1), float(c.wait)) for c in self.caches]
        rings = [torch.zeros(batch_size, p.rows, p.channels) for p in self.pools]
        y = torch.zeros((batch_size,) + sp.step[sp.step.outputs[0]].shape[1:])
        return (*caches, *counts, *rings, y)

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        extra = (torch.tensor([-1.0]),) if self.flushable else ()
        return (torch.zeros((batch_size,) + self.plan.frame_shape[1:]),) + self.initial_state(batch_size) + extra

    def flush_steps(self) -> list[int]:
        """The ``pad_into`` values that end a window, in order (empty for a causal model)."""
        return [k for k, c in enumerate(self.caches) for _ in range(c.flush_rows)] if self.flushable else []

    def _run(self, n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
        from edgekit import graph_exec

        p = {k: self._params[self._key(n, k)] for k in n.params}
        a = n.attrs
        if n.op in ("conv2d", "conv1d"):
            conv = F.conv2d if n.op == "conv2d" else F.conv1d
            y = conv(xs[0], p["weight"], p.get("bias"), a["stride"], a["padding"], a["dilation"], a["groups"])
            return graph_exec._activation(n, y)
        if n.op == "linear":
            return graph_exec._activation(n, F.linear(xs[0], p["weight"], p.get("bias")))
        if n.op in ("reshape", "flatten"):
            return xs[0].reshape((xs[0].shape[0],) + tuple(n.shape[1:]))
        if n.params:
            raise UnsupportedError(f"layer '{n.name}' ({n.op}): no streaming step for a layer with weights of this kind")
        return graph_exec.run_node(n, xs)

    def forward(self, frame: torch.Tensor, *state: torch.Tensor):
        sp = self.plan
        nc, npool = len(self.caches), len(self.pools)
        caches = dict(zip((c.name for c in self.caches), state[:nc]))
        counts = dict(zip((c.name for c in self.caches), state[nc:2 * nc]))
        rings = dict(zip((p.name for p in self.pools), state[2 * nc:2 * nc + npool]))
        pad_into = state[2 * nc + npool + 1] if self.flushable else None
        y_last = state[2 * nc + npool]
        batch = frame.shape[0]
        values = {sp.step.inputs[0].name: frame}
        # per node: a [N, 1] mask of the streams in which it produced a row on this frame
        live = {sp.step.inputs[0].name: torch.ones(batch, 1, dtype=torch.bool)}
        if pad_into is not None:  # a flush step: no frame; one padding row into cache pad_into
            live[sp.step.inputs[0].name] = live[sp.step.inputs[0].name] & (pad_into < 0)
        new_caches, new_counts, new_rings = {}, {}, {}
        for n in sp.step.nodes:
            if n.op == "input":
                continue
            xs = [values[i] for i in n.inputs]
            arrived = live[n.inputs[0]]
            for i in n.inputs[1:]:
                arrived = arrived & live[i]
            if n.op == "time_cache":
                c = caches[n.name]
                row = xs[0]
                if pad_into is not None:
                    pad = pad_into == float(self.caches.index(sp.caches[n.name]))
                    spec = sp.caches[n.name]
                    row = torch.where(pad, torch.full_like(row, -torch.inf if spec.max_pool else 0.0), row)
                    arrived = arrived | pad
                shifted = torch.cat([c[:, :, 1:], row], dim=2)
                mask = arrived.reshape((batch,) + (1,) * (c.dim() - 1))
                new_caches[n.name] = torch.where(mask, shifted, c)
                count = counts[n.name]
                fire = arrived & (count == 0)
                period = float(sp.caches[n.name].period)
                new_counts[n.name] = torch.where(arrived, torch.where(count == 0, count + period - 1, count - 1), count)
                values[n.name], live[n.name] = new_caches[n.name], fire
                continue
            if n.op == "running_pool":
                pool = sp.pools[n.name]
                row = xs[0].reshape(batch, pool.channels, -1).sum(-1)
                ring = rings[n.name]
                shifted = torch.cat([ring[:, 1:], row[:, None]], dim=1)
                new_rings[n.name] = torch.where(arrived[:, :, None], shifted, ring)
                total = new_rings[n.name].sum(1) / (pool.rows * pool.inner)
                values[n.name], live[n.name] = total.reshape((batch,) + tuple(n.shape[1:])), arrived
                continue
            values[n.name], live[n.name] = self._run(n, xs), arrived
        out = sp.step.outputs[0]
        mask = live[out].reshape((batch,) + (1,) * (y_last.dim() - 1))
        y = torch.where(mask, values[out], y_last)
        return (y, *(new_caches[c.name] for c in self.caches), *(new_counts[c.name] for c in self.caches),
                *(new_rings[p.name] for p in self.pools), y)

    def run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Step through whole windows ``x`` (the windowed model's input) from the initial state; the output after the
        last frame."""
        x = torch.as_tensor(np.asarray(x, np.float32)) if isinstance(x, np.ndarray) else x
        state = self.initial_state(x.shape[0])
        y = None
        extra = [torch.tensor([-1.0])] if self.flushable else []
        with torch.no_grad():
            for t in range(x.shape[convstream.TIME_AXIS]):
                y, *state = self(x[:, :, t:t + 1], *state, *extra)
            for k in self.flush_steps():
                y, *state = self(torch.zeros_like(x[:, :, :1]), *state, torch.tensor([float(k)]))
        return y

    def export(self, path: str | Path) -> Path:
        """Write the step function to ``path`` (``.onnx``, weights inline, or ``.pt2``): inputs ``frame`` and the state
        in :attr:`state_names` order; outputs ``y`` and the new state (``<name>_new``) in the same order."""
        from edgekit.converters.recurrent import export_step

        return export_step(self, path, "frame", "y", self.state_names, ("pad_into",) if self.flushable else ())


def to_conv_streaming(model: Model, atol: float = STREAMING_ATOL, check_samples: int = 16) -> ConvStreamingModel:
    """The streaming step function of a conv model over a time axis (see edgekit/convstream.py). The step function
    is run over up to ``check_samples`` test windows from the initial state and must give the windowed model's output
    within ``atol``. A model that looks ahead is checked with the window ended by a flush (the host's step runner);
    the returned step's outputs lag by ``plan.lookahead_frames`` frames."""
    sp = convstream.plan(model.deploy_graph)
    stream = ConvStreamingModel(sp, model.name, model).eval()
    x = model.test_x[:check_samples] if model.test_x is not None else model.example_inputs[0].numpy()
    x = np.ascontiguousarray(x, np.float32)
    y = stream.run(x).numpy()  # (a model that looks ahead: the frames, then the flush)
    error = float(np.abs(y - model.predict(x)).max())
    if not error <= atol:
        raise UnsupportedError(f"model '{model.name}': stepping frame by frame differs from the windowed model by "
                               f"{error:.3g} (> {atol:g})")
    stream.max_abs_error = error
    return stream


def streaming_model(model: Model) -> Model:
    """A copy of ``model`` marked to build as a streaming step program (``edgekit compile --streaming``): the plan is
    checked here, so a model that cannot stream is refused before any build."""
    sp = convstream.plan(model.deploy_graph)
    return dataclasses.replace(model, meta={**model.meta, "conv_streaming": sp.to_json()})

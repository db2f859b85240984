"""The model handle: a network plus the example, calibration and test data that travel with it.

Where it sits: the start of the flow. ``edgekit.Model`` wraps a ``torch.nn.Module`` (or a loaded ``.pt2`` / ``.onnx``
file, or a bundled example) and imports it into an edgekit Graph (edgekit/graph.py). Converters take a Model and give
back a Model; targets take a Model and build an Artifact.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.analysis import Analysis, analyze
from edgekit.errors import DataError, ModelLoadError, ShapeError, UsageError
from edgekit.graph import Graph, deployment_graph

if TYPE_CHECKING:  # torch is imported where a module is used: `edgekit estimate` on a cached graph never needs it
    import torch


@dataclass
class Model:
    """A network ready for edgekit.

    ``module`` is the PyTorch module (None for a model loaded from ``.onnx``); ``example_inputs`` one batch-1 input
    per model input; ``calib`` inputs for quantization calibration; ``test_x``/``test_y`` held-out inputs and labels
    (``test_y`` None when the task has no labels). ``meta`` keeps free-form facts (task, description, source file,
    and what converters did: pruning, quantization parameters ...).
    """

    module: torch.nn.Module | None
    example_inputs: tuple[torch.Tensor, ...]
    name: str = "model"
    calib: np.ndarray | None = None
    test_x: np.ndarray | None = None
    test_y: np.ndarray | None = None
    train_x: np.ndarray | None = None
    train_y: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    _graph: Graph | None = None
    _input_shapes: list[tuple[int, ...]] | None = None  # set instead of example_inputs by edgekit/modelcache.py

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_module(cls, module: torch.nn.Module, example_inputs, name: str | None = None, **data) -> "Model":
        """Wrap a module. ``example_inputs`` is a tensor or tuple of tensors with batch size 1."""
        import torch

        if not isinstance(module, torch.nn.Module):
            raise UsageError(f"expected a torch.nn.Module, got {type(module).__name__}")
        if isinstance(example_inputs, (np.ndarray, torch.Tensor)):
            example_inputs = (example_inputs,)
        ex = tuple(torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x, dtype=torch.float32)
                   for x in example_inputs)
        if not ex:
            raise UsageError("a model needs at least one example input")
        m = cls(module.eval(), ex, name or type(module).__name__.lower(), **data)
        m.check_data()
        return m

    @classmethod
    def load(cls, source: "str | Path | Model | torch.nn.Module", input_shape: tuple[int, ...] | None = None) -> "Model":
        """A Model from a bundled example name, a ``.pt2`` file, an ``.onnx`` file, or a Model (returned as is)."""
        from edgekit import loaders

        return loaders.load_model(source, input_shape)

    def with_module(self, module: torch.nn.Module, **changes) -> "Model":
        """A new Model with another module (what converters return); data and meta are carried over."""
        meta = dict(self.meta)
        meta.update(changes.pop("meta", {}))
        return dataclasses.replace(self, module=module, _graph=None, meta=meta, **changes)

    # ---- the graph ----------------------------------------------------------------------------------------------
    @property
    def graph(self) -> Graph:
        """The imported layer graph (as written; see :attr:`deploy_graph` for what targets build)."""
        if self._graph is None:
            from edgekit.importers.torch_fx import import_module

            self._graph = import_module(self.module, self.example_inputs, self.name)
        return self._graph

    @property
    def deploy_graph(self) -> Graph:
        return _deploy(self.graph)

    def analyze(self, act_dtype: str = "float32", weight_bytes: int = 4) -> Analysis:
        return analyze(self.deploy_graph, act_dtype, weight_bytes)

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        if self._input_shapes is not None:
            return list(self._input_shapes)
        return [tuple(x.shape) for x in self.example_inputs]

    # ---- running the float reference ----------------------------------------------------------------------------
    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Float outputs of the model on inputs ``x`` (numpy, batch first)."""
        self.check_input(x, "input")
        outs = []
        if self.module is not None:
            import torch

            with torch.no_grad():
                for i in range(0, len(x), batch_size):
                    y = self.module(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], np.float32)))
                    outs.append((y[0] if isinstance(y, (tuple, list)) else y).numpy())
        else:
            from edgekit.graph_exec import run_graph

            for i in range(0, len(x), batch_size):
                outs.append(run_graph(self.graph, [x[i:i + batch_size]])[self.graph.outputs[0]])
        return np.concatenate(outs, 0)

    def accuracy(self, x: np.ndarray | None = None, y: np.ndarray | None = None) -> float | None:
        x = self.test_x if x is None else x
        y = self.test_y if y is None else y
        if x is None or y is None:
            return None
        return float((self.predict(x).argmax(-1) == y).mean())

    # ---- data checks ----------------------------------------------------------------------------------------------
    def check_input(self, x: np.ndarray, what: str) -> None:
        """Raise ShapeError/DataError unless ``x`` is a float batch matching the first model input."""
        want = self.input_shapes[0][1:]
        x = np.asarray(x)
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != tuple(want):
            raise ShapeError(f"{what} data has shape {tuple(x.shape)} but model '{self.name}' takes (N, "
                             f"{', '.join(map(str, want))}); save it with that shape (N samples first)")
        if x.shape[0] == 0:
            raise DataError(f"{what} data is empty; give at least one sample")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise ShapeError(f"{what} data has dtype {x.dtype}; it must be real numbers (float or int)")
        with np.errstate(over="ignore"):
            bad = ~np.isfinite(x.astype(np.float32))  # the models compute in float32: 1e39 is Inf there
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            value = x[first]
            kind = "NaN or Inf values" if not np.isfinite(value) else "values beyond float32's range (|x| > 3.4e38)"
            raise DataError(f"{what} data holds {kind}, {int(bad.sum())} in all, the first at index {first} (sample "
                            f"{first[0]}); clean or rescale it")

    def check_data(self) -> None:
        for what, x in (("calibration", self.calib), ("test", self.test_x), ("training", self.train_x)):
            if x is not None:
                self.check_input(x, what)
        if self.test_x is not None and self.test_y is not None and len(self.test_x) != len(self.test_y):
            raise ShapeError(f"test data has {len(self.test_x)} inputs but {len(self.test_y)} labels")
        if self.module is not None:
            import torch

            for name, p in list(self.module.named_parameters()) + list(self.module.named_buffers()):
                if p.is_floating_point() and not torch.isfinite(p).all():
                    raise DataError(f"model '{self.name}': parameter '{name}' holds NaN or Inf values; "
                                    "retrain or fix the weights")


def _deploy(graph: Graph) -> Graph:
    # Graphs are not hashable by content; cache per object for the life of the Model.
    cached = getattr(graph, "_deploy", None)
    if cached is None:
        cached = deployment_graph(graph)
        graph._deploy = cached
    return cached

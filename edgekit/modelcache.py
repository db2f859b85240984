"""A cache of imported layer graphs, so that commands which need only the graph start without torch.

``edgekit estimate`` reads nothing but the model's deployment graph (layers, shapes, weights) and a target profile.
Importing torch (~1.5 s), building a bundled example and tracing it with torch.fx (~1.5 s for mbv2-w035) dominate
its time. The first ``Model.load(source, graph_only=True)`` of an example or model file does all that and stores the
graph; later ones unpickle it (a few ms) and hand back a Model whose ``module`` is None and whose graph is set.

The key is a digest of what the graph depends on: the example's name or the file's bytes (and ``input_shape``), and
the source of edgekit's importers and zoo (so a code change or a retrained example never reuses a stale graph).
Entries live in ``$XDG_CACHE_HOME/edgekit/graphs/``; a corrupt entry is ignored and rewritten.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
from functools import lru_cache
from pathlib import Path

from edgekit.model import Model

_FORMAT = 1


class _NoTorchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.split(".")[0] == "torch":
            raise pickle.UnpicklingError(f"cached graph refers to {module}.{name}")
        return super().find_class(module, name)


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit" / "graphs"


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """What the import depends on in edgekit itself: its package files (importers, graph passes, zoo, weights)."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".py", ".pt", ".npz", ".json") and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def key(source, input_shape=None) -> str | None:
    """The cache key of ``source`` (an example name or a model file), or None when it cannot be cached."""
    if isinstance(source, Model) or not isinstance(source, (str, os.PathLike)):
        return None
    h = hashlib.sha256(f"{_FORMAT}|{_code_digest()}|{input_shape}".encode())
    path = Path(source)
    try:
        if path.is_file():
            with open(path, "rb") as f:
                h.update(b"file|")
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            return h.hexdigest()
    except OSError:
        return None
    if path.exists() or "/" in str(source):
        return None  # not a file and not an example name: the full loader says what is wrong
    h.update(f"example|{source}".encode())
    return h.hexdigest()


def load(source, input_shape=None) -> Model | None:
    """The cached graph-only Model of ``source``, or None on a miss."""
    k = key(source, input_shape)
    if k is None:
        return None
    try:
        with open(cache_dir() / f"{k}.pkl", "rb") as f:
            entry = _NoTorchUnpickler(f).load()
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, ValueError, TypeError):
        return None
    graph = entry["graph"]
    return Model(None, (), entry["name"], meta=entry["meta"], _graph=graph, _input_shapes=entry["input_shapes"])


def store(source, model: Model, input_shape=None) -> None:
    """Store ``model``'s graph (with its deployment graph) under ``source``'s key; silently skipped if it cannot be."""
    k = key(source, input_shape)
    if k is None:
        return
    model.deploy_graph  # computed once and pickled with the graph
    entry = {"name": model.name, "meta": model.meta, "graph": model.graph, "input_shapes": model.input_shapes}
    d = cache_dir()
    try:
        data = pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)
        _NoTorchUnpickler(io.BytesIO(data)).load()  # an entry that would import torch to load is not worth keeping
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, d / f"{k}.pkl")
    except (OSError, pickle.PicklingError, pickle.UnpicklingError, TypeError, AttributeError):
        return


def load_graph_only(source, input_shape=None) -> Model:
    """A Model of ``source`` for graph-only work: from the cache, or loaded in full (and cached)."""
    cached = load(source, input_shape)
    if cached is not None:
        return cached
    model = Model.load(source, input_shape)
    store(source, model, input_shape)
    return model

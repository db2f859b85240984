"""Turning what a user names (an example, a ``.pt2`` or ``.onnx`` file) into an ``edgekit.Model``, and back to ``.pt2``.

Where it sits: the CLI's MODEL argument and ``Model.load`` end here. Every failure is a one-line ModelLoadError that
names the file and says what to do. :func:`save_pt2` (used by ``edgekit convert``) is the only writer.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from edgekit.errors import EdgekitError, ModelLoadError, ShapeError, UnsupportedError, UsageError
from edgekit.model import Model


def _example(name: str) -> Model:
    from edgekit.zoo import EXAMPLES, load_example

    module, spec = load_example(name)
    x_calib, x_test, y_test = spec.data()
    x_train, y_train = spec.train_data() if spec.train_data is not None else (None, None)
    example = torch.from_numpy(np.ascontiguousarray(x_test[:1], np.float32))
    return Model.from_module(module, (example,), name=name, calib=x_calib, test_x=x_test, test_y=y_test,
                             train_x=x_train, train_y=y_train,
                             meta={"source": f"example:{name}", "description": spec.description,
                                   "task": spec.task, **spec.meta})


class _Caught(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _BatchOneProgram(torch.fx.GraphModule):
    """A program exported at batch 1, run on larger batches one sample at a time.

    ``torch.export`` bakes the example's batch size into the program (and checks it), but ``Model.predict`` hands
    test data over in large batches. A GraphModule subclass, so that the importer reads its graph and copies
    (``copy.deepcopy`` in converters) keep the behaviour.
    """

    def __call__(self, *xs):
        run = super().__call__
        if xs[0].shape[0] == 1:
            return run(*xs)
        outs = [run(*(x[i:i + 1] for x in xs)) for i in range(xs[0].shape[0])]
        if isinstance(outs[0], (tuple, list)):
            return type(outs[0])(torch.cat(parts) for parts in zip(*outs))
        return torch.cat(outs)


# The file inside a .pt2 archive that carries what edgekit's converters did (quantization parameters, pruning facts).
# torch.export.save/load keep ``extra_files``; ``ExportedProgram.graph_module.meta`` does not survive them.
EDGEKIT_META_FILE = "edgekit.json"


def _pt2(path: Path, input_shape) -> Model:
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: not a .pt2 archive (no zip directory: truncated, or not written by "
                             "torch.export.save); re-export the model with torch.export.save")
    # torch.export.load logs the real reason (with a traceback) and raises "check the warnings above": keep the
    # log off the terminal and put its first sentence into the one-line error instead.
    # torch's logging setup gives "torch.export" its own stderr handler: swap all handlers out, not just add one.
    logger, caught = logging.getLogger("torch.export"), _Caught()
    handlers, logger.handlers = logger.handlers, [caught]
    logger.propagate, propagate = False, logger.propagate
    extra = {EDGEKIT_META_FILE: ""}
    try:
        ep = torch.export.load(str(path), extra_files=extra)
    except Exception as e:
        reasons = [str(r.exc_info[1]) for r in caught.records if r.exc_info] + [str(e) or type(e).__name__]
        # C++ checks prefix their reason with "[enforce fail at file.cc:123] . ": keep only the reason.
        first = (re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", reasons[0].strip()).splitlines()
                 or [type(e).__name__])[0]
        first = first.split(". ")[0][:200]
        if "archive_format" in first:
            first = "a zip file, but not a torch.export program; torch.save writes these too"
        elif "not in a subdirectory" in first:
            first = f"a zip file, but not a torch.export program: {first}"
        raise ModelLoadError(f"{path}: cannot load the exported program ({first}); re-export it with "
                             "torch.export.save") from e
    finally:
        logger.handlers = handlers
        logger.propagate = propagate
    args = getattr(ep, "example_inputs", None)
    if input_shape:
        example = (torch.zeros((1,) + tuple(input_shape)),)
    elif args and args[0]:
        example = tuple(a[:1] for a in args[0] if isinstance(a, torch.Tensor))
    else:
        raise ModelLoadError(f"{path}: the program carries no example input; pass --input-shape")
    meta = _read_meta(path, extra[EDGEKIT_META_FILE])
    if meta.get("nested"):
        # the operating points' programs (see save_pt2), read by edgekit.converters.nested.operating_point
        meta["nested_archive"] = path.read_bytes()
    module = program_module(ep)
    try:
        with torch.no_grad():
            module(*example)
    except Exception as e:  # torch.export's guards raise AssertionError on a shape the program was not made for
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ShapeError(f"{path}: the program does not run on inputs of shape "
                         f"{[tuple(x.shape) for x in example]} ({first}); pass the --input-shape it was "
                         "exported for") from e
    m = Model.from_module(module, example, name=path.stem, meta={"source": str(path), **meta})
    return _with_example_data(m, meta.get("data_from"))


def _with_example_data(m: Model, source: str | None) -> Model:
    """A .pt2 converted from a bundled example (``edgekit convert digits-cnn ... -o x.pt2``) with that example's
    calibration, test and training data, as the example itself has them — so that compiling it in int8, measuring
    its accuracy or fine-tuning it again needs no --calib. Left as it is when the example is unknown or its input
    shape differs."""
    if not source or not str(source).startswith("example:"):
        return m
    from edgekit.zoo import EXAMPLES

    name = str(source).removeprefix("example:")
    if name not in EXAMPLES:
        return m
    ex = _example(name)
    if ex.input_shapes[0][1:] != m.input_shapes[0][1:]:
        return m
    return dataclasses.replace(m, calib=ex.calib, test_x=ex.test_x, test_y=ex.test_y, train_x=ex.train_x,
                               train_y=ex.train_y)


def program_module(ep: torch.export.ExportedProgram) -> torch.nn.Module:
    """The module edgekit runs for an exported program (batch-1 programs run larger batches one sample at a time)."""
    module = ep.module()
    batch = next((n.meta["val"].shape[0] for n in module.graph.nodes if n.op == "placeholder"
                  and isinstance(n.meta.get("val"), torch.Tensor)), None)
    if batch == 1:
        return _BatchOneProgram(module, module.graph)
    # torch makes eval()/train() raise on an exported module because the mode was fixed at export; edgekit
    # calls eval() on every module, so give back nn.Module's own (harmless) methods.
    del module.train, module.eval
    return module


# Inside the .pt2 archive of a nested model (edgekit.converters.nested): the program of narrower operating point i.
# "model", what torch.export.load returns, is the full width (the last operating point).
NESTED_PROGRAM = "operating_point_{index}"


def nested_program(archive: bytes, index: int, source: str = "the nested model") -> torch.nn.Module:
    """The module of operating point ``index`` from the bytes of a nested model's .pt2 archive."""
    import io

    from torch.export.pt2_archive._package import load_pt2

    name = NESTED_PROGRAM.format(index=index)
    try:
        programs = load_pt2(io.BytesIO(archive)).exported_programs
        ep = programs[name]
    except Exception as e:
        raise ModelLoadError(f"{source}: its archive has no readable program '{name}' for operating point {index} "
                             f"({type(e).__name__}); write it again with edgekit convert --budgets") from e
    return program_module(ep)


def _export(module: torch.nn.Module, example_inputs, name: str) -> torch.export.ExportedProgram:
    """``module`` exported with a batch of 2 and a dynamic batch dimension (a batch of 1 would be baked in)."""
    example = tuple(torch.cat([x[:1], x[:1]]) for x in example_inputs)
    batch = torch.export.Dim("batch", min=1)
    try:
        return torch.export.export(module.eval(), example, dynamic_shapes=tuple({0: batch} for _ in example))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UnsupportedError(f"model '{name}' cannot be exported with torch.export ({first})") from e


def _read_meta(path: Path, text: str) -> dict:
    """The converter metadata stored by :func:`save_pt2` (``meta['quant']`` back as QuantParams)."""
    if not text:
        return {}
    try:
        meta = json.loads(text)
        if "quant" in meta:
            from edgekit.quantparams import QuantParams

            meta["quant"] = QuantParams.from_json(meta["quant"])
    except (ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{path}: its {EDGEKIT_META_FILE} is corrupt ({type(e).__name__}: {e}); convert the "
                             "model again with edgekit convert") from e
    return meta


def save_pt2(model: Model, path: str | Path) -> Path:
    """Write ``model`` as a .pt2 (torch.export, batch dimension dynamic) with its converter metadata inside.

    ``meta['quant']`` (QuantParams) and every JSON-representable meta entry (pruning facts, QAT settings ...) go to
    the archive's ``edgekit.json``; :func:`load_model` reads them back into ``Model.meta``.

    A nested model (``meta['nested']``, edgekit.converters.nested) also stores each narrower operating point i as its
    own exported program named ``operating_point_<i>`` in the same archive (torch.export.load still returns the full
    width, "model"); loading keeps the archive's bytes in ``meta['nested_archive']``, from which
    ``operating_point(model, i)`` takes program i.
    """
    if model.module is None:
        raise UsageError(f"model '{model.name}' has no PyTorch module (loaded from ONNX); it cannot be saved as .pt2")
    path = Path(path)
    ep = _export(model.module, model.example_inputs, model.name)
    programs = {"model": ep}
    if model.meta.get("nested"):
        from edgekit.converters.nested import operating_points

        for i, point in enumerate(operating_points(model)[:-1]):
            programs[NESTED_PROGRAM.format(index=i)] = _export(point.module, point.example_inputs, point.name)
    meta = {}
    for key, value in model.meta.items():
        if key == "quant":
            value = value.to_json()
        elif key == "source":
            if str(value).startswith("example:"):  # a converted example: loading gives its data back
                meta["data_from"] = value
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue  # not plain data: stays with the in-memory Model only
        meta[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(programs) == 1:
        torch.export.save(ep, str(path), extra_files={EDGEKIT_META_FILE: json.dumps(meta)})
    else:
        from torch.export.pt2_archive._package import package_pt2

        package_pt2(str(path), exported_programs=programs, extra_files={EDGEKIT_META_FILE: json.dumps(meta)})
    return path


def _onnx(path: Path, input_shape) -> Model:
    from edgekit.importers.onnx_import import load_onnx

    return load_onnx(path, input_shape)


def load_model(source, input_shape: tuple[int, ...] | None = None) -> Model:
    """See :meth:`edgekit.Model.load`."""
    if isinstance(source, Model):
        return source
    if isinstance(source, torch.nn.Module):
        raise UsageError("a torch.nn.Module needs example inputs: use edgekit.Model.from_module(module, x)")
    text = str(source)
    path = Path(text)
    try:
        exists = path.exists()
        size = path.stat().st_size if exists and not path.is_dir() else None
    except OSError as e:  # a name too long, a folder without permission ...
        raise ModelLoadError(f"{text[:200]}: cannot be read ({e.strerror or type(e).__name__}); give a .pt2 or "
                             ".onnx file or an example name (edgekit examples lists them)") from e
    if path.suffix.lower() in (".pt2", ".onnx") or exists or "/" in text:
        if not exists:
            raise ModelLoadError(f"{path}: no such file; give a .pt2 or .onnx file or an example name "
                                 "(edgekit examples lists them)")
        if path.is_dir():
            raise ModelLoadError(f"{path}: is a folder; give a .pt2 or .onnx file")
        if size == 0:
            raise ModelLoadError(f"{path}: the file is empty; re-export the model")
        suffix = path.suffix.lower()
        try:
            if suffix == ".pt2":
                return _pt2(path, input_shape)
            if suffix == ".onnx":
                return _onnx(path, input_shape)
        except EdgekitError:
            raise
        except (MemoryError, RecursionError) as e:
            raise ModelLoadError(f"{path}: cannot be read ({type(e).__name__}); the file looks corrupt") from e
        raise ModelLoadError(f"{path}: unknown model format '{suffix}'; edgekit reads .pt2 (torch.export) "
                             "and .onnx files")
    from edgekit.zoo import EXAMPLES

    if text in EXAMPLES:
        return _example(text)
    raise UsageError(f"'{text}' is neither a model file nor a bundled example; examples: "
                     + ", ".join(sorted(EXAMPLES)))

"""Fuzzing the parts that read what users hand over: model files, calibration data, command lines.

What a user relies on: whatever bytes or arguments come in, edgekit answers with one of its own errors
(edgekit.errors, each with its exit code from docs/errors.md) or works — never another exception, a crash or a hang.

* model loaders: valid ``.pt2`` / ``.onnx`` files damaged by truncation, bit flips, overwritten and inserted bytes,
  changed, dropped or added zip members (``.pt2`` is a zip archive), and plain random bytes; loaded and analysed
* calibration reader: random bytes named ``.npy`` / ``.npz``, and arrays of random shapes and dtypes (object arrays,
  strings, complex, NaN/Inf, empty, huge values) saved with numpy
* the command line: random argument lists made of the real command and option names and junk or real values

A CI-sized run (a few hundred inputs, well under a minute, the same inputs every run) by default; a longer random run
with ``EDGEKIT_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz.py`` (docs/errors.md). Every input
has a time limit (``EDGEKIT_FUZZ_SECONDS``, default 30 s): one that runs longer fails the test as a hang.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import typer.main
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgekit import api, cli
from edgekit.errors import EdgekitError
from edgekit.model import Model

from conftest import TinyCNN, make_tiny

LONG_RUN = int(os.environ.get("EDGEKIT_FUZZ_EXAMPLES", "0"))
SECONDS_PER_INPUT = float(os.environ.get("EDGEKIT_FUZZ_SECONDS", "30"))
# Exit codes of docs/errors.md (70, an internal error, is a bug and not among them).
EXIT_CODES = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 130}
TRIED: Counter = Counter()


CI_EXAMPLES = {"model files": 120, "calibration": 150, "command lines": 120}


def fuzz_settings(fuzzer: str):
    """The CI share of inputs by default (the same ones every run); with EDGEKIT_FUZZ_EXAMPLES, that many random
    ones in total, split in the same proportions."""
    ci_examples = CI_EXAMPLES[fuzzer]
    return settings(max_examples=max(1, LONG_RUN * ci_examples // sum(CI_EXAMPLES.values())) if LONG_RUN
                    else ci_examples,
                    derandomize=not LONG_RUN, deadline=None, database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float = SECONDS_PER_INPUT):
    def alarm(signum, frame):
        raise Hang(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    """Print how many inputs each fuzzer tried (pytest's summary only counts tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and TRIED:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\nfuzz inputs tried: " + ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items()))
                                + f" (total {sum(TRIED.values())})")


# ---- model loaders ---------------------------------------------------------------------------------------------------

class Quiet(dict):
    """A fixture value hypothesis prints as a name, not as kilobytes of file contents, in a failure report."""

    def __repr__(self) -> str:
        return f"<{', '.join(self)}>"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """Valid files to damage: a torch.export program and an ONNX model with weights."""
    d = tmp_path_factory.mktemp("seeds")
    torch.manual_seed(0)
    torch.export.save(torch.export.export(TinyCNN().eval(), (torch.rand(1, 1, 8, 8),)), str(d / "m.pt2"))
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((3, 64)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], name="head", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 1, 8, 8))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 3))], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(d / "m.onnx"))
    return Quiet(pt2=(d / "m.pt2").read_bytes(), onnx=(d / "m.onnx").read_bytes())


positions = st.integers(0, 2 ** 31)
byte_edit = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), positions, st.integers(0, 7)),
    st.tuples(st.just("overwrite"), positions, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=16)),
)
zip_edit = st.one_of(
    st.tuples(st.just("member"), positions, st.lists(byte_edit, min_size=1, max_size=3)),
    st.tuples(st.just("drop"), positions),
    st.tuples(st.just("add"), st.text(min_size=1, max_size=30), st.binary(max_size=64)),
    st.tuples(st.just("rename"), positions, st.text(min_size=1, max_size=30)),
)
recipes = st.one_of(
    st.tuples(st.sampled_from(["pt2", "onnx"]), st.lists(byte_edit, min_size=1, max_size=4)),
    st.tuples(st.just("pt2"), st.lists(zip_edit, min_size=1, max_size=3)),
    st.tuples(st.sampled_from(["pt2", "onnx"]), st.binary(max_size=512)),
)


def edit_bytes(data: bytes, edits) -> bytes:
    data = bytearray(data)
    for edit in edits:
        kind, n = edit[0], max(len(data), 1)
        if kind == "truncate":
            del data[int(len(data) * edit[1]):]
        elif kind == "flip" and data:
            data[edit[1] % n] ^= 1 << edit[2]
        elif kind == "overwrite":
            at = edit[1] % n
            data[at:at + len(edit[2])] = edit[2]
        elif kind == "insert":
            data[edit[1] % n:edit[1] % n] = edit[2]
    return bytes(data)


def edit_zip(data: bytes, edits) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = [(info.filename, z.read(info)) for info in z.infolist()]
    for edit in edits:
        if edit[0] == "member" and members:
            k = edit[1] % len(members)
            members[k] = (members[k][0], edit_bytes(members[k][1], edit[2]))
        elif edit[0] == "drop" and members:
            del members[edit[1] % len(members)]
        elif edit[0] == "add":
            members.append((f"{members[0][0].split('/')[0] if members else 'm'}/{edit[1]}", edit[2]))
        elif edit[0] == "rename" and members:
            k = edit[1] % len(members)
            members[k] = (edit[2], members[k][1])
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as z:
        warnings.simplefilter("ignore")  # duplicate names are one of the damages
        for name, content in members:
            z.writestr(name.replace("\x00", "") or "member", content)  # zipfile itself refuses these names
    return buffer.getvalue()


@fuzz_settings("model files")
@given(recipe=recipes)
def test_damaged_model_files_give_edgekit_errors(recipe, seeds, tmp_path_factory):
    suffix, edits = recipe
    if isinstance(edits, bytes):
        data = edits
    elif edits[0][0] in ("member", "drop", "add", "rename"):
        data = edit_zip(seeds[suffix], edits)
    else:
        data = edit_bytes(seeds[suffix], edits)
    path = tmp_path_factory.mktemp("model") / f"fuzzed.{suffix}"
    path.write_bytes(data)
    TRIED[f"model files ({suffix})"] += 1
    with time_limit():
        try:
            Model.load(path).analyze()
        except EdgekitError as e:
            assert str(e) and "\n" not in str(e).strip(), str(e)


# ---- calibration data ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny() -> Model:
    return make_tiny(n=2)


DTYPES = ["float32", "float64", "float16", "int8", "uint8", "int64", "bool", "complex64", "object", "<U3", "S2",
          "datetime64[s]", "f4,i4"]
shapes = st.one_of(st.tuples(st.integers(0, 4), st.just(1), st.just(8), st.just(8)),
                   st.lists(st.integers(0, 9), max_size=5).map(tuple))
values = st.sampled_from([0.0, 1.0, -1.0, 0.5, np.nan, np.inf, -np.inf, 1e39, -1e300, 3e38])
arrays = st.tuples(st.sampled_from(DTYPES), shapes, st.lists(values, min_size=1, max_size=4),
                   st.sampled_from(["npy", "npz x", "npz other", "npz two"]))
calibration_inputs = st.one_of(arrays, st.tuples(st.sampled_from(["npy", "npz"]), st.binary(max_size=300)))


def _array(dtype: str, shape, fill) -> np.ndarray:
    flat = np.resize(np.array(fill, np.float64), int(np.prod(shape)))
    if dtype == "object":
        return np.array([{"v": v} for v in flat] or [], dtype=object).reshape(shape)
    with np.errstate(all="ignore"):
        if dtype in ("<U3", "S2"):
            return flat.astype(str).astype(dtype).reshape(shape)
        if dtype.startswith("datetime"):
            return np.zeros(shape, dtype)
        if dtype == "f4,i4":
            return np.zeros(shape, dtype)
        return np.nan_to_num(flat, nan=0, posinf=127, neginf=-128).astype(dtype).reshape(shape) \
            if np.dtype(dtype).kind in "iub" else flat.astype(dtype).reshape(shape)


@fuzz_settings("calibration")
@given(case=calibration_inputs)
def test_calibration_data_gives_edgekit_errors(case, tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    if isinstance(case[1], bytes):
        path = folder / f"fuzzed.{case[0]}"
        path.write_bytes(case[1])
        TRIED["calibration files (random bytes)"] += 1
    else:
        dtype, shape, fill, how = case
        x = _array(dtype, shape, fill)
        if how == "npy":
            path = folder / "fuzzed.npy"
            np.save(path, x, allow_pickle=True)
        else:
            path = folder / "fuzzed.npz"
            arrays = {"x": x} if how == "npz x" else {"other": x} if how == "npz other" else {"a": x, "b": np.zeros(1)}
            np.savez(path, **arrays)
        TRIED["calibration arrays"] += 1
    with time_limit():
        try:
            got = api.load_calibration(path, tiny)
        except EdgekitError as e:
            assert str(path.name) in str(e) and "\n" not in str(e), str(e)
            return
    # Accepted: what calibration then uses is a finite float32 batch of the model's input shape.
    assert got.dtype == np.float32 and got.shape[1:] == (1, 8, 8) and len(got) > 0 and np.isfinite(got).all()


# ---- the command line ------------------------------------------------------------------------------------------------

def _option_names() -> list[str]:
    command = typer.main.get_command(cli.app)
    names = {"--debug", "--version", "--help"}
    for sub in command.commands.values():
        for param in sub.params:
            names.update(o for o in param.opts + param.secondary_opts if o.startswith("-"))
    return sorted(names)


@pytest.fixture(scope="module")
def cli_files(seeds, tmp_path_factory) -> dict[str, str]:
    """Real paths a command line may name: models (good and bad), data, folders (empty, with a damaged report)."""
    d = tmp_path_factory.mktemp("cli")
    (d / "m.pt2").write_bytes(seeds["pt2"])
    (d / "m.onnx").write_bytes(seeds["onnx"])
    (d / "cut.onnx").write_bytes(seeds["onnx"][:100])
    np.save(d / "calib.npy", np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32))
    np.save(d / "calib3.npy", np.ones((4, 3), np.float32))
    (d / "empty").mkdir()
    for name, text in (("report_empty", "{}"), ("report_list", "[1, 2]"), ("report_bad", "{not json"),
                       ("report_partial", '{"target": "cortex-m7", "target_kind": "mcu", "model": {}}')):
        (d / name).mkdir()
        (d / name / "report.json").write_text(text)
    return {p.name: str(p) for p in d.iterdir()} | {"missing": str(d / "missing.pt2")}


COMMANDS = ["analyze", "targets", "examples", "estimate", "compile", "convert", "profile", "report", "compare"]
JUNK = ["", "-", "--", "0", "-1", "1.5", "1e309", "nan", "inf", "4", "off", "auto", "int8", "none", "float32",
        "tvm", "mse", "abc", "1,8,8", "0,8", "x", "🙂", "a" * 300, "[bold]", ":smile:", "cortex-m7", "phone-arm64",
        "loihi2", "cortex-m99", "compile.html", "digits"]


@pytest.fixture(scope="module")
def no_builds():
    """Parsing and checking arguments is under test, not building: stop where a target would start to build or a
    converter would export (both are exercised by their own tests)."""
    from edgekit import loaders
    from edgekit.targets import phone
    from edgekit.targets.mcu import pipeline

    def skipped(*args, **kwargs):
        raise EdgekitError("fuzz: building skipped")

    patch = pytest.MonkeyPatch()
    patch.setattr(pipeline, "build", skipped)
    patch.setattr(phone, "build", skipped)
    patch.setattr(loaders, "save_pt2", skipped)
    yield
    patch.undo()


@fuzz_settings("command lines")
@given(data=st.data())
def test_random_command_lines_give_documented_exit_codes(data, cli_files, no_builds, tmp_path_factory, capsys):
    options = _option_names()
    files = sorted(cli_files)
    token = st.one_of(st.sampled_from(options), st.sampled_from(JUNK), st.sampled_from(files).map(cli_files.get),
                      st.text(max_size=12))
    argv = data.draw(st.tuples(st.sampled_from(COMMANDS + JUNK[:3]), st.lists(token, max_size=7)))
    argv = [argv[0]] + argv[1]
    TRIED["command lines"] += 1
    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))  # compare writes compare.html, compile build/... by default
    try:
        with time_limit():
            try:
                code = cli.main(argv)
            except EdgekitError:
                assert "--debug" in argv  # --debug shows the traceback of edgekit's own errors
                return
            except SystemExit as e:  # only the `edgekit` entry point may exit
                pytest.fail(f"SystemExit({e.code}) from main({argv!r})")
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    assert code in EXIT_CODES, (argv, code, err)
    if code == 0 or (code == 2 and not err and "Usage" in out):  # success, or help for a missing command
        return
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), (argv, err)
